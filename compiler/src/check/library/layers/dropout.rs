//! `dropout(p = 0.5)`: zeroes each value with probability `p` in training.

use super::{float_or, Args, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::Op;

pub struct Dropout;

impl Layer for Dropout {
    fn signature(&self) -> Vec<ParamSig> {
        vec![float_or("p", 0.5)]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        let p = args.float(0);
        if !(0.0..1.0).contains(&p) {
            return Err(CheckError::InvalidValue {
                message: format!("dropout probability must be in [0, 1), got {p}"),
                span: args.span,
                label: "out of range".into(),
                help: Some(
                    "p is the probability of zeroing an element, e.g. `dropout(0.1)`".into(),
                ),
            });
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let op = Op::Dropout {
            p: call.args.float(0),
        };
        Ok(Applied::stateless(op, call.input.clone()))
    }
}

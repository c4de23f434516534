//! `linear(in_features, out_features, bias = true)`: a learned affine map
//! of the last dimension, as `nn.Linear`.

use super::{bool_or, int, Args, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::shapes::{check_last_dim, with_last};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::Op;

pub struct Linear;

impl Layer for Linear {
    fn signature(&self) -> Vec<ParamSig> {
        vec![
            int("in_features"),
            int("out_features"),
            bool_or("bias", true),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(2)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let (i, o, bias) = (a.int(0), a.int(1), a.flag(2));
        check_last_dim(a.layer, call.input, i, a.span)?;
        let mut params = vec![call.uniform("weight", vec![o, i], i)];
        if bias {
            params.push(call.uniform("bias", vec![o], i));
        }
        let op = Op::Linear {
            in_features: i,
            out_features: o,
            weight: call.name("weight"),
            bias: bias.then(|| call.name("bias")),
        };
        Ok(Applied::learned(op, params, with_last(call.input, o)))
    }
}

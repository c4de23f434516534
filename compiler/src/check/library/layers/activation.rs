//! Activations: `relu`, `gelu`, `silu`, `tanh` and `sigmoid`, one function
//! of each value; `softmax(dim = -1)`, normalised along one dimension.

use super::{int_or, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Op};

/// A function applied to each value on its own: no arguments, no
/// parameters, the shape unchanged.
pub struct Pointwise {
    op: Op,
}

pub static RELU: Pointwise = Pointwise { op: Op::Relu };
pub static GELU: Pointwise = Pointwise { op: Op::Gelu };
pub static SILU: Pointwise = Pointwise { op: Op::Silu };
pub static TANH: Pointwise = Pointwise { op: Op::Tanh };
pub static SIGMOID: Pointwise = Pointwise { op: Op::Sigmoid };

impl Layer for Pointwise {
    fn signature(&self) -> Vec<ParamSig> {
        vec![]
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        Ok(Applied::stateless(self.op.clone(), call.input.clone()))
    }
}

pub struct Softmax;

impl Layer for Softmax {
    fn signature(&self) -> Vec<ParamSig> {
        vec![int_or("dim", -1)]
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let input = call.input;
        let rank = input.len() as i64;
        let dim = call.args.int(0);
        if dim >= rank || dim < -rank {
            return Err(CheckError::invalid(
                format!("softmax: no dimension {dim} in {}", shape_to_string(input)),
                call.args.span,
                "here",
            ));
        }
        Ok(Applied::stateless(Op::Softmax { dim }, input.clone()))
    }
}

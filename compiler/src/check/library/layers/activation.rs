//! Activations: `relu`, `gelu` (exact, or `approximate: "tanh"`), `silu`,
//! `tanh` and `sigmoid`, one function of each value; `leaky_relu(negative_slope = 0.01)` and `elu(alpha =
//! 1.0)`, the same with a number; `softmax(dim = -1)` and `log_softmax(dim
//! = -1)`, normalised along one dimension.

use super::{float_or, int_or, Args, Call, Layer};
use crate::check::args::{ParamSig, Ty, Value};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Op};

/// A function applied to each value on its own: no arguments, no
/// parameters, the shape unchanged.
pub struct Pointwise {
    op: Op,
}

pub static RELU: Pointwise = Pointwise { op: Op::Relu };
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

/// `gelu(approximate = "none")`: the exact form x·Φ(x), or with
/// `approximate: "tanh"` the tanh approximation (`F.gelu(x,
/// approximate="tanh")`, GPT-2's).
pub struct Gelu;

pub static GELU: Gelu = Gelu;

impl Layer for Gelu {
    fn signature(&self) -> Vec<ParamSig> {
        vec![ParamSig::optional(
            "approximate",
            Ty::Str,
            Value::Str("none".into()),
        )]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        match args.values[0].as_str() {
            "none" | "tanh" => Ok(()),
            other => Err(CheckError::InvalidValue {
                message: format!("gelu: unknown approximation `{other}`"),
                span: args.span,
                label: "here".into(),
                help: Some(
                    "`approximate: \"none\"` (the exact form, the default) or `\"tanh\"`".into(),
                ),
            }),
        }
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let tanh = call.args.values[0].as_str() == "tanh";
        Ok(Applied::stateless(Op::Gelu { tanh }, call.input.clone()))
    }
}

/// A function of each value with one number, as PyTorch's module takes it
/// (`nn.LeakyReLU(negative_slope)`, `nn.ELU(alpha)`).
pub struct Shaped {
    param: &'static str,
    default: f64,
    op: fn(f64) -> Op,
}

fn leaky_relu(negative_slope: f64) -> Op {
    Op::LeakyRelu { negative_slope }
}

fn elu(alpha: f64) -> Op {
    Op::Elu { alpha }
}

pub static LEAKY_RELU: Shaped = Shaped {
    param: "negative_slope",
    default: 0.01,
    op: leaky_relu,
};
pub static ELU: Shaped = Shaped {
    param: "alpha",
    default: 1.0,
    op: elu,
};

impl Layer for Shaped {
    fn signature(&self) -> Vec<ParamSig> {
        vec![float_or(self.param, self.default)]
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let op = (self.op)(call.args.float(0));
        Ok(Applied::stateless(op, call.input.clone()))
    }
}

/// `softmax` or, with `log`, `log_softmax` along one dimension.
pub struct Softmax {
    pub log: bool,
}

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
                format!(
                    "{}: no dimension {dim} in {}",
                    call.args.layer.name(),
                    shape_to_string(input)
                ),
                call.args.span,
                "here",
            ));
        }
        let op = if self.log {
            Op::LogSoftmax { dim }
        } else {
            Op::Softmax { dim }
        };
        Ok(Applied::stateless(op, input.clone()))
    }
}

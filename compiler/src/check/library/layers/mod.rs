//! The built-in layers, one file per family. Each family implements
//! [`Layer`]: the signature a call binds against, the checks of the bound
//! arguments on their own, and [`Layer::apply`], the layer applied to an
//! input shape (the plan node, its parameters named and initialised as
//! PyTorch does, and the output shape, or the shape error). A new layer
//! goes into its family's file, plus its name and its arm of the dispatch
//! in [`super`].

pub(super) mod activation;
pub(super) mod attention;
pub(super) mod conv;
pub(super) mod dropout;
pub(super) mod embedding;
pub(super) mod linear;
pub(super) mod norm;
pub(super) mod pool;
pub(super) mod shape_ops;
pub(super) mod upsample;

use super::shapes::join_path;
use super::{Applied, Builtin};
use crate::check::args::{ParamSig, Ty, Value};
use crate::check::CheckError;
use crate::plan::{Init, ParamSpec, Shape};
use crate::span::Span;

/// What a built-in layer is: what it accepts, what it checks, what it
/// becomes.
pub(super) trait Layer: Sync {
    /// The parameters in call order, with their defaults.
    fn signature(&self) -> Vec<ParamSig>;

    /// Checks the bound values on their own, before any input is seen.
    /// Most layers have nothing to check beyond the types.
    fn validate(&self, _args: &Args<'_>) -> Result<(), CheckError> {
        Ok(())
    }

    /// The plan node for the layer applied to `call.input`, with the
    /// parameters and buffers it creates, or the shape error.
    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError>;
}

/// A call's bound values, in signature order, and the span errors point at.
pub(super) struct Args<'a> {
    pub layer: Builtin,
    pub values: &'a [Value],
    pub span: Span,
}

impl Args<'_> {
    fn int(&self, i: usize) -> i64 {
        self.values[i].as_int()
    }

    fn float(&self, i: usize) -> f64 {
        self.values[i].as_float()
    }

    fn flag(&self, i: usize) -> bool {
        self.values[i].as_bool()
    }

    /// The `i`-th value must be at least 1.
    fn positive(&self, i: usize) -> Result<(), CheckError> {
        let v = self.int(i);
        if v < 1 {
            return Err(CheckError::invalid(
                format!(
                    "{} `{}` must be at least 1, got {v}",
                    self.layer.name(),
                    self.layer.signature()[i].name
                ),
                self.span,
                "here",
            ));
        }
        Ok(())
    }

    /// The first `n` values must each be at least 1.
    fn positive_first(&self, n: usize) -> Result<(), CheckError> {
        (0..n).try_for_each(|i| self.positive(i))
    }

    /// The `i`-th value as `[height, width]` (an integer stands for both).
    fn pair(&self, i: usize) -> [i64; 2] {
        self.values[i].as_int_pair()
    }

    /// Every entry of the `i`-th value (an integer or a pair) must be at
    /// least `min`.
    fn pair_at_least(&self, i: usize, min: i64) -> Result<(), CheckError> {
        let found = self.pair(i);
        if found.iter().all(|v| *v >= min) {
            return Ok(());
        }
        let name = &self.layer.signature()[i].name;
        let shown = match &self.values[i] {
            Value::List(_) => format!("[{}, {}]", found[0], found[1]),
            _ => found[0].to_string(),
        };
        Err(CheckError::invalid(
            format!(
                "{} `{name}` must be at least {min}, got {shown}",
                self.layer.name()
            ),
            self.span,
            "here",
        ))
    }
}

/// A layer applied to an input inside a module.
pub(super) struct Call<'a> {
    pub args: Args<'a>,
    /// The module path the layer's parameters are named under.
    pub path: &'a str,
    pub input: &'a Shape,
}

impl Call<'_> {
    /// The full name of the layer's parameter `n`.
    fn name(&self, n: &str) -> String {
        join_path(self.path, n)
    }

    /// A parameter drawn from U(-1/√fan_in, 1/√fan_in), PyTorch's default
    /// for linear and convolution layers.
    fn uniform(&self, n: &str, shape: Vec<i64>, fan_in: i64) -> ParamSpec {
        self.fixed(
            n,
            shape,
            Init::Uniform {
                bound: 1.0 / (fan_in as f64).sqrt(),
            },
        )
    }

    fn fixed(&self, n: &str, shape: Vec<i64>, init: Init) -> ParamSpec {
        ParamSpec {
            name: self.name(n),
            shape,
            init,
            frozen: false,
        }
    }
}

fn int(name: &str) -> ParamSig {
    ParamSig::required(name, Ty::Int)
}

fn int_or(name: &str, default: i64) -> ParamSig {
    ParamSig::optional(name, Ty::Int, Value::Int(default))
}

fn float_or(name: &str, default: f64) -> ParamSig {
    ParamSig::optional(name, Ty::Float, Value::Float(default))
}

/// An integer or `[height, width]`.
fn pair(name: &str) -> ParamSig {
    ParamSig::required(name, Ty::IntOrPair)
}

fn pair_or(name: &str, default: i64) -> ParamSig {
    ParamSig::optional(name, Ty::IntOrPair, Value::Int(default))
}

fn bool_or(name: &str, default: bool) -> ParamSig {
    ParamSig::optional(name, Ty::Bool, Value::Bool(default))
}

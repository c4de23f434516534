//! Layers that move values without computing new ones, or reduce one
//! dimension: `flatten`, `reshape([sizes])`, `transpose(dim0, dim1)`,
//! `select(dim, index)` and `mean(dim)`. Dimension 0, the batch, is never
//! theirs to touch.

use super::{int, Args, Call, Layer};
use crate::check::args::{ParamSig, Ty, Value};
use crate::check::library::shapes::{flatten, sample_size};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Dim, Op, Shape};

pub struct Flatten;

impl Layer for Flatten {
    fn signature(&self) -> Vec<ParamSig> {
        vec![]
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        Ok(Applied::stateless(
            Op::Flatten,
            flatten(call.input, call.args.span)?,
        ))
    }
}

pub struct Reshape;

impl Reshape {
    fn sizes(args: &Args<'_>) -> Vec<i64> {
        match &args.values[0] {
            Value::List(items) => items.iter().map(Value::as_int).collect(),
            _ => vec![],
        }
    }
}

impl Layer for Reshape {
    fn signature(&self) -> Vec<ParamSig> {
        vec![ParamSig::required("shape", Ty::IntList)]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        if let Value::List(items) = &args.values[0] {
            if items.is_empty() || items.iter().any(|v| v.as_int() < 1) {
                return Err(CheckError::invalid(
                    "reshape needs a list of sizes ≥ 1 for each sample, e.g. `reshape([1, 8, 8])`",
                    args.span,
                    "here",
                ));
            }
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let (input, span) = (call.input, call.args.span);
        let shape = Reshape::sizes(&call.args);
        let have = sample_size(input, span)?;
        let want: i64 = shape.iter().product();
        if have != want {
            return Err(CheckError::ShapeMismatch {
                expected: format!("{want} values per sample"),
                found: format!("{} ({have} values)", shape_to_string(input)),
                span,
                what: "reshape must keep the number of values".into(),
                help: None,
            });
        }
        let mut output = vec![input[0].clone()];
        output.extend(shape.iter().map(|n| Dim::Size(*n)));
        Ok(Applied::stateless(Op::Reshape { shape }, output))
    }
}

pub struct Transpose;

impl Layer for Transpose {
    fn signature(&self) -> Vec<ParamSig> {
        vec![int("dim0"), int("dim1")]
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let (a, input) = (&call.args, call.input);
        let rank = input.len() as i64;
        let norm = |d: i64| if d < 0 { d + rank } else { d };
        let (d0, d1) = (norm(a.int(0)), norm(a.int(1)));
        if !(1..rank).contains(&d0) || !(1..rank).contains(&d1) {
            return Err(CheckError::ShapeMismatch {
                expected: format!("dimensions between 1 and {} (0 is the batch)", rank - 1),
                found: format!(
                    "transpose({}, {}) of {}",
                    a.int(0),
                    a.int(1),
                    shape_to_string(input)
                ),
                span: a.span,
                what: "no such dimension".into(),
                help: None,
            });
        }
        let mut output = input.clone();
        output.swap(d0 as usize, d1 as usize);
        Ok(Applied::stateless(
            Op::Transpose { dim0: d0, dim1: d1 },
            output,
        ))
    }
}

/// The dimension the first value names (negative: from the end), which
/// must not be the batch.
fn reduced_dim(call: &Call<'_>) -> Result<i64, CheckError> {
    let (a, input) = (&call.args, call.input);
    let rank = input.len() as i64;
    let dim = if a.int(0) < 0 {
        a.int(0) + rank
    } else {
        a.int(0)
    };
    if !(1..rank).contains(&dim) {
        return Err(CheckError::ShapeMismatch {
            expected: format!("a dimension between 1 and {} (0 is the batch)", rank - 1),
            found: format!(
                "{}({}, …) of {}",
                a.layer.name(),
                a.int(0),
                shape_to_string(input)
            ),
            span: a.span,
            what: "no such dimension".into(),
            help: None,
        });
    }
    Ok(dim)
}

/// The input without dimension `dim`.
fn without(call: &Call<'_>, dim: i64) -> Shape {
    let mut output = call.input.clone();
    output.remove(dim as usize);
    output
}

pub struct Select;

impl Layer for Select {
    fn signature(&self) -> Vec<ParamSig> {
        vec![int("dim"), int("index")]
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let (a, input) = (&call.args, call.input);
        let dim = reduced_dim(call)?;
        let output = without(call, dim);
        let index = a.int(1);
        let Dim::Size(n) = input[dim as usize] else {
            return Err(CheckError::ShapeMismatch {
                expected: "a sized dimension".into(),
                found: shape_to_string(input),
                span: a.span,
                what: format!(
                    "select({}, {index}) needs the size of dimension {dim}",
                    a.int(0)
                ),
                help: None,
            });
        };
        if index >= n || index < -n {
            return Err(CheckError::ShapeMismatch {
                expected: format!("an index in 0..{n} (or from the end, -{n}..-1)"),
                found: format!("{index} in {}", shape_to_string(input)),
                span: a.span,
                what: format!("dimension {dim} has {n} positions"),
                help: None,
            });
        }
        let index = if index < 0 { index + n } else { index };
        Ok(Applied::stateless(Op::Select { dim, index }, output))
    }
}

pub struct Mean;

impl Layer for Mean {
    fn signature(&self) -> Vec<ParamSig> {
        vec![int("dim")]
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let dim = reduced_dim(call)?;
        Ok(Applied::stateless(Op::Mean { dim }, without(call, dim)))
    }
}

//! Learned vectors: `embedding(num_embeddings, dim, std = 1.0)` looks token
//! ids up in a table; `pos_embedding(max_len, dim)` adds one vector per
//! position; `class_token(dim)` puts one vector before a sequence.

use super::{float_or, int, Args, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Dim, Init, Op};

pub struct Embedding;

impl Layer for Embedding {
    fn signature(&self) -> Vec<ParamSig> {
        // nn.Embedding's N(0, 1) by default; GPT-2 draws from N(0, 0.02²).
        vec![int("num_embeddings"), int("dim"), float_or("std", 1.0)]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(2)?;
        let std = args.float(2);
        if !(std.is_finite() && std > 0.0) {
            return Err(CheckError::invalid(
                format!("embedding: std must be a number above 0, got {std}"),
                args.span,
                "here",
            ));
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let (n, d) = (a.int(0), a.int(1));
        let params = vec![call.fixed("weight", vec![n, d], Init::Normal { std: a.float(2) })];
        let mut output = call.input.clone();
        output.push(Dim::Size(d));
        let op = Op::Embedding {
            num_embeddings: n,
            dim: d,
            weight: call.name("weight"),
        };
        Ok(Applied::learned(op, params, output))
    }
}

pub struct PosEmbedding;

impl Layer for PosEmbedding {
    fn signature(&self) -> Vec<ParamSig> {
        vec![int("max_len"), int("dim")]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(2)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let (a, input) = (&call.args, call.input);
        let (max_len, d) = (a.int(0), a.int(1));
        match input.as_slice() {
            [_, Dim::Size(t), Dim::Size(w)] if *w == d && *t <= max_len => {}
            _ => {
                return Err(CheckError::ShapeMismatch {
                    expected: format!("[B, T, {d}] with T ≤ {max_len}"),
                    found: shape_to_string(input),
                    span: a.span,
                    what: "pos_embedding adds one learned vector per position".into(),
                    help: None,
                })
            }
        }
        let params = vec![call.fixed("weight", vec![max_len, d], Init::Normal { std: 0.02 })];
        let op = Op::PosEmbedding {
            max_len,
            dim: d,
            weight: call.name("weight"),
        };
        Ok(Applied::learned(op, params, input.clone()))
    }
}

pub struct ClassToken;

impl Layer for ClassToken {
    fn signature(&self) -> Vec<ParamSig> {
        vec![int("dim")]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive(0)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let (a, input) = (&call.args, call.input);
        let d = a.int(0);
        let t = match input.as_slice() {
            [_, Dim::Size(t), Dim::Size(w)] if *w == d => *t,
            _ => {
                return Err(CheckError::ShapeMismatch {
                    expected: format!("[B, T, {d}]"),
                    found: shape_to_string(input),
                    span: a.span,
                    what: "class_token puts one learned vector before a sequence".into(),
                    help: None,
                })
            }
        };
        // torchvision's VisionTransformer: a zero-initialised [1, 1, dim]
        // parameter.
        let params = vec![call.fixed("weight", vec![1, 1, d], Init::Zeros)];
        let op = Op::ClassToken {
            dim: d,
            weight: call.name("weight"),
        };
        let output = vec![input[0].clone(), Dim::Size(t + 1), Dim::Size(d)];
        Ok(Applied::learned(op, params, output))
    }
}

//! `attention(dim, heads, causal = false, kv_heads = heads, bias = true,
//! rope = false, rope_theta = 10000.0)`: multi-head self-attention over a
//! sequence, as `nn.MultiheadAttention`, with grouped key/value heads and
//! rotary position embeddings as options.

use super::{bool_or, float_or, int, int_or, Args, Call, Layer};
use crate::check::args::ParamSig;
use crate::check::library::shapes::divisor_near;
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Dim, Init, Op};

pub struct Attention;

impl Layer for Attention {
    fn signature(&self) -> Vec<ParamSig> {
        // kv_heads 0 stands for "as many as heads" (plain multi-head).
        vec![
            int("dim"),
            int("heads"),
            bool_or("causal", false),
            int_or("kv_heads", 0),
            bool_or("bias", true),
            bool_or("rope", false),
            float_or("rope_theta", 10000.0),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        args.positive_first(2)?;
        check_heads(args)?;
        check_rope(args)
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let (a, input) = (&call.args, call.input);
        let (dim, heads, causal) = (a.int(0), a.int(1), a.flag(2));
        let kv_heads = if a.int(3) == 0 { heads } else { a.int(3) };
        let (bias, rope) = (a.flag(4), a.flag(5));
        let rows = (heads + 2 * kv_heads) * (dim / heads);
        match input.as_slice() {
            [_, _, Dim::Size(w)] if *w == dim => {}
            _ => {
                return Err(CheckError::ShapeMismatch {
                    expected: format!("[B, T, {dim}]"),
                    found: shape_to_string(input),
                    span: a.span,
                    what: format!("attention({dim}, ...) takes a sequence of {dim}-wide vectors"),
                    help: None,
                })
            }
        }
        // nn.MultiheadAttention: xavier_uniform_ in_proj, zero biases,
        // out_proj initialised as a linear layer.
        let xavier = (6.0 / (dim + rows) as f64).sqrt();
        let mut params = vec![call.fixed(
            "in_proj_weight",
            vec![rows, dim],
            Init::Uniform { bound: xavier },
        )];
        if bias {
            params.push(call.fixed("in_proj_bias", vec![rows], Init::Zeros));
        }
        params.push(call.uniform("out_proj.weight", vec![dim, dim], dim));
        if bias {
            params.push(call.fixed("out_proj.bias", vec![dim], Init::Zeros));
        }
        let op = Op::Attention {
            dim,
            heads,
            kv_heads,
            causal,
            rope_theta: rope.then(|| a.float(6)),
            in_proj_weight: call.name("in_proj_weight"),
            in_proj_bias: bias.then(|| call.name("in_proj_bias")),
            out_proj_weight: call.name("out_proj.weight"),
            out_proj_bias: bias.then(|| call.name("out_proj.bias")),
        };
        Ok(Applied::learned(op, params, input.clone()))
    }
}

/// Heads divide the width, and key/value heads divide the heads.
fn check_heads(args: &Args<'_>) -> Result<(), CheckError> {
    let (dim, heads) = (args.int(0), args.int(1));
    if dim % heads != 0 {
        return Err(CheckError::InvalidValue {
            message: format!("attention: {heads} heads do not divide the width {dim}"),
            span: args.span,
            label: "heads must divide dim".into(),
            help: Some(format!(
                "each head gets dim / heads features; try heads = {}",
                divisor_near(dim, heads)
            )),
        });
    }
    let kv = args.int(3);
    if kv < 0 || (kv > 0 && heads % kv != 0) {
        return Err(CheckError::InvalidValue {
            message: format!(
                "attention: {kv} key/value heads do not divide the {heads} query heads"
            ),
            span: args.span,
            label: "kv_heads must divide heads".into(),
            help: Some(format!(
                "each key/value head serves heads / kv_heads query heads; try kv_heads = {}",
                divisor_near(heads, kv.max(1))
            )),
        });
    }
    Ok(())
}

/// Rotary embeddings need an even head width and a base above 1.
fn check_rope(args: &Args<'_>) -> Result<(), CheckError> {
    let (dim, heads) = (args.int(0), args.int(1));
    if args.flag(5) && (dim / heads) % 2 != 0 {
        return Err(CheckError::invalid(
            format!(
                "attention: rotary embeddings rotate pairs of features, but each head has {} (odd)",
                dim / heads
            ),
            args.span,
            "dim / heads must be even with rope",
        ));
    }
    let theta = args.float(6);
    if !(theta.is_finite() && theta > 1.0) {
        return Err(CheckError::invalid(
            format!("attention: rope_theta must be a number above 1, got {theta}"),
            args.span,
            "here",
        ));
    }
    Ok(())
}

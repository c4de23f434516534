//! `sequence = true`: Megatron-LM's sequence parallelism. Outside the
//! split regions each tensor rank holds 1/T of a value's sequence
//! (dimension 1 of `[B, S, …]`), not the whole: norms, dropout, residual
//! additions and the other layers that work on each position alone run on
//! that part. Where a split region's partial sums would be all-reduced
//! they are reduce-scattered instead, and where a split layer reads the
//! region's value it is all-gathered first (in backward the other way
//! round). A layer that needs the whole sequence (flatten, pooling, the
//! model's result) reads it all-gathered; a value computed whole on every
//! rank that a layer of the region reads is cut to the rank's part (its
//! gradient all-gathered in backward, Megatron-LM's scatter into the
//! sequence-parallel region).
//!
//! | value | a rank holds |
//! |---|---|
//! | a summing split layer's output (row-parallel, head-split, vocabulary-split embedding), `[B, S, …]`, unless it is the model's result | its part of the sequence |
//! | a whole layer's output that works on each position (element-wise, `linear`, `layer_norm`, `rms_norm`, `pos_embedding`, `embedding`) with an input held by parts, or reading the model's input, unless it is the result | its part of the sequence |
//! | the model's input, `[B, S, F]` (or ids `[B, S]` an embedding reads) | whole, read in parts by the layers above |
//! | anything else | as without `sequence` |
//!
//! A sequence that does not divide into T parts is an error at the layer.
//! A layer that reads a weight another layer reads too stays out of the
//! region, so no weight is read both inside it (its gradient a sum over
//! the parts) and outside.

use super::super::parallel::ParallelSpec;
use super::super::CheckError;
use super::region::elementwise;
use crate::plan::{sums_output, Dim, ModelPlan, NodeSplit, Op};
use crate::span::Span;

/// `sequence = true` needs a tensor group: an error at `at`, the setting,
/// without one.
pub fn needs_tensor(spec: &ParallelSpec, at: Span, errors: &mut Vec<CheckError>) {
    if spec.tensor < 2 {
        errors.push(CheckError::InvalidValue {
            message:
                "`sequence = true` splits the sequence over the tensor group, but there is none"
                    .into(),
            span: at,
            label: "needs `tensor` of 2 or more".into(),
            help: Some("set `tensor = T` (2 or more), or drop `sequence`".into()),
        });
    }
}

/// Whether `op` computes each position of its input on its own (so it can
/// run on a part of the sequence).
fn position_wise(op: &Op) -> bool {
    elementwise(op)
        || matches!(
            op,
            Op::Linear { .. }
                | Op::LayerNorm { .. }
                | Op::RmsNorm { .. }
                | Op::PosEmbedding { .. }
                | Op::Embedding { .. }
        )
}

/// The sequence length of a value `[B, S, …, D]`: `S` (none for `[B, D]`).
fn length(shape: &[Dim]) -> Option<i64> {
    match shape.get(1) {
        Some(Dim::Size(s)) if shape.len() >= 3 => Some(*s),
        _ => None,
    }
}

/// The nodes whose outputs each tensor rank holds by parts of the
/// sequence, in node order; `None` on an error (reported at the layer),
/// or when no value would be held by parts (reported at `at`).
pub fn nodes(
    model: &ModelPlan,
    (spans, names): (&[Span], &[String]),
    (splits, t): (&[NodeSplit], u64),
    at: Span,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<usize>> {
    let nodes = &model.nodes;
    let how = |i: usize| splits.iter().find(|s| s.node == i).map(|s| s.split);
    let before = errors.len();
    let span = |i: usize| spans.get(i).copied().unwrap_or(at);
    let name = |i: usize| super::label(model, names, i, "");
    // The model's input, read in parts by a whole position-wise layer: a
    // sequence of vectors, or of ids an embedding looks up.
    let input_in_parts = |i: usize, j: usize| {
        let input = &nodes[i].output;
        matches!(nodes[i].op, Op::Input)
            && how(j).is_none()
            && position_wise(&nodes[j].op)
            && match input.len() {
                2 => matches!(nodes[j].op, Op::Embedding { .. }),
                n => n == 3 && length(input).is_some(),
            }
    };
    let mut parts = vec![false; nodes.len()];
    let mut indivisible = false;
    for (i, node) in nodes.iter().enumerate() {
        // The loss reads the result whole.
        let candidate = if i == model.result {
            false
        } else if sums_output(how(i)) {
            true
        } else if how(i).is_none() && position_wise(&node.op) && !shares_weight(model, i) {
            // `+` and `*` read values of one shape: a whole one is cut
            // to this rank's part of the sequence as the other is.
            let held = |k: usize| parts[k] || input_in_parts(k, i);
            node.inputs.iter().any(|&k| held(k))
        } else {
            false
        };
        if !candidate {
            continue;
        }
        match length(&node.output) {
            // Every value has the one sequence: one error, at the first.
            Some(s) if s % t as i64 != 0 && indivisible => {}
            Some(s) if s % t as i64 != 0 => {
                indivisible = true;
                errors.push(CheckError::InvalidValue {
                    message: format!(
                        "{}: its sequence of {s} does not divide into {t} parts, one a tensor rank",
                        name(i)
                    ),
                    span: span(i),
                    label: format!("split by sequence over tensor = {t}"),
                    help: Some(format!(
                        "choose a sequence length (context) that {t} divides, or drop `sequence`"
                    )),
                })
            }
            Some(_) => parts[i] = true,
            None => {}
        }
    }
    if errors.len() > before {
        return None;
    }
    let sequence: Vec<usize> = (0..nodes.len()).filter(|&i| parts[i]).collect();
    if sequence.is_empty() {
        errors.push(CheckError::Unsupported {
            message: format!(
                "`sequence = true` splits no value of `{}`: no split layer gives a sequence `[B, S, …]`",
                model.name
            ),
            span: at,
            help: Some("sequence parallelism splits the sequence of a transformer's norms and residuals; drop `sequence` for this model".into()),
        });
        return None;
    }
    Some(sequence)
}

/// Whether node `i` reads a weight another node reads too (a tied
/// embedding): kept whole, out of the sequence-parallel region, whose
/// weights' gradients are summed over the parts.
fn shares_weight(model: &ModelPlan, i: usize) -> bool {
    let mine = model.nodes[i].op.params();
    (model.nodes.iter().enumerate())
        .any(|(j, n)| j != i && n.op.params().iter().any(|p| mine.contains(p)))
}

//! `sequence = true`: Megatron-LM's sequence parallelism. Outside the
//! split regions each tensor rank holds 1/T of every value's sequence
//! (dimension 1 of `[B, S, …]`), not the whole: norms, dropout, residual
//! additions and the other layers that work on each position alone run on
//! that part. Where a split region's partial sums would be all-reduced
//! they are reduce-scattered instead, and where a split layer reads the
//! region's value it is all-gathered first (in backward the other way
//! round). A layer that needs the whole sequence (flatten, pooling, the
//! loss) reads it all-gathered.
//!
//! | value | a rank holds |
//! |---|---|
//! | a summing split layer's output (row-parallel, head-split, vocabulary-split embedding), `[B, S, …]` | its part of the sequence |
//! | a whole layer's output that works on each position (element-wise, `linear`, `layer_norm`, `rms_norm`, `pos_embedding`, `embedding`), all of whose inputs are held by parts | its part of the sequence |
//! | the model's input, `[B, S, …]` (or ids `[B, S]` an embedding reads) | whole, read in parts by the layers above |
//! | anything else | as without `sequence` |
//!
//! A value held by parts that reaches the model's result, or an
//! element-wise layer that mixes it with a whole value, is an error at the
//! layer; so is a sequence that does not divide into T parts.

use super::super::parallel::ParallelSpec;
use super::super::CheckError;
use super::region::elementwise;
use crate::plan::{sequence_params, sums_output, Dim, ModelPlan, Node, NodeSplit, Op};
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
/// sequence, in node order; `None` when a value would reach a layer it
/// cannot (each reported at the layer).
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
            && (length(input).is_some()
                || (input.len() == 2 && matches!(nodes[j].op, Op::Embedding { .. })))
    };
    let mut parts = vec![false; nodes.len()];
    let mut indivisible = false;
    for (i, node) in nodes.iter().enumerate() {
        let candidate = if sums_output(how(i)) {
            true
        } else if how(i).is_none() && position_wise(&node.op) && !node.inputs.is_empty() {
            match whole_in_parts(nodes, i, &parts, &input_in_parts, &name) {
                Ok(held) => held,
                Err(message) => {
                    errors.push(misplaced(span(i), message));
                    false
                }
            }
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
    if parts[model.result] {
        errors.push(misplaced(
            span(model.result),
            format!(
                "{} gives the model's result, which each tensor rank would hold a part of the sequence of; the loss reads it whole",
                name(model.result)
            ),
        ));
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
    tied_outside(model, splits, &sequence, (span, &name), errors);
    (errors.len() == before).then_some(sequence)
}

/// Whether whole node `i`, which works on each position alone, works on
/// parts of the sequence: all its inputs are held by parts (or are the
/// model's input, read by parts, `input_in_parts`) and have one shape.
/// An error (`name` naming the nodes) when it mixes them with whole values
/// or broadcasts one along the sequence.
fn whole_in_parts(
    nodes: &[Node],
    i: usize,
    parts: &[bool],
    input_in_parts: &dyn Fn(usize, usize) -> bool,
    name: &dyn Fn(usize) -> String,
) -> Result<bool, String> {
    let inputs = &nodes[i].inputs;
    let held = |k: usize| parts[k] || input_in_parts(k, i);
    let any_part = inputs.iter().any(|&k| parts[k]);
    let reads_input = inputs.iter().any(|&k| input_in_parts(k, i));
    if inputs.iter().all(|&k| held(k)) && (any_part || reads_input) {
        let shapes: Vec<&Vec<Dim>> = inputs.iter().map(|&k| &nodes[k].output).collect();
        if shapes.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!(
                "{} adds or multiplies values of different shapes, broadcast along the sequence, which each tensor rank holds a part of",
                name(i)
            ));
        }
        return Ok(true);
    }
    match (inputs.iter().find(|&&k| parts[k]), inputs.iter().find(|&&k| !held(k))) {
        (Some(&part), Some(&whole)) => Err(format!(
            "{} reads {}, which each tensor rank holds a part of the sequence of, and {}, whole: it cannot mix them",
            name(i),
            name(part),
            name(whole)
        )),
        _ => Ok(false),
    }
}

/// A parameter that a layer of the sequence-parallel region reads (its
/// gradient a sum over the parts) may not be read outside it too.
fn tied_outside(
    model: &ModelPlan,
    splits: &[NodeSplit],
    sequence: &[usize],
    (span, name): (impl Fn(usize) -> Span, &dyn Fn(usize) -> String),
    errors: &mut Vec<CheckError>,
) {
    let inside = sequence_params(model, splits, sequence);
    for (i, node) in model.nodes.iter().enumerate() {
        if sequence.contains(&i) {
            continue;
        }
        if let Some(p) = node.op.params().into_iter().find(|p| inside.contains(p)) {
            errors.push(misplaced(
                span(i),
                format!(
                    "{} reads `{p}`, which layers working on parts of the sequence read too: its gradient would be summed over the parts twice",
                    name(i)
                ),
            ));
        }
    }
}

fn misplaced(span: Span, message: String) -> CheckError {
    CheckError::InvalidValue {
        message,
        span,
        label: "misplaced under sequence parallelism".into(),
        help: Some(
            "outside the split regions each tensor rank holds a part of the sequence; end the model with a layer that needs the whole sequence (flatten, pooling) or an output layer split by vocabulary, and keep whole values out of the sequence-parallel region (`dtl compile` lists it)".into(),
        ),
    }
}

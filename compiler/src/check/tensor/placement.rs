//! The placement of every value under a split: whole on every rank, or
//! sharded on its last dimension. Each split states what it reads and
//! gives; a value that reaches a layer in a placement the layer cannot
//! take is an error at the layer, so a layout that would compute another
//! function never runs.
//!
//! | split | reads | gives |
//! |---|---|---|
//! | `column` | whole | sharded |
//! | `row` | sharded | whole (the partial sums all-reduced) |
//! | `heads`, `vocab` | whole | whole (summed) |
//! | none, element-wise | all sharded, or all whole | the same |
//! | none, any other | whole | whole |
//!
//! The model's result may be sharded only where it is the output layer's
//! scores under `cross_entropy` (the loss reads them split). A weight two
//! layers read (a tied embedding) must be cut alike in both.

use std::collections::BTreeMap;

use super::super::CheckError;
use super::region::elementwise;
use crate::plan::{ModelPlan, Op, TensorSplit};
use crate::span::Span;

/// Checks `split` (the default filled in around the overrides) value by
/// value, marking the element-wise nodes that work on sharded values
/// `Sharded`; every misplaced value is an error at the layer that reads
/// it. `fixed`: the overrides' spans, named in the messages.
pub fn check(
    model: &ModelPlan,
    split: &mut [Option<TensorSplit>],
    ((spans, names), fixed): (super::Sources, &BTreeMap<usize, Span>),
    vocab_loss: bool,
    errors: &mut Vec<CheckError>,
) {
    let nodes = &model.nodes;
    let mut sharded = vec![false; nodes.len()];
    let why = |i: usize, split: &[Option<TensorSplit>]| describe(model, names, fixed, split, i);
    for i in 0..nodes.len() {
        let inputs = &nodes[i].inputs;
        let any = inputs.iter().any(|&n| sharded[n]);
        let all = !inputs.is_empty() && inputs.iter().all(|&n| sharded[n]);
        let reads = |want: bool| -> Option<String> {
            let bad = *inputs.iter().find(|&&n| sharded[n] != want)?;
            let by = why(bad, split);
            Some(match want {
                true => format!(
                    "it needs its input sharded on its last dimension, but {by} gives it whole"
                ),
                false => format!(
                    "it needs its input whole, but {by} gives it sharded on its last dimension"
                ),
            })
        };
        let elementwise_node =
            matches!(split[i], None | Some(TensorSplit::Sharded)) && elementwise(&nodes[i].op);
        let (problem, gives) = match split[i] {
            Some(TensorSplit::Column) => (reads(false), Some(true)),
            Some(TensorSplit::Row) => (reads(true), Some(false)),
            Some(TensorSplit::Heads | TensorSplit::Vocab) => (reads(false), Some(false)),
            _ if elementwise_node && any => {
                if all && !fixed.contains_key(&i) {
                    (None, Some(true))
                } else if all {
                    let m = "`tensor_split` keeps it whole, but it reads only sharded values: nothing would gather them";
                    (Some(m.to_string()), None)
                } else {
                    let m = reads(true)
                        .map(|m| format!("{m}, and it cannot mix sharded and whole values"));
                    (m, None)
                }
            }
            _ => (reads(false), Some(false)),
        };
        match gives {
            Some(true) => {
                sharded[i] = true;
                if elementwise_node {
                    split[i] = Some(TensorSplit::Sharded);
                }
            }
            Some(false) if elementwise_node => split[i] = None,
            _ => {}
        }
        if let Some(problem) = problem {
            errors.push(misplaced(i, why(i, split), problem, (spans, fixed)));
        }
    }
    let result = model.result;
    let scores = vocab_loss
        && split[result] == Some(TensorSplit::Column)
        && matches!(nodes[result].op, Op::Linear { .. });
    if sharded[result] && !scores {
        errors.push(misplaced(
            result,
            why(result, split),
            "it gives the model's result, which would be sharded: only the output layer's scores under `cross_entropy` can stay split (the loss reads them so); end every split region with a row-parallel layer".into(),
            (spans, fixed),
        ));
    }
    tied_alike(model, split, (spans, names, fixed), errors);
}

/// Node `i` as messages name it: its name, path, op and split.
fn describe(
    model: &ModelPlan,
    names: &[String],
    fixed: &BTreeMap<usize, Span>,
    split: &[Option<TensorSplit>],
    i: usize,
) -> String {
    let how = match split[i] {
        Some(TensorSplit::Column) => "column-parallel",
        Some(TensorSplit::Row) => "row-parallel",
        Some(TensorSplit::Heads) => "split by heads",
        Some(TensorSplit::Vocab) => "split by vocabulary",
        Some(TensorSplit::Sharded) => "on a sharded value",
        None => "whole on every rank",
    };
    let by = if fixed.contains_key(&i) {
        " by `tensor_split`"
    } else {
        ""
    };
    let kind = model.nodes[i].op.kind();
    super::label(model, names, i, &format!("{kind}, {how}{by}"))
}

/// An error at node `i` (`what`, described), at its override's span
/// when it has one.
fn misplaced(
    i: usize,
    what: String,
    problem: String,
    (spans, fixed): (&[Span], &BTreeMap<usize, Span>),
) -> CheckError {
    let span = fixed
        .get(&i)
        .or_else(|| spans.get(i))
        .copied()
        .unwrap_or_default();
    CheckError::InvalidValue {
        message: format!("{what}: {problem}"),
        span,
        label: "misplaced under tensor parallelism".into(),
        help: Some(
            "a column-parallel linear gives its output sharded, which only element-wise layers and a row-parallel linear may read; change `tensor_split` so each sharded region closes (`dtl compile` lists the split of every layer)".into(),
        ),
    }
}

/// A weight that two nodes read must be cut the same way in both.
fn tied_alike(
    model: &ModelPlan,
    split: &[Option<TensorSplit>],
    (spans, names, fixed): (&[Span], &[String], &BTreeMap<usize, Span>),
    errors: &mut Vec<CheckError>,
) {
    let mut cut: BTreeMap<&str, (usize, Option<usize>)> = BTreeMap::new();
    for (i, node) in model.nodes.iter().enumerate() {
        let dims: BTreeMap<&str, usize> = split[i]
            .map(|s| s.sharded_params(&node.op).into_iter().collect())
            .unwrap_or_default();
        for p in node.op.params() {
            let dim = dims.get(p).copied();
            match cut.get(p) {
                None => {
                    cut.insert(p, (i, dim));
                }
                Some(&(first, other)) if other != dim => {
                    let name = |n: usize| super::label(model, names, n, "");
                    errors.push(misplaced(
                        i,
                        format!("`{p}`"),
                        format!(
                            "{} and {} read it, cut differently (or one whole): a weight two layers share must be split alike in both",
                            name(first),
                            name(i)
                        ),
                        (spans, fixed),
                    ));
                }
                Some(_) => {}
            }
        }
    }
}

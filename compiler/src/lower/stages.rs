//! Pipeline stages: where each stage begins (named by `split`, or balanced
//! by forward FLOPs), which nodes and parameters each owns, and which
//! tensors cross to later stages.
//!
//! A layer used at two places of the model (a named layer applied twice)
//! has one set of parameters. Its uses must fall in one stage: the plan has
//! no group of tied gradients summed across stages, so a split that would
//! separate them is rejected, and the balanced split never makes one.

use std::collections::{BTreeMap, BTreeSet};

use super::cost::{node_flops, numel};
use crate::check::{CheckError, ParallelLayout};
use crate::plan::{ModelPlan, StagePlan, Transfer};

/// The first and last node that read each parameter.
fn parameter_uses(model: &ModelPlan) -> BTreeMap<&str, (usize, usize)> {
    let mut uses: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, node) in model.nodes.iter().enumerate() {
        for name in node.op.params() {
            uses.entry(name)
                .and_modify(|(_, last)| *last = i)
                .or_insert((i, i));
        }
    }
    uses
}

/// Each stage's first node: the layers `split` names, or a split balanced by
/// FLOPs. `None` when a shared layer would straddle a cut (reported).
pub(super) fn starts(
    model: &ModelPlan,
    layout: &ParallelLayout,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<usize>> {
    let uses = parameter_uses(model);
    // A cut before node i separates a parameter read on both sides of it.
    let straddles = |i: usize| {
        uses.iter()
            .find(|(_, (first, last))| *first < i && i <= *last)
            .map(|(name, _)| *name)
    };
    match &layout.split {
        Some(starts) => {
            for (k, &start) in starts.iter().enumerate().skip(1) {
                if let Some(name) = straddles(start) {
                    let (first, last) = uses[name];
                    errors.push(CheckError::InvalidValue {
                        message: format!(
                            "the layer `{}` is used on both sides of the cut before stage {k}: a layer shared by two pipeline stages is not supported",
                            model.nodes[first].name,
                        ),
                        span: layout.spans.split,
                        label: "cuts through a shared layer".into(),
                        help: Some(format!(
                            "move the split point so that its uses (nodes {first} to {last}) fall in one stage"
                        )),
                    });
                    return None;
                }
            }
            Some(starts.clone())
        }
        None => {
            let starts = balanced(model, layout.pipeline, |i| straddles(i).is_none());
            if starts.is_none() {
                errors.push(CheckError::InvalidValue {
                    message: format!(
                        "no split into {} pipeline stages keeps every shared layer within one stage",
                        layout.pipeline
                    ),
                    span: layout.spans.pipeline,
                    label: "too many stages for the shared layers".into(),
                    help: Some("use fewer stages, or `split = [...]` to choose the cuts".into()),
                });
            }
            starts
        }
    }
}

/// Stage boundaries by forward FLOPs: stage k starts near the node where
/// the running total passes k/stages of the whole, preferring a point where
/// only one tensor crosses (not inside a residual block), every stage
/// keeping at least one layer and no cut where `allowed` says no.
fn balanced(model: &ModelPlan, stages: u64, allowed: impl Fn(usize) -> bool) -> Option<Vec<usize>> {
    let n = model.nodes.len();
    // Weightless layers still take a slot: a small floor.
    let costs: Vec<u64> = (0..n).map(|i| node_flops(model, i).max(1)).collect();
    // prefix[i]: the cost of the nodes before i.
    let mut prefix = vec![0u64; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + costs[i];
    }
    // A cut before node i is clean when the later nodes read nothing older
    // than node i − 1.
    let mut oldest_read = vec![usize::MAX; n + 1];
    for i in (0..n).rev() {
        let own = model.nodes[i].inputs.iter().copied().min().unwrap_or(i);
        oldest_read[i] = oldest_read[i + 1].min(own);
    }
    let clean = |i: usize| oldest_read[i] + 1 >= i;
    let total = prefix[n];
    let mut starts = vec![0usize];
    for k in 1..stages as usize {
        let remaining = stages as usize - k;
        let (low, high) = (starts[k - 1] + 1, n.checked_sub(remaining)?);
        let target = total * k as u64 / stages;
        let distance = |i: usize| prefix[i].abs_diff(target);
        let best = (low..=high)
            .filter(|&i| allowed(i) && clean(i))
            .min_by_key(|&i| distance(i))
            .filter(|&i| distance(i) <= total / (2 * stages))
            .or_else(|| {
                (low..=high)
                    .filter(|&i| allowed(i))
                    .min_by_key(|&i| distance(i))
            })?;
        starts.push(best);
    }
    Some(starts)
}

/// The stages' node ranges, transfers and parameter counts, for stage starts
/// `starts` (stage 0 starts at node 0).
pub(super) fn stages(model: &ModelPlan, starts: &[usize]) -> Vec<StagePlan> {
    let n = model.nodes.len();
    let stage_of = |node: usize| starts.iter().rposition(|&s| s <= node).unwrap_or(0) as u64;
    let mut out: Vec<StagePlan> = starts
        .iter()
        .enumerate()
        .map(|(k, &first)| StagePlan {
            stage: k as u64,
            first_node: first,
            last_node: starts.get(k + 1).map_or(n - 1, |next| next - 1),
            parameters: 0,
            forward_flops: 0,
            sends: Vec::new(),
        })
        .collect();
    // The stages that read each node's output, in one pass over the edges.
    let mut readers: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); n];
    for (j, reader) in model.nodes.iter().enumerate() {
        for &i in &reader.inputs {
            readers[i].insert(stage_of(j));
        }
    }
    let sizes = parameter_sizes(model);
    let mut counted = BTreeSet::new();
    for (i, node) in model.nodes.iter().enumerate() {
        let s = stage_of(i);
        let stage = &mut out[s as usize];
        stage.forward_flops += node_flops(model, i);
        // A layer used twice counts once (its uses share a stage).
        stage.parameters += node
            .op
            .params()
            .into_iter()
            .filter(|name| counted.insert(*name))
            .map(|name| sizes[name])
            .sum::<u64>();
        // Every later stage that reads this node's output gets it once.
        for &to_stage in readers[i].iter().filter(|t| **t > s) {
            stage.sends.push(Transfer {
                node: node.name.clone(),
                index: i,
                to_stage,
                shape: node.output.clone(),
                values_per_sample: numel(&node.output),
            });
        }
    }
    out
}

/// The number of values of every trainable parameter, by name.
pub(super) fn parameter_sizes(model: &ModelPlan) -> BTreeMap<&str, u64> {
    model
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p.shape.iter().product::<i64>() as u64))
        .collect()
}

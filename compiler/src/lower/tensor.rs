//! `tensor = T` in the plan: the all-reduces over the tensor group that
//! the forward and backward passes run.

use std::collections::BTreeMap;

use super::cost::numel;
use crate::plan::{ModelPlan, NodeSplit, Op, Pass, TensorCollective, TensorSplit};

/// Bytes of one activation value (float32).
const BYTES_PER_VALUE: u64 = 4;

/// The all-reduces of one micro-batch of `micro_batch` rows, in the
/// order they run: forward, then backward last layer first.
pub(super) fn collectives(
    model: &ModelPlan,
    splits: &[NodeSplit],
    micro_batch: u64,
) -> Vec<TensorCollective> {
    let nodes = &model.nodes;
    let bytes = |i: usize| numel(&nodes[i].output) * micro_batch * BYTES_PER_VALUE;
    let mut out = Vec::new();
    // Forward: the partial sums of row-parallel and head-split nodes.
    for s in splits {
        if matches!(s.split, TensorSplit::Row | TensorSplit::Heads) {
            out.push(TensorCollective {
                pass: Pass::Forward,
                node: s.name.clone(),
                layers: vec![s.name.clone()],
                bytes: bytes(s.node),
            });
        }
    }
    // Backward: the gradient of each whole value that column-parallel or
    // head-split nodes read, once per value.
    let mut readers: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for s in splits {
        if matches!(s.split, TensorSplit::Column | TensorSplit::Heads) {
            for &input in &nodes[s.node].inputs {
                readers.entry(input).or_default().push(s.name.clone());
            }
        }
    }
    for (input, layers) in readers.into_iter().rev() {
        // The model's input has no gradient.
        if matches!(nodes[input].op, Op::Input) {
            continue;
        }
        out.push(TensorCollective {
            pass: Pass::Backward,
            node: nodes[input].name.clone(),
            layers,
            bytes: bytes(input),
        });
    }
    out
}

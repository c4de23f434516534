//! `tensor = T` in the plan: the all-reduces over the tensor group that
//! the forward and backward passes run.

use std::collections::BTreeMap;

use super::cost::numel;
use crate::plan::{ModelPlan, NodeSplit, Op, Pass, Recompute, TensorCollective, TensorSplit};

/// Bytes of one activation value (float32).
const BYTES_PER_VALUE: u64 = 4;

/// The all-reduces of one micro-batch of `micro_batch` rows over `t`
/// tensor ranks: forward; those `recompute` runs again in backward (the
/// forward sums of recomputed pieces); backward, last layer first; then
/// those of the step (shared key/value heads).
pub(super) fn collectives(
    model: &ModelPlan,
    splits: &[NodeSplit],
    (micro_batch, recompute): (u64, Recompute),
    t: u64,
) -> Vec<TensorCollective> {
    let nodes = &model.nodes;
    let bytes = |i: usize| numel(&nodes[i].output) * micro_batch * BYTES_PER_VALUE;
    let mut out = Vec::new();
    let mut update = Vec::new();
    // Forward: the partial sums of row-parallel, head-split and
    // vocabulary-split nodes; the loss from sharded scores: each row's
    // maximum, then its sum of exponentials, target score and sum of
    // scores (3 values a row).
    for s in splits {
        let sum = matches!(
            s.split,
            TensorSplit::Row | TensorSplit::Heads | TensorSplit::Vocab
        );
        let loss = s.node == model.result && s.split.sharded_output();
        let output = &nodes[s.node].output;
        let rows = numel(&output[..output.len().saturating_sub(1)]) * micro_batch;
        let sizes = match (sum, loss) {
            (true, _) => vec![bytes(s.node)],
            (_, true) => vec![rows * BYTES_PER_VALUE, 3 * rows * BYTES_PER_VALUE],
            _ => Vec::new(),
        };
        for bytes in sizes {
            out.push(TensorCollective {
                pass: Pass::Forward,
                node: s.name.clone(),
                layers: vec![s.name.clone()],
                bytes,
            });
        }
    }
    let pieces = model.pieces(recompute);
    let recomputed = |node: &str| {
        let i = nodes.iter().position(|n| n.name == node);
        pieces
            .iter()
            .any(|p| p.recomputed && i.is_some_and(|i| (p.first_node..=p.last_node).contains(&i)))
    };
    let again: Vec<TensorCollective> = out
        .iter()
        .filter(|c| recomputed(&c.node))
        .map(|c| TensorCollective {
            pass: Pass::Recompute,
            ..c.clone()
        })
        .collect();
    out.extend(again);
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
    // Once a step: the gradient of key/value heads that several ranks
    // share, every key/value row of the layer in one buffer.
    for s in splits {
        if let Op::Attention {
            dim,
            heads,
            kv_heads,
            in_proj_bias,
            ..
        } = &nodes[s.node].op
        {
            if kv_heads % t as i64 != 0 {
                let rows = (2 * kv_heads * (dim / heads)) as u64;
                let values = rows * *dim as u64 + in_proj_bias.as_ref().map_or(0, |_| rows);
                update.push(TensorCollective {
                    pass: Pass::Update,
                    node: s.name.clone(),
                    layers: vec![s.name.clone()],
                    bytes: values * BYTES_PER_VALUE,
                });
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
    out.extend(update);
    out
}

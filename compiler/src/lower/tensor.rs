//! `tensor = T` in the plan: the collectives over the tensor group that
//! the forward and backward passes run (all-reduces; under `sequence =
//! true` all-gathers and reduce-scatters over the sequence too).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use super::cost::numel;
use crate::plan::{
    sequence_params, sums_output, ModelPlan, NodeSplit, Op, Pass, Recompute, StagePlan,
    TensorCollective, TensorOp, TensorSplit,
};

/// The `node` of the once-a-step all-reduce of the sequence-parallel
/// layers' parameters' gradients (all of them, in one buffer).
pub const SEQUENCE_PARAMETERS: &str = "sequence-parallel parameters";

/// Bytes of one activation value (float32).
const BYTES_PER_VALUE: u64 = 4;

/// The collectives of one micro-batch of `micro_batch` rows over `t`
/// tensor ranks: forward; those `recompute` runs again in backward (the
/// forward sums of recomputed pieces); backward, last layer first; then
/// those of the step (shared key/value heads, the sequence-parallel
/// parameters' gradients). `sequence`: the nodes whose outputs each rank
/// holds a part of the sequence of.
pub(super) fn collectives(
    (model, stages): (&ModelPlan, &[StagePlan]),
    (splits, sequence): (&[NodeSplit], &[usize]),
    (micro_batch, recompute): (u64, Recompute),
    t: u64,
) -> Vec<TensorCollective> {
    let layout = Layout {
        model,
        splits,
        sequence,
        micro_batch,
    };
    let mut out = layout.forward();
    let pieces = model.pieces(recompute);
    let recomputed = |node: &str| {
        let i = model.nodes.iter().position(|n| n.name == node);
        pieces
            .iter()
            .any(|p| p.recomputed && i.is_some_and(|i| (p.first_node..=p.last_node).contains(&i)))
    };
    // A piece without a gradient is not run again.
    let needs = layout.needs_grad();
    let has_gradient = |node: &str| {
        let i = model.nodes.iter().position(|n| n.name == node);
        i.is_some_and(|i| needs[i])
    };
    let again: Vec<TensorCollective> = out
        .iter()
        // A gathered value is gathered once: the recomputed readers read
        // the same leaf.
        .filter(|c| c.op != TensorOp::AllGather && recomputed(&c.node) && has_gradient(&c.node))
        .map(|c| TensorCollective {
            pass: Pass::Recompute,
            ..c.clone()
        })
        .collect();
    out.extend(again);
    out.extend(layout.backward());
    out.extend(layout.shared_heads(t));
    for stage in stages {
        out.extend(layout.sequence_update(stage.first_node..=stage.last_node));
    }
    out
}

/// The split and the micro-batch the collectives are counted for.
struct Layout<'a> {
    model: &'a ModelPlan,
    splits: &'a [NodeSplit],
    sequence: &'a [usize],
    micro_batch: u64,
}

impl Layout<'_> {
    /// Bytes of node `i`'s output for one micro-batch.
    fn bytes(&self, i: usize) -> u64 {
        numel(&self.model.nodes[i].output) * self.micro_batch * BYTES_PER_VALUE
    }

    fn in_parts(&self, i: usize) -> bool {
        self.sequence.contains(&i)
    }

    fn how(&self, i: usize) -> Option<TensorSplit> {
        self.splits.iter().find(|s| s.node == i).map(|s| s.split)
    }

    /// Forward: the partial sums of row-parallel, head-split and
    /// vocabulary-split nodes (reduce-scattered under `sequence`); the
    /// loss from sharded scores: each row's maximum, then its sum of
    /// exponentials, target score and sum of scores (3 values a row).
    /// Under `sequence`, the values held by parts of the sequence that a
    /// split node or a node outside the region reads: all-gathered once
    /// each, before their first such reader.
    fn forward(&self) -> Vec<TensorCollective> {
        let nodes = &self.model.nodes;
        let mut out = Vec::new();
        let mut gathered = Vec::new();
        for (j, node) in nodes.iter().enumerate() {
            let reads_whole = matches!(self.how(j), Some(TensorSplit::Column | TensorSplit::Heads));
            for &i in &node.inputs {
                let whole = reads_whole || !self.in_parts(j);
                if self.in_parts(i) && whole && !gathered.contains(&i) {
                    gathered.push(i);
                    out.push(TensorCollective {
                        pass: Pass::Forward,
                        node: nodes[i].name.clone(),
                        layers: vec![node.name.clone()],
                        bytes: self.bytes(i),
                        op: TensorOp::AllGather,
                    });
                }
            }
            let Some(split) = self.how(j) else { continue };
            let loss = j == self.model.result && split.sharded_output();
            let output = &node.output;
            let rows = numel(&output[..output.len().saturating_sub(1)]) * self.micro_batch;
            let sizes = match (sums_output(Some(split)), loss) {
                (true, _) if self.in_parts(j) => vec![(self.bytes(j), TensorOp::ReduceScatter)],
                (true, _) => vec![(self.bytes(j), TensorOp::AllReduce)],
                (_, true) => vec![
                    (rows * BYTES_PER_VALUE, TensorOp::AllReduce),
                    (3 * rows * BYTES_PER_VALUE, TensorOp::AllReduce),
                ],
                _ => Vec::new(),
            };
            for (bytes, op) in sizes {
                out.push(TensorCollective {
                    pass: Pass::Forward,
                    node: node.name.clone(),
                    layers: vec![node.name.clone()],
                    bytes,
                    op,
                });
            }
        }
        out
    }

    /// Whether each node's output has a gradient: it or a node before it
    /// has a trained parameter.
    fn needs_grad(&self) -> Vec<bool> {
        let frozen: Vec<&str> = (self.model.parameters.iter())
            .filter(|p| p.frozen)
            .map(|p| p.name.as_str())
            .collect();
        let mut needs: Vec<bool> = Vec::with_capacity(self.model.nodes.len());
        for node in &self.model.nodes {
            let trains = node.op.params().iter().any(|p| !frozen.contains(p));
            needs.push(trains || node.inputs.iter().any(|&i| needs[i]));
        }
        needs
    }

    /// Backward, last layer first: the gradient of each whole value that
    /// column-parallel or head-split nodes read, once per value
    /// (reduce-scattered when it is held by parts of the sequence); under
    /// `sequence` the gradient of each reduce-scattered output, and of each
    /// whole value a layer of the region reads by parts, all-gathered.
    /// Only values with a gradient.
    fn backward(&self) -> Vec<TensorCollective> {
        let nodes = &self.model.nodes;
        // Keyed by the value and 2 for its parts' gather, 1 for its
        // readers' sum, 0 for a summing node's all-gather (which runs
        // after, last first).
        let mut readers: BTreeMap<(usize, u8), (Vec<String>, TensorOp)> = BTreeMap::new();
        for &j in self.sequence {
            if self.how(j).is_some() {
                continue;
            }
            for &input in &nodes[j].inputs {
                if !self.in_parts(input) {
                    let entry =
                        (readers.entry((input, 2))).or_insert((Vec::new(), TensorOp::AllGather));
                    entry.0.push(nodes[j].name.clone());
                }
            }
        }
        for s in self.splits {
            if matches!(s.split, TensorSplit::Column | TensorSplit::Heads) {
                for &input in &nodes[s.node].inputs {
                    let op = match self.in_parts(input) {
                        true => TensorOp::ReduceScatter,
                        false => TensorOp::AllReduce,
                    };
                    let entry = readers.entry((input, 1)).or_insert((Vec::new(), op));
                    entry.0.push(s.name.clone());
                }
            }
            if sums_output(Some(s.split)) && self.in_parts(s.node) {
                readers.insert((s.node, 0), (vec![s.name.clone()], TensorOp::AllGather));
            }
        }
        let needs = self.needs_grad();
        readers
            .into_iter()
            .rev()
            // The model's input has no gradient.
            .filter(|((input, _), _)| needs[*input] && !matches!(nodes[*input].op, Op::Input))
            .map(|((input, _), (layers, op))| TensorCollective {
                pass: Pass::Backward,
                node: nodes[input].name.clone(),
                layers,
                bytes: self.bytes(input),
                op,
            })
            .collect()
    }

    /// Once a step: the gradient of key/value heads that several of `t`
    /// ranks share, every key/value row of the layer in one buffer.
    fn shared_heads(&self, t: u64) -> Vec<TensorCollective> {
        let mut update = Vec::new();
        for s in self.splits {
            if let Op::Attention {
                dim,
                heads,
                kv_heads,
                in_proj_bias,
                ..
            } = &self.model.nodes[s.node].op
            {
                if kv_heads % t as i64 != 0 {
                    let rows = (2 * kv_heads * (dim / heads)) as u64;
                    let values = rows * *dim as u64 + in_proj_bias.as_ref().map_or(0, |_| rows);
                    update.push(TensorCollective {
                        pass: Pass::Update,
                        node: s.name.clone(),
                        layers: vec![s.name.clone()],
                        bytes: values * BYTES_PER_VALUE,
                        op: TensorOp::AllReduce,
                    });
                }
            }
        }
        update
    }

    /// Once a step under `sequence`: the gradients of the parameters the
    /// sequence-parallel region of the stage holding `nodes` reads (each
    /// rank's from its part), summed in one buffer.
    fn sequence_update(&self, nodes: RangeInclusive<usize>) -> Option<TensorCollective> {
        let model = self.model;
        let mine: Vec<usize> = self
            .sequence
            .iter()
            .copied()
            .filter(|i| nodes.contains(i))
            .collect();
        let frozen = |name: &str| (model.parameters.iter()).any(|p| p.name == name && p.frozen);
        let params: Vec<&str> = sequence_params(model, self.splits, &mine)
            .into_iter()
            .filter(|p| !frozen(p))
            .collect();
        if params.is_empty() {
            return None;
        }
        let values: i64 = model
            .parameters
            .iter()
            .filter(|p| params.contains(&p.name.as_str()))
            .map(|p| p.shape.iter().product::<i64>())
            .sum();
        let layers: Vec<String> = mine
            .iter()
            .filter(|&&i| {
                model.nodes[i]
                    .op
                    .params()
                    .iter()
                    .any(|p| params.contains(p))
            })
            .map(|&i| model.nodes[i].name.clone())
            .collect();
        Some(TensorCollective {
            pass: Pass::Update,
            node: SEQUENCE_PARAMETERS.into(),
            layers,
            bytes: values as u64 * BYTES_PER_VALUE,
            op: TensorOp::AllReduce,
        })
    }
}

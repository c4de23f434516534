//! `tensor = T` in the plan: which nodes are split over a tensor group and
//! how, and what one tensor rank holds of the parameters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ModelPlan, Op, StagePlan};

/// One node that `tensor = T` splits over the ranks of a tensor group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSplit {
    /// Its index in `model.nodes`.
    pub node: usize,
    /// Its module path, as in `model.nodes`.
    pub name: String,
    pub split: TensorSplit,
}

/// How a node is split over the T ranks of a tensor group (Megatron-LM's
/// layout). A tensor is *whole* (every rank holds all of it, the same) or
/// *sharded* (each rank holds 1/T of its last dimension, rank t the t-th
/// part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorSplit {
    /// `linear`, column-parallel: rank t holds rows t·n/T … of the weight
    /// (and of the bias), so its whole input gives the t-th part of the
    /// output. In backward its input's gradient is a partial sum,
    /// all-reduced over the group (once per input, whatever reads it so).
    /// The model's output layer under `cross_entropy`: the loss is
    /// computed from the sharded scores (the maximum of each row
    /// all-reduced, then the sums of exponentials, target scores and
    /// scores), never gathered whole in training.
    Column,
    /// `linear`, row-parallel: rank t holds columns t·n/T … of the weight,
    /// reads the t-th part of its input and gives a partial sum of the
    /// output, all-reduced over the group in forward before the whole
    /// bias is added.
    Row,
    /// `attention` split by heads: rank t holds heads t·h/T … (their
    /// query, key and value rows of `in_proj_weight`, and key/value heads
    /// t·kv/T …) and the matching columns of `out_proj_weight`; its whole
    /// input gives a partial sum of the output, all-reduced in forward;
    /// its input's gradient is all-reduced in backward.
    Heads,
    /// `embedding` split by vocabulary: rank t holds rows t·V/T … of the
    /// weight, looks up the ids in its rows (zeros for the others), and
    /// its output, a partial sum, is all-reduced in forward. The output
    /// layer tied to it is column-parallel, cut alike.
    Vocab,
    /// An element-wise node (activation, dropout, `+`, `*`) between
    /// column- and row-parallel linears: it works on the sharded tensor as
    /// it is (dropout draws each rank's part of one mask).
    Sharded,
}

/// The parameters that the nodes `splits` shard, by name, each with the
/// dimension it cuts into T parts.
pub fn tensor_sharded(model: &ModelPlan, splits: &[NodeSplit]) -> BTreeMap<String, usize> {
    splits
        .iter()
        .flat_map(|s| s.split.sharded_params(&model.nodes[s.node].op))
        .map(|(name, dim)| (name.to_string(), dim))
        .collect()
}

/// Values of parameters one rank of `stage` holds: the stage's, with each
/// parameter that the nodes `splits` shard `t` ways at its part
/// ([`tensor_local_shapes`]).
pub fn local_parameters(
    model: &ModelPlan,
    (splits, t): (&[NodeSplit], u64),
    stage: &StagePlan,
) -> u64 {
    let local = tensor_local_shapes(model, splits, t);
    let owned = stage_split_params(model, splits, stage);
    let held: u64 = owned
        .iter()
        .map(|name| local[*name].iter().product::<i64>() as u64)
        .sum();
    stage.parameters - split_values(model, splits, stage) + held
}

/// The shape one of `t` ranks holds of each parameter that the nodes
/// `splits` shard, by name (a weight two split nodes read, as a tied
/// embedding's, once): 1/t of the dimension cut, but for an attention's
/// packed rows, which keep one key/value head each where there are fewer
/// than `t`.
pub fn tensor_local_shapes(
    model: &ModelPlan,
    splits: &[NodeSplit],
    t: u64,
) -> BTreeMap<String, Vec<i64>> {
    let shapes: BTreeMap<&str, &[i64]> = model
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice()))
        .collect();
    let mut out = BTreeMap::new();
    for s in splits {
        let op = &model.nodes[s.node].op;
        for (name, dim) in s.split.sharded_params(op) {
            if let Some(shape) = shapes.get(name) {
                out.insert(
                    name.to_string(),
                    TensorSplit::local_shape(op, (shape, dim), t),
                );
            }
        }
    }
    out
}

/// An attention's key/value heads on one of `t` ranks: `kv_heads / t`
/// when they split, else 1 (each head shared by `t / kv_heads` ranks: the
/// checker allows nothing else).
pub fn local_kv_heads(kv_heads: i64, t: i64) -> i64 {
    if kv_heads % t == 0 {
        kv_heads / t
    } else {
        1
    }
}

/// The parameters of `stage` that the nodes `splits` shard (frozen ones
/// too), by name.
pub fn stage_split_params<'m>(
    model: &'m ModelPlan,
    splits: &[NodeSplit],
    stage: &StagePlan,
) -> std::collections::BTreeSet<&'m str> {
    let sharded = tensor_sharded(model, splits);
    model.nodes[stage.first_node..=stage.last_node]
        .iter()
        .flat_map(|node| node.op.params())
        .filter(|name| sharded.contains_key(*name))
        .collect()
}

/// Values of the parameters of `stage` that the nodes `splits` shard,
/// whole.
pub fn split_values(model: &ModelPlan, splits: &[NodeSplit], stage: &StagePlan) -> u64 {
    let owned = stage_split_params(model, splits, stage);
    model
        .parameters
        .iter()
        .filter(|p| owned.contains(p.name.as_str()))
        .map(|p| p.shape.iter().product::<i64>() as u64)
        .sum()
}

impl TensorSplit {
    /// The parameters of `op` this split shards, each with the dimension
    /// cut into T parts (a row-parallel linear's bias and the attention's
    /// output bias stay whole: they are added once, after the all-reduce).
    pub fn sharded_params(self, op: &Op) -> Vec<(&str, usize)> {
        match (self, op) {
            (TensorSplit::Column, Op::Linear { weight, bias, .. }) => std::iter::once(weight)
                .chain(bias)
                .map(|p| (p.as_str(), 0))
                .collect(),
            (TensorSplit::Row, Op::Linear { weight, .. }) => vec![(weight.as_str(), 1)],
            (TensorSplit::Vocab, Op::Embedding { weight, .. }) => vec![(weight.as_str(), 0)],
            (
                TensorSplit::Heads,
                Op::Attention {
                    in_proj_weight,
                    in_proj_bias,
                    out_proj_weight,
                    ..
                },
            ) => std::iter::once((in_proj_weight.as_str(), 0))
                .chain(in_proj_bias.as_deref().map(|b| (b, 0)))
                .chain(std::iter::once((out_proj_weight.as_str(), 1)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The shape one of `t` ranks holds of a parameter of `op` of `shape`
    /// that this split cuts on `dim` ([`tensor_local_shapes`]).
    fn local_shape(op: &Op, (shape, dim): (&[i64], usize), t: u64) -> Vec<i64> {
        let t = t as i64;
        let mut local = shape.to_vec();
        local[dim] = match op {
            Op::Attention {
                dim: d,
                heads,
                kv_heads,
                ..
            } if dim == 0 => (heads / t + 2 * local_kv_heads(*kv_heads, t)) * (d / heads),
            _ => shape[dim] / t,
        };
        local
    }

    /// Whether the node's output is sharded (its last dimension cut).
    pub fn sharded_output(self) -> bool {
        matches!(self, TensorSplit::Column | TensorSplit::Sharded)
    }
}

/// `sequence = true`: whether a node split as `how` sums its partial
/// output over the tensor group (row-parallel, head-split, an embedding
/// split by vocabulary): in a sequence-parallel region that sum is a
/// reduce-scatter, each rank keeping its part of the sequence.
pub fn sums_output(how: Option<TensorSplit>) -> bool {
    matches!(
        how,
        Some(TensorSplit::Row | TensorSplit::Heads | TensorSplit::Vocab)
    )
}

/// `sequence = true`: the parameters whose gradient each tensor rank
/// computes from its part of the sequence only, summed over the tensor
/// group once a step (Megatron-LM's sequence-parallel parameters): those
/// of the whole layers of the sequence-parallel region (`sequence`, the
/// nodes whose outputs are held by parts of the sequence), and the whole
/// output bias of a summing node there (added after the reduce-scatter).
pub fn sequence_params<'m>(
    model: &'m ModelPlan,
    splits: &[NodeSplit],
    sequence: &[usize],
) -> Vec<&'m str> {
    let how = |i: usize| splits.iter().find(|s| s.node == i).map(|s| s.split);
    let mut names = Vec::new();
    for &i in sequence {
        let op = &model.nodes[i].op;
        match (how(i), op) {
            (None, _) => names.extend(op.params()),
            (Some(TensorSplit::Row), Op::Linear { bias, .. }) => names.extend(bias.as_deref()),
            (Some(TensorSplit::Heads), Op::Attention { out_proj_bias, .. }) => {
                names.extend(out_proj_bias.as_deref())
            }
            _ => {}
        }
    }
    names.sort_unstable();
    names.dedup();
    names
}

//! A forward pass cut into segments, and its backward pass run segment by
//! segment, last first. A value one segment computes and a later one reads
//! enters the later segment as a leaf of its own; backward of a segment
//! starts from its outputs with the gradients its readers' leaves collected
//! (and from the loss in the segment that computes the result), so each
//! segment's graph is walked once, and between two segments the runtime
//! can step in.
//!
//! Two things cut a model into segments:
//! - `batch_norm = sync`: each batch norm is a segment of its own, computed
//!   by hand with its statistics over every replica ([`super::sync_norm`]);
//! - `shard = parameters`: each unit's parameters are gathered at its
//!   segment's edges ([`super::units`]), so the model is cut at the same
//!   places as `recompute` cuts it, recomputed or not;
//! - `tensor = T`: a segment starts at every layer whose input's gradient
//!   is summed over the tensor group; under `sequence = true` also at
//!   every layer that reads a value held by parts of the sequence whole,
//!   and after every layer that reduce-scatters its output (its gradient
//!   is all-gathered between segments, [`crate::model::TensorPart`]);
//! - `recompute` (activation checkpointing): the pieces of the plan's
//!   [`ModelPlan::pieces`](dtl_compiler::plan::ModelPlan::pieces). A
//!   recomputed segment runs its forward without a graph and keeps only the
//!   values other segments read. In backward it runs again from the same
//!   inputs with the random state it started from (dropout draws the same
//!   masks), batch norms' running statistics are put back afterwards (they
//!   are updated once, as without recompute), and its backward follows at
//!   once: only one segment's activations are re-created at a time.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use dtl_compiler::plan::{sums_output, Op, Plan, Recompute, TensorSplit};
use tch::Tensor;

use crate::comm::Communicator;
use crate::error::{RunError, TorchContext};
use crate::model::Model;
use crate::torch_ops;

use super::sync_norm::{sync_norm, SyncNorm};
use super::units::Gathering;
use crate::model::TensorPart;
pub(super) use backward::with_output;

mod backward;

/// What runs between segments: synchronised batch norm's replicas, and
/// `shard = parameters`' gathering.
pub struct Hooks<'a> {
    pub replicas: Option<&'a dyn Communicator>,
    pub units: Option<Gathering<'a>>,
    /// `tensor = T`: the tensor group, which sums the split layers'
    /// partial outputs and their inputs' partial gradients.
    pub tensor: Option<&'a dyn Communicator>,
}

impl Hooks<'_> {
    /// Nothing between segments.
    pub fn none() -> Hooks<'static> {
        Hooks {
            replicas: None,
            units: None,
            tensor: None,
        }
    }
}

/// How the plan's nodes are cut.
#[derive(Debug, Clone)]
pub struct Segments {
    /// Each node's segment.
    of: Vec<usize>,
    /// Per segment: recomputed in backward.
    recomputed: Vec<bool>,
    /// Per segment: one synchronised batch norm.
    sync_norm: Vec<bool>,
}

impl Segments {
    /// The segments of the plan's model: the pieces `recompute` cuts it
    /// into and, with synchronised batch norm (`sync_norm`), each batch
    /// norm alone; with `units` (`shard = parameters`) at least at the
    /// blocks' edges; under `tensor = T` a segment starts at every layer
    /// whose input's gradient is summed over the tensor group (so that
    /// the input comes in as a leaf). None when the model runs whole.
    pub fn for_plan(plan: &Plan, sync_norm: bool, units: bool) -> Option<Segments> {
        let mode = plan.train.recompute;
        let tensor = plan.topology.parallelism.tensor > 1;
        if mode == Recompute::None && !sync_norm && !units && !tensor {
            return None;
        }
        let nodes = &plan.model.nodes;
        let reads_whole = |j: usize| {
            tensor
                && matches!(
                    plan.topology.tensor_split(j),
                    Some(TensorSplit::Column | TensorSplit::Heads)
                )
        };
        let is_norm = |j: usize| sync_norm && matches!(nodes[j].op, Op::BatchNorm { .. });
        // `sequence = true`: a layer that reads a value held by parts
        // whole, and the layer after one that reduce-scatters its output.
        let parts = match plan.topology.parallelism.sequence {
            true => plan.topology.sequence.as_slice(),
            false => &[],
        };
        let in_parts = |i: usize| parts.contains(&i);
        let by_sequence = |j: usize| {
            let gathers = !in_parts(j) && nodes[j].inputs.iter().any(|&i| in_parts(i));
            let after_sum = in_parts(j - 1) && sums_output(plan.topology.tensor_split(j - 1));
            let whole = |i: usize| !in_parts(i) && !matches!(nodes[i].op, Op::Input);
            let scatters = in_parts(j)
                && plan.topology.tensor_split(j).is_none()
                && nodes[j].inputs.iter().any(|&i| whole(i));
            gathers || after_sum || scatters
        };
        let mut segments = Segments {
            of: Vec::with_capacity(nodes.len()),
            recomputed: Vec::new(),
            sync_norm: Vec::new(),
        };
        for piece in plan.model.pieces(mode) {
            for j in piece.first_node..=piece.last_node {
                if j == piece.first_node
                    || is_norm(j)
                    || is_norm(j - 1)
                    || reads_whole(j)
                    || by_sequence(j)
                {
                    segments.recomputed.push(piece.recomputed && !is_norm(j));
                    segments.sync_norm.push(is_norm(j));
                }
                segments.of.push(segments.recomputed.len() - 1);
            }
        }
        Some(segments)
    }

    /// Whether any segment is recomputed.
    pub fn recomputes(&self) -> bool {
        self.recomputed.iter().any(|&r| r)
    }
}

/// Who reads a value from another segment, through a leaf of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// A layer that reads it as it is.
    Plain,
    /// A column-parallel linear or head-split attention: its gradient is
    /// a partial sum on each rank. Under `sequence = true`, of a value held
    /// by parts: the leaf is the whole sequence, all-gathered.
    Split,
    /// `sequence = true`: a whole layer reading a value held by parts
    /// whole, all-gathered (its gradient is the same on every rank).
    Gathered,
    /// `sequence = true`: a layer working on parts of the sequence reading
    /// a whole value: the leaf is this rank's part (its gradient is
    /// all-gathered whole, Megatron-LM's scatter into the region).
    Scattered,
}

/// A forward pass whose backward runs segment by segment.
pub struct Forward {
    /// The nodes run (a pipeline stage's, or all).
    nodes: RangeInclusive<usize>,
    /// Each node's output (by plan index), in the graph of the segment that
    /// computed it; `None` where a recomputed segment let it go.
    outputs: BTreeMap<usize, Tensor>,
    /// For each node, the leaves standing for its output in later
    /// segments, with the reading segment and who reads it.
    leaves: BTreeMap<usize, Vec<(usize, Reader, Tensor)>>,
    /// `sequence = true`: the partial output of each summing node before
    /// its reduce-scatter (backward sends the gathered gradient into it),
    /// and each value held by parts that a layer reads whole, gathered.
    partials: BTreeMap<usize, Tensor>,
    gathered: BTreeMap<usize, Tensor>,
    norms: BTreeMap<usize, SyncNorm>,
    /// Whether each node's output depends on a trained tensor.
    needs_grad: BTreeMap<usize, bool>,
    /// Per recomputed segment with dropout, the random state before its
    /// forward.
    rng: BTreeMap<usize, Tensor>,
    /// Values of nodes outside `nodes` (received from earlier stages).
    external: BTreeMap<usize, Tensor>,
    input: Tensor,
    segments: Segments,
    /// Whether a node's output is read outside its segment (or kept by
    /// the caller).
    crosses: Vec<bool>,
}

impl Forward {
    /// Runs the plan nodes `nodes` of `model` in training mode on `input`
    /// (what the model's input node reads), `external` holding the values
    /// of earlier nodes the range reads, `keep` the nodes whose outputs the
    /// caller reads after (the result, what a stage sends), synchronised
    /// batch norms over `hooks.replicas`, units gathered by `hooks.units`.
    pub fn run(
        model: &Model,
        input: &Tensor,
        nodes: RangeInclusive<usize>,
        external: &BTreeMap<usize, Tensor>,
        keep: &[usize],
        segments: &Segments,
        hooks: &mut Hooks<'_>,
    ) -> Result<Forward, RunError> {
        let plan_nodes = model.nodes();
        let mut crosses = vec![false; plan_nodes.len()];
        for &k in keep {
            crosses[k] = true;
        }
        for (k, node) in plan_nodes.iter().enumerate() {
            for &i in &node.inputs {
                if segments.of[i] != segments.of[k] || !nodes.contains(&k) {
                    crosses[i] = true;
                }
            }
        }
        let mut pass = Forward {
            nodes: nodes.clone(),
            outputs: BTreeMap::new(),
            leaves: BTreeMap::new(),
            partials: BTreeMap::new(),
            gathered: BTreeMap::new(),
            norms: BTreeMap::new(),
            needs_grad: BTreeMap::new(),
            rng: BTreeMap::new(),
            external: external
                .iter()
                .map(|(&i, t)| (i, t.shallow_clone()))
                .collect(),
            input: input.shallow_clone(),
            segments: segments.clone(),
            crosses,
        };
        for j in nodes.clone() {
            let seg = pass.segments.of[j];
            let recomputed = pass.segments.recomputed[seg];
            if pass.starts_segment(j) {
                if let Some(units) = &mut hooks.units {
                    units.before_forward(j)?;
                }
            }
            if recomputed && pass.starts_segment(j) && pass.has_dropout(model, seg) {
                let state = torch_ops::rng_state(input.device())
                    .context(|| format!("segment of `{}`: random state", plan_nodes[j].name))?;
                pass.rng.insert(seg, state);
            }
            let inputs = pass.inputs(model, j, seg, hooks.tensor)?;
            let node = &plan_nodes[j];
            // A summing node's bias was taken out of its op.
            let bias = model.tensor_part().and_then(|p| p.output_bias(j));
            let trains = node
                .op
                .params()
                .into_iter()
                .chain(bias)
                .any(|p| model.trains(p));
            let needs_grad = trains || node.inputs.iter().any(|i| pass.needs(*i));
            pass.needs_grad.insert(j, needs_grad);
            let shapes: Vec<Vec<i64>> = inputs.iter().map(Tensor::size).collect();
            let ctx = || {
                format!(
                    "layer `{}` ({}) on input {:?}",
                    node.name,
                    node.op.kind(),
                    shapes
                )
            };
            let output = match &node.op {
                Op::BatchNorm {
                    eps,
                    momentum,
                    weight,
                    bias,
                    running_mean,
                    running_var,
                    num_batches_tracked,
                    ..
                } if pass.segments.sync_norm[seg] => {
                    let names = [weight, bias, running_mean, running_var, num_batches_tracked];
                    let replicas = hooks.replicas.ok_or_else(|| RunError::Torch {
                        context: ctx(),
                        message: "synchronised batch norm without replicas".into(),
                    })?;
                    let norm = sync_norm(&inputs[0], model, names, *eps, *momentum, replicas)
                        .context(ctx)?;
                    let y = norm.y.shallow_clone();
                    pass.norms.insert(j, norm);
                    y
                }
                _ => pass.run_node(model, (j, &inputs), recomputed, hooks.tensor, ctx)?,
            };
            pass.outputs.insert(j, output);
            if recomputed && pass.ends_segment(j) {
                // Only what other segments read outlives the segment.
                let dropped: Vec<usize> = pass
                    .segment_nodes(seg)
                    .filter(|&i| !pass.crosses[i])
                    .collect();
                for i in dropped {
                    pass.outputs.remove(&i);
                }
            }
            if pass.ends_segment(j) {
                if let Some(units) = &mut hooks.units {
                    units.after_forward(j)?;
                }
            }
        }
        Ok(pass)
    }

    /// Node `j` on `inputs`, in training; without a graph when its
    /// segment is `recomputed` in backward. Under `sequence = true` a
    /// summing node's partial output is kept for backward.
    fn run_node(
        &mut self,
        model: &Model,
        (j, inputs): (usize, &[Tensor]),
        recomputed: bool,
        tensor: Option<&dyn Communicator>,
        ctx: impl Fn() -> String,
    ) -> Result<Tensor, RunError> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        if recomputed {
            // Without a graph: the partial output is not kept.
            let run = || model.run_node_in_parts(j, &refs, true, tensor, ctx);
            return Ok(tch::no_grad(run)?.0);
        }
        let (y, partial) = model.run_node_in_parts(j, &refs, true, tensor, ctx)?;
        if let Some(partial) = partial {
            self.partials.insert(j, partial);
        }
        Ok(y)
    }

    /// Node `j`'s output (the result, a value a stage sends).
    pub fn value(&self, j: usize) -> Option<&Tensor> {
        self.outputs.get(&j)
    }

    fn starts_segment(&self, j: usize) -> bool {
        j == *self.nodes.start() || self.segments.of[j - 1] != self.segments.of[j]
    }

    fn ends_segment(&self, j: usize) -> bool {
        j == *self.nodes.end() || self.segments.of[j + 1] != self.segments.of[j]
    }

    /// The nodes of segment `seg` in the range run.
    fn segment_nodes(&self, seg: usize) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .clone()
            .filter(move |&i| self.segments.of[i] == seg)
    }

    fn has_dropout(&self, model: &Model, seg: usize) -> bool {
        self.segment_nodes(seg)
            .any(|i| matches!(model.nodes()[i].op, Op::Dropout { .. }))
    }

    /// Whether node `i`'s output depends on a trained tensor.
    fn needs(&self, i: usize) -> bool {
        match self.needs_grad.get(&i) {
            Some(&needs) => needs,
            None => self.external.get(&i).is_some_and(Tensor::requires_grad),
        }
    }

    /// The inputs of node `j` (in segment `seg`) in forward: values of its
    /// own segment as they are, values of earlier segments through a leaf
    /// of this segment (made on first use). Under `sequence = true` a
    /// value held by parts that `j` reads whole is gathered over `tensor`.
    fn inputs(
        &mut self,
        model: &Model,
        j: usize,
        seg: usize,
        tensor: Option<&dyn Communicator>,
    ) -> Result<Vec<Tensor>, RunError> {
        let node = &model.nodes()[j];
        let mut inputs = Vec::with_capacity(node.inputs.len().max(1));
        if node.inputs.is_empty() {
            inputs.push(self.input.shallow_clone());
        }
        let part = model.tensor_part();
        let in_parts = |k: usize| part.is_some_and(|p| p.in_parts(k));
        let split = part.is_some_and(|part| part.reads_whole(j));
        for &i in &node.inputs {
            let outside = !self.nodes.contains(&i);
            let by_parts = part.is_some_and(|p| p.reads_parts(j));
            let input = matches!(model.nodes()[i].op, Op::Input);
            let reader = if split {
                Reader::Split
            } else if in_parts(i) && !in_parts(j) {
                Reader::Gathered
            } else if by_parts && !in_parts(i) && !input {
                Reader::Scattered
            } else {
                Reader::Plain
            };
            if let Some(part) = part {
                // The model's input (no gradient), read by parts (received
                // from an earlier stage when this one does not hold it).
                if part.reads_parts(j) && input {
                    let values = match outside {
                        true => &self.external,
                        false => &self.outputs,
                    };
                    let whole = self.kept(model, i, j, values)?;
                    let ctx = || format!("layer `{}`: its part of the input", node.name);
                    inputs.push(part.part_of(whole).context(ctx)?);
                    continue;
                }
            }
            if outside && reader == Reader::Plain {
                inputs.push(self.kept(model, i, j, &self.external)?.shallow_clone());
                continue;
            }
            if !outside && self.segments.of[i] == seg {
                inputs.push(self.kept(model, i, j, &self.outputs)?.shallow_clone());
                continue;
            }
            // A value from another segment, or (read by a tensor-parallel
            // layer) from an earlier stage: a leaf of this segment.
            if let Some(leaf) = self.leaf(i, seg, reader) {
                inputs.push(leaf.shallow_clone());
                continue;
            }
            let values = match outside {
                true => &self.external,
                false => &self.outputs,
            };
            let source = self.kept(model, i, j, values)?;
            let recomputed = !outside && self.segments.recomputed[self.segments.of[i]];
            let trainable = if recomputed {
                self.needs(i) && source.is_floating_point()
            } else {
                // A reduce-scattered output is outside the graph; its
                // partial output is in it.
                let partial = self.partials.get(&i).is_some_and(Tensor::requires_grad);
                source.requires_grad() || partial
            };
            let value = match (reader, in_parts(i)) {
                // A leaf of its own over the shared gathered values.
                (Reader::Split | Reader::Gathered, true) => {
                    self.gathered(model, i, tensor)?.detach()
                }
                // A whole value read by parts: this rank's part of it.
                (Reader::Scattered, _) => {
                    let ctx = || {
                        format!(
                            "layer `{}`: its part of `{}`",
                            node.name,
                            model.nodes()[i].name
                        )
                    };
                    let part = part.ok_or_else(|| RunError::Torch {
                        context: ctx(),
                        message: "a value read by parts of the sequence without tensor parallelism"
                            .into(),
                    })?;
                    part.part_of(&source.detach()).context(ctx)?
                }
                _ => source.detach(),
            };
            let leaf = value.set_requires_grad(trainable);
            self.leaves
                .entry(i)
                .or_default()
                .push((seg, reader, leaf.shallow_clone()));
            inputs.push(leaf);
        }
        Ok(inputs)
    }

    /// The leaf standing for node `i`'s output in segment `seg` for
    /// `reader`.
    fn leaf(&self, i: usize, seg: usize, reader: Reader) -> Option<&Tensor> {
        self.leaves
            .get(&i)
            .and_then(|l| l.iter().find(|(s, r, _)| *s == seg && *r == reader))
            .map(|(_, _, t)| t)
    }

    /// `sequence = true`: node `i`'s output (held by parts) gathered whole
    /// over `tensor`, outside the graph; once a value.
    fn gathered(
        &mut self,
        model: &Model,
        i: usize,
        tensor: Option<&dyn Communicator>,
    ) -> Result<Tensor, RunError> {
        if let Some(whole) = self.gathered.get(&i) {
            return Ok(whole.shallow_clone());
        }
        let ctx = || format!("gather the sequence of `{}`", model.nodes()[i].name);
        let (part, group) = sequence_group(model, tensor, &ctx)?;
        let values = match self.outputs.contains_key(&i) {
            true => &self.outputs,
            false => &self.external,
        };
        let whole = part.gather_sequence(self.kept(model, i, i, values)?, group, &ctx)?;
        self.gathered.insert(i, whole.shallow_clone());
        Ok(whole)
    }

    /// Node `i`'s value in `values`, which node `j` reads.
    fn kept<'t>(
        &self,
        model: &Model,
        i: usize,
        j: usize,
        values: &'t BTreeMap<usize, Tensor>,
    ) -> Result<&'t Tensor, RunError> {
        values.get(&i).ok_or_else(|| RunError::Torch {
            context: format!("layer `{}`", model.nodes()[j].name),
            message: format!(
                "its input `{}` was neither computed here nor received",
                model.nodes()[i].name
            ),
        })
    }
}

/// `sequence = true`: this rank's part of the model and its tensor group,
/// which a value held by parts of the sequence needs.
fn sequence_group<'a>(
    model: &'a Model,
    tensor: Option<&'a dyn Communicator>,
    ctx: &dyn Fn() -> String,
) -> Result<(&'a TensorPart, &'a dyn Communicator), RunError> {
    model
        .tensor_part()
        .zip(tensor)
        .ok_or_else(|| RunError::Torch {
            context: ctx(),
            message: "a value held by parts of the sequence without its tensor group".into(),
        })
}

//! `sequence = true` on one tensor rank (Megatron-LM's sequence
//! parallelism): outside the split regions this rank holds its part of
//! each value's sequence (dimension 1; rank r of T the r-th of T equal
//! parts), the plan's [`Topology::sequence`](dtl_compiler::plan::Topology)
//! nodes.
//!
//! - A summing split layer (row-parallel, head-split, an embedding split
//!   by vocabulary) reduce-scatters its partial output over the sequence
//!   instead of all-reducing it, then adds its whole bias to its part. In
//!   backward the gradient of that part is all-gathered into the partial
//!   output's ([`crate::parallel::segments`]).
//! - A split layer, or a layer that needs the whole sequence, reading a
//!   value held by parts reads it all-gathered (once a value); in backward
//!   a split layer's partial gradient is reduce-scattered, a whole layer's
//!   (the same on every rank) cut to this rank's part.
//! - Dropout draws the whole mask, as one process would, and keeps this
//!   rank's part; `pos_embedding` adds the rows of this rank's positions.
//! - The gradients of the parameters these layers read are each rank's
//!   part of the sum over the sequence: summed over the group once a step
//!   ([`TensorPart::sum_sequence_gradients`]).
//!
//! Evaluation runs without it (the layers as `tensor` alone runs them):
//! the weights are the same.

use std::cell::Cell;
use std::collections::BTreeSet;

use dtl_compiler::plan::{sequence_params, Op, Plan};
use tch::{Kind, Tensor};

use super::tensor::TensorPart;
use super::Model;
use crate::comm::{Communicator, ReduceOp};
use crate::error::{RunError, TorchContext};
use crate::flat;
use crate::ops::Weights;

/// The sequence is dimension 1 of every value held by parts.
const SEQUENCE: i64 = 1;

/// What `sequence = true` adds to a rank's [`TensorPart`].
#[derive(Debug, Default)]
pub struct Sequence {
    /// The nodes whose outputs this rank holds its part of.
    nodes: BTreeSet<usize>,
    /// The parameters whose gradients are summed once a step.
    params: Vec<String>,
    /// All-gathers and reduce-scatters issued so far.
    gathers: Cell<u64>,
    scatters: Cell<u64>,
}

impl Model {
    /// Under the plan's `sequence = true`: this rank's part of the
    /// sequence-parallel region (after [`Model::split_for_tensor`]).
    pub fn split_sequence(&mut self, plan: &Plan) {
        let topology = &plan.topology;
        let Some(part) = self.tensor.as_mut() else {
            return;
        };
        if !topology.parallelism.sequence {
            return;
        }
        let params = sequence_params(&plan.model, &topology.tensor_splits, &topology.sequence);
        part.sequence = Some(Sequence {
            nodes: topology.sequence.iter().copied().collect(),
            params: params.into_iter().map(str::to_string).collect(),
            ..Sequence::default()
        });
    }

    /// Node `j` in training under `sequence = true`: its output (this
    /// rank's part, where the node is in the region) and, for a summing
    /// node, its partial output before the reduce-scatter (in the graph:
    /// backward sends the gathered gradient into it).
    pub fn run_node_in_parts(
        &self,
        j: usize,
        inputs: &[&Tensor],
        train: bool,
        tensor: Option<&dyn Communicator>,
        ctx: impl Fn() -> String,
    ) -> Result<(Tensor, Option<Tensor>), RunError> {
        let Some(part) = self.tensor.as_ref().filter(|p| p.in_parts(j)) else {
            return self
                .run_node(j, inputs, train, tensor, ctx)
                .map(|y| (y, None));
        };
        let x = inputs[0];
        match &self.nodes[j].op {
            Op::Dropout { p } => {
                return part
                    .dropout_part(x, (*p, train), SEQUENCE)
                    .context(ctx)
                    .map(|y| (y, None))
            }
            Op::PosEmbedding { weight, .. } => {
                let len = x.size()[SEQUENCE as usize];
                let rows = self.weight(weight).f_narrow(0, part.rank * len, len);
                return rows
                    .and_then(|p| x.f_add(&p))
                    .context(ctx)
                    .map(|y| (y, None));
            }
            _ => {}
        }
        let Some(bias) = part.summed(j) else {
            return self
                .run_node(j, inputs, train, tensor, ctx)
                .map(|y| (y, None));
        };
        let y = match self.vocab_embedding(part, j, x) {
            Some(y) => y.context(&ctx)?,
            None => {
                crate::ops::forward(&self.nodes[j].op, inputs, self, train, self.precision, &ctx)?
            }
        };
        let group = tensor.ok_or_else(|| RunError::Torch {
            context: ctx(),
            message: "a tensor-parallel layer run without its tensor group".into(),
        })?;
        let total = part.scatter_sum(&y, group, &ctx)?;
        // Backward needs the partial output's graph, not its values (the
        // product that made it keeps its inputs): they go now, and
        // backward starts from it without reading it.
        if y.requires_grad() {
            crate::torch_ops::free_storage(&y).context(&ctx)?;
        }
        let out = match bias {
            Some(b) => total.f_add(&self.weight(b)).context(&ctx)?,
            None => total,
        };
        // Without a gradient nothing is sent into it: it goes now.
        Ok((out, y.requires_grad().then_some(y)))
    }
}

impl TensorPart {
    /// Whether this rank holds node `j`'s output by its part of the
    /// sequence (`sequence = true`).
    pub fn in_parts(&self, j: usize) -> bool {
        self.sequence.as_ref().is_some_and(|s| s.nodes.contains(&j))
    }

    /// A summing node's bias, added after the sum (`None` for other
    /// nodes; `Some(None)` for a summing node without one).
    pub(super) fn summed(&self, j: usize) -> Option<Option<&str>> {
        self.sums.get(&j).map(|b| b.as_deref())
    }

    /// The whole bias a summing node adds after its sum (taken out of the
    /// node's op when it was split).
    pub fn output_bias(&self, j: usize) -> Option<&str> {
        self.summed(j).flatten()
    }

    /// Whether node `j` reads its inputs by parts of the sequence (a whole
    /// layer of the region; the split ones read them whole).
    pub fn reads_parts(&self, j: usize) -> bool {
        self.in_parts(j) && !self.reads_whole(j) && self.summed(j).is_none()
    }

    /// All-gathers and reduce-scatters over the sequence issued so far.
    pub fn sequence_issued(&self) -> Option<(u64, u64)> {
        let s = self.sequence.as_ref()?;
        Some((s.gathers.get(), s.scatters.get()))
    }

    /// This rank's part of the sequence of `whole` (the model's input, a
    /// gradient every rank holds whole).
    pub fn part_of(&self, whole: &Tensor) -> Result<Tensor, tch::TchError> {
        let len = whole.size()[SEQUENCE as usize] / self.size;
        whole.f_narrow(SEQUENCE, self.rank * len, len)
    }

    /// The whole sequence of `part` from every rank's, outside the graph.
    pub fn gather_sequence(
        &self,
        part: &Tensor,
        group: &dyn Communicator,
        ctx: &dyn Fn() -> String,
    ) -> Result<Tensor, RunError> {
        let comm = |e: crate::comm::CommError| RunError::Torch {
            context: ctx(),
            message: e.0,
        };
        let part = part.f_detach().context(ctx)?;
        let parts = self.gather(&part, group, ctx, &comm)?;
        self.count(|s| &s.gathers);
        Tensor::f_cat(&parts, SEQUENCE).context(ctx)
    }

    /// `partial` (whole sequence, a partial sum on each rank) summed over
    /// the group, this rank's part of the sequence kept, outside the graph.
    pub fn scatter_sum(
        &self,
        partial: &Tensor,
        group: &dyn Communicator,
        ctx: &dyn Fn() -> String,
    ) -> Result<Tensor, RunError> {
        // Rank-major: every rank's part of the sequence laid out in turn,
        // in one copy.
        let mut split = partial.size();
        split[SEQUENCE as usize] /= self.size;
        let mut ranked = split.clone();
        ranked.insert(SEQUENCE as usize, self.size);
        let mut order: Vec<i64> = (0..ranked.len() as i64).collect();
        order.swap(0, SEQUENCE as usize);
        let send = partial
            .f_detach()
            .and_then(|t| t.f_reshape(ranked.as_slice()))
            .and_then(|t| t.f_permute(order.as_slice()))
            .and_then(|t| t.f_contiguous())
            .and_then(|t| t.f_reshape([-1]))
            .context(ctx)?;
        let recv =
            Tensor::f_empty(split.as_slice(), (partial.kind(), partial.device())).context(ctx)?;
        let mut flat_recv = recv.f_reshape([-1]).context(ctx)?;
        group
            .reduce_scatter(&send, &mut flat_recv)
            .map_err(|e| RunError::Torch {
                context: ctx(),
                message: e.0,
            })?;
        self.count(|s| &s.scatters);
        Ok(recv)
    }

    fn count(&self, which: impl Fn(&Sequence) -> &Cell<u64>) {
        if let Some(s) = &self.sequence {
            let c = which(s);
            c.set(c.get() + 1);
        }
    }

    /// Sums over the group, once a step, the gradients of the parameters
    /// the sequence-parallel region reads (each rank's from its part of
    /// the sequence), in one buffer. Every rank of the group calls it,
    /// after the step's backward passes.
    pub fn sum_sequence_gradients(
        &self,
        model: &Model,
        group: &dyn Communicator,
        step: u64,
    ) -> Result<(), RunError> {
        let Some(sequence) = &self.sequence else {
            return Ok(());
        };
        let ctx =
            || "sum the sequence-parallel layers' gradients over the tensor group".to_string();
        let grads: Vec<Tensor> = sequence
            .params
            .iter()
            .filter(|name| model.trains(name))
            .map(|name| model.weight(name).grad())
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return Ok(());
        }
        let float = |g: &Tensor| g.f_to_kind(Kind::Float).context(ctx);
        let mut all = flat::flatten(grads.iter().map(float), step)?;
        self.reduce(&mut all, (ReduceOp::Sum, group), &ctx)?;
        flat::scatter(&all, grads.into_iter().map(Ok), step)?;
        Ok(())
    }
}

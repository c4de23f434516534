//! `shard = optimizer` (ZeRO-1) and `shard = gradients` (ZeRO-2): the
//! replicas of a stage split the optimizer state (and the gradients) among
//! themselves. Every gradient bucket is laid out flat as the all-reduce
//! sends it (its parameters in bucket order), padded to `D` equal slices,
//! and replica `r` owns slice `r` of every bucket: it keeps the optimizer
//! state of those values only and updates only those values. After the
//! update the replicas all-gather each bucket's slices, so every replica
//! holds the whole updated model again.
//!
//! Under `shard = optimizer` the gradients are all-reduced in full first,
//! exactly as without sharding, so clipping, fp16's unscaling and the
//! finiteness check see the same values. Under `shard = gradients` each
//! bucket is reduce-scattered instead: a replica receives the averaged
//! values of its slice only, and those ops work on the slices (norms added
//! up over the replicas), while the whole gradients are let go until the
//! next backward. Every update rule that shards (SGD, Adam, AdamW, Lion)
//! works value by value, so a slice's update is the whole tensor's
//! restricted to it. Adafactor, whose factored moments span rows and
//! columns, is refused by the checker.
//!
//! With `shard_group = k` (hybrid sharding) the replicas of a stage form
//! groups of k that each split one copy of the state as above (the
//! communicator they are given is their group's); under `shard =
//! gradients` the k-way sums of each slice are then all-reduced among the
//! replicas of the other groups that hold the same slice. Within sync
//! groups (local SGD, DiLoCo) the shard groups are the sync groups, and
//! the slices stay in each: the groups meet by `sync`.
//!
//! Under `shard = parameters` (ZeRO-3) the buckets are the units of
//! [`super::units`], and a replica's slices of them are the only values it
//! holds for good: its pieces are views of those slices, its gradients the
//! slices the units reduce-scattered during backward, and nothing is
//! all-gathered after the update (each unit is gathered before its next
//! forward).
//!
//! At a checkpoint each replica of the first shard group writes its own
//! slices with the buckets' layout ([`crate::checkpoint::shards`]);
//! restoring reads each piece's values by parameter, so a run resumes at
//! another degree or shard mode. Under `tensor = T` ([`tensor`]) the
//! replicas of each tensor rank shard the state of its part of the model.

use std::collections::BTreeMap;

use dtl_compiler::plan::{Optimizer as OptimizerPlan, ParamGroup, Shard};
use tch::{Device, Tensor};

use super::data::Buckets;
use super::units::Units;
use crate::checkpoint::shards::{Buffer, BufferParam, OwnSlices, WEIGHTS};
use crate::checkpoint::SavedState;
use crate::comm::{CommError, Communicator};
use crate::error::{InPlace, RunError, TorchContext};
use crate::flat::{lay_out, Kept};
use crate::optim::{Optimizer, SLOTS};

mod tensor;

/// The optimizer of a rank: over every parameter, or over its slices.
pub enum Updater {
    Whole(Optimizer),
    Sharded(Sharded),
}

/// One rank's share of the optimizer: its slice of every bucket.
pub struct Sharded {
    inner: Optimizer,
    /// The values this rank updates, bucket by bucket, each within one
    /// parameter.
    pieces: Vec<Piece>,
    buckets: Vec<BucketSlices>,
    /// `shard = gradients`: this replica's averaged slice of each bucket's
    /// gradients, from the reduce-scatter to the update (empty otherwise).
    grads: Vec<Tensor>,
    /// `shard = parameters`: this replica's slice of each bucket (a unit),
    /// the values it updates (empty otherwise: the pieces are views of the
    /// whole parameters).
    owned: Vec<Tensor>,
    /// Every step's whole buckets on their way: the flat gradients a
    /// reduce-scatter sends, then the values an all-gather receives; as
    /// long as the longest padded bucket.
    exchange: Kept,
}

/// Values `offset..offset + len` of parameter `param`'s flattened values,
/// at `at` in this rank's slice of bucket `bucket`.
struct Piece {
    param: usize,
    offset: i64,
    len: i64,
    bucket: usize,
    at: i64,
}

/// A bucket cut into one slice per replica.
struct BucketSlices {
    /// Its parameters, in bucket order.
    params: Vec<usize>,
    /// Values per slice: the bucket's values divided by the replicas,
    /// rounded up (the last slices padded).
    slice: i64,
    /// This rank's pieces, as indices into `Sharded::pieces`.
    pieces: std::ops::Range<usize>,
}

impl Updater {
    /// The optimizer of `params` (this rank's trainable parameters): sharded
    /// over `replicas` when the plan says so and there are several.
    /// Under `shard = parameters` the buckets are the `units`.
    pub fn new(
        plan: &OptimizerPlan,
        groups: &[ParamGroup],
        params: &[(String, Tensor)],
        (shard, buckets, replicas): (Shard, &Buckets, &dyn Communicator),
        units: Option<&Units>,
    ) -> Updater {
        match (shard, replicas) {
            (Shard::Parameters, comm) if comm.size() > 1 => {
                // A pipeline stage whose layers train nothing has no unit:
                // it updates nothing, but its checkpoint slices (none) are
                // written with the other stages'.
                let mut sharded = Sharded::new(
                    plan,
                    groups,
                    params,
                    &units.map_or_else(Vec::new, Units::params),
                    (comm.rank(), comm.size()),
                );
                sharded.owned = units.map_or_else(Vec::new, Units::shards);
                Updater::Sharded(sharded)
            }
            (Shard::Optimizer | Shard::Gradients, comm) if comm.size() > 1 => {
                Updater::Sharded(Sharded::new(
                    plan,
                    groups,
                    params,
                    buckets.indices(),
                    (comm.rank(), comm.size()),
                ))
            }
            _ => {
                let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
                Updater::Whole(Optimizer::new(plan, &names, groups))
            }
        }
    }

    pub fn steps(&self) -> u64 {
        match self {
            Updater::Whole(o) => o.steps(),
            Updater::Sharded(s) => s.inner.steps(),
        }
    }

    /// One update from the gradients, at learning rate `lr`: of every
    /// parameter, or of this rank's slices (then [`Sharded::all_gather`]).
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f64) -> Result<(), RunError> {
        match self {
            Updater::Whole(o) => o.step(params.iter().map(|(_, t)| t), lr),
            Updater::Sharded(s) => s.step(params, lr),
        }
    }

    /// Bytes of optimizer state this rank holds.
    pub fn state_bytes(&self) -> u64 {
        let inner = match self {
            Updater::Whole(o) => o,
            Updater::Sharded(s) => &s.inner,
        };
        inner
            .state_tensors()
            .iter()
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum()
    }

    /// The whole state by name (`<parameter>.first`, `.second`), for a
    /// checkpoint; `None` when sharded (see [`Updater::own_slices`]).
    pub fn state(&self, params: &[(String, Tensor)]) -> Option<Vec<(String, Tensor)>> {
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        match self {
            Updater::Whole(o) => Some(o.state(&names)),
            Updater::Sharded(_) => None,
        }
    }

    /// Restores the state a checkpoint saved (from a run sharded or not,
    /// at any degree): a sharded optimizer reads only its slices.
    pub fn restore(
        &mut self,
        steps: u64,
        params: &[(String, Tensor)],
        saved: &SavedState<'_>,
        device: Device,
    ) -> Result<(), RunError> {
        match self {
            Updater::Whole(o) => {
                let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
                o.restore(steps, &names, |name, slot| saved.get(name, slot), device)
            }
            Updater::Sharded(s) => s.restore(steps, params, saved, device),
        }
    }

    /// A sharded checkpoint: this replica's slice of every bucket of stage
    /// `stage` (its values under `shard = parameters`, and `with_state`
    /// each optimizer slot in use) with the buckets' layout; `None` when
    /// the optimizer is whole. Sharded with the state, a collective over
    /// the shard group `comm` (the slots in use are agreed on).
    pub fn own_slices(
        &self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        (stage, step): (u64, u64),
        with_state: bool,
    ) -> Result<Option<OwnSlices>, RunError> {
        let Updater::Sharded(s) = self else {
            return Ok(None);
        };
        let mut used = [0.0; 2];
        if with_state {
            used = s.inner.slots_in_use().map(|u| f64::from(u8::from(u)));
            comm.all_reduce_host(&mut used, crate::comm::ReduceOp::Max)
                .map_err(collective(step))?;
        }
        s.own_slices(params, used.map(|u| u > 0.0), stage)
            .context(|| format!("step {step}: this replica's checkpoint slices"))
            .map(Some)
    }

    /// Every state tensor, sharing storage with the optimizer's (local
    /// SGD's averaging: sharded within sync groups, a replica's slices,
    /// which line up with those at its place in the other groups).
    pub fn state_tensors(&self) -> Vec<Tensor> {
        match self {
            Updater::Whole(o) => o.state_tensors(),
            Updater::Sharded(s) => s.inner.state_tensors(),
        }
    }

    /// `shard = gradients`: sums each bucket's gradients over the shard
    /// group `comm` and keeps this replica's slice of the sum, divided by
    /// `replicas` when given (the average; without it the slices are summed
    /// over the copies first, [`Updater::all_reduce_slices`]); the whole
    /// gradients are let go.
    pub fn reduce_scatter(
        &mut self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        replicas: Option<usize>,
        step: u64,
    ) -> Result<(), RunError> {
        match self {
            Updater::Sharded(s) => s.reduce_scatter(params, comm, replicas, step),
            Updater::Whole(_) => Err(not_sharded(step, "reduce-scatter the gradients")),
        }
    }

    /// `shard = gradients` with `shard_group`: sums this replica's gradient
    /// slices over `copies` (the replicas that hold the same slices) and
    /// divides them by all the `replicas`: the average.
    pub fn all_reduce_slices(
        &mut self,
        copies: &dyn Communicator,
        replicas: usize,
        step: u64,
    ) -> Result<(), RunError> {
        let Updater::Sharded(s) = self else {
            return Err(not_sharded(step, "all-reduce the gradient slices"));
        };
        tch::no_grad(|| {
            for (b, slice) in s.grads.iter_mut().enumerate() {
                copies
                    .all_reduce(slice, crate::comm::ReduceOp::Sum)
                    .map_err(collective(step))?;
                slice.f_div_scalar_(replicas as f64).in_place(|| {
                    format!("step {step}: average the gradient slice of bucket {b}")
                })?;
            }
            Ok(())
        })
    }

    /// `shard = parameters`: this replica's slices of the step's averaged
    /// gradients, one per unit, as the units reduce-scattered them.
    pub fn set_slices(&mut self, slices: Vec<Tensor>, step: u64) -> Result<(), RunError> {
        match self {
            Updater::Sharded(s) if !s.owned.is_empty() => {
                s.grads = slices;
                Ok(())
            }
            _ => Err(not_sharded(step, "take the units' gradient slices")),
        }
    }

    /// `shard = gradients`, between the reduce-scatter and the update:
    /// this replica's slices of the averaged gradients (handles sharing
    /// their storage); `None` when the gradients are whole.
    pub fn gradient_shards(&self) -> Option<Vec<Tensor>> {
        match self {
            Updater::Sharded(s) if !s.grads.is_empty() => {
                Some(s.grads.iter().map(Tensor::shallow_clone).collect())
            }
            _ => None,
        }
    }

    /// `shard = optimizer` or `gradients`: every replica takes the others'
    /// updated slices.
    pub fn all_gather(
        &self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<(), RunError> {
        match self {
            Updater::Sharded(s) => s.all_gather(params, comm, step),
            Updater::Whole(_) => Err(not_sharded(step, "all-gather the parameters")),
        }
    }
}

impl Sharded {
    fn new(
        plan: &OptimizerPlan,
        groups: &[ParamGroup],
        params: &[(String, Tensor)],
        buckets: &[Vec<usize>],
        (rank, replicas): (usize, usize),
    ) -> Sharded {
        let mut pieces = Vec::new();
        let mut slices = Vec::new();
        for bucket in buckets {
            let values: usize = bucket.iter().map(|&i| params[i].1.numel()).sum();
            let slice = values.div_ceil(replicas) as i64;
            let (own_start, own_end) = (rank as i64 * slice, (rank as i64 + 1) * slice);
            let first = pieces.len();
            let mut at = 0i64;
            for &param in bucket {
                let n = params[param].1.numel() as i64;
                let (start, end) = (at.max(own_start), (at + n).min(own_end));
                if start < end {
                    pieces.push(Piece {
                        param,
                        offset: start - at,
                        len: end - start,
                        bucket: slices.len(),
                        at: start - own_start,
                    });
                }
                at += n;
            }
            slices.push(BucketSlices {
                params: bucket.clone(),
                slice,
                pieces: first..pieces.len(),
            });
        }
        // A piece is optimized as its parameter: the same group settings.
        let names: Vec<&str> = pieces.iter().map(|p| params[p.param].0.as_str()).collect();
        let longest = slices.iter().map(|b| b.slice).max().unwrap_or(0) * replicas as i64;
        Sharded {
            inner: Optimizer::new(plan, &names, groups),
            pieces,
            buckets: slices,
            grads: Vec::new(),
            owned: Vec::new(),
            exchange: Kept::new(longest),
        }
    }

    /// A piece of a tensor shaped like its parameter: a view sharing its
    /// storage, outside autograd.
    fn view(piece: &Piece, tensor: &Tensor) -> Result<Tensor, tch::TchError> {
        tensor
            .f_detach()?
            .f_view([-1])?
            .f_narrow(0, piece.offset, piece.len)
    }

    /// The values piece `piece` updates: a view of its parameter, or of this
    /// replica's slice of its unit.
    fn values(&self, piece: &Piece, param: &Tensor) -> Result<Tensor, tch::TchError> {
        match self.owned.get(piece.bucket) {
            Some(slice) => slice.f_narrow(0, piece.at, piece.len),
            None => Self::view(piece, param),
        }
    }

    fn step(&mut self, params: &[(String, Tensor)], lr: f64) -> Result<(), RunError> {
        // The slices of the reduce-scatter are used once.
        let shards = std::mem::take(&mut self.grads);
        let pairs = self
            .pieces
            .iter()
            .map(|piece| {
                let param = &params[piece.param].1;
                let ctx = || format!("parameter `{}`: its shard", params[piece.param].0);
                if let Some(shard) = shards.get(piece.bucket) {
                    let grad = shard.f_narrow(0, piece.at, piece.len).context(ctx)?;
                    return Ok((self.values(piece, param).context(ctx)?, Some(grad)));
                }
                let grad = param.grad();
                let grad = if grad.defined() {
                    let flat = grad.f_reshape([-1]);
                    Some(
                        flat.and_then(|g| g.f_narrow(0, piece.offset, piece.len))
                            .context(ctx)?,
                    )
                } else {
                    None
                };
                Ok((Self::view(piece, param).context(ctx)?, grad))
            })
            .collect::<Result<Vec<_>, RunError>>()?;
        self.inner.step_pairs(pairs, lr)
    }

    fn reduce_scatter(
        &mut self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        average_over: Option<usize>,
        step: u64,
    ) -> Result<(), RunError> {
        let replicas = comm.size();
        let mut slices = Vec::with_capacity(self.buckets.len());
        tch::no_grad(|| {
            for (b, bucket) in self.buckets.iter().enumerate() {
                let ctx = || format!("step {step}: reduce-scatter bucket {b}");
                let grads = bucket
                    .params
                    .iter()
                    .map(|&i| super::data::gradient(&params[i]))
                    .collect::<Result<Vec<_>, _>>()?;
                let like = grads.first().ok_or_else(|| RunError::Torch {
                    context: ctx(),
                    message: "a gradient bucket without parameters".into(),
                })?;
                let whole = bucket.slice * replicas as i64;
                let send = self.exchange.first(whole, like, step)?;
                lay_out(&grads, &send, step)?;
                let mut recv = send
                    .f_new_zeros([bucket.slice], (send.kind(), send.device()))
                    .context(ctx)?;
                comm.reduce_scatter(&send, &mut recv)
                    .map_err(collective(step))?;
                if let Some(n) = average_over {
                    recv.f_div_scalar_(n as f64).in_place(ctx)?;
                }
                slices.push(recv);
            }
            // Each value's average is in one replica's slice: the whole
            // gradients are not read again this step.
            for (name, param) in params {
                crate::torch_ops::reset_grad(&mut param.shallow_clone())
                    .context(|| format!("step {step}: let the gradient of `{name}` go"))?;
            }
            Ok::<(), RunError>(())
        })?;
        self.grads = slices;
        Ok(())
    }

    /// This rank's slice of bucket `b` of the tensors `of` gives for each
    /// piece (its values or a state slot), padded to the slice's length.
    fn own_slice(
        &self,
        b: usize,
        mut of: impl FnMut(usize, &Piece) -> Result<Tensor, tch::TchError>,
        like: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        let bucket = &self.buckets[b];
        let mut parts = Vec::new();
        let mut len = 0;
        for i in bucket.pieces.clone() {
            let part = of(i, &self.pieces[i])?;
            len += part.numel() as i64;
            parts.push(part);
        }
        if len < bucket.slice {
            parts.push(like.f_new_zeros([bucket.slice - len], (like.kind(), like.device()))?);
        }
        Tensor::f_cat(&parts, 0)
    }

    /// Gathers bucket `b`'s slices of `of` from every replica into
    /// `recv` (the slice's values × the replicas): the bucket's values
    /// laid end to end (padding at the end).
    fn gather_bucket(
        &self,
        b: usize,
        of: impl FnMut(usize, &Piece) -> Result<Tensor, tch::TchError>,
        like: &Tensor,
        comm: &dyn Communicator,
        step: u64,
        recv: &mut Tensor,
    ) -> Result<(), RunError> {
        let ctx = || format!("step {step}: shard of bucket {b}");
        let send = self.own_slice(b, of, like).context(ctx)?;
        comm.all_gather(&send, recv).map_err(collective(step))
    }

    fn own_slices(
        &self,
        params: &[(String, Tensor)],
        used: [bool; 2],
        stage: u64,
    ) -> Result<OwnSlices, tch::TchError> {
        let mut own = OwnSlices {
            buffers: Vec::new(),
            tensors: Vec::new(),
        };
        for (b, bucket) in self.buckets.iter().enumerate() {
            let Some(&first) = bucket.params.first() else {
                continue;
            };
            let like = &params[first].1;
            let mut fields = Vec::new();
            if let Some(values) = self.owned.get(b) {
                fields.push(WEIGHTS.to_string());
                own.tensors
                    .push((format!("{b}.{WEIGHTS}"), values.shallow_clone()));
            }
            for (slot, name) in SLOTS.iter().enumerate().filter(|(i, _)| used[*i]) {
                let inner = &self.inner;
                let states = |i: usize, piece: &Piece| match inner.slot(i, slot) {
                    Some(t) => t.f_reshape([-1]),
                    None => like.f_new_zeros([piece.len], (like.kind(), like.device())),
                };
                own.tensors
                    .push((format!("{b}.{name}"), self.own_slice(b, states, like)?));
                fields.push(name.to_string());
            }
            let mut offset = 0;
            let layout = bucket.params.iter().map(|&i| {
                let (name, t) = &params[i];
                let param = BufferParam {
                    name: name.clone(),
                    shape: t.size(),
                    offset,
                };
                offset += t.numel() as u64;
                param
            });
            own.buffers.push(Buffer {
                stage,
                index: b as u64,
                slice: bucket.slice as u64,
                fields,
                params: layout.collect(),
            });
        }
        Ok(own)
    }

    fn all_gather(
        &self,
        params: &[(String, Tensor)],
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<(), RunError> {
        tch::no_grad(|| {
            for (b, bucket) in self.buckets.iter().enumerate() {
                let Some(&first) = bucket.params.first() else {
                    continue;
                };
                let like = &params[first].1;
                let values = |_: usize, piece: &Piece| Self::view(piece, &params[piece.param].1);
                let whole = bucket.slice * comm.size() as i64;
                let mut flat = self.exchange.first(whole, like, step)?;
                self.gather_bucket(b, values, like, comm, step, &mut flat)?;
                crate::flat::scatter(
                    &flat,
                    bucket.params.iter().map(|&i| Ok(params[i].1.detach())),
                    step,
                )?;
            }
            Ok(())
        })
    }

    fn restore(
        &mut self,
        steps: u64,
        params: &[(String, Tensor)],
        saved: &SavedState<'_>,
        device: Device,
    ) -> Result<(), RunError> {
        // Each piece's slice of its parameter's saved state, under the
        // names the inner optimizer knows its pieces by.
        let mut slices = BTreeMap::new();
        let mut names = Vec::new();
        for (i, piece) in self.pieces.iter().enumerate() {
            let (param, _) = &params[piece.param];
            let name = format!("{i}:{param}");
            for slot in SLOTS {
                if let Some(part) = saved.get_range(param, slot, (piece.offset, piece.len))? {
                    slices.insert(format!("{name}.{slot}"), part);
                }
            }
            names.push(name);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let saved = |name: &str, slot: &str| {
            Ok(slices
                .get(&format!("{name}.{slot}"))
                .map(Tensor::shallow_clone))
        };
        self.inner.restore(steps, &names, saved, device)
    }
}

/// A sharded step op on a rank whose optimizer is whole: the plan and the
/// runtime disagree.
fn not_sharded(step: u64, what: &str) -> RunError {
    RunError::Torch {
        context: format!("step {step}: {what}"),
        message: format!("the plan asks to {what}, but this rank's optimizer is not sharded"),
    }
}

fn collective(step: u64) -> impl Fn(CommError) -> RunError {
    move |e| RunError::Collective { step, message: e.0 }
}

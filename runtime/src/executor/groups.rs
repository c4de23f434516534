//! Sync groups meeting across: local SGD's average of the parameters and
//! DiLoCo's outer step (`crate::parallel::diloco`), each every `period`
//! steps and after the last; and what a checkpoint keeps of each DiLoCo
//! group.

use std::path::Path;

use dtl_compiler::plan::{StepOp, SyncMode};
use tch::{Kind, Tensor};

use super::Executor;
use crate::checkpoint::{self, groups, shards, Named};
use crate::error::RunError;
use crate::parallel::data::Buckets;

impl Executor<'_> {
    /// DiLoCo: every group but the first writes its replica, its inner
    /// optimizer state and its `ema` average into the checkpoint being
    /// written in `out`, gathered on its first rank (a collective over
    /// every rank; the folder is emptied first unless the replicas'
    /// slices are already in it). The number of groups; `None` without
    /// DiLoCo.
    pub(super) fn write_groups(
        &self,
        out: &Path,
        slices_written: bool,
        step: u64,
    ) -> Result<Option<u64>, RunError> {
        if self.outer.is_none() {
            return Ok(None);
        }
        let layout = &self.plan.topology.parallelism;
        let (groups, per_group) = (layout.sync_groups(), layout.group_size());
        let g = self.world.place.replica / per_group;
        let first = g * per_group;
        // The first group's are the checkpoint's own files: nothing to
        // gather there (every rank of a group takes the same branch).
        let (model, state) = match g {
            0 => (None, None),
            _ => self.group_state(first, step)?,
        };
        let dir = checkpoint::being_written(out);
        let ready = match (self.world.rank, slices_written) {
            (0, false) => checkpoint::empty_dir(&dir),
            _ => Ok(()),
        };
        shards::agree(self.world, ready, step, "ready the checkpoint's folder")?;
        let wrote = match (model, state) {
            (Some(model), Some(state)) => groups::write_own(&dir, g, &model, &state),
            _ => Ok(()),
        };
        shards::agree(self.world, wrote, step, "write its DiLoCo group's state")?;
        Ok(Some(groups))
    }

    /// A later group's replica, and its inner optimizer state with its
    /// `ema` average, gathered on its first rank (replica `first`, stage
    /// 0, tensor rank 0; `None` elsewhere); sharded within the group, its
    /// replicas' slices gathered whole, kept by replica `first`.
    fn group_state(
        &self,
        first: u64,
        step: u64,
    ) -> Result<(Option<Named>, Option<Named>), RunError> {
        let model = self.gather_replica(self.model.named(), first, step)?;
        let params = &self.model.params;
        let keep = self.world.place.replica == first;
        let group = self.world.shard_group();
        let optimizer = match self.optimizer.gathered_state(params, group, keep, step)? {
            Some(state) => state,
            None => self.optimizer.state(params).unwrap_or_default(),
        };
        let mut state = self.gather_replica(optimizer, first, step)?;
        if let Some(ema) = &self.ema {
            let average = self.gather_replica(ema.named(&self.model), first, step)?;
            if let (Some(state), Some(average)) = (&mut state, average) {
                state.extend(
                    average
                        .into_iter()
                        .map(|(n, t)| (format!("{}{n}", checkpoint::EMA), t)),
                );
            }
        }
        Ok((model, state))
    }

    /// DiLoCo's θ_global, outer momentum and change on the wire, whole, on
    /// rank 0, named as a checkpoint keeps them (`global.<name>`,
    /// `momentum.<name>`, `landing.<name>`); empty elsewhere and without
    /// DiLoCo.
    pub(super) fn outer_state(&mut self, step: u64) -> Result<Named, RunError> {
        let groups = self.world.across().size();
        let Some(outer) = &mut self.outer else {
            return Ok(Named::new());
        };
        // A change on the wire is part of the state.
        outer.settle(groups, step)?;
        let mut whole = Named::new();
        for (kind, own) in outer.saved() {
            if let Some(named) = self.gather(own, step)? {
                whole.extend(named.into_iter().map(|(n, t)| (format!("{kind}.{n}"), t)));
            }
        }
        Ok(whole)
    }

    /// `average_parameters` at the steps it is due; `outer_step` after
    /// every step (its fragments keep their own schedule).
    pub(super) fn meet_across(&mut self, op: &StepOp, step: u64) -> Result<(), RunError> {
        match op {
            StepOp::AverageParameters { every, .. } if step.is_multiple_of(*every) => {
                self.average_replicas(step)
            }
            StepOp::OuterStep { .. } => self.outer_step(step, false),
            _ => Ok(()),
        }
    }

    /// After the last step: local SGD's average when the last period was
    /// partial; DiLoCo's last meetings.
    pub(super) fn meet_after_the_last(&mut self, step: u64) -> Result<(), RunError> {
        match self.plan.topology.parallelism.sync {
            SyncMode::LocalSgd { period } if !step.is_multiple_of(period) => {
                self.average_replicas(step)
            }
            SyncMode::Diloco { .. } => self.outer_step(step, true),
            _ => Ok(()),
        }
    }

    /// DiLoCo's fragments meeting after `step` (`last`: after the last
    /// step), and the buffers averaged over the groups with the last
    /// fragment and after the last step.
    fn outer_step(&mut self, step: u64, last: bool) -> Result<(), RunError> {
        let world = self.world;
        let comm = world.across();
        let Some(outer) = &mut self.outer else {
            return Err(RunError::Torch {
                context: format!("step {step}: DiLoCo's outer step"),
                message: "the plan has an outer step, but this rank holds no global parameters"
                    .into(),
            });
        };
        let met = match last {
            true => outer.finish(&self.model.params, comm, step)?,
            false => outer.after_step(&self.model.params, comm, step)?,
        };
        self.across_group_bytes += met.bytes;
        // With the last fragment, and at the end, whatever met last.
        if (met.last_started || last) && comm.size() > 1 {
            let buffers: Vec<Tensor> = self
                .model
                .buffers
                .iter()
                .map(|(_, t)| t.shallow_clone())
                .collect();
            self.across_group_bytes += ring_bytes(&buffers, comm.size());
            Buckets::average_tensors(comm, &buffers, step)?;
        }
        Ok(())
    }
}

/// What one rank sends in a ring all-reduce of the float tensors of
/// `tensors` over `n` ranks (the others are not averaged), by the plan's
/// formula.
pub(super) fn ring_bytes(tensors: &[Tensor], n: usize) -> u64 {
    let bytes: u64 = tensors
        .iter()
        .filter(|t| t.kind() == Kind::Float)
        .map(|t| t.numel() as u64 * 4)
        .sum();
    dtl_compiler::lower::cost::ring_bytes(bytes, n as u64)
}

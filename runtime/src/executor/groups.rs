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
        let dir = checkpoint::being_written(out);
        let ready = match (self.world.rank, slices_written) {
            (0, false) => checkpoint::empty_dir(&dir),
            _ => Ok(()),
        };
        shards::agree(self.world, ready, step, "ready the checkpoint's folder")?;
        // The first group's are the checkpoint's own files: nothing to
        // write there (every rank of a group takes the same branch).
        let wrote = match g {
            0 => Ok(()),
            _ => self.write_group(&groups::folder(&dir, g), first, step),
        };
        shards::agree(self.world, wrote, step, "write its DiLoCo group's state")?;
        Ok(Some(groups))
    }

    /// A later group's replica, and its inner optimizer state with its
    /// `ema` average, written into `folder` by its first rank (replica
    /// `first`, stage 0, tensor rank 0) one tensor at a time, laid out as
    /// the checkpoint's own files; sharded within the group, its replicas'
    /// slices gathered whole, kept by replica `first`.
    fn write_group(&self, folder: &Path, first: u64, step: u64) -> Result<(), RunError> {
        let place = &self.world.place;
        let writes = place.replica == first && place.stage == 0 && place.tensor == 0;
        let ready = match writes {
            true => checkpoint::empty_dir(folder),
            false => Ok(()),
        };
        // A failed write (or folder) waits for the other file, which the
        // replica's ranks make whole together; a tensor not made ends the job.
        let model = self.whole(self.model.named(), "", step);
        let to = (&folder.join("model.safetensors") as &Path, Named::new());
        let wrote_model = self.write_whole(model, first, to, step)?;
        let mut state = self.whole_state(first, step)?;
        if let Some(ema) = &self.ema {
            state.extend(self.whole(ema.named(&self.model), checkpoint::EMA, step));
        }
        let to = (&folder.join("state.safetensors") as &Path, Named::new());
        let wrote_state = self.write_whole(state, first, to, step)?;
        ready.and(wrote_model).and(wrote_state)?;
        match writes {
            true => crate::output::sync_dir(folder),
            false => Ok(()),
        }
    }

    /// DiLoCo: a change still on the wire settled (a checkpoint holds it).
    pub(super) fn settle_outer(&mut self, step: u64) -> Result<(), RunError> {
        let groups = self.world.across().size();
        match &mut self.outer {
            Some(outer) => outer.settle(groups, step),
            None => Ok(()),
        }
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

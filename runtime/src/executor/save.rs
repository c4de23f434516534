//! What a rank writes of the model: the whole weights (`model.safetensors`,
//! `keep_best`'s), written by rank 0 one tensor at a time as each is made
//! whole (gathered over the tensor group, sent from its stage), or under
//! `shard = parameters` through the replicas' slices, and the checkpoints,
//! whose sharded state each replica writes itself. No rank holds the whole
//! model, its optimizer state or its average.

use std::path::Path;

use tch::Tensor;

use super::Executor;
use crate::checkpoint::{self, export, groups, shards, Named, Snapshot};
use crate::error::RunError;
use crate::parallel::data::AsyncUpdate;
use crate::parallel::gather;
use crate::tensor_file::Lazy;

impl Executor<'_> {
    /// This rank's `named` tensors (parameters, buffers, their optimizer
    /// state or average), named `prefix` + name in a file, each made whole
    /// when written: under `tensor = T` a split one gathered over the
    /// tensor group then.
    pub(super) fn whole<'s>(&'s self, named: Named, prefix: &str, step: u64) -> Vec<Lazy<'s>> {
        let mut lazies: Vec<Lazy<'s>> = match self.model.tensor_part() {
            Some(part) => part.whole(named, self.world.tensor.as_ref(), step),
            None => named.into_iter().map(|(n, t)| Lazy::ready(n, t)).collect(),
        };
        for lazy in &mut lazies {
            lazy.described.name.insert_str(0, prefix);
        }
        lazies
    }

    /// `own` tensors of every stage of `replica` (this rank's of them,
    /// [`Self::whole`]) written into `path` by its first rank (stage 0,
    /// tensor rank 0), one tensor at a time, then that rank's `extra`.
    /// Every rank of the replica calls it. A failed write is the inner
    /// error, after the tensors have all come (no rank is left waiting):
    /// the ranks agree on it. A tensor that could not be made whole or
    /// moved is the outer error, at once: its collective's peers cannot
    /// go on, so the rank ends the job.
    pub(super) fn write_whole(
        &self,
        own: Vec<Lazy<'_>>,
        replica: u64,
        (path, extra): (&Path, Named),
        step: u64,
    ) -> Result<Result<(), RunError>, RunError> {
        match (self.world.place.replica == replica, self.world.place.tensor) {
            (false, _) => Ok(Ok(())),
            // Its part of each split tensor, for the group's gathers.
            (true, 1..) => {
                for lazy in own {
                    drop(lazy.make()?);
                }
                Ok(Ok(()))
            }
            (true, 0) => {
                let pipeline = self.stage.as_ref().map(|_| self.world.pipeline.as_ref());
                gather::stream_to_stage_zero(own, pipeline, (path, extra), step)
            }
        }
    }

    /// This rank's optimizer state, each tensor made whole when written
    /// ([`Self::whole`]); a sharded one gathered from the shard group's
    /// slices first, kept by the ranks of replica `writer` (the others let
    /// each bucket go once gathered).
    pub(super) fn whole_state(&self, writer: u64, step: u64) -> Result<Vec<Lazy<'_>>, RunError> {
        let params = &self.model.params;
        let (group, keep) = (self.world.shard_group(), self.world.place.replica == writer);
        let state = match self.optimizer.gathered_state(params, group, keep, step)? {
            Some(state) => state,
            None => self.optimizer.state(params).unwrap_or_default(),
        };
        Ok(self.whole(state, "", step))
    }

    /// [`Self::write_whole`] by every rank, replica 0's first writing: a
    /// failure to write there fails every rank, naming it.
    fn write_agreed(
        &self,
        own: Vec<Lazy<'_>>,
        (path, extra): (&Path, Named),
        step: u64,
    ) -> Result<(), RunError> {
        let wrote = self.write_whole(own, 0, (path, extra), step)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        shards::agree(self.world, wrote, step, &format!("write {name}"))
    }

    /// The average of the weights (`ema`) written into `path` by rank 0,
    /// as [`Self::write_whole`] writes; nothing without `ema`.
    pub fn save_average(&self, path: &Path, step: u64) -> Result<(), RunError> {
        let Some(ema) = &self.ema else {
            return Ok(());
        };
        let own = self.whole(ema.named(&self.model), "", step);
        self.write_agreed(own, (path, Named::new()), step)
    }

    /// Everything a resumed run needs, after `step` and its collectives:
    /// every rank writes its part into the checkpoint being written in
    /// `out` (rank 0 the weights and the state, one tensor at a time; a
    /// sharded run's replicas their slices); rank 0 gets what
    /// `state.json` lists (`None` elsewhere). Every rank settles its
    /// `async` updates in flight first: they are part of the state.
    pub fn snapshot(&mut self, step: u64, out: &Path) -> Result<Option<Snapshot>, RunError> {
        let replicas = self.world.replicas.size();
        let queue = std::mem::take(&mut self.in_flight);
        for update in queue {
            self.in_flight
                .push_back(update.settle(&self.buckets, replicas)?);
        }
        self.last_checkpoint = Some(step);
        let tmp = checkpoint::being_written(out);
        // Under `tensor`, a sharded state is gathered and written whole
        // (the slice files know no tensor ranks).
        let shards = match self.model.tensor_part() {
            Some(_) => None,
            None => self.write_slices(&tmp, true, step)?,
        };
        let groups = self.write_groups(out, shards.is_some(), step)?;
        // Else the checkpoint's first files: a torn one of a crash is let go.
        if shards.is_none() && groups.is_none() {
            let ready = match self.world.rank {
                0 => checkpoint::empty_dir(&tmp),
                _ => Ok(()),
            };
            shards::agree(self.world, ready, step, "ready the checkpoint's folder")?;
        }
        // A change of DiLoCo's still on the wire is part of the state.
        self.settle_outer(step)?;
        // The units' parameters are in the slices.
        let model = self.whole(self.outside_units(), "", step);
        self.write_agreed(model, (&tmp.join("model.safetensors"), Named::new()), step)?;
        if self.world.rank == 0 {
            crate::fault::pause_in_checkpoint(crate::fault::Kind::PauseWrite, step);
        }
        // Replica 0's ranks write the files.
        let mut state = match shards {
            Some(_) => Vec::new(),
            None => self.whole_state(0, step)?,
        };
        if let Some(ema) = &self.ema {
            state.extend(self.whole(ema.named(&self.model), checkpoint::EMA, step));
        }
        for (kind, own) in self.outer.iter().flat_map(|outer| outer.saved()) {
            let prefix = format!("{}{kind}.", groups::OUTER);
            state.extend(self.whole(own, &prefix, step));
        }
        let extra = match self.world.rank {
            0 => self.state_extra(),
            _ => Named::new(),
        };
        self.write_agreed(state, (&tmp.join("state.safetensors"), extra), step)?;
        if self.world.rank != 0 {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            optimizer_steps: self.optimizer.steps(),
            cursor: self.cursor.clone(),
            pending_steps: self.in_flight.iter().map(AsyncUpdate::step).collect(),
            loss_scale: self.scaler,
            shards,
            groups,
        }))
    }

    /// What rank 0 adds to `state.safetensors`: the data's order, and the
    /// `async` updates waiting (`pending.<i>.<bucket>`).
    fn state_extra(&self) -> Named {
        let mut extra: Named = vec![("data.order".into(), Tensor::from_slice(&self.cursor.order))];
        for (i, update) in self.in_flight.iter().enumerate() {
            let AsyncUpdate::Ready(_, flats) = update else {
                unreachable!("settled before a checkpoint")
            };
            for (b, flat) in flats.iter().enumerate() {
                extra.push((format!("pending.{i}.{b}"), flat.shallow_clone()));
            }
        }
        extra
    }

    /// A sharded optimizer's slices written into `dir`, with the
    /// optimizer state or without: the replicas of the first shard group
    /// write theirs, every stage's (a collective over every rank). The
    /// stages and places written, `None` when the optimizer is whole.
    fn write_slices(
        &self,
        dir: &Path,
        with_state: bool,
        step: u64,
    ) -> Result<Option<[u64; 2]>, RunError> {
        let group = self.world.shard_group();
        let place = &self.world.place;
        let at = (place.stage, step);
        let own = self
            .optimizer
            .own_slices(&self.model.params, group, at, with_state)?;
        let Some(own) = own else {
            return Ok(None);
        };
        // Replica 0 is place 0 of the first group.
        let first_group = place.replica < group.size() as u64;
        let writes = first_group.then_some((place.stage, place.shard));
        shards::write_all(self.world, dir, writes, &own, step)?;
        let stages = self.plan.topology.stages.len().max(1) as u64;
        Ok(Some([stages, group.size() as u64]))
    }

    /// The whole model's weights written into `path` by rank 0 (every rank
    /// calls it): gathered there, or under `shard = parameters` through
    /// the replicas' slices, written into a folder beside and streamed
    /// into `path` one tensor at a time, so that no rank holds the whole
    /// model.
    pub fn save_weights(&self, path: &Path, step: u64) -> Result<(), RunError> {
        // Decided by the plan: a pipeline stage may hold no unit.
        if self.plan.topology.units.is_empty() {
            let own = self.whole(self.model.named(), "", step);
            return self.write_agreed(own, (path, Named::new()), step);
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".shards");
        let dir = path.with_file_name(name);
        let Some([stages, slices]) = self.write_slices(&dir, false, step)? else {
            return Err(RunError::Torch {
                context: format!("step {step}: write {}", path.display()),
                message: "the model is cut into shard units, but the optimizer is not sharded"
                    .into(),
            });
        };
        // What lies in no unit, of every stage.
        let rest = dir.join("rest.safetensors");
        let own = self.whole(self.outside_units(), "", step);
        self.write_agreed(own, (&rest, Named::new()), step)?;
        if self.world.rank != 0 {
            return Ok(());
        }
        let listed = shards::collect(&dir, stages, slices)?;
        let set =
            shards::ShardSet::open(&dir, &listed, true).map_err(|message| RunError::Weights {
                path: dir.display().to_string(),
                message,
            })?;
        export::merge(&rest, Some(&set), path)?;
        drop(set);
        std::fs::remove_dir_all(&dir).map_err(|e| crate::output::io_err(&dir, e))
    }
}

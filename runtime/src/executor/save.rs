//! What a rank writes of the model: the whole weights (`model.safetensors`,
//! `keep_best`'s), gathered on rank 0 or under `shard = parameters` through
//! the replicas' slices, and the checkpoints, whose sharded state each
//! replica writes itself.

use std::path::Path;

use tch::Tensor;

use super::Executor;
use crate::checkpoint::{self, export, shards, Named, Snapshot};
use crate::error::RunError;
use crate::output::write_weights;
use crate::parallel::data::AsyncUpdate;
use crate::parallel::gather;

impl Executor<'_> {
    /// The whole model's weights on rank 0 (`None` elsewhere): gathered
    /// from replica 0's stages when the model is cut into stages (not
    /// under `shard = parameters`, whose weights are the slices).
    fn weights(&self, step: u64) -> Result<Option<Named>, RunError> {
        self.gather(self.model.named(), step)
    }

    /// The average of the weights (`ema`) on rank 0, as [`Self::weights`];
    /// `None` without `ema`, on every rank.
    pub fn averaged_weights(&self, step: u64) -> Result<Option<Named>, RunError> {
        match &self.ema {
            Some(ema) => self.gather(ema.named(&self.model), step),
            None => Ok(None),
        }
    }

    /// `own` tensors of every stage of replica 0, on rank 0: under
    /// `tensor = T` the split tensors whole, gathered over replica 0's
    /// tensor groups.
    pub(super) fn gather(&self, own: Named, step: u64) -> Result<Option<Named>, RunError> {
        self.gather_replica(own, 0, step)
    }

    /// `own` tensors of every stage of `replica`, on its first rank (stage
    /// 0, tensor rank 0), as [`Self::gather`].
    pub(super) fn gather_replica(
        &self,
        own: Named,
        replica: u64,
        step: u64,
    ) -> Result<Option<Named>, RunError> {
        if self.world.place.replica != replica {
            return Ok(None);
        }
        let own = match self.model.tensor_part() {
            Some(part) => {
                let whole = part.whole(own, self.world.tensor.as_ref(), step)?;
                if self.world.place.tensor != 0 {
                    return Ok(None);
                }
                whole
            }
            None => own,
        };
        if self.stage.is_none() {
            return Ok(Some(own));
        }
        gather::on_stage_zero(own, self.world.pipeline.as_ref(), step)
    }

    /// Everything a resumed run needs, after `step` and its collectives,
    /// on rank 0 (`None` elsewhere); a sharded run's replicas have written
    /// their slices into the checkpoint being written in `out`. Every rank
    /// settles its `async` updates in flight first: they are part of the
    /// state.
    pub fn snapshot(&mut self, step: u64, out: &Path) -> Result<Option<Snapshot>, RunError> {
        let replicas = self.world.replicas.size();
        let queue = std::mem::take(&mut self.in_flight);
        for update in queue {
            self.in_flight
                .push_back(update.settle(&self.buckets, replicas)?);
        }
        self.last_checkpoint = Some(step);
        // Under `tensor`, a sharded state is gathered and written whole
        // (the slice files know no tensor ranks).
        let shards = match self.model.tensor_part() {
            Some(_) => None,
            None => self.write_slices(&checkpoint::being_written(out), true, step)?,
        };
        let groups = self.write_groups(out, shards.is_some(), step)?;
        // The units' parameters are in the slices.
        let model = self.gather(self.outside_units(), step)?;
        let optimizer = match shards {
            Some(_) => (self.world.rank == 0).then(Vec::new),
            None => {
                let params = &self.model.params;
                let group = self.world.shard_group();
                // Replica 0's ranks write the files.
                let keep = self.world.place.replica == 0;
                let state = match self.optimizer.gathered_state(params, group, keep, step)? {
                    Some(state) => Some(state),
                    None => self.optimizer.state(params),
                };
                self.gather(state.unwrap_or_default(), step)?
            }
        };
        let ema = self.averaged_weights(step)?;
        let outer = self.outer_state(step)?;
        let (Some(model), Some(optimizer)) = (model, optimizer) else {
            return Ok(None);
        };
        let pending = self
            .in_flight
            .iter()
            .map(|update| match update {
                AsyncUpdate::Ready(step, flats) => {
                    (*step, flats.iter().map(Tensor::shallow_clone).collect())
                }
                AsyncUpdate::Flying(_) => unreachable!("settled above"),
            })
            .collect();
        Ok(Some(Snapshot {
            model,
            optimizer,
            optimizer_steps: self.optimizer.steps(),
            cursor: self.cursor.clone(),
            pending,
            ema: ema.unwrap_or_default(),
            loss_scale: self.scaler,
            shards,
            outer,
            groups,
        }))
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
            if let Some(weights) = self.weights(step)? {
                write_weights(path, &weights)?;
            }
            return Ok(());
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
        let Some(outside) = self.gather(self.outside_units(), step)? else {
            return Ok(());
        };
        let rest = dir.join("rest.safetensors");
        write_weights(&rest, &outside)?;
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

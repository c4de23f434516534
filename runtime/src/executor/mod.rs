//! The executor: one rank's interpreter of the plan. It owns what a step
//! computes with — the model (or this rank's stage of it), the optimizer,
//! the gradient buckets, the batches — and runs the step program
//! ([`step`]) and the held-out evaluation ([`eval`]). It knows nothing of
//! the run's files, the loop or its cadence: that is the driver's
//! ([`crate::train`]).

mod eval;
mod groups;
mod save;
mod step;

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

use dtl_compiler::plan::{stage_split_params, BatchNormSync, Plan, Precision, SyncMode};
use dtl_compiler::util::rng::Rng;
use tch::Device;

use crate::checkpoint::{Loaded, Named};
use crate::comm::ReduceOp;
use crate::data::{self, Batches, Cursor, Dataset};
use crate::ema::Ema;
use crate::error::{RunError, TorchContext};
use crate::loss_scale::LossScale;
use crate::model::{InitWeights, Model};
use crate::parallel::data::{AsyncUpdate, Buckets};
use crate::parallel::diloco::Outer;
use crate::parallel::pipeline::Stage;
use crate::parallel::segments::Segments;
use crate::parallel::shard::Updater;
use crate::parallel::units::Units;
use crate::prefetch::{DataReport, Prefetch};
use crate::world::World;

/// Micro-batches the data thread prepares ahead of the training loop.
const PREFETCH_DEPTH: usize = 4;

/// What a rank reports of itself at the end.
pub struct RankReport {
    pub data: DataReport,
    /// Bytes of optimizer state it holds.
    pub optimizer_state_bytes: u64,
    /// Bytes of parameters (frozen ones and buffers too) it holds between
    /// steps.
    pub parameter_bytes: u64,
    /// Under `tensor = T`: the all-reduces over its tensor group that its
    /// training steps issued (forward and backward; evaluation's not).
    pub tensor_all_reduces: Option<u64>,
    /// Under `sequence = true`: the all-gathers and reduce-scatters over
    /// the sequence that its training steps issued.
    pub sequence_collectives: Option<(u64, u64)>,
    /// Under `local_sgd` and `diloco`: the bytes it sent across the sync
    /// groups (a ring all-reduce of every tensor averaged over them).
    pub across_group_bytes: Option<u64>,
}

/// One step as `--trace` records it ([`Executor::take_trace`]).
#[derive(Debug, Default)]
pub struct StepTrace {
    /// A pipeline stage's passes in the order it ran them.
    pub passes: Vec<String>,
    /// The most micro-batch pieces a pipeline stage held at once.
    pub peak_in_flight: Option<usize>,
    /// The all-reduces issued over the tensor group (`tensor = T`).
    pub tensor_all_reduces: Option<u64>,
}

/// One rank's model, optimizer and data, and the state of the strategies
/// between steps.
pub struct Executor<'a> {
    plan: &'a Plan,
    world: &'a World,
    device: Device,
    model: Model,
    /// The optimizer: over every parameter, or this replica's shard.
    optimizer: Updater,
    valid: Dataset,
    /// `test = <source>`: evaluated once after the last step.
    test: Option<Dataset>,
    batches: Prefetch,
    /// Rows the sources left out (`on_bad_row = skip`), by file.
    skipped: Vec<(String, dtl_compiler::dataset::Skipped)>,
    /// The data stream's position after the last batch consumed.
    cursor: Cursor,
    /// This rank's stage's gradient buckets.
    buckets: Buckets,
    /// `async` updates on their way, oldest first.
    in_flight: VecDeque<AsyncUpdate>,
    /// Replica 0's batch-norm statistics are broadcast before every step.
    broadcast_buffers: bool,
    /// `batch_norm = sync` over several replicas: each node's segment.
    segments: Option<Segments>,
    /// This rank's pipeline stage, when the model is cut into stages.
    stage: Option<Stage>,
    /// The passes the last step ran (pipeline stages), for the trace.
    passes: Vec<String>,
    /// The step of the last checkpoint, named when a step fails.
    last_checkpoint: Option<u64>,
    /// Under `tensor = T`: the all-reduces over the tensor group the
    /// training steps issued so far.
    tensor_all_reduces: u64,
    /// DiLoCo's global parameters and outer momentum.
    outer: Option<Outer>,
    /// Bytes sent across the sync groups so far.
    across_group_bytes: u64,
    /// Those of the last step, under `tensor = T`.
    last_tensor_all_reduces: Option<u64>,
    /// `ema`: the average of this rank's weights.
    ema: Option<Ema>,
    /// `precision = fp16`: the loss scale and the steps since it last
    /// changed or overflowed.
    scaler: Option<LossScale>,
    /// `shard = parameters`: the units this replica holds a slice of.
    units: Option<Units>,
    /// The hash of the weights this rank started from, for the replicas
    /// to compare ([`Executor::agree_on_weights`]); `None` for one replica.
    start_hash: Option<u64>,
}

impl<'a> Executor<'a> {
    /// Builds this rank's part of the model with its initial weights (the
    /// initialisers, `init`, or the checkpoint `resumed`), its optimizer
    /// and its stream of batches: local work, no collective.
    pub fn build(
        plan: &'a Plan,
        world: &'a World,
        (init, init_from_plan): (Option<&Path>, bool),
        resumed: Option<&Loaded>,
    ) -> Result<Executor<'a>, RunError> {
        let train = &plan.train;
        let device = world.device;
        if device == Device::Cpu {
            // Before anything big is allocated.
            crate::memory::return_freed_blocks();
        }
        let split = data::load(&plan.data, train.seed)?;
        let (model, stage, buckets, units, start_hash) =
            build_weights(plan, world, (init, init_from_plan), resumed)?;
        let mut batches = Batches::new(
            &split.train,
            world.place.rows,
            plan.topology.sharding.global_micro_batch,
            plan.data.shuffle,
            train.seed,
        )?;
        let shard_group = world.shard_group();
        let mut optimizer = Updater::new(
            &train.optimizer,
            &train.groups,
            &model.params,
            (plan.topology.parallelism.shard, &buckets, shard_group),
            units.as_ref(),
        );
        let mut in_flight = VecDeque::new();
        let mut ema = match plan.train.tracking.ema {
            Some(decay) => Some(Ema::new(decay, &model)?),
            None => None,
        };
        if let Some(saved) = resumed {
            optimizer.restore(
                saved.state.optimizer_steps,
                &model.params,
                &saved.optimizer_state().for_tensor(model.tensor_part()),
                device,
            )?;
            batches.resume(saved.cursor.clone())?;
            if let Some(ema) = &mut ema {
                // Updated after every step, the first update a copy.
                ema.restore(&saved.ema, &model, saved.state.step)?;
            }
            for (step, flats) in &saved.pending {
                let flats = flats
                    .iter()
                    .map(|t| t.f_to_device(device))
                    .collect::<Result<Vec<_>, _>>()
                    .context(|| "restore the updates in flight".into())?;
                in_flight.push_back(AsyncUpdate::Ready(*step, flats));
            }
        }
        let saved_scale = resumed.and_then(|r| {
            let state = &r.state;
            state.loss_scale.map(|scale| LossScale {
                scale,
                tracker: state.loss_scale_tracker,
            })
        });
        let scaler = LossScale::for_plan(plan, saved_scale);
        let cursor = batches.cursor().clone();
        let layout = &plan.topology.parallelism;
        // Synchronised batch norm needs the replicas between segments;
        // `recompute` cuts the model too.
        let segments = Segments::for_plan(
            plan,
            layout.batch_norm == BatchNormSync::Sync && world.replicas.size() > 1,
            units.is_some(),
        );
        // DiLoCo's global copy: the weights every replica starts from, or
        // the checkpoint's with its momentum.
        let outer = match plan.topology.parallelism.sync {
            SyncMode::Diloco { .. } => {
                let mut outer = Outer::new(&model.params, plan)?;
                if let Some(saved) = resumed {
                    let step = saved.state.step;
                    let at = (step, step >= plan.train.steps);
                    outer.restore(&saved.outer, &model.params, model.tensor_part(), at)?;
                }
                Some(outer)
            }
            _ => None,
        };
        let mut executor = Executor {
            plan,
            outer,
            world,
            device,
            model,
            optimizer,
            valid: split.valid,
            test: split.test,
            batches: Prefetch::start(batches, PREFETCH_DEPTH)?,
            skipped: split.skipped,
            cursor,
            buckets,
            in_flight,
            broadcast_buffers: false,
            segments,
            stage,
            passes: Vec::new(),
            last_checkpoint: resumed.map(|r| r.state.step),
            tensor_all_reduces: 0,
            last_tensor_all_reduces: None,
            across_group_bytes: 0,
            ema,
            scaler,
            units,
            start_hash,
        };
        executor.broadcast_buffers = executor.buffers_follow_replica_zero();
        Ok(executor)
    }

    /// Checks that every replica starts from the same weights (a
    /// collective over the replicas).
    pub fn agree_on_weights(&self) -> Result<(), RunError> {
        // A DiLoCo checkpoint between outer steps: each group its own.
        let replicas = match (&self.outer, self.last_checkpoint) {
            (Some(_), Some(_)) => self.world.group.as_ref(),
            _ => self.world.replicas.as_ref(),
        };
        match self.start_hash {
            Some(hash) => same_weights_everywhere(hash, replicas, self.world.rank),
            None => Ok(()),
        }
    }

    /// A hash of the weights this rank holds for good (the trace's): the
    /// whole model's, or under `shard = parameters` its slices, the frozen
    /// parameters and the buffers.
    pub fn weights_hash(&self) -> Result<u64, RunError> {
        crate::model::hash_of(self.held_tensors().into_iter())
    }

    /// The tensors this rank holds between steps: the model's, or under
    /// `shard = parameters` its slices of the units (named `unit <u>`) and
    /// every tensor the units do not hold.
    fn held_tensors(&self) -> Named {
        let Some(units) = &self.units else {
            return self.model.named();
        };
        let own = units
            .shards()
            .into_iter()
            .enumerate()
            .map(|(u, t)| (format!("unit {u}"), t));
        own.chain(self.outside_units()).collect()
    }

    /// The parameters and buffers by name, sharing storage, but for those
    /// of `shard = parameters`' units (whose values are the replicas'
    /// slices): without units, all of them.
    fn outside_units(&self) -> Named {
        let sharded = self
            .units
            .as_ref()
            .map(|units| units.sharded(&self.model.params))
            .unwrap_or_default();
        let all = self.model.all().enumerate();
        all.filter(|(i, _)| !sharded.get(*i).copied().unwrap_or(false))
            .map(|(_, (name, t))| (name.clone(), t.shallow_clone()))
            .collect()
    }

    /// Rows held out for evaluation.
    pub fn held_out_rows(&self) -> usize {
        self.valid.rows
    }

    /// How long the steps waited for the data thread's batches, the rows
    /// the sources left out, and the optimizer state this rank holds.
    pub fn report(&self) -> RankReport {
        RankReport {
            data: DataReport {
                wait_seconds: self.batches.waited(),
                skipped: self.skipped.clone(),
            },
            optimizer_state_bytes: self.optimizer.state_bytes(),
            parameter_bytes: self.parameter_bytes(),
            tensor_all_reduces: self.model.tensor_part().map(|_| self.tensor_all_reduces),
            sequence_collectives: self.model.tensor_part().and_then(|p| p.sequence_issued()),
            across_group_bytes: (self.plan.topology.parallelism.sync)
                .meets_every()
                .map(|_| self.across_group_bytes),
        }
    }

    /// Bytes of parameters, frozen ones and buffers this rank holds between
    /// steps: the whole model's, or under `shard = parameters` its slices
    /// of the units and the rest whole.
    fn parameter_bytes(&self) -> u64 {
        self.held_tensors()
            .iter()
            .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum()
    }

    /// The data stream's position after the last batch consumed.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// What the trace tells of the last step: the passes it ran, the most
    /// pieces a pipeline stage held at once, the tensor-group all-reduces
    /// it issued.
    pub fn take_trace(&mut self) -> StepTrace {
        StepTrace {
            passes: std::mem::take(&mut self.passes),
            peak_in_flight: self.stage.as_ref().map(|s| s.peak_in_flight),
            tensor_all_reduces: self.last_tensor_all_reduces,
        }
    }

    /// Whether this rank evaluates rows (see [`eval`]); every rank takes
    /// part in adding up the evaluation.
    pub fn evaluates(&self, step: u64) -> bool {
        self.eval_rows(self.valid.rows, step).1 > 0
    }

    /// Whether a signal asked to stop: on every rank of a job the same
    /// answer (any rank's signal stops them all, after the same step).
    pub fn agree_to_stop(&self, step: u64, mine: i32) -> Result<Option<i32>, RunError> {
        if self.world.size == 1 {
            return Ok((mine != 0).then_some(mine));
        }
        let mut any = [f64::from(mine)];
        self.world
            .all
            .all_reduce_host(&mut any, ReduceOp::Max)
            .map_err(|e| RunError::Collective { step, message: e.0 })?;
        Ok((any[0] > 0.0).then_some(any[0] as i32))
    }

    /// After the last step: local SGD's last average, DiLoCo's last outer
    /// step, `async`'s updates still in flight.
    pub fn finish_updates(&mut self, step: u64) -> Result<(), RunError> {
        self.meet_after_the_last(step)?;
        self.drain()
    }

    /// Whether buffers are broadcast from replica 0 every step.
    fn buffers_follow_replica_zero(&self) -> bool {
        let layout = &self.plan.topology.parallelism;
        self.world.replicas.size() > 1
            && !self.model.buffers.is_empty()
            && layout.batch_norm == BatchNormSync::Local
            && layout.sync.meets_every().is_none()
    }
}

/// What [`build_weights`] makes.
type Built = (Model, Option<Stage>, Buckets, Option<Units>, Option<u64>);

/// This rank's model with its initial weights (see [`Executor::build`]),
/// its stage, its gradient buckets, its shard units, and the hash of the
/// weights for the replicas to compare.
///
/// Under `shard = parameters` the units' parameters are not built whole:
/// the units lay them out one at a time from the initialisers, the `init`
/// file or the checkpoint, each rank keeping its slices, and the hash
/// takes each unit in as it goes. Under `tensor = T` the split parameters
/// are made whole one at a time, the same way, and the rank keeps its
/// part of each.
fn build_weights(
    plan: &Plan,
    world: &World,
    init: (Option<&Path>, bool),
    resumed: Option<&Loaded>,
) -> Result<Built, RunError> {
    let shard_group = world.shard_group();
    let in_units: BTreeSet<String> = match shard_group.size() > 1 {
        true => plan
            .topology
            .stage_units(world.place.stage)
            .flat_map(|u| u.parameters.iter().map(|p| p.name.clone()))
            .collect(),
        false => BTreeSet::new(),
    };
    let tensor = &world.tensor;
    let split = match tensor.size() > 1 {
        true => split_parameters(plan, world.place.stage),
        false => BTreeSet::new(),
    };
    let deferred: BTreeSet<String> = in_units.union(&split).cloned().collect();
    let (mut model, stage) = build_model(plan, world, deferred.clone())?;
    // The files hold the whole model: a stage takes its own tensors.
    let others = other_stages_tensors(plan, &model);
    let init = initial_weights(&mut model, init, &others, plan, world)?;
    // The units' weights in a sharded checkpoint are read as each unit is
    // laid out.
    let mut saved = match resumed {
        Some(r) => Some((r.model_weights(&deferred)?, r)),
        None => None,
    };
    if let Some((weights, r)) = &mut saved {
        let now = std::mem::take(&mut weights.now);
        model.load_weights(now, &others, &r.model_path)?;
    }
    let check = world.replicas.size() > 1;
    let mut hashes = Vec::new();
    let seed = plan.train.seed;
    let mut fill = |name: &str, part: &mut tch::Tensor| {
        let saved = match &saved {
            Some((weights, r)) => {
                let tensor = r.later_weight(weights, name)?;
                Some((tensor, r.model_path.as_path()))
            }
            None => match &init {
                Some(file) => file.deferred(name)?,
                None => None,
            },
        };
        crate::model::fill_deferred(&plan.model, seed, name, saved, part)?;
        if check {
            let named = std::iter::once((name.to_string(), part.shallow_clone()));
            hashes.push(crate::model::hash_of(named)?);
        }
        Ok(())
    };
    // Under `tensor = T` the rank keeps its part of each split tensor,
    // made whole one at a time.
    if tensor.size() > 1 {
        let at = (tensor.rank() as i64, tensor.size() as i64);
        model.split_for_tensor(&plan.topology.tensor_splits, at, &mut fill)?;
        model.split_sequence(plan);
    }
    let buckets = Buckets::new(plan, world.place.stage, &model.params)?;
    let built = match check {
        true => Some(model.hash()?),
        false => None,
    };
    let fill: Option<&mut crate::parallel::units::Fill<'_>> = match in_units.is_empty() {
        true => None,
        false => Some(&mut fill),
    };
    // The weights are final: the units take their slices.
    let units = Units::new(
        plan,
        world.place.stage,
        &mut model.params,
        (shard_group.rank(), shard_group.size()),
        fill,
    )?;
    model.filled();
    hashes.splice(0..0, built);
    let start_hash = check.then(|| match hashes[..] {
        [one] => one,
        _ => {
            let hash = dtl_compiler::util::rng::Fnv1a::new();
            let hash = hashes.iter().fold(hash, |h, x| h.update(&x.to_le_bytes()));
            hash.finish()
        }
    });
    Ok((model, stage, buckets, units, start_hash))
}

/// The trainable parameters of `stage` that `tensor = T` splits: built
/// as placeholders, made whole one at a time when the rank takes its part.
fn split_parameters(plan: &Plan, stage: u64) -> BTreeSet<String> {
    let own = &plan.topology.stages[stage as usize];
    let split = stage_split_params(&plan.model, &plan.topology.tensor_splits, own);
    plan.model
        .parameters
        .iter()
        .filter(|p| !p.frozen && split.contains(p.name.as_str()))
        .map(|p| p.name.clone())
        .collect()
}

/// This rank's model: its stage's layers when the model is cut into
/// stages, else the whole of it; the parameters named in `deferred` as
/// placeholders.
fn build_model(
    plan: &Plan,
    world: &World,
    deferred: BTreeSet<String>,
) -> Result<(Model, Option<Stage>), RunError> {
    let (train, device) = (&plan.train, world.device);
    let (first, last, stage) = match plan.topology.stages.len() > 1 {
        true => {
            let own = &plan.topology.stages[world.place.stage as usize];
            let stage = Stage::new(plan, world.place.stage);
            (own.first_node, own.last_node, Some(stage))
        }
        false => (0, plan.model.nodes.len().saturating_sub(1), None),
    };
    let mut model = Model::build_part(&plan.model, train.seed, device, first..=last, deferred)?;
    model.precision = train.precision;
    crate::device::set_cuda_tf32(train.precision == Precision::Tf32)?;
    if train.precision == Precision::Tf32 && device == Device::Cpu && world.rank == 0 {
        eprintln!(
            "note: precision = tf32 changes CUDA matrix products only; on the CPU this run computes in float32"
        );
    }
    Ok((model, stage))
}

/// The initial weights: `init`'s file (the plan's `init`, with its skips
/// and renames, when `init_from_plan`), or the initialisers' as built.
fn initial_weights(
    model: &mut Model,
    (init, init_from_plan): (Option<&Path>, bool),
    others: &BTreeSet<String>,
    plan: &Plan,
    world: &World,
) -> Result<Option<InitWeights>, RunError> {
    match init {
        Some(path) if init_from_plan => {
            let (file, report) = model.load_init(&plan.train, path, others)?;
            if let Some(report) = report.filter(|_| world.rank == 0) {
                eprintln!("{}", report.summary(path));
            }
            Ok(Some(file))
        }
        Some(path) => model.load_part(path, others).map(Some),
        None => Ok(None),
    }
}

/// The tensors of the whole model that this rank's part does not hold.
fn other_stages_tensors(plan: &Plan, model: &Model) -> BTreeSet<String> {
    let own: BTreeSet<String> = model.named().into_iter().map(|(n, _)| n).collect();
    plan.model
        .parameters
        .iter()
        .chain(&plan.model.buffers)
        .map(|p| p.name.clone())
        .filter(|name| !own.contains(name))
        .collect()
}

/// The replicas must start from the same weights: the same seeded
/// initialisers (or the same `--init` file, or checkpoint) give them on
/// every rank, and a hash over every parameter and buffer (`hash`, this
/// rank's) proves it.
fn same_weights_everywhere(
    hash: u64,
    replicas: &dyn crate::comm::Communicator,
    rank: usize,
) -> Result<(), RunError> {
    // Two 32-bit halves: exact in f64. The smallest and largest of each.
    let halves = [(hash >> 32) as f64, (hash & 0xFFFF_FFFF) as f64];
    let mut low = halves;
    let mut high = halves;
    let comm_err = |e: crate::comm::CommError| RunError::Collective {
        step: 0,
        message: e.0,
    };
    replicas
        .all_reduce_host(&mut low, ReduceOp::Min)
        .map_err(comm_err)?;
    replicas
        .all_reduce_host(&mut high, ReduceOp::Max)
        .map_err(comm_err)?;
    if low != high {
        return Err(RunError::Backend {
            message: format!(
                "rank {rank}: the replicas start from different weights (this rank's hash {hash:016x}); are the --init file or the checkpoint the same on every machine?"
            ),
        });
    }
    Ok(())
}

/// The dropout seed of a step: a function of the run's seed and the step
/// alone, so a resumed run draws the same masks as an uninterrupted one.
pub fn dropout_seed(seed: u64, step: u64) -> i64 {
    (Rng::new(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64() >> 1) as i64
}

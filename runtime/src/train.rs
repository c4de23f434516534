//! The training loop: runs the plan's step program once per optimizer step
//! on every rank ([`crate::step`]), evaluates on the held-out rows, writes
//! checkpoints, and writes metrics, weights and a summary into the output
//! folder. A run with a checkpoint can be resumed and continues bit for bit
//! (at the same world size; at another data-parallel degree it continues
//! with the same rows per step).
//!
//! Rank 0 writes the run's files: `plan.yaml`, `metrics.jsonl`,
//! `checkpoint/`, `model.safetensors`, `summary.json`. Every rank of a
//! multi-rank run writes its own `rank-K.log`.

use std::collections::{BTreeSet, VecDeque};
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dtl_compiler::plan::{BatchNormSync, Plan, Precision, SyncMode};
use dtl_compiler::util::rng::Rng;
use serde::Serialize;
use tch::{Device, Reduction, Tensor};

use crate::checkpoint::{self, State};
use crate::comm::ReduceOp;
use crate::data::{self, Batches, Cursor, Dataset, Shard};
use crate::data_parallel::{AsyncUpdate, Buckets};
use crate::device::DeviceChoice;
use crate::error::{RunError, TorchContext};
use crate::fault;
use crate::gather;
use crate::loss;
use crate::model::{write_weights, Model};
use crate::optim::Optimizer;
use crate::pipeline::Stage;
use crate::prefetch::Prefetch;
use crate::progress::Progress;
use crate::rank_log::RankLog;
use crate::segments;
use crate::signals;
use crate::watchdog::Watchdog;
use crate::world::World;

pub use dtl_compiler::records::{EvalRecord, StepRecord};

/// Micro-batches the data thread prepares ahead of the training loop.
const PREFETCH_DEPTH: usize = 4;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    pub device: DeviceChoice,
    /// Progress output on stderr: a bar on a terminal, plain lines otherwise.
    pub progress: bool,
    /// Initial weights (safetensors) instead of the initialisers.
    pub init_weights: Option<PathBuf>,
    /// Continue from the checkpoint in `out_dir`.
    pub resume: bool,
    /// Each rank records what it ran, step by step, with a hash of its
    /// weights, in `rank-K.trace.jsonl`.
    pub trace: bool,
    /// How long a rank of a multi-rank run may wait without passing a step
    /// boundary before it ends the job (a peer hung or died).
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub epochs: u64,
    pub device: String,
    /// Ranks that trained together.
    pub world_size: usize,
    /// The collective backend of the replicas: local, mpi or nccl.
    pub backend: String,
    pub first_loss: f64,
    pub final_loss: f64,
    pub eval: Option<EvalRecord>,
    /// Seconds of the whole run, set-up and evaluation included.
    pub seconds: f64,
    /// Seconds spent in the training steps (batches, forward, backward,
    /// communication, clipping, optimizer), over the whole run including
    /// before a resume.
    pub train_seconds: f64,
    pub steps_per_second: f64,
    pub skipped_steps: u64,
    /// The checkpoint step this process continued from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    pub out_dir: String,
}

/// The state of a run between steps, on one rank.
pub struct Run<'a> {
    pub plan: &'a Plan,
    pub world: &'a World,
    pub device: Device,
    pub model: Model,
    pub optimizer: Optimizer,
    pub valid: Dataset,
    pub batches: Prefetch,
    /// The data stream's position after the last batch consumed.
    pub cursor: Cursor,
    /// This rank's stage's gradient buckets.
    pub buckets: Buckets,
    /// `async` updates on their way, oldest first.
    pub in_flight: VecDeque<AsyncUpdate>,
    /// Rank 0's batch-norm statistics are broadcast before every step.
    pub broadcast_buffers: bool,
    /// `batch_norm = sync` over several replicas: each node's segment.
    pub sync_norm_segments: Option<Vec<usize>>,
    /// This rank's pipeline stage, when the model is cut into stages.
    pub stage: Option<Stage>,
    /// The passes this step ran (pipeline stages), for the trace.
    pub passes: Vec<String>,
    pub first_loss: f64,
    pub skipped_steps: u64,
    pub train_seconds: f64,
    /// The step of the last checkpoint written or resumed from.
    pub last_checkpoint: Option<u64>,
    /// The run folder, where checkpoints go.
    out: &'a Path,
    /// What a checkpoint must match to be resumed from.
    fingerprint: String,
}

/// Trains the plan to the end on this rank of `world`. Everything goes into
/// `options.out_dir`.
pub fn train(plan: &Plan, options: &RunOptions, world: &World) -> Result<Summary, RunError> {
    let started = Instant::now();
    let device = world.device;
    let out = &options.out_dir;
    let lead = world.rank == 0;
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let mut log = RankLog::open(out, world, options.trace)?;
    let fingerprint = checkpoint::fingerprint(plan);
    let resumed = if options.resume {
        let loaded = checkpoint::load(out, &fingerprint)?;
        if let (Some(why), true) = (&loaded.fell_back, lead) {
            eprintln!(
                "warning: the last checkpoint cannot be used ({why}); resuming from the one before, of step {}",
                loaded.state.step
            );
        }
        Some(loaded)
    } else {
        None
    };
    if lead {
        // A resumed run may continue with a new layout (another world size):
        // plan.yaml is the plan now running.
        write_atomic(&out.join("plan.yaml"), plan.to_yaml().as_bytes())?;
    }

    let train = &plan.train;
    let split = data::load(&plan.data, train.seed)?;
    // A pipeline stage builds and holds only its own layers.
    let pipelined = plan.topology.parallelism.pipeline > 1;
    let (mut model, stage) = if pipelined {
        let own = &plan.topology.stages[world.stage];
        let model = Model::build_nodes(
            &plan.model,
            train.seed,
            device,
            own.first_node..=own.last_node,
        )?;
        (model, Some(Stage::new(plan, world.stage as u64)))
    } else {
        (Model::build(&plan.model, train.seed, device)?, None)
    };
    model.precision = train.precision;
    crate::device::set_cuda_tf32(train.precision == Precision::Tf32)?;
    if train.precision == Precision::Tf32 && device == Device::Cpu && lead {
        eprintln!(
            "note: precision = tf32 changes CUDA matrix products only; on the CPU this run computes in float32"
        );
    }
    // The files hold the whole model: a stage takes its own tensors.
    let others: BTreeSet<String> = plan
        .model
        .parameters
        .iter()
        .chain(&plan.model.buffers)
        .map(|p| p.name.clone())
        .filter(|name| !model.named().iter().any(|(n, _)| n == name))
        .collect();
    // --init on the command line wins over the plan's `init`.
    let init = options
        .init_weights
        .clone()
        .or_else(|| train.init.as_ref().map(PathBuf::from));
    if let Some(path) = &init {
        model.load_part(path, &others)?;
    }
    let shard = Shard {
        replica: world.replica as u64,
        replicas: plan.topology.parallelism.data,
    };
    let mut batches = Batches::new(
        &split.train,
        train.micro_batch,
        shard,
        plan.data.shuffle,
        train.seed,
    )?;
    let mut optimizer = Optimizer::new(&train.optimizer, model.params.len());
    let buckets = Buckets::new(plan, world.stage as u64, &model.params)?;
    let metrics_path = out.join("metrics.jsonl");
    let mut in_flight = VecDeque::new();
    if let Some(saved) = &resumed {
        model.load_part(&saved.model_path, &others)?;
        let names: Vec<&str> = model.params.iter().map(|(n, _)| n.as_str()).collect();
        optimizer.restore(
            saved.state.optimizer_steps,
            &names,
            &saved.optimizer,
            device,
        )?;
        batches.resume(saved.cursor.clone())?;
        for (step, flats) in &saved.pending {
            let flats = flats
                .iter()
                .map(|t| t.f_to_device(device))
                .collect::<Result<Vec<_>, _>>()
                .context(|| "restore the updates in flight".into())?;
            in_flight.push_back(AsyncUpdate::Ready(*step, flats));
        }
        if lead {
            truncate(&metrics_path, saved.state.metrics_bytes)?;
        }
    }
    same_weights_everywhere(&model, world)?;
    let saved = resumed.as_ref().map(|r| &r.state);
    let done = saved.map_or(0, |s| s.step);
    let cursor = batches.cursor().clone();
    let mut run = Run {
        plan,
        world,
        device,
        model,
        optimizer,
        valid: split.valid,
        batches: Prefetch::start(batches, PREFETCH_DEPTH)?,
        cursor,
        buckets,
        in_flight,
        broadcast_buffers: false,
        sync_norm_segments: None,
        stage,
        passes: Vec::new(),
        first_loss: saved.map_or(f64::NAN, |s| s.first_loss),
        skipped_steps: saved.map_or(0, |s| s.skipped_steps),
        train_seconds: saved.map_or(0.0, |s| s.train_seconds),
        last_checkpoint: saved.map(|s| s.step),
        out,
        fingerprint,
    };
    run.broadcast_buffers = run.buffers_follow_replica_zero();
    let layout = &plan.topology.parallelism;
    if layout.batch_norm == BatchNormSync::Sync && world.replicas.size() > 1 {
        run.sync_norm_segments = Some(segments::sync_norm_segments(run.model.nodes()));
    }

    let mut metrics = if lead {
        let file = OpenOptions::new()
            .create(true)
            .append(resumed.is_some())
            .write(true)
            .truncate(resumed.is_none())
            .open(&metrics_path)
            .map_err(|e| io_err(&metrics_path, e))?;
        Some(BufWriter::new(file))
    } else {
        None
    };
    let progress = Progress::new(train.steps, done, options.progress && lead);
    let watchdog = (world.size > 1).then(|| {
        Watchdog::start(
            options.timeout,
            format!("[rank {}] rank {}: ", world.rank, world.rank),
            world.health_probes(),
        )
    });
    let (mut last, mut last_eval) = (None, None);
    for step in done + 1..=train.steps {
        if let Some(watchdog) = &watchdog {
            watchdog.beat(step);
        }
        fault::strike(world.rank, step);
        let step_started = Instant::now();
        let record = run.step(step)?;
        run.train_seconds += step_started.elapsed().as_secs_f64();
        if step == 1 {
            run.first_loss = record.loss;
        }
        let passes = std::mem::take(&mut run.passes);
        let peak = run.stage.as_ref().map(|s| s.peak_in_flight);
        log.step(
            &record,
            &run.model,
            step_started.elapsed().as_secs_f64(),
            passes,
            peak,
        )?;
        if let Some(metrics) = &mut metrics {
            write_line(metrics, &metrics_path, &record)?;
        }
        progress.update(&record);
        let eval_due = train.eval_every > 0 && step.is_multiple_of(train.eval_every);
        if step == train.steps {
            run.finish_updates(step)?;
        }
        // Rank 0 evaluates; with a pipeline, every stage of replica 0.
        // Without held-out rows there is nothing to evaluate.
        let evaluates = (lead || (pipelined && world.replica == 0)) && run.valid.rows > 0;
        if (eval_due || step == train.steps) && evaluates {
            let eval = run.evaluate(step)?;
            if let Some(metrics) = &mut metrics {
                write_line(metrics, &metrics_path, &eval)?;
            }
            progress.eval(&eval);
            last_eval = Some(eval);
        }
        // Ctrl-C or SIGTERM: every rank stops after the same step, with a
        // checkpoint of it.
        let stop = run.agree_to_stop(step)?;
        let due = train.checkpoint_every > 0 && step.is_multiple_of(train.checkpoint_every);
        if due || (stop.is_some() && step < train.steps) {
            if let Some(metrics) = &mut metrics {
                metrics.flush().map_err(|e| io_err(&metrics_path, e))?;
                metrics
                    .get_ref()
                    .sync_all()
                    .map_err(|e| io_err(&metrics_path, e))?;
            }
            run.checkpoint(step, &metrics_path)?;
        }
        if let Some(number) = stop.filter(|_| step < train.steps) {
            progress.finish();
            return Err(RunError::Interrupted {
                step,
                signal: signals::name(number),
                number,
                out: out.display().to_string(),
            });
        }
        last = Some(record);
    }
    if let Some(metrics) = &mut metrics {
        metrics.flush().map_err(|e| io_err(&metrics_path, e))?;
    }
    progress.finish();
    if let Some(weights) = run.gather_weights(train.steps)? {
        write_weights(&out.join("model.safetensors"), &weights)?;
    }
    let summary = Summary {
        steps: train.steps,
        epochs: run.cursor.epoch,
        device: format!("{device:?}"),
        world_size: world.size,
        backend: world.backend.to_string(),
        first_loss: run.first_loss,
        final_loss: last.map_or(f64::NAN, |r| r.loss),
        eval: last_eval,
        seconds: started.elapsed().as_secs_f64(),
        train_seconds: run.train_seconds,
        steps_per_second: (train.steps - done) as f64
            / (run.train_seconds - saved.map_or(0.0, |s| s.train_seconds)).max(1e-9),
        skipped_steps: run.skipped_steps,
        resumed_from: resumed.map(|r| r.state.step),
        out_dir: out.display().to_string(),
    };
    if lead {
        let text = serde_json::to_string_pretty(&summary).expect("summary serializes");
        write_atomic(&out.join("summary.json"), text.as_bytes())?;
    }
    log.finish(&summary)?;
    Ok(summary)
}

/// The replicas must start from the same weights: the same seeded
/// initialisers (or the same `--init` file, or checkpoint) give them on
/// every rank, and a hash over every parameter and buffer proves it.
fn same_weights_everywhere(model: &Model, world: &World) -> Result<(), RunError> {
    let replicas = world.replicas.as_ref();
    if replicas.size() == 1 {
        return Ok(());
    }
    let hash = model.hash()?;
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
                "rank {}: the replicas start from different weights (this rank's hash {hash:016x}); are the --init file or the checkpoint the same on every machine?",
                world.rank
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

impl Run<'_> {
    /// Whether a signal asked to stop: on every rank of a job the same
    /// answer (any rank's signal stops them all, after the same step).
    fn agree_to_stop(&self, step: u64) -> Result<Option<i32>, RunError> {
        let mine = signals::requested().unwrap_or(0);
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

    /// After the last step: local SGD's last average, `async`'s updates
    /// still in flight.
    fn finish_updates(&mut self, step: u64) -> Result<(), RunError> {
        if let SyncMode::LocalSgd { period } = self.plan.topology.parallelism.sync {
            if !step.is_multiple_of(period) {
                self.average_replicas(step)?;
            }
        }
        self.drain()
    }

    /// Mean loss (and accuracy) over the held-out rows, dropout off, in
    /// chunks of [`eval_chunk`] rows.
    fn evaluate(&self, step: u64) -> Result<EvalRecord, RunError> {
        if self.stage.is_some() {
            return self.evaluate_pipelined(step);
        }
        let rows = self.valid.rows;
        let kind = &self.plan.train.loss;
        if rows == 0 {
            return Ok(EvalRecord {
                step,
                eval_loss: f64::NAN,
                eval_accuracy: None,
                eval_rows: 0,
            });
        }
        let ctx = || format!("step {step}: evaluation");
        tch::no_grad(|| {
            let (mut loss_sum, mut correct) = (0.0, None::<i64>);
            let chunk = eval_chunk(&self.plan.model.output);
            let mut start = 0i64;
            while start < rows as i64 {
                let len = chunk.min(rows as i64 - start);
                let (x, y) = self.valid.range(start as usize, len as usize)?;
                let x = x.f_to_device(self.device).context(ctx)?;
                let y = y.f_to_device(self.device).context(ctx)?;
                let output = self.model.forward(&x, false)?;
                let sum = loss::loss(kind, &output, &y, Reduction::Sum).context(ctx)?;
                loss_sum += sum.f_double_value(&[]).context(ctx)?;
                if let Some(hits) = loss::correct(kind, &output, &y).context(ctx)? {
                    correct = Some(correct.unwrap_or(0) + hits);
                }
                start += len;
            }
            let targets = self.valid.target_count() as f64;
            Ok(EvalRecord {
                step,
                eval_loss: loss_sum / targets,
                eval_accuracy: correct.map(|c| c as f64 / targets),
                eval_rows: rows,
            })
        })
    }

    /// The held-out evaluation through the stages of replica 0: the last
    /// stage's sums, shared with every stage.
    fn evaluate_pipelined(&self, step: u64) -> Result<EvalRecord, RunError> {
        let stage = self.stage.as_ref().expect("a pipeline stage");
        let rows = self.valid.rows;
        let kind = &self.plan.train.loss;
        let ctx = || format!("step {step}: evaluation");
        let (mut loss_sum, mut correct, mut counted) = (0.0, 0.0, 0.0);
        let chunk = eval_chunk(&self.plan.model.output);
        let mut start = 0i64;
        while start < rows as i64 {
            let len = chunk.min(rows as i64 - start);
            let (x, y) = self.valid.range(start as usize, len as usize)?;
            let x = x.f_to_device(self.device).context(ctx)?;
            let y = y.f_to_device(self.device).context(ctx)?;
            let pipeline = self.world.pipeline.as_ref();
            let (sum, hits) = stage.evaluate(&x, &y, &self.model, kind, pipeline, step)?;
            loss_sum += sum;
            if let Some(hits) = hits {
                correct += hits as f64;
                counted = 1.0;
            }
            start += len;
        }
        let mut sums = [loss_sum, correct, counted];
        self.world
            .pipeline
            .all_reduce_host(&mut sums, ReduceOp::Sum)
            .map_err(|e| RunError::Collective { step, message: e.0 })?;
        let targets = self.valid.target_count().max(1) as f64;
        Ok(EvalRecord {
            step,
            eval_loss: if rows == 0 {
                f64::NAN
            } else {
                sums[0] / targets
            },
            eval_accuracy: (sums[2] > 0.0).then(|| sums[1] / targets),
            eval_rows: rows,
        })
    }

    /// The whole model's weights on rank 0 (`None` elsewhere): gathered
    /// from replica 0's stages when the model is cut into stages.
    fn gather_weights(&self, step: u64) -> Result<Option<Vec<(String, Tensor)>>, RunError> {
        self.gather(self.model.named(), step)
    }

    /// `own` tensors of every stage of replica 0, on rank 0.
    fn gather(
        &self,
        own: Vec<(String, Tensor)>,
        step: u64,
    ) -> Result<Option<Vec<(String, Tensor)>>, RunError> {
        if self.world.replica != 0 {
            return Ok(None);
        }
        if self.stage.is_none() {
            return Ok((self.world.rank == 0).then_some(own));
        }
        gather::on_stage_zero(own, self.world.pipeline.as_ref(), step)
    }

    /// Saves everything a resumed run needs, after `step` and its
    /// collectives: rank 0 writes; every rank settles its `async` updates
    /// in flight (they are part of the state).
    fn checkpoint(&mut self, step: u64, metrics: &Path) -> Result<(), RunError> {
        let replicas = self.world.replicas.size();
        let queue = std::mem::take(&mut self.in_flight);
        for update in queue {
            self.in_flight
                .push_back(update.settle(&self.buckets, replicas)?);
        }
        self.last_checkpoint = Some(step);
        let names: Vec<&str> = self.model.params.iter().map(|(n, _)| n.as_str()).collect();
        let model = self.gather(self.model.named(), step)?;
        let optimizer = self.gather(self.optimizer.state(&names), step)?;
        let (Some(model), Some(optimizer)) = (model, optimizer) else {
            return Ok(());
        };
        let metrics_bytes = std::fs::metadata(metrics)
            .map_err(|e| io_err(metrics, e))?
            .len();
        let pending: Vec<(u64, &[Tensor])> = self
            .in_flight
            .iter()
            .map(|update| match update {
                AsyncUpdate::Ready(step, flats) => (*step, flats.as_slice()),
                AsyncUpdate::Flying(_) => unreachable!("settled above"),
            })
            .collect();
        let state = State {
            format: checkpoint::FORMAT,
            step,
            optimizer_steps: self.optimizer.steps(),
            data_pos: self.cursor.pos as u64,
            data_epoch: self.cursor.epoch,
            data_rng: self.cursor.rng,
            metrics_bytes,
            first_loss: self.first_loss,
            skipped_steps: self.skipped_steps,
            train_seconds: self.train_seconds,
            plan_fingerprint: self.fingerprint.clone(),
            pending_steps: pending.iter().map(|(s, _)| *s).collect(),
            checksum: String::new(),
        };
        checkpoint::save(self.out, &state, &model, &optimizer, &self.cursor, &pending)
    }
}

/// Cuts `metrics.jsonl` back to what was written up to the checkpoint.
fn truncate(path: &Path, len: u64) -> Result<(), RunError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    file.set_len(len).map_err(|e| io_err(path, e))
}

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> RunError {
    RunError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

pub(crate) fn write_line(
    out: &mut impl Write,
    path: &Path,
    record: &impl Serialize,
) -> Result<(), RunError> {
    let line = serde_json::to_string(record).expect("records serialize");
    writeln!(out, "{line}").map_err(|e| io_err(path, e))
}

/// Writes a whole file or nothing: a temp file renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Held-out rows evaluated at once: up to 1024, fewer when the model's
/// output per row is large (a language model's scores for every token),
/// so that a chunk's output stays under 2^24 values.
fn eval_chunk(output: &[dtl_compiler::plan::Dim]) -> i64 {
    let per_row = dtl_compiler::lower::cost::numel(output).max(1);
    ((1u64 << 24) / per_row).clamp(1, 1024) as i64
}

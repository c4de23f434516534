//! The driver: the training loop around the executor. It asks the executor
//! ([`crate::executor`]) for one step at a time, evaluates at the plan's
//! cadence, writes checkpoints, logs and progress, stops when asked, and
//! writes the run's files. What a step computes, and how the ranks share
//! it, is the executor's; the driver knows only the loop.
//!
//! A run with a checkpoint can be resumed and continues bit for bit (at
//! the same world size; at another data-parallel degree it continues with
//! the same rows per step).
//!
//! Rank 0 writes the run's files: `plan.yaml`, `metrics.jsonl`,
//! `checkpoint/`, `model.safetensors`, `summary.json`. Every rank of a
//! multi-rank run writes its own `rank-K.log`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtl_compiler::plan::Plan;
use serde::Serialize;

use crate::checkpoint::{self, Loaded, Standing, State};
use crate::device::DeviceChoice;
use crate::error::RunError;
use crate::executor::Executor;
use crate::fault;
use crate::output::{self, write_atomic, write_weights, JsonLines};
use crate::progress::Progress;
use crate::rank_log::RankLog;
use crate::signals;
use crate::watchdog::{Phase, Watchdog, UNBOUNDED};
use crate::world::World;

pub use dtl_compiler::records::{EvalRecord, StepRecord};

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
    /// How long a rank of a multi-rank run may wait without progress
    /// before it ends the job (a peer hung or died).
    pub timeout: Duration,
    /// The rank's watchdog (multi-rank runs), started before it joined the
    /// job.
    pub watchdog: Option<Arc<Watchdog>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub epochs: u64,
    pub device: String,
    /// Ranks that trained together.
    pub world_size: usize,
    /// The collective backend of the replicas: local, mpi or nccl.
    pub backend: crate::comm::Backend,
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

/// Where the loop stands: what the summary and the checkpoints report.
struct Tally {
    first_loss: f64,
    skipped_steps: u64,
    train_seconds: f64,
    /// Steps done before this process started (a resumed run).
    done: u64,
    /// Training seconds before this process started.
    seconds_before: f64,
    last: Option<StepRecord>,
    last_eval: Option<EvalRecord>,
}

/// The loop's company on this rank: its files and its outputs.
struct Driver<'a> {
    plan: &'a Plan,
    world: &'a World,
    out: &'a Path,
    fingerprint: String,
    log: &'a mut RankLog,
    watchdog: Option<&'a Watchdog>,
    /// `metrics.jsonl`, on rank 0.
    metrics: Option<JsonLines>,
    progress: Progress,
    tally: Tally,
}

/// Trains the plan to the end on this rank of `world`. Everything goes into
/// `options.out_dir`. A failure is also written, with its step, into the
/// rank's log.
pub fn train(plan: &Plan, options: &RunOptions, world: &World) -> Result<Summary, RunError> {
    let started = Instant::now();
    let out = options.out_dir.as_path();
    std::fs::create_dir_all(out).map_err(|e| output::io_err(out, e))?;
    let resumed_at = options.resume.then(|| checkpoint::peek_step(out)).flatten();
    let mut log = RankLog::open(out, world, options.trace, resumed_at)?;
    let watchdog = options.watchdog.as_deref();
    if let Some(watchdog) = watchdog {
        watchdog.set_folder(out);
        watchdog.add_probes(world.health_probes());
    }
    let result = run_to_the_end(plan, options, world, &mut log, started)
        .map_err(|err| name_lost_peers(err, world, out));
    if let Err(err) = &result {
        log.failed(err);
    }
    result
}

/// A collective that failed because a peer was lost says which: the ranks
/// MPI knows to have failed, with their host from their heartbeat when the
/// run folder is shared.
fn name_lost_peers(err: RunError, world: &World, out: &Path) -> RunError {
    let RunError::Collective { step, message } = err else {
        return err;
    };
    let lost = world.all.failed_ranks().unwrap_or_default();
    if lost.is_empty() {
        return RunError::Collective { step, message };
    }
    let named: Vec<String> = lost
        .iter()
        .map(|&rank| {
            let beat = std::fs::read_to_string(out.join(format!("rank-{rank}.beat")));
            match beat
                .ok()
                .and_then(|b| b.split_whitespace().nth(1).map(String::from))
            {
                Some(host) => format!("peer on host {host} (rank {rank}) lost"),
                None => format!("peer rank {rank} lost"),
            }
        })
        .collect();
    RunError::Collective {
        step,
        message: format!("{}: {message}", named.join(", ")),
    }
}

/// The set-up, the loop and the run's files.
fn run_to_the_end(
    plan: &Plan,
    options: &RunOptions,
    world: &World,
    log: &mut RankLog,
    started: Instant,
) -> Result<Summary, RunError> {
    let out = options.out_dir.as_path();
    let lead = world.rank == 0;
    let watchdog = options.watchdog.as_deref();
    let enter = |phase, step, allowance| {
        if let Some(w) = watchdog {
            w.enter(phase, step, allowance)
        }
    };
    let fingerprint = checkpoint::fingerprint(plan);
    enter(Phase::Load, 0, UNBOUNDED);
    let loading = Instant::now();
    let resumed = if options.resume {
        Some(resume_from(plan, out, &fingerprint, lead)?)
    } else {
        None
    };
    let saved = resumed.as_ref().map(|r| &r.state);
    // The metrics first: a log that does not fit the checkpoint stops the
    // resume before anything is written.
    let metrics = if lead {
        Some(open_metrics(out, saved)?)
    } else {
        None
    };
    if lead {
        // A resumed run may continue with a new layout (another world size):
        // plan.yaml is the plan now running, its paths made absolute so
        // that a resume from another folder reads the same files.
        let anchored = plan.with_absolute_paths();
        write_atomic(&out.join("plan.yaml"), anchored.to_yaml().as_bytes())?;
    }
    // --init on the command line wins over the plan's `init`.
    let init = options
        .init_weights
        .clone()
        .or_else(|| plan.train.init.as_ref().map(PathBuf::from));
    let mut executor = Executor::build(plan, world, init.as_deref(), resumed.as_ref())?;
    // The peers load about as long as this rank did.
    enter(Phase::AfterLoad, 0, 2 * loading.elapsed());
    executor.agree_on_weights()?;
    let done = saved.map_or(0, |s| s.step);
    let mut driver = Driver {
        plan,
        world,
        out,
        fingerprint,
        log,
        metrics,
        progress: Progress::new(plan.train.steps, done, options.progress && lead),
        watchdog,
        tally: Tally {
            first_loss: saved.map_or(f64::NAN, |s| s.first_loss),
            skipped_steps: saved.map_or(0, |s| s.skipped_steps),
            train_seconds: saved.map_or(0.0, |s| s.train_seconds),
            done,
            seconds_before: saved.map_or(0.0, |s| s.train_seconds),
            last: None,
            last_eval: None,
        },
    };
    signals::at_step_boundaries();
    for step in done + 1..=plan.train.steps {
        driver.enter(Phase::Step, step, Duration::ZERO);
        driver.step(&mut executor, step)?;
    }
    driver.finish(&executor, started, resumed.map(|r| r.state.step))
}

/// The checkpoint to go on from, saying so when the last one was damaged,
/// and when dropout will draw other masks than the run that wrote it.
fn resume_from(plan: &Plan, out: &Path, fingerprint: &str, lead: bool) -> Result<Loaded, RunError> {
    let loaded = checkpoint::load(out, fingerprint, &plan.data.files)?;
    if !lead {
        return Ok(loaded);
    }
    if let Some(why) = &loaded.fell_back {
        eprintln!(
            "warning: the last checkpoint cannot be used ({why}); resuming from the one before, of step {}",
            loaded.state.step
        );
    }
    let layout = &plan.topology.parallelism;
    let [data, pipeline] = loaded.state.layout;
    let dropout = plan
        .model
        .nodes
        .iter()
        .any(|n| matches!(n.op, dtl_compiler::plan::Op::Dropout { p } if p > 0.0));
    if dropout && [data, pipeline] != [layout.data, layout.pipeline] {
        eprintln!(
            "warning: the checkpoint was written by data {data} × pipeline {pipeline}, this run is data {} × pipeline {}: dropout draws its masks per replica and per pipeline piece, so from here on the losses differ from those of an uninterrupted run (everything else is the same computation)",
            layout.data, layout.pipeline
        );
    }
    Ok(loaded)
}

/// `metrics.jsonl`: new, or for a resumed run cut back to what was written
/// up to its checkpoint and continued. A log shorter than that, or cut
/// inside a line, was damaged: refused, with the way out. A missing one is
/// started afresh at the checkpoint's step, said.
fn open_metrics(out: &Path, resumed: Option<&State>) -> Result<JsonLines, RunError> {
    let path = out.join("metrics.jsonl");
    let Some(state) = resumed else {
        return JsonLines::create(&path);
    };
    let bytes = state.metrics_bytes;
    let held = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "warning: {} is missing: it starts afresh after step {}, the lines of the steps before are gone",
                path.display(),
                state.step
            );
            return JsonLines::create(&path);
        }
        Err(e) => return Err(output::io_err(&path, e)),
    };
    let refuse = |why: String| RunError::Resume {
        path: path.display().to_string(),
        message: format!(
            "{why}; restore it, or delete it to start the log afresh after step {}",
            state.step
        ),
    };
    if held < bytes {
        return Err(refuse(format!(
            "it holds {held} bytes, fewer than the {bytes} written up to the checkpoint of step {}: it was cut",
            state.step
        )));
    }
    if bytes > 0 && !ends_a_line(&path, bytes)? {
        return Err(refuse(format!(
            "byte {bytes}, where the checkpoint of step {} ended it, is not the end of a line: it was edited",
            state.step
        )));
    }
    output::truncate(&path, bytes)?;
    JsonLines::append(&path)
}

/// Whether the byte before `at` is a newline.
fn ends_a_line(path: &Path, at: u64) -> Result<bool, RunError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| output::io_err(path, e))?;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at - 1))
        .and_then(|_| file.read_exact(&mut byte))
        .map_err(|e| output::io_err(path, e))?;
    Ok(byte[0] == b'\n')
}

impl Driver<'_> {
    /// One step of the loop: train, log, evaluate when due, checkpoint when
    /// due, stop when asked.
    fn step(&mut self, executor: &mut Executor<'_>, step: u64) -> Result<(), RunError> {
        let train = &self.plan.train;
        fault::strike(self.world.rank, step);
        let step_started = Instant::now();
        let record = executor.step(step)?;
        self.tally.train_seconds += step_started.elapsed().as_secs_f64();
        if step == 1 {
            self.tally.first_loss = record.loss;
        }
        self.tally.skipped_steps += u64::from(record.skipped);
        let (passes, peak) = executor.take_passes();
        let seconds = step_started.elapsed().as_secs_f64();
        self.log
            .step(&record, executor.model(), seconds, passes, peak)?;
        if let Some(metrics) = &mut self.metrics {
            metrics.write(&record)?;
        }
        self.progress.update(&record);
        let last_step = step == train.steps;
        if last_step {
            executor.finish_updates(step)?;
        }
        let eval_due = train.eval_every > 0 && step.is_multiple_of(train.eval_every);
        if (eval_due || last_step) && executor.evaluates() {
            self.enter(Phase::Evaluate, step, Duration::ZERO);
            let beat = || self.beat();
            let eval = executor.evaluate(step, &beat)?;
            if let Some(metrics) = &mut self.metrics {
                metrics.write(&eval)?;
            }
            self.progress.eval(&eval);
            self.tally.last_eval = Some(eval);
        } else if eval_due || last_step {
            // The ranks that evaluate take about a forward pass over the
            // held-out rows; a trained row costs more than that.
            let rows = executor.held_out_rows() as f64;
            self.enter(
                Phase::AwaitEvaluation,
                step,
                2 * self.per_row(step).mul_f64(rows),
            );
        }
        // Ctrl-C or SIGTERM: every rank stops after the same step, with a
        // checkpoint of it.
        let stop = executor.agree_to_stop(step, signals::requested().unwrap_or(0))?;
        let due = train.checkpoint_every > 0 && step.is_multiple_of(train.checkpoint_every);
        if due || (stop.is_some() && !last_step) {
            self.enter(Phase::Checkpoint, step, self.write_allowance());
            self.checkpoint(executor, step)?;
        }
        if let Some(number) = stop.filter(|_| !last_step) {
            self.progress.finish();
            return Err(RunError::Interrupted {
                step,
                signal: signals::name(number),
                number,
                out: self.out.display().to_string(),
            });
        }
        self.tally.last = Some(record);
        Ok(())
    }

    fn enter(&self, phase: Phase, step: u64, allowance: Duration) {
        if let Some(watchdog) = self.watchdog {
            watchdog.enter(phase, step, allowance);
        }
    }

    fn beat(&self) {
        if let Some(watchdog) = self.watchdog {
            watchdog.beat();
        }
    }

    /// Training seconds per row of this rank so far.
    fn per_row(&self, step: u64) -> Duration {
        let train = &self.plan.train;
        let rows = (step - self.tally.done) * train.micro_batch * train.accumulate;
        let seconds = self.tally.train_seconds - self.tally.seconds_before;
        Duration::from_secs_f64((seconds / rows.max(1) as f64).max(0.0))
    }

    /// What rank 0 may take to write the model and the optimizer's state
    /// (at most four values per parameter) at 20 MB/s, the slowest disk
    /// the watchdog allows for.
    fn write_allowance(&self) -> Duration {
        let bytes = 16 * self.plan.model.parameter_count;
        Duration::from_secs_f64(bytes as f64 / 20e6)
    }

    /// A checkpoint of `step`: the metrics so far on the disk first, so
    /// that the checkpoint's length of them is there to cut back to.
    fn checkpoint(&mut self, executor: &mut Executor<'_>, step: u64) -> Result<(), RunError> {
        let metrics_bytes = match &mut self.metrics {
            Some(metrics) => {
                metrics.sync()?;
                let path = metrics.path();
                std::fs::metadata(path)
                    .map_err(|e| output::io_err(path, e))?
                    .len()
            }
            None => 0,
        };
        let Some(snapshot) = executor.snapshot(step)? else {
            return Ok(());
        };
        let layout = &self.plan.topology.parallelism;
        let standing = Standing {
            data_files: self.plan.data.files.clone(),
            layout: [layout.data, layout.pipeline],
            step,
            metrics_bytes,
            first_loss: self.tally.first_loss,
            skipped_steps: self.tally.skipped_steps,
            train_seconds: self.tally.train_seconds,
            plan_fingerprint: self.fingerprint.clone(),
        };
        checkpoint::save(self.out, &standing, &snapshot)
    }

    /// After the last step: the weights, the summary, the logs closed.
    fn finish(
        mut self,
        executor: &Executor<'_>,
        started: Instant,
        resumed_from: Option<u64>,
    ) -> Result<Summary, RunError> {
        let steps = self.plan.train.steps;
        self.enter(Phase::Finish, steps, self.write_allowance());
        if let Some(metrics) = &mut self.metrics {
            metrics.sync()?;
        }
        self.progress.finish();
        if let Some(weights) = executor.weights(steps)? {
            write_weights(&self.out.join("model.safetensors"), &weights)?;
        }
        let tally = &self.tally;
        let summary = Summary {
            steps,
            epochs: executor.cursor().epoch,
            device: format!("{:?}", self.world.device),
            world_size: self.world.size,
            backend: self.world.backend,
            first_loss: tally.first_loss,
            final_loss: tally.last.as_ref().map_or(f64::NAN, |r| r.loss),
            eval: tally.last_eval.clone(),
            seconds: started.elapsed().as_secs_f64(),
            train_seconds: tally.train_seconds,
            steps_per_second: (steps - tally.done) as f64
                / (tally.train_seconds - tally.seconds_before).max(1e-9),
            skipped_steps: tally.skipped_steps,
            resumed_from,
            out_dir: self.out.display().to_string(),
        };
        if self.world.rank == 0 {
            let text = serde_json::to_string_pretty(&summary).expect("summary serializes");
            write_atomic(&self.out.join("summary.json"), text.as_bytes())?;
        }
        self.log.finish(summary.steps, summary.steps_per_second)?;
        Ok(summary)
    }
}

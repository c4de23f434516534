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
use std::time::Instant;

use dtl_compiler::plan::Plan;
use serde::Serialize;

use crate::checkpoint::{self, Loaded, Standing};
use crate::device::DeviceChoice;
use crate::error::RunError;
use crate::executor::Executor;
use crate::fault;
use crate::output::{self, write_atomic, write_weights, JsonLines};
use crate::progress::Progress;
use crate::rank_log::RankLog;
use crate::signals;
use crate::watchdog::Watchdog;
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
    log: RankLog,
    /// `metrics.jsonl`, on rank 0.
    metrics: Option<JsonLines>,
    progress: Progress,
    tally: Tally,
}

/// Trains the plan to the end on this rank of `world`. Everything goes into
/// `options.out_dir`.
pub fn train(plan: &Plan, options: &RunOptions, world: &World) -> Result<Summary, RunError> {
    let started = Instant::now();
    let out = options.out_dir.as_path();
    let lead = world.rank == 0;
    std::fs::create_dir_all(out).map_err(|e| output::io_err(out, e))?;
    let log = RankLog::open(out, world, options.trace)?;
    let fingerprint = checkpoint::fingerprint(plan);
    let resumed = if options.resume {
        Some(resume_from(out, &fingerprint, lead)?)
    } else {
        None
    };
    if lead {
        // A resumed run may continue with a new layout (another world size):
        // plan.yaml is the plan now running.
        write_atomic(&out.join("plan.yaml"), plan.to_yaml().as_bytes())?;
    }
    // --init on the command line wins over the plan's `init`.
    let init = options
        .init_weights
        .clone()
        .or_else(|| plan.train.init.as_ref().map(PathBuf::from));
    let mut executor = Executor::build(plan, world, init.as_deref(), resumed.as_ref())?;
    let saved = resumed.as_ref().map(|r| &r.state);
    let metrics = if lead {
        Some(open_metrics(out, saved.map(|s| s.metrics_bytes))?)
    } else {
        None
    };
    let done = saved.map_or(0, |s| s.step);
    let mut driver = Driver {
        plan,
        world,
        out,
        fingerprint,
        log,
        metrics,
        progress: Progress::new(plan.train.steps, done, options.progress && lead),
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
    let watchdog = (world.size > 1).then(|| {
        Watchdog::start(
            options.timeout,
            format!("[rank {}] rank {}: ", world.rank, world.rank),
            world.health_probes(),
        )
    });
    for step in done + 1..=plan.train.steps {
        if let Some(watchdog) = &watchdog {
            watchdog.beat(step);
        }
        driver.step(&mut executor, step)?;
    }
    driver.finish(&executor, started, resumed.map(|r| r.state.step))
}

/// The checkpoint to go on from, saying so when the last one was damaged.
fn resume_from(out: &Path, fingerprint: &str, lead: bool) -> Result<Loaded, RunError> {
    let loaded = checkpoint::load(out, fingerprint)?;
    if let (Some(why), true) = (&loaded.fell_back, lead) {
        eprintln!(
            "warning: the last checkpoint cannot be used ({why}); resuming from the one before, of step {}",
            loaded.state.step
        );
    }
    Ok(loaded)
}

/// `metrics.jsonl`: new, or for a resumed run cut back to what was written
/// up to its checkpoint and continued.
fn open_metrics(out: &Path, resumed_at: Option<u64>) -> Result<JsonLines, RunError> {
    let path = out.join("metrics.jsonl");
    match resumed_at {
        Some(bytes) => {
            output::truncate(&path, bytes)?;
            JsonLines::append(&path)
        }
        None => JsonLines::create(&path),
    }
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
            let eval = executor.evaluate(step)?;
            if let Some(metrics) = &mut self.metrics {
                metrics.write(&eval)?;
            }
            self.progress.eval(&eval);
            self.tally.last_eval = Some(eval);
        }
        // Ctrl-C or SIGTERM: every rank stops after the same step, with a
        // checkpoint of it.
        let stop = executor.agree_to_stop(step, signals::requested().unwrap_or(0))?;
        let due = train.checkpoint_every > 0 && step.is_multiple_of(train.checkpoint_every);
        if due || (stop.is_some() && !last_step) {
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
        let standing = Standing {
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

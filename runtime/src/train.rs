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

use crate::board::Board;
use crate::checkpoint::{self, Standing};
use crate::device::DeviceChoice;
use crate::error::RunError;
use crate::executor::Executor;
use crate::fault;
use crate::output::{self, write_atomic, JsonLines};
use crate::progress::Progress;
use crate::rank_log::RankLog;
use crate::resume::{open_metrics, resume_from};
use crate::run_record;
use crate::signals;
use crate::summary::{Finished, Tally};
use crate::watchdog::{self, Phase, Watchdog, UNBOUNDED};
use crate::world::World;
use dtl_compiler::records::Status;

pub use crate::summary::{Best, Summary};
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
    /// Rank 0 writes TensorBoard event files beside `metrics.jsonl`.
    pub tensorboard: bool,
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
    /// TensorBoard's event file, on rank 0.
    board: Option<Board>,
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
        .map_err(|err| watchdog::name_lost_peers(err, world, out));
    if let Err(err) = &result {
        log.failed(err);
    }
    if world.rank == 0 {
        let (status, message) = match &result {
            Ok(summary) => (Status::Finished, summary.stopped_early.clone()),
            Err(err @ RunError::Interrupted { .. }) => (Status::Interrupted, Some(err.to_string())),
            Err(err) => (Status::Failed, Some(err.to_string())),
        };
        // The run's own outcome comes first: a run.json that cannot be
        // written is said, not put in its place.
        if let Err(err) = run_record::end(out, status, message) {
            eprintln!("warning: {err}");
        }
    }
    result
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
        Some(resume_from(plan, out, &fingerprint, world)?)
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
        run_record::start(out, plan, &fingerprint, saved.map(|s| s.step))?;
    }
    // --init on the command line (every tensor) wins over the plan's `init`.
    let from_plan = options.init_weights.is_none();
    let init = options
        .init_weights
        .clone()
        .or_else(|| plan.train.init.as_ref().map(PathBuf::from));
    let init = (init.as_deref(), from_plan);
    let mut executor = Executor::build(plan, world, init, resumed.as_ref())?;
    // The peers load about as long as this rank did.
    enter(Phase::AfterLoad, 0, 2 * loading.elapsed());
    executor.agree_on_weights()?;
    let done = saved.map_or(0, |s| s.step);
    let board = if lead && options.tensorboard {
        Some(Board::open(out, plan, done)?)
    } else {
        None
    };
    let mut driver = Driver {
        plan,
        world,
        out,
        fingerprint,
        log,
        metrics,
        board,
        progress: Progress::new(plan.train.steps, done, options.progress && lead),
        watchdog,
        tally: Tally::new(saved),
    };
    signals::at_step_boundaries();
    let mut last = done;
    for step in done + 1..=plan.train.steps {
        driver.enter(Phase::Step, step, Duration::ZERO);
        driver.step(&mut executor, step)?;
        last = step;
        if driver.tally.stopped_early.is_some() {
            executor.finish_updates(step)?;
            break;
        }
    }
    // The test file, once, with the weights the run ends with.
    driver.enter(Phase::Evaluate, last, Duration::ZERO);
    let test = executor.evaluate_test(last, &|| driver.beat())?;
    if let (Some(board), Some(test)) = (&mut driver.board, &test) {
        board.eval_as("test", last, test)?;
    }
    driver.tally.test = test;
    driver.finish(&executor, started, resumed.map(|r| r.state.step), last)
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
        let trace = executor.take_trace();
        let seconds = step_started.elapsed().as_secs_f64();
        self.log
            .step(&record, &|| executor.weights_hash(), seconds, trace)?;
        if let Some(metrics) = &mut self.metrics {
            metrics.write(&record)?;
        }
        if let Some(board) = &mut self.board {
            let rows = self.plan.train.global_batch;
            board.step(&record, seconds, rows, self.world.device)?;
        }
        self.progress.update(&record);
        let last_step = step == train.steps;
        if last_step {
            executor.finish_updates(step)?;
        }
        let eval_due = train.eval_every > 0 && step.is_multiple_of(train.eval_every);
        if (eval_due || last_step) && executor.held_out_rows() > 0 {
            self.evaluate(executor, step)?;
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

    /// The evaluation of `step` on every rank: logged, and watched by
    /// `keep_best` and `stop_early`.
    fn evaluate(&mut self, executor: &mut Executor<'_>, step: u64) -> Result<(), RunError> {
        if executor.evaluates(step) {
            self.enter(Phase::Evaluate, step, Duration::ZERO);
        } else {
            // The ranks that evaluate take about a forward pass over the
            // held-out rows; a trained row costs more than that.
            let rows = executor.held_out_rows() as f64;
            self.enter(
                Phase::AwaitEvaluation,
                step,
                2 * self.per_row(step).mul_f64(rows),
            );
        }
        let beat = || self.beat();
        let eval = executor.evaluate(step, &beat)?;
        if let Some(metrics) = &mut self.metrics {
            metrics.write(&eval)?;
        }
        if let Some(board) = &mut self.board {
            board.eval(step, &eval)?;
        }
        self.progress.eval(&eval);
        let tracking = &self.plan.train.tracking;
        if let Some(monitor) = tracking.keep_best {
            if self.tally.watch.new_best(monitor, &eval, step) {
                self.enter(Phase::Checkpoint, step, self.write_allowance());
                let (lead, best) = (self.world.rank == 0, (&eval, monitor.key()));
                output::keep_best(self.out, lead, (best.0, &best.1), |path| {
                    executor.save_weights(path, step)
                })?;
            }
        }
        if let Some(stop) = &tracking.stop_early {
            let last_step = step == self.plan.train.steps;
            self.tally.stopped_early = self.tally.watch.stop_early(stop, &eval, step, last_step);
        }
        self.tally.last_eval = Some(eval);
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
        let Some(snapshot) = executor.snapshot(step, self.out)? else {
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
            watch: self.tally.watch.clone(),
        };
        checkpoint::save(self.out, &standing, &snapshot)
    }

    /// After the last step: the weights, the summary, the logs closed.
    fn finish(
        mut self,
        executor: &Executor<'_>,
        started: Instant,
        resumed_from: Option<u64>,
        steps: u64,
    ) -> Result<Summary, RunError> {
        self.enter(Phase::Finish, steps, self.write_allowance());
        if let Some(metrics) = &mut self.metrics {
            metrics.sync()?;
        }
        if let Some(board) = &mut self.board {
            board.flush()?;
        }
        self.progress.finish();
        executor.save_weights(&self.out.join("model.safetensors"), steps)?;
        executor.save_average(&self.out.join("model_ema.safetensors"), steps)?;

        let summary = self.tally.summary(Finished {
            steps,
            epochs: executor.cursor().epoch,
            world: self.world,
            seconds: started.elapsed().as_secs_f64(),
            resumed_from,
            keep_best: self.plan.train.tracking.keep_best,
            tensorboard_seconds: self.board.as_ref().map(Board::seconds),
            rank: executor.report(),
            out: self.out,
        });
        if self.world.rank == 0 {
            let text = serde_json::to_string_pretty(&summary).expect("summary serializes");
            write_atomic(&self.out.join("summary.json"), text.as_bytes())?;
        }
        self.log.finish(summary.steps, summary.steps_per_second)?;
        Ok(summary)
    }
}

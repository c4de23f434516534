//! The training loop: runs the plan's step program once per optimizer step,
//! evaluates on the held-out rows, writes checkpoints, and writes metrics,
//! weights and a summary into the output folder. A run with a checkpoint
//! can be resumed and continues bit for bit.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dtl_compiler::plan::{NanPolicy, NormType, Plan, StepOp};
pub use dtl_compiler::records::{EvalRecord, StepRecord};
use serde::Serialize;
use tch::{Device, Reduction, Tensor};

use crate::checkpoint::{self, State};
use crate::clip;
use crate::data::{self, Batches, Cursor, Dataset};
use crate::device::{self, DeviceChoice};
use crate::error::{RunError, TorchContext};
use crate::loss;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::prefetch::Prefetch;
use crate::progress::Progress;
use dtl_compiler::util::rng::Rng;

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
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub epochs: u64,
    pub device: String,
    pub first_loss: f64,
    pub final_loss: f64,
    pub eval: Option<EvalRecord>,
    /// Seconds of the whole run, set-up and evaluation included.
    pub seconds: f64,
    /// Seconds spent in the training steps (batches, forward, backward,
    /// clipping, optimizer), over the whole run including before a resume.
    pub train_seconds: f64,
    pub steps_per_second: f64,
    pub skipped_steps: u64,
    /// The checkpoint step this process continued from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    pub out_dir: String,
}

/// The state of a run between steps.
struct Run<'a> {
    plan: &'a Plan,
    device: Device,
    model: Model,
    optimizer: Optimizer,
    valid: Dataset,
    batches: Prefetch,
    /// The data stream's position after the last batch consumed.
    cursor: Cursor,
    first_loss: f64,
    skipped_steps: u64,
    train_seconds: f64,
    /// The step of the last checkpoint written or resumed from.
    last_checkpoint: Option<u64>,
    /// The run folder, where checkpoints go.
    out: &'a Path,
    /// The plan's fingerprint, stored in every checkpoint.
    fingerprint: String,
}

/// Trains the plan to the end. Everything goes into `options.out_dir`:
/// `plan.yaml`, `metrics.jsonl`, `checkpoint/` (every `checkpoint_every`
/// steps), `model.safetensors`, `summary.json`.
pub fn train(plan: &Plan, options: &RunOptions) -> Result<Summary, RunError> {
    let started = Instant::now();
    let topology = &plan.topology;
    if topology.world_size() != 1 {
        return Err(RunError::MultiRank {
            world: topology.world_size(),
            data: topology.parallelism.data,
            pipeline: topology.parallelism.pipeline,
        });
    }
    let device = device::resolve(options.device)?;
    let out = &options.out_dir;
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let plan_yaml = plan.to_yaml();
    let resumed = if options.resume {
        Some(checkpoint::load(out, &plan_yaml)?)
    } else {
        write_atomic(&out.join("plan.yaml"), plan_yaml.as_bytes())?;
        None
    };

    let train = &plan.train;
    let split = data::load(&plan.data, train.seed)?;
    let mut model = Model::build(&plan.model, train.seed, device)?;
    model.precision = train.precision;
    // --init on the command line wins over the plan's `init`.
    let init = options
        .init_weights
        .clone()
        .or_else(|| train.init.as_ref().map(PathBuf::from));
    if let Some(path) = &init {
        model.load(path)?;
    }
    let mut batches = Batches::new(
        &split.train,
        train.micro_batch,
        plan.data.shuffle,
        train.seed,
    )?;
    let mut optimizer = Optimizer::new(&train.optimizer, model.params.len());
    let metrics_path = out.join("metrics.jsonl");
    if let Some(saved) = &resumed {
        model.load(&saved.model_path)?;
        let names: Vec<&str> = model.params.iter().map(|(n, _)| n.as_str()).collect();
        optimizer.restore(
            saved.state.optimizer_steps,
            &names,
            &saved.optimizer,
            device,
        )?;
        batches.resume(saved.cursor.clone())?;
        truncate(&metrics_path, saved.state.metrics_bytes)?;
    }
    let saved = resumed.as_ref().map(|r| &r.state);
    let done = saved.map_or(0, |s| s.step);
    let cursor = batches.cursor().clone();
    let mut run = Run {
        plan,
        device,
        model,
        optimizer,
        valid: split.valid,
        batches: Prefetch::start(batches, PREFETCH_DEPTH)?,
        cursor,
        first_loss: saved.map_or(f64::NAN, |s| s.first_loss),
        skipped_steps: saved.map_or(0, |s| s.skipped_steps),
        train_seconds: saved.map_or(0.0, |s| s.train_seconds),
        last_checkpoint: saved.map(|s| s.step),
        out,
        fingerprint: checkpoint::fingerprint(&plan_yaml),
    };

    let file = OpenOptions::new()
        .create(true)
        .append(resumed.is_some())
        .write(true)
        .truncate(resumed.is_none())
        .open(&metrics_path)
        .map_err(|e| io_err(&metrics_path, e))?;
    let mut metrics = BufWriter::new(file);
    let progress = Progress::new(train.steps, done, options.progress);
    let (mut last, mut last_eval) = (None, None);
    for step in done + 1..=train.steps {
        let step_started = Instant::now();
        let record = run.step(step)?;
        run.train_seconds += step_started.elapsed().as_secs_f64();
        if step == 1 {
            run.first_loss = record.loss;
        }
        write_line(&mut metrics, &metrics_path, &record)?;
        progress.update(&record);
        let eval_due = train.eval_every > 0 && step.is_multiple_of(train.eval_every);
        if eval_due || step == train.steps {
            let eval = run.evaluate(step)?;
            write_line(&mut metrics, &metrics_path, &eval)?;
            progress.eval(&eval);
            last_eval = Some(eval);
        }
        if train.checkpoint_every > 0 && step.is_multiple_of(train.checkpoint_every) {
            metrics.flush().map_err(|e| io_err(&metrics_path, e))?;
            run.checkpoint(step, &metrics_path)?;
        }
        last = Some(record);
    }
    metrics.flush().map_err(|e| io_err(&metrics_path, e))?;
    progress.finish();
    run.model.save(&out.join("model.safetensors"))?;
    let summary = Summary {
        steps: train.steps,
        epochs: run.cursor.epoch,
        device: format!("{:?}", device),
        first_loss: run.first_loss,
        final_loss: last.map_or(f64::NAN, |r| r.loss),
        eval: last_eval,
        seconds: started.elapsed().as_secs_f64(),
        train_seconds: run.train_seconds,
        steps_per_second: train.steps as f64 / run.train_seconds.max(1e-9),
        skipped_steps: run.skipped_steps,
        resumed_from: resumed.map(|r| r.state.step),
        out_dir: out.display().to_string(),
    };
    let text = serde_json::to_string_pretty(&summary).expect("summary serializes");
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    Ok(summary)
}

/// The dropout seed of a step: a function of the run's seed and the step
/// alone, so a resumed run draws the same masks as an uninterrupted one.
pub fn dropout_seed(seed: u64, step: u64) -> i64 {
    (Rng::new(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64() >> 1) as i64
}

impl Run<'_> {
    /// Runs the step program once.
    fn step(&mut self, step: u64) -> Result<StepRecord, RunError> {
        let train = &self.plan.train;
        tch::manual_seed(dropout_seed(train.seed, step));
        let lr = train
            .schedule
            .lr_at(train.optimizer.lr(), step, train.steps);
        let mut loss_sum = 0.0;
        let mut grad_norm = None;
        let mut skipped = false;
        for op in &self.plan.step_program {
            match op {
                StepOp::ForwardBackward {
                    micro_batches,
                    loss_scale,
                    ..
                } => {
                    for _ in 0..*micro_batches {
                        loss_sum += self.forward_backward(step, *loss_scale)?;
                    }
                }
                StepOp::CheckFinite { on_nan } => {
                    let norm = match grad_norm {
                        Some(norm) => norm,
                        None => clip::grad_norm(self.model.tensors(), NormType::P(2.0))?,
                    };
                    grad_norm = Some(norm);
                    let bad = [("loss", loss_sum), ("gradient norm", norm)]
                        .into_iter()
                        .find(|(_, v)| !v.is_finite());
                    if let Some((what, value)) = bad {
                        if *on_nan == NanPolicy::Stop {
                            return Err(RunError::NonFinite {
                                step,
                                what,
                                value,
                                kept: match self.last_checkpoint {
                                    Some(k) => format!("the checkpoint of step {k} is intact"),
                                    None => "no checkpoint was written".into(),
                                },
                            });
                        }
                        skipped = true;
                        self.skipped_steps += 1;
                    }
                }
                StepOp::ClipGradNorm { .. }
                | StepOp::ClipGradValue { .. }
                | StepOp::OptimizerStep
                    if skipped => {}
                StepOp::ClipGradNorm {
                    max_norm,
                    norm_type,
                } => {
                    grad_norm = Some(clip::clip_grad_norm(
                        self.model.tensors(),
                        *max_norm,
                        *norm_type,
                    )?);
                }
                StepOp::ClipGradValue { clip_value } => {
                    if grad_norm.is_none() {
                        grad_norm = Some(clip::grad_norm(self.model.tensors(), NormType::P(2.0))?);
                    }
                    clip::clip_grad_value(self.model.tensors(), *clip_value)?;
                }
                StepOp::OptimizerStep => {
                    if grad_norm.is_none() {
                        grad_norm = Some(clip::grad_norm(self.model.tensors(), NormType::P(2.0))?);
                    }
                    self.optimizer.step(self.model.tensors(), lr)?;
                }
                StepOp::ZeroGrad => self.model.zero_grad(),
                // A one-rank plan has none of these; `train` refuses others.
                StepOp::Pipeline { .. }
                | StepOp::AllReduceGradients { .. }
                | StepOp::AllReduceGradNorm { .. }
                | StepOp::AverageParameters { .. } => {
                    let topology = &self.plan.topology;
                    return Err(RunError::MultiRank {
                        world: topology.world_size(),
                        data: topology.parallelism.data,
                        pipeline: topology.parallelism.pipeline,
                    });
                }
            }
        }
        Ok(StepRecord {
            step,
            loss: loss_sum,
            lr,
            grad_norm: grad_norm.unwrap_or(0.0),
            skipped,
        })
    }

    /// One micro-batch forward and backward; returns its scaled loss.
    fn forward_backward(&mut self, step: u64, loss_scale: f64) -> Result<f64, RunError> {
        let batch = self.batches.next()?;
        self.cursor = batch.cursor;
        let ctx = || format!("step {step}: move batch");
        let x = batch.x.f_to_device(self.device).context(ctx)?;
        let y = batch.y.f_to_device(self.device).context(ctx)?;
        let output = self.model.forward(&x, true)?;
        let scaled = loss::loss(&self.plan.train.loss, &output, &y, Reduction::Mean)
            .and_then(|l| l.f_mul_scalar(loss_scale))
            .context(|| {
                format!(
                    "step {step}: loss of output {:?} and targets {:?}",
                    output.size(),
                    y.size()
                )
            })?;
        scaled
            .f_backward()
            .context(|| format!("step {step}: backward"))?;
        scaled
            .f_double_value(&[])
            .context(|| format!("step {step}: read loss"))
    }

    /// Mean loss (and accuracy) over the held-out rows, dropout off.
    fn evaluate(&self, step: u64) -> Result<EvalRecord, RunError> {
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
            let chunk = 1024i64;
            let mut start = 0i64;
            while start < rows as i64 {
                let len = chunk.min(rows as i64 - start);
                let part = |t: &Tensor| t.f_narrow(0, start, len)?.f_to_device(self.device);
                let x = part(&self.valid.features).context(ctx)?;
                let y = part(&self.valid.targets).context(ctx)?;
                let output = self.model.forward(&x, false)?;
                let sum = loss::loss(kind, &output, &y, Reduction::Sum).context(ctx)?;
                loss_sum += sum.f_double_value(&[]).context(ctx)?;
                if let Some(hits) = loss::correct(kind, &output, &y).context(ctx)? {
                    correct = Some(correct.unwrap_or(0) + hits);
                }
                start += len;
            }
            let targets = self.valid.targets.numel() as f64;
            Ok(EvalRecord {
                step,
                eval_loss: loss_sum / targets,
                eval_accuracy: correct.map(|c| c as f64 / targets),
                eval_rows: rows,
            })
        })
    }

    /// Saves everything a resumed run needs, after `step`.
    fn checkpoint(&mut self, step: u64, metrics: &Path) -> Result<(), RunError> {
        let metrics_bytes = std::fs::metadata(metrics)
            .map_err(|e| io_err(metrics, e))?
            .len();
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
        };
        checkpoint::save(self.out, &state, &self.model, &self.optimizer, &self.cursor)?;
        self.last_checkpoint = Some(step);
        Ok(())
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

fn io_err(path: &Path, e: std::io::Error) -> RunError {
    RunError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn write_line(out: &mut impl Write, path: &Path, record: &impl Serialize) -> Result<(), RunError> {
    let line = serde_json::to_string(record).expect("records serialize");
    writeln!(out, "{line}").map_err(|e| io_err(path, e))
}

/// Writes a whole file or nothing: a temp file renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

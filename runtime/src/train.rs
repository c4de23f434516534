//! The training loop: runs the plan's step program once per optimizer step,
//! evaluates on the held-out rows, and writes metrics, weights and a summary
//! into the output folder.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dtl_compiler::plan::{Loss, NormType, Plan, StepOp};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::clip;
use crate::data::{self, Batches, Dataset};
use crate::device::{self, DeviceChoice};
use crate::error::{RunError, TorchContext};
use crate::model::Model;
use crate::optim::Optimizer;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    pub device: DeviceChoice,
    /// Progress output on stderr: a bar on a terminal, plain lines otherwise.
    pub progress: bool,
    /// Initial weights (safetensors) instead of the initialisers.
    pub init_weights: Option<PathBuf>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalRecord {
    pub step: u64,
    pub eval_loss: f64,
    pub eval_accuracy: f64,
    pub eval_rows: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub epochs: u64,
    pub device: String,
    pub first_loss: f64,
    pub final_loss: f64,
    pub eval: Option<EvalRecord>,
    pub seconds: f64,
    pub out_dir: String,
}

struct Run<'a> {
    plan: &'a Plan,
    device: Device,
    model: Model,
    optimizer: Optimizer,
    train: Dataset,
    valid: Dataset,
    batches: Batches,
}

/// Trains the plan to the end. Everything goes into `options.out_dir`:
/// `plan.yaml`, `metrics.jsonl`, `model.safetensors`, `summary.json`.
pub fn train(plan: &Plan, options: &RunOptions) -> Result<Summary, RunError> {
    let started = Instant::now();
    let device = device::resolve(options.device)?;
    let out = &options.out_dir;
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    write_atomic(&out.join("plan.yaml"), plan.to_yaml().as_bytes())?;

    let train = &plan.train;
    // Seeds dropout; weights and data order have their own generators.
    tch::manual_seed(train.seed as i64);
    let split = data::load(&plan.data, train.seed)?;
    let mut model = Model::build(&plan.model, train.seed, device)?;
    // --init on the command line wins over the plan's `init`.
    let init = options
        .init_weights
        .clone()
        .or_else(|| train.init.as_ref().map(PathBuf::from));
    if let Some(path) = &init {
        model.load(path)?;
    }
    let batches = Batches::new(
        split.train.rows,
        train.micro_batch,
        plan.data.shuffle,
        train.seed,
    )?;
    let optimizer = Optimizer::new(&train.optimizer, model.params.len());
    let mut run = Run {
        plan,
        device,
        model,
        optimizer,
        train: split.train,
        valid: split.valid,
        batches,
    };

    let metrics_path = out.join("metrics.jsonl");
    let mut metrics =
        BufWriter::new(File::create(&metrics_path).map_err(|e| io_err(&metrics_path, e))?);
    let progress = Progress::new(train.steps, options.progress);
    let (mut first_loss, mut last) = (f64::NAN, None);
    let mut last_eval = None;
    for step in 1..=train.steps {
        let record = run.step(step)?;
        if step == 1 {
            first_loss = record.loss;
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
        last = Some(record);
    }
    metrics.flush().map_err(|e| io_err(&metrics_path, e))?;
    progress.finish();
    run.model.save(&out.join("model.safetensors"))?;
    let summary = Summary {
        steps: train.steps,
        epochs: run.batches.epoch,
        device: format!("{:?}", device),
        first_loss,
        final_loss: last.map_or(f64::NAN, |r| r.loss),
        eval: last_eval,
        seconds: started.elapsed().as_secs_f64(),
        out_dir: out.display().to_string(),
    };
    let text = serde_json::to_string_pretty(&summary).expect("summary serializes");
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    Ok(summary)
}

impl Run<'_> {
    /// Runs the step program once.
    fn step(&mut self, step: u64) -> Result<StepRecord, RunError> {
        let train = &self.plan.train;
        let lr = train
            .schedule
            .lr_at(train.optimizer.lr(), step, train.steps);
        let mut loss_sum = 0.0;
        let mut grad_norm = None;
        for op in &self.plan.step_program {
            match op {
                StepOp::ForwardBackward {
                    micro_batches,
                    loss_scale,
                } => {
                    for _ in 0..*micro_batches {
                        let (x, y) = self.batches.next(&self.train, self.device)?;
                        let loss = self.loss(&x, &y, true)?;
                        let scaled = loss
                            .f_mul_scalar(*loss_scale)
                            .context(|| format!("step {step}: scale loss"))?;
                        scaled
                            .f_backward()
                            .context(|| format!("step {step}: backward"))?;
                        let value = scaled
                            .f_double_value(&[])
                            .context(|| format!("step {step}: read loss"))?;
                        if !value.is_finite() {
                            return Err(RunError::NonFiniteLoss { step, value });
                        }
                        loss_sum += value;
                    }
                }
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
                    grad_norm = Some(clip::grad_norm(self.model.tensors(), NormType::P(2.0))?);
                    clip::clip_grad_value(self.model.tensors(), *clip_value)?;
                }
                StepOp::OptimizerStep => {
                    if grad_norm.is_none() {
                        grad_norm = Some(clip::grad_norm(self.model.tensors(), NormType::P(2.0))?);
                    }
                    self.optimizer.step(self.model.tensors(), lr)?;
                }
                StepOp::ZeroGrad => self.model.zero_grad(),
            }
        }
        Ok(StepRecord {
            step,
            loss: loss_sum,
            lr,
            grad_norm: grad_norm.unwrap_or(0.0),
        })
    }

    fn loss(&self, x: &Tensor, y: &Tensor, train: bool) -> Result<Tensor, RunError> {
        let logits = self.model.forward(x, train)?;
        let Loss::CrossEntropy { label_smoothing } = self.plan.train.loss;
        logits
            .f_cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, label_smoothing)
            .context(|| {
                format!(
                    "cross_entropy of logits {:?} and labels {:?}",
                    logits.size(),
                    y.size()
                )
            })
    }

    /// Mean loss and accuracy over the held-out rows, dropout off.
    fn evaluate(&self, step: u64) -> Result<EvalRecord, RunError> {
        let rows = self.valid.rows;
        if rows == 0 {
            return Ok(EvalRecord {
                step,
                eval_loss: f64::NAN,
                eval_accuracy: f64::NAN,
                eval_rows: 0,
            });
        }
        let ctx = || format!("step {step}: evaluation");
        tch::no_grad(|| {
            let (mut loss_sum, mut correct) = (0.0, 0i64);
            let chunk = 1024i64;
            let mut start = 0i64;
            while start < rows as i64 {
                let len = chunk.min(rows as i64 - start);
                let x = self
                    .valid
                    .features
                    .f_narrow(0, start, len)
                    .and_then(|t| t.f_to_device(self.device))
                    .context(ctx)?;
                let y = self
                    .valid
                    .labels
                    .f_narrow(0, start, len)
                    .and_then(|t| t.f_to_device(self.device))
                    .context(ctx)?;
                let logits = self.model.forward(&x, false)?;
                let Loss::CrossEntropy { label_smoothing } = self.plan.train.loss;
                let loss = logits
                    .f_cross_entropy_loss::<Tensor>(
                        &y,
                        None,
                        tch::Reduction::Sum,
                        -100,
                        label_smoothing,
                    )
                    .context(ctx)?;
                loss_sum += loss.f_double_value(&[]).context(ctx)?;
                let hits = logits
                    .f_argmax(-1, false)
                    .and_then(|p| p.f_eq_tensor(&y))
                    .context(ctx)?;
                correct += hits
                    .f_sum(Kind::Int64)
                    .and_then(|s| s.f_int64_value(&[]))
                    .context(ctx)?;
                start += len;
            }
            Ok(EvalRecord {
                step,
                eval_loss: loss_sum / rows as f64,
                eval_accuracy: correct as f64 / rows as f64,
                eval_rows: rows,
            })
        })
    }
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

/// A progress bar on a terminal; otherwise about twenty plain lines a run.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    every: u64,
    enabled: bool,
}

impl Progress {
    fn new(steps: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(steps);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  eta {eta}",
            )
            .expect("the template is valid");
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            every: (steps / 20).max(1),
            enabled,
        }
    }

    fn update(&self, record: &StepRecord) {
        match &self.bar {
            Some(bar) => {
                let rate = bar.position() as f64 / bar.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{rate:.1} steps/s  loss {:.4}", record.loss));
                bar.inc(1);
            }
            None if self.enabled && record.step.is_multiple_of(self.every) => {
                eprintln!(
                    "step {:>6}  loss {:.4}  grad_norm {:.4}",
                    record.step, record.loss, record.grad_norm
                );
            }
            None => {}
        }
    }

    fn eval(&self, eval: &EvalRecord) {
        let line = format!(
            "step {:>6}  eval_loss {:.4}  eval_accuracy {:.2}%",
            eval.step,
            eval.eval_loss,
            eval.eval_accuracy * 100.0
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.enabled => eprintln!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

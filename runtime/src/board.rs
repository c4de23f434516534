//! A run in TensorBoard: what rank 0 puts on the board. The run's texts
//! (its source, plan and layers) once, each step's scalars, each
//! evaluation's measures, and about once a second the memory in use. The
//! event format itself is [`crate::tensorboard`]'s.

use std::path::Path;
use std::time::{Duration, Instant};

use dtl_compiler::plan::Plan;
use dtl_compiler::records::{EvalRecord, StepRecord};

use crate::error::RunError;
use crate::tensorboard::EventWriter;

pub struct Board {
    events: EventWriter,
    /// When memory was last put on the board.
    memory_sampled: Option<Instant>,
    /// Seconds spent in the board's calls during training (sampling,
    /// encoding, writing).
    seconds: f64,
}

impl Board {
    /// A new event file with the run's texts: the source, the plan and the
    /// model's layers, so that a run in TensorBoard says what it is.
    pub fn open(out: &Path, plan: &Plan, step: u64) -> Result<Board, RunError> {
        let mut events = EventWriter::create(out)?;
        let source = read_bounded(Path::new(&plan.source), 1 << 20)
            .unwrap_or_else(|| format!("({} could not be read)", plan.source));
        events.text(step, "run/source", &code_block(&source))?;
        events.text(
            step,
            "run/plan",
            &code_block(&plan.with_absolute_paths().to_yaml()),
        )?;
        events.text(step, "run/model", &layer_table(plan))?;
        events.flush()?;
        Ok(Board {
            events,
            memory_sampled: None,
            seconds: 0.0,
        })
    }

    /// A step's scalars: the loss, the rate, the gradient norm, the loss
    /// scale (fp16), rows per second, and about once a second the memory
    /// in use.
    pub fn step(
        &mut self,
        record: &StepRecord,
        seconds: f64,
        rows: u64,
        device: tch::Device,
    ) -> Result<(), RunError> {
        let started = Instant::now();
        let mut values = vec![
            ("train/loss", record.loss),
            ("train/lr", record.lr),
            ("train/grad_norm", record.grad_norm),
            ("perf/samples_per_second", rows as f64 / seconds.max(1e-9)),
        ];
        if record.skipped {
            values.push(("train/skipped", 1.0));
        }
        if let Some(scale) = record.loss_scale {
            values.push(("train/loss_scale", scale));
        }
        let due = self
            .memory_sampled
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            self.memory_sampled = Some(Instant::now());
            let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
            if let Some(bytes) = crate::device::host_memory_resident() {
                values.push(("memory/host_resident_mib", mib(bytes)));
            }
            if let tch::Device::Cuda(ordinal) = device {
                if let Some(bytes) = crate::device::gpu_memory_used(ordinal) {
                    values.push(("memory/gpu_used_mib", mib(bytes)));
                }
            }
        }
        let written = self.events.scalars(record.step, &values);
        self.seconds += started.elapsed().as_secs_f64();
        written
    }

    /// An evaluation's loss, accuracy and measures: `eval/…`, and the
    /// average of the weights' as `eval_ema/…`.
    pub fn eval(&mut self, step: u64, eval: &EvalRecord) -> Result<(), RunError> {
        self.eval_as("eval", step, eval)
    }

    /// [`Board::eval`] under another name (`test/…` for the test file).
    pub fn eval_as(&mut self, name: &str, step: u64, eval: &EvalRecord) -> Result<(), RunError> {
        let started = Instant::now();
        let mut values = vec![(format!("{name}/loss"), eval.eval_loss)];
        values.extend(eval.eval_accuracy.map(|a| (format!("{name}/accuracy"), a)));
        for (key, value) in &eval.measures.0 {
            let tag = match key.strip_prefix("ema_eval_") {
                Some(metric) => format!("{name}_ema/{metric}"),
                None => format!("{name}/{}", key.strip_prefix("eval_").unwrap_or(key)),
            };
            values.push((tag, *value));
        }
        let values: Vec<(&str, f64)> = values.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        let written = self
            .events
            .scalars(step, &values)
            .and_then(|()| self.events.flush());
        self.seconds += started.elapsed().as_secs_f64();
        written
    }

    pub fn flush(&mut self) -> Result<(), RunError> {
        let started = Instant::now();
        let flushed = self.events.flush();
        self.seconds += started.elapsed().as_secs_f64();
        flushed
    }

    /// Seconds spent in the board's calls after it was opened: sampling
    /// memory, encoding and writing events.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// A file's text, at most `limit` bytes of it.
fn read_bounded(path: &Path, limit: u64) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Text shown as code by TensorBoard's markdown: every line indented.
fn code_block(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The model's layers as a markdown table: name, operation, output shape,
/// parameters.
fn layer_table(plan: &Plan) -> String {
    let cost = dtl_compiler::tools::explain::cost(plan);
    let mut table = format!(
        "**{}**: {} parameters\n\n| layer | op | output | parameters |\n|---|---|---|---|\n",
        plan.model.name, plan.model.parameter_count
    );
    for (node, layer) in plan.model.nodes.iter().zip(&cost.layers) {
        let shape: Vec<String> = node.output.iter().map(ToString::to_string).collect();
        table += &format!(
            "| {} | {} | [{}] | {} |\n",
            node.name,
            layer.kind,
            shape.join(", "),
            layer.parameters
        );
    }
    table
}

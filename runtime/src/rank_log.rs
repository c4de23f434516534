//! Each rank's own record of a multi-rank run: `rank-K.log` (who it is,
//! its loss and time per step, how it ended), and with `--trace`
//! `rank-K.trace.jsonl` (per step: its own loss and a hash of its weights,
//! which must be the same on every replica after a synchronous step; under
//! `shard = parameters` a hash of the slices it holds, which differ).
//! A one-process run keeps neither: its `metrics.jsonl` says it all.
//!
//! The log is appended to, one attempt after another (a start, each
//! resume), each under a header line, and written through line by line: a
//! rank that ends abruptly leaves every line it wrote, and how it failed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, LineWriter, Write};
use std::path::{Path, PathBuf};

use dtl_compiler::records::StepRecord;
use serde::Serialize;

use crate::error::RunError;
use crate::executor::StepTrace;
use crate::output::{io_err, write_line};
use crate::world::World;

pub struct RankLog {
    log: Option<(PathBuf, LineWriter<File>)>,
    trace: Option<(PathBuf, BufWriter<File>)>,
    /// Rank, replica, stage.
    who: (usize, usize, usize),
}

/// One line of `rank-K.trace.jsonl`.
#[derive(Serialize)]
struct TraceLine {
    step: u64,
    rank: usize,
    replica: usize,
    stage: usize,
    /// The step's loss as the replicas agreed on it.
    loss: f64,
    /// FNV-1a of every parameter's and buffer's bytes after the step.
    weights: String,
    /// A pipeline stage's passes in the order it ran them (`F0`, `B0`, …),
    /// over the step's rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    passes: Vec<String>,
    /// The most micro-batch pieces the stage held at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_in_flight: Option<usize>,
    /// The all-reduces issued over the tensor group in the step
    /// (`tensor = T`): the plan's `tensor_all_reduces` for the rank's stage,
    /// every piece of every micro-batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    tensor_all_reduces: Option<u64>,
}

fn create(path: PathBuf) -> Result<(PathBuf, BufWriter<File>), RunError> {
    let file = File::create(&path).map_err(|e| io_err(&path, e))?;
    Ok((path, BufWriter::new(file)))
}

/// `rank-K.log`, appended to.
fn append(path: PathBuf) -> Result<(PathBuf, LineWriter<File>), RunError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    Ok((path, LineWriter::new(file)))
}

impl RankLog {
    /// Opens the rank's log for another attempt (a resume of the
    /// checkpoint of `resumed_at`, or a start) and its trace.
    pub fn open(
        out: &Path,
        world: &World,
        trace: bool,
        resumed_at: Option<u64>,
    ) -> Result<RankLog, RunError> {
        let rank = world.rank;
        let mut log = if world.size > 1 {
            Some(append(out.join(format!("rank-{rank}.log")))?)
        } else {
            None
        };
        if let Some((path, file)) = &mut log {
            let attempt = match resumed_at {
                Some(step) => format!("resumed from the checkpoint of step {step}"),
                None => "started".to_string(),
            };
            writeln!(file, "--- {} UTC: {attempt} ---", crate::output::utc_now())
                .map_err(|e| io_err(path, e))?;
        }
        let trace = if trace {
            Some(create(out.join(format!("rank-{rank}.trace.jsonl")))?)
        } else {
            None
        };
        if let Some((path, file)) = &mut log {
            writeln!(
                file,
                "rank {rank} of {}: replica {}, stage {}{}, device {:?}, backend {}, pid {}",
                world.size,
                world.place.replica,
                world.place.stage,
                match world.tensor.size() {
                    1 => String::new(),
                    _ => format!(", tensor rank {}", world.place.tensor),
                },
                world.device,
                world.backend,
                std::process::id()
            )
            .map_err(|e| io_err(path, e))?;
        }
        Ok(RankLog {
            log,
            trace,
            who: (
                rank,
                world.place.replica as usize,
                world.place.stage as usize,
            ),
        })
    }

    pub fn step(
        &mut self,
        record: &StepRecord,
        weights_hash: &dyn Fn() -> Result<u64, RunError>,
        seconds: f64,
        trace: StepTrace,
    ) -> Result<(), RunError> {
        if let Some((path, file)) = &mut self.log {
            writeln!(
                file,
                "step {} loss {:.6} grad_norm {:.6} lr {:.3e} {:.1} ms{}",
                record.step,
                record.loss,
                record.grad_norm,
                record.lr,
                seconds * 1e3,
                if record.skipped { " skipped" } else { "" }
            )
            .map_err(|e| io_err(path, e))?;
        }
        if let Some((path, file)) = &mut self.trace {
            let line = TraceLine {
                step: record.step,
                rank: self.who.0,
                replica: self.who.1,
                stage: self.who.2,
                loss: record.loss,
                weights: format!("{:016x}", weights_hash()?),
                passes: trace.passes,
                peak_in_flight: trace.peak_in_flight,
                tensor_all_reduces: trace.tensor_all_reduces,
            };
            write_line(file, path, &line)?;
        }
        Ok(())
    }

    /// How the attempt ended, when it failed (best effort: the failure
    /// itself is what is reported).
    pub fn failed(&mut self, err: &RunError) {
        if let Some((_, file)) = &mut self.log {
            let _ = writeln!(file, "failed: {err}");
        }
        if let Some((_, file)) = &mut self.trace {
            let _ = file.flush();
        }
    }

    pub fn finish(&mut self, steps: u64, steps_per_second: f64) -> Result<(), RunError> {
        if let Some((path, file)) = &mut self.log {
            writeln!(file, "done: {steps} steps, {steps_per_second:.2} steps/s")
                .and_then(|()| file.flush())
                .map_err(|e| io_err(path, e))?;
        }
        if let Some((path, file)) = &mut self.trace {
            file.flush().map_err(|e| io_err(path, e))?;
        }
        Ok(())
    }
}

//! What a run reports: where the loop stands as it goes (the [`Tally`]
//! the checkpoints keep), and at the end the [`Summary`] written to
//! `summary.json`.

use std::path::Path;

use dtl_compiler::plan::Monitor;
use dtl_compiler::records::{EvalRecord, StepRecord};
use serde::Serialize;

use crate::checkpoint::State;
use crate::executor::RankReport;
use crate::watch::Watch;
use crate::world::World;

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
    /// `test = <source>`: the test file's evaluation after the last step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<EvalRecord>,
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
    /// Why the run ended before its last step (`stop_early`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// `keep_best`: the evaluation whose weights are in `best/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<Best>,
    /// Seconds rank 0 spent on TensorBoard during training: sampling
    /// memory, encoding and writing events (what logging costs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensorboard_seconds: Option<f64>,
    /// Seconds this rank's steps waited for their micro-batches (reading,
    /// decoding and transforming are on the data thread): near 0 when the
    /// data keeps up with the model.
    pub data_wait_seconds: f64,
    /// Bytes of optimizer state rank 0 holds (with `shard = optimizer`:
    /// its shard).
    pub optimizer_state_bytes: u64,
    /// Bytes of parameters, frozen ones and buffers rank 0 holds between
    /// steps (with `shard = parameters`: its slices of the units, the rest
    /// whole).
    pub parameter_bytes: u64,
    /// Under `tensor = T`: the all-reduces over rank 0's tensor group its
    /// training steps issued (forward and backward; evaluation's not), as
    /// the step program's `tensor_all_reduces` lists them per micro-batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_all_reduces: Option<u64>,
    /// Under `sequence = true`: the all-gathers and reduce-scatters over
    /// the sequence rank 0's training steps issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_all_gathers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_reduce_scatters: Option<u64>,
    /// Under `local_sgd` and `diloco`: the bytes rank 0 sent across the
    /// sync groups (the step program's `average_parameters` or
    /// `outer_step`, each time it ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub across_group_bytes: Option<u64>,
    /// Rank 0's peak resident memory (libtorch's fixed cost included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Rank 0's peak resident memory before its first step: the model
    /// built, its weights made or read, the replicas agreed on them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_peak_rss_bytes: Option<u64>,
    /// `on_bad_row = skip`: the rows each file left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_rows: Vec<SkippedRows>,
    pub out_dir: String,
}

/// The rows one data file left out, and why the first was.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedRows {
    pub file: String,
    pub rows: u64,
    pub first: Option<String>,
}

/// The best evaluation by the measure `keep_best` watches.
#[derive(Debug, Clone, Serialize)]
pub struct Best {
    pub step: u64,
    /// The measure's key in `metrics.jsonl` (`eval_loss`, `eval_accuracy`,
    /// …).
    pub metric: String,
    pub value: f64,
}

/// Where the loop stands: what the summary and the checkpoints report.
pub struct Tally {
    pub first_loss: f64,
    pub skipped_steps: u64,
    pub train_seconds: f64,
    /// Steps done before this process started (a resumed run).
    pub done: u64,
    /// Training seconds before this process started.
    pub seconds_before: f64,
    pub last: Option<StepRecord>,
    pub last_eval: Option<EvalRecord>,
    pub test: Option<EvalRecord>,
    /// `keep_best` and `stop_early`'s standing.
    pub watch: Watch,
    /// Why the run stops before its last step (`stop_early`).
    pub stopped_early: Option<String>,
    /// The peak resident memory when the tally began, before the steps.
    pub start_peak_rss: Option<u64>,
}

/// What the end of the loop adds to the tally for the summary.
pub struct Finished<'a> {
    /// The last step done.
    pub steps: u64,
    pub epochs: u64,
    pub world: &'a World,
    /// Seconds of the whole run.
    pub seconds: f64,
    pub resumed_from: Option<u64>,
    pub keep_best: Option<Monitor>,
    pub tensorboard_seconds: Option<f64>,
    pub rank: RankReport,
    pub out: &'a Path,
}

impl Tally {
    /// A fresh tally, or the one a checkpoint kept.
    pub fn new(saved: Option<&State>) -> Tally {
        Tally {
            first_loss: saved.map_or(f64::NAN, |s| s.first_loss),
            skipped_steps: saved.map_or(0, |s| s.skipped_steps),
            train_seconds: saved.map_or(0.0, |s| s.train_seconds),
            done: saved.map_or(0, |s| s.step),
            seconds_before: saved.map_or(0.0, |s| s.train_seconds),
            last: None,
            last_eval: None,
            test: None,
            watch: saved.map_or_else(Watch::default, |s| s.watch.clone()),
            stopped_early: None,
            start_peak_rss: crate::memory::peak_rss(),
        }
    }

    pub fn summary(&self, end: Finished<'_>) -> Summary {
        Summary {
            steps: end.steps,
            epochs: end.epochs,
            device: format!("{:?}", end.world.device),
            world_size: end.world.size,
            backend: end.world.backend,
            first_loss: self.first_loss,
            final_loss: self.last.as_ref().map_or(f64::NAN, |r| r.loss),
            eval: self.last_eval.clone(),
            test: self.test.clone(),
            seconds: end.seconds,
            train_seconds: self.train_seconds,
            steps_per_second: (end.steps - self.done) as f64
                / (self.train_seconds - self.seconds_before).max(1e-9),
            skipped_steps: self.skipped_steps,
            resumed_from: end.resumed_from,
            stopped_early: self.stopped_early.clone(),
            best: end.keep_best.and_then(|m| {
                self.watch.best.map(|value| Best {
                    step: self.watch.best_step,
                    metric: m.key(),
                    value,
                })
            }),
            tensorboard_seconds: end.tensorboard_seconds,
            data_wait_seconds: end.rank.data.wait_seconds,
            optimizer_state_bytes: end.rank.optimizer_state_bytes,
            parameter_bytes: end.rank.parameter_bytes,
            tensor_all_reduces: end.rank.tensor_all_reduces,
            tensor_all_gathers: end.rank.sequence_collectives.map(|(g, _)| g),
            tensor_reduce_scatters: end.rank.sequence_collectives.map(|(_, s)| s),
            across_group_bytes: end.rank.across_group_bytes,
            peak_rss_bytes: crate::memory::peak_rss(),
            start_peak_rss_bytes: self.start_peak_rss,
            skipped_rows: end
                .rank
                .data
                .skipped
                .iter()
                .map(|(file, skipped)| SkippedRows {
                    file: file.clone(),
                    rows: skipped.rows,
                    first: skipped.first.clone(),
                })
                .collect(),
            out_dir: end.out.display().to_string(),
        }
    }
}

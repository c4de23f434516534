//! The parallel layout of a plan: how many data-parallel replicas and
//! pipeline stages, which layers each stage owns, which tensors cross
//! between stages, the gradient buckets, and each stage's part of the step
//! (forward, backward, sends and receives, in schedule order). Data only:
//! `lower` computes these.

use serde::{Deserialize, Serialize};

use super::Shape;

/// The `parallel` block, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallelism {
    /// Data-parallel replicas of every stage.
    pub data: u64,
    /// Pipeline stages.
    pub pipeline: u64,
    /// Pipeline micro-batches each `micro_batch` is cut into.
    pub micro_batches: u64,
    pub schedule: PipelineSchedule,
    pub sync: SyncMode,
    pub backend: Backend,
    /// Gradients are all-reduced in buckets of about this many bytes.
    pub bucket_bytes: u64,
    pub batch_norm: BatchNormSync,
}

impl Parallelism {
    /// One process: no replicas, no stages.
    pub fn single() -> Self {
        Parallelism {
            data: 1,
            pipeline: 1,
            micro_batches: 1,
            schedule: PipelineSchedule::OneFOneB,
            sync: SyncMode::EveryStep,
            backend: Backend::Auto,
            bucket_bytes: 25 << 20,
            batch_norm: BatchNormSync::Local,
        }
    }

    pub fn world_size(&self) -> u64 {
        self.data * self.pipeline
    }

    /// The fraction of a step a stage waits while the pipeline fills and
    /// drains.
    pub fn bubble(&self) -> f64 {
        let (idle, of) = bubble(self.pipeline, self.micro_batches);
        idle as f64 / of as f64
    }
}

/// The share of every stage's time that is idle, as a fraction
/// `(stages − 1) / (micro_batches + stages − 1)`: with forward and backward
/// taking one slot each, both GPipe and 1F1B run `2 · (micro_batches +
/// stages − 1)` slots per round, of which each stage is busy `2 ·
/// micro_batches`. The one formula behind the plan, `dtl explain`, the
/// bubble warning and the timeline's caption.
pub fn bubble(stages: u64, micro_batches: u64) -> (u64, u64) {
    (
        stages.saturating_sub(1),
        (micro_batches + stages).saturating_sub(1).max(1),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineSchedule {
    /// All forwards, then all backwards: every micro-batch's activations are
    /// alive at once.
    Gpipe,
    /// One forward, one backward after a warm-up: stage s keeps at most
    /// stages − s micro-batches in flight.
    OneFOneB,
}

impl PipelineSchedule {
    /// The name people write it with.
    pub fn name(self) -> &'static str {
        match self {
            PipelineSchedule::Gpipe => "GPipe",
            PipelineSchedule::OneFOneB => "1F1B",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncMode {
    /// Gradients all-reduced every optimizer step.
    EveryStep,
    /// Each replica steps on its own gradients; parameters are averaged
    /// every `period` steps.
    LocalSgd { period: u64 },
    /// Gradients all-reduced in the background; a step may apply an average
    /// up to `staleness` steps old.
    Async { staleness: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// NCCL on GPUs, MPI on CPUs.
    Auto,
    Nccl,
    Mpi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormSync {
    /// Each replica normalises with its own batch statistics.
    Local,
    /// Statistics all-reduced over the replicas (SyncBatchNorm).
    Sync,
}

/// The layers one pipeline stage owns and what it sends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagePlan {
    pub stage: u64,
    /// Its nodes: `first_node..=last_node` of the model's node list.
    pub first_node: usize,
    pub last_node: usize,
    /// Trainable scalars of the stage's layers.
    pub parameters: u64,
    /// Forward FLOPs per sample of the stage's layers.
    pub forward_flops: u64,
    /// Tensors this stage computes that later stages read.
    pub sends: Vec<Transfer>,
}

/// One tensor crossing from a stage to a later one (and its gradient back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The producing node's name (for people: names can repeat, as two
    /// `add`s of one block do).
    pub node: String,
    /// The producing node's index in `model.nodes`: what identifies it.
    pub index: usize,
    pub to_stage: u64,
    pub shape: Shape,
    /// Values per sample (the product of the non-batch dimensions).
    pub values_per_sample: u64,
}

/// Gradients all-reduced together, in the order backward produces them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradBucket {
    pub stage: u64,
    pub parameters: Vec<String>,
    pub bytes: u64,
}

/// One stage's part of a pipelined micro-batch round, in execution order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageProgram {
    pub stage: u64,
    pub ops: Vec<PipeOp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PipeOp {
    RecvActivations { micro_batch: u64, from: u64 },
    Forward { micro_batch: u64 },
    SendActivations { micro_batch: u64, to: u64 },
    RecvGradients { micro_batch: u64, from: u64 },
    Backward { micro_batch: u64 },
    SendGradients { micro_batch: u64, to: u64 },
}

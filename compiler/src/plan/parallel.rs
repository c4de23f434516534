//! The parallel layout of a plan: how many data-parallel replicas and
//! pipeline stages, every rank's coordinates, the rows it reads and the
//! communicator groups it belongs to, which layers each stage owns, which
//! tensors cross between stages, the gradient buckets, and each stage's
//! part of the step (forward, backward, sends and receives, in schedule
//! order). Data only: `lower` computes these, and the runtime reads its
//! layout from here alone (it derives no coordinate itself).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tensor::{local_parameters, tensor_local_shapes, NodeSplit, TensorSplit};
use super::{ModelPlan, Shape};

/// Where the ranks are and what each does. The degrees live in
/// `parallelism` alone; everything else here follows from them, spelt out
/// rank by rank so that the runtime computes none of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub parallelism: Parallelism,
    /// Every process, by rank: its coordinates, its rows, its groups.
    pub ranks: Vec<RankPlan>,
    /// The groups of ranks that talk among themselves, beside the whole
    /// world; only groups of two or more ranks are listed. The groups of
    /// one kind cover every rank once.
    pub communicators: Vec<CommGroup>,
    /// Which layers each pipeline stage owns (one stage: the whole model).
    pub stages: Vec<StagePlan>,
    /// Gradients all-reduced together (empty without data parallelism).
    pub buckets: Vec<GradBucket>,
    /// How the training rows are dealt to the replicas.
    pub sharding: Sharding,
    /// `shard = parameters`: the units whose parameters are gathered
    /// together (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<ShardUnit>,
    /// `tensor = T`: the nodes split over the T ranks of a tensor group,
    /// in node order (every other node computes whole on each of them);
    /// empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensor_splits: Vec<NodeSplit>,
    /// `sequence = true`: the nodes whose outputs each tensor rank holds
    /// 1/T of the sequence of (dimension 1), rank t the t-th part, in node
    /// order; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequence: Vec<usize>,
}

impl Topology {
    /// `shard = parameters`: the units of `stage` ([`units_of`]).
    pub fn stage_units(&self, stage: u64) -> impl Iterator<Item = &ShardUnit> {
        units_of(&self.units, stage)
    }

    /// Ranks the plan is for: data × tensor × pipeline.
    pub fn world_size(&self) -> u64 {
        self.parallelism.world_size()
    }

    /// How `tensor = T` splits node `node` (`None`: computed whole).
    pub fn tensor_split(&self, node: usize) -> Option<TensorSplit> {
        self.tensor_splits
            .iter()
            .find(|s| s.node == node)
            .map(|s| s.split)
    }

    /// The shape one tensor rank holds of each parameter split over the
    /// tensor group ([`tensor_local_shapes`]).
    pub fn tensor_local_shapes(&self, model: &ModelPlan) -> BTreeMap<String, Vec<i64>> {
        tensor_local_shapes(model, &self.tensor_splits, self.parallelism.tensor)
    }

    /// Values of parameters one rank of `stage` holds ([`local_parameters`]).
    pub fn local_parameters(&self, model: &ModelPlan, stage: &StagePlan) -> u64 {
        local_parameters(model, (&self.tensor_splits, self.parallelism.tensor), stage)
    }

    /// The stage that owns each node of the model, by node index.
    pub fn stage_of_nodes(&self) -> Vec<u64> {
        self.stages
            .iter()
            .flat_map(|s| (s.first_node..=s.last_node).map(move |_| s.stage))
            .collect()
    }

    /// The group of `kind` that `rank` belongs to, and its place in it;
    /// `None` when the plan has no group of that kind (each rank is alone).
    pub fn group_of(&self, rank: u64, kind: GroupKind) -> Option<(usize, &CommGroup, usize)> {
        let me = self.ranks.get(rank as usize)?;
        me.communicators.iter().find_map(|&index| {
            let group = self.communicators.get(index as usize)?;
            let place = group.ranks.iter().position(|&r| r == rank)?;
            (group.kind == kind).then_some((index as usize, group, place))
        })
    }

    /// The rank at these coordinates (tensor rank 0).
    pub fn rank_at(&self, replica: u64, stage: u64) -> Option<&RankPlan> {
        self.ranks
            .iter()
            .find(|r| r.replica == replica && r.stage == stage && r.tensor == 0)
    }
}

/// One process of the run. Rank r = stage × D + replica today: the D
/// ranks of a stage are consecutive. `tensor`, `shard` and `sync_group`
/// have their place in the contract before tensor parallelism, sharded
/// data parallelism and groups of replicas fill them in; they are 0 until
/// then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankPlan {
    pub rank: u64,
    /// Its data-parallel replica, 0 … D − 1.
    pub replica: u64,
    /// Its pipeline stage, 0 … P − 1.
    pub stage: u64,
    /// Its tensor-parallel rank within its tensor group (0: no tensor
    /// parallelism).
    pub tensor: u64,
    /// Its place among the replicas that shard the training state (0:
    /// every replica holds the whole state).
    pub shard: u64,
    /// The group of replicas it trains in sync with (0: one group).
    pub sync_group: u64,
    /// The rows of every global micro-batch it reads.
    pub rows: RowSlice,
    /// The communicator groups it belongs to: indices into
    /// `topology.communicators`, one per kind.
    pub communicators: Vec<u64>,
}

/// Rows `first .. first + count` of every global micro-batch of
/// `sharding.global_micro_batch` rows (in the epoch's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowSlice {
    pub first: u64,
    pub count: u64,
}

/// Ranks that run collectives or transfers among themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommGroup {
    pub kind: GroupKind,
    /// Its ranks, in the order of their place in the group (a rank's index
    /// here is its rank in the group's communicator).
    pub ranks: Vec<u64>,
}

/// What a group of ranks does together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// The replicas of one stage: they average gradients (or parameters)
    /// and agree on the loss; in replica order.
    Replicas,
    /// The stages of one replica: activations and gradients between them,
    /// the gradient norm over them; in stage order.
    Pipeline,
    /// Under `shard_group`: the replicas of a stage that split one copy of
    /// the sharded state (all-gather, reduce-scatter); in replica order.
    Shard,
    /// Under `shard_group`: the replicas of a stage that hold the same
    /// slice in different copies (their gradient slices are summed).
    Replicate,
    /// Under `tensor = T`: the T ranks of one replica's stage that split
    /// its layers (all-reduces of activations and their gradients); in
    /// tensor rank order.
    Tensor,
    /// Under `groups` with more than one replica a group: the replicas of
    /// one sync group of a stage, which average their gradients every
    /// step; in replica order.
    Group,
    /// Under `groups`: the replicas at the same place in every sync group
    /// of a stage, which meet across the groups (DiLoCo's outer step, local
    /// SGD's average); in group order.
    Across,
}

impl GroupKind {
    /// Every kind, in the order every rank creates its communicators.
    pub const ALL: [GroupKind; 7] = [
        GroupKind::Replicas,
        GroupKind::Pipeline,
        GroupKind::Shard,
        GroupKind::Replicate,
        GroupKind::Tensor,
        GroupKind::Group,
        GroupKind::Across,
    ];
}

/// The replicas read disjoint rows of every global micro-batch: each
/// epoch's (shuffled) order is cut into global micro-batches of
/// `global_micro_batch` rows (data × micro_batch), and each rank reads its
/// `rows` slice of each. So `data` replicas with `micro_batch` m see
/// exactly the rows of one process with `micro_batch` data·m, step for step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sharding {
    /// Rows of one global micro-batch: data × micro_batch.
    pub global_micro_batch: u64,
    /// Rows each replica reads per epoch (0 if the data was not read).
    pub rows_per_replica: u64,
}

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
    /// Which training state the replicas of a stage split among
    /// themselves; absent from the plan when none is.
    #[serde(default, skip_serializing_if = "Shard::is_none")]
    pub shard: Shard,
    /// `shard_group`: the replicas of a stage shard within groups of this
    /// many consecutive replicas, and each group holds the whole state
    /// (hybrid sharding); absent (0): one group of all the stage's replicas.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shard_group: u64,
    /// `shard = parameters`: a unit's gathered parameters are freed after
    /// its forward and gathered again for its backward (true, the
    /// default); false keeps them from forward to backward.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub reshard_after_forward: bool,
    /// Tensor-parallel ranks of every replica's every stage, adjacent in
    /// rank order; absent (1) without tensor parallelism.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub tensor: u64,
    /// `groups`: the replicas are cut into this many sync groups of
    /// consecutive replicas, which average gradients inside every step and
    /// meet by `sync` across; absent (0): each replica is its own group.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub groups: u64,
    /// `sequence = true`: Megatron-LM's sequence parallelism over each
    /// tensor group ([`Topology::sequence`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub sequence: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
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
            shard: Shard::None,
            shard_group: 0,
            reshard_after_forward: true,
            tensor: 1,
            groups: 0,
            sequence: false,
        }
    }

    /// The sync groups the replicas are cut into (`groups`, or one per
    /// replica).
    pub fn sync_groups(&self) -> u64 {
        match self.groups {
            0 => self.data,
            g => g,
        }
    }

    /// The replicas of one sync group.
    pub fn group_size(&self) -> u64 {
        self.data / self.sync_groups().max(1)
    }

    pub fn world_size(&self) -> u64 {
        self.data * self.tensor * self.pipeline
    }

    /// The replicas that split one copy of the sharded state among
    /// themselves: `shard_group`, a sync group's under local SGD or DiLoCo
    /// in `groups`, or all of a stage's (1 unsharded).
    pub fn shard_degree(&self) -> u64 {
        match (self.shard, self.shard_group) {
            (Shard::None, _) => 1,
            _ if self.sharded_in_groups() => self.group_size(),
            (_, 0) => self.data,
            (_, k) => k.min(self.data),
        }
    }

    /// Sharded within each sync group (`groups` under local SGD or
    /// DiLoCo): the slices' copies in the other groups are never summed,
    /// the groups meet by `sync`.
    pub fn sharded_in_groups(&self) -> bool {
        self.shard != Shard::None && self.groups > 0 && self.sync.meets_every().is_some()
    }

    /// Under hybrid sharding, the groups that each hold a whole copy of
    /// the sharded state (1 otherwise).
    pub fn shard_copies(&self) -> u64 {
        self.data / self.shard_degree().max(1)
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

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncMode {
    /// Gradients all-reduced every optimizer step.
    EveryStep,
    /// Each sync group steps on its own gradients (averaged inside the
    /// group every step); parameters are averaged over the groups every
    /// `period` steps.
    LocalSgd { period: u64 },
    /// DiLoCo (Douillard et al. 2023): each sync group trains `period`
    /// inner steps on its own; then the mean change of the groups is the
    /// gradient of an outer SGD step (Nesterov momentum `outer_momentum`,
    /// plain SGD at 0) on a global copy of the parameters, which every
    /// group continues from. Streaming DiLoCo (Douillard et al. 2025):
    /// the parameters cut into `fragments` that meet at staggered steps,
    /// each meeting's all-reduce overlapping `delay` inner steps, carried
    /// in `outer_precision`.
    Diloco {
        period: u64,
        outer_lr: f64,
        outer_momentum: f64,
        fragments: u64,
        delay: u64,
        outer_precision: OuterPrecision,
    },
    /// Gradients all-reduced in the background; a step may apply an average
    /// up to `staleness` steps old.
    Async { staleness: u64 },
}

/// What DiLoCo's outer all-reduce carries: the groups' changes in float32,
/// or rounded to bfloat16 (half the bytes; the sums rounded to bfloat16 as
/// they are added, the mean taken in float32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OuterPrecision {
    Fp32,
    Bf16,
}

impl OuterPrecision {
    /// Bytes per value on the wire.
    pub fn bytes(self) -> u64 {
        match self {
            OuterPrecision::Fp32 => 4,
            OuterPrecision::Bf16 => 2,
        }
    }
}

impl SyncMode {
    /// Under local SGD and DiLoCo, the steps between the sync groups'
    /// meetings (each group trains on its own in between); `None` where
    /// every replica applies the same averaged gradients.
    pub fn meets_every(self) -> Option<u64> {
        match self {
            SyncMode::LocalSgd { period } | SyncMode::Diloco { period, .. } => Some(period),
            SyncMode::EveryStep | SyncMode::Async { .. } => None,
        }
    }
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

/// `shard`: the training state the replicas of a stage split among
/// themselves, as ZeRO's stages do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shard {
    /// Every replica holds everything (DDP).
    #[default]
    None,
    /// ZeRO-1: every gradient bucket is cut into one equal slice per
    /// replica; a replica keeps the optimizer state of its slice only and
    /// updates only those values, then the replicas all-gather the
    /// updated parameters.
    Optimizer,
    /// ZeRO-2: the gradients too. Each bucket's gradients are
    /// reduce-scattered: a replica receives the sum of its slice only,
    /// keeps it for clipping and its update, and lets the whole gradients
    /// go until the next backward; then the parameters are all-gathered.
    Gradients,
    /// ZeRO-3 (FSDP's full sharding): the parameters too. Each unit's
    /// parameters are laid out flat, padded to equal slices, and a replica
    /// holds its slice only; a unit is all-gathered before its forward and
    /// its backward, and its gradients reduce-scattered after its backward.
    Parameters,
}

impl Shard {
    pub fn is_none(&self) -> bool {
        *self == Shard::None
    }

    /// As written in a `.dtl` file (`shard = optimizer`).
    pub fn name(self) -> &'static str {
        match self {
            Shard::None => "none",
            Shard::Optimizer => "optimizer",
            Shard::Gradients => "gradients",
            Shard::Parameters => "parameters",
        }
    }
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

/// A fragment of streaming DiLoCo: `parameters` consecutive parameters of
/// the model's list from `first_parameter`, which meet across the groups
/// after steps `after_step`, `after_step` + period, … (and after the last
/// step); `bytes_per_rank` what a rank sends in one of its all-reduces
/// (the stage holding the most of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuterFragment {
    pub first_parameter: String,
    pub parameters: u64,
    pub values: u64,
    pub after_step: u64,
    pub bytes_per_rank: u64,
}

/// Gradients all-reduced together, in the order backward produces them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradBucket {
    pub stage: u64,
    pub parameters: Vec<String>,
    pub bytes: u64,
}

/// `shard = parameters`: parameters gathered together. A unit is a block
/// (a module instance, a copy of a `repeat`) or the nodes between two
/// blocks, within one pipeline stage; a stage's `root` holds the
/// parameters nodes of several of its units read (tied weights), gathered
/// from the first forward to the end of backward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardUnit {
    pub name: String,
    /// The pipeline stage whose nodes it spans (0 without a pipeline).
    pub stage: u64,
    /// Its nodes: `first_node..=last_node` (all of its stage's for `root`).
    pub first_node: usize,
    pub last_node: usize,
    /// Its trainable parameters, laid end to end in one flat buffer.
    pub parameters: Vec<UnitParameter>,
    /// Values of one replica's slice: the unit's values divided by the
    /// shard degree, rounded up (the last slice padded).
    pub slice: u64,
}

impl ShardUnit {
    /// Whether the unit spans every node of its stage (the root, or a
    /// stage without blocks): gathered once, before the first forward,
    /// and freed after the whole backward.
    pub fn held(&self, stages: &[StagePlan]) -> bool {
        stages
            .iter()
            .find(|s| s.stage == self.stage)
            .is_some_and(|s| self.first_node == s.first_node && self.last_node == s.last_node)
    }

    /// Values of its parameters.
    pub fn values(&self) -> u64 {
        self.parameters.iter().map(|p| p.values).sum()
    }

    /// Bytes one rank sends for it per micro-batch (per piece, in a
    /// pipeline) over `k` replicas, as rings: its all-gathers (again
    /// before its backward when `reshard` frees it after its forward,
    /// unless it spans its stage) and its reduce-scatter.
    pub fn sends(&self, stages: &[StagePlan], k: u64, reshard: bool) -> (u64, u64) {
        let ring = self.slice * (k - 1) * 4;
        let gathers = if reshard && !self.held(stages) { 2 } else { 1 };
        (gathers * ring, ring)
    }
}

/// The units of pipeline stage `stage` among `units`.
pub fn units_of(units: &[ShardUnit], stage: u64) -> impl Iterator<Item = &ShardUnit> {
    units.iter().filter(move |u| u.stage == stage)
}

/// Where a parameter lies in its unit's flat buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitParameter {
    pub name: String,
    pub offset: u64,
    pub values: u64,
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

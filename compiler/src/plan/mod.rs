//! The execution plan: the contract between the compiler and the runtime.
//!
//! Plain serde data, versioned and deterministic (only `Vec`s and structs, no
//! hash maps), so the same input always gives the same bytes. The runtime
//! reads nothing but this: the layers with their parameter names and shapes,
//! the data source, the training settings and the ordered step program.
//!
//! Data only: this module imports no other phase. `lower` computes a plan;
//! `explain`, `graph` and the runtime read one. `docs/plan.md` documents
//! every field.

pub mod parallel;
mod pieces;
pub mod tensor;
mod tracking;
mod types;

pub use parallel::{
    units_of, Backend, BatchNormSync, CommGroup, GradBucket, GroupKind, OuterFragment,
    OuterPrecision, Parallelism, PipeOp, PipelineSchedule, RankPlan, RowSlice, Shard, ShardUnit,
    Sharding, StagePlan, StageProgram, SyncMode, Topology, Transfer, UnitParameter,
};
pub use pieces::Piece;
pub use tensor::{
    local_kv_heads, local_parameters, sequence_params, split_values, stage_split_params,
    sums_output, tensor_local_shapes, tensor_sharded, NodeSplit, TensorSplit,
};
pub use tracking::{EarlyStop, F1Average, Metric, Monitor, Tracking};
pub use types::*;

/// Bumped whenever a change to the plan would be misread by an older runtime.
/// 3: the degrees live in `topology.parallelism` alone; buckets in reverse
/// parameter order; replicas read contiguous parts of each global
/// micro-batch. 4: `data.features`, the `tokens` source, attention's
/// `kv_heads`/`rope_theta`/optional biases, `mul`, `select`, `mean`,
/// `class_token`; `data.classes` is the model's class count. 5: every
/// rank's coordinates (`replica`, `stage`, and `tensor`, `shard`,
/// `sync_group` for the layouts to come), the rows it reads and its
/// communicator groups (`topology.communicators`), so that the runtime
/// derives no layout; `sharding.global_micro_batch`. 6: grouped, dilated
/// and transposed convolutions, `upsample`, `group_norm`, `instance_norm`,
/// the `nll`, `binary_cross_entropy`, `huber` and `smooth_l1` losses, `lion`
/// and `adafactor`, `one_cycle` and `constant_with_warmup`; `train.tracking`;
/// fp16's `unscale_gradients`; the `jsonl` source, `data.valid_source` and
/// `data.test_source`; `train.init_skip`; a parameter's `frozen`;
/// `train.groups`.
pub const PLAN_VERSION: u32 = 6;

impl Plan {
    /// The plan with its file paths (the data source's, `train.init`) made
    /// absolute against the current folder: what a run folder keeps, so
    /// that a resume started from another folder reads the same files.
    pub fn with_absolute_paths(&self) -> Plan {
        let absolute = |path: &mut String| {
            if let Ok(full) = std::path::absolute(&*path) {
                *path = full.display().to_string();
            }
        };
        let mut plan = self.clone();
        for source in plan.data.sources_mut() {
            source.files_mut().into_iter().for_each(absolute);
        }
        for file in &mut plan.data.files {
            absolute(&mut file.path);
        }
        if let Some(init) = &mut plan.train.init {
            absolute(init);
        }
        plan
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a plan is always serializable")
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a plan is always serializable");
        text.push('\n');
        text
    }

    /// Reads a plan written as YAML or JSON (JSON is YAML). Unknown fields and
    /// other versions are errors.
    pub fn from_text(text: &str) -> Result<Plan, String> {
        let plan: Plan = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if plan.version != PLAN_VERSION {
            return Err(format!(
                "plan version {} is not supported (this dtl reads version {PLAN_VERSION})",
                plan.version
            ));
        }
        Ok(plan)
    }
}

//! The `parallel` block: degrees, pipeline schedule, synchronisation,
//! backend, and the combinations that make no sense whatever the world
//! size. The arithmetic that ties the degrees to a world size and the batch
//! is `lower`'s, run by `dtl check` for every world size given with
//! `--world`.

use super::lint::Lint;
use super::settings::Settings;
use super::train::TrainSpec;
use super::CheckError;
use crate::ast::{ExprKind, SettingsBlock};
use crate::plan::parallel::bubble;
use crate::plan::{
    Backend, BatchNormSync, Clip, ModelPlan, Op, PipelineSchedule, Precision, Shard, SyncMode,
};
use crate::span::Span;
use sharding::sharding;

mod sharding;

/// The settings a `parallel` block accepts.
pub const KEYS: [&str; 17] = [
    "split",
    "data",
    "tensor",
    "pipeline",
    "schedule",
    "micro_batches",
    "sync",
    "backend",
    "bucket_mb",
    "batch_norm",
    "shard",
    "shard_group",
    "reshard_after_forward",
    "unit_mb",
    "tensor_split",
    "groups",
    "sequence",
];

/// `shard` as written: ZeRO's three stages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShardMode {
    None,
    Optimizer,
    Gradients,
    Parameters,
}

/// The most ranks a plan is made for.
pub const MAX_RANKS: i64 = 1 << 20;

/// The data-parallel degree: fixed, or whatever the world size leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degree {
    Fixed(u64),
    /// `data = auto`: world size / pipeline stages.
    Auto,
}

/// The `parallel` block as written, its settings typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelSpec {
    pub data: Degree,
    /// `tensor = T`: tensor-parallel ranks per replica's stage.
    pub tensor: u64,
    pub pipeline: u64,
    pub micro_batches: u64,
    pub sync: SyncMode,
    pub schedule: PipelineSchedule,
    pub backend: Backend,
    pub bucket_mb: u64,
    pub batch_norm: BatchNormSync,
    pub shard: ShardMode,
    /// `shard_group = k`: shard within groups of k replicas.
    pub shard_group: Option<u64>,
    /// `reshard_after_forward = true | false`, when written.
    pub reshard_after_forward: Option<bool>,
    /// `unit_mb = N`, when written.
    pub unit_mb: Option<u64>,
    /// `split = ["blocks.1", "head"]`: where stages 2, 3, … begin; `None`
    /// balances the stages by FLOPs.
    pub split: Option<Vec<(String, Span)>>,
    /// `tensor_split = [column("…"), …]`: the user's split of some layers.
    pub tensor_split: Vec<super::tensor::SplitOverride>,
    /// `groups = G`, when written: sync groups of the replicas.
    pub groups: Option<u64>,
    /// `sequence = true`: Megatron's sequence parallelism under `tensor`.
    pub sequence: bool,
    pub span: Span,
}

/// The parallel block checked against the model and the training settings:
/// everything about the layout that holds whatever the world size. The
/// world size resolves `data = auto` when the plan is lowered.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelLayout {
    pub data: Degree,
    /// `tensor = T`, and the nodes it splits (none when T = 1).
    pub tensor: u64,
    pub tensor_splits: Vec<crate::plan::NodeSplit>,
    /// `sequence = true`: the nodes whose outputs each tensor rank holds
    /// a part of the sequence of (empty otherwise).
    pub sequence: Vec<usize>,
    pub pipeline: u64,
    pub micro_batches: u64,
    pub schedule: PipelineSchedule,
    pub sync: SyncMode,
    pub backend: Backend,
    pub bucket_bytes: u64,
    pub batch_norm: BatchNormSync,
    pub shard: Shard,
    /// `shard_group`, or 0: one group of all the stage's replicas.
    pub shard_group: u64,
    /// `groups`, or 0: each replica is its own sync group.
    pub groups: u64,
    /// `shard = parameters`: free a unit after its forward (the default).
    pub reshard_after_forward: bool,
    /// `shard = parameters`: consecutive blocks of a stage are merged into
    /// one unit until it holds at least this many bytes of weights; 0:
    /// each block is a unit (the default).
    pub unit_bytes: u64,
    /// Each stage's first node, when `split` names them (stage 0 starts at
    /// node 0); `None`: balanced by FLOPs when lowered.
    pub split: Option<Vec<usize>>,
    pub spans: ParallelSpans,
}

/// Where the settings that lowering checks were written (the block's
/// keyword where a setting is absent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParallelSpans {
    pub block: Span,
    pub data: Span,
    pub tensor: Span,
    pub pipeline: Span,
    pub split: Span,
    pub shard_group: Span,
    pub groups: Span,
}

impl ParallelLayout {
    /// No `parallel` block: one process.
    pub fn single(at: Span) -> Self {
        ParallelLayout {
            data: Degree::Fixed(1),
            tensor: 1,
            tensor_splits: Vec::new(),
            sequence: Vec::new(),
            pipeline: 1,
            micro_batches: 1,
            schedule: PipelineSchedule::OneFOneB,
            sync: SyncMode::EveryStep,
            backend: Backend::Auto,
            bucket_bytes: 25 << 20,
            batch_norm: BatchNormSync::Local,
            shard: Shard::None,
            shard_group: 0,
            groups: 0,
            reshard_after_forward: true,
            unit_bytes: 0,
            split: None,
            spans: ParallelSpans {
                block: at,
                data: at,
                tensor: at,
                pipeline: at,
                split: at,
                shard_group: at,
                groups: at,
            },
        }
    }
}

/// Reads the block's settings; `None` if any is wrong (reported).
pub fn resolve(block: &SettingsBlock, errors: &mut Vec<CheckError>) -> Option<ParallelSpec> {
    let s = Settings::new("parallel", block.keyword, &block.settings, &KEYS, errors);
    let before = errors.len();
    let data = match s.get("data").map(|x| &x.value.kind) {
        Some(ExprKind::Name(n)) if n.name == "auto" => Some(Degree::Auto),
        _ => s
            .int("data", 1..=MAX_RANKS, Some(1), errors)
            .map(|n| Degree::Fixed(n as u64)),
    };
    let tensor = s.int("tensor", 1..=1 << 16, Some(1), errors);
    let pipeline = s.int("pipeline", 1..=1 << 16, Some(1), errors);
    let micro_batches = s.int(
        "micro_batches",
        1..=1 << 20,
        Some(pipeline.unwrap_or(1)),
        errors,
    );
    let schedule = s.choice_or("schedule", PipelineSchedule::OneFOneB, errors);
    let backend = s.choice_or("backend", Backend::Auto, errors);
    let batch_norm = s.choice_or("batch_norm", BatchNormSync::Local, errors);
    let bucket_mb = s.int("bucket_mb", 1..=1 << 20, Some(25), errors);
    let shard = s.choice_or("shard", ShardMode::None, errors);
    let shard_group = match s.get("shard_group") {
        Some(_) => s
            .int("shard_group", 2..=MAX_RANKS, None, errors)
            .map(|k| Some(k as u64)),
        None => Some(None),
    };
    let reshard_after_forward = match s.get("reshard_after_forward") {
        Some(_) => s.bool("reshard_after_forward", true, errors).map(Some),
        None => Some(None),
    };
    let unit_mb = match s.get("unit_mb") {
        Some(_) => s
            .int("unit_mb", 1..=1 << 20, None, errors)
            .map(|n| Some(n as u64)),
        None => Some(None),
    };
    let split = split_setting(&s, errors);
    let groups = match s.get("groups") {
        Some(_) => s
            .int("groups", 1..=MAX_RANKS, None, errors)
            .map(|g| Some(g as u64)),
        None => Some(None),
    };
    let sequence = s.bool("sequence", false, errors);
    let tensor_split = match s.get("tensor_split") {
        Some(setting) => super::tensor::parse_overrides(setting, errors),
        None => Some(Vec::new()),
    };
    let sync = match s.get("sync") {
        None => Some(SyncMode::EveryStep),
        Some(setting) => super::sync::sync_setting(setting, errors),
    };
    if errors.len() > before {
        return None;
    }
    Some(ParallelSpec {
        data: data?,
        tensor: tensor? as u64,
        pipeline: pipeline? as u64,
        micro_batches: micro_batches? as u64,
        sync: sync?,
        schedule: schedule?,
        backend: backend?,
        bucket_mb: bucket_mb? as u64,
        batch_norm: batch_norm?,
        shard: shard?,
        shard_group: shard_group?,
        reshard_after_forward: reshard_after_forward?,
        unit_mb: unit_mb?,
        split: split?,
        tensor_split: tensor_split?,
        groups: groups?,
        sequence: sequence?,
        span: block.keyword,
    })
}

/// `split = auto` or `split = ["blocks.1", "head"]`.
fn split_setting(
    s: &Settings<'_>,
    errors: &mut Vec<CheckError>,
) -> Option<Option<Vec<(String, Span)>>> {
    let Some(setting) = s.get("split") else {
        return Some(None);
    };
    match &setting.value.kind {
        ExprKind::Name(n) if n.name == "auto" => Some(None),
        ExprKind::List(items) => {
            let names: Option<Vec<(String, Span)>> = items
                .iter()
                .map(|item| match &item.kind {
                    ExprKind::Str(name) => Some((name.clone(), item.span)),
                    _ => None,
                })
                .collect();
            if names.is_none() {
                errors.push(super::settings::type_error(
                    &setting.value,
                    "a list of layer names, e.g. `[\"blocks.1\", \"head\"]`",
                    "split",
                ));
            }
            names.map(Some)
        }
        _ => {
            errors.push(super::settings::type_error(
                &setting.value,
                "`auto` or a list of layer names where stages begin",
                "split",
            ));
            None
        }
    }
}

/// Checks the configuration against the model and the training settings,
/// whatever the world size; the world-size arithmetic is `lower`'s.
pub fn check(
    spec: &ParallelSpec,
    block: &SettingsBlock,
    (model, sources): (&ModelPlan, (&[Span], &[String])),
    train: &TrainSpec,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
) -> Option<ParallelLayout> {
    let s = Settings::quiet(&block.settings);
    let at = |key: &str| s.get(key).map_or(block.keyword, |x| x.span);
    let stages = spec.pipeline;
    conflicting_choices(spec, model, train, &s, &at, errors);
    sharding(spec, train, &at, errors, lints);
    // Not where the stages split the model (each stage's unit is then
    // its part) or nothing is split.
    let one_unit = spec.shard == ShardMode::Parameters && model.blocks.is_empty();
    if one_unit && spec.data != Degree::Fixed(1) && spec.pipeline == 1 {
        lints.push(Lint::ShardOneUnit { span: at("shard") });
    }
    pipeline_arithmetic(spec, model, train, &s, &at, errors, lints);
    let split = match &spec.split {
        None => None,
        Some(names) => Some(named_split(names, stages, model, &s, block, errors)?),
    };
    let tensor_splits = match spec.tensor {
        1 => Vec::new(),
        t => {
            super::tensor::not_done(spec.shard, at("tensor"), errors);
            let vocab_loss = matches!(train.loss, crate::plan::Loss::CrossEntropy { .. });
            let at = (at("tensor"), spec.tensor_split.as_slice());
            super::tensor::splits(model, sources, (t, vocab_loss), at, (errors, lints))?
        }
    };
    if spec.sequence {
        super::tensor::sequence::needs_tensor(spec, at("sequence"), errors);
    }
    let sequence = match spec.sequence && spec.tensor > 1 {
        false => Vec::new(),
        true => {
            let split = (tensor_splits.as_slice(), spec.tensor);
            super::tensor::sequence::nodes(model, sources, split, at("sequence"), errors)?
        }
    };
    Some(ParallelLayout {
        data: spec.data,
        tensor: spec.tensor,
        tensor_splits,
        sequence,
        pipeline: stages,
        // One stage runs each micro-batch in one piece.
        micro_batches: if stages > 1 { spec.micro_batches } else { 1 },
        schedule: spec.schedule,
        sync: spec.sync,
        backend: spec.backend,
        bucket_bytes: spec.bucket_mb << 20,
        batch_norm: spec.batch_norm,
        shard: match spec.shard {
            ShardMode::Optimizer => Shard::Optimizer,
            ShardMode::Gradients => Shard::Gradients,
            ShardMode::Parameters => Shard::Parameters,
            ShardMode::None => Shard::None,
        },
        shard_group: spec.shard_group.unwrap_or(0),
        groups: spec.groups.unwrap_or(0),
        reshard_after_forward: spec.reshard_after_forward.unwrap_or(true),
        unit_bytes: spec.unit_mb.unwrap_or(0) << 20,
        split,
        spans: ParallelSpans {
            block: block.keyword,
            data: at("data"),
            tensor: s.get("tensor").map_or(block.keyword, |x| x.value.span),
            pipeline: at("pipeline"),
            split: s.get("split").map_or(block.keyword, |x| x.value.span),
            shard_group: s.get("shard_group").map_or(block.keyword, |x| x.value.span),
            groups: s.get("groups").map_or(block.keyword, |x| x.value.span),
        },
    })
}

/// `groups`: they must cut the replicas evenly, and meet by local SGD
/// or DiLoCo.
fn sync_groups(spec: &ParallelSpec, at: &dyn Fn(&str) -> Span, errors: &mut Vec<CheckError>) {
    if let (Some(g), Degree::Fixed(d)) = (spec.groups, spec.data) {
        if g > d || !d.is_multiple_of(g) {
            errors.push(CheckError::InvalidValue {
                message: format!("`groups = {g}` must cut the {d} replicas into equal groups"),
                span: at("groups"),
                label: "groups of consecutive replicas".into(),
                help: Some(format!("choose a `groups` that divides `data = {d}`")),
            });
        }
    }
    if spec.groups.is_some() && matches!(spec.sync, SyncMode::EveryStep | SyncMode::Async { .. }) {
        errors.push(CheckError::Unsupported {
            message: "groups meet through `sync`: every_step makes them one group, and asynchronous updates across groups are not done yet".into(),
            span: at("groups"),
            help: Some("use `sync = diloco(period: …)` or `sync = local_sgd(period: …)` across the groups, or drop `groups`".into()),
        });
    }
}

/// Combinations of choices that make no sense, whatever the world size.
fn conflicting_choices(
    spec: &ParallelSpec,
    model: &ModelPlan,
    train: &TrainSpec,
    s: &Settings<'_>,
    at: &dyn Fn(&str) -> Span,
    errors: &mut Vec<CheckError>,
) {
    let stages = spec.pipeline;
    // Local SGD and DiLoCo meet stage by stage (each stage's replicas
    // across the groups); a late update would need every stage's to be
    // of the same step, which nothing orders yet.
    if stages > 1 && matches!(spec.sync, SyncMode::Async { .. }) {
        errors.push(CheckError::Unsupported {
            message: "asynchronous updates with a pipeline are not done yet".into(),
            span: at("sync"),
            help: Some(
                "use `sync = every_step`, `local_sgd(…)` or `diloco(…)` with a pipeline".into(),
            ),
        });
    }
    if matches!(spec.sync, SyncMode::Async { .. }) && matches!(train.clip, Some(Clip::Norm { .. }))
    {
        errors.push(CheckError::Unsupported {
            message: "global-norm clipping needs all gradients of a step; asynchronous updates never have them".into(),
            span: at("sync"),
            help: Some("clip each update by value (`clip = value(...)`) or synchronise every step".into()),
        });
    }
    if matches!(spec.sync, SyncMode::Async { .. }) && train.precision == Precision::Fp16 {
        errors.push(CheckError::Unsupported {
            message: "fp16's loss scale changes from step to step; an asynchronous update applies gradients scaled by an older one".into(),
            span: at("sync"),
            help: Some("use `precision = bf16`, or synchronise every step or with local SGD".into()),
        });
    }
    sync_groups(spec, at, errors);
    if let SyncMode::Diloco { fragments, .. } = spec.sync {
        let trained = model.parameters.iter().filter(|p| !p.frozen).count() as u64;
        if fragments > trained {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "{fragments} fragments, but the model has {trained} trained parameter tensor(s) to cut into them"
                ),
                span: at("sync"),
                label: "each fragment is a run of whole parameters".into(),
                help: Some(format!("use at most {trained} fragments")),
            });
        }
    }
    // A checkpoint saves rank 0's replica: between two averages the others
    // hold their own, which a resumed run would lose.
    if let (SyncMode::LocalSgd { period }, true) = (spec.sync, train.checkpoint_every > 0) {
        if !train.checkpoint_every.is_multiple_of(period) {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "checkpoint_every = {} falls between local SGD's averages (every {period} steps): a checkpoint there would keep one replica of several",
                    train.checkpoint_every
                ),
                span: at("sync"),
                label: "averages every period steps".into(),
                help: Some(format!("make checkpoint_every a multiple of {period}")),
            });
        }
    }
    let uses_data_parallel = spec.data != Degree::Fixed(1);
    if stages > 1 && uses_data_parallel && spec.batch_norm == BatchNormSync::Sync {
        errors.push(CheckError::Unsupported {
            message: "synchronised batch norm across replicas of pipeline stages is not supported"
                .into(),
            span: at("batch_norm"),
            help: Some("use `batch_norm = local` with a pipeline, or `pipeline = 1`".into()),
        });
    }
    let has_batch_norm = model
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::BatchNorm { .. }));
    if uses_data_parallel && has_batch_norm && s.get("batch_norm").is_none() {
        errors.push(CheckError::MissingSetting {
            block: "parallel".into(),
            key: "batch_norm",
            span: at("data"),
            help: Some("the model has batch_norm: choose `batch_norm = sync` (statistics over all replicas) or `batch_norm = local` (per replica)".into()),
        });
    }
}

/// A pipeline needs a layer per stage and micro-batches that split the
/// micro-batch; without one, the pipeline's settings do nothing.
fn pipeline_arithmetic(
    spec: &ParallelSpec,
    model: &ModelPlan,
    train: &TrainSpec,
    s: &Settings<'_>,
    at: &dyn Fn(&str) -> Span,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
) {
    let stages = spec.pipeline;
    if stages > 1 {
        let layers = model
            .nodes
            .iter()
            .filter(|n| !matches!(n.op, Op::Input))
            .count() as u64;
        if layers < stages {
            errors.push(CheckError::invalid(
                format!("{stages} pipeline stages need at least {stages} layers; the model has {layers}"),
                at("pipeline"),
                "too many stages",
            ));
        }
        if !train.micro_batch.is_multiple_of(spec.micro_batches) {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "micro_batch {} does not split into {} pipeline micro-batches",
                    train.micro_batch, spec.micro_batches
                ),
                span: at("micro_batches"),
                label: "does not divide micro_batch".into(),
                help: Some(format!("choose a divisor of {}", train.micro_batch)),
            });
        }
        let batch_norm = model
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::BatchNorm { .. }));
        if batch_norm && spec.micro_batches > 1 {
            lints.push(Lint::PipelineBatchNorm {
                piece: train.micro_batch / spec.micro_batches,
                micro_batch: train.micro_batch,
                micro_batches: spec.micro_batches,
                span: at("micro_batches"),
            });
        }
        if spec.micro_batches < stages {
            let (idle, of) = bubble(stages, spec.micro_batches);
            lints.push(Lint::PipelineBubble {
                micro_batches: spec.micro_batches,
                stages,
                bubble: format!("{:.0}%", idle as f64 / of as f64 * 100.0),
                span: at("micro_batches"),
            });
        }
    }
    if stages == 1 {
        for key in ["micro_batches", "schedule"] {
            if s.get(key).is_some() {
                lints.push(Lint::NoPipeline { key, span: at(key) });
            }
        }
    }
}

/// Where each pipeline stage begins, from the layers `split` names. Every
/// stage must own at least one layer.
fn named_split(
    names: &[(String, Span)],
    stages: u64,
    model: &ModelPlan,
    s: &Settings<'_>,
    block: &SettingsBlock,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<usize>> {
    let stages = stages as usize;
    let span = s.get("split").map_or(block.keyword, |x| x.value.span);
    if names.len() + 1 != stages {
        errors.push(CheckError::invalid(
            format!(
                "{stages} pipeline stages need {} split points, got {}",
                stages - 1,
                names.len()
            ),
            span,
            "wrong number of split points",
        ));
        return None;
    }
    let mut starts = vec![0usize];
    for (name, name_span) in names {
        let prefix = format!("{name}.");
        let found = model
            .nodes
            .iter()
            .position(|n| n.name == *name || n.name.starts_with(&prefix));
        let Some(at) = found else {
            let layers: Vec<&str> = model
                .nodes
                .iter()
                .skip(1)
                .map(|n| n.name.split('.').next().unwrap_or(&n.name))
                .collect();
            errors.push(CheckError::UnknownName {
                kind: "layer",
                name: name.clone(),
                span: *name_span,
                help: crate::util::suggest::did_you_mean(name, layers.iter().copied())
                    .or_else(|| Some(format!("the model's layers are {}", layers.join(", ")))),
            });
            return None;
        };
        if at <= *starts.last().expect("stage 0") {
            errors.push(CheckError::invalid(
                format!("stage {} would be empty: `{name}` does not come after the previous split point", starts.len()),
                *name_span,
                "out of order",
            ));
            return None;
        }
        starts.push(at);
    }
    Some(starts)
}

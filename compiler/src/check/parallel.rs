//! The `parallel` block: degrees, pipeline schedule, synchronisation,
//! backend, and the arithmetic that ties them to the world size and the
//! batch — checked before anything is launched, for every world size given
//! with `dtl check --world`.
//!
//! The plan spells out the layout for any world size; the runtime of this
//! version trains in one process and refuses a plan for more ranks, which
//! `dtl check` says as a warning.

use super::args::{ParamSig, Ty, Value};
use super::lint::Lint;
use super::settings::{choose, Settings};
use super::CheckError;
use crate::ast::{ExprKind, SettingsBlock};
use crate::plan::parallel::balanced_split;
use crate::plan::{
    Backend, BatchNormSync, Clip, ModelPlan, Op, Parallelism, PipelineSchedule, SyncMode, TrainPlan,
};
use crate::span::Span;

/// The settings a `parallel` block accepts.
pub const KEYS: [&str; 9] = [
    "split",
    "data",
    "pipeline",
    "schedule",
    "micro_batches",
    "sync",
    "backend",
    "bucket_mb",
    "batch_norm",
];

/// The data-parallel degree: fixed, or whatever the world size leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degree {
    Fixed(u64),
    /// `data = auto`: world size / pipeline stages.
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sync {
    EveryStep,
    LocalSgd { period: u64 },
    Async { staleness: u64 },
}

/// The parallel block, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelSpec {
    pub data: Degree,
    pub pipeline: u64,
    pub micro_batches: u64,
    pub sync: Sync,
    pub schedule: PipelineSchedule,
    pub backend: Backend,
    pub bucket_mb: u64,
    pub batch_norm: BatchNormSync,
    /// `split = ["blocks.1", "head"]`: where stages 2, 3, … begin; `None`
    /// balances the stages by FLOPs.
    pub split: Option<Vec<(String, Span)>>,
    pub span: Span,
}

/// Reads the block's settings; `None` if any is wrong (reported).
pub fn resolve(block: &SettingsBlock, errors: &mut Vec<CheckError>) -> Option<ParallelSpec> {
    let s = Settings::new("parallel", block.keyword, &block.settings, &KEYS, errors);
    let before = errors.len();
    let data = match s.get("data").map(|x| &x.value.kind) {
        Some(ExprKind::Name(n)) if n.name == "auto" => Some(Degree::Auto),
        _ => s
            .int("data", 1, Some(1), errors)
            .map(|n| Degree::Fixed(n as u64)),
    };
    let pipeline = s.int("pipeline", 1, Some(1), errors);
    let micro_batches = s.int("micro_batches", 1, Some(pipeline.unwrap_or(1)), errors);
    let mut pick = |key: &str, what: &'static str, names: &[&'static str]| {
        s.one_of(key, what, names, errors).flatten()
    };
    let schedule = match pick("schedule", "pipeline schedule", &["gpipe", "one_f_one_b"]) {
        Some("gpipe") => PipelineSchedule::Gpipe,
        _ => PipelineSchedule::OneFOneB,
    };
    let backend = match pick("backend", "backend", &["auto", "nccl", "mpi"]) {
        Some("nccl") => Backend::Nccl,
        Some("mpi") => Backend::Mpi,
        _ => Backend::Auto,
    };
    let batch_norm = match pick(
        "batch_norm",
        "batch_norm synchronisation",
        &["sync", "local"],
    ) {
        Some("sync") => BatchNormSync::Sync,
        _ => BatchNormSync::Local,
    };
    let bucket_mb = s.int("bucket_mb", 1, Some(25), errors);
    let split = split_setting(&s, errors);
    let sync = match s.get("sync") {
        None => Some(Sync::EveryStep),
        Some(setting) => {
            let choices = [
                ("every_step", vec![]),
                ("local_sgd", vec![ParamSig::required("period", Ty::Int)]),
                (
                    "async",
                    vec![ParamSig::optional("staleness", Ty::Int, Value::Int(1))],
                ),
            ];
            choose(setting, "sync mode", &choices, errors).and_then(|(name, v)| {
                let n = v.first().map_or(1, Value::as_int);
                if n < 1 {
                    errors.push(CheckError::invalid(
                        format!("{name} needs a value ≥ 1"),
                        setting.value.span,
                        "here",
                    ));
                    return None;
                }
                Some(match name {
                    "every_step" => Sync::EveryStep,
                    "local_sgd" => Sync::LocalSgd { period: n as u64 },
                    _ => Sync::Async {
                        staleness: n as u64,
                    },
                })
            })
        }
    };
    if errors.len() > before {
        return None;
    }
    Some(ParallelSpec {
        data: data?,
        pipeline: pipeline? as u64,
        micro_batches: micro_batches? as u64,
        sync: sync?,
        schedule,
        backend,
        bucket_mb: bucket_mb? as u64,
        batch_norm,
        split: split?,
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

/// What the parallel configuration is checked against.
pub struct Context<'a> {
    pub model: &'a ModelPlan,
    pub train: &'a TrainPlan,
    /// Training rows (after the validation split), when the data was read.
    pub train_rows: Option<u64>,
    /// World sizes from `--world`.
    pub worlds: &'a [u64],
}

/// Checks the configuration against the model, the training settings and
/// each world size asked about.
pub fn check(
    spec: &ParallelSpec,
    block: &SettingsBlock,
    context: &Context<'_>,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
) -> Option<(Parallelism, Vec<usize>)> {
    let Context {
        model,
        train,
        train_rows,
        worlds,
    } = *context;
    let s = Settings::quiet(&block.settings);
    let at = |key: &str| s.get(key).map_or(block.keyword, |x| x.span);
    let stages = spec.pipeline;

    // Combinations that make no sense, whatever the world size.
    if stages > 1 && spec.sync != Sync::EveryStep {
        errors.push(CheckError::Unsupported {
            message:
                "local SGD and asynchronous updates need whole model replicas, not pipeline stages"
                    .into(),
            span: at("sync"),
            help: Some("use `sync = every_step` with a pipeline".into()),
        });
    }
    if matches!(spec.sync, Sync::Async { .. }) && matches!(train.clip, Some(Clip::Norm { .. })) {
        errors.push(CheckError::Unsupported {
            message: "global-norm clipping needs all gradients of a step; asynchronous updates never have them".into(),
            span: at("sync"),
            help: Some("clip each update by value (`clip = value(...)`) or synchronise every step".into()),
        });
    }
    let uses_data_parallel = spec.data != Degree::Fixed(1);
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

    // Pipeline arithmetic.
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
        if train.micro_batch % spec.micro_batches != 0 {
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
        if spec.micro_batches < stages {
            let bubble = (stages - 1) as f64 / (spec.micro_batches + stages - 1) as f64;
            lints.push(Lint::PipelineBubble {
                micro_batches: spec.micro_batches,
                stages,
                bubble: format!("{:.0}%", bubble * 100.0),
                span: at("micro_batches"),
            });
        }
    }

    // World size arithmetic, for every world size asked about.
    for &world in worlds {
        let data = match spec.data {
            Degree::Fixed(d) => {
                if d * stages != world {
                    errors.push(CheckError::InvalidValue {
                        message: format!(
                            "world size {world} ≠ data {d} × pipeline {stages} = {}",
                            d * stages
                        ),
                        span: at("data"),
                        label: format!("for --world {world}"),
                        help: Some(
                            "set `data = auto` to use every rank the world size gives".into(),
                        ),
                    });
                    continue;
                }
                d
            }
            Degree::Auto => {
                if world % stages != 0 {
                    errors.push(CheckError::InvalidValue {
                        message: format!(
                            "world size {world} is not a multiple of the {stages} pipeline stages"
                        ),
                        span: at("pipeline"),
                        label: format!("for --world {world}"),
                        help: None,
                    });
                    continue;
                }
                world / stages
            }
        };
        // Each data-parallel rank reads its own shard of the training rows.
        if let Some(rows) = train_rows {
            if train.micro_batch > rows / data {
                errors.push(CheckError::InvalidValue {
                    message: format!(
                        "with {data} data-parallel ranks each reads {} of the {rows} training rows, fewer than micro_batch {}",
                        rows / data,
                        train.micro_batch
                    ),
                    span: at("data"),
                    label: format!("for --world {world}"),
                    help: Some("use fewer ranks or a smaller micro_batch".into()),
                });
            }
        }
    }

    let starts = stage_starts(spec, model, &s, block, errors)?;
    let data = match spec.data {
        Degree::Fixed(d) => Some(d),
        Degree::Auto => match worlds {
            [world] if world % stages == 0 => Some(world / stages),
            _ => None,
        },
    };
    let world = data.map(|d| d * stages);
    if world != Some(1) {
        lints.push(Lint::SingleProcessRuntime {
            world: world.map_or("the world size".into(), |w| format!("{w} ranks")),
            span: block.keyword,
        });
    }
    let sync = match spec.sync {
        Sync::EveryStep => SyncMode::EveryStep,
        Sync::LocalSgd { period } => SyncMode::LocalSgd { period },
        Sync::Async { staleness } => SyncMode::Async { staleness },
    };
    Some((
        Parallelism {
            // 0: `data = auto` with no single world size to resolve it.
            data: data.unwrap_or(0),
            pipeline: stages,
            micro_batches: spec.micro_batches,
            schedule: spec.schedule,
            sync,
            backend: spec.backend,
            bucket_bytes: spec.bucket_mb << 20,
            batch_norm: spec.batch_norm,
        },
        starts,
    ))
}

/// Where each pipeline stage begins: the layers named by `split`, or a
/// split balanced by FLOPs. Every stage must own at least one layer.
fn stage_starts(
    spec: &ParallelSpec,
    model: &ModelPlan,
    s: &Settings<'_>,
    block: &SettingsBlock,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<usize>> {
    let stages = spec.pipeline as usize;
    let Some(names) = &spec.split else {
        return (model.nodes.len() > stages).then(|| balanced_split(model, stages as u64));
    };
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
                help: super::suggest::did_you_mean(name, layers.iter().copied())
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

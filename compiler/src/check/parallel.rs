//! The `parallel` block: degrees, pipeline schedule, synchronisation,
//! backend, and the arithmetic that ties them to the world size and the
//! batch — checked before anything is launched, for every world size given
//! with `dtl check --world`.
//!
//! The runtime of this version trains in one process, so a degree above 1
//! is reported as unsupported after all the other checks have run: a user
//! sees every problem of the configuration at once.

use super::args::{ParamSig, Ty, Value};
use super::lint::Lint;
use super::settings::{choose, Settings};
use super::CheckError;
use crate::ast::{ExprKind, SettingsBlock};
use crate::plan::{Clip, ModelPlan, Op, TrainPlan};
use crate::span::Span;

const KEYS: [&str; 8] = [
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
    pub span: Span,
}

impl Default for ParallelSpec {
    fn default() -> Self {
        ParallelSpec {
            data: Degree::Fixed(1),
            pipeline: 1,
            micro_batches: 1,
            sync: Sync::EveryStep,
            span: Span::default(),
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
            .int("data", 1, Some(1), errors)
            .map(|n| Degree::Fixed(n as u64)),
    };
    let pipeline = s.int("pipeline", 1, Some(1), errors);
    let micro_batches = s.int("micro_batches", 1, Some(pipeline.unwrap_or(1)), errors);
    if let Some(setting) = s.get("schedule") {
        let choices = [("gpipe", vec![]), ("one_f_one_b", vec![])];
        choose(setting, "pipeline schedule", &choices, errors);
    }
    if let Some(setting) = s.get("backend") {
        let choices = [("auto", vec![]), ("nccl", vec![]), ("mpi", vec![])];
        choose(setting, "backend", &choices, errors);
    }
    if let Some(setting) = s.get("batch_norm") {
        let choices = [("sync", vec![]), ("local", vec![])];
        choose(setting, "batch_norm synchronisation", &choices, errors);
    }
    s.int("bucket_mb", 1, Some(25), errors);
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
        span: block.keyword,
    })
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
) {
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

    // Last: what this version's runtime cannot run.
    if let Degree::Fixed(d) = spec.data {
        if d > 1 {
            errors.push(unsupported("data", d, at("data")));
        }
    } else if worlds.iter().any(|w| w / stages > 1) || worlds.is_empty() {
        errors.push(CheckError::Unsupported {
            message: "data = auto: the runtime of this version trains in one process".into(),
            span: at("data"),
            help: Some("use `data = 1` for now".into()),
        });
    }
    if stages > 1 {
        errors.push(unsupported("pipeline", stages, at("pipeline")));
    }
    if spec.sync != Sync::EveryStep {
        errors.push(CheckError::Unsupported {
            message: "local SGD and asynchronous updates are not implemented in the runtime yet"
                .into(),
            span: at("sync"),
            help: None,
        });
    }
}

fn unsupported(what: &str, degree: u64, span: Span) -> CheckError {
    CheckError::Unsupported {
        message: format!(
            "{what} parallelism (degree {degree}) is not implemented in the runtime yet"
        ),
        span,
        help: Some("this version of dtl trains in a single process; use a degree of 1".into()),
    }
}

//! The `train` settings that say what a run reports and keeps: `metrics`,
//! `keep_best`, `stop_early` and `ema`. Each metric is checked against the
//! task the data and the loss make (class labels, real values, next
//! tokens), before anything runs.

use super::args::{ParamSig, Ty, Value};
use super::settings::{choose, Settings};
use super::CheckError;
use crate::ast::{Expr, ExprKind, Ident, Setting};
use crate::plan::{
    DataPlan, DataSource, EarlyStop, F1Average, Loss, Metric, Monitor, TargetKind, Tracking,
};
use crate::util::suggest::did_you_mean;

/// The metric names, for did-you-mean and the docs.
pub const METRIC_NAMES: [&str; 6] = ["accuracy", "top_k", "f1", "perplexity", "mse", "mae"];

/// What the run learns to predict, as far as the metrics are concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Task {
    /// Class labels; the number of classes (0: not known, the data unread).
    Classes { classes: i64, next_token: bool },
    /// Real values.
    Values,
}

fn task(data: &DataPlan) -> Task {
    match data.target {
        TargetKind::Float => Task::Values,
        TargetKind::Class => Task::Classes {
            classes: data.classes,
            next_token: matches!(
                data.source,
                DataSource::Text { .. } | DataSource::Tokens { .. }
            ),
        },
    }
}

/// The four settings, checked; `None` after an error (reported).
pub(super) fn tracking(
    s: &Settings<'_>,
    loss: &Loss,
    data: &DataPlan,
    eval_every: u64,
    errors: &mut Vec<CheckError>,
) -> Option<Tracking> {
    let task = task(data);
    let metrics = match s.get("metrics") {
        Some(setting) => metrics(setting, task, loss, errors)?,
        None => Vec::new(),
    };
    let keep_best = match s.get("keep_best") {
        Some(setting) => Some(monitor(setting, &metrics, errors)?),
        None => None,
    };
    let stop_early = match s.get("stop_early") {
        Some(setting) => Some(stop_early(setting, keep_best, eval_every, data, errors)?),
        None => None,
    };
    let ema = match s.get("ema") {
        Some(_) => Some(s.float("ema", 0.0..1.0, 0.0, errors)?),
        None => None,
    };
    if let (Some(decay), Some(setting)) = (ema, s.get("ema")) {
        if decay == 0.0 {
            errors.push(CheckError::invalid(
                "an average with decay 0 is the weights themselves",
                setting.value.span,
                "must be in (0, 1)",
            ));
            return None;
        }
    }
    Some(Tracking {
        metrics,
        keep_best,
        stop_early,
        ema,
    })
}

/// `metrics = [accuracy, top_k(5), f1(macro)]` (or one metric alone).
fn metrics(
    setting: &Setting,
    task: Task,
    loss: &Loss,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<Metric>> {
    let items: Vec<&Expr> = match &setting.value.kind {
        ExprKind::List(items) => items.iter().collect(),
        _ => vec![&setting.value],
    };
    let mut out: Vec<Metric> = Vec::new();
    let mut ok = true;
    for item in items {
        match metric(item, task, loss, errors) {
            Some(m) if out.contains(&m) => {
                errors.push(CheckError::invalid(
                    format!("the metric `{}` is listed twice", m.key()),
                    item.span,
                    "listed already",
                ));
                ok = false;
            }
            Some(m) => out.push(m),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// One metric, as a name or a call: `accuracy`, `top_k(5)`, `f1(macro)`.
fn metric(expr: &Expr, task: Task, loss: &Loss, errors: &mut Vec<CheckError>) -> Option<Metric> {
    let (name, args): (&Ident, Vec<&Expr>) = match &expr.kind {
        ExprKind::Name(name) => (name, vec![]),
        ExprKind::Call(call) => (&call.callee, call.args.iter().map(|a| &a.value).collect()),
        _ => {
            errors.push(CheckError::invalid(
                "a metric is a name or a call: accuracy, top_k(5), f1(macro), perplexity, mse, mae",
                expr.span,
                "not a metric",
            ));
            return None;
        }
    };
    let metric = match (name.name.as_str(), args.as_slice()) {
        ("accuracy", []) => Metric::Accuracy,
        ("perplexity", []) => Metric::Perplexity,
        ("mse", []) => Metric::Mse,
        ("mae", []) => Metric::Mae,
        ("f1", []) => Metric::F1 {
            average: F1Average::Macro,
        },
        ("f1", [average]) => Metric::F1 {
            average: f1_average(average, errors)?,
        },
        ("top_k", [k]) => Metric::TopK {
            k: top_k(k, task, errors)?,
        },
        (known, _) if METRIC_NAMES.contains(&known) => {
            let form = match known {
                "top_k" => "`top_k(5)`: how many of the highest scores",
                "f1" => "`f1`, `f1(macro)` or `f1(micro)`",
                _ => "no arguments",
            };
            errors.push(CheckError::invalid(
                format!("`{known}` takes {form}"),
                expr.span,
                "wrong arguments",
            ));
            return None;
        }
        (unknown, _) => {
            errors.push(CheckError::UnknownName {
                kind: "metric",
                name: unknown.to_string(),
                span: name.span,
                help: did_you_mean(unknown, METRIC_NAMES.iter().copied())
                    .or_else(|| Some(format!("the metrics: {}", METRIC_NAMES.join(", ")))),
            });
            return None;
        }
    };
    fits_task(metric, expr, task, loss, errors).then_some(metric)
}

fn f1_average(expr: &Expr, errors: &mut Vec<CheckError>) -> Option<F1Average> {
    match &expr.kind {
        ExprKind::Name(n) if n.name == "macro" => Some(F1Average::Macro),
        ExprKind::Name(n) if n.name == "micro" => Some(F1Average::Micro),
        _ => {
            errors.push(CheckError::invalid(
                "F1 averages by `macro` (each class alike) or `micro` (each target alike)",
                expr.span,
                "macro or micro",
            ));
            None
        }
    }
}

fn top_k(expr: &Expr, task: Task, errors: &mut Vec<CheckError>) -> Option<u64> {
    let k = match expr.kind {
        ExprKind::Int(k) if k >= 1 => k,
        _ => {
            errors.push(CheckError::invalid(
                "top_k counts the highest scores: a whole number, at least 1",
                expr.span,
                "a number ≥ 1",
            ));
            return None;
        }
    };
    if let Task::Classes { classes, .. } = task {
        if classes > 0 && k > classes {
            errors.push(CheckError::invalid(
                format!("top_k({k}) of {classes} classes: every class is among the top {k}"),
                expr.span,
                format!("at most {classes}"),
            ));
            return None;
        }
    }
    Some(k as u64)
}

/// A metric for class labels needs class labels, and so on.
fn fits_task(
    metric: Metric,
    expr: &Expr,
    task: Task,
    loss: &Loss,
    errors: &mut Vec<CheckError>,
) -> bool {
    let problem = match (metric, task) {
        (Metric::Accuracy | Metric::TopK { .. } | Metric::F1 { .. }, Task::Values) => {
            Some("measures class predictions, and the targets are real values")
        }
        (Metric::Mse | Metric::Mae, Task::Classes { .. }) => {
            Some("measures real-valued predictions, and the targets are class labels")
        }
        (Metric::Mse | Metric::Mae, _) if matches!(loss, Loss::BinaryCrossEntropy { .. }) => {
            Some("measures real-valued predictions, and binary_cross_entropy's outputs are logits")
        }
        (
            Metric::Perplexity,
            Task::Classes {
                next_token: false, ..
            }
            | Task::Values,
        ) => Some("measures next-token models, and the data is not a text or token file"),
        (Metric::Perplexity, _) if !matches!(loss, Loss::CrossEntropy { .. }) => {
            Some("is the exponential of a cross-entropy, and the loss is not one")
        }
        _ => None,
    };
    if let Some(problem) = problem {
        errors.push(CheckError::invalid(
            format!("the metric `{}` {problem}", metric.key()),
            expr.span,
            "not for this task",
        ));
    }
    problem.is_none()
}

/// `keep_best = eval_loss` or one of the metrics.
fn monitor(setting: &Setting, metrics: &[Metric], errors: &mut Vec<CheckError>) -> Option<Monitor> {
    if matches!(&setting.value.kind, ExprKind::Name(n) if n.name == "eval_loss") {
        return Some(Monitor::EvalLoss);
    }
    let task = Task::Classes {
        classes: 0,
        next_token: true,
    };
    let wanted = metric(
        &setting.value,
        task,
        &Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        &mut Vec::new(),
    );
    match wanted {
        Some(m) if metrics.contains(&m) => Some(Monitor::Metric { metric: m }),
        _ => {
            let listed: Vec<String> = std::iter::once("eval_loss".to_string())
                .chain(metrics.iter().map(|m| m.key()))
                .collect();
            errors.push(CheckError::InvalidValue {
                message: "`keep_best` watches `eval_loss` or one of the `metrics`".into(),
                span: setting.value.span,
                label: "not measured".into(),
                help: Some(format!(
                    "measured here: {}; add a metric to `metrics` to keep the best by it",
                    listed.join(", ")
                )),
            });
            None
        }
    }
}

/// `stop_early = patience(5, min_delta: 1e-4)`.
fn stop_early(
    setting: &Setting,
    keep_best: Option<Monitor>,
    eval_every: u64,
    data: &DataPlan,
    errors: &mut Vec<CheckError>,
) -> Option<EarlyStop> {
    let choices = [(
        "patience",
        (),
        vec![
            ParamSig::required("evaluations", Ty::Int),
            ParamSig::optional("min_delta", Ty::Float, Value::Float(0.0)),
        ],
    )];
    let ((), v) = choose(setting, "early stop", &choices, errors)?;
    let (patience, min_delta) = (v[0].as_int(), v[1].as_float());
    let span = setting.value.span;
    if patience < 1 || min_delta < 0.0 {
        errors.push(CheckError::invalid(
            "patience counts evaluations (at least 1), min_delta is at least 0",
            span,
            "out of range",
        ));
        return None;
    }
    if eval_every == 0 || data.valid_fraction == 0.0 {
        errors.push(CheckError::InvalidValue {
            message: "stopping early needs evaluations to watch".into(),
            span,
            label: "nothing to watch".into(),
            help: Some(if eval_every == 0 {
                "set `eval_every` in `train`".into()
            } else {
                "hold out rows with `valid` in the data block".into()
            }),
        });
        return None;
    }
    Some(EarlyStop {
        patience: patience as u64,
        min_delta,
        monitor: keep_best.unwrap_or(Monitor::EvalLoss),
    })
}

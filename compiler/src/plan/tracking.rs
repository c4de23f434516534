//! What a run reports and keeps beside the training itself: the metrics of
//! each evaluation, the best weights by one of them, when to stop early,
//! and an exponential moving average of the weights. Data only.

use serde::{Deserialize, Serialize};

/// A measure of the held-out rows (`metrics = [...]` in `train`), beside
/// the evaluation loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Metric {
    /// Fraction of targets whose highest score is the right class.
    Accuracy,
    /// Fraction of targets whose right class is among the `k` highest
    /// scores.
    TopK { k: u64 },
    /// F1 score over the classes: `macro`, the mean of each class's
    /// 2·TP / (2·TP + FP + FN) over the classes that are a target or a
    /// prediction at least once (scikit-learn's `f1_score(average="macro")`);
    /// `micro`, over every target at once (for one label per target, equal
    /// to the accuracy).
    F1 { average: F1Average },
    /// exp(mean cross-entropy per token): next-token models only.
    Perplexity,
    /// Mean squared error per target value.
    Mse,
    /// Mean absolute error per target value.
    Mae,
}

/// How F1 combines the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum F1Average {
    Macro,
    Micro,
}

impl Metric {
    /// The key of the metric in `metrics.jsonl` (after `eval_`) and in
    /// messages: `accuracy`, `top5`, `f1_macro`, `perplexity`, `mse`, `mae`.
    pub fn key(&self) -> String {
        match self {
            Metric::Accuracy => "accuracy".into(),
            Metric::TopK { k } => format!("top{k}"),
            Metric::F1 { average } => match average {
                F1Average::Macro => "f1_macro".into(),
                F1Average::Micro => "f1_micro".into(),
            },
            Metric::Perplexity => "perplexity".into(),
            Metric::Mse => "mse".into(),
            Metric::Mae => "mae".into(),
        }
    }

    /// Whether a higher value is better.
    pub fn higher_is_better(&self) -> bool {
        match self {
            Metric::Accuracy | Metric::TopK { .. } | Metric::F1 { .. } => true,
            Metric::Perplexity | Metric::Mse | Metric::Mae => false,
        }
    }
}

/// What `keep_best` and `stop_early` watch: the evaluation loss or one of
/// the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Monitor {
    EvalLoss,
    Metric { metric: Metric },
}

impl Monitor {
    /// Its key in `metrics.jsonl`: `eval_loss`, `eval_accuracy`, …
    pub fn key(&self) -> String {
        match self {
            Monitor::EvalLoss => "eval_loss".into(),
            Monitor::Metric { metric } => format!("eval_{}", metric.key()),
        }
    }

    pub fn higher_is_better(&self) -> bool {
        match self {
            Monitor::EvalLoss => false,
            Monitor::Metric { metric } => metric.higher_is_better(),
        }
    }

    /// Whether `value` improves on `best` by more than `min_delta` (any
    /// finite value improves on none).
    pub fn improves(&self, value: f64, best: Option<f64>, min_delta: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        match best {
            None => true,
            Some(best) if self.higher_is_better() => value > best + min_delta,
            Some(best) => value < best - min_delta,
        }
    }
}

/// `stop_early = patience(N, min_delta: D)`: stop when `monitor` has not
/// improved by more than `min_delta` in `patience` evaluations in a row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStop {
    pub patience: u64,
    pub min_delta: f64,
    pub monitor: Monitor,
}

/// Everything the run tracks besides the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tracking {
    /// Measured at every evaluation, over every held-out row of every rank.
    pub metrics: Vec<Metric>,
    /// Keep the weights of the best evaluation by this (`best/`).
    pub keep_best: Option<Monitor>,
    pub stop_early: Option<EarlyStop>,
    /// The decay of an exponential moving average of the weights, kept,
    /// evaluated and saved beside them (`model_ema.safetensors`).
    pub ema: Option<f64>,
}

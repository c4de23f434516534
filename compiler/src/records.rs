//! The run's output records: one line of `metrics.jsonl` each. The runtime
//! writes them and `dtl plot` reads them back through these same types, so
//! the file has one schema. serde_json writes a non-finite number as
//! `null`; reading turns `null` back into NaN. Fields added later are
//! ignored by older readers.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One optimizer step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    /// The step's training loss: the mean over its micro-batches (and, with
    /// data parallelism, over the replicas).
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// The global L2 norm of the gradients the optimizer saw, before
    /// clipping.
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// The loss or a gradient was not finite and `on_nan = skip` dropped
    /// the update.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// `precision = fp16`: the loss scale of this step (halved after a step
    /// whose gradients overflowed, which is skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
}

/// An evaluation on the held-out rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord {
    pub step: u64,
    /// Mean loss per target (per label, per token, per value).
    #[serde(deserialize_with = "nan_if_null")]
    pub eval_loss: f64,
    /// Fraction of labels predicted right (classification only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_nan_if_null"
    )]
    pub eval_accuracy: Option<f64>,
    pub eval_rows: usize,
    /// The `metrics` of `train` beyond the accuracy (`eval_top5`,
    /// `eval_f1_macro`, `eval_perplexity`, `eval_mse`, `eval_mae`) and,
    /// with `ema`, every measure of the averaged weights (`ema_eval_loss`,
    /// …), in the same line.
    #[serde(flatten)]
    pub measures: Measures,
}

impl EvalRecord {
    /// A measure by its key in the file (`eval_loss`, `eval_accuracy`,
    /// `eval_top5`, `ema_eval_loss`, …).
    pub fn get(&self, key: &str) -> Option<f64> {
        match key {
            "eval_loss" => Some(self.eval_loss),
            "eval_accuracy" => self.eval_accuracy,
            other => self.measures.0.get(other).copied(),
        }
    }
}

/// Measures by name, written as numbers (`null` when not finite) and read
/// back from the numbers and nulls of a line (other fields are skipped).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measures(pub BTreeMap<String, f64>);

impl Serialize for Measures {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v.is_finite().then_some(*v))))
    }
}

impl<'de> Deserialize<'de> for Measures {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        Ok(Measures(
            raw.into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::Null => Some((k, f64::NAN)),
                    serde_json::Value::Number(n) => n.as_f64().map(|x| (k, x)),
                    _ => None,
                })
                .collect(),
        ))
    }
}

/// A line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Step(StepRecord),
    Eval(EvalRecord),
}

impl Record {
    /// Reads one line: an evaluation if it has `eval_loss`, else a step.
    /// The error says what is wrong with the line.
    pub fn parse(line: &str) -> Result<Record, String> {
        if line.trim().is_empty() {
            return Err("blank line".to_string());
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
        let Some(object) = value.as_object() else {
            return Err(format!("not a JSON object: {value}"));
        };
        if object.contains_key("eval_loss") {
            EvalRecord::deserialize(value)
                .map(Record::Eval)
                .map_err(|e| format!("not an evaluation record: {e}"))
        } else {
            StepRecord::deserialize(value)
                .map(Record::Step)
                .map_err(|e| format!("not a step record: {e}"))
        }
    }
}

/// `run.json`: what a run is and how it ended, for `dtl runs`. Written by
/// whoever claimed the run folder when the run starts, again at every
/// resume, and when it ends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// The `.dtl` file (or plan) the run was started from.
    pub source: String,
    /// The git commit of the source's repository at the start, `+` when it
    /// had uncommitted changes; `null` outside a repository.
    pub commit: Option<String>,
    /// The plan's fingerprint (what a checkpoint must match).
    pub plan_fingerprint: String,
    /// Optimizer steps the plan asks for.
    pub steps: u64,
    pub world_size: u64,
    /// Each start: the first and every resume.
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
}

/// One start of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    /// UTC, `2026-12-04T09:15:02Z`.
    pub started: String,
    pub host: String,
    /// The command line.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
}

/// How the last attempt ended, as far as it could say.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// UTC, when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// The error, the signal, or why it stopped early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What became of a run. `running` is written at the start: a run that
/// still says so while nobody holds its lock was killed or lost its machine.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Finished,
    Failed,
    Interrupted,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn some_nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    nan_if_null(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_nan_included() {
        let step = StepRecord {
            step: 3,
            loss: f64::NAN,
            lr: 0.1,
            grad_norm: 2.0,
            skipped: true,
            loss_scale: None,
        };
        let line = serde_json::to_string(&step).unwrap();
        assert_eq!(
            line,
            r#"{"step":3,"loss":null,"lr":0.1,"grad_norm":2.0,"skipped":true}"#
        );
        let Record::Step(back) = Record::parse(&line).unwrap() else {
            panic!("a step record")
        };
        assert!(back.loss.is_nan() && back.skipped && back.lr == 0.1);
        let eval = EvalRecord {
            step: 3,
            eval_loss: 0.5,
            eval_accuracy: None,
            eval_rows: 10,
            measures: Measures([("eval_top5".to_string(), 0.75)].into()),
        };
        let line = serde_json::to_string(&eval).unwrap();
        assert_eq!(
            line,
            r#"{"step":3,"eval_loss":0.5,"eval_rows":10,"eval_top5":0.75}"#
        );
        assert_eq!(Record::parse(&line).unwrap(), Record::Eval(eval.clone()));
        let Record::Eval(back) =
            Record::parse(r#"{"step":3,"eval_loss":0.5,"eval_rows":10,"eval_top5":0.75,"note":"x","ema_eval_loss":null}"#).unwrap()
        else {
            panic!("an evaluation record")
        };
        assert_eq!(back.get("eval_top5"), Some(0.75));
        assert!(back.get("ema_eval_loss").unwrap().is_nan());
    }
}

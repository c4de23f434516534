//! The run's output records: one line of `metrics.jsonl` each. The runtime
//! writes them and `dtl plot` reads them back through these same types, so
//! the file has one schema. serde_json writes a non-finite number as
//! `null`; reading turns `null` back into NaN. Fields added later are
//! ignored by older readers.

use serde::{Deserialize, Deserializer, Serialize};

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
        };
        let line = serde_json::to_string(&eval).unwrap();
        assert_eq!(Record::parse(&line).unwrap(), Record::Eval(eval));
    }
}

//! The measures of an evaluation: sums over the held-out rows, added up
//! chunk by chunk on each rank and then over the ranks, and only then
//! turned into the loss and the metrics. A data-parallel run's metrics are
//! therefore those of one process over the same rows: every count is exact,
//! and the loss differs only by the order of its additions.

use dtl_compiler::plan::{Dim, F1Average, Loss, Metric, Plan};
use dtl_compiler::records::{EvalRecord, Measures};
use tch::{Kind, Reduction, Tensor};

use crate::data::Dataset;
use crate::error::{RunError, TorchContext};
use crate::loss;

/// Positions of the scalar sums.
const LOSS: usize = 0;
const TARGETS: usize = 1;
const CORRECT: usize = 2;
/// Cross-entropy without label smoothing, for the perplexity.
const CROSS_ENTROPY: usize = 3;
const SQUARED: usize = 4;
const ABSOLUTE: usize = 5;
/// Target values of the squared and absolute errors.
const VALUES: usize = 6;
const SCALARS: usize = 7;

/// What to add up for a plan's loss and metrics.
pub struct Measure {
    loss: Loss,
    metrics: Vec<Metric>,
    /// The `k` of each `top_k`, in order; its hits follow the scalars.
    top: Vec<i64>,
    /// Classes counted per class for F1 (the model's last dimension), or 0.
    per_class: i64,
}

/// One rank's running sums, and in the end every rank's.
pub struct Sums {
    pub values: Vec<f64>,
    /// `[3, C]` int64: true positives, predictions and targets per class.
    classes: Option<Tensor>,
}

impl Measure {
    pub fn new(plan: &Plan) -> Measure {
        let metrics = plan.train.tracking.metrics.clone();
        let top = metrics
            .iter()
            .filter_map(|m| match m {
                Metric::TopK { k } => Some(*k as i64),
                _ => None,
            })
            .collect();
        let f1 = metrics.iter().any(|m| matches!(m, Metric::F1 { .. }));
        let classes = match plan.model.output.last() {
            Some(Dim::Size(n)) => *n,
            _ => plan.data.classes.max(1),
        };
        Measure {
            loss: plan.train.loss.clone(),
            metrics,
            top,
            per_class: if f1 { classes } else { 0 },
        }
    }

    pub fn zero(&self) -> Sums {
        Sums {
            values: vec![0.0; SCALARS + self.top.len()],
            classes: None,
        }
    }

    /// Adds a chunk's `output` against its targets `y`.
    pub fn add(&self, sums: &mut Sums, output: &Tensor, y: &Tensor) -> Result<(), tch::TchError> {
        let v = &mut sums.values;
        let value = |t: Tensor| t.f_double_value(&[]);
        v[LOSS] += value(loss::loss(&self.loss, output, y, Reduction::Sum)?)?;
        v[TARGETS] += y.numel() as f64;
        let classes = matches!(self.loss, Loss::CrossEntropy { .. } | Loss::Nll);
        if !classes {
            if self
                .metrics
                .iter()
                .any(|m| matches!(m, Metric::Mse | Metric::Mae))
            {
                let error = output.f_to_kind(Kind::Float)?.f_sub(y)?;
                v[SQUARED] += value(error.f_square()?.f_sum(Kind::Double)?)?;
                v[ABSOLUTE] += value(error.f_abs()?.f_sum(Kind::Double)?)?;
                v[VALUES] += y.numel() as f64;
            }
            return Ok(());
        }
        let count = *output.size().last().unwrap_or(&1);
        let scores = output.f_reshape([-1, count])?;
        let labels = y.f_reshape([-1])?;
        let predicted = scores.f_argmax(-1, false)?;
        let hits = predicted.f_eq_tensor(&labels)?;
        v[CORRECT] += value(hits.f_sum(Kind::Int64)?)?;
        if self.metrics.contains(&Metric::Perplexity) {
            v[CROSS_ENTROPY] += match self.loss {
                Loss::CrossEntropy { label_smoothing } if label_smoothing > 0.0 => {
                    value(scores.f_cross_entropy_loss::<Tensor>(
                        &labels,
                        None,
                        Reduction::Sum,
                        -100,
                        0.0,
                    )?)?
                }
                _ => value(loss::loss(&self.loss, output, y, Reduction::Sum)?)?,
            };
        }
        for (i, &k) in self.top.iter().enumerate() {
            let (_, best) = scores.f_topk(k, -1, true, false)?;
            let found = best
                .f_eq_tensor(&labels.f_unsqueeze(-1)?)?
                .f_any_dim(-1, false)?;
            v[SCALARS + i] += value(found.f_sum(Kind::Int64)?)?;
        }
        if self.per_class > 0 {
            let c = self.per_class;
            let right = labels.f_masked_select(&hits)?;
            let counts = Tensor::f_stack(
                &[
                    right.f_bincount::<Tensor>(None, c)?,
                    predicted.f_bincount::<Tensor>(None, c)?,
                    labels.f_bincount::<Tensor>(None, c)?,
                ],
                0,
            )?;
            sums.classes = Some(match sums.classes.take() {
                Some(total) => total.f_add(&counts)?,
                None => counts,
            });
        }
        Ok(())
    }

    /// The sums as one vector of numbers, to add up over the ranks: the
    /// scalars, then the per-class counts when F1 is measured.
    pub fn flatten(&self, sums: Sums) -> Result<Vec<f64>, tch::TchError> {
        let mut values = sums.values;
        if self.per_class > 0 {
            let counts = match sums.classes {
                Some(c) => Vec::<f64>::try_from(c.f_to_kind(Kind::Double)?.f_reshape([-1])?)?,
                None => vec![0.0; 3 * self.per_class as usize],
            };
            values.extend(counts);
        }
        Ok(values)
    }

    /// The evaluation record of every rank's sums (`flatten`ed and added
    /// up); `prefix` names the weights measured (`ema_` for the average).
    pub fn record(&self, step: u64, rows: usize, sums: &[f64], prefix: &str) -> EvalRecord {
        let targets = sums[TARGETS];
        let mean = |x: f64| if targets > 0.0 { x / targets } else { f64::NAN };
        let classes = matches!(self.loss, Loss::CrossEntropy { .. } | Loss::Nll);
        let mut measures = Measures::default();
        let mut put = |key: String, x: f64| {
            measures.0.insert(format!("{prefix}eval_{key}"), x);
        };
        let mut top = SCALARS;
        for metric in &self.metrics {
            let x = match metric {
                // `eval_accuracy` has its own field.
                Metric::Accuracy => continue,
                Metric::TopK { .. } => {
                    top += 1;
                    mean(sums[top - 1])
                }
                Metric::F1 { average } => f1(&sums[SCALARS + self.top.len()..], *average),
                Metric::Perplexity => mean(sums[CROSS_ENTROPY]).exp(),
                Metric::Mse => sums[SQUARED] / sums[VALUES],
                Metric::Mae => sums[ABSOLUTE] / sums[VALUES],
            };
            put(metric.key(), x);
        }
        let loss = mean(sums[LOSS]);
        let accuracy = classes.then(|| mean(sums[CORRECT]));
        if prefix.is_empty() {
            EvalRecord {
                step,
                eval_loss: loss,
                eval_accuracy: accuracy,
                eval_rows: rows,
                measures,
            }
        } else {
            put("loss".into(), loss);
            if let Some(accuracy) = accuracy {
                put("accuracy".into(), accuracy);
            }
            EvalRecord {
                step,
                eval_loss: f64::NAN,
                eval_accuracy: None,
                eval_rows: rows,
                measures,
            }
        }
    }
}

/// Adds up `measure` over `count` rows of `data` from `first`, in chunks
/// small enough for the model's output, dropout off: `forward` gives a
/// chunk's output (`None` where it comes out of another rank, a pipeline's
/// last stage). `progress` is called after every chunk; `what` names the
/// evaluation in errors (`step 100: evaluation`).
pub fn over_rows(
    what: &str,
    measure: &Measure,
    (data, first, count): (&Dataset, usize, usize),
    output_shape: &[Dim],
    device: tch::Device,
    forward: &mut dyn FnMut(&Tensor) -> Result<Option<Tensor>, RunError>,
    progress: &dyn Fn(),
) -> Result<Vec<f64>, RunError> {
    let ctx = || what.to_string();
    let mut sums = measure.zero();
    let chunk = chunk_rows(output_shape);
    tch::no_grad(|| -> Result<(), RunError> {
        let mut start = first;
        while start < first + count {
            let len = chunk.min(first + count - start);
            let (x, y) = data.range(start, len)?;
            let x = x.f_to_device(device).context(ctx)?;
            let y = y.f_to_device(device).context(ctx)?;
            if let Some(output) = forward(&x)? {
                measure.add(&mut sums, &output, &y).context(ctx)?;
            }
            start += len;
            progress();
        }
        Ok(())
    })?;
    measure.flatten(sums).context(ctx)
}

/// Rows evaluated at once: up to 1024, fewer when the model's output per
/// row is large (a language model's scores for every token), so that a
/// chunk's output stays under 2^24 values.
pub fn chunk_rows(output: &[Dim]) -> usize {
    let per_row = dtl_compiler::lower::cost::numel(output).max(1);
    ((1u64 << 24) / per_row).clamp(1, 1024) as usize
}

/// F1 from per-class counts `[true positives; predictions; targets]`:
/// macro, the mean of 2·TP / (2·TP + FP + FN) over the classes that are a
/// target or a prediction at least once (scikit-learn's labels); micro,
/// over every target at once.
fn f1(counts: &[f64], average: F1Average) -> f64 {
    let c = counts.len() / 3;
    let (tp, predicted, actual) = (&counts[..c], &counts[c..2 * c], &counts[2 * c..]);
    match average {
        F1Average::Micro => {
            let tp: f64 = tp.iter().sum();
            let all: f64 = predicted.iter().sum::<f64>() + actual.iter().sum::<f64>();
            if all > 0.0 {
                2.0 * tp / all
            } else {
                f64::NAN
            }
        }
        F1Average::Macro => {
            let scores: Vec<f64> = (0..c)
                .filter(|&i| predicted[i] + actual[i] > 0.0)
                .map(|i| 2.0 * tp[i] / (predicted[i] + actual[i]))
                .collect();
            if scores.is_empty() {
                f64::NAN
            } else {
                scores.iter().sum::<f64>() / scores.len() as f64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_by_hand() {
        // Targets [0, 0, 1, 2], predictions [0, 1, 1, 1]: class 0 has
        // TP 1, FP 0, FN 1 (2/3); class 1 TP 1, FP 2, FN 0 (2/4); class 2
        // TP 0, FP 0, FN 1 (0). Class 3 never appears and is left out.
        let counts = [1.0, 1.0, 0.0, 0.0, 1.0, 3.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0];
        let macro_f1 = f1(&counts, F1Average::Macro);
        assert!(
            (macro_f1 - (2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-15,
            "{macro_f1}"
        );
        assert_eq!(f1(&counts, F1Average::Micro), 0.5);
    }
}

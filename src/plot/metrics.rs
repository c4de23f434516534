//! Reading `metrics.jsonl` into the series a chart draws.
//!
//! Each line is a [`Record`] as the runtime writes it: training lines carry
//! `loss`, evaluation lines `eval_loss` and `eval_accuracy`. Other fields
//! are ignored, so new ones can be added to the file without breaking old
//! plots.

use std::path::Path;

use dtl_compiler::records::Record;

use super::PlotError;

/// The curves found in one `metrics.jsonl`, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub train_loss: Series,
    pub eval_loss: Series,
    /// Accuracy as a fraction (0.93), as the file stores it.
    pub eval_accuracy: Series,
}

/// `(step, value)` points with finite values, and a count of those left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub points: Vec<(f64, f64)>,
    /// Values that were NaN, ±inf or `null` (serde_json writes NaN as `null`).
    pub non_finite: usize,
}

impl Series {
    fn push(&mut self, step: f64, value: Option<f64>) {
        match value {
            Some(v) if v.is_finite() => self.points.push((step, v)),
            _ => self.non_finite += 1,
        }
    }
}

impl Metrics {
    pub fn is_empty(&self) -> bool {
        self.train_loss.points.is_empty()
            && self.eval_loss.points.is_empty()
            && self.eval_accuracy.points.is_empty()
    }

    /// Values left out of every series for not being finite numbers.
    pub fn non_finite(&self) -> usize {
        self.train_loss.non_finite + self.eval_loss.non_finite + self.eval_accuracy.non_finite
    }
}

/// Reads a `metrics.jsonl` file. A blank or malformed line is an error that
/// names the file and the line.
pub fn read_metrics(path: &Path) -> Result<Metrics, PlotError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlotError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_metrics(&text).map_err(|(line, reason)| PlotError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    })
}

/// Parses the text of a `metrics.jsonl`; an error is `(line number, reason)`.
pub fn parse_metrics(text: &str) -> Result<Metrics, (usize, String)> {
    let mut metrics = Metrics::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        add_line(&mut metrics, line).map_err(|reason| (number, reason))?;
    }
    Ok(metrics)
}

fn add_line(metrics: &mut Metrics, line: &str) -> Result<(), String> {
    match Record::parse(line)? {
        Record::Step(step) => metrics.train_loss.push(step.step as f64, Some(step.loss)),
        Record::Eval(eval) => {
            let step = eval.step as f64;
            metrics.eval_loss.push(step, Some(eval.eval_loss));
            if let Some(accuracy) = eval.eval_accuracy {
                metrics.eval_accuracy.push(step, Some(accuracy));
            }
        }
    }
    Ok(())
}

/// A centered moving average over `window` points, worked out at no more
/// than `max_points` evenly spaced points. Unlike an EMA it does not lag the
/// data; near the ends it averages what the window still covers (a window
/// shrunk on both sides would end the line on one noisy point). Each mean is
/// summed afresh: no running sum for a huge spike to spoil.
pub fn moving_average(points: &[(f64, f64)], window: usize, max_points: usize) -> Vec<(f64, f64)> {
    let n = points.len();
    let half = window / 2;
    let outputs = n.min(max_points.max(2));
    (0..outputs)
        .map(|k| {
            let i = if outputs == n {
                k
            } else {
                k * (n - 1) / (outputs - 1)
            };
            let run = &points[i.saturating_sub(half)..=(i + half).min(n - 1)];
            (
                points[i].0,
                run.iter().map(|p| p.1).sum::<f64>() / run.len() as f64,
            )
        })
        .collect()
}

/// At most `max_points` points that keep the shape of the curve: the points
/// are cut into `max_points / 2` equal runs and each run keeps its lowest and
/// highest point, in their original order, so spikes stay visible.
pub fn downsample(points: &[(f64, f64)], max_points: usize) -> Vec<(f64, f64)> {
    let buckets = (max_points / 2).max(1);
    if points.len() <= max_points {
        return points.to_vec();
    }
    let mut kept = Vec::with_capacity(buckets * 2);
    for b in 0..buckets {
        let run = &points[b * points.len() / buckets..(b + 1) * points.len() / buckets];
        let by_value = |a: &&(f64, f64), b: &&(f64, f64)| a.1.total_cmp(&b.1);
        let (lo_at, _) = run
            .iter()
            .enumerate()
            .min_by(|a, b| by_value(&a.1, &b.1))
            .unwrap();
        let (hi_at, _) = run
            .iter()
            .enumerate()
            .max_by(|a, b| by_value(&a.1, &b.1))
            .unwrap();
        kept.push(run[lo_at.min(hi_at)]);
        if lo_at != hi_at {
            kept.push(run[lo_at.max(hi_at)]);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_kinds_of_line_and_ignores_unknown_fields() {
        let text = concat!(
            r#"{"step":1,"loss":2.5,"lr":0.001,"grad_norm":1.7}"#,
            "\n",
            r#"{"step":2,"loss":null,"lr":0.001,"grad_norm":1.7,"tokens":99}"#,
            "\n",
            r#"{"step":2,"eval_loss":0.4,"eval_accuracy":0.93,"eval_rows":360}"#,
            "\n",
            r#"{"step":3,"eval_loss":null,"eval_accuracy":null,"eval_rows":0}"#,
            "\n",
        );
        let m = parse_metrics(text).unwrap();
        assert_eq!(m.train_loss.points, [(1.0, 2.5)]);
        assert_eq!(m.eval_loss.points, [(2.0, 0.4)]);
        assert_eq!(m.eval_accuracy.points, [(2.0, 0.93)]);
        assert_eq!(m.non_finite(), 3);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let ok = r#"{"step":1,"loss":2.5,"lr":0.1,"grad_norm":1.0}"#;
        let cases = [
            (format!("{ok}\n\n{ok}\n"), 2, "blank line"),
            (
                format!("{ok}\n{ok}\n{{\"step\":3,\"loss\":"),
                3,
                "not a JSON object",
            ),
            (format!("{ok}\n[1,2]\n"), 2, "not a JSON object"),
            (
                format!("{ok}\n{{\"loss\":1,\"lr\":0.1,\"grad_norm\":1}}\n"),
                2,
                "missing field `step`",
            ),
            (
                r#"{"step":-1,"loss":1,"lr":0.1,"grad_norm":1}"#.to_string(),
                1,
                "integer `-1`",
            ),
            (
                r#"{"step":1,"loss":"low","lr":0.1,"grad_norm":1}"#.to_string(),
                1,
                "string \"low\"",
            ),
        ];
        for (text, line, reason) in cases {
            let (got_line, got_reason) = parse_metrics(&text).unwrap_err();
            assert_eq!(got_line, line, "{text}");
            assert!(got_reason.contains(reason), "{got_reason}");
        }
    }

    #[test]
    fn moving_average_is_centered_and_thins_out() {
        let points = [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 10.0)];
        assert_eq!(
            moving_average(&points, 3, 10),
            [(1.0, 1.5), (2.0, 2.0), (3.0, 5.0), (4.0, 6.5)]
        );
        let many: Vec<_> = (0..1000).map(|i| (i as f64, 1.0)).collect();
        let thin = moving_average(&many, 25, 100);
        assert_eq!(thin.len(), 100);
        assert_eq!((thin[0].0, thin[99].0), (0.0, 999.0));
        assert!(thin.iter().all(|p| p.1 == 1.0));
    }

    #[test]
    fn downsample_keeps_extremes_in_order() {
        let points: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, (i % 7) as f64)).collect();
        let mut with_spike = points.clone();
        with_spike[5_001].1 = 100.0;
        let kept = downsample(&with_spike, 2000);
        assert!(kept.len() <= 2000);
        assert!(kept.contains(&(5_001.0, 100.0)));
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(downsample(&points[..50], 2000), &points[..50]);
    }
}

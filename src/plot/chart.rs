//! The loss and accuracy chart: which curves to draw, on which axes, and
//! what the title and subtitle say. Drawing itself is in `svg`.

use super::axis::Axis;
use super::metrics::{downsample, moving_average, Metrics};
use super::svg::{draw_curve, draw_frame, draw_legend, Curve, Panel, Svg, WIDTH};

/// What the chart says beyond the data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartOptions {
    /// The headline, e.g. the run folder's name.
    pub title: String,
    /// Loss on a log₁₀ scale; values ≤ 0 are then left out and counted.
    pub log_y: bool,
}

const TOP: f64 = 64.0;
const LOSS_HEIGHT: f64 = 300.0;
const ACCURACY_HEIGHT: f64 = 160.0;
const GAP: f64 = 44.0;
const BOTTOM: f64 = 52.0;
/// Most points drawn per series; longer runs are downsampled.
const MAX_POINTS: usize = 2000;
/// Circles on eval points only while they stay apart.
const MAX_MARKERS: usize = 60;
/// Below this many training steps a smoothed line adds nothing.
const MIN_POINTS_TO_SMOOTH: usize = 10;
/// The smoothing window is this share of the run (at least 5 points).
const SMOOTH_SHARE: usize = 40;

const TRAIN_RAW: &str = "#9ecae1";
const TRAIN_SMOOTH: &str = "#1f77b4";
const EVAL_LOSS: &str = "#e6550d";
const ACCURACY: &str = "#2ca02c";

/// Renders the chart: a loss panel, and an accuracy panel below it when the
/// metrics have evaluation accuracy.
pub fn render_svg(metrics: &Metrics, options: &ChartOptions) -> String {
    let (losses, non_positive) = loss_curves(metrics, options.log_y);
    let accuracy: Vec<(f64, f64)> = metrics
        .eval_accuracy
        .points
        .iter()
        .map(|&(s, a)| (s, a * 100.0))
        .collect();

    let steps = losses.iter().flat_map(|c| &c.points).chain(&accuracy);
    let (loss_panel, accuracy_panel, height) = panels(
        steps.map(|p| p.0),
        losses.iter().flat_map(|c| &c.points).map(|p| p.1),
        accuracy.iter().map(|p| p.1),
        options.log_y,
        (LOSS_HEIGHT, ACCURACY_HEIGHT),
    );
    let mut svg = start_svg(height, &options.title);
    let subtitle = subtitle(metrics, non_positive);
    svg.text(WIDTH / 2.0, 48.0, "middle", " fill=\"#555\"", &subtitle);

    let last_panel_is_loss = accuracy_panel.is_none();
    draw_losses(
        &mut svg,
        &loss_panel,
        &losses,
        options.log_y,
        last_panel_is_loss,
    );

    if let Some(panel) = &accuracy_panel {
        draw_frame(&mut svg, panel, "accuracy %", true);
        let markers = accuracy.len() <= MAX_MARKERS;
        let points = downsample(&accuracy, MAX_POINTS);
        let label = String::new(); // alone in its panel: the axis title says it
        let curve = Curve {
            points,
            label,
            color: ACCURACY,
            width: 1.5,
            markers,
        };
        draw_curve(&mut svg, panel, &curve);
    }
    svg.put(format_args!("</svg>\n"));
    svg.into_string()
}

/// The panels of a chart of `steps`: the loss at the top and, when there
/// are accuracies (in percent), a panel for them below it spanning 0–100 %
/// at least; with the picture's height. `heights`: the loss panel's and
/// the accuracy panel's.
pub fn panels(
    steps: impl Iterator<Item = f64>,
    losses: impl Iterator<Item = f64>,
    accuracies: impl Iterator<Item = f64>,
    log_y: bool,
    (loss_height, accuracy_height): (f64, f64),
) -> (Panel, Option<Panel>, f64) {
    let x = match min_max(steps) {
        Some((lo, hi)) => Axis::linear(lo, hi, 8, true),
        None => Axis::linear(0.0, 1.0, 8, true),
    };
    let loss_y = match min_max(losses) {
        Some((lo, hi)) if log_y => Axis::log(lo, hi),
        Some((lo, hi)) => Axis::linear(lo, hi, 6, false),
        None => Axis::linear(0.0, 1.0, 6, false),
    };
    let loss_panel = Panel {
        x: x.clone(),
        y: loss_y,
        top: TOP,
        height: loss_height,
    };
    let accuracy_panel = min_max(accuracies).map(|(lo, hi)| Panel {
        x,
        y: clamp(Axis::linear(lo, hi, 4, false), lo.min(0.0), hi.max(100.0)),
        top: TOP + loss_height + GAP,
        height: accuracy_height,
    });
    let height = match &accuracy_panel {
        Some(panel) => panel.bottom() + BOTTOM,
        None => loss_panel.bottom() + BOTTOM,
    };
    (loss_panel, accuracy_panel, height)
}

/// The loss panel: its frame (the x axis titled when it is the last
/// panel), the curves, a note when there are none, and the legend.
pub fn draw_losses(svg: &mut Svg, panel: &Panel, losses: &[Curve], log_y: bool, x_title: bool) {
    let title = if log_y { "loss (log scale)" } else { "loss" };
    draw_frame(svg, panel, title, x_title);
    for curve in losses {
        draw_curve(svg, panel, curve);
    }
    if losses.is_empty() {
        let (cx, cy) = panel.center();
        svg.text(cx, cy, "middle", " fill=\"#555\"", "no finite loss values");
    }
    draw_legend(svg, panel, losses);
}

/// A white picture `height` pixels high with `title` at the top.
pub fn start_svg(height: f64, title: &str) -> Svg {
    let mut svg = Svg::default();
    svg.put(format_args!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" \
         font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    ));
    svg.text(
        WIDTH / 2.0,
        28.0,
        "middle",
        " font-size=\"18\" font-weight=\"bold\"",
        title,
    );
    svg
}

/// Training loss, its moving average and eval loss, each downsampled; with
/// `log_y` also the number of values dropped for being ≤ 0.
fn loss_curves(metrics: &Metrics, log_y: bool) -> (Vec<Curve>, usize) {
    let mut non_positive = 0;
    let mut keep = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        let kept: Vec<_> = points
            .iter()
            .copied()
            .filter(|p| !log_y || p.1 > 0.0)
            .collect();
        non_positive += points.len() - kept.len();
        kept
    };
    let train = keep(&metrics.train_loss.points);
    let eval = keep(&metrics.eval_loss.points);
    let mut curves = Vec::new();
    if !train.is_empty() {
        let alone = train.len() == 1;
        let points = downsample(&train, MAX_POINTS);
        let label = "train loss".to_string();
        // A lone point gets the strong colour: the light one is meant as a backdrop.
        let color = if alone { TRAIN_SMOOTH } else { TRAIN_RAW };
        curves.push(Curve {
            points,
            label,
            color,
            width: 1.0,
            markers: alone,
        });
    }
    if train.len() >= MIN_POINTS_TO_SMOOTH {
        let window = (train.len() / SMOOTH_SHARE).max(5) | 1;
        let points = moving_average(&train, window, MAX_POINTS);
        let label = format!("train loss, mean of {window} points");
        curves.push(Curve {
            points,
            label,
            color: TRAIN_SMOOTH,
            width: 2.0,
            markers: false,
        });
    }
    if !eval.is_empty() {
        let markers = eval.len() <= MAX_MARKERS;
        let points = downsample(&eval, MAX_POINTS);
        let label = "eval loss".to_string();
        curves.push(Curve {
            points,
            label,
            color: EVAL_LOSS,
            width: 1.5,
            markers,
        });
    }
    (curves, non_positive)
}

/// One line under the title: how long the run went and where it ended.
fn subtitle(metrics: &Metrics, non_positive: usize) -> String {
    let mut parts = Vec::new();
    let train = &metrics.train_loss;
    if let Some(&(_, loss)) = train.points.last() {
        let steps = counted(train.points.len() + train.non_finite, "training step");
        parts.push(format!("{steps}, last loss {}", number(loss)));
    }
    if let Some(&(step, acc)) = metrics.eval_accuracy.points.last() {
        let step = grouped(step as u64);
        parts.push(format!("eval accuracy {:.2}% at step {step}", acc * 100.0));
    } else if let Some(&(step, loss)) = metrics.eval_loss.points.last() {
        parts.push(format!(
            "eval loss {} at step {}",
            number(loss),
            grouped(step as u64)
        ));
    }
    if metrics.non_finite() > 0 {
        let values = counted(metrics.non_finite(), "NaN/inf value");
        parts.push(format!("{values} skipped"));
    }
    if non_positive > 0 {
        let values = counted(non_positive, "value");
        parts.push(format!("{values} ≤ 0 left off the log scale"));
    }
    parts.join("  ·  ")
}

/// An axis cut back to `[lo, hi]`, so accuracy does not run past 0 or 100%.
pub(super) fn clamp(mut axis: Axis, lo: f64, hi: f64) -> Axis {
    let inside: Vec<bool> = axis.ticks.iter().map(|t| (lo..=hi).contains(t)).collect();
    let mut keep = inside.iter();
    axis.ticks.retain(|_| *keep.next().unwrap());
    let mut keep = inside.iter();
    axis.labels.retain(|_| *keep.next().unwrap());
    axis.lo = axis.lo.max(lo);
    axis.hi = axis.hi.min(hi);
    axis
}

pub(super) fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A value for the subtitle: four decimals, or scientific when tiny or huge.
pub(super) fn number(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// "1 value", "2 values", "1,000,000 values".
fn counted(n: usize, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {noun}{s}", grouped(n as u64))
}

/// A count with thousands separators: 1,000,000.
use dtl_compiler::tools::graph::group_digits as grouped;

#[cfg(test)]
mod tests {
    use super::super::metrics::Series;
    use super::*;
    use resvg::usvg::roxmltree;

    fn series(points: &[(f64, f64)]) -> Series {
        Series {
            points: points.to_vec(),
            non_finite: 0,
        }
    }

    fn chart(metrics: &Metrics, log_y: bool) -> String {
        let options = ChartOptions {
            title: "run <a & \"b\">".to_string(),
            log_y,
        };
        let svg = render_svg(metrics, &options);
        if let Err(e) = roxmltree::Document::parse(&svg) {
            panic!("not well-formed XML: {e}\n{svg}");
        }
        svg
    }

    fn sample() -> Metrics {
        let train: Vec<_> = (1..=400)
            .map(|s| (s as f64, 2.3 / s as f64 + 0.01))
            .collect();
        let evals = [(100.0, 0.2), (200.0, 0.12), (300.0, 0.1), (400.0, 0.08)];
        let accuracy = [(100.0, 0.93), (200.0, 0.95), (300.0, 0.96), (400.0, 0.97)];
        Metrics {
            train_loss: series(&train),
            eval_loss: series(&evals),
            eval_accuracy: series(&accuracy),
        }
    }

    #[test]
    fn well_formed_deterministic_and_escaped() {
        let m = sample();
        let svg = chart(&m, false);
        assert_eq!(svg, chart(&m, false));
        assert!(svg.contains(">run &lt;a &amp; &quot;b&quot;&gt;</text>"));
        for label in [
            "train loss",
            "train loss, mean of 11 points",
            "eval loss",
            "accuracy %",
            "step",
        ] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        assert!(svg.contains("eval accuracy 97.00% at step 400"));
        assert_eq!(svg.matches("<polyline").count(), 4);
    }

    #[test]
    fn without_eval_there_is_one_panel() {
        let m = Metrics {
            train_loss: sample().train_loss,
            ..Metrics::default()
        };
        let svg = chart(&m, false);
        assert!(!svg.contains("accuracy"));
        assert!(svg.contains("height=\"416\""));
        assert!(svg.contains(">step</text>"));
    }

    #[test]
    fn edge_cases_render() {
        let one = Metrics {
            train_loss: series(&[(1.0, 2.3)]),
            ..Metrics::default()
        };
        assert!(chart(&one, false).contains("<circle"));
        let flat: Vec<_> = (1..=50).map(|s| (s as f64, 0.5)).collect();
        let constant = Metrics {
            train_loss: series(&flat),
            ..Metrics::default()
        };
        assert!(chart(&constant, true).contains(">0.5</text>"));
        assert!(chart(&Metrics::default(), false).contains("no finite loss values"));
        let mut all_bad = Metrics::default();
        all_bad.eval_accuracy.non_finite = 2;
        assert!(chart(&all_bad, false).contains("2 NaN/inf values skipped"));
    }

    #[test]
    fn non_finite_and_non_positive_values_are_counted() {
        let mut m = sample();
        m.train_loss.non_finite = 3;
        m.train_loss.points[5].1 = 0.0;
        let svg = chart(&m, true);
        assert!(svg.contains("3 NaN/inf values skipped"));
        assert!(svg.contains("1 value ≤ 0 left off the log scale"));
        assert!(svg.contains(">loss (log scale)</text>"));
    }

    #[test]
    fn a_million_steps_stay_small() {
        let train: Vec<_> = (1..=1_000_000_i64)
            .map(|s| (s as f64, 1.0 + ((s * 7919) % 1000) as f64 / 1e4))
            .collect();
        let m = Metrics {
            train_loss: series(&train),
            ..Metrics::default()
        };
        let svg = chart(&m, false);
        assert!(svg.len() < 150_000, "{} bytes", svg.len());
        assert!(svg.contains(">1.0M</text>"));
        assert!(svg.contains("1,000,000 training steps"));
    }

    #[test]
    fn accuracy_axis_stops_at_100() {
        let m = Metrics {
            eval_accuracy: series(&[(1.0, 1.0), (2.0, 1.0)]),
            ..Metrics::default()
        };
        let svg = chart(&m, false);
        assert!(svg.contains(">100</text>"));
        assert!(!svg.contains(">105</text>") && !svg.contains(">110</text>"));
    }
}

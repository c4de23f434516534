//! Several runs on one chart (`dtl plot RUN1 RUN2 …`): each run one colour,
//! its training loss as a line (smoothed when long enough), its evaluation
//! loss as circles joined by a thin line, and its accuracy in a panel below
//! when any run has one.

use super::chart::{draw_losses, number, panels, start_svg, ChartOptions};
use super::metrics::{downsample, moving_average, Metrics};
use super::svg::{draw_curve, draw_frame, Curve, WIDTH};

/// Colours of the runs in order (matplotlib's `tab10`), then again.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
const LOSS_HEIGHT: f64 = 320.0;
const ACCURACY_HEIGHT: f64 = 180.0;
const MAX_POINTS: usize = 2000;
const MAX_MARKERS: usize = 60;
const MIN_POINTS_TO_SMOOTH: usize = 10;
const SMOOTH_SHARE: usize = 40;

/// One run to draw: its name in the legend and its metrics.
pub struct Run {
    pub name: String,
    pub metrics: Metrics,
}

/// Each run's curves in its colour: the losses, and the accuracies in
/// percent; with the count of values left off a log scale.
fn curves(runs: &[Run], options: &ChartOptions) -> (Vec<Curve>, Vec<Curve>, usize) {
    let mut losses = Vec::new();
    let mut accuracy = Vec::new();
    let mut left_off = 0;
    for (i, run) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let keep = |points: &[(f64, f64)], left_off: &mut usize| -> Vec<(f64, f64)> {
            let kept: Vec<_> = points
                .iter()
                .copied()
                .filter(|p| !options.log_y || p.1 > 0.0)
                .collect();
            *left_off += points.len() - kept.len();
            kept
        };
        let train = keep(&run.metrics.train_loss.points, &mut left_off);
        if !train.is_empty() {
            let points = if train.len() >= MIN_POINTS_TO_SMOOTH {
                let window = (train.len() / SMOOTH_SHARE).max(5) | 1;
                moving_average(&train, window, MAX_POINTS)
            } else {
                downsample(&train, MAX_POINTS)
            };
            losses.push(Curve {
                markers: points.len() == 1,
                points,
                label: format!("{} train", run.name),
                color,
                width: 2.0,
            });
        }
        let eval = keep(&run.metrics.eval_loss.points, &mut left_off);
        if !eval.is_empty() {
            losses.push(Curve {
                markers: eval.len() <= MAX_MARKERS,
                points: downsample(&eval, MAX_POINTS),
                label: format!("{} eval", run.name),
                color,
                width: 1.0,
            });
        }
        let acc: Vec<(f64, f64)> = run
            .metrics
            .eval_accuracy
            .points
            .iter()
            .map(|&(s, a)| (s, a * 100.0))
            .collect();
        if !acc.is_empty() {
            accuracy.push(Curve {
                markers: acc.len() <= MAX_MARKERS,
                points: downsample(&acc, MAX_POINTS),
                label: run.name.clone(),
                color,
                width: 1.5,
            });
        }
    }
    (losses, accuracy, left_off)
}

/// The overlay of `runs`, in their order.
pub fn render_compare(runs: &[Run], options: &ChartOptions) -> String {
    let (losses, accuracy, left_off) = curves(runs, options);
    let every = || losses.iter().chain(&accuracy).flat_map(|c| &c.points);
    let (loss_panel, accuracy_panel, height) = panels(
        every().map(|p| p.0),
        losses.iter().flat_map(|c| &c.points).map(|p| p.1),
        accuracy.iter().flat_map(|c| &c.points).map(|p| p.1),
        options.log_y,
        (LOSS_HEIGHT, ACCURACY_HEIGHT),
    );
    let mut svg = start_svg(height, &options.title);
    svg.text(
        WIDTH / 2.0,
        48.0,
        "middle",
        " fill=\"#555\"",
        &subtitle(runs, left_off),
    );
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
        for curve in &accuracy {
            draw_curve(&mut svg, panel, curve);
        }
    }
    svg.put(format_args!("</svg>\n"));
    svg.into_string()
}

/// The lowest final evaluation loss among the runs.
fn subtitle(runs: &[Run], left_off: usize) -> String {
    let mut parts = Vec::new();
    let last_eval = |r: &Run| r.metrics.eval_loss.points.last().map(|p| p.1);
    let best = runs
        .iter()
        .filter_map(|r| last_eval(r).map(|v| (v, &r.name)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((loss, name)) = best {
        parts.push(format!("lowest final eval loss {} ({name})", number(loss)));
    }
    if left_off > 0 {
        parts.push(format!("{left_off} values ≤ 0 left off the log scale"));
    }
    parts.join("  ·  ")
}

#[cfg(test)]
mod tests {
    use super::super::metrics::Series;
    use super::*;

    fn run(name: &str, scale: f64) -> Run {
        let train: Vec<_> = (1..=100).map(|s| (s as f64, scale / s as f64)).collect();
        Run {
            name: name.into(),
            metrics: Metrics {
                train_loss: Series {
                    points: train,
                    non_finite: 0,
                },
                eval_loss: Series {
                    points: vec![(50.0, scale / 40.0), (100.0, scale / 90.0)],
                    non_finite: 0,
                },
                eval_accuracy: Series {
                    points: vec![(50.0, 0.9), (100.0, 0.95)],
                    non_finite: 0,
                },
            },
        }
    }

    #[test]
    fn each_run_has_its_colour_and_legend() {
        let options = ChartOptions {
            title: "2 runs".into(),
            log_y: false,
        };
        let svg = render_compare(&[run("a", 2.0), run("b", 1.0)], &options);
        resvg::usvg::roxmltree::Document::parse(&svg).expect("well-formed XML");
        for label in [
            ">a train<",
            ">a eval<",
            ">b train<",
            ">b eval<",
            ">accuracy %<",
        ] {
            assert!(svg.contains(label), "{label}");
        }
        assert!(svg.contains("lowest final eval loss 0.0111 (b)"));
        // Train, eval and accuracy for each: six lines, two colours.
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches("stroke=\"#1f77b4\" stroke-width").count(), 5);
        assert_eq!(svg.matches("stroke=\"#ff7f0e\" stroke-width").count(), 5);
    }
}

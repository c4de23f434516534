//! A pipeline schedule on a cluster (`dtl graph --timeline --cluster`):
//! one round of micro-batches with every pass as long as the prediction
//! costs it on that stage ([`crate::tools::predict::piece_times`]), the
//! gaps between stages the activations' transfers, on an axis of
//! milliseconds; the caption gives the round, what the step does once
//! after its rounds (the collectives, the optimizer) and the step.

use std::fmt::Write;

use super::placement::Rect;
use super::svg::{rect, text};
use super::timeline::{timed, PipeOp, PipelineSchedule, Timed};
use super::timeline_svg::{
    caption_svg, height_with_caption, pass_box, CAPTION_FONT, GRID_TOP, LABELS_W, MARGIN, ROW_GAP,
};
use super::{num, text_width, FONT};
use crate::tools::predict::{seconds, PieceTimes, Prediction};

/// The round's width on the page.
const GRID_W: f64 = 960.0;
const ROW_H: f64 = 28.0;

/// What the timeline of a predicted step shows.
pub struct TimedStep<'a> {
    pub stages: u32,
    pub micro_batches: u32,
    pub schedule: PipelineSchedule,
    /// Rounds of micro-batches a step (`accumulate`).
    pub rounds: u64,
    /// Each stage's piece, as the prediction costs it.
    pub pieces: &'a [PieceTimes],
    pub prediction: &'a Prediction,
}

/// One round of the schedule, each pass drawn as long as it is predicted
/// to take, as an SVG timeline.
pub fn timed_timeline_svg(step: &TimedStep) -> String {
    let piece = |s: usize| {
        step.pieces.get(s).copied().unwrap_or(PieceTimes {
            forward: 0.0,
            backward: 0.0,
            send: 0.0,
        })
    };
    let took = |s: usize, pass| match pass {
        PipeOp::Backward { .. } => piece(s).backward,
        _ => piece(s).forward,
    };
    let rows = timed(step.stages, step.micro_batches, step.schedule, took, |s| {
        piece(s).send
    });
    let round = rows
        .iter()
        .filter_map(|r| r.last().map(|p| p.end))
        .fold(0.0, f64::max);
    let title = format!(
        "{} schedule on {}: {} stages × {} micro-batches, as predicted",
        step.schedule.name(),
        step.prediction.cluster,
        step.stages,
        step.micro_batches
    );
    let caption = caption(step, &rows, round);
    let grid_h = rows.len() as f64 * (ROW_H + ROW_GAP);
    let widest = caption
        .iter()
        .map(|line| text_width(line, CAPTION_FONT, false))
        .chain([text_width(&title, 16.0, true)])
        .fold(LABELS_W + GRID_W, f64::max);
    let (width, height) = (
        2.0 * MARGIN + widest,
        height_with_caption(GRID_TOP + grid_h + 30.0, caption.len()),
    );
    let (w, h) = (num(width), num(height));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT}\">"
    );
    let _ = writeln!(out, "<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>");
    let bold = "font-weight=\"bold\"";
    text(&mut out, MARGIN, MARGIN + 14.0, 16.0, "start", bold, &title);
    let left = MARGIN + LABELS_W;
    let scale = if round.is_finite() && round > 0.0 {
        GRID_W / round
    } else {
        0.0
    };
    axis(&mut out, left, round, scale, GRID_TOP + grid_h);
    for (s, row) in rows.iter().enumerate() {
        let y = GRID_TOP + s as f64 * (ROW_H + ROW_GAP);
        let lane = Rect {
            x: left,
            y,
            w: GRID_W,
            h: ROW_H,
        };
        rect(&mut out, &lane, 0.0, "fill=\"#f3f4f6\"");
        let label = format!("stage {s}");
        text(
            &mut out,
            left - 10.0,
            y + ROW_H / 2.0 + 4.0,
            12.0,
            "end",
            "",
            &label,
        );
        // Nothing to scale a round of no time, or of no end, by.
        for pass in row.iter().filter(|_| scale > 0.0) {
            pass_svg(&mut out, pass, (left, y, scale), step.micro_batches);
        }
    }
    caption_svg(&mut out, GRID_TOP + grid_h + 30.0, &caption);
    out
}

/// The time axis under the lanes: ticks at a round number of
/// milliseconds (or microseconds), 4 to 10 of them.
fn axis(out: &mut String, left: f64, round: f64, scale: f64, bottom: f64) {
    if !(round.is_finite() && round > 0.0) {
        return;
    }
    let raw = round / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let tick = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|t| round / t <= 10.0)
        .unwrap_or(10.0 * magnitude);
    let grey = "fill=\"#6b7280\"";
    if !(tick.is_finite() && tick > 0.0) {
        return;
    }
    let mut at = 0.0;
    while at <= round * (1.0 + 1e-9) && at / tick < 12.0 {
        let x = left + at * scale;
        let _ = writeln!(
            out,
            "<line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\" stroke=\"#d1d5db\"/>",
            x = num(x),
            y0 = num(GRID_TOP - 4.0),
            y1 = num(bottom)
        );
        let label = match at {
            0.0 => "0".to_string(),
            at => seconds(at),
        };
        text(out, x, bottom + 14.0, 10.0, "middle", grey, &label);
        at += tick;
    }
}

/// A pass's box, `F3`/`B3` inside when it is wide enough.
fn pass_svg(out: &mut String, pass: &Timed, (left, y, scale): (f64, f64, f64), micro_batches: u32) {
    let cell = Rect {
        x: left + pass.start * scale,
        y,
        w: ((pass.end - pass.start) * scale - 1.0).max(1.0),
        h: ROW_H,
    };
    pass_box(out, &cell, (pass.op, micro_batches), 2.0, false);
}

/// The caption: the round and how idle its stages are, each stage's
/// piece, what the step does after its rounds, and the step.
fn caption(step: &TimedStep, rows: &[Vec<Timed>], round: f64) -> Vec<String> {
    if rows.iter().all(Vec::is_empty) {
        return vec![
            "Nothing to schedule: a pipeline needs at least one stage and one micro-batch.".into(),
        ];
    }
    let busy: f64 = rows.iter().flatten().map(|p| p.end - p.start).sum();
    let idle = match round.is_finite() && round > 0.0 {
        true => 1.0 - busy / (round * rows.len() as f64),
        false => 0.0,
    };
    let mut lines = vec![format!(
        "One round of {} micro-batches takes {} ({} a step); the stages are idle {:.1}% of it (the bubble, and waiting on slower stages and transfers).",
        step.micro_batches,
        seconds(round),
        match step.rounds {
            1 => "1 round".to_string(),
            r => format!("{r} rounds"),
        },
        100.0 * idle
    )];
    for (s, p) in step.pieces.iter().enumerate().take(8) {
        let send = match p.send > 0.0 {
            true => format!(", activations to stage {} {}", s + 1, seconds(p.send)),
            false => String::new(),
        };
        lines.push(format!(
            "Stage {s}: forward {}, backward {} a micro-batch{send}.",
            seconds(p.forward),
            seconds(p.backward)
        ));
    }
    let after: Vec<String> = step
        .prediction
        .parts
        .iter()
        .filter(|p| {
            !p.name.starts_with("compute")
                && p.name != "activations between stages"
                && p.name != "pipeline bubble"
        })
        .map(|p| format!("{} {}", p.name, seconds(p.seconds)))
        .collect();
    if !after.is_empty() {
        lines.push(format!("Then, once a step: {}.", after.join("; ")));
    }
    lines.push(format!(
        "The step: {} predicted, {:.1} samples/s, its bubble counted as (stages − 1) of the slowest stage's pieces, where this round runs each stage at its own pace (`dtl explain --cluster` lists the parts).",
        seconds(step.prediction.step_seconds),
        step.prediction.samples_per_second
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::super::wellformed::check;
    use super::*;

    /// 2 stages × 2 micro-batches under GPipe, each forward 1 ms, each
    /// backward 2 ms, 0.5 ms between the stages. By hand: stage 0 runs F0
    /// 0–1, F1 1–2; stage 1 F0 1.5–2.5, F1 2.5–3.5, B0 3.5–5.5, B1 5.5–7.5;
    /// stage 0 B0 6–8, B1 8–10. The round: 10 ms, each stage busy 6.
    #[test]
    fn passes_take_their_predicted_time() {
        let piece = PieceTimes {
            forward: 1e-3,
            backward: 2e-3,
            send: 0.5e-3,
        };
        let prediction = Prediction {
            cluster: "a test cluster".into(),
            step_seconds: 12e-3,
            samples_per_second: 1000.0,
            mfu: 0.5,
            parts: vec![crate::tools::predict::Part {
                name: "optimizer step".into(),
                seconds: 2e-3,
                link: "memory",
            }],
            memory: crate::tools::predict::MemoryFit {
                per_rank_bytes: 1,
                device_bytes: 2,
            },
        };
        let step = TimedStep {
            stages: 2,
            micro_batches: 2,
            schedule: PipelineSchedule::Gpipe,
            rounds: 1,
            pieces: &[piece, piece],
            prediction: &prediction,
        };
        let svg = timed_timeline_svg(&step);
        check(&svg).unwrap();
        assert!(svg.contains("takes 10.000 ms (1 round a step)"), "{svg}");
        assert!(svg.contains("idle 40.0%"), "{svg}");
        assert!(svg.contains("Then, once a step: optimizer step 2.000 ms."));
        assert!(svg.contains("Stage 0: forward 1.000 ms, backward 2.000 ms a micro-batch, activations to stage 1 500.0 µs."));
        // Widths in proportion: 960 px for 10 ms, a forward 96 px (less
        // the 1 px between boxes), a backward 192.
        assert!(
            svg.contains("width=\"95.0\"") && svg.contains("width=\"191.0\""),
            "{svg}"
        );
        // Passes that take no time, or forever (a cluster whose peak is
        // all but 0): a drawing, not a hang.
        for t in [0.0, f64::INFINITY] {
            let still = PieceTimes {
                forward: t,
                backward: t,
                send: 0.0,
            };
            let step = TimedStep {
                pieces: &[still, still],
                ..step
            };
            check(&timed_timeline_svg(&step)).unwrap();
        }
        let rows = timed(
            2,
            2,
            PipelineSchedule::Gpipe,
            |_, p| match p {
                PipeOp::Backward { .. } => 2.0,
                _ => 1.0,
            },
            |_| 0.5,
        );
        let spans: Vec<Vec<(f64, f64)>> = rows
            .iter()
            .map(|r| r.iter().map(|p| (p.start, p.end)).collect())
            .collect();
        assert_eq!(
            spans,
            [
                vec![(0.0, 1.0), (1.0, 2.0), (6.0, 8.0), (8.0, 10.0)],
                vec![(1.5, 2.5), (2.5, 3.5), (3.5, 5.5), (5.5, 7.5)]
            ]
        );
    }
}

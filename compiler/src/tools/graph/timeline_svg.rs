//! A pipeline schedule drawn as a timeline: one row per stage, one column
//! per time slot, `F3`/`B3` boxes coloured by micro-batch, idle slots
//! hatched, and a caption with the bubble and the assumptions.

use std::fmt::Write;

use super::placement::Rect;
use super::svg::{rect, text};
use super::timeline::{peak_in_flight, timeline, PipeOp, PipelineSchedule, Slot};
use super::{num, text_width, FONT};
use crate::plan::parallel::bubble;

// Shared with the timed timeline ([`super::timed_svg`]).
pub(super) const MARGIN: f64 = 20.0;
const CELL_W: f64 = 34.0;
const CELL_H: f64 = 28.0;
pub(super) const ROW_GAP: f64 = 4.0;
/// Room left of the grid for `stage 12`.
pub(super) const LABELS_W: f64 = 64.0;
pub(super) const GRID_TOP: f64 = MARGIN + 52.0;
pub(super) const CAPTION_FONT: f64 = 12.0;
const CAPTION_LINE: f64 = 18.0;

/// The schedule of `micro_batches` micro-batches through `stages` stages as
/// an SVG timeline, with the bubble fraction in the caption.
pub fn timeline_svg(stages: u32, micro_batches: u32, schedule: PipelineSchedule) -> String {
    let rows = timeline(stages, micro_batches, schedule);
    let slots = rows.first().map_or(0, Vec::len);
    let title = format!(
        "{} schedule: {stages} stages × {micro_batches} micro-batches",
        schedule.name()
    );
    let caption = caption(stages, micro_batches, schedule, &rows);
    let grid_w = LABELS_W + slots as f64 * CELL_W;
    let grid_h = rows.len() as f64 * (CELL_H + ROW_GAP);
    let widest = caption
        .iter()
        .map(|line| text_width(line, CAPTION_FONT, false))
        .chain([text_width(&title, 16.0, true)])
        .fold(grid_w, f64::max);
    let (width, height) = (
        2.0 * MARGIN + widest,
        height_with_caption(GRID_TOP + grid_h + 14.0, caption.len()),
    );
    let mut out = String::new();
    let (w, h) = (num(width), num(height));
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT}\">"
    );
    out.push_str("<defs><pattern id=\"dtl-idle\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">");
    out.push_str("<rect width=\"6\" height=\"6\" fill=\"#ffffff\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#d4d4d4\" stroke-width=\"2\"/>");
    out.push_str("</pattern></defs>\n");
    let _ = writeln!(out, "<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>");
    text(
        &mut out,
        MARGIN,
        MARGIN + 14.0,
        16.0,
        "start",
        "font-weight=\"bold\"",
        &title,
    );
    let left = MARGIN + LABELS_W;
    let grey = "fill=\"#6b7280\"";
    if slots > 0 {
        text(
            &mut out,
            left - 10.0,
            GRID_TOP - 8.0,
            10.0,
            "end",
            grey,
            "time slot",
        );
    }
    for t in 0..slots {
        let x = left + (t as f64 + 0.5) * CELL_W;
        text(
            &mut out,
            x,
            GRID_TOP - 8.0,
            10.0,
            "middle",
            grey,
            &t.to_string(),
        );
    }
    for (s, row) in rows.iter().enumerate() {
        let y = GRID_TOP + s as f64 * (CELL_H + ROW_GAP);
        let label = format!("stage {s}");
        text(
            &mut out,
            left - 10.0,
            y + CELL_H / 2.0 + 4.0,
            12.0,
            "end",
            "",
            &label,
        );
        for (t, slot) in row.iter().enumerate() {
            let cell = Rect {
                x: left + t as f64 * CELL_W + 1.0,
                y,
                w: CELL_W - 2.0,
                h: CELL_H,
            };
            cell_svg(&mut out, &cell, *slot, micro_batches);
        }
    }
    caption_svg(&mut out, GRID_TOP + grid_h + 14.0, &caption);
    out
}

/// The caption's lines from `top` down, and the end of the picture.
pub(super) fn caption_svg(out: &mut String, top: f64, caption: &[String]) {
    let mut y = top + CAPTION_FONT;
    for line in caption {
        text(
            out,
            MARGIN,
            y,
            CAPTION_FONT,
            "start",
            "fill=\"#333333\"",
            line,
        );
        y += CAPTION_LINE;
    }
    out.push_str("</svg>\n");
}

/// The height of a picture whose caption of `lines` starts at `top`.
pub(super) fn height_with_caption(top: f64, lines: usize) -> f64 {
    top + lines as f64 * CAPTION_LINE + MARGIN
}

fn cell_svg(out: &mut String, cell: &Rect, slot: Option<Slot>, micro_batches: u32) {
    match slot {
        None => rect(out, cell, 3.0, "fill=\"url(#dtl-idle)\" stroke=\"#e0e0e0\""),
        Some(pass) => pass_box(out, cell, (pass, micro_batches), 3.0, true),
    }
}

/// A pass's box, coloured by its micro-batch (light forward, dark
/// backward), `F3`/`B3` inside: always, or when the box is wide enough.
pub(super) fn pass_box(
    out: &mut String,
    cell: &Rect,
    (pass, micro_batches): (Slot, u32),
    radius: f64,
    always_label: bool,
) {
    let (label, m, forward) = match pass {
        PipeOp::Forward { micro_batch } => (format!("F{micro_batch}"), micro_batch, true),
        PipeOp::Backward { micro_batch } => (format!("B{micro_batch}"), micro_batch, false),
        transfer => unreachable!("a timeline holds passes only, not {transfer:?}"),
    };
    let fill = colour(m as u32, micro_batches, forward);
    let stroke = colour(m as u32, micro_batches, false);
    rect(
        out,
        cell,
        radius,
        &format!("fill=\"{fill}\" stroke=\"{stroke}\""),
    );
    if always_label || cell.w >= text_width(&label, 11.0, true) + 4.0 {
        let ink = if forward { "#1f2937" } else { "#ffffff" };
        let style = format!("fill=\"{ink}\" font-weight=\"bold\"");
        text(
            out,
            cell.cx(),
            cell.cy() + 4.0,
            11.0,
            "middle",
            &style,
            &label,
        );
    }
}

/// The caption lines: the bubble with its formula, the timing assumption,
/// how to read the boxes, and the activations each stage holds.
fn caption(
    stages: u32,
    micro_batches: u32,
    schedule: PipelineSchedule,
    rows: &[Vec<Option<Slot>>],
) -> Vec<String> {
    if stages == 0 || micro_batches == 0 {
        return vec![
            "Nothing to schedule: a pipeline needs at least one stage and one micro-batch.".into(),
        ];
    }
    let (num_, den) = bubble(stages as u64, micro_batches as u64);
    let percent = 100.0 * num_ as f64 / den as f64;
    let order = match schedule {
        PipelineSchedule::Gpipe => "GPipe: every stage runs all its forwards, then all its backwards.".to_string(),
        PipelineSchedule::OneFOneB => "1F1B: stage s runs stages − s − 1 warm-up forwards, then one forward and one backward in turn, then the remaining backwards.".to_string(),
    };
    let peaks: Vec<String> = peak_in_flight(rows).iter().map(u32::to_string).collect();
    vec![
        format!(
            "Bubble = (stages − 1) / (micro-batches + stages − 1) = {num_}/{den} = {percent:.1}% of every stage's time idle (hatched)."
        ),
        format!(
            "Assumes a backward pass takes as long as a forward pass (one slot each): the step takes 2 × ({micro_batches} + {stages} − 1) = {} slots.",
            rows.first().map_or(0, Vec::len)
        ),
        "F3 / B3: forward / backward of micro-batch 3, counting from 0; light forward, dark backward, one hue per micro-batch.".into(),
        format!("Most micro-batches in flight (activations held) per stage: {}.", peaks.join(", ")),
        order,
    ]
}

/// Micro-batch `m`'s colour: hues evenly around the wheel from blue, light
/// for the forward pass and dark for the backward.
fn colour(m: u32, micro_batches: u32, forward: bool) -> String {
    let hue = (210.0 + 360.0 * m as f64 / micro_batches.max(1) as f64) % 360.0;
    if forward {
        hsl_hex(hue, 0.70, 0.84)
    } else {
        hsl_hex(hue, 0.55, 0.38)
    }
}

/// `#rrggbb` for a hue in degrees and saturation, lightness in [0, 1].
fn hsl_hex(hue: f64, saturation: f64, lightness: f64) -> String {
    let c = (1.0 - (2.0 * lightness - 1.0).abs()) * saturation;
    let h = hue / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = lightness - c / 2.0;
    let byte = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

#[cfg(test)]
mod tests {
    use super::super::wellformed::check;
    use super::*;

    #[test]
    fn colours_are_hex() {
        assert_eq!(hsl_hex(0.0, 1.0, 0.5), "#ff0000");
        assert_eq!(hsl_hex(120.0, 1.0, 0.5), "#00ff00");
        assert_eq!(hsl_hex(240.0, 1.0, 0.5), "#0000ff");
    }

    #[test]
    fn timelines_are_well_formed_and_state_the_bubble() {
        for schedule in [PipelineSchedule::Gpipe, PipelineSchedule::OneFOneB] {
            for (s, m) in [(4, 8), (1, 3), (3, 1), (0, 2), (2, 0)] {
                let svg = timeline_svg(s, m, schedule);
                check(&svg).unwrap_or_else(|e| panic!("{s}×{m}: {e}"));
                assert_eq!(svg, timeline_svg(s, m, schedule), "deterministic");
            }
        }
        let svg = timeline_svg(4, 8, PipelineSchedule::OneFOneB);
        assert!(svg.contains("= 3/11 = 27.3%"), "{svg}");
        assert!(svg.contains("as long as a forward pass"));
        assert!(svg.contains(">F7</text>") && svg.contains(">B0</text>"));
        assert!(svg.contains("per stage: 4, 3, 2, 1."));
        assert_eq!(svg.matches("url(#dtl-idle)").count(), 4 * 3 * 2);
    }
}

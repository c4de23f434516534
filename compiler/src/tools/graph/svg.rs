//! The model graph as a standalone SVG file, laid out by `layout` and
//! `route`: a title, a legend of pipeline stages, module boxes, edges with
//! their shapes, and one box per node.

use std::fmt::Write;

use super::placement::{Rect, DETAIL_FONT, LABEL_FONT, TITLE_FONT};
use super::route::{draw, Drawing, CAPTION_FONT};
use super::{num, text_width, xml_escape, Graph, FONT};
use crate::plan::Plan;

const MARGIN: f64 = 20.0;
/// Title and subtitle.
const HEADER_H: f64 = 52.0;
const LEGEND_H: f64 = 28.0;
const SWATCH: f64 = 14.0;
/// Module backgrounds by nesting depth; deeper modules are darker.
const CLUSTER_FILLS: [&str; 4] = ["#f6f7f9", "#eceef2", "#e2e5eb", "#d8dce4"];
const INK: &str = "#222222";
const EDGE_INK: &str = "#666666";
const BOX_STROKE: &str = "#5a6b7d";

/// The model graph drawn as SVG. `stage_of[i]` is the pipeline stage of plan
/// node `i` (missing entries count as stage 0); with more than one stage,
/// boxes are filled by stage and a legend lists the stages.
pub fn model_svg(plan: &Plan, stage_of: &[u64]) -> String {
    let graph = Graph::of(plan, stage_of);
    let drawing = draw(&graph);
    let legend_w = legend_width(&graph);
    let top = MARGIN
        + HEADER_H
        + if graph.legend.is_empty() {
            0.0
        } else {
            LEGEND_H
        };
    let width = 2.0 * MARGIN
        + drawing
            .width
            .max(text_width(&graph.title, 16.0, true))
            .max(text_width(&graph.subtitle, 12.0, false))
            .max(legend_w);
    let height = top + drawing.height + MARGIN;
    let mut out = String::new();
    header(&mut out, &graph, width, height);
    legend(&mut out, &graph, MARGIN + HEADER_H);
    let _ = writeln!(
        out,
        "<g transform=\"translate({},{})\">",
        num(MARGIN),
        num(top)
    );
    module_boxes(&mut out, &graph, &drawing);
    for route in &drawing.routes {
        let _ = writeln!(
            out,
            "<path d=\"{}\" fill=\"none\" stroke=\"{EDGE_INK}\" stroke-width=\"1.2\" marker-end=\"url(#dtl-arrow)\"/>",
            route.path
        );
    }
    node_boxes(&mut out, &graph, &drawing);
    edge_labels(&mut out, &graph, &drawing);
    out.push_str("</g>\n</svg>\n");
    out
}

/// The opening tag, the arrowhead, the white page, the title and the
/// subtitle.
fn header(out: &mut String, graph: &Graph, width: f64, height: f64) {
    let (w, h) = (num(width), num(height));
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT}\">"
    );
    out.push_str("<defs><marker id=\"dtl-arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\">");
    let _ = writeln!(
        out,
        "<path d=\"M0,0 L10,5 L0,10 z\" fill=\"{EDGE_INK}\"/></marker></defs>"
    );
    let _ = writeln!(out, "<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>");
    text(
        out,
        MARGIN,
        MARGIN + 14.0,
        16.0,
        "start",
        "font-weight=\"bold\"",
        &graph.title,
    );
    text(
        out,
        MARGIN,
        MARGIN + 32.0,
        12.0,
        "start",
        "fill=\"#555555\"",
        &graph.subtitle,
    );
}

/// Each module's background, darker the deeper it nests, with its path.
fn module_boxes(out: &mut String, graph: &Graph, drawing: &Drawing) {
    for (cluster, r) in graph.clusters.iter().zip(&drawing.clusters) {
        let fill = CLUSTER_FILLS[(cluster.depth - 1).min(CLUSTER_FILLS.len() - 1)];
        rect(out, r, 8.0, &format!("fill=\"{fill}\" stroke=\"#c4c9d2\""));
        let (x, y) = (r.x + 8.0, r.y + 12.0);
        text(
            out,
            x,
            y,
            CAPTION_FONT,
            "start",
            "fill=\"#6b7280\"",
            &cluster.path,
        );
    }
}

/// One box per node: its title, and its op and parameters below.
fn node_boxes(out: &mut String, graph: &Graph, drawing: &Drawing) {
    for (b, r) in graph.boxes.iter().zip(&drawing.boxes) {
        let radius = if b.terminal { r.h / 2.0 } else { 6.0 };
        rect(
            out,
            r,
            radius,
            &format!("fill=\"{}\" stroke=\"{BOX_STROKE}\"", b.fill),
        );
        let bold = "font-weight=\"bold\"";
        match &b.detail {
            Some(detail) => {
                text(
                    out,
                    r.cx(),
                    r.cy() - 2.0,
                    TITLE_FONT,
                    "middle",
                    bold,
                    &b.title,
                );
                let muted = "fill=\"#333333\"";
                text(
                    out,
                    r.cx(),
                    r.cy() + 12.0,
                    DETAIL_FONT,
                    "middle",
                    muted,
                    detail,
                );
            }
            None => text(
                out,
                r.cx(),
                r.cy() + 4.0,
                TITLE_FONT,
                "middle",
                bold,
                &b.title,
            ),
        }
    }
}

/// The shapes on the edges, drawn after everything else and on a white
/// halo, so that a crossing line cannot hide them.
fn edge_labels(out: &mut String, graph: &Graph, drawing: &Drawing) {
    let halo = "fill=\"#333333\" stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\"";
    for (route, edge) in drawing.routes.iter().zip(&graph.edges) {
        let anchor = if route.label_end { "end" } else { "start" };
        text(
            out,
            route.label_x,
            route.label_y,
            LABEL_FONT,
            anchor,
            halo,
            &edge.label,
        );
    }
}

fn legend_width(graph: &Graph) -> f64 {
    if graph.legend.is_empty() {
        return 0.0;
    }
    let entries: f64 = graph
        .legend
        .iter()
        .map(|(s, _)| SWATCH + 6.0 + text_width(&format!("stage {s}"), 12.0, false) + 18.0)
        .sum();
    text_width("pipeline stages:", 12.0, false) + 10.0 + entries
}

/// One row: `pipeline stages: ■ stage 0 ■ stage 1 …`.
fn legend(out: &mut String, graph: &Graph, y: f64) {
    if graph.legend.is_empty() {
        return;
    }
    let baseline = y + 11.0;
    text(
        out,
        MARGIN,
        baseline,
        12.0,
        "start",
        "fill=\"#555555\"",
        "pipeline stages:",
    );
    let mut x = MARGIN + text_width("pipeline stages:", 12.0, false) + 10.0;
    for (stage, fill) in &graph.legend {
        let swatch = Rect {
            x,
            y,
            w: SWATCH,
            h: SWATCH,
        };
        rect(
            out,
            &swatch,
            3.0,
            &format!("fill=\"{fill}\" stroke=\"{BOX_STROKE}\""),
        );
        let label = format!("stage {stage}");
        text(out, x + SWATCH + 6.0, baseline, 12.0, "start", "", &label);
        x += SWATCH + 6.0 + text_width(&label, 12.0, false) + 18.0;
    }
}

pub(super) fn rect(out: &mut String, r: &Rect, radius: f64, style: &str) {
    let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\" {style}/>",
        num(r.x),
        num(r.y),
        num(r.w),
        num(r.h),
        num(radius)
    );
}

/// One line of text; `style` is extra attributes, already escaped.
pub(super) fn text(
    out: &mut String,
    x: f64,
    y: f64,
    size: f64,
    anchor: &str,
    style: &str,
    content: &str,
) {
    let style = if style.is_empty() {
        format!("fill=\"{INK}\"")
    } else if style.contains("fill=") {
        style.to_string()
    } else {
        format!("fill=\"{INK}\" {style}")
    };
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"{anchor}\" {style}>{}</text>",
        num(x),
        num(y),
        num(size),
        xml_escape(content)
    );
}

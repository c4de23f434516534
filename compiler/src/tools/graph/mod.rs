//! Pictures of a plan, behind `dtl graph`: the model's dataflow graph as
//! Graphviz DOT ([`model_dot`]) or as SVG drawn with our own layout
//! ([`model_svg`]), and a pipeline schedule as a timeline ([`timeline_svg`]).
//!
//! Text generation only: no I/O, no dependency beyond the plan types, and the
//! same input always gives the same bytes, so pictures can be golden-tested.
//! Running Graphviz or rasterising SVG is the caller's business.
//!
//! The steps of a model picture: `clusters` groups nodes by module path, the
//! `Graph` below is what both renderers draw (boxes, labelled edges, module
//! clusters, stage colours), `layout` places it for SVG (with `order` and
//! `position`, on the types in `placement`) and `route` draws its edges and
//! module boxes.

mod clusters;
mod dot;
mod layout;
mod order;
mod placement;
mod position;
mod route;
mod svg;
mod timed_svg;
mod timeline;
mod timeline_svg;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wellformed;

pub use dot::model_dot;
pub use svg::model_svg;
pub use timed_svg::{timed_timeline_svg, TimedStep};
pub use timeline::{timed, timeline, PipelineSchedule, Slot, Timed};
pub use timeline_svg::timeline_svg;

use crate::plan::{shape_to_string, ModelPlan, Plan};
use clusters::Cluster;

/// Node fill when the whole model is one pipeline stage.
const NEUTRAL_FILL: &str = "#dde6f0";
/// Stage fills, in stage order; more stages than colours reuse them.
const STAGE_FILLS: [&str; 8] = [
    "#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#fb9a99", "#ffff99", "#8dd3c7", "#d9d9d9",
];
/// The output marker below the result node.
const OUTPUT_FILL: &str = "#ffffff";

/// What both renderers draw: one box per plan node plus an `output` marker
/// at the end, edges labelled with the shape they carry, module clusters.
struct Graph {
    title: String,
    subtitle: String,
    boxes: Vec<GraphBox>,
    edges: Vec<GraphEdge>,
    clusters: Vec<Cluster>,
    /// `(stage, fill)` for the legend; empty with a single stage.
    legend: Vec<(u32, &'static str)>,
}

struct GraphBox {
    /// Bold first line: the node's module path.
    title: String,
    /// Second line: op kind and parameter count; `None` when it would only
    /// repeat the title (`input`, `output`).
    detail: Option<String>,
    fill: &'static str,
    /// Drawn as a pill: the model's input and output.
    terminal: bool,
    /// Innermost module cluster.
    cluster: Option<usize>,
}

struct GraphEdge {
    from: usize,
    to: usize,
    label: String,
}

impl Graph {
    fn of(plan: &Plan, stage_of: &[u64]) -> Graph {
        let model = &plan.model;
        let (clusters, cluster_of) = clusters::clusters(model);
        let stage = |i: usize| stage_of.get(i).copied().unwrap_or(0) as u32;
        let mut stages: Vec<u32> = (0..model.nodes.len()).map(stage).collect();
        stages.sort_unstable();
        stages.dedup();
        let fill = |s: u32| {
            if stages.len() > 1 {
                STAGE_FILLS[s as usize % STAGE_FILLS.len()]
            } else {
                NEUTRAL_FILL
            }
        };
        let mut boxes: Vec<GraphBox> = model
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let kind = node.op.kind();
                let params = node_parameters(model, i);
                let detail = match params {
                    0 if kind == node.name => None,
                    0 => Some(kind.to_string()),
                    1 => Some(format!("{kind} (1 param)")),
                    n => Some(format!("{kind} ({} params)", group_digits(n))),
                };
                GraphBox {
                    title: node.name.clone(),
                    detail,
                    fill: fill(stage(i)),
                    terminal: i == 0 && node.inputs.is_empty(),
                    cluster: cluster_of[i],
                }
            })
            .collect();
        let mut edges = Vec::new();
        for (to, node) in model.nodes.iter().enumerate() {
            for &from in &node.inputs {
                let label = shape_to_string(&model.nodes[from].output);
                edges.push(GraphEdge { from, to, label });
            }
        }
        if model.result < model.nodes.len() {
            edges.push(GraphEdge {
                from: model.result,
                to: boxes.len(),
                label: shape_to_string(&model.output),
            });
            boxes.push(GraphBox {
                title: "output".into(),
                detail: None,
                fill: OUTPUT_FILL,
                terminal: true,
                cluster: None,
            });
        }
        let legend = if stages.len() > 1 {
            stages.iter().map(|&s| (s, fill(s))).collect()
        } else {
            Vec::new()
        };
        Graph {
            title: model.name.clone(),
            subtitle: format!(
                "{} parameters, {} nodes",
                group_digits(model.parameter_count),
                model.nodes.len()
            ),
            boxes,
            edges,
            clusters,
            legend,
        }
    }
}

/// Trainable scalars in the parameters node `i`'s op names (buffers, such
/// as batch_norm's running statistics, are not trainable and not counted).
/// A layer used twice shows its weights at both uses.
fn node_parameters(model: &ModelPlan, i: usize) -> u64 {
    let named = model.nodes[i].op.params();
    model
        .parameters
        .iter()
        .filter(|p| named.contains(&p.name.as_str()))
        .map(|p| p.shape.iter().product::<i64>().max(0) as u64)
        .sum()
}

/// `20266` → `20,266` (also `dtl plot`'s).
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text for XML content and attribute values (also `dtl plot`'s).
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate with one decimal, so output does not depend on float noise
/// in the last digits (and never prints `-0.0`).
fn num(x: f64) -> String {
    format!("{:.1}", (x * 10.0).round() / 10.0 + 0.0)
}

/// Estimated width of `text` in pixels: SVG cannot measure text, so layout
/// assumes a sans-serif font whose average glyph is this wide.
fn text_width(text: &str, font_size: f64, bold: bool) -> f64 {
    let per_char = if bold { 0.64 } else { 0.6 };
    text.chars().count() as f64 * font_size * per_char
}

/// Font used by every SVG picture.
const FONT: &str = "Helvetica, Arial, sans-serif";

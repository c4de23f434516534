//! The model graph as Graphviz DOT, for `dot -Tsvg` or `dot -Tpng`: the same
//! boxes, edges, clusters and stage colours as our own SVG, laid out by
//! Graphviz.

use std::fmt::Write;

use super::{Graph, FONT};
use crate::plan::Plan;

/// Cluster backgrounds by nesting depth; deeper modules are darker.
const CLUSTER_FILLS: [&str; 4] = ["#f7f7f7", "#eeeeee", "#e5e5e5", "#dcdcdc"];

/// Graphviz DOT of the model graph. `stage_of[i]` is the pipeline stage of
/// plan node `i` (missing entries count as stage 0); with more than one
/// stage, nodes are filled by stage and a legend lists the stages.
pub fn model_dot(plan: &Plan, stage_of: &[u64]) -> String {
    let graph = Graph::of(plan, stage_of);
    let mut out = String::from("digraph model {\n");
    let title = format!("{}\n{}", graph.title, graph.subtitle);
    line(
        &mut out,
        1,
        &format!(
            "graph [label={}, labelloc=t, fontname={}, fontsize=14, rankdir=TB];",
            quote(&title),
            quote(FONT)
        ),
    );
    line(
        &mut out,
        1,
        &format!(
            "node [shape=box, style=\"rounded,filled\", fontname={}, fontsize=10, color=\"#5a6b7d\"];",
            quote(FONT)
        ),
    );
    line(
        &mut out,
        1,
        &format!(
            "edge [fontname={}, fontsize=9, color=\"#555555\", fontcolor=\"#333333\"];",
            quote(FONT)
        ),
    );
    for (i, b) in graph.boxes.iter().enumerate() {
        if b.cluster.is_none() {
            write_node(&mut out, &graph, i, 1);
        }
    }
    for (c, cluster) in graph.clusters.iter().enumerate() {
        if cluster.parent.is_none() {
            write_cluster(&mut out, &graph, c, 1);
        }
    }
    for e in &graph.edges {
        line(
            &mut out,
            1,
            &format!(
                "n{} -> n{} [label={}];",
                e.from,
                e.to,
                quote(&format!(" {}", e.label))
            ),
        );
    }
    write_legend(&mut out, &graph);
    out.push_str("}\n");
    out
}

fn write_node(out: &mut String, graph: &Graph, i: usize, indent: usize) {
    let b = &graph.boxes[i];
    let label = match &b.detail {
        Some(detail) => format!("{}\n{}", b.title, detail),
        None => b.title.clone(),
    };
    let shape = if b.terminal { ", shape=oval" } else { "" };
    line(
        out,
        indent,
        &format!(
            "n{i} [label={}, fillcolor=\"{}\"{shape}];",
            quote(&label),
            b.fill
        ),
    );
}

fn write_cluster(out: &mut String, graph: &Graph, c: usize, indent: usize) {
    let cluster = &graph.clusters[c];
    let fill = CLUSTER_FILLS[(cluster.depth - 1).min(CLUSTER_FILLS.len() - 1)];
    line(out, indent, &format!("subgraph cluster_{c} {{"));
    line(
        out,
        indent + 1,
        &format!(
            "label={}; labeljust=l; fontsize=10; style=\"rounded,filled\"; fillcolor=\"{fill}\"; color=\"#bbbbbb\";",
            quote(&cluster.path)
        ),
    );
    for &i in &cluster.nodes {
        write_node(out, graph, i, indent + 1);
    }
    for &child in &cluster.children {
        write_cluster(out, graph, child, indent + 1);
    }
    line(out, indent, "}");
}

fn write_legend(out: &mut String, graph: &Graph) {
    if graph.legend.is_empty() {
        return;
    }
    line(out, 1, "subgraph cluster_legend {");
    line(
        out,
        2,
        "label=\"pipeline stages\"; labeljust=l; fontsize=10; style=rounded; color=\"#bbbbbb\";",
    );
    for (stage, fill) in &graph.legend {
        line(
            out,
            2,
            &format!("legend_{stage} [label=\"stage {stage}\", fillcolor=\"{fill}\"];"),
        );
    }
    let ids: Vec<String> = graph
        .legend
        .iter()
        .map(|(s, _)| format!("legend_{s}"))
        .collect();
    if ids.len() > 1 {
        line(out, 2, &format!("{} [style=invis];", ids.join(" -> ")));
    }
    line(out, 1, "}");
}

fn line(out: &mut String, indent: usize, text: &str) {
    let _ = writeln!(out, "{}{text}", "  ".repeat(indent));
}

/// A DOT string literal. Backslashes are escaped too, so a name cannot smuggle
/// in Graphviz's `\N`/`\l` escapes; line breaks become `\n`.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_escapes_quotes_backslashes_and_newlines() {
        assert_eq!(quote("a\"b\\N\nc"), "\"a\\\"b\\\\N\\nc\"");
    }
}

//! Model pictures of small compiled plans: determinism, well-formed SVG,
//! escaping, residual edges, module clusters and stage colours.

use std::path::Path;

use super::wellformed::check;
use super::{model_dot, model_svg, Graph, NEUTRAL_FILL, STAGE_FILLS};
use crate::plan::Plan;

/// Two residual blocks (`x + f(x)`: nodes with two inputs) inside module `1`.
const RESIDUAL: &str = r#"
module Block(d: int) {
  norm = layer_norm(d)
  forward(x: [B, d]) -> [B, d] { x + (x |> norm |> linear(d, d) |> relu) }
}
model Net {
  forward(x: [B, 16]) -> [B, 4] { x |> linear(16, 8) |> repeat 2 { Block(8) } |> linear(8, 4) }
}
data d { source = synthetic(rows: 64, features: 16, classes: 4) }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
"#;

/// Two branches that meet in a concat.
const BRANCHES: &str = r#"
module TwoWays(d: int, h: int) {
  wide = linear(d, h)
  forward(x: [B, d]) -> [B, 16] { concat(x |> wide |> relu, x |> linear(d, h) |> tanh, dim: 1) }
}
model Net { forward(x: [B, 8]) -> [B, 2] { x |> TwoWays(8, 8) |> linear(16, 2) } }
data d { source = synthetic(rows: 64, features: 8, classes: 2) }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
"#;

fn plan(source: &str) -> Plan {
    let options = crate::options_for(Path::new("t.dtl"), false);
    crate::compile_source("t.dtl", source, &options).unwrap_or_else(|d| panic!("{d:?}"))
}

#[test]
fn the_residual_model_is_as_compiled() {
    let p = plan(RESIDUAL);
    let names: Vec<&str> = p.model.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "input", "0", "1.0.norm", "1.0.0", "1.0.1", "1.0.add", "1.1.norm", "1.1.0", "1.1.1",
            "1.1.add", "2"
        ]
    );
    assert_eq!(p.model.nodes[5].inputs, [1, 4]);
}

#[test]
fn dot_has_every_node_edge_and_cluster() {
    let dot = model_dot(&plan(RESIDUAL), &[]);
    assert!(dot.starts_with("digraph model {\n") && dot.ends_with("}\n"));
    // 11 plan nodes and the output marker; 12 plan edges (two of them
    // residual) and the edge to the output.
    let is_node = |l: &&str| l.trim_start().starts_with('n') && l.contains(" [label=");
    assert_eq!(
        dot.lines()
            .filter(is_node)
            .filter(|l| !l.contains(" -> "))
            .count(),
        12
    );
    assert_eq!(dot.matches(" -> ").count(), 13);
    assert!(
        dot.contains("n1 -> n5 [label=\" [B, 8]\"];"),
        "residual edge:\n{dot}"
    );
    assert!(
        dot.contains("n10 -> n11 [label=\" [B, 4]\"];"),
        "output edge:\n{dot}"
    );
    assert!(
        dot.contains("n3 [label=\"1.0.0\\nlinear (72 params)\""),
        "{dot}"
    );
    // Module 1 holds modules 1.0 and 1.1.
    assert_eq!(dot.matches("subgraph cluster_").count(), 3);
    let outer = dot.find("label=\"1\";").expect("module 1");
    let inner = dot.find("label=\"1.0\";").expect("module 1.0");
    assert!(outer < inner);
    assert!(!dot.contains("legend"), "one stage, no legend");
    assert!(dot.contains(NEUTRAL_FILL));
}

#[test]
fn svg_is_well_formed_with_clusters_and_shortcuts() {
    for source in [RESIDUAL, BRANCHES] {
        let svg = model_svg(&plan(source), &[]);
        check(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    }
    let svg = model_svg(&plan(RESIDUAL), &[]);
    assert!(svg.contains(">Net</text>") && svg.contains(">348 parameters, 11 nodes</text>"));
    // 13 edges, each with an arrow and a label.
    assert_eq!(svg.matches("marker-end=").count(), 13);
    assert_eq!(svg.matches(">[B, 8]</text>").count(), 11);
    // The two shortcuts turn into and out of their lanes: two corners each.
    assert_eq!(svg.matches(" Q").count(), 4, "{svg}");
    for caption in [">1</text>", ">1.0</text>", ">1.1</text>"] {
        assert!(svg.contains(caption), "caption {caption}");
    }
}

#[test]
fn pictures_are_deterministic() {
    let p = plan(RESIDUAL);
    let stages: Vec<u64> = (0..p.model.nodes.len() as u64).map(|i| i / 6).collect();
    assert_eq!(model_dot(&p, &stages), model_dot(&plan(RESIDUAL), &stages));
    assert_eq!(model_svg(&p, &stages), model_svg(&plan(RESIDUAL), &stages));
    assert_eq!(model_svg(&p, &[]), model_svg(&p, &[]));
}

#[test]
fn stages_colour_nodes_and_get_a_legend() {
    let p = plan(RESIDUAL);
    let stages: Vec<u64> = (0..p.model.nodes.len() as u64).map(|i| i / 6).collect();
    let dot = model_dot(&p, &stages);
    assert!(
        dot.contains("legend_0 [label=\"stage 0\"") && dot.contains("legend_1 [label=\"stage 1\"")
    );
    assert!(dot.contains(&format!(
        "n0 [label=\"input\", fillcolor=\"{}\"",
        STAGE_FILLS[0]
    )));
    assert!(dot.contains(&format!(
        "n6 [label=\"1.1.norm\\nlayer_norm (16 params)\", fillcolor=\"{}\"",
        STAGE_FILLS[1]
    )));
    let svg = model_svg(&p, &stages);
    check(&svg).unwrap();
    assert!(svg.contains(">pipeline stages:</text>") && svg.contains(">stage 1</text>"));
    assert!(!svg.contains(NEUTRAL_FILL));
    // A single stage, named or not, is drawn neutral and without a legend.
    let single = model_svg(&p, &vec![3; p.model.nodes.len()]);
    assert!(single.contains(NEUTRAL_FILL) && !single.contains("pipeline stages"));
}

#[test]
fn names_are_escaped() {
    let mut p = plan(RESIDUAL);
    p.model.name = "A<B> & \"C\"".into();
    p.model.nodes[3].name = "1.0.\"x\\N\"<&>'".into();
    let svg = model_svg(&p, &[]);
    check(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert!(svg.contains(">A&lt;B&gt; &amp; &quot;C&quot;</text>"));
    assert!(svg.contains(">1.0.&quot;x\\N&quot;&lt;&amp;&gt;&apos;</text>"));
    let dot = model_dot(&p, &[]);
    assert!(
        dot.contains("label=\"A<B> & \\\"C\\\"\\n348 parameters"),
        "{dot}"
    );
    assert!(
        dot.contains("n3 [label=\"1.0.\\\"x\\\\N\\\"<&>'\\nlinear"),
        "{dot}"
    );
}

#[test]
fn residual_and_branches_layer_as_expected() {
    let p = plan(RESIDUAL);
    let graph = Graph::of(&p, &[]);
    let placed = super::layout::place(&graph);
    // A chain with shortcuts: one box per layer, the output last.
    assert_eq!(placed.layer_of, (0..12).collect::<Vec<_>>());
    let x0 = placed.boxes[0].cx();
    assert!(
        placed.boxes.iter().all(|b| (b.cx() - x0).abs() < 0.5),
        "the chain is straight"
    );
    let p = plan(BRANCHES);
    let graph = Graph::of(&p, &[]);
    let placed = super::layout::place(&graph);
    // input; wide, linear; relu, tanh; concat; linear; output.
    assert_eq!(placed.layer_of, [0, 1, 2, 1, 2, 3, 4, 5]);
    let (a, b) = (placed.boxes[1], placed.boxes[3]);
    assert!(a.right() < b.x, "branches side by side: {a:?} {b:?}");
}

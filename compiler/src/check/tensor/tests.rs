//! The default split, its collectives and its errors, on small models.

use crate::check::Options;
use crate::plan::{Pass, Plan, StepOp, TensorSplit};

fn compile(source: &str, world: Vec<u64>) -> Result<Plan, String> {
    let options = Options {
        world,
        ..crate::options_for(std::path::Path::new("./t.dtl"), true)
    };
    crate::compile_source("t.dtl", source, &options).map_err(|d| d.render_human(false))
}

fn experiment(model: &str, parallel: &str) -> String {
    format!(
        r#"
        {model}
        data d {{ source = synthetic(rows: 256, features: 64, classes: 10) }}
        train {{ model = Net; data = d; loss = cross_entropy; optimizer = adam(lr: 0.01); steps = 2; micro_batch = 8; accumulate = 2 }}
        parallel {{ {parallel} }}
        "#
    )
}

/// The tensor-group all-reduces of the plan's step program.
fn collectives(plan: &Plan) -> &[crate::plan::TensorCollective] {
    plan.step_program
        .iter()
        .find_map(|op| match op {
            StepOp::TensorAllReduces { collectives, .. } => Some(collectives.as_slice()),
            _ => None,
        })
        .unwrap()
}

fn splits(plan: &Plan) -> Vec<(&str, TensorSplit)> {
    plan.topology
        .tensor_splits
        .iter()
        .map(|s| (s.name.as_str(), s.split))
        .collect()
}

#[test]
fn an_mlp_is_split_column_then_row_with_one_all_reduce() {
    let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> dropout(0.1) |> linear(100, 10) } }";
    let plan = compile(&experiment(model, "tensor = 2"), vec![]).unwrap();
    assert_eq!(plan.topology.world_size(), 2);
    assert_eq!(
        splits(&plan),
        [
            ("0", TensorSplit::Column),
            ("1", TensorSplit::Sharded),
            ("2", TensorSplit::Sharded),
            ("3", TensorSplit::Row)
        ]
    );
    // The row-parallel output, [8, 10] floats, in forward; the input
    // of the column-parallel linear is the model's: no gradient.
    let collectives = plan
        .step_program
        .iter()
        .find_map(|op| match op {
            StepOp::TensorAllReduces {
                collectives,
                bytes_per_rank,
            } => Some((collectives.clone(), *bytes_per_rank)),
            _ => None,
        })
        .unwrap();
    assert_eq!(collectives.0.len(), 1);
    assert_eq!(
        (collectives.0[0].pass, collectives.0[0].bytes),
        (Pass::Forward, 8 * 10 * 4)
    );
    // A ring over 2 ranks sends half, twice; 2 micro-batches a step.
    assert_eq!(collectives.1, 2 * (2 * 320 / 2));
}

#[test]
fn a_residual_block_splits_inside_and_keeps_norms_and_the_stream_whole() {
    let model = r#"
        module Block(d: int) {
          norm = layer_norm(d)
          forward(x: [B, d]) -> [B, d] { x + (x |> norm |> linear(d, 4 * d) |> gelu |> linear(4 * d, d)) }
        }
        module Glu(d: int) {
          forward(x: [B, d]) -> [B, d] { ((x |> linear(d, 2 * d) |> silu) * (x |> linear(d, 2 * d))) |> linear(2 * d, d) }
        }
        model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 32) |> repeat 2 { Block(32) } |> Glu(32) |> linear(32, 10) } }
    "#;
    let plan = compile(&experiment(model, "tensor = 4; data = auto"), vec![8]).unwrap();
    assert_eq!(plan.topology.parallelism.data, 2);
    let got = splits(&plan);
    let names: Vec<&str> = got.iter().map(|(n, _)| *n).collect();
    assert!(!names.contains(&"0") && !names.contains(&"3"), "{got:?}");
    assert!(got.contains(&("1.0.0", TensorSplit::Column)), "{got:?}");
    assert!(got.contains(&("1.0.2", TensorSplit::Row)), "{got:?}");
    let glu: Vec<TensorSplit> = got
        .iter()
        .filter(|(n, _)| n.starts_with("2."))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        glu,
        [
            TensorSplit::Column,
            TensorSplit::Sharded,
            TensorSplit::Column,
            TensorSplit::Sharded,
            TensorSplit::Row
        ]
    );
    // Tensor ranks adjacent: rank 5 is replica 1's second tensor rank.
    let r = &plan.topology.ranks[5];
    assert_eq!((r.replica, r.tensor), (1, 1));
    // The gradient of each block's norm output, and of the stream the
    // GLU's two linears read (once for both), in backward.
    let backward: Vec<Vec<String>> = collectives(&plan)
        .iter()
        .filter(|c| c.pass == Pass::Backward)
        .map(|c| c.layers.clone())
        .collect();
    assert_eq!(backward.len(), 3, "{backward:?}");
    assert_eq!(backward[0], ["2.0", "2.2"]);
}

#[test]
fn widths_and_heads_that_do_not_divide_are_errors_at_the_layer() {
    let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> linear(100, 10) } }";
    let err = compile(&experiment(model, "tensor = 3"), vec![]).unwrap_err();
    assert!(
        err.contains("`Net › linear` (`0`), linear(64, 100), is column-parallel"),
        "{err}"
    );
    assert!(err.contains("linear(64, 100) |> relu"), "{err}");
    let model = r#"model Net { forward(x: [B, 64]) -> [B, 10] { x |> reshape([4, 16]) |> attention(16, 8, kv_heads: 2) |> mean(1) |> linear(16, 10) } }"#;
    let source = experiment(model, "tensor = 3");
    let err = compile(&source, vec![]).unwrap_err();
    assert!(
        err.contains("`Net › attention` (`1`), an attention, is split by heads: its 8 heads"),
        "{err}"
    );
    let plan = compile(&source.replace("tensor = 3", "tensor = 2"), vec![]).unwrap();
    // The output layer, under cross_entropy, by vocabulary.
    assert_eq!(
        splits(&plan),
        [("1", TensorSplit::Heads), ("3", TensorSplit::Column)]
    );
    // 2 key/value heads over 4 ranks: each shared by 2, its gradient
    // (key and value rows, [2 · 2 · 2, 16] and the bias) summed once a
    // step.
    let plan = compile(&source.replace("tensor = 3", "tensor = 4"), vec![]).unwrap();
    let shared: Vec<_> = collectives(&plan)
        .iter()
        .filter(|c| c.pass == Pass::Update)
        .map(|c| (c.node.as_str(), c.bytes))
        .collect();
    assert_eq!(shared, [("1", (8 * 16 + 8) * 4)]);
    // The query rows 1/4, the key and value rows of one head each.
    let stage = &plan.topology.stages[0];
    let whole_attention = 24 * 17 + 16 * 17;
    let attention = (4 + 2 + 2) * 17 + 16 * 4 + 16;
    assert_eq!(
        plan.topology.local_parameters(&plan.model, stage),
        stage.parameters - whole_attention + attention
    );
    let model = r#"model Net { forward(x: [B, 64]) -> [B, 10] { x |> reshape([4, 16]) |> linear(16, 24) |> attention(24, 6, kv_heads: 2) |> mean(1) |> linear(24, 10) } }"#;
    let err = compile(&experiment(model, "tensor = 3"), vec![]).unwrap_err();
    assert!(err.contains("its 2 key/value heads neither split"), "{err}");
}

#[test]
fn a_model_with_nothing_to_split_and_a_world_that_does_not_divide_are_errors() {
    let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) |> tanh } }";
    let err = compile(&experiment(model, "tensor = 2"), vec![]).unwrap_err();
    assert!(
        err.contains("`tensor = 2` splits no layer of `Net`"),
        "{err}"
    );
    // The output layer alone, its loss from the sharded scores: each
    // row's maximum (8 rows of 4 bytes), then 3 values a row.
    let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) } }";
    let plan = compile(&experiment(model, "tensor = 2"), vec![]).unwrap();
    assert_eq!(splits(&plan), [("0", TensorSplit::Column)]);
    let bytes: Vec<u64> = collectives(&plan).iter().map(|c| c.bytes).collect();
    assert_eq!(bytes, [8 * 4, 8 * 3 * 4]);
    let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> linear(100, 10) } }";
    let err = compile(&experiment(model, "tensor = 2; data = auto"), vec![5]).unwrap_err();
    assert!(
        err.contains(
            "world size 5 is not a multiple of the 2 ranks of a replica (tensor 2 × pipeline 1)"
        ),
        "{err}"
    );
    let err = compile(&experiment(model, "tensor = 2; data = 2"), vec![2]).unwrap_err();
    assert!(
        err.contains("world size 2 ≠ data 2 × tensor 2 × pipeline 1 = 4"),
        "{err}"
    );
}

#[test]
fn tensor_split_overrides_the_default_and_the_rest_fills_in_around_it() {
    let block = r#"
        module Mlp(d: int) { forward(x: [B, d]) -> [B, d] { x |> linear(d, 4 * d) |> relu |> linear(4 * d, d) } }
        model Net { forward(x: [B, 64]) -> [B, 10] { x |> Mlp(64) |> Mlp(64) |> linear(64, 10) } }
    "#;
    // The first block whole, the second split; the output layer by
    // vocabulary unless kept whole.
    let plan = compile(
        &experiment(
            block,
            r#"tensor = 2; tensor_split = [replicate("0"), replicate("2")]"#,
        ),
        vec![],
    )
    .unwrap();
    assert_eq!(
        splits(&plan),
        [
            ("1.0", TensorSplit::Column),
            ("1.1", TensorSplit::Sharded),
            ("1.2", TensorSplit::Row)
        ]
    );
    // The second block's last linear column-parallel by the user: the
    // pair it opens closes at the output layer, row-parallel by the user;
    // the block's first linear, no longer closed by it, stays whole.
    let plan = compile(
        &experiment(
            block,
            r#"tensor = 2; tensor_split = [replicate("0"), column("1.2"), row("2")]"#,
        ),
        vec![],
    )
    .unwrap();
    assert_eq!(
        splits(&plan),
        [("1.2", TensorSplit::Column), ("2", TensorSplit::Row)]
    );
}

#[test]
fn misplaced_values_and_wrong_overrides_are_errors_at_the_layer() {
    let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 100) |> relu |> layer_norm(100) |> linear(100, 10) } }";
    // The message as one line: the renderer wraps it.
    let flat = |e: String| {
        e.replace('│', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let err = |split: &str| {
        flat(
            compile(
                &experiment(model, &format!("tensor = 2; tensor_split = [{split}]")),
                vec![],
            )
            .unwrap_err(),
        )
    };
    // A row-parallel linear reading the model's input, whole.
    let e = err(r#"row("0")"#);
    assert!(
        e.contains("it needs its input sharded on its last dimension, but `input`"),
        "{e}"
    );
    // A norm reading a column-parallel output through relu.
    let e = err(r#"column("0")"#);
    assert!(
        e.contains("(`2`, layer_norm, whole on every rank): it needs its input whole, but `Net › relu` (`1`, relu, on a sharded value) gives it sharded"),
        "{e}"
    );
    // A split of the wrong kind, a path that names nothing.
    let e = err(r#"heads("0")"#);
    assert!(
        e.contains("`0` is a linear: only an attention can be `heads`"),
        "{e}"
    );
    let e = err(r#"column("blocks.*.fc")"#);
    assert!(e.contains("`blocks.*.fc` names no layer of `Net`"), "{e}");
    let e = err(r#"column("2")"#);
    assert!(
        e.contains("`2` is a layer_norm: only a linear can be `column`"),
        "{e}"
    );
    let e = err(r#"heads("*")"#);
    assert!(
        e.contains("`*` names no attention, which alone can be `heads`"),
        "{e}"
    );
    // A sharded result that is not the output layer's scores.
    let model = "model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 10) |> relu } }";
    let e = flat(
        compile(
            &experiment(model, r#"tensor = 2; tensor_split = [column("0")]"#),
            vec![],
        )
        .unwrap_err(),
    );
    assert!(
        e.contains("it gives the model's result, which would be sharded"),
        "{e}"
    );
}

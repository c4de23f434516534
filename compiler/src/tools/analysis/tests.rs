//! The editor queries on small files.
use super::*;

const SOURCE: &str = "module Block(d: int, p: float = 0.1) {
  fc = linear(d, d)
  forward(x: [B, d]) -> [B, d] {
let h = x |> fc |> relu
h + x
  }
}
model Net {
  forward(x: [B, 64]) -> [B, 10] { x |> Block(64) |> linear(64, 10) }
}
data digits { source = synthetic(rows: 100, features: 64, classes: 10) }
train { model = Net; data = digits; loss = cross_entropy; optimizer = sgd(lr: 0.1); steps = 1; micro_batch = 8 }
";

fn analysis() -> Analysis {
    let options = check::Options {
        base_dir: ".".into(),
        probe_data: true,
        world: vec![],
        overrides: vec![],
        strict: false,
        data_limits: Default::default(),
        memory_limit: None,
    };
    analyze("t.dtl", SOURCE, &options)
}

fn at(needle: &str, nth: usize) -> usize {
    SOURCE.match_indices(needle).nth(nth).unwrap().0 + 1
}

#[test]
fn hover_shows_shapes_signatures_and_layers() {
    let a = analysis();
    assert_eq!(a.diagnostics.error_count(), 0);
    let (_, text) = a.hover(at("let h", 0) + 4).unwrap();
    assert_eq!(text, "`h`: `[B, 64]` (in `Block(64)`)");
    let (_, text) = a.hover(at("linear(64", 0)).unwrap();
    assert!(
        text.contains("linear(in_features: int, out_features: int, bias: bool = true)"),
        "{text}"
    );
    let (_, text) = a.hover(at("Block(64)", 0)).unwrap();
    assert!(
        text.contains("module Block(d: int, p: float = 0.1)"),
        "{text}"
    );
    assert!(text.contains("forward(x: [B, d]) -> [B, d]"), "{text}");
    let (_, text) = a.hover(at("|> fc", 0) + 3).unwrap();
    assert!(text.contains("fc = linear(d, d)"), "{text}");
}

#[test]
fn definition_finds_modules_parameters_layers_lets_and_data() {
    let a = analysis();
    let def = |offset| a.definition(offset).map(|s| &SOURCE[s.start..s.end]);
    assert_eq!(def(at("Block(64)", 0)), Some("Block"));
    assert_eq!(def(at("|> fc", 0) + 3), Some("fc"));
    assert_eq!(def(at("h + x", 0) - 1), Some("h"));
    let digits = at("data = digits", 0) + 7;
    let span = a.definition(digits).unwrap();
    assert_eq!(span.start, SOURCE.find("digits {").unwrap());
    // A module parameter where the body uses it: its declaration.
    let used = at("linear(d, d)", 0) + 6;
    let span = a.definition(used).unwrap();
    assert_eq!(span.start, SOURCE.find("d: int").unwrap());
}

#[test]
fn completion_offers_arguments_settings_and_layers() {
    let a = analysis();
    let labels =
        |offset| -> Vec<String> { a.completions(offset).into_iter().map(|c| c.label).collect() };
    let inside_linear = at("linear(64, 10)", 0) + 6;
    assert_eq!(
        labels(inside_linear),
        ["in_features", "out_features", "bias"]
    );
    let arg = &a.completions(inside_linear)[2];
    assert_eq!(arg.insert.as_deref(), Some("bias: "));
    assert_eq!(arg.detail, "bias: bool = true");
    let inside_block = at("Block(64)", 0) + 5;
    assert_eq!(labels(inside_block), ["d", "p"]);

    let in_train = SOURCE.find("model = Net").unwrap();
    assert!(labels(in_train).contains(&"micro_batch".to_string()));
    let in_forward = at("h + x", 0);
    let all = labels(in_forward);
    assert!(all.contains(&"layer_norm".to_string()) && all.contains(&"Block".to_string()));
    for form in ["tied", "concat", "class_token", "select", "mean"] {
        assert!(
            all.contains(&form.to_string()),
            "{form} missing from {all:?}"
        );
    }
}

#[test]
fn the_new_forms_have_hovers_and_arguments() {
    let text = "model M {\n  e = embedding(256, 8)\n  forward(x: [B, 4]) -> [B, 4, 256] {\n    x |> e |> attention(8, 2, kv_heads: 1) |> tied(e)\n  }\n}\n";
    let options = check::Options {
        base_dir: ".".into(),
        probe_data: false,
        world: vec![],
        overrides: vec![],
        strict: false,
        data_limits: Default::default(),
        memory_limit: None,
    };
    let a = analyze("t.dtl", text, &options);
    let (_, hover) = a.hover(text.find("tied").unwrap()).unwrap();
    assert!(hover.contains("tied(embed)"), "{hover}");
    let inside = text.find("kv_heads").unwrap();
    let labels: Vec<String> = a.completions(inside).into_iter().map(|c| c.label).collect();
    for arg in ["kv_heads", "rope", "rope_theta", "bias"] {
        assert!(
            labels.contains(&arg.to_string()),
            "{arg} missing from {labels:?}"
        );
    }
}

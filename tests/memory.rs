//! What a run holds beyond its training step: the held-out evaluation
//! computes its rows up to 1024 at a time without a graph, so it keeps
//! only the values a layer still to come reads.

mod common;

use std::path::Path;

use common::train;

/// Nine linears of 1024 (eight with a relu) on 899 held-out rows in one
/// chunk: each layer's output is 3.5 MiB. Measured 2026-12-06 (release):
/// keeping every layer's output to the end of the forward pass, the
/// evaluation added 54.7 MiB to the peak (all 17 outputs); letting each
/// go after its last reader, 8.4 MiB (the input, a layer's input and its
/// output). The test holds the evaluation under 6 outputs (21 MiB) and
/// its loss to the bit of the same run's on the old binary.
#[test]
fn evaluation_keeps_only_the_values_still_to_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = "|> linear(1024, 1024) |> relu ".repeat(7);
    let peak = |valid: &str| {
        let file = dir.path().join(format!("deep-{valid}.dtl"));
        let text = format!(
            r#"
model Deep {{
  forward(x: [B, 64]) -> [B, 10] {{
    x |> linear(64, 1024) |> relu {layers}|> linear(1024, 10)
  }}
}}
data digits {{ source = csv("{data}", label: -1); scale = 0.0625; valid = {valid} }}
train {{
  model = Deep; data = digits; loss = cross_entropy
  optimizer = sgd(lr: 1e-2); micro_batch = 16; steps = 2
}}
"#,
            data = root.join("data/digits.csv.gz").display()
        );
        std::fs::write(&file, text).unwrap();
        let out = dir.path().join(format!("out-{valid}"));
        train(&file, &out, &["--no-tensorboard"]).code(0);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        (summary["peak_rss_bytes"].as_u64().unwrap(), out)
    };
    let (without, _) = peak("0");
    let (with, out) = peak("0.5");
    let eval = common::last_eval(&out);
    assert_eq!(eval.eval_rows, 899);
    // The same evaluation as when every output was kept (the operations
    // and their order are unchanged): 2026-12-06's figure, to the bit.
    assert_eq!(eval.eval_loss, 2.3024826304400725);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let added = mib(with.saturating_sub(without));
    eprintln!(
        "measured: evaluation adds {added:.1} MiB ({:.1} -> {:.1} MiB)",
        mib(without),
        mib(with)
    );
    let output = (899 * 1024 * 4) as f64 / (1 << 20) as f64;
    assert!(
        added < 6.0 * output,
        "evaluating 899 rows added {added:.1} MiB: more than 6 layer outputs of {output:.1} MiB"
    );
}

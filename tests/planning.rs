//! Planning on a cluster: `dtl layout` (the search, its refusals, its
//! ranking against `dtl explain --cluster`). `dtl calibrate` is tested
//! alone in tests/calibration.rs.

mod common;

use std::path::Path;

use common::dtl;

fn preset(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clusters")
        .join(name);
    path.to_str().unwrap().to_string()
}

fn step_of(prediction: &serde_json::Value) -> f64 {
    prediction["step_seconds"].as_f64().unwrap()
}

/// The layouts of the digits MLP on 4 H100s: each uses the 4 ranks, they
/// come fastest first, the fastest's prediction is `dtl explain`'s for
/// the same settings, and what the checker refuses is counted by rule.
#[test]
fn layout_ranks_the_layouts_as_explain_predicts_them() {
    let file = "examples/digits_mlp.dtl";
    let h100 = preset("h100_sxm.yaml");
    let run = dtl(&[
        "layout",
        file,
        "--cluster",
        &h100,
        "--world",
        "4",
        "--top",
        "50",
        "--format",
        "json",
    ])
    .code(0)
    .stderr_has("candidates compiled");
    let layouts: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert!(layouts.len() >= 5, "{layouts:?}");
    let mut last = 0.0;
    for l in &layouts {
        let p = &l["parallel"];
        let degree = |k: &str| p[k].as_u64().unwrap();
        assert_eq!(
            degree("data") * degree("tensor") * degree("pipeline"),
            4,
            "{l}"
        );
        let step = step_of(l);
        assert!(step >= last, "not fastest first: {l}");
        last = step;
    }
    // The fastest, written as settings, is predicted alike by explain.
    let best = &layouts[0];
    let p = &best["parallel"];
    let t = &best["train"];
    let mut args: Vec<String> = ["explain", file, "--cluster", &h100, "--format", "json"]
        .map(str::to_string)
        .to_vec();
    for (key, value) in [
        ("parallel.data", &p["data"]),
        ("parallel.tensor", &p["tensor"]),
        ("parallel.pipeline", &p["pipeline"]),
        ("parallel.micro_batches", &p["micro_batches"]),
        ("parallel.shard", &p["shard"]),
        ("train.micro_batch", &t["micro_batch"]),
        ("train.accumulate", &t["accumulate"]),
        ("train.recompute", &t["recompute"]),
    ] {
        let value = value.as_str().map_or(value.to_string(), str::to_string);
        args.push("--set".into());
        args.push(format!("{key}={value}"));
    }
    if p["pipeline"].as_u64() > Some(1) {
        args.extend(["--set".into(), "parallel.split=auto".into()]);
    }
    if p["sequence"].as_bool() == Some(true) {
        args.extend(["--set".into(), "parallel.sequence=true".into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let explained: serde_json::Value = serde_json::from_str(&dtl(&args).code(0).stdout).unwrap();
    let explained = step_of(&explained["prediction"]);
    assert!(
        (explained - step_of(best)).abs() <= 1e-12 * explained,
        "layout {} against explain {explained}",
        step_of(best)
    );
    // Text: the table, the refusals by rule (tensor parallelism with
    // `shard = parameters`), and the best layout's block.
    dtl(&["layout", file, "--cluster", &h100, "--world", "4"])
        .code(0)
        .stdout_has("refused, by rule:")
        .stdout_has("the fastest, to write in the file:\nparallel {");
}

/// TinyLlama on 1,024 H100s at its published batch (1,024 sequences of
/// 2,048 tokens): the search prunes to about two thousand candidates, each
/// refusal counted under its rule. At the file's own batch (8 sequences)
/// the data degrees above 8 are refused, counted under their rule.
#[test]
fn layout_searches_tinyllama_on_1024_devices() {
    let file = "examples/zoo/tinyllama.dtl";
    let h100 = preset("h100_sxm.yaml");
    let args = ["layout", file, "--cluster", &h100, "--world", "1024"];
    let mut batch = args.to_vec();
    batch.extend(["--batch", "1024", "--format", "json"]);
    let run = dtl(&batch).code(0);
    let layouts: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(layouts.len(), 10, "the top 10 by default");
    // Sharded within a node's 4 replicas (8 devices over tensor 2): the
    // slices' rings cross the network 16 nodes long, not 64 replicas;
    // the sequence split over the tensor ranks (less memory, and 1/T of
    // the norms' work, for the same bytes), ahead of the same layout
    // without it.
    let best = &layouts[0]["parallel"];
    assert_eq!(
        (
            best["data"].as_u64(),
            best["tensor"].as_u64(),
            best["shard_group"].as_u64(),
            best["sequence"].as_bool()
        ),
        (Some(64), Some(2), Some(4), Some(true)),
        "{best}"
    );
    let second = &layouts[1]["parallel"];
    assert_eq!(second["sequence"].as_bool(), None, "{second}");
    assert!(step_of(&layouts[0]) < step_of(&layouts[1]));
    assert!(
        layouts[0]["memory_per_rank_bytes"].as_u64() < layouts[1]["memory_per_rank_bytes"].as_u64()
    );
    // The counts docs/planning.md quotes.
    assert!(
        run.stderr
            .contains("4223 candidates compiled, 3760 fit, 0 over the device's memory"),
        "{}",
        run.stderr
    );
    let mut text = args.to_vec();
    text.extend(["--batch", "1024"]);
    let text = dtl(&text).code(0).stdout;
    let refused = |rule: &str, count: &str| {
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq([rule, count]))
    };
    assert!(refused("dtl::check::unsupported", "192"), "{text}");
    assert!(refused("dtl::check::invalid_value", "222"), "{text}");
    assert!(text.contains("  shard_group = 4\n"), "{text}");
    assert!(text.contains("  sequence = true\n"), "{text}");
    dtl(&args)
        .code(0)
        .stdout_has("global_batch")
        .stdout_has("does not divide the global batch of 8");
}

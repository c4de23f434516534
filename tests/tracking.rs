//! Runs people can follow, compare and use (issue 21): metrics against
//! scikit-learn on the same predictions, a data-parallel evaluation equal
//! to one process's, the best weights, stopping early, the average of the
//! weights across a resume, TensorBoard's own reader on dtl's event files,
//! `dtl runs` with every status, `dtl plot` over several runs, and `dtl
//! eval`/`predict`/`generate` against the plan-driven PyTorch model.
//! (The average against `torch.optim.swa_utils.AveragedModel` is in
//! tests/reference.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dtl, python, root, train};
use serde_json::Value;

fn digits() -> String {
    format!(
        "{:?}",
        root().join("data/digits.csv.gz").display().to_string()
    )
}

/// A two-layer MLP on the digits with `train` settings added.
fn mlp(dir: &Path, name: &str, train: &str, parallel: &str) -> PathBuf {
    let text = format!(
        r#"
model Net {{
  forward(x: [B, 64]) -> [B, 10] {{ x |> linear(64, 48) |> relu |> linear(48, 10) }}
}}
data digits {{ source = csv({}, label: -1); scale = 0.0625; valid = 0.2 }}
train {{
  model = Net; data = digits; loss = cross_entropy; seed = 3
  optimizer = adamw(lr: 3e-3); micro_batch = 16
  {train}
}}
{parallel}
"#,
        digits()
    );
    let path = dir.join(format!("{name}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn read_json(path: &Path) -> Value {
    json(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn evals(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(json)
        .filter(|v| v.get("eval_loss").is_some())
        .collect()
}

/// `dtl eval ... --json`, as a JSON object.
fn eval_json(args: &[&str]) -> Value {
    let mut all = vec!["eval"];
    all.extend(args);
    all.extend(["--device", "cpu", "--json"]);
    let run = dtl(&all).code(0);
    json(run.stdout.trim())
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

/// The digits' first `n` rows: with labels, and features only.
fn digit_rows(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(root().join("data/digits.csv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let rows: Vec<&str> = text.lines().take(n).collect();
    let labelled = dir.join("labelled.csv");
    std::fs::write(&labelled, rows.join("\n") + "\n").unwrap();
    let features: Vec<String> = rows
        .iter()
        .map(|r| r.rsplit_once(',').unwrap().0.to_string())
        .collect();
    let unlabelled = dir.join("features.csv");
    std::fs::write(&unlabelled, features.join("\n") + "\n").unwrap();
    (labelled, unlabelled)
}

const TRACKED: &str = "steps = 60; eval_every = 10; checkpoint_every = 20
  metrics = [accuracy, top_k(3), f1(macro), f1(micro)]
  keep_best = f1(macro)
  ema = 0.9";

/// One run checked many ways: its metrics, best weights, average,
/// TensorBoard files and run record, `dtl eval` and `dtl predict` on its
/// weights against scikit-learn and PyTorch, and the same run interrupted
/// and resumed.
#[test]
fn a_tracked_run_agrees_with_scikit_learn_pytorch_and_tensorboard() {
    let dir = tempfile::tempdir().unwrap();
    let file = mlp(dir.path(), "tracked", TRACKED, "");
    let out = dir.path().join("run");
    train(&file, &out, &[]).code(0);
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Every evaluation has the metrics; the best is the first highest F1.
    let evals = evals(&out);
    assert_eq!(evals.len(), 6);
    for e in &evals {
        for key in [
            "eval_top3",
            "eval_f1_macro",
            "eval_f1_micro",
            "ema_eval_loss",
            "ema_eval_f1_macro",
        ] {
            assert!(e[key].is_f64(), "{key} missing from {e}");
        }
        // One label per row: micro F1 is the accuracy.
        assert_eq!(e["eval_f1_micro"], e["eval_accuracy"]);
    }
    let f1 = |e: &Value| e["eval_f1_macro"].as_f64().unwrap();
    let best = evals
        .iter()
        .fold(&evals[0], |b, e| if f1(e) > f1(b) { e } else { b });
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["best"]["step"], best["step"]);
    assert_eq!(summary["best"]["metric"], "eval_f1_macro");
    let best_json = read_json(&out.join("best/best.json"));
    assert_eq!(best_json["step"], best["step"]);
    assert_eq!(best_json["eval"], *best);

    // `dtl eval` of the final, best and averaged weights is the run's own
    // evaluation of them, bit for bit (one process, the same rows).
    let last = evals.last().unwrap();
    let again = eval_json(&[&s(&out)]);
    for key in [
        "eval_loss",
        "eval_accuracy",
        "eval_top3",
        "eval_f1_macro",
        "eval_rows",
    ] {
        assert_eq!(again[key], last[key], "{key}");
    }
    let best_weights = s(&out.join("best/model.safetensors"));
    let of_best = eval_json(&[&s(&file), "--weights", &best_weights]);
    assert_eq!(of_best["eval_f1_macro"], best["eval_f1_macro"]);
    let averaged = s(&out.join("model_ema.safetensors"));
    let of_average = eval_json(&[&s(&file), "--weights", &averaged]);
    assert_eq!(of_average["eval_loss"], last["ema_eval_loss"]);
    assert_eq!(of_average["eval_f1_macro"], last["ema_eval_f1_macro"]);

    // Predictions on 300 rows: PyTorch's outputs, and scikit-learn's
    // metrics of dtl's predicted classes and probabilities equal to `dtl
    // eval --data` on the same rows.
    let (labelled, features) = digit_rows(dir.path(), 300);
    let predictions = dir.path().join("predictions.jsonl");
    dtl(&[
        "predict",
        &s(&out),
        "--input",
        &s(&features),
        "-o",
        &s(&predictions),
        "--device",
        "cpu",
    ])
    .code(0);
    let lines = std::fs::read_to_string(&predictions).unwrap();
    assert_eq!(lines.lines().count(), 300);
    let first = json(lines.lines().next().unwrap());
    assert_eq!(first["row"], 0);
    let p: f64 = first["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-9, "probabilities add up to {p}");
    let plan_json = dir.path().join("plan.json");
    dtl(&[
        "compile",
        &s(&file),
        "--format",
        "json",
        "-o",
        &s(&plan_json),
    ])
    .code(0);
    let checked = dir.path().join("checked.json");
    let status = Command::new(python())
        .arg(root().join("tests/reference/use_model.py"))
        .args([
            "predict",
            &s(&plan_json),
            &s(&out.join("model.safetensors")),
            &s(&labelled),
        ])
        .args([&s(&predictions), &s(&checked)])
        .status()
        .unwrap();
    assert!(status.success(), "use_model.py predict failed");
    let sk = read_json(&checked);
    // Measured 2026-12-04: outputs bitwise (float64 printing of float32).
    common::within(
        "predict vs PyTorch: outputs",
        sk["output_difference"].as_f64().unwrap(),
        0.0,
    );
    let on_rows = eval_json(&[&s(&out), "--data", &s(&labelled)]);
    assert_eq!(on_rows["eval_rows"], 300);
    for (ours, theirs) in [
        ("eval_accuracy", "accuracy"),
        ("eval_f1_macro", "f1_macro"),
        ("eval_f1_micro", "f1_micro"),
        ("eval_top3", "top3"),
    ] {
        let (a, b) = (
            on_rows[ours].as_f64().unwrap(),
            sk[theirs].as_f64().unwrap(),
        );
        common::within(&format!("{ours} vs scikit-learn"), (a - b).abs(), 1e-15);
    }
    let (a, b) = (
        on_rows["eval_loss"].as_f64().unwrap(),
        sk["torch_loss"].as_f64().unwrap(),
    );
    // Measured 2026-12-04: 5.6e-9 (the sum of 300 losses in float32, then divided).
    common::within("eval_loss vs F.cross_entropy", (a - b).abs() / b, 5.6e-8);

    // TensorBoard's reader finds every scalar and the run's texts.
    let board = dir.path().join("board.json");
    let status = Command::new(python())
        .arg("-c")
        .arg(TENSORBOARD_READER)
        .args([&s(&out), &s(&board)])
        .status()
        .unwrap();
    assert!(status.success(), "TensorBoard could not read the run");
    let board = read_json(&board);
    let losses: Vec<f64> = common::step_records(&out).iter().map(|r| r.loss).collect();
    let logged: Vec<f64> = board["train/loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(logged.len(), 60);
    for (a, b) in losses.iter().zip(&logged) {
        assert_eq!(
            *a as f32 as f64, *b,
            "train/loss is the float32 of the logged loss"
        );
    }
    let logged_f1: Vec<f64> = board["eval/f1_macro"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let f1s: Vec<f64> = evals.iter().map(|e| f1(e) as f32 as f64).collect();
    assert_eq!(logged_f1, f1s);
    for tag in [
        "train/lr",
        "train/grad_norm",
        "perf/samples_per_second",
        "memory/host_resident_mib",
        "eval_ema/loss",
        "eval/top3",
    ] {
        assert!(
            board[tag].as_array().is_some_and(|a| !a.is_empty()),
            "no {tag}"
        );
    }
    assert!(board["text:run/source"]
        .as_str()
        .unwrap()
        .contains("keep_best = f1(macro)"));
    assert!(board["text:run/model"]
        .as_str()
        .unwrap()
        .contains("| linear |"));
    assert!(board["text:run/plan"]
        .as_str()
        .unwrap()
        .contains("tracking:"));

    // run.json: finished, one attempt.
    let record = read_json(&out.join("run.json"));
    assert_eq!(record["outcome"]["status"], "finished");
    assert_eq!(record["steps"], 60);
    assert_eq!(record["attempts"].as_array().unwrap().len(), 1);

    // The same run, killed at step 35 and resumed from the checkpoint of
    // step 20: the same best weights, average and summary.
    let again = dir.path().join("again");
    let killed = spawn(
        &[
            "run",
            &s(&file),
            "--quiet",
            "--device",
            "cpu",
            "--out",
            &s(&again),
        ],
        &[("DTL_FAULT", "exit@0:35")],
    );
    let output = killed.wait_with_output().unwrap();
    assert!(!output.status.success());
    let table = dtl(&["runs", &s(dir.path()), "--json"]).code(0).stdout;
    let died: Vec<Value> = table
        .lines()
        .map(json)
        .filter(|r| r["path"] == s(&again))
        .collect();
    assert_eq!(died[0]["status"], "died", "{table}");
    common::resume(&again).code(0);
    for name in [
        "model.safetensors",
        "model_ema.safetensors",
        "best/model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} after a resume"
        );
    }
    assert_eq!(
        read_json(&again.join("summary.json"))["best"],
        summary["best"]
    );
    let record = read_json(&again.join("run.json"));
    assert_eq!(record["attempts"][1]["resumed_from"], 20);
    assert_eq!(record["outcome"]["status"], "finished");
}

/// Reads a run folder with TensorBoard's EventAccumulator: every scalar
/// tag's values, and every text as `text:<tag>`.
const TENSORBOARD_READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
ea.Reload()
out = {tag: [e.value for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
for tag in ea.Tags()["tensors"]:
    out["text:" + tag] = ea.Tensors(tag)[0].tensor_proto.string_val[0].decode()
json.dump(out, open(sys.argv[2], "w"))
"#;

/// The replicas evaluate their shares of the held-out rows and add up
/// their counts: the run's evaluation is one process's on the same weights.
#[test]
fn a_data_parallel_evaluation_is_one_processes() {
    let dir = tempfile::tempdir().unwrap();
    let file = mlp(
        dir.path(),
        "replicas",
        "steps = 30; eval_every = 10\n  metrics = [top_k(3), f1(macro)]\n  keep_best = eval_loss\n  stop_early = patience(5)",
        "parallel { data = 2 }",
    );
    let out = dir.path().join("run");
    train(&file, &out, &[]).code(0);
    common::assert_ranks_ran(&out, 2);
    let run = evals(&out);
    let last = run.last().unwrap();
    let one = eval_json(&[out.to_str().unwrap()]);
    for key in ["eval_accuracy", "eval_top3", "eval_f1_macro", "eval_rows"] {
        assert_eq!(one[key], last[key], "{key}");
    }
    let (a, b) = (
        one["eval_loss"].as_f64().unwrap(),
        last["eval_loss"].as_f64().unwrap(),
    );
    // Measured 2026-12-04: the two sums of 359 losses in another order.
    common::within("data 2 vs one process: eval_loss", (a - b).abs() / b, 1e-6);
    assert!(out.join("best/model.safetensors").is_file());
}

/// `valid = <file>` and `test = <file>`: the held-out evaluations read
/// every row of the held-out file, every row of the training file trains,
/// and the test file is evaluated once after the last step and reported
/// apart — by two replicas, each its share, equal to `dtl eval` of the
/// final weights on those files in one process.
#[test]
fn held_out_and_test_files_are_evaluated_apart() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(root().join("data/digits.csv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let parts = [
        ("train", 0..1200),
        ("valid", 1200..1500),
        ("test", 1500..rows.len()),
    ];
    for (name, range) in parts.clone() {
        std::fs::write(
            dir.path().join(format!("{name}.csv")),
            rows[range].join("\n") + "\n",
        )
        .unwrap();
    }
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let at = |name: &str| s(&dir.path().join(format!("{name}.csv")));
    let file = dir.path().join("files.dtl");
    let source = format!(
        "data digits {{ source = csv({:?}); valid = csv({:?}); test = csv({:?}); scale = 0.0625 }}",
        at("train"),
        at("valid"),
        at("test")
    );
    let text = std::fs::read_to_string(mlp(
        dir.path(),
        "base",
        "steps = 40; eval_every = 20\n  metrics = [f1(macro)]",
        "parallel { data = 2 }",
    ))
    .unwrap()
    .lines()
    .map(|l| {
        if l.starts_with("data digits") {
            source.clone()
        } else {
            l.to_string()
        }
    })
    .collect::<Vec<_>>()
    .join("\n");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("run");
    let run = train(&file, &out, &[]).code(0);
    assert!(
        run.stdout.contains("test (297 rows): loss"),
        "{}",
        run.stdout
    );
    common::assert_ranks_ran(&out, 2);
    let plan = dtl_compiler::plan::Plan::from_text(
        &std::fs::read_to_string(out.join("plan.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!((plan.data.rows, plan.data.valid_fraction), (1200, 0.0));
    assert_eq!(plan.data.files.len(), 3, "the three files' identities");
    let run_evals = evals(&out);
    assert_eq!(run_evals.len(), 2);
    assert!(run_evals.iter().all(|e| e["eval_rows"] == 300));
    assert!(run_evals.iter().all(|e| e.get("test_loss").is_none()));
    let summary = read_json(&out.join("summary.json"));
    let test = &summary["test"];
    for (name, run_eval) in [("valid", run_evals.last().unwrap()), ("test", test)] {
        let one = eval_json(&[&s(&out), "--data", &at(name)]);
        for key in ["eval_accuracy", "eval_f1_macro", "eval_rows"] {
            assert_eq!(one[key], run_eval[key], "{name}: {key}");
        }
        let (a, b) = (
            one["eval_loss"].as_f64().unwrap(),
            run_eval["eval_loss"].as_f64().unwrap(),
        );
        // Measured 2026-12-04: valid 0, test 3.4e-8 (sums of ~300 losses
        // in another order).
        common::within(
            &format!("{name}: data 2 vs one process"),
            (a - b).abs() / b,
            3.4e-7,
        );
    }
    assert_eq!(test["eval_rows"], 297);
    assert_eq!(test["step"], 40);
}

/// `stop_early` ends the run after the evaluation that runs out of
/// patience: weights, evaluation and summary written, the reason given.
#[test]
fn stopping_early_ends_cleanly_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // No evaluation can beat the first by 10: the third runs out of a
    // patience of 2.
    let file = mlp(
        dir.path(),
        "patient",
        "steps = 100; eval_every = 5\n  stop_early = patience(2, min_delta: 10)",
        "",
    );
    let out = dir.path().join("run");
    train(&file, &out, &[])
        .code(0)
        .stdout_has("stopped early: stop_early: eval_loss did not improve by more than 10 in 2 evaluations (best ");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["steps"], 15);
    assert!(summary["stopped_early"]
        .as_str()
        .unwrap()
        .contains("at step 5)"));
    assert_eq!(common::step_records(&out).len(), 15);
    assert_eq!(evals(&out).len(), 3);
    assert!(out.join("model.safetensors").is_file());
    let record = read_json(&out.join("run.json"));
    assert_eq!(record["outcome"]["status"], "finished");
    assert_eq!(record["outcome"]["message"], summary["stopped_early"]);
}

/// `dtl runs` tells finished, failed, interrupted, running and died runs
/// apart; `dtl plot` overlays two of them.
#[test]
fn runs_are_listed_with_their_status_and_plotted_together() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let file = mlp(
        dir.path(),
        "listed",
        "steps = 20; eval_every = 10; checkpoint_every = 5",
        "",
    );
    let long = mlp(
        dir.path(),
        "long",
        "steps = 100000; checkpoint_every = 50",
        "",
    );
    let run = |name: &str| runs.join(name);
    let args = |f: &Path, out: &Path| -> Vec<String> {
        ["run", &s(f), "--quiet", "--device", "cpu", "--out", &s(out)]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let spawn_run = |f: &Path, out: &Path, env: &[(&str, &str)]| {
        let a = args(f, out);
        spawn(&a.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    // Finished, and failed (a NaN loss with on_nan = stop).
    train(&file, &run("finished"), &[]).code(0);
    let failed = spawn_run(&file, &run("failed"), &[("DTL_FAULT", "nan@0:3")]);
    assert!(!failed.wait_with_output().unwrap().status.success());
    // Interrupted: SIGINT once it is under way.
    let interrupted = spawn_run(&long, &run("interrupted"), &[]);
    wait_for("steps", || metrics_lines(&run("interrupted")) > 5);
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(interrupted.id() as i32, libc::SIGINT) };
    assert!(!interrupted.wait_with_output().unwrap().status.success());
    // Running: hung at step 400, holding its lock (the lines before it
    // reach the file within a second).
    let mut running = spawn_run(&long, &run("running"), &[("DTL_FAULT", "hang@0:400")]);
    wait_for("the hang", || metrics_lines(&run("running")) >= 200);

    let statuses = || -> Vec<(String, String)> {
        dtl(&["runs", &s(&runs), "--json"])
            .code(0)
            .stdout
            .lines()
            .map(json)
            .map(|r| {
                let name = Path::new(r["path"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name, r["status"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let mut now = statuses();
    now.sort();
    let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        now,
        expect(&[
            ("failed", "failed"),
            ("finished", "finished"),
            ("interrupted", "interrupted"),
            ("running", "running")
        ])
    );
    running.kill().unwrap();
    running.wait().unwrap();
    let after = statuses();
    assert!(
        after.contains(&("running".to_string(), "died".to_string())),
        "{after:?}"
    );

    let table = dtl(&["runs", &s(&runs)]).code(0).stdout;
    for text in [
        "status",
        "finished",
        "20/20",
        "failed",
        "interrupted",
        "died",
    ] {
        assert!(table.contains(text), "{text} missing:\n{table}");
    }
    let failed_message = dtl(&["runs", &s(&runs), "--json"]).stdout;
    assert!(
        failed_message.contains("step 3: the loss is NaN"),
        "{failed_message}"
    );

    let chart = dir.path().join("compare.svg");
    dtl(&[
        "plot",
        &s(&run("finished")),
        &s(&run("interrupted")),
        "-o",
        &s(&chart),
    ])
    .code(0);
    let svg = std::fs::read_to_string(&chart).unwrap();
    for label in [
        ">finished train<",
        ">finished eval<",
        ">interrupted train<",
        ">2 runs<",
    ] {
        assert!(svg.contains(label), "{label} missing from the chart");
    }
}

/// `dtl generate` continues a token model's text as PyTorch's plan-driven
/// twin does greedily (past the context, where the window slides); with
/// and without the cache of keys and values alike, rotary positions
/// included; sampling is seeded.
#[test]
fn generation_is_pytorchs_with_and_without_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let example = |name: &str| {
        let text = std::fs::read_to_string(root().join(format!("examples/{name}.dtl")))
            .unwrap()
            .replace("\"../data/", &format!("\"{}/data/", root().display()));
        let path = dir.path().join(format!("{name}.dtl"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let generate = |run: &Path, prompt: &str, extra: &[&str]| {
        let mut args = vec![
            "generate".to_string(),
            s(run),
            "--prompt".into(),
            prompt.into(),
            "--device".into(),
            "cpu".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        dtl(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .code(0)
            .stdout
    };
    // GPT-2-style on a token file: ids in, ids out.
    let gpt = example("moby_gpt");
    let out = dir.path().join("gpt");
    train(&gpt, &out, &["--set", "train.steps=30"]).code(0);
    let prompt = "67,97,108,108,32,109,101";
    let greedy = generate(&out, prompt, &["--tokens", "90", "--temperature", "0"]);
    let uncached = generate(
        &out,
        prompt,
        &["--tokens", "90", "--temperature", "0", "--no-cache"],
    );
    assert_eq!(greedy, uncached, "the cache changes nothing");
    let ids: Vec<i64> = greedy
        .split([' ', ',', '\n'])
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 7 + 90);
    let plan_json = dir.path().join("gpt.json");
    dtl(&[
        "compile",
        &s(&gpt),
        "--format",
        "json",
        "-o",
        &s(&plan_json),
    ])
    .code(0);
    let twin = dir.path().join("twin.json");
    let status = Command::new(python())
        .arg(root().join("tests/reference/use_model.py"))
        .args([
            "generate",
            &s(&plan_json),
            &s(&out.join("model.safetensors")),
            prompt,
            "90",
            &s(&twin),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "use_model.py generate failed");
    let theirs: Vec<i64> = serde_json::from_value(read_json(&twin)).unwrap();
    assert_eq!(ids[7..], theirs[..], "greedy tokens against PyTorch");
    // top_k 1 is greedy; a seed gives the same sample twice, another seed another.
    assert_eq!(
        generate(&out, prompt, &["--tokens", "90", "--top-k", "1"]),
        greedy
    );
    let sample = |seed: &str| generate(&out, prompt, &["--tokens", "40", "--seed", seed]);
    assert_eq!(sample("1"), sample("1"));
    assert_ne!(sample("1"), sample("2"));

    // LLaMA-style (rotary positions, grouped keys and values) on bytes.
    let llama = example("moby_llama");
    let out = dir.path().join("llama");
    train(&llama, &out, &["--set", "train.steps=30"]).code(0);
    let text = generate(&out, "Call me", &["--tokens", "90", "--temperature", "0"]);
    assert!(text.starts_with("Call me"));
    assert_eq!(
        text,
        generate(
            &out,
            "Call me",
            &["--tokens", "90", "--temperature", "0", "--no-cache"]
        )
    );
}

/// What cannot be used is said before anything runs.
#[test]
fn using_a_model_wrongly_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let file = mlp(dir.path(), "small", "steps = 2", "");
    let out = dir.path().join("run");
    train(&file, &out, &[]).code(0);
    dtl(&["eval", &s(&file)])
        .code(2)
        .stderr_has("which weights? give --weights W");
    let (labelled, _) = digit_rows(dir.path(), 5);
    dtl(&["predict", &s(&out), "--input", &s(&labelled)])
        .code(1)
        .stderr_has(
            "rows of 65 values ([65]), the model reads 64 ([64]): leave the label column out",
        );
    dtl(&["generate", &s(&out), "--prompt", "x"])
        .code(1)
        .stderr_has("generate continues text: the model must be trained on a text or token file");
    let wrong = dir.path().join("wrong.safetensors");
    std::fs::write(&wrong, b"not safetensors").unwrap();
    dtl(&["eval", &s(&file), "--weights", &s(&wrong)])
        .code(1)
        .stderr_has("wrong.safetensors");
}

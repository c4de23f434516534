//! The `dtl` binary, run as a user runs it.

use std::path::Path;
use std::process::Command;

mod common;

use common::{dtl, short_example, train, EXAMPLE};

#[test]
fn check_accepts_the_example() {
    dtl(&["check", EXAMPLE])
        .code(0)
        .stdout_has("digits_mlp.dtl: ok")
        .stdout_has("note: its data file was not read; `dtl check --data` also checks");
    // With --data, or for synthetic data, there is nothing to say.
    let with_data = dtl(&["check", "--data", EXAMPLE]).code(0);
    assert!(
        !with_data.stdout.contains("not read"),
        "{}",
        with_data.stdout
    );
    let synthetic = dtl(&["check", "examples/synthetic_blobs.dtl"]).code(0);
    assert!(
        !synthetic.stdout.contains("not read"),
        "{}",
        synthetic.stdout
    );
}

#[test]
fn check_reports_errors_with_file_line_and_column() {
    dtl(&["check", "tests/cases/err/width_mismatch.dtl"])
        .code(1)
        .stderr_has("width_mismatch.dtl:4:37")
        .stderr_has("dtl::check::width_mismatch")
        .stderr_has("1 error");
}

#[test]
fn check_reports_every_file_and_fails_if_any_fails() {
    dtl(&["check", EXAMPLE, "tests/cases/err/unknown_layer.dtl"])
        .code(1)
        .stdout_has("digits_mlp.dtl: ok")
        .stderr_has("did you mean `linear`?");
}

#[test]
fn check_json_gives_records_with_byte_offsets() {
    let run = dtl(&[
        "check",
        "--format",
        "json",
        "tests/cases/err/unknown_layer.dtl",
    ])
    .code(1);
    let records: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let record = &records[0];
    assert_eq!(record["code"], "dtl::check::unknown_name");
    assert_eq!(record["severity"], "error");
    assert_eq!(record["line"], 3);
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/err/unknown_layer.dtl"),
    )
    .unwrap();
    let (start, end) = (
        record["start"].as_u64().unwrap() as usize,
        record["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[start..end], "lienar");
}

#[test]
fn check_github_prints_annotations() {
    dtl(&[
        "check",
        "--format",
        "github",
        "tests/cases/err/unknown_layer.dtl",
    ])
    .code(1)
    .stdout_has("::error file=tests/cases/err/unknown_layer.dtl,line=3,col=41,");
}

#[test]
fn usage_and_io_errors_exit_2() {
    dtl(&["check", "no/such/file.dtl"])
        .code(2)
        .stderr_has("cannot read `no/such/file.dtl`");
    dtl(&["frobnicate"]).code(2);
    dtl(&["run", EXAMPLE, "--device", "tpu"])
        .code(2)
        .stderr_has("unknown device `tpu`");
}

#[test]
fn compile_is_deterministic_and_ignores_comments() {
    let first = dtl(&["compile", EXAMPLE]).code(0).stdout;
    let second = dtl(&["compile", EXAMPLE]).code(0).stdout;
    assert_eq!(first, second);
    let plan = dtl_compiler::plan::Plan::from_text(&first).unwrap();
    assert_eq!(
        plan.model.parameter_count,
        64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    );

    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE))
        .unwrap()
        .replace(
            "\"../data/digits.csv.gz\"",
            &format!("{:?}", data.display().to_string()),
        );
    let commented = dir.path().join("digits_mlp.dtl");
    std::fs::write(
        &commented,
        format!(
            "// an extra comment\n{}",
            text.replace("model = DigitsMlp", "model = DigitsMlp  // which network")
        ),
    )
    .unwrap();
    let json = dtl(&["compile", "--format", "json", commented.to_str().unwrap()]);
    // Only the source path and the data path (relative to the file) differ.
    let other = dtl_compiler::plan::Plan::from_text(&json.code(0).stdout).unwrap();
    assert_eq!(other.model, plan.model);
    assert_eq!(other.train, plan.train);
    assert_eq!(other.step_program, plan.step_program);
}

#[test]
fn compiled_plan_rejects_unknown_fields() {
    let yaml = dtl(&["compile", EXAMPLE]).code(0).stdout;
    let broken = yaml.replace("micro_batch: 32", "micro_batch: 32\n  warp_speed: 9");
    let err = dtl_compiler::plan::Plan::from_text(&broken).unwrap_err();
    assert!(err.contains("unknown field `warp_speed`"), "{err}");
}

#[test]
fn run_trains_writes_outputs_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 20);
    let out_a = dir.path().join("a");
    dtl(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        out_a.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .code(0)
    .stdout_has("trained 20 steps")
    .stdout_has("held-out accuracy");
    for name in [
        "plan.yaml",
        "metrics.jsonl",
        "model.safetensors",
        "summary.json",
    ] {
        assert!(out_a.join(name).is_file(), "{name} missing");
    }
    let metrics = std::fs::read_to_string(out_a.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&serde_json::Value> =
        records.iter().filter(|r| r.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 20);
    for (i, r) in steps.iter().enumerate() {
        assert_eq!(r["step"], i as u64 + 1);
        assert_eq!(r["lr"], 3e-3);
        assert!(r["grad_norm"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        records
            .iter()
            .filter(|r| r.get("eval_accuracy").is_some())
            .count(),
        4
    );

    // The compiled plan runs the same as the file: same seed, same numbers.
    let plan_path = dir.path().join("short.yaml");
    dtl(&[
        "compile",
        file.to_str().unwrap(),
        "-o",
        plan_path.to_str().unwrap(),
    ])
    .code(0);
    let out_b = dir.path().join("b");
    train(&plan_path, &out_b, &[]).code(0);
    assert_eq!(
        metrics,
        std::fs::read_to_string(out_b.join("metrics.jsonl")).unwrap()
    );

    // Initial weights from a file: starting from the trained weights, the
    // first loss is the loss those weights reach, far below a fresh start.
    let out_c = dir.path().join("c");
    let init = out_a.join("model.safetensors");
    train(&file, &out_c, &["--init", init.to_str().unwrap()]).code(0);
    let first = |dir: &Path| -> f64 {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        v["loss"].as_f64().unwrap()
    };
    assert!(
        first(&out_c) < first(&out_a) - 0.5,
        "{} vs {}",
        first(&out_c),
        first(&out_a)
    );

    // The file is read strictly: a tensor the model does not have (a
    // misspelt name) is an error, not ignored.
    let extra = dir.path().join("extra.safetensors");
    let script = format!(
        "from safetensors.torch import load_file, save_file\n\
         w = load_file({:?})\n\
         w['2.weightt'] = w['2.weight'].clone()\n\
         save_file(w, {:?})\n",
        init.display().to_string(),
        extra.display().to_string()
    );
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(Command::new(python)
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    train(
        &file,
        &dir.path().join("d"),
        &["--init", extra.to_str().unwrap()],
    )
    .code(1)
    .stderr_has("`2.weightt` is not a")
    .stderr_has("did you mean `2.weight`?");
}

#[test]
fn run_reports_a_bad_data_file_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 5);
    let plan_path = dir.path().join("plan.yaml");
    // Without the data read, the plan records no file identity: the
    // runtime's own reading meets the bad row.
    dtl(&[
        "compile",
        file.to_str().unwrap(),
        "--no-data",
        "-o",
        plan_path.to_str().unwrap(),
    ])
    .code(0);
    // The data changes after compiling: a row loses a column.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "1,2,3\n1,2\n").unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/digits.csv.gz")
        .display()
        .to_string();
    let plan = std::fs::read_to_string(&plan_path)
        .unwrap()
        .replace(&data, &bad.display().to_string());
    std::fs::write(&plan_path, plan).unwrap();
    dtl(&[
        "run",
        plan_path.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
        "--quiet",
    ])
    .code(1)
    .stderr_has("bad.csv")
    .stderr_has("line 2: 2 columns");
    // A plan made with the data read: the changed file is refused before
    // it is read, by name.
    dtl(&[
        "compile",
        file.to_str().unwrap(),
        "-o",
        plan_path.to_str().unwrap(),
    ])
    .code(0);
    let plan = std::fs::read_to_string(&plan_path)
        .unwrap()
        .replace(&data, &bad.display().to_string());
    std::fs::write(&plan_path, plan).unwrap();
    dtl(&[
        "run",
        plan_path.to_str().unwrap(),
        "--out",
        dir.path().join("o2").to_str().unwrap(),
        "--quiet",
    ])
    .code(1)
    .stderr_has("bad.csv")
    .stderr_has("changed since the plan was made")
    .stderr_has("57523 bytes then, 10 now");
}

#[test]
fn cuda_is_used_where_it_exists_and_a_clear_error_where_not() {
    let info = dtl(&["info"]).code(0).stdout;
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 1);
    let run = dtl(&[
        "run",
        file.to_str().unwrap(),
        "--device",
        "cuda",
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    if info.contains("CUDA available") {
        // A GPU machine: the request is valid, and the run says where it ran.
        run.code(0).stdout_has("on Cuda(0)");
    } else {
        run.code(2).stderr_has("no CUDA device");
    }
}

#[test]
fn check_world_sizes_against_the_parallel_degrees() {
    // data = 2 × pipeline = 2: world 4 fits, 6 does not.
    let run = dtl(&[
        "check",
        "--world",
        "4,6",
        "tests/cases/ok/parallel_pipeline_split.dtl",
    ])
    .code(1);
    let run = run.stderr_has("world size 6 ≠ data 2 × pipeline 2 = 4");
    assert!(
        !run.stderr.contains("world size 4 "),
        "4 = 2 × 2 is a valid world size:\n{}",
        run.stderr
    );
    dtl(&["check", "--world", "four", EXAMPLE]).code(2);
}

/// The digits, written by NumPy as .npy and as gzip-compressed IDX files.
fn digits_in_other_formats(dir: &Path) {
    let script = r#"
import gzip, struct, sys
import numpy as np
rows = np.loadtxt(sys.argv[1], delimiter=",")
x, y = rows[:, :-1], rows[:, -1]
np.save(sys.argv[2] + "/x.npy", x.astype(np.float32))
np.save(sys.argv[2] + "/y.npy", y.astype(np.int64))
with gzip.open(sys.argv[2] + "/images.idx.gz", "wb") as f:
    f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, len(x), 8, 8) + x.astype(np.uint8).tobytes())
with gzip.open(sys.argv[2] + "/labels.idx.gz", "wb") as f:
    f.write(struct.pack(">BBBBI", 0, 0, 8, 1, len(y)) + y.astype(np.uint8).tobytes())
from safetensors.numpy import save_file
save_file({"x": x.astype(np.float32), "y": y.astype(np.int64)}, sys.argv[2] + "/digits.safetensors")
"#;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(root.join(".venv/bin/python"))
        .args(["-c", script])
        .arg(root.join("data/digits.csv.gz"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_same_data_in_csv_npy_idx_and_safetensors_trains_identically() {
    let dir = tempfile::tempdir().unwrap();
    digits_in_other_formats(dir.path());
    let csv = short_example(dir.path(), 10);
    let text = std::fs::read_to_string(&csv).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/digits.csv.gz")
        .display()
        .to_string();
    let csv_source = format!("csv({:?}, label: -1)", data);
    assert!(text.contains(&csv_source), "{text}");
    let mut metrics = Vec::new();
    for (name, source, shape) in [
        ("csv", csv_source.clone(), ""),
        (
            "npy",
            r#"npy(features: "x.npy", labels: "y.npy")"#.to_string(),
            "",
        ),
        (
            "safetensors",
            r#"safetensors("digits.safetensors", features: "x", labels: "y")"#.to_string(),
            "",
        ),
        // IDX images are 8×8; the MLP reads them flat.
        (
            "idx",
            r#"idx(images: "images.idx.gz", labels: "labels.idx.gz")"#.to_string(),
            "shape = [64]\n",
        ),
    ] {
        let file = dir.path().join(format!("{name}.dtl"));
        let body = text
            .replace(&csv_source, &source)
            .replace("scale = 0.0625", &format!("{shape}scale = 0.0625"));
        std::fs::write(&file, body).unwrap();
        let out = dir.path().join(format!("out-{name}"));
        train(&file, &out, &[]).code(0);
        metrics.push(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap());
    }
    assert_eq!(metrics[0], metrics[1], "csv and npy differ");
    assert_eq!(metrics[0], metrics[2], "csv and safetensors differ");
    assert_eq!(metrics[0], metrics[3], "csv and idx differ");
}

#[test]
fn module_tests_run_and_report_a_pytest_like_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lib.dtl");
    std::fs::write(
        &file,
        "module Block(d: int) {
  forward(x: [B, d]) -> [B, d] { x |> linear(d, d) |> layer_norm(d) |> gelu }
}
module Detour(d: int) {
  forward(x: [B, d]) -> [B, d] {
    let unused = x |> linear(d, d)
    x |> relu
  }
}
test block { Block(8) on [3, 8] gives [3, 8]; grads_reach_all_params; gradcheck }
test attention { attention(8, 2, causal: true) on [2, 5, 8] gives [2, 5, 8]; gradcheck }
test detour { Detour(8) on [3, 8] gives [3, 8]; grads_reach_all_params }
",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // A library file checks clean (with a warning for the unused `let`).
    dtl(&["check", file])
        .code(0)
        .stderr_has("`unused` is computed but never used");
    dtl(&["test", file])
        .code(1)
        .stdout_has("lib.dtl::block ... ok")
        .stdout_has("lib.dtl::attention ... ok")
        .stdout_has("lib.dtl::detour ... FAILED")
        .stdout_has("no gradient reaches `0.weight`")
        .stdout_has("2 passed, 1 failed");
    dtl(&["compile", file])
        .code(1)
        .stderr_has("no `train` block");
}

#[test]
fn set_overrides_are_checked_like_the_file_and_land_in_the_plan() {
    let plan = dtl(&[
        "compile",
        EXAMPLE,
        "--set",
        "train.steps=20",
        "--set",
        "train.optimizer.lr=1e-2",
        "--set",
        "data.digits.valid=0.1",
        "--set",
        "train.schedule=cosine(min_lr: 0)",
    ])
    .code(0)
    .stdout;
    let plan = dtl_compiler::plan::Plan::from_text(&plan).unwrap();
    assert_eq!(plan.train.steps, 20);
    assert_eq!(plan.train.optimizer.lr(), 1e-2);
    assert_eq!(plan.data.valid_fraction, 0.1);
    assert!(matches!(
        plan.train.schedule.decay,
        dtl_compiler::plan::Decay::Cosine { .. }
    ));
    // A bad value gets the file's diagnostic, at the setting it replaced.
    dtl(&["check", EXAMPLE, "--set", "train.steps=0"])
        .code(1)
        .stderr_has("`steps` must be at least 1, got 0")
        .stderr_has("digits_mlp.dtl:32:11");
    dtl(&["check", EXAMPLE, "--set", "data.digit.valid=0.1"])
        .code(1)
        .stderr_has("no data source `digit` (there is: digits)");
    dtl(&["check", EXAMPLE, "--set", "train.steps"])
        .code(2)
        .stderr_has("expected PATH=VALUE");
    // A file without a `parallel` block takes `--set parallel.…` as the
    // others do; a bad value points at the `train` block.
    let plan = dtl(&["compile", EXAMPLE, "--set", "parallel.data=2"])
        .code(0)
        .stdout;
    let plan = dtl_compiler::plan::Plan::from_text(&plan).unwrap();
    assert_eq!(plan.topology.parallelism.data, 2);
    assert_eq!(plan.topology.ranks.len(), 2);
    dtl(&["check", EXAMPLE, "--set", "parallel.data=0"])
        .code(1)
        .stderr_has("`data` must be at least 1, got 0")
        .stderr_has("digits_mlp.dtl:24:1");
    // The run uses the overrides.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    dtl(&[
        "run",
        EXAMPLE,
        "--quiet",
        "--device",
        "cpu",
        "--set",
        "train.steps=7",
        "--out",
        out.to_str().unwrap(),
    ])
    .code(0)
    .stdout_has("trained 7 steps");
}

/// torchrun would start a whole run per process into one folder: refused,
/// with the command that does what was meant, before anything is written.
#[test]
fn a_run_started_by_torchrun_is_refused_with_the_right_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let output = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", EXAMPLE, "--quiet", "--out"])
        .arg(&out)
        .env("TORCHELASTIC_RUN_ID", "none")
        .env("RANK", "1")
        .env("WORLD_SIZE", "2")
        .env("LOCAL_WORLD_SIZE", "2")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let said = common::flat(&stderr);
    assert!(said.contains("started by torchrun"), "{stderr}");
    assert!(said.contains("this is rank 1 of 2"), "{stderr}");
    assert!(said.contains("--set parallel.data=2"), "{stderr}");
    assert!(!out.exists(), "the refused run wrote {}", out.display());
}

#[test]
fn explain_shows_costs_before_anything_runs() {
    dtl(&["explain", EXAMPLE])
        .code(0)
        .stdout_has("model DigitsMlp — 17226 parameters")
        .stdout_has(
            "memory per rank: parameters 67.3 KiB + gradients 67.3 KiB + optimizer state 134.6 KiB",
        )
        .stdout_has("ranks: 1 (data 1 × pipeline 1)")
        .stdout_has("communication: none (one process)");
    let json = dtl(&["explain", "--format", "json", EXAMPLE])
        .code(0)
        .stdout;
    let cost: serde_json::Value = serde_json::from_str(&json).unwrap();
    // 3 × (64·128 + 128·64 + 64·10) multiply-adds × 2 FLOPs, plus element-wise work.
    assert!(
        cost["train_flops_per_sample"].as_u64().unwrap() >= 3 * 2 * (64 * 128 + 128 * 64 + 64 * 10)
    );
    assert_eq!(cost["global_batch"], 64);
}

/// `--cluster`: the predicted step, part by part with its link, in the
/// report and the JSON (the step the sum of its parts); a rank that needs
/// more memory than the device has fails after the report; a bad cluster
/// file is named with its field.
#[test]
fn explain_predicts_the_step_on_a_cluster_and_checks_the_memory() {
    let h100 = Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters/h100_sxm.yaml");
    let h100 = h100.to_str().unwrap();
    dtl(&["explain", EXAMPLE, "--cluster", h100])
        .code(0)
        .stdout_has("predicted step on H100 SXM")
        .stdout_has("optimizer step");
    let json = dtl(&["explain", EXAMPLE, "--cluster", h100, "--format", "json"])
        .code(0)
        .stdout;
    let explained: serde_json::Value = serde_json::from_str(&json).unwrap();
    let prediction = &explained["prediction"];
    let parts = prediction["parts"].as_array().unwrap();
    let sum: f64 = parts.iter().map(|p| p["seconds"].as_f64().unwrap()).sum();
    let step = prediction["step_seconds"].as_f64().unwrap();
    assert!((sum - step).abs() <= 1e-12 * step, "{prediction}");
    assert_eq!(parts[0]["link"], "device");
    let samples = prediction["samples_per_second"].as_f64().unwrap();
    assert!((samples * step - 64.0).abs() < 1e-9, "{prediction}");
    assert!(prediction["mfu"].as_f64().unwrap() > 0.0);
    assert_eq!(
        prediction["memory"]["per_rank_bytes"],
        explained["memory"]["total"]
    );
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(h100).unwrap();
    let small = dir.path().join("small.yaml");
    std::fs::write(&small, text.replace("85899345920", "100000")).unwrap();
    dtl(&["explain", EXAMPLE, "--cluster", small.to_str().unwrap()])
        .code(1)
        .stdout_has("DOES NOT FIT")
        .stderr_has("more than the 97.7 KiB the cluster's device has");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, text.replace("network: 0.8", "network: 1.8")).unwrap();
    dtl(&["explain", EXAMPLE, "--cluster", bad.to_str().unwrap()])
        .code(2)
        .stderr_has("bad.yaml: efficiency.network is a fraction of a peak");
}

#[test]
fn data_auto_compiles_and_runs_for_the_world_size_given() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 3);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}\nparallel {{ data = auto; bucket_mb = 1 }}\n"),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    dtl(&["compile", file])
        .code(1)
        .stderr_has("a plan is for one world size")
        .stderr_has("--world N");
    let plan = dtl(&["compile", file, "--world", "8", "--format", "json"]).code(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["topology"]["parallelism"]["data"], 8);
    assert_eq!(plan["train"]["global_batch"], 32 * 2 * 8);
    dtl(&["explain", file, "--world", "8"])
        .code(0)
        .stdout_has("all-reduce gradients over 8 replicas");
    dtl(&["check", file, "--world", "8,12"]).code(0);
    let out = dir.path().join("out");
    dtl(&["run", file, "--out", out.to_str().unwrap()])
        .code(1)
        .stderr_has("a plan is for one world size");
    // Two ranks, started by dtl itself through mpirun.
    dtl(&[
        "run",
        file,
        "--world",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ])
    .code(0)
    .stdout_has("× 2 ranks (mpi)");
    assert!(out.join("rank-1.log").is_file() && out.join("model.safetensors").is_file());
}

#[test]
fn plot_draws_a_run_as_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 20);
    let out = dir.path().join("run");
    train(&file, &out, &[]).code(0);
    let run = out.to_str().unwrap();
    dtl(&["plot", run]).code(0).stdout_has("loss.svg");
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..80]
    );
    assert!(svg.contains("accuracy"), "the eval records are drawn too");
    let png = out.join("curves.png");
    dtl(&["plot", run, "-o", png.to_str().unwrap()]).code(0);
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    dtl(&["plot", run, "-o", "curves.gif"])
        .code(1)
        .stderr_has("name it .svg or .png");
    std::fs::write(
        out.join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 2.0, \"lr\": 0.1, \"grad_norm\": 1.0}\nnot json\n",
    )
    .unwrap();
    dtl(&["plot", run]).code(1).stderr_has("metrics.jsonl:2");
}

#[test]
fn graph_draws_the_model_and_the_pipeline_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let case = "tests/cases/ok/parallel_pipeline_split.dtl";
    let dot = dtl(&["graph", case]).code(0);
    assert!(dot.stdout.starts_with("digraph"), "{}", dot.stdout);
    assert!(
        dot.stdout.contains("stage 1"),
        "stages are coloured and named"
    );
    for name in ["model.svg", "model.dot", "model.png"] {
        let out = dir.path().join(name);
        dtl(&["graph", case, "-o", out.to_str().unwrap()]).code(0);
        assert!(std::fs::metadata(&out).unwrap().len() > 100, "{name}");
    }
    let svg = std::fs::read_to_string(dir.path().join("model.svg")).unwrap();
    assert!(
        svg.contains("1.2.norm") && svg.contains("[B, 128]"),
        "nodes and shapes"
    );
    let timeline = dir.path().join("schedule.svg");
    dtl(&[
        "graph",
        case,
        "--timeline",
        "-o",
        timeline.to_str().unwrap(),
    ])
    .code(0);
    let svg = std::fs::read_to_string(&timeline).unwrap();
    assert!(
        svg.contains("1F1B") && svg.contains("20.0%"),
        "schedule and bubble"
    );
    // On a cluster: each pass as long as predicted, the step after it.
    dtl(&[
        "graph",
        case,
        "--timeline",
        "--cluster",
        "clusters/h100_sxm.yaml",
        "-o",
        timeline.to_str().unwrap(),
    ])
    .code(0);
    let svg = std::fs::read_to_string(&timeline).unwrap();
    assert!(
        svg.contains("on H100 SXM")
            && svg.contains("as predicted")
            && svg.contains("optimizer step"),
        "{svg}"
    );
    dtl(&["graph", case, "--cluster", "clusters/h100_sxm.yaml"])
        .code(2)
        .stderr_has("--timeline");
    dtl(&["graph", case, "-o", "x.jpg"])
        .code(2)
        .stderr_has(".svg, .png or .dot");
}

/// An error inside a module instance: at the call in every format, the
/// line inside the module as a related location.
#[test]
fn check_formats_give_the_call_and_the_line_inside() {
    let file = "tests/cases/err/instance_heads_call_site.dtl";
    let json = dtl(&["check", "--format", "json", file]).code(1);
    let records: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let record = &records[0];
    assert_eq!(
        (&record["line"], &record["column"]),
        (&serde_json::json!(15), &serde_json::json!(10))
    );
    let related = &record["related"][0];
    assert_eq!(
        (&related["line"], &related["column"]),
        (&serde_json::json!(6), &serde_json::json!(31))
    );
    assert_eq!(related["message"], "heads must divide dim");
    let sarif = dtl(&["check", "--format", "sarif", file]).code(1);
    let log: serde_json::Value = serde_json::from_str(&sarif.stdout).unwrap();
    let result = &log["runs"][0]["results"][0];
    let region = &result["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startLine"], 15);
    let related = &result["relatedLocations"][0];
    assert_eq!(related["physicalLocation"]["region"]["startLine"], 6);
    assert_eq!(related["message"]["text"], "heads must divide dim");
}

#[test]
fn check_sarif_is_one_log_with_a_rule_per_code_and_a_region_per_result() {
    let run = dtl(&[
        "check",
        "--format",
        "sarif",
        "tests/cases/err/mse_on_class_labels.dtl",
        "tests/cases/ok/lints.dtl",
    ])
    .code(1);
    let log: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let run0 = &log["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "dtl");
    let rules: Vec<&str> = run0["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let results = run0["results"].as_array().unwrap();
    assert!(results.len() >= 2);
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index], result["ruleId"]);
    }
    let error = &results[0];
    assert_eq!(error["level"], "error");
    assert_eq!(error["ruleId"], "dtl::check::invalid_value");
    let location = &error["locations"][0]["physicalLocation"];
    assert_eq!(
        location["artifactLocation"]["uri"],
        "tests/cases/err/mse_on_class_labels.dtl"
    );
    // `mse` on line 5, columns 44..47, 3 bytes.
    let region = &location["region"];
    assert_eq!(
        (
            &region["startLine"],
            &region["startColumn"],
            &region["endColumn"]
        ),
        (
            &serde_json::json!(5),
            &serde_json::json!(44),
            &serde_json::json!(47)
        )
    );
    assert_eq!(region["byteLength"], 3);
    assert!(results.iter().any(|r| r["level"] == "warning"));
}

#[test]
fn fmt_rewrites_checks_with_a_diff_and_leaves_broken_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let messy = dir.path().join("messy.dtl");
    let text =
        "model Net {\n  forward(x: [B, 64]) -> [B, 10] { x |> linear( 64,10 ) }   // head\n}\n";
    std::fs::write(&messy, text).unwrap();
    let path = messy.to_str().unwrap();
    let check = dtl(&["fmt", "--check", path]).code(1);
    assert!(
        check.stdout.contains("@@") && check.stdout.contains("+"),
        "{}",
        check.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        text,
        "--check changes nothing"
    );
    dtl(&["fmt", path]).code(0).stdout_has("formatted");
    let formatted = std::fs::read_to_string(&messy).unwrap();
    assert!(
        formatted.contains("linear(64, 10)") && formatted.contains("// head"),
        "{formatted}"
    );
    dtl(&["fmt", "--check", path]).code(0);
    let broken = dir.path().join("broken.dtl");
    std::fs::write(&broken, "model Net {\n  forward(x: [B, 64] -> \n").unwrap();
    dtl(&["fmt", broken.to_str().unwrap()])
        .code(1)
        .stderr_has("broken.dtl");
    assert_eq!(
        std::fs::read_to_string(&broken).unwrap(),
        "model Net {\n  forward(x: [B, 64] -> \n"
    );
}

/// `dtl fmt FILE` formats what FILE imports too, each file once (an import
/// cycle is no loop), within FILE's folder: a file imported from outside it
/// is left, said.
#[test]
fn fmt_follows_imports_within_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("lib")).unwrap();
    let messy_module =
        "module Head(d: int) {\n  forward(x: [B, d]) -> [B, 10] { x |> linear( d,10 ) }\n}\n";
    std::fs::write(
        project.join("lib/blocks.dtl"),
        format!("import \"../main.dtl\"\nimport \"../../outside.dtl\"\n{messy_module}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("outside.dtl"), messy_module).unwrap();
    let main = project.join("main.dtl");
    std::fs::write(
        &main,
        "import \"lib/blocks.dtl\"\nmodel Net {\n  forward(x: [B, 64]) -> [B, 10] { x |> Head( 64 ) }\n}\n",
    )
    .unwrap();
    let path = main.to_str().unwrap();
    let check = dtl(&["fmt", "--check", path]).code(1);
    assert!(check.stdout.contains("blocks.dtl"), "{}", check.stdout);
    dtl(&["fmt", path])
        .code(0)
        .stdout_has("formatted")
        .stderr_has("not formatted: `../../outside.dtl`");
    let blocks = std::fs::read_to_string(project.join("lib/blocks.dtl")).unwrap();
    assert!(blocks.contains("linear(d, 10)"), "{blocks}");
    let main_text = std::fs::read_to_string(&main).unwrap();
    assert!(main_text.contains("Head(64)"), "{main_text}");
    let outside = std::fs::read_to_string(dir.path().join("outside.dtl")).unwrap();
    assert_eq!(outside, messy_module, "a file outside the folder is left");
    dtl(&["fmt", "--check", path]).code(0);
}

/// `--no-data`: a file whose data is not at hand still checks and
/// compiles (its shapes taken from the model); what needs the rows says so.
#[test]
fn no_data_checks_and_compiles_without_reading_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("\"../data/digits.csv.gz\"", "\"not/here.csv\"");
    let file = dir.path().join("elsewhere.dtl");
    std::fs::write(&file, &text).unwrap();
    let file = file.to_str().unwrap();
    // `dtl check` reads no data file unless asked (--data): an untrusted
    // file's paths are never opened.
    dtl(&["check", file]).code(0).stdout_has("ok");
    dtl(&["check", "--data", file])
        .code(1)
        .stderr_has("not/here.csv");
    dtl(&["compile", file]).code(1).stderr_has("not/here.csv");
    let plan = dtl(&["compile", "--no-data", "--format", "json", file]).code(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["data"]["rows"], 0);
    assert_eq!(plan["topology"]["sharding"]["rows_per_replica"], 0);
    assert_eq!(plan["data"]["sample_shape"], serde_json::json!([64]));
    // `epochs` needs the rows: a plan cannot be made without them, while
    // a check without the data leaves the step count open.
    let epochs = dir.path().join("epochs.dtl");
    std::fs::write(&epochs, text.replace("steps = 400", "epochs = 2")).unwrap();
    dtl(&["check", epochs.to_str().unwrap()]).code(0);
    dtl(&["compile", "--no-data", epochs.to_str().unwrap()])
        .code(1)
        .stderr_has("`epochs` needs the number of rows");
}

/// The help of a data file that cannot be read says where paths start,
/// also for a file named without a folder (run from its own folder).
#[test]
fn path_help_names_the_current_folder_for_a_bare_file_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bare.dtl"),
        "model Net { forward(x: [B, 4]) -> [B, 3] { x |> linear(4, 3) } }
data d { source = csv(\"missing.csv\") }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 1; steps = 1 }
",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["check", "--data", "bare.dtl"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = common::flat(&String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(here the current folder)"), "{stderr}");
    assert!(!stderr.contains("folder ()"), "{stderr}");
}

/// `dtl check --format json` on a file whose imported module is broken by
/// the values this file gives it: the record is at the call, and its
/// related location names the imported file, with its line and column.
#[test]
fn a_diagnostic_in_an_imported_file_names_that_file() {
    let run = dtl(&[
        "check",
        "--format",
        "json",
        "tests/cases/err/import_error_inside.dtl",
    ])
    .code(1);
    let records: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let record = &records[0];
    assert_eq!(
        record["file"], "tests/cases/err/import_error_inside.dtl",
        "{records}"
    );
    assert_eq!(
        (&record["line"], &record["column"]),
        (&serde_json::json!(3), &serde_json::json!(41)),
        "{records}"
    );
    let inside = &record["related"][0];
    assert_eq!(inside["file"], "tests/cases/lib/broken.dtl", "{records}");
    assert_eq!(
        (&inside["line"], &inside["column"]),
        (&serde_json::json!(3), &serde_json::json!(25)),
        "{records}"
    );
}

/// Sharding within sync groups of one replica each shards nothing: with
/// `data = auto` the world size decides, and `--world` gets the error at
/// `groups` (a fixed degree gets it at `shard`, tests/cases).
#[test]
fn sharding_within_groups_of_one_replica_is_refused_for_the_world() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("groups.dtl");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    std::fs::write(
        &file,
        format!(
            r#"model Net {{
  forward(x: [B, 64]) -> [B, 10] {{ x |> linear(64, 32) |> relu |> linear(32, 10) }}
}}
data digits {{ source = csv({:?}) }}
train {{ model = Net; data = digits; loss = cross_entropy; optimizer = adam(lr: 1e-3); steps = 4; micro_batch = 8 }}
parallel {{ data = auto; groups = 4; sync = local_sgd(period: 2); shard = optimizer }}
"#,
            digits.display().to_string()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    dtl(&["compile", file, "--world", "4"])
        .code(1)
        .stderr_has("within 4 sync groups of one replica each: nothing to shard");
    dtl(&["compile", file, "--world", "8"]).code(0);
}

//! What a run does beyond the plain loop: checkpoints and `--resume`, the
//! NaN policy, bf16 mixed precision and tf32 on the CPU.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dtl, short_example, train as run};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap()
}

/// data/digits.csv.gz as text.
fn digits_csv() -> String {
    use std::io::Read;
    let mut text = String::new();
    let gz = std::fs::File::open(common::root().join("data/digits.csv.gz")).unwrap();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// A JSON-lines copy of the digits trains bit for bit as the CSV does:
/// the same samples, in the same order, as the same float32 values
/// (features in one array field, then the same under 64 named fields).
#[test]
fn a_jsonl_source_trains_bitwise_as_its_csv() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 12);
    let text = digits_csv();
    let (mut array, mut fields) = (String::new(), String::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let (x, y) = cells.split_at(cells.len() - 1);
        array += &format!("{{\"x\": [{}], \"y\": {}}}\n", x.join(", "), y[0]);
        let named: Vec<String> = x
            .iter()
            .enumerate()
            .map(|(i, v)| format!("\"p{i}\": {v}"))
            .collect();
        fields += &format!("{{\"digit\": {}, {}}}\n", y[0], named.join(", "));
    }
    std::fs::write(dir.path().join("digits.jsonl"), array).unwrap();
    std::fs::write(dir.path().join("fields.jsonl"), fields).unwrap();
    let csv = dir.path().join("csv");
    run(&file, &csv, &[]).code(0);
    let names: Vec<String> = (0..64).map(|i| format!("\"p{i}\"")).collect();
    for source in [
        format!(
            "jsonl({:?})",
            dir.path().join("digits.jsonl").display().to_string()
        ),
        format!(
            "jsonl({:?}, features: [{}], label: \"digit\")",
            dir.path().join("fields.jsonl").display().to_string(),
            names.join(", ")
        ),
    ] {
        let out = dir.path().join("jsonl");
        let set = format!("data.digits.source={source}");
        run(&file, &out, &["--set", &set, "--overwrite"]).code(0);
        assert_eq!(common::step_records(&csv).len(), 12);
        common::same_run_bitwise(&csv, &out, &source);
    }
}

/// `init = weights(path, skip: [...])`: the tensors the file holds and
/// `skip` does not name are the file's, bit for bit; the skipped and the
/// missing keep the initialisers a run without `init` draws; the run says
/// which; a shape that does not fit is refused with both shapes.
#[test]
fn a_partial_init_loads_what_fits_and_keeps_the_initialisers_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::root().join("data/digits.csv.gz");
    let file = |name: &str, layers: &str, init: &str, lr: &str| {
        let text = format!(
            "model Net {{ forward(x: [B, 64]) -> [B, 10] {{ x |> {layers} }} }}\n\
             data digits {{ source = csv({:?}); scale = 0.0625 }}\n\
             train {{ model = Net; data = digits; loss = cross_entropy; optimizer = sgd(lr: {lr}); steps = 5; micro_batch = 16; seed = 9 {init} }}\n",
            data.display().to_string()
        );
        let path = dir.path().join(format!("{name}.dtl"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let mlp = "linear(64, 48) |> relu |> linear(48, 10)";
    let base = dir.path().join("base");
    run(&file("base", mlp, "", "0.1"), &base, &[]).code(0);
    let weights = base.join("model.safetensors");
    let w = format!("{:?}", weights.display().to_string());
    // The head is new, and a third layer is not in the file. At a rate of
    // 1e-30 every update is below half an ulp of its weight: the weights
    // after the steps are the initial ones, bit for bit.
    let deeper = "linear(64, 48) |> relu |> linear(48, 10) |> relu |> linear(10, 10)";
    let init = format!("; init = weights({w}, skip: [\"2.*\"])");
    let tuned = dir.path().join("tuned");
    let said = run(&file("tuned", deeper, &init, "1e-30"), &tuned, &[]).code(0);
    let said = common::flat(&said.stderr);
    assert!(
        said.contains("2 tensors loaded, 2 skipped (2.weight, 2.bias), 2 missing from the file (4.weight, 4.bias) (initialisers kept), 0 in the file unused"),
        "{said}"
    );
    let fresh = dir.path().join("fresh");
    run(&file("fresh", deeper, "", "1e-30"), &fresh, &[]).code(0);
    let (base_w, tuned_w, fresh_w) = (
        common::read_safetensors(&weights),
        common::read_safetensors(&tuned.join("model.safetensors")),
        common::read_safetensors(&fresh.join("model.safetensors")),
    );
    for name in ["0.weight", "0.bias"] {
        assert_eq!(tuned_w[name], base_w[name], "{name}: the file's");
        assert_ne!(
            tuned_w[name], fresh_w[name],
            "{name}: not the initialiser's"
        );
    }
    for name in ["2.weight", "2.bias", "4.weight", "4.bias"] {
        assert_eq!(tuned_w[name], fresh_w[name], "{name}: the initialiser's");
    }
    // What the file holds beyond the model is said.
    let init = format!("; init = weights({w}, skip: \"0.*\")");
    let small = run(
        &file("small", "linear(64, 10)", &init, "0.1"),
        &dir.path().join("s"),
        &[],
    )
    .code(0);
    assert!(
        common::flat(&small.stderr).contains("0 tensors loaded, 2 skipped (0.weight, 0.bias), 0 missing from the file (initialisers kept), 2 in the file unused (2.bias, 2.weight)"),
        "{}",
        small.stderr
    );
    // A tensor of another shape, not skipped: refused, both shapes said.
    let narrow = "linear(64, 32) |> relu |> linear(32, 10)";
    let init = format!("; init = weights({w})");
    let refused = run(
        &file("narrow", narrow, &init, "0.1"),
        &dir.path().join("n"),
        &[],
    )
    .code(1);
    assert!(
        common::flat(&refused.stderr).contains("`0.weight` has shape [48, 64] in the file, the model needs [32, 64]; name it in `skip` to keep its initialiser"),
        "{}",
        refused.stderr
    );
}

/// `on_bad_row = skip`: the digits CSV with broken lines among its rows (a
/// text cell, a short line, a negative label, a non-finite value) trains
/// bit for bit as the clean file, and summary.json counts the lines left
/// out and names the first; `dtl check --data` warns about them.
#[test]
fn bad_rows_left_out_train_as_the_clean_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 12);
    let text = digits_csv();
    let bad = ["1,2,oops,4", "1,2", "-1,-1,-1", "nan,0,1"];
    let mut dirty = String::new();
    for (i, line) in text.lines().enumerate() {
        dirty += line;
        dirty.push('\n');
        if i % 300 == 7 {
            let cells = line.split(',').count();
            let broken = match bad[(i / 300) % bad.len()] {
                "1,2" => "1,2".to_string(),
                pattern => {
                    let mut row: Vec<&str> = vec!["0"; cells];
                    let given: Vec<&str> = pattern.split(',').collect();
                    row[..given.len()].copy_from_slice(&given);
                    if pattern.starts_with("-1") {
                        row[cells - 1] = "-1";
                    }
                    row.join(",")
                }
            };
            dirty += &broken;
            dirty.push('\n');
        }
    }
    let path = dir.path().join("dirty.csv");
    std::fs::write(&path, dirty).unwrap();
    let clean = dir.path().join("clean");
    run(&file, &clean, &[]).code(0);
    let out = dir.path().join("dirty");
    let source = format!("data.digits.source=csv({:?})", path.display().to_string());
    run(
        &file,
        &out,
        &["--set", &source, "--set", "data.digits.on_bad_row=skip"],
    )
    .code(0);
    common::same_run_bitwise(&clean, &out, "the dirty file");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let skipped = &summary["skipped_rows"][0];
    assert_eq!(skipped["rows"], 6, "{summary}");
    assert_eq!(
        skipped["first"], "line 9, column 3: a 4-character text is not a number",
        "{summary}"
    );
    assert!(common::step_records(&clean).len() == 12);
    let checked = dtl(&[
        "check",
        "--data",
        file.to_str().unwrap(),
        "--set",
        &source,
        "--set",
        "data.digits.on_bad_row=skip",
    ]);
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    assert!(
        common::flat(&checked.stderr).contains("6 bad rows left out (the first: line 9, column 3"),
        "{}",
        checked.stderr
    );
}

/// The digits as the columnar files Python writes: a Parquet file of one
/// list column (pandas), a folder of three Parquet shards of 64 integer
/// columns under zstd, gzip and lz4 (pyarrow), a Hugging Face dataset
/// saved to disk in two Arrow shards, and one split of a DatasetDict
/// (`datasets`): each trains bit for bit as the CSV does.
#[test]
fn columnar_sources_train_bitwise_as_their_csv() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = short_example(d, 12);
    let digits = common::root().join("data/digits.csv.gz");
    common::data_files(&["digits".as_ref(), digits.as_os_str(), d.as_os_str()]);
    let csv = d.join("csv");
    run(&file, &csv, &[]).code(0);
    let at = |name: &str| format!("{:?}", d.join(name).display().to_string());
    let names: Vec<String> = (0..64).map(|i| format!("\"p{i}\"")).collect();
    for source in [
        format!("parquet({})", at("digits.parquet")),
        format!(
            "parquet({}, features: [{}], label: \"digit\")",
            at("shards"),
            names.join(", ")
        ),
        format!("hf_dataset({}, features: \"pixels\")", at("hf_one")),
        format!(
            "hf_dataset({}, features: \"pixels\", split: \"train\")",
            at("hf_dict")
        ),
    ] {
        let out = d.join("columnar");
        let set = format!("data.digits.source={source}");
        run(&file, &out, &["--set", &set, "--overwrite"]).code(0);
        assert_eq!(common::step_records(&csv).len(), 12);
        common::same_run_bitwise(&csv, &out, &source);
    }
}

#[test]
fn resume_from_a_checkpoint_gives_bitwise_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 10);
    resumes_bitwise(&file, dir.path(), &[]);
}

/// The same with random crops and flips: the resumed run draws each
/// sample's transforms as the uninterrupted one did (epoch and place are
/// in the checkpoint's data position).
#[test]
fn an_augmented_run_resumes_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits_cnn.dtl");
    resumes_bitwise(
        &file,
        dir.path(),
        &[
            "--set",
            "train.steps=10",
            "--set",
            "train.eval_every=5",
            "--set",
            "data.digits.random_crop=1",
            "--set",
            "data.digits.horizontal_flip=0.5",
        ],
    );
}

/// The same with a token file read at random offsets: the resumed run draws
/// the offsets the uninterrupted one drew (the generator's state is in the
/// checkpoint).
#[test]
fn a_token_file_run_resumes_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/moby_gpt.dtl");
    resumes_bitwise(
        &file,
        dir.path(),
        &[
            "--set",
            "train.steps=10",
            "--set",
            "train.warmup=3",
            "--set",
            "train.eval_every=5",
        ],
    );
}

/// Lion's momentum and Adafactor's factored second moments (row and column
/// statistics of the matrices, full ones of the biases) are saved and
/// restored, under schedules with their own warm-up.
#[test]
fn lion_and_adafactor_runs_resume_bitwise() {
    for (optimizer, schedule) in [
        (
            "lion(lr: 1e-3, weight_decay: 0.1)",
            "one_cycle(pct_start: 0.4)",
        ),
        (
            "adafactor(lr: 1e-2, weight_decay: 0.01)",
            "constant_with_warmup(warmup_steps: 3)",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = short_example(dir.path(), 10);
        let optimizer = format!("train.optimizer={optimizer}");
        let schedule = format!("train.schedule={schedule}");
        resumes_bitwise(
            &file,
            dir.path(),
            &["--set", &optimizer, "--set", &schedule],
        );
    }
}

/// Trains `file` for 10 steps with checkpoints after steps 4 and 8, resumes
/// a copy of the run folder from step 8, and compares.
fn resumes_bitwise(file: &Path, dir: &Path, extra: &[&str]) {
    let full = dir.join("full");
    let mut args = vec!["--set", "train.checkpoint_every=4"];
    args.extend(extra);
    run(file, &full, &args).code(0);
    assert_eq!(json(&full.join("checkpoint/state.json"))["step"], 8);

    // A copy of the folder resumes from step 8 and redoes 9 and 10. What
    // the first run wrote after the checkpoint is taken away, so the
    // resumed run must write it again itself.
    let resumed = dir.join("resumed");
    common::copy_folder(&full, &resumed);
    std::fs::remove_file(resumed.join("model.safetensors")).unwrap();
    std::fs::remove_file(resumed.join("summary.json")).unwrap();
    let kept = json(&resumed.join("checkpoint/state.json"))["metrics_bytes"]
        .as_u64()
        .unwrap();
    let metrics = std::fs::read(resumed.join("metrics.jsonl")).unwrap();
    std::fs::write(resumed.join("metrics.jsonl"), &metrics[..kept as usize]).unwrap();
    common::resume(&resumed)
        .code(0)
        .stdout_has("resumed from the checkpoint of step 8");
    assert_eq!(
        read(&full.join("metrics.jsonl")),
        read(&resumed.join("metrics.jsonl")),
        "metrics after resuming differ"
    );
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(resumed.join("model.safetensors")).unwrap(),
        "final weights after resuming differ"
    );
    assert_eq!(json(&resumed.join("summary.json"))["resumed_from"], 8);
}

#[test]
fn a_killed_run_resumes_to_the_same_losses() {
    // The character model, with dropout-free attention and 30 ms steps: slow
    // enough to kill the process between two checkpoints.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("examples/moby_char_lm.dtl");
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "--set",
        "train.steps=40",
        "--set",
        "train.checkpoint_every=5",
        "--set",
        "train.eval_every=0",
    ];
    let full = dir.path().join("full");
    run(&file, &full, &sets).code(0);

    let killed = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&killed)
        .args(sets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = killed.join("checkpoint/state.json");
    let started = Instant::now();
    while !state.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("summary.json").exists(),
        "the run finished before it could be killed"
    );
    common::resume(&killed).code(0);
    let resumed_from = json(&killed.join("summary.json"))["resumed_from"]
        .as_u64()
        .unwrap();
    assert!(resumed_from < 40, "resumed from {resumed_from}");
    assert_eq!(
        read(&full.join("metrics.jsonl")),
        read(&killed.join("metrics.jsonl"))
    );
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(killed.join("model.safetensors")).unwrap(),
        "the weights after resuming a killed run differ"
    );
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 3);
    let out = dir.path().join("out");
    run(&file, &out, &[]).code(0);
    // Finished: nothing to resume, nothing changed.
    let summary = std::fs::read(out.join("summary.json")).unwrap();
    dtl(&["run", "--resume", out.to_str().unwrap()])
        .code(0)
        .stderr_has("is finished (3 steps): nothing to resume");
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
    // Unfinished, without a checkpoint.
    std::fs::remove_file(out.join("summary.json")).unwrap();
    dtl(&["run", "--resume", out.to_str().unwrap()])
        .code(1)
        .stderr_has("no checkpoint here");
    dtl(&[
        "run",
        "--resume",
        dir.path().join("nowhere").to_str().unwrap(),
    ])
    .code(2);
}

/// The default example with SGD at a rate that overflows within a few steps.
const DIVERGE: [&str; 8] = [
    "--set",
    "train.optimizer=sgd(lr: 1e6)",
    "--set",
    "train.clip=none",
    "--set",
    "train.checkpoint_every=1",
    "--set",
    "train.eval_every=0",
];

#[test]
fn a_nan_loss_stops_the_run_at_its_step_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 30);
    let out = dir.path().join("out");
    let failed = run(&file, &out, &DIVERGE).code(1);
    let step: u64 = failed
        .stderr
        .split("step ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in the error:\n{}", failed.stderr));
    assert!(failed
        .stderr
        .contains(&format!("the checkpoint of step {} is intact", step - 1)));
    let state = json(&out.join("checkpoint/state.json"));
    assert_eq!(state["step"], step - 1);
    assert!(!out.join("checkpoint.tmp").exists());
    // The checkpoint is usable: resuming reaches the same failure.
    common::resume(&out)
        .code(1)
        .stderr_has(&format!("step {step}:"));
}

#[test]
fn on_nan_skip_drops_the_bad_steps_and_keeps_the_weights_finite() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 30);
    let out = dir.path().join("out");
    let mut args = DIVERGE.to_vec();
    args.extend(["--set", "train.on_nan=skip"]);
    run(&file, &out, &args).code(0).stdout_has("steps skipped");
    let summary = json(&out.join("summary.json"));
    let skipped = summary["skipped_steps"].as_u64().unwrap();
    assert!(skipped > 0);
    let metrics = read(&out.join("metrics.jsonl"));
    assert_eq!(
        metrics.matches("\"skipped\":true").count() as u64,
        skipped,
        "{metrics}"
    );
    // The weights never took a non-finite update.
    let check = "import sys, torch\nfrom safetensors.torch import load_file\n\
                 t = load_file(sys.argv[1])\n\
                 assert all(torch.isfinite(v).all() for v in t.values())";
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let status = Command::new(python)
        .args(["-c", check])
        .arg(out.join("model.safetensors"))
        .status()
        .unwrap();
    assert!(status.success(), "non-finite weights after skipped steps");
}

#[test]
fn bf16_mixed_precision_trains_close_to_fp32_but_not_identically() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 60);
    let losses = |precision: &str| -> Vec<f64> {
        let out = dir.path().join(precision);
        let set = format!("train.precision={precision}");
        run(&file, &out, &["--set", &set]).code(0);
        read(&out.join("metrics.jsonl"))
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect()
    };
    let (fp32, bf16) = (losses("fp32"), losses("bf16"));
    assert_ne!(fp32, bf16, "bf16 changed nothing");
    // bfloat16 keeps 8 bits of mantissa: the first loss agrees to ~1%, and
    // the run trains as well.
    let rel = (fp32[0] - bf16[0]).abs() / fp32[0];
    assert!(rel < 0.01, "first loss {} vs {}", fp32[0], bf16[0]);
    let tail = |l: &[f64]| l[l.len() - 10..].iter().sum::<f64>() / 10.0;
    assert!(
        tail(&bf16) < 0.6 * bf16[0] && (tail(&bf16) - tail(&fp32)).abs() < 0.15,
        "fp32 ends at {}, bf16 at {}",
        tail(&fp32),
        tail(&bf16)
    );
}

#[test]
fn tf32_on_the_cpu_says_so_and_trains_bitwise_as_fp32() {
    // TF32 is a CUDA matmul mode: the CPU has none, so the run must say it
    // computes in float32 and then do exactly that.
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 20);
    let (fp32, tf32) = (dir.path().join("fp32"), dir.path().join("tf32"));
    run(&file, &fp32, &["--set", "train.precision=fp32"]).code(0);
    run(&file, &tf32, &["--set", "train.precision=tf32"])
        .code(0)
        .stderr_has("precision = tf32 changes CUDA matrix products only");
    assert_eq!(common::losses_differ(&fp32, &tf32), 0.0);
    let (worst, name) = common::weights_differ(
        &fp32.join("model.safetensors"),
        &tf32.join("model.safetensors"),
    );
    assert_eq!(worst, 0.0, "{name} differs");
}

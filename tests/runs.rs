//! A run folder is owned and never lost (reliability round 2, issue 27):
//! each attack a careless or hostile user tried, reproduced, with the clear
//! error it now meets and the earlier run left untouched. docs/reliability.md
//! has the table.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dtl, resume, short_example, train};

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A run of the default example's MLP with checkpoints every 4 steps.
fn checkpointed(dir: &Path, steps: u32) -> PathBuf {
    let file = short_example(dir, steps);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("eval_every = 5", "eval_every = 5; checkpoint_every = 4");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_finished_run_is_never_overwritten_and_a_second_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 5);
    let out = dir.path().join("r");
    train(&file, &out, &[]).code(0);
    let (metrics, model) = (
        read(&out.join("metrics.jsonl")),
        read(&out.join("model.safetensors")),
    );
    // Again into the same folder: refused before anything is written.
    train(&file, &out, &[])
        .code(2)
        .stderr_has("holds a finished run")
        .stderr_has("--overwrite");
    assert_eq!(read(&out.join("metrics.jsonl")), metrics);
    assert_eq!(read(&out.join("model.safetensors")), model);
    // --resume on it: said finished, nothing changed.
    let summary = read(&out.join("summary.json"));
    resume(&out).code(0).stderr_has("is finished");
    assert_eq!(read(&out.join("summary.json")), summary);
    // --overwrite replaces it, and says nothing of the old run.
    train(&file, &out, &["--overwrite", "--set", "train.steps=3"]).code(0);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().filter(|l| l.contains("\"loss\"")).count(), 3);
    // A folder that is not a run folder is never cleared.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    train(&file, &out, &["--overwrite"])
        .code(2)
        .stderr_has("notes.txt");
    assert!(out.join("notes.txt").exists());
}

#[test]
fn the_default_folder_is_new_for_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 2);
    for _ in 0..2 {
        let run = Command::new(env!("CARGO_BIN_EXE_dtl"))
            .args(["run", file.to_str().unwrap(), "--quiet", "--device", "cpu"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let stem = file.file_stem().unwrap();
    let runs = dir.path().join("runs").join(stem);
    assert!(runs.join("1/summary.json").is_file());
    assert!(runs.join("2/summary.json").is_file());
    assert_eq!(
        std::fs::read_link(runs.join("latest")).unwrap(),
        Path::new("2")
    );
}

#[test]
fn two_runs_at_once_into_one_folder_the_second_is_refused_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 100_000);
    let out = dir.path().join("busy");
    let mut first = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::metadata(out.join("metrics.jsonl")).map_or(true, |m| m.len() == 0) {
        assert!(started.elapsed() < Duration::from_secs(60), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let holder = format!("pid {}", first.id());
    for extra in [&[][..], &["--overwrite"][..]] {
        train(&file, &out, extra)
            .code(2)
            .stderr_has("another dtl run is using it")
            .stderr_has(&holder);
    }
    resume(&out).code(2).stderr_has(&holder);
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock went with the process that held it.
    resume(&out).code(1).stderr_has("no checkpoint here");
}

/// The run of `file` to step 8, checkpoints at 4 and 8, then its copy
/// prepared as a folder whose run was killed after step 8.
fn killed_after_eight(dir: &Path, file: &Path) -> (PathBuf, PathBuf) {
    let full = dir.join("full");
    train(file, &full, &[]).code(0);
    let killed = dir.join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    for entry in ["plan.yaml", "metrics.jsonl"] {
        std::fs::copy(full.join(entry), killed.join(entry)).unwrap();
    }
    for sub in ["checkpoint", "checkpoint.prev"] {
        std::fs::create_dir_all(killed.join(sub)).unwrap();
        for entry in std::fs::read_dir(full.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), killed.join(sub).join(entry.file_name())).unwrap();
        }
    }
    (full, killed)
}

#[test]
fn resume_holes_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let file = checkpointed(dir.path(), 10);
    let (full, killed) = killed_after_eight(dir.path(), &file);
    let state = || -> serde_json::Value {
        serde_json::from_slice(&read(&killed.join("checkpoint/state.json"))).unwrap()
    };
    let kept = state()["metrics_bytes"].as_u64().unwrap() as usize;
    let metrics = read(&killed.join("metrics.jsonl"));

    // A metrics.jsonl cut short: refused, the folder left as it was.
    std::fs::write(killed.join("metrics.jsonl"), &metrics[..kept - 5]).unwrap();
    resume(&killed)
        .code(1)
        .stderr_has("fewer than the")
        .stderr_has("delete it to start");
    assert_eq!(read(&killed.join("metrics.jsonl")).len(), kept - 5);

    // Deleted: started afresh at the checkpoint's step, said.
    std::fs::remove_file(killed.join("metrics.jsonl")).unwrap();
    let copy = dir.path().join("copy");
    copy_tree(&killed, &copy);
    resume(&copy)
        .code(0)
        .stderr_has("starts afresh after step 8");
    let lines = std::fs::read_to_string(copy.join("metrics.jsonl")).unwrap();
    assert!(lines.starts_with("{\"step\":9,"), "{lines}");

    // state.json edited (step 8 → 6): the checksum covers it, so the
    // checkpoint is damaged and the one before (step 4) is used.
    std::fs::write(killed.join("metrics.jsonl"), &metrics).unwrap();
    let edited = String::from_utf8(read(&killed.join("checkpoint/state.json")))
        .unwrap()
        .replace("\"step\": 8", "\"step\": 6");
    std::fs::write(killed.join("checkpoint/state.json"), edited).unwrap();
    resume(&killed)
        .code(0)
        .stderr_has("cannot be used")
        .stdout_has("resumed from the checkpoint of step 4");
    assert_eq!(
        read(&full.join("metrics.jsonl")),
        read(&killed.join("metrics.jsonl"))
    );
    assert_eq!(
        read(&full.join("model.safetensors")),
        read(&killed.join("model.safetensors"))
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_resume_reads_the_data_it_was_trained_on_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    // The data next to the file, named relatively.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    std::fs::copy(&data, dir.path().join("digits.csv.gz")).unwrap();
    let file = checkpointed(dir.path(), 10);
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replace(
        &format!("{:?}", data.display().to_string()),
        "\"digits.csv.gz\"",
    );
    std::fs::write(&file, text).unwrap();
    let (full, killed) = killed_after_eight(dir.path(), &file);
    // From another folder, where a file of the same name holds other
    // numbers: the run folder's plan names the file it was trained on.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("digits.csv.gz"), "1,2\n").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", "--quiet", "--device", "cpu", "--resume"])
        .arg(&killed)
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        read(&full.join("metrics.jsonl")),
        read(&killed.join("metrics.jsonl"))
    );
    // The data edited in place: refused, by name.
    let (_, again) = killed_after_eight(&dir.path().join("2"), &file);
    let mut bytes = read(&dir.path().join("digits.csv.gz"));
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join("digits.csv.gz"), bytes).unwrap();
    resume(&again)
        .code(1)
        .stderr_has("digits.csv.gz")
        .stderr_has("changed since the plan was made");
}

#[test]
fn a_run_that_cannot_fit_is_refused_before_it_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.dtl");
    std::fs::write(
        &file,
        "model Net { forward(x: [B, 100000]) -> [B, 4] { x |> linear(100000, 100000) |> linear(100000, 100000) |> linear(100000, 4) } }
data d { source = synthetic(rows: 16, features: 100000, classes: 4) }
train { model = Net; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 4; steps = 1 }
",
    )
    .unwrap();
    let out = dir.path().join("o");
    let started = Instant::now();
    train(&file, &out, &[])
        .code(2)
        .stderr_has("not enough memory")
        .stderr_has("the biggest")
        .stderr_has("--force");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!out.join("metrics.jsonl").exists());
    // `dtl check --memory` says it before anything runs.
    dtl(&["check", file.to_str().unwrap(), "--memory", "24GiB"])
        .code(0)
        .stderr_has("dtl::lint::memory")
        .stderr_has("over the 24.0 GiB");
    // Forced: an allocation that fails is an error naming the tensor, not
    // an abort.
    train(&file, &dir.path().join("forced"), &["--force"])
        .code(1)
        .stderr_has("cannot allocate `0.weight");
}

/// `dtl check --memory` names the layouts of the same ranks that fit: a
/// model whose AdamW state does not fit 4 replicas unsharded fits sharded,
/// or cut into pipeline stages; one whose weights and gradients do not fit
/// either fits with `shard = parameters`; one whose activations do not fit
/// fits with `recompute = blocks`.
#[test]
fn check_memory_names_the_layouts_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wide.dtl");
    // 200 M parameters: 3.8 GiB a rank unsharded (weights, gradients,
    // AdamW's moments and the gradient exchange's buffers), 2.6 GiB with
    // the moments split 4 ways.
    std::fs::write(
        &file,
        "model Net { forward(x: [B, 100]) -> [B, 10] { x |> linear(100, 10000) |> relu |> linear(10000, 10000) |> relu |> linear(10000, 10000) |> linear(10000, 10) } }
data d { source = synthetic(rows: 64, features: 100, classes: 10) }
train { model = Net; data = d; loss = cross_entropy; optimizer = adamw(lr: 1e-3); micro_batch = 4; steps = 1 }
parallel { data = 4 }
",
    )
    .unwrap();
    dtl(&["check", file.to_str().unwrap(), "--memory", "3GiB"])
        .code(0)
        .stderr_has("dtl::lint::memory")
        .stderr_has("on the same 4 rank(s) these fit, by the same estimate: `shard = optimizer` (2.6 GiB per rank)");
    dtl(&["check", file.to_str().unwrap(), "--memory", "100MiB"])
        .code(0)
        .stderr_has("no layout of these ranks fits");
    // 268 M parameters in eight blocks: 4.1 GiB a rank unsharded, 1.4
    // GiB with the weights sharded too (ZeRO-3), where the optimizer
    // state's sharding alone leaves 2.6 GiB.
    let blocks = dir.path().join("blocks.dtl");
    std::fs::write(
        &blocks,
        "module Ffn(d: int) { forward(x: [B, d]) -> [B, d] { x + (x |> linear(d, 4 * d) |> relu |> linear(4 * d, d)) } }
model Net { forward(x: [B, 100]) -> [B, 10] { x |> linear(100, 2048) |> repeat 8 { Ffn(2048) } |> linear(2048, 10) } }
data d { source = synthetic(rows: 64, features: 100, classes: 10) }
train { model = Net; data = d; loss = cross_entropy; optimizer = adamw(lr: 1e-3); micro_batch = 4; steps = 1; clip = norm(1.0) }
parallel { data = 4 }
",
    )
    .unwrap();
    dtl(&["check", blocks.to_str().unwrap(), "--memory", "2GiB"])
        .code(0)
        .stderr_has("a rank needs 4.1 GiB")
        .stderr_has("these fit, by the same estimate: `shard = parameters` (1.4 GiB per");
    // Activations first: eight blocks at 2048 rows need 274.8 MiB on one
    // rank, 78.8 MiB recomputed (tests/sharded.rs measures the saving).
    let deep = dir.path().join("deep.dtl");
    std::fs::write(
        &deep,
        "module Residual(d: int, hidden: int) { forward(x: [B, d]) -> [B, d] { x + (x |> layer_norm(d) |> linear(d, hidden) |> gelu |> dropout(0.1) |> linear(hidden, d)) } }
model Deep { forward(x: [B, 64]) -> [B, 4] { x |> linear(64, 256) |> repeat 8 { Residual(256, 1024) } |> linear(256, 4) } }
data d { source = synthetic(rows: 8192, features: 64, classes: 4) }
train { model = Deep; data = d; loss = cross_entropy; optimizer = sgd(lr: 0.01); micro_batch = 2048; steps = 1; clip = norm(1.0) }
",
    )
    .unwrap();
    dtl(&["check", deep.to_str().unwrap(), "--memory", "200MiB"])
        .code(0)
        .stderr_has("needs 274.8 MiB")
        .stderr_has(
            "these fit, by the same estimate: `recompute = blocks` in `train` (78.8 MiB per rank)",
        );
}

#[test]
fn weights_files_are_named_as_such_and_integers_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = short_example(dir.path(), 1);
    let out = dir.path().join("w");
    train(&file, &out, &[]).code(0);
    // The same weights with one parameter stored as int32.
    let weights = out.join("model.safetensors");
    let script = format!(
        "import torch\nfrom safetensors.torch import load_file, save_file\nw = load_file({:?})\nname = sorted(w)[0]\nw[name] = w[name].to(torch.int32)\nsave_file(w, {:?})\nprint(name)",
        weights.display().to_string(),
        dir.path().join("int.safetensors").display().to_string()
    );
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let made = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let name = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let init = dir.path().join("int.safetensors");
    train(
        &file,
        &dir.path().join("i"),
        &["--init", init.to_str().unwrap()],
    )
    .code(1)
    .stderr_has("weights file")
    .stderr_has(&format!("`{name}` is Int"))
    .stderr_has("refused rather than converted");
}

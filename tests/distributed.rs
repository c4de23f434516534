//! Data parallelism across real processes (MPI on the CPU, 2 ranks started
//! by `dtl run` through mpirun, oversubscribed where needed): equivalence
//! with one process, the sync modes' degenerate cases, resuming at another
//! degree, and the errors of a wrong launch. The PyTorch DDP comparison is
//! `data_parallel_dtl_agrees_with_torch_ddp` in tests/reference.rs (the
//! script tests/reference/ddp.py).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{
    assert_ranks_ran, copy_for_resume, dtl, last_eval, losses_differ, step_records, train,
    weights_differ, within, EXAMPLE,
};

/// One multi-rank run at a time: the machine has two cores.
static RANKS: Mutex<()> = Mutex::new(());

fn ranks() -> std::sync::MutexGuard<'static, ()> {
    RANKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn digits() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    format!("{:?}", path.display().to_string())
}

/// An MLP on the digits (no dropout: its masks differ per replica) with
/// the given train settings and parallel block.
fn experiment(dir: &Path, name: &str, train: &str, parallel: &str) -> PathBuf {
    let text = format!(
        r#"
model Net {{
  forward(x: [B, 64]) -> [B, 10] {{ x |> linear(64, 48) |> relu |> linear(48, 10) }}
}}
data digits {{ source = csv({}, label: -1); scale = 0.0625; valid = 0.2 }}
train {{ model = Net; data = digits; loss = cross_entropy; seed = 3; {train} }}
{parallel}
"#,
        digits()
    );
    let path = dir.join(format!("{name}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The weight hashes each rank recorded after every step (`--trace`).
fn hashes(out: &Path, rank: usize) -> Vec<String> {
    std::fs::read_to_string(out.join(format!("rank-{rank}.trace.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["weights"].to_string())
        .collect()
}

#[test]
fn two_replicas_train_like_one_process_with_twice_the_micro_batch() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    // 10× the worst measured (2026-12-04): SGD 1.1e-7 on losses, 1.5e-7
    // on weights; AdamW 1.2e-7 and 3.7e-7.
    for (optimizer, loss_bound, weight_bound) in [
        ("sgd(lr: 0.1, momentum: 0.9)", 1.1e-6, 1.5e-6),
        ("adamw(lr: 3e-3)", 1.2e-6, 3.7e-6),
    ] {
        let settings =
            format!("optimizer = {optimizer}; accumulate = 2; clip = norm(1.0); steps = 30");
        let one = experiment(
            dir.path(),
            "one",
            &format!("{settings}; micro_batch = 16"),
            "",
        );
        let two = experiment(
            dir.path(),
            "two",
            &format!("{settings}; micro_batch = 8"),
            "parallel { data = 2 }",
        );
        // One pair of run folders per optimizer: a run never overwrites one.
        let name = &optimizer[..optimizer.find('(').unwrap()];
        let (out1, out2) = (
            dir.path().join(format!("{name}1")),
            dir.path().join(format!("{name}2")),
        );
        train(&one, &out1, &[]).code(0);
        train(&two, &out2, &["--trace"])
            .code(0)
            .stdout_has("× 2 ranks (mpi)");
        within(
            &format!("data 2 vs 1, {optimizer}: losses"),
            losses_differ(&out1, &out2),
            loss_bound,
        );
        let (weights, at) = weights_differ(
            &out1.join("model.safetensors"),
            &out2.join("model.safetensors"),
        );
        within(
            &format!("data 2 vs 1, {optimizer}: weights (at `{at}`)"),
            weights as f64,
            weight_bound,
        );
        // Both replicas hold the same weights after every step.
        let (h0, h1) = (hashes(&out2, 0), hashes(&out2, 1));
        assert_eq!(h0.len(), 30);
        assert_eq!(h0, h1, "{optimizer}: the replicas diverged");
        assert!(out2.join("rank-1.log").is_file());
    }
}

/// Random crops and flips are drawn per sample from its place in the
/// epoch, not per rank: two replicas of 8 rows train as one process of 16
/// (within the SGD bound above), and the transforms do change the run.
#[test]
fn augmented_samples_are_the_same_at_any_world_size() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, micro: u32, data: &str, parallel: &str| {
        let text = format!(
            r#"
model Net {{
  forward(x: [B, 1, 8, 8]) -> [B, 10] {{ x |> flatten |> linear(64, 48) |> relu |> linear(48, 10) }}
}}
data digits {{
  source = csv({}, label: -1); shape = [1, 8, 8]; scale = 0.0625; valid = 0.2
  {data}
}}
train {{ model = Net; data = digits; loss = cross_entropy; seed = 3; optimizer = sgd(lr: 0.1, momentum: 0.9); micro_batch = {micro}; steps = 30 }}
{parallel}
"#,
            digits()
        );
        let path = dir.path().join(format!("{name}.dtl"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let augment = "random_crop = 1; horizontal_flip = 0.5; mean = [0.3]; std = [0.4]";
    let outs: Vec<PathBuf> = ["plain", "one", "two"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    train(
        &file("plain", 16, "mean = [0.3]; std = [0.4]", ""),
        &outs[0],
        &[],
    )
    .code(0);
    train(&file("one", 16, augment, ""), &outs[1], &[]).code(0);
    train(
        &file("two", 8, augment, "parallel { data = 2 }"),
        &outs[2],
        &[],
    )
    .code(0)
    .stdout_has("× 2 ranks (mpi)");
    within(
        "augmented, data 2 vs 1: losses",
        losses_differ(&outs[1], &outs[2]),
        1.1e-6,
    );
    let changed = losses_differ(&outs[0], &outs[1]);
    assert!(
        changed > 1e-3,
        "crops and flips changed the losses by only {changed}"
    );
}

#[test]
fn local_sgd_of_period_one_and_async_of_staleness_zero_are_every_step() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, train_settings: &str, sync: &str| {
        let file = experiment(
            dir.path(),
            name,
            train_settings,
            &format!("parallel {{ data = 2; sync = {sync} }}"),
        );
        let out = dir.path().join(name);
        train(&file, &out, &[]).code(0);
        out
    };
    // Plain SGD, no clipping: averaging the parameters after one step is
    // averaging the gradients.
    let sgd = "optimizer = sgd(lr: 0.1); micro_batch = 8; steps = 25; clip = none";
    let every = run("every", sgd, "every_step");
    let local = run("local", sgd, "local_sgd(period: 1)");
    // 10× the worst measured: 1.1e-7 on losses, 8.9e-8 on weights.
    within(
        "local_sgd(1) vs every_step: losses",
        losses_differ(&every, &local),
        1.1e-6,
    );
    let (weights, at) = weights_differ(
        &every.join("model.safetensors"),
        &local.join("model.safetensors"),
    );
    within(
        &format!("local_sgd(1) vs every_step: weights (at `{at}`)"),
        weights as f64,
        9e-7,
    );
    assert_ranks_ran(&local, 2);
    // Value clipping, each update: the all-reduce runs in the background
    // and is waited for before the step — the same sums, the same bits.
    let clipped =
        "optimizer = sgd(lr: 0.1, momentum: 0.9); micro_batch = 8; steps = 25; clip = value(0.05)";
    let every = run("every_clipped", clipped, "every_step");
    let stale0 = run("async0", clipped, "async(staleness: 0)");
    assert_ranks_ran(&stale0, 2);
    assert_eq!(
        std::fs::read(every.join("metrics.jsonl")).unwrap(),
        std::fs::read(stale0.join("metrics.jsonl")).unwrap(),
        "async(staleness: 0) differs from every_step"
    );
    assert_eq!(
        std::fs::read(every.join("model.safetensors")).unwrap(),
        std::fs::read(stale0.join("model.safetensors")).unwrap()
    );
}

/// The default example at two replicas of half the micro-batch: every
/// step, one step stale, or averaging every four steps.
#[test]
fn async_and_local_sgd_train_within_a_point_of_every_step() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(EXAMPLE))
        .unwrap()
        .replace("\"../data/digits.csv.gz\"", &digits())
        .replace("micro_batch = 32", "micro_batch = 16");
    let accuracy = |name: &str, sync: &str, clip: &str| {
        let file = dir.path().join(format!("{name}.dtl"));
        let text = text.replace("clip = norm(1.0)", clip);
        std::fs::write(
            &file,
            format!("{text}\nparallel {{ data = 2; sync = {sync} }}\n"),
        )
        .unwrap();
        let out = dir.path().join(name);
        train(&file, &out, &[]).code(0);
        assert_ranks_ran(&out, 2);
        last_eval(&out).eval_accuracy.unwrap()
    };
    let every = accuracy("every", "every_step", "clip = norm(1.0)");
    // Asynchronous updates cannot clip by the global norm: by value.
    let stale = accuracy("async1", "async(staleness: 1)", "clip = value(1.0)");
    let local = accuracy("local4", "local_sgd(period: 4)", "clip = norm(1.0)");
    assert!(every > 0.96, "every_step reached {every}");
    for (mode, acc) in [
        ("async(staleness: 1)", stale),
        ("local_sgd(period: 4)", local),
    ] {
        assert!(
            (every - acc).abs() <= 0.01,
            "{mode}: held-out accuracy {acc} vs {every} every step"
        );
    }
}

#[test]
fn synchronised_batch_norm_trains_like_one_process() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let model = "linear(64, 32) |> batch_norm(32) |> relu |> linear(32, 32) |> batch_norm(32) |> relu |> linear(32, 10)";
    let write = |name: &str, micro_batch: u32, parallel: &str| {
        let text = format!(
            r#"
model Net {{ forward(x: [B, 64]) -> [B, 10] {{ x |> {model} }} }}
data digits {{ source = csv({}, label: -1); scale = 0.0625; valid = 0.2 }}
train {{ model = Net; data = digits; loss = cross_entropy; optimizer = sgd(lr: 0.1, momentum: 0.9); micro_batch = {micro_batch}; accumulate = 2; steps = 20; clip = norm(1.0) }}
{parallel}
"#,
            digits()
        );
        let path = dir.path().join(format!("{name}.dtl"));
        std::fs::write(&path, text).unwrap();
        let out = dir.path().join(name);
        train(&path, &out, &[]).code(0);
        out
    };
    let one = write("one", 16, "");
    let sync = write("sync", 8, "parallel { data = 2; batch_norm = sync }");
    let local = write("local", 8, "parallel { data = 2; batch_norm = local }");
    assert_ranks_ran(&sync, 2);
    // 10× the worst measured: 1.8e-7 on losses, 4.8e-7 on weights.
    within(
        "sync batch norm vs one process: losses",
        losses_differ(&one, &sync),
        1.8e-6,
    );
    // Running statistics included.
    let (weights, at) = weights_differ(
        &one.join("model.safetensors"),
        &sync.join("model.safetensors"),
    );
    within(
        &format!("sync batch norm vs one process: weights (at `{at}`)"),
        weights as f64,
        4.8e-6,
    );
    // Per-replica statistics are another computation.
    let (weights, _) = weights_differ(
        &one.join("model.safetensors"),
        &local.join("model.safetensors"),
    );
    assert!(
        weights > 1e-3,
        "local batch norm should differ from one process"
    );
}

#[test]
fn a_run_resumes_at_another_data_parallel_degree() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let settings = "optimizer = sgd(lr: 0.1, momentum: 0.9); accumulate = 2; clip = norm(1.0); steps = 10; checkpoint_every = 4";
    let one = experiment(
        dir.path(),
        "one",
        &format!("{settings}; micro_batch = 16"),
        "",
    );
    let two = experiment(
        dir.path(),
        "two",
        &format!("{settings}; micro_batch = 8"),
        "parallel { data = 2 }",
    );
    for (start, then, name) in [(&one, &two, "1 → 2"), (&two, &one, "2 → 1")] {
        let full = dir.path().join("full");
        let _ = std::fs::remove_dir_all(&full);
        train(start, &full, &[]).code(0);
        let resumed = dir.path().join("resumed");
        let _ = std::fs::remove_dir_all(&resumed);
        copy_for_resume(&full, &resumed);
        dtl(&[
            "run",
            then.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--resume",
            resumed.to_str().unwrap(),
        ])
        .code(0)
        .stdout_has("resumed from the checkpoint of step 8");
        let (full_steps, resumed_steps) = (step_records(&full), step_records(&resumed));
        assert_eq!(full_steps.len(), 10, "{name}");
        assert_eq!(resumed_steps.len(), 10, "{name}");
        let worst = full_steps
            .iter()
            .zip(&resumed_steps)
            .map(|(a, b)| (a.loss - b.loss).abs() / a.loss)
            .fold(0.0, f64::max);
        // 10× the worst measured: 8.4e-8 on losses, 1.5e-8 on weights.
        within(&format!("resume {name}: losses"), worst, 8.4e-7);
        let (weights, at) = weights_differ(
            &full.join("model.safetensors"),
            &resumed.join("model.safetensors"),
        );
        within(
            &format!("resume {name}: weights (at `{at}`)"),
            weights as f64,
            1.5e-7,
        );
        let ranks = if then == &two { 2 } else { 1 };
        let summary = std::fs::read_to_string(resumed.join("summary.json")).unwrap();
        assert!(
            summary.contains(&format!("\"world_size\": {ranks}")),
            "{name}: {summary}"
        );
    }
    // Another number of rows per step is another experiment (the folder's
    // run made unfinished again: a finished run has nothing to resume).
    std::fs::remove_file(dir.path().join("resumed/summary.json")).unwrap();
    let other = experiment(
        dir.path(),
        "other",
        &format!("{settings}; micro_batch = 8"),
        "",
    );
    let resumed = dir.path().join("resumed");
    dtl(&[
        "run",
        other.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
        "--resume",
        resumed.to_str().unwrap(),
    ])
    .code(1)
    .stderr_has("rows per step");
}

fn mpirun() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/mpirun")
}

#[test]
fn a_wrong_launch_is_a_clear_error_and_writes_nothing() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(
        dir.path(),
        "two",
        "optimizer = sgd(lr: 0.1); micro_batch = 8; steps = 3",
        "parallel { data = 2 }",
    );
    // Three ranks for a plan of two, started by hand: every rank says so.
    let out = dir.path().join("three");
    let output = std::process::Command::new(mpirun())
        .args(["-n", "3", "--oversubscribe", "--bind-to", "none"])
        .arg(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", "--quiet", "--device", "cpu", "--out"])
        .arg(&out)
        .arg(&file)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("3 ranks were started, but the plan is for 2 (data 2 × pipeline 1)"),
        "{stderr}"
    );
    for rank in 0..3 {
        assert!(
            stderr.contains(&format!("rank {rank}:")),
            "rank {rank} said nothing:\n{stderr}"
        );
    }
    assert!(!out.exists(), "a wrong launch wrote {}", out.display());

    // No mpirun to start the ranks with.
    let out = dir.path().join("no_mpirun");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", "--quiet", "--device", "cpu", "--out"])
        .arg(&out)
        .arg(&file)
        .env("DTL_MPIRUN", dir.path().join("missing/mpirun"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DTL_MPIRUN names"), "{stderr}");
    assert!(!out.exists());

    // NCCL on the CPU.
    let nccl = experiment(
        dir.path(),
        "nccl",
        "optimizer = sgd(lr: 0.1); micro_batch = 8; steps = 3",
        "parallel { data = 2; backend = nccl }",
    );
    let out = dir.path().join("nccl");
    train(&nccl, &out, &[])
        .code(2)
        .stderr_has("`backend = nccl` works on CUDA tensors");
    assert!(!out.exists());
}

/// The README's example, at two ranks, says what one rank says.
#[test]
fn the_default_example_trains_on_two_ranks() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(EXAMPLE))
        .unwrap()
        .replace("\"../data/digits.csv.gz\"", &digits())
        .replace("micro_batch = 32", "micro_batch = 16");
    let file = dir.path().join("digits_mlp.dtl");
    std::fs::write(&file, format!("{text}\nparallel {{ data = auto }}\n")).unwrap();
    let out = dir.path().join("run");
    let run = dtl(&[
        "run",
        file.to_str().unwrap(),
        "--world",
        "2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .code(0)
    .stdout_has("[rank 0] held-out accuracy");
    let accuracy: f64 = run
        .stdout
        .split("held-out accuracy ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(accuracy > 96.0, "{}", run.stdout);
}

/// A resume at another layout is the same computation, except for
/// dropout, whose masks follow the layout: said when the model has it.
#[test]
fn a_resume_at_another_layout_warns_about_dropout() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let settings = "optimizer = sgd(lr: 0.1); steps = 6; checkpoint_every = 3";
    let with_dropout = |name: &str, micro_batch: u32, parallel: &str| {
        let path = experiment(
            dir.path(),
            name,
            &format!("{settings}; micro_batch = {micro_batch}"),
            parallel,
        );
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "relu |> linear(48, 10)",
            "relu |> dropout(0.2) |> linear(48, 10)",
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let one = with_dropout("one", 16, "");
    let two = with_dropout("two", 8, "parallel { data = 2 }");
    let out = dir.path().join("run");
    train(&one, &out, &[]).code(0);
    std::fs::remove_file(out.join("summary.json")).unwrap();
    let run = dtl(&[
        "run",
        two.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
        "--resume",
        out.to_str().unwrap(),
    ]);
    run.code(0)
        .stderr_has("written by data 1 × pipeline 1, this run is data 2 × pipeline 1")
        .stderr_has("dropout draws its masks per replica");
}

//! Crashes and faults lose nothing: a run killed at random moments
//! (checkpoint writes included) resumes to the bits of an uninterrupted
//! one; a damaged checkpoint is detected and the one before it used;
//! SIGINT and SIGTERM stop at a step boundary with a checkpoint, sent to a
//! launcher too (its ranks hear of it; killed, it takes them down); a rank
//! that hangs, dies or meets NaN stops every rank, in bounded time, with
//! none left behind. docs/reliability.md has the figures.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{read_safetensors, resume, train};
use dtl_compiler::util::rng::Rng;

/// One slow run at a time: the machine has two cores.
static SLOW: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SLOW.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The character model with its data path made absolute.
fn char_model(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples/moby_char_lm.dtl"))
        .unwrap()
        .replace("\"../data/", &format!("\"{}/data/", root().display()));
    let path = dir.join("char.dtl");
    std::fs::write(&path, text).unwrap();
    path
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

/// `dtl run FILE --quiet --device cpu --out OUT` and `extra`.
fn spawn_run(file: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    spawn(&args, env)
}

/// Waits (at most a minute) until the run in `out` has written `lines`
/// lines of metrics.
fn wait_for_steps(out: &Path, lines: usize) {
    let started = Instant::now();
    while metrics_lines(out) < lines {
        assert!(started.elapsed() < Duration::from_secs(60), "no steps");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` at most `limit`; a hang fails the test.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code(), text);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_same_bits() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = char_model(dir.path());
    let sets = [
        "--set",
        "train.steps=40",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.eval_every=10",
        "--set",
        "train.warmup=5",
    ];
    let full = dir.path().join("full");
    train(&file, &full, &sets).code(0);

    // Kill -9 after a random delay, again and again, resuming each time
    // (or starting afresh while there is no checkpoint yet).
    let out = dir.path().join("killed");
    let out_s = out.to_str().unwrap();
    let mut rng = Rng::from_state(0x5EED);
    let mut kills = 0;
    for attempt in 0..40 {
        let mut args = vec!["run", "--quiet", "--device", "cpu"];
        let resuming = out.join("checkpoint/state.json").exists()
            || out.join("checkpoint.prev/state.json").exists();
        if resuming {
            args.extend(["--resume", out_s]);
        } else {
            // A kill before the first checkpoint leaves a run folder that
            // a new run may only replace when asked.
            args.extend([file.to_str().unwrap(), "--out", out_s, "--overwrite"]);
            args.extend(sets);
        }
        let mut child = spawn(&args, &[]);
        // Kill the first attempts after a random delay, so the kills land
        // anywhere: while loading, in a step, in a checkpoint's write;
        // then let it finish.
        if attempt < 8 {
            std::thread::sleep(Duration::from_millis(50 + rng.below(700)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
        }
        let status = child.wait().unwrap();
        if status.success() && out.join("summary.json").exists() {
            break;
        }
    }
    assert!(out.join("summary.json").exists(), "the run never finished");
    assert!(kills >= 6, "only {kills} kills landed");
    assert_eq!(
        std::fs::read_to_string(full.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        "metrics after {kills} kills differ from the uninterrupted run"
    );
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap(),
        "weights after {kills} kills differ"
    );
    assert!(!out.join("checkpoint.tmp").exists() || out.join("checkpoint/state.json").exists());
}

/// A kill that lands inside a checkpoint's write, made certain: the run
/// stops for good (`DTL_FAULT=pause_write` / `pause_swap`) halfway through
/// writing the checkpoint of step 10 — its model file written, its state
/// not — or between its two renames (the checkpoint of step 5 moved aside
/// as `checkpoint.prev`, the new one not yet in place), the test sees that
/// state on the disk and kills it there. The resumed run goes on from step
/// 5 and ends with the bits of an uninterrupted run.
#[test]
fn a_kill_inside_a_checkpoint_write_resumes_to_the_same_bits() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = char_model(dir.path());
    let sets = [
        "--set",
        "train.steps=15",
        "--set",
        "train.checkpoint_every=5",
        "--set",
        "train.eval_every=5",
        "--set",
        "train.warmup=2",
    ];
    let full = dir.path().join("full");
    train(&file, &full, &sets).code(0);
    let tmp = |out: &Path| out.join("checkpoint.tmp");
    type Caught<'a> = &'a dyn Fn(&Path) -> bool;
    let cases: [(&str, Caught); 2] = [
        ("pause_write@0:10", &|out: &Path| {
            tmp(out).join("model.safetensors").is_file()
                && !tmp(out).join("state.json").exists()
                && out.join("checkpoint/state.json").is_file()
        }),
        ("pause_swap@0:10", &|out: &Path| {
            tmp(out).join("state.json").is_file()
                && out.join("checkpoint.prev/state.json").is_file()
                && !out.join("checkpoint").exists()
        }),
    ];
    for (fault, caught) in cases {
        let out = dir.path().join(fault.replace(['@', ':'], "_"));
        let mut child = spawn_run(&file, &out, &sets, &[("DTL_FAULT", fault)]);
        let started = Instant::now();
        while !caught(&out) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{fault}: the run ended before the checkpoint's write"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{fault}: never reached"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        resume(&out)
            .code(0)
            .stdout_has("resumed from the checkpoint of step 5");
        assert_eq!(
            std::fs::read_to_string(full.join("metrics.jsonl")).unwrap(),
            std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
            "{fault}: metrics differ from the uninterrupted run"
        );
        assert_eq!(
            std::fs::read(full.join("model.safetensors")).unwrap(),
            std::fs::read(out.join("model.safetensors")).unwrap(),
            "{fault}: weights differ"
        );
    }
}

#[test]
fn a_damaged_checkpoint_is_detected_and_the_one_before_used() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = common::short_example(dir.path(), 10);
    let full = dir.path().join("full");
    train(&file, &full, &["--set", "train.checkpoint_every=4"]).code(0);
    let state = |d: &Path, name: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.join(name).join("state.json")).unwrap(),
        )
        .unwrap();
        v["step"].as_u64().unwrap()
    };
    assert_eq!(
        (state(&full, "checkpoint"), state(&full, "checkpoint.prev")),
        (8, 4)
    );
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for sub in ["checkpoint", "checkpoint.prev"] {
            std::fs::create_dir_all(to.join(sub)).unwrap();
            for e in std::fs::read_dir(full.join(sub)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
        std::fs::copy(full.join("plan.yaml"), to.join("plan.yaml")).unwrap();
        std::fs::copy(full.join("metrics.jsonl"), to.join("metrics.jsonl")).unwrap();
        to
    };
    // A flipped byte in the weights; a truncated optimizer state.
    for (name, damage) in [
        ("flipped", "model.safetensors"),
        ("truncated", "state.safetensors"),
    ] {
        let run = copy(name);
        let path = run.join("checkpoint").join(damage);
        let mut bytes = std::fs::read(&path).unwrap();
        if name == "flipped" {
            let at = bytes.len() - 3;
            bytes[at] ^= 0x40;
        } else {
            bytes.truncate(bytes.len() / 2);
        }
        std::fs::write(&path, bytes).unwrap();
        resume(&run)
            .code(0)
            .stderr_has("the last checkpoint cannot be used")
            .stdout_has("resumed from the checkpoint of step 4");
        assert_eq!(
            std::fs::read_to_string(full.join("metrics.jsonl")).unwrap(),
            std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
            "{name}: resuming from the one before did not give the same run"
        );
    }
    // Both damaged: a clear error, nothing run.
    let run = copy("both");
    for sub in ["checkpoint", "checkpoint.prev"] {
        let path = run.join(sub).join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 1;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    resume(&run)
        .code(1)
        .stderr_has("no usable checkpoint")
        .stderr_has("damaged");
}

#[test]
fn sigterm_and_sigint_stop_at_a_step_boundary_with_a_checkpoint() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = char_model(dir.path());
    let sets = [
        "--set",
        "train.steps=150",
        "--set",
        "train.eval_every=0",
        "--set",
        "train.checkpoint_every=50",
    ];
    let full = dir.path().join("full");
    train(&file, &full, &sets).code(0);
    for (signal, code, name) in [("-TERM", 143, "SIGTERM"), ("-INT", 130, "SIGINT")] {
        let out = dir.path().join(name);
        let child = spawn_run(&file, &out, &sets, &[]);
        wait_for_steps(&out, 10);
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let (status, text) = finish(child, Duration::from_secs(60));
        assert_eq!(status, Some(code), "{name}: {text}");
        assert!(text.contains(&format!("stopped by {name}")), "{text}");
        assert!(text.contains("dtl run --resume"), "{text}");
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap(),
        )
        .unwrap();
        let step = state["step"].as_u64().unwrap();
        assert!(
            (10..150).contains(&step),
            "{name}: checkpoint of step {step}"
        );
        assert!(text.contains(&format!("after step {step}")), "{text}");
        resume(&out).code(0);
        assert_eq!(
            std::fs::read(full.join("model.safetensors")).unwrap(),
            std::fs::read(out.join("model.safetensors")).unwrap(),
            "{name}: the resumed run differs"
        );
    }
    // A DiLoCo run stopped between outer steps writes each group's state:
    // resumed, it ends where the uninterrupted run does, bit for bit.
    let diloco = [
        "--set",
        "train.steps=150",
        "--set",
        "train.eval_every=0",
        "--set",
        "train.checkpoint_every=0",
        "--set",
        "parallel.data=2",
        "--set",
        "parallel.sync=diloco(period: 4)",
    ];
    let full = dir.path().join("diloco-full");
    train(&file, &full, &diloco).code(0);
    let out = dir.path().join("diloco");
    let child = spawn_run(&file, &out, &diloco, &[]);
    wait_for_steps(&out, 10);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let (status, text) = finish(child, Duration::from_secs(60));
    assert_eq!(status, Some(143), "DiLoCo: {text}");
    assert!(text.contains("dtl run --resume"), "{text}");
    assert!(
        out.join("checkpoint/group-1/state.safetensors").is_file(),
        "{text}"
    );
    resume(&out).code(0);
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap(),
        "DiLoCo: the resumed run differs"
    );
    // A second Ctrl-C stops at once.
    let out = dir.path().join("twice");
    let child = spawn_run(
        &file,
        &out,
        &[
            "--set",
            "train.steps=100000",
            "--set",
            "train.eval_every=0",
            "--set",
            "train.warmup=5",
        ],
        &[],
    );
    wait_for_steps(&out, 3);
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let (status, _) = finish(child, Duration::from_secs(30));
    assert_eq!(status, Some(130));
}

#[test]
fn a_run_without_held_out_rows_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::short_example(dir.path(), 3);
    train(
        &file,
        &dir.path().join("out"),
        &["--set", "data.digits.valid=0"],
    )
    .code(0)
    .stdout_has("no held-out rows (valid = 0)");
}

/// A two-replica run on the digits with a fault planted on rank 1.
fn faulty_run(dir: &Path, fault: &str, extra: &[&str]) -> (Option<i32>, String, PathBuf) {
    let name = fault.replace(['@', ':'], "_");
    // A failing test prints this: it names the run that hung.
    eprintln!("faulty run: {fault} {extra:?}");
    let (file, out) = two_ranks(dir, &name, "steps = 400; checkpoint_every = 2");
    let (code, text) = finish(
        spawn_run(&file, &out, extra, &[("DTL_FAULT", fault)]),
        Duration::from_secs(90),
    );
    // No rank is left behind.
    assert!(ranks_left(&file).is_empty(), "{fault}: ranks still running");
    (code, text, out)
}

#[test]
fn a_rank_that_hangs_dies_or_meets_nan_stops_every_rank() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Hung inside the step: the other rank waits in the all-reduce until
    // its watchdog (here 5 s) ends the job.
    let started = Instant::now();
    let (code, text, out) = faulty_run(dir.path(), "hang@1:7", &["--timeout", "5"]);
    assert!(code.is_some_and(|c| c != 0), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(text.contains("made no progress for"), "{text}");
    assert!(text.contains("step 7"), "{text}");
    // The last good checkpoint is intact, and resumes (without the fault).
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 6);
    resume(&out)
        .code(0)
        .stdout_has("resumed from the checkpoint of step 6");
    let saved = read_safetensors(&out.join("model.safetensors"));
    assert_eq!(saved.len(), 4);

    // A rank that exits mid-run.
    let (code, text, _) = faulty_run(dir.path(), "exit@1:5", &[]);
    assert!(code.is_some_and(|c| c != 0), "{text}");

    // A non-finite loss on one rank under on_nan = stop: every rank stops
    // at that step, and the message names the rank.
    let (code, text, _) = faulty_run(dir.path(), "nan@1:3", &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("step 3"), "{text}");
    assert!(text.contains("rank(s) 1"), "{text}");
}

/// A two-replica run on the digits, with `train` settings added: the
/// file and its output folder.
/// Open MPI's `prterun` was seen to hang for good once a rank had failed
/// in start-up while another was frozen (the failed rank unreaped). A
/// stand-in `mpirun` that does the same (one "rank" exits with code 3 and
/// is never reaped, the launcher sleeps on) is ended by `dtl run` 10 s
/// after, with the rank's exit code and a message naming it.
#[test]
fn an_mpirun_that_stays_after_a_rank_failed_is_ended() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("mpirun");
    std::fs::write(&stand_in, "#!/bin/sh\n(exit 3) &\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (file, out) = two_ranks(dir.path(), "stays", "steps = 2");
    let started = Instant::now();
    let (code, text) = finish(
        spawn_run(
            &file,
            &out,
            &[],
            &[("DTL_MPIRUN", stand_in.to_str().unwrap())],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("did not end 10 s later"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30), "{text}");
}

fn two_ranks(dir: &Path, name: &str, train: &str) -> (PathBuf, PathBuf) {
    let digits = root().join("data/digits.csv.gz");
    let text = format!(
        r#"
model Net {{ forward(x: [B, 64]) -> [B, 10] {{ x |> linear(64, 32) |> relu |> linear(32, 10) }} }}
data digits {{ source = csv({:?}, label: -1); scale = 0.0625 }}
train {{ model = Net; data = digits; loss = cross_entropy; optimizer = sgd(lr: 0.1); micro_batch = 8; {train} }}
parallel {{ data = 2 }}
"#,
        digits.display().to_string()
    );
    let file = dir.join(format!("{name}.dtl"));
    std::fs::write(&file, text).unwrap();
    (file, dir.join(name))
}

/// The processes whose command line names `file`.
fn ranks_left(file: &Path) -> String {
    let left = Command::new("pgrep")
        .args(["-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&left.stdout).trim().to_string()
}

#[test]
fn the_launcher_hands_sigterm_and_sigint_to_its_ranks_and_takes_them_down_when_killed() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    for (signal, code, name) in [("-TERM", 143, "SIGTERM"), ("-INT", 130, "SIGINT")] {
        // `kill` on the launcher's pid alone (not its process group): the
        // ranks must hear of it through mpirun, finish a step, write a
        // checkpoint and resume from it to an uninterrupted run's bits.
        let (file, out) = two_ranks(
            dir.path(),
            name,
            "steps = 600; checkpoint_every = 1000; eval_every = 0",
        );
        let child = spawn_run(&file, &out, &[], &[]);
        wait_for_steps(&out, 20);
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let (status, text) = finish(child, Duration::from_secs(60));
        assert_eq!(status, Some(code), "{name}: {text}");
        assert!(text.contains(&format!("stopped by {name}")), "{text}");
        assert!(ranks_left(&file).is_empty(), "{name}: ranks still running");
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("checkpoint/state.json")).unwrap(),
        )
        .unwrap();
        let step = state["step"].as_u64().unwrap();
        assert!(
            (20..600).contains(&step),
            "{name}: checkpoint of step {step}"
        );
        let (code, text) = finish(
            spawn(
                &[
                    "run",
                    "--quiet",
                    "--device",
                    "cpu",
                    "--resume",
                    out.to_str().unwrap(),
                ],
                &[],
            ),
            Duration::from_secs(120),
        );
        assert_eq!(code, Some(0), "{text}");
        let full = dir.path().join(format!("{name}-full"));
        let (code, text) = finish(spawn_run(&file, &full, &[], &[]), Duration::from_secs(120));
        assert_eq!(code, Some(0), "{text}");
        assert_eq!(
            std::fs::read(full.join("model.safetensors")).unwrap(),
            std::fs::read(out.join("model.safetensors")).unwrap(),
            "{name}: the resumed run differs"
        );
    }
    // SIGKILL cannot be handed on; the job must not outlive its launcher.
    let (file, out) = two_ranks(
        dir.path(),
        "killed",
        "steps = 1000000; checkpoint_every = 1000; eval_every = 0",
    );
    let mut child = spawn_run(&file, &out, &[], &[]);
    wait_for_steps(&out, 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    while !ranks_left(&file).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ranks outlived their launcher"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The watchdog knows what each rank is doing (reliability round 2): an
/// evaluation longer than `--timeout` is not a hang; a rank frozen before
/// it joins, or mid-run, ends the job within the timeout, named by its
/// stale heartbeat; a stop request during a start-up that cannot finish
/// ends the job at once; every rank's log keeps each attempt and how it
/// ended.
#[test]
fn the_watchdog_knows_each_phase_and_names_the_rank_that_froze() {
    let _slow = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // A held-out half of 200000 rows, evaluated by rank 0 for longer than
    // the 1 s timeout while rank 1 waits: a healthy run.
    let text = r#"
model Net { forward(x: [B, 64]) -> [B, 10] { x |> linear(64, 1024) |> relu |> linear(1024, 1024) |> relu |> linear(1024, 10) } }
data blobs { source = synthetic(rows: 200000, features: 64, classes: 10, seed: 1); valid = 0.5 }
train { model = Net; data = blobs; loss = cross_entropy; optimizer = sgd(lr: 0.05); micro_batch = 4; steps = 6; eval_every = 3 }
parallel { data = 2 }
"#;
    let file = dir.path().join("long_eval.dtl");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("long_eval");
    let (code, text) = finish(
        spawn_run(&file, &out, &["--timeout", "1"], &[]),
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "{text}");
    let seconds: f64 = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(out.join("summary.json")).unwrap(),
    )
    .unwrap()["seconds"]
        .as_f64()
        .unwrap();
    assert!(
        seconds > 2.0,
        "the evaluations were not longer than the timeout ({seconds} s)"
    );

    // Frozen before it joins the job (SIGSTOP, threads and all): the job
    // ends within the timeout, rank 1 named.
    let started = Instant::now();
    let (code, text, out) = faulty_run(dir.path(), "stop@1:0", &["--timeout", "5"]);
    assert!(code.is_some_and(|c| c != 0), "{text}");
    assert!(started.elapsed() < Duration::from_secs(40), "{text}");
    assert!(text.contains("start-up made no progress"), "{text}");
    assert!(text.contains("rank 1 (pid"), "{text}");
    assert!(text.contains("has not answered"), "{text}");
    assert!(!out.join("summary.json").exists());

    // Frozen mid-run: rank 0 names it, the checkpoint before is intact, and
    // each rank's log says how its attempt ended.
    let (code, text, out) = faulty_run(dir.path(), "stop@1:5", &["--timeout", "3"]);
    assert!(code.is_some_and(|c| c != 0), "{text}");
    assert!(text.contains("step 5 made no progress"), "{text}");
    assert!(
        text.contains("rank 1 (pid") && text.contains("has not answered"),
        "{text}"
    );
    let log0 = std::fs::read_to_string(out.join("rank-0.log")).unwrap();
    assert!(
        log0.starts_with("--- ") && log0.contains(": started ---"),
        "{log0}"
    );
    assert!(log0.contains("step 4 loss"), "{log0}");
    assert!(log0.contains("step 5 made no progress"), "{log0}");
    let log1 = std::fs::read_to_string(out.join("rank-1.log")).unwrap();
    assert!(log1.contains("step 4 loss"), "{log1}");
    // A resume appends its own attempt to the same logs.
    resume(&out)
        .code(0)
        .stdout_has("resumed from the checkpoint of step 4");
    let log0 = std::fs::read_to_string(out.join("rank-0.log")).unwrap();
    assert!(log0.contains("step 5 made no progress"), "{log0}");
    assert!(
        log0.contains(": resumed from the checkpoint of step 4 ---"),
        "{log0}"
    );
    assert!(log0.trim_end().ends_with("steps/s"), "{log0}");

    // SIGTERM to the launcher while a rank is frozen in start-up: the
    // others stop at once (nothing to save yet), and so does the job.
    let (file, out) = two_ranks(dir.path(), "stopped_start", "steps = 400");
    let child = spawn_run(
        &file,
        &out,
        &["--timeout", "300"],
        &[("DTL_FAULT", "stop@1:0")],
    );
    std::thread::sleep(Duration::from_secs(3));
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let started = Instant::now();
    let (code, text) = finish(child, Duration::from_secs(30));
    assert!(code.is_some_and(|c| c != 0), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(ranks_left(&file).is_empty(), "ranks left after SIGTERM");
}

//! Pipeline (model) parallelism across real processes, and data × pipeline
//! grids: the same numbers as one process, the schedules' order and memory
//! bound as the plan says, checkpoints that resume with another layout, and
//! clear failures when a stage gets the wrong tensor or a peer dies.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{dtl, losses_differ, step_records, train, weights_differ};

/// One multi-rank run at a time: the machine has two cores.
static RANKS: Mutex<()> = Mutex::new(());

fn ranks() -> std::sync::MutexGuard<'static, ()> {
    RANKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn digits() -> String {
    format!(
        "{:?}",
        root().join("data/digits.csv.gz").display().to_string()
    )
}

/// A model on the digits, the given train settings and parallel block.
fn experiment(dir: &Path, name: &str, model: &str, train: &str, parallel: &str) -> PathBuf {
    let text = format!(
        r#"
model Net {{
  forward(x: [B, 64]) -> [B, 10] {{ {model} }}
}}
data digits {{ source = csv({}, label: -1); scale = 0.0625; valid = 0.2 }}
train {{ model = Net; data = digits; loss = cross_entropy; seed = 5; {train} }}
{parallel}
"#,
        digits()
    );
    let path = dir.join(format!("{name}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

const MLP: &str = "x |> linear(64, 48) |> relu |> linear(48, 48) |> relu |> linear(48, 32) |> relu |> linear(32, 10)";
const SETTINGS: &str = "optimizer = sgd(lr: 0.1, momentum: 0.9); accumulate = 2; clip = norm(1.0); steps = 20; eval_every = 10";

fn trace(out: &Path, rank: usize) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join(format!("rank-{rank}.trace.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_same_run(one: &Path, other: &Path, what: &str, weight_bound: f32) {
    let losses = losses_differ(one, other);
    assert!(losses < 1e-5, "{what}: losses differ by {losses:e}");
    let (weights, at) = weights_differ(
        &one.join("model.safetensors"),
        &other.join("model.safetensors"),
    );
    assert!(
        weights < weight_bound,
        "{what}: weights differ by {weights:e} at `{at}`"
    );
    let (a, b) = (common::last_eval(one), common::last_eval(other));
    assert!(
        (a.eval_loss - b.eval_loss).abs() < 1e-5 * a.eval_loss,
        "{what}: held-out loss {} vs {}",
        a.eval_loss,
        b.eval_loss
    );
}

#[test]
fn two_stages_train_like_one_process_with_either_schedule() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{SETTINGS}; micro_batch = 16");
    let one = experiment(dir.path(), "one", MLP, &settings, "");
    let out1 = dir.path().join("one");
    train(&one, &out1, &[]).code(0);
    for schedule in ["gpipe", "one_f_one_b"] {
        let file = experiment(
            dir.path(),
            schedule,
            MLP,
            &settings,
            &format!("parallel {{ pipeline = 2; micro_batches = 4; schedule = {schedule} }}"),
        );
        let out = dir.path().join(schedule);
        train(&file, &out, &["--trace"])
            .code(0)
            .stdout_has("× 2 ranks");
        assert_same_run(&out1, &out, schedule, 1e-5);

        // Each stage ran its passes in the order the timeline draws them,
        // and held no more pieces than the schedule allows.
        let rows = dtl_compiler::tools::graph::timeline(
            2,
            4,
            match schedule {
                "gpipe" => dtl_compiler::plan::PipelineSchedule::Gpipe,
                _ => dtl_compiler::plan::PipelineSchedule::OneFOneB,
            },
        );
        for (stage, row) in rows.iter().enumerate() {
            let drawn: Vec<String> = row
                .iter()
                .flatten()
                .map(|op| match op {
                    dtl_compiler::plan::PipeOp::Forward { micro_batch } => {
                        format!("F{micro_batch}")
                    }
                    dtl_compiler::plan::PipeOp::Backward { micro_batch } => {
                        format!("B{micro_batch}")
                    }
                    other => panic!("a timeline holds passes only: {other:?}"),
                })
                .collect();
            let lines = trace(&out, stage);
            assert_eq!(lines.len(), 20);
            for line in &lines {
                let passes: Vec<String> = serde_json::from_value(line["passes"].clone()).unwrap();
                // Two rounds (accumulate = 2) per step, each the drawn order.
                let round: Vec<String> = passes[..passes.len() / 2].to_vec();
                assert_eq!(round, drawn, "{schedule}: stage {stage} ran {passes:?}");
                assert_eq!(&passes[passes.len() / 2..], &drawn[..]);
            }
            let peak = lines[0]["peak_in_flight"].as_u64().unwrap();
            let bound = if schedule == "gpipe" {
                4
            } else {
                2 - stage as u64
            };
            assert_eq!(
                peak, bound,
                "{schedule}: stage {stage} held {peak} pieces at once"
            );
        }
    }
}

#[test]
fn a_residual_connection_that_crosses_the_cut_is_sent_and_its_gradient_comes_back() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    // `h` is read on both sides of the cut at `3`: stage 0 sends both the
    // relu's output and `h`.
    let model = "let h = x |> linear(64, 48) |> relu\n    let y = h |> linear(48, 48) |> relu\n    let z = y |> linear(48, 48)\n    z + h |> linear(48, 10)";
    let settings = format!("{SETTINGS}; micro_batch = 16");
    let one = experiment(dir.path(), "one", model, &settings, "");
    let two = experiment(
        dir.path(),
        "two",
        model,
        &settings,
        "parallel { pipeline = 2; micro_batches = 4; split = [\"4\"] }",
    );
    let plan = dtl(&["compile", two.to_str().unwrap(), "--format", "json"]).code(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let sends = plan["topology"]["stages"][0]["sends"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        sends, 2,
        "the cut should carry the block's output and the skip"
    );
    let (out1, out2) = (dir.path().join("one"), dir.path().join("two"));
    train(&one, &out1, &[]).code(0);
    train(&two, &out2, &[]).code(0);
    assert_same_run(&out1, &out2, "residual across the cut", 1e-5);
}

#[test]
fn data_times_pipeline_trains_like_one_process() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let one = experiment(
        dir.path(),
        "one",
        MLP,
        &format!("{SETTINGS}; micro_batch = 16"),
        "",
    );
    let grid = experiment(
        dir.path(),
        "grid",
        MLP,
        &format!("{SETTINGS}; micro_batch = 8"),
        "parallel { data = 2; pipeline = 2; micro_batches = 2 }",
    );
    let (out1, out4) = (dir.path().join("one"), dir.path().join("grid"));
    train(&one, &out1, &[]).code(0);
    train(&grid, &out4, &["--trace"])
        .code(0)
        .stdout_has("× 4 ranks");
    assert_same_run(&out1, &out4, "2 × 2", 1e-5);
    // The replicas of each stage hold the same weights after every step.
    for stage in 0..2 {
        let (a, b) = (trace(&out4, 2 * stage), trace(&out4, 2 * stage + 1));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["stage"], stage);
            assert_eq!(
                x["weights"], y["weights"],
                "stage {stage}'s replicas diverged"
            );
        }
    }
}

#[test]
fn the_character_model_split_in_two_trains_like_one_process() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("examples/moby_char_lm.dtl"))
        .unwrap()
        .replace("\"../data/", &format!("\"{}/data/", root().display()));
    let one = dir.path().join("one.dtl");
    std::fs::write(&one, &text).unwrap();
    let two = dir.path().join("two.dtl");
    std::fs::write(
        &two,
        format!("{text}\nparallel {{ pipeline = 2; micro_batches = 4 }}\n"),
    )
    .unwrap();
    let sets = [
        "--set",
        "train.steps=15",
        "--set",
        "train.warmup=5",
        "--set",
        "train.eval_every=0",
        "--set",
        "train.checkpoint_every=0",
    ];
    let (out1, out2) = (dir.path().join("one"), dir.path().join("two"));
    train(&one, &out1, &sets).code(0);
    train(&two, &out2, &sets).code(0);
    // AdamW: rounding in near-cancelling gradients moves a few weights by
    // up to the learning rate's scale; the losses agree to 1e-5.
    assert_same_run(&out1, &out2, "character model", 1e-4);
}

#[test]
fn checkpoints_of_a_pipeline_resume_in_one_process_and_back() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let settings = "optimizer = adam(lr: 3e-3); accumulate = 2; clip = norm(1.0); steps = 10; checkpoint_every = 4; micro_batch = 16";
    let one = experiment(dir.path(), "one", MLP, settings, "");
    let two = experiment(
        dir.path(),
        "two",
        MLP,
        settings,
        "parallel { pipeline = 2; micro_batches = 4 }",
    );
    for (start, then, name) in [(&two, &one, "2 stages → 1"), (&one, &two, "1 → 2 stages")] {
        let full = dir.path().join("full");
        let _ = std::fs::remove_dir_all(&full);
        train(start, &full, &[]).code(0);
        // One file, named by parameter, whatever the layout.
        let saved = common::read_safetensors(&full.join("checkpoint/model.safetensors"));
        assert_eq!(saved.len(), 8, "{name}: {:?}", saved.keys());
        let resumed = dir.path().join("resumed");
        let _ = std::fs::remove_dir_all(&resumed);
        std::fs::create_dir_all(resumed.join("checkpoint")).unwrap();
        for entry in std::fs::read_dir(full.join("checkpoint")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                resumed.join("checkpoint").join(entry.file_name()),
            )
            .unwrap();
        }
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(resumed.join("checkpoint/state.json")).unwrap(),
        )
        .unwrap();
        let kept = state["metrics_bytes"].as_u64().unwrap() as usize;
        let metrics = std::fs::read(full.join("metrics.jsonl")).unwrap();
        std::fs::write(resumed.join("metrics.jsonl"), &metrics[..kept]).unwrap();
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
        for (a, b) in step_records(&full).iter().zip(step_records(&resumed)) {
            assert!(
                (a.loss - b.loss).abs() < 1e-6 * a.loss,
                "{name}: step {}: {} vs {}",
                a.step,
                a.loss,
                b.loss
            );
        }
        let (weights, at) = weights_differ(
            &full.join("model.safetensors"),
            &resumed.join("model.safetensors"),
        );
        assert!(
            weights < 1e-6,
            "{name}: weights differ by {weights:e} at `{at}`"
        );
    }
}

fn mpirun() -> Command {
    let mut command = Command::new(root().join(".venv/bin/mpirun"));
    command
        .args(["--bind-to", "none"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    command
}

/// Runs `command`, killing it after `limit`: a hang is a failure too.
fn within(mut command: Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (status.code(), text);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the ranks were still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stage_given_a_tensor_of_the_wrong_shape_says_so_and_every_rank_stops() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{SETTINGS}; micro_batch = 16");
    let parallel = "parallel { pipeline = 2; micro_batches = 4; split = [\"2\"] }";
    // Rank 0 runs a file whose first layer is 40 wide, rank 1 one whose
    // second stage expects 48: the first activation arrives with 40·4 values
    // where 48·4 were expected.
    let narrow = experiment(
        dir.path(),
        "narrow",
        "x |> linear(64, 40) |> relu |> linear(40, 10)",
        &settings,
        parallel,
    );
    let wide = experiment(
        dir.path(),
        "wide",
        "x |> linear(64, 48) |> relu |> linear(48, 10)",
        &settings,
        parallel,
    );
    let out = dir.path().join("out");
    let dtl_bin = env!("CARGO_BIN_EXE_dtl");
    let mut command = mpirun();
    command
        .args([
            "-n", "1", dtl_bin, "run", "--quiet", "--device", "cpu", "--out",
        ])
        .arg(&out)
        .arg(&narrow)
        .arg(":")
        .args([
            "-n", "1", dtl_bin, "run", "--quiet", "--device", "cpu", "--out",
        ])
        .arg(&out)
        .arg(&wide);
    let (code, text) = within(command, Duration::from_secs(60));
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{text}");
    assert!(text.contains("[rank 1]"), "{text}");
    assert!(
        text.contains("stage 1: rank 0 sent 160 values where 192 were expected"),
        "{text}"
    );
}

#[test]
fn a_peer_that_dies_mid_step_stops_every_rank() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(
        dir.path(),
        "long",
        MLP,
        "optimizer = sgd(lr: 0.01); micro_batch = 16; steps = 100000",
        "parallel { pipeline = 2; micro_batches = 4 }",
    );
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", "--quiet", "--device", "cpu", "--out"])
        .arg(&out)
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until rank 1 is training, then kill it.
    let log = out.join("rank-1.log");
    let started = Instant::now();
    let pid = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() > 3 {
            let pid: u32 = text
                .lines()
                .next()
                .and_then(|l| l.split("pid ").nth(1))
                .and_then(|p| p.trim().parse().ok())
                .expect("rank-1.log names its pid");
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rank 1 never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // Every rank stops, in bounded time, and the launch fails.
    let limit = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if limit.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the ranks kept running 60 s after rank 1 died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "{text}");
    // No rank is left behind.
    let left = Command::new("pgrep")
        .args(["-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "ranks still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

//! Multi-host training, on every CI run: two simulated hosts on one machine
//! (scripts/two-hosts.sh: network namespaces joined by a veth pair, each
//! with its own hostname, PRRTE reaching the second through an "ssh" agent).
//! The same binary, launched by `dtl run` (through `DTL_MPIRUN`) across the
//! two, trains as on one host, byte for byte (fully sharded too, each
//! host's replica writing its own checkpoint slices into the shared run
//! folder); losing the second host stops the job with a non-zero exit,
//! nothing left running, no summary written, and rank 0's log saying which
//! peer was lost.
//!
//! The script needs root, `ip` and `unshare`; without them it exits 77 and
//! this test fails, unless `DTL_SKIP_TWO_HOSTS=1` says to skip (CI has them:
//! there the script itself fails instead of skipping).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{losses_differ, train, weights_differ, within};

/// One multi-host job at a time: the machine has two cores.
static HOSTS: Mutex<()> = Mutex::new(());

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> Command {
    let mut command = Command::new(root().join("scripts/two-hosts.sh"));
    command.args(["--limit", "150"]);
    command
}

/// Whether this machine can simulate two hosts; a skip only when asked.
fn available(output: &Output) -> bool {
    if output.status.code() != Some(77) {
        return true;
    }
    let why = String::from_utf8_lossy(&output.stderr);
    assert!(
        std::env::var("DTL_SKIP_TWO_HOSTS").is_ok_and(|v| v == "1"),
        "scripts/two-hosts.sh cannot run here ({why}); set DTL_SKIP_TWO_HOSTS=1 to skip"
    );
    eprintln!("skipped: {why}");
    false
}

/// `dtl run FILE --device cpu --quiet --out OUT EXTRA...` as host h1, its
/// ranks on h1 and h2.
fn run_on_two_hosts(file: &Path, out: &Path, extra: &[&str]) -> Output {
    script()
        .arg(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", file.to_str().unwrap(), "--device", "cpu", "--quiet"])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn digits_model(dir: &Path, name: &str, steps: u32, parallel: &str) -> PathBuf {
    let text = format!(
        r#"
model Net {{ forward(x: [B, 64]) -> [B, 10] {{ x |> linear(64, 48) |> relu |> linear(48, 32) |> relu |> linear(32, 10) }} }}
data digits {{ source = csv({:?}, label: -1); scale = 0.0625; valid = 0.2 }}
train {{ model = Net; data = digits; loss = cross_entropy; optimizer = sgd(lr: 0.1, momentum: 0.9); micro_batch = 8; steps = {steps}; eval_every = 10; seed = 4 }}
{parallel}
"#,
        root().join("data/digits.csv.gz").display().to_string()
    );
    let path = dir.join(format!("{name}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn training_across_two_hosts_is_training_on_one() {
    let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Data parallel: the one-host run's bytes, traces of both ranks included.
    let dp = digits_model(dir.path(), "dp", 30, "parallel { data = 2 }");
    let (one, two) = (dir.path().join("dp_one"), dir.path().join("dp_two"));
    train(&dp, &one, &["--trace"]).code(0);
    let output = run_on_two_hosts(&dp, &two, &["--trace"]);
    if !available(&output) {
        return;
    }
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let traced = [
        "model.safetensors",
        "metrics.jsonl",
        "rank-0.trace.jsonl",
        "rank-1.trace.jsonl",
    ];
    same_bytes(&one, &two, &traced, "data parallel");
    let host_of = |rank: usize| {
        let beat = std::fs::read_to_string(two.join(format!("rank-{rank}.beat"))).unwrap();
        beat.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(
        (host_of(0), host_of(1)),
        ("h1".to_string(), "h2".to_string())
    );

    // Two pipeline stages, one on each host, against one process.
    let single = digits_model(dir.path(), "single", 30, "");
    let piped = digits_model(
        dir.path(),
        "piped",
        30,
        "parallel { pipeline = 2; micro_batches = 4 }",
    );
    let (out1, out2) = (dir.path().join("single"), dir.path().join("piped"));
    train(&single, &out1, &[]).code(0);
    let output = run_on_two_hosts(&piped, &out2, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Bounds as tests/pipeline.rs measured them for one host (10×).
    within(
        "two hosts, 2 stages: losses",
        losses_differ(&out1, &out2),
        1.3e-6,
    );
    let (weights, at) = weights_differ(
        &out1.join("model.safetensors"),
        &out2.join("model.safetensors"),
    );
    within(
        &format!("two hosts, 2 stages: weights (at `{at}`)"),
        weights as f64,
        9e-7,
    );

    // Fully sharded, with checkpoints: each host's replica writes its own
    // slices into the shared run folder, the evaluation gathers unit by
    // unit and the weights are streamed from the slices, byte for byte as
    // on one host.
    let sharded = digits_model(
        dir.path(),
        "sharded",
        30,
        "parallel { data = 2; shard = parameters }",
    );
    let (one, two) = (
        dir.path().join("sharded_one"),
        dir.path().join("sharded_two"),
    );
    let every = ["--set", "train.checkpoint_every=10"];
    train(&sharded, &one, &every).code(0);
    let output = run_on_two_hosts(&sharded, &two, &every);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checkpointed = [
        "model.safetensors",
        "metrics.jsonl",
        "checkpoint/shard-s0-p0.safetensors",
        "checkpoint/shard-s0-p1.safetensors",
    ];
    same_bytes(&one, &two, &checkpointed, "sharded");
}

/// Each of `files` holds the same bytes in the run folders `one` (one
/// host) and `two` (two hosts).
fn same_bytes(one: &Path, two: &Path, files: &[&str], what: &str) {
    for file in files {
        assert_eq!(
            std::fs::read(one.join(file)).unwrap(),
            std::fs::read(two.join(file)).unwrap(),
            "{what}: {file} differs between one host and two"
        );
    }
}

/// The check a job's command runs after `dtl` ends, inside the simulated
/// hosts: which processes of the run are left (their command line names
/// the run's file), printed as `LEFT[pids]`, and dtl's exit status.
const AFTERWARDS: &str = r#""$DTL" run "$FILE" --device cpu --quiet --out "$OUT" --timeout 20
code=$?
sleep 2
echo "LEFT[$(pgrep -f -- "$FILE" | tr '\n' ' ')]"
exit $code
"#;

fn spawn_long_job(dir: &Path, name: &str) -> (Child, PathBuf) {
    let file = digits_model(dir, name, 1_000_000, "parallel { data = 2 }");
    let out = dir.join(name);
    let check = dir.join(format!("{name}.sh"));
    std::fs::write(&check, AFTERWARDS).unwrap();
    let child = script()
        .args(["bash", check.to_str().unwrap()])
        .env("DTL", env!("CARGO_BIN_EXE_dtl"))
        .env("FILE", &file)
        .env("OUT", &out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, out)
}

/// rank 1's pid, from its heartbeat, once it trains.
fn rank_one(out: &Path) -> u32 {
    let started = Instant::now();
    loop {
        if let Ok(beat) = std::fs::read_to_string(out.join("rank-1.beat")) {
            let fields: Vec<&str> = beat.split_whitespace().collect();
            if fields.get(2) == Some(&"step") {
                assert_eq!(fields[1], "h2", "{beat}");
                return fields[0].parse().unwrap();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rank 1 never trained"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait(child: Child) -> (Option<i32>, String) {
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[test]
fn losing_the_second_host_stops_the_job_and_says_so() {
    let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Its rank killed.
    let (child, out) = spawn_long_job(dir.path(), "killed_rank");
    let pid = rank_one(&out);
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let (code, text) = wait(child);
    if code == Some(77) {
        assert!(
            std::env::var("DTL_SKIP_TWO_HOSTS").is_ok_and(|v| v == "1"),
            "{text}"
        );
        return;
    }
    assert!(code.is_some_and(|c| c != 0 && c != 124), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60), "{text}");
    assert!(text.contains("LEFT[]"), "processes left behind:\n{text}");
    assert!(!out.join("summary.json").exists());
    let log0 = std::fs::read_to_string(out.join("rank-0.log")).unwrap();
    assert!(
        log0.contains("rank 1") && log0.contains("h2"),
        "rank 0's log:\n{log0}"
    );

    // Everything on the second host killed, the "ssh" agent and PRRTE's
    // daemon included: mpirun itself may call that a success; dtl does not.
    let (child, out) = spawn_long_job(dir.path(), "lost_host");
    rank_one(&out);
    let second = host_processes(&out);
    Command::new("kill")
        .arg("-9")
        .args(&second)
        .status()
        .unwrap();
    let (code, text) = wait(child);
    assert!(code.is_some_and(|c| c != 0 && c != 124), "{text}");
    assert!(text.contains("LEFT[]"), "processes left behind:\n{text}");
    assert!(!out.join("summary.json").exists());
    // The launcher says how it ended, from the ranks, not from mpirun.
    let said = common::flat(&text);
    assert!(
        said.contains("peer on host h2 (rank 1) lost") || said.contains("rank 0 wrote no summary"),
        "{text}"
    );
}

/// Every process of the second simulated host: those in its network
/// namespace (found through rank 1's pid, whose namespace it is).
fn host_processes(out: &Path) -> Vec<String> {
    let pid = rank_one(out);
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.parse::<u32>().ok()?;
            let theirs = std::fs::read_link(e.path().join("ns/net")).ok()?;
            (theirs == ns).then_some(name)
        })
        .collect()
}

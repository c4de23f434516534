//! `shard = optimizer` (ZeRO-1), `shard = gradients` (ZeRO-2) and `shard =
//! parameters` (ZeRO-3) across real processes (MPI on the CPU,
//! oversubscribed): the same run as plain data parallelism at the same
//! degree (ZeRO-1 value for value, ZeRO-2 and 3 up to the order of their
//! sums), with 1/D of the optimizer state (and ZeRO-3's parameters) per rank as
//! `dtl explain` predicts; checkpoints in the unsharded format, so a run
//! resumes at another degree or shard mode.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::{
    checkpoints_differ, copy_for_resume, dtl, is_optimizer_state, losses_differ, python, resume,
    step_records, summary, train, weights_differ, within,
};

/// One multi-rank run at a time: the machine has two cores.
static RANKS: Mutex<()> = Mutex::new(());

fn ranks() -> MutexGuard<'static, ()> {
    RANKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A model wide enough for two gradient buckets at `bucket_mb = 1`
/// (`0.weight` alone is 1 MiB), so slices cross parameter and bucket
/// boundaries.
fn experiment(dir: &Path, name: &str, train: &str, parallel: &str) -> PathBuf {
    experiment_of(dir, name, WIDE, train, parallel)
}

/// The model of [`experiment`]'s.
const WIDE: &str = "x |> linear(64, 4096) |> relu |> linear(4096, 10)";

/// An attention whose one key/value head two tensor ranks share.
const SHARED_HEAD: &str = "x |> reshape([4, 16]) |> linear(16, 32) |> attention(32, 4, kv_heads: 1) |> mean(1) |> linear(32, 10)";

/// [`experiment`] with the model's forward `body`; `clip = norm(1.0)`
/// unless `train` clips.
fn experiment_of(dir: &Path, name: &str, body: &str, train: &str, parallel: &str) -> PathBuf {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let clip = match train.contains("clip") {
        true => "",
        false => "clip = norm(1.0); ",
    };
    let text = format!(
        r#"
model Net {{
  forward(x: [B, 64]) -> [B, 10] {{ {body} }}
}}
data digits {{ source = csv({:?}, label: -1); scale = 0.0625; valid = 0.2 }}
train {{ model = Net; data = digits; loss = cross_entropy; seed = 3; accumulate = 3; {clip}{train} }}
parallel {{ bucket_mb = 1; {parallel} }}
"#,
        digits.display().to_string()
    );
    let path = dir.join(format!("{name}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

fn max_loss_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (step_records(a), step_records(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x.loss - y.loss).abs())
        .fold(0.0, f64::max)
}

/// The largest relative difference of the gradient norms the two runs
/// clipped by, step by step.
fn max_norm_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (step_records(a), step_records(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x.grad_norm - y.grad_norm).abs() / y.grad_norm)
        .fold(0.0, f64::max)
}

/// Every layout trained three times, plain, with `shard = optimizer` and
/// with `shard = gradients` (one of them in shard groups of 2 of its 4
/// replicas, `shard_group = 2`, whose copies' gradient slices are then
/// summed; six of them split over 2 tensor ranks, whose replicas shard
/// each rank's part: one with a key/value head both tensor ranks share,
/// one over 2 pipeline stages, one in shard groups, one in DiLoCo groups,
/// one in fp16).
/// ZeRO-1 gives the same losses, weights and checkpointed optimizer state
/// bit for bit (the gradients are all-reduced in full either way, and
/// each update rule works value by value); ZeRO-2 reduce-scatters the
/// gradients and adds the clipping norm up from the slices, the same
/// values summed in another order (under `tensor`, a split parameter's
/// over the tensor group, a whole one's and a shared head's once). Rank
/// 0 holds its shard of the state, the bytes `dtl explain` predicts,
/// worked out here by hand too.
#[test]
fn sharded_optimizer_state_trains_as_plain_data_parallelism() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    // Bucket 1 holds `2.bias`, `2.weight`, `0.bias` (10 + 40960 + 4096 =
    // 45066 values), bucket 2 `0.weight` (262144), as DDP fills them.
    let shard = |d: u64, slots: u64| slots * 4 * (45066u64.div_ceil(d) + 262144u64.div_ceil(d));
    // Split over 2 tensor ranks each holds one bucket: `0.weight` 2048 ×
    // 64 and `0.bias` 2048 (column-parallel), `2.weight` 10 × 2048
    // (row-parallel) and `2.bias` 10 (whole).
    let tensor_part: u64 = 2048 * 64 + 2048 + 10 * 2048 + 10;
    // The shared head's model: `1` 32 × 16 + 32 (whole: the attention
    // reads it whole); the attention's 2 query heads of 8 and its key and
    // value head, `in_proj` 32 × 32 + 32, `out_proj` 32 × 16 + 32 (row-
    // parallel, its bias whole); the output layer 5 × 32 + 5 (split by
    // vocabulary).
    let shared_part: u64 = 32 * 16 + 32 + 32 * 32 + 32 + 32 * 16 + 32 + 5 * 32 + 5;
    // (what, model, train settings, layout, sharding within, replicas that
    // split one copy, rank 0's optimizer state)
    let adamw = "optimizer = adamw(lr: 1e-3, weight_decay: 0.1); micro_batch = 4";
    // Its norms (0.2 to 0.3) are clipped at every step. Under SGD: Adam
    // steps an element whose gradient is rounding (the key's bias) by up
    // to the learning rate either way, so two orders of the same sums end
    // 1e-5 apart there.
    let clipped = "optimizer = sgd(lr: 0.05, momentum: 0.9); micro_batch = 4; clip = norm(0.05)";
    let cases = [
        (
            "sgd, 2 replicas",
            WIDE,
            "optimizer = sgd(lr: 0.05, momentum: 0.9, nesterov: true); micro_batch = 8",
            "data = 2",
            "",
            2,
            shard(2, 1),
        ),
        (
            "adamw with groups, 4 replicas",
            WIDE,
            r#"optimizer = adamw(lr: 1e-3, weight_decay: 0.1); groups = [group("biases", weight_decay: 0), group("2.*", lr_scale: 0.5)]; micro_batch = 4"#,
            "data = 4",
            "",
            4,
            shard(4, 2),
        ),
        (
            "adam, 2 replicas × 2 stages",
            WIDE,
            "optimizer = adam(lr: 1e-3); micro_batch = 8",
            "data = 2; pipeline = 2; micro_batches = 2",
            "",
            2,
            // Rank 0 is stage 0: `0.bias` and `0.weight`, one bucket each.
            2 * 4 * (4096 / 2 + 262144 / 2),
        ),
        (
            "adamw, 4 replicas in 2 shard groups of 2",
            WIDE,
            "optimizer = adamw(lr: 1e-3, weight_decay: 0.1); micro_batch = 4",
            "data = 4",
            "; shard_group = 2",
            2,
            shard(2, 2),
        ),
        // Within 2 DiLoCo groups of 2 (the checkpoint of step 6 in the
        // middle of a period) and 2 local SGD groups of 2: each group's
        // replicas shard its state; the gradients stay in the group.
        (
            "adamw, 2 DiLoCo groups of 2",
            WIDE,
            adamw,
            "data = 4; groups = 2; sync = diloco(period: 4, outer_lr: 0.7, outer_momentum: 0.9)",
            "",
            2,
            shard(2, 2),
        ),
        (
            "adamw, 2 local SGD groups of 2",
            WIDE,
            adamw,
            "data = 4; groups = 2; sync = local_sgd(period: 3)",
            "",
            2,
            shard(2, 2),
        ),
        (
            "adamw, 2 replicas × 2 tensor ranks",
            WIDE,
            adamw,
            "data = 2; tensor = 2",
            "",
            2,
            2 * 4 * tensor_part.div_ceil(2),
        ),
        (
            "sgd, 2 replicas × 2 tensor ranks sharing a key/value head",
            SHARED_HEAD,
            clipped,
            "data = 2; tensor = 2",
            "",
            2,
            4 * shared_part.div_ceil(2),
        ),
        // The 3-D and grouped grids of 8 ranks, and fp16: each replica of
        // a tensor rank's part shards it as above.
        (
            "adamw, 2 replicas × 2 tensor ranks × 2 stages",
            WIDE,
            adamw,
            "data = 2; tensor = 2; pipeline = 2; micro_batches = 2",
            "",
            2,
            // Rank 0: stage 0's column-parallel `0.weight` and `0.bias`.
            2 * 4 * (2048 * 64 + 2048) / 2,
        ),
        (
            "adamw, 4 replicas × 2 tensor ranks in shard groups of 2",
            WIDE,
            adamw,
            "data = 4; tensor = 2",
            "; shard_group = 2",
            2,
            2 * 4 * tensor_part.div_ceil(2),
        ),
        (
            "adamw, 2 DiLoCo groups of 2 × 2 tensor ranks",
            WIDE,
            adamw,
            "data = 4; tensor = 2; groups = 2; sync = diloco(period: 4, outer_lr: 0.7, outer_momentum: 0.9)",
            "",
            2,
            2 * 4 * tensor_part.div_ceil(2),
        ),
        (
            "adamw in fp16, 2 replicas × 2 tensor ranks",
            WIDE,
            "optimizer = adamw(lr: 1e-3, weight_decay: 0.1); micro_batch = 4; precision = fp16",
            "data = 2; tensor = 2",
            "",
            2,
            2 * 4 * tensor_part.div_ceil(2),
        ),
    ];
    for (name, body, settings, layout, within_groups, k, held) in cases {
        let settings = format!("{settings}; steps = 12; checkpoint_every = 6");
        let file =
            |stem: &str, parallel: &str| experiment_of(dir.path(), stem, body, &settings, parallel);
        let plain = file("plain", layout);
        let sharded = file(
            "sharded",
            &format!("{layout}; shard = optimizer{within_groups}"),
        );
        let gradients = file(
            "gradients",
            &format!("{layout}; shard = gradients{within_groups}"),
        );
        let (out_plain, out_sharded, out_gradients) = (
            dir.path().join(format!("{name} plain")),
            dir.path().join(format!("{name} sharded")),
            dir.path().join(format!("{name} gradients")),
        );
        train(&plain, &out_plain, &[]).code(0);
        train(&sharded, &out_sharded, &[]).code(0);
        train(&gradients, &out_gradients, &[]).code(0);
        // 10× the worst measured over the three layouts (2026-12-04):
        // 2.1e-7 on the losses, 4.5e-7 on the weights, 3.0e-8 on the
        // optimizer state; over all six (2026-12-06), 9.4e-7 on the
        // gradient norms clipped by. In fp16 (2026-12-06), where a sum's
        // last bit can flip a half-precision product's: 7.9e-7 on the
        // losses, 1.5e-6 on the norms, 5.2e-7 on the weights, 1.2e-6 on
        // the state.
        let fp16 = settings.contains("fp16");
        let [losses, norms, weights, state] = match fp16 {
            true => [7.9e-6, 1.5e-5, 5.2e-6, 1.2e-5],
            false => [2.1e-6, 9.4e-6, 4.5e-6, 3e-7],
        };
        within(
            &format!("{name}, ZeRO-2: losses"),
            max_loss_difference(&out_plain, &out_gradients),
            losses,
        );
        within(
            &format!("{name}, ZeRO-2: gradient norms (relative)"),
            max_norm_difference(&out_plain, &out_gradients),
            norms,
        );
        let (worst, at) = weights_differ(
            &out_plain.join("model.safetensors"),
            &out_gradients.join("model.safetensors"),
        );
        within(
            &format!("{name}, ZeRO-2: weights (at `{at}`)"),
            worst as f64,
            weights,
        );
        let (worst, at) = checkpoints_differ(&out_plain, &out_gradients, is_optimizer_state);
        within(
            &format!("{name}, ZeRO-2: checkpointed state (at `{at}`)"),
            worst as f64,
            state,
        );
        within(
            &format!("{name}: losses"),
            max_loss_difference(&out_plain, &out_sharded),
            0.0,
        );
        let (worst, at) = weights_differ(
            &out_plain.join("model.safetensors"),
            &out_sharded.join("model.safetensors"),
        );
        within(&format!("{name}: weights (at `{at}`)"), worst as f64, 0.0);
        let (worst, at) = checkpoints_differ(&out_plain, &out_sharded, |_| true);
        within(
            &format!("{name}: checkpoint (at `{at}`)"),
            worst as f64,
            0.0,
        );
        // A DiLoCo group's own replica and inner state, gathered from its
        // replicas' slices.
        if layout.contains("diloco") {
            for (out, bound) in [(&out_sharded, 0.0), (&out_gradients, 3e-7)] {
                for file in ["model", "state"] {
                    let at = |o: &Path| o.join(format!("checkpoint/group-1/{file}.safetensors"));
                    let (worst, where_) = weights_differ(&at(&out_plain), &at(out));
                    within(
                        &format!("{name}: group 1's {file} (at `{where_}`)"),
                        worst as f64,
                        bound,
                    );
                }
            }
        }
        let bytes = |out: &Path| summary(out)["optimizer_state_bytes"].as_u64().unwrap();
        assert_eq!(
            bytes(&out_gradients),
            held,
            "{name}, ZeRO-2: rank 0's optimizer state"
        );
        assert_eq!(
            bytes(&out_sharded),
            held,
            "{name}: rank 0's optimizer state"
        );
        assert!(
            bytes(&out_sharded) * k <= bytes(&out_plain) + 4 * 4 * k,
            "{name}: a shard is 1/{k} of the state, up to padding"
        );
        // DiLoCo's θ_global and outer momentum, whole on every rank
        // (the model's 307210 values each, or its tensor rank's part),
        // explain counts with the state.
        let outer = match (layout.contains("diloco"), layout.contains("tensor")) {
            (true, false) => 2 * 4 * 307210,
            (true, true) => 2 * 4 * tensor_part,
            (false, _) => 0,
        };
        let explained = dtl(&["explain", "--format", "json", sharded.to_str().unwrap()]).code(0);
        let explained: serde_json::Value = serde_json::from_str(&explained.stdout).unwrap();
        assert_eq!(
            explained["memory"]["optimizer_state"].as_u64(),
            Some(held + outer),
            "{name}: explain's estimate"
        );
    }
}

/// A sharded run's checkpoint resumes sharded at another degree, and
/// unsharded in one process; at its own layout the resumed run is the
/// uninterrupted one bit for bit.
#[test]
fn a_sharded_run_resumes_at_another_degree_and_shard_mode() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let settings = "optimizer = adamw(lr: 1e-3); steps = 10; checkpoint_every = 4";
    let two = experiment(
        dir.path(),
        "two",
        &format!("{settings}; micro_batch = 8"),
        "data = 2; shard = optimizer",
    );
    let four = experiment(
        dir.path(),
        "four",
        &format!("{settings}; micro_batch = 4"),
        "data = 4; shard = optimizer",
    );
    let one = experiment(
        dir.path(),
        "one",
        &format!("{settings}; micro_batch = 16"),
        "",
    );
    let full = dir.path().join("full");
    train(&two, &full, &[]).code(0);
    // Another degree sums the gradients in another order. 10× the worst
    // measured (2026-12-04): 6.3e-8 on losses, 1.5e-8 on weights.
    for (then, name, loss_bound, weight_bound) in [
        (None, "2 → 2", 0.0, 0.0),
        (Some(&four), "2 → 4", 6.4e-7, 1.5e-7),
        (Some(&one), "2 → 1 unsharded", 6.4e-7, 1.5e-7),
    ] {
        resumes_as_uninterrupted(
            &full,
            &dir.path().join(name),
            then,
            (loss_bound, weight_bound),
        );
    }
    // Its weights are whole in model.safetensors: an export takes them all
    // from there.
    let exported = dir.path().join("exported.safetensors");
    let (full_arg, exported_arg) = (full.to_str().unwrap(), exported.to_str().unwrap());
    dtl(&["export", full_arg, "-o", exported_arg])
        .code(0)
        .stdout_has("4 tensors (0 from the replicas' slices) of the checkpoint of step 8");
    let checkpointed = full.join("checkpoint").join("model.safetensors");
    assert_eq!(weights_differ(&checkpointed, &exported).0, 0.0);

    // A replica that cannot write its slices of the checkpoint of step 8
    // (a full disk) stops the job, naming itself; nothing of that
    // checkpoint is swapped in, and the run resumes from step 4 to the
    // uninterrupted run's weights, bit for bit.
    let faulty = dir.path().join("faulty");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", two.to_str().unwrap(), "--quiet", "--device", "cpu"])
        .arg("--out")
        .arg(&faulty)
        .env("DTL_FAULT", "slices@1:8")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("[rank 1]") && stderr.contains("no space left on"),
        "{stderr}"
    );
    assert_eq!(checkpoint_step(&faulty), 4);
    resume(&faulty)
        .code(0)
        .stdout_has("resumed from the checkpoint of step 4");
    let (worst, at) = weights_differ(
        &full.join("model.safetensors"),
        &faulty.join("model.safetensors"),
    );
    assert_eq!(worst, 0.0, "resumed after the failed checkpoint: `{at}`");
}

/// Under `tensor = 2` a sharded run's checkpoint holds the optimizer state
/// whole, gathered over each tensor rank's replicas, as an unsharded
/// tensor-parallel run writes it: it resumes at its own layout, and
/// unsharded, as the uninterrupted run bit for bit (ZeRO-1 updates as
/// plain data parallelism does), and at another layout (whole layers,
/// ZeRO-2) within the bounds of another order of sums.
#[test]
fn a_tensor_parallel_sharded_run_resumes_at_other_layouts() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let settings = "optimizer = adamw(lr: 1e-3); steps = 10; checkpoint_every = 4; micro_batch = 8";
    let file = |name: &str, layout: &str| experiment(dir.path(), name, settings, layout);
    let split = file("split", "data = 2; tensor = 2; shard = optimizer");
    let unsharded = file("unsharded", "data = 2; tensor = 2");
    let whole = file("whole", "data = 2; shard = gradients");
    let full = dir.path().join("full");
    train(&split, &full, &[]).code(0);
    // 10× the worst measured (2026-12-06): 1.3e-8 on the losses
    // (relative), 1.5e-8 on the weights.
    for (then, name, loss_bound, weight_bound) in [
        (None, "split → split", 0.0, 0.0),
        (Some(&unsharded), "split → unsharded", 0.0, 0.0),
        (Some(&whole), "split → whole layers, ZeRO-2", 1.4e-7, 1.5e-7),
    ] {
        resumes_as_uninterrupted(
            &full,
            &dir.path().join(name),
            then,
            (loss_bound, weight_bound),
        );
    }
}

/// The step of the checkpoint in the run folder `out`.
fn checkpoint_step(out: &Path) -> u64 {
    let text = std::fs::read_to_string(out.join("checkpoint").join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["step"].as_u64().unwrap()
}

/// Resumes the checkpoint of step 8 of the run in `full` into `resumed`
/// (its own file, or `then`), and holds the run to the uninterrupted one:
/// the losses' relative difference and the weights' within `bounds`.
fn resumes_as_uninterrupted(
    full: &Path,
    resumed: &Path,
    then: Option<&PathBuf>,
    (loss_bound, weight_bound): (f64, f64),
) {
    let name = resumed.file_name().unwrap().to_string_lossy();
    copy_for_resume(full, resumed);
    let run = match then {
        None => resume(resumed),
        Some(file) => dtl(&[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--no-tensorboard",
            "--resume",
            resumed.to_str().unwrap(),
        ]),
    };
    run.code(0)
        .stdout_has("resumed from the checkpoint of step 8");
    within(
        &format!("resume {name}: losses"),
        losses_differ(full, resumed),
        loss_bound,
    );
    let (weights, at) = weights_differ(
        &full.join("model.safetensors"),
        &resumed.join("model.safetensors"),
    );
    within(
        &format!("resume {name}: weights (at `{at}`)"),
        weights as f64,
        weight_bound,
    );
}

/// An example with its data path made absolute and `parallel` (if any)
/// appended as its `parallel` block.
fn example(dir: &Path, name: &str, parallel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join(format!("examples/{name}.dtl")))
        .unwrap()
        .replace("\"../data/", &format!("\"{}/", root.join("data").display()));
    if !parallel.is_empty() {
        text.push_str(&format!("\nparallel {{ {parallel} }}\n"));
    }
    let path = dir.join(format!("{name}-{}.dtl", parallel.len()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `recompute = blocks` and `all` train bit for bit as keeping every
/// activation: the same losses, evaluation and weights (batch norms'
/// running statistics included), with dropout inside the recomputed
/// blocks (the masks drawn again from the same random state), under
/// `fp16` with its loss scaling too, batch norm
/// inside them (its statistics updated once), a 2 × 2 pipeline under
/// 1F1B with `shard = gradients` (the stages recompute their parts of the
/// blocks a cut splits), and synchronised batch norm over two replicas.
#[test]
fn recompute_trains_bitwise_as_keeping_every_activation() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    // (example, parallel block, steps, precision)
    let cases = [
        ("digits_resmlp", "", 20, "fp32"),
        ("digits_resmlp", "", 10, "fp16"),
        ("digits_cnn", "", 6, "fp32"),
        (
            "digits_resmlp",
            "data = 2; pipeline = 2; micro_batches = 4; schedule = one_f_one_b; shard = gradients",
            8,
            "fp32",
        ),
        ("digits_cnn", "data = 2; batch_norm = sync", 4, "fp32"),
    ];
    for (name, parallel, steps, precision) in cases {
        let file = example(dir.path(), name, parallel);
        let run = |mode: &str| {
            let out = dir
                .path()
                .join(format!("{name}-{}-{precision}-{mode}", parallel.len()));
            let steps = format!("train.steps={steps}");
            let mode_setting = format!("train.recompute={mode}");
            let precision = format!("train.precision={precision}");
            let args = [
                "--set",
                &steps,
                "--set",
                &mode_setting,
                "--set",
                &precision,
                "--no-tensorboard",
            ];
            train(&file, &out, &args).code(0);
            out
        };
        let kept = run("none");
        for mode in ["blocks", "all"] {
            let what = format!("{name} {parallel} {precision} recompute = {mode}");
            common::same_run_bitwise(&kept, &run(mode), &what);
        }
    }
}

/// What `recompute = blocks` saves is memory the process no longer takes:
/// eight residual blocks at 2048 rows, where explain predicts the
/// activations fall from 242.5 MiB to 46.5 MiB (worked out here by hand).
/// Rank 0's measured peak falls by at least half of that prediction
/// (measured: 189 MiB of 196 since every CPU run returns freed blocks of
/// 4 MiB or more; 162 MiB before), and the run is the
/// same bit for bit.
#[test]
fn recompute_lowers_the_measured_peak_memory() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.dtl");
    std::fs::write(
        &file,
        r#"
module Residual(d: int, hidden: int) {
  norm = layer_norm(d)
  forward(x: [B, d]) -> [B, d] {
    let h = x |> norm |> linear(d, hidden) |> gelu |> dropout(0.1) |> linear(hidden, d)
    x + h
  }
}
model Deep {
  forward(x: [B, 64]) -> [B, 4] {
    x |> linear(64, 256) |> repeat 8 { Residual(256, 1024) } |> linear(256, 4)
  }
}
data blobs { source = synthetic(rows: 8192, features: 64, classes: 4, seed: 7); valid = 0.25 }
train { model = Deep; data = blobs; loss = cross_entropy; optimizer = sgd(lr: 0.01); micro_batch = 2048; steps = 3 }
"#,
    )
    .unwrap();
    let measure = |mode: &str| {
        let setting = format!("train.recompute={mode}");
        let explained = dtl(&[
            "explain",
            file.to_str().unwrap(),
            "--format",
            "json",
            "--set",
            &setting,
        ])
        .code(0);
        let cost: serde_json::Value = serde_json::from_str(&explained.stdout).unwrap();
        let estimate = cost["memory"]["activations"].as_u64().unwrap();
        let out = dir.path().join(mode);
        train(&file, &out, &["--set", &setting, "--no-tensorboard"]).code(0);
        let peak = summary(&out)["peak_rss_bytes"].as_u64().unwrap();
        (estimate, peak, out)
    };
    let (kept_estimate, kept_peak, kept) = measure("none");
    let (recomputed_estimate, recomputed_peak, recomputed) = measure("blocks");
    // Per row: the input 64, the first linear 256, per block norm 256,
    // linear 1024, gelu 1024, dropout 1024, linear 256 and the sum 256,
    // the output 4. Recomputed, a block keeps only its sum (what the next
    // block reads) until backward, and one block's other outputs exist at
    // a time.
    assert_eq!(kept_estimate, (64 + 256 + 8 * 3840 + 4) * 2048 * 4);
    assert_eq!(
        recomputed_estimate,
        (64 + 256 + 8 * 256 + 4 + 3584) * 2048 * 4
    );
    let predicted = kept_estimate - recomputed_estimate;
    let measured = kept_peak.saturating_sub(recomputed_peak);
    eprintln!("recompute = blocks: peak {kept_peak} -> {recomputed_peak} bytes, saved {measured} of {predicted} predicted");
    assert!(
        measured * 2 >= predicted,
        "recompute saved {measured} bytes of peak memory; explain predicts {predicted}"
    );
    common::same_run_bitwise(&kept, &recomputed, "recompute = blocks");
}

/// The residual MLP example (a unit per block, and the layers before and
/// after them) with `parallel` as its parallel block and the `train`
/// settings in place of its own of the same names.
fn resmlp(dir: &Path, name: &str, train: &str, parallel: &str) -> PathBuf {
    let file = example(dir, "digits_resmlp", parallel);
    let keys: Vec<&str> = train
        .split(';')
        .filter_map(|s| s.split('=').next())
        .map(str::trim)
        .collect();
    let text: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|line| {
            !keys
                .iter()
                .any(|k| line.trim_start().starts_with(&format!("{k} =")))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let text = text.replace(
        "  model = DigitsResMlp\n",
        &format!("  model = DigitsResMlp\n  {train}\n"),
    );
    let path = dir.join(format!("{name}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `shard = parameters` (ZeRO-3) trains as plain data parallelism at the
/// same degree, up to the order of its sums: losses, weights and the
/// checkpointed optimizer state, with accumulation and norm clipping (the
/// example's), under SGD, Adam and AdamW, with the units kept gathered
/// from forward to backward (from a partial `init` file), in shard groups with recomputed blocks, under
/// fp16, with every piece joined into one unit (`unit_mb`: its gradients
/// reduce-scattered once, after its first segment's backward), over 2
/// pipeline stages whose edge cuts a block (1F1B over 4
/// pieces), and with a tied embedding (GPT's `root` unit), alone and over
/// 2 stages, one of which holds no unit. Rank 0 holds
/// its slices of the units between steps and 1/D of the optimizer state:
/// bytes worked out here by hand from the units (the first linear 6240
/// values, each block 37344, the final norm and linear 1162; in the
/// pipeline, stage 0 holds the first linear, block 1.0 and block 1.1's
/// norm and first linear, 18816).
#[test]
fn full_sharding_trains_as_plain_data_parallelism() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let slices =
        |d: u64| 4 * (6240u64.div_ceil(d) + 3 * 37344u64.div_ceil(d) + 1162u64.div_ceil(d));
    // 10× the worst measured over the float32 cases (2026-12-05): losses,
    // weights, optimizer state. AdamW from the trained `init` weights
    // measures 6.1e-6 on the weights (one value, at `0.weight`, from step
    // 6 on; the loads themselves are exact), within the bound.
    let fp32 = [7e-7, 8.5e-6, 4.5e-7];
    // fp16 computes each layer in half precision, where the other order
    // of the sums shows: 10× the worst measured, as large as ZeRO-2's
    // (7.6e-5 and 1.9e-5 from plain data parallelism in the same run).
    let fp16 = [6.3e-4, 1.6e-4, 6.5e-5];
    let whole = 4 * 119434;
    let stage_zero = 4 * (6240 + 37344 + 18816);
    let stage_zero_slices = 4 * (6240 / 2 + 37344 / 2 + 18816 / 2);
    // (what, train settings, plain layout, ZeRO-3's, state slots, bounds,
    // the parameter bytes rank 0 holds: plain, sharded)
    let cases = [
        (
            "adam, 2 replicas, the best weights kept",
            "steps = 12; eval_every = 4; keep_best = eval_loss",
            "data = 2",
            "",
            2,
            fp32,
            (whole, slices(2)),
        ),
        (
            "adamw, 4 replicas, units kept from forward to backward, a partial `init`",
            r#"steps = 12; optimizer = adamw(lr: 1e-3, weight_decay: 0.1); init = weights("{init}", skip: ["1.0.*"])"#,
            "data = 4",
            "; reshard_after_forward = false",
            2,
            fp32,
            (whole, slices(4)),
        ),
        (
            "sgd, 4 replicas in 2 shard groups, recomputed blocks",
            "steps = 12; optimizer = sgd(lr: 0.05, momentum: 0.9); recompute = blocks",
            "data = 4",
            "; shard_group = 2",
            1,
            fp32,
            (whole, slices(2)),
        ),
        (
            "adam, 2 replicas, every piece in one unit (`unit_mb = 1`), recomputed blocks",
            "steps = 12; recompute = blocks",
            "data = 2",
            "; unit_mb = 1",
            2,
            fp32,
            (whole, slices(2)),
        ),
        (
            "fp16, 2 replicas",
            "steps = 12; precision = fp16",
            "data = 2",
            "",
            2,
            fp16,
            (whole, slices(2)),
        ),
        (
            "adam, 2 replicas × 2 stages cutting a block, 1F1B over 4 pieces",
            "steps = 12; eval_every = 4",
            r#"data = 2; pipeline = 2; split = ["1.1.1"]; micro_batches = 4; schedule = one_f_one_b"#,
            "",
            2,
            fp32,
            (stage_zero, stage_zero_slices),
        ),
    ];
    // The partial `init` is the first case's final weights: ZeRO-3 reads
    // each unit's from the file as the unit is laid out, `skip` kept.
    let init = dir
        .path()
        .join(format!("{} plain/model.safetensors", cases[0].0));
    for (name, settings, layout, options, slots, bounds, held) in cases {
        let settings = settings.replace("{init}", init.to_str().unwrap());
        let settings = format!("{settings}; checkpoint_every = 6");
        let plain = resmlp(dir.path(), "plain", &settings, layout);
        let sharded = resmlp(
            dir.path(),
            "sharded",
            &settings,
            &format!("{layout}; shard = parameters{options}"),
        );
        let (out_plain, out_sharded) = (
            dir.path().join(format!("{name} plain")),
            dir.path().join(format!("{name} sharded")),
        );
        train(&plain, &out_plain, &["--no-tensorboard"]).code(0);
        train(&sharded, &out_sharded, &["--no-tensorboard"]).code(0);
        within(
            &format!("{name}, ZeRO-3: losses"),
            max_loss_difference(&out_plain, &out_sharded),
            bounds[0],
        );
        let (worst, at) = weights_differ(
            &out_plain.join("model.safetensors"),
            &out_sharded.join("model.safetensors"),
        );
        within(
            &format!("{name}, ZeRO-3: weights (at `{at}`)"),
            worst as f64,
            bounds[1],
        );
        if settings.contains("keep_best") {
            // Written through the replicas' slices, as the final weights.
            let best = |out: &Path| out.join("best").join("model.safetensors");
            let (worst, at) = weights_differ(&best(&out_plain), &best(&out_sharded));
            within(
                &format!("{name}, ZeRO-3: best weights (at `{at}`)"),
                worst as f64,
                bounds[1],
            );
            assert!(!out_sharded
                .join("best")
                .join("model.safetensors.shards")
                .exists());
        }
        // The checkpoint's optimizer state, and its weights of step 6
        // (from the replicas' slices) within the weights' bound.
        for (what, state, bound) in [("state", true, bounds[2]), ("weights", false, bounds[1])] {
            let which = |name: &str| is_optimizer_state(name) == state;
            let (worst, at) = checkpoints_differ(&out_plain, &out_sharded, which);
            within(
                &format!("{name}, ZeRO-3: checkpoint {what} (at `{at}`)"),
                worst as f64,
                bound,
            );
        }
        let bytes = |out: &Path, what: &str| summary(out)[what].as_u64().unwrap();
        assert_eq!(bytes(&out_plain, "parameter_bytes"), held.0, "{name}");
        assert_eq!(
            bytes(&out_sharded, "parameter_bytes"),
            held.1,
            "{name}: rank 0's slices"
        );
        assert_eq!(
            bytes(&out_sharded, "optimizer_state_bytes"),
            slots * held.1,
            "{name}: rank 0's optimizer state"
        );
    }
    // GPT's embedding is read by its first layer and its tied output
    // layer: the `root` unit, gathered for the whole step.
    let gpt = |parallel: &str| {
        let file = example(dir.path(), "moby_gpt", parallel);
        let out = dir.path().join(format!("gpt {parallel}"));
        let args = [
            "--set",
            "train.steps=6",
            "--set",
            "train.warmup=2",
            "--set",
            "train.micro_batch=8",
            "--set",
            "train.checkpoint_every=3",
            "--no-tensorboard",
        ];
        train(&file, &out, &args).code(0);
        out
    };
    // Over 2 stages the tied embedding puts every layer on stage 1: stage
    // 0 (the input alone) holds no unit, and still takes part in every
    // collective of the checkpoints and the final weights.
    for (layout, bounds) in [
        ("data = 2", (7e-7, 6e-7)),
        ("data = 2; pipeline = 2", (7e-7, 6e-7)),
    ] {
        let plain = gpt(layout);
        let sharded = gpt(&format!("{layout}; shard = parameters"));
        let plan = std::fs::read_to_string(sharded.join("plan.yaml")).unwrap();
        assert!(plan.contains("- name: root\n"), "the tied embedding's unit");
        within(
            &format!("gpt, {layout}, ZeRO-3: losses"),
            max_loss_difference(&plain, &sharded),
            bounds.0,
        );
        let (worst, at) = common::weights_differ_outside_key_bias(
            &plain.join("model.safetensors"),
            &sharded.join("model.safetensors"),
        );
        within(
            &format!("gpt, {layout}, ZeRO-3: weights (at `{at}`)"),
            worst as f64,
            bounds.1,
        );
    }
}

/// A ZeRO-3 checkpoint is in the unsharded format: it resumes bit for bit
/// at its own layout, and at another degree, sharded or not, or cut into
/// pipeline stages.
#[test]
fn a_fully_sharded_run_resumes_at_another_degree_and_shard_mode() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    // Without dropout: each replica draws its own masks, so another
    // degree would draw others.
    let settings = "steps = 10; checkpoint_every = 4";
    let resmlp = |name: &str, settings: &str, parallel: &str| {
        let file = resmlp(dir.path(), name, settings, parallel);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace("p: float = 0.1", "p: float = 0.0")).unwrap();
        file
    };
    let four = resmlp("four", settings, "data = 4; shard = parameters");
    let two = resmlp(
        "two",
        &format!("{settings}; micro_batch = 32"),
        "data = 2; shard = parameters",
    );
    let one = resmlp("one", &format!("{settings}; micro_batch = 64"), "");
    let piped = resmlp(
        "piped",
        &format!("{settings}; micro_batch = 32"),
        "data = 2; pipeline = 2; shard = parameters",
    );
    let full = dir.path().join("full");
    train(&four, &full, &["--no-tensorboard"]).code(0);
    // 10× the worst measured (2026-12-05).
    for (then, name, bounds) in [
        (None, "4 → 4", (0.0, 0.0)),
        (Some(&two), "4 → 2", (7e-7, 1.5e-7)),
        (Some(&one), "4 → 1 unsharded", (7e-7, 1.5e-7)),
        (Some(&piped), "4 → 2 × 2 stages", (7e-7, 1.2e-6)),
    ] {
        resumes_as_uninterrupted(&full, &dir.path().join(name), then, bounds);
    }
}

/// A sharded checkpoint is one file per replica beside a manifest in
/// `state.json`: no rank gathers the model or its state. `dtl export`
/// streams it into one file equal to the run's own `model.safetensors`
/// (the checkpoint is of the last step), which the plan-driven PyTorch
/// model loads with `strict=True`; an existing file is not replaced unless
/// asked; a damaged slice makes it, and a resume, take the checkpoint
/// before, saying so.
#[test]
fn a_sharded_checkpoint_is_written_per_replica_and_exports_whole() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let file = resmlp(
        dir.path(),
        "four",
        "steps = 8; checkpoint_every = 4",
        "data = 4; shard = parameters",
    );
    let out = dir.path().join("out");
    train(&file, &out, &["--no-tensorboard"]).code(0);
    let checkpoint = out.join("checkpoint");
    let text = std::fs::read_to_string(checkpoint.join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(state["shards"]["files"].as_array().unwrap().len(), 4);
    for place in 0..4 {
        let shard = checkpoint.join(format!("shard-s0-p{place}.safetensors"));
        assert!(shard.is_file(), "{} is missing", shard.display());
    }
    // Every parameter of the model is in a unit: none in rank 0's file.
    let unsharded = common::read_safetensors(&checkpoint.join("model.safetensors"));
    assert!(unsharded.is_empty(), "{:?}", unsharded.keys());

    let exported = dir.path().join("exported.safetensors");
    let export = |force: bool| {
        let mut args = vec!["export", out.to_str().unwrap(), "-o"];
        args.push(exported.to_str().unwrap());
        if force {
            args.push("--force");
        }
        dtl(&args)
    };
    export(false)
        .code(0)
        .stdout_has("24 tensors (24 from the replicas' slices) of the checkpoint of step 8");
    let (worst, at) = weights_differ(&out.join("model.safetensors"), &exported);
    assert_eq!(worst, 0.0, "the exported `{at}` is not the run's");
    let plan_json = dir.path().join("plan.json");
    let (file_arg, plan_arg) = (file.to_str().unwrap(), plan_json.to_str().unwrap());
    dtl(&["compile", file_arg, "--format", "json", "-o", plan_arg]).code(0);
    let status = std::process::Command::new(python())
        .arg(common::root().join("tests/reference/use_model.py"))
        .args(["load", plan_arg, exported.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success(), "PyTorch cannot load the exported weights");
    export(false)
        .code(2)
        .stderr_has("give --force to replace it");

    let damaged = checkpoint.join("shard-s0-p2.safetensors");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&damaged, bytes).unwrap();
    export(true)
        .code(0)
        .stderr_has("shard-s0-p2.safetensors")
        .stdout_has("of the checkpoint of step 4");
    // Resumed, rank 0 finds the damage (it alone reads every slice whole)
    // and every rank goes on from the checkpoint before, to the same end.
    let resumed = dir.path().join("resumed");
    copy_for_resume(&out, &resumed);
    let before = resumed.join("checkpoint.prev");
    std::fs::create_dir_all(&before).unwrap();
    for entry in std::fs::read_dir(out.join("checkpoint.prev")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), before.join(entry.file_name())).unwrap();
    }
    resume(&resumed)
        .code(0)
        .stderr_has("shard-s0-p2.safetensors")
        .stdout_has("resumed from the checkpoint of step 4");
    let (worst, at) = weights_differ(
        &out.join("model.safetensors"),
        &resumed.join("model.safetensors"),
    );
    assert_eq!(worst, 0.0, "resumed past a damaged slice: `{at}`");
}

/// `dtl explain`'s memory per rank is the contract for every shard mode:
/// on eight 8.4 M-parameter blocks over 2 replicas, with accumulation 2
/// and norm clipping, rank 0's peak less the fixed cost (the same run at a
/// width of 16) is within 15% of the estimate less the small run's.
/// Measured 2026-12-05: none 1.00×, `optimizer` 1.01×, `gradients` 0.99×,
/// `parameters` 0.99× at D = 2 and 1.00× at D = 4 (1.08× and 1.34× while
/// Open MPI's reduce-scatter gathered each unit on rank 0; without
/// accumulation the same to 0.01); 2026-12-06, the exchange a bucket at a
/// time with a blocking all-reduce: none 1.00×, optimizer 0.99×,
/// gradients 0.99×, parameters 1.01× (0.99× at D = 4). Before the
/// exchange bounded the buckets under way and the CPU allocator returned
/// freed blocks, `none` measured 1.37×. Unsharded with `async(staleness:
/// 1)` (no clipping: refused there) too, whose sums stay in flight across
/// steps: 1.17× before explain counted Open MPI's temporaries of the step
/// being started.
///
/// Tensor parallelism too (`tensor = 2`, each block's linears split): a
/// rank holds half of the blocks' weights, gradients and AdamW state, and
/// at the end rank 0 writes `model.safetensors` one tensor at a time, each
/// split one gathered whole just before (1.03×; 1.025× while it gathered
/// them all whole first and explain counted that, 1.63× before explain
/// did).
///
/// And what `shard = parameters` saves over `shard = gradients` is memory
/// the process no longer takes: explain predicts the peak per rank falls
/// by the whole parameters less a slice and a unit, and the whole
/// gradients less a slice and a unit's (297 MiB); rank 0's measured peak
/// falls by at least half of that (measured: 288 MiB of 297), and it holds
/// half of the parameters between steps.
#[test]
fn the_measured_peak_memory_is_explains_estimate_in_every_shard_mode() {
    let _one_at_a_time = ranks();
    let dir = tempfile::tempdir().unwrap();
    let measure = |mode: &str, data: u64, hidden: u64| {
        let file = dir.path().join(format!("{mode}-{data}-{hidden}.dtl"));
        let (layout, clip) = match mode {
            "async" => ("sync = async(staleness: 1)".to_string(), ""),
            "tensor" => ("tensor = 2".to_string(), "; clip = norm(1.0)"),
            shard => (format!("shard = {shard}"), "; clip = norm(1.0)"),
        };
        std::fs::write(
            &file,
            format!(
                r#"
module Ffn(d: int, hidden: int) {{
  forward(x: [B, d]) -> [B, d] {{
    let h = x |> linear(d, hidden) |> relu |> linear(hidden, d)
    x + h
  }}
}}
model Wide {{
  forward(x: [B, 64]) -> [B, 4] {{
    x |> linear(64, 1024) |> repeat 8 {{ Ffn(1024, {hidden}) }} |> linear(1024, 4)
  }}
}}
data blobs {{ source = synthetic(rows: 512, features: 64, classes: 4, seed: 7); valid = 0.25 }}
train {{ model = Wide; data = blobs; loss = cross_entropy; optimizer = adam(lr: 1e-4); micro_batch = 8; accumulate = 2; steps = 3{clip} }}
parallel {{ data = {data}; {layout} }}
"#
            ),
        )
        .unwrap();
        let explained = dtl(&["explain", file.to_str().unwrap(), "--format", "json"]).code(0);
        let cost: serde_json::Value = serde_json::from_str(&explained.stdout).unwrap();
        let estimate = cost["memory"]["total"].as_u64().unwrap();
        let out = dir.path().join(format!("{mode}-{data}-{hidden}"));
        // ZeRO-3 at D = 4 starts from the D = 2 run's final weights: the
        // file is read a tensor at a time as each unit is laid out.
        let init = dir
            .path()
            .join(format!("parameters-2-{hidden}/model.safetensors"));
        let mut extra = vec!["--no-tensorboard"];
        if (mode, data) == ("parameters", 4) {
            extra.extend(["--init", init.to_str().unwrap()]);
        }
        train(&file, &out, &extra).code(0);
        let summary = summary(&out);
        let peak = summary["peak_rss_bytes"].as_u64().unwrap();
        let start = summary["start_peak_rss_bytes"].as_u64().unwrap();
        let params = summary["parameter_bytes"].as_u64().unwrap();
        (estimate, peak, params, start)
    };
    let mut measured = std::collections::BTreeMap::new();
    // ZeRO-3 at 4 replicas too: there Open MPI's reduce-scatter gathered
    // every unit whole on rank 0 (1.34x) until the ring replaced it.
    let layouts = [
        ("none", 2),
        ("optimizer", 2),
        ("gradients", 2),
        ("parameters", 2),
        ("async", 2),
        ("parameters", 4),
        // Each block's linears split over 2 tensor ranks (one replica).
        ("tensor", 1),
    ];
    for (mode, data) in layouts {
        let (estimate, peak, params, start) = measure(mode, data, 4096);
        let (small_estimate, fixed, _, start_fixed) = measure(mode, data, 16);
        let ratio = peak.saturating_sub(fixed) as f64 / (estimate - small_estimate) as f64;
        eprintln!("measured: {mode} at D = {data}: (peak - fixed) / estimate = {ratio:.3}");
        assert!(
            (ratio - 1.0).abs() <= 0.15,
            "{mode} at D = {data}: rank 0 used {ratio:.3}× explain's estimate (beyond the fixed cost)"
        );
        measured.insert((mode, data), (estimate, peak, params));
        if mode == "tensor" {
            // The split parameters made whole one at a time, each rank
            // keeping its half: half of the blocks' weights and one 8.4
            // M-value block's largest weight whole, 177 MB measured;
            // whole, the weights are 269 MB.
            let beyond = start.saturating_sub(start_fixed);
            eprintln!("measured: start-up at tensor = 2: {beyond} bytes beyond the fixed cost");
            assert!(
                beyond * 10 < 4 * 67_220_484 * 8,
                "tensor = 2 held {beyond} bytes at start-up: the whole weights are {}",
                4 * 67_220_484
            );
        }
        if (mode, data) == ("parameters", 4) {
            // Laid out one unit at a time from the `--init` file: a quarter
            // of the weights (the slices), one 8.4 M-value unit and its
            // largest weight twice, about 134 MB; whole, the weights alone
            // are 269 MB.
            let beyond = start.saturating_sub(start_fixed);
            eprintln!("measured: start-up at D = 4: {beyond} bytes beyond the fixed cost");
            assert!(
                beyond * 10 < 4 * 67_220_484 * 6,
                "ZeRO-3 at D = 4 held {beyond} bytes at start-up: the whole weights are {}",
                4 * 67_220_484
            );
        }
    }
    let (zero2_estimate, zero2_peak, zero2_params) = measured[&("gradients", 2)];
    let (zero3_estimate, zero3_peak, zero3_params) = measured[&("parameters", 2)];
    let predicted = zero2_estimate - zero3_estimate;
    let saved = zero2_peak.saturating_sub(zero3_peak);
    eprintln!("shard = parameters: peak {zero2_peak} -> {zero3_peak} bytes, saved {saved} of {predicted} predicted");
    assert!(
        saved * 2 >= predicted,
        "ZeRO-3 saved {saved} bytes of peak memory over ZeRO-2; explain predicts {predicted}"
    );
    // 67,220,484 values in ten units, each halved (rounded up).
    assert_eq!(zero2_params, 4 * 67_220_484);
    assert_eq!(zero3_params, 4 * 33_610_242);
}

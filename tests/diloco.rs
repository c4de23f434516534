//! `groups` and `sync = diloco(…)` across real processes (MPI on the CPU,
//! oversubscribed): DiLoCo reduces to synchronous training where the
//! algebra says it must, and local SGD over groups averages inside every
//! step. The comparison with a hand-written PyTorch DiLoCo program is
//! tests/reference/diloco.py (`tests/reference.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::{losses_differ, step_records, train, weights_differ, within};

/// The digits MLP with plain SGD (no momentum: the identities below hold
/// for a linear inner update only), accumulation 2, no clipping (a group
/// clips its own gradients), dropout, under `parallel`.
fn experiment(dir: &Path, name: &str, parallel: &str) -> PathBuf {
    let data = common::root().join("data/digits.csv.gz");
    let text = format!(
        r#"
module Hidden(d_in: int, d_out: int) {{
  fc = linear(d_in, d_out)
  forward(x: [B, d_in]) -> [B, d_out] {{ x |> fc |> relu |> dropout(0.1) }}
}}
model Mlp {{
  forward(x: [B, 64]) -> [B, 10] {{ x |> Hidden(64, 128) |> Hidden(128, 64) |> linear(64, 10) }}
}}
data digits {{
  source = csv("{}", label: -1)
  scale = 0.0625
  valid = 0.2
}}
train {{
  model = Mlp
  data = digits
  loss = cross_entropy
  optimizer = sgd(lr: 0.1)
  micro_batch = 8
  accumulate = 2
  steps = 10
  seed = 1
}}
parallel {{ {parallel} }}
"#,
        data.display()
    );
    let path = dir.join(format!("{name}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

/// With plain SGD inside, one inner step a period and the outer step a
/// plain SGD step of rate 1, DiLoCo is synchronous training: θ_global −
/// mean(θ − lr·g_i) = lr·mean(g_i) is the outer gradient, and θ_global
/// moves by exactly that. So 2 replicas, each its own group, train as 2
/// replicas averaging every step, and so do 2 groups of 2 as 4 replicas
/// (each group averaging its 2 inside every step); local SGD of period 1
/// over groups the same. Losses (the mean over every replica) and final
/// weights, within rounding: the sums are ordered otherwise.
#[test]
fn diloco_of_one_inner_step_and_outer_rate_one_is_synchronous_training() {
    let dir = tempfile::tempdir().unwrap();
    let identity = "sync = diloco(period: 1, outer_lr: 1.0, outer_momentum: 0)";
    let cases = [
        ("2 groups of 1", format!("data = 2; {identity}"), "data = 2"),
        (
            "2 groups of 2",
            format!("data = 4; groups = 2; {identity}"),
            "data = 4",
        ),
        (
            "local SGD over 2 groups of 2",
            "data = 4; groups = 2; sync = local_sgd(period: 1)".to_string(),
            "data = 4",
        ),
    ];
    // Measured at worst (2026-12-05): losses 2.6e-8 (relative), weights
    // 4.5e-8 (2 groups of 1; 1.3e-8 and 3.7e-8 for the others): 10×.
    let bounds = [2.6e-7, 4.5e-7];
    for (what, layout, like) in cases {
        let tag = what.replace(' ', "_");
        let (grouped, sync) = (
            experiment(dir.path(), &format!("{tag}_groups"), &layout),
            experiment(dir.path(), &format!("{tag}_sync"), like),
        );
        let (out_grouped, out_sync) = (
            dir.path().join(&tag),
            dir.path().join(format!("{tag}-sync")),
        );
        train(&grouped, &out_grouped, &["--no-tensorboard"]).code(0);
        train(&sync, &out_sync, &["--no-tensorboard"]).code(0);
        assert_eq!(step_records(&out_grouped).len(), 10, "{what}");
        within(
            &format!("{what}: losses"),
            losses_differ(&out_grouped, &out_sync),
            bounds[0],
        );
        let (worst, at) = weights_differ(
            &out_grouped.join("model.safetensors"),
            &out_sync.join("model.safetensors"),
        );
        within(
            &format!("{what}: weights (at `{at}`)"),
            worst as f64,
            bounds[1],
        );
    }
}

/// The plan and explain: the groups' communicators, the inner all-reduce
/// over a group's replicas and the outer step across the groups, with the
/// bytes explain reports, which the run's count of the bytes it sent
/// across the groups matches (`summary.json`'s `across_group_bytes`).
#[test]
fn the_plan_shows_the_groups_and_explain_the_traffic_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(
        dir.path(),
        "plan",
        "data = 4; groups = 2; sync = diloco(period: 8, outer_lr: 0.7, outer_momentum: 0.9)",
    );
    let out = common::dtl(&["compile", file.to_str().unwrap(), "--format", "json"]).code(0);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let groups: Vec<(String, Vec<u64>)> = plan["topology"]["communicators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let ranks = g["ranks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap());
            (g["kind"].as_str().unwrap().to_string(), ranks.collect())
        })
        .filter(|(kind, _)| kind != "replicas")
        .collect();
    assert_eq!(
        groups,
        [
            ("group".to_string(), vec![0, 1]),
            ("group".to_string(), vec![2, 3]),
            ("across".to_string(), vec![0, 2]),
            ("across".to_string(), vec![1, 3]),
        ]
    );
    let ranks = plan["topology"]["ranks"].as_array().unwrap();
    let sync_groups: Vec<u64> = ranks
        .iter()
        .map(|r| r["sync_group"].as_u64().unwrap())
        .collect();
    assert_eq!(sync_groups, [0, 0, 1, 1]);
    let ops = plan["step_program"].as_array().unwrap();
    let op = |name: &str| ops.iter().find(|o| o["op"] == name).unwrap().clone();
    // 17,354 parameters of 4 bytes: a ring over 2 sends half.
    let params = plan["model"]["parameter_count"].as_u64().unwrap();
    assert_eq!(op("all_reduce_gradients")["bytes_per_rank"], params * 4);
    let outer = op("outer_step");
    assert_eq!(outer["every"], 8);
    assert_eq!(outer["groups"], 2);
    assert_eq!(outer["bytes_per_rank"], params * 4);
    // The run sends what the plan says: 10 steps, an outer step after
    // step 8 and after the last.
    let run = dir.path().join("run");
    train(&file, &run, &["--no-tensorboard"]).code(0);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["across_group_bytes"], 2 * params * 4);
    let explained = common::dtl(&["explain", file.to_str().unwrap()]).code(0);
    let text = &explained.stdout;
    assert!(
        text.contains("all-reduce gradients over the 2 replicas of each group (ring)"),
        "{text}"
    );
    // Every step would all-reduce over 4: 2·3/4 of the gradients, against
    // 2·1/2 of the parameters every 8 steps: 12× less.
    assert!(
        text.contains("DiLoCo's outer step every 8 steps: all-reduce parameter changes over 2 groups (ring, per step; 12× less across groups than all-reducing gradients over 4 replicas every step)"),
        "{text}"
    );
}

/// A DiLoCo checkpoint between two outer steps holds each group's own
/// replica and inner optimizer state, θ_global and the outer momentum: the
/// run resumed from it is the uninterrupted one bit for bit (2 groups of
/// 2, inner AdamW, outer Nesterov momentum, the checkpoint of step 6 in
/// the middle of the second period of 4). Streaming, with 2 fragments and
/// a delay of 1, the checkpoint of step 6 also holds fragment 0's change
/// on the wire (sent after step 6, landing after step 7). Sharded within
/// each group (`shard = optimizer` and `gradients`), group 1's inner state
/// is gathered from its replicas' slices, not taken from group 0's. A
/// checkpoint written with 2 groups does not resume with 4, and says why.
#[test]
fn a_diloco_run_resumes_in_the_middle_of_a_period_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let diloco = "sync = diloco(period: 4, outer_lr: 0.7, outer_momentum: 0.9";
    for (name, layout) in [
        ("plain", format!("data = 4; groups = 2; {diloco})")),
        (
            "zero-1",
            format!("data = 4; groups = 2; {diloco}); shard = optimizer"),
        ),
        (
            "zero-2",
            format!("data = 4; groups = 2; {diloco}); shard = gradients"),
        ),
        (
            "streaming",
            format!(
                "data = 4; groups = 2; {diloco}, fragments: 2, delay: 1, outer_precision: bf16)"
            ),
        ),
    ] {
        let file = experiment(dir.path(), name, &layout);
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("sgd(lr: 0.1)", "adamw(lr: 3e-3)")
            .replace("seed = 1", "seed = 1\n  checkpoint_every = 6");
        std::fs::write(&file, text).unwrap();
        let full = dir.path().join(format!("{name}-full"));
        train(&file, &full, &["--no-tensorboard"]).code(0);
        let checkpoint = full.join("checkpoint");
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(checkpoint.join("state.json")).unwrap())
                .unwrap();
        assert_eq!(state["step"], 6, "{name}");
        assert_eq!(
            state["groups"].as_array().unwrap().len(),
            1,
            "{name}: {state}"
        );
        // Group 1's replica is not group 0's between outer steps.
        let (apart, _) = weights_differ(
            &checkpoint.join("model.safetensors"),
            &checkpoint.join("group-1/model.safetensors"),
        );
        assert!(apart > 0.0, "{name}");
        let resumed = dir.path().join(format!("{name}-resumed"));
        common::copy_for_resume(&full, &resumed);
        common::resume(&resumed)
            .code(0)
            .stdout_has("resumed from the checkpoint of step 6");
        assert_eq!(losses_differ(&full, &resumed), 0.0, "{name}");
        let (worst, at) = weights_differ(
            &full.join("model.safetensors"),
            &resumed.join("model.safetensors"),
        );
        assert_eq!(worst, 0.0, "{name}: the resumed run differs at `{at}`");
        if name != "plain" {
            continue;
        }
        // Another number of groups.
        let four = dir.path().join("four.dtl");
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("groups = 2", "groups = 4");
        std::fs::write(&four, text).unwrap();
        let other = dir.path().join("other");
        common::copy_for_resume(&full, &other);
        let refused = common::dtl(&[
            "run",
            four.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--resume",
            other.to_str().unwrap(),
        ]);
        assert_ne!(refused.code, 0, "{}", refused.stderr);
        refused.stderr_has("holds the state of 2 DiLoCo group(s), this run has 4");
    }
}

/// Groups compose with pipeline stages and tensor parallelism: DiLoCo's
/// outer step (and local SGD's average) runs per stage, and per tensor
/// rank, over the groups' ranks there. 2 groups of a 2-stage pipeline,
/// and of a replica split over 2 tensor ranks, train as the same groups on
/// one whole stage (no dropout: its masks are drawn per pipeline piece and
/// per tensor rank).
#[test]
fn groups_compose_with_pipeline_stages_and_tensor_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let diloco = "sync = diloco(period: 3, outer_lr: 0.7, outer_momentum: 0.9)";
    let local_sgd = "sync = local_sgd(period: 3)";
    let cases = [
        (
            "DiLoCo over 2 pipelines",
            format!("data = 2; pipeline = 2; micro_batches = 2; {diloco}"),
            format!("data = 2; {diloco}"),
        ),
        (
            "DiLoCo over tensor pairs",
            format!("data = 2; tensor = 2; {diloco}"),
            format!("data = 2; {diloco}"),
        ),
        (
            "local SGD over 2 pipelines",
            format!("data = 2; pipeline = 2; {local_sgd}"),
            format!("data = 2; {local_sgd}"),
        ),
    ];
    // Measured at worst (2026-12-05): losses 7.1e-8, weights 1.1e-5 (DiLoCo
    // over pipelines and over tensor pairs alike: the micro-batches' and
    // the split matmuls' sums are ordered otherwise, and AdamW inside and
    // the outer momentum carry the rounding on; local SGD 8.4e-8): 10×.
    let bounds = [7.1e-7, 1.1e-4];
    for (what, layout, like) in cases {
        let tag = what.replace(' ', "_");
        let without_dropout = |name: &str, parallel: &str| {
            let path = experiment(dir.path(), name, parallel);
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace(" |> dropout(0.1)", "")
                .replace("sgd(lr: 0.1)", "adamw(lr: 3e-3)");
            std::fs::write(&path, text).unwrap();
            path
        };
        let (split, whole) = (
            without_dropout(&format!("{tag}_split"), &layout),
            without_dropout(&format!("{tag}_whole"), &like),
        );
        let (out_split, out_whole) = (
            dir.path().join(&tag),
            dir.path().join(format!("{tag}-whole")),
        );
        train(&split, &out_split, &["--no-tensorboard"]).code(0);
        train(&whole, &out_whole, &["--no-tensorboard"]).code(0);
        within(
            &format!("{what}: losses"),
            losses_differ(&out_split, &out_whole),
            bounds[0],
        );
        let (worst, at) = weights_differ(
            &out_split.join("model.safetensors"),
            &out_whole.join("model.safetensors"),
        );
        within(
            &format!("{what}: weights (at `{at}`)"),
            worst as f64,
            bounds[1],
        );
    }
}

/// `--link` (a testing aid) holds back every collective that crosses
/// sites, and changes nothing it carries: 2 replicas at 2 sites averaging
/// every step over a link of 1 MB/s and 20 ms train the same losses bit
/// for bit, and each step's gradient all-reduce (17,354 values: 69,416
/// bytes each way at 2 ranks) takes at least 2 × 20 ms + 69 ms. A link
/// between groups of a plan without groups, and a bandwidth without its
/// unit, are refused before anything starts.
#[test]
fn a_slow_link_holds_back_the_collectives_that_cross_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(dir.path(), "link", "data = 2");
    let (fast, slow) = (dir.path().join("fast"), dir.path().join("slow"));
    train(&file, &fast, &["--no-tensorboard"]).code(0);
    let link = "sites=2: 1 MB/s, 20 ms";
    train(&file, &slow, &["--no-tensorboard", "--link", link]).code(0);
    assert_eq!(losses_differ(&fast, &slow), 0.0);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(slow.join("summary.json")).unwrap()).unwrap();
    let seconds = summary["train_seconds"].as_f64().unwrap();
    let least = 10.0 * (2.0 * 0.020 + 69_416.0 / 1e6);
    assert!(
        seconds >= least,
        "{seconds} s for 10 steps, less than the link's {least} s"
    );
    for (spec, says) in [
        ("groups: 1 MB/s, 20 ms", "the plan has no `groups`"),
        ("sites=2: 1 MB, 20 ms", "not a unit of bandwidth"),
    ] {
        let out = dir.path().join("refused");
        train(&file, &out, &["--link", spec])
            .code(2)
            .stderr_has(says);
        assert!(!out.join("metrics.jsonl").exists(), "{spec}");
    }
}

//! `tensor = T` across real processes (MPI on the CPU, oversubscribed):
//! the examples split Megatron-style train as one process does, up to the
//! order of the sums of the split layers, dropout masks included; the
//! files hold the whole weights by name; the all-reduces the ranks issue
//! are the plan's.

mod common;

use std::path::{Path, PathBuf};

use common::{
    checkpoints_differ, losses_differ, step_records, train, weights_differ_outside_key_bias, within,
};

/// An example with its data found from anywhere, `steps` steps, and
/// `parallel` as its parallel block (none when empty); `extra` settings
/// appended to its train block.
fn example(dir: &Path, name: &str, steps: u64, extra: &str, parallel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join(format!("examples/{name}.dtl")))
        .unwrap()
        .replace("\"../data/", &format!("\"{}/", root.join("data").display()));
    let steps_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("steps ="))
        .unwrap()
        .to_string();
    text = text.replace(&steps_line, "");
    let settings = extra
        .split(';')
        .filter_map(|s| s.split('=').next())
        .filter(|k| !k.trim().is_empty());
    for setting in settings.map(str::trim).chain(["eval_every"]) {
        if let Some(line) = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{setting} =")))
            .map(str::to_string)
        {
            text = text.replace(&line, "");
        }
    }
    let train = text.find("train {").unwrap() + "train {".len();
    text.insert_str(train, &format!("\n  steps = {steps}; {extra}"));
    if !parallel.is_empty() {
        text.push_str(&format!("\nparallel {{ {parallel} }}\n"));
    }
    // One file per layout and settings: a later case must not overwrite
    // an earlier one's file, which the checks after the loop reuse.
    let tag = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (steps, extra, parallel).hash(&mut hasher);
        hasher.finish()
    };
    let path = dir.join(format!("{name}-{tag:016x}.dtl"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The all-reduces rank 0 issues by the plan for `file` in `steps` steps
/// of `accumulate` micro-batches: those of the step program whose split
/// layer stage 0 holds, once per pipeline piece of every micro-batch (once
/// a step for shared key/value heads' gradients).
fn planned_all_reduces(file: &Path, steps: u64, accumulate: u64) -> u64 {
    planned(file, steps, accumulate, "all_reduce")
}

/// [`planned_all_reduces`] for the collective `op` (`all_reduce`,
/// `all_gather`, `reduce_scatter`).
fn planned(file: &Path, steps: u64, accumulate: u64, op: &str) -> u64 {
    let out = common::dtl(&["compile", file.to_str().unwrap(), "--format", "json"]).code(0);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let topology = &plan["topology"];
    let stage = &topology["stages"][0];
    let (first, last) = (
        stage["first_node"].as_u64().unwrap(),
        stage["last_node"].as_u64().unwrap(),
    );
    let nodes = plan["model"]["nodes"].as_array().unwrap();
    let in_stage = |name: &str| {
        let i = nodes.iter().position(|n| n["name"] == name).unwrap() as u64;
        (first..=last).contains(&i)
    };
    let pieces = topology["parallelism"]["micro_batches"].as_u64().unwrap();
    plan["step_program"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["op"] == "tensor_all_reduces")
        .map_or(0, |step| {
            let collectives = step["collectives"].as_array().unwrap();
            let mine = |update: bool| {
                collectives
                    .iter()
                    .filter(|c| c["op"].as_str().unwrap_or("all_reduce") == op)
                    .filter(|c| in_stage(c["layers"][0].as_str().unwrap()))
                    .filter(|c| (c["pass"] == "update") == update)
                    .count() as u64
            };
            mine(false) * pieces * accumulate * steps + mine(true) * steps
        })
}

/// Each example, split over 2 tensor ranks (and 4; over 2 replicas × 2
/// tensor ranks, 2 tensor ranks × 2 pipeline stages, and 2 × 2 × 2),
/// trains as the same file in one process (or as plain data parallelism,
/// or the same stages unsplit): the character models' embeddings and
/// output layers split by vocabulary (the GPT's tied, the loss computed
/// from the sharded scores, with label smoothing too), the LLaMA's 2
/// key/value heads shared by 2 of 4 ranks each. Losses, the final weights
/// (gathered whole, by PyTorch's names) and a checkpoint's weights and
/// AdamW state, with
/// accumulation, norm clipping and dropout (the digits MLP drops out both
/// inside its split pair, where each rank keeps its part of one mask, and
/// after it, where every rank draws the same); in bf16 and fp16 (loss
/// scaling); the digits CNN with batch norm synchronised over 2 replicas
/// × 2 tensor ranks. The all-reduces rank 0
/// issued are the plan's, for every micro-batch of every step. An `init`
/// file loads split as whole; a checkpoint resumes split from a whole
/// run's and whole from a split run's.
#[test]
fn tensor_parallel_runs_train_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let clip = "accumulate = 2; clip = norm(1.0); checkpoint_every = 3";
    // Attention under Adam: an element whose gradient is rounding (near
    // zero) steps by up to the learning rate either way, so two orders of
    // the same sums end 1e-5 apart there (measured on the transformer);
    // under SGD with momentum the weights agree to 6e-8. The attention
    // models train with SGD here, the MLP with its Adam.
    let sgd = "optimizer = sgd(lr: 0.05, momentum: 0.9)";
    // The character models warm up over 20 steps: fewer here.
    let llama = format!("{sgd}; warmup = 1; ema = 0.9");
    let smoothing = format!("{sgd}; warmup = 1; loss = cross_entropy(label_smoothing: 0.1)");
    let bf16_sgd = format!("{sgd}; precision = bf16");
    let fp16_sgd = format!("{sgd}; precision = fp16");
    // Recomputed blocks sum their split layers' parts again in backward.
    let recompute = format!("{sgd}; recompute = blocks");
    // (example, steps, extra train settings, layout, the layout it equals,
    // each trained by its own file.
    let cases = [
        ("digits_mlp", 6, "", "tensor = 2", ""),
        ("digits_transformer", 6, sgd, "tensor = 2", ""),
        ("moby_llama", 4, llama.as_str(), "tensor = 2", ""),
        ("moby_gpt", 4, llama.as_str(), "tensor = 2", ""),
        ("digits_mlp", 6, "", "data = 2; tensor = 2", "data = 2"),
        // 4 ways: the transformer's heads; the llama's 2 key/value heads
        // each shared by 2 ranks (their gradient summed once a step).
        ("digits_transformer", 6, sgd, "tensor = 4", ""),
        ("moby_llama", 4, llama.as_str(), "tensor = 4", ""),
        // 2 replicas × 2 tensor ranks × 2 stages: 8 processes.
        (
            "digits_mlp",
            6,
            "",
            r#"data = 2; tensor = 2; pipeline = 2; split = ["1"]; micro_batches = 2"#,
            r#"data = 2; pipeline = 2; split = ["1"]; micro_batches = 2"#,
        ),
        ("digits_mlp", 6, bf16_sgd.as_str(), "tensor = 2", ""),
        // fp16's loss scaling: the overflow check agreed over every rank.
        ("digits_mlp", 6, fp16_sgd.as_str(), "tensor = 2", ""),
        // Synchronised batch norm over the replicas of each tensor rank
        // (the norms whole; the output layer split by vocabulary). Under
        // SGD: the convolutions' biases before batch norm have no
        // gradient but rounding, which Adam would turn into steps.
        (
            "digits_cnn",
            6,
            sgd,
            "data = 2; tensor = 2; batch_norm = sync",
            "data = 2; batch_norm = sync",
        ),
        // The cut between the stages falls inside the split pair: the
        // sharded value crosses as each tensor rank's part. Against the
        // same stages unsplit (a stage draws its own dropout masks, per
        // piece).
        (
            "digits_mlp",
            6,
            "",
            r#"tensor = 2; pipeline = 2; split = ["1"]; micro_batches = 2"#,
            r#"pipeline = 2; split = ["1"]; micro_batches = 2"#,
        ),
        (
            "digits_transformer",
            6,
            sgd,
            r#"tensor = 2; pipeline = 2; split = ["2.1"]; micro_batches = 2"#,
            r#"pipeline = 2; split = ["2.1"]; micro_batches = 2"#,
        ),
        // The loss from scores split by vocabulary, with label smoothing.
        ("moby_gpt", 4, smoothing.as_str(), "tensor = 2", ""),
        // The user's split: the first block whole, the second's linear
        // column-parallel and the output layer row-parallel.
        (
            "digits_mlp",
            6,
            "",
            r#"tensor = 2; tensor_split = [replicate("0"), column("1.fc"), row("2")]"#,
            "",
        ),
        (
            "digits_transformer",
            6,
            recompute.as_str(),
            "tensor = 2",
            "",
        ),
    ];
    // Measured at worst (2026-12-05): losses 1.6e-7 (relative), weights
    // and the checkpoints' weights and state 3.5e-7 (the MLP under Adam,
    // its output layer split by vocabulary, 2 × 2 data × tensor; 2.4e-7
    // on the GPT's tied embedding's momentum with label smoothing, 6e-8
    // elsewhere).
    let fp32 = [1.6e-6, 3.4e-6, 3.4e-6];
    // bf16 multiplies each split layer's part in bfloat16 and sums the
    // parts in float32, where one process rounds the whole product once:
    // 10× the worst measured (1.1e-5, 5.3e-4, and 3.0e-3 on a momentum
    // buffer).
    let bf16 = [1.2e-4, 5.4e-3, 3.1e-2];
    // fp16 likewise, each part rounded to half precision: 10× the worst
    // measured (2026-12-06: 3.6e-6, 1.2e-4, and 1.1e-3 on a momentum
    // buffer).
    let fp16 = [3.6e-5, 1.3e-3, 1.1e-2];
    let mut runs = Vec::new();
    for (name, steps, settings, layout, like) in cases {
        let bounds = if settings.contains("bf16") {
            bf16
        } else if settings.contains("fp16") {
            fp16
        } else {
            fp32
        };
        let settings = format!("{clip}; {settings}");
        let split = example(dir.path(), name, steps, &settings, layout);
        let whole = example(dir.path(), name, steps, &settings, like);
        let what = format!("{name}, {layout} {settings}").trim().to_string();
        let (out_split, out_whole) =
            split_trains_as_whole(dir.path(), &what, (&split, &whole), bounds);
        runs.push((split, whole, out_split, out_whole));
    }
    // An `init` file is read a tensor at a time, each rank keeping its
    // part: the split MLP from the whole run's final weights trains as one
    // process from them.
    let (split, whole, _, out_whole) = &runs[0];
    let init = out_whole.join("model.safetensors");
    let (from_split, from_whole) = (dir.path().join("init split"), dir.path().join("init whole"));
    for (file, out) in [(split, &from_split), (whole, &from_whole)] {
        train(
            file,
            out,
            &["--no-tensorboard", "--init", init.to_str().unwrap()],
        )
        .code(0);
    }
    within(
        "init: losses",
        losses_differ(&from_split, &from_whole),
        fp32[0],
    );
    let (worst, at) = weights_differ_outside_key_bias(
        &from_split.join("model.safetensors"),
        &from_whole.join("model.safetensors"),
    );
    within(&format!("init: weights (at `{at}`)"), worst as f64, fp32[1]);
    // The checkpoints hold whole tensors by name: the llama's of step 3
    // resumes split from one process's, and whole from the split run's,
    // each ending as its uninterrupted run.
    let (split, whole, out_split, out_whole) = &runs[2];
    assert!(split.to_string_lossy().contains("moby_llama"));
    for (file, from, like, name) in [
        (split, out_whole, out_split, "tensor = 2 from one process"),
        (whole, out_split, out_whole, "one process from tensor = 2"),
    ] {
        let resumed = dir.path().join(format!("resumed {name}"));
        common::copy_for_resume(from, &resumed);
        common::dtl(&[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--device",
            "cpu",
            "--no-tensorboard",
            "--resume",
            resumed.to_str().unwrap(),
        ])
        .code(0)
        .stdout_has("resumed from the checkpoint of step 3");
        within(
            &format!("resume {name}: losses"),
            losses_differ(like, &resumed),
            fp32[0],
        );
        let (worst, at) = weights_differ_outside_key_bias(
            &like.join("model.safetensors"),
            &resumed.join("model.safetensors"),
        );
        within(
            &format!("resume {name}: weights (at `{at}`)"),
            worst as f64,
            fp32[1],
        );
        // The checkpoint's average, whole, resumed split and back.
        let (worst, at) = weights_differ_outside_key_bias(
            &like.join("model_ema.safetensors"),
            &resumed.join("model_ema.safetensors"),
        );
        within(
            &format!("resume {name}: ema (at `{at}`)"),
            worst as f64,
            fp32[1],
        );
    }
}

/// `sequence = true` (Megatron-LM's sequence parallelism): the norms,
/// residuals, dropout and position embeddings of each example run on each
/// tensor rank's part of the sequence, the split layers' sums
/// reduce-scattered and their inputs all-gathered, and the runs train as
/// the same file in one process (or as plain data parallelism): the
/// LLaMA at 2 and 4 tensor ranks (its key/value heads shared at 4), the
/// GPT with dropout after its embeddings, inside its MLPs and after its
/// attention (each rank keeping its part of one process's masks), and
/// with its tied embedding kept whole (cut to each rank's part where the
/// residual stream enters the region), the LLaMA with its embedding and
/// first norms frozen, the digits transformer with its first block
/// frozen and recomputed, the
/// digits transformer at 4, at 2 replicas × 2 tensor ranks and with its
/// blocks recomputed, the LLaMA cut into 2 pipeline stages × 2 tensor
/// ranks (against the same stages unsplit). The all-reduces, all-gathers
/// and reduce-scatters rank 0 issued are the plan's.
#[test]
fn sequence_parallel_runs_train_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let clip = "accumulate = 2; clip = norm(1.0); checkpoint_every = 3";
    let sgd = "optimizer = sgd(lr: 0.05, momentum: 0.9)";
    let llama = format!("{sgd}; warmup = 1; ema = 0.9");
    // Its own seed: the file differs from the GPT's without dropout.
    let dropout = format!("{sgd}; warmup = 1; seed = 7");
    let gpt = format!("{sgd}; warmup = 1");
    let frozen = format!(r#"{sgd}; warmup = 1; freeze = ["0.*", "1.0.*_norm.*"]"#);
    let frozen_block = format!(r#"{sgd}; recompute = blocks; freeze = ["0.*", "1.*", "2.0.*"]"#);
    let recompute = format!("{sgd}; recompute = blocks");
    let cases = [
        (
            "moby_llama",
            4,
            llama.as_str(),
            "tensor = 2; sequence = true",
            "",
        ),
        (
            "moby_llama",
            4,
            llama.as_str(),
            "tensor = 4; sequence = true",
            "",
        ),
        (
            "moby_gpt",
            4,
            dropout.as_str(),
            "tensor = 2; sequence = true",
            "",
        ),
        // The tied embedding whole: the first block's norm and attention
        // read it whole, and the residual addition cuts it to each rank's
        // part (its gradient all-gathered in backward).
        (
            "moby_gpt",
            4,
            gpt.as_str(),
            r#"tensor = 2; sequence = true; tensor_split = [replicate("wte")]"#,
            "",
        ),
        // The embedding and the first block's norms frozen: no gradient
        // to sum or gather below the first trained layer.
        (
            "moby_llama",
            4,
            frozen.as_str(),
            "tensor = 2; sequence = true",
            "",
        ),
        (
            "digits_transformer",
            6,
            sgd,
            "tensor = 4; sequence = true",
            "",
        ),
        (
            "digits_transformer",
            6,
            sgd,
            "data = 2; tensor = 2; sequence = true",
            "data = 2",
        ),
        // Recomputed blocks reduce-scatter their sums again in backward.
        (
            "digits_transformer",
            6,
            recompute.as_str(),
            "tensor = 2; sequence = true",
            "",
        ),
        // The first block and what feeds it frozen: it has no gradient,
        // and is not run again.
        (
            "digits_transformer",
            6,
            frozen_block.as_str(),
            "tensor = 2; sequence = true",
            "",
        ),
        // The second stage starts at the first attention: the residual
        // stream and the norm's output cross as each tensor rank's part of
        // the sequence, and the attention gathers the latter.
        (
            "moby_llama",
            4,
            llama.as_str(),
            r#"tensor = 2; pipeline = 2; split = ["1.0.self_attn"]; micro_batches = 2; sequence = true"#,
            r#"pipeline = 2; split = ["1.0.self_attn"]; micro_batches = 2"#,
        ),
    ];
    // Measured at worst (2026-12-06): losses 1.0e-7 (relative, the digits
    // transformer recomputed), weights 3.0e-8 (the digits transformer),
    // the checkpoints 1.2e-7 (the GPT's embedding's momentum); the test
    // holds 10×.
    let bounds = [1.0e-6, 3.0e-7, 1.2e-6];
    for (name, steps, settings, layout, like) in cases {
        let settings = format!("{clip}; {settings}");
        let split = example(dir.path(), name, steps, &settings, layout);
        let whole = example(dir.path(), name, steps, &settings, like);
        if settings.contains("seed = 7") {
            for file in [&split, &whole] {
                let text = std::fs::read_to_string(file).unwrap();
                let edited = text
                    .replace("|> wte |> wpe", "|> wte |> wpe |> dropout(0.1)")
                    .replace("|> gelu |> c_proj", "|> gelu |> dropout(0.1) |> c_proj")
                    .replace("|> ln_1 |> attn)", "|> ln_1 |> attn |> dropout(0.1))");
                assert_eq!(edited.matches("dropout").count(), 3, "{name}");
                std::fs::write(file, edited).unwrap();
            }
        }
        let what = format!("{name}, {layout} {settings}").trim().to_string();
        let (out_split, _) = split_trains_as_whole(dir.path(), &what, (&split, &whole), bounds);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_split.join("summary.json")).unwrap())
                .unwrap();
        assert!(
            summary["tensor_reduce_scatters"].as_u64().unwrap() > 0,
            "{what}: nothing was reduce-scattered"
        );
    }
}

/// What `sequence = true` saves is memory the ranks no longer take: two
/// pre-norm blocks over a sequence of 1024, 512 wide, at T = 4 (each
/// rank's part of a value 4 MiB, held in mappings of its own as the
/// whole values are), without held-out rows (evaluation runs whole).
/// Explain predicts each rank's activations fall by three quarters of the
/// residual stream's and the norms' (the split layers' gathered inputs
/// stay whole): 322 to 234 MiB. Rank 0's measured peak falls by at least
/// half of that prediction and at most twice it (measured 2026-12-06:
/// 105 MiB of 88 predicted).
#[test]
fn sequence_parallelism_lowers_the_measured_peak_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = dir.path().join("long.dtl");
    let text = r#"
module Block(d: int) {
  norm1 = layer_norm(d)
  norm2 = layer_norm(d)
  forward(x: [B, T, d]) -> [B, T, d] {
    let a = x + (x |> norm1 |> attention(d, 4, causal: true))
    a + (a |> norm2 |> linear(d, 4 * d) |> gelu |> linear(4 * d, d))
  }
}
model Lm {
  wte = embedding(256, 512)
  forward(x: [B, 1024]) -> [B, 1024, 256] {
    x |> wte |> repeat 2 { Block(512) } |> layer_norm(512) |> tied(wte)
  }
}
data book { source = tokens("DATA/moby_dick_1-5.u16.bin", context: 1024, dtype: "uint16"); valid = 0 }
train { model = Lm; data = book; loss = cross_entropy; optimizer = sgd(lr: 0.01); micro_batch = 8; steps = 3 }
parallel { tensor = 4 }
"#
    .replace("DATA", &root.join("data").display().to_string());
    std::fs::write(&file, text).unwrap();
    let measure = |sequence: &str| {
        let setting = format!("parallel.sequence={sequence}");
        let explained = common::dtl(&[
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
        let out = dir.path().join(sequence);
        train(&file, &out, &["--set", &setting, "--no-tensorboard"]).code(0);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        (estimate, summary["peak_rss_bytes"].as_u64().unwrap())
    };
    let (whole_estimate, whole_peak) = measure("false");
    let (parts_estimate, parts_peak) = measure("true");
    let predicted = whole_estimate.saturating_sub(parts_estimate);
    let measured = whole_peak.saturating_sub(parts_peak);
    eprintln!(
        "measured: sequence = true: peak {whole_peak} -> {parts_peak} bytes, saved {measured} of {predicted} predicted"
    );
    assert!(predicted > 0, "explain predicts no saving");
    assert!(
        measured * 2 >= predicted && measured <= predicted * 2,
        "sequence parallelism saved {measured} bytes of peak memory; explain predicts {predicted}"
    );
}

/// `split` (a tensor-parallel layout) trains as `whole` (the same file in
/// one process, or the layout it equals) within `bounds` (losses,
/// weights, checkpoint): the final weights (gathered whole, by PyTorch's
/// names), `ema`'s average and a checkpoint's weights and optimizer
/// state; the collectives rank 0 issued are the plan's, for every
/// micro-batch of every step. Returns the two runs' folders.
fn split_trains_as_whole(
    dir: &Path,
    what: &str,
    (split, whole): (&Path, &Path),
    bounds: [f64; 3],
) -> (PathBuf, PathBuf) {
    let (out_split, out_whole) = (
        dir.join(format!("{what} split")),
        dir.join(format!("{what} whole")),
    );
    train(split, &out_split, &["--no-tensorboard", "--trace"]).code(0);
    train(whole, &out_whole, &["--no-tensorboard"]).code(0);
    within(
        &format!("{what}: losses"),
        losses_differ(&out_split, &out_whole),
        bounds[0],
    );
    // Attention's key bias has no gradient but rounding, which AdamW
    // turns into steps (see `weights_differ_outside_key_bias`).
    let (worst, at) = weights_differ_outside_key_bias(
        &out_split.join("model.safetensors"),
        &out_whole.join("model.safetensors"),
    );
    within(
        &format!("{what}: weights (at `{at}`)"),
        worst as f64,
        bounds[1],
    );
    // `ema`'s average, gathered whole as the weights are.
    if out_whole.join("model_ema.safetensors").exists() {
        let (worst, at) = weights_differ_outside_key_bias(
            &out_split.join("model_ema.safetensors"),
            &out_whole.join("model_ema.safetensors"),
        );
        within(&format!("{what}: ema (at `{at}`)"), worst as f64, bounds[1]);
    }
    let (worst, at) = checkpoints_differ(&out_split, &out_whole, |name| {
        !name.contains("in_proj_bias")
    });
    within(
        &format!("{what}: checkpoint (at `{at}`)"),
        worst as f64,
        bounds[2],
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_split.join("summary.json")).unwrap())
            .unwrap();
    let issued = summary["tensor_all_reduces"].as_u64().unwrap();
    let steps = step_records(&out_split).len() as u64;
    assert_eq!(
        issued,
        planned_all_reduces(split, steps, 2),
        "{what}: all-reduces issued"
    );
    // And step by step, in rank 0's trace.
    let trace = std::fs::read_to_string(out_split.join("rank-0.trace.jsonl")).unwrap();
    let per_step: Vec<u64> = trace
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["tensor_all_reduces"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        per_step,
        vec![planned_all_reduces(split, 1, 2); steps as usize],
        "{what}: all-reduces in the trace"
    );
    // Under `sequence = true`: the all-gathers and reduce-scatters over
    // the sequence too.
    for (key, op) in [
        ("tensor_all_gathers", "all_gather"),
        ("tensor_reduce_scatters", "reduce_scatter"),
    ] {
        let planned = planned(split, steps, 2, op);
        let issued = summary[key].as_u64().unwrap_or(0);
        assert_eq!(issued, planned, "{what}: {key} issued");
    }
    (out_split, out_whole)
}

/// What the runtime does not run split yet is refused by the checker,
/// before anything starts, by name: tensor parallelism with `shard =
/// parameters`.
#[test]
fn layouts_the_runtime_does_not_split_yet_are_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let layout = "data = 2; tensor = 2; shard = parameters";
    let file = example(dir.path(), "digits_mlp", 2, "", layout);
    let out = dir.path().join("refused");
    train(&file, &out, &[])
        .code(1)
        .stderr_has("tensor parallelism with `shard = parameters` is not done yet");
    assert!(!out.join("metrics.jsonl").exists(), "{layout}");
}

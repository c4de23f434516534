//! The files that hold the whole model (`model.safetensors`, a
//! checkpoint's weights and optimizer state) are written by rank 0 one
//! tensor at a time, each made whole (gathered over its tensor group,
//! sent from its stage) just before it is written: a model split because
//! it does not fit one rank is never whole in one rank's memory.

mod common;

use std::path::Path;

use common::train;

/// A 4-layer MLP of two 2048 × 2048 layers (16 MiB each, 33 MiB of
/// weights, 66 MiB of AdamW's moments, 33 MiB of `ema`'s average) at
/// `tensor = 2`, checkpointed twice in 4 steps against the same run
/// without checkpoints. Measured 2026-12-06: gathering the whole model,
/// state and average on rank 0 before writing, the checkpoints added
/// 96.7 MiB to its peak; written tensor by tensor, 2.1 MiB (the writing
/// holds about twice the largest split tensor, below the step's peak).
/// The test holds the checkpoints to less than one whole 16 MiB tensor,
/// and the files to the same run and weights as without them.
#[test]
fn a_split_model_is_written_without_being_whole_on_one_rank() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = dir.path().join("wide.dtl");
    let text = r#"
model Wide {
  forward(x: [B, 64]) -> [B, 10] {
    x |> linear(64, 2048) |> relu |> linear(2048, 2048) |> relu
      |> linear(2048, 2048) |> relu |> linear(2048, 10)
  }
}
data digits { source = csv("DATA", label: -1); scale = 0.0625; valid = 0 }
train {
  model = Wide; data = digits; loss = cross_entropy
  optimizer = adamw(lr: 1e-4); micro_batch = 16; steps = 4; ema = 0.9
}
parallel { tensor = 2 }
"#
    .replace(
        "DATA",
        &root.join("data/digits.csv.gz").display().to_string(),
    );
    std::fs::write(&file, text).unwrap();
    let peak = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["--no-tensorboard"];
        args.extend(extra);
        train(&file, &out, &args).code(0);
        let summary = common::summary(&out);
        summary["peak_rss_bytes"].as_u64().unwrap()
    };
    let without = peak("without", &[]);
    let with = peak("with", &["--set", "train.checkpoint_every=2"]);
    let added = with.saturating_sub(without);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "measured: checkpoints add {:.1} MiB to rank 0's peak ({:.1} -> {:.1} MiB)",
        mib(added),
        mib(without),
        mib(with)
    );
    // One whole 2048 × 2048 tensor is 16 MiB.
    assert!(
        mib(added) < 16.0,
        "checkpoints added {:.1} MiB to rank 0's peak memory",
        mib(added)
    );
    // The same run either way, and the checkpoint (of the last step) holds
    // the final weights, whole, and their optimizer state.
    let (a, b) = (dir.path().join("without"), dir.path().join("with"));
    assert_eq!(common::losses_differ(&a, &b), 0.0);
    let (diff, at) =
        common::weights_differ(&a.join("model.safetensors"), &b.join("model.safetensors"));
    assert_eq!(diff, 0.0, "weights differ at {at}");
    let saved = common::checkpoint_tensors(&b);
    let weights = common::read_safetensors(&b.join("model.safetensors"));
    for (name, values) in &weights {
        assert_eq!(&saved[name], values, "{name}");
    }
    assert_eq!(saved["2.weight"].len(), 2048 * 2048);
    assert_eq!(saved["2.weight.first"].len(), 2048 * 2048);
    assert_eq!(saved["4.weight.second"].len(), 2048 * 2048);
    let average = common::read_safetensors(&b.join("model_ema.safetensors"));
    assert_eq!(saved["ema.2.weight"], average["2.weight"]);
}

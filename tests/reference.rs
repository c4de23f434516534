//! dtl against PyTorch itself: the same network (built from torch.nn modules
//! whose state_dict names are the plan's parameter names), the same initial
//! weights (PyTorch's, handed to dtl as safetensors) and the same data order
//! must give the same loss at every step over 50 steps of AdamW with
//! accumulation 2, global-norm clipping and a warm-up + cosine schedule
//! (PyTorch's own LinearLR, SequentialLR and CosineAnnealingLR): each
//! example to its own bound, 10× the worst relative difference measured on
//! 2026-12-04, 0 where it was bitwise (the MLP, the CNN, SwiGLU).
//!
//! The reference is tests/reference/torch_reference.py, run with the
//! project's virtualenv.

mod common;

use common::{python, root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file (relative to the repository) with its training settings replaced
/// for the comparison; the model and data stay.
fn variant(file: &str, dir: &Path, train: &str) -> PathBuf {
    let source = root().join(file);
    let folder = source.parent().unwrap().display().to_string();
    let text = std::fs::read_to_string(&source).unwrap();
    // Data paths are relative to the file; the variant lives elsewhere.
    let text = text.replace("(\"../", &format!("(\"{folder}/../")).replace(
        "(\"regression.csv\"",
        &format!("(\"{folder}/regression.csv\""),
    );
    let train_start = text.find("\ntrain {").expect("the file has a train block");
    let setting = |key: &str| {
        text[text[train_start..].find(key).unwrap() + train_start..]
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let text = format!(
        "{}\ntrain {{\n  {}\n  {}\n{train}\n}}\n",
        &text[..train_start],
        setting("model = "),
        setting("data = ")
    );
    let path = dir.join(Path::new(file).file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

fn losses_from_metrics(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("loss").and_then(|l| l.as_f64()))
        .collect()
}

fn compare_with_pytorch(example: &str, train: &str, bound: f64) {
    compare_with_pytorch_after(example, train, bound, |_| {});
}

/// `compare_with_pytorch`, with `prepare` first writing into the variant's
/// folder the files it reads.
fn compare_with_pytorch_after(example: &str, train: &str, bound: f64, prepare: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let source = variant(example, dir.path(), train);
    let text = std::fs::read_to_string(&source).unwrap();
    let plan =
        dtl_compiler::compile_source(example, &text, &dtl_compiler::options_for(&source, true))
            .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_json()).unwrap();
    let (init, reference) = (
        dir.path().join("init.safetensors"),
        dir.path().join("torch.json"),
    );

    let status = Command::new(python())
        .arg(root().join("tests/reference/torch_reference.py"))
        .args([&plan_path, &init, &reference])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the PyTorch reference failed for {example}"
    );
    let out = dir.path().join("dtl");
    let status = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["run", "--quiet", "--device", "cpu", "--init"])
        .arg(&init)
        .arg("--out")
        .arg(&out)
        .arg(&plan_path)
        .status()
        .unwrap();
    assert!(status.success(), "dtl failed for {example}");
    // The weights dtl saves load into the PyTorch model, strictly.
    let status = Command::new(python())
        .arg(root().join("tests/reference/torch_reference.py"))
        .arg("--load")
        .arg(&plan_path)
        .arg(out.join("model.safetensors"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{example}: dtl's model.safetensors does not load into PyTorch strictly"
    );

    // `ema`: the average dtl saves is AveragedModel's.
    let averaged = PathBuf::from(format!("{}.ema.safetensors", reference.display()));
    if plan.train.tracking.ema.is_some() {
        let (worst, name) = common::weights_differ(&averaged, &out.join("model_ema.safetensors"));
        common::within(
            &format!("{example}: model_ema.safetensors vs AveragedModel (worst `{name}`)"),
            worst as f64,
            bound,
        );
    }
    let ours = losses_from_metrics(&out.join("metrics.jsonl"));
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    // The parameter count `dtl explain` shows is PyTorch's.
    assert_eq!(
        reference["parameters"].as_u64(),
        Some(plan.model.parameter_count),
        "{example}: parameter count"
    );
    let per_layer: u64 = dtl_compiler::tools::explain::cost(&plan)
        .layers
        .iter()
        .map(|l| l.parameters)
        .sum();
    assert_eq!(
        per_layer, plan.model.parameter_count,
        "{example}: per-layer parameters must add up"
    );
    let theirs: Vec<f64> = serde_json::from_value(reference["losses"].clone()).unwrap();
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours.len() as u64, plan.train.steps);
    let (mut worst, mut at) = (0.0f64, 0);
    for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let rel = (a - b).abs() / b.abs().max(1e-12);
        // A NaN is the worst of all.
        if rel > worst || rel.is_nan() {
            (worst, at) = (rel, step + 1);
        }
    }
    common::within(
        &format!("{example} vs the plan-driven reference: losses (worst at step {at})"),
        worst,
        bound,
    );
    assert!(
        theirs[theirs.len() - 1] < theirs[0],
        "{example}: the reference loss did not fall"
    );
    eprintln!(
        "{example}: {} steps, worst relative loss difference {worst:.2e}",
        ours.len()
    );
}

const ADAMW_ACCUMULATE_CLIP: &str = "  loss = cross_entropy
  optimizer = adamw(lr: 2e-3, weight_decay: 0.01)
  micro_batch = 16
  accumulate = 2
  clip = norm(0.5)
  steps = 50
  warmup = 5
  schedule = cosine(min_lr: 1e-4)
  seed = 3";

#[test]
fn mlp_matches_pytorch_step_for_step() {
    compare_with_pytorch("examples/digits_mlp.dtl", ADAMW_ACCUMULATE_CLIP, 0.0);
}

#[test]
fn cnn_with_batch_norm_matches_pytorch_step_for_step() {
    compare_with_pytorch("examples/digits_cnn.dtl", ADAMW_ACCUMULATE_CLIP, 0.0);
}

/// `ema = 0.9` on the CNN: the average of its weights and of its
/// batch-norm statistics (use_buffers=True) after every step, as
/// `torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=
/// get_ema_multi_avg_fn(0.9), use_buffers=True)` keeps it.
#[test]
fn the_average_of_the_weights_is_averaged_models() {
    let train = format!("{ADAMW_ACCUMULATE_CLIP}\n  ema = 0.9");
    compare_with_pytorch("examples/digits_cnn.dtl", &train, 0.0);
}

#[test]
fn transformer_matches_pytorch_step_for_step() {
    compare_with_pytorch(
        "examples/digits_transformer.dtl",
        ADAMW_ACCUMULATE_CLIP,
        2e-6,
    );
}

#[test]
fn residual_mlp_with_sgd_nesterov_and_value_clipping_matches_pytorch() {
    compare_with_pytorch(
        "examples/digits_resmlp.dtl",
        "  loss = cross_entropy(label_smoothing: 0.1)
  optimizer = sgd(lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-4)
  micro_batch = 8
  accumulate = 3
  clip = value(0.05)
  schedule = step(every: 10, gamma: 0.5)
  steps = 40",
        2e-6,
    );
}

#[test]
fn character_language_model_matches_pytorch_step_for_step() {
    // Text windows, embedding, causal attention, a loss over every token.
    compare_with_pytorch(
        "examples/moby_char_lm.dtl",
        "  loss = cross_entropy
  optimizer = adamw(lr: 3e-3)
  micro_batch = 8
  accumulate = 2
  clip = norm(1.0)
  steps = 30
  warmup = 5
  schedule = cosine(min_lr: 3e-4)",
        1.9e-6,
    );
}

#[test]
fn regression_with_mse_matches_pytorch_step_for_step() {
    compare_with_pytorch(
        "tests/cases/ok/regression.dtl",
        "  loss = mse
  optimizer = adam(lr: 1e-2, weight_decay: 1e-4)
  micro_batch = 16
  accumulate = 2
  clip = norm(2.0)
  steps = 50",
        2.6e-6,
    );
}

/// A ViT-style head: patches cut by a strided conv2d, class_token, an
/// encoder block, select (index 0 and -1) and mean.
#[test]
fn class_token_select_and_mean_match_pytorch_step_for_step() {
    compare_with_pytorch(
        "tests/reference/layers/vit_head.dtl",
        ADAMW_ACCUMULATE_CLIP,
        1.2e-6,
    );
}

/// A SwiGLU block: the element-wise product `a * b`, widths written as
/// arithmetic.
#[test]
fn swiglu_product_matches_pytorch_step_for_step() {
    compare_with_pytorch(
        "tests/reference/layers/swiglu.dtl",
        ADAMW_ACCUMULATE_CLIP,
        0.0,
    );
}

/// Convolutions with groups, dilation and rectangular sizes, a transposed
/// convolution, group_norm, leaky_relu and elu, trained by Lion under
/// one_cycle.
#[test]
fn grouped_and_transposed_convolutions_with_lion_match_pytorch_step_for_step() {
    compare_with_pytorch(
        "tests/reference/layers/conv_groups_lion.dtl",
        "  loss = cross_entropy
  optimizer = lion(lr: 2e-3, weight_decay: 0.5)
  schedule = one_cycle(pct_start: 0.3)
  micro_batch = 16
  clip = norm(1.0)
  steps = 30
  seed = 8",
        0.0,
    );
}

/// upsample (nearest and bilinear), instance_norm and log_softmax under
/// nll, trained by Adafactor under constant_with_warmup.
#[test]
fn upsampling_and_instance_norm_with_adafactor_match_pytorch_step_for_step() {
    compare_with_pytorch(
        "tests/reference/layers/upsample_nll_adafactor.dtl",
        "  loss = nll
  optimizer = adafactor(lr: 0.05, weight_decay: 0.01)
  schedule = constant_with_warmup(warmup_steps: 5)
  micro_batch = 16
  accumulate = 2
  steps = 30
  seed = 9",
        0.0,
    );
}

/// The regression data under the Huber and the smooth L1 loss.
#[test]
fn huber_and_smooth_l1_match_pytorch_step_for_step() {
    compare_with_pytorch(
        "tests/cases/ok/regression.dtl",
        "  loss = huber(delta: 0.5)
  optimizer = adafactor(lr: 0.02, d: 2.0)
  schedule = one_cycle(anneal: \"linear\")
  micro_batch = 16
  steps = 40",
        0.0,
    );
    compare_with_pytorch(
        "tests/cases/ok/regression.dtl",
        "  loss = smooth_l1(beta: 0.3)
  optimizer = lion(lr: 1e-3)
  micro_batch = 16
  clip = value(0.5)
  steps = 40",
        0.0,
    );
}

/// The token files tests/reference/layers.py writes (its `TOKEN_FILES`):
/// Moby-Dick's bytes as little-endian uint16 ids byte + 256 and as uint32
/// ids equal to the bytes.
fn moby_token_files(dir: &Path) {
    let text = std::fs::read(root().join("data/moby_dick_1-5.txt")).unwrap();
    let u16s: Vec<u8> = text
        .iter()
        .flat_map(|&b| (u16::from(b) + 256).to_le_bytes())
        .collect();
    let u32s: Vec<u8> = text
        .iter()
        .flat_map(|&b| u32::from(b).to_le_bytes())
        .collect();
    std::fs::write(dir.join("moby.u16.bin"), u16s).unwrap();
    std::fs::write(dir.join("moby.u32.bin"), u32s).unwrap();
}

/// A GPT-2-style model whose output layer is its embedding (`tied`), on a
/// uint16 token file read at seeded random offsets.
#[test]
fn tied_output_layer_on_a_token_file_matches_pytorch_step_for_step() {
    compare_with_pytorch_after(
        "tests/reference/layers/tiny_gpt.dtl",
        ADAMW_ACCUMULATE_CLIP,
        1.1e-6,
        moby_token_files,
    );
}

/// A LLaMA-style block: grouped-query attention with rotary embeddings and
/// no biases, SwiGLU, on a uint32 token file read in order.
#[test]
fn grouped_rotary_attention_on_a_token_file_matches_pytorch_step_for_step() {
    compare_with_pytorch_after(
        "tests/reference/layers/tiny_llama.dtl",
        ADAMW_ACCUMULATE_CLIP,
        1.3e-6,
        moby_token_files,
    );
}

/// Runs one of the references in tests/reference/ (which run `dtl run`
/// themselves and compare) with this build's binary; it exits 0 when every
/// quantity agrees, 1 with the mismatches listed.
fn reference_script(script: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(python())
        .arg(root().join("tests/reference").join(script))
        .args(args)
        .arg(env!("CARGO_BIN_EXE_dtl"))
        .arg(dir.path())
        .env_remove("DTL_TWIN_SABOTAGE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tests/reference/{script} {args:?} found differences:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Hand-written torch.nn twins of the MLP, the CNN with batch norm, the
/// transformer and the character model, with their own training loops
/// (written from the .dtl files and the docs, not from the plan): per-step
/// loss, gradient norm and learning rate, the evaluations, and every final
/// parameter and buffer (batch-norm statistics included): the MLP and CNN
/// bit for bit, the attention models within their measured bounds
/// (twins.py's TOLERANCES) with nn.MultiheadAttention, and bit for bit,
/// attention's key bias included, with the attention written out on dtl's
/// layout.
#[test]
fn hand_written_pytorch_twins_train_as_dtl_does() {
    reference_script("twins.py", &["all"]);
    reference_script("twins.py", &["transformer", "--written-out-attention"]);
    reference_script("twins.py", &["char", "--written-out-attention"]);
}

/// dtl's FLOP estimates (`dtl explain`) against PyTorch's FlopCounterMode on
/// the hand-written twins: the matrix products (linear, conv1d, conv2d,
/// attention with grouped key/value heads) counted alike, exactly.
#[test]
fn flop_estimates_agree_with_pytorchs_flop_counter() {
    reference_script("flops.py", &[]);
}

/// The layers and settings that otherwise only run (rms_norm, conv1d, the
/// 1-d and average pools, softmax, transpose, reshape, concat, sigmoid,
/// `bias: false`, bytes, ∞-norm clipping, SGD dampening, `init`,
/// `shuffle = false`, the linear schedule; `a * b`, class_token, select,
/// mean, grouped-query attention with rope, `tied`, token files in both
/// orders; a `repeat`ed residual block under SGD with Nesterov momentum;
/// real-valued targets with mse and Adam's L2 decay; grouped, dilated,
/// rectangular and transposed convolutions, upsample, group_norm,
/// instance_norm, log_softmax, leaky_relu, elu; nll, binary_cross_entropy,
/// huber, smooth_l1; Lion, Adafactor; one_cycle, constant_with_warmup)
/// against hand-written PyTorch twins, step by step, each within its
/// measured bounds (the newer cases bit for bit).
#[test]
fn every_layer_and_setting_agrees_with_pytorch() {
    reference_script("layers.py", &[]);
}

/// The zoo's ResNet-18, ResNet-50 and (narrowed) GPT-2 small against
/// hand-written torchvision ResNets and a GPT-2 with the file's names: the
/// training steps, then dtl's model.safetensors loaded strictly into PyTorch
/// and its eval-mode forward on the held-out rows giving dtl's evaluation.
#[test]
fn zoo_models_load_into_pytorch_and_agree() {
    reference_script("zoo.py", &[]);
}

/// `precision = bf16` against the same casts under PyTorch (bit for bit,
/// attention's key bias included)
/// and against plain autocast (within 5e-2), and the weights, optimizer
/// state and checkpoints it saves stay float32.
#[test]
fn bf16_agrees_with_autocast_and_saves_float32() {
    reference_script("bf16.py", &[]);
}

/// `precision = fp16` against torch.amp.GradScaler around the same casts:
/// the same steps skipped, the same loss scales, and losses, gradient
/// norms, evaluation and weights bit for bit.
#[test]
fn fp16_loss_scaling_is_grad_scalers() {
    reference_script("fp16.py", &[]);
}

/// An image folder (PNG in four modes, JPEG, a subfolder, a stray text
/// file) read by `images(...)` with random crops, flips and normalisation
/// against torchvision's ImageFolder, ToTensor, pad/crop/hflip at dtl's
/// draws and Normalize: RGB and greyscale, losses, gradient norms,
/// evaluations and weights bit for bit.
#[test]
fn image_folders_train_as_torchvision_reads_them() {
    reference_script("images.py", &[]);
}

/// `h = repeat 3 { Hidden(32) }` against `self.h = nn.Sequential(...)`:
/// PyTorch's names load through `--init` (strict), and the runs agree bit
/// for bit.
#[test]
fn a_named_repeat_is_named_as_pytorch_names_it() {
    reference_script("named_repeat.py", &[]);
}

/// `freeze` against requires_grad_(False) on the MLP and the CNN twins
/// (batch norm's statistics still moving under a frozen weight): losses,
/// gradient norms, evaluations and weights bit for bit, the frozen tensors
/// their initial values.
#[test]
fn freeze_is_requires_grad_false() {
    reference_script("freeze.py", &[]);
}

/// Optimizer `groups` against torch.optim parameter groups: decay off for
/// norms and biases (CNN), a half-rate head and more decay on the hidden
/// matrices (MLP), bit for bit.
#[test]
fn optimizer_groups_are_torch_param_groups() {
    reference_script("groups.py", &[]);
}

/// Data parallelism against PyTorch's own: dtl at world 2 (its ranks
/// started through mpirun) against torch.distributed DDP on gloo with
/// `no_sync` on the accumulating micro-steps, and against one dtl process
/// with the global batch, from the same weights and rows: per-step loss,
/// gradient norm, lr, evaluation and final weights (within 5e-6, AdamW's
/// weights 3.6e-6: 10× the worst measured; AdamW bit for bit against DDP),
/// and equal weight hashes on both ranks after every step.
#[test]
fn data_parallel_dtl_agrees_with_torch_ddp() {
    reference_script("ddp.py", &[]);
}

/// DiLoCo (`groups = 2` of 2 replicas, `sync = diloco(period: 4,
/// outer_lr: 0.7, outer_momentum: 0.9)`, AdamW inside, accumulation 2,
/// norm clipping, 30 steps with a partial last period) against a
/// hand-written PyTorch DiLoCo program (its own loop, torch.optim.SGD with
/// Nesterov as the outer optimizer): every step's loss, gradient norm and
/// learning rate, and the final weights, within diloco.py's TOLERANCE
/// (10× the worst measured: 1.0e-7, 9.1e-8, equal, 4.8e-7); and streaming
/// DiLoCo (`fragments: 2, delay: 1, outer_precision: bf16`) against the
/// same program with the fragments' schedule, the delay and bfloat16 sums
/// (measured 3.5e-8, 1.1e-7, equal, 9.8e-8).
#[test]
fn diloco_groups_agree_with_a_hand_written_pytorch_diloco() {
    reference_script("diloco.py", &[]);
}

/// A Hugging Face GPT-2 checkpoint (transformers' own GPT2LMHeadModel, small
/// and seeded, saved by `save_pretrained`) loads into dtl's GPT-2 through
/// `init = weights(path, transpose: [...], rename: [...])`, and `dtl
/// predict` (which loads FILE's `init` without `--weights`) gives
/// transformers' logits: measured 6.0e-8 apart (1.2e-7 on an AVX-512
/// Xeon), held to 6e-7, which also tells GPT-2's tanh GELU from the exact
/// one (1.7e-6 apart).
#[test]
fn a_hugging_face_gpt2_checkpoint_loads_by_name_map_and_gives_its_logits() {
    hugging_face_checkpoint(
        "hf_gpt2.py",
        ["tiny_gpt2.dtl", "ids.npy"],
        "28 tensors loaded, 0 skipped, 0 missing from the file (initialisers kept), 0 in the file unused",
        "6e-7",
    );
}

/// A Hugging Face LLaMA checkpoint (transformers' own LlamaForCausalLM with
/// grouped-query attention, rotary embeddings, RMSNorm gains drawn at
/// random, SwiGLU and an untied output layer) loads into dtl's LLaMA
/// through `fuse` (its separate query, key and value projections packed
/// into one) and `rename`, and `dtl predict` gives transformers' logits:
/// bit for bit where measured (2026-12-05), held to GPT-2's bound, since
/// another machine's kernels may round apart.
#[test]
fn a_hugging_face_llama_checkpoint_loads_with_fused_projections_and_gives_its_logits() {
    hugging_face_checkpoint(
        "hf_llama.py",
        ["tiny_llama.dtl", "ids.npy"],
        "17 tensors loaded, 0 skipped, 0 missing from the file (initialisers kept), 0 in the file unused",
        "6e-7",
    );
}

/// A Hugging Face ViT checkpoint (transformers' own
/// ViTForImageClassification, with its class token, position embeddings
/// and norms drawn at random) loads into dtl's ViT through `fuse` (query,
/// key and value, weights and biases), `squeeze` (its `[1, tokens, width]`
/// position embeddings) and `rename`, and `dtl predict` on rows of pixels
/// gives transformers' logits: bit for bit where measured (2026-12-05),
/// held to GPT-2's bound.
#[test]
fn a_hugging_face_vit_checkpoint_loads_with_squeezed_embeddings_and_gives_its_logits() {
    hugging_face_checkpoint(
        "hf_vit.py",
        ["tiny_vit.dtl", "images.npy"],
        "32 tensors loaded, 0 skipped, 0 missing from the file (initialisers kept), 0 in the file unused",
        "6e-7",
    );
}

/// `script prepare` (a transformers model saved with `save_pretrained`, a
/// dtl file loading it through its `init`, rows to predict), `dtl predict`
/// on the file and the rows (saying `loaded`), and `script compare` of the
/// logits within `bound`.
fn hugging_face_checkpoint(script: &str, [file, rows]: [&str; 2], loaded: &str, bound: &str) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("hf");
    let script_path = root().join("tests/reference").join(script);
    let run = |args: &[&str]| {
        let output = Command::new(python())
            .arg(&script_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{script} {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let work_arg = work.to_str().unwrap();
    run(&["prepare", work_arg]);
    let predictions = work.join("predictions.jsonl");
    common::dtl(&[
        "predict",
        work.join(file).to_str().unwrap(),
        "--input",
        work.join(rows).to_str().unwrap(),
        "-o",
        predictions.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .code(0)
    .stderr_has(loaded);
    run(&["compare", work_arg, predictions.to_str().unwrap(), bound]);
}

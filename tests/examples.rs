//! Every example is checked and compiled against its golden plan; the
//! default example is trained to the end and must reach the accuracy
//! docs/development.md documents. `DTL_BLESS=1` rewrites the golden plans.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dtl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_checks_and_compiles_to_its_golden_plan() {
    let examples = examples();
    assert!(!examples.is_empty());
    for path in examples {
        let rel = path.strip_prefix(root()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (plan, warnings) = dtl_compiler::compile_source_with_warnings(
            &rel.display().to_string(),
            &text,
            &dtl_compiler::options_for(rel, true),
        )
        .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
        assert!(
            warnings.is_empty(),
            "examples should be warning-free:\n{}",
            warnings.render_human(false)
        );
        let yaml = plan.to_yaml();
        let golden = root()
            .join("tests/golden/examples")
            .join(rel.with_extension("plan.yaml").file_name().unwrap());
        if common::bless() {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &yaml).unwrap();
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{} missing (DTL_BLESS=1)", golden.display()));
        if yaml != expected {
            let line = yaml
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{} no longer compiles to {} (first difference at line {}: {:?} vs {:?}); DTL_BLESS=1 rewrites it",
                rel.display(),
                golden.display(),
                line + 1,
                yaml.lines().nth(line),
                expected.lines().nth(line)
            );
        }
    }
}

/// Held-out accuracy each example must reach when trained to the end: the
/// figure docs/development.md documents (measured on 2026-11-30: 97.21%, 97.77%,
/// 98.89%, 98.61%, 75.80%), less one point. CPU runs are bitwise
/// reproducible, so a drop below it is a change, not noise.
const ACCURACY: [(&str, f64); 8] = [
    ("digits_mlp", 0.962),
    ("digits_cnn", 0.967),
    ("digits_resmlp", 0.978),
    ("digits_transformer", 0.976),
    // Overlapping blobs: about 76% is what the data allows.
    ("synthetic_blobs", 0.748),
    // Next-character accuracy; the loss bound below is the real target.
    ("moby_char_lm", 0.25),
    // Next-byte accuracy (27.91% and 42.28% measured).
    ("moby_gpt", 0.269),
    ("moby_llama", 0.412),
];

/// Held-out loss per prediction an example must get below: the character
/// model starts at ln(70) ≈ 4.25 nats and reaches 2.406 in 300 steps; the
/// byte models start at ln(256) ≈ 5.55 and reach 2.452 (GPT-style, tied)
/// and 1.994 (LLaMA-style).
const EVAL_LOSS: [(&str, f64); 3] = [
    ("moby_char_lm", 2.45),
    ("moby_gpt", 2.50),
    ("moby_llama", 2.05),
];

#[test]
fn every_example_trains_to_its_held_out_accuracy() {
    let examples = examples();
    for path in &examples {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let threshold = ACCURACY
            .iter()
            .find(|(name, _)| *name == stem)
            .unwrap_or_else(|| panic!("{stem}: add its accuracy threshold to ACCURACY"))
            .1;
        let out = tempfile::tempdir().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_dtl"))
            .args(["run", "--quiet", "--device", "cpu", "--out"])
            .arg(out.path())
            .arg(path)
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "{stem} failed to train");
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("summary.json")).unwrap(),
        )
        .unwrap();
        let rel = path.strip_prefix(root()).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let plan =
            dtl_compiler::compile_source(&stem, &text, &dtl_compiler::options_for(rel, true))
                .unwrap();
        let chance = (plan.data.classes as f64).ln();
        let first = summary["first_loss"].as_f64().unwrap();
        let last = summary["final_loss"].as_f64().unwrap();
        let accuracy = summary["eval"]["eval_accuracy"].as_f64().unwrap();
        assert!(
            first > 0.9 * chance,
            "{stem}: an untrained model starts near ln(classes) = {chance:.2}, got {first}"
        );
        assert!(
            last < first * 0.6,
            "{stem}: the loss must fall: {first} -> {last}"
        );
        assert!(
            accuracy >= threshold,
            "{stem}: held-out accuracy {accuracy} < {threshold}"
        );
        if let Some((_, bound)) = EVAL_LOSS.iter().find(|(name, _)| *name == stem) {
            let eval_loss = summary["eval"]["eval_loss"].as_f64().unwrap();
            assert!(
                eval_loss < *bound,
                "{stem}: held-out loss {eval_loss} ≥ {bound}"
            );
        }
        let valid_rows = (plan.data.rows as f64 * plan.data.valid_fraction).round() as u64;
        assert_eq!(summary["eval"]["eval_rows"], valid_rows);
    }
    assert_eq!(
        examples.len(),
        ACCURACY.len(),
        "an example was removed: update ACCURACY"
    );
}

#[test]
fn every_example_passes_its_module_tests() {
    let examples = examples();
    let output = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .arg("test")
        .args(&examples)
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(" 0 failed") && !stdout.starts_with("0 passed"),
        "{stdout}"
    );
}

/// The published parameter count of each model of `examples/zoo`, which
/// `dtl explain` must give exactly (torchvision's model cards for the
/// ResNets and ViT, the 124M GPT-2 with its tied output layer, TinyLlama's
/// LlamaForCausalLM).
const ZOO: [(&str, u64); 5] = [
    ("resnet18", 11_689_512),
    ("resnet50", 25_557_032),
    ("gpt2_small", 124_439_808),
    ("tinyllama", 1_100_048_384),
    ("vit_b16", 86_567_656),
];

#[test]
fn zoo_models_have_their_published_parameter_counts() {
    let zoo = root().join("examples/zoo");
    let mut files: Vec<String> = std::fs::read_dir(&zoo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dtl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    files.sort();
    let mut listed: Vec<String> = ZOO.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every zoo model needs its published count in ZOO"
    );
    for (name, published) in ZOO {
        let rel = PathBuf::from(format!("examples/zoo/{name}.dtl"));
        let text = std::fs::read_to_string(root().join(&rel)).unwrap();
        let (plan, warnings) = dtl_compiler::compile_source_with_warnings(
            &rel.display().to_string(),
            &text,
            &dtl_compiler::options_for(&root().join(&rel), true),
        )
        .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
        assert!(
            warnings.is_empty(),
            "{name} should be warning-free:\n{}",
            warnings.render_human(false)
        );
        assert_eq!(plan.model.parameter_count, published, "{name}");
        // What `dtl explain` prints, from the same plan.
        let output = Command::new(env!("CARGO_BIN_EXE_dtl"))
            .arg("explain")
            .arg(&rel)
            .current_dir(root())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("{published} parameters")),
            "{name}: {stdout}"
        );
    }
}

/// `examples/gpu/gpt_char.dtl` is a GPU benchmark model (19.1 M parameters,
/// benches/gpu_vs_pytorch.py): too slow to train on the CPU, so here it is
/// checked, compiled, its module tests run, and one row of two steps on the
/// CPU must give the losses of its hand-written PyTorch twin
/// (benches/gpt_char_torch.py) from the same initial weights, and the
/// twin's parameters must be the plan's.
#[test]
fn the_gpu_benchmark_model_trains_like_its_pytorch_twin() {
    let rel = PathBuf::from("examples/gpu/gpt_char.dtl");
    let text = std::fs::read_to_string(root().join(&rel)).unwrap();
    let (plan, warnings) = dtl_compiler::compile_source_with_warnings(
        &rel.display().to_string(),
        &text,
        &dtl_compiler::options_for(&root().join(&rel), true),
    )
    .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
    assert!(warnings.is_empty(), "{}", warnings.render_human(false));
    assert_eq!(plan.model.parameter_count, 19_118_150);
    common::dtl(&["test", "examples/gpu/gpt_char.dtl"]).code(0);

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let twin = |args: &[&str]| -> String {
        let output = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("benches/gpt_char_torch.py"))
            .args(args)
            .env("OMP_NUM_THREADS", "1")
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "gpt_char_torch.py {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let plan_json = path("plan.json");
    common::dtl(&[
        "compile",
        "examples/gpu/gpt_char.dtl",
        "--format",
        "json",
        "-o",
        &plan_json,
    ])
    .code(0);
    twin(&["--check-plan", &plan_json]);
    let init = path("init.safetensors");
    twin(&["--write-init", &init]);
    let out = path("run");
    common::dtl(&[
        "run",
        "examples/gpu/gpt_char.dtl",
        "--device",
        "cpu",
        "--quiet",
        "--init",
        &init,
        "--out",
        &out,
        "--set",
        "train.steps=2",
        "--set",
        "train.micro_batch=1",
    ])
    .code(0);
    let theirs: serde_json::Value = serde_json::from_str(
        twin(&[
            "--device",
            "cpu",
            "--steps",
            "2",
            "--skip",
            "0",
            "--micro-batch",
            "1",
            "--threads",
            "1",
            "--init",
            &init,
        ])
        .trim(),
    )
    .unwrap();
    let ours = common::step_records(Path::new(&out));
    assert_eq!(ours.len(), 2);
    let first = theirs["first_loss"].as_f64().unwrap();
    let last = theirs["final_loss"].as_f64().unwrap();
    // Both measured equal (2026-12-04): bitwise.
    common::within(
        "gpt_char vs its PyTorch twin: first loss",
        (ours[0].loss - first).abs() / first,
        0.0,
    );
    common::within(
        "gpt_char vs its PyTorch twin: second loss",
        (ours[1].loss - last).abs() / last,
        0.0,
    );
}

/// The benchmarks' own models (`benches/*.dtl`) check without warnings and
/// are formatted, so a language change cannot leave them behind.
#[test]
fn the_benchmark_models_check() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("benches"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dtl"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for path in files {
        let rel = path.strip_prefix(root()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (_, warnings) = dtl_compiler::compile_source_with_warnings(
            &rel.display().to_string(),
            &text,
            &dtl_compiler::options_for(&path, true),
        )
        .unwrap_or_else(|d| panic!("{}", d.render_human(false)));
        assert!(warnings.is_empty(), "{}", warnings.render_human(false));
        common::dtl(&["fmt", "--check", rel.to_str().unwrap()]).code(0);
    }
}

//! What the integration tests share: running the binary as a user does, and
//! a short version of the default example.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Python (PyTorch and the tools the twins use).
pub fn python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    python
}

/// Runs tests/data_files.py (the data files Python's tools write) with
/// `args`; fails the test with its error output if it fails.
pub fn data_files(args: &[&std::ffi::OsStr]) {
    let made = Command::new(python())
        .arg(root().join("tests/data_files.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "tests/data_files.py {args:?}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// Whether golden files are to be rewritten: `DTL_BLESS=1` and nothing
/// else (`DTL_BLESS=0` compares).
pub fn bless() -> bool {
    std::env::var("DTL_BLESS").is_ok_and(|v| v == "1")
}

/// One run of the binary, with fluent assertions on its outcome.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn dtl(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("the dtl binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `dtl run --quiet --device cpu --resume DIR`.
pub fn resume(dir: &Path) -> Run {
    dtl(&[
        "run",
        "--quiet",
        "--device",
        "cpu",
        "--resume",
        dir.to_str().unwrap(),
    ])
}

impl Run {
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code, expected,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn stdout_has(self, text: &str) -> Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        self
    }

    /// `text` in stderr, whether or not a diagnostic's box wrapped it
    /// over lines (the frame characters and line breaks are spaces here).
    pub fn stderr_has(self, text: &str) -> Self {
        assert!(
            flat(&self.stderr).contains(&flat(text)),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Text with a diagnostic's box drawing taken out and every run of
/// whitespace one space.
pub fn flat(text: &str) -> String {
    text.replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub const EXAMPLE: &str = "examples/digits_mlp.dtl";

/// The default example with fewer steps, in a temp folder.
pub fn short_example(dir: &Path, steps: u32) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE))
        .unwrap()
        .replace(
            "\"../data/digits.csv.gz\"",
            &format!("{:?}", data.display().to_string()),
        )
        .replace("steps = 400", &format!("steps = {steps}"))
        .replace("eval_every = 100", "eval_every = 5");
    let path = dir.join("short.dtl");
    std::fs::write(&path, text).unwrap();
    path
}

/// `dtl run FILE --quiet --device cpu --out OUT` and any `extra` arguments.
pub fn train(file: &Path, out: &Path, extra: &[&str]) -> Run {
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
    dtl(&args)
}

/// Every float32 and int64 tensor of a safetensors file, by name (values
/// flattened, as f32: PyTorch's `num_batches_tracked` is int64, dtl's a
/// float32 count).
pub fn read_safetensors(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, info)| {
            *name != "__metadata__"
                && ["F32", "I64"].contains(&info["dtype"].as_str().unwrap_or(""))
        })
        .map(|(name, info)| {
            let offsets = &info["data_offsets"];
            let (start, end) = (
                offsets[0].as_u64().unwrap() as usize,
                offsets[1].as_u64().unwrap() as usize,
            );
            let values = if info["dtype"] == "I64" {
                data[start..end]
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect()
            } else {
                data[start..end]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            (name.clone(), values)
        })
        .collect()
}

/// Run `b` trained as run `a` did, bit for bit: every step's loss, the
/// last evaluation, the final weights.
pub fn same_run_bitwise(a: &Path, b: &Path, what: &str) {
    let (x, y) = (step_records(a), step_records(b));
    assert_eq!(x.len(), y.len(), "{what}: steps");
    for (x, y) in x.iter().zip(&y) {
        assert_eq!(
            x.loss.to_bits(),
            y.loss.to_bits(),
            "{what}: step {}",
            x.step
        );
    }
    assert_eq!(last_eval(a), last_eval(b), "{what}");
    let (diff, at) = weights_differ(&a.join("model.safetensors"), &b.join("model.safetensors"));
    assert_eq!(diff, 0.0, "{what}: weights differ at {at}");
}

/// The largest absolute difference between two weight files' tensors
/// (which must hold the same names and sizes), and where it is.
pub fn weights_differ(a: &Path, b: &Path) -> (f32, String) {
    weights_differ_where(a, b, |_, _| true)
}

/// [`weights_differ`] without attention's key bias (the middle third of
/// every `in_proj_bias`). Its gradient is zero in exact arithmetic (adding
/// one vector to every key shifts each query's scores by a constant, which
/// softmax removes), so what it gets is rounding, and Adam turns rounding
/// into steps of up to the learning rate: two runs whose sums are ordered
/// differently (another layout) end with different key biases and the same
/// function. Every other value is compared.
pub fn weights_differ_outside_key_bias(a: &Path, b: &Path) -> (f32, String) {
    let sizes = read_safetensors(a);
    weights_differ_where(a, b, |name, i| {
        let d = sizes[name].len() / 3;
        !(name.ends_with("in_proj_bias") && (d..2 * d).contains(&i))
    })
}

/// The largest absolute difference over the values `compared(name, index)`.
fn weights_differ_where(
    a: &Path,
    b: &Path,
    compared: impl Fn(&str, usize) -> bool,
) -> (f32, String) {
    tensors_differ(&read_safetensors(a), &read_safetensors(b), compared)
}

/// The largest absolute difference between two runs' checkpoints over the
/// tensors of [`checkpoint_tensors`] that `which` names, and where.
pub fn checkpoints_differ(a: &Path, b: &Path, which: impl Fn(&str) -> bool) -> (f32, String) {
    let (a, b) = (checkpoint_tensors(a), checkpoint_tensors(b));
    tensors_differ(&a, &b, |name, _| which(name))
}

/// Whether a checkpoint's tensor is optimizer state (`<parameter>.first`,
/// `.second`).
pub fn is_optimizer_state(name: &str) -> bool {
    name.ends_with(".first") || name.ends_with(".second")
}

/// Every tensor of the checkpoint of the run in `out`, as an unsharded
/// checkpoint names them: the weights by name, the optimizer state as
/// `<parameter>.<slot>`, the data order. A sharded run's are put back
/// together here from the manifest in `state.json`, independently of dtl's
/// reader: each buffer's slices laid end to end in place order, cut at
/// its parameters' offsets.
pub fn checkpoint_tensors(out: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let dir = out.join("checkpoint");
    let mut all = read_safetensors(&dir.join("model.safetensors"));
    all.extend(read_safetensors(&dir.join("state.safetensors")));
    let text = std::fs::read_to_string(dir.join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shards = &state["shards"];
    if shards.is_null() {
        return all;
    }
    let files: std::collections::BTreeMap<(u64, u64), _> = shards["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let at = (f["stage"].as_u64().unwrap(), f["place"].as_u64().unwrap());
            (at, read_safetensors(&dir.join(f["file"].as_str().unwrap())))
        })
        .collect();
    let slices = shards["slices"].as_u64().unwrap();
    for buffer in shards["buffers"].as_array().unwrap() {
        let (stage, index) = (buffer["stage"].as_u64().unwrap(), &buffer["index"]);
        for field in buffer["fields"].as_array().unwrap() {
            let field = field.as_str().unwrap();
            let key = format!("{index}.{field}");
            let flat: Vec<f32> = (0..slices)
                .flat_map(|place| files[&(stage, place)][&key].clone())
                .collect();
            for param in buffer["params"].as_array().unwrap() {
                let name = param["name"].as_str().unwrap();
                let offset = param["offset"].as_u64().unwrap() as usize;
                let values: u64 = param["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product();
                let name = match field {
                    "weights" => name.to_string(),
                    slot => format!("{name}.{slot}"),
                };
                let part = flat[offset..offset + values as usize].to_vec();
                assert!(all.insert(name.clone(), part).is_none(), "`{name}` twice");
            }
        }
    }
    all
}

/// The largest absolute difference between two sets of named tensors over
/// the values `compared(name, index)`, and where; both must name the same
/// tensors.
fn tensors_differ(
    a: &std::collections::BTreeMap<String, Vec<f32>>,
    b: &std::collections::BTreeMap<String, Vec<f32>>,
    compared: impl Fn(&str, usize) -> bool,
) -> (f32, String) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the two weight files name different tensors"
    );
    let mut worst = (0.0f32, String::new());
    for (name, x) in a {
        let y = &b[name];
        assert_eq!(x.len(), y.len(), "`{name}` has another size");
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            let d = (p - q).abs();
            if compared(name, i) && (d > worst.0 || d.is_nan()) {
                worst = (d, name.clone());
            }
        }
    }
    worst
}

/// The step records of a run's metrics.jsonl (evaluation lines left out).
pub fn step_records(out: &Path) -> Vec<dtl_compiler::records::StepRecord> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(
            |line| match dtl_compiler::records::Record::parse(line).unwrap() {
                dtl_compiler::records::Record::Step(step) => Some(step),
                dtl_compiler::records::Record::Eval(_) => None,
            },
        )
        .collect()
}

/// A run's summary.json.
pub fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// The last evaluation record of a run's metrics.jsonl.
pub fn last_eval(out: &Path) -> dtl_compiler::records::EvalRecord {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .rev()
        .find_map(
            |line| match dtl_compiler::records::Record::parse(line).unwrap() {
                dtl_compiler::records::Record::Eval(eval) => Some(eval),
                dtl_compiler::records::Record::Step(_) => None,
            },
        )
        .expect("the run evaluated")
}

/// The largest relative difference between two runs' step losses.
pub fn losses_differ(a: &Path, b: &Path) -> f64 {
    let (a, b) = (step_records(a), step_records(b));
    assert_eq!(a.len(), b.len(), "the runs have different step counts");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x.loss - y.loss).abs() / x.loss.abs().max(1e-12))
        .fold(0.0, f64::max)
}

/// The run in `out` was trained by `ranks` processes together: its
/// summary says so, and each rank left a log that ends with "done" (and no
/// rank beyond them did).
pub fn assert_ranks_ran(out: &Path, ranks: usize) {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["world_size"],
        ranks,
        "{}: world size in summary.json",
        out.display()
    );
    for rank in 0..ranks {
        let log = std::fs::read_to_string(out.join(format!("rank-{rank}.log")))
            .unwrap_or_else(|e| panic!("{}: rank-{rank}.log: {e}", out.display()));
        assert!(
            log.lines().any(|l| l.starts_with("done: ")),
            "{}: rank {rank} did not finish:\n{log}",
            out.display()
        );
    }
    assert!(
        !out.join(format!("rank-{ranks}.log")).exists(),
        "{}: more than {ranks} ranks ran",
        out.display()
    );
}

/// The bound for a quantity measured equal where the computation is not
/// bitwise the same (an evaluation loss summed in float32 chunks, after
/// weights that differ in the last bits): one float32 rounding, 2⁻²³. A
/// zero there is rounding luck, not a property to hold.
pub const FLOAT32_ROUNDING: f64 = 1.2e-7;

/// Asserts a measured difference is within its bound, and prints it
/// (visible with `--nocapture`: `measured: WHAT: VALUE (bound BOUND)`), so
/// that every bound can be kept at most 10× the worst measured. A bound of
/// 0 claims bitwise equality.
pub fn within(what: &str, value: f64, bound: f64) {
    eprintln!("measured: {what}: {value:e} (bound {bound:e})");
    assert!(
        value <= bound,
        "{what}: differs by {value:e}, more than {bound:e}"
    );
}

/// The folder `from` and everything in it, copied into `to`.
pub fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_folder(&entry.path(), &target),
            false => drop(std::fs::copy(entry.path(), target).unwrap()),
        }
    }
}

/// Copies a run folder for resuming and takes away what the resumed run
/// must write again itself.
pub fn copy_for_resume(from: &Path, to: &Path) {
    copy_folder(&from.join("checkpoint"), &to.join("checkpoint"));
    std::fs::copy(from.join("plan.yaml"), to.join("plan.yaml")).unwrap();
    // metrics.jsonl as it was at the checkpoint: the rest must come again.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("checkpoint/state.json")).unwrap())
            .unwrap();
    let kept = state["metrics_bytes"].as_u64().unwrap() as usize;
    let metrics = std::fs::read(from.join("metrics.jsonl")).unwrap();
    std::fs::write(to.join("metrics.jsonl"), &metrics[..kept]).unwrap();
}

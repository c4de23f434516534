//! `dtl eval`, `dtl predict` and `dtl generate`: a trained model used from
//! the command line, in one process. FILE is the `.dtl` file, a compiled
//! plan, or a run folder (its `plan.yaml`, and its `model.safetensors`
//! unless `--weights` says otherwise). `dtl export`: a checkpoint's
//! weights, sharded or not, as one file.

use std::path::PathBuf;

use dtl_compiler::input::{Input, Request};

use crate::{load_plan, Failure};

/// What names the model: the experiment and the weights.
#[derive(clap::Args)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct ModelArgs {
    /// The experiment (`.dtl`), a compiled plan, or a run folder.
    pub file: PathBuf,
    /// The weights (safetensors, every tensor by name) [default: FILE's
    /// model.safetensors when FILE is a run folder].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(clap::Args)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Evaluate every row of these files (the data block's format: one
    /// file, or for npy and idx the features and the labels, comma
    /// separated) instead of the held-out rows.
    #[arg(long, value_delimiter = ',')]
    pub data: Vec<String>,
    /// One JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Rows of features: .csv (.csv.gz), .npy or .jsonl.
    #[arg(long)]
    pub input: PathBuf,
    /// Where the predictions go, one JSON object per row [default: standard
    /// output].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct ExportArgs {
    /// A run folder (its last whole checkpoint) or a checkpoint folder.
    pub from: PathBuf,
    /// The safetensors file to write, every tensor under the model's
    /// (the PyTorch twin's) name.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to continue (for a token-file model: its token ids,
    /// comma separated).
    #[arg(long)]
    pub prompt: String,
    /// How many tokens to add.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Divides the scores before sampling; 0 picks the best token.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample among the k best tokens only.
    #[arg(long)]
    pub top_k: Option<i64>,
    /// Seeds the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Compute every token over the whole window instead of keeping the
    /// keys and values of the tokens before.
    #[arg(long)]
    pub no_cache: bool,
}

/// The plan and the weights FILE and `--weights` name: `None` for the
/// `init` weights of FILE's `train` block (a pretrained model, before any
/// training).
fn plan_and_weights(
    args: &ModelArgs,
    request: &Request,
) -> Result<(dtl_compiler::plan::Plan, Option<PathBuf>), Failure> {
    let (input, default_weights) = if args.file.is_dir() {
        (
            Input::Plan(args.file.join("plan.yaml")),
            Some(args.file.join("model.safetensors")),
        )
    } else {
        (Input::of(&args.file), None)
    };
    let plan = load_plan(&input, request)?;
    let weights = args.weights.clone().or(default_weights);
    if weights.is_none() && plan.train.init.is_none() {
        return Err(Failure::usage(format!(
            "which weights? give --weights W (a run's model.safetensors), a run folder instead of {}, or an `init` in its `train` block",
            args.file.display()
        )));
    }
    Ok((plan, weights))
}

#[cfg(feature = "runtime")]
fn model(
    args: &ModelArgs,
    request: &Request,
) -> Result<(dtl_compiler::plan::Plan, dtl_runtime::model::Model), Failure> {
    let (plan, weights) = plan_and_weights(args, request)?;
    let choice: dtl_runtime::DeviceChoice = args.device.parse().map_err(Failure::usage)?;
    let device = dtl_runtime::device::resolve(choice).map_err(fail)?;
    let model = match weights {
        Some(weights) => dtl_runtime::infer::load_model(&plan, &weights, device),
        None => dtl_runtime::infer::initial_model(&plan, device),
    }
    .map_err(fail)?;
    Ok((plan, model))
}

#[cfg(feature = "runtime")]
fn fail(err: dtl_runtime::RunError) -> Failure {
    let code = err.exit_code();
    eprintln!("{:?}", miette::Report::new(err));
    Failure::exit(code)
}

#[cfg(feature = "runtime")]
pub fn eval(args: EvalArgs, request: &Request) -> Result<(), Failure> {
    let (plan, model) = model(&args.model, request)?;
    let other = (!args.data.is_empty()).then_some(args.data.as_slice());
    let record = dtl_runtime::infer::evaluate(&plan, &model, other).map_err(fail)?;
    if args.json {
        let mut value = serde_json::to_value(&record).expect("a record serializes");
        if let Some(object) = value.as_object_mut() {
            object.remove("step");
        }
        out!("{value}");
        return Ok(());
    }
    let from = match &other {
        Some(files) => files.join(", "),
        None => "the held-out rows".into(),
    };
    out!("{} rows of {from}", record.eval_rows);
    out!("eval_loss {:.6}", record.eval_loss);
    if let Some(accuracy) = record.eval_accuracy {
        out!("eval_accuracy {accuracy:.6}");
    }
    for (key, value) in &record.measures.0 {
        out!("{key} {value:.6}");
    }
    Ok(())
}

#[cfg(feature = "runtime")]
pub fn predict(args: PredictArgs, request: &Request) -> Result<(), Failure> {
    use std::io::Write;
    let (plan, model) = model(&args.model, request)?;
    let inputs = dtl_runtime::infer::read_inputs(&plan, &args.input).map_err(fail)?;
    let lines = dtl_runtime::infer::predict(&plan, &model, &inputs).map_err(fail)?;
    let mut text = String::new();
    for line in &lines {
        text += &serde_json::to_string(line).expect("a prediction serializes");
        text.push('\n');
    }
    match &args.output {
        Some(path) => {
            dtl_runtime::output::write_atomic(path, text.as_bytes()).map_err(fail)?;
            eprintln!("{} predictions in {}", lines.len(), path.display());
        }
        None => {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    Ok(())
}

#[cfg(feature = "runtime")]
pub fn generate(args: GenerateArgs, request: &Request) -> Result<(), Failure> {
    use std::io::Write;
    let (plan, model) = model(&args.model, request)?;
    let vocabulary = dtl_runtime::infer::Vocabulary::of(&plan).map_err(fail)?;
    let prompt = vocabulary
        .encode(&args.prompt)
        .map_err(|m| Failure::usage(format!("--prompt: {m}")))?;
    if args.temperature < 0.0 || !args.temperature.is_finite() {
        return Err(Failure::usage(
            "--temperature is 0 (the best token) or more".into(),
        ));
    }
    if args.top_k.is_some_and(|k| k < 1) {
        return Err(Failure::usage("--top-k is at least 1".into()));
    }
    let sampling = dtl_runtime::infer::Sampling {
        tokens: args.tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
    };
    let ids_only = matches!(vocabulary, dtl_runtime::infer::Vocabulary::Ids { .. });
    let mut stdout = std::io::stdout();
    let _ = write!(stdout, "{}", args.prompt);
    // Bytes are printed once they make whole characters.
    let mut pending: Vec<i64> = Vec::new();
    let mut each = |id: i64| {
        pending.push(id);
        let text = vocabulary.decode(&pending);
        if ids_only {
            let _ = write!(stdout, " {text}");
            pending.clear();
        } else if !text.ends_with('\u{fffd}') || pending.len() >= 4 {
            let _ = write!(stdout, "{text}");
            pending.clear();
        }
        let _ = stdout.flush();
    };
    dtl_runtime::infer::generate(&plan, &model, &prompt, sampling, !args.no_cache, &mut each)
        .map_err(fail)?;
    if !pending.is_empty() {
        let _ = write!(std::io::stdout(), "{}", vocabulary.decode(&pending));
    }
    out!("");
    Ok(())
}

#[cfg(not(feature = "runtime"))]
pub fn eval(args: EvalArgs, request: &Request) -> Result<(), Failure> {
    plan_and_weights(&args.model, request)?;
    Err(no_runtime())
}

#[cfg(not(feature = "runtime"))]
pub fn predict(args: PredictArgs, request: &Request) -> Result<(), Failure> {
    plan_and_weights(&args.model, request)?;
    Err(no_runtime())
}

#[cfg(not(feature = "runtime"))]
pub fn generate(args: GenerateArgs, request: &Request) -> Result<(), Failure> {
    plan_and_weights(&args.model, request)?;
    Err(no_runtime())
}

#[cfg(feature = "runtime")]
pub fn export(args: ExportArgs) -> Result<(), Failure> {
    if args.output.exists() && !args.force {
        return Err(Failure::usage(format!(
            "{} exists; give --force to replace it",
            args.output.display()
        )));
    }
    let done = dtl_runtime::checkpoint::export::export(&args.from, &args.output).map_err(fail)?;
    if let Some(why) = &done.fell_back {
        eprintln!("warning: the last checkpoint cannot be used ({why}); exported the one before");
    }
    out!(
        "{}: {} tensors ({} from the replicas' slices) of the checkpoint of step {} in {}",
        args.output.display(),
        done.tensors,
        done.from_shards,
        done.step,
        done.from.display()
    );
    Ok(())
}

#[cfg(not(feature = "runtime"))]
pub fn export(_: ExportArgs) -> Result<(), Failure> {
    Err(no_runtime())
}

#[cfg(not(feature = "runtime"))]
fn no_runtime() -> Failure {
    Failure::usage("this dtl was built without the runtime (`--no-default-features`); rebuild with the default features to use a model".into())
}

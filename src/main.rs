//! The `dtl` command line: check, compile and run experiments.
//!
//! Exit codes: 0 success (warnings allowed), 1 the input has errors or the
//! run failed, 2 usage or I/O error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dtl_compiler::input::{Input, LoadError, Request};
use dtl_compiler::plan::Plan;
use dtl_compiler::Diagnostics;

#[derive(Parser)]
#[command(
    name = "dtl",
    version,
    about = "Check, compile and run distributed deep-learning experiments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Override a setting, checked like the file: train.steps=20,
    /// train.optimizer.lr=1e-3, data.digits.valid=0.1 (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE", global = true)]
    set: Vec<String>,
    /// A path that leads out of the project folder (through `..`, an
    /// absolute path or a symbolic link) is an error, not a warning
    /// (recommended in CI, for files from pull requests).
    #[arg(long, global = true)]
    strict: bool,
    /// What checking the data may read before launch (`check --data`,
    /// `compile`, `explain`, the language server), as a size and
    /// optionally seconds: 2GiB, 500MB,30s. Over it is an error, never a
    /// partial check.
    #[arg(
        long,
        global = true,
        value_name = "SIZE[,SECONDS]",
        default_value = "2GiB,120s"
    )]
    data_budget: String,
    /// Messages about data files may quote the values they found (by
    /// default they say where and what kind of value, never its bytes).
    #[arg(long, global = true)]
    show_values: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Check files for errors without running anything.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
        format: CheckFormat,
        /// Read the data files for the checks that need them (widths and
        /// classes against the model, rows against the batch). Without it
        /// no data file is opened, so checking an untrusted file reads
        /// nothing it names.
        #[arg(long, conflicts_with = "no_data")]
        data: bool,
        /// The default: do not read data files (kept for older scripts).
        #[arg(long, hide = true)]
        no_data: bool,
        /// World sizes to check the parallel configuration against, e.g. 4,8,64.
        #[arg(long, value_delimiter = ',')]
        world: Vec<u64>,
        /// Warn when a rank would need more memory than this (e.g. 24GiB),
        /// by `dtl explain`'s estimate.
        #[arg(long, value_name = "SIZE")]
        memory: Option<String>,
    },
    /// Compile a file into its execution plan.
    Compile {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Yaml)]
        format: PlanFormat,
        /// Write the plan here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long)]
        no_data: bool,
        /// The world size the plan is for (resolves `data = auto`).
        #[arg(long)]
        world: Option<u64>,
    },
    /// Show the cost of one training step before anything runs: parameters
    /// and FLOPs per layer, memory per rank, communication.
    Explain {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
        format: ExplainFormat,
        /// The world size to explain the plan for (resolves `data = auto`).
        #[arg(long)]
        world: Option<u64>,
        /// A cluster description (clusters/*.yaml): predict the step on it,
        /// part by part, and check the memory per rank against the device's.
        #[arg(long, value_name = "YAML")]
        cluster: Option<PathBuf>,
    },
    /// Search the layouts of a file on N devices of a cluster (data ×
    /// tensor × pipeline × shard × micro-batches), ranked by the predicted
    /// step at the file's global batch; the checker's refusals are counted
    /// by rule.
    Layout {
        file: PathBuf,
        /// The cluster description (clusters/*.yaml).
        #[arg(long, value_name = "YAML")]
        cluster: PathBuf,
        /// The number of devices (ranks) to lay the run out on.
        #[arg(long)]
        world: u64,
        /// The global batch (samples a step) to lay out; the file's
        /// (micro_batch × accumulate × data) by default.
        #[arg(long)]
        batch: Option<u64>,
        /// How many of the fastest layouts to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
        format: ExplainFormat,
    },
    /// Measure this machine (matrix products, memory, collectives over 2 …
    /// N ranks) and write it as a cluster description for `--cluster`.
    Calibrate(calibrate::CalibrateArgs),
    /// Train: a `.dtl` file or a compiled plan (`.yaml`/`.json`), on as many
    /// ranks as the plan has (started through mpirun), or as one rank of an
    /// outer launcher's job (`mpirun -n N dtl run ...`, `srun`).
    Run(run::RunArgs),
    /// Run the module tests (`test name { ... }`) of the files.
    Test {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Seed for the random inputs and weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Rewrite files in the canonical layout (comments kept), and the files
    /// they import within their folder; with `--check`, change nothing and
    /// exit 1 with a diff if any file would change.
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        check: bool,
    },
    /// A language server over stdio, for editors: diagnostics, hover,
    /// go-to-definition, completion.
    Lsp,
    /// Draw the model graph (modules as clusters, shapes on edges, pipeline
    /// stages coloured) or the pipeline schedule, as SVG, PNG or Graphviz DOT.
    Graph {
        file: PathBuf,
        /// `.svg`, `.png` or `.dot` [default: DOT on standard output].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Draw the pipeline schedule (micro-batches per stage over time)
        /// instead of the model.
        #[arg(long)]
        timeline: bool,
        /// With `--timeline`: a cluster description (clusters/*.yaml); each
        /// pass drawn as long as the prediction on it says.
        #[arg(long, value_name = "YAML", requires = "timeline")]
        cluster: Option<PathBuf>,
        /// The world size (resolves `data = auto`).
        #[arg(long)]
        world: Option<u64>,
    },
    /// Draw a run's loss and accuracy curves (from its metrics.jsonl) as SVG
    /// or PNG; with several runs, overlay them.
    Plot {
        /// Run folders, or metrics.jsonl files.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The chart: `.svg` or `.png` [default: RUN/loss.svg, or
        /// compare.svg here for several runs].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Logarithmic loss axis.
        #[arg(long)]
        log_y: bool,
    },
    /// The loss and metrics of trained weights on the held-out rows, or on
    /// every row of another file (`--data`).
    Eval(infer::EvalArgs),
    /// The model's outputs for rows of features: per row the output, and
    /// for classifiers the class and the probabilities, as JSON lines.
    Predict(infer::PredictArgs),
    /// Write a checkpoint's weights as one safetensors file under the
    /// model's names, however the run was sharded: read slice by slice,
    /// never the whole model in memory.
    Export(infer::ExportArgs),
    /// Continue a text with a next-token model, token by token (keys and
    /// values of the tokens before kept where the model allows).
    Generate(infer::GenerateArgs),
    /// List the runs under a folder: file, git commit, plan fingerprint,
    /// steps, last and best evaluation, wall time and status (finished,
    /// failed, interrupted, running, or died: killed or its machine lost).
    Runs {
        /// The folder to look in (run folders up to three levels down).
        #[arg(default_value = "runs")]
        dir: PathBuf,
        /// One JSON object per run instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the versions of dtl and of the backends it was built with;
    /// with `--collectives`, check a collective backend over the ranks this
    /// process was started with (`mpirun -n 2 dtl info --collectives`).
    Info {
        /// All-reduce, broadcast, send and receive real tensors, and check
        /// the results.
        #[arg(long)]
        collectives: bool,
        /// The backend to check: auto (NCCL on CUDA, MPI on the CPU), mpi
        /// or nccl.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// cpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        device: String,
        /// The size of the tensors, in MB.
        #[arg(long, default_value_t = 16.0)]
        megabytes: f64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    Human,
    Json,
    Github,
    Sarif,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ExplainFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Yaml,
    Json,
}

/// Prints a line on stdout; a closed pipe (`dtl ... | head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod calibrate;
mod infer;
mod layout;
mod lsp;
mod plot;
mod run;
mod runs;

/// A failure that ends the command, with its exit code.
pub struct Failure {
    code: u8,
    message: Option<String>,
}

impl Failure {
    pub fn usage(message: String) -> Self {
        Failure {
            code: 2,
            message: Some(message),
        }
    }

    pub fn errors() -> Self {
        Failure {
            code: 1,
            message: None,
        }
    }

    /// A failure of the command's own (exit 1), with what to say.
    pub fn error(message: String) -> Self {
        Failure {
            code: 1,
            message: Some(message),
        }
    }

    /// Ends with `code` and nothing more to say (it was said already).
    pub fn exit(code: u8) -> Self {
        Failure {
            code,
            message: None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides: Result<Vec<_>, String> = cli
        .set
        .iter()
        .map(|o| dtl_compiler::overrides::parse(o))
        .collect();
    let overrides = match overrides {
        Ok(overrides) => overrides,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let data_limits = match dtl_compiler::input::parse_budget(&cli.data_budget) {
        Ok(mut limits) => {
            limits.show_values = cli.show_values;
            limits
        }
        Err(message) => {
            eprintln!("error: --data-budget: {message}");
            return ExitCode::from(2);
        }
    };
    // What `--set`, `--strict`, the data budget and a command's
    // `--world`/`--no-data` ask of a `.dtl` file.
    let request = |world: Option<u64>, no_data: bool| Request {
        overrides: overrides.clone(),
        world,
        no_data,
        strict: cli.strict,
        data_limits: data_limits.clone(),
    };
    let result = match cli.command {
        Command::Check {
            files,
            format,
            data,
            no_data: _,
            world,
            memory,
        } => match memory
            .as_deref()
            .map(dtl_compiler::input::parse_size)
            .transpose()
        {
            Ok(memory) => check(&files, format, &request(None, !data), &world, memory),
            Err(message) => Err(Failure::usage(format!("--memory: {message}"))),
        },
        Command::Compile {
            file,
            format,
            output,
            no_data,
            world,
        } => compile(&file, format, output.as_deref(), &request(world, no_data)),
        Command::Run(args) => {
            let world = args.world;
            run::run(args, &request(world, false))
        }
        Command::Test { files, seed } => run::test(&files, seed, &request(None, false)),
        Command::Explain {
            file,
            format,
            world,
            cluster,
        } => explain(&file, format, &request(world, false), cluster.as_deref()),
        Command::Layout {
            file,
            cluster,
            world,
            batch,
            top,
            format,
        } => layout::layout(
            &file,
            &cluster,
            (world, batch, top),
            format == ExplainFormat::Json,
            &request(None, true),
        ),
        Command::Calibrate(args) => calibrate::calibrate(args),
        Command::Plot {
            runs,
            output,
            log_y,
        } => plot_runs(&runs, output, log_y),
        Command::Lsp => lsp::serve(),
        Command::Runs { dir, json } => list_runs(&dir, json),
        Command::Eval(args) => infer::eval(args, &request(None, false)),
        Command::Predict(args) => infer::predict(args, &request(None, false)),
        Command::Generate(args) => infer::generate(args, &request(None, false)),
        Command::Export(args) => infer::export(args),
        Command::Fmt { files, check } => fmt(&files, check),
        Command::Graph {
            file,
            output,
            timeline,
            cluster,
            world,
        } => {
            let timeline = match (timeline, cluster) {
                (false, _) => None,
                (true, cluster) => Some(cluster),
            };
            graph(&file, output.as_deref(), timeline, &request(world, false))
        }
        Command::Info {
            collectives,
            backend,
            device,
            megabytes,
        } => {
            if collectives {
                run::check_collectives(&backend, &device, megabytes)
            } else {
                out!("dtl {}", env!("CARGO_PKG_VERSION"));
                out!("{}", run::backend_info());
                Ok(())
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = failure.message {
                eprintln!("error: {message}");
            }
            ExitCode::from(failure.code)
        }
    }
}

pub fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read `{}`: {e}", path.display())))
}

fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Prints diagnostics for people: each with its source excerpt, then a count.
pub fn report(diagnostics: &Diagnostics) {
    if diagnostics.is_empty() {
        return;
    }
    eprint!("{}", diagnostics.render_human(use_color()));
    let errors = diagnostics.error_count();
    let warnings = diagnostics.items.len() - errors;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut counts = Vec::new();
    if errors > 0 {
        counts.push(format!("{errors} error{}", plural(errors)));
    }
    if warnings > 0 {
        counts.push(format!("{warnings} warning{}", plural(warnings)));
    }
    eprintln!("{}: {}", diagnostics.name, counts.join(", "));
}

fn check(
    files: &[PathBuf],
    format: CheckFormat,
    request: &Request,
    world: &[u64],
    memory: Option<u64>,
) -> Result<(), Failure> {
    let mut records = Vec::new();
    let mut all = Vec::new();
    let mut failed = false;
    // Files whose data was not read (no `--data`): said once, at the end.
    let mut unread = 0;
    for path in files {
        let text = read(path)?;
        let name = path.display().to_string();
        let mut options = request.options(path);
        options.world = world.to_vec();
        options.memory_limit = memory;
        let (diagnostics, ok) = match dtl_compiler::check_source(&name, &text, &options) {
            Ok(checked) => {
                let reads_files = checked
                    .experiment
                    .as_ref()
                    .is_some_and(|e| !e.data.source.files().is_empty());
                if reads_files && !options.probe_data {
                    unread += 1;
                }
                (checked.warnings, true)
            }
            Err(diagnostics) => (diagnostics, false),
        };
        failed |= !ok;
        match format {
            CheckFormat::Human => {
                report(&diagnostics);
                if ok {
                    out!("{name}: ok");
                }
            }
            CheckFormat::Json => records.extend(diagnostics.records()),
            CheckFormat::Github => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(diagnostics.render_github().as_bytes());
            }
            CheckFormat::Sarif => all.push(diagnostics),
        }
    }
    if unread > 0 && matches!(format, CheckFormat::Human) {
        let files = if unread == 1 {
            "its data file was"
        } else {
            "their data files were"
        };
        out!(
            "note: {files} not read; `dtl check --data` also checks the model's widths and classes and the batch against the rows"
        );
    }
    if let CheckFormat::Sarif = format {
        use std::io::Write;
        let _ = std::io::stdout().write_all(dtl_compiler::tools::sarif::render(&all).as_bytes());
    }
    if let CheckFormat::Json = format {
        out!(
            "{}",
            serde_json::to_string_pretty(&records).expect("records serialize")
        );
    }
    if failed {
        Err(Failure::errors())
    } else {
        Ok(())
    }
}

fn compile(
    path: &Path,
    format: PlanFormat,
    output: Option<&Path>,
    request: &Request,
) -> Result<(), Failure> {
    let plan = load_plan(&Input::Source(path.to_path_buf()), request)?;
    let text = match format {
        PlanFormat::Yaml => plan.to_yaml(),
        PlanFormat::Json => plan.to_json(),
    };
    match output {
        None => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
        Some(out) => std::fs::write(out, text)
            .map_err(|e| Failure::usage(format!("cannot write `{}`: {e}", out.display())))?,
    }
    Ok(())
}

fn explain(
    path: &Path,
    format: ExplainFormat,
    request: &Request,
    cluster: Option<&Path>,
) -> Result<(), Failure> {
    use dtl_compiler::tools::{cluster::Cluster, predict};
    let cluster = match cluster {
        Some(file) => Some(Cluster::load(file).map_err(Failure::usage)?),
        None => None,
    };
    let plan = load_plan(&Input::of(path), request)?;
    let cost = dtl_compiler::tools::explain::cost(&plan);
    let prediction = cluster.map(|c| predict::predict(&plan, &cost, &c));
    /// The costs with the prediction beside them.
    #[derive(serde::Serialize)]
    struct Explained<'a> {
        #[serde(flatten)]
        cost: &'a dtl_compiler::tools::explain::Cost,
        #[serde(skip_serializing_if = "Option::is_none")]
        prediction: Option<&'a predict::Prediction>,
    }
    match format {
        ExplainFormat::Text => {
            let mut text = cost.render(&plan);
            if let Some(p) = &prediction {
                text.push_str(&predict::render(p));
            }
            out!("{}", text.trim_end())
        }
        ExplainFormat::Json => {
            let explained = Explained {
                cost: &cost,
                prediction: prediction.as_ref(),
            };
            out!(
                "{}",
                serde_json::to_string_pretty(&explained).expect("costs serialize")
            )
        }
    }
    match prediction.map(|p| p.memory) {
        Some(m) if !m.fits() => Err(Failure::error(format!(
            "a rank needs {} of memory, more than the {} the cluster's device has: shard, split or cut the model further (`dtl explain` shows each part)",
            dtl_compiler::tools::explain::bytes(m.per_rank_bytes),
            dtl_compiler::tools::explain::bytes(m.device_bytes)
        ))),
        _ => Ok(()),
    }
}

/// Formats every file; a file with syntax errors is reported and left as it
/// is. Files are replaced whole (temp file + rename).
/// The folder a file given to `dtl fmt` lies in: the imports it follows
/// stay inside it.
fn folder_of(file: &Path) -> PathBuf {
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty());
    let folder = folder.unwrap_or(Path::new("."));
    folder
        .canonicalize()
        .unwrap_or_else(|_| folder.to_path_buf())
}

fn fmt(files: &[PathBuf], check: bool) -> Result<(), Failure> {
    let mut failed = false;
    // Each file given, then what it imports (each file once), as long as
    // it lies in the folder of the file given.
    let mut queue: std::collections::VecDeque<(PathBuf, PathBuf)> =
        files.iter().map(|f| (f.clone(), folder_of(f))).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some((path, root)) = queue.pop_front() {
        if !seen.insert(path.canonicalize().unwrap_or_else(|_| path.clone())) {
            continue;
        }
        let text = read(&path)?;
        let name = path.display().to_string();
        let (syntax, _) = dtl_compiler::syntax::parse(&text);
        for import in syntax.items.iter().filter_map(|item| match item {
            dtl_compiler::ast::Item::Import(import) => Some(import),
            _ => None,
        }) {
            let imported = path.parent().unwrap_or(Path::new("")).join(&import.path);
            match imported.canonicalize() {
                Ok(real) if real.starts_with(&root) => queue.push_back((imported, root.clone())),
                // A missing file is `dtl check`'s to report.
                Ok(_) => eprintln!(
                    "note: not formatted: `{}`, imported by {name}, lies outside {}",
                    import.path,
                    root.display()
                ),
                Err(_) => {}
            }
        }
        let formatted = match dtl_compiler::tools::format::format_source(&text) {
            Ok(formatted) => formatted,
            Err(errors) => {
                let mut diagnostics = Diagnostics::new(&name, &text);
                for err in errors {
                    diagnostics.push(err);
                }
                report(&diagnostics);
                failed = true;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if check {
            out!(
                "{}",
                dtl_compiler::tools::format::unified_diff(&name, &text, &formatted).trim_end()
            );
            failed = true;
        } else {
            let tmp = path.with_extension("dtl.fmt-tmp");
            std::fs::write(&tmp, &formatted)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| Failure::usage(format!("cannot write `{name}`: {e}")))?;
            out!("formatted {name}");
        }
    }
    if failed {
        Err(Failure::errors())
    } else {
        Ok(())
    }
}

/// `dtl graph`: the picture's format follows the output's extension.
/// `timeline`: the pipeline schedule instead of the model, its passes
/// timed on a cluster when one is given.
fn graph(
    path: &Path,
    output: Option<&Path>,
    timeline: Option<Option<PathBuf>>,
    request: &Request,
) -> Result<(), Failure> {
    use dtl_compiler::tools::{cluster::Cluster, explain, graph, predict};
    let cluster = match timeline.as_ref().and_then(Option::as_ref) {
        Some(file) => Some(Cluster::load(file).map_err(Failure::usage)?),
        None => None,
    };
    let plan = load_plan(&Input::of(path), request)?;
    let stage_of = plan.topology.stage_of_nodes();
    let layout = &plan.topology.parallelism;
    let (stages, micro_batches) = (layout.pipeline as u32, layout.micro_batches as u32);
    let svg = || match (&timeline, &cluster) {
        (Some(_), Some(cluster)) => {
            let cost = explain::cost(&plan);
            let prediction = predict::predict(&plan, &cost, cluster);
            let pieces = predict::piece_times(&plan, &cost, cluster);
            graph::timed_timeline_svg(&graph::TimedStep {
                stages,
                micro_batches,
                schedule: layout.schedule,
                rounds: plan.train.accumulate,
                pieces: &pieces,
                prediction: &prediction,
            })
        }
        (Some(_), None) => graph::timeline_svg(stages, micro_batches, layout.schedule),
        (None, _) => graph::model_svg(&plan, &stage_of),
    };
    let timeline = timeline.is_some();
    let ext = output
        .and_then(|o| o.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bytes = match ext.as_deref() {
        None if timeline => svg().into_bytes(),
        None | Some("dot") if !timeline => graph::model_dot(&plan, &stage_of).into_bytes(),
        Some("svg") => svg().into_bytes(),
        Some("png") => match plot::render_png(&svg()) {
            Ok(png) => png,
            Err(err) => {
                eprintln!("{:?}", miette::Report::new(err));
                return Err(Failure::errors());
            }
        },
        _ => {
            return Err(Failure::usage(format!(
                "cannot tell the picture's format from `{}`: name it .svg, .png{}",
                output.map_or(String::new(), |o| o.display().to_string()),
                if timeline { "" } else { " or .dot" }
            )))
        }
    };
    match output {
        None => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&bytes);
        }
        Some(out) => {
            std::fs::write(out, bytes)
                .map_err(|e| Failure::usage(format!("cannot write `{}`: {e}", out.display())))?;
            out!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn plot_runs(runs: &[PathBuf], output: Option<PathBuf>, log_y: bool) -> Result<(), Failure> {
    let result = match runs {
        [run] => {
            let folder = if run.is_dir() {
                run.as_path()
            } else {
                run.parent().unwrap_or(Path::new("."))
            };
            let output = output.unwrap_or_else(|| folder.join("loss.svg"));
            plot::plot(run, &output, log_y).map(|()| output)
        }
        several => {
            let output = output.unwrap_or_else(|| PathBuf::from("compare.svg"));
            plot::plot_many(several, &output, log_y).map(|()| output)
        }
    };
    match result {
        Ok(output) => {
            out!("wrote {}", output.display());
            Ok(())
        }
        Err(err) => {
            eprintln!("{:?}", miette::Report::new(err));
            Err(Failure::errors())
        }
    }
}

fn list_runs(dir: &Path, json: bool) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a folder (runs are in runs/ by default)",
            dir.display()
        )));
    }
    let rows = runs::list(dir);
    if json {
        for row in &rows {
            out!("{}", serde_json::to_string(row).expect("a row serializes"));
        }
    } else if rows.is_empty() {
        out!("no runs under {}", dir.display());
    } else {
        print!("{}", runs::table(&rows));
    }
    Ok(())
}

/// The plan `input` stands for: a `.dtl` file compiled (its warnings
/// reported), or a compiled plan read back.
pub fn load_plan(input: &Input, request: &Request) -> Result<Plan, Failure> {
    load_plan_with(input, request, true)
}

/// [`load_plan`] without the warnings (the ranks of a job after the first:
/// the warnings were said once already); errors are still reported.
pub fn load_plan_quietly(input: &Input, request: &Request) -> Result<Plan, Failure> {
    load_plan_with(input, request, false)
}

fn load_plan_with(input: &Input, request: &Request, warnings: bool) -> Result<Plan, Failure> {
    match dtl_compiler::input::load_plan(input, request) {
        Ok((plan, said)) => {
            if warnings {
                report(&said);
            }
            Ok(plan)
        }
        Err(LoadError::Invalid(diagnostics)) => {
            report(&diagnostics);
            Err(Failure::errors())
        }
        Err(err) => Err(Failure::usage(err.to_string())),
    }
}

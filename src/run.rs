//! The commands that need the runtime: `run` and `test`. Without the
//! `runtime` feature they explain how to get it.

use std::path::PathBuf;

use dtl_compiler::input::{Input, Request};

use crate::{load_plan, Failure};
#[cfg(feature = "runtime")]
use crate::{load_plan_quietly, read, report};

/// Runs every module test of every file; a pytest-like summary line at the end.
#[cfg(feature = "runtime")]
pub fn test(files: &[PathBuf], seed: u64, request: &Request) -> Result<(), Failure> {
    restart_with_environment();
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in files {
        let text = read(path)?;
        let name = path.display().to_string();
        let mut options = request.options(path);
        options.probe_data = false;
        let checked = match dtl_compiler::check_source(&name, &text, &options) {
            Ok(checked) => checked,
            Err(diagnostics) => {
                report(&diagnostics);
                return Err(Failure::errors());
            }
        };
        for test in &checked.tests {
            match dtl_runtime::module_test::run(test, seed) {
                Ok(failures) if failures.is_empty() => {
                    passed += 1;
                    out!("test {name}::{} ... ok", test.name);
                }
                Ok(failures) => {
                    failed += 1;
                    out!("test {name}::{} ... FAILED", test.name);
                    for failure in failures {
                        out!("    {failure}");
                    }
                }
                Err(err) => {
                    failed += 1;
                    out!("test {name}::{} ... FAILED", test.name);
                    out!("    {err}");
                }
            }
        }
    }
    out!("{passed} passed, {failed} failed");
    if failed > 0 {
        Err(Failure::errors())
    } else {
        Ok(())
    }
}

#[cfg(not(feature = "runtime"))]
pub fn test(_: &[PathBuf], _: u64, _: &Request) -> Result<(), Failure> {
    Err(Failure::usage("this dtl was built without the runtime (`--no-default-features`); rebuild with the default features to run tests".into()))
}

#[cfg(feature = "runtime")]
pub fn backend_info() -> String {
    dtl_runtime::backend_info()
}

/// `dtl info --collectives`: each rank's checks, behind its prefix.
#[cfg(feature = "runtime")]
pub fn check_collectives(backend: &str, device: &str, megabytes: f64) -> Result<(), Failure> {
    use dtl_compiler::check::Choice;
    use dtl_compiler::plan::Backend;
    restart_with_environment();
    let device: dtl_runtime::DeviceChoice = device.parse().map_err(Failure::usage)?;
    let Some(&(_, backend)) = Backend::NAMES.iter().find(|(name, _)| *name == backend) else {
        let names: Vec<&str> = Backend::NAMES.iter().map(|(name, _)| *name).collect();
        return Err(Failure::usage(format!(
            "unknown backend `{backend}` (expected {})",
            names.join(", ")
        )));
    };
    match dtl_runtime::selftest::check_collectives(device, backend, megabytes) {
        Ok(lines) => {
            for line in lines {
                out!("{line}");
            }
            Ok(())
        }
        Err(err) => Err(report_run_error(err, "")),
    }
}

#[cfg(not(feature = "runtime"))]
pub fn check_collectives(_: &str, _: &str, _: f64) -> Result<(), Failure> {
    Err(Failure::usage(
        "this dtl was built without the runtime (`--no-default-features`)".into(),
    ))
}

#[cfg(not(feature = "runtime"))]
pub fn backend_info() -> String {
    "built without the runtime (check and compile only)".to_string()
}

/// Starts this program again, once, with what must be in its environment
/// from the start (libraries read it when they are loaded, before `main`):
///
/// - MKL's multi-threaded matrix products are not run-to-run reproducible:
///   the same seeded run gave one of two results in the last bits about one
///   time in twenty on two threads (`MKL_CBWR=AUTO,STRICT` did not help;
///   one MKL thread did, 40 runs out of 40, with no loss of speed on the
///   examples), so `MKL_NUM_THREADS=1` unless the user chose;
/// - NCCL: cudarc looks for `libnccl.so`, the torch wheel ships
///   `libnccl.so.2`; where a GPU is visible and NCCL does not load as it
///   is, a folder with a `libnccl.so` link goes first on `LD_LIBRARY_PATH`
///   (ranks started through mpirun inherit both).
#[cfg(feature = "runtime")]
pub(crate) fn restart_with_environment() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("DTL_RESTARTED").is_some() {
        return;
    }
    let mut env: Vec<(&str, std::ffi::OsString)> = Vec::new();
    if std::env::var_os("MKL_NUM_THREADS").is_none() {
        env.push(("MKL_NUM_THREADS", "1".into()));
    }
    // Open MPI's fault tolerance (ULFM): a lost peer is an error a rank can
    // report (`MPI_ERR_PROC_FAILED`, with the failed ranks), not an abort
    // from inside MPI. Read by MPI_Init; other MPIs ignore it.
    if std::env::var_os("OMPI_MCA_mpi_ft_enable").is_none() {
        env.push(("OMPI_MCA_mpi_ft_enable", "true".into()));
    }
    if let Some(dir) = nccl_library_dir() {
        let mut paths = vec![dir];
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            env.push(("LD_LIBRARY_PATH", joined));
        }
    }
    if env.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(env)
        .env("DTL_RESTARTED", "1")
        .exec();
    // `exec` returns only when it failed: go on, less reproducibly.
    eprintln!("warning: could not restart with MKL_NUM_THREADS=1 ({err}); runs may differ in the last bits");
}

/// A folder with a `libnccl.so` link to torch's NCCL, where a GPU is
/// visible and NCCL does not load as it is.
#[cfg(all(feature = "runtime", feature = "nccl"))]
fn nccl_library_dir() -> Option<PathBuf> {
    if !dtl_runtime::device::cuda_available() {
        return None;
    }
    match dtl_runtime::comm::nccl::library_dir() {
        Ok(dir) => dir,
        Err(err) => {
            // Said again, as an error, if the run needs NCCL.
            eprintln!("warning: {err}");
            None
        }
    }
}

#[cfg(all(feature = "runtime", not(feature = "nccl")))]
fn nccl_library_dir() -> Option<PathBuf> {
    None
}

/// `dtl run`'s arguments.
#[derive(clap::Args)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub struct RunArgs {
    /// The experiment (`.dtl`) or a compiled plan; with `--resume`, a new
    /// layout for the run being resumed (another world size, say).
    #[arg(required_unless_present = "resume")]
    pub file: Option<PathBuf>,
    /// Output folder for plan.yaml, metrics.jsonl, model.safetensors and
    /// summary.json; it must be empty or new [default: a new folder
    /// runs/<file stem>/<n>, with runs/<file stem>/latest pointing at it].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run already in --out (its files are deleted first).
    #[arg(long, requires = "out")]
    pub overwrite: bool,
    /// Start even when `dtl explain`'s memory estimate says the run does
    /// not fit in this machine's free memory.
    #[arg(long)]
    pub force: bool,
    /// cpu, cuda or auto (CUDA when present).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Initial weights from a safetensors file, by parameter name.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint: with its
    /// own plan.yaml, or with FILE's plan when given.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "init"])]
    pub resume: Option<PathBuf>,
    /// The world size: how many ranks to start (resolves `data = auto`).
    /// Without it, as many as the plan has.
    #[arg(long)]
    pub world: Option<u64>,
    /// Each rank records what it ran and a hash of its weights after every
    /// step, in `rank-K.trace.jsonl`.
    #[arg(long)]
    pub trace: bool,
    /// Seconds a rank of a multi-rank run may wait for its peers without
    /// progress before it ends the job (a peer hung or died); waits for a
    /// peer's evaluation or checkpoint write get more, by their size.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write no TensorBoard event files.
    #[arg(long)]
    pub no_tensorboard: bool,
    /// A testing aid: a slow link between sites, `groups: 100 Mbit/s,
    /// 10 ms` (each sync group a site) or `sites=2: 1 Gbit/s, 1 ms` (sites
    /// of consecutive replicas); every collective across sites takes at
    /// least what it would over that link.
    #[arg(long, value_name = "SPEC")]
    pub link: Option<String>,
}

/// `--link`, read.
#[cfg(feature = "runtime")]
fn link(args: &RunArgs) -> Result<Option<dtl_runtime::comm::throttle::Link>, Failure> {
    match &args.link {
        Some(text) => dtl_runtime::comm::throttle::Link::parse(text)
            .map(Some)
            .map_err(|message| Failure::usage(format!("--link: {message}"))),
        None => Ok(None),
    }
}

/// How a line on the terminal starts: which rank says it, in a run of
/// several.
#[cfg(feature = "runtime")]
fn prefix(world: &dtl_runtime::World) -> String {
    if world.size > 1 {
        format!("[rank {}] ", world.rank)
    } else {
        String::new()
    }
}

/// torchrun starts every process as a whole `dtl run` of its own: each
/// would launch (or be) a separate job writing the same folder. dtl starts
/// its ranks itself, over MPI, so a process of torchrun's is refused with
/// the command that does what was meant. (Accepting torchrun as a
/// launcher would need its TCP rendezvous to bootstrap MPI, which MPI
/// cannot join.)
#[cfg(feature = "runtime")]
fn refuse_torchrun() -> Result<(), Failure> {
    if std::env::var_os("TORCHELASTIC_RUN_ID").is_none() || dtl_runtime::world::launched_by_mpi() {
        return Ok(());
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "?".into());
    let world = var("WORLD_SIZE");
    Err(Failure::usage(format!(
        "dtl run was started by torchrun (TORCHELASTIC_RUN_ID is set; this is rank {} of {world}): \
         every torchrun process would start a whole run of its own into the same folder. \
         dtl starts its ranks itself: run `dtl run FILE` once, with `parallel {{ data = {world} }}` \
         in the file or `--set parallel.data={world}`; across machines, start it with mpirun or \
         srun (docs/distributed.md)",
        var("RANK")
    )))
}

#[cfg(feature = "runtime")]
pub fn run(args: RunArgs, request: &Request) -> Result<(), Failure> {
    use dtl_runtime::run_folder::Target;
    restart_with_environment();
    // Ctrl-C and SIGTERM stop at the next step boundary with a checkpoint
    // (the launcher waits for its ranks to do so).
    dtl_runtime::signals::install();
    let device: dtl_runtime::DeviceChoice = args.device.parse().map_err(Failure::usage)?;
    refuse_torchrun()?;
    // A rank of a job compiles the plan again, quietly: the launcher (or
    // rank 0 of an outer launcher's job) has said the warnings.
    let rank_of_job = dtl_runtime::world::launched_by_mpi();
    let quiet_compile = rank_of_job
        && (std::env::var_os("DTL_LAUNCHED").is_some()
            || dtl_runtime::world::rank_from_launcher() != Some(0));
    let load = |input: &Input| {
        if quiet_compile {
            load_plan_quietly(input, request)
        } else {
            load_plan(input, request)
        }
    };
    let (plan, target) = match (&args.resume, &args.file) {
        // A resumed run goes on with the plan it was started with...
        (Some(dir), None) => (
            load(&Input::Plan(dir.join("plan.yaml")))?,
            Target::Resume(dir.clone()),
        ),
        // ...or with a new layout of the same experiment.
        (Some(dir), Some(path)) => (load(&Input::of(path))?, Target::Resume(dir.clone())),
        (None, Some(path)) => {
            let stem = path
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            let target = Target::Fresh {
                out: args.out.clone(),
                stem,
                overwrite: args.overwrite,
            };
            (load(&Input::of(path))?, target)
        }
        (None, None) => {
            return Err(Failure::usage(
                "give a .dtl file or plan to run, or --resume DIR".into(),
            ))
        }
    };
    dtl_runtime::world::supports(&plan, device).map_err(|e| report_run_error(e, ""))?;
    if rank_of_job {
        return run_as_rank(&plan, &args, &target, device);
    }
    let ranks = plan.topology.world_size() as usize;
    if let Some(link) = link(&args)? {
        // Said once here, rather than by every rank.
        let sites = link.sites_of(&plan.topology.parallelism);
        sites.map_err(Failure::usage)?;
    }
    if ranks > 1 {
        // Said before anything is claimed or written.
        dtl_runtime::launch::find_mpirun().map_err(|e| report_run_error(e, ""))?;
    }
    // Every rank this launcher starts runs here: they must fit together.
    if !args.force {
        let ranks: Vec<u64> = (0..plan.topology.world_size()).collect();
        dtl_runtime::memory::check_fits(&plan, &ranks).map_err(|e| report_run_error(e, ""))?;
    }
    // This process decides where the run goes, and holds the folder while
    // the run lasts (its ranks too, when it starts them).
    let Some(folder) = claim(&target)? else {
        return Ok(());
    };
    if let Target::Resume(dir) = &target {
        // Said once here, rather than by every rank it would start.
        dtl_runtime::checkpoint::exists(dir).map_err(|e| report_run_error(e, ""))?;
    }
    if ranks > 1 {
        // Start the ranks: each runs this same command line, into the
        // folder claimed here.
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        return match dtl_runtime::launch::launch(ranks, &args, &folder.path) {
            // mpirun's own word is not enough: with a host lost, it has
            // returned 0. The job finished only if rank 0 wrote its summary.
            Ok(0) if folder.path.join("summary.json").is_file() => Ok(()),
            Ok(0) => {
                let how = how_ranks_ended(&folder.path);
                eprintln!("error: the job ended without finishing: rank 0 wrote no summary{how}");
                let message = format!("the job ended without a summary{how}");
                let _ = dtl_runtime::run_record::end_if_running(&folder.path, message);
                Err(Failure::exit(1))
            }
            Ok(code) => {
                let message = format!("mpirun exited with {code}{}", how_ranks_ended(&folder.path));
                let _ = dtl_runtime::run_record::end_if_running(&folder.path, message);
                Err(Failure::exit(code.clamp(1, 255) as u8))
            }
            Err(err) => Err(report_run_error(err, "")),
        };
    }
    let mut world = dtl_runtime::World::join(&plan, device).map_err(|e| report_run_error(e, ""))?;
    if let Some(link) = &link(&args)? {
        world
            .slow_link(link, &plan.topology)
            .map_err(Failure::usage)?;
    }
    train_in(&plan, &args, &target, device, &world, &folder, None)
}

/// What the ranks' logs say of how their last attempt ended ("; rank 0:
/// failed: step 12: peer on host h2 (rank 1) lost: …"), or where to look.
#[cfg(feature = "runtime")]
fn how_ranks_ended(folder: &std::path::Path) -> String {
    let mut said = Vec::new();
    for rank in 0.. {
        let Ok(log) = std::fs::read_to_string(folder.join(format!("rank-{rank}.log"))) else {
            break;
        };
        let attempt = log.rsplit("\n--- ").next().unwrap_or(&log);
        if let Some(end) = attempt
            .lines()
            .rev()
            .find(|l| l.starts_with("failed: ") || l.contains("made no progress"))
        {
            said.push(format!("rank {rank}: {end}"));
        }
    }
    if said.is_empty() {
        format!(
            " (a rank or its host was lost?); see the rank-K.log files in {}",
            folder.display()
        )
    } else {
        format!("; {}", said.join("; "))
    }
}

/// Claims the run folder; `None` when the run to resume is finished (said
/// here; nothing changed).
#[cfg(feature = "runtime")]
fn claim(
    target: &dtl_runtime::run_folder::Target,
) -> Result<Option<dtl_runtime::run_folder::RunFolder>, Failure> {
    match dtl_runtime::run_folder::RunFolder::claim(target) {
        Ok(folder) => Ok(Some(folder)),
        Err(Ok(finished)) => {
            eprintln!(
                "the run in {} is finished{}: nothing to resume, and nothing was changed",
                finished.path.display(),
                finished
                    .steps
                    .map_or(String::new(), |s| format!(" ({s} steps)"))
            );
            Ok(None)
        }
        Err(Err(err)) => Err(report_run_error(err, "")),
    }
}

/// One rank of a job started by a launcher (dtl's own, which has claimed
/// the folder, or an outer `mpirun`/`srun`, where rank 0 claims it and
/// tells the others).
#[cfg(feature = "runtime")]
fn run_as_rank(
    plan: &dtl_compiler::plan::Plan,
    args: &RunArgs,
    target: &dtl_runtime::run_folder::Target,
    device: dtl_runtime::DeviceChoice,
) -> Result<(), Failure> {
    use dtl_runtime::run_folder::RunFolder;
    // Watched from the start: a peer that never joins is a hang too.
    let rank = dtl_runtime::world::rank_from_launcher().unwrap_or(0);
    let timeout = std::time::Duration::from_secs(args.timeout.max(1));
    let watchdog = std::sync::Arc::new(dtl_runtime::watchdog::Watchdog::start(rank, timeout));
    if let Some(folder) = std::env::var_os("DTL_RUN_FOLDER") {
        // Heartbeats from the start, so a rank that never joins is named.
        watchdog.set_folder(std::path::Path::new(&folder));
    }
    dtl_runtime::fault::strike(rank, 0);
    let mut world = dtl_runtime::World::join(plan, device).map_err(|e| report_run_error(e, ""))?;
    if let Some(link) = &link(args)? {
        let slowed = world.slow_link(link, &plan.topology);
        slowed.map_err(|message| Failure::usage(format!("{}{message}", prefix(&world))))?;
    }
    let prefix = prefix(&world);
    // Under an outer launcher each rank checks its own share of its
    // machine (dtl's own launcher has checked them all).
    if !args.force && std::env::var_os("DTL_RUN_FOLDER").is_none() {
        let here = dtl_runtime::world::local_size().max(1) as u64;
        let mine = vec![world.rank as u64; here as usize];
        if let Err(err) = dtl_runtime::memory::check_fits(plan, &mine) {
            let failure = report_run_error(err, &prefix);
            world.abort(i32::from(failure.code));
        }
    }
    let folder = if let Some(path) = std::env::var_os("DTL_RUN_FOLDER") {
        RunFolder::claimed_by_launcher(path.into())
    } else {
        // Rank 0 claims and says where (an empty path: finished, nothing
        // to do; none: it could not, and has said why).
        let mine = if world.rank == 0 {
            claim(target)
        } else {
            Ok(None)
        };
        let said = match &mine {
            Ok(Some(folder)) => Some(folder.path.display().to_string()),
            Ok(None) => Some(String::new()),
            Err(_) => None,
        };
        let shared = world
            .text_from_rank_zero(said.as_deref())
            .map_err(|e| report_run_error(e, &prefix))?;
        match (mine?, shared) {
            (Some(folder), _) => folder,
            (None, Some(path)) if !path.is_empty() => RunFolder::claimed_by_launcher(path.into()),
            (None, Some(_)) => return Ok(()),
            (None, None) => return Err(Failure::exit(2)),
        }
    };
    dtl_runtime::launch::share_cores(dtl_runtime::world::local_size());
    train_in(plan, args, target, device, &world, &folder, Some(watchdog))
}

/// Trains on this rank into the claimed folder, and reports the outcome.
#[cfg(feature = "runtime")]
fn train_in(
    plan: &dtl_compiler::plan::Plan,
    args: &RunArgs,
    target: &dtl_runtime::run_folder::Target,
    device: dtl_runtime::DeviceChoice,
    world: &dtl_runtime::World,
    folder: &dtl_runtime::run_folder::RunFolder,
    watchdog: Option<std::sync::Arc<dtl_runtime::watchdog::Watchdog>>,
) -> Result<(), Failure> {
    let prefix = prefix(world);
    let options = dtl_runtime::RunOptions {
        out_dir: folder.path.clone(),
        device,
        progress: !args.quiet,
        init_weights: args.init.clone(),
        resume: matches!(target, dtl_runtime::run_folder::Target::Resume(_)),
        trace: args.trace,
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        watchdog,
        tensorboard: !args.no_tensorboard,
    };
    match dtl_runtime::train(plan, &options, world) {
        Ok(summary) if world.rank == 0 => {
            print_summary(&summary, &prefix);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(err) => {
            // An error every rank met at the same step is said once, and
            // every rank stops by itself; one rank's own failure ends the
            // whole job at once, so no peer waits for it forever.
            let together = err.is_collective();
            let err_code = err.exit_code();
            if world.rank == 0 || !together {
                let failure = report_run_error(err, &prefix);
                if world.size > 1 && !together {
                    world.abort(i32::from(failure.code));
                }
                return Err(failure);
            }
            Err(Failure::exit(err_code))
        }
    }
}

/// Prints a run error (each line behind the rank's prefix); set-up errors
/// (found before anything ran or was written) exit with 2, an interrupted
/// run with 128 + the signal, others with 1.
#[cfg(feature = "runtime")]
fn report_run_error(err: dtl_runtime::RunError, prefix: &str) -> Failure {
    let code = err.exit_code();
    let report = format!("{:?}", miette::Report::new(err));
    for line in report.lines() {
        eprintln!("{prefix}{line}");
    }
    Failure::exit(code)
}

#[cfg(feature = "runtime")]
fn print_summary(summary: &dtl_runtime::Summary, prefix: &str) {
    out!(
        "{prefix}trained {} steps ({} epochs) on {}{} in {:.1}s: loss {:.4} -> {:.4}",
        summary.steps,
        summary.epochs,
        summary.device,
        if summary.world_size > 1 {
            format!(" × {} ranks ({})", summary.world_size, summary.backend)
        } else {
            String::new()
        },
        summary.seconds,
        summary.first_loss,
        summary.final_loss
    );
    if let Some(step) = summary.resumed_from {
        out!("{prefix}resumed from the checkpoint of step {step}");
    }
    if summary.skipped_steps > 0 {
        out!(
            "{prefix}{} steps skipped (loss or gradients not finite)",
            summary.skipped_steps
        );
    }
    match &summary.eval {
        Some(eval) if eval.eval_accuracy.is_some() => out!(
            "{prefix}held-out accuracy {:.2}% ({} rows), loss {:.4}",
            eval.eval_accuracy.unwrap_or(0.0) * 100.0,
            eval.eval_rows,
            eval.eval_loss
        ),
        Some(eval) => out!(
            "{prefix}held-out loss {:.4} ({} rows)",
            eval.eval_loss,
            eval.eval_rows
        ),
        None => out!("{prefix}no held-out rows (valid = 0): nothing was evaluated"),
    }
    if let Some(eval) = &summary.eval {
        let measures: Vec<String> = eval
            .measures
            .0
            .iter()
            .map(|(key, value)| format!("{key} {value:.4}"))
            .collect();
        if !measures.is_empty() {
            out!("{prefix}{}", measures.join(", "));
        }
    }
    if let Some(test) = &summary.test {
        let mut said = vec![format!("loss {:.4}", test.eval_loss)];
        said.extend(
            test.eval_accuracy
                .map(|a| format!("accuracy {:.2}%", a * 100.0)),
        );
        said.extend(test.measures.0.iter().map(|(key, value)| {
            format!("{} {value:.4}", key.strip_prefix("eval_").unwrap_or(key))
        }));
        out!(
            "{prefix}test ({} rows): {}",
            test.eval_rows,
            said.join(", ")
        );
    }
    if let Some(reason) = &summary.stopped_early {
        out!("{prefix}stopped early: {reason}");
    }
    if let Some(best) = &summary.best {
        out!(
            "{prefix}best {} {:.4} at step {}: weights in best/",
            best.metric,
            best.value,
            best.step
        );
    }
    out!("{prefix}outputs in {}", summary.out_dir);
}

#[cfg(not(feature = "runtime"))]
pub fn run(args: RunArgs, request: &Request) -> Result<(), Failure> {
    if let Some(path) = &args.file {
        load_plan(&Input::of(path), request)?;
    }
    Err(Failure::usage("this dtl was built without the runtime (`--no-default-features`); rebuild with the default features to run".into()))
}

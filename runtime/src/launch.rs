//! Starting the ranks of a run on this machine: `dtl run FILE --world N`
//! starts N copies of itself through `mpirun`, which give each its rank.
//! The same binary started by an outer launcher (`mpirun -n N dtl run ...`
//! across machines, `srun`) runs as one of its ranks instead
//! ([`crate::world::launched_by_mpi`]).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::error::RunError;

/// The `mpirun` to start ranks with: `DTL_MPIRUN` if set, else the one of
/// the Open MPI dtl was built against (the project's virtualenv), else the
/// first on `PATH`.
pub fn find_mpirun() -> Result<PathBuf, RunError> {
    if let Some(path) = std::env::var_os("DTL_MPIRUN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RunError::Launch {
                message: format!("DTL_MPIRUN names {}, which is not a file", path.display()),
            })
        };
    }
    let built_with = option_env!("DTL_VENV").map(|venv| Path::new(venv).join("bin/mpirun"));
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("mpirun"))
            .find(|p| p.is_file())
    });
    built_with
        .filter(|p| p.is_file())
        .or(on_path)
        .ok_or_else(|| RunError::Launch {
            message: "cannot start the ranks: no `mpirun` found (looked at DTL_MPIRUN, the virtualenv dtl was built with, and PATH); run scripts/setup.sh, or start the ranks yourself: `mpirun -n N dtl run ...`".into(),
        })
}

/// Runs `ranks` copies of this program with `args` under `mpirun`, into
/// the run folder `folder` this process has claimed (and holds while they
/// run), and waits for them: their exit code (the first failing rank's) is
/// the launch's. SIGINT and SIGTERM reach the ranks as stop requests
/// (crate::signals); if this process dies, so does the job. Oversubscribes when there are more ranks than cores, lets
/// libtorch's threads use every core it is given (no binding), and allows
/// running as root (containers).
pub fn launch(ranks: usize, args: &[OsString], folder: &Path) -> Result<i32, RunError> {
    let mpirun = find_mpirun()?;
    let exe = std::env::current_exe().map_err(|e| RunError::Launch {
        message: format!("cannot tell which program to start: {e}"),
    })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut command = Command::new(&mpirun);
    command.args(["-n", &ranks.to_string(), "--bind-to", "none"]);
    if ranks > cores {
        command.arg("--oversubscribe");
    }
    // Open MPI refuses root unless both are set (containers, CI).
    command
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    // The ranks know they were started here: the launcher has said the
    // plan's warnings already.
    command.env("DTL_LAUNCHED", "1");
    // The folder the launcher claimed: the ranks write there, and do not
    // claim it again.
    let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    command.env("DTL_RUN_FOLDER", &folder);
    // Passed on to ranks on other machines too.
    command.args(["-x", "DTL_LAUNCHED", "-x", "DTL_RUN_FOLDER"]);
    command.arg(&exe).args(args);
    // Out of the terminal's process group: Ctrl-C reaches this launcher
    // alone, which hands it on as a stop request the ranks finish a step
    // and write a checkpoint for (crate::signals); mpirun would kill them.
    command.process_group(0);
    // SAFETY: between fork and exec only `prctl`, async-signal-safe: if
    // this launcher dies (SIGKILL), mpirun gets SIGTERM and ends its ranks
    // instead of leaving them running.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| RunError::Launch {
        message: format!("cannot run {}: {e}", mpirun.display()),
    })?;
    crate::signals::forward_to(child.id());
    wait_for(&mut child, &mpirun)
}

/// How long `mpirun` may stay after one of its ranks here has failed.
const AFTER_A_FAILED_RANK: Duration = Duration::from_secs(10);

/// Waits for `mpirun` and gives its exit code. Open MPI's `prterun` was
/// seen to hang for good after a rank ended during start-up while another
/// was frozen: the failed rank left unreaped, the frozen one gone. So when
/// a rank on this machine has failed and `mpirun` is still there
/// [`AFTER_A_FAILED_RANK`] later, it is ended, with what is left of its
/// job, and the rank's exit code is the launch's.
fn wait_for(child: &mut Child, mpirun: &Path) -> Result<i32, RunError> {
    let lost = |e: std::io::Error| RunError::Launch {
        message: format!("lost track of {}: {e}", mpirun.display()),
    };
    let mut failed: Option<(Instant, i32)> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(lost)? {
            return Ok(status.code().unwrap_or(1));
        }
        match failed {
            None => failed = failed_rank(child.id()).map(|code| (Instant::now(), code)),
            Some((since, code)) if since.elapsed() > AFTER_A_FAILED_RANK => {
                eprintln!(
                    "dtl: a rank ended with exit code {code} and {} did not end {} s later; ending it and its ranks",
                    mpirun.display(),
                    AFTER_A_FAILED_RANK.as_secs()
                );
                // SAFETY: signals the process group `mpirun` leads (it was
                // started in a group of its own) and nothing else.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                child.wait().map_err(lost)?;
                return Ok(code);
            }
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exit code of a child of process `parent` that has ended with a
/// failure and is not reaped yet (a zombie), from `/proc`: none when every
/// child is running or ended well, or where `/proc` cannot be read.
fn failed_rank(parent: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's name (in parentheses): the state (field 3),
        // the parent (4), … the exit status as `waitpid` gives it (52).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields.get(1).and_then(|p| p.parse::<u32>().ok());
        if fields.first() != Some(&"Z") || ppid != Some(parent) {
            continue;
        }
        let Some(status) = fields.get(49).and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let (code, signal) = ((status >> 8) & 0xff, status & 0x7f);
        if code != 0 {
            return Some(code);
        }
        if signal != 0 {
            return Some(128 + signal);
        }
    }
    None
}

/// libtorch's threads per rank when `local` ranks share this machine's
/// cores (unless the user chose with `OMP_NUM_THREADS`).
pub fn share_cores(local: usize) {
    if local <= 1 || std::env::var_os("OMP_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tch::set_num_threads((cores / local).max(1) as i32);
}

//! The run folder: owned by one run at a time and never overwritten
//! without being asked. A new run gets a fresh folder (`runs/<stem>/<n>`,
//! with `runs/<stem>/latest` pointing at the newest) or the empty folder
//! `--out` names; a folder holding a run is refused unless `--overwrite`
//! (which clears it) or `--resume` (which continues it). Whoever claims a
//! folder holds an exclusive lock on its `run.lock` for as long as it
//! runs: a second run into it is refused, naming the holder. The lock is
//! the kernel's (flock), so a run that crashes or is killed leaves none
//! behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::RunError;
use crate::output::io_err;

/// The lock file of a run folder.
pub const LOCK: &str = "run.lock";

/// What `dtl run` was asked to write into.
#[derive(Debug, Clone)]
pub enum Target {
    /// A new run: into `out` (which must be empty, or a run folder with
    /// `overwrite`), or a fresh numbered folder under `runs/<stem>/`.
    Fresh {
        out: Option<PathBuf>,
        stem: String,
        overwrite: bool,
    },
    /// Continue the run in this folder.
    Resume(PathBuf),
}

/// A claimed run folder: its path, and the lock held while it lives.
#[derive(Debug)]
pub struct RunFolder {
    pub path: PathBuf,
    /// `None` when another process (the launcher) holds the lock for us.
    _lock: Option<File>,
}

/// What claiming a folder to resume finds when the run there is finished.
#[derive(Debug)]
pub struct Finished {
    pub path: PathBuf,
    pub steps: Option<u64>,
}

/// The names a run writes into its folder; `--overwrite` clears a folder
/// only when it holds nothing else.
fn is_run_file(name: &str) -> bool {
    const EXACT: [&str; 13] = [
        "plan.yaml",
        "metrics.jsonl",
        "summary.json",
        "run.json",
        "model.safetensors",
        "model_ema.safetensors",
        "best",
        "best.old",
        "checkpoint",
        "checkpoint.prev",
        "checkpoint.tmp",
        LOCK,
        "latest",
    ];
    EXACT.contains(&name)
        || name.ends_with(".tmp")
        || name.starts_with("events.out.tfevents.")
        || (name.starts_with("rank-") || name.starts_with(".rank-"))
            && [".log", ".jsonl", ".beat"]
                .iter()
                .any(|e| name.ends_with(e))
        || name.ends_with(".svg")
        || name.ends_with(".png")
}

impl RunFolder {
    /// Claims the folder `target` names: resolves the default, refuses a
    /// folder that holds another run (or is in use), clears it under
    /// `overwrite`, and takes the lock. A finished run to resume is
    /// `Err(Ok(Finished))`: nothing to do, nothing changed.
    pub fn claim(target: &Target) -> Result<RunFolder, Result<Finished, RunError>> {
        match target {
            Target::Resume(dir) => claim_to_resume(dir),
            Target::Fresh {
                out: Some(out),
                overwrite,
                ..
            } => claim_explicit(out, *overwrite).map_err(Err),
            Target::Fresh {
                out: None, stem, ..
            } => claim_numbered(Path::new("runs").join(stem)).map_err(Err),
        }
    }

    /// A folder a launcher has claimed for this rank's job (it holds the
    /// lock while its ranks run).
    pub fn claimed_by_launcher(path: PathBuf) -> RunFolder {
        RunFolder { path, _lock: None }
    }
}

fn refuse(path: &Path, message: String) -> RunError {
    RunError::RunFolder {
        path: path.display().to_string(),
        message,
    }
}

/// `--resume DIR`: a run folder with a checkpoint, not in use, not
/// finished.
fn claim_to_resume(dir: &Path) -> Result<RunFolder, Result<Finished, RunError>> {
    if !dir.is_dir() {
        return Err(Err(refuse(dir, "no such run folder".into())));
    }
    let lock = lock(dir).map_err(Err)?;
    let summary = dir.join("summary.json");
    if summary.is_file() {
        let steps = std::fs::read_to_string(&summary)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["steps"].as_u64());
        return Err(Ok(Finished {
            path: dir.to_path_buf(),
            steps,
        }));
    }
    Ok(RunFolder {
        path: dir.to_path_buf(),
        _lock: Some(lock),
    })
}

/// `--out DIR`: missing or empty, or a run folder to clear under
/// `--overwrite`.
fn claim_explicit(out: &Path, overwrite: bool) -> Result<RunFolder, RunError> {
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let lock = lock(out)?;
    let entries = entries(out)?;
    let others: Vec<&String> = entries.iter().filter(|n| n.as_str() != LOCK).collect();
    // What a start that failed before its first step leaves (a plan, an
    // empty log) holds nothing to lose: cleared without being asked.
    let only_a_failed_start = others.iter().all(|n| is_run_file(n)) && !holds_a_run(out);
    if !others.is_empty() {
        if !overwrite && !only_a_failed_start {
            let way_out = if out.join("summary.json").is_file() {
                "it holds a finished run".to_string()
            } else {
                format!(
                    "it already holds {}: continue that run with `dtl run --resume {}`",
                    describe(&others),
                    out.display()
                )
            };
            return Err(refuse(
                out,
                format!(
                    "{way_out} (a run's files are never overwritten without being asked); replace it with `--overwrite`, or choose another --out"
                ),
            ));
        }
        if let Some(stranger) = others.iter().find(|n| !is_run_file(n)) {
            return Err(refuse(
                out,
                format!(
                    "--overwrite clears run folders only, and `{stranger}` is not a file a run writes: choose another --out"
                ),
            ));
        }
        for name in others {
            let path = out.join(name);
            let removed = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|e| io_err(&path, e))?;
        }
    }
    Ok(RunFolder {
        path: out.to_path_buf(),
        _lock: Some(lock),
    })
}

/// The next numbered folder under `parent` (1, 2, …), created by this
/// process alone, and `parent/latest` pointed at it.
fn claim_numbered(parent: PathBuf) -> Result<RunFolder, RunError> {
    std::fs::create_dir_all(&parent).map_err(|e| io_err(&parent, e))?;
    let highest = entries(&parent)?
        .iter()
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    // Two runs starting at once race for a number: create_dir is atomic,
    // the loser takes the next.
    let mut n = highest + 1;
    let path = loop {
        let path = parent.join(n.to_string());
        match std::fs::create_dir(&path) {
            Ok(()) => break path,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io_err(&path, e)),
        }
    };
    let lock = lock(&path)?;
    point_latest(&parent, n)?;
    Ok(RunFolder {
        path,
        _lock: Some(lock),
    })
}

/// `parent/latest` → `n`, replaced atomically (a link renamed over it).
fn point_latest(parent: &Path, n: u64) -> Result<(), RunError> {
    let tmp = parent.join(format!(".latest.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(n.to_string(), &tmp).map_err(|e| io_err(&tmp, e))?;
    let latest = parent.join("latest");
    std::fs::rename(&tmp, &latest).map_err(|e| io_err(&latest, e))
}

/// Whether a folder holds a run worth keeping: a step trained (a line of
/// metrics), a checkpoint, or finished outputs.
fn holds_a_run(dir: &Path) -> bool {
    [
        "checkpoint",
        "checkpoint.prev",
        "summary.json",
        "model.safetensors",
    ]
    .iter()
    .any(|n| dir.join(n).exists())
        || std::fs::metadata(dir.join("metrics.jsonl")).is_ok_and(|m| m.len() > 0)
}

fn entries(dir: &Path) -> Result<Vec<String>, RunError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// "plan.yaml, metrics.jsonl and 3 more".
fn describe(names: &[&String]) -> String {
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("`{n}`")).collect();
    match names.len() {
        n if n > 3 => format!("{} and {} more", shown.join(", "), n - 3),
        _ => shown.join(", "),
    }
}

/// Takes the folder's lock, or says who holds it.
fn lock(dir: &Path) -> Result<File, RunError> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    // SAFETY: flock on a descriptor this function owns; no memory is
    // involved.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !taken {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(refuse(
            dir,
            format!(
                "another dtl run is using it ({}); wait for it to end, or choose another --out",
                if holder.is_empty() {
                    "its pid is not known yet".to_string()
                } else {
                    holder.to_string()
                }
            ),
        ));
    }
    let host = hostname();
    let holder = format!("pid {} on {host}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()))
        .map_err(|e| io_err(&path, e))?;
    Ok(file)
}

/// This machine's name, for messages naming where a process runs.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    if ok {
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        "this host".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_holding_a_run_is_refused_and_cleared_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r");
        let first = RunFolder::claim(&Target::Fresh {
            out: Some(out.clone()),
            stem: "x".into(),
            overwrite: false,
        })
        .unwrap();
        // In use: refused, with the holder named.
        let busy = claim_explicit(&out, true).unwrap_err().to_string();
        assert!(
            busy.contains(&format!("pid {}", std::process::id())),
            "{busy}"
        );
        drop(first);
        std::fs::write(out.join("metrics.jsonl"), "{}").unwrap();
        let refused = claim_explicit(&out, false).unwrap_err().to_string();
        assert!(
            refused.contains("--overwrite") && refused.contains("--resume"),
            "{refused}"
        );
        let cleared = claim_explicit(&out, true).unwrap();
        assert!(!cleared.path.join("metrics.jsonl").exists());
        drop(cleared);
        // Not a run folder: never cleared.
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let stranger = claim_explicit(&out, true).unwrap_err().to_string();
        assert!(stranger.contains("notes.txt"), "{stranger}");
        assert!(out.join("notes.txt").exists());
    }

    #[test]
    fn default_folders_are_numbered_and_latest_follows() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("runs/exp");
        let a = claim_numbered(parent.clone()).unwrap();
        let b = claim_numbered(parent.clone()).unwrap();
        assert_eq!(a.path, parent.join("1"));
        assert_eq!(b.path, parent.join("2"));
        assert_eq!(
            std::fs::read_link(parent.join("latest")).unwrap(),
            Path::new("2")
        );
    }
}

//! `run.json`: what a run is (its source, the git commit, the plan's
//! fingerprint, each start's command line) and how it ended. Rank 0
//! writes it when a run starts or resumes and when it ends; the launcher
//! of a job whose ranks could not say (a rank aborted, a host was lost)
//! writes the end. `dtl runs` reads it.

use std::path::Path;
use std::process::Command;

use dtl_compiler::plan::Plan;
use dtl_compiler::records::{Attempt, Outcome, RunRecord, Status};
use dtl_compiler::util::time::now_utc;

use crate::error::RunError;
use crate::output::write_atomic;

pub const FILE: &str = "run.json";

/// Records a start: a new `run.json`, or for a resumed run one more
/// attempt in the one there.
pub fn start(
    out: &Path,
    plan: &Plan,
    fingerprint: &str,
    resumed_from: Option<u64>,
) -> Result<(), RunError> {
    let attempt = Attempt {
        started: now_utc(),
        host: crate::run_folder::hostname(),
        command: std::env::args().collect(),
        resumed_from,
    };
    let running = Outcome {
        status: Status::Running,
        ended: None,
        message: None,
    };
    let record = match (resumed_from, read(out)) {
        (Some(_), Some(mut record)) => {
            record.attempts.push(attempt);
            record.outcome = running;
            record.world_size = plan.topology.world_size();
            record
        }
        _ => RunRecord {
            source: plan.source.clone(),
            commit: git_commit(&plan.source),
            plan_fingerprint: fingerprint.to_string(),
            steps: plan.train.steps,
            world_size: plan.topology.world_size(),
            attempts: vec![attempt],
            outcome: running,
        },
    };
    write(out, &record)
}

/// Records how the run ended (nothing when there is no `run.json`).
pub fn end(out: &Path, status: Status, message: Option<String>) -> Result<(), RunError> {
    let Some(mut record) = read(out) else {
        return Ok(());
    };
    record.outcome = Outcome {
        status,
        ended: Some(now_utc()),
        message,
    };
    write(out, &record)
}

/// The launcher's word after a job that did not finish: written only if
/// the ranks left the run `running`.
pub fn end_if_running(out: &Path, message: String) -> Result<(), RunError> {
    match read(out) {
        Some(record) if record.outcome.status == Status::Running => {
            end(out, Status::Failed, Some(message))
        }
        _ => Ok(()),
    }
}

pub fn read(out: &Path) -> Option<RunRecord> {
    let text = std::fs::read_to_string(out.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write(out: &Path, record: &RunRecord) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(record).expect("a run record serializes");
    write_atomic(&out.join(FILE), text.as_bytes())
}

/// The commit of the repository holding `source`, `+` after it when
/// tracked files have changed; `None` outside a repository or without git.
fn git_commit(source: &str) -> Option<String> {
    let dir = Path::new(source)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    let changed =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if changed {
        format!("{commit}+")
    } else {
        commit
    })
}

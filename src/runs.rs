//! `dtl runs [DIR]`: a table of the runs under a folder — the file, the git
//! commit, the plan's fingerprint, steps, the last evaluation and the best
//! one, wall time and status — read from each run's `run.json`,
//! `summary.json`, `best/best.json` and the end of its `metrics.jsonl`.
//! Needs no runtime: it reads files and asks the kernel whether a run's
//! lock is held.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use dtl_compiler::records::{EvalRecord, Record, RunRecord, Status};
use dtl_compiler::util::time::{now_utc, parse_utc};
use serde::Serialize;

/// How deep under DIR run folders are looked for (`runs/<stem>/<n>`).
const DEPTH: usize = 3;
/// The end of `metrics.jsonl` read for the last step and evaluation.
const TAIL: u64 = 64 * 1024;

/// One run, as the table shows it.
#[derive(Debug, Serialize)]
pub struct RunRow {
    pub path: String,
    pub source: Option<String>,
    pub commit: Option<String>,
    pub plan_fingerprint: Option<String>,
    /// The last step recorded.
    pub steps: Option<u64>,
    /// The steps the plan asks for.
    pub of_steps: Option<u64>,
    pub eval: Option<EvalRecord>,
    /// `keep_best`'s measure, its best value and step.
    pub best: Option<(String, f64, u64)>,
    pub seconds: Option<f64>,
    pub started: Option<String>,
    /// finished, failed, interrupted, running, or died (it says running but
    /// nobody holds its lock: killed, or its machine lost); `unknown` for a
    /// folder without `run.json` that is not finished.
    pub status: String,
    /// The error, signal or early stop.
    pub message: Option<String>,
}

/// The runs under `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<RunRow> {
    let mut folders = Vec::new();
    find(dir, 0, &mut folders);
    let mut rows: Vec<RunRow> = folders.iter().map(|f| row(f)).collect();
    rows.sort_by(|a, b| (&a.started, &a.path).cmp(&(&b.started, &b.path)));
    rows
}

fn find(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let is_run = ["run.json", "summary.json", "metrics.jsonl"]
        .iter()
        .any(|f| dir.join(f).is_file());
    if is_run {
        out.push(dir.to_path_buf());
        return;
    }
    if depth == DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries
        .flatten()
        // `latest` links to a run listed under its own name.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        find(&child, depth + 1, out);
    }
}

fn row(folder: &Path) -> RunRow {
    let record: Option<RunRecord> = read_json(&folder.join("run.json"));
    let summary: Option<serde_json::Value> = read_json(&folder.join("summary.json"));
    let best: Option<serde_json::Value> = read_json(&folder.join("best").join("best.json"));
    let (last_step, last_eval) = tail(&folder.join("metrics.jsonl"));
    let started = record
        .as_ref()
        .and_then(|r| r.attempts.first())
        .map(|a| a.started.clone());
    let (status, message) = status(folder, record.as_ref(), summary.is_some());
    let number = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    let seconds = summary
        .as_ref()
        .and_then(|s| number(s, "seconds"))
        .or_else(|| {
            let start = parse_utc(started.as_deref()?)?;
            let end = match record.as_ref()?.outcome.ended.as_deref() {
                Some(ended) => parse_utc(ended)?,
                None if status == "running" => parse_utc(&now_utc())?,
                None => return None,
            };
            Some((end - start) as f64)
        });
    RunRow {
        path: folder.display().to_string(),
        source: record.as_ref().map(|r| r.source.clone()),
        commit: record.as_ref().and_then(|r| r.commit.clone()),
        plan_fingerprint: record.as_ref().map(|r| r.plan_fingerprint.clone()),
        steps: summary
            .as_ref()
            .and_then(|s| s.get("steps")?.as_u64())
            .or(last_step),
        of_steps: record.as_ref().map(|r| r.steps),
        eval: last_eval,
        best: best.and_then(|b| {
            Some((
                b.get("metric")?.as_str()?.to_string(),
                b.get("value")?.as_f64()?,
                b.get("step")?.as_u64()?,
            ))
        }),
        seconds,
        started,
        status,
        message,
    }
}

/// The run's status and what it said.
fn status(folder: &Path, record: Option<&RunRecord>, summary: bool) -> (String, Option<String>) {
    let held = lock_held(&folder.join("run.lock"));
    match record.map(|r| (&r.outcome.status, r.outcome.message.clone())) {
        Some((Status::Running, _)) if held => ("running".into(), None),
        Some((Status::Running, _)) => ("died".into(), None),
        Some((Status::Finished, message)) => ("finished".into(), message),
        Some((Status::Failed, message)) => ("failed".into(), message),
        Some((Status::Interrupted, message)) => ("interrupted".into(), message),
        None if summary => ("finished".into(), None),
        None if held => ("running".into(), None),
        None => ("unknown".into(), None),
    }
}

/// Whether a process holds the run's lock (flock, as `dtl run` takes it).
fn lock_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: flock on a descriptor this function owns; a shared lock
    // taken here is let go when `file` closes.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// The last step and the last evaluation in the end of `metrics.jsonl`.
fn tail(path: &Path) -> (Option<u64>, Option<EvalRecord>) {
    let Ok(mut file) = File::open(path) else {
        return (None, None);
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(TAIL);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return (None, None);
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if from > 0 {
        // The first line was cut.
        lines.next();
    }
    let (mut step, mut eval) = (None, None);
    for line in lines {
        match Record::parse(line) {
            Ok(Record::Step(s)) => step = Some(s.step),
            Ok(Record::Eval(e)) => eval = Some(e),
            Err(_) => {}
        }
    }
    (step, eval)
}

/// The table, one run a line.
pub fn table(rows: &[RunRow]) -> String {
    let header = [
        "run",
        "status",
        "steps",
        "eval loss",
        "best",
        "time",
        "commit",
        "plan",
        "file",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let steps = match (r.steps, r.of_steps) {
            (Some(s), Some(of)) => format!("{s}/{of}"),
            (Some(s), None) => s.to_string(),
            (None, Some(of)) => format!("0/{of}"),
            (None, None) => "-".into(),
        };
        let eval = r.eval.as_ref().map_or("-".into(), |e| {
            let mut text = format!("{:.4}", e.eval_loss);
            if let Some(a) = e.eval_accuracy {
                text += &format!(" ({:.2}%)", a * 100.0);
            }
            text
        });
        let best = r.best.as_ref().map_or("-".into(), |(metric, value, step)| {
            let name = metric.strip_prefix("eval_").unwrap_or(metric);
            format!("{name} {value:.4} @{step}")
        });
        let short = |s: &Option<String>, n: usize| {
            s.as_ref()
                .map_or("-".into(), |s| s.chars().take(n).collect::<String>())
        };
        let commit = r.commit.as_ref().map_or("-".into(), |c| {
            let dirty = if c.ends_with('+') { "+" } else { "" };
            format!("{}{dirty}", &c[..c.len().min(8)])
        });
        cells.push(vec![
            r.path.clone(),
            r.status.clone(),
            steps,
            eval,
            best,
            r.seconds.map_or("-".into(), duration),
            commit,
            short(&r.plan_fingerprint, 8),
            r.source.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    for r in rows.iter().filter(|r| r.message.is_some()) {
        out += &format!("{}: {}\n", r.path, r.message.as_deref().unwrap_or(""));
    }
    out
}

/// `4.2s`, `3m07s`, `2h05m`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, (s % 3600.0 / 60.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(4.21), "4.2s");
        assert_eq!(duration(187.0), "3m07s");
        assert_eq!(duration(7500.0), "2h05m");
    }
}

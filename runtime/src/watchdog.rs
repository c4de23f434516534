//! A rank that waits too long: a thread per rank of a multi-rank run
//! watches the phase the rank is in and the progress it makes there. When
//! a phase that waits on peers (joining the job, a step's collectives, a
//! peer's evaluation or checkpoint write) outlasts `--timeout` plus what
//! the phase is allowed (the peer's work, estimated), it says which rank
//! and phase were waiting, names the peer that stopped answering, and ends
//! the process, which makes the launcher end the others: no rank is left
//! hanging. Local work (loading, this rank's own evaluation) beats as it
//! goes, and is not a hang while it does.
//!
//! Each rank's watchdog also writes a heartbeat into the run folder,
//! `rank-K.beat` (pid, host, phase, step, time), four times a second: a
//! rank stopped or frozen leaves a stale one, which is how the others
//! name it. It polls the backends' background errors (NCCL's
//! `ncclCommGetAsyncError`), which would otherwise surface only as a hang.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::RunError;
use crate::world::World;

/// What a rank is doing, as its heartbeat and messages say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Starting and joining the other ranks.
    StartUp,
    /// Reading the data and building the model (local work).
    Load,
    /// Waiting for the other ranks to load.
    AfterLoad,
    Step,
    /// Evaluating the held-out rows (this rank's own work).
    Evaluate,
    /// Waiting for the ranks that evaluate.
    AwaitEvaluation,
    /// Writing a checkpoint, or waiting for rank 0 to write it.
    Checkpoint,
    /// Writing the run's files after the last step.
    Finish,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Phase::StartUp,
        Phase::Load,
        Phase::AfterLoad,
        Phase::Step,
        Phase::Evaluate,
        Phase::AwaitEvaluation,
        Phase::Checkpoint,
        Phase::Finish,
    ];

    fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name().replace(' ', "_") == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::StartUp => "start-up",
            Phase::Load => "loading",
            Phase::AfterLoad => "waiting for the others to load",
            Phase::Step => "step",
            Phase::Evaluate => "evaluation",
            Phase::AwaitEvaluation => "waiting for the evaluation",
            Phase::Checkpoint => "checkpoint",
            Phase::Finish => "final write",
        }
    }
}

struct State {
    phase: Phase,
    step: u64,
    /// When waiting becomes a hang.
    deadline: Instant,
    /// What the phase may take beyond `timeout` without progress.
    allowance: Duration,
    /// The run folder, once known: heartbeats and the rank's log.
    folder: Option<PathBuf>,
    probes: Vec<crate::comm::HealthProbe>,
}

struct Shared {
    state: Mutex<State>,
    done: AtomicBool,
    timeout: Duration,
    rank: usize,
}

pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watchdog(rank {})", self.shared.rank)
    }
}

/// Local work that is not bounded by the watchdog (a rank busy with it
/// beats, or its peers notice).
pub const UNBOUNDED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What joining the job may take beyond the timeout: MPI's own start
/// (its runtime contacting every rank) takes seconds on a loaded machine.
pub const START_UP: Duration = Duration::from_secs(10);

impl Watchdog {
    /// Starts watching rank `rank`, in start-up.
    pub fn start(rank: usize, timeout: Duration) -> Watchdog {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                phase: Phase::StartUp,
                step: 0,
                deadline: Instant::now() + timeout + START_UP,
                allowance: START_UP,
                folder: None,
                probes: Vec::new(),
            }),
            done: AtomicBool::new(false),
            timeout,
            rank,
        });
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dtl-watchdog".into())
            .spawn(move || watch(&watched))
            .ok();
        Watchdog { shared, thread }
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state);
    }

    /// The rank enters `phase` (of `step`), which may take `allowance`
    /// beyond the timeout without progress.
    pub fn enter(&self, phase: Phase, step: u64, allowance: Duration) {
        let timeout = self.shared.timeout;
        self.with(|s| {
            s.phase = phase;
            s.step = step;
            s.allowance = allowance;
            s.deadline = deadline(timeout, allowance);
        });
    }

    /// Progress within the phase.
    pub fn beat(&self) {
        let timeout = self.shared.timeout;
        self.with(|s| s.deadline = deadline(timeout, s.allowance));
    }

    /// Heartbeats and messages go into the run folder from now on (the
    /// first one now, so that a rank frozen right after is on record).
    pub fn set_folder(&self, folder: &Path) {
        let rank = self.shared.rank;
        self.with(|s| {
            s.folder = Some(folder.to_path_buf());
            heartbeat(folder, rank, s);
        });
    }

    /// Background failure checks of the backends, polled from now on.
    pub fn add_probes(&self, probes: Vec<crate::comm::HealthProbe>) {
        self.with(|s| s.probes.extend(probes));
    }
}

fn deadline(timeout: Duration, allowance: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout + allowance)
        .unwrap_or(now + UNBOUNDED)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::SeqCst);
        // Joined, so that no probe runs after the communicators it polls
        // are gone (at most one poll interval).
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watching thread: heartbeats, probes, deadlines.
fn watch(shared: &Shared) {
    let interval = Duration::from_millis(250).min(shared.timeout);
    loop {
        std::thread::sleep(interval);
        if shared.done.load(Ordering::SeqCst) {
            return;
        }
        let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(folder) = &state.folder {
            heartbeat(folder, shared.rank, &state);
        }
        let label = format!("[rank {}] rank {}: ", shared.rank, shared.rank);
        if let Some(failure) = state.probes.iter().find_map(|probe| probe()) {
            let message = format!(
                "{label}error: at step {}: {failure}; ending the job (the last checkpoint is intact)",
                state.step
            );
            give_up(&state, shared.rank, &message);
        }
        if Instant::now() > state.deadline {
            let waited = shared.timeout + state.allowance;
            let who = state
                .folder
                .as_deref()
                .map_or(String::new(), |f| stalled_peers(f, shared.rank));
            let allowed = if state.allowance.is_zero() {
                String::new()
            } else {
                format!(
                    " + {:.0} s for what the peers do",
                    state.allowance.as_secs_f64()
                )
            };
            let message = format!(
                "{label}error: {} made no progress for {:.0} s (--timeout {} s{allowed}){who}: a peer may have hung or died; ending the job (the last checkpoint is intact)",
                doing(state.phase, state.step),
                waited.as_secs_f64(),
                shared.timeout.as_secs()
            );
            give_up(&state, shared.rank, &message);
        }
    }
}

/// "step 7", "the evaluation after step 10", "start-up".
fn doing(phase: Phase, step: u64) -> String {
    match phase {
        Phase::StartUp => "start-up".into(),
        Phase::Load => "loading".into(),
        Phase::AfterLoad => "waiting for the other ranks to load".into(),
        Phase::Step => format!("step {step}"),
        Phase::Evaluate => format!("the evaluation after step {step}"),
        Phase::AwaitEvaluation => format!("waiting for the evaluation after step {step}"),
        Phase::Checkpoint => format!("the checkpoint of step {step}"),
        Phase::Finish => "the final write".into(),
    }
}

/// Says why, in the terminal and the rank's log, and ends the process:
/// the launcher ends the other ranks.
fn give_up(state: &State, rank: usize, message: &str) -> ! {
    eprintln!("{message}");
    if let Some(folder) = &state.folder {
        let log = folder.join(format!("rank-{rank}.log"));
        if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(log) {
            let _ = writeln!(file, "{message}");
            let _ = file.sync_all();
        }
    }
    // SAFETY: ends this process at once; the launcher ends the others.
    unsafe { libc::_exit(3) }
}

/// Unix time in seconds.
fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes `rank-K.beat`: `pid host phase step unix-time`.
fn heartbeat(folder: &Path, rank: usize, state: &State) {
    let line = format!(
        "{} {} {} {} {:.3}\n",
        std::process::id(),
        crate::run_folder::hostname(),
        state.phase.name().replace(' ', "_"),
        state.step,
        now_seconds()
    );
    let path = folder.join(format!("rank-{rank}.beat"));
    let tmp = folder.join(format!(".rank-{rank}.beat"));
    // Written aside and renamed, so a reader never sees half a line.
    if std::fs::write(&tmp, line).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// A collective that failed because a peer was lost says which: the ranks
/// MPI knows to have failed, with their host from their heartbeat when the
/// run folder is shared.
pub fn name_lost_peers(err: RunError, world: &World, out: &Path) -> RunError {
    let RunError::Collective { step, message } = err else {
        return err;
    };
    let lost = world.all.failed_ranks().unwrap_or_default();
    if lost.is_empty() {
        return RunError::Collective { step, message };
    }
    let named: Vec<String> = lost
        .iter()
        .map(|&rank| match host_of(out, rank) {
            Some(host) => format!("peer on host {host} (rank {rank}) lost"),
            None => format!("peer rank {rank} lost"),
        })
        .collect();
    RunError::Collective {
        step,
        message: format!("{}: {message}", named.join(", ")),
    }
}

/// The host of `rank` by its last heartbeat in `folder`.
fn host_of(folder: &Path, rank: usize) -> Option<String> {
    let beat = std::fs::read_to_string(folder.join(format!("rank-{rank}.beat"))).ok()?;
    beat.split_whitespace().nth(1).map(String::from)
}

/// A peer's last heartbeat.
struct Beat {
    rank: usize,
    pid: String,
    host: String,
    phase: Phase,
    step: u64,
    age: f64,
}

fn read_beats(folder: &Path) -> Vec<Beat> {
    let now = now_seconds();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut beats: Vec<Beat> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rank = name
                .strip_prefix("rank-")?
                .strip_suffix(".beat")?
                .parse()
                .ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            let mut fields = text.split_whitespace();
            let (pid, host, phase) = (fields.next()?, fields.next()?, fields.next()?);
            let step = fields.next()?.parse().ok()?;
            let at: f64 = fields.next()?.parse().ok()?;
            Some(Beat {
                rank,
                pid: pid.to_string(),
                host: host.to_string(),
                phase: Phase::from_name(phase)?,
                step,
                age: now - at,
            })
        })
        .collect();
    beats.sort_by_key(|b| b.rank);
    beats
}

/// ": rank 1 (pid 123 on h2) has not answered for 9.1 s, in step 13", or
/// who is behind when every rank still answers; empty when nothing can be
/// told (no shared run folder).
pub fn stalled_peers(folder: &Path, me: usize) -> String {
    let beats: Vec<Beat> = read_beats(folder)
        .into_iter()
        .filter(|b| b.rank != me)
        .collect();
    let silent: Vec<String> = beats
        .iter()
        .filter(|b| b.age > 2.0)
        .map(|b| {
            format!(
                "rank {} (pid {} on {}) has not answered for {:.1} s, in {}",
                b.rank,
                b.pid,
                b.host,
                b.age,
                doing(b.phase, b.step)
            )
        })
        .collect();
    if !silent.is_empty() {
        return format!(": {}", silent.join("; "));
    }
    match beats.iter().min_by_key(|b| b.step) {
        Some(b) if beats.iter().any(|o| o.step > b.step) => format!(
            ": rank {} (pid {} on {}) is behind, in {}",
            b.rank,
            b.pid,
            b.host,
            doing(b.phase, b.step)
        ),
        _ => String::new(),
    }
}

//! Ctrl-C and SIGTERM (what Slurm sends before a job's time runs out): the
//! run finishes the step it is in, writes a checkpoint, says how to resume,
//! and exits non-zero. A second Ctrl-C or SIGTERM stops at once, and so does
//! a request that comes before the training loop (start-up, loading). The handler only sets
//! a flag (all a signal handler may safely do); the training loop reads it
//! at each step boundary, and the ranks of a job agree on it before any of
//! them stops.
//!
//! A launcher (`dtl run` starting its ranks through `mpirun`) keeps
//! `mpirun` out of the terminal's process group, so that Ctrl-C reaches the
//! launcher alone, and hands a stop request on as a signal `mpirun` passes
//! to every rank: SIGTERM as SIGUSR1, SIGINT as SIGUSR2 (`mpirun` itself
//! would kill the job on SIGTERM or SIGINT, without a checkpoint). A rank
//! takes SIGUSR1 and SIGUSR2 as the signals they stand for. A second
//! Ctrl-C at the launcher ends `mpirun`'s job at once.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signal asked to stop with, 0 while none was.
static STOP: AtomicI32 = AtomicI32::new(0);
/// The launcher's `mpirun`, 0 in a rank or a one-process run.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// Whether the first stop request has been handed on to `CHILD`.
static FORWARDED: AtomicBool = AtomicBool::new(false);
/// Whether this process has reached the training loop, whose step
/// boundaries act on a stop request; before that there is nothing to save
/// and a request ends the process at once (a rank waiting for a peer that
/// never starts would otherwise never see it).
static IN_LOOP: AtomicBool = AtomicBool::new(false);

/// What a signal asks for: SIGUSR1 and SIGUSR2 are SIGTERM and SIGINT
/// handed on by a launcher.
fn meaning(signal: libc::c_int) -> libc::c_int {
    match signal {
        libc::SIGUSR1 => libc::SIGTERM,
        libc::SIGUSR2 => libc::SIGINT,
        other => other,
    }
}

/// The signal a launcher hands `signal` on to its ranks as.
fn forwarded(signal: libc::c_int) -> libc::c_int {
    if signal == libc::SIGINT {
        libc::SIGUSR2
    } else {
        libc::SIGUSR1
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    let signal = meaning(signal);
    let child = CHILD.load(Ordering::SeqCst);
    let again = STOP.load(Ordering::SeqCst) != 0;
    let before_loop = child == 0 && !IN_LOOP.load(Ordering::SeqCst);
    if again || before_loop {
        // A second request (Ctrl-C or SIGTERM), or one before the training
        // loop: now (a launcher's job too). `kill` and `_exit` are
        // async-signal-safe.
        // SAFETY: signals a process this one started, then ends this one
        // without running anything else.
        unsafe {
            if child > 0 {
                libc::kill(child, libc::SIGTERM);
            }
            libc::_exit(128 + libc::SIGINT)
        };
    }
    STOP.store(signal, Ordering::SeqCst);
    if child > 0 && !FORWARDED.swap(true, Ordering::SeqCst) {
        // SAFETY: as above.
        unsafe { libc::kill(child, forwarded(signal)) };
    }
}

/// Installs the handler for SIGINT and SIGTERM, and for SIGUSR1 and
/// SIGUSR2 as a launcher hands them on.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: a zeroed sigaction with a handler that only touches
        // atomics, signals a child, or exits; installed before any thread
        // that could race.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            // Restart the launcher's wait for its `mpirun`.
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// From now on, stop requests are handed on to `pid` (the launcher's
/// `mpirun`), one that came before included.
pub fn forward_to(pid: u32) {
    let pid = i32::try_from(pid).unwrap_or(0);
    CHILD.store(pid, Ordering::SeqCst);
    if let Some(signal) = requested() {
        if pid > 0 && !FORWARDED.swap(true, Ordering::SeqCst) {
            // SAFETY: signals the process this one just started.
            unsafe { libc::kill(pid, forwarded(signal)) };
        }
    }
}

/// From now on a stop request waits for the next step boundary (and its
/// checkpoint) instead of ending the process at once.
pub fn at_step_boundaries() {
    IN_LOOP.store(true, Ordering::SeqCst);
}

/// The signal that asked to stop, if one did.
pub fn requested() -> Option<i32> {
    match STOP.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// A signal's name, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

//! Ctrl-C and SIGTERM (what Slurm sends before a job's time runs out): the
//! run finishes the step it is in, writes a checkpoint, says how to resume,
//! and exits non-zero. A second Ctrl-C stops at once. The handler only sets
//! a flag (all a signal handler may safely do); the training loop reads it
//! at each step boundary, and the ranks of a job agree on it before any of
//! them stops.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal asked to stop with, 0 while none was.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGINT && STOP.load(Ordering::SeqCst) == libc::SIGINT {
        // The second Ctrl-C: now. `_exit` is async-signal-safe.
        // SAFETY: ends the process without running anything else.
        unsafe { libc::_exit(128 + libc::SIGINT) };
    }
    STOP.store(signal, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only touches an
        // atomic (or exits); installed before any thread that could race.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
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

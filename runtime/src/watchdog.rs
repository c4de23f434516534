//! A rank that waits too long: a thread per rank watches the training
//! loop's heartbeat, and when no step boundary has passed for `timeout`
//! (a peer hung inside a collective, or died without the launcher noticing)
//! it says which rank and step were waiting and ends the process, which
//! makes the launcher end the others: no rank is left hanging. It also
//! polls the backends' background errors (NCCL's `ncclCommGetAsyncError`),
//! which would otherwise surface only as a hang.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Watchdog {
    beat: Arc<AtomicU64>,
    step: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching: `label` names the rank in the message; `probes`
    /// are polled for failures a backend reports in the background.
    pub fn start(
        timeout: Duration,
        label: String,
        probes: Vec<crate::comm::HealthProbe>,
    ) -> Watchdog {
        let beat = Arc::new(AtomicU64::new(0));
        let step = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (b, s, d) = (beat.clone(), step.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("dtl-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(250).min(timeout));
                if d.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(failure) = probes.iter().find_map(|probe| probe()) {
                    eprintln!(
                        "{label}error: at step {}: {failure}; ending the job (the last checkpoint is intact)",
                        s.load(Ordering::SeqCst)
                    );
                    // SAFETY: as below.
                    unsafe { libc::_exit(3) };
                }
                let last = Duration::from_millis(b.load(Ordering::SeqCst));
                let idle = started.elapsed().saturating_sub(last);
                if idle > timeout {
                    eprintln!(
                        "{label}error: step {} made no progress for {:.0} s (--timeout): a peer may have hung or died; ending the job (the last checkpoint is intact)",
                        s.load(Ordering::SeqCst),
                        idle.as_secs_f64()
                    );
                    // SAFETY: ends this process at once; the launcher ends
                    // the other ranks.
                    unsafe { libc::_exit(3) };
                }
            })
            .ok();
        Watchdog {
            beat,
            step,
            done,
            started,
            thread,
        }
    }

    /// The loop is alive, at `step`.
    pub fn beat(&self, step: u64) {
        self.step.store(step, Ordering::SeqCst);
        self.beat
            .store(self.started.elapsed().as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        // Joined, so that no probe runs after the communicators it polls
        // are gone (at most one poll interval).
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

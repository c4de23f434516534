//! Micro-batches prepared on a thread of their own, a few ahead of the
//! training loop, so the model never waits on row selection. The order is
//! fixed by the seeded [`Batches`] stream, not by timing: a run with the
//! thread gives the same batches as one without.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use tch::Tensor;

use crate::data::{Batches, Cursor};
use crate::error::RunError;

/// What a run's data reported: how long the steps waited for their
/// batches, and the rows the sources left out (`on_bad_row = skip`), by
/// file.
#[derive(Debug, Clone, Default)]
pub struct DataReport {
    pub wait_seconds: f64,
    pub skipped: Vec<(String, dtl_compiler::dataset::Skipped)>,
}

/// One prepared micro-batch and the stream's position after it (what a
/// checkpoint taken after consuming it must store).
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    pub cursor: Cursor,
}

pub struct Prefetch {
    rx: Option<Receiver<Result<Batch, RunError>>>,
    worker: Option<JoinHandle<()>>,
    /// Seconds the training loop waited for a batch: what preparing the
    /// data (decoding, transforms) cost the steps.
    waited: std::cell::Cell<f64>,
}

impl Prefetch {
    /// Starts the worker; it stays `depth` batches ahead.
    pub fn start(mut batches: Batches, depth: usize) -> Result<Prefetch, RunError> {
        let (tx, rx) = sync_channel(depth);
        let worker = std::thread::Builder::new()
            .name("dtl-data".into())
            .spawn(move || loop {
                let batch = batches.next_batch().map(|(x, y)| Batch {
                    x,
                    y,
                    cursor: batches.cursor().clone(),
                });
                let failed = batch.is_err();
                // A closed channel means training is over.
                if tx.send(batch).is_err() || failed {
                    break;
                }
            })
            .map_err(|e| RunError::Io {
                path: "the data thread".into(),
                message: e.to_string(),
            })?;
        Ok(Prefetch {
            rx: Some(rx),
            worker: Some(worker),
            waited: std::cell::Cell::new(0.0),
        })
    }

    /// Seconds spent waiting in [`Prefetch::next`] so far.
    pub fn waited(&self) -> f64 {
        self.waited.get()
    }

    pub fn next(&self) -> Result<Batch, RunError> {
        let rx = self
            .rx
            .as_ref()
            .expect("the receiver lives as long as Prefetch");
        let started = std::time::Instant::now();
        let batch = rx.recv();
        self.waited
            .set(self.waited.get() + started.elapsed().as_secs_f64());
        batch.unwrap_or_else(|_| {
            Err(RunError::Data {
                path: "the data thread".into(),
                message: "stopped without a reason".into(),
            })
        })
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the channel ends the worker at its next send.
        drop(self.rx.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

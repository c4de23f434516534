//! dtl-runtime: runs an execution plan for real on libtorch (through `tch`).
//!
//! It reads nothing but the plan ([`dtl_compiler::plan::Plan`]): it builds
//! the parameters and forward pass from the plan's nodes ([`model`]), loads
//! and batches the data ([`data`]), and interprets the step program (the
//! executor) with PyTorch's optimizer ([`optim`]) and clipping ([`clip`])
//! semantics; the parallel strategies ([`parallel`]) run over the
//! communicators ([`comm`]) of the groups the plan gives each rank
//! ([`world`]). The driver ([`train`]) runs the loop and writes the run's
//! files ([`output`], [`checkpoint`]).
//!
//! Modules import downwards only, in this order (the runtime's
//! `tests/layers.rs` holds it): error, fault, signals, device, torch_ops,
//! output → comm, augment, images, data, prefetch, ops, loss, memory, model, optim, clip,
//! module_test →
//! world, parallel → checkpoint → executor → rank_log, progress, watchdog →
//! train, launch, selftest, calibrate.

pub mod augment;
mod board;
pub mod calibrate;
pub mod checkpoint;
pub mod clip;
pub mod comm;
pub mod data;
pub mod device;
pub mod ema;
pub mod error;
mod executor;
pub mod fault;
pub mod flat;
mod images;
pub mod infer;
pub mod launch;
mod loss;
pub mod loss_scale;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod module_test;
pub mod ops;
pub mod optim;
pub mod output;
pub mod parallel;
mod prefetch;
mod progress;
mod rank_log;
mod resume;
pub mod run_folder;
pub mod run_record;
pub mod selftest;
pub mod signals;
mod summary;
pub mod tensor_file;
pub mod tensorboard;
mod torch_ops;
pub mod train;
pub mod watch;
pub mod watchdog;
pub mod world;

pub use device::DeviceChoice;
pub use error::RunError;
pub use train::{train, RunOptions, Summary};
pub use world::World;

/// What libtorch this binary runs on, for `dtl --version` and bug reports.
pub fn backend_info() -> String {
    format!(
        "libtorch (tch 0.24), CUDA {}",
        if device::cuda_available() {
            format!("available ({} device(s))", tch::Cuda::device_count())
        } else {
            "not available".to_string()
        }
    )
}

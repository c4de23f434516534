//! dtl-runtime: runs an execution plan for real on libtorch (through `tch`).
//!
//! It reads nothing but the plan ([`dtl_compiler::plan::Plan`]): it builds
//! the parameters and forward pass from the plan's nodes ([`model`]), loads
//! and batches the data ([`data`]), and interprets the step program
//! ([`train`]) with PyTorch's optimizer ([`optim`]) and clipping ([`clip`])
//! semantics.

pub mod checkpoint;
pub mod clip;
pub mod comm;
pub mod data;
pub mod data_parallel;
pub mod device;
pub mod error;
pub mod fault;
mod gather;
pub mod launch;
mod loss;
pub mod model;
pub mod module_test;
pub mod ops;
pub mod optim;
pub mod pipeline;
mod prefetch;
mod progress;
mod rank_log;
pub mod segments;
pub mod signals;
mod step;
pub mod train;
mod watchdog;
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

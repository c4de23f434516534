//! Choice of the compute device.

use crate::error::RunError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA when a GPU is visible, else the CPU.
    Auto,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            "auto" => Ok(DeviceChoice::Auto),
            _ => Err(format!("unknown device `{s}` (expected cpu, cuda or auto)")),
        }
    }
}

extern "C" {
    /// runtime/src/torch_shim.cpp: 0 on success.
    fn dtl_set_cuda_tf32(on: i32) -> i32;
}

/// Matrix products on CUDA in TF32 (`precision = tf32`) or in IEEE float32
/// (PyTorch's default; convolutions use TF32 either way, as PyTorch's
/// `cudnn.allow_tf32` does by default). Nothing changes on the CPU.
pub fn set_cuda_tf32(on: bool) -> Result<(), RunError> {
    // SAFETY: sets two flags of libtorch's global context; no pointers.
    let failed = unsafe { dtl_set_cuda_tf32(i32::from(on)) } != 0;
    if failed {
        return Err(RunError::Device {
            message: "libtorch refused the TF32 setting".into(),
        });
    }
    Ok(())
}

pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

pub fn resolve(choice: DeviceChoice) -> Result<tch::Device, RunError> {
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Cuda if cuda_available() => Ok(tch::Device::Cuda(0)),
        DeviceChoice::Cuda => Err(RunError::Device {
            message: "`--device cuda` was asked for, but libtorch sees no CUDA device".into(),
        }),
        DeviceChoice::Auto => Ok(if cuda_available() {
            tch::Device::Cuda(0)
        } else {
            tch::Device::Cpu
        }),
    }
}

/// Bytes in use on the GPU `ordinal` (the device's total less its free
/// memory, every process's), through the CUDA driver; `None` on a build
/// without NCCL or where the driver does not answer.
#[cfg(feature = "nccl")]
pub fn gpu_memory_used(ordinal: usize) -> Option<u64> {
    use std::sync::{Arc, OnceLock};

    use cudarc::driver::{result, sys, CudaContext};
    static CONTEXT: OnceLock<Option<Arc<CudaContext>>> = OnceLock::new();
    // SAFETY: only asks whether the driver library can be loaded.
    if !unsafe { sys::is_culib_present() } {
        return None;
    }
    // The device's primary context, which libtorch computes in too.
    let context = CONTEXT
        .get_or_init(|| CudaContext::new(ordinal).ok())
        .as_ref()?;
    context.bind_to_thread().ok()?;
    let (free, total) = result::mem_get_info().ok()?;
    Some((total - free) as u64)
}

#[cfg(not(feature = "nccl"))]
pub fn gpu_memory_used(_ordinal: usize) -> Option<u64> {
    None
}

/// This process's resident memory in bytes (`/proc/self/statm`), where
/// Linux says.
pub fn host_memory_resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

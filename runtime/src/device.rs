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

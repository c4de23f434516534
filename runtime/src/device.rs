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

//! Choosing where to compute: the GPU when there is one, else the CPU.

use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use std::sync::Arc;

/// Where the engine computes. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu(Cpu),
    Gpu(Arc<Gpu>),
}

/// Environment variable that overrides [`Device::auto`]: `cpu`, `gpu`, `gpu:N` or `auto`.
pub const DEVICE_ENV: &str = "MLFF_DEVICE";
/// Environment variable with the CPU thread count (default: one per core).
pub const THREADS_ENV: &str = "MLFF_NUM_THREADS";

impl Device {
    /// The device `MLFF_DEVICE` names, or else GPU 0 if one is usable, or else the CPU.
    pub fn auto() -> Result<Self> {
        match std::env::var(DEVICE_ENV) {
            Ok(choice) if !choice.trim().is_empty() => Self::parse(&choice),
            _ => Self::parse("auto"),
        }
    }

    /// `cpu`, `gpu` (= `gpu:0`), `gpu:N`, or `auto`.
    pub fn parse(choice: &str) -> Result<Self> {
        let choice = choice.trim().to_ascii_lowercase();
        match choice.as_str() {
            "cpu" => Self::cpu(),
            "gpu" | "cuda" => Self::gpu(0),
            "auto" => match crate::gpu::unavailable_reason() {
                None => Self::gpu(0),
                Some(_) => Self::cpu(),
            },
            other => match other.strip_prefix("gpu:").or_else(|| other.strip_prefix("cuda:")) {
                Some(n) => match n.parse::<usize>() {
                    Ok(ordinal) => Self::gpu(ordinal),
                    Err(_) => Err(Error::InvalidInput(format!("bad GPU ordinal in device {other:?}"))),
                },
                None => Err(Error::InvalidInput(format!("unknown device {other:?}; expected cpu, gpu, gpu:N or auto"))),
            },
        }
    }

    /// The CPU with `MLFF_NUM_THREADS` threads (default, or 0: one per core; at most
    /// [`crate::cpu::MAX_THREADS`]).
    pub fn cpu() -> Result<Self> {
        let threads = match std::env::var(THREADS_ENV) {
            Ok(n) if n.trim().is_empty() => 0,
            Ok(n) => match n.trim().parse::<usize>() {
                Ok(t) if t <= crate::cpu::MAX_THREADS => t,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "{THREADS_ENV}={n:?} is not a thread count from 0 (one per core) to {}",
                        crate::cpu::MAX_THREADS
                    )))
                }
            },
            Err(_) => 0,
        };
        Ok(Device::Cpu(Cpu::new(threads)?))
    }

    pub fn gpu(ordinal: usize) -> Result<Self> {
        Ok(Device::Gpu(Arc::new(Gpu::new(ordinal)?)))
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// One line for logs and tables, e.g. `GPU 0 (NVIDIA H100 80GB HBM3)` or `CPU (16 threads)`.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu(cpu) => format!("CPU ({} threads)", cpu.threads()),
            Device::Gpu(gpu) => format!("GPU {} ({})", gpu.ordinal(), gpu.name()),
        }
    }
}

//! Choosing where to compute: the GPU when there is one, else the CPU; or a set of
//! devices (every GPU of the host) that share the work of each call.

use crate::cpu::Cpu;
use crate::error::{invalid_input, Error, Result};
use crate::gpu::Gpu;
use std::sync::Arc;

/// Where the engine computes. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu(Cpu),
    Gpu(Arc<Gpu>),
    /// Several devices that share each call: its structures (MD: its replicas) are
    /// split between them by atom count, whole structures in input order, and run
    /// concurrently, one thread per device (see [`crate::spread`]).
    Set(DeviceSet),
}

/// Two or more devices of one kind (all GPUs, or all CPUs), each GPU at most once.
///
/// A set holds single devices only (never a set), so code that runs on one device
/// takes [`DeviceSet::members`] as they are. A set of CPUs computes nothing a single
/// CPU would not; it exists so that the split can be tested, and measured, without GPUs.
#[derive(Clone, Debug)]
pub struct DeviceSet {
    members: Arc<[Device]>,
}

impl DeviceSet {
    /// The devices, in the order they take the input's structures.
    pub fn members(&self) -> &[Device] {
        &self.members
    }
}

/// Environment variable that overrides [`Device::auto`]: whatever [`Device::parse`] reads.
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

    /// `auto`, `cpu`, `gpu` (= `gpu:0`), `gpu:N`, `gpu:all` (every GPU of the host), or
    /// a comma-separated set: `gpu:0,1` (= `gpu:0,gpu:1`), or `cpu,cpu` (two CPU
    /// devices sharing the cores: the split without GPUs).
    pub fn parse(choice: &str) -> Result<Self> {
        let choice = choice.trim().to_ascii_lowercase();
        let entries: Vec<&str> = choice.split(',').map(str::trim).collect();
        if let [single] = entries[..] {
            return match single {
                "auto" => match crate::gpu::unavailable_reason() {
                    None => Self::gpu(0),
                    Some(_) => Self::cpu(),
                },
                "gpu:all" | "cuda:all" => Self::all_gpus(),
                _ => parse_member(single, 1),
            };
        }
        if let Some(entry) = entries.iter().find(|e| matches!(**e, "" | "auto" | "gpu:all" | "cuda:all")) {
            return invalid_input!(
                "device {choice:?}: {} cannot be one entry of a device set; list devices such as gpu:0,1 or cpu,cpu",
                if entry.is_empty() { "an empty entry" } else { entry }
            );
        }
        let members: Vec<Result<Device>> = std::thread::scope(|scope| {
            let of = entries.len();
            let threads: Vec<_> = entries.iter().map(|&e| scope.spawn(move || parse_member(e, of))).collect();
            threads.into_iter().map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        Self::set(members.into_iter().collect::<Result<Vec<_>>>()?)
    }

    /// The CPU with `MLFF_NUM_THREADS` threads (default, or 0: one per core; at most
    /// [`crate::cpu::MAX_THREADS`]).
    pub fn cpu() -> Result<Self> {
        Ok(Device::Cpu(cpu_from_env()?))
    }

    pub fn gpu(ordinal: usize) -> Result<Self> {
        Ok(Device::Gpu(Arc::new(Gpu::new(ordinal)?)))
    }

    /// GPUs `ordinals` as one set (one GPU: that device alone), opened at once (each
    /// makes its context and loads the kernels, which takes a while).
    pub fn gpus(ordinals: &[usize]) -> Result<Self> {
        let opened: Vec<Result<Device>> = std::thread::scope(|scope| {
            let threads: Vec<_> = ordinals.iter().map(|&n| scope.spawn(move || Self::gpu(n))).collect();
            threads.into_iter().map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        Self::set(opened.into_iter().collect::<Result<Vec<_>>>()?)
    }

    /// Every GPU of the host, as one set (one GPU: that device alone).
    pub fn all_gpus() -> Result<Self> {
        if let Some(reason) = crate::gpu::unavailable_reason() {
            return Err(Error::NoGpu(reason));
        }
        Self::gpus(&(0..crate::gpu::device_count()).collect::<Vec<_>>())
    }

    /// `devices` sharing each call: all GPUs or all CPUs, each GPU once. Sets among
    /// them are opened up; a single device comes back as itself.
    pub fn set(devices: Vec<Device>) -> Result<Self> {
        let mut members: Vec<Device> = Vec::with_capacity(devices.len());
        for device in devices {
            members.extend(device.members().iter().cloned());
        }
        if members.iter().any(Device::is_gpu) && !members.iter().all(Device::is_gpu) {
            return invalid_input!(
                "a device set is all GPUs or all CPUs (a CPU would hold the GPUs back): {}",
                members.iter().map(Device::describe).collect::<Vec<_>>().join(", ")
            );
        }
        let ordinals: Vec<usize> = members.iter().filter_map(|m| m.as_gpu().map(|g| g.ordinal())).collect();
        if let Some((_, n)) = ordinals.iter().enumerate().find(|(k, n)| ordinals[..*k].contains(n)) {
            return invalid_input!("GPU {n} is named twice in the device set");
        }
        match members.len() {
            0 => invalid_input!("a device set needs at least one device"),
            1 => Ok(members.remove(0)),
            _ => Ok(Device::Set(DeviceSet { members: members.into() })),
        }
    }

    /// The devices that do the work: the set's members, or this device alone.
    pub fn members(&self) -> &[Device] {
        match self {
            Device::Set(set) => set.members(),
            single => std::slice::from_ref(single),
        }
    }

    /// A GPU, or a set of GPUs.
    pub fn is_gpu(&self) -> bool {
        match self {
            Device::Cpu(_) => false,
            Device::Gpu(_) => true,
            Device::Set(set) => set.members().iter().all(Device::is_gpu),
        }
    }

    /// The GPU, where this is one GPU.
    pub fn as_gpu(&self) -> Option<&Arc<Gpu>> {
        match self {
            Device::Gpu(g) => Some(g),
            _ => None,
        }
    }

    /// One line for logs and tables, e.g. `GPU 0 (NVIDIA H100 80GB HBM3)`, `CPU (16
    /// threads)` or `2 GPUs: GPU 0 (…), GPU 1 (…)`.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu(cpu) => format!("CPU ({} threads)", cpu.threads()),
            Device::Gpu(gpu) => format!("GPU {} ({})", gpu.ordinal(), gpu.name()),
            Device::Set(set) => {
                let kind = if self.is_gpu() { "GPUs" } else { "CPU devices" };
                let each: Vec<String> = set.members().iter().map(Device::describe).collect();
                format!("{} {kind}: {}", set.members().len(), each.join(", "))
            }
        }
    }
}

/// The CPU thread pool of [`Device::cpu`]: `MLFF_NUM_THREADS` threads (default, or 0:
/// one per core).
pub fn cpu_from_env() -> Result<Cpu> {
    Cpu::new(threads_from_env()?.unwrap_or(0))
}

/// `MLFF_NUM_THREADS`, if set (0: one per core).
fn threads_from_env() -> Result<Option<usize>> {
    match std::env::var(THREADS_ENV) {
        Ok(n) if n.trim().is_empty() => Ok(None),
        Ok(n) => match n.trim().parse::<usize>() {
            Ok(t) if t <= crate::cpu::MAX_THREADS => Ok(Some(t)),
            _ => invalid_input!(
                "{THREADS_ENV}={n:?} is not a thread count from 0 (one per core) to {}",
                crate::cpu::MAX_THREADS
            ),
        },
        Err(_) => Ok(None),
    }
}

/// One entry of a device string: `cpu`, `gpu`, `gpu:N`, or (in a set) a bare `N` for
/// GPU N. A CPU among `of` CPU entries takes its share of the cores unless
/// `MLFF_NUM_THREADS` says how many threads each has.
fn parse_member(entry: &str, of: usize) -> Result<Device> {
    let expected = "expected auto, cpu, gpu, gpu:N, gpu:all, or a set such as gpu:0,1";
    match entry {
        "cpu" if of == 1 => Device::cpu(),
        "cpu" => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = threads_from_env()?.filter(|&t| t > 0).unwrap_or((cores / of).max(1));
            Ok(Device::Cpu(Cpu::new(threads)?))
        }
        "gpu" | "cuda" => Device::gpu(0),
        _ => match entry.strip_prefix("gpu:").or_else(|| entry.strip_prefix("cuda:")) {
            Some(n) => match n.parse::<usize>() {
                Ok(n) => Device::gpu(n),
                Err(_) => invalid_input!("bad GPU ordinal in device {entry:?}; {expected}"),
            },
            None => match entry.parse::<usize>() {
                Ok(n) if of > 1 => Device::gpu(n),
                _ => invalid_input!("unknown device {entry:?}; {expected}"),
            },
        },
    }
}

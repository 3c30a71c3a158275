//! Host side of mlff: devices, buffers and launches, the CPU path, the public API.

pub mod cpu;
pub mod device;
pub mod error;
pub mod gpu;
pub mod selftest;

pub use device::Device;
pub use error::{Error, Result};
/// The kernel bodies (shared by the CPU path and the PTX).
pub use mlff_kernels as kernels;

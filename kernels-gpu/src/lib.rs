//! Kernel bodies for the mlff engine.
//!
//! Every kernel body is a plain Rust function over slices and indices, so the same
//! source runs on the CPU path (the host, and the test oracle) and, through the
//! `extern "ptx-kernel"` entry points that [`kernels!`] writes, on the GPU. The crate
//! is `no_std` so that it compiles for `nvptx64-nvidia-cuda`; the GPU primitives it
//! needs (thread ids, barriers, atomics, shuffles, shared memory) live in [`device`]
//! beside their host equivalents.
//!
//! One folder per part of the engine, each with its CPU bodies, its GPU drivers
//! (`gpu.rs`, compiled for `nvptx64` only), its argument structs and its entry points
//! with their typed handles (`entries.rs`):
//! - [`device`]: the device layer and its self-test kernels;
//! - [`common`]: math, layers, geometry, the filter table, tensor-core tiles, and the
//!   kernels every architecture runs;
//! - [`neighbors`]: the cell-list neighbour search and its prefix sums;
//! - [`student`], [`painn`]: the two architectures of MODEL.md;
//! - [`md`]: the molecular-dynamics integrator.
#![no_std]
#![cfg_attr(target_arch = "nvptx64", feature(abi_ptx, asm_experimental_arch, stdarch_nvptx))]

pub mod kernel;

pub mod common;
pub mod device;
pub mod fused;
pub mod md;
pub mod neighbors;
pub mod painn;
pub mod student;

// The shared building blocks under their short names (`mlff_kernels::math`, …), as
// the bodies and the host use them.
pub use common::{filter_table, geometry, math, mma, nn, radial};
pub use device::selftest;
pub use neighbors::cell_list;

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` takes no operands and does not return; a kernel cannot unwind,
    // and the trap aborts the launch, which the host sees as an error.
    unsafe { core::arch::asm!("trap;", options(noreturn)) }
}

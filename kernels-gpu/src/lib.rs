//! Kernel bodies for the mlff engine.
//!
//! Every kernel body is a plain Rust function over slices and indices, so the same
//! source runs on the CPU path (the host, and the test oracle) and, through the
//! `extern "ptx-kernel"` entry points in [`ptx_entry`], on the GPU. The crate is
//! `no_std` so that it compiles for `nvptx64-nvidia-cuda`; the GPU primitives it
//! needs (thread ids, barriers, atomics, shuffles, shared memory) live in [`device`]
//! beside their host equivalents.
#![no_std]
#![cfg_attr(target_arch = "nvptx64", feature(abi_ptx, asm_experimental_arch, stdarch_nvptx))]

pub mod cell_list;
pub mod device;
pub mod filter_table;
pub mod fused;
pub mod geometry;
pub mod launch_args;
pub mod math;
pub mod md;
pub mod mma;
pub mod nn;
pub mod painn;
pub mod radial;
pub mod selftest;
pub mod student;
pub mod student_tc;

#[cfg(target_arch = "nvptx64")]
mod gpu_cells;
#[cfg(target_arch = "nvptx64")]
mod gpu_md;
#[cfg(target_arch = "nvptx64")]
mod gpu_painn;
#[cfg(target_arch = "nvptx64")]
mod gpu_scan;
#[cfg(target_arch = "nvptx64")]
mod gpu_student;
#[cfg(target_arch = "nvptx64")]
mod gpu_student_tc;
#[cfg(target_arch = "nvptx64")]
pub mod ptx_entry;

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // A kernel cannot unwind; `trap` aborts the launch, which the host sees as an error.
    unsafe { core::arch::asm!("trap;", options(noreturn)) }
}

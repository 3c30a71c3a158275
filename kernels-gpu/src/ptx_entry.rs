//! `extern "ptx-kernel"` entry points: thin wrappers that turn thread ids and raw
//! pointers into calls of the kernel bodies. Kept apart so the bodies stay plain Rust.
//!
//! Safety contract of every entry point: the host passes device pointers to buffers
//! of at least the lengths the arguments name; the launch wrappers in `mlff-host`
//! check those lengths before launching.
#![allow(clippy::missing_safety_doc)]

use crate::device::gpu;
use crate::selftest;

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_global_id(out: *mut u32, n: u32) {
    let i = gpu::global_id();
    if i < n as usize {
        *out.add(i) = selftest::global_id_pattern(i as u32);
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_atomic_add(values: *const f32, n: u32, bins: *mut f32, nbins: u32) {
    let i = gpu::global_id();
    if i < n as usize {
        gpu::atomic_add_f32(bins.add(i % nbins as usize), *values.add(i));
    }
}

/// Every lane of a partial last warp takes part (loading 0), as shuffles require.
#[inline(always)]
unsafe fn load_or_zero(input: *const f32, n: u32, i: usize) -> f32 {
    if i < n as usize { *input.add(i) } else { 0.0 }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_shfl_xor(input: *const f32, n: u32, out: *mut f32, mask: u32) {
    let i = gpu::global_id();
    let v = gpu::shfl_xor_f32(load_or_zero(input, n, i), mask);
    if i < n as usize {
        *out.add(i) = v;
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_shfl_down(input: *const f32, n: u32, out: *mut f32, delta: u32) {
    let i = gpu::global_id();
    let v = gpu::shfl_down_f32(load_or_zero(input, n, i), delta);
    if i < n as usize {
        *out.add(i) = v;
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_warp_reduce(input: *const f32, n: u32, sums: *mut f32) {
    let i = gpu::global_id();
    let s = gpu::warp_reduce_sum(load_or_zero(input, n, i));
    if gpu::lane_id() == 0 {
        *sums.add(i / crate::device::WARP_SIZE) = s;
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_block_reduce(input: *const f32, n: u32, sums: *mut f32) {
    let i = gpu::global_id();
    let s = gpu::block_reduce_sum(load_or_zero(input, n, i));
    if gpu::thread_idx() == 0 {
        *sums.add(gpu::block_idx()) = s;
    }
}

/// Needs `block_dim * 4` bytes of dynamic shared memory.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_shared_reverse(input: *const f32, n: u32, out: *mut f32) {
    let shared = gpu::dynamic_shared_f32();
    let t = gpu::thread_idx();
    let i = gpu::global_id();
    *shared.add(t) = load_or_zero(input, n, i);
    gpu::sync_threads();
    if i < n as usize {
        *out.add(i) = *shared.add(gpu::block_dim() - 1 - t);
    }
}

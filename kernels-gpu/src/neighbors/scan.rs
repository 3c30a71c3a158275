//! Exclusive prefix sum of u32 on the GPU: each block scans 1024 elements and writes
//! its total; the host scans the totals the same way (recursively) and adds them back.

use super::args::{ScanArgs, SCAN_BLOCK_ELEMENTS};
use crate::device::gpu;

/// Block-local exclusive scan; `block_sums[block]` = the block's total.
pub unsafe fn scan_block_kernel(a: &ScanArgs) {
    let len = a.len as usize;
    let base = gpu::block_idx() * SCAN_BLOCK_ELEMENTS + gpu::thread_idx() * 4;
    let mut v = [0u32; 4];
    for k in 0..4 {
        if base + k < len {
            v[k] = *a.data.add(base + k);
        }
    }
    let thread_sum = (v[0] + v[1]) + (v[2] + v[3]);
    let warp_inclusive = gpu::warp_inclusive_scan_u32(thread_sum);
    let scratch = gpu::block_scratch_f32() as *mut u32;
    if gpu::lane_id() == 31 {
        *scratch.add(gpu::warp_id()) = warp_inclusive;
    }
    gpu::sync_threads();
    let warps = gpu::block_dim() / 32;
    if gpu::warp_id() == 0 {
        let total = if gpu::lane_id() < warps { *scratch.add(gpu::lane_id()) } else { 0 };
        let inclusive = gpu::warp_inclusive_scan_u32(total);
        if gpu::lane_id() < warps {
            *scratch.add(16 + gpu::lane_id()) = inclusive - total;
        }
    }
    gpu::sync_threads();
    let mut running = *scratch.add(16 + gpu::warp_id()) + warp_inclusive - thread_sum;
    for k in 0..4 {
        if base + k < len {
            *a.data.add(base + k) = running;
        }
        running += v[k];
    }
    if gpu::thread_idx() == gpu::block_dim() - 1 {
        *a.block_sums.add(gpu::block_idx()) = running;
    }
}

/// Adds each block's offset (the scanned `block_sums`) to its elements.
pub unsafe fn scan_add_kernel(a: &ScanArgs) {
    let i = gpu::global_id();
    if i < a.len as usize {
        *a.data.add(i) += *a.block_sums.add(i / SCAN_BLOCK_ELEMENTS);
    }
}

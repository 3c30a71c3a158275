//! Kernels that exercise the device layer, with their host oracles. The GPU tests run
//! each entry point on random data and compare with the oracle here.

use crate::device::{host, WARP_SIZE};
use core::sync::atomic::AtomicU32;

/// Value the `global_id` kernel writes at index i: mixes the bits so that a wrong
/// index shows up as a wrong value, not just a wrong position.
#[inline(always)]
pub fn global_id_pattern(i: u32) -> u32 {
    i.wrapping_mul(0x9E37_79B9) ^ 0x5bd1_e995
}

/// Oracle of `mlff_selftest_atomic_add`: bins[i % nbins] += values[i] (f32 bits in
/// atomics, as the host equivalent of `atom.add.f32` needs).
pub fn atomic_histogram_host(values: &[f32], bins: &[AtomicU32]) {
    for (i, &v) in values.iter().enumerate() {
        host::atomic_add_f32(&bins[i % bins.len()], v);
    }
}

/// Lanes of warp `warp` of `input`, zero past its end (as the GPU kernels load them).
pub fn warp_lanes(input: &[f32], warp: usize) -> [f32; WARP_SIZE] {
    core::array::from_fn(|lane| input.get(warp * WARP_SIZE + lane).copied().unwrap_or(0.0))
}

/// Oracle of `mlff_selftest_shfl_xor` / `_shfl_down`: output[i] is lane i's result.
pub fn shuffle_host(input: &[f32], output: &mut [f32], amount: u32, xor: bool) {
    for (warp, out) in output.chunks_mut(WARP_SIZE).enumerate() {
        let lanes = warp_lanes(input, warp);
        let shuffled = if xor { host::shfl_xor_lanes(&lanes, amount) } else { host::shfl_down_lanes(&lanes, amount) };
        out.copy_from_slice(&shuffled[..out.len()]);
    }
}

/// Oracle of `mlff_selftest_warp_reduce`: one sum per warp of 32 inputs.
pub fn warp_reduce_host(input: &[f32], sums: &mut [f32]) {
    for (warp, sum) in sums.iter_mut().enumerate() {
        *sum = host::warp_reduce_sum_lanes(&warp_lanes(input, warp));
    }
}

/// Oracle of `mlff_selftest_warp_reduce4`: four sums per warp of 32 × 4 inputs (value q
/// of lane l at 4(32w + l) + q), each the scalar butterfly's.
pub fn warp_reduce4_host(input: &[f32], sums: &mut [f32]) {
    for (k, sum) in sums.iter_mut().enumerate() {
        let (warp, q) = (k / 4, k % 4);
        let lanes = core::array::from_fn(|lane| input.get(4 * (warp * WARP_SIZE + lane) + q).copied().unwrap_or(0.0));
        *sum = host::warp_reduce_sum_lanes(&lanes);
    }
}

/// Oracle of `mlff_selftest_block_reduce`: one sum per block of `block` inputs.
pub fn block_reduce_host(input: &[f32], block: usize, sums: &mut [f32], scratch: &mut [f32]) {
    for (b, sum) in sums.iter_mut().enumerate() {
        for (t, slot) in scratch[..block].iter_mut().enumerate() {
            *slot = input.get(b * block + t).copied().unwrap_or(0.0);
        }
        *sum = host::block_reduce_sum_host(&scratch[..block]);
    }
}

/// Oracle of `mlff_selftest_shared_reverse`: each block's chunk (zero-padded to the
/// block size) reversed through shared memory.
pub fn shared_reverse_host(input: &[f32], block: usize, output: &mut [f32]) {
    for (i, out) in output.iter_mut().enumerate() {
        let start = i - i % block;
        let mirrored = start + block - 1 - (i - start);
        *out = input.get(mirrored).copied().unwrap_or(0.0);
    }
}

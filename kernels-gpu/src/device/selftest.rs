//! Kernels that exercise the device layer, with their host oracles. The GPU tests run
//! each entry point on random data and compare with the oracle here.

use crate::device::{host, WARP_SIZE};
use crate::kernel::KernelArgs;
use core::sync::atomic::AtomicU32;

/// Arguments of `mlff_selftest_global_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GlobalIdArgs {
    pub out: *mut u32,
    pub n: u32,
}

/// Arguments of `mlff_selftest_atomic_add`: `bins[i % nbins] += values[i]`, i < n.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AtomicAddArgs {
    pub values: *const f32,
    pub bins: *mut f32,
    pub n: u32,
    pub nbins: u32,
}

/// Arguments of the kernels of one input and one output: `n` inputs, and the shuffle
/// amount (lane mask or delta) of the shuffle kernels (unused by the others).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OneInputArgs {
    pub input: *const f32,
    pub out: *mut f32,
    pub n: u32,
    pub amount: u32,
}

/// Arguments of `mlff_selftest_mma`: out (16 × n) = a (16 × k) · b (k × n, fragment
/// layout).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmaArgs {
    pub a: *const f32,
    pub b: *const f32,
    pub out: *mut f32,
    pub k: u32,
    pub n: u32,
}

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for GlobalIdArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for AtomicAddArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for OneInputArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for MmaArgs {}

crate::kernels! {
    /// `out[i] = global_id_pattern(i)`.
    GLOBAL_ID = mlff_selftest_global_id(GlobalIdArgs) => gpu::global_id;
    /// `atom.add.f32` into bins.
    ATOMIC_ADD = mlff_selftest_atomic_add(AtomicAddArgs) => gpu::atomic_add;
    /// Each lane's value after `shfl_xor_f32` with mask `amount`.
    SHFL_XOR = mlff_selftest_shfl_xor(OneInputArgs) => gpu::shfl_xor;
    /// Each lane's value after `shfl_down_f32` by `amount`.
    SHFL_DOWN = mlff_selftest_shfl_down(OneInputArgs) => gpu::shfl_down;
    /// One `warp_reduce_sum` per warp.
    WARP_REDUCE = mlff_selftest_warp_reduce(OneInputArgs) => gpu::warp_reduce;
    /// Four `warp_reduce_sum4` sums per warp: thread i's values are input[4i..4i + 4].
    WARP_REDUCE4 = mlff_selftest_warp_reduce4(OneInputArgs) => gpu::warp_reduce4;
    /// One `block_reduce_sum` per block.
    BLOCK_REDUCE = mlff_selftest_block_reduce(OneInputArgs) => gpu::block_reduce;
    /// Each block's chunk reversed through dynamic shared memory (`block_dim * 4` bytes).
    SHARED_REVERSE = mlff_selftest_shared_reverse(OneInputArgs) => gpu::shared_reverse;
    /// A 16-row product on the tensor cores (`mma`), one warp.
    MMA = mlff_selftest_mma(MmaArgs) => gpu::mma;
}

/// The kernel bodies of the entries above: each maps thread ids to the primitive under
/// test. Safety contract: the pointers of the arguments address buffers of the lengths
/// the arguments name.
#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::{AtomicAddArgs, GlobalIdArgs, MmaArgs, OneInputArgs};
    use crate::device::gpu;

    #[inline(always)]
    pub unsafe fn global_id(a: &GlobalIdArgs) {
        let i = gpu::global_id();
        if i < a.n as usize {
            *a.out.add(i) = super::global_id_pattern(i as u32);
        }
    }

    #[inline(always)]
    pub unsafe fn atomic_add(a: &AtomicAddArgs) {
        let i = gpu::global_id();
        if i < a.n as usize {
            gpu::atomic_add_f32(a.bins.add(i % a.nbins as usize), *a.values.add(i));
        }
    }

    /// Every lane of a partial last warp takes part (loading 0), as shuffles require.
    #[inline(always)]
    unsafe fn load_or_zero(input: *const f32, n: u32, i: usize) -> f32 {
        if i < n as usize {
            *input.add(i)
        } else {
            0.0
        }
    }

    #[inline(always)]
    pub unsafe fn shfl_xor(a: &OneInputArgs) {
        let i = gpu::global_id();
        let v = gpu::shfl_xor_f32(load_or_zero(a.input, a.n, i), a.amount);
        if i < a.n as usize {
            *a.out.add(i) = v;
        }
    }

    #[inline(always)]
    pub unsafe fn shfl_down(a: &OneInputArgs) {
        let i = gpu::global_id();
        let v = gpu::shfl_down_f32(load_or_zero(a.input, a.n, i), a.amount);
        if i < a.n as usize {
            *a.out.add(i) = v;
        }
    }

    #[inline(always)]
    pub unsafe fn warp_reduce(a: &OneInputArgs) {
        let i = gpu::global_id();
        let s = gpu::warp_reduce_sum(load_or_zero(a.input, a.n, i));
        // Only warps that hold inputs have a place in `out` (lane 0's index is the
        // warp's first; the last block may have warps past the input).
        if gpu::lane_id() == 0 && i < a.n as usize {
            *a.out.add(i / crate::device::WARP_SIZE) = s;
        }
    }

    #[inline(always)]
    pub unsafe fn warp_reduce4(a: &OneInputArgs) {
        let i = gpu::global_id();
        let s = gpu::warp_reduce_sum4(core::array::from_fn(|q| load_or_zero(a.input, a.n, 4 * i + q)));
        let lane = gpu::lane_id();
        // Only warps that hold inputs have a place in `out`.
        if lane % 8 == 0 && 4 * (i - lane) < a.n as usize {
            *a.out.add(4 * (i / crate::device::WARP_SIZE) + lane / 8) = s;
        }
    }

    #[inline(always)]
    pub unsafe fn block_reduce(a: &OneInputArgs) {
        let i = gpu::global_id();
        let s = gpu::block_reduce_sum(load_or_zero(a.input, a.n, i));
        if gpu::thread_idx() == 0 {
            *a.out.add(gpu::block_idx()) = s;
        }
    }

    #[inline(always)]
    pub unsafe fn shared_reverse(a: &OneInputArgs) {
        let shared = gpu::dynamic_shared_f32();
        let t = gpu::thread_idx();
        let i = gpu::global_id();
        *shared.add(t) = load_or_zero(a.input, a.n, i);
        gpu::sync_threads();
        if i < a.n as usize {
            *a.out.add(i) = *shared.add(gpu::block_dim() - 1 - t);
        }
    }

    /// out (16 × n, row-major) = a (16 × k, row-major) · b (k × n, fragment layout of
    /// `mma`), one warp walking the 8-column tiles.
    #[inline(always)]
    pub unsafe fn mma(args: &MmaArgs) {
        use crate::mma::{accumulator_position, padded, warp_product, SplitPair, TILE_ROWS};
        let (a, b, out) = (args.a, args.b, args.out);
        let (k, n) = (args.k as usize, args.n as usize);
        let lda = padded(k);
        let shared = gpu::dynamic_shared_f32() as *mut SplitPair;
        let lane = gpu::lane_id();
        for e in (lane..TILE_ROWS * k).step_by(32) {
            *shared.add(e / k * lda + e % k) = SplitPair::new(*a.add(e));
        }
        gpu::sync_warp();
        for tile in 0..n / 8 {
            let mut acc = [[0.0f32; 4]; 1];
            warp_product::<1, 1>(&mut acc, shared, lda, b, k, [tile]);
            for (e, value) in acc[0].iter().enumerate() {
                let (row, col) = accumulator_position(lane, e);
                *out.add(row * n + 8 * tile + col) = *value;
            }
        }
    }
}

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

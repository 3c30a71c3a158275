//! Dense layers over a tile of atoms in shared memory, one thread per output column
//! (and k-slice): the atom-tile kernels of every architecture (update, mixing,
//! context, readout and their adjoints) are built from these.

use crate::device::gpu;
use crate::math::fma;

/// acc[t] = bias + Σ_k input[t][k] · w[k·stride + col], over a shared-memory tile,
/// k ascending. Weights are loaded eight at a time (sixteen in tiles of at most 2
/// atoms) so that that many loads are in flight: one at a time, the loop waits on L2
/// latency, not on arithmetic.
#[inline(always)]
pub(crate) unsafe fn tile_dense<const TA: usize>(
    input: *const f32,
    input_stride: usize,
    k_len: usize,
    w: *const f32,
    w_stride: usize,
    col: usize,
    bias: f32,
) -> [f32; TA] {
    tile_dense_range::<TA>(input, input_stride, 0, k_len, w, w_stride, col, bias)
}

/// Weights loaded before the multiply-adds that use them in tiles of at most 2 atoms:
/// each thread's chain over k waits on L2 once per this many k. Larger tiles keep 8
/// (at 16, ptxas put their accumulators in local memory: 96 → 640 bytes of stack
/// in `update_t8`).
const LOADS_IN_FLIGHT: usize = 16;

/// Four floats read as one 16-byte load.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Quad([f32; 4]);

/// `tile_dense` over k in `lo..hi` only. Each atom's inputs are read four k at a
/// time: one shared-memory wavefront feeds four multiply-adds instead of one.
/// Needs 16-byte aligned rows: `input` 16-byte aligned, `input_stride` and `lo`
/// multiples of 4, which every caller's layout gives (offsets are multiples of H, H
/// is one of the host's supported sizes, all multiples of 32; slices start at
/// multiples of 8).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_dense_range<const TA: usize>(
    input: *const f32,
    input_stride: usize,
    lo: usize,
    hi: usize,
    w: *const f32,
    w_stride: usize,
    col: usize,
    bias: f32,
) -> [f32; TA] {
    let mut acc = [bias; TA];
    let mut k = lo;
    while TA <= 2 && k + LOADS_IN_FLIGHT <= hi {
        let wk: [f32; LOADS_IN_FLIGHT] = core::array::from_fn(|u| *w.add((k + u) * w_stride + col));
        for t in 0..TA {
            let row = input.add(t * input_stride + k);
            for q in 0..LOADS_IN_FLIGHT / 4 {
                let x = *(row.add(4 * q) as *const Quad);
                for u in 0..4 {
                    acc[t] = fma(x.0[u], wk[4 * q + u], acc[t]);
                }
            }
        }
        k += LOADS_IN_FLIGHT;
    }
    while k + 8 <= hi {
        let wk: [f32; 8] = core::array::from_fn(|u| *w.add((k + u) * w_stride + col));
        for t in 0..TA {
            let row = input.add(t * input_stride + k);
            let (q0, q1) = (*(row as *const Quad), *(row.add(4) as *const Quad));
            for u in 0..4 {
                acc[t] = fma(q0.0[u], wk[u], acc[t]);
            }
            for u in 0..4 {
                acc[t] = fma(q1.0[u], wk[4 + u], acc[t]);
            }
        }
        k += 8;
    }
    while k < hi {
        let wk = *w.add(k * w_stride + col);
        for t in 0..TA {
            acc[t] = fma(*input.add(t * input_stride + k), wk, acc[t]);
        }
        k += 1;
    }
    acc
}

/// The atom-tile kernels' threads: column c < H of slice s < S (block of H·S
/// threads). Each slice sums its own part of k (split-K), so a thread's serial chain
/// of weight loads is S times shorter; the slices then meet in shared memory.
#[derive(Clone, Copy)]
pub(crate) struct TileThread {
    pub c: usize,
    pub slice: usize,
    slices: usize,
    h: usize,
    /// S·TA·H floats of shared memory for the partial sums.
    partial: *mut f32,
}

impl TileThread {
    pub(crate) unsafe fn new(h: usize, partial: *mut f32) -> Self {
        let t = gpu::thread_idx();
        TileThread { c: t % h, slice: t / h, slices: gpu::block_dim() / h, h, partial }
    }

    /// `dense` when SPLIT, else plain `tile_dense`: a kernel instantiated without the
    /// split keeps the registers of the plain loop (with both paths in one kernel,
    /// PaiNN's mixing went from 72 to 168 registers and its large inputs 8 % slower).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn dense_if<const TA: usize, const SPLIT: bool>(
        &self,
        input: *const f32,
        input_stride: usize,
        k_len: usize,
        w: *const f32,
        w_stride: usize,
        col: usize,
        bias: f32,
    ) -> [f32; TA] {
        if SPLIT {
            self.dense::<TA>(input, input_stride, k_len, w, w_stride, col, bias)
        } else {
            tile_dense::<TA>(input, input_stride, k_len, w, w_stride, col, bias)
        }
    }

    /// `tile_dense` split over the block's slices; every thread gets the full sums.
    /// Contains barriers: every thread of the block must call it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn dense<const TA: usize>(
        &self,
        input: *const f32,
        input_stride: usize,
        k_len: usize,
        w: *const f32,
        w_stride: usize,
        col: usize,
        bias: f32,
    ) -> [f32; TA] {
        if self.slices == 1 {
            return tile_dense::<TA>(input, input_stride, k_len, w, w_stride, col, bias);
        }
        let chunk = k_len.div_ceil(self.slices).div_ceil(8) * 8;
        let lo = (self.slice * chunk).min(k_len);
        let hi = (lo + chunk).min(k_len);
        let part = tile_dense_range::<TA>(input, input_stride, lo, hi, w, w_stride, col, 0.0);
        for t in 0..TA {
            *self.partial.add((self.slice * TA + t) * self.h + self.c) = part[t];
        }
        gpu::sync_threads();
        let mut acc = [bias; TA];
        for s in 0..self.slices {
            for t in 0..TA {
                acc[t] += *self.partial.add((s * TA + t) * self.h + self.c);
            }
        }
        gpu::sync_threads();
        acc
    }
}

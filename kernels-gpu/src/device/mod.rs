//! The device layer: the few GPU primitives our kernels use, each beside its host
//! equivalent, in this one place.
//!
//! | primitive | GPU (`gpu::`) | host equivalent (`host::`) |
//! |---|---|---|
//! | thread/block ids | `thread_idx`, `block_idx`, `block_dim`, `grid_dim`, `global_id`, `lane_id`, `warp_id` | the CPU path passes the index explicitly to the kernel body (`for i in 0..n`, or rayon) |
//! | barrier | `sync_threads` (`bar.sync 0`) | sequential phases of a loop over the block |
//! | f32 atomic add | `atomic_add_f32` (`atom.add.f32`) | `atomic_add_f32` on an `AtomicU32` (compare-and-swap loop) |
//! | warp vote, warp barrier | `ballot` (`vote.sync.ballot`), `sync_warp` (`bar.warp.sync`) | the CPU path has no warps: the kernels that use them are GPU-only (neighbour rows, checked against the CPU list by `tests/neighbors.rs`) |
//! | warp shuffle | `shfl_xor_f32`, `shfl_down_f32` (`shfl.sync`) | `shfl_xor_lanes`, `shfl_down_lanes` over a `[f32; 32]` of lanes |
//! | warp reduction | `warp_reduce_sum` (butterfly of `shfl_xor`) | `warp_reduce_sum_lanes`: the same butterfly, so the result is bit-identical |
//! | block reduction | `block_reduce_sum` (warp sums via static shared memory) | `block_reduce_sum_host`: the same order of additions |
//! | static shared memory | `block_scratch_f32` (32 floats, one per warp) | a local `[f32; 32]` |
//! | dynamic shared memory | `dynamic_shared_f32` (size set at launch) | a `Vec`/slice the caller owns |
//!
//! Every GPU primitive here is checked against its host equivalent on random data by
//! the `device_layer` GPU tests (`tests/device_layer.rs`).

pub mod selftest;

/// Threads in a warp on every NVIDIA GPU we target.
pub const WARP_SIZE: usize = 32;
/// Largest block the block-level primitives support (32 warps, one scratch slot each).
pub const MAX_BLOCK_THREADS: usize = 1024;

#[cfg(target_arch = "nvptx64")]
pub mod gpu {
    use core::arch::asm;
    use core::arch::nvptx;

    // One f32 per warp of the block, for block-level reductions. PTX allocates static
    // shared memory per kernel only where the kernel references the symbol.
    core::arch::global_asm!(".shared .align 16 .b8 MLFF_BLOCK_SCRATCH[128];");
    // Dynamic shared memory: its size is the launch's `shared_mem_bytes`.
    core::arch::global_asm!(".extern .shared .align 16 .b8 MLFF_DYNAMIC_SHARED[];");

    #[inline(always)]
    pub fn thread_idx() -> usize {
        // SAFETY: reads a special register of this thread; no memory, no side effect.
        unsafe { nvptx::_thread_idx_x() as usize }
    }
    #[inline(always)]
    pub fn block_idx() -> usize {
        // SAFETY: reads a special register of this thread; no memory, no side effect.
        unsafe { nvptx::_block_idx_x() as usize }
    }
    #[inline(always)]
    pub fn block_dim() -> usize {
        // SAFETY: reads a special register of this thread; no memory, no side effect.
        unsafe { nvptx::_block_dim_x() as usize }
    }
    #[inline(always)]
    pub fn grid_dim() -> usize {
        // SAFETY: reads a special register of this thread; no memory, no side effect.
        unsafe { nvptx::_grid_dim_x() as usize }
    }
    /// Index of this thread in the whole (1-D) grid.
    #[inline(always)]
    pub fn global_id() -> usize {
        block_idx() * block_dim() + thread_idx()
    }
    #[inline(always)]
    pub fn lane_id() -> usize {
        thread_idx() % super::WARP_SIZE
    }
    #[inline(always)]
    pub fn warp_id() -> usize {
        thread_idx() / super::WARP_SIZE
    }

    /// Block-wide barrier; every thread of the block must reach it.
    #[inline(always)]
    pub fn sync_threads() {
        // SAFETY: a barrier, no memory access of its own; the callers reach it from
        // every thread of the block, as `bar.sync` needs.
        unsafe { nvptx::_syncthreads() }
    }

    /// Block-wide barrier that also returns whether `flag` held in any thread
    /// (`bar.red.or.pred`); every thread of the block must reach it.
    #[inline(always)]
    pub fn sync_threads_or(flag: bool) -> bool {
        let out: u32;
        unsafe {
            asm!("{{", ".reg .pred p, q;", "setp.ne.u32 p, {flag}, 0;", "bar.red.or.pred q, 0, p;",
                 "selp.u32 {out}, 1, 0, q;", "}}",
                 out = out(reg32) out, flag = in(reg32) flag as u32, options(nostack));
        }
        out != 0
    }

    /// `*address += value`, atomically; returns the old value.
    ///
    /// # Safety
    /// `address` must point to a valid f32 in global or shared memory.
    #[inline(always)]
    pub unsafe fn atomic_add_f32(address: *mut f32, value: f32) -> f32 {
        let old: f32;
        asm!("atom.add.f32 {old}, [{address}], {value};",
             old = out(reg32) old, address = in(reg64) address, value = in(reg32) value,
             options(nostack));
        old
    }

    /// The value of the lane whose id is `lane_id() ^ mask` (all 32 lanes must call it).
    #[inline(always)]
    pub fn shfl_xor_f32(value: f32, mask: u32) -> f32 {
        let out: f32;
        // SAFETY: registers only; the full-warp mask (-1) needs all 32 lanes, which the
        // callers have converged (the function's contract).
        unsafe {
            asm!("shfl.sync.bfly.b32 {out}, {value}, {mask}, 31, -1;",
                 out = out(reg32) out, value = in(reg32) value, mask = in(reg32) mask,
                 options(nostack, nomem));
        }
        out
    }

    /// `*address += value` on a u32, atomically; returns the old value.
    ///
    /// # Safety
    /// `address` must point to a valid u32 in global or shared memory.
    #[inline(always)]
    pub unsafe fn atomic_add_u32(address: *mut u32, value: u32) -> u32 {
        let old: u32;
        asm!("atom.add.u32 {old}, [{address}], {value};",
             old = out(reg32) old, address = in(reg64) address, value = in(reg32) value,
             options(nostack));
        old
    }

    /// `if *address == expected { *address = new }`, atomically; returns the old value.
    ///
    /// # Safety
    /// `address` must point to a valid u32 in global or shared memory.
    #[inline(always)]
    pub unsafe fn atomic_cas_u32(address: *mut u32, expected: u32, new: u32) -> u32 {
        let old: u32;
        asm!("atom.cas.b32 {old}, [{address}], {expected}, {new};",
             old = out(reg32) old, address = in(reg64) address, expected = in(reg32) expected,
             new = in(reg32) new, options(nostack));
        old
    }

    /// The value of lane `source` (all 32 lanes must call it).
    #[inline(always)]
    pub fn shfl_idx_u32(value: u32, source: u32) -> u32 {
        let out: u32;
        // SAFETY: registers only; the full-warp mask needs all 32 lanes (the contract).
        unsafe {
            asm!("shfl.sync.idx.b32 {out}, {value}, {source}, 31, -1;",
                 out = out(reg32) out, value = in(reg32) value, source = in(reg32) source,
                 options(nostack, nomem));
        }
        out
    }

    #[inline(always)]
    pub fn shfl_idx_f32(value: f32, source: u32) -> f32 {
        f32::from_bits(shfl_idx_u32(value.to_bits(), source))
    }

    /// The value of lane `lane_id() - delta`, or this lane's own below lane `delta`.
    #[inline(always)]
    pub fn shfl_up_u32(value: u32, delta: u32) -> u32 {
        let out: u32;
        // SAFETY: registers only; the full-warp mask needs all 32 lanes (the contract).
        unsafe {
            asm!("shfl.sync.up.b32 {out}, {value}, {delta}, 0, -1;",
                 out = out(reg32) out, value = in(reg32) value, delta = in(reg32) delta,
                 options(nostack, nomem));
        }
        out
    }

    /// Bit l set where lane l's `predicate` holds (all 32 lanes must call it).
    #[inline(always)]
    pub fn ballot(predicate: bool) -> u32 {
        let out: u32;
        // SAFETY: registers only; the full-warp mask needs all 32 lanes (the contract).
        unsafe {
            asm!("{{", ".reg .pred p;", "setp.ne.u32 p, {value}, 0;", "vote.sync.ballot.b32 {out}, p, -1;", "}}",
                 out = out(reg32) out, value = in(reg32) predicate as u32, options(nostack, nomem));
        }
        out
    }

    /// Warp barrier: the warp's memory writes before it are visible to its lanes after.
    #[inline(always)]
    pub fn sync_warp() {
        // SAFETY: a warp barrier over all lanes, which the callers have converged.
        unsafe { asm!("bar.warp.sync -1;", options(nostack)) }
    }

    /// Inclusive prefix sum over the warp (Hillis-Steele with `shfl.up`).
    #[inline(always)]
    pub fn warp_inclusive_scan_u32(mut value: u32) -> u32 {
        let lane = lane_id() as u32;
        let mut delta = 1;
        while delta < 32 {
            let other = shfl_up_u32(value, delta);
            if lane >= delta {
                value += other;
            }
            delta <<= 1;
        }
        value
    }

    /// Minimum and maximum over the warp, returned to every lane.
    #[inline(always)]
    pub fn warp_min_max(mut lo: f32, mut hi: f32) -> (f32, f32) {
        let mut mask = 16;
        while mask > 0 {
            lo = lo.min(shfl_xor_f32(lo, mask));
            hi = hi.max(shfl_xor_f32(hi, mask));
            mask >>= 1;
        }
        (lo, hi)
    }

    /// The value of lane `lane_id() + delta`, or this lane's own past the warp's end.
    #[inline(always)]
    pub fn shfl_down_f32(value: f32, delta: u32) -> f32 {
        let out: f32;
        // SAFETY: registers only; the full-warp mask needs all 32 lanes (the contract).
        unsafe {
            asm!("shfl.sync.down.b32 {out}, {value}, {delta}, 31, -1;",
                 out = out(reg32) out, value = in(reg32) value, delta = in(reg32) delta,
                 options(nostack, nomem));
        }
        out
    }

    /// Sum over the warp, returned to every lane (butterfly: 16, 8, 4, 2, 1).
    #[inline(always)]
    pub fn warp_reduce_sum(mut value: f32) -> f32 {
        let mut mask = 16;
        while mask > 0 {
            value += shfl_xor_f32(value, mask);
            mask >>= 1;
        }
        value
    }

    /// Sums over the warp of four values at once: lane l returns the sum of
    /// `values[(l >> 3) & 3]`, so lanes 0, 8, 16 and 24 hold the four sums. The first
    /// two steps of the butterfly trade halves of the values instead of copies (6
    /// shuffles and 6 adds for the four, against 20 and 20); the pairs summed are those
    /// of `warp_reduce_sum`, so each sum is bit-identical to it.
    #[inline(always)]
    pub fn warp_reduce_sum4(values: [f32; 4]) -> f32 {
        let lane = lane_id() as u32;
        let upper = lane & 16 != 0;
        let half: [f32; 2] = core::array::from_fn(|k| {
            let (keep, send) = if upper { (values[k + 2], values[k]) } else { (values[k], values[k + 2]) };
            keep + shfl_xor_f32(send, 16)
        });
        let (keep, send) = if lane & 8 != 0 { (half[1], half[0]) } else { (half[0], half[1]) };
        let mut value = keep + shfl_xor_f32(send, 8);
        let mut mask = 4;
        while mask > 0 {
            value += shfl_xor_f32(value, mask);
            mask >>= 1;
        }
        value
    }

    /// Pointer to this block's 32-float static scratch (one slot per warp).
    #[inline(always)]
    pub fn block_scratch_f32() -> *mut f32 {
        let generic: u64;
        // SAFETY: takes the address of the module's static shared array; no access.
        unsafe {
            asm!("mov.u64 {g}, MLFF_BLOCK_SCRATCH;", "cvta.shared.u64 {g}, {g};",
                 g = out(reg64) generic, options(nostack, nomem, pure));
        }
        generic as *mut f32
    }

    /// Pointer to this block's dynamic shared memory (as many bytes as the launch gave).
    #[inline(always)]
    pub fn dynamic_shared_f32() -> *mut f32 {
        let generic: u64;
        // SAFETY: takes the address of the dynamic shared memory; no access.
        unsafe {
            asm!("mov.u64 {g}, MLFF_DYNAMIC_SHARED;", "cvta.shared.u64 {g}, {g};",
                 g = out(reg64) generic, options(nostack, nomem, pure));
        }
        generic as *mut f32
    }

    /// Sum over the block, returned to every thread. Every thread must call it; the
    /// block size must be a multiple of 32 and at most 1024.
    #[inline(always)]
    pub fn block_reduce_sum(value: f32) -> f32 {
        let scratch = block_scratch_f32();
        let warp_sum = warp_reduce_sum(value);
        let warps = block_dim() / super::WARP_SIZE;
        if lane_id() == 0 {
            // SAFETY: the scratch holds one float for each of the block's ≤ 32 warps.
            unsafe { *scratch.add(warp_id()) = warp_sum };
        }
        sync_threads();
        // SAFETY: lane < warps ≤ 32, within the scratch, written before the barrier.
        let partial = if lane_id() < warps { unsafe { *scratch.add(lane_id()) } } else { 0.0 };
        let total = warp_reduce_sum(partial);
        // The scratch may be reused by the caller's next reduction.
        sync_threads();
        total
    }

    /// Sums W f64 words over the block (a tree in dynamic shared memory of
    /// W × blockDim f64); the totals are valid in thread 0. Every thread must call it;
    /// the block size must be a power of two.
    #[inline(always)]
    pub unsafe fn block_sum_f64<const W: usize>(acc: [f64; W]) -> [f64; W] {
        let shared = dynamic_shared_f32() as *mut f64;
        let (t, threads) = (thread_idx(), block_dim());
        for q in 0..W {
            *shared.add(q * threads + t) = acc[q];
        }
        sync_threads();
        let mut stride = threads / 2;
        while stride > 0 {
            if t < stride {
                for q in 0..W {
                    *shared.add(q * threads + t) += *shared.add(q * threads + t + stride);
                }
            }
            sync_threads();
            stride /= 2;
        }
        core::array::from_fn(|q| *shared.add(q * threads))
    }
}

/// Host equivalents of the GPU primitives, with the same order of floating-point
/// operations wherever the GPU's order is deterministic.
pub mod host {
    use super::WARP_SIZE;
    use core::sync::atomic::{AtomicU32, Ordering};

    /// `*cell += value` atomically (for f32 stored as bits); returns the old value.
    pub fn atomic_add_f32(cell: &AtomicU32, value: f32) -> f32 {
        let mut current = cell.load(Ordering::Relaxed);
        loop {
            let new = (f32::from_bits(current) + value).to_bits();
            match cell.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(old) => return f32::from_bits(old),
                Err(actual) => current = actual,
            }
        }
    }

    pub fn shfl_xor_lanes(lanes: &[f32; WARP_SIZE], mask: u32) -> [f32; WARP_SIZE] {
        core::array::from_fn(|lane| lanes[(lane ^ mask as usize) & (WARP_SIZE - 1)])
    }

    pub fn shfl_down_lanes(lanes: &[f32; WARP_SIZE], delta: u32) -> [f32; WARP_SIZE] {
        core::array::from_fn(|lane| {
            let source = lane + delta as usize;
            if source < WARP_SIZE {
                lanes[source]
            } else {
                lanes[lane]
            }
        })
    }

    /// The GPU butterfly, lane by lane: every lane ends with the same sum; lane 0's is returned.
    pub fn warp_reduce_sum_lanes(lanes: &[f32; WARP_SIZE]) -> f32 {
        let mut values = *lanes;
        let mut mask = 16;
        while mask > 0 {
            let partner = shfl_xor_lanes(&values, mask);
            for lane in 0..WARP_SIZE {
                values[lane] += partner[lane];
            }
            mask >>= 1;
        }
        values[0]
    }

    /// `gpu::block_reduce_sum` for one block of `values.len()` threads (a multiple of 32).
    pub fn block_reduce_sum_host(values: &[f32]) -> f32 {
        let mut warp_sums = [0.0f32; WARP_SIZE];
        for (warp, chunk) in values.chunks(WARP_SIZE).enumerate() {
            let mut lanes = [0.0f32; WARP_SIZE];
            lanes[..chunk.len()].copy_from_slice(chunk);
            warp_sums[warp] = warp_reduce_sum_lanes(&lanes);
        }
        warp_reduce_sum_lanes(&warp_sums)
    }
}

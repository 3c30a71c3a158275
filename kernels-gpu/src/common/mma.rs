//! Dense layers of 16 atoms on the tensor cores (`mma.sync.m16n8k8` in TF32) at f32
//! accuracy.
//!
//! Why: the atom MLPs do a few hundred FLOPs per weight they read, and on the CUDA
//! cores each thread walked one serial chain of weight loads, broadcasting the
//! inputs from shared memory one multiply-add at a time (ncu: ~40 % of the stalls on
//! shared-memory loads, 12 % of the FMA peak). On the tensor cores one instruction
//! does 1,024 multiply-adds from a few registers.
//!
//! Accuracy: TF32 keeps 10 bits of mantissa, so each operand is split into
//! big + small (both TF32, big = round(x), small = round(x − big)) and the product
//! is a_small·b_big + a_big·b_small + a_big·b_big ("3xTF32"): the dropped
//! a_small·b_small and the rounding of the small parts are ~2⁻²² relative, the order
//! of f32 rounding itself. The tensor cores' own accumulation rounds toward zero, so
//! each k-step of 8 is summed apart and added to the result in f32 (after Ootomo and
//! Yokota, "Recovering single precision accuracy from Tensor Cores while surpassing
//! the FP32 theoretical peak performance", 2022).
//!
//! Layouts. Both operands come split into their TF32 halves already: A (16 rows ×
//! K) in shared memory as (big, small) pairs ([`SplitPair`]), row-major with `lda`
//! pairs a row (`lda` ≡ 4 mod 16 keeps the 8-byte fragment loads free of bank
//! conflicts), split once when written; B (K × N, K % 8 == 0, N % 8 == 0) split and
//! permuted on the host ([`write_fragments`]) so that each lane reads its fragments of
//! one k-step of an 8-column tile, big and small, as one 16-byte load, and a warp
//! reads 512 contiguous bytes. (Splitting at run time, 5 instructions a `cvt.rna`,
//! took most of the kernels' issue slots.)

/// Rows (atoms) of one tile.
pub const TILE_ROWS: usize = 16;

/// Floats of a K × N matrix in the fragment layout (both halves).
pub const fn fragment_len(k_len: usize, n_len: usize) -> usize {
    2 * k_len * n_len
}

/// x = big + small with big the TF32 rounding of x (round to nearest, ties away from
/// zero, as `cvt.rna.tf32.f32`) and small the TF32 rounding of the rest. Non-finite
/// x gives (x, 0).
#[inline(always)]
pub fn tf32_split(x: f32) -> (f32, f32) {
    #[inline(always)]
    fn round(x: f32) -> f32 {
        if x.is_finite() {
            f32::from_bits((x.to_bits().wrapping_add(0x1000)) & 0xffff_e000)
        } else {
            x
        }
    }
    if !x.is_finite() {
        return (x, 0.0);
    }
    let big = round(x);
    (big, round(x - big))
}

/// Offset of B[k][n]'s big half in the fragment layout (the small half follows 2
/// floats later); `k_len` = K.
///
/// For lane l (g = l / 4, t = l % 4) and k-step s (8 k), the m16n8k8 B fragment is
/// b0 = B[8s + t][8·tile + g], b1 = B[8s + t + 4][8·tile + g], stored as
/// `[tile][s][lane][b0 big, b1 big, b0 small, b1 small]`.
#[inline(always)]
pub const fn fragment_offset(k: usize, n: usize, k_len: usize) -> usize {
    let (tile, g) = (n / 8, n % 8);
    let (step, kk) = (k / 8, k % 8);
    let lane = g * 4 + kk % 4;
    ((tile * (k_len / 8) + step) * 32 + lane) * 4 + kk / 4
}

/// Writes row-major `b` (K × N) into `out` (`fragment_len` floats) in the fragment
/// layout. False (and `out` untouched) when the shapes do not fit it.
pub fn write_fragments(b: &[f32], k_len: usize, n_len: usize, out: &mut [f32]) -> bool {
    if !k_len.is_multiple_of(8)
        || !n_len.is_multiple_of(8)
        || b.len() != k_len * n_len
        || out.len() != fragment_len(k_len, n_len)
    {
        return false;
    }
    for k in 0..k_len {
        for n in 0..n_len {
            let (big, small) = tf32_split(b[k * n_len + n]);
            let at = fragment_offset(k, n, k_len);
            out[at] = big;
            out[at + 2] = small;
        }
    }
    true
}

/// One A element in shared memory: its TF32 halves, read as one 8-byte load.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitPair {
    pub big: f32,
    pub small: f32,
}

impl SplitPair {
    #[inline(always)]
    pub fn new(x: f32) -> Self {
        let (big, small) = tf32_split(x);
        SplitPair { big, small }
    }
}

/// Pairs a shared-memory row of an A operand with K columns takes: K + 4 ≡ 4
/// (mod 16) for K a multiple of 16, which keeps the fragment loads free of bank
/// conflicts.
pub const fn padded(k: usize) -> usize {
    k + 4
}

/// Shared-memory bytes of a 16-row A operand with K columns.
pub const fn operand_bytes(k: usize) -> usize {
    TILE_ROWS * padded(k) * core::mem::size_of::<SplitPair>()
}

/// (row, column) within the 16 × 8 tile of accumulator element `e` < 4 of `lane`.
#[inline(always)]
pub const fn accumulator_position(lane: usize, e: usize) -> (usize, usize) {
    (lane / 4 + 8 * (e / 2), 2 * (lane % 4) + e % 2)
}

#[cfg(target_arch = "nvptx64")]
pub use gpu::*;

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::SplitPair;
    use crate::device::gpu;
    use core::arch::asm;

    /// Four floats of read-only global memory in one 16-byte load.
    #[inline(always)]
    unsafe fn load_quad(p: *const f32) -> [f32; 4] {
        let (x, y, z, w): (f32, f32, f32, f32);
        asm!("ld.global.nc.v4.f32 {{{x}, {y}, {z}, {w}}}, [{p}];", p = in(reg64) p,
             x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w, options(pure, readonly, nostack));
        [x, y, z, w]
    }

    /// A pair from shared memory (`p` a generic address into it), as one 8-byte
    /// `ld.shared`: through a generic pointer the loads were `LD.E.64`.
    #[inline(always)]
    unsafe fn load_shared_pair(p: *const SplitPair) -> SplitPair {
        let (big, small): (f32, f32);
        asm!("{{ .reg .u64 s; cvta.to.shared.u64 s, {p}; ld.shared.v2.f32 {{{x}, {y}}}, [s]; }}", p = in(reg64) p,
             x = out(reg32) big, y = out(reg32) small, options(pure, readonly, nostack));
        SplitPair { big, small }
    }

    /// acc += a · b for one m16n8k8 tile (TF32 operands as f32 bit patterns).
    #[inline(always)]
    fn mma(acc: &mut [f32; 4], a: &[f32; 4], b0: f32, b1: f32) {
        // SAFETY: registers only; `mma.sync` needs all 32 lanes of the warp, which
        // every caller (the warp products) has converged.
        unsafe {
            asm!(
                "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
                d0 = inout(reg32) acc[0], d1 = inout(reg32) acc[1], d2 = inout(reg32) acc[2], d3 = inout(reg32) acc[3],
                a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                b0 = in(reg32) b0, b1 = in(reg32) b1,
                options(pure, nomem, nostack)
            );
        }
    }

    /// Lane's B fragments (both halves) of `tiles` for k-step `step`.
    #[inline(always)]
    unsafe fn load_step<const J: usize>(
        b_lane: *const f32,
        tiles: &[usize; J],
        steps: usize,
        step: usize,
    ) -> [[f32; 4]; J] {
        let mut quads = [[0.0f32; 4]; J];
        for j in 0..J {
            quads[j] = load_quad(b_lane.add((tiles[j] * steps + step) * 128));
        }
        quads
    }

    /// acc[j] += A[:, 8·step ..][..8] · (the B fragments in `quads[j]`).
    #[inline(always)]
    unsafe fn multiply_step<const J: usize>(
        acc: &mut [[f32; 4]; J],
        quads: &[[f32; 4]; J],
        a0: *const SplitPair,
        a8: *const SplitPair,
        step: usize,
    ) {
        let k = 8 * step;
        let x = [
            load_shared_pair(a0.add(k)),
            load_shared_pair(a8.add(k)),
            load_shared_pair(a0.add(k + 4)),
            load_shared_pair(a8.add(k + 4)),
        ];
        let a_big = [x[0].big, x[1].big, x[2].big, x[3].big];
        let a_small = [x[0].small, x[1].small, x[2].small, x[3].small];
        for j in 0..J {
            let [b0_big, b1_big, b0_small, b1_small] = quads[j];
            // The tensor cores round their f32 accumulator toward zero: summed over
            // all of K in one accumulator that bias reached 2.4e-4 eV/Å in the
            // forces (10,000 atoms, against 9e-5 on the CUDA cores). Each k-step
            // sums into a fresh accumulator, added with a round-to-nearest add.
            let mut partial = [0.0f32; 4];
            mma(&mut partial, &a_small, b0_big, b1_big);
            mma(&mut partial, &a_big, b0_small, b1_small);
            mma(&mut partial, &a_big, b0_big, b1_big);
            for e in 0..4 {
                acc[j][e] += partial[e];
            }
        }
    }

    /// acc[j] += A · B[:, 8·tiles[j] ..][..8] for j < J, over all of K, in f32
    /// accuracy (3xTF32). Each lane has J·P 16-byte loads of B in flight at a time.
    /// Every lane of the warp must call it (mma.sync is warp-wide).
    ///
    /// # Safety
    /// `a` points to 16 rows of `lda` pairs (K ≤ lda), `b` to a K × N matrix in the
    /// fragment layout in global memory, every `tiles[j]` < N / 8, K % (8·P) == 0,
    /// P ≤ 4.
    #[inline(always)]
    pub unsafe fn warp_product<const J: usize, const P: usize>(
        acc: &mut [[f32; 4]; J],
        a: *const SplitPair,
        lda: usize,
        b: *const f32,
        k_len: usize,
        tiles: [usize; J],
    ) {
        let lane = gpu::lane_id();
        let (g, t) = (lane / 4, lane % 4);
        let steps = k_len / 8;
        let b_lane = b.add(4 * lane);
        let a0 = a.add(g * lda + t);
        let a8 = a.add((g + 8) * lda + t);
        let mut step = 0;
        // Written out for each p < P rather than looped, so that every index into the
        // loaded fragments is a constant and they stay in registers (with a loop over
        // p, LLVM kept them in local memory).
        while step < steps {
            let q0 = load_step(b_lane, &tiles, steps, step);
            let q1 = if P > 1 { load_step(b_lane, &tiles, steps, step + 1) } else { q0 };
            let q2 = if P > 2 { load_step(b_lane, &tiles, steps, step + 2) } else { q0 };
            let q3 = if P > 3 { load_step(b_lane, &tiles, steps, step + 3) } else { q0 };
            multiply_step(acc, &q0, a0, a8, step);
            if P > 1 {
                multiply_step(acc, &q1, a0, a8, step + 1);
            }
            if P > 2 {
                multiply_step(acc, &q2, a0, a8, step + 2);
            }
            if P > 3 {
                multiply_step(acc, &q3, a0, a8, step + 3);
            }
            step += P;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn fragment_layout_is_a_permutation_with_small_halves_beside_big() {
        for (k_len, n_len) in [(8, 8), (16, 24), (96, 32), (256, 128)] {
            let mut seen = vec![false; fragment_len(k_len, n_len)];
            for k in 0..k_len {
                for n in 0..n_len {
                    let at = fragment_offset(k, n, k_len);
                    for slot in [at, at + 2] {
                        assert!(!seen[slot], "K={k_len} N={n_len}: ({k}, {n}) collides");
                        seen[slot] = true;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s), "K={k_len} N={n_len}: holes in the layout");
        }
        let mut out = vec![0.0; fragment_len(12, 8)];
        assert!(!write_fragments(&[0.0; 96], 12, 8, &mut out), "K % 8 != 0 must be refused");
    }

    #[test]
    fn tf32_halves_are_tf32_and_sum_to_the_value() {
        for x in [1.0f32, -core::f32::consts::PI, 1.0 + f32::EPSILON, 6.02e23, -1.7e-30, 0.0, 123456.79] {
            let (big, small) = tf32_split(x);
            assert_eq!(big.to_bits() & 0x1fff, 0, "{x}: big {big} keeps more than 10 mantissa bits");
            assert_eq!(small.to_bits() & 0x1fff, 0, "{x}: small {small} keeps more than 10 mantissa bits");
            let error = (big as f64 + small as f64 - x as f64).abs();
            assert!(error <= 2f64.powi(-21) * (x as f64).abs(), "{x}: big {big} + small {small} off by {error:e}");
        }
        assert!(tf32_split(f32::NAN).0.is_nan());
        assert_eq!(tf32_split(f32::INFINITY), (f32::INFINITY, 0.0));
    }
}

//! The filter φ(d) of a block is a function of the edge length alone, so the GPU
//! path reads it from a table of cubic Hermite knots (value and slope, built on the
//! host in f64 from the exact network) instead of running the K→H→3H network per
//! edge: ~3H·4 loads instead of ~3H²+KH multiply-adds per edge and pass. With 512
//! intervals over [0, rc] φ is within ~2e-7 of the exact network (relative to max|φ|)
//! and φ' within ~1.2e-5: fewer intervals lose to truncation (h⁴ for φ, h³ for φ'),
//! more to f32 rounding of the knots amplified by 1/h in φ'
//! (`tests/student_gpu.rs` measures both against the exact network in f64).
//!
//! Layout of one block's table: knot m (at d = m·rc/M) holds `[φ(d_m) (3H) |
//! h·φ'(d_m) (3H)]`, knots 0..=M.

use crate::math::fma;

/// Intervals of the table over [0, rc] (see the module comment for the choice).
pub const TABLE_INTERVALS: usize = 512;

/// Floats of one block's table.
pub const fn table_len(hidden: usize) -> usize {
    (TABLE_INTERVALS + 1) * 2 * 3 * hidden
}

/// Where d falls in the table and the Hermite weights of value and derivative.
#[derive(Clone, Copy, Debug)]
pub struct Hermite {
    /// Offset (in floats) of the left knot's row.
    pub row: usize,
    /// Weights of [p0, h·m0, p1, h·m1] for the value...
    pub w: [f32; 4],
    /// ...and for dφ/dd.
    pub dw: [f32; 4],
}

/// Weights for an edge of length `d` (clamped into the table), `inv_h` = M / rc.
#[inline(always)]
pub fn hermite(d: f32, inv_h: f32, hidden: usize) -> Hermite {
    let x = d * inv_h;
    let top = (TABLE_INTERVALS - 1) as f32;
    let knot = if x < 0.0 {
        0.0
    } else if x >= top {
        top
    } else {
        crate::math::floor(x)
    };
    let t = x - knot;
    let t2 = t * t;
    let t3 = t2 * t;
    let w = [2.0 * t3 - 3.0 * t2 + 1.0, t3 - 2.0 * t2 + t, 3.0 * t2 - 2.0 * t3, t3 - t2];
    let dw = [
        (6.0 * t2 - 6.0 * t) * inv_h,
        (3.0 * t2 - 4.0 * t + 1.0) * inv_h,
        (6.0 * t - 6.0 * t2) * inv_h,
        (3.0 * t2 - 2.0 * t) * inv_h,
    ];
    // SAFETY: knot is an integer in [0, TABLE_INTERVALS − 1], so it fits (and `as`
    // would add the saturation checks of a general conversion).
    let knot: u32 = unsafe { knot.to_int_unchecked() };
    Hermite { row: knot as usize * 6 * hidden, w, dw }
}

/// The four Hermite coefficients [p0, h·m0, p1, h·m1] of channel q < 3H at `at`,
/// for `interpolate` (apart from it, so that a kernel can issue the loads early).
///
/// # Safety
/// `table` must hold `table_len(hidden)` floats.
#[inline(always)]
pub unsafe fn knots(table: *const f32, at: &Hermite, q: usize, hidden: usize) -> [f32; 4] {
    let p = table.add(at.row + q);
    let h3 = 3 * hidden;
    [*p, *p.add(h3), *p.add(2 * h3), *p.add(3 * h3)]
}

/// (φ_q(d), dφ_q/dd).
///
/// # Safety
/// `table` must hold `table_len(hidden)` floats.
#[inline(always)]
pub unsafe fn value_and_slope(table: *const f32, at: &Hermite, q: usize, hidden: usize) -> (f32, f32) {
    let k = knots(table, at, q, hidden);
    (interpolate(&at.w, &k), interpolate(&at.dw, &k))
}

/// Σ w·k as three fused multiply-adds on the GPU: with `at.w` the value, with
/// `at.dw` the slope.
#[inline(always)]
pub fn interpolate(w: &[f32; 4], k: &[f32; 4]) -> f32 {
    fma(w[0], k[0], fma(w[1], k[1], fma(w[2], k[2], w[3] * k[3])))
}

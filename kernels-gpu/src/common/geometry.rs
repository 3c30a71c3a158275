//! Edge geometry, computed one way everywhere (neighbour search, CPU and GPU model) so
//! that the edge j→i with image shift S and the edge i→j with −S are exact negatives:
//! the cutoff test then never keeps one direction and drops the other, and both
//! directions share the filter bit for bit.

/// S·cell = S₀·a + S₁·b + S₂·c for the cell rows a, b, c (row-major 3×3).
#[inline(always)]
pub fn shift_vector(shift: [i32; 3], cell: &[f32; 9]) -> [f32; 3] {
    let s = [shift[0] as f32, shift[1] as f32, shift[2] as f32];
    core::array::from_fn(|x| (s[0] * cell[x] + s[1] * cell[3 + x]) + s[2] * cell[6 + x])
}

/// r = (R_j − R_i) + S·cell, and d = |r|.
#[inline(always)]
pub fn edge_vector(ri: [f32; 3], rj: [f32; 3], shift: [f32; 3]) -> ([f32; 3], f32) {
    let r: [f32; 3] = core::array::from_fn(|x| (rj[x] - ri[x]) + shift[x]);
    (r, crate::math::sqrt((r[0] * r[0] + r[1] * r[1]) + r[2] * r[2]))
}

/// The model's unit vector u = r / (d + 1e-8).
pub const UNIT_EPSILON: f32 = 1e-8;

/// ∂E/∂r from ∂E/∂d and ∂E/∂u, with u = r/(d + ε) (ε = `UNIT_EPSILON` for
/// architecture 1, 0 for PaiNN):
/// ∂E/∂r = gd·r/d + gu/(d+ε) − r (r·gu) / (d (d+ε)²).
#[inline(always)]
pub fn edge_gradient(r: [f32; 3], d: f32, gd: f32, gu: [f32; 3], epsilon: f32) -> [f32; 3] {
    let de = d + epsilon;
    let r_dot_gu = (r[0] * gu[0] + r[1] * gu[1]) + r[2] * gu[2];
    let radial = gd / d - r_dot_gu / (d * de * de);
    core::array::from_fn(|x| radial * r[x] + gu[x] / de)
}

//! The dense pair slots of one structure, laid out alike for both architectures: slot
//! (i, j) at `i·n + j` holds r = R_j − R_i and d (by the canonical
//! `geometry::edge_vector`, so the set within the cutoff is the one the cell lists
//! find) and, in the adjoint, ∂E/∂r. The reverse of slot (i, j) is (j, i), so forces
//! gather with no atomics.

use super::fault;
use super::team::{items, Team};
use crate::cell_list::MIN_DISTANCE;
use crate::filter_table::{hermite, Hermite};
use crate::geometry::edge_vector;

/// Where one structure's pair slots live.
#[derive(Clone, Copy)]
pub struct PairSlots {
    /// Atoms of the structure (the slots are `n × n`).
    pub n: usize,
    /// `[r, d]` per slot.
    pub geom: *mut [f32; 4],
    /// ∂E/∂r per slot.
    pub grad: *mut [f32; 3],
}

impl PairSlots {
    /// # Safety
    /// `i, j < n` and `geom` holding `n²` slots.
    #[inline(always)]
    pub unsafe fn geom(&self, i: usize, j: usize) -> [f32; 4] {
        *self.geom.add(i * self.n + j)
    }

    /// # Safety
    /// `i, j < n` and `grad` holding `n²` slots.
    #[inline(always)]
    pub unsafe fn grad(&self, i: usize, j: usize) -> *mut [f32; 3] {
        self.grad.add(i * self.n + j)
    }
}

/// Whether the pair slot (i, j) is an edge, and its length.
#[inline(always)]
pub fn is_edge(i: usize, j: usize, g: &[f32; 4], cutoff: f32) -> bool {
    i != j && g[3] <= cutoff
}

/// The table's Hermite weights and the unit vector u = r / (d + ε) of an edge
/// (ε = `geometry::UNIT_EPSILON` for the student, 0 for PaiNN).
#[inline(always)]
pub fn edge_basis(g: &[f32; 4], inv_h: f32, h: usize, epsilon: f32) -> (Hermite, [f32; 3]) {
    let inv_d = 1.0 / (g[3] + epsilon);
    (hermite(g[3], inv_h, h), [g[0] * inv_d, g[1] * inv_d, g[2] * inv_d])
}

/// Fills the pair slots from the structure's `positions` (its first atom's), zeroes
/// their gradients and checks the positions: the `fault` bits (0: fine), the same in
/// every thread. Non-finite positions and atoms closer than `MIN_DISTANCE` set them, as
/// in the cell lists. Ends with a barrier.
///
/// # Safety
/// `positions` must hold the structure's `n` atoms and `slots` its `n²` slots.
#[inline(never)]
pub unsafe fn fill<T: Team>(team: &T, slots: &PairSlots, positions: *const [f32; 3]) -> u32 {
    let n = slots.n;
    let mut non_finite = false;
    let mut too_close = false;
    for q in items(team, n * n) {
        let (i, j) = (q / n, q % n);
        let (ri, rj) = (*positions.add(i), *positions.add(j));
        if i == j {
            non_finite |= ri.iter().any(|x| !x.is_finite());
        }
        let (r, d) = edge_vector(ri, rj, [0.0; 3]);
        *slots.geom.add(q) = [r[0], r[1], r[2], d];
        *slots.grad.add(q) = [0.0; 3];
        too_close |= i != j && d < MIN_DISTANCE;
    }
    let non_finite = team.sync_any(non_finite);
    let too_close = team.sync_any(too_close);
    (if non_finite { fault::NON_FINITE } else { 0 }) | (if too_close { fault::TOO_CLOSE } else { 0 })
}

/// F_i = Σ_j (∂E/∂r_ij − ∂E/∂r_ji), since r_ij = R_j − R_i, into `forces` (the
/// structure's first atom's). Ends with a barrier.
///
/// # Safety
/// `forces` must hold the structure's `n` atoms and `slots` its `n²` slots.
#[inline(never)]
pub unsafe fn gather_forces<T: Team>(team: &T, slots: &PairSlots, forces: *mut [f32; 3]) {
    for i in items(team, slots.n) {
        let mut f = [0.0f32; 3];
        for j in 0..slots.n {
            let (out, back) = (*slots.grad(i, j), *slots.grad(j, i));
            for x in 0..3 {
                f[x] += out[x] - back[x];
            }
        }
        *forces.add(i) = f;
    }
    team.sync();
}

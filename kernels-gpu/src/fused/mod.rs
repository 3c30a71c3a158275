//! The fused small-structure engine: one thread block evaluates one whole structure
//! in one launch — all pairs within the cutoff, embedding, every interaction block,
//! readout, the adjoint and the forces — and, for MD, integrates many steps of it
//! before it returns. The layered engine (`gpu_student`, `gpu_painn`) runs ~30
//! dependent launches a call; for a molecule of a few dozen atoms the GPU idles
//! between them (PERF.md, session 7: 24 atoms are bound by launch latency).
//!
//! - Edges are all ordered pairs of the structure, kept densely: slot (i, j) at
//!   `i·n + j` holds r = R_j − R_i and d by the canonical `geometry::edge_vector`
//!   (so the set within the cutoff is the one the cell lists find) and, in the
//!   adjoint, ∂E/∂r. The reverse of slot (i, j) is (j, i), so forces gather with no
//!   atomics. Non-finite positions and atoms closer than `cell_list::MIN_DISTANCE`
//!   set fault bits, as in the cell lists; the host then explains them.
//! - Activations live in a per-structure region of a scratch buffer in global memory
//!   (L1/L2-resident at these sizes); [`student::StudentLayout`] and
//!   [`painn::PainnLayout`] place them.
//! - Molecules only: periodic structures go to the layered engine.
//! - The same source runs on the CPU through [`team::SerialTeam`], which is how the
//!   tests check it against the exact CPU path without a GPU.
//!
//! What both architectures share: the MD loop ([`dynamics`]), the dense layers over
//! atom tiles ([`dense_atoms`]) and the edge helpers of [`pairs`] (PaiNN also takes
//! its pair phases from there; the student keeps copies, see `student::pairs`).

pub mod dynamics;
pub mod entries;
pub mod painn;
pub mod pairs;
pub mod student;
pub mod team;

use crate::math::fma;
use team::{items, Team};

/// Fault bits of a structure (`FusedStudentArgs::faults`).
pub mod fault {
    /// A position is NaN or infinite.
    pub const NON_FINITE: u32 = 1;
    /// Two atoms are closer than `cell_list::MIN_DISTANCE`.
    pub const TOO_CLOSE: u32 = 2;
}

/// Atoms of a dense-layer tile: each weight read serves this many atoms.
pub const ATOM_TILE: usize = 8;

/// Atom count rounded up to whole tiles (rows past the structure's atoms exist in the
/// scratch, so a tile's loads need no bounds checks).
#[inline(always)]
pub const fn padded_atoms(n: usize) -> usize {
    n.div_ceil(ATOM_TILE) * ATOM_TILE
}

/// A dense layer on the device: `weight_t` is `[in][out]` (forward), `weight` is
/// `[out][in]` (the adjoint reads it as the forward layer of the transposed map).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FusedLinear {
    pub weight_t: *const f32,
    pub weight: *const f32,
    pub bias: *const f32,
}

impl FusedLinear {
    /// The layer (`inputs` → `outputs`) as `dense_atoms` runs it forward.
    #[inline(always)]
    pub fn forward(&self, inputs: usize, outputs: usize) -> Dense {
        Dense { w: self.weight_t, bias: self.bias, inputs, outputs }
    }

    /// The input gradient of the layer (`inputs` → `outputs`): the transposed map from
    /// ∂E/∂output to ∂E/∂input, which reads `weight` as its forward weights.
    #[inline(always)]
    pub fn adjoint(&self, inputs: usize, outputs: usize) -> Dense {
        Dense { w: self.weight, bias: core::ptr::null(), inputs: outputs, outputs: inputs }
    }
}

/// A dense map over atoms: `w[k][o]` for k < inputs, o < outputs, and a bias (or null).
#[derive(Clone, Copy)]
pub struct Dense {
    pub w: *const f32,
    pub bias: *const f32,
    pub inputs: usize,
    pub outputs: usize,
}

/// `y[a][o] = bias[o] + Σ_k x[a][k] · w[k][o]` for the atoms (rows) a < n, row strides
/// the layer's widths. One item per (output, tile of atoms), so each weight read
/// serves a tile.
///
/// # Safety
/// `x` must hold `padded_atoms(n)` rows of `inputs` floats (the tile loads read up to
/// there, unchecked), `w` `inputs × outputs`, `bias` (if not null) `outputs`, `y` `n`
/// rows of `outputs`.
#[inline(never)]
pub unsafe fn dense_atoms<T: Team>(team: &T, n: usize, x: *const f32, layer: Dense, y: *mut f32) {
    let Dense { w, bias, inputs, outputs } = layer;
    let tiles = n.div_ceil(ATOM_TILE);
    for item in items(team, outputs * tiles) {
        let (o, tile) = (item % outputs, item / outputs);
        let first = tile * ATOM_TILE;
        let b = if bias.is_null() { 0.0 } else { *bias.add(o) };
        let mut acc = [b; ATOM_TILE];
        // Rows up to the padded atom count exist, so the tile loads need no checks.
        for k in 0..inputs {
            let wk = *w.add(k * outputs + o);
            for (t, acc) in acc.iter_mut().enumerate() {
                *acc = fma(*x.add((first + t) * inputs + k), wk, *acc);
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            if first + t < n {
                *y.add((first + t) * outputs + o) = *acc;
            }
        }
    }
}

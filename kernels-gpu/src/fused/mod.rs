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
//!   (L1/L2-resident at these sizes); [`StudentLayout`] places them.
//! - Molecules only: periodic structures go to the layered engine.
//! - The same source runs on the CPU through [`team::SerialTeam`], which is how the
//!   tests check it against the exact CPU path without a GPU.

pub mod entries;
pub mod student;
pub mod team;

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

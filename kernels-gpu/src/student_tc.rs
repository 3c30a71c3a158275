//! Launch shapes of the student's tensor-core update kernels (`gpu_student_tc`),
//! shared by the kernels and the host that launches them.

use crate::mma::TILE_ROWS;

/// Warps a block (the host launches 32 · this many threads).
pub const BLOCK_WARPS: usize = 8;

/// Pairs of 8-column tiles a warp holds in registers across a barrier: H/16 pairs
/// over `BLOCK_WARPS` warps, H ≤ 256.
pub const MAX_PAIRS_PER_WARP: usize = 2;

/// Elements a shared-memory row of K values takes: K + 4 ≡ 4 (mod 16) for K a
/// multiple of 16, which keeps the fragment loads free of bank conflicts.
pub const fn padded(k: usize) -> usize {
    k + 4
}

/// Bytes of one A operand element in shared memory (`mma::SplitPair`).
const PAIR_BYTES: usize = 8;

/// Shared-memory bytes of the forward kernel: [s_mid ‖ ‖v_mid‖], then the hidden
/// layer in its place.
pub const fn forward_shared_bytes(hidden: usize) -> usize {
    TILE_ROWS * padded(2 * hidden) * PAIR_BYTES
}

/// Shared-memory bytes of the adjoint kernel: the hidden layer (then its adjoint)
/// and ∂E/∂[a | g1 | g2] as A operands, SiLU' as floats. The input rows of the first
/// layer take the space before.
pub const fn backward_shared_bytes(hidden: usize) -> usize {
    let operands = TILE_ROWS * (padded(hidden) + padded(3 * hidden)) * PAIR_BYTES;
    let layers = operands + TILE_ROWS * padded(hidden) * 4;
    let input = forward_shared_bytes(hidden);
    if layers > input { layers } else { input }
}

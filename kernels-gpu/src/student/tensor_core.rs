//! Launch shapes of the student's tensor-core update kernels (`gpu_tensor_core`),
//! shared by the kernels and the host that launches them.

use crate::mma::{operand_bytes, padded, TILE_ROWS};

/// Warps a block (the host launches 32 · this many threads).
pub const BLOCK_WARPS: usize = 16;

/// 8-column tiles a warp takes together in the H-wide products (the first layer and
/// the adjoint of the hidden layer): the warp's share of one pass over K.
pub const TILES_PER_GROUP: usize = 1;

/// Groups of `TILES_PER_GROUP` tiles a warp holds in registers across a barrier:
/// H/8 tiles over `BLOCK_WARPS` warps, H ≤ 256.
pub const MAX_GROUPS_PER_WARP: usize = 256 / 8 / (TILES_PER_GROUP * BLOCK_WARPS);

/// Shared-memory bytes of the forward kernel: [s_mid ‖ ‖v_mid‖], then the hidden
/// layer in its place.
pub const fn forward_shared_bytes(hidden: usize) -> usize {
    operand_bytes(2 * hidden)
}

/// Shared-memory bytes of the adjoint kernel: the hidden layer (then its adjoint)
/// and ∂E/∂[a | g1 | g2] as A operands, SiLU' as floats. The input rows of the first
/// layer take the space before.
pub const fn backward_shared_bytes(hidden: usize) -> usize {
    let operands = operand_bytes(hidden) + operand_bytes(3 * hidden);
    let layers = operands + TILE_ROWS * padded(hidden) * 4;
    let input = forward_shared_bytes(hidden);
    if layers > input {
        layers
    } else {
        input
    }
}

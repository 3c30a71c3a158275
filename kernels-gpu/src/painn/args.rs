//! Arguments of PaiNN's kernels (one `#[repr(C)]` struct per kernel family, passed
//! by value; pointers are device addresses). q and μ are the scalar and vector
//! features (N×F and N×3×F), x the per-atom context (N×3F).

use crate::common::args::{DenseLayer, FilterTable, Rows};
use crate::kernel::KernelArgs;

/// The context x = Dense(F→3F)(SiLU(Dense(F→F)(q))) of the block input.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ContextArgs {
    pub q: *const f32,
    pub x: *mut f32,
    /// `interatomic_context_net`: F → F and F → 3F.
    pub context_in: DenseLayer,
    pub context_out: DenseLayer,
    pub num_atoms: u32,
    pub hidden: u32,
}

/// The context adjoint: ∂E/∂q of the block input = ∂E/∂q_mid + ∂(x·∂E/∂x)/∂q.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ContextBackArgs {
    pub q: *const f32,
    pub gx: *const f32,
    pub gq_mid: *const f32,
    pub gq: *mut f32,
    pub context_in: DenseLayer,
    pub context_out: DenseLayer,
    pub num_atoms: u32,
    pub hidden: u32,
}

/// The interaction of block t: q_mid, μ_mid from the block input and the context.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MessageArgs {
    pub rows: Rows,
    pub filter: FilterTable,
    pub q: *const f32,
    pub mu: *const f32,
    pub x: *const f32,
    pub q_mid: *mut f32,
    pub mu_mid: *mut f32,
}

/// The interaction's adjoint: ∂E/∂x, ∂E/∂μ of the block input, and [∂E/∂d, ∂E/∂dir]
/// of each edge added to `edge_adjoint`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MessageBackArgs {
    pub rows: Rows,
    pub filter: FilterTable,
    pub mu: *const f32,
    pub x: *const f32,
    pub gq_mid: *const f32,
    pub gmu_mid: *const f32,
    pub gx: *mut f32,
    pub gmu: *mut f32,
    /// Per channel group and edge: [∂E/∂d, ∂E/∂dir] accumulated over the blocks.
    pub edge_adjoint: *mut [f32; 4],
}

/// The mixing of block t: q, μ of the block output from q_mid, μ_mid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MixingArgs {
    pub q_mid: *const f32,
    pub mu_mid: *const f32,
    pub q: *mut f32,
    pub mu: *mut f32,
    /// `mu_channel_mix`: F → 2F (no bias).
    pub channel_mix: DenseLayer,
    /// `intraatomic_context_net`: 2F → F and F → 3F.
    pub update_in: DenseLayer,
    pub update_out: DenseLayer,
    pub num_atoms: u32,
    pub hidden: u32,
}

/// The mixing adjoint: ∂E/∂(q_mid, μ_mid) from ∂E/∂(q, μ) of the block output.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MixingBackArgs {
    pub q_mid: *const f32,
    pub mu_mid: *const f32,
    pub gq: *const f32,
    /// Read only when `has_gmu` (false after the last block).
    pub gmu: *const f32,
    pub gq_mid: *mut f32,
    pub gmu_mid: *mut f32,
    pub channel_mix: DenseLayer,
    pub update_in: DenseLayer,
    pub update_out: DenseLayer,
    pub num_atoms: u32,
    pub hidden: u32,
    pub has_gmu: u32,
}

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for ContextArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for ContextBackArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for MessageArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for MessageBackArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for MixingArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for MixingBackArgs {}

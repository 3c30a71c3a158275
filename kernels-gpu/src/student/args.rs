//! Arguments of the student's kernels (one `#[repr(C)]` struct per kernel family,
//! passed by value; pointers are device addresses).

use crate::common::args::{FilterTable, Rows};
use crate::kernel::KernelArgs;

/// The message pass of block t: s_mid, v_mid from the block input s, v.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MessageArgs {
    pub rows: Rows,
    pub filter: FilterTable,
    /// The block input (s: N×H, v: N×3×H).
    pub s: *const f32,
    pub v: *const f32,
    pub s_mid: *mut f32,
    pub v_mid: *mut f32,
}

/// The message adjoint of block t: ∂E/∂(s, v) of the block input from ∂E/∂(s_mid,
/// v_mid), and [∂E/∂d, ∂E/∂u] of each edge added to `edge_adjoint`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MessageBackArgs {
    pub rows: Rows,
    pub filter: FilterTable,
    /// The block input.
    pub s: *const f32,
    pub v: *const f32,
    pub gs_mid: *const f32,
    pub gv_mid: *const f32,
    pub gs: *mut f32,
    pub gv: *mut f32,
    /// Per channel group and edge: [∂E/∂d, ∂E/∂u] accumulated over the blocks.
    pub edge_adjoint: *mut [f32; 4],
}

/// A dense layer in the tensor-core fragment layout of [`crate::mma`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FragmentLayer {
    /// B = `[in][out]`, for the forward pass.
    pub weight_t: *const f32,
    /// B = `[out][in]`, for the input gradients.
    pub weight: *const f32,
    /// `[out]`, as stored.
    pub bias: *const f32,
}

/// The update step of block t: s, v of the block output from s_mid, v_mid. `L` is
/// the layers' layout: [`crate::common::args::DenseLayer`] for the CUDA-core tiles,
/// [`FragmentLayer`] for the tensor cores.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UpdateArgs<L> {
    pub s_mid: *const f32,
    pub v_mid: *const f32,
    pub s: *mut f32,
    pub v: *mut f32,
    /// The update activations [pre | g1 | g2] (3H floats an atom), written for the
    /// adjoint to read instead of recomputing them; null when not kept.
    pub kept: *mut f32,
    /// 2H → H and H → 3H.
    pub update_in: L,
    pub update_out: L,
    /// `update.mixing_matrix`, row-major.
    pub mixing: [f32; 9],
    pub num_atoms: u32,
    pub hidden: u32,
}

/// The update adjoint of block t: ∂E/∂(s_mid, v_mid) from ∂E/∂(s, v) of the block
/// output.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UpdateBackArgs<L> {
    pub s_mid: *const f32,
    pub v_mid: *const f32,
    /// What the forward kept, or null (then recomputed: the same products).
    pub kept: *const f32,
    pub gs: *const f32,
    /// Read only when `has_gv` (false after the last block).
    pub gv: *const f32,
    pub gs_mid: *mut f32,
    pub gv_mid: *mut f32,
    pub update_in: L,
    pub update_out: L,
    pub mixing: [f32; 9],
    pub num_atoms: u32,
    pub hidden: u32,
    pub has_gv: u32,
}

// SAFETY: `#[repr(C)]`, plain values and device addresses only (also for `L` of
// either layer layout, both of which are).
unsafe impl KernelArgs for MessageArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for MessageBackArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for UpdateArgs<crate::common::args::DenseLayer> {}
// SAFETY: as above.
unsafe impl KernelArgs for UpdateArgs<FragmentLayer> {}
// SAFETY: as above.
unsafe impl KernelArgs for UpdateBackArgs<crate::common::args::DenseLayer> {}
// SAFETY: as above.
unsafe impl KernelArgs for UpdateBackArgs<FragmentLayer> {}

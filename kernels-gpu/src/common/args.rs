//! Arguments of the model kernels, passed by value as one `#[repr(C)]` struct per
//! launch so that host and device agree on the layout by construction. Pointers are
//! device addresses; the host wrappers in `mlff-host` fill them from live buffers.

use crate::kernel::KernelArgs;
use crate::neighbors::cell_list::StructureRecord;

/// Model kernels (`mlff_student_*`): the state of one call, plus the weights of the
/// block or head a launch works on.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModelArgs {
    pub positions: *const [f32; 3],
    pub numbers: *const u32,
    pub structure_of: *const u32,
    pub records: *const StructureRecord,
    pub row_ptr: *const u32,
    pub src: *const u32,
    pub shift: *const [i32; 3],
    pub reverse: *const u32,
    /// Block input state (s: N×H, v: N×3×H), overwritten by each block's output.
    pub s: *mut f32,
    pub v: *mut f32,
    /// Post-message state of the current block.
    pub s_mid: *mut f32,
    pub v_mid: *mut f32,
    /// The student's update activations of the current block, [pre | g1 | g2] (3H
    /// floats an atom: the hidden layer before SiLU and the two gates), written by
    /// the forward and read by the adjoint instead of recomputing them; null when the
    /// workspace does not keep them.
    pub update_kept: *mut f32,
    /// ∂E/∂(s, v) of the block input/output, and of the post-message state.
    pub gs: *mut f32,
    pub gv: *mut f32,
    pub gs_mid: *mut f32,
    pub gv_mid: *mut f32,
    pub embedding: *const f32,
    /// This block's filter table (`filter_table` layout).
    pub table: *const f32,
    /// Update MLP: transposed (`[in][out]`) for the forward pass, as stored
    /// (`[out][in]`) for the input gradients.
    pub update_in_t: *const f32,
    pub update_in: *const f32,
    pub update_in_b: *const f32,
    pub update_out_t: *const f32,
    pub update_out: *const f32,
    pub update_out_b: *const f32,
    /// The same four matrices in the tensor-core fragment layout of [`crate::mma`]
    /// (`_t_tc`: B = `[in][out]` for the forward pass, `_tc`: B = `[out][in]` for the
    /// input gradients), or null where the kernels run on the CUDA cores.
    pub update_in_t_tc: *const f32,
    pub update_in_tc: *const f32,
    pub update_out_t_tc: *const f32,
    pub update_out_tc: *const f32,
    /// Energy head, three layers.
    pub head_t: [*const f32; 3],
    pub head: [*const f32; 3],
    pub head_b: [*const f32; 3],
    /// Per-element reference energies `[max_z + 1]`, or null.
    pub atomref: *const f32,
    /// PaiNN only: the per-atom context x (3H) of the block and its adjoint.
    pub x: *mut f32,
    pub gx: *mut f32,
    /// PaiNN only: `interatomic_context_net` H → H → 3H, and `mu_channel_mix`
    /// H → 2H (no bias), transposed (`_t`) and as stored.
    pub context_in_t: *const f32,
    pub context_in: *const f32,
    pub context_in_b: *const f32,
    pub context_out_t: *const f32,
    pub context_out: *const f32,
    pub context_out_b: *const f32,
    pub channel_mix_t: *const f32,
    pub channel_mix: *const f32,
    /// Per channel group and edge: accumulated [∂E/∂d, ∂E/∂u] over the blocks.
    pub edge_adjoint: *mut [f32; 4],
    /// ∂E/∂r per edge ([x, y, z, unused]): group 0 of `edge_adjoint`, which
    /// `edge_gradients` overwrites edge by edge after reading every group's
    /// accumulator (saves 12 bytes per edge of device memory).
    pub edge_grad: *mut [f32; 4],
    pub atom_energy: *mut f32,
    pub atom_virial: *mut [f32; 9],
    pub forces: *mut [f32; 3],
    /// Per structure: energy, then the virial Σ r ⊗ ∂E/∂r (row-major), in f64.
    pub structure_out: *mut f64,
    pub mixing: [f32; 9],
    pub num_atoms: u32,
    pub num_structures: u32,
    pub hidden: u32,
    /// Channel groups per atom in the edge kernels (one warp each).
    pub groups: u32,
    pub edge_capacity: u32,
    pub cutoff: f32,
    pub table_inv_h: f32,
    /// Whether ∂E/∂v of the block output is live (false after the last block).
    pub has_gv: u32,
    /// Whether the readout also writes ∂E/∂s.
    pub want_gradient: u32,
    /// ε of the unit vector r/(d + ε): 1e-8 for architecture 1, 0 for PaiNN.
    pub unit_epsilon: f32,
}

/// Words per structure in `structure_out`.
pub const STRUCTURE_OUT_WORDS: usize = 10;

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for ModelArgs {}

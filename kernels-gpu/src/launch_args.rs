//! Arguments of the GPU kernels, passed by value as one `#[repr(C)]` struct per
//! launch so that host and device agree on the layout by construction. Pointers are
//! device addresses; the host wrappers in `mlff-host` fill them from live buffers.

use crate::cell_list::{GridRecord, StructureRecord};

/// Neighbour-search kernels (`mlff_cells_*`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CellArgs {
    pub records: *const StructureRecord,
    pub grids: *mut GridRecord,
    pub positions: *const [f32; 3],
    pub structure_of: *const u32,
    /// Per atom: its bin within its structure, and its integer wrap into the cell.
    pub atom_home: *mut [i32; 3],
    pub wrap: *mut [i32; 3],
    pub atom_bin: *mut u32,
    /// Per bin (+1): counts, then (after the scan) start offsets.
    pub bin_start: *mut u32,
    pub bin_fill: *mut u32,
    pub bin_atoms: *mut u32,
    /// Per atom (+1): edge counts, then (after the scan) the CSR row pointer.
    pub row_ptr: *mut u32,
    pub src: *mut u32,
    pub shift: *mut [i32; 3],
    pub reverse: *mut u32,
    /// `[r, d]` per edge, or null when not wanted.
    pub geom: *mut [f32; 4],
    /// See [`status`].
    pub status: *mut u32,
    /// Positions at the last build, for the skin check.
    pub reference: *mut [f32; 3],
    pub num_atoms: u32,
    pub num_structures: u32,
    pub edge_capacity: u32,
    pub cutoff: f32,
    /// (skin/2)², for the skin check.
    pub half_skin_sq: f32,
    pub pad: u32,
}

/// Words of the neighbour-search status buffer.
pub mod status {
    /// Nonzero when two atoms are closer than `MIN_DISTANCE`; then `CLOSE_I`/`CLOSE_J`.
    pub const TOO_CLOSE: usize = 0;
    pub const CLOSE_I: usize = 1;
    pub const CLOSE_J: usize = 2;
    /// Nonzero when the edges did not fit `edge_capacity` (nothing was written).
    pub const OVERFLOW: usize = 3;
    /// Nonzero when an edge had no reverse (an internal error).
    pub const ASYMMETRIC: usize = 4;
    /// Nonzero when an atom moved more than skin/2 since the build.
    pub const MOVED: usize = 5;
    pub const WORDS: usize = 8;
}

/// Prefix-sum kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScanArgs {
    pub data: *mut u32,
    pub block_sums: *mut u32,
    pub len: u32,
    pub pad: u32,
}

/// Elements one scan block handles (256 threads × 4).
pub const SCAN_BLOCK_ELEMENTS: usize = 1024;
pub const SCAN_BLOCK_THREADS: usize = 256;

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
    /// Per-atom energy weights w_i: the call computes Σ w_i E_i (`atom_energy` holds
    /// w_i E_i) and its gradient (the readout adjoint is seeded with w_i). Null: all 1.
    pub energy_weight: *const f32,
    /// Null, or per atom its half of the virial of every edge it is in,
    /// ½ Σ_{e in row i} r_e ⊗ (∂E/∂r_e − ∂E/∂r_rev(e)) (written by `forces`; the atoms'
    /// values sum to the structure's Σ r ⊗ ∂E/∂r).
    pub pair_virial: *mut [f32; 9],
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

/// Molecular-dynamics kernels (`mlff_md_*`): the state lives on the device between
/// steps, and a fault in any step freezes the state until the host has looked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MdArgs {
    pub positions: *mut [f32; 3],
    pub velocities: *mut [f32; 3],
    pub forces: *mut [f32; 3],
    pub masses: *const f32,
    pub records: *const StructureRecord,
    /// Per atom [x, v, f] at the start of the running chunk of steps, to go back to.
    pub saved: *mut [f32; 9],
    /// See [`md_clock`].
    pub clock: *mut u64,
    /// See [`md_status`].
    pub md_status: *mut u32,
    /// The neighbour search's status words of the step's build.
    pub cell_status: *const u32,
    /// Per structure: kinetic energy (eV).
    pub kinetic: *mut f64,
    pub integrator: crate::md::Integrator,
    pub num_atoms: u32,
    pub num_structures: u32,
}

/// Words of the MD clock (u64).
pub mod md_clock {
    /// Steps taken (also the thermostat noise's counter).
    pub const STEP: usize = 0;
    /// `STEP` at the saved state.
    pub const SAVED_STEP: usize = 1;
    /// The step whose build faulted.
    pub const FAULT_STEP: usize = 2;
    pub const WORDS: usize = 3;
}

/// Words of the MD status (u32).
pub mod md_status {
    /// Nonzero once a step's neighbour search faulted: every MD kernel then leaves
    /// the state alone until the host restores the saved state.
    pub const FROZEN: usize = 0;
    /// The faulting build's status words (`status::WORDS` of them) from here on.
    pub const CELL_STATUS: usize = 1;
    pub const WORDS: usize = 1 + super::status::WORDS;
}

//! Arguments of the model kernels every architecture shares, and the parts the
//! architectures' own argument structs are built from. Each kernel takes one
//! `#[repr(C)]` struct by value, so host and device agree on the layout by
//! construction; it holds what that kernel reads and nothing else. Pointers are device
//! addresses; the host wrappers in `mlff-host` fill them from live buffers.

use crate::kernel::KernelArgs;
use crate::neighbors::cell_list::StructureRecord;

/// A dense layer's weights on the device (the host's `Linear`, uploaded twice).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DenseLayer {
    /// `[in][out]`, for the forward pass.
    pub weight_t: *const f32,
    /// `[out][in]` as PyTorch stores it, for the input gradients.
    pub weight: *const f32,
    /// `[out]`.
    pub bias: *const f32,
}

/// The receiver rows of the neighbour list as the edge kernels walk them (one warp
/// per receiver and channel group), and the layout of the per-atom state.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub positions: *const [f32; 3],
    pub structure_of: *const u32,
    pub records: *const StructureRecord,
    /// CSR row pointer (N + 1), senders and image shifts of the edges.
    pub row_ptr: *const u32,
    pub src: *const u32,
    pub shift: *const [i32; 3],
    pub num_atoms: u32,
    /// Channels of each per-atom state row (H).
    pub hidden: u32,
    /// Channel groups per atom (one warp each).
    pub groups: u32,
    /// Edges the buffers hold: a build that found more filled nothing, and every
    /// edge kernel then does nothing (the host grows the buffers and repeats).
    pub edge_capacity: u32,
    pub cutoff: f32,
    /// ε of the unit vector r/(d + ε): 1e-8 for the student, 0 for PaiNN.
    pub unit_epsilon: f32,
}

/// A block's filter table (layout of [`crate::filter_table`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FilterTable {
    pub table: *const f32,
    /// Knots per Å.
    pub inv_h: f32,
}

/// `mlff_embed`: the block-0 state s = embedding[Z], v = 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EmbedArgs {
    pub numbers: *const u32,
    /// `[max_z + 1][H]`.
    pub embedding: *const f32,
    pub s: *mut f32,
    pub v: *mut f32,
    pub num_atoms: u32,
    pub hidden: u32,
}

/// The readout kernels of an energy head of `LAYERS` dense layers (SiLU between
/// them, the last of one output), over tiles of atoms.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReadoutArgs<const LAYERS: usize> {
    /// The final state s (N×H).
    pub s: *const f32,
    pub numbers: *const u32,
    pub head: [DenseLayer; LAYERS],
    /// Per-element energy offsets `[max_z + 1]`, or null.
    pub atomref: *const f32,
    pub atom_energy: *mut f32,
    /// ∂E/∂s, written when `want_gradient` is nonzero.
    pub gs: *mut f32,
    /// Per-atom energy weights w_i: the call computes Σ w_i E_i (`atom_energy` holds
    /// w_i E_i) and its gradient (the readout adjoint is seeded with w_i). Null: all 1.
    pub energy_weight: *const f32,
    pub num_atoms: u32,
    pub hidden: u32,
    pub want_gradient: u32,
}

impl<const LAYERS: usize> ReadoutArgs<LAYERS> {
    /// The weight w_i of atom i's energy in Σ w_i E_i (1 when the call has no weights).
    ///
    /// # Safety
    /// `energy_weight` is null or holds at least i + 1 values.
    #[inline(always)]
    pub unsafe fn energy_weight(&self, i: usize) -> f32 {
        if self.energy_weight.is_null() {
            1.0
        } else {
            *self.energy_weight.add(i)
        }
    }
}

/// `mlff_edge_gradients`: ∂E/∂r of every edge from the accumulated [∂E/∂d, ∂E/∂u],
/// and each atom's virial.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EdgeGradientArgs {
    pub rows: Rows,
    /// Per channel group and edge: accumulated [∂E/∂d, ∂E/∂u] over the blocks.
    pub edge_adjoint: *mut [f32; 4],
    /// ∂E/∂r per edge ([x, y, z, unused]): group 0 of `edge_adjoint`, which this
    /// kernel overwrites edge by edge after reading every group's accumulator (saves
    /// 12 bytes per edge of device memory).
    pub edge_grad: *mut [f32; 4],
    pub atom_virial: *mut [f32; 9],
}

/// `mlff_forces`: F_i from the edge gradients of row i and of the reverse edges, and
/// (where `pair_virial` is not null) each atom's half of the virial of its edges.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForcesArgs {
    pub row_ptr: *const u32,
    pub reverse: *const u32,
    pub edge_grad: *const [f32; 4],
    pub forces: *mut [f32; 3],
    /// Null, or per atom ½ Σ_{e in row i} r_e ⊗ (∂E/∂r_e − ∂E/∂r_rev(e)): the atoms'
    /// values sum to the structure's Σ r ⊗ ∂E/∂r. The edge geometry below is read only
    /// then.
    pub pair_virial: *mut [f32; 9],
    pub positions: *const [f32; 3],
    pub structure_of: *const u32,
    pub records: *const StructureRecord,
    pub src: *const u32,
    pub shift: *const [i32; 3],
    pub num_atoms: u32,
    pub edge_capacity: u32,
}

/// `mlff_structure_sums`: energy and virial of each structure, in f64.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StructureSumsArgs {
    pub records: *const StructureRecord,
    pub atom_energy: *const f32,
    /// Per-atom virials, or null for energies only.
    pub atom_virial: *const [f32; 9],
    /// Per structure: energy, then the virial Σ r ⊗ ∂E/∂r (row-major).
    pub structure_out: *mut f64,
    pub num_structures: u32,
}

/// Words per structure in `structure_out`.
pub const STRUCTURE_OUT_WORDS: usize = 10;

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for EmbedArgs {}
// SAFETY: as above.
unsafe impl<const LAYERS: usize> KernelArgs for ReadoutArgs<LAYERS> {}
// SAFETY: as above.
unsafe impl KernelArgs for EdgeGradientArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for ForcesArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for StructureSumsArgs {}

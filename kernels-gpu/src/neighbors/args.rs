//! Arguments of the neighbour-search kernels, passed by value as one `#[repr(C)]`
//! struct per launch. Pointers are device addresses; the host wrappers in `mlff-host`
//! fill them from live buffers.

use super::cell_list::{GridRecord, StructureRecord};
use crate::kernel::KernelArgs;

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

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for CellArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for ScanArgs {}

//! Entry points of the neighbour search and their typed handles.

use super::args::{CellArgs, ScanArgs};
#[cfg(target_arch = "nvptx64")]
use super::{gpu, scan};

crate::kernels! {
    /// The bin grid of each structure (one block a structure).
    GRID = mlff_cells_grid(CellArgs) => gpu::grid_kernel;
    /// Each atom's bin, and the atoms per bin.
    BIN = mlff_cells_bin(CellArgs) => gpu::bin_kernel;
    /// Each atom into its bin's slice.
    SCATTER = mlff_cells_scatter(CellArgs) => gpu::scatter_kernel;
    /// Edges per receiver (one warp an atom).
    COUNT = mlff_cells_count(CellArgs) => gpu::count_kernel;
    /// Each row written and sorted (one warp an atom).
    FILL = mlff_cells_fill(CellArgs) => gpu::fill_kernel;
    /// The reverse of every edge (one warp an atom).
    REVERSE = mlff_cells_reverse(CellArgs) => gpu::reverse_kernel;
    /// Whether any atom moved more than skin/2 since the build.
    MOVED = mlff_cells_moved(CellArgs) => gpu::moved_kernel;
    /// The O(N²) pair count the cell list replaces (benches).
    BRUTE_FORCE_COUNT = mlff_cells_brute_force_count(CellArgs) => gpu::brute_force_count_kernel;
    /// Block-local exclusive scan, block totals into `block_sums`.
    SCAN_BLOCK = mlff_scan_block(ScanArgs) => scan::scan_block_kernel;
    /// Adds each block's scanned offset to its elements.
    SCAN_ADD = mlff_scan_add(ScanArgs) => scan::scan_add_kernel;
}

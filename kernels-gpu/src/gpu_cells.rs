//! GPU drivers of the cell-list bodies in [`crate::cell_list`]: one block per
//! structure for the grid, one thread per atom for everything else.

use crate::cell_list::{bin_of, count_row, fill_row, grid, linear_bin, reverse_edge, fractional, candidate_geometry};
use crate::device::gpu;
use crate::launch_args::{status, CellArgs};

/// One block per structure: the range of fractional coordinates, then the grid.
pub unsafe fn grid_kernel(a: &CellArgs) {
    let s = gpu::block_idx();
    if s >= a.num_structures as usize {
        return;
    }
    let rec = &*a.records.add(s);
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    let mut i = rec.atom_start as usize + gpu::thread_idx();
    while i < rec.atom_end as usize {
        let f = fractional(*a.positions.add(i), rec);
        for x in 0..3 {
            lo[x] = lo[x].min(f[x]);
            hi[x] = hi[x].max(f[x]);
        }
        i += gpu::block_dim();
    }
    let scratch = gpu::block_scratch_f32();
    let warps = gpu::block_dim() / 32;
    for x in 0..3 {
        let (l, h) = gpu::warp_min_max(lo[x], hi[x]);
        if gpu::lane_id() == 0 {
            *scratch.add(gpu::warp_id()) = l;
            *scratch.add(16 + gpu::warp_id()) = h;
        }
        gpu::sync_threads();
        let (pl, ph) = if gpu::lane_id() < warps {
            (*scratch.add(gpu::lane_id()), *scratch.add(16 + gpu::lane_id()))
        } else {
            (f32::INFINITY, f32::NEG_INFINITY)
        };
        let (l, h) = gpu::warp_min_max(pl, ph);
        lo[x] = l;
        hi[x] = h;
        gpu::sync_threads();
    }
    if gpu::thread_idx() == 0 {
        *a.grids.add(s) = grid(rec, lo, hi, a.cutoff);
    }
}

#[inline(always)]
unsafe fn structure_of(a: &CellArgs, i: usize) -> usize {
    *a.structure_of.add(i) as usize
}

/// Bins each atom and counts the atoms per bin.
pub unsafe fn bin_kernel(a: &CellArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize {
        return;
    }
    let s = structure_of(a, i);
    let (rec, g) = (&*a.records.add(s), &*a.grids.add(s));
    let (home, wrap) = bin_of(*a.positions.add(i), rec, g);
    let bin = rec.bin_base + linear_bin(home, g);
    *a.atom_home.add(i) = home;
    *a.wrap.add(i) = wrap;
    *a.atom_bin.add(i) = bin;
    gpu::atomic_add_u32(a.bin_start.add(bin as usize), 1);
}

/// Puts each atom into its bin's slice (order within a bin is arbitrary: rows are
/// sorted afterwards).
pub unsafe fn scatter_kernel(a: &CellArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize {
        return;
    }
    let bin = *a.atom_bin.add(i) as usize;
    let slot = gpu::atomic_add_u32(a.bin_fill.add(bin), 1);
    *a.bin_atoms.add((*a.bin_start.add(bin) + slot) as usize) = i as u32;
}

/// Edges per receiver into `row_ptr[i]` (`row_ptr[N]` = 0, ready for the scan).
pub unsafe fn count_kernel(a: &CellArgs) {
    let i = gpu::global_id();
    let n = a.num_atoms as usize;
    if i == 0 {
        *a.row_ptr.add(n) = 0;
    }
    if i >= n {
        return;
    }
    let s = structure_of(a, i);
    let (rec, g) = (&*a.records.add(s), &*a.grids.add(s));
    let bins = a.bin_start.add(rec.bin_base as usize);
    let (count, close) = count_row(i as u32, *a.atom_home.add(i), g, rec, a.cutoff, bins, a.bin_atoms, a.wrap, a.positions);
    *a.row_ptr.add(i) = count;
    if let Some(j) = close {
        if gpu::atomic_cas_u32(a.status.add(status::TOO_CLOSE), 0, 1) == 0 {
            *a.status.add(status::CLOSE_I) = i as u32;
            *a.status.add(status::CLOSE_J) = j;
        }
    }
}

#[inline(always)]
unsafe fn overflowed(a: &CellArgs) -> bool {
    *a.row_ptr.add(a.num_atoms as usize) > a.edge_capacity
}

/// Writes and sorts each row (nothing when the edges exceed the capacity).
pub unsafe fn fill_kernel(a: &CellArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize {
        return;
    }
    if overflowed(a) {
        if i == 0 {
            *a.status.add(status::OVERFLOW) = 1;
        }
        return;
    }
    let s = structure_of(a, i);
    let (rec, g) = (&*a.records.add(s), &*a.grids.add(s));
    let bins = a.bin_start.add(rec.bin_base as usize);
    let start = *a.row_ptr.add(i) as usize;
    let len = *a.row_ptr.add(i + 1) - start as u32;
    fill_row(i as u32, *a.atom_home.add(i), g, rec, a.cutoff, bins, a.bin_atoms, a.wrap, a.positions, a.src.add(start), a.shift.add(start), len);
    if !a.geom.is_null() {
        for e in start..start + len as usize {
            let (r, d) = candidate_geometry(i as u32, *a.src.add(e), *a.shift.add(e), a.positions, &rec.cell);
            *a.geom.add(e) = [r[0], r[1], r[2], d];
        }
    }
}

/// The reverse of every edge, found in the sender's sorted row.
pub unsafe fn reverse_kernel(a: &CellArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize || overflowed(a) {
        return;
    }
    let (start, end) = (*a.row_ptr.add(i), *a.row_ptr.add(i + 1));
    for e in start as usize..end as usize {
        let r = reverse_edge(i as u32, *a.src.add(e), *a.shift.add(e), a.row_ptr, a.src, a.shift);
        if r == u32::MAX {
            *a.status.add(status::ASYMMETRIC) = 1;
        }
        *a.reverse.add(e) = r;
    }
}

/// Flags any atom that moved more than skin/2 since the positions in `reference`.
pub unsafe fn moved_kernel(a: &CellArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize {
        return;
    }
    let (p, q) = (*a.positions.add(i), *a.reference.add(i));
    let d: [f32; 3] = core::array::from_fn(|x| p[x] - q[x]);
    if (d[0] * d[0] + d[1] * d[1]) + d[2] * d[2] > a.half_skin_sq {
        *a.status.add(status::MOVED) = 1;
    }
}

/// The O(N²) search the cell list replaces, for the scaling contrast in the benches:
/// every atom tests every atom of its structure (no periodic images).
pub unsafe fn brute_force_count_kernel(a: &CellArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize {
        return;
    }
    let rec = &*a.records.add(structure_of(a, i));
    let ri = *a.positions.add(i);
    let mut count = 0u32;
    for j in rec.atom_start as usize..rec.atom_end as usize {
        let rj = *a.positions.add(j);
        let (_, d) = crate::geometry::edge_vector(ri, rj, [0.0; 3]);
        if j != i && d <= a.cutoff {
            count += 1;
        }
    }
    *a.row_ptr.add(i) = count;
}

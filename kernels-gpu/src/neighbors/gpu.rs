//! GPU drivers of the cell-list bodies in [`super::cell_list`]: one block per
//! structure for the grid, one warp per atom for the rows (count, fill, reverse),
//! one thread per atom for the rest.

use super::args::{status, CellArgs};
use super::cell_list::{
    bin_of, candidate_geometry, edge_key_less, for_each_candidate_chunk, fractional, grid, linear_bin, reverse_edge,
    sort_row, MIN_DISTANCE,
};
use crate::device::gpu;

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

/// This warp's receiver (one warp per atom), or None past the last atom.
#[inline(always)]
fn warp_atom(a: &CellArgs) -> Option<usize> {
    let i = gpu::global_id() / 32;
    (i < a.num_atoms as usize).then_some(i)
}

/// Edges per receiver into `row_ptr[i]` (`row_ptr[N]` = 0, ready for the scan), one
/// warp per receiver, its lanes over the candidates; records the first sender closer
/// than `MIN_DISTANCE` (the first of the walk, so the same pair on every run).
pub unsafe fn count_kernel(a: &CellArgs) {
    let n = a.num_atoms as usize;
    if gpu::global_id() == 0 {
        *a.row_ptr.add(n) = 0;
    }
    let Some(i) = warp_atom(a) else { return };
    let lane = gpu::lane_id() as u32;
    let s = structure_of(a, i);
    let (rec, g) = (&*a.records.add(s), &*a.grids.add(s));
    let bins = a.bin_start.add(rec.bin_base as usize);
    let mut count = 0u32;
    let mut close = None;
    for_each_candidate_chunk(i as u32, lane, *a.atom_home.add(i), g, bins, a.bin_atoms, a.wrap, |valid, j, shift| {
        let d = if valid { candidate_geometry(i as u32, j, shift, a.positions, &rec.cell).1 } else { f32::INFINITY };
        count += gpu::ballot(d <= a.cutoff).count_ones();
        let near = gpu::ballot(d < MIN_DISTANCE);
        if near != 0 && close.is_none() {
            close = Some(gpu::shfl_idx_u32(j, near.trailing_zeros()));
        }
    });
    if lane == 0 {
        *a.row_ptr.add(i) = count;
        if let Some(j) = close {
            if gpu::atomic_cas_u32(a.status.add(status::TOO_CLOSE), 0, 1) == 0 {
                *a.status.add(status::CLOSE_I) = i as u32;
                *a.status.add(status::CLOSE_J) = j;
            }
        }
    }
}

#[inline(always)]
unsafe fn overflowed(a: &CellArgs) -> bool {
    *a.row_ptr.add(a.num_atoms as usize) > a.edge_capacity
}

/// Longest row the warp sorts by rank (lane l ranks edges l, l + 32, …); longer rows
/// (tiny periodic cells) fall back to one lane's insertion sort.
const RANKED_ROW: usize = 4 * 32;

/// Writes and sorts each row (nothing when the edges exceed the capacity), one warp
/// per receiver: hits are packed into the row by ballot in the walk's order, then
/// each lane moves its edges to their rank in (sender, shift) order, the CPU's.
pub unsafe fn fill_kernel(a: &CellArgs) {
    let Some(i) = warp_atom(a) else { return };
    let lane = gpu::lane_id() as u32;
    if overflowed(a) {
        if i == 0 && lane == 0 {
            *a.status.add(status::OVERFLOW) = 1;
        }
        return;
    }
    let s = structure_of(a, i);
    let (rec, g) = (&*a.records.add(s), &*a.grids.add(s));
    let bins = a.bin_start.add(rec.bin_base as usize);
    let start = *a.row_ptr.add(i) as usize;
    let len = *a.row_ptr.add(i + 1) - start as u32;
    let (src, shift) = (a.src.add(start), a.shift.add(start));
    let below_lane = (1u32 << lane) - 1;
    let mut filled = 0u32;
    for_each_candidate_chunk(i as u32, lane, *a.atom_home.add(i), g, bins, a.bin_atoms, a.wrap, |valid, j, sh| {
        let hit = valid && candidate_geometry(i as u32, j, sh, a.positions, &rec.cell).1 <= a.cutoff;
        let hits = gpu::ballot(hit);
        let slot = filled + (hits & below_lane).count_ones();
        // `len` came from the count with the same inputs; the guard keeps a mismatch
        // from writing past the row.
        if hit && slot < len {
            *src.add(slot as usize) = j;
            *shift.add(slot as usize) = sh;
        }
        filled += hits.count_ones();
    });
    let len = filled.min(len) as usize;
    gpu::sync_warp();
    if len <= RANKED_ROW {
        let mut mine = [(0u32, [0i32; 3]); RANKED_ROW / 32];
        let mut rank = [0usize; RANKED_ROW / 32];
        for m in 0..RANKED_ROW / 32 {
            let e = m * 32 + lane as usize;
            if e < len {
                mine[m] = (*src.add(e), *shift.add(e));
                for q in 0..len {
                    rank[m] += edge_key_less((*src.add(q), *shift.add(q)), mine[m]) as usize;
                }
            }
        }
        gpu::sync_warp();
        for m in 0..RANKED_ROW / 32 {
            if m * 32 + (lane as usize) < len {
                *src.add(rank[m]) = mine[m].0;
                *shift.add(rank[m]) = mine[m].1;
            }
        }
    } else if lane == 0 {
        sort_row(src, shift, len as u32);
    }
    gpu::sync_warp();
    if !a.geom.is_null() {
        let mut e = start + lane as usize;
        while e < start + len {
            let (r, d) = candidate_geometry(i as u32, *a.src.add(e), *a.shift.add(e), a.positions, &rec.cell);
            *a.geom.add(e) = [r[0], r[1], r[2], d];
            e += 32;
        }
    }
}

/// The reverse of every edge, found in the sender's sorted row; one warp per
/// receiver, its lanes over the row's edges.
pub unsafe fn reverse_kernel(a: &CellArgs) {
    let Some(i) = warp_atom(a) else { return };
    if overflowed(a) {
        return;
    }
    let (start, end) = (*a.row_ptr.add(i) as usize, *a.row_ptr.add(i + 1) as usize);
    let mut e = start + gpu::lane_id();
    while e < end {
        let r = reverse_edge(i as u32, *a.src.add(e), *a.shift.add(e), a.row_ptr, a.src, a.shift);
        if r == u32::MAX {
            *a.status.add(status::ASYMMETRIC) = 1;
        }
        *a.reverse.add(e) = r;
        e += 32;
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

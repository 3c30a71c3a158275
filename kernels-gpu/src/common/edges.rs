//! The edge passes' walk over a receiver's CSR row on the GPU, shared by every
//! architecture: one warp per (receiver, channel group), lanes loading the geometry
//! of 32 edges at once, edges within the cutoff broadcast to the whole warp in row
//! order. A receiver's row is a segment reduction, so there are no float atomics and
//! the result is deterministic. Edge geometry is recomputed from positions and image
//! shifts, so the neighbour list may be built with a skin (edges with d > rc are
//! skipped).

use super::args::{FilterTable, Rows};
use crate::device::gpu;
use crate::filter_table::hermite;
use crate::geometry::{edge_vector, shift_vector};

/// Geometry of up to 32 edges of a row, one per lane, for broadcasting.
#[derive(Clone, Copy)]
struct LaneEdge {
    j: u32,
    r: [f32; 3],
    d: f32,
}

#[inline(always)]
unsafe fn lane_edge(a: &Rows, ri: [f32; 3], cell: &[f32; 9], e: usize, valid: bool) -> LaneEdge {
    if !valid {
        return LaneEdge { j: 0, r: [0.0; 3], d: f32::INFINITY };
    }
    let j = *a.src.add(e);
    let (r, d) = edge_vector(ri, *a.positions.add(j as usize), shift_vector(*a.shift.add(e), cell));
    LaneEdge { j, r, d }
}

#[inline(always)]
fn broadcast(x: &LaneEdge, k: u32) -> LaneEdge {
    LaneEdge {
        j: gpu::shfl_idx_u32(x.j, k),
        r: [gpu::shfl_idx_f32(x.r[0], k), gpu::shfl_idx_f32(x.r[1], k), gpu::shfl_idx_f32(x.r[2], k)],
        d: gpu::shfl_idx_f32(x.d, k),
    }
}

/// Whether the neighbour search found more edges than the buffers hold: then the
/// edge arrays are not filled, the edge passes do nothing, and the host grows the
/// buffers and repeats the call.
#[inline(always)]
pub(crate) unsafe fn edges_overflowed(row_ptr: *const u32, num_atoms: u32, edge_capacity: u32) -> bool {
    *row_ptr.add(num_atoms as usize) > edge_capacity
}

/// (receiver, channel group) of this warp, or None past the last atom.
#[inline(always)]
pub(crate) unsafe fn warp_task(a: &Rows) -> Option<(usize, usize)> {
    if edges_overflowed(a.row_ptr, a.num_atoms, a.edge_capacity) {
        return None;
    }
    let warp = gpu::global_id() / 32;
    let groups = a.groups as usize;
    let i = warp / groups;
    if i < a.num_atoms as usize {
        Some((i, warp % groups))
    } else {
        None
    }
}

/// A row's edge as the edge passes see it: index, sender, unit vector and
/// the filter table's weights at its length.
pub(crate) struct RowEdge {
    pub index: usize,
    pub j: usize,
    pub u: [f32; 3],
    pub at: crate::filter_table::Hermite,
}

/// Calls `visit` for each chunk of up to 32 edges of receiver i: the lanes' edges
/// (lane l holds edge `chunk + l`), the mask of those within the cutoff, and `chunk`.
/// The mask comes from a ballot, so the callers' loops neither broadcast nor branch
/// on the others (measured against testing each lane's edge in turn: PaiNN −4 % at
/// 24 atoms, −7 % at 1,000; PERF.md, session 7).
#[inline(always)]
unsafe fn for_each_row_chunk(a: &Rows, i: usize, mut visit: impl FnMut(&LaneEdge, u32, usize)) {
    let lane = gpu::lane_id();
    let cell = (*a.records.add(*a.structure_of.add(i) as usize)).cell;
    let ri = *a.positions.add(i);
    let (start, end) = (*a.row_ptr.add(i) as usize, *a.row_ptr.add(i + 1) as usize);
    let mut chunk = start;
    while chunk < end {
        let count = (end - chunk).min(32);
        let mine = lane_edge(a, ri, &cell, chunk + lane, lane < count);
        // Lanes past the row hold d = ∞, so this drops them too.
        visit(&mine, gpu::ballot(mine.d <= a.cutoff), chunk);
        chunk += 32;
    }
}

/// The lowest edge of `pending` (which must not be empty), broadcast to the warp,
/// and cleared from `pending`.
#[inline(always)]
fn take_edge(a: &Rows, filter: &FilterTable, mine: &LaneEdge, pending: &mut u32, chunk: usize) -> RowEdge {
    let k = pending.trailing_zeros();
    *pending &= *pending - 1;
    row_edge(a, filter, mine, k, chunk)
}

/// Calls `visit` for each edge of receiver i within the cutoff, in row order. Lanes
/// load the geometry of 32 edges at once, then each edge is broadcast to the warp, so
/// `visit` runs on all lanes together (it may use warp shuffles).
#[inline(always)]
pub(crate) unsafe fn for_each_row_edge(a: &Rows, filter: &FilterTable, i: usize, mut visit: impl FnMut(&RowEdge)) {
    for_each_row_chunk(a, i, |mine, mut pending, chunk| {
        while pending != 0 {
            visit(&take_edge(a, filter, mine, &mut pending, chunk));
        }
    });
}

/// `for_each_row_edge` as a two-stage pipeline: `load` of the next edge is issued
/// before `consume` of the current one, so the next edge's memory loads are in
/// flight while the current one's arithmetic runs (one edge at a time, a warp waited
/// on L2 once an edge). Same edges, same order.
#[inline(always)]
pub(crate) unsafe fn for_each_row_edge_pipelined<L>(
    a: &Rows,
    filter: &FilterTable,
    i: usize,
    load: impl Fn(&RowEdge) -> L,
    mut consume: impl FnMut(&RowEdge, L),
) {
    for_each_row_chunk(a, i, |mine, mut pending, chunk| {
        if pending == 0 {
            return;
        }
        let mut current = take_edge(a, filter, mine, &mut pending, chunk);
        let mut loaded = load(&current);
        while pending != 0 {
            let following = take_edge(a, filter, mine, &mut pending, chunk);
            let following_loaded = load(&following);
            consume(&current, loaded);
            current = following;
            loaded = following_loaded;
        }
        consume(&current, loaded);
    });
}

/// `for_each_row_edge_pipelined` when `pipelined`, else one edge at a time (`load`
/// then `consume`): with more than 2 channels a lane the two stages' registers do
/// not fit (ptxas: up to 255 registers and 2 KB of stack).
#[inline(always)]
pub(crate) unsafe fn for_each_row_edge_loaded<L>(
    a: &Rows,
    filter: &FilterTable,
    i: usize,
    pipelined: bool,
    load: impl Fn(&RowEdge) -> L,
    mut consume: impl FnMut(&RowEdge, L),
) {
    if pipelined {
        for_each_row_edge_pipelined(a, filter, i, &load, &mut consume);
    } else {
        for_each_row_edge(a, filter, i, |edge| consume(edge, load(edge)));
    }
}

/// Lane k's edge of `mine`, broadcast to the warp.
#[inline(always)]
fn row_edge(a: &Rows, filter: &FilterTable, mine: &LaneEdge, k: u32, chunk: usize) -> RowEdge {
    let edge = broadcast(mine, k);
    // One division an edge, not three (u within an ulp of r / (d + ε)).
    let inv_d = 1.0 / (edge.d + a.unit_epsilon);
    RowEdge {
        index: chunk + k as usize,
        j: edge.j as usize,
        u: [edge.r[0] * inv_d, edge.r[1] * inv_d, edge.r[2] * inv_d],
        at: hermite(edge.d, filter.inv_h, a.hidden as usize),
    }
}

/// This warp's atom (one warp per atom, lanes over its row), or None past the last
/// atom or when the edges overflowed.
#[inline(always)]
pub(crate) unsafe fn warp_row(
    row_ptr: *const u32,
    num_atoms: u32,
    edge_capacity: u32,
) -> Option<(usize, core::ops::Range<usize>)> {
    let i = gpu::global_id() / 32;
    if i >= num_atoms as usize || edges_overflowed(row_ptr, num_atoms, edge_capacity) {
        return None;
    }
    Some((i, *row_ptr.add(i) as usize..*row_ptr.add(i + 1) as usize))
}

//! The student model on the GPU (architecture 1 of MODEL.md), the same math as
//! [`crate::student`] laid out for the hardware:
//! - edge passes (message and its adjoint) run one warp per (receiver, channel
//!   group); lane l owns channels g·32·CH + 32m + l, m < CH. A receiver's row is a
//!   segment reduction, so there are no float atomics and the result is
//!   deterministic. The filter comes from the Hermite table of [`crate::filter_table`].
//! - atom passes (update, readout and their adjoints) run one thread per channel over
//!   a tile of TA atoms, so each weight read from L2 serves TA atoms.
//! - edge geometry is recomputed from positions and image shifts, so the neighbour
//!   list may be built with a skin (edges with d > rc are skipped).

use crate::device::gpu;
use crate::filter_table::{hermite, interpolate, knots};
use crate::geometry::{edge_gradient, edge_vector, shift_vector};
use crate::launch_args::{ModelArgs, STRUCTURE_OUT_WORDS};
use crate::math::{fma, silu, silu_and_grad, sqrt};

/// Geometry of up to 32 edges of a row, one per lane, for broadcasting.
#[derive(Clone, Copy)]
struct LaneEdge {
    j: u32,
    r: [f32; 3],
    d: f32,
}

#[inline(always)]
unsafe fn lane_edge(a: &ModelArgs, ri: [f32; 3], cell: &[f32; 9], e: usize, valid: bool) -> LaneEdge {
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
unsafe fn edges_overflowed(a: &ModelArgs) -> bool {
    *a.row_ptr.add(a.num_atoms as usize) > a.edge_capacity
}

/// (receiver, channel group) of this warp, or None past the last atom.
#[inline(always)]
pub(crate) unsafe fn warp_task(a: &ModelArgs) -> Option<(usize, usize)> {
    if edges_overflowed(a) {
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
unsafe fn for_each_row_chunk(a: &ModelArgs, i: usize, mut visit: impl FnMut(&LaneEdge, u32, usize)) {
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
fn take_edge(a: &ModelArgs, mine: &LaneEdge, pending: &mut u32, chunk: usize) -> RowEdge {
    let k = pending.trailing_zeros();
    *pending &= *pending - 1;
    row_edge(a, mine, k, chunk)
}

/// Calls `visit` for each edge of receiver i within the cutoff, in row order. Lanes
/// load the geometry of 32 edges at once, then each edge is broadcast to the warp, so
/// `visit` runs on all lanes together (it may use warp shuffles).
#[inline(always)]
pub(crate) unsafe fn for_each_row_edge(a: &ModelArgs, i: usize, mut visit: impl FnMut(&RowEdge)) {
    for_each_row_chunk(a, i, |mine, mut pending, chunk| {
        while pending != 0 {
            visit(&take_edge(a, mine, &mut pending, chunk));
        }
    });
}

/// `for_each_row_edge` as a two-stage pipeline: `load` of the next edge is issued
/// before `consume` of the current one, so the next edge's memory loads are in
/// flight while the current one's arithmetic runs (one edge at a time, a warp waited
/// on L2 once an edge). Same edges, same order.
#[inline(always)]
pub(crate) unsafe fn for_each_row_edge_pipelined<L>(
    a: &ModelArgs,
    i: usize,
    load: impl Fn(&RowEdge) -> L,
    mut consume: impl FnMut(&RowEdge, L),
) {
    for_each_row_chunk(a, i, |mine, mut pending, chunk| {
        if pending == 0 {
            return;
        }
        let mut current = take_edge(a, mine, &mut pending, chunk);
        let mut loaded = load(&current);
        while pending != 0 {
            let following = take_edge(a, mine, &mut pending, chunk);
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
    a: &ModelArgs,
    i: usize,
    pipelined: bool,
    load: impl Fn(&RowEdge) -> L,
    mut consume: impl FnMut(&RowEdge, L),
) {
    if pipelined {
        for_each_row_edge_pipelined(a, i, &load, &mut consume);
    } else {
        for_each_row_edge(a, i, |edge| consume(edge, load(edge)));
    }
}

/// Lane k's edge of `mine`, broadcast to the warp.
#[inline(always)]
fn row_edge(a: &ModelArgs, mine: &LaneEdge, k: u32, chunk: usize) -> RowEdge {
    let edge = broadcast(mine, k);
    // One division an edge, not three (u within an ulp of r / (d + ε)).
    let inv_d = 1.0 / (edge.d + a.unit_epsilon);
    RowEdge {
        index: chunk + k as usize,
        j: edge.j as usize,
        u: [edge.r[0] * inv_d, edge.r[1] * inv_d, edge.r[2] * inv_d],
        at: hermite(edge.d, a.table_inv_h, a.hidden as usize),
    }
}

/// s_mid = s_i + Σ_j s_j∘φs, v_mid = v_i + Σ_j (v_j∘φv1 + u⊗φv2).
#[inline(always)]
pub unsafe fn message_forward<const CH: usize>(a: &ModelArgs) {
    let Some((i, g)) = warp_task(a) else { return };
    let lane = gpu::lane_id();
    let h = a.hidden as usize;
    let base = g * 32 * CH + lane;
    let mut s_acc = [0.0f32; CH];
    let mut v_acc = [[0.0f32; CH]; 3];
    for m in 0..CH {
        let c = base + 32 * m;
        s_acc[m] = *a.s.add(i * h + c);
        for x in 0..3 {
            v_acc[x][m] = *a.v.add((i * 3 + x) * h + c);
        }
    }
    // Per channel: the knots of [φs, φv1, φv2] and the sender's [s, v].
    let load = |edge: &RowEdge| -> [([[f32; 4]; 3], [f32; 4]); CH] {
        core::array::from_fn(|m| {
            let c = base + 32 * m;
            let phi = [0, h, 2 * h].map(|q| knots(a.table, &edge.at, q + c, h));
            let j = edge.j;
            (
                phi,
                [
                    *a.s.add(j * h + c),
                    *a.v.add(3 * j * h + c),
                    *a.v.add((3 * j + 1) * h + c),
                    *a.v.add((3 * j + 2) * h + c),
                ],
            )
        })
    };
    for_each_row_edge_loaded(a, i, CH <= 2, load, |edge, loaded| {
        for m in 0..CH {
            let (knots, sender) = &loaded[m];
            let [phi_s, phi_v1, phi_v2] = knots.map(|k| interpolate(&edge.at.w, &k));
            s_acc[m] = fma(sender[0], phi_s, s_acc[m]);
            for x in 0..3 {
                v_acc[x][m] = fma(sender[1 + x], phi_v1, fma(edge.u[x], phi_v2, v_acc[x][m]));
            }
        }
    });
    for m in 0..CH {
        let c = base + 32 * m;
        *a.s_mid.add(i * h + c) = s_acc[m];
        for x in 0..3 {
            *a.v_mid.add((i * 3 + x) * h + c) = v_acc[x][m];
        }
    }
}

/// Adjoint of `message_forward` for receiver i: ∂E/∂(s_i, v_i) of the block input
/// into (gs, gv) (residual + what i sent, through the reverse edges, which share φ),
/// and [∂E/∂d, ∂E/∂u] of each edge of the row added to `edge_adjoint`.
#[inline(always)]
pub unsafe fn message_backward<const CH: usize>(a: &ModelArgs) {
    let Some((i, g)) = warp_task(a) else { return };
    let lane = gpu::lane_id();
    let h = a.hidden as usize;
    let base = g * 32 * CH + lane;
    let mut gs_i = [0.0f32; CH];
    let mut gv_i = [[0.0f32; CH]; 3];
    for m in 0..CH {
        let c = base + 32 * m;
        gs_i[m] = *a.gs_mid.add(i * h + c);
        for x in 0..3 {
            gv_i[x][m] = *a.gv_mid.add((i * 3 + x) * h + c);
        }
    }
    let mut gs_acc = gs_i;
    let mut gv_acc = gv_i;
    let adjoint = a.edge_adjoint.add(g * a.edge_capacity as usize);
    // Per channel: the knots of [φs, φv1, φv2], the sender's [gs_mid, s] and
    // [gv_mid, v] per axis.
    let load = |edge: &RowEdge| -> [([[f32; 4]; 3], [f32; 2], [[f32; 2]; 3]); CH] {
        core::array::from_fn(|m| {
            let c = base + 32 * m;
            let phi = [0, h, 2 * h].map(|q| knots(a.table, &edge.at, q + c, h));
            let j = edge.j;
            let v_rows = [0, 1, 2].map(|x| (j * 3 + x) * h + c);
            (
                phi,
                [*a.gs_mid.add(j * h + c), *a.s.add(j * h + c)],
                v_rows.map(|row| [*a.gv_mid.add(row), *a.v.add(row)]),
            )
        })
    };
    for_each_row_edge_loaded(a, i, CH <= 2, load, |edge, loaded| {
        let (u, at) = (edge.u, &edge.at);
        let mut gd = 0.0f32;
        let mut gu = [0.0f32; 3];
        for m in 0..CH {
            let (knots, [gs_j, s_j], v_j) = &loaded[m];
            let [(phi_s, dphi_s), (phi_v1, dphi_v1), (phi_v2, dphi_v2)] =
                knots.map(|k| (interpolate(&at.w, &k), interpolate(&at.dw, &k)));
            gs_acc[m] = fma(*gs_j, phi_s, gs_acc[m]);
            let gphi_s = gs_i[m] * *s_j;
            let (mut gphi_v1, mut gphi_v2) = (0.0f32, 0.0f32);
            for x in 0..3 {
                let [gv_jx, v_jx] = v_j[x];
                gv_acc[x][m] = fma(gv_jx, phi_v1, gv_acc[x][m]);
                gphi_v1 = fma(gv_i[x][m], v_jx, gphi_v1);
                gphi_v2 = fma(gv_i[x][m], u[x], gphi_v2);
                gu[x] = fma(gv_i[x][m], phi_v2, gu[x]);
            }
            gd = fma(gphi_s, dphi_s, fma(gphi_v1, dphi_v1, fma(gphi_v2, dphi_v2, gd)));
        }
        // Lane 8q holds component q of [∂E/∂d, ∂E/∂u] and adds it to the edge's slot.
        let total = gpu::warp_reduce_sum4([gd, gu[0], gu[1], gu[2]]);
        if lane % 8 == 0 {
            *(adjoint.add(edge.index) as *mut f32).add(lane / 8) += total;
        }
    });
    for m in 0..CH {
        let c = base + 32 * m;
        *a.gs.add(i * h + c) = gs_acc[m];
        for x in 0..3 {
            *a.gv.add((i * 3 + x) * h + c) = gv_acc[x][m];
        }
    }
}

/// s = embedding[Z], v = 0; one thread per (atom, channel).
#[inline(always)]
pub unsafe fn embed(a: &ModelArgs) {
    let h = a.hidden as usize;
    let t = gpu::global_id();
    if t >= a.num_atoms as usize * h {
        return;
    }
    let (i, c) = (t / h, t % h);
    *a.s.add(t) = *a.embedding.add(*a.numbers.add(i) as usize * h + c);
    for x in 0..3 {
        *a.v.add((i * 3 + x) * h + c) = 0.0;
    }
}

/// acc[t] = bias + Σ_k input[t][k] · w[k·stride + col], over a shared-memory tile,
/// k ascending. Weights are loaded eight at a time (sixteen in tiles of at most 2
/// atoms) so that that many loads are in flight: one at a time, the loop waits on L2
/// latency, not on arithmetic.
#[inline(always)]
pub(crate) unsafe fn tile_dense<const TA: usize>(
    input: *const f32,
    input_stride: usize,
    k_len: usize,
    w: *const f32,
    w_stride: usize,
    col: usize,
    bias: f32,
) -> [f32; TA] {
    tile_dense_range::<TA>(input, input_stride, 0, k_len, w, w_stride, col, bias)
}

/// Weights loaded before the multiply-adds that use them in tiles of at most 2 atoms:
/// each thread's chain over k waits on L2 once per this many k. Larger tiles keep 8
/// (at 16, ptxas put their accumulators in local memory: 96 → 640 bytes of stack
/// in `update_t8`).
const LOADS_IN_FLIGHT: usize = 16;

/// Four floats read as one 16-byte load.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Quad([f32; 4]);

/// `tile_dense` over k in `lo..hi` only. Each atom's inputs are read four k at a
/// time: one shared-memory wavefront feeds four multiply-adds instead of one.
/// Needs 16-byte aligned rows: `input` 16-byte aligned, `input_stride` and `lo`
/// multiples of 4, which every caller's layout gives (offsets are multiples of H, H
/// is one of the host's supported sizes, all multiples of 32; slices start at
/// multiples of 8).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_dense_range<const TA: usize>(
    input: *const f32,
    input_stride: usize,
    lo: usize,
    hi: usize,
    w: *const f32,
    w_stride: usize,
    col: usize,
    bias: f32,
) -> [f32; TA] {
    let mut acc = [bias; TA];
    let mut k = lo;
    while TA <= 2 && k + LOADS_IN_FLIGHT <= hi {
        let wk: [f32; LOADS_IN_FLIGHT] = core::array::from_fn(|u| *w.add((k + u) * w_stride + col));
        for t in 0..TA {
            let row = input.add(t * input_stride + k);
            for q in 0..LOADS_IN_FLIGHT / 4 {
                let x = *(row.add(4 * q) as *const Quad);
                for u in 0..4 {
                    acc[t] = fma(x.0[u], wk[4 * q + u], acc[t]);
                }
            }
        }
        k += LOADS_IN_FLIGHT;
    }
    while k + 8 <= hi {
        let wk: [f32; 8] = core::array::from_fn(|u| *w.add((k + u) * w_stride + col));
        for t in 0..TA {
            let row = input.add(t * input_stride + k);
            let (q0, q1) = (*(row as *const Quad), *(row.add(4) as *const Quad));
            for u in 0..4 {
                acc[t] = fma(q0.0[u], wk[u], acc[t]);
            }
            for u in 0..4 {
                acc[t] = fma(q1.0[u], wk[4 + u], acc[t]);
            }
        }
        k += 8;
    }
    while k < hi {
        let wk = *w.add(k * w_stride + col);
        for t in 0..TA {
            acc[t] = fma(*input.add(t * input_stride + k), wk, acc[t]);
        }
        k += 1;
    }
    acc
}

/// The atom-tile kernels' threads: column c < H of slice s < S (block of H·S
/// threads). Each slice sums its own part of k (split-K), so a thread's serial chain
/// of weight loads is S times shorter; the slices then meet in shared memory.
#[derive(Clone, Copy)]
pub(crate) struct TileThread {
    pub c: usize,
    pub slice: usize,
    slices: usize,
    h: usize,
    /// S·TA·H floats of shared memory for the partial sums.
    partial: *mut f32,
}

impl TileThread {
    pub(crate) unsafe fn new(h: usize, partial: *mut f32) -> Self {
        let t = gpu::thread_idx();
        TileThread { c: t % h, slice: t / h, slices: gpu::block_dim() / h, h, partial }
    }

    /// `dense` when SPLIT, else plain `tile_dense`: a kernel instantiated without the
    /// split keeps the registers of the plain loop (with both paths in one kernel,
    /// PaiNN's mixing went from 72 to 168 registers and its large inputs 8 % slower).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn dense_if<const TA: usize, const SPLIT: bool>(
        &self,
        input: *const f32,
        input_stride: usize,
        k_len: usize,
        w: *const f32,
        w_stride: usize,
        col: usize,
        bias: f32,
    ) -> [f32; TA] {
        if SPLIT {
            self.dense::<TA>(input, input_stride, k_len, w, w_stride, col, bias)
        } else {
            tile_dense::<TA>(input, input_stride, k_len, w, w_stride, col, bias)
        }
    }

    /// `tile_dense` split over the block's slices; every thread gets the full sums.
    /// Contains barriers: every thread of the block must call it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn dense<const TA: usize>(
        &self,
        input: *const f32,
        input_stride: usize,
        k_len: usize,
        w: *const f32,
        w_stride: usize,
        col: usize,
        bias: f32,
    ) -> [f32; TA] {
        if self.slices == 1 {
            return tile_dense::<TA>(input, input_stride, k_len, w, w_stride, col, bias);
        }
        let chunk = k_len.div_ceil(self.slices).div_ceil(8) * 8;
        let lo = (self.slice * chunk).min(k_len);
        let hi = (lo + chunk).min(k_len);
        let part = tile_dense_range::<TA>(input, input_stride, lo, hi, w, w_stride, col, 0.0);
        for t in 0..TA {
            *self.partial.add((self.slice * TA + t) * self.h + self.c) = part[t];
        }
        gpu::sync_threads();
        let mut acc = [bias; TA];
        for s in 0..self.slices {
            for t in 0..TA {
                acc[t] += *self.partial.add((s * TA + t) * self.h + self.c);
            }
        }
        gpu::sync_threads();
        acc
    }
}

#[inline(always)]
pub(crate) fn norm3(a: f32, b: f32, z: f32) -> f32 {
    sqrt((a * a + b * b) + z * z)
}

/// Update step over a tile of TA atoms, one thread per channel c and k-slice (H·S
/// threads): [a|g1|g2] = L4(SiLU(L3([s_mid ‖ ‖v_mid‖]))), s = s_mid + a,
/// v = v_mid∘g1 + (M v_mid)∘g2. Shared memory: (3 + S)·H·TA floats. The S threads
/// of a channel write the same values.
#[inline(always)]
pub unsafe fn update_forward<const TA: usize>(a: &ModelArgs) {
    let h = a.hidden as usize;
    let n = a.num_atoms as usize;
    let input = gpu::dynamic_shared_f32();
    let hidden = input.add(2 * h * TA);
    let tile = TileThread::new(h, input.add(3 * h * TA));
    let c = tile.c;
    let first = gpu::block_idx() * TA;
    for t in 0..TA {
        let i = first + t;
        let (s, nv) = if i < n {
            let v = |x: usize| *a.v_mid.add((i * 3 + x) * h + c);
            (*a.s_mid.add(i * h + c), norm3(v(0), v(1), v(2)))
        } else {
            (0.0, 0.0)
        };
        *input.add(t * 2 * h + c) = s;
        *input.add(t * 2 * h + h + c) = nv;
    }
    gpu::sync_threads();
    let pre = tile.dense::<TA>(input, 2 * h, 2 * h, a.update_in_t, h, c, *a.update_in_b.add(c));
    for t in 0..TA {
        *hidden.add(t * h + c) = silu(pre[t]);
    }
    gpu::sync_threads();
    let add = tile.dense::<TA>(hidden, h, h, a.update_out_t, 3 * h, c, *a.update_out_b.add(c));
    let g1 = tile.dense::<TA>(hidden, h, h, a.update_out_t, 3 * h, h + c, *a.update_out_b.add(h + c));
    let g2 = tile.dense::<TA>(hidden, h, h, a.update_out_t, 3 * h, 2 * h + c, *a.update_out_b.add(2 * h + c));
    let mx = &a.mixing;
    for t in 0..TA {
        let i = first + t;
        if i < n && !a.update_kept.is_null() {
            keep_update(a, i, c, 0, pre[t]);
            keep_update(a, i, c, 1, g1[t]);
            keep_update(a, i, c, 2, g2[t]);
        }
        if i < n {
            *a.s.add(i * h + c) = *a.s_mid.add(i * h + c) + add[t];
            let v: [f32; 3] = core::array::from_fn(|x| *a.v_mid.add((i * 3 + x) * h + c));
            for x in 0..3 {
                let mixed = (mx[3 * x] * v[0] + mx[3 * x + 1] * v[1]) + mx[3 * x + 2] * v[2];
                *a.v.add((i * 3 + x) * h + c) = v[x] * g1[t] + mixed * g2[t];
            }
        }
    }
}

/// Where part `part` of [pre, g1, g2] of atom i, channel c lives in `update_kept`.
#[inline(always)]
unsafe fn kept_slot(a: &ModelArgs, i: usize, c: usize, part: usize) -> *mut f32 {
    a.update_kept.add((3 * i + part) * a.hidden as usize + c)
}

/// Stores part `part` of [pre, g1, g2] of atom i, channel c into `update_kept`.
#[inline(always)]
pub(crate) unsafe fn keep_update(a: &ModelArgs, i: usize, c: usize, part: usize, value: f32) {
    *kept_slot(a, i, c, part) = value;
}

/// Part `part` of [pre, g1, g2] of atom i, channel c from `update_kept` (0 past the
/// last atom).
#[inline(always)]
pub(crate) unsafe fn kept_update(a: &ModelArgs, i: usize, c: usize, part: usize) -> f32 {
    if i < a.num_atoms as usize {
        *kept_slot(a, i, c, part)
    } else {
        0.0
    }
}

/// Adjoint of `update_forward`: from (gs, gv) of the block output to (gs_mid, gv_mid).
/// Shared memory: (4 + S)·H·TA floats.
#[inline(always)]
pub unsafe fn update_backward<const TA: usize>(a: &ModelArgs) {
    let h = a.hidden as usize;
    let n = a.num_atoms as usize;
    let shared = gpu::dynamic_shared_f32();
    let tile = TileThread::new(h, shared.add(4 * h * TA));
    let c = tile.c;
    let first = gpu::block_idx() * TA;
    let (input, hidden) = (shared, shared.add(2 * h * TA));
    let mut norms = [0.0f32; TA];
    for t in 0..TA {
        let i = first + t;
        let s = if i < n {
            let v = |x: usize| *a.v_mid.add((i * 3 + x) * h + c);
            norms[t] = norm3(v(0), v(1), v(2));
            *a.s_mid.add(i * h + c)
        } else {
            0.0
        };
        *input.add(t * 2 * h + c) = s;
        *input.add(t * 2 * h + h + c) = norms[t];
    }
    gpu::sync_threads();
    // The hidden layer and the gates: kept by the forward, or recomputed (the same
    // products, so the same values).
    let kept = !a.update_kept.is_null();
    let kept_part = |part: usize| -> [f32; TA] { core::array::from_fn(|t| kept_update(a, first + t, c, part)) };
    let pre = if kept {
        kept_part(0)
    } else {
        tile.dense::<TA>(input, 2 * h, 2 * h, a.update_in_t, h, c, *a.update_in_b.add(c))
    };
    let mut dsilu = [0.0f32; TA];
    for t in 0..TA {
        let (y, dy) = silu_and_grad(pre[t]);
        dsilu[t] = dy;
        *hidden.add(t * h + c) = y;
    }
    gpu::sync_threads();
    let (g1, g2) = if kept {
        (kept_part(1), kept_part(2))
    } else {
        (
            tile.dense::<TA>(hidden, h, h, a.update_out_t, 3 * h, h + c, *a.update_out_b.add(h + c)),
            tile.dense::<TA>(hidden, h, h, a.update_out_t, 3 * h, 2 * h + c, *a.update_out_b.add(2 * h + c)),
        )
    };
    gpu::sync_threads();
    // ∂E/∂[a | g1 | g2] into shared memory; the direct paths v → v_mid into gv_mid.
    // (`gpu_student_tc::update_backward_tc` repeats this arithmetic: see there why.)
    let (g_out, g_hidden) = (shared, shared.add(3 * h * TA));
    let mx = &a.mixing;
    for t in 0..TA {
        let i = first + t;
        let (mut gs_out, mut gg1, mut gg2) = (0.0f32, 0.0f32, 0.0f32);
        if i < n {
            gs_out = *a.gs.add(i * h + c);
            let v: [f32; 3] = core::array::from_fn(|x| *a.v_mid.add((i * 3 + x) * h + c));
            let gv: [f32; 3] =
                if a.has_gv != 0 { core::array::from_fn(|x| *a.gv.add((i * 3 + x) * h + c)) } else { [0.0; 3] };
            for x in 0..3 {
                let mixed = (mx[3 * x] * v[0] + mx[3 * x + 1] * v[1]) + mx[3 * x + 2] * v[2];
                gg1 += gv[x] * v[x];
                gg2 += gv[x] * mixed;
            }
            for b in 0..3 {
                let mt_gv = (mx[b] * gv[0] + mx[3 + b] * gv[1]) + mx[6 + b] * gv[2];
                *a.gv_mid.add((i * 3 + b) * h + c) = gv[b] * g1[t] + mt_gv * g2[t];
            }
        }
        *g_out.add(t * 3 * h + c) = gs_out;
        *g_out.add(t * 3 * h + h + c) = gg1;
        *g_out.add(t * 3 * h + 2 * h + c) = gg2;
    }
    gpu::sync_threads();
    let gh = tile.dense::<TA>(g_out, 3 * h, 3 * h, a.update_out, h, c, 0.0);
    for t in 0..TA {
        *g_hidden.add(t * h + c) = gh[t] * dsilu[t];
    }
    gpu::sync_threads();
    let gs_in = tile.dense::<TA>(g_hidden, h, h, a.update_in, 2 * h, c, 0.0);
    let gn = tile.dense::<TA>(g_hidden, h, h, a.update_in, 2 * h, h + c, 0.0);
    for t in 0..TA {
        let i = first + t;
        if i < n {
            *a.gs_mid.add(i * h + c) = *a.gs.add(i * h + c) + gs_in[t];
            // n = ‖v‖ has no epsilon: at n = 0 the subgradient 0 is used (as PyTorch does).
            // One slice adds, the others wrote the same base value above.
            if norms[t] > 0.0 && tile.slice == 0 {
                let scale = gn[t] / norms[t];
                for x in 0..3 {
                    let row = (i * 3 + x) * h + c;
                    *a.gv_mid.add(row) += scale * *a.v_mid.add(row);
                }
            }
        }
    }
}

/// The weight w_i of atom i's energy in Σ w_i E_i (1 when the call has no weights).
#[inline(always)]
pub(crate) unsafe fn energy_weight(a: &ModelArgs, i: usize) -> f32 {
    if a.energy_weight.is_null() {
        1.0
    } else {
        *a.energy_weight.add(i)
    }
}

/// Energy head over a tile of TA atoms (H threads), and ∂E/∂s into `gs` when asked;
/// both scaled by the atom's energy weight. Shared memory: (H + 4·H/2 + 3·H/4)·TA
/// floats.
#[inline(always)]
pub unsafe fn readout<const TA: usize>(a: &ModelArgs) {
    let h = a.hidden as usize;
    let (h2, h4) = (h / 2, h / 4);
    let n = a.num_atoms as usize;
    let c = gpu::thread_idx();
    let first = gpu::block_idx() * TA;
    let sx = gpu::dynamic_shared_f32();
    let l1 = sx.add(h * TA);
    let d1 = l1.add(h2 * TA);
    let g1 = d1.add(h2 * TA);
    let l2 = g1.add(h2 * TA);
    let d2 = l2.add(h4 * TA);
    let g2 = d2.add(h4 * TA);
    for t in 0..TA {
        let i = first + t;
        *sx.add(t * h + c) = if i < n { *a.s.add(i * h + c) } else { 0.0 };
    }
    gpu::sync_threads();
    if c < h2 {
        let pre = tile_dense::<TA>(sx, h, h, a.head_t[0], h2, c, *a.head_b[0].add(c));
        for t in 0..TA {
            let (y, dy) = silu_and_grad(pre[t]);
            *l1.add(t * h2 + c) = y;
            *d1.add(t * h2 + c) = dy;
        }
    }
    gpu::sync_threads();
    if c < h4 {
        let pre = tile_dense::<TA>(l1, h2, h2, a.head_t[1], h4, c, *a.head_b[1].add(c));
        for t in 0..TA {
            let (y, dy) = silu_and_grad(pre[t]);
            *l2.add(t * h4 + c) = y;
            *d2.add(t * h4 + c) = dy;
        }
    }
    gpu::sync_threads();
    if c < TA && first + c < n {
        let mut e = *a.head_b[2];
        for k in 0..h4 {
            e += *l2.add(c * h4 + k) * *a.head_t[2].add(k);
        }
        if !a.atomref.is_null() {
            e += *a.atomref.add(*a.numbers.add(first + c) as usize);
        }
        *a.atom_energy.add(first + c) = e * energy_weight(a, first + c);
    }
    if a.want_gradient == 0 {
        return;
    }
    if c < h4 {
        for t in 0..TA {
            *g2.add(t * h4 + c) = *a.head_t[2].add(c) * *d2.add(t * h4 + c);
        }
    }
    gpu::sync_threads();
    if c < h2 {
        let acc = tile_dense::<TA>(g2, h4, h4, a.head[1], h2, c, 0.0);
        for t in 0..TA {
            *g1.add(t * h2 + c) = acc[t] * *d1.add(t * h2 + c);
        }
    }
    gpu::sync_threads();
    let gs = tile_dense::<TA>(g1, h2, h2, a.head[0], h, c, 0.0);
    for t in 0..TA {
        let i = first + t;
        if i < n {
            *a.gs.add(i * h + c) = gs[t] * energy_weight(a, i);
        }
    }
}

/// This warp's atom (one warp per atom, lanes over its row), or None past the last
/// atom or when the edges overflowed.
#[inline(always)]
unsafe fn warp_row(a: &ModelArgs) -> Option<(usize, core::ops::Range<usize>)> {
    let i = gpu::global_id() / 32;
    if i >= a.num_atoms as usize || edges_overflowed(a) {
        return None;
    }
    Some((i, *a.row_ptr.add(i) as usize..*a.row_ptr.add(i + 1) as usize))
}

/// ∂E/∂r of every edge of receiver i from its accumulated [∂E/∂d, ∂E/∂u], and the
/// atom's share of the virial Σ r ⊗ ∂E/∂r (lane partial sums, then a warp sum).
#[inline(always)]
pub unsafe fn edge_gradients(a: &ModelArgs) {
    let Some((i, row)) = warp_row(a) else { return };
    let cell = (*a.records.add(*a.structure_of.add(i) as usize)).cell;
    let ri = *a.positions.add(i);
    let mut virial = [0.0f32; 9];
    let mut e = row.start + gpu::lane_id();
    while e < row.end {
        let j = *a.src.add(e) as usize;
        let (r, d) = edge_vector(ri, *a.positions.add(j), shift_vector(*a.shift.add(e), &cell));
        let mut adj = [0.0f32; 4];
        for g in 0..a.groups as usize {
            let part = *a.edge_adjoint.add(g * a.edge_capacity as usize + e);
            for q in 0..4 {
                adj[q] += part[q];
            }
        }
        let grad = if d <= a.cutoff {
            edge_gradient(r, d, adj[0], [adj[1], adj[2], adj[3]], a.unit_epsilon)
        } else {
            [0.0; 3]
        };
        *a.edge_grad.add(e) = [grad[0], grad[1], grad[2], 0.0];
        for x in 0..3 {
            for y in 0..3 {
                virial[3 * x + y] = fma(r[x], grad[y], virial[3 * x + y]);
            }
        }
        e += 32;
    }
    let virial = virial.map(gpu::warp_reduce_sum);
    if gpu::lane_id() == 0 {
        *a.atom_virial.add(i) = virial;
    }
}

/// F_i = Σ_{e in row i} (∂E/∂r_e − ∂E/∂r_rev(e)), since r_e = R_j − R_i; and, where
/// `pair_virial` is given, ½ Σ_{e in row i} r_e ⊗ (∂E/∂r_e − ∂E/∂r_rev(e)): atom i's
/// half of each edge it receives (r_e ⊗ ∂E/∂r_e) and of each it sends (the reverse
/// edge, r_rev = −r_e).
#[inline(always)]
pub unsafe fn forces(a: &ModelArgs) {
    let Some((i, row)) = warp_row(a) else { return };
    // Uniform over the warp, so every lane takes part in the reductions below.
    let split_virial = !a.pair_virial.is_null();
    let cell = (*a.records.add(*a.structure_of.add(i) as usize)).cell;
    let ri = *a.positions.add(i);
    let mut f = [0.0f32; 3];
    let mut virial = [0.0f32; 9];
    let mut e = row.start + gpu::lane_id();
    while e < row.end {
        let (g, back) = (*a.edge_grad.add(e), *a.edge_grad.add(*a.reverse.add(e) as usize));
        let net: [f32; 3] = core::array::from_fn(|x| g[x] - back[x]);
        for x in 0..3 {
            f[x] += net[x];
        }
        if split_virial {
            let j = *a.src.add(e) as usize;
            let (r, _) = edge_vector(ri, *a.positions.add(j), shift_vector(*a.shift.add(e), &cell));
            for x in 0..3 {
                for y in 0..3 {
                    virial[3 * x + y] = fma(r[x], net[y], virial[3 * x + y]);
                }
            }
        }
        e += 32;
    }
    let f = f.map(gpu::warp_reduce_sum);
    if gpu::lane_id() == 0 {
        *a.forces.add(i) = f;
    }
    if split_virial {
        let virial = virial.map(gpu::warp_reduce_sum);
        if gpu::lane_id() == 0 {
            *a.pair_virial.add(i) = virial.map(|x| 0.5 * x);
        }
    }
}

/// One block per structure: energy and virial summed in f64, in a fixed order.
/// Shared memory: `STRUCTURE_OUT_WORDS` f64 per thread.
#[inline(always)]
pub unsafe fn structure_sums(a: &ModelArgs) {
    let s = gpu::block_idx();
    if s >= a.num_structures as usize {
        return;
    }
    let rec = &*a.records.add(s);
    let t = gpu::thread_idx();
    let threads = gpu::block_dim();
    let mut acc = [0.0f64; STRUCTURE_OUT_WORDS];
    let mut i = rec.atom_start as usize + t;
    while i < rec.atom_end as usize {
        acc[0] += *a.atom_energy.add(i) as f64;
        if !a.atom_virial.is_null() {
            let w = *a.atom_virial.add(i);
            for q in 0..9 {
                acc[1 + q] += w[q] as f64;
            }
        }
        i += threads;
    }
    let total = gpu::block_sum_f64(acc);
    if t == 0 {
        for (q, x) in total.iter().enumerate() {
            *a.structure_out.add(s * STRUCTURE_OUT_WORDS + q) = *x;
        }
    }
}

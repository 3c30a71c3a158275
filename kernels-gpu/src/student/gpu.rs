//! The student model on the GPU (architecture 1 of MODEL.md), the same math as
//! [`crate::student`] laid out for the hardware:
//! - edge passes (message and its adjoint) run one warp per (receiver, channel
//!   group) over the receiver's row ([`crate::common::edges`]); lane l owns channels
//!   g·32·CH + 32m + l, m < CH. The filter comes from the Hermite table of
//!   [`crate::filter_table`].
//! - atom passes (update, readout and their adjoints) run one thread per channel over
//!   a tile of TA atoms ([`crate::common::tiles`]), so each weight read from L2
//!   serves TA atoms.

use super::args::{MessageArgs, MessageBackArgs, UpdateArgs, UpdateBackArgs};
use crate::common::args::{DenseLayer, ReadoutArgs};
use crate::common::edges::{for_each_row_edge_loaded, warp_task, RowEdge};
use crate::common::tiles::{tile_dense, TileThread};
use crate::device::gpu;
use crate::filter_table::{interpolate, knots};
use crate::math::{fma, silu, silu_and_grad, sqrt};

/// s_mid = s_i + Σ_j s_j∘φs, v_mid = v_i + Σ_j (v_j∘φv1 + u⊗φv2).
#[inline(always)]
pub unsafe fn message_forward<const CH: usize>(a: &MessageArgs) {
    let Some((i, g)) = warp_task(&a.rows) else { return };
    let lane = gpu::lane_id();
    let h = a.rows.hidden as usize;
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
            let phi = [0, h, 2 * h].map(|q| knots(a.filter.table, &edge.at, q + c, h));
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
    for_each_row_edge_loaded(&a.rows, &a.filter, i, CH <= 2, load, |edge, loaded| {
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
pub unsafe fn message_backward<const CH: usize>(a: &MessageBackArgs) {
    let Some((i, g)) = warp_task(&a.rows) else { return };
    let lane = gpu::lane_id();
    let h = a.rows.hidden as usize;
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
    let adjoint = a.edge_adjoint.add(g * a.rows.edge_capacity as usize);
    // Per channel: the knots of [φs, φv1, φv2], the sender's [gs_mid, s] and
    // [gv_mid, v] per axis.
    let load = |edge: &RowEdge| -> [([[f32; 4]; 3], [f32; 2], [[f32; 2]; 3]); CH] {
        core::array::from_fn(|m| {
            let c = base + 32 * m;
            let phi = [0, h, 2 * h].map(|q| knots(a.filter.table, &edge.at, q + c, h));
            let j = edge.j;
            let v_rows = [0, 1, 2].map(|x| (j * 3 + x) * h + c);
            (
                phi,
                [*a.gs_mid.add(j * h + c), *a.s.add(j * h + c)],
                v_rows.map(|row| [*a.gv_mid.add(row), *a.v.add(row)]),
            )
        })
    };
    for_each_row_edge_loaded(&a.rows, &a.filter, i, CH <= 2, load, |edge, loaded| {
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

#[inline(always)]
pub(crate) fn norm3(a: f32, b: f32, z: f32) -> f32 {
    sqrt((a * a + b * b) + z * z)
}

/// Update step over a tile of TA atoms, one thread per channel c and k-slice (H·S
/// threads): [a|g1|g2] = L4(SiLU(L3([s_mid ‖ ‖v_mid‖]))), s = s_mid + a,
/// v = v_mid∘g1 + (M v_mid)∘g2. Shared memory: (3 + S)·H·TA floats. The S threads
/// of a channel write the same values.
#[inline(always)]
pub unsafe fn update_forward<const TA: usize>(a: &UpdateArgs<DenseLayer>) {
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
    let pre = tile.dense::<TA>(input, 2 * h, 2 * h, a.update_in.weight_t, h, c, *a.update_in.bias.add(c));
    for t in 0..TA {
        *hidden.add(t * h + c) = silu(pre[t]);
    }
    gpu::sync_threads();
    let add = tile.dense::<TA>(hidden, h, h, a.update_out.weight_t, 3 * h, c, *a.update_out.bias.add(c));
    let g1 = tile.dense::<TA>(hidden, h, h, a.update_out.weight_t, 3 * h, h + c, *a.update_out.bias.add(h + c));
    let g2 = tile.dense::<TA>(hidden, h, h, a.update_out.weight_t, 3 * h, 2 * h + c, *a.update_out.bias.add(2 * h + c));
    let mx = &a.mixing;
    for t in 0..TA {
        let i = first + t;
        if i < n && !a.kept.is_null() {
            keep_update(a.kept, a.hidden, i, c, 0, pre[t]);
            keep_update(a.kept, a.hidden, i, c, 1, g1[t]);
            keep_update(a.kept, a.hidden, i, c, 2, g2[t]);
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

/// Where part `part` of [pre, g1, g2] of atom i, channel c lives in the kept update
/// activations (3H floats an atom).
#[inline(always)]
fn kept_slot(hidden: u32, i: usize, c: usize, part: usize) -> usize {
    (3 * i + part) * hidden as usize + c
}

/// Stores part `part` of [pre, g1, g2] of atom i, channel c into `kept`.
#[inline(always)]
pub(crate) unsafe fn keep_update(kept: *mut f32, hidden: u32, i: usize, c: usize, part: usize, value: f32) {
    *kept.add(kept_slot(hidden, i, c, part)) = value;
}

/// Part `part` of [pre, g1, g2] of atom i, channel c from `kept` (0 past the last
/// atom).
#[inline(always)]
pub(crate) unsafe fn kept_update(kept: *const f32, hidden: u32, atoms: u32, i: usize, c: usize, part: usize) -> f32 {
    if i < atoms as usize {
        *kept.add(kept_slot(hidden, i, c, part))
    } else {
        0.0
    }
}

/// Adjoint of `update_forward`: from (gs, gv) of the block output to (gs_mid, gv_mid).
/// Shared memory: (4 + S)·H·TA floats.
#[inline(always)]
pub unsafe fn update_backward<const TA: usize>(a: &UpdateBackArgs<DenseLayer>) {
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
    let kept = !a.kept.is_null();
    let kept_part = |part: usize| -> [f32; TA] {
        core::array::from_fn(|t| kept_update(a.kept, a.hidden, a.num_atoms, first + t, c, part))
    };
    let pre = if kept {
        kept_part(0)
    } else {
        tile.dense::<TA>(input, 2 * h, 2 * h, a.update_in.weight_t, h, c, *a.update_in.bias.add(c))
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
            tile.dense::<TA>(hidden, h, h, a.update_out.weight_t, 3 * h, h + c, *a.update_out.bias.add(h + c)),
            tile.dense::<TA>(hidden, h, h, a.update_out.weight_t, 3 * h, 2 * h + c, *a.update_out.bias.add(2 * h + c)),
        )
    };
    gpu::sync_threads();
    // ∂E/∂[a | g1 | g2] into shared memory; the direct paths v → v_mid into gv_mid.
    // (`gpu_tensor_core::update_backward_tc` repeats this arithmetic: see there why.)
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
    let gh = tile.dense::<TA>(g_out, 3 * h, 3 * h, a.update_out.weight, h, c, 0.0);
    for t in 0..TA {
        *g_hidden.add(t * h + c) = gh[t] * dsilu[t];
    }
    gpu::sync_threads();
    let gs_in = tile.dense::<TA>(g_hidden, h, h, a.update_in.weight, 2 * h, c, 0.0);
    let gn = tile.dense::<TA>(g_hidden, h, h, a.update_in.weight, 2 * h, h + c, 0.0);
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

/// Energy head over a tile of TA atoms (H threads), and ∂E/∂s into `gs` when asked;
/// both scaled by the atom's energy weight. Shared memory: (H + 4·H/2 + 3·H/4)·TA
/// floats.
#[inline(always)]
pub unsafe fn readout<const TA: usize>(a: &ReadoutArgs<3>) {
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
        let pre = tile_dense::<TA>(sx, h, h, a.head[0].weight_t, h2, c, *a.head[0].bias.add(c));
        for t in 0..TA {
            let (y, dy) = silu_and_grad(pre[t]);
            *l1.add(t * h2 + c) = y;
            *d1.add(t * h2 + c) = dy;
        }
    }
    gpu::sync_threads();
    if c < h4 {
        let pre = tile_dense::<TA>(l1, h2, h2, a.head[1].weight_t, h4, c, *a.head[1].bias.add(c));
        for t in 0..TA {
            let (y, dy) = silu_and_grad(pre[t]);
            *l2.add(t * h4 + c) = y;
            *d2.add(t * h4 + c) = dy;
        }
    }
    gpu::sync_threads();
    if c < TA && first + c < n {
        let mut e = *a.head[2].bias;
        for k in 0..h4 {
            e += *l2.add(c * h4 + k) * *a.head[2].weight_t.add(k);
        }
        if !a.atomref.is_null() {
            e += *a.atomref.add(*a.numbers.add(first + c) as usize);
        }
        *a.atom_energy.add(first + c) = e * a.energy_weight(first + c);
    }
    if a.want_gradient == 0 {
        return;
    }
    if c < h4 {
        for t in 0..TA {
            *g2.add(t * h4 + c) = *a.head[2].weight_t.add(c) * *d2.add(t * h4 + c);
        }
    }
    gpu::sync_threads();
    if c < h2 {
        let acc = tile_dense::<TA>(g2, h4, h4, a.head[1].weight, h2, c, 0.0);
        for t in 0..TA {
            *g1.add(t * h2 + c) = acc[t] * *d1.add(t * h2 + c);
        }
    }
    gpu::sync_threads();
    let gs = tile_dense::<TA>(g1, h2, h2, a.head[0].weight, h, c, 0.0);
    for t in 0..TA {
        let i = first + t;
        if i < n {
            *a.gs.add(i * h + c) = gs[t] * a.energy_weight(i);
        }
    }
}

//! PaiNN on the GPU (architecture 2 of MODEL.md), the same math as [`crate::painn`]
//! laid out as the student's GPU path: edge passes one warp per (receiver, channel
//! group) over the receiver's CSR row ([`crate::common::edges`], no float atomics),
//! the filter W(d) read from a Hermite table, and the per-atom networks
//! (context, mixing, readout and their adjoints) over tiles of TA atoms with one
//! thread per channel.

use super::args::{ContextArgs, ContextBackArgs, MessageArgs, MessageBackArgs, MixingArgs, MixingBackArgs};
use super::NORM_EPSILON;
use crate::common::args::{DenseLayer, ReadoutArgs};
use crate::common::edges::{for_each_row_edge_loaded, warp_task, RowEdge};
use crate::common::tiles::{tile_dense, TileThread};
use crate::device::gpu;
use crate::filter_table::{interpolate, knots};
use crate::math::{fma, silu, silu_and_grad, sqrt};

/// x = Dense(H→3H)(SiLU(Dense(H→H)(q))) over a tile of TA atoms (H·S threads, S
/// k-slices as in the student's update). Shared memory: (2 + S)·H·TA floats.
#[inline(always)]
pub unsafe fn context<const TA: usize, const SPLIT: bool>(a: &ContextArgs) {
    let h = a.hidden as usize;
    let n = a.num_atoms as usize;
    let input = gpu::dynamic_shared_f32();
    let hidden = input.add(h * TA);
    let tile = TileThread::new(h, input.add(2 * h * TA));
    let c = tile.c;
    let first = gpu::block_idx() * TA;
    for t in 0..TA {
        let i = first + t;
        *input.add(t * h + c) = if i < n { *a.q.add(i * h + c) } else { 0.0 };
    }
    gpu::sync_threads();
    let pre = tile.dense_if::<TA, SPLIT>(input, h, h, a.context_in.weight_t, h, c, *a.context_in.bias.add(c));
    for t in 0..TA {
        *hidden.add(t * h + c) = silu(pre[t]);
    }
    gpu::sync_threads();
    for part in 0..3 {
        let col = part * h + c;
        let out =
            tile.dense_if::<TA, SPLIT>(hidden, h, h, a.context_out.weight_t, 3 * h, col, *a.context_out.bias.add(col));
        for t in 0..TA {
            let i = first + t;
            if i < n {
                *a.x.add(i * 3 * h + col) = out[t];
            }
        }
    }
}

/// gq = gq_mid + ∂(x·gx)/∂q over a tile of TA atoms (H·S threads).
/// Shared memory: (5 + S)·H·TA floats.
#[inline(always)]
pub unsafe fn context_backward<const TA: usize, const SPLIT: bool>(a: &ContextBackArgs) {
    let h = a.hidden as usize;
    let n = a.num_atoms as usize;
    let input = gpu::dynamic_shared_f32();
    let tile = TileThread::new(h, input.add(5 * h * TA));
    let c = tile.c;
    let first = gpu::block_idx() * TA;
    let g_x = input.add(h * TA);
    let g_hidden = g_x.add(3 * h * TA);
    for t in 0..TA {
        let i = first + t;
        let live = i < n;
        *input.add(t * h + c) = if live { *a.q.add(i * h + c) } else { 0.0 };
        for part in 0..3 {
            *g_x.add(t * 3 * h + part * h + c) = if live { *a.gx.add(i * 3 * h + part * h + c) } else { 0.0 };
        }
    }
    gpu::sync_threads();
    let pre = tile.dense_if::<TA, SPLIT>(input, h, h, a.context_in.weight_t, h, c, *a.context_in.bias.add(c));
    let gh = tile.dense_if::<TA, SPLIT>(g_x, 3 * h, 3 * h, a.context_out.weight, h, c, 0.0);
    for t in 0..TA {
        *g_hidden.add(t * h + c) = gh[t] * silu_and_grad(pre[t]).1;
    }
    gpu::sync_threads();
    let gq = tile.dense_if::<TA, SPLIT>(g_hidden, h, h, a.context_in.weight, h, c, 0.0);
    for t in 0..TA {
        let i = first + t;
        if i < n {
            *a.gq.add(i * h + c) = *a.gq_mid.add(i * h + c) + gq[t];
        }
    }
}

/// q_mid = q_i + Σ_j Wq∘xq_j, μ_mid = μ_i + Σ_j (WR∘xR_j ⊗ dir + Wμ∘xμ_j∘μ_j).
#[inline(always)]
pub unsafe fn message_forward<const CH: usize>(a: &MessageArgs) {
    let Some((i, g)) = warp_task(&a.rows) else { return };
    let lane = gpu::lane_id();
    let h = a.rows.hidden as usize;
    let base = g * 32 * CH + lane;
    let mut q_acc = [0.0f32; CH];
    let mut mu_acc = [[0.0f32; CH]; 3];
    for m in 0..CH {
        let c = base + 32 * m;
        q_acc[m] = *a.q.add(i * h + c);
        for x in 0..3 {
            mu_acc[x][m] = *a.mu.add((i * 3 + x) * h + c);
        }
    }
    // Per channel: the knots of [Wq, WR, Wμ], the sender's context [xq, xR, xμ] and μ.
    let load = |edge: &RowEdge| -> [([[f32; 4]; 3], [f32; 3], [f32; 3]); CH] {
        core::array::from_fn(|m| {
            let c = base + 32 * m;
            let x_j = a.x.add(edge.j * 3 * h);
            let knots = [0, h, 2 * h].map(|q| knots(a.filter.table, &edge.at, q + c, h));
            (knots, [0, h, 2 * h].map(|q| *x_j.add(q + c)), [0, 1, 2].map(|x| *a.mu.add((edge.j * 3 + x) * h + c)))
        })
    };
    for_each_row_edge_loaded(&a.rows, &a.filter, i, CH <= 2, load, |edge, loaded| {
        for m in 0..CH {
            let (knots, x_j, mu_j) = &loaded[m];
            let wq = interpolate(&edge.at.w, &knots[0]) * x_j[0];
            let wr = interpolate(&edge.at.w, &knots[1]) * x_j[1];
            let wm = interpolate(&edge.at.w, &knots[2]) * x_j[2];
            q_acc[m] += wq;
            for x in 0..3 {
                mu_acc[x][m] = fma(wr, edge.u[x], fma(wm, mu_j[x], mu_acc[x][m]));
            }
        }
    });
    for m in 0..CH {
        let c = base + 32 * m;
        *a.q_mid.add(i * h + c) = q_acc[m];
        for x in 0..3 {
            *a.mu_mid.add((i * 3 + x) * h + c) = mu_acc[x][m];
        }
    }
}

/// Adjoint of `message_forward` for atom i over its row: ∂E/∂x_i into `gx` and
/// ∂E/∂μ_i of the block input into `gmu` (residual + what i sent, through the reverse
/// edges, which share W and have direction −dir), and [∂E/∂d, ∂E/∂dir] of each
/// edge of the row added to `edge_adjoint`.
#[inline(always)]
pub unsafe fn message_backward<const CH: usize>(a: &MessageBackArgs) {
    let Some((i, g)) = warp_task(&a.rows) else { return };
    let lane = gpu::lane_id();
    let h = a.rows.hidden as usize;
    let base = g * 32 * CH + lane;
    let mut gq_i = [0.0f32; CH];
    let mut gmu_i = [[0.0f32; CH]; 3];
    let mut mu_i = [[0.0f32; CH]; 3];
    let mut xm_i = [0.0f32; CH];
    for m in 0..CH {
        let c = base + 32 * m;
        gq_i[m] = *a.gq_mid.add(i * h + c);
        xm_i[m] = *a.x.add(i * 3 * h + 2 * h + c);
        for x in 0..3 {
            gmu_i[x][m] = *a.gmu_mid.add((i * 3 + x) * h + c);
            mu_i[x][m] = *a.mu.add((i * 3 + x) * h + c);
        }
    }
    let mut gx_acc = [[0.0f32; CH]; 3];
    let mut gmu_acc = gmu_i;
    let adjoint = a.edge_adjoint.add(g * a.rows.edge_capacity as usize);
    // Per channel: the knots of [Wq, WR, Wμ], the sender's context [xq, xR, xμ] and
    // gq_mid, and its [gμ_mid, μ] per axis.
    let load = |edge: &RowEdge| -> [([[f32; 4]; 3], [f32; 4], [[f32; 2]; 3]); CH] {
        core::array::from_fn(|m| {
            let c = base + 32 * m;
            let j = edge.j;
            let x_j = a.x.add(j * 3 * h);
            let knots = [0, h, 2 * h].map(|q| knots(a.filter.table, &edge.at, q + c, h));
            let rows = [0, 1, 2].map(|x| (j * 3 + x) * h + c);
            (
                knots,
                [*x_j.add(c), *x_j.add(h + c), *x_j.add(2 * h + c), *a.gq_mid.add(j * h + c)],
                rows.map(|row| [*a.gmu_mid.add(row), *a.mu.add(row)]),
            )
        })
    };
    for_each_row_edge_loaded(&a.rows, &a.filter, i, CH <= 2, load, |edge, loaded| {
        let (dir, at) = (edge.u, &edge.at);
        let mut gd = 0.0f32;
        let mut gdir = [0.0f32; 3];
        for m in 0..CH {
            let (knots, [xq, xr, xm, gq_j], mu_j) = &loaded[m];
            let [(wq, dwq), (wr, dwr), (wm, dwm)] = knots.map(|k| (interpolate(&at.w, &k), interpolate(&at.dw, &k)));
            let (xq, xr, xm) = (*xq, *xr, *xm);
            // Edge j→i.
            gd = fma(gq_i[m] * xq, dwq, gd);
            // Reverse edge i→j.
            gx_acc[0][m] = fma(*gq_j, wq, gx_acc[0][m]);
            for x in 0..3 {
                let [gmu_j, mu_jx] = mu_j[x];
                gdir[x] = fma(gmu_i[x][m] * wr, xr, gdir[x]);
                gd = fma(gmu_i[x][m], fma(xr * dir[x], dwr, xm * mu_jx * dwm), gd);
                gx_acc[1][m] = fma(-(gmu_j * dir[x]), wr, gx_acc[1][m]);
                gx_acc[2][m] = fma(gmu_j * mu_i[x][m], wm, gx_acc[2][m]);
                gmu_acc[x][m] = fma(gmu_j * wm, xm_i[m], gmu_acc[x][m]);
            }
        }
        // Lane 8q holds component q of [∂E/∂d, ∂E/∂dir] and adds it to the edge's slot.
        let total = gpu::warp_reduce_sum4([gd, gdir[0], gdir[1], gdir[2]]);
        if lane % 8 == 0 {
            *(adjoint.add(edge.index) as *mut f32).add(lane / 8) += total;
        }
    });
    for m in 0..CH {
        let c = base + 32 * m;
        for part in 0..3 {
            *a.gx.add(i * 3 * h + part * h + c) = gx_acc[part][m];
        }
        for x in 0..3 {
            *a.gmu.add((i * 3 + x) * h + c) = gmu_acc[x][m];
        }
    }
}

/// The mixing network's forward over a tile, for thread c: [μV | μW] of the three
/// Cartesian rows, ‖μV‖, and the hidden pre-activation. Leaves [q ‖ ‖μV‖] in
/// `ctx` (2·H·TA) and uses `mu_tile` (3·H·TA) for μ.
struct MixingTile<const TA: usize> {
    mu_v: [[f32; TA]; 3],
    mu_w: [[f32; TA]; 3],
    norm: [f32; TA],
    pre: [f32; TA],
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mixing_tile<const TA: usize, const SPLIT: bool>(
    q_mid: *const f32,
    mu_mid: *const f32,
    channel_mix: &DenseLayer,
    update_in: &DenseLayer,
    n: usize,
    h: usize,
    tile: &TileThread,
    mu_tile: *mut f32,
    ctx: *mut f32,
) -> MixingTile<TA> {
    let c = tile.c;
    let first = gpu::block_idx() * TA;
    for t in 0..TA {
        let i = first + t;
        let live = i < n;
        for x in 0..3 {
            *mu_tile.add((t * 3 + x) * h + c) = if live { *mu_mid.add((i * 3 + x) * h + c) } else { 0.0 };
        }
        *ctx.add(t * 2 * h + c) = if live { *q_mid.add(i * h + c) } else { 0.0 };
    }
    gpu::sync_threads();
    let mut mu_v = [[0.0f32; TA]; 3];
    let mut mu_w = [[0.0f32; TA]; 3];
    for x in 0..3 {
        mu_v[x] = tile.dense_if::<TA, SPLIT>(mu_tile.add(x * h), 3 * h, h, channel_mix.weight_t, 2 * h, c, 0.0);
        mu_w[x] = tile.dense_if::<TA, SPLIT>(mu_tile.add(x * h), 3 * h, h, channel_mix.weight_t, 2 * h, h + c, 0.0);
    }
    let mut norm = [0.0f32; TA];
    for t in 0..TA {
        let v = |x: usize| mu_v[x][t];
        norm[t] = sqrt((v(0) * v(0) + v(1) * v(1)) + v(2) * v(2) + NORM_EPSILON);
        *ctx.add(t * 2 * h + h + c) = norm[t];
    }
    gpu::sync_threads();
    let pre = tile.dense_if::<TA, SPLIT>(ctx, 2 * h, 2 * h, update_in.weight_t, h, c, *update_in.bias.add(c));
    MixingTile { mu_v, mu_w, norm, pre }
}

/// Mixing over a tile of TA atoms (H·S threads): q = q_mid + a + c∘⟨μV, μW⟩,
/// μ = μ_mid + b∘μW. Shared memory: (5 + S)·H·TA floats.
#[inline(always)]
pub unsafe fn mixing_forward<const TA: usize, const SPLIT: bool>(a: &MixingArgs) {
    let h = a.hidden as usize;
    let n = a.num_atoms as usize;
    let shared = gpu::dynamic_shared_f32();
    let tile = TileThread::new(h, shared.add(5 * h * TA));
    let c = tile.c;
    let first = gpu::block_idx() * TA;
    let (mu_tile, ctx) = (shared, shared.add(3 * h * TA));
    let m = mixing_tile::<TA, SPLIT>(a.q_mid, a.mu_mid, &a.channel_mix, &a.update_in, n, h, &tile, mu_tile, ctx);
    let hidden = mu_tile;
    for t in 0..TA {
        *hidden.add(t * h + c) = silu(m.pre[t]);
    }
    gpu::sync_threads();
    let add = tile.dense_if::<TA, SPLIT>(hidden, h, h, a.update_out.weight_t, 3 * h, c, *a.update_out.bias.add(c));
    let gate =
        tile.dense_if::<TA, SPLIT>(hidden, h, h, a.update_out.weight_t, 3 * h, h + c, *a.update_out.bias.add(h + c));
    let scale = tile.dense_if::<TA, SPLIT>(
        hidden,
        h,
        h,
        a.update_out.weight_t,
        3 * h,
        2 * h + c,
        *a.update_out.bias.add(2 * h + c),
    );
    for t in 0..TA {
        let i = first + t;
        if i < n {
            let inner = (m.mu_v[0][t] * m.mu_w[0][t] + m.mu_v[1][t] * m.mu_w[1][t]) + m.mu_v[2][t] * m.mu_w[2][t];
            *a.q.add(i * h + c) = *a.q_mid.add(i * h + c) + add[t] + scale[t] * inner;
            for x in 0..3 {
                let row = (i * 3 + x) * h + c;
                *a.mu.add(row) = *a.mu_mid.add(row) + gate[t] * m.mu_w[x][t];
            }
        }
    }
}

/// Adjoint of `mixing_forward`: from (gq, gmu) of the block output to (gq_mid, gmu_mid).
/// Shared memory: (6 + S)·H·TA floats.
#[inline(always)]
pub unsafe fn mixing_backward<const TA: usize, const SPLIT: bool>(a: &MixingBackArgs) {
    let h = a.hidden as usize;
    let n = a.num_atoms as usize;
    let shared = gpu::dynamic_shared_f32();
    let tile = TileThread::new(h, shared.add(6 * h * TA));
    let c = tile.c;
    let first = gpu::block_idx() * TA;
    let (mu_tile, ctx) = (shared, shared.add(3 * h * TA));
    let m = mixing_tile::<TA, SPLIT>(a.q_mid, a.mu_mid, &a.channel_mix, &a.update_in, n, h, &tile, mu_tile, ctx);
    let hidden = mu_tile;
    let mut dsilu = [0.0f32; TA];
    for t in 0..TA {
        let (y, dy) = silu_and_grad(m.pre[t]);
        *hidden.add(t * h + c) = y;
        dsilu[t] = dy;
    }
    gpu::sync_threads();
    let gate =
        tile.dense_if::<TA, SPLIT>(hidden, h, h, a.update_out.weight_t, 3 * h, h + c, *a.update_out.bias.add(h + c));
    let scale = tile.dense_if::<TA, SPLIT>(
        hidden,
        h,
        h,
        a.update_out.weight_t,
        3 * h,
        2 * h + c,
        *a.update_out.bias.add(2 * h + c),
    );
    gpu::sync_threads();
    // ∂E/∂[a | b | c] into shared memory.
    let g_out = shared;
    let mut gq = [0.0f32; TA];
    let mut gmu = [[0.0f32; TA]; 3];
    for t in 0..TA {
        let i = first + t;
        if i < n {
            gq[t] = *a.gq.add(i * h + c);
            if a.has_gmu != 0 {
                for x in 0..3 {
                    gmu[x][t] = *a.gmu.add((i * 3 + x) * h + c);
                }
            }
        }
        let inner = (m.mu_v[0][t] * m.mu_w[0][t] + m.mu_v[1][t] * m.mu_w[1][t]) + m.mu_v[2][t] * m.mu_w[2][t];
        *g_out.add(t * 3 * h + c) = gq[t];
        *g_out.add(t * 3 * h + h + c) =
            (gmu[0][t] * m.mu_w[0][t] + gmu[1][t] * m.mu_w[1][t]) + gmu[2][t] * m.mu_w[2][t];
        *g_out.add(t * 3 * h + 2 * h + c) = gq[t] * inner;
    }
    gpu::sync_threads();
    let gh = tile.dense_if::<TA, SPLIT>(g_out, 3 * h, 3 * h, a.update_out.weight, h, c, 0.0);
    gpu::sync_threads();
    let g_hidden = shared;
    for t in 0..TA {
        *g_hidden.add(t * h + c) = gh[t] * dsilu[t];
    }
    gpu::sync_threads();
    let gq_in = tile.dense_if::<TA, SPLIT>(g_hidden, h, h, a.update_in.weight, 2 * h, c, 0.0);
    let gn = tile.dense_if::<TA, SPLIT>(g_hidden, h, h, a.update_in.weight, 2 * h, h + c, 0.0);
    gpu::sync_threads();
    // ∂E/∂[μV | μW] per Cartesian row into shared memory, then through the channel mix.
    let g_mixed = shared;
    for t in 0..TA {
        let g_inner = gq[t] * scale[t];
        for x in 0..3 {
            let row = (t * 3 + x) * 2 * h;
            *g_mixed.add(row + c) = g_inner * m.mu_w[x][t] + gn[t] * m.mu_v[x][t] / m.norm[t];
            *g_mixed.add(row + h + c) = g_inner * m.mu_v[x][t] + gmu[x][t] * gate[t];
        }
    }
    gpu::sync_threads();
    for x in 0..3 {
        let back = tile.dense_if::<TA, SPLIT>(g_mixed.add(x * 2 * h), 6 * h, 2 * h, a.channel_mix.weight, h, c, 0.0);
        for t in 0..TA {
            let i = first + t;
            if i < n {
                *a.gmu_mid.add((i * 3 + x) * h + c) = gmu[x][t] + back[t];
            }
        }
    }
    for t in 0..TA {
        let i = first + t;
        if i < n {
            *a.gq_mid.add(i * h + c) = gq[t] + gq_in[t];
        }
    }
}

/// Readout H → H/2 (SiLU) → 1 plus the element offset over a tile of TA atoms
/// (H threads), and ∂E/∂q into `gs` when asked; both scaled by the atom's energy
/// weight. Shared memory: (H + H)·TA floats.
#[inline(always)]
pub unsafe fn readout<const TA: usize>(a: &ReadoutArgs<2>) {
    let h = a.hidden as usize;
    let h2 = h / 2;
    let n = a.num_atoms as usize;
    let c = gpu::thread_idx();
    let first = gpu::block_idx() * TA;
    let qx = gpu::dynamic_shared_f32();
    let l1 = qx.add(h * TA);
    let g1 = l1.add(h2 * TA);
    for t in 0..TA {
        let i = first + t;
        *qx.add(t * h + c) = if i < n { *a.s.add(i * h + c) } else { 0.0 };
    }
    gpu::sync_threads();
    let mut dsilu = [0.0f32; TA];
    if c < h2 {
        let pre = tile_dense::<TA>(qx, h, h, a.head[0].weight_t, h2, c, *a.head[0].bias.add(c));
        for t in 0..TA {
            let (y, dy) = silu_and_grad(pre[t]);
            *l1.add(t * h2 + c) = y;
            dsilu[t] = dy;
        }
    }
    gpu::sync_threads();
    if c < TA && first + c < n {
        let mut e = *a.head[1].bias;
        for k in 0..h2 {
            e += *l1.add(c * h2 + k) * *a.head[1].weight_t.add(k);
        }
        if !a.atomref.is_null() {
            e += *a.atomref.add(*a.numbers.add(first + c) as usize);
        }
        *a.atom_energy.add(first + c) = e * a.energy_weight(first + c);
    }
    if a.want_gradient == 0 {
        return;
    }
    if c < h2 {
        for t in 0..TA {
            *g1.add(t * h2 + c) = *a.head[1].weight_t.add(c) * dsilu[t];
        }
    }
    gpu::sync_threads();
    let gq = tile_dense::<TA>(g1, h2, h2, a.head[0].weight, h, c, 0.0);
    for t in 0..TA {
        let i = first + t;
        if i < n {
            *a.gs.add(i * h + c) = gq[t] * a.energy_weight(i);
        }
    }
}

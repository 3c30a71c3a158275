//! The student's update step and its adjoint on the tensor cores: one block of
//! `BLOCK_WARPS` warps per 16 atoms, each dense layer a warp-level 3xTF32 product
//! ([`crate::mma`]) whose epilogue (bias, SiLU, gating, mixing) runs on the
//! accumulators in registers. Same math as [`super::gpu::update_forward`] /
//! [`super::gpu::update_backward`]; the host picks these for H ≤ 128 from 33 tiles of 16 atoms on
//! (`TENSOR_CORE_MIN_TILES` in the host: below that one block's latency loses to the
//! CUDA-core tiles of 1 or 2 atoms).

use super::args::{FragmentLayer, UpdateArgs, UpdateBackArgs};
use super::gpu::{keep_update, kept_update, norm3};
use super::tensor_core::{BLOCK_WARPS, MAX_GROUPS_PER_WARP, TILES_PER_GROUP};
use crate::device::gpu;
use crate::math::{silu, silu_and_grad};
use crate::mma::{accumulator_position, padded, warp_product, SplitPair, TILE_ROWS};

/// [s_mid ‖ ‖v_mid‖] of the block's 16 atoms into `x` (rows of padded(2H)), zero
/// past the last atom.
#[inline(always)]
unsafe fn load_update_input(s_mid: *const f32, v_mid: *const f32, n: usize, h: usize, first: usize, x: *mut SplitPair) {
    let lda = padded(2 * h);
    let mut e = gpu::thread_idx();
    while e < TILE_ROWS * h {
        let (row, c) = (e / h, e % h);
        let i = first + row;
        let (s, norm) = if i < n {
            let v = |x: usize| *v_mid.add((i * 3 + x) * h + c);
            (*s_mid.add(i * h + c), norm3(v(0), v(1), v(2)))
        } else {
            (0.0, 0.0)
        };
        *x.add(row * lda + c) = SplitPair::new(s);
        *x.add(row * lda + h + c) = SplitPair::new(norm);
        e += gpu::block_dim();
    }
}

/// Accumulators of `tiles` starting at the bias (or 0 for a null bias).
#[inline(always)]
unsafe fn start<const J: usize>(bias: *const f32, tiles: [usize; J]) -> [[f32; 4]; J] {
    let lane = gpu::lane_id();
    core::array::from_fn(|j| {
        core::array::from_fn(|e| {
            if bias.is_null() {
                0.0
            } else {
                *bias.add(8 * tiles[j] + accumulator_position(lane, e).1)
            }
        })
    })
}

/// Writes accumulators `acc` of `tiles` into rows of `lda` elements, through `f`
/// (given the value and its offset).
#[inline(always)]
unsafe fn store<const J: usize, T>(
    acc: &[[f32; 4]; J],
    tiles: [usize; J],
    out: *mut T,
    lda: usize,
    f: impl Fn(f32, usize) -> T,
) {
    for_each_entry(tiles, |j, e, row, col| {
        let at = row * lda + col;
        *out.add(at) = f(acc[j][e], at);
    });
}

/// Accumulators of one group of tiles.
type Group = [[f32; 4]; TILES_PER_GROUP];

/// Calls `f(j, e, row, column)` for each accumulator entry e of `tiles[j]`.
#[inline(always)]
fn for_each_entry<const J: usize>(tiles: [usize; J], mut f: impl FnMut(usize, usize, usize, usize)) {
    let lane = gpu::lane_id();
    for j in 0..J {
        for e in 0..4 {
            let (row, col) = accumulator_position(lane, e);
            f(j, e, row, 8 * tiles[j] + col);
        }
    }
}

/// The warp's q-th group of 8-column tiles of an H-wide layer, and whether the layer
/// has it.
#[inline(always)]
fn tile_group(q: usize, h: usize) -> ([usize; TILES_PER_GROUP], bool) {
    let group = gpu::warp_id() + q * BLOCK_WARPS;
    (core::array::from_fn(|k| TILES_PER_GROUP * group + k), TILES_PER_GROUP * group < h / 8)
}

/// pre = L3([s_mid ‖ ‖v_mid‖]) of the block's atoms, per tile group the warp owns.
/// Contains barriers (before and after the product).
#[inline(always)]
unsafe fn update_hidden(
    s_mid: *const f32,
    v_mid: *const f32,
    update_in: &FragmentLayer,
    n: usize,
    h: usize,
    first: usize,
    x: *mut SplitPair,
) -> [Group; MAX_GROUPS_PER_WARP] {
    load_update_input(s_mid, v_mid, n, h, first, x);
    gpu::sync_threads();
    let mut pre = [[[0.0f32; 4]; TILES_PER_GROUP]; MAX_GROUPS_PER_WARP];
    for q in 0..MAX_GROUPS_PER_WARP {
        let (tiles, owned) = tile_group(q, h);
        if owned {
            pre[q] = start(update_in.bias, tiles);
            warp_product::<TILES_PER_GROUP, 4>(&mut pre[q], x, padded(2 * h), update_in.weight_t, 2 * h, tiles);
        }
    }
    // Every warp has read x: the caller may overwrite it.
    gpu::sync_threads();
    pre
}

/// Update step of 16 atoms: [a|g1|g2] = L4(SiLU(L3([s_mid ‖ ‖v_mid‖]))),
/// s = s_mid + a, v = v_mid∘g1 + (M v_mid)∘g2.
#[inline(always)]
pub unsafe fn update_forward_tc(a: &UpdateArgs<FragmentLayer>) {
    let (h, n) = (a.hidden as usize, a.num_atoms as usize);
    let first = gpu::block_idx() * TILE_ROWS;
    let shared = gpu::dynamic_shared_f32() as *mut SplitPair;
    let pre = update_hidden(a.s_mid, a.v_mid, &a.update_in, n, h, first, shared);
    let hidden = shared;
    let lane = gpu::lane_id();
    for q in 0..MAX_GROUPS_PER_WARP {
        let (tiles, owned) = tile_group(q, h);
        if owned {
            store(&pre[q], tiles, hidden, padded(h), |y, _| SplitPair::new(silu(y)));
            if !a.kept.is_null() {
                for_each_entry(tiles, |j, e, row, c| {
                    if first + row < n {
                        keep_update(a.kept, a.hidden, first + row, c, 0, pre[q][j][e]);
                    }
                });
            }
        }
    }
    gpu::sync_threads();
    let mx = &a.mixing;
    let tiles = h / 8;
    let mut ct = gpu::warp_id();
    while ct < tiles {
        let out_tiles = [ct, ct + tiles, ct + 2 * tiles];
        let mut acc = start(a.update_out.bias, out_tiles);
        warp_product::<3, 2>(&mut acc, hidden, padded(h), a.update_out.weight_t, h, out_tiles);
        for e in 0..4 {
            let (row, col) = accumulator_position(lane, e);
            let (i, c) = (first + row, 8 * ct + col);
            if i < n && !a.kept.is_null() {
                keep_update(a.kept, a.hidden, i, c, 1, acc[1][e]);
                keep_update(a.kept, a.hidden, i, c, 2, acc[2][e]);
            }
            if i < n {
                *a.s.add(i * h + c) = *a.s_mid.add(i * h + c) + acc[0][e];
                let v: [f32; 3] = core::array::from_fn(|x| *a.v_mid.add((i * 3 + x) * h + c));
                for x in 0..3 {
                    let mixed = (mx[3 * x] * v[0] + mx[3 * x + 1] * v[1]) + mx[3 * x + 2] * v[2];
                    *a.v.add((i * 3 + x) * h + c) = v[x] * acc[1][e] + mixed * acc[2][e];
                }
            }
        }
        ct += BLOCK_WARPS;
    }
}

/// Adjoint of `update_forward_tc`: from (gs, gv) of the block output to
/// (gs_mid, gv_mid) of 16 atoms.
#[inline(always)]
pub unsafe fn update_backward_tc(a: &UpdateBackArgs<FragmentLayer>) {
    let (h, n) = (a.hidden as usize, a.num_atoms as usize);
    let first = gpu::block_idx() * TILE_ROWS;
    let lane = gpu::lane_id();
    let tiles = h / 8;
    let shared = gpu::dynamic_shared_f32() as *mut SplitPair;
    // The hidden layer and (below) the gates: kept by the forward, or recomputed (the
    // same products, so the same values).
    let kept = !a.kept.is_null();
    let pre = if kept {
        let mut pre = [[[0.0f32; 4]; TILES_PER_GROUP]; MAX_GROUPS_PER_WARP];
        for (q, group) in pre.iter_mut().enumerate() {
            let (tiles, owned) = tile_group(q, h);
            if owned {
                for_each_entry(tiles, |j, e, row, c| {
                    group[j][e] = kept_update(a.kept, a.hidden, a.num_atoms, first + row, c, 0)
                });
            }
        }
        pre
    } else {
        update_hidden(a.s_mid, a.v_mid, &a.update_in, n, h, first, shared)
    };
    let (lda_h, lda_g) = (padded(h), padded(3 * h));
    let hidden = shared;
    let g_out = shared.add(TILE_ROWS * lda_h);
    let dsilu = g_out.add(TILE_ROWS * lda_g) as *mut f32;
    for q in 0..MAX_GROUPS_PER_WARP {
        let (tiles, owned) = tile_group(q, h);
        if owned {
            store(&pre[q], tiles, hidden, lda_h, |y, _| SplitPair::new(silu(y)));
            store(&pre[q], tiles, dsilu, lda_h, |y, _| silu_and_grad(y).1);
        }
    }
    gpu::sync_threads();
    // g1, g2 again; ∂E/∂[a | g1 | g2] into g_out, the direct paths v → v_mid into gv_mid.
    // (The same arithmetic as `gpu::update_backward`, written out twice on
    // purpose: one shared helper took this kernel from 80 to 104 registers and the
    // 256 × 24 batch from 1.71 to 1.82 ms, PERF.md session 6.)
    let mx = &a.mixing;
    let mut ct = gpu::warp_id();
    while ct < tiles {
        let gate_tiles = [ct + tiles, ct + 2 * tiles];
        let mut gate = [[0.0f32; 4]; 2];
        if kept {
            for_each_entry([ct], |_, e, row, c| {
                gate[0][e] = kept_update(a.kept, a.hidden, a.num_atoms, first + row, c, 1);
                gate[1][e] = kept_update(a.kept, a.hidden, a.num_atoms, first + row, c, 2);
            });
        } else {
            gate = start(a.update_out.bias, gate_tiles);
            warp_product::<2, 2>(&mut gate, hidden, lda_h, a.update_out.weight_t, h, gate_tiles);
        }
        for e in 0..4 {
            let (row, col) = accumulator_position(lane, e);
            let (i, c) = (first + row, 8 * ct + col);
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
                    *a.gv_mid.add((i * 3 + b) * h + c) = gv[b] * gate[0][e] + mt_gv * gate[1][e];
                }
            }
            *g_out.add(row * lda_g + c) = SplitPair::new(gs_out);
            *g_out.add(row * lda_g + h + c) = SplitPair::new(gg1);
            *g_out.add(row * lda_g + 2 * h + c) = SplitPair::new(gg2);
        }
        ct += BLOCK_WARPS;
    }
    gpu::sync_threads();
    // ∂E/∂hidden = g_out · L4 (as stored), times SiLU', over the hidden values (read
    // before this barrier by every warp, so free).
    for q in 0..MAX_GROUPS_PER_WARP {
        let (group, owned) = tile_group(q, h);
        if owned {
            let mut acc: Group = [[0.0f32; 4]; TILES_PER_GROUP];
            warp_product::<TILES_PER_GROUP, 4>(&mut acc, g_out, lda_g, a.update_out.weight, 3 * h, group);
            store(&acc, group, hidden, lda_h, |g, at| SplitPair::new(g * *dsilu.add(at)));
        }
    }
    gpu::sync_threads();
    // [∂E/∂s_mid | ∂E/∂‖v_mid‖] = ∂E/∂pre · L3 (as stored).
    let mut ct = gpu::warp_id();
    while ct < tiles {
        let in_tiles = [ct, ct + tiles];
        let mut acc = [[0.0f32; 4]; 2];
        warp_product::<2, 2>(&mut acc, hidden, lda_h, a.update_in.weight, h, in_tiles);
        for e in 0..4 {
            let (row, col) = accumulator_position(lane, e);
            let (i, c) = (first + row, 8 * ct + col);
            if i < n {
                *a.gs_mid.add(i * h + c) = *a.gs.add(i * h + c) + acc[0][e];
                let rows: [usize; 3] = core::array::from_fn(|x| (i * 3 + x) * h + c);
                let v = rows.map(|r| *a.v_mid.add(r));
                let norm = norm3(v[0], v[1], v[2]);
                // n = ‖v‖ has no epsilon: at n = 0 the subgradient 0 is used (as PyTorch does).
                if norm > 0.0 {
                    let scale = acc[1][e] / norm;
                    for x in 0..3 {
                        *a.gv_mid.add(rows[x]) += scale * v[x];
                    }
                }
            }
        }
        ct += BLOCK_WARPS;
    }
}

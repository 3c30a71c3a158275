//! Architecture 2 of MODEL.md (PaiNN as in SchNetPack): the forward pass and its
//! hand-written adjoint, as per-receiver and per-atom kernel bodies.
//!
//! Layouts as in [`crate::student`]: scalars `q` are `[atom][F]`, vectors `μ` are
//! `[atom][3][F]`, edges are grouped by receiver i (CSR) with sender `src[e]` = j and
//! `geom[e] = [r, d]`, r = R_j − R_i (+ image). The neighbour list is symmetric, so
//! what flows to the sender j of an edge is gathered by j over its own row (the
//! reverse edge has the same d, hence the same filter, and the opposite direction).
//!
//! Per block, the context x = Dense(F→3F)(SiLU(Dense(F→F)(q))) is a per-atom
//! quantity: it is computed once per atom and gathered at the senders, and its
//! adjoint ∂E/∂x is gathered per atom the same way before one per-atom backward
//! through the context network. The filter W(d) is recomputed per edge where it is
//! needed (K·3F multiply-adds), never stored.

pub mod args;
pub mod entries;
#[cfg(target_arch = "nvptx64")]
mod gpu;

use crate::math::{exp, sqrt};
use crate::nn::{dense, dense_grad_input, dense_no_bias, dot, silu_in_place, split_scratch as split};
use crate::radial::cosine_cutoff;

/// ε under the square root of ‖μV‖ (SchNetPack's default).
pub const NORM_EPSILON: f32 = 1e-8;

/// Weights of one block (interaction + mixing), each dense layer stored transposed
/// (`[in][out]`).
#[derive(Clone, Copy)]
pub struct PainnBlockParams<'a> {
    /// This block's filter: `filter_net` rows of the block (K → 3F), and bias.
    pub filter_t: &'a [f32],
    pub filter_b: &'a [f32],
    /// `interatomic_context_net.0` (F → F) and `.1` (F → 3F).
    pub context_in_t: &'a [f32],
    pub context_in_b: &'a [f32],
    pub context_out_t: &'a [f32],
    pub context_out_b: &'a [f32],
    /// `mu_channel_mix` (F → 2F, no bias).
    pub channel_mix_t: &'a [f32],
    /// `intraatomic_context_net.0` (2F → F) and `.1` (F → 3F).
    pub update_in_t: &'a [f32],
    pub update_in_b: &'a [f32],
    pub update_out_t: &'a [f32],
    pub update_out_b: &'a [f32],
}

/// Gaussian radial basis exp(−½(d − o_k)²/w_k²) and the cosine cutoff.
#[derive(Clone, Copy)]
pub struct PainnRadial<'a> {
    pub offsets: &'a [f32],
    pub widths: &'a [f32],
    pub cutoff: f32,
}

/// The readout F → F/2 (SiLU) → 1, weights transposed.
#[derive(Clone, Copy)]
pub struct PainnReadout<'a> {
    pub hidden_t: &'a [f32],
    pub hidden_b: &'a [f32],
    pub out_t: &'a [f32],
    pub out_b: f32,
}

/// Floats of scratch one thread needs for the per-edge work.
pub const fn edge_scratch_len(f: usize, k: usize) -> usize {
    2 * k + 12 * f
}

/// Floats of scratch one thread needs for the per-atom work.
pub const fn atom_scratch_len(f: usize) -> usize {
    MIXING_FORWARD_SCRATCH * f + 8 * f
}

/// The filter W(d) = (Wf·rbf(d) + b)·fc(d) of one edge (3F) and, when asked,
/// dW/dd. `e`, `de`: K floats of scratch.
#[inline(always)]
pub fn filter(
    p: &PainnBlockParams,
    radial: &PainnRadial,
    d: f32,
    e: &mut [f32],
    de: &mut [f32],
    w: &mut [f32],
    dw: Option<&mut [f32]>,
) {
    let (fc, dfc) = cosine_cutoff(d, radial.cutoff);
    for k in 0..e.len() {
        let inv_w2 = 1.0 / (radial.widths[k] * radial.widths[k]);
        let t = d - radial.offsets[k];
        e[k] = exp(-0.5 * t * t * inv_w2);
        de[k] = -t * inv_w2 * e[k];
    }
    dense(e, p.filter_t, p.filter_b, w);
    if let Some(dw) = dw {
        dense_no_bias(de, p.filter_t, dw);
        for c in 0..w.len() {
            dw[c] = dw[c] * fc + w[c] * dfc;
        }
    }
    for c in 0..w.len() {
        w[c] *= fc;
    }
}

/// dir = r / d (no epsilon, as SchNetPack).
#[inline(always)]
fn direction(g: &[f32; 4]) -> [f32; 3] {
    [g[0] / g[3], g[1] / g[3], g[2] / g[3]]
}

/// Context of one atom: x = Dense(F→3F)(SiLU(Dense(F→F)(q))).
pub fn context_atom(q: &[f32], p: &PainnBlockParams, scratch: &mut [f32], x: &mut [f32]) {
    let f = q.len();
    let [hidden] = split(scratch, [f]);
    dense(q, p.context_in_t, p.context_in_b, hidden);
    silu_in_place(hidden, None);
    dense(hidden, p.context_out_t, p.context_out_b, x);
}

/// gq += ∂(x·gx)/∂q: the adjoint of `context_atom`.
pub fn context_backward_atom(q: &[f32], gx: &[f32], p: &PainnBlockParams, scratch: &mut [f32], gq: &mut [f32]) {
    let f = q.len();
    let [hidden, dsilu, ghidden, gin] = split(scratch, [f, f, f, f]);
    dense(q, p.context_in_t, p.context_in_b, hidden);
    silu_in_place(hidden, Some(&mut *dsilu));
    dense_grad_input(gx, p.context_out_t, ghidden);
    for c in 0..f {
        ghidden[c] *= dsilu[c];
    }
    dense_grad_input(ghidden, p.context_in_t, gin);
    for c in 0..f {
        gq[c] += gin[c];
    }
}

/// Interaction for receiver i: q_out = q_i + Σ_j Wq∘xq_j,
/// μ_out = μ_i + Σ_j (WR∘xR_j ⊗ dir + Wμ∘xμ_j∘μ_j).
#[allow(clippy::too_many_arguments)]
pub fn message_row(
    i: usize,
    row: core::ops::Range<usize>,
    src: &[u32],
    geom: &[[f32; 4]],
    q: &[f32],
    mu: &[f32],
    x: &[f32],
    radial: &PainnRadial,
    p: &PainnBlockParams,
    scratch: &mut [f32],
    q_out: &mut [f32],
    mu_out: &mut [f32],
) {
    let f = q_out.len();
    let k = radial.offsets.len();
    let [e, de, w] = split(scratch, [k, k, 3 * f]);
    q_out.copy_from_slice(&q[i * f..(i + 1) * f]);
    mu_out.copy_from_slice(&mu[i * 3 * f..(i + 1) * 3 * f]);
    for edge in row {
        let g = &geom[edge];
        if g[3] > radial.cutoff {
            continue;
        }
        let j = src[edge] as usize;
        filter(p, radial, g[3], e, de, w, None);
        let dir = direction(g);
        let x_j = &x[j * 3 * f..(j + 1) * 3 * f];
        for c in 0..f {
            q_out[c] += w[c] * x_j[c];
        }
        for a in 0..3 {
            let mu_j = &mu[(j * 3 + a) * f..(j * 3 + a + 1) * f];
            let out = &mut mu_out[a * f..(a + 1) * f];
            for c in 0..f {
                out[c] += w[f + c] * x_j[f + c] * dir[a] + w[2 * f + c] * x_j[2 * f + c] * mu_j[c];
            }
        }
    }
}

/// Adjoint of `message_row`, evaluated for atom i over its own row, from
/// ∂E/∂(q_mid, μ_mid):
/// - `gx_i` = ∂E/∂x_i (what atom i sent, gathered through the reverse edges);
/// - `gmu_in` = ∂E/∂μ_i of the block input (residual + what i sent);
/// - `edge_grad[e] += ∂E/∂r_e` for the edges of the row.
#[allow(clippy::too_many_arguments)]
pub fn message_backward_row(
    i: usize,
    row: core::ops::Range<usize>,
    src: &[u32],
    geom: &[[f32; 4]],
    mu: &[f32],
    x: &[f32],
    gq_mid: &[f32],
    gmu_mid: &[f32],
    radial: &PainnRadial,
    p: &PainnBlockParams,
    scratch: &mut [f32],
    gx_i: &mut [f32],
    gmu_in: &mut [f32],
    edge_grad: &mut [[f32; 3]],
) {
    let f = gx_i.len() / 3;
    let k = radial.offsets.len();
    let [e, de, w, dw] = split(scratch, [k, k, 3 * f, 3 * f]);
    let gq_i = &gq_mid[i * f..(i + 1) * f];
    let gmu_i = &gmu_mid[i * 3 * f..(i + 1) * 3 * f];
    let x_i = &x[i * 3 * f..(i + 1) * 3 * f];
    let mu_i = &mu[i * 3 * f..(i + 1) * 3 * f];
    gx_i.fill(0.0);
    gmu_in.copy_from_slice(gmu_i);
    let first = row.start;
    for edge in row {
        let g = &geom[edge];
        if g[3] > radial.cutoff {
            continue;
        }
        let j = src[edge] as usize;
        filter(p, radial, g[3], e, de, w, Some(&mut *dw));
        let dir = direction(g);
        let x_j = &x[j * 3 * f..(j + 1) * 3 * f];
        let gq_j = &gq_mid[j * f..(j + 1) * f];
        let mut gd = 0.0f32;
        let mut gdir = [0.0f32; 3];
        for c in 0..f {
            // Edge j→i: q_i gets Wq∘xq_j. Reverse edge i→j: q_j gets Wq∘xq_i.
            gd += gq_i[c] * x_j[c] * dw[c];
            gx_i[c] += gq_j[c] * w[c];
        }
        for a in 0..3 {
            let mu_j = &mu[(j * 3 + a) * f..(j * 3 + a + 1) * f];
            let gmu_ia = &gmu_i[a * f..(a + 1) * f];
            let gmu_ja = &gmu_mid[(j * 3 + a) * f..(j * 3 + a + 1) * f];
            let mu_ia = &mu_i[a * f..(a + 1) * f];
            let gin = &mut gmu_in[a * f..(a + 1) * f];
            let mut gdir_a = 0.0f32;
            for c in 0..f {
                let (wr, wm) = (w[f + c], w[2 * f + c]);
                // Edge j→i.
                let xr = x_j[f + c];
                gdir_a += gmu_ia[c] * wr * xr;
                gd += gmu_ia[c] * (xr * dir[a] * dw[f + c] + x_j[2 * f + c] * mu_j[c] * dw[2 * f + c]);
                // Reverse edge i→j (direction −dir).
                gx_i[f + c] -= gmu_ja[c] * dir[a] * wr;
                gx_i[2 * f + c] += gmu_ja[c] * mu_ia[c] * wm;
                gin[c] += gmu_ja[c] * wm * x_i[2 * f + c];
            }
            gdir[a] = gdir_a;
        }
        let gr = crate::geometry::edge_gradient([g[0], g[1], g[2]], g[3], gd, gdir, 0.0);
        let acc = &mut edge_grad[edge - first];
        for a in 0..3 {
            acc[a] += gr[a];
        }
    }
}

/// Forward intermediates of the mixing step that its adjoint needs again.
struct MixingForward<'a> {
    /// [μV | μW] per Cartesian row: `[3][2F]`.
    mixed: &'a [f32],
    /// ‖μV‖ (F).
    norm: &'a [f32],
    dsilu: &'a [f32],
    /// [a | b | c] (3F).
    out: &'a [f32],
}

/// Multiples of F of scratch `mixing_forward` uses.
const MIXING_FORWARD_SCRATCH: usize = 13;

fn mixing_forward<'s>(q: &[f32], mu: &[f32], p: &PainnBlockParams, scratch: &'s mut [f32]) -> MixingForward<'s> {
    let f = q.len();
    let [mixed, input, hidden, dsilu, out] = split(scratch, [6 * f, 2 * f, f, f, 3 * f]);
    for a in 0..3 {
        dense_no_bias(&mu[a * f..(a + 1) * f], p.channel_mix_t, &mut mixed[a * 2 * f..(a + 1) * 2 * f]);
    }
    input[..f].copy_from_slice(q);
    for c in 0..f {
        let v = |a: usize| mixed[a * 2 * f + c];
        input[f + c] = sqrt((v(0) * v(0) + v(1) * v(1)) + v(2) * v(2) + NORM_EPSILON);
    }
    dense(input, p.update_in_t, p.update_in_b, hidden);
    silu_in_place(hidden, Some(&mut *dsilu));
    dense(hidden, p.update_out_t, p.update_out_b, out);
    MixingForward { mixed, norm: &input[f..], dsilu, out }
}

/// Mixing step of one atom: [μV | μW] = U μ, [a|b|c] = MLP([q ‖ ‖μV‖]),
/// q_out = q + a + c∘⟨μV, μW⟩, μ_out = μ + b∘μW.
pub fn mixing_atom(
    q: &[f32],
    mu: &[f32],
    p: &PainnBlockParams,
    scratch: &mut [f32],
    q_out: &mut [f32],
    mu_out: &mut [f32],
) {
    let f = q.len();
    let m = mixing_forward(q, mu, p, scratch);
    for c in 0..f {
        let v = |a: usize| m.mixed[a * 2 * f + c];
        let wv = |a: usize| m.mixed[a * 2 * f + f + c];
        let inner = (v(0) * wv(0) + v(1) * wv(1)) + v(2) * wv(2);
        q_out[c] = q[c] + m.out[c] + m.out[2 * f + c] * inner;
        for a in 0..3 {
            mu_out[a * f + c] = mu[a * f + c] + m.out[f + c] * wv(a);
        }
    }
}

/// Adjoint of `mixing_atom`: from ∂E/∂q_out and ∂E/∂μ_out (None: μ_out does not reach
/// the energy, as after the last block) to ∂E/∂q and ∂E/∂μ.
#[allow(clippy::too_many_arguments)]
pub fn mixing_backward_atom(
    q: &[f32],
    mu: &[f32],
    gq_out: &[f32],
    gmu_out: Option<&[f32]>,
    p: &PainnBlockParams,
    scratch: &mut [f32],
    gq: &mut [f32],
    gmu: &mut [f32],
) {
    let f = q.len();
    let (forward_scratch, rest) = scratch.split_at_mut(MIXING_FORWARD_SCRATCH * f);
    let [g_out, g_hidden, g_input, g_mixed] = split(rest, [3 * f, f, 2 * f, 2 * f]);
    let m = mixing_forward(q, mu, p, forward_scratch);
    let zero = [0.0f32; 3];
    // ∂E/∂[a | b | c].
    for c in 0..f {
        let v = |a: usize| m.mixed[a * 2 * f + c];
        let wv = |a: usize| m.mixed[a * 2 * f + f + c];
        let inner = (v(0) * wv(0) + v(1) * wv(1)) + v(2) * wv(2);
        let gmu_c = gmu_out.map_or(zero, |g| [g[c], g[f + c], g[2 * f + c]]);
        g_out[c] = gq_out[c];
        g_out[f + c] = (gmu_c[0] * wv(0) + gmu_c[1] * wv(1)) + gmu_c[2] * wv(2);
        g_out[2 * f + c] = gq_out[c] * inner;
    }
    dense_grad_input(g_out, p.update_out_t, g_hidden);
    for c in 0..f {
        g_hidden[c] *= m.dsilu[c];
    }
    dense_grad_input(g_hidden, p.update_in_t, g_input);
    for c in 0..f {
        gq[c] = gq_out[c] + g_input[c];
    }
    for a in 0..3 {
        for c in 0..f {
            let (v, wv) = (m.mixed[a * 2 * f + c], m.mixed[a * 2 * f + f + c]);
            let g_inner = gq_out[c] * m.out[2 * f + c];
            let gmu_ac = gmu_out.map_or(0.0, |g| g[a * f + c]);
            // μV feeds the inner product and the norm; μW the inner product and μ_out.
            g_mixed[c] = g_inner * wv + g_input[f + c] * v / m.norm[c];
            g_mixed[f + c] = g_inner * v + gmu_ac * m.out[f + c];
        }
        let row = &mut gmu[a * f..(a + 1) * f];
        dense_grad_input(g_mixed, p.channel_mix_t, row);
        if let Some(g) = gmu_out {
            for c in 0..f {
                row[c] += g[a * f + c];
            }
        }
    }
}

/// Energy of one atom from its final scalars (without reference energies).
pub fn readout_atom(q: &[f32], p: &PainnReadout, scratch: &mut [f32]) -> f32 {
    let f = q.len();
    let [hidden] = split(scratch, [f / 2]);
    dense(q, p.hidden_t, p.hidden_b, hidden);
    silu_in_place(hidden, None);
    p.out_b + dot(hidden, p.out_t)
}

/// ∂E_atom/∂q for one atom.
pub fn readout_backward_atom(q: &[f32], p: &PainnReadout, scratch: &mut [f32], gq: &mut [f32]) {
    let f = q.len();
    let [hidden, dsilu] = split(scratch, [f / 2, f / 2]);
    dense(q, p.hidden_t, p.hidden_b, hidden);
    silu_in_place(hidden, Some(&mut *dsilu));
    for c in 0..f / 2 {
        dsilu[c] *= p.out_t[c];
    }
    dense_grad_input(dsilu, p.hidden_t, gq);
}

//! Architecture 1 of MODEL.md (`mlff_distiller.StudentForceField`): the forward pass
//! and its hand-written adjoint, as per-receiver and per-atom kernel bodies.
//!
//! Layouts: scalars `s` are `[atom][H]`, vectors `v` are `[atom][3][H]` (Cartesian
//! component, then channel), edges are grouped by receiver i (CSR) with sender
//! `src[e]` = j and geometry `geom[e] = [r_x, r_y, r_z, d]`, r = R_j − R_i (+ image).
//!
//! Nothing per edge is stored between the forward and the backward pass: the filter
//! φ(d) is recomputed where it is needed, because 3H floats per edge per block do not
//! fit in memory at scale while the filter costs only ~(K+3H)·H multiply-adds.
//! The neighbour list is symmetric (every j→i with shift S has i→j with −S and the
//! same d, bit for bit), so contributions that flow to the *sender* j of an edge are
//! gathered by j over its own row instead of scattered with atomics.

pub mod args;
pub mod entries;
#[cfg(target_arch = "nvptx64")]
mod gpu;
#[cfg(target_arch = "nvptx64")]
mod gpu_tensor_core;
pub mod tensor_core;

use crate::nn::{dense, dense_grad_input, dot, silu_in_place, split_scratch as split};
use crate::radial::gaussian_features;

/// Weights of one interaction block, each `Linear` stored transposed (`[in][out]`).
#[derive(Clone, Copy)]
pub struct InteractionParams<'a> {
    /// `message.rbf_to_scalar.0`: K → H.
    pub filter_in_t: &'a [f32],
    pub filter_in_b: &'a [f32],
    /// `message.rbf_to_scalar.2`: H → 3H.
    pub filter_out_t: &'a [f32],
    pub filter_out_b: &'a [f32],
    /// `update.update_mlp.0`: 2H → H.
    pub update_in_t: &'a [f32],
    pub update_in_b: &'a [f32],
    /// `update.update_mlp.2`: H → 3H.
    pub update_out_t: &'a [f32],
    pub update_out_b: &'a [f32],
    /// `update.mixing_matrix`, row-major: (M v)[a] = Σ_b M[a][b] v[b].
    pub mixing: [f32; 9],
}

/// The energy head: H → H/2 → H/4 → 1, SiLU between layers, weights transposed.
#[derive(Clone, Copy)]
pub struct ReadoutParams<'a> {
    pub weights_t: [&'a [f32]; 3],
    pub biases: [&'a [f32]; 3],
}

/// Radial basis: Gaussian centres and widths, and the cutoff radius.
#[derive(Clone, Copy)]
pub struct RadialParams<'a> {
    pub centers: &'a [f32],
    pub widths: &'a [f32],
    pub cutoff: f32,
}

impl RadialParams<'_> {
    pub fn num_rbf(&self) -> usize {
        self.centers.len()
    }
}

/// Floats of scratch one thread needs for the per-edge work (`message_row`,
/// `message_backward_row`).
pub const fn edge_scratch_len(h: usize, k: usize) -> usize {
    3 * k + 10 * h
}

/// Floats of scratch one thread needs for the per-atom work (update, readout).
pub const fn atom_scratch_len(h: usize) -> usize {
    (UPDATE_FORWARD_SCRATCH + 4) * h
}

/// The filter φ = L2(SiLU(L1(e))) of one edge (3H), leaving SiLU(L1 e) in `hidden`
/// and, when asked, SiLU' in `dsilu`.
#[inline(always)]
pub fn filter(p: &InteractionParams, e: &[f32], hidden: &mut [f32], dsilu: Option<&mut [f32]>, phi: &mut [f32]) {
    dense(e, p.filter_in_t, p.filter_in_b, hidden);
    silu_in_place(hidden, dsilu);
    dense(hidden, p.filter_out_t, p.filter_out_b, phi);
}

#[inline(always)]
fn unit_vector(g: &[f32; 4]) -> [f32; 3] {
    let de = g[3] + crate::geometry::UNIT_EPSILON;
    [g[0] / de, g[1] / de, g[2] / de]
}

/// Message step for receiver i over its edges `row` (a range into `src`/`geom`):
/// s_out = s_i + Σ_j s_j∘φs, v_out = v_i + Σ_j (v_j∘φv1 + u⊗φv2).
#[allow(clippy::too_many_arguments)]
pub fn message_row(
    i: usize,
    row: core::ops::Range<usize>,
    src: &[u32],
    geom: &[[f32; 4]],
    s: &[f32],
    v: &[f32],
    radial: &RadialParams,
    p: &InteractionParams,
    scratch: &mut [f32],
    s_out: &mut [f32],
    v_out: &mut [f32],
) {
    let h = s_out.len();
    let k = radial.num_rbf();
    let [e, hidden, phi] = split(scratch, [k, h, 3 * h]);
    s_out.copy_from_slice(&s[i * h..(i + 1) * h]);
    v_out.copy_from_slice(&v[i * 3 * h..(i + 1) * 3 * h]);
    for edge in row {
        let j = src[edge] as usize;
        let g = &geom[edge];
        gaussian_features(g[3], radial.cutoff, radial.centers, radial.widths, e, None);
        filter(p, e, hidden, None, phi);
        let (phi_s, phi_v) = phi.split_at(h);
        let (phi_v1, phi_v2) = phi_v.split_at(h);
        let s_j = &s[j * h..(j + 1) * h];
        for c in 0..h {
            s_out[c] += s_j[c] * phi_s[c];
        }
        let u = unit_vector(g);
        for x in 0..3 {
            let v_j = &v[(j * 3 + x) * h..(j * 3 + x + 1) * h];
            let out = &mut v_out[x * h..(x + 1) * h];
            for c in 0..h {
                out[c] += v_j[c] * phi_v1[c] + u[x] * phi_v2[c];
            }
        }
    }
}

/// Forward intermediates of the update step that its adjoint needs again.
struct UpdateForward<'a> {
    norm: &'a [f32],
    dsilu: &'a mut [f32],
    /// [a | g1 | g2]
    out: &'a mut [f32],
    /// M v (3H)
    mixed: &'a mut [f32],
}

/// Multiples of H of scratch `update_forward` uses.
const UPDATE_FORWARD_SCRATCH: usize = 10;

fn update_forward<'s>(
    s_mid: &[f32],
    v_mid: &[f32],
    p: &InteractionParams,
    scratch: &'s mut [f32],
) -> UpdateForward<'s> {
    let h = s_mid.len();
    let [input, hidden, dsilu, out, mixed] = split(scratch, [2 * h, h, h, 3 * h, 3 * h]);
    input[..h].copy_from_slice(s_mid);
    for c in 0..h {
        let (a, b, z) = (v_mid[c], v_mid[h + c], v_mid[2 * h + c]);
        input[h + c] = crate::math::sqrt((a * a + b * b) + z * z);
    }
    dense(input, p.update_in_t, p.update_in_b, hidden);
    silu_in_place(hidden, Some(&mut *dsilu));
    dense(hidden, p.update_out_t, p.update_out_b, out);
    let m = &p.mixing;
    for x in 0..3 {
        for c in 0..h {
            mixed[x * h + c] = (m[3 * x] * v_mid[c] + m[3 * x + 1] * v_mid[h + c]) + m[3 * x + 2] * v_mid[2 * h + c];
        }
    }
    let norm = &input[h..];
    UpdateForward { norm, dsilu, out, mixed }
}

/// Update step of one atom: [a|g1|g2] = L4(SiLU(L3([s' ‖ ‖v'‖]))),
/// s'' = s' + a, v'' = v'∘g1 + (M v')∘g2.
pub fn update_atom(
    s_mid: &[f32],
    v_mid: &[f32],
    p: &InteractionParams,
    scratch: &mut [f32],
    s_out: &mut [f32],
    v_out: &mut [f32],
) {
    let h = s_mid.len();
    let f = update_forward(s_mid, v_mid, p, scratch);
    let (a, g) = f.out.split_at(h);
    let (g1, g2) = g.split_at(h);
    for c in 0..h {
        s_out[c] = s_mid[c] + a[c];
    }
    for x in 0..3 {
        for c in 0..h {
            v_out[x * h + c] = v_mid[x * h + c] * g1[c] + f.mixed[x * h + c] * g2[c];
        }
    }
}

/// Adjoint of `update_atom`: from ∂E/∂s'' and ∂E/∂v'' (None: v'' does not reach the
/// energy, as after the last block) to ∂E/∂s' and ∂E/∂v'.
#[allow(clippy::too_many_arguments)]
pub fn update_backward_atom(
    s_mid: &[f32],
    v_mid: &[f32],
    gs_out: &[f32],
    gv_out: Option<&[f32]>,
    p: &InteractionParams,
    scratch: &mut [f32],
    gs_mid: &mut [f32],
    gv_mid: &mut [f32],
) {
    let h = s_mid.len();
    let (forward_scratch, rest) = scratch.split_at_mut(UPDATE_FORWARD_SCRATCH * h);
    let [g_out, g_hidden] = split(rest, [3 * h, h]);
    let f = update_forward(s_mid, v_mid, p, forward_scratch);
    let (g1, g2) = f.out[h..].split_at(h);
    // ∂E/∂[a | g1 | g2], and the direct paths from v'' to v'.
    g_out[..h].copy_from_slice(gs_out);
    match gv_out {
        Some(gv) => {
            let m = &p.mixing;
            for c in 0..h {
                let (mut gg1, mut gg2) = (0.0f32, 0.0f32);
                for x in 0..3 {
                    gg1 += gv[x * h + c] * v_mid[x * h + c];
                    gg2 += gv[x * h + c] * f.mixed[x * h + c];
                }
                g_out[h + c] = gg1;
                g_out[2 * h + c] = gg2;
                for b in 0..3 {
                    // (Mᵀ gv)[b] = Σ_a M[a][b] gv[a]
                    let mt_gv = (m[b] * gv[c] + m[3 + b] * gv[h + c]) + m[6 + b] * gv[2 * h + c];
                    gv_mid[b * h + c] = gv[b * h + c] * g1[c] + mt_gv * g2[c];
                }
            }
        }
        None => {
            g_out[h..].fill(0.0);
            gv_mid.fill(0.0);
        }
    }
    dense_grad_input(g_out, p.update_out_t, g_hidden);
    for c in 0..h {
        g_hidden[c] *= f.dsilu[c];
    }
    // ∂E/∂[s' ‖ n] = L3ᵀ g_hidden: input rows 0..H are s' (plus the residual), H..2H are n.
    for c in 0..h {
        gs_mid[c] = gs_out[c] + dot(&p.update_in_t[c * h..(c + 1) * h], g_hidden);
    }
    // n = ‖v'‖ has no epsilon: at n = 0 the subgradient 0 is used (as PyTorch does).
    for c in 0..h {
        let n = f.norm[c];
        if n > 0.0 {
            let scale = dot(&p.update_in_t[(h + c) * h..(h + c + 1) * h], g_hidden) / n;
            for x in 0..3 {
                gv_mid[x * h + c] += scale * v_mid[x * h + c];
            }
        }
    }
}

/// Adjoint of `message_row`, evaluated for atom i over its own row:
/// - `gs_in`, `gv_in`: ∂E/∂(s_i, v_i) of the block input: the residual, plus what
///   atom i sent to its neighbours (gathered through the reverse edges);
/// - `edge_grad[e] += ∂E/∂r_e` for the edges of the row (r = R_j − R_i + shift).
#[allow(clippy::too_many_arguments)]
pub fn message_backward_row(
    i: usize,
    row: core::ops::Range<usize>,
    src: &[u32],
    geom: &[[f32; 4]],
    s: &[f32],
    v: &[f32],
    gs_mid: &[f32],
    gv_mid: &[f32],
    radial: &RadialParams,
    p: &InteractionParams,
    scratch: &mut [f32],
    gs_in: &mut [f32],
    gv_in: &mut [f32],
    edge_grad: &mut [[f32; 3]],
) {
    let h = gs_in.len();
    let k = radial.num_rbf();
    let [e, de, ge, hidden, dsilu, phi, gphi, ghidden] = split(scratch, [k, k, k, h, h, 3 * h, 3 * h, h]);
    let gs_i = &gs_mid[i * h..(i + 1) * h];
    let gv_i = &gv_mid[i * 3 * h..(i + 1) * 3 * h];
    gs_in.copy_from_slice(gs_i);
    gv_in.copy_from_slice(gv_i);
    let first = row.start;
    for edge in row {
        let j = src[edge] as usize;
        let g = &geom[edge];
        gaussian_features(g[3], radial.cutoff, radial.centers, radial.widths, e, Some(&mut *de));
        filter(p, e, hidden, Some(&mut *dsilu), phi);
        let (phi_s, phi_v) = phi.split_at(h);
        let (phi_v1, phi_v2) = phi_v.split_at(h);
        let u = unit_vector(g);
        let s_j = &s[j * h..(j + 1) * h];
        let gs_j = &gs_mid[j * h..(j + 1) * h];
        let (gphi_s, gphi_v) = gphi.split_at_mut(h);
        let (gphi_v1, gphi_v2) = gphi_v.split_at_mut(h);
        // Atom i as a sender: the reverse edge i→j carries the same φ.
        for c in 0..h {
            gs_in[c] += gs_j[c] * phi_s[c];
            gphi_s[c] = gs_i[c] * s_j[c];
        }
        gphi_v1.fill(0.0);
        gphi_v2.fill(0.0);
        let mut gu = [0.0f32; 3];
        for x in 0..3 {
            let v_j = &v[(j * 3 + x) * h..(j * 3 + x + 1) * h];
            let gv_j = &gv_mid[(j * 3 + x) * h..(j * 3 + x + 1) * h];
            let gv_ix = &gv_i[x * h..(x + 1) * h];
            let out = &mut gv_in[x * h..(x + 1) * h];
            for c in 0..h {
                out[c] += gv_j[c] * phi_v1[c];
                gphi_v1[c] += gv_ix[c] * v_j[c];
                gphi_v2[c] += gv_ix[c] * u[x];
            }
            gu[x] = dot(gv_ix, phi_v2);
        }
        // Through the filter network to e(d), then to d.
        dense_grad_input(gphi, p.filter_out_t, ghidden);
        for c in 0..h {
            ghidden[c] *= dsilu[c];
        }
        dense_grad_input(ghidden, p.filter_in_t, ge);
        let gd = dot(ge, de);
        let gr = crate::geometry::edge_gradient([g[0], g[1], g[2]], g[3], gd, gu, crate::geometry::UNIT_EPSILON);
        let acc = &mut edge_grad[edge - first];
        for x in 0..3 {
            acc[x] += gr[x];
        }
    }
}

/// Energy of one atom from its final scalars.
pub fn readout_atom(s: &[f32], p: &ReadoutParams, scratch: &mut [f32]) -> f32 {
    let h = s.len();
    let [l1, l2, l3] = split(scratch, [h / 2, h / 4, 1]);
    dense(s, p.weights_t[0], p.biases[0], l1);
    silu_in_place(l1, None);
    dense(l1, p.weights_t[1], p.biases[1], l2);
    silu_in_place(l2, None);
    dense(l2, p.weights_t[2], p.biases[2], l3);
    l3[0]
}

/// ∂E_atom/∂s for one atom.
pub fn readout_backward_atom(s: &[f32], p: &ReadoutParams, scratch: &mut [f32], gs: &mut [f32]) {
    let h = s.len();
    let [l1, d1, l2, d2, g2, g1] = split(scratch, [h / 2, h / 2, h / 4, h / 4, h / 4, h / 2]);
    dense(s, p.weights_t[0], p.biases[0], l1);
    silu_in_place(l1, Some(&mut *d1));
    dense(l1, p.weights_t[1], p.biases[1], l2);
    silu_in_place(l2, Some(&mut *d2));
    // The last layer is H/4 → 1: its input gradient is its weight column.
    for c in 0..h / 4 {
        g2[c] = p.weights_t[2][c] * d2[c];
    }
    dense_grad_input(g2, p.weights_t[1], g1);
    for c in 0..h / 2 {
        g1[c] *= d1[c];
    }
    dense_grad_input(g1, p.weights_t[0], gs);
}

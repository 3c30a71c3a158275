//! Architecture 2 (PaiNN as in SchNetPack) as one fused kernel per structure: the math
//! of [`crate::painn`] with the filter W(d) from the Hermite table of
//! [`crate::filter_table`] and dir = r/d with no epsilon (as the layered GPU engine,
//! `gpu_painn`), run by a [`Team`].
//!
//! Work split as the student's ([`super::student`]): pair and atom phases are strided
//! over the team's threads; edge passes run one warp per receiver row with lanes over
//! channels (per-edge sums over the channels are warp sums); dense layers run one
//! thread per (output, tile of `ATOM_TILE` atoms). The channel mix U acts on each
//! Cartesian row of μ alone, so it is a dense layer over 3N rows of F channels.
//!
//! Per block the forward keeps what the adjoint needs (the context network's
//! pre-activation and output x, [μV | μW], the mixing network's pre-activation and
//! output [a | b | c]), so the adjoint recomputes nothing but ‖μV‖.
//!
//! Each phase is its own (not inlined) function, so ptxas allocates registers per
//! phase (see the student's module comment).

use super::dynamics::{integrate, Trajectory};
use super::pairs::{edge_basis, fill, gather_forces, is_edge, PairSlots};
use super::student::FusedLinear;
use super::team::{items, lane_chunks, warp_rows, Team};
use super::{dense_atoms, padded_atoms, Dense};
use crate::filter_table::{interpolate, knots};
use crate::geometry::edge_gradient;
use crate::math::{fma, silu, silu_and_grad, sqrt};
use crate::md::Integrator;
use crate::painn::NORM_EPSILON;

/// PaiNN's unit vector has no epsilon: dir = r / d.
const DIRECTION_EPSILON: f32 = 0.0;

/// One PaiNN block: its filter table, interaction (context) and mixing layers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FusedPainnBlock {
    /// Hermite table of W(d) (`filter_table::table_len(F)` floats).
    pub table: *const f32,
    /// `interatomic_context_net.0` (F → F) and `.1` (F → 3F).
    pub context_in: FusedLinear,
    pub context_out: FusedLinear,
    /// `mu_channel_mix` (F → 2F; it has no bias, the kernel reads none).
    pub channel_mix: FusedLinear,
    /// `intraatomic_context_net.0` (2F → F) and `.1` (F → 3F).
    pub update_in: FusedLinear,
    pub update_out: FusedLinear,
}

/// Arguments of the fused PaiNN kernels (`evaluate`, `md`), one block per structure.
/// The batch and MD fields mean what they mean in `FusedStudentArgs`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FusedPainnArgs {
    /// `num_blocks` blocks.
    pub blocks: *const FusedPainnBlock,
    /// The readout: F → F/2 (SiLU) → 1.
    pub readout: [FusedLinear; 2],
    /// `[max_z + 1][F]`.
    pub embedding: *const f32,
    /// Per-element energy offsets `[max_z + 1]` (SchNetPack's mean plus the atomref),
    /// or null.
    pub atom_offsets: *const f32,
    /// Atoms of structure s: `offsets[s]..offsets[s + 1]` of the per-atom arrays.
    pub offsets: *const u32,
    /// Float offset of structure s's scratch region (`PainnLayout::floats`).
    pub scratch_offsets: *const u64,
    pub numbers: *const u32,
    pub positions: *mut [f32; 3],
    pub forces: *mut [f32; 3],
    pub atom_energies: *mut f32,
    /// Per structure: E (f64) and the `fault` bits.
    pub energies: *mut f64,
    pub faults: *mut u32,
    pub scratch: *mut f32,
    /// MD (`md` only): velocities (Å/fs), masses (amu), the integrator, and per
    /// structure the step at which a fault stopped it.
    pub velocities: *mut [f32; 3],
    pub masses: *const f32,
    pub fault_steps: *mut u64,
    /// Per atom: the kinetic energy the thermostat added (eV), accumulated; or null.
    pub heat: *mut f64,
    pub integrator: Integrator,
    /// Step number of the first step of this launch (the thermostat's noise counter).
    pub first_step: u64,
    pub steps: u32,
    pub num_structures: u32,
    pub num_blocks: u32,
    /// F, the feature channels.
    pub features: u32,
    pub cutoff: f32,
    /// Knots per Å of the filter tables.
    pub table_inv_h: f32,
    /// Nonzero: compute forces (the adjoint) too.
    pub want_forces: u32,
    pub pad: u32,
}

// SAFETY: #[repr(C)], plain values and device addresses only.
unsafe impl crate::kernel::KernelArgs for FusedPainnArgs {}

/// Where each array of one structure lives in its scratch region (offsets in floats).
/// Per-atom arrays are `[atom][channels]` with `padded_atoms(n)` rows (vectors μ:
/// `[atom][3][F]`, which is also 3·`padded_atoms(n)` rows of F, enough for a dense
/// layer over the 3n Cartesian rows); pair arrays are `[i][j]` with `n` columns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PainnLayout {
    pub atoms: usize,
    pub features: usize,
    /// `[r, d]` per pair, then ∂E/∂r per pair.
    pub geom: usize,
    pub edge_grad: usize,
    /// Block t's input q (NF) then μ (3NF), t = 0..=T (T: the final state).
    pub states: usize,
    /// Per block, kept for the adjoint (`KEPT_PER_BLOCK` NF each): the context
    /// network's pre-activation (NF) and x = [xq | xR | xμ] (3NF), [μV | μW] per
    /// Cartesian row (6NF), the mixing network's pre-activation (NF) and [a | b | c]
    /// (3NF).
    pub kept: usize,
    /// Work arrays: q_mid, μ_mid (4NF), a hidden activation (NF), the mixing input
    /// [q_mid ‖ ‖μV‖] (2NF).
    pub mid: usize,
    pub hidden: usize,
    pub update_input: usize,
    /// Readout: pre-activation and activation (N·F/2 each), atom energies (N), the
    /// adjoint of the pre-activation (N·F/2).
    pub readout: usize,
    /// Gradients: two (gq, gμ) pairs that alternate (4NF each), ∂E/∂x (3NF),
    /// ∂E/∂[a | b | c] (3NF), ∂E/∂hidden (NF), ∂E/∂input (2NF), ∂E/∂[μV | μW] (6NF).
    pub grads: usize,
    pub floats: usize,
}

/// Floats of the kept arrays of one block, in units of NF.
const KEPT_PER_BLOCK: usize = 14;

/// One block's kept arrays.
struct Kept {
    context_pre: *mut f32,
    x: *mut f32,
    mixed: *mut f32,
    update_pre: *mut f32,
    update_out: *mut f32,
}

impl PainnLayout {
    pub const fn new(atoms: usize, features: usize, blocks: usize) -> Self {
        let rows = padded_atoms(atoms);
        let nf = rows * features;
        let pairs = atoms * atoms;
        let geom = 0;
        let edge_grad = geom + 4 * pairs;
        let states = edge_grad + 3 * pairs;
        let kept = states + (blocks + 1) * 4 * nf;
        let mid = kept + blocks * KEPT_PER_BLOCK * nf;
        let hidden = mid + 4 * nf;
        let update_input = hidden + nf;
        let readout = update_input + 2 * nf;
        let grads = readout + 3 * (rows * features / 2) + rows;
        let floats = grads + 2 * 4 * nf + 3 * nf + 3 * nf + nf + 2 * nf + 6 * nf;
        PainnLayout {
            atoms,
            features,
            geom,
            edge_grad,
            states,
            kept,
            mid,
            hidden,
            update_input,
            readout,
            grads,
            floats,
        }
    }

    fn nf(&self) -> usize {
        padded_atoms(self.atoms) * self.features
    }
    fn state(&self, t: usize) -> (usize, usize) {
        let at = self.states + t * 4 * self.nf();
        (at, at + self.nf())
    }
    /// Block t's kept arrays: context pre-activation, x, [μV | μW], mixing
    /// pre-activation, [a | b | c].
    fn kept(&self, t: usize) -> [usize; 5] {
        let nf = self.nf();
        let at = self.kept + t * KEPT_PER_BLOCK * nf;
        [at, at + nf, at + 4 * nf, at + 10 * nf, at + 11 * nf]
    }
    /// Readout arrays: pre-activation, activation, atom energies, and the adjoint of
    /// the pre-activation.
    fn readout_arrays(&self) -> [usize; 4] {
        let half = padded_atoms(self.atoms) * self.features / 2;
        let r = self.readout;
        [r, r + half, r + 2 * half, r + 2 * half + padded_atoms(self.atoms)]
    }
    /// The alternating gradient pairs (gq, gμ).
    fn grad_pair(&self, k: usize) -> (usize, usize) {
        let at = self.grads + k * 4 * self.nf();
        (at, at + self.nf())
    }
    /// ∂E/∂x, ∂E/∂[a | b | c], ∂E/∂hidden, ∂E/∂input, ∂E/∂[μV | μW].
    fn grad_work(&self) -> [usize; 5] {
        let nf = self.nf();
        let at = self.grads + 8 * nf;
        [at, at + 3 * nf, at + 6 * nf, at + 7 * nf, at + 9 * nf]
    }
}

/// One structure's view of the arguments.
struct Structure<'a> {
    a: &'a FusedPainnArgs,
    /// First atom in the batch arrays, atom count, and features.
    start: usize,
    n: usize,
    f: usize,
    layout: PainnLayout,
    base: *mut f32,
    pairs: PairSlots,
}

impl Structure<'_> {
    #[inline(always)]
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        self.base.add(offset)
    }
    #[inline(always)]
    unsafe fn block(&self, t: usize) -> &FusedPainnBlock {
        &*self.a.blocks.add(t)
    }
    unsafe fn state(&self, t: usize) -> (*mut f32, *mut f32) {
        let (q, mu) = self.layout.state(t);
        (self.at(q), self.at(mu))
    }
    unsafe fn kept(&self, t: usize) -> Kept {
        let [context_pre, x, mixed, update_pre, update_out] = self.layout.kept(t).map(|o| self.at(o));
        Kept { context_pre, x, mixed, update_pre, update_out }
    }
    unsafe fn mid(&self) -> (*mut f32, *mut f32) {
        let at = self.layout.mid;
        (self.at(at), self.at(at + padded_atoms(self.n) * self.f))
    }
    unsafe fn grad_pair(&self, k: usize) -> (*mut f32, *mut f32) {
        let (q, mu) = self.layout.grad_pair(k);
        (self.at(q), self.at(mu))
    }
}

/// μV and μW (three Cartesian components each) of atom i, channel c, from the
/// `[3n][2F]` rows of [μV | μW].
#[inline(always)]
unsafe fn mixed_at(mixed: *const f32, i: usize, c: usize, f: usize) -> ([f32; 3], [f32; 3]) {
    let row = |x: usize| mixed.add((i * 3 + x) * 2 * f);
    ([0, 1, 2].map(|x| *row(x).add(c)), [0, 1, 2].map(|x| *row(x).add(f + c)))
}

/// ‖μV‖ with SchNetPack's ε under the root.
#[inline(always)]
fn norm_of(v: &[f32; 3]) -> f32 {
    sqrt((v[0] * v[0] + v[1] * v[1]) + v[2] * v[2] + NORM_EPSILON)
}

/// Σ_xyz a∘b.
#[inline(always)]
fn dot3(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    (a[0] * b[0] + a[1] * b[1]) + a[2] * b[2]
}

/// q⁰ = embedding[Z], μ⁰ = 0. Ends with a barrier.
#[inline(never)]
unsafe fn embed<T: Team>(team: &T, st: &Structure) {
    let (n, f) = (st.n, st.f);
    let (q, mu) = st.state(0);
    for item in items(team, n * f) {
        let (i, c) = (item / f, item % f);
        let z = *st.a.numbers.add(st.start + i) as usize;
        *q.add(i * f + c) = *st.a.embedding.add(z * f + c);
        for x in 0..3 {
            *mu.add((i * 3 + x) * f + c) = 0.0;
        }
    }
    team.sync();
}

/// Context of block t: x = Dense(F→3F)(SiLU(Dense(F→F)(q))) for every atom. Ends with
/// a barrier.
#[inline(never)]
unsafe fn context<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, f) = (st.n, st.f);
    let block = st.block(t);
    let (q, _) = st.state(t);
    let kept = st.kept(t);
    let hidden = st.at(st.layout.hidden);
    dense_atoms(team, n, q, block.context_in.forward(f, f), kept.context_pre);
    team.sync();
    for item in items(team, n * f) {
        *hidden.add(item) = silu(*kept.context_pre.add(item));
    }
    team.sync();
    dense_atoms(team, n, hidden, block.context_out.forward(f, 3 * f), kept.x);
    team.sync();
}

/// Interaction of block t, one warp per receiver i: q_mid = q_i + Σ_j Wq∘xq_j,
/// μ_mid = μ_i + Σ_j (WR∘xR_j ⊗ dir + Wμ∘xμ_j∘μ_j). Ends with a barrier.
#[inline(never)]
unsafe fn message<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, f, a) = (st.n, st.f, st.a);
    let table = st.block(t).table;
    let (q, mu) = st.state(t);
    let x = st.kept(t).x;
    let (q_mid, mu_mid) = st.mid();
    for i in warp_rows(team, n) {
        for chunk in lane_chunks(team, f) {
            let c = chunk + team.lane();
            if c >= f {
                continue;
            }
            let mut acc_q = *q.add(i * f + c);
            let mut acc_mu: [f32; 3] = core::array::from_fn(|k| *mu.add((i * 3 + k) * f + c));
            for j in 0..n {
                let g = st.pairs.geom(i, j);
                if !is_edge(i, j, &g, a.cutoff) {
                    continue;
                }
                let (at, dir) = edge_basis(&g, a.table_inv_h, f, DIRECTION_EPSILON);
                let w = [c, f + c, 2 * f + c].map(|k| interpolate(&at.w, &knots(table, &at, k, f)));
                let x_j = x.add(j * 3 * f);
                let wq = w[0] * *x_j.add(c);
                let wr = w[1] * *x_j.add(f + c);
                let wm = w[2] * *x_j.add(2 * f + c);
                acc_q += wq;
                for k in 0..3 {
                    acc_mu[k] = fma(wr, dir[k], fma(wm, *mu.add((j * 3 + k) * f + c), acc_mu[k]));
                }
            }
            *q_mid.add(i * f + c) = acc_q;
            for (k, acc) in acc_mu.iter().enumerate() {
                *mu_mid.add((i * 3 + k) * f + c) = *acc;
            }
        }
    }
    team.sync();
}

/// Mixing of block t: [μV | μW] = U μ_mid, [a | b | c] = MLP([q_mid ‖ ‖μV‖]),
/// q = q_mid + a + c∘⟨μV, μW⟩, μ = μ_mid + b∘μW into state t + 1. Ends with a barrier.
#[inline(never)]
unsafe fn mixing<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, f) = (st.n, st.f);
    let block = st.block(t);
    let kept = st.kept(t);
    let (q_mid, mu_mid) = st.mid();
    let input = st.at(st.layout.update_input);
    let hidden = st.at(st.layout.hidden);
    dense_atoms(
        team,
        3 * n,
        mu_mid,
        Dense { bias: core::ptr::null(), ..block.channel_mix.forward(f, 2 * f) },
        kept.mixed,
    );
    team.sync();
    for item in items(team, n * f) {
        let (i, c) = (item / f, item % f);
        let (v, _) = mixed_at(kept.mixed, i, c, f);
        *input.add(i * 2 * f + c) = *q_mid.add(i * f + c);
        *input.add(i * 2 * f + f + c) = norm_of(&v);
    }
    team.sync();
    dense_atoms(team, n, input, block.update_in.forward(2 * f, f), kept.update_pre);
    team.sync();
    for item in items(team, n * f) {
        *hidden.add(item) = silu(*kept.update_pre.add(item));
    }
    team.sync();
    dense_atoms(team, n, hidden, block.update_out.forward(f, 3 * f), kept.update_out);
    team.sync();
    let (q_next, mu_next) = st.state(t + 1);
    for item in items(team, n * f) {
        let (i, c) = (item / f, item % f);
        let out = kept.update_out.add(i * 3 * f);
        let (a, b, scale) = (*out.add(c), *out.add(f + c), *out.add(2 * f + c));
        let (v, w) = mixed_at(kept.mixed, i, c, f);
        *q_next.add(i * f + c) = *q_mid.add(i * f + c) + a + scale * dot3(&v, &w);
        for (k, w) in w.iter().enumerate() {
            let row = (i * 3 + k) * f + c;
            *mu_next.add(row) = *mu_mid.add(row) + b * w;
        }
    }
    team.sync();
}

/// Atom energies of the final state (readout + the element's offset) and their f64
/// sum. Ends with a barrier.
#[inline(never)]
unsafe fn readout<T: Team>(team: &T, st: &Structure, s: usize) {
    let (n, f, a) = (st.n, st.f, st.a);
    let [pre, hidden, e, _] = st.layout.readout_arrays().map(|o| st.at(o));
    let (q_final, _) = st.state(a.num_blocks as usize);
    dense_atoms(team, n, q_final, a.readout[0].forward(f, f / 2), pre);
    team.sync();
    for item in items(team, n * f / 2) {
        *hidden.add(item) = silu(*pre.add(item));
    }
    team.sync();
    dense_atoms(team, n, hidden, a.readout[1].forward(f / 2, 1), e);
    team.sync();
    for i in items(team, n) {
        let z = *a.numbers.add(st.start + i) as usize;
        let offset = if a.atom_offsets.is_null() { 0.0 } else { *a.atom_offsets.add(z) };
        *a.atom_energies.add(st.start + i) = *e.add(i) + offset;
    }
    team.sync();
    if team.thread() == 0 {
        let mut total = 0.0f64;
        for i in 0..n {
            total += *a.atom_energies.add(st.start + i) as f64;
        }
        *a.energies.add(s) = total;
    }
    team.sync();
}

/// ∂E/∂q of the final state into gradient pair 0. Ends with a barrier.
#[inline(never)]
unsafe fn readout_backward<T: Team>(team: &T, st: &Structure) {
    let (n, f, a) = (st.n, st.f, st.a);
    let [pre, _, _, g_pre] = st.layout.readout_arrays().map(|o| st.at(o));
    for item in items(team, n * f / 2) {
        let c = item % (f / 2);
        // The last layer is F/2 → 1: its input gradient is its weight column.
        *g_pre.add(item) = *a.readout[1].weight_t.add(c) * silu_and_grad(*pre.add(item)).1;
    }
    team.sync();
    let (gq, _) = st.grad_pair(0);
    dense_atoms(team, n, g_pre, a.readout[0].adjoint(f, f / 2), gq);
    team.sync();
}

/// Adjoint of block t's mixing: from ∂E/∂(q, μ) of its output in pair 0 (μ reaches the
/// energy only when `has_gmu`) to ∂E/∂(q_mid, μ_mid) in pair 1. Ends with a barrier.
#[inline(never)]
unsafe fn mixing_backward<T: Team>(team: &T, st: &Structure, t: usize, has_gmu: bool) {
    let (n, f) = (st.n, st.f);
    let block = st.block(t);
    let kept = st.kept(t);
    let (gq, gmu) = st.grad_pair(0);
    let (gq_mid, gmu_mid) = st.grad_pair(1);
    let [_, g_out, g_hidden, g_input, g_mixed] = st.layout.grad_work().map(|o| st.at(o));
    let gmu_at = |i: usize, c: usize| -> [f32; 3] {
        if has_gmu {
            [0, 1, 2].map(|k| *gmu.add((i * 3 + k) * f + c))
        } else {
            [0.0; 3]
        }
    };
    // ∂E/∂[a | b | c].
    for item in items(team, n * f) {
        let (i, c) = (item / f, item % f);
        let g_q = *gq.add(i * f + c);
        let g_mu = gmu_at(i, c);
        let (v, w) = mixed_at(kept.mixed, i, c, f);
        let go = g_out.add(i * 3 * f);
        *go.add(c) = g_q;
        *go.add(f + c) = dot3(&g_mu, &w);
        *go.add(2 * f + c) = g_q * dot3(&v, &w);
    }
    team.sync();
    dense_atoms(team, n, g_out, block.update_out.adjoint(f, 3 * f), g_hidden);
    team.sync();
    for item in items(team, n * f) {
        *g_hidden.add(item) *= silu_and_grad(*kept.update_pre.add(item)).1;
    }
    team.sync();
    dense_atoms(team, n, g_hidden, block.update_in.adjoint(2 * f, f), g_input);
    team.sync();
    // ∂E/∂[μV | μW] per Cartesian row: μV feeds the inner product and the norm, μW the
    // inner product and μ.
    for item in items(team, n * f) {
        let (i, c) = (item / f, item % f);
        let g_q = *gq.add(i * f + c);
        let g_mu = gmu_at(i, c);
        let (v, w) = mixed_at(kept.mixed, i, c, f);
        let norm = norm_of(&v);
        *gq_mid.add(i * f + c) = g_q + *g_input.add(i * 2 * f + c);
        let out = kept.update_out.add(i * 3 * f);
        let (b, scale) = (*out.add(f + c), *out.add(2 * f + c));
        let g_inner = g_q * scale;
        let g_norm = *g_input.add(i * 2 * f + f + c);
        for k in 0..3 {
            let row = g_mixed.add((i * 3 + k) * 2 * f);
            *row.add(c) = g_inner * w[k] + g_norm * v[k] / norm;
            *row.add(f + c) = g_inner * v[k] + g_mu[k] * b;
        }
    }
    team.sync();
    dense_atoms(team, 3 * n, g_mixed, block.channel_mix.adjoint(f, 2 * f), gmu_mid);
    team.sync();
    if has_gmu {
        // The residual μ = μ_mid + ….
        for item in items(team, 3 * n * f) {
            *gmu_mid.add(item) += *gmu.add(item);
        }
        team.sync();
    }
}

/// Adjoint of block t's interaction, one warp per atom i over its row, from
/// ∂E/∂(q_mid, μ_mid) in pair 1: ∂E/∂x_i (what i sent, through the reverse edges,
/// which share W and have direction −dir), ∂E/∂μ_i of the block input into pair 0
/// (residual + what i sent), and ∂E/∂r of i's edges added to their slots. Ends with a
/// barrier.
#[inline(never)]
unsafe fn message_backward<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, f, a) = (st.n, st.f, st.a);
    let table = st.block(t).table;
    let (_, mu) = st.state(t);
    let x = st.kept(t).x;
    let (gq_mid, gmu_mid) = st.grad_pair(1);
    let (_, gmu_in) = st.grad_pair(0);
    let [gx, ..] = st.layout.grad_work().map(|o| st.at(o));
    for i in warp_rows(team, n) {
        for chunk in lane_chunks(team, f) {
            let c = chunk + team.lane();
            let active = c < f;
            // Inactive lanes (a partial last chunk) read channel 0 and contribute 0.
            let cc = if active { c } else { 0 };
            let gq_i = *gq_mid.add(i * f + cc);
            let gmu_i: [f32; 3] = core::array::from_fn(|k| *gmu_mid.add((i * 3 + k) * f + cc));
            let mu_i: [f32; 3] = core::array::from_fn(|k| *mu.add((i * 3 + k) * f + cc));
            let xm_i = *x.add(i * 3 * f + 2 * f + cc);
            let mut gx_acc = [0.0f32; 3];
            let mut gmu_acc = gmu_i;
            for j in 0..n {
                let g = st.pairs.geom(i, j);
                if !is_edge(i, j, &g, a.cutoff) {
                    continue;
                }
                let (at, dir) = edge_basis(&g, a.table_inv_h, f, DIRECTION_EPSILON);
                let k = [cc, f + cc, 2 * f + cc].map(|q| knots(table, &at, q, f));
                let [wq, wr, wm] = k.map(|k| interpolate(&at.w, &k));
                let [dwq, dwr, dwm] = k.map(|k| interpolate(&at.dw, &k));
                let x_j = x.add(j * 3 * f);
                let (xq, xr, xm) = (*x_j.add(cc), *x_j.add(f + cc), *x_j.add(2 * f + cc));
                let gq_j = *gq_mid.add(j * f + cc);
                // Edge j→i.
                let mut gd = gq_i * xq * dwq;
                let mut gdir = [0.0f32; 3];
                // Reverse edge i→j.
                gx_acc[0] = fma(gq_j, wq, gx_acc[0]);
                for d in 0..3 {
                    let gmu_j = *gmu_mid.add((j * 3 + d) * f + cc);
                    let mu_j = *mu.add((j * 3 + d) * f + cc);
                    // Edge j→i.
                    gdir[d] = gmu_i[d] * wr * xr;
                    gd = fma(gmu_i[d], fma(xr * dir[d], dwr, xm * mu_j * dwm), gd);
                    // Reverse edge i→j.
                    gx_acc[1] = fma(-(gmu_j * dir[d]), wr, gx_acc[1]);
                    gx_acc[2] = fma(gmu_j * mu_i[d], wm, gx_acc[2]);
                    gmu_acc[d] = fma(gmu_j * wm, xm_i, gmu_acc[d]);
                }
                let gd = team.warp_sum(if active { gd } else { 0.0 });
                let gdir: [f32; 3] = core::array::from_fn(|d| team.warp_sum(if active { gdir[d] } else { 0.0 }));
                if team.lane() == 0 {
                    let gr = edge_gradient([g[0], g[1], g[2]], g[3], gd, gdir, DIRECTION_EPSILON);
                    let slot = &mut *st.pairs.grad(i, j);
                    for (acc, gr) in slot.iter_mut().zip(gr) {
                        *acc += gr;
                    }
                }
            }
            if active {
                for (part, acc) in gx_acc.iter().enumerate() {
                    *gx.add(i * 3 * f + part * f + c) = *acc;
                }
                for (d, acc) in gmu_acc.iter().enumerate() {
                    *gmu_in.add((i * 3 + d) * f + c) = *acc;
                }
            }
        }
    }
    team.sync();
}

/// Adjoint of block t's context: ∂E/∂q of the block input into pair 0 = ∂E/∂q_mid
/// (the residual, pair 1) + ∂(x·gx)/∂q. Ends with a barrier.
#[inline(never)]
unsafe fn context_backward<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, f) = (st.n, st.f);
    let block = st.block(t);
    let kept = st.kept(t);
    let (gq_mid, _) = st.grad_pair(1);
    let (gq_in, _) = st.grad_pair(0);
    // ∂E/∂input serves as the work array of ∂(x·gx)/∂q (F wide).
    let [gx, _, g_hidden, g_q, _] = st.layout.grad_work().map(|o| st.at(o));
    dense_atoms(team, n, gx, block.context_out.adjoint(f, 3 * f), g_hidden);
    team.sync();
    for item in items(team, n * f) {
        *g_hidden.add(item) *= silu_and_grad(*kept.context_pre.add(item)).1;
    }
    team.sync();
    dense_atoms(team, n, g_hidden, block.context_in.adjoint(f, f), g_q);
    team.sync();
    for item in items(team, n * f) {
        *gq_in.add(item) = *gq_mid.add(item) + *g_q.add(item);
    }
    team.sync();
}

/// Energy (and, with `want_forces`, forces) of structure `s`; the fault bits (0:
/// fine; then nothing is written but them). Every thread of the team must call it; it
/// ends with a barrier.
///
/// # Safety
/// `a` must hold valid pointers: per-atom arrays covering `offsets[num_structures]`
/// atoms, per-structure arrays covering `num_structures`, `scratch` covering every
/// structure's `PainnLayout` region at `scratch_offsets[s]`, `blocks` `num_blocks`
/// entries whose tables and weights match `features`, `embedding` and `atom_offsets`
/// (or null) covering every atomic number of `numbers`; `s < num_structures`.
#[inline(never)]
pub unsafe fn evaluate<T: Team>(team: &T, a: &FusedPainnArgs, s: usize, want_forces: bool) -> u32 {
    let start = *a.offsets.add(s) as usize;
    let n = *a.offsets.add(s + 1) as usize - start;
    let f = a.features as usize;
    let blocks = a.num_blocks as usize;
    let layout = PainnLayout::new(n, f, blocks);
    let base = a.scratch.add(*a.scratch_offsets.add(s) as usize);
    let pairs = PairSlots {
        n,
        geom: base.add(layout.geom) as *mut [f32; 4],
        grad: base.add(layout.edge_grad) as *mut [f32; 3],
    };
    let st = Structure { a, start, n, f, layout, base, pairs };
    let faults = fill(team, &st.pairs, a.positions.add(start));
    if faults != 0 {
        return faults;
    }
    embed(team, &st);
    for t in 0..blocks {
        context(team, &st, t);
        message(team, &st, t);
        mixing(team, &st, t);
    }
    readout(team, &st, s);
    if !want_forces {
        return 0;
    }
    readout_backward(team, &st);
    for t in (0..blocks).rev() {
        mixing_backward(team, &st, t, t + 1 < blocks);
        message_backward(team, &st, t);
        context_backward(team, &st, t);
    }
    gather_forces(team, &st.pairs, a.forces.add(start));
    0
}

/// `a.steps` steps of velocity Verlet / BAOAB for structure s, starting from the
/// forces in `a.forces` (those of the current positions); as the student's
/// [`super::student::md`].
///
/// # Safety
/// As [`evaluate`], plus `velocities`, `masses` per atom and `fault_steps` per structure.
pub unsafe fn md<T: Team>(team: &T, a: &FusedPainnArgs, s: usize) {
    let trajectory = Trajectory {
        atoms: *a.offsets.add(s) as usize..*a.offsets.add(s + 1) as usize,
        positions: a.positions,
        velocities: a.velocities,
        forces: a.forces,
        masses: a.masses,
        heat: a.heat,
        integrator: &a.integrator,
        fault: a.faults.add(s),
        fault_step: a.fault_steps.add(s),
        first_step: a.first_step,
        steps: a.steps,
    };
    integrate(team, &trajectory, || evaluate(team, a, s, true));
}

//! Architecture 1 (the student) as one fused kernel per structure: the math of
//! [`crate::student`] with the filter from the Hermite table of [`crate::filter_table`]
//! (as the layered GPU engine), run by a [`Team`].
//!
//! Work split: pair and atom phases are strided over the team's threads; edge passes
//! run one warp per (receiver row, group of 32 channels), a lane a channel (per-edge
//! sums over the group's channels are warp sums; each group adds its part of ∂E/∂r to
//! its own copy of the pair slots, so no two warps write one slot); dense layers run
//! one thread per (output, tile of `ATOM_TILE` atoms), so each weight read serves a
//! tile.
//!
//! Each phase is its own (not inlined) function: ptxas then allocates registers per
//! phase, 130 for the whole kernel instead of 214 when everything is inlined into the
//! entry (ptxas -v, sm_90), which lets a block have up to 15 warps.

use super::dynamics::{integrate, Trajectory};
use super::pairs::{edge_basis, is_edge};
use super::team::{channel_groups, group_chunks, items, warp_rows, Team};
pub use super::FusedLinear;
use super::{dense_atoms, fault, padded_atoms};
use crate::cell_list::MIN_DISTANCE;
use crate::filter_table::{interpolate, knots};
use crate::geometry::{edge_gradient, edge_vector, UNIT_EPSILON};
use crate::math::{fma, silu, silu_and_grad, sqrt};
use crate::md::Integrator;

/// One interaction block: its filter table and update network.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FusedStudentBlock {
    /// Hermite table of φ(d) (`filter_table::table_len(H)` floats).
    pub table: *const f32,
    /// `update.update_mlp.0` (2H → H) and `.2` (H → 3H).
    pub update_in: FusedLinear,
    pub update_out: FusedLinear,
    /// `update.mixing_matrix`, row-major.
    pub mixing: [f32; 9],
    pub pad: u32,
}

/// Arguments of the fused student kernels (`evaluate`, `md`), one block per structure.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FusedStudentArgs {
    /// `num_blocks` interaction blocks.
    pub blocks: *const FusedStudentBlock,
    /// The energy head: H → H/2 → H/4 → 1.
    pub head: [FusedLinear; 3],
    /// `[max_z + 1][H]`.
    pub embedding: *const f32,
    /// Per-element energy offsets, or null.
    pub atomref: *const f32,
    /// Atoms of structure s: `offsets[s]..offsets[s + 1]` of the per-atom arrays.
    pub offsets: *const u32,
    /// Float offset of structure s's scratch region (`StudentLayout::floats`).
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
    pub hidden: u32,
    pub cutoff: f32,
    /// Knots per Å of the filter tables.
    pub table_inv_h: f32,
    /// Nonzero: compute forces (the adjoint) too.
    pub want_forces: u32,
    pub pad: u32,
}

// SAFETY: #[repr(C)], plain values and device addresses only.
unsafe impl crate::kernel::KernelArgs for FusedStudentArgs {}

/// Where each array of one structure lives in its scratch region (offsets in floats).
/// Features are `[atom][channels]` with `padded_atoms(n)` rows; pair arrays are
/// `[i][j]` with `n` columns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StudentLayout {
    pub atoms: usize,
    pub hidden: usize,
    /// `[r, d]` per pair, then ∂E/∂r per (channel group, pair).
    pub geom: usize,
    pub edge_grad: usize,
    /// Block t's input state s (NH) then v (3NH), t = 0..=T (T: the final state).
    pub states: usize,
    /// Block t's post-message state s', v'.
    pub mids: usize,
    /// Block t's update pre-activation (NH) and output [a | g1 | g2] (3NH).
    pub pre: usize,
    pub out: usize,
    /// Work arrays: the update's input [s' ‖ ‖v'‖] (2NH) and hidden layer (NH).
    pub update_input: usize,
    pub hidden_layer: usize,
    /// Readout pre-activations and activations (N·H/2, N·H/4), atom energies (N).
    pub readout: usize,
    /// Gradients: two (gs, gv) pairs that alternate (4NH each), ∂E/∂[a|g1|g2] (3NH),
    /// ∂E/∂hidden (NH), ∂E/∂[s' ‖ n] (2NH).
    pub grads: usize,
    pub floats: usize,
}

impl StudentLayout {
    pub const fn new(atoms: usize, hidden: usize, blocks: usize) -> Self {
        let rows = padded_atoms(atoms);
        let nh = rows * hidden;
        let pairs = atoms * atoms;
        let geom = 0;
        let edge_grad = geom + 4 * pairs;
        let states = edge_grad + 3 * pairs * channel_groups(hidden);
        let mids = states + (blocks + 1) * 4 * nh;
        let pre = mids + blocks * 4 * nh;
        let out = pre + blocks * nh;
        let update_input = out + blocks * 3 * nh;
        let hidden_layer = update_input + 2 * nh;
        let readout = hidden_layer + nh;
        let grads = readout + 3 * (rows * hidden / 2) + rows;
        let floats = grads + 2 * 4 * nh + 3 * nh + nh + 2 * nh;
        StudentLayout {
            atoms,
            hidden,
            geom,
            edge_grad,
            states,
            mids,
            pre,
            out,
            update_input,
            hidden_layer,
            readout,
            grads,
            floats,
        }
    }

    fn nh(&self) -> usize {
        padded_atoms(self.atoms) * self.hidden
    }
    fn state(&self, t: usize) -> (usize, usize) {
        let at = self.states + t * 4 * self.nh();
        (at, at + self.nh())
    }
    fn mid(&self, t: usize) -> (usize, usize) {
        let at = self.mids + t * 4 * self.nh();
        (at, at + self.nh())
    }
    /// Readout arrays: pre-activations of the two hidden layers, their activations,
    /// and the per-atom head output.
    fn readout_arrays(&self) -> [usize; 5] {
        let rows = padded_atoms(self.atoms);
        let (half, quarter) = (rows * self.hidden / 2, rows * self.hidden / 4);
        let r1 = self.readout;
        [r1, r1 + half, r1 + 2 * half, r1 + 2 * half + quarter, r1 + 2 * half + 2 * quarter]
    }
    /// The alternating gradient pairs (gs, gv).
    fn grad_pair(&self, k: usize) -> (usize, usize) {
        let at = self.grads + k * 4 * self.nh();
        (at, at + self.nh())
    }
    fn grad_out(&self) -> usize {
        self.grads + 8 * self.nh()
    }
    fn grad_hidden(&self) -> usize {
        self.grad_out() + 3 * self.nh()
    }
    fn grad_input(&self) -> usize {
        self.grad_hidden() + self.nh()
    }
}

/// One structure's view of the arguments.
struct Structure<'a> {
    a: &'a FusedStudentArgs,
    /// First atom in the batch arrays, and atom count.
    start: usize,
    n: usize,
    h: usize,
    layout: StudentLayout,
    base: *mut f32,
}

impl Structure<'_> {
    #[inline(always)]
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        self.base.add(offset)
    }
    #[inline(always)]
    unsafe fn geom(&self, i: usize, j: usize) -> [f32; 4] {
        *(self.at(self.layout.geom) as *const [f32; 4]).add(i * self.n + j)
    }
    /// Channel group g's part of ∂E/∂r of pair (i, j).
    #[inline(always)]
    unsafe fn edge_grad(&self, g: usize, i: usize, j: usize) -> *mut [f32; 3] {
        (self.at(self.layout.edge_grad) as *mut [f32; 3]).add((g * self.n + i) * self.n + j)
    }
    #[inline(always)]
    unsafe fn block(&self, t: usize) -> &FusedStudentBlock {
        &*self.a.blocks.add(t)
    }
}

/// Fills the pair slots and checks positions; the fault bits (0: fine). Ends with a
/// barrier.
#[inline(never)]
unsafe fn pairs<T: Team>(team: &T, st: &Structure) -> u32 {
    let (n, a) = (st.n, st.a);
    let positions = a.positions.add(st.start);
    let mut non_finite = false;
    let mut too_close = false;
    for q in items(team, n * n) {
        let (i, j) = (q / n, q % n);
        let (ri, rj) = (*positions.add(i), *positions.add(j));
        if i == j {
            non_finite |= ri.iter().any(|x| !x.is_finite());
        }
        let (r, d) = edge_vector(ri, rj, [0.0; 3]);
        *(st.at(st.layout.geom) as *mut [f32; 4]).add(q) = [r[0], r[1], r[2], d];
        too_close |= i != j && d < MIN_DISTANCE;
    }
    for q in items(team, channel_groups(st.h) * n * n) {
        *(st.at(st.layout.edge_grad) as *mut [f32; 3]).add(q) = [0.0; 3];
    }
    let non_finite = team.sync_any(non_finite);
    let too_close = team.sync_any(too_close);
    (if non_finite { fault::NON_FINITE } else { 0 }) | (if too_close { fault::TOO_CLOSE } else { 0 })
}

/// s⁰ = embedding[Z], v⁰ = 0.
#[inline(never)]
unsafe fn embed<T: Team>(team: &T, st: &Structure) {
    let (n, h) = (st.n, st.h);
    let (s, v) = st.state(0);
    for q in items(team, n * h) {
        let (i, c) = (q / h, q % h);
        let z = *st.a.numbers.add(st.start + i) as usize;
        *s.add(i * h + c) = *st.a.embedding.add(z * h + c);
        for x in 0..3 {
            *v.add((i * 3 + x) * h + c) = 0.0;
        }
    }
}

impl Structure<'_> {
    unsafe fn state(&self, t: usize) -> (*mut f32, *mut f32) {
        let (s, v) = self.layout.state(t);
        (self.at(s), self.at(v))
    }
    unsafe fn mid(&self, t: usize) -> (*mut f32, *mut f32) {
        let (s, v) = self.layout.mid(t);
        (self.at(s), self.at(v))
    }
    unsafe fn grad_pair(&self, k: usize) -> (*mut f32, *mut f32) {
        let (s, v) = self.layout.grad_pair(k);
        (self.at(s), self.at(v))
    }
}

/// Message step of block t: s' = s + Σ_j s_j∘φs, v' = v + Σ_j (v_j∘φv1 + u⊗φv2).
#[inline(never)]
unsafe fn message<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, h, a) = (st.n, st.h, st.a);
    let table = st.block(t).table;
    let (s, v) = st.state(t);
    let (s_mid, v_mid) = st.mid(t);
    let groups = channel_groups(h);
    for task in warp_rows(team, n * groups) {
        let (i, group) = (task / groups, task % groups);
        let (chunks, end) = group_chunks(team, group, h);
        for chunk in chunks {
            let c = chunk + team.lane();
            if c >= end {
                continue;
            }
            let mut acc_s = *s.add(i * h + c);
            let mut acc_v: [f32; 3] = core::array::from_fn(|x| *v.add((i * 3 + x) * h + c));
            for j in 0..n {
                let g = st.geom(i, j);
                if !is_edge(i, j, &g, a.cutoff) {
                    continue;
                }
                let (at, u) = edge_basis(&g, a.table_inv_h, h, UNIT_EPSILON);
                let phi = [c, h + c, 2 * h + c].map(|q| interpolate(&at.w, &knots(table, &at, q, h)));
                acc_s = fma(*s.add(j * h + c), phi[0], acc_s);
                for x in 0..3 {
                    acc_v[x] = fma(*v.add((j * 3 + x) * h + c), phi[1], fma(u[x], phi[2], acc_v[x]));
                }
            }
            *s_mid.add(i * h + c) = acc_s;
            for x in 0..3 {
                *v_mid.add((i * 3 + x) * h + c) = acc_v[x];
            }
        }
    }
}

/// (M v)[x] for one atom and channel (v's three Cartesian rows at `v`, stride h).
#[inline(always)]
unsafe fn mixed(m: &[f32; 9], v: *const f32, h: usize) -> [f32; 3] {
    let (v0, v1, v2) = (*v, *v.add(h), *v.add(2 * h));
    core::array::from_fn(|x| (m[3 * x] * v0 + m[3 * x + 1] * v1) + m[3 * x + 2] * v2)
}

/// Update step of block t: [a | g1 | g2] = L4(SiLU(L3([s' ‖ ‖v'‖]))), s'' = s' + a,
/// v'' = v'∘g1 + (M v')∘g2. Begins after a barrier, ends with one.
#[inline(never)]
unsafe fn update<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, h, l) = (st.n, st.h, &st.layout);
    let block = st.block(t);
    let (s_mid, v_mid) = st.mid(t);
    let input = st.at(l.update_input);
    for q in items(team, n * h) {
        let (i, c) = (q / h, q % h);
        *input.add(i * 2 * h + c) = *s_mid.add(i * h + c);
        let (v0, v1, v2) =
            (*v_mid.add(i * 3 * h + c), *v_mid.add((i * 3 + 1) * h + c), *v_mid.add((i * 3 + 2) * h + c));
        *input.add(i * 2 * h + h + c) = sqrt((v0 * v0 + v1 * v1) + v2 * v2);
    }
    team.sync();
    let pre = st.at(l.pre + t * padded_atoms(n) * h);
    dense_atoms(team, n, input, block.update_in.forward(2 * h, h), pre);
    team.sync();
    let hidden = st.at(l.hidden_layer);
    for q in items(team, n * h) {
        *hidden.add(q) = silu(*pre.add(q));
    }
    team.sync();
    let out = st.at(l.out + t * 3 * padded_atoms(n) * h);
    dense_atoms(team, n, hidden, block.update_out.forward(h, 3 * h), out);
    team.sync();
    let (s_next, v_next) = st.state(t + 1);
    for q in items(team, n * h) {
        let (i, c) = (q / h, q % h);
        let row = out.add(i * 3 * h);
        let (a, g1, g2) = (*row.add(c), *row.add(h + c), *row.add(2 * h + c));
        *s_next.add(i * h + c) = *s_mid.add(i * h + c) + a;
        let vm = v_mid.add(i * 3 * h + c);
        let mv = mixed(&block.mixing, vm, h);
        for x in 0..3 {
            *v_next.add((i * 3 + x) * h + c) = *vm.add(x * h) * g1 + mv[x] * g2;
        }
    }
    team.sync();
}

/// Atom energies of the final state (head + atomref) and their f64 sum. Ends with a
/// barrier.
#[inline(never)]
unsafe fn readout<T: Team>(team: &T, st: &Structure, s: usize) {
    let (n, h, a) = (st.n, st.h, st.a);
    let [r1, h1, r2, h2, e] = st.layout.readout_arrays().map(|o| st.at(o));
    let (s_final, _) = st.state(a.num_blocks as usize);
    dense_atoms(team, n, s_final, a.head[0].forward(h, h / 2), r1);
    team.sync();
    for q in items(team, n * h / 2) {
        *h1.add(q) = silu(*r1.add(q));
    }
    team.sync();
    dense_atoms(team, n, h1, a.head[1].forward(h / 2, h / 4), r2);
    team.sync();
    for q in items(team, n * h / 4) {
        *h2.add(q) = silu(*r2.add(q));
    }
    team.sync();
    dense_atoms(team, n, h2, a.head[2].forward(h / 4, 1), e);
    team.sync();
    for i in items(team, n) {
        let z = *a.numbers.add(st.start + i) as usize;
        let offset = if a.atomref.is_null() { 0.0 } else { *a.atomref.add(z) };
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
}

/// ∂E/∂s of the final state into gradient pair 0. Ends with a barrier.
#[inline(never)]
unsafe fn readout_backward<T: Team>(team: &T, st: &Structure) {
    let (n, h, a) = (st.n, st.h, st.a);
    let [r1, _, r2, _, _] = st.layout.readout_arrays().map(|o| st.at(o));
    let g2 = st.at(st.layout.grad_out());
    let g1 = st.at(st.layout.grad_hidden());
    for q in items(team, n * h / 4) {
        let c = q % (h / 4);
        // The last layer is H/4 → 1: its input gradient is its weight column.
        *g2.add(q) = *a.head[2].weight_t.add(c) * silu_and_grad(*r2.add(q)).1;
    }
    team.sync();
    dense_atoms(team, n, g2, a.head[1].adjoint(h / 2, h / 4), g1);
    team.sync();
    for q in items(team, n * h / 2) {
        *g1.add(q) *= silu_and_grad(*r1.add(q)).1;
    }
    team.sync();
    let (gs, _) = st.grad_pair(0);
    dense_atoms(team, n, g1, a.head[0].adjoint(h, h / 2), gs);
    team.sync();
}

/// Adjoint of block t's update: from ∂E/∂(s'', v'') in pair 0 (v'' reaches the energy
/// only when `has_gv`) to ∂E/∂(s', v') in pair 1. Ends with a barrier.
#[inline(never)]
unsafe fn update_backward<T: Team>(team: &T, st: &Structure, t: usize, has_gv: bool) {
    let (n, h, l) = (st.n, st.h, &st.layout);
    let block = st.block(t);
    let (_, v_mid) = st.mid(t);
    let (gs, gv) = st.grad_pair(0);
    let (gs_mid, gv_mid) = st.grad_pair(1);
    let out = st.at(l.out + t * 3 * padded_atoms(n) * h);
    let pre = st.at(l.pre + t * padded_atoms(n) * h);
    let g_out = st.at(l.grad_out());
    let g_hidden = st.at(l.grad_hidden());
    let g_input = st.at(l.grad_input());
    let m = &block.mixing;
    for q in items(team, n * h) {
        let (i, c) = (q / h, q % h);
        let go = g_out.add(i * 3 * h);
        *go.add(c) = *gs.add(i * h + c);
        if has_gv {
            let vm = v_mid.add(i * 3 * h + c);
            let mv = mixed(m, vm, h);
            let g: [f32; 3] = core::array::from_fn(|x| *gv.add((i * 3 + x) * h + c));
            let (g1, g2) = (*out.add(i * 3 * h + h + c), *out.add(i * 3 * h + 2 * h + c));
            let (mut gg1, mut gg2) = (0.0f32, 0.0f32);
            for x in 0..3 {
                gg1 += g[x] * *vm.add(x * h);
                gg2 += g[x] * mv[x];
            }
            *go.add(h + c) = gg1;
            *go.add(2 * h + c) = gg2;
            for b in 0..3 {
                // (Mᵀ g)[b] = Σ_a M[a][b] g[a]
                let mt_g = (m[b] * g[0] + m[3 + b] * g[1]) + m[6 + b] * g[2];
                *gv_mid.add((i * 3 + b) * h + c) = g[b] * g1 + mt_g * g2;
            }
        } else {
            *go.add(h + c) = 0.0;
            *go.add(2 * h + c) = 0.0;
            for b in 0..3 {
                *gv_mid.add((i * 3 + b) * h + c) = 0.0;
            }
        }
    }
    team.sync();
    dense_atoms(team, n, g_out, block.update_out.adjoint(h, 3 * h), g_hidden);
    team.sync();
    for q in items(team, n * h) {
        let (i, c) = (q / h, q % h);
        *g_hidden.add(i * h + c) *= silu_and_grad(*pre.add(i * h + c)).1;
    }
    team.sync();
    dense_atoms(team, n, g_hidden, block.update_in.adjoint(2 * h, h), g_input);
    team.sync();
    for q in items(team, n * h) {
        let (i, c) = (q / h, q % h);
        *gs_mid.add(i * h + c) = *gs.add(i * h + c) + *g_input.add(i * 2 * h + c);
        let vm = v_mid.add(i * 3 * h + c);
        let (v0, v1, v2) = (*vm, *vm.add(h), *vm.add(2 * h));
        let norm = sqrt((v0 * v0 + v1 * v1) + v2 * v2);
        // ‖v'‖ has no epsilon: at 0 the subgradient 0 is used (as PyTorch does).
        if norm > 0.0 {
            let scale = *g_input.add(i * 2 * h + h + c) / norm;
            for x in 0..3 {
                *gv_mid.add((i * 3 + x) * h + c) += scale * *vm.add(x * h);
            }
        }
    }
    team.sync();
}

/// Adjoint of block t's message step, one warp per receiver i: from ∂E/∂(s', v') in
/// pair 1 to ∂E/∂(s, v) of the block input in pair 0, and ∂E/∂r of i's edges added to
/// their slots. Atom i's part as a sender comes through the reverse edges (the same
/// φ). Ends with a barrier.
#[inline(never)]
unsafe fn message_backward<T: Team>(team: &T, st: &Structure, t: usize) {
    let (n, h, a) = (st.n, st.h, st.a);
    let table = st.block(t).table;
    let (s, v) = st.state(t);
    let (gs_mid, gv_mid) = st.grad_pair(1);
    let (gs_in, gv_in) = st.grad_pair(0);
    let groups = channel_groups(h);
    for task in warp_rows(team, n * groups) {
        let (i, group) = (task / groups, task % groups);
        let (chunks, end) = group_chunks(team, group, h);
        for chunk in chunks {
            let c = chunk + team.lane();
            let active = c < end;
            // Inactive lanes (a partial last chunk) read channel 0 and contribute 0.
            let cc = if active { c } else { 0 };
            let gs_i = *gs_mid.add(i * h + cc);
            let gv_i: [f32; 3] = core::array::from_fn(|x| *gv_mid.add((i * 3 + x) * h + cc));
            let mut acc_s = gs_i;
            let mut acc_v = gv_i;
            for j in 0..n {
                let g = st.geom(i, j);
                if !is_edge(i, j, &g, a.cutoff) {
                    continue;
                }
                let (at, u) = edge_basis(&g, a.table_inv_h, h, UNIT_EPSILON);
                let k = [cc, h + cc, 2 * h + cc].map(|q| knots(table, &at, q, h));
                let phi = k.map(|k| interpolate(&at.w, &k));
                let slope = k.map(|k| interpolate(&at.dw, &k));
                let s_j = *s.add(j * h + cc);
                let v_j: [f32; 3] = core::array::from_fn(|x| *v.add((j * 3 + x) * h + cc));
                acc_s = fma(*gs_mid.add(j * h + cc), phi[0], acc_s);
                for x in 0..3 {
                    acc_v[x] = fma(*gv_mid.add((j * 3 + x) * h + cc), phi[1], acc_v[x]);
                }
                let g_phi_s = gs_i * s_j;
                let g_phi_v1 = (gv_i[0] * v_j[0] + gv_i[1] * v_j[1]) + gv_i[2] * v_j[2];
                let g_phi_v2 = (gv_i[0] * u[0] + gv_i[1] * u[1]) + gv_i[2] * u[2];
                let gd = (g_phi_s * slope[0] + g_phi_v1 * slope[1]) + g_phi_v2 * slope[2];
                let gd = team.warp_sum(if active { gd } else { 0.0 });
                let gu: [f32; 3] = core::array::from_fn(|x| team.warp_sum(if active { gv_i[x] * phi[2] } else { 0.0 }));
                if team.lane() == 0 {
                    let gr = edge_gradient([g[0], g[1], g[2]], g[3], gd, gu, UNIT_EPSILON);
                    let slot = st.edge_grad(group, i, j);
                    for x in 0..3 {
                        (*slot)[x] += gr[x];
                    }
                }
            }
            if active {
                *gs_in.add(i * h + c) = acc_s;
                for x in 0..3 {
                    *gv_in.add((i * 3 + x) * h + c) = acc_v[x];
                }
            }
        }
    }
    team.sync();
}

/// F_i = Σ_j (∂E/∂r_ij − ∂E/∂r_ji) over every channel group's part, since
/// r_ij = R_j − R_i.
#[inline(never)]
unsafe fn forces<T: Team>(team: &T, st: &Structure) {
    for i in items(team, st.n) {
        let mut f = [0.0f32; 3];
        for g in 0..channel_groups(st.h) {
            for j in 0..st.n {
                let (out, back) = (*st.edge_grad(g, i, j), *st.edge_grad(g, j, i));
                for x in 0..3 {
                    f[x] += out[x] - back[x];
                }
            }
        }
        *st.a.forces.add(st.start + i) = f;
    }
    team.sync();
}

/// Energy (and, with `want_forces`, forces) of structure `s`; returns the fault bits
/// (0: fine; else nothing is written, and the caller records them). Every thread of the team must call it; it
/// ends with a barrier.
///
/// # Safety
/// `a` must hold valid pointers: per-atom arrays covering `offsets[num_structures]`
/// atoms, per-structure arrays covering `num_structures`, `scratch` covering every
/// structure's `StudentLayout` region at `scratch_offsets[s]`, `blocks` `num_blocks`
/// entries whose tables and weights match `hidden`; `s < num_structures`.
#[inline(never)]
pub unsafe fn evaluate<T: Team>(team: &T, a: &FusedStudentArgs, s: usize, want_forces: bool) -> u32 {
    let start = *a.offsets.add(s) as usize;
    let n = *a.offsets.add(s + 1) as usize - start;
    let h = a.hidden as usize;
    let blocks = a.num_blocks as usize;
    let st = Structure {
        a,
        start,
        n,
        h,
        layout: StudentLayout::new(n, h, blocks),
        base: a.scratch.add(*a.scratch_offsets.add(s) as usize),
    };
    let faults = pairs(team, &st);
    if faults != 0 {
        return faults;
    }
    embed(team, &st);
    team.sync();
    for t in 0..blocks {
        message(team, &st, t);
        team.sync();
        update(team, &st, t);
    }
    readout(team, &st, s);
    if !want_forces {
        team.sync();
        return 0;
    }
    readout_backward(team, &st);
    for t in (0..blocks).rev() {
        update_backward(team, &st, t, t + 1 < blocks);
        message_backward(team, &st, t);
    }
    forces(team, &st);
    0
}

/// `a.steps` steps of velocity Verlet / BAOAB (the bodies of [`crate::md`]) for
/// structure s, starting from the forces in `a.forces` (those of the current
/// positions). A fault stops the structure: its bits go to `faults[s]` and the step
/// to `fault_steps[s]`; the state is left as the faulting step made it.
///
/// # Safety
/// As [`evaluate`], plus `velocities`, `masses` per atom and `fault_steps` per structure.
pub unsafe fn md<T: Team>(team: &T, a: &FusedStudentArgs, s: usize) {
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

//! The student model on the CPU: the kernel bodies of `kernels::student`, run over
//! atoms and receiver rows in parallel, for a whole batch at once.

use super::StudentWeights;
use crate::cpu::Cpu;
use crate::model::output::{
    energy_weight, forces_from_edges, scale_by_energy_weight, split_rows, structure_energies, BatchOutput,
};
use crate::neighbors::NeighborList;
use crate::structure::Batch;
use mlff_kernels::student::{
    atom_scratch_len, edge_scratch_len, message_backward_row, message_row, readout_atom, readout_backward_atom,
    update_atom, update_backward_atom,
};
use rayon::prelude::*;

/// Per-block states kept for the adjoint: the block input and the post-message state.
struct BlockStates {
    s_in: Vec<f32>,
    v_in: Vec<f32>,
    s_mid: Vec<f32>,
    v_mid: Vec<f32>,
}

/// `energy_weights` (one per atom, None: all 1) make the call compute Σ w_i E_i and
/// its gradient: `atom_energies` are w_i E_i, and the readout adjoint is seeded with w_i.
pub fn evaluate(
    cpu: &Cpu,
    w: &StudentWeights,
    batch: &Batch,
    list: &NeighborList,
    forces: bool,
    energy_weights: Option<&[f32]>,
) -> BatchOutput {
    cpu.install(|| evaluate_in_pool(w, batch, list, forces, energy_weights))
}

fn evaluate_in_pool(
    w: &StudentWeights,
    batch: &Batch,
    list: &NeighborList,
    want_forces: bool,
    energy_weights: Option<&[f32]>,
) -> BatchOutput {
    let h = w.hidden_dim();
    let k = w.config.num_rbf;
    let n = batch.num_atoms();
    let radial = w.radial();
    let edge_scratch = || vec![0.0f32; edge_scratch_len(h, k)];
    let atom_scratch = || vec![0.0f32; atom_scratch_len(h)];

    let mut s: Vec<f32> = Vec::with_capacity(n * h);
    for &z in &batch.numbers {
        s.extend_from_slice(&w.embedding[z as usize * h..(z as usize + 1) * h]);
    }
    let mut v = vec![0.0f32; n * 3 * h];
    let mut blocks: Vec<BlockStates> = Vec::with_capacity(w.config.num_interactions);

    for t in 0..w.config.num_interactions {
        let p = w.interaction(t);
        let mut s_mid = vec![0.0f32; n * h];
        let mut v_mid = vec![0.0f32; n * 3 * h];
        s_mid.par_chunks_mut(h).zip(v_mid.par_chunks_mut(3 * h)).enumerate().for_each_init(
            edge_scratch,
            |scratch, (i, (s_out, v_out))| {
                message_row(i, list.row(i), &list.src, &list.geom, &s, &v, &radial, &p, scratch, s_out, v_out)
            },
        );
        let mut s_next = vec![0.0f32; n * h];
        let mut v_next = vec![0.0f32; n * 3 * h];
        s_next
            .par_chunks_mut(h)
            .zip(v_next.par_chunks_mut(3 * h))
            .zip(s_mid.par_chunks(h).zip(v_mid.par_chunks(3 * h)))
            .for_each_init(atom_scratch, |scratch, ((s_out, v_out), (sm, vm))| {
                update_atom(sm, vm, &p, scratch, s_out, v_out)
            });
        let s_in = std::mem::replace(&mut s, s_next);
        let v_in = std::mem::replace(&mut v, v_next);
        blocks.push(BlockStates { s_in, v_in, s_mid, v_mid });
    }

    let readout = w.readout();
    let atom_energies: Vec<f32> = s
        .par_chunks(h)
        .zip(batch.numbers.par_iter())
        .enumerate()
        .map_init(atom_scratch, |scratch, (i, (s_atom, &z))| {
            (readout_atom(s_atom, &readout, scratch) + w.atomref.as_ref().map_or(0.0, |r| r[z as usize]))
                * energy_weight(energy_weights, i)
        })
        .collect();
    let energies = structure_energies(batch, &atom_energies);
    if !want_forces {
        return BatchOutput { atom_energies, energies, forces: None, edge_grad: None };
    }

    // Adjoint: ∂E/∂s of the final state, then back through every block.
    let mut gs = vec![0.0f32; n * h];
    gs.par_chunks_mut(h).zip(s.par_chunks(h)).enumerate().for_each_init(atom_scratch, |scratch, (i, (g, s_atom))| {
        readout_backward_atom(s_atom, &readout, scratch, g);
        scale_by_energy_weight(g, energy_weights, i);
    });
    let mut gv: Option<Vec<f32>> = None;
    let mut edge_grad = vec![[0.0f32; 3]; list.num_edges()];
    for (t, block) in blocks.iter().enumerate().rev() {
        let p = w.interaction(t);
        let mut gs_mid = vec![0.0f32; n * h];
        let mut gv_mid = vec![0.0f32; n * 3 * h];
        gs_mid.par_chunks_mut(h).zip(gv_mid.par_chunks_mut(3 * h)).enumerate().for_each_init(
            atom_scratch,
            |scratch, (i, (gsm, gvm))| {
                let gv_out = gv.as_ref().map(|g| &g[i * 3 * h..(i + 1) * 3 * h]);
                update_backward_atom(
                    &block.s_mid[i * h..(i + 1) * h],
                    &block.v_mid[i * 3 * h..(i + 1) * 3 * h],
                    &gs[i * h..(i + 1) * h],
                    gv_out,
                    &p,
                    scratch,
                    gsm,
                    gvm,
                )
            },
        );
        let mut gs_in = vec![0.0f32; n * h];
        let mut gv_in = vec![0.0f32; n * 3 * h];
        let rows = split_rows(&mut edge_grad, &list.row_ptr);
        gs_in.par_chunks_mut(h).zip(gv_in.par_chunks_mut(3 * h)).zip(rows.into_par_iter()).enumerate().for_each_init(
            edge_scratch,
            |scratch, (i, ((gsi, gvi), row_grad))| {
                message_backward_row(
                    i,
                    list.row(i),
                    &list.src,
                    &list.geom,
                    &block.s_in,
                    &block.v_in,
                    &gs_mid,
                    &gv_mid,
                    &radial,
                    &p,
                    scratch,
                    gsi,
                    gvi,
                    row_grad,
                )
            },
        );
        gs = gs_in;
        gv = Some(gv_in);
    }

    let forces = forces_from_edges(list, &edge_grad);
    BatchOutput { atom_energies, energies, forces: Some(forces), edge_grad: Some(edge_grad) }
}

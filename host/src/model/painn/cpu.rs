//! PaiNN on the CPU: the kernel bodies of `kernels::painn`, run over atoms and
//! receiver rows in parallel, for a whole batch at once.

use super::PainnWeights;
use crate::cpu::Cpu;
use crate::model::output::{
    energy_weight, forces_from_edges, scale_by_energy_weight, split_rows, structure_energies, BatchOutput,
};
use crate::neighbors::NeighborList;
use crate::structure::Batch;
use mlff_kernels::painn::{
    atom_scratch_len, context_atom, context_backward_atom, edge_scratch_len, message_backward_row, message_row,
    mixing_atom, mixing_backward_atom, readout_atom, readout_backward_atom,
};
use rayon::prelude::*;

/// Per-block states kept for the adjoint: the block input, its context and the
/// post-interaction state.
struct BlockStates {
    q_in: Vec<f32>,
    mu_in: Vec<f32>,
    x: Vec<f32>,
    q_mid: Vec<f32>,
    mu_mid: Vec<f32>,
}

/// `energy_weights` as in [`super::cpu::evaluate`].
pub fn evaluate(
    cpu: &Cpu,
    w: &PainnWeights,
    batch: &Batch,
    list: &NeighborList,
    forces: bool,
    energy_weights: Option<&[f32]>,
) -> BatchOutput {
    cpu.install(|| evaluate_in_pool(w, batch, list, forces, energy_weights))
}

fn evaluate_in_pool(
    w: &PainnWeights,
    batch: &Batch,
    list: &NeighborList,
    want_forces: bool,
    energy_weights: Option<&[f32]>,
) -> BatchOutput {
    let f = w.features();
    let k = w.config.n_rbf;
    let n = batch.num_atoms();
    let radial = w.radial();
    let edge_scratch = || vec![0.0f32; edge_scratch_len(f, k)];
    let atom_scratch = || vec![0.0f32; atom_scratch_len(f)];

    let mut q: Vec<f32> = Vec::with_capacity(n * f);
    for &z in &batch.numbers {
        q.extend_from_slice(&w.embedding[z as usize * f..(z as usize + 1) * f]);
    }
    let mut mu = vec![0.0f32; n * 3 * f];
    let mut blocks: Vec<BlockStates> = Vec::with_capacity(w.blocks.len());
    for t in 0..w.blocks.len() {
        let p = w.block(t);
        let mut x = vec![0.0f32; n * 3 * f];
        x.par_chunks_mut(3 * f)
            .zip(q.par_chunks(f))
            .for_each_init(atom_scratch, |scratch, (x_atom, q_atom)| context_atom(q_atom, &p, scratch, x_atom));
        let mut q_mid = vec![0.0f32; n * f];
        let mut mu_mid = vec![0.0f32; n * 3 * f];
        q_mid.par_chunks_mut(f).zip(mu_mid.par_chunks_mut(3 * f)).enumerate().for_each_init(
            edge_scratch,
            |scratch, (i, (q_out, mu_out))| {
                message_row(i, list.row(i), &list.src, &list.geom, &q, &mu, &x, &radial, &p, scratch, q_out, mu_out)
            },
        );
        let mut q_next = vec![0.0f32; n * f];
        let mut mu_next = vec![0.0f32; n * 3 * f];
        q_next
            .par_chunks_mut(f)
            .zip(mu_next.par_chunks_mut(3 * f))
            .zip(q_mid.par_chunks(f).zip(mu_mid.par_chunks(3 * f)))
            .for_each_init(atom_scratch, |scratch, ((q_out, mu_out), (qm, mm))| {
                mixing_atom(qm, mm, &p, scratch, q_out, mu_out)
            });
        let q_in = std::mem::replace(&mut q, q_next);
        let mu_in = std::mem::replace(&mut mu, mu_next);
        blocks.push(BlockStates { q_in, mu_in, x, q_mid, mu_mid });
    }

    let readout = w.readout();
    let atom_energies: Vec<f32> = q
        .par_chunks(f)
        .zip(batch.numbers.par_iter())
        .enumerate()
        .map_init(atom_scratch, |scratch, (i, (q_atom, &z))| {
            (readout_atom(q_atom, &readout, scratch) + w.atom_offset(z)) * energy_weight(energy_weights, i)
        })
        .collect();
    let energies = structure_energies(batch, &atom_energies);
    if !want_forces {
        return BatchOutput { atom_energies, energies, forces: None, edge_grad: None };
    }

    let mut gq = vec![0.0f32; n * f];
    gq.par_chunks_mut(f).zip(q.par_chunks(f)).enumerate().for_each_init(atom_scratch, |scratch, (i, (g, q_atom))| {
        readout_backward_atom(q_atom, &readout, scratch, g);
        scale_by_energy_weight(g, energy_weights, i);
    });
    let mut gmu: Option<Vec<f32>> = None;
    let mut edge_grad = vec![[0.0f32; 3]; list.num_edges()];
    for (t, block) in blocks.iter().enumerate().rev() {
        let p = w.block(t);
        let mut gq_mid = vec![0.0f32; n * f];
        let mut gmu_mid = vec![0.0f32; n * 3 * f];
        gq_mid.par_chunks_mut(f).zip(gmu_mid.par_chunks_mut(3 * f)).enumerate().for_each_init(
            atom_scratch,
            |scratch, (i, (gqm, gmm))| {
                let gmu_out = gmu.as_ref().map(|g| &g[i * 3 * f..(i + 1) * 3 * f]);
                mixing_backward_atom(
                    &block.q_mid[i * f..(i + 1) * f],
                    &block.mu_mid[i * 3 * f..(i + 1) * 3 * f],
                    &gq[i * f..(i + 1) * f],
                    gmu_out,
                    &p,
                    scratch,
                    gqm,
                    gmm,
                )
            },
        );
        let mut gx = vec![0.0f32; n * 3 * f];
        let mut gmu_in = vec![0.0f32; n * 3 * f];
        let rows = split_rows(&mut edge_grad, &list.row_ptr);
        gx.par_chunks_mut(3 * f).zip(gmu_in.par_chunks_mut(3 * f)).zip(rows.into_par_iter()).enumerate().for_each_init(
            edge_scratch,
            |scratch, (i, ((gxi, gmi), row_grad))| {
                message_backward_row(
                    i,
                    list.row(i),
                    &list.src,
                    &list.geom,
                    &block.mu_in,
                    &block.x,
                    &gq_mid,
                    &gmu_mid,
                    &radial,
                    &p,
                    scratch,
                    gxi,
                    gmi,
                    row_grad,
                )
            },
        );
        // ∂E/∂q of the block input: the residual plus the path through the context.
        let mut gq_in = gq_mid;
        gq_in.par_chunks_mut(f).enumerate().for_each_init(atom_scratch, |scratch, (i, g)| {
            context_backward_atom(&block.q_in[i * f..(i + 1) * f], &gx[i * 3 * f..(i + 1) * 3 * f], &p, scratch, g)
        });
        gq = gq_in;
        gmu = Some(gmu_in);
    }
    let forces = forces_from_edges(list, &edge_grad);
    BatchOutput { atom_energies, energies, forces: Some(forces), edge_grad: Some(edge_grad) }
}

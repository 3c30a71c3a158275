//! What an evaluation returns for a batch, and the steps every architecture's CPU path
//! ends with: forces from the per-edge gradients, energies summed per structure.

use crate::neighbors::NeighborList;
use crate::structure::Batch;
use rayon::prelude::*;

/// What one evaluation returns, for the whole batch.
pub struct BatchOutput {
    pub atom_energies: Vec<f32>,
    /// Σ atom energies per structure, accumulated in f64.
    pub energies: Vec<f64>,
    /// −∂E/∂R per atom (when asked for).
    pub forces: Option<Vec<[f32; 3]>>,
    /// ∂E/∂r per edge (when forces were asked for): the input of stress.
    pub edge_grad: Option<Vec<[f32; 3]>>,
}

/// `data` cut at the CSR row boundaries, so each row can be written by its own thread.
pub(crate) fn split_rows<'a, T>(mut data: &'a mut [T], row_ptr: &[u32]) -> Vec<&'a mut [T]> {
    let mut rows = Vec::with_capacity(row_ptr.len().saturating_sub(1));
    for w in row_ptr.windows(2) {
        let (row, rest) = data.split_at_mut((w[1] - w[0]) as usize);
        rows.push(row);
        data = rest;
    }
    rows
}

/// F_i = −∂E/∂R_i = Σ_{e in row i} (∂E/∂r_e − ∂E/∂r_rev(e)), since r_e = R_j − R_i.
pub(crate) fn forces_from_edges(list: &NeighborList, edge_grad: &[[f32; 3]]) -> Vec<[f32; 3]> {
    (0..list.row_ptr.len().saturating_sub(1))
        .into_par_iter()
        .map(|i| {
            let mut f = [0.0f32; 3];
            for e in list.row(i) {
                let back = &edge_grad[list.reverse[e] as usize];
                for x in 0..3 {
                    f[x] += edge_grad[e][x] - back[x];
                }
            }
            f
        })
        .collect()
}

/// Σ atom energies of each structure, accumulated in f64.
pub(crate) fn structure_energies(batch: &Batch, atom_energies: &[f32]) -> Vec<f64> {
    batch.offsets.windows(2).map(|r| atom_energies[r[0]..r[1]].iter().map(|&e| e as f64).sum()).collect()
}

/// w_i of Σ w_i E_i (1 without weights).
pub(crate) fn energy_weight(energy_weights: Option<&[f32]>, i: usize) -> f32 {
    energy_weights.map_or(1.0, |w| w[i])
}

/// Seeds the readout adjoint ∂E_i/∂s_i of atom i with its energy weight.
pub(crate) fn scale_by_energy_weight(g: &mut [f32], energy_weights: Option<&[f32]>, i: usize) {
    if let Some(w) = energy_weights {
        g.iter_mut().for_each(|x| *x *= w[i]);
    }
}

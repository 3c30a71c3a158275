//! Weighted evaluation: the energy Σ_i w_i E_i of one structure, with its exact
//! gradient over every atom, the virial and per-atom virials.
//!
//! This is what a domain-decomposed MD code needs (the LAMMPS pair style of
//! `lammps-plugin/`): each rank evaluates the atoms it owns together with its ghost
//! atoms as one structure, with weight 1 on the owned atoms and 0 on the ghosts. The
//! energy is then the owned atoms' share, and the forces on ghosts are the ranks'
//! contributions that the MD code sums back onto the owners. The weight enters as the
//! seed of the readout adjoint, so the cost is that of a plain evaluation.

use super::Model;
use crate::device::Device;
use crate::error::{invalid_input, Error, Result};
use crate::neighbors::NeighborList;
use crate::structure::{Batch, Structure};
use std::sync::Arc;

/// Whether [`Model::evaluate_weighted`] also computes per-atom virials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomVirials {
    Skip,
    Compute,
}

/// What [`Model::evaluate_weighted`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedPrediction {
    /// Σ_i w_i E_i (eV).
    pub energy: f64,
    /// w_i E_i per atom (eV).
    pub atom_energies: Vec<f64>,
    /// −∂(Σ_i w_i E_i)/∂R of every atom (eV/Å).
    pub forces: Vec<[f64; 3]>,
    /// The virial W_ab = −Σ_edges r_a ∂E/∂r_b (eV), for E = Σ w_i E_i: for a
    /// non-periodic structure W = Σ_i R_i ⊗ F_i; for a periodic one the stress is
    /// −W/V. Positive trace pushes outwards, as LAMMPS's virial.
    pub virial: [[f64; 3]; 3],
    /// Per atom, its half of the virial of every edge it is in (the edge j→i gives
    /// −½ r ⊗ ∂E/∂r to i and to j); they sum to `virial`. Not symmetric in general.
    pub atom_virials: Option<Vec<[[f64; 3]; 3]>>,
}

impl Model {
    /// Energy Σ_i w_i E_i of `structure` (`energy_weights`: one finite weight per atom,
    /// used in f32 as the model computes), its forces on every atom, the virial and,
    /// when asked, per-atom virials. With all weights 1 the energy and forces are
    /// those of [`Model::evaluate`], bit for bit.
    pub fn evaluate_weighted(
        &self,
        device: &Device,
        structure: &Structure,
        energy_weights: &[f64],
        atom_virials: AtomVirials,
    ) -> Result<WeightedPrediction> {
        if let Device::Set(set) = device {
            // One structure is never split: it runs on the set's first device.
            let first =
                set.members().first().ok_or_else(|| Error::Unsupported("internal: an empty device set".into()))?;
            return self.evaluate_weighted(first, structure, energy_weights, atom_virials);
        }
        if energy_weights.len() != structure.len() {
            return invalid_input!("{} energy weights for {} atoms", energy_weights.len(), structure.len());
        }
        if let Some((i, w)) = energy_weights.iter().enumerate().find(|(_, w)| !w.is_finite()) {
            return invalid_input!("atom {i} has a non-finite energy weight {w}");
        }
        let weights: Vec<f32> = energy_weights.iter().map(|&w| w as f32).collect();
        let batch = self.prepare_batch(std::slice::from_ref(structure))?;
        let want_atom_virials = atom_virials == AtomVirials::Compute;
        match device {
            Device::Set(_) => Err(Error::Unsupported("internal: a device set reached the one-device path".into())),
            Device::Gpu(g) => self.evaluate_weighted_gpu(g, &batch, &weights, want_atom_virials),
            Device::Cpu(cpu) => {
                let list = self.neighbors(&batch)?;
                let out = self.evaluate_cpu(cpu, &batch, &list, true, Some(&weights));
                let forces = out.forces.unwrap_or_default();
                let edge_grad = out.edge_grad.unwrap_or_default();
                Ok(WeightedPrediction {
                    energy: out.energies[0],
                    atom_energies: out.atom_energies.iter().map(|&e| e as f64).collect(),
                    forces: forces.iter().map(|f| f.map(|x| x as f64)).collect(),
                    virial: virial(&list, &edge_grad),
                    atom_virials: want_atom_virials.then(|| split_atom_virials(&list, &edge_grad)),
                })
            }
        }
    }

    fn evaluate_weighted_gpu(
        &self,
        g: &Arc<crate::gpu::Gpu>,
        batch: &Batch,
        weights: &[f32],
        atom_virials: bool,
    ) -> Result<WeightedPrediction> {
        let on_gpu = self.gpu_state.on(g);
        let mut state = on_gpu.layered.lock().unwrap_or_else(|p| p.into_inner());
        let same_gpu = matches!(&*state, Some((w, _)) if Arc::ptr_eq(w.gpu(), g));
        if !same_gpu {
            // Free the old device buffers before allocating the new ones.
            *state = None;
            *state = Some((super::gpu::GpuWeights::new(g.clone(), &self.weights)?, None));
        }
        let Some((gpu_weights, workspace)) = state.as_mut() else {
            return Err(Error::Unsupported("internal: no GPU weights".into()));
        };
        if !workspace.as_ref().is_some_and(|ws| ws.fits(batch)) {
            *workspace = None;
            *workspace = Some(super::gpu::Workspace::new(gpu_weights, batch)?);
        }
        let ws = workspace.as_mut().ok_or_else(|| Error::Unsupported("internal: no GPU workspace".into()))?;
        let out = ws.run_weighted(gpu_weights, &batch.positions, weights, atom_virials, batch)?;
        let virials = out.virials.unwrap_or_default();
        let sum = virials.first().copied().unwrap_or([0.0; 9]);
        Ok(WeightedPrediction {
            energy: out.energies.first().copied().unwrap_or(0.0),
            atom_energies: out.atom_energies.iter().map(|&e| e as f64).collect(),
            forces: out.forces.unwrap_or_default().iter().map(|f| f.map(|x| x as f64)).collect(),
            virial: std::array::from_fn(|a| std::array::from_fn(|b| -sum[3 * a + b])),
            atom_virials: out.atom_virials.map(|v| {
                v.iter().map(|w| std::array::from_fn(|a| std::array::from_fn(|b| -(w[3 * a + b] as f64)))).collect()
            }),
        })
    }
}

/// W = −Σ_e r_e ⊗ ∂E/∂r_e, accumulated in f64 in the order of `Model::evaluate`'s stress.
fn virial(list: &NeighborList, edge_grad: &[[f32; 3]]) -> [[f64; 3]; 3] {
    let mut w = [[0.0f64; 3]; 3];
    for (r, g) in list.geom.iter().zip(edge_grad) {
        for a in 0..3 {
            for b in 0..3 {
                w[a][b] += r[a] as f64 * g[b] as f64;
            }
        }
    }
    w.map(|row| row.map(|x| -x))
}

/// Per atom i: −½ Σ_{e in row i} r_e ⊗ (∂E/∂r_e − ∂E/∂r_rev(e)). Atom i receives the
/// edges of its row and sends their reverses (r_rev = −r_e), so this is its half of
/// every edge it is in; the GPU's `forces` kernel computes the same.
fn split_atom_virials(list: &NeighborList, edge_grad: &[[f32; 3]]) -> Vec<[[f64; 3]; 3]> {
    (0..list.row_ptr.len().saturating_sub(1))
        .map(|i| {
            let mut w = [[0.0f64; 3]; 3];
            for e in list.row(i) {
                let back = &edge_grad[list.reverse[e] as usize];
                let r = &list.geom[e];
                for a in 0..3 {
                    for b in 0..3 {
                        w[a][b] -= 0.5 * r[a] as f64 * (edge_grad[e][b] as f64 - back[b] as f64);
                    }
                }
            }
            w
        })
        .collect()
}

//! MD on the CPU: the per-atom and per-structure bodies of `mlff_kernels::md` between
//! calls of the CPU model, in the order the GPU kernels run them.

use super::{barostat_error, current_cells, kinetic_energies, Checkpoint, Plan, Report, ReportContext};
use crate::error::{invalid_input, Result};
use crate::model::Model;
use crate::neighbors::NeighborList;
use crate::structure::Batch;
use mlff_kernels::md::ensemble::{self, state};
use mlff_kernels::md::{self as integrate};

pub(super) struct CpuDynamics {
    model: Model,
    cpu: crate::cpu::Cpu,
    /// The batch at the current positions (relative to the structures' origins) and
    /// cells.
    current: Batch,
    step: u64,
    pub(super) velocities: Vec<[f32; 3]>,
    forces: Vec<[f32; 3]>,
    potential: Vec<f64>,
    virials: Vec<[f64; 9]>,
    ensemble: Vec<f64>,
    heat: Vec<f64>,
}

impl CpuDynamics {
    pub(super) fn new(
        model: &Model,
        cpu: &crate::cpu::Cpu,
        batch: &Batch,
        plan: Plan,
        ensemble: Vec<f64>,
    ) -> Result<Self> {
        let mut current = batch.clone();
        if plan.barostat {
            set_cells(&mut current, &ensemble);
        }
        let mut state = CpuDynamics {
            model: model.clone(),
            cpu: cpu.clone(),
            current,
            step: 0,
            velocities: vec![[0.0; 3]; batch.num_atoms()],
            forces: vec![[0.0; 3]; batch.num_atoms()],
            potential: vec![0.0; batch.num_structures()],
            virials: vec![[0.0; 9]; batch.num_structures()],
            ensemble,
            heat: vec![0.0; batch.num_atoms()],
        };
        state.evaluate()?;
        if plan.barostat {
            state.virials_into_ensemble();
        }
        Ok(state)
    }

    /// The virials of the current positions into the ensemble words (see
    /// `ensemble::barostat_after_forces`).
    fn virials_into_ensemble(&mut self) {
        for (s, w) in self.virials.iter().enumerate() {
            let words = &mut self.ensemble[s * state::WORDS..(s + 1) * state::WORDS];
            ensemble::barostat_after_forces(words, [w[0], w[4], w[8]]);
        }
    }

    /// Continues from `c` (made for this batch: `Checkpoint::batch` checked it).
    pub(super) fn restore(&mut self, c: &Checkpoint) {
        self.step = c.step;
        self.velocities = c.velocities.clone();
        self.forces = c.forces.clone();
        // An untracked heat (a fused-engine Langevin run) restarts from zero.
        self.heat = if c.heat.is_empty() { vec![0.0; c.num_atoms()] } else { c.heat.clone() };
        self.ensemble = c.ensemble.clone();
    }

    /// Forces, energies and virials at the current positions: the model on the batch
    /// as it is (no new origin, so the positions the integrator holds are the ones used).
    fn evaluate(&mut self) -> Result<()> {
        let batch = &self.current;
        if let Some(i) = batch.positions.iter().position(|p| p.iter().any(|x| !x.is_finite())) {
            return invalid_input!(
                "structure {}: atom {i} has a non-finite position: the integration diverged (try a smaller time step)",
                batch.structure_of[i]
            );
        }
        let list = self.model.neighbors(batch)?;
        crate::cpu::check_model_memory(&self.model, batch, &list, true)?;
        let out = self.model.evaluate_cpu(&self.cpu, batch, &list, true, None);
        self.forces = out.forces.unwrap_or_default();
        self.potential = out.energies;
        self.virials = virials(batch, &list, &out.edge_grad.unwrap_or_default());
        Ok(())
    }

    pub(super) fn step(&mut self, masses: &[f32], plan: &Plan) -> Result<()> {
        if plan.chain {
            self.chain_half_step(masses, plan);
        }
        let p = &plan.integrator;
        let positions = &mut self.current.positions;
        let atoms = positions.iter_mut().zip(&mut self.velocities).zip(&self.forces).zip(&mut self.heat).enumerate();
        if plan.barostat {
            for (i, (((x, v), f), heat)) in atoms {
                *heat += integrate::kick_drift_thermostat(x, v, *f, masses[i], p, self.step, i as u32);
            }
            self.barostat_step(masses, plan)?;
        } else {
            for (i, (((x, v), f), heat)) in atoms {
                *heat += integrate::kick_drift(x, v, *f, masses[i], p, self.step, i as u32);
            }
        }
        self.evaluate().map_err(|e| e.in_context(format!("MD step {}", self.step + 1)))?;
        if plan.barostat {
            self.virials_into_ensemble();
        }
        for (i, (v, f)) in self.velocities.iter_mut().zip(&self.forces).enumerate() {
            integrate::kick(v, *f, masses[i], p);
        }
        if plan.chain {
            self.chain_half_step(masses, plan);
        }
        self.step += 1;
        Ok(())
    }

    fn chain_half_step(&mut self, masses: &[f32], plan: &Plan) {
        let offsets = &self.current.offsets;
        for s in 0..self.current.num_structures() {
            let atoms = offsets[s]..offsets[s + 1];
            let twice_kinetic: f64 =
                atoms.clone().map(|i| 2.0 * integrate::kinetic_energy(self.velocities[i], masses[i])).sum();
            let dof = ensemble::degrees_of_freedom(atoms.len(), plan.momentum_conserved);
            let words = &mut self.ensemble[s * state::WORDS..(s + 1) * state::WORDS];
            let scale = ensemble::nhc_half_step(words, twice_kinetic, dof, &plan.params) as f32;
            for v in &mut self.velocities[atoms] {
                for x in v.iter_mut() {
                    *x *= scale;
                }
            }
        }
    }

    /// The barostat between the O and the second A of the step.
    fn barostat_step(&mut self, masses: &[f32], plan: &Plan) -> Result<()> {
        let offsets = self.current.offsets.clone();
        for s in 0..self.current.num_structures() {
            let atoms = offsets[s]..offsets[s + 1];
            let mut twice_kinetic = [0.0f64; 3];
            for i in atoms.clone() {
                let k = ensemble::twice_kinetic(self.velocities[i], masses[i]);
                for a in 0..3 {
                    twice_kinetic[a] += k[a];
                }
            }
            let noise = ensemble::barostat_noise(&plan.params, self.step, s as u32);
            let words = &mut self.ensemble[s * state::WORDS..(s + 1) * state::WORDS];
            if !ensemble::barostat_step(words, twice_kinetic, noise, plan.momentum_conserved, &plan.params).ok {
                return Err(barostat_error(s, self.step, words));
            }
            let scale = &words[state::SCALE..state::SCALE + 3];
            for i in atoms {
                ensemble::scale_atom(&mut self.current.positions[i], &mut self.velocities[i], scale);
                integrate::drift(&mut self.current.positions[i], &self.velocities[i], &plan.integrator);
            }
        }
        set_cells(&mut self.current, &self.ensemble);
        Ok(())
    }

    pub(super) fn show<T>(&self, context: &ReportContext, look: impl FnOnce(&Report) -> T) -> T {
        let batch = context.batch;
        let kinetic = kinetic_energies(batch, context.masses, &self.velocities);
        let cells = current_cells(batch, &self.ensemble, context.barostat.is_some());
        look(&Report {
            step: self.step,
            time: self.step as f64 * context.dt(),
            offsets: &batch.offsets,
            numbers: &batch.numbers,
            origins: &batch.origins,
            positions: &self.current.positions,
            velocities: &self.velocities,
            forces: &self.forces,
            potential: &self.potential,
            kinetic: &kinetic,
            virials: &self.virials,
            cells: &cells,
            pbc: &batch.pbc,
            masses: context.masses,
            ensemble: &self.ensemble,
            heat: &self.heat,
            settings: context.settings,
            barostat: context.barostat,
        })
    }
}

/// The batch's cells (f64 and f32) from the ensemble words.
fn set_cells(batch: &mut Batch, ensemble: &[f64]) {
    for s in 0..batch.num_structures() {
        if batch.cells64[s].is_some() {
            let w = &ensemble[s * state::WORDS + state::CELL..];
            batch.cells64[s] = Some(std::array::from_fn(|r| std::array::from_fn(|c| w[3 * r + c])));
            batch.cells[s] = std::array::from_fn(|k| w[k] as f32);
        }
    }
}

/// Σ_edges r ⊗ ∂E/∂r per structure (row-major), accumulated in f64 as the model's
/// stress is.
fn virials(batch: &Batch, list: &NeighborList, edge_grad: &[[f32; 3]]) -> Vec<[f64; 9]> {
    (0..batch.num_structures())
        .map(|s| {
            let mut w = [0.0f64; 9];
            if edge_grad.is_empty() {
                return w;
            }
            for i in batch.offsets[s]..batch.offsets[s + 1] {
                for e in list.row(i) {
                    let (r, g) = (&list.geom[e], &edge_grad[e]);
                    for a in 0..3 {
                        for b in 0..3 {
                            w[3 * a + b] += r[a] as f64 * g[b] as f64;
                        }
                    }
                }
            }
            w
        })
        .collect()
}

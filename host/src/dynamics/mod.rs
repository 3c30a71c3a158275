//! Molecular dynamics of a batch of independent structures (replicas): velocity
//! Verlet (constant energy) or Langevin dynamics (BAOAB) at constant temperature.
//!
//! On a GPU the state (positions, velocities, forces) stays on the device; a chunk
//! of steps between two reports is one CUDA-graph replay, and the report of one
//! chunk is copied out while the next chunk runs. On the CPU the same per-atom
//! integrator bodies step the atoms between calls of the CPU model.

mod fused;
mod gpu;
mod multi;

use crate::device::Device;
use crate::elements;
use crate::error::{invalid_input, Error, Result};
use crate::model::Model;
use crate::structure::{Batch, Structure};
use mlff_kernels::md::{self as integrate, Integrator, ACCELERATION_UNIT, BOLTZMANN};
use std::time::Instant;

/// What holds the temperature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Thermostat {
    /// None: constant energy (NVE), velocity Verlet.
    None,
    /// Langevin dynamics at `temperature` (K) with `friction` (1/fs).
    Langevin { temperature: f64, friction: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MdSettings {
    /// fs
    pub timestep: f64,
    pub thermostat: Thermostat,
    /// Seeds the thermostat's noise (and nothing else).
    pub seed: u64,
}

/// The state every `report_every` steps. Per-atom arrays span the whole batch;
/// `offsets[s]..offsets[s + 1]` are structure s's atoms.
pub struct Report<'a> {
    pub step: u64,
    /// fs since the start.
    pub time: f64,
    pub offsets: &'a [usize],
    pub numbers: &'a [u32],
    /// Each structure's origin (Å, f64): see [`Report::absolute_positions`].
    pub origins: &'a [[f64; 3]],
    /// Å, relative to the structure's origin (as `Batch::positions`): periodic
    /// structures start wrapped into the cell and are not re-wrapped as atoms move.
    pub positions: &'a [[f32; 3]],
    /// Å/fs
    pub velocities: &'a [[f32; 3]],
    /// eV/Å
    pub forces: &'a [[f32; 3]],
    /// Per structure, eV.
    pub potential: &'a [f64],
    pub kinetic: &'a [f64],
}

impl Report<'_> {
    pub fn num_structures(&self) -> usize {
        self.potential.len()
    }

    /// Structure `s`'s positions in Å, absolute: its origin added back in f64.
    pub fn absolute_positions(&self, s: usize) -> Vec<[f64; 3]> {
        crate::structure::absolute(self.origins[s], &self.positions[self.offsets[s]..self.offsets[s + 1]])
    }

    pub fn total_energy(&self, s: usize) -> f64 {
        self.potential[s] + self.kinetic[s]
    }

    /// Instantaneous temperature (K) from the kinetic energy, with 3N − 3 degrees
    /// of freedom (the centre of mass is at rest) for N > 1 atoms.
    pub fn temperature(&self, s: usize) -> f64 {
        let n = self.offsets[s + 1] - self.offsets[s];
        let dof = if n > 1 { 3 * n - 3 } else { 3 * n };
        if dof == 0 {
            0.0
        } else {
            2.0 * self.kinetic[s] / (dof as f64 * BOLTZMANN)
        }
    }
}

/// How long a run took.
#[derive(Clone, Copy, Debug)]
pub struct RunSummary {
    pub steps: u64,
    pub atoms: usize,
    pub seconds: f64,
}

impl RunSummary {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.seconds
    }

    pub fn atom_steps_per_second(&self) -> f64 {
        self.atoms as f64 * self.steps_per_second()
    }
}

/// A batch of structures being integrated.
pub struct Dynamics {
    batch: Batch,
    masses: Vec<f32>,
    integrator: Integrator,
    engine: Engine,
}

enum Engine {
    Cpu(Box<CpuState>),
    Gpu(Box<gpu::GpuDynamics>),
    /// Molecules on the fused engine: one launch per report.
    Fused(Box<fused::FusedDynamics>),
    /// A device set: one `Dynamics` per device (`multi`).
    Multi(Box<multi::MultiDynamics>),
}

struct CpuState {
    model: Model,
    cpu: crate::cpu::Cpu,
    /// The batch at the current positions (relative to the structures' origins).
    current: Batch,
    step: u64,
    velocities: Vec<[f32; 3]>,
    forces: Vec<[f32; 3]>,
    potential: Vec<f64>,
}

impl Dynamics {
    /// Starts from `structures` at rest (see [`Dynamics::set_velocities`],
    /// [`Dynamics::maxwell_boltzmann`]); evaluates the first forces.
    pub fn new(model: &Model, device: &Device, structures: &[Structure], settings: MdSettings) -> Result<Self> {
        Self::starting_at_atom(model, device, structures, settings, 0)
    }

    /// [`Dynamics::new`] for a part of a larger run whose first atom is atom
    /// `first_atom` of the run (the thermostat's noise follows the run's numbering).
    fn starting_at_atom(
        model: &Model,
        device: &Device,
        structures: &[Structure],
        settings: MdSettings,
        first_atom: u32,
    ) -> Result<Self> {
        let integrator = Integrator { first_atom, ..integrator(&settings)? };
        let batch = model.prepare_batch(structures)?;
        let masses = batch
            .numbers
            .iter()
            .map(|&z| {
                elements::mass(z)
                    .map(|m| m as f32)
                    .ok_or_else(|| Error::InvalidInput(format!("no mass known for element {z}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let engine = match device {
            Device::Set(_) => Engine::Multi(Box::new(multi::MultiDynamics::new(model, device, structures, settings)?)),
            Device::Gpu(g) if crate::model::fused::takes_batch(model, &batch)? => {
                Engine::Fused(Box::new(fused::FusedDynamics::new(g.clone(), model, &batch, &masses, integrator)?))
            }
            Device::Gpu(g) => {
                model.check_fits_gpu(g, &batch)?;
                Engine::Gpu(Box::new(gpu::GpuDynamics::new(g.clone(), model, &batch, &masses, integrator)?))
            }
            Device::Cpu(cpu) => {
                let mut state = CpuState {
                    model: model.clone(),
                    cpu: cpu.clone(),
                    current: batch.clone(),
                    step: 0,
                    velocities: vec![[0.0; 3]; batch.num_atoms()],
                    forces: vec![[0.0; 3]; batch.num_atoms()],
                    potential: vec![0.0; batch.num_structures()],
                };
                state.evaluate()?;
                Engine::Cpu(Box::new(state))
            }
        };
        Ok(Dynamics { batch, masses, integrator, engine })
    }

    pub fn num_atoms(&self) -> usize {
        self.batch.num_atoms()
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Sets every atom's velocity (Å/fs).
    pub fn set_velocities(&mut self, velocities: &[[f64; 3]]) -> Result<()> {
        if velocities.len() != self.num_atoms() {
            return invalid_input!("{} velocities for {} atoms", velocities.len(), self.num_atoms());
        }
        if let Some(k) = velocities.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
            return invalid_input!("velocity of atom {k} is not finite: {:?}", velocities[k]);
        }
        let v: Vec<[f32; 3]> = velocities.iter().map(|v| v.map(|x| x as f32)).collect();
        match &mut self.engine {
            Engine::Cpu(state) => state.velocities = v,
            Engine::Gpu(g) => g.set_velocities(&v)?,
            Engine::Fused(g) => g.set_velocities(&v)?,
            Engine::Multi(m) => m.set_velocities(&v)?,
        }
        Ok(())
    }

    /// Draws velocities from the Maxwell–Boltzmann distribution at `temperature` (K)
    /// and removes each structure's centre-of-mass motion.
    pub fn maxwell_boltzmann(&mut self, temperature: f64, seed: u64) -> Result<()> {
        check_temperature(temperature)?;
        let kt = BOLTZMANN * temperature;
        let mut v: Vec<[f64; 3]> = self
            .masses
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let sigma = (kt * ACCELERATION_UNIT as f64 / m as f64).sqrt();
                integrate::gaussians(seed, u64::MAX, i as u32).map(|g| sigma * g as f64)
            })
            .collect();
        for s in 0..self.batch.num_structures() {
            let atoms = self.batch.offsets[s]..self.batch.offsets[s + 1];
            if atoms.len() < 2 {
                continue;
            }
            let mass: f64 = atoms.clone().map(|i| self.masses[i] as f64).sum();
            let momentum: [f64; 3] =
                std::array::from_fn(|a| atoms.clone().map(|i| self.masses[i] as f64 * v[i][a]).sum::<f64>());
            for i in atoms {
                for a in 0..3 {
                    v[i][a] -= momentum[a] / mass;
                }
            }
        }
        self.set_velocities(&v)
    }

    /// Shows the current state to `look` (positions, energies, …).
    pub fn current<T>(&mut self, look: impl FnOnce(&Report) -> T) -> Result<T> {
        let dt = self.integrator.dt as f64;
        let batch = &self.batch;
        match &mut self.engine {
            Engine::Cpu(state) => {
                let kinetic = kinetic_energies(batch, &self.masses, &state.velocities);
                Ok(look(&state.report(batch, dt, &kinetic)))
            }
            Engine::Gpu(g) => g.current(batch, dt, look),
            Engine::Fused(g) => g.current(batch, dt, look),
            Engine::Multi(m) => m.current(batch, dt, look),
        }
    }

    /// Integrates `steps` steps, showing the state to `on_report` every `report_every`
    /// steps and after the last. An error from `on_report` stops the run.
    pub fn run(
        &mut self,
        steps: u64,
        report_every: u64,
        mut on_report: impl FnMut(&Report) -> Result<()>,
    ) -> Result<RunSummary> {
        if report_every == 0 {
            return invalid_input!("report_every must be at least 1");
        }
        let start = Instant::now();
        let dt = self.integrator.dt as f64;
        match &mut self.engine {
            Engine::Cpu(state) => {
                for k in 1..=steps {
                    state.step(&self.masses, &self.integrator)?;
                    if k % report_every == 0 || k == steps {
                        let kinetic = kinetic_energies(&self.batch, &self.masses, &state.velocities);
                        on_report(&state.report(&self.batch, dt, &kinetic))?;
                    }
                }
            }
            Engine::Gpu(g) => g.run(&self.batch, dt, steps, report_every, &mut on_report)?,
            Engine::Fused(g) => g.run(&self.batch, dt, steps, report_every, &mut on_report)?,
            Engine::Multi(m) => m.run(&self.batch, dt, steps, report_every, &mut on_report)?,
        }
        Ok(RunSummary { steps, atoms: self.num_atoms(), seconds: start.elapsed().as_secs_f64() })
    }
}

impl Dynamics {
    /// Test hook: resizes the GPU edge buffers (below the need, the next step
    /// overflows and the run must recover). No effect on the CPU.
    #[doc(hidden)]
    pub fn resize_edge_buffers(&mut self, capacity: usize) -> Result<()> {
        match &mut self.engine {
            Engine::Gpu(g) => g.resize_edge_buffers(capacity),
            Engine::Fused(_) => Ok(()),
            Engine::Cpu(_) => Ok(()),
            Engine::Multi(m) => m.resize_edge_buffers(capacity),
        }
    }
}

fn integrator(settings: &MdSettings) -> Result<Integrator> {
    let dt = settings.timestep;
    if !(dt > 0.0 && dt <= 20.0) {
        return invalid_input!("time step {dt} fs is outside (0, 20] fs");
    }
    Ok(match settings.thermostat {
        Thermostat::None => Integrator::verlet(dt as f32),
        Thermostat::Langevin { temperature, friction } => {
            check_temperature(temperature)?;
            if !(friction >= 0.0 && friction.is_finite()) {
                return invalid_input!("friction {friction} 1/fs must be finite and not negative");
            }
            Integrator::langevin(dt as f32, temperature, friction, settings.seed)
        }
    })
}

fn check_temperature(temperature: f64) -> Result<()> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return invalid_input!("temperature {temperature} K must be finite and not negative");
    }
    Ok(())
}

fn kinetic_energies(batch: &Batch, masses: &[f32], velocities: &[[f32; 3]]) -> Vec<f64> {
    (0..batch.num_structures())
        .map(|s| {
            (batch.offsets[s]..batch.offsets[s + 1]).map(|i| integrate::kinetic_energy(velocities[i], masses[i])).sum()
        })
        .collect()
}

impl CpuState {
    /// Forces and energies at the current positions: the model on the batch as it
    /// is (no new origin, so the positions the integrator holds are the ones used).
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
        Ok(())
    }

    fn step(&mut self, masses: &[f32], p: &Integrator) -> Result<()> {
        let positions = &mut self.current.positions;
        for (i, ((x, v), f)) in positions.iter_mut().zip(&mut self.velocities).zip(&self.forces).enumerate() {
            integrate::kick_drift(x, v, *f, masses[i], p, self.step, i as u32);
        }
        self.evaluate().map_err(|e| e.in_context(format!("MD step {}", self.step + 1)))?;
        for (i, (v, f)) in self.velocities.iter_mut().zip(&self.forces).enumerate() {
            integrate::kick(v, *f, masses[i], p);
        }
        self.step += 1;
        Ok(())
    }

    fn report<'a>(&'a self, batch: &'a Batch, dt: f64, kinetic: &'a [f64]) -> Report<'a> {
        Report {
            step: self.step,
            time: self.step as f64 * dt,
            offsets: &batch.offsets,
            numbers: &batch.numbers,
            origins: &batch.origins,
            positions: &self.current.positions,
            velocities: &self.velocities,
            forces: &self.forces,
            potential: &self.potential,
            kinetic,
        }
    }
}

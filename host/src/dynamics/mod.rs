//! Molecular dynamics of a batch of independent structures (replicas): velocity
//! Verlet (NVE), Langevin dynamics (BAOAB) or a Nosé–Hoover chain (NVT), and for
//! periodic structures the stochastic cell rescaling barostat (NPT, isotropic or
//! anisotropic) on top of Langevin or the chain.
//!
//! On a GPU the state (positions, velocities, forces, thermostat and barostat state)
//! stays on the device; a chunk of steps between two reports is one CUDA-graph replay,
//! and the report of one chunk is copied out while the next chunk runs. On the CPU the
//! same per-atom and per-structure bodies (`mlff_kernels::md`) step the atoms between
//! calls of the CPU model.
//!
//! One step, per structure (the chain's halves only with a chain, the barostat only
//! with one):
//! chain ½ · B · A · O · barostat (cell, positions, velocities) · A · forces · B · chain ½.
//! The barostat uses the virial of the step's starting positions and the kinetic
//! energy after O, as GROMACS's C-rescale does with the previous step's pressure.
//!
//! A run can be continued exactly from a [`Checkpoint`] (see [`checkpoint`]).

pub mod checkpoint;
mod cpu;
mod fused;
mod gpu;
mod multi;
pub mod trajectory;

pub use checkpoint::Checkpoint;

use crate::device::Device;
use crate::elements;
use crate::error::{invalid_input, Error, Result};
use crate::model::Model;
use crate::structure::{Batch, Structure};
use mlff_kernels::md::ensemble::{self, coupling, state, EnsembleParams, MAX_CHAIN};
use mlff_kernels::md::{self as integrate, Integrator, ACCELERATION_UNIT, BOLTZMANN};
use std::time::Instant;

/// 1 bar in eV/Å³ (10⁵ Pa).
pub const BAR: f64 = 6.241_509_074_460_763e-7;

/// What holds the temperature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Thermostat {
    /// None: constant energy (NVE), velocity Verlet.
    None,
    /// Langevin dynamics at `temperature` (K) with `friction` (1/fs).
    Langevin { temperature: f64, friction: f64 },
    /// A Nosé–Hoover chain at `temperature` (K), as ASE's `NoseHooverChainNVT`:
    /// `damping` is its τ (fs; ASE's `tdamp`, ~100 time steps), `chain` the number of
    /// thermostats (1 to 8; ASE's `tchain`, 3), `loops` the Suzuki–Yoshida repetitions
    /// (ASE's `tloop`, 1). Unlike ASE, whose chain drives 3N degrees of freedom, ours
    /// drives 3N − 3: the centre of mass is at rest and the chain keeps it so.
    NoseHooverChain { temperature: f64, damping: f64, chain: usize, loops: usize },
}

impl Thermostat {
    /// The bath temperature (K), if any.
    pub fn temperature(&self) -> Option<f64> {
        match *self {
            Thermostat::None => None,
            Thermostat::Langevin { temperature, .. } | Thermostat::NoseHooverChain { temperature, .. } => {
                Some(temperature)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MdSettings {
    /// fs
    pub timestep: f64,
    pub thermostat: Thermostat,
    /// Seeds the thermostat's and the barostat's noise (and nothing else).
    pub seed: u64,
}

/// How the barostat moves the cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coupling {
    /// One factor for all three axes: the volume changes, the shape stays.
    Isotropic,
    /// x, y and z each scaled by its own factor from P_xx, P_yy, P_zz (LAMMPS's
    /// `aniso`): lengths and angles change, but there is no shear.
    Anisotropic,
}

/// Stochastic cell rescaling (Bernetti & Bussi 2020): samples the NPT ensemble at the
/// thermostat's temperature. Every structure must be periodic along all three axes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Barostat {
    /// Target pressure, eV/Å³ (see [`BAR`]).
    pub pressure: f64,
    /// Relaxation time of the volume τ_p, fs (GROMACS's C-rescale uses ~1–5 ps).
    pub time_constant: f64,
    /// Isothermal compressibility β_T, Å³/eV (water: 4.5e-5 /bar = 72 Å³/eV): with
    /// τ_p it sets how fast the volume follows the pressure; the ensemble sampled does
    /// not depend on it.
    pub compressibility: f64,
    pub coupling: Coupling,
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
    /// Per structure, the virial Σ_edges r ⊗ ∂E/∂r (eV, row-major; zero on the fused
    /// engine, which runs molecules only).
    pub virials: &'a [[f64; 9]],
    /// Per structure, the cell (moved by the barostat) and the periodicity.
    pub cells: &'a [Option<[[f64; 3]; 3]>],
    pub pbc: &'a [[bool; 3]],
    /// Per atom, amu.
    pub masses: &'a [f32],
    /// Per structure, the ensemble state words (`mlff_kernels::md::ensemble::state`).
    pub ensemble: &'a [f64],
    /// Per atom, the kinetic energy the Langevin thermostat added so far (eV); empty
    /// where it is not tracked.
    pub heat: &'a [f64],
    pub settings: &'a MdSettings,
    pub barostat: Option<&'a Barostat>,
}

impl Report<'_> {
    pub fn num_structures(&self) -> usize {
        self.potential.len()
    }

    pub fn num_atoms(&self, s: usize) -> usize {
        self.offsets[s + 1] - self.offsets[s]
    }

    /// Structure `s`'s positions in Å, absolute: its origin added back in f64.
    pub fn absolute_positions(&self, s: usize) -> Vec<[f64; 3]> {
        crate::structure::absolute(self.origins[s], &self.positions[self.offsets[s]..self.offsets[s + 1]])
    }

    pub fn total_energy(&self, s: usize) -> f64 {
        self.potential[s] + self.kinetic[s]
    }

    /// Degrees of freedom of structure `s`: 3N − 3 where the centre of mass is at rest
    /// (NVE and the chain, after [`Dynamics::maxwell_boltzmann`]), 3N under Langevin
    /// (its noise moves the centre of mass too), 3 for a lone atom.
    pub fn degrees_of_freedom(&self, s: usize) -> f64 {
        ensemble::degrees_of_freedom(self.num_atoms(s), momentum_conserved(&self.settings.thermostat))
    }

    /// Instantaneous temperature (K): 2K / (N_f k_B).
    pub fn temperature(&self, s: usize) -> f64 {
        let dof = self.degrees_of_freedom(s);
        if self.num_atoms(s) == 0 {
            0.0
        } else {
            2.0 * self.kinetic[s] / (dof * BOLTZMANN)
        }
    }

    /// Structure `s`'s cell where it is periodic.
    pub fn cell(&self, s: usize) -> Option<[[f64; 3]; 3]> {
        self.cells[s].filter(|_| self.pbc[s].iter().any(|&p| p))
    }

    /// Volume of the periodic cell (Å³).
    pub fn volume(&self, s: usize) -> Option<f64> {
        self.cell(s).map(|c| crate::structure::determinant(&c).abs())
    }

    /// Instantaneous pressure (eV/Å³) of a periodic structure: (N k_B T − tr W/3)/V
    /// with T the instantaneous temperature. Under Langevin that is (2K − tr W)/(3V),
    /// as ASE's `get_stress(include_ideal_gas=True)` gives it; where the centre of mass
    /// is at rest the kinetic part counts the N_f = 3N − 3 degrees of freedom that move,
    /// so that its mean is the ensemble's N k_B T / V.
    pub fn pressure(&self, s: usize) -> Option<f64> {
        let volume = self.volume(s)?;
        let w = &self.virials[s];
        let ideal = self.num_atoms(s) as f64 * BOLTZMANN * self.temperature(s);
        Some((ideal - (w[0] + w[4] + w[8]) / 3.0) / volume)
    }

    /// The quantity the integration conserves (eV), whose drift measures its error:
    /// the total energy, plus the chain's energy, plus P₀V minus what the barostat
    /// exchanged with its bath, minus what the Langevin thermostat added. `None` where
    /// the heat is not tracked (every engine tracks it today).
    pub fn conserved(&self, s: usize) -> Option<f64> {
        let mut e = self.total_energy(s);
        let words = &self.ensemble[s * state::WORDS..(s + 1) * state::WORDS];
        match self.settings.thermostat {
            Thermostat::Langevin { .. } => {
                if self.heat.is_empty() {
                    return None;
                }
                e -= self.heat[self.offsets[s]..self.offsets[s + 1]].iter().sum::<f64>();
            }
            Thermostat::NoseHooverChain { .. } => {
                let params = ensemble_params(self.settings, self.barostat);
                e += ensemble::nhc_energy(words, self.degrees_of_freedom(s), &params);
            }
            Thermostat::None => {}
        }
        if let Some(b) = self.barostat {
            e += b.pressure * self.volume(s).unwrap_or(0.0) - words[state::HEAT];
        }
        Some(e)
    }

    /// Everything needed to continue the run exactly from here.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::from_report(self)
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

/// What the engines integrate: the per-atom integrator, the ensemble's constants and
/// which of its parts run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub integrator: Integrator,
    pub params: EnsembleParams,
    pub chain: bool,
    pub barostat: bool,
    pub momentum_conserved: bool,
}

/// A batch of structures being integrated.
pub struct Dynamics {
    batch: Batch,
    masses: Vec<f32>,
    settings: MdSettings,
    barostat: Option<Barostat>,
    plan: Plan,
    engine: Engine,
}

enum Engine {
    Cpu(Box<cpu::CpuDynamics>),
    Gpu(Box<gpu::GpuDynamics>),
    /// Molecules on the fused engine: one launch per report.
    Fused(Box<fused::FusedDynamics>),
    /// A device set: one `Dynamics` per device (`multi`).
    Multi(Box<multi::MultiDynamics>),
}

impl Dynamics {
    /// Starts from `structures` at rest (see [`Dynamics::set_velocities`],
    /// [`Dynamics::maxwell_boltzmann`]); evaluates the first forces.
    pub fn new(model: &Model, device: &Device, structures: &[Structure], settings: MdSettings) -> Result<Self> {
        Self::starting_at_atom(model, device, structures, settings, None, 0)
    }

    /// As [`Dynamics::new`], at constant pressure: every structure must be periodic
    /// along all three axes, and the thermostat Langevin or a chain.
    pub fn with_barostat(
        model: &Model,
        device: &Device,
        structures: &[Structure],
        settings: MdSettings,
        barostat: Barostat,
    ) -> Result<Self> {
        check_barostat(&barostat, &settings)?;
        if let Some((k, _)) = structures.iter().enumerate().find(|(_, s)| !(s.cell.is_some() && s.pbc == [true; 3])) {
            return invalid_input!(
                "structure {k} is not periodic along all three axes: the barostat needs a periodic cell"
            );
        }
        Self::starting_at_atom(model, device, structures, settings, Some(barostat), 0)
    }

    /// [`Dynamics::new`] or [`Dynamics::with_barostat`] for a part of a larger run whose
    /// first atom is atom `first_atom` of the run (the thermostat's noise follows the
    /// run's numbering); on a device set, one such part per device.
    fn starting_at_atom(
        model: &Model,
        device: &Device,
        structures: &[Structure],
        settings: MdSettings,
        barostat: Option<Barostat>,
        first_atom: u32,
    ) -> Result<Self> {
        let batch = model.prepare_batch(structures)?;
        let parts = Parts { structures: Some(structures), first_atom };
        Self::start(model, device, batch, settings, barostat, None, parts)
    }

    /// Continues the run `checkpoint` was taken from, exactly: the same model on the
    /// same kind of device continues bit for bit as the run would have gone on.
    pub fn from_checkpoint(model: &Model, device: &Device, checkpoint: &Checkpoint) -> Result<Self> {
        if let Device::Set(_) = device {
            return Err(Error::Unsupported(
                "a checkpoint continues on one device; restart it on one GPU (or the CPU)".into(),
            ));
        }
        let batch = checkpoint.batch(model)?;
        if let Some(b) = &checkpoint.barostat {
            check_barostat(b, &checkpoint.settings)?;
        }
        let parts = Parts { structures: None, first_atom: 0 };
        Self::start(model, device, batch, checkpoint.settings, checkpoint.barostat, Some(checkpoint), parts)
    }

    fn start(
        model: &Model,
        device: &Device,
        batch: Batch,
        settings: MdSettings,
        barostat: Option<Barostat>,
        checkpoint: Option<&Checkpoint>,
        parts: Parts,
    ) -> Result<Self> {
        let mut plan = plan(&settings, barostat.as_ref())?;
        plan.integrator.first_atom = parts.first_atom;
        let masses = batch
            .numbers
            .iter()
            .map(|&z| {
                elements::mass(z)
                    .map(|m| m as f32)
                    .ok_or_else(|| Error::InvalidInput(format!("no mass known for element {z}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let ensemble = match checkpoint {
            Some(c) => c.ensemble.clone(),
            None => initial_ensemble(&batch),
        };
        // The fused engine integrates NVE and Langevin only.
        let fused_ensemble = !plan.chain && !plan.barostat;
        let mut engine = match device {
            Device::Set(_) => {
                let structures = parts
                    .structures
                    .ok_or_else(|| Error::Unsupported("internal: a device set needs the structures to split".into()))?;
                Engine::Multi(Box::new(multi::MultiDynamics::new(model, device, structures, settings, barostat)?))
            }
            Device::Gpu(g) if fused_ensemble && crate::model::fused::takes_batch(model, &batch)? => {
                Engine::Fused(Box::new(fused::FusedDynamics::new(g.clone(), model, &batch, &masses, plan.integrator)?))
            }
            Device::Gpu(g) => {
                model.check_fits_gpu(g, &batch)?;
                Engine::Gpu(Box::new(gpu::GpuDynamics::new(g.clone(), model, &batch, &masses, plan, &ensemble)?))
            }
            Device::Cpu(c) => Engine::Cpu(Box::new(cpu::CpuDynamics::new(model, c, &batch, plan, ensemble)?)),
        };
        if let Some(c) = checkpoint {
            c.check_energies(&engine_potential(&mut engine, &batch, &masses, &settings, barostat.as_ref())?)?;
            match &mut engine {
                Engine::Cpu(e) => e.restore(c),
                Engine::Gpu(e) => e.restore(c)?,
                Engine::Fused(e) => e.restore(c)?,
                // `from_checkpoint` refuses device sets.
                Engine::Multi(_) => return Err(Error::Unsupported("a checkpoint continues on one device".into())),
            }
        }
        Ok(Dynamics { batch, masses, settings, barostat, plan, engine })
    }

    pub fn num_atoms(&self) -> usize {
        self.batch.num_atoms()
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    pub fn settings(&self) -> &MdSettings {
        &self.settings
    }

    pub fn barostat(&self) -> Option<&Barostat> {
        self.barostat.as_ref()
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
        let context = ReportContext {
            batch: &self.batch,
            masses: &self.masses,
            settings: &self.settings,
            barostat: self.barostat.as_ref(),
        };
        match &mut self.engine {
            Engine::Cpu(state) => Ok(state.show(&context, look)),
            Engine::Gpu(g) => g.current(&context, look),
            Engine::Fused(g) => g.current(&context, look),
            Engine::Multi(m) => m.current(&context, look),
        }
    }

    /// A checkpoint of the current state.
    pub fn checkpoint(&mut self) -> Result<Checkpoint> {
        self.current(|r| r.checkpoint())
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
        let context = ReportContext {
            batch: &self.batch,
            masses: &self.masses,
            settings: &self.settings,
            barostat: self.barostat.as_ref(),
        };
        match &mut self.engine {
            Engine::Cpu(state) => {
                for k in 1..=steps {
                    state.step(&self.masses, &self.plan)?;
                    if k % report_every == 0 || k == steps {
                        state.show(&context, |r| on_report(r))?;
                    }
                }
            }
            Engine::Gpu(g) => g.run(&context, steps, report_every, &mut on_report)?,
            Engine::Fused(g) => g.run(&context, steps, report_every, &mut on_report)?,
            Engine::Multi(m) => m.run(&context, steps, report_every, &mut on_report)?,
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

    /// Which engine runs the batch: "cpu", "gpu" (layered) or "fused".
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Cpu(_) => "cpu",
            Engine::Gpu(_) => "gpu",
            Engine::Fused(_) => "fused",
            Engine::Multi(_) => "device set",
        }
    }
}

/// Where a `Dynamics` sits in a run split over a device set: the structures it was
/// made from (a set splits them further) and the run's index of its first atom.
struct Parts<'a> {
    structures: Option<&'a [Structure]>,
    first_atom: u32,
}

/// What every engine's reports share.
pub(crate) struct ReportContext<'a> {
    pub batch: &'a Batch,
    pub masses: &'a [f32],
    pub settings: &'a MdSettings,
    pub barostat: Option<&'a Barostat>,
}

impl ReportContext<'_> {
    fn dt(&self) -> f64 {
        self.settings.timestep as f32 as f64
    }
}

/// The potential energies of the freshly made engine (to check a checkpoint's model).
fn engine_potential(
    engine: &mut Engine,
    batch: &Batch,
    masses: &[f32],
    settings: &MdSettings,
    barostat: Option<&Barostat>,
) -> Result<Vec<f64>> {
    let context = ReportContext { batch, masses, settings, barostat };
    let look = |r: &Report| r.potential.to_vec();
    match engine {
        Engine::Cpu(e) => Ok(e.show(&context, look)),
        Engine::Gpu(e) => e.current(&context, look),
        Engine::Fused(e) => e.current(&context, look),
        Engine::Multi(e) => e.current(&context, look),
    }
}

fn momentum_conserved(thermostat: &Thermostat) -> bool {
    !matches!(thermostat, Thermostat::Langevin { .. })
}

/// Every structure's ensemble words at the start: its cell and volume.
fn initial_ensemble(batch: &Batch) -> Vec<f64> {
    let mut words = vec![0.0; batch.num_structures() * state::WORDS];
    for (s, cell) in batch.cells64.iter().enumerate() {
        if let Some(c) = cell {
            let w = &mut words[s * state::WORDS..(s + 1) * state::WORDS];
            for k in 0..9 {
                w[state::CELL + k] = c[k / 3][k % 3];
            }
            w[state::START_VOLUME] = crate::structure::determinant(c).abs();
            w[state::SCALE..state::SCALE + 3].copy_from_slice(&[1.0; 3]);
        }
    }
    words
}

/// The ensemble's constants.
pub(crate) fn ensemble_params(settings: &MdSettings, barostat: Option<&Barostat>) -> EnsembleParams {
    let mut p = EnsembleParams { dt: settings.timestep as f32 as f64, seed: settings.seed, ..Default::default() };
    if let Some(t) = settings.thermostat.temperature() {
        p.kt = BOLTZMANN * t;
    }
    if let Thermostat::NoseHooverChain { damping, chain, loops, .. } = settings.thermostat {
        p.damping = damping;
        p.chain = chain as u32;
        p.loops = loops as u32;
    }
    if let Some(b) = barostat {
        p.coupling = match b.coupling {
            Coupling::Isotropic => coupling::ISOTROPIC,
            Coupling::Anisotropic => coupling::ANISOTROPIC,
        };
        p.pressure = b.pressure;
        p.compressibility_rate = b.compressibility / b.time_constant;
    }
    p
}

fn plan(settings: &MdSettings, barostat: Option<&Barostat>) -> Result<Plan> {
    let dt = settings.timestep;
    if !(dt > 0.0 && dt <= 20.0) {
        return invalid_input!("time step {dt} fs is outside (0, 20] fs");
    }
    let integrator = match settings.thermostat {
        Thermostat::None => Integrator::verlet(dt as f32),
        Thermostat::Langevin { temperature, friction } => {
            check_temperature(temperature)?;
            if !(friction >= 0.0 && friction.is_finite()) {
                return invalid_input!("friction {friction} 1/fs must be finite and not negative");
            }
            Integrator::langevin(dt as f32, temperature, friction, settings.seed)
        }
        Thermostat::NoseHooverChain { temperature, damping, chain, loops } => {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return invalid_input!(
                    "the Nosé–Hoover chain's temperature {temperature} K must be positive and finite"
                );
            }
            if !(damping > 0.0 && damping.is_finite()) {
                return invalid_input!(
                    "the Nosé–Hoover chain's damping time {damping} fs must be positive and finite (~100 time steps)"
                );
            }
            if !(1..=MAX_CHAIN).contains(&chain) {
                return invalid_input!("a Nosé–Hoover chain of {chain} thermostats: 1 to {MAX_CHAIN}");
            }
            if !(1..=64).contains(&loops) {
                return invalid_input!("{loops} Suzuki–Yoshida loops of the Nosé–Hoover chain: 1 to 64");
            }
            Integrator::verlet(dt as f32)
        }
    };
    if let Some(b) = barostat {
        check_barostat(b, settings)?;
    }
    Ok(Plan {
        integrator,
        params: ensemble_params(settings, barostat),
        chain: matches!(settings.thermostat, Thermostat::NoseHooverChain { .. }),
        barostat: barostat.is_some(),
        momentum_conserved: momentum_conserved(&settings.thermostat),
    })
}

fn check_barostat(b: &Barostat, settings: &MdSettings) -> Result<()> {
    match settings.thermostat.temperature() {
        Some(t) if t > 0.0 => {}
        _ => {
            return invalid_input!(
                "the barostat needs a thermostat at a positive temperature (Langevin or a Nosé–Hoover chain): its \
                 noise is the bath's"
            )
        }
    }
    if !b.pressure.is_finite() {
        return invalid_input!("the barostat's pressure {} eV/Å³ is not finite", b.pressure);
    }
    if !(b.time_constant > 0.0 && b.time_constant.is_finite()) {
        return invalid_input!("the barostat's time constant {} fs must be positive and finite", b.time_constant);
    }
    if !(b.compressibility > 0.0 && b.compressibility.is_finite()) {
        return invalid_input!(
            "the barostat's compressibility {} Å³/eV must be positive and finite",
            b.compressibility
        );
    }
    Ok(())
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

/// Every structure's cell: from the ensemble words where the barostat moves it, else
/// as the batch has it.
fn current_cells(batch: &Batch, ensemble: &[f64], barostat: bool) -> Vec<Option<[[f64; 3]; 3]>> {
    (0..batch.num_structures())
        .map(|s| match batch.cells64[s] {
            Some(_) if barostat => {
                let w = &ensemble[s * state::WORDS + state::CELL..];
                Some(std::array::from_fn(|r| std::array::from_fn(|c| w[3 * r + c])))
            }
            other => other,
        })
        .collect()
}

/// The barostat's refusal as an error.
fn barostat_error(s: usize, step: u64, words: &[f64]) -> Error {
    let volume = ensemble::determinant(&words[state::CELL..state::CELL + 9]).abs();
    Error::InvalidInput(format!(
        "structure {s}: MD step {}: the barostat would take the volume ({volume:.1} Å³) outside [¼, 4] × its start \
         ({:.1} Å³): the pressure is far from the target or the coupling too strong (a longer time constant or a \
         smaller compressibility)",
        step + 1,
        words[state::START_VOLUME]
    ))
}

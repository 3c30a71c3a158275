//! MD of molecules on the fused engine: one launch integrates a whole chunk of steps
//! between two reports (`kernels::fused::student::md`: each thread block owns one
//! structure and runs drift, all-pairs edges, the model, its adjoint and the kick for
//! every step with no host involvement). The state stays on the GPU; a report copies
//! it out.

use super::{Checkpoint, Report, ReportContext};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::fused::{self, block_threads, explain_fault, scratch_offsets, FusedStudentGpu, FusedStudentWeights};
use crate::model::Model;
use crate::structure::Batch;
use cudarc::driver::{CudaSlice, LaunchConfig};
use mlff_kernels::md::ensemble::state;
use mlff_kernels::md::{kinetic_energy, Integrator};
use std::sync::Arc;

pub(super) struct FusedDynamics {
    gpu: Arc<Gpu>,
    engine: FusedStudentGpu,
    offsets: CudaSlice<u32>,
    scratch_offsets: CudaSlice<u64>,
    numbers: CudaSlice<u32>,
    positions: CudaSlice<[f32; 3]>,
    velocities: CudaSlice<[f32; 3]>,
    forces: CudaSlice<[f32; 3]>,
    masses: CudaSlice<f32>,
    atom_energies: CudaSlice<f32>,
    energies: CudaSlice<f64>,
    faults: CudaSlice<u32>,
    fault_steps: CudaSlice<u64>,
    /// Per atom: the kinetic energy the Langevin thermostat added (eV).
    heat: CudaSlice<f64>,
    integrator: Integrator,
    masses_host: Vec<f32>,
    step: u64,
    threads: u32,
}

impl FusedDynamics {
    pub(super) fn new(
        gpu: Arc<Gpu>,
        model: &Model,
        batch: &Batch,
        masses: &[f32],
        integrator: Integrator,
    ) -> Result<Self> {
        let weights = model
            .student_weights()
            .ok_or_else(|| Error::Unsupported("the fused MD engine runs architecture 1 only".into()))?;
        let mut engine = FusedStudentGpu::new(gpu.clone(), &FusedStudentWeights::new(weights)?)?;
        let (n, s) = (batch.num_atoms(), batch.num_structures());
        let (scratch_offsets_host, total) = scratch_offsets(batch, engine.hidden(), engine.num_blocks())?;
        engine.reserve_scratch(total)?;
        let offsets: Vec<u32> = batch.offsets.iter().map(|&o| o as u32).collect();
        let largest = batch.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let mut md = FusedDynamics {
            offsets: gpu.upload(&offsets)?,
            scratch_offsets: gpu.upload(&scratch_offsets_host)?,
            numbers: gpu.upload(if n == 0 { &[0u32][..] } else { &batch.numbers })?,
            positions: gpu.upload(if n == 0 { &[[0.0f32; 3]][..] } else { &batch.positions })?,
            velocities: gpu.zeros(n.max(1))?,
            forces: gpu.zeros(n.max(1))?,
            masses: gpu.upload(if n == 0 { &[1.0f32][..] } else { masses })?,
            atom_energies: gpu.zeros(n.max(1))?,
            energies: gpu.zeros(s.max(1))?,
            faults: gpu.zeros(s.max(1))?,
            fault_steps: gpu.zeros(s.max(1))?,
            heat: gpu.zeros(n.max(1))?,
            integrator,
            masses_host: masses.to_vec(),
            step: 0,
            threads: block_threads(largest, engine.max_threads()),
            engine,
            gpu,
        };
        // The forces of the starting positions.
        md.launch(0, batch)?;
        Ok(md)
    }

    /// One launch: with `steps` = 0 an evaluation of the current positions, else that
    /// many MD steps; then the fault check.
    fn launch(&mut self, steps: u64, batch: &Batch) -> Result<()> {
        let s = batch.num_structures();
        if s == 0 {
            return Ok(());
        }
        let g = self.gpu.clone();
        let mut args = self.engine.base_args();
        args.offsets = g.address(&self.offsets);
        args.scratch_offsets = g.address(&self.scratch_offsets);
        args.numbers = g.address(&self.numbers);
        args.positions = g.address(&self.positions);
        args.forces = g.address(&self.forces);
        args.atom_energies = g.address(&self.atom_energies);
        args.energies = g.address(&self.energies);
        args.faults = g.address(&self.faults);
        args.scratch = self.engine.scratch_address()?;
        args.velocities = g.address(&self.velocities);
        args.masses = g.address(&self.masses);
        args.fault_steps = g.address(&self.fault_steps);
        args.heat = g.address(&self.heat);
        args.integrator = self.integrator;
        args.first_step = self.step;
        args.num_structures = s as u32;
        args.want_forces = 1;
        let chunk = u32::try_from(steps).map_err(|_| Error::InvalidInput(format!("{steps} steps in one chunk")))?;
        args.steps = chunk;
        let config = LaunchConfig { grid_dim: (s as u32, 1, 1), block_dim: (self.threads, 1, 1), shared_mem_bytes: 0 };
        let kernel = if steps == 0 { fused::EVALUATE } else { fused::MD };
        // SAFETY: every address is one of this engine's buffers, sized for the batch it
        // was made for (per-atom arrays for its atoms, per-structure arrays for its
        // structures, the scratch for every structure's layout at its offset), alive
        // for the engine's life; the fault check below synchronises.
        unsafe { g.launch(kernel, config, &args)? };
        let faults = g.download(&self.faults)?;
        if let Some(structure) = faults.iter().take(s).position(|&f| f != 0) {
            let fault_step = if steps == 0 { self.step } else { g.download(&self.fault_steps)?[structure] };
            let positions = g.download(&self.positions)?;
            let error = explain_fault(batch, &positions, structure, faults[structure], structure);
            return Err(if steps == 0 { error } else { error.in_context(format!("MD step {}", fault_step + 1)) });
        }
        self.step += steps;
        Ok(())
    }

    pub(super) fn set_velocities(&mut self, v: &[[f32; 3]]) -> Result<()> {
        if !v.is_empty() {
            self.velocities = self.gpu.upload(v)?;
        }
        Ok(())
    }

    /// Continues from `c` (made for this batch): velocities, forces, the heat and the step.
    pub(super) fn restore(&mut self, c: &Checkpoint) -> Result<()> {
        if !c.velocities.is_empty() {
            self.velocities = self.gpu.upload(&c.velocities)?;
            self.forces = self.gpu.upload(&c.forces)?;
        }
        if !c.heat.is_empty() {
            self.heat = self.gpu.upload(&c.heat)?;
        }
        self.step = c.step;
        Ok(())
    }

    fn show<T>(&self, context: &ReportContext, look: impl FnOnce(&Report) -> T) -> Result<T> {
        let g = &self.gpu;
        let batch = context.batch;
        let n = batch.num_atoms();
        let mut positions = g.download(&self.positions)?;
        let mut velocities = g.download(&self.velocities)?;
        let mut forces = g.download(&self.forces)?;
        let mut potential = g.download(&self.energies)?;
        for v in [&mut positions, &mut velocities, &mut forces] {
            v.truncate(n);
        }
        potential.truncate(batch.num_structures());
        let kinetic: Vec<f64> = batch
            .offsets
            .windows(2)
            .map(|w| (w[0]..w[1]).map(|i| kinetic_energy(velocities[i], self.masses_host[i])).sum())
            .collect();
        let s = batch.num_structures();
        // No ensemble state here (NVE and Langevin only).
        let ensemble = vec![0.0; s * state::WORDS];
        let mut heat = g.download(&self.heat)?;
        heat.truncate(n);
        Ok(look(&Report {
            step: self.step,
            time: self.step as f64 * context.dt(),
            offsets: &batch.offsets,
            origins: &batch.origins,
            numbers: &batch.numbers,
            positions: &positions,
            velocities: &velocities,
            forces: &forces,
            potential: &potential,
            kinetic: &kinetic,
            virials: &vec![[0.0; 9]; s],
            cells: &batch.cells64,
            pbc: &batch.pbc,
            masses: context.masses,
            ensemble: &ensemble,
            heat: &heat,
            settings: context.settings,
            barostat: context.barostat,
        }))
    }

    pub(super) fn current<T>(&mut self, context: &ReportContext, look: impl FnOnce(&Report) -> T) -> Result<T> {
        self.show(context, look)
    }

    pub(super) fn run(
        &mut self,
        context: &ReportContext,
        steps: u64,
        every: u64,
        on_report: &mut dyn FnMut(&Report) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0u64;
        while done < steps {
            let k = every.min(steps - done);
            self.launch(k, context.batch)?;
            done += k;
            self.show(context, |r| on_report(r))??;
        }
        Ok(())
    }
}

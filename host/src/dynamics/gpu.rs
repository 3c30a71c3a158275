//! MD with the state resident on the GPU. A chunk of k steps (save, then k ×
//! [chain ½, kick + drift (+ barostat), neighbour search + model, kick, chain ½], then
//! the energies) is one CUDA graph; its report is copied into one of two pinned slots while the next chunk
//! runs. A step whose neighbour search faults (edges overflowing the buffers, atoms
//! on top of each other) freezes the state on the device; the host then grows the
//! buffers and replays from the chunk's saved state, or reports the error.

use super::{barostat_error, current_cells, Checkpoint, Plan, Report, ReportContext};
use crate::error::{invalid_input, Error, Result};
use crate::gpu::{grid_1d, Gpu, Graph, Pinned, BLOCK_THREADS};
use crate::model::gpu::{GpuWeights, Workspace};
use crate::model::Model;
use crate::structure::Batch;
use cudarc::driver::{CudaEvent, CudaSlice, LaunchConfig};
use mlff_kernels::cell_list::StructureRecord;
use mlff_kernels::common::args::STRUCTURE_OUT_WORDS;
use mlff_kernels::kernel::Kernel;
use mlff_kernels::md::args::{md_clock, md_status, EnsembleArgs, MdArgs};
use mlff_kernels::md::ensemble::state;
use mlff_kernels::md::entries as k;
use mlff_kernels::neighbors::args::status;
use std::collections::VecDeque;
use std::sync::Arc;

/// One report's pinned host copies.
struct ReportSlot {
    positions: Pinned<f32>,
    velocities: Pinned<f32>,
    forces: Pinned<f32>,
    structure_out: Pinned<f64>,
    kinetic: Pinned<f64>,
    ensemble: Pinned<f64>,
    heat: Pinned<f64>,
    md_status: Pinned<u32>,
    clock: Pinned<u64>,
    mark: Option<CudaEvent>,
}

impl ReportSlot {
    fn new(atoms: usize, structures: usize) -> Result<Self> {
        Ok(ReportSlot {
            positions: Pinned::new(3 * atoms)?,
            velocities: Pinned::new(3 * atoms)?,
            forces: Pinned::new(3 * atoms)?,
            structure_out: Pinned::new(STRUCTURE_OUT_WORDS * structures)?,
            kinetic: Pinned::new(structures)?,
            ensemble: Pinned::new(state::WORDS * structures)?,
            heat: Pinned::new(atoms)?,
            md_status: Pinned::new(md_status::WORDS)?,
            clock: Pinned::new(md_clock::WORDS)?,
            mark: None,
        })
    }
}

/// Reads a flat N×3 array as N points.
fn points(flat: &[f32]) -> &[[f32; 3]] {
    // SAFETY: [f32; 3] has f32's alignment and no padding, and `flat.len() / 3`
    // points lie within `flat`.
    unsafe { std::slice::from_raw_parts(flat.as_ptr() as *const [f32; 3], flat.len() / 3) }
}

pub(super) struct GpuDynamics {
    gpu: Arc<Gpu>,
    workspace: Workspace,
    velocities: CudaSlice<f32>,
    masses: CudaSlice<f32>,
    saved: CudaSlice<f32>,
    clock: CudaSlice<u64>,
    md_status: CudaSlice<u32>,
    kinetic: CudaSlice<f64>,
    heat: CudaSlice<f64>,
    saved_heat: CudaSlice<f64>,
    ensemble: CudaSlice<f64>,
    saved_ensemble: CudaSlice<f64>,
    plan: Plan,
    /// Chunk graphs by their number of steps.
    graphs: Vec<(u64, Graph)>,
    slots: [ReportSlot; 2],
    potential: Vec<f64>,
    kinetic_host: Vec<f64>,
    virials_host: Vec<[f64; 9]>,
}

impl GpuDynamics {
    pub(super) fn new(
        gpu: Arc<Gpu>,
        model: &Model,
        batch: &Batch,
        masses: &[f32],
        plan: Plan,
        ensemble: &[f64],
    ) -> Result<Self> {
        let (n, s) = (batch.num_atoms(), batch.num_structures());
        let weights = GpuWeights::new(gpu.clone(), model.weights())?;
        let workspace = Workspace::new(&weights, batch)?;
        let masses_dev = gpu.upload(if masses.is_empty() { &[1.0f32][..] } else { masses })?;
        let ensemble_dev = gpu.upload(if ensemble.is_empty() { &[0.0f64][..] } else { ensemble })?;
        let mut md = GpuDynamics {
            velocities: gpu.zeros::<f32>(3 * n.max(1))?,
            masses: masses_dev,
            saved: gpu.zeros::<f32>(9 * n.max(1))?,
            clock: gpu.zeros::<u64>(md_clock::WORDS)?,
            md_status: gpu.zeros::<u32>(md_status::WORDS)?,
            kinetic: gpu.zeros::<f64>(s.max(1))?,
            heat: gpu.zeros::<f64>(n.max(1))?,
            saved_heat: gpu.zeros::<f64>(n.max(1))?,
            saved_ensemble: gpu.zeros::<f64>(ensemble.len().max(1))?,
            ensemble: ensemble_dev,
            plan,
            graphs: Vec::new(),
            slots: [ReportSlot::new(n, s)?, ReportSlot::new(n, s)?],
            potential: vec![0.0; s],
            kinetic_host: vec![0.0; s],
            virials_host: vec![[0.0; 9]; s],
            workspace,
            gpu: gpu.clone(),
        };
        if plan.barostat {
            // The records from the ensemble's cells, in the arithmetic the barostat
            // kernel uses, so that a continued run searches with the same bits.
            md.launch_ensemble(k::SET_RECORDS, grid_1d(s, BLOCK_THREADS)?)?;
        }
        // The first forces; this also grows the edge buffers to the start's needs.
        md.workspace.run(&weights, &batch.positions, true, batch)?;
        if plan.barostat {
            // Their virials into the ensemble words, for the first barostat step.
            md.launch_ensemble(k::BAROSTAT_HEAT, grid_1d(s, BLOCK_THREADS)?)?;
        }
        // Headroom, so that a denser moment of the trajectory rarely has to replay.
        let edges = md.workspace.state().cells.num_edges()?;
        let wanted = edges + edges / 4 + 256;
        if md.workspace.edge_capacity() < wanted {
            md.workspace.grow_edges(wanted)?;
        }
        Ok(md)
    }

    /// Continues from `c` (made for this batch): positions, velocities and forces go
    /// in through the saved state and `RESTORE`, with the heat, the ensemble words and
    /// the step; the energies and virials of the positions are those just computed.
    pub(super) fn restore(&mut self, c: &Checkpoint) -> Result<()> {
        let n = self.workspace.state().num_atoms;
        let saved: Vec<f32> = (0..n)
            .flat_map(|i| {
                let (x, v, f) = (c.positions[i], c.velocities[i], c.forces[i]);
                [x[0], x[1], x[2], v[0], v[1], v[2], f[0], f[1], f[2]]
            })
            .collect();
        let clock = [c.step, c.step, 0];
        // SAFETY: the host vectors live to the end of this function, after the
        // synchronisation that waits for the copies.
        unsafe {
            if n > 0 {
                self.gpu.copy_to_device(&mut self.saved, &saved)?;
            }
            // An untracked heat (a fused-engine Langevin run) restarts from zero.
            if !c.heat.is_empty() {
                self.gpu.copy_to_device(&mut self.saved_heat, &c.heat)?;
            }
            if !c.ensemble.is_empty() {
                self.gpu.copy_to_device(&mut self.saved_ensemble, &c.ensemble)?;
            }
            self.gpu.copy_to_device(&mut self.clock, &clock)?;
        }
        let config = self.save_config()?;
        self.launch(k::RESTORE, config, &self.args()?)?;
        self.gpu.synchronize()
    }

    /// The MD kernels' arguments: the state's buffers, each checked to hold what the
    /// kernels use of it for this batch.
    fn args(&self) -> Result<MdArgs> {
        let g = &self.gpu;
        let ws = self.workspace.state();
        let (n, s) = (ws.num_atoms, self.potential.len());
        Ok(MdArgs {
            positions: g.device_ptr(&ws.cells.positions, 3 * n)? as *mut [f32; 3],
            velocities: g.device_ptr(&self.velocities, 3 * n)? as *mut [f32; 3],
            forces: g.device_ptr(&ws.forces, 3 * n)? as *mut [f32; 3],
            masses: g.device_ptr(&self.masses, n)?,
            records: g.device_ptr(&ws.cells.records, s * size_of::<StructureRecord>() / 4)? as *const StructureRecord,
            saved: g.device_ptr(&self.saved, 9 * n)? as *mut [f32; 9],
            clock: g.device_ptr(&self.clock, md_clock::WORDS)?,
            md_status: g.device_ptr(&self.md_status, md_status::WORDS)?,
            cell_status: g.device_ptr(&ws.cells.status, status::WORDS)?,
            kinetic: g.device_ptr(&self.kinetic, s)?,
            heat: g.device_ptr(&self.heat, n)?,
            saved_heat: g.device_ptr(&self.saved_heat, n)?,
            ensemble: g.device_ptr(&self.ensemble, s * state::WORDS)?,
            saved_ensemble: g.device_ptr(&self.saved_ensemble, s * state::WORDS)?,
            ensemble_words: (s * state::WORDS) as u32,
            pad: 0,
            integrator: self.plan.integrator,
            num_atoms: n as u32,
            num_structures: s as u32,
        })
    }

    /// The ensemble kernels' arguments, checked as [`Self::args`].
    fn ensemble_args(&self) -> Result<EnsembleArgs> {
        let g = &self.gpu;
        let ws = self.workspace.state();
        let (n, s) = (ws.num_atoms, self.potential.len());
        Ok(EnsembleArgs {
            positions: g.device_ptr(&ws.cells.positions, 3 * n)? as *mut [f32; 3],
            velocities: g.device_ptr(&self.velocities, 3 * n)? as *mut [f32; 3],
            masses: g.device_ptr(&self.masses, n)?,
            records: g.device_ptr(&ws.cells.records, s * size_of::<StructureRecord>() / 4)? as *mut StructureRecord,
            structure_of: g.device_ptr(&ws.cells.structure_of, n)?,
            structure_out: g.device_ptr(&ws.structure_out, STRUCTURE_OUT_WORDS * s)?,
            ensemble: g.device_ptr(&self.ensemble, s * state::WORDS)?,
            clock: g.device_ptr(&self.clock, md_clock::WORDS)?,
            md_status: g.device_ptr(&self.md_status, md_status::WORDS)?,
            params: self.plan.params,
            integrator: self.plan.integrator,
            num_atoms: n as u32,
            num_structures: s as u32,
            momentum_conserved: self.plan.momentum_conserved as u32,
            pad: 0,
        })
    }

    /// Launches one of the ensemble kernels.
    fn launch_ensemble(&self, kernel: Kernel<EnsembleArgs>, config: LaunchConfig) -> Result<()> {
        if self.potential.is_empty() {
            return Ok(());
        }
        let args = self.ensemble_args()?;
        // SAFETY: as for `launch`: `args` are this state's and its workspace's buffers,
        // checked by `ensemble_args`, alive as long as `self` and its graphs.
        unsafe { self.gpu.launch(kernel, config, &args) }
    }

    /// One block of 256 threads per structure, with `words` f64 of shared memory per thread.
    fn per_structure(&self, words: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.potential.len() as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (256 * 8 * words) as u32,
        }
    }

    /// SAVE and RESTORE: a thread per atom and per ensemble word.
    fn save_config(&self) -> Result<LaunchConfig> {
        let words = self.potential.len() * state::WORDS;
        grid_1d(self.workspace.state().num_atoms.max(words), BLOCK_THREADS)
    }

    /// Launches one of the MD kernels.
    fn launch(&self, kernel: Kernel<MdArgs>, config: LaunchConfig, args: &MdArgs) -> Result<()> {
        // SAFETY: `args` comes from `Self::args`: this state's and its workspace's
        // buffers, each checked to hold what the kernels use. They live as long as
        // `self`, which owns the CUDA graphs these launches are captured into and
        // synchronises before it is dropped.
        unsafe { self.gpu.launch(kernel, config, args) }
    }

    pub(super) fn set_velocities(&mut self, v: &[[f32; 3]]) -> Result<()> {
        if v.len() != self.workspace.state().num_atoms {
            return invalid_input!("{} velocities for {} atoms", v.len(), self.workspace.state().num_atoms);
        }
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        // SAFETY: `flat` lives to the end of this function, after the synchronisation
        // that waits for the copy.
        unsafe { self.gpu.copy_to_device(&mut self.velocities, &flat)? };
        self.gpu.synchronize()
    }

    fn atoms_config(&self) -> Result<LaunchConfig> {
        grid_1d(self.workspace.state().num_atoms, BLOCK_THREADS)
    }

    fn enqueue_energies(&self) -> Result<()> {
        self.workspace.state().enqueue_structure_sums(true)?;
        let structures = self.potential.len();
        if structures == 0 {
            return Ok(());
        }
        let per_structure =
            LaunchConfig { grid_dim: (structures as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 256 * 8 };
        self.launch(k::KINETIC, per_structure, &self.args()?)
    }

    /// Enqueues `steps` steps, starting with a save of the state to return to.
    fn enqueue_chunk(&mut self, steps: u64) -> Result<()> {
        let atoms = self.atoms_config()?;
        let args = self.args()?;
        self.launch(k::SAVE, self.save_config()?, &args)?;
        let plan = self.plan;
        for _ in 0..steps {
            if plan.chain {
                self.launch_ensemble(k::NHC_HALF, self.per_structure(1))?;
            }
            if plan.barostat {
                self.launch(k::KICK_DRIFT_THERMOSTAT, atoms, &args)?;
                self.launch_ensemble(k::BAROSTAT, self.per_structure(3))?;
                self.launch_ensemble(k::SCALE_DRIFT, atoms)?;
            } else {
                self.launch(k::KICK_DRIFT, atoms, &args)?;
            }
            self.workspace.enqueue_model(true)?;
            if plan.barostat {
                // The step's heat, and the next step's barostat, read this step's virials.
                self.workspace.state().enqueue_structure_sums(true)?;
                self.launch_ensemble(k::BAROSTAT_HEAT, grid_1d(self.potential.len(), BLOCK_THREADS)?)?;
            }
            self.launch(k::KICK, atoms, &args)?;
            if plan.chain {
                self.launch_ensemble(k::NHC_HALF, self.per_structure(1))?;
            }
        }
        self.enqueue_energies()
    }

    fn launch_chunk(&mut self, steps: u64) -> Result<()> {
        if !self.graphs.iter().any(|(k, _)| *k == steps) {
            let gpu = self.gpu.clone();
            let graph = gpu.capture(|| self.enqueue_chunk(steps))?;
            self.graphs.push((steps, graph));
        }
        let (_, graph) =
            self.graphs.iter().find(|(k, _)| *k == steps).ok_or_else(|| Error::Unsupported("no MD graph".into()))?;
        graph.launch().map_err(Error::cuda("replaying the MD graph"))
    }

    /// Enqueues the copies of the state into `slot` and marks their end.
    fn enqueue_report(&mut self, slot: usize) -> Result<()> {
        let g = self.gpu.clone();
        let ws = self.workspace.state();
        let r = &mut self.slots[slot];
        // SAFETY: the copies' pinned destinations are this slot's buffers, owned by
        // `self` and sized for the batch; they are read only after `wait_for(mark)`
        // (or a synchronisation) has seen the copies land, and `self` synchronises
        // before it drops them.
        unsafe {
            if ws.num_atoms > 0 {
                g.copy_to_host(&mut r.positions, &ws.cells.positions)?;
                g.copy_to_host(&mut r.velocities, &self.velocities)?;
                g.copy_to_host(&mut r.forces, &ws.forces)?;
            }
            if ws.num_atoms > 0 {
                g.copy_to_host(&mut r.heat, &self.heat)?;
            }
            if !self.potential.is_empty() {
                g.copy_to_host(&mut r.structure_out, &ws.structure_out)?;
                g.copy_to_host(&mut r.kinetic, &self.kinetic)?;
                g.copy_to_host(&mut r.ensemble, &self.ensemble)?;
            }
            g.copy_to_host(&mut r.md_status, &self.md_status)?;
            g.copy_to_host(&mut r.clock, &self.clock)?;
        }
        r.mark = Some(g.mark()?);
        Ok(())
    }

    fn show<T>(&mut self, slot: usize, context: &ReportContext, look: impl FnOnce(&Report) -> T) -> T {
        let r = &self.slots[slot];
        let batch = context.batch;
        for s in 0..self.potential.len() {
            let out = &r.structure_out[s * STRUCTURE_OUT_WORDS..(s + 1) * STRUCTURE_OUT_WORDS];
            self.potential[s] = out[0];
            self.virials_host[s] = std::array::from_fn(|q| out[1 + q]);
            self.kinetic_host[s] = r.kinetic[s];
        }
        let n = batch.num_atoms();
        let ensemble = &r.ensemble[..self.potential.len() * state::WORDS];
        let cells = current_cells(batch, ensemble, self.plan.barostat);
        let step = r.clock[md_clock::STEP];
        look(&Report {
            step,
            time: step as f64 * context.dt(),
            offsets: &batch.offsets,
            numbers: &batch.numbers,
            origins: &batch.origins,
            positions: points(&r.positions[..3 * n]),
            velocities: points(&r.velocities[..3 * n]),
            forces: points(&r.forces[..3 * n]),
            potential: &self.potential,
            kinetic: &self.kinetic_host,
            virials: &self.virials_host,
            cells: &cells,
            pbc: &batch.pbc,
            masses: context.masses,
            ensemble,
            heat: &r.heat[..n],
            settings: context.settings,
            barostat: context.barostat,
        })
    }

    pub(super) fn current<T>(&mut self, context: &ReportContext, look: impl FnOnce(&Report) -> T) -> Result<T> {
        self.enqueue_energies()?;
        self.enqueue_report(0)?;
        self.gpu.synchronize()?;
        Ok(self.show(0, context, look))
    }

    pub(super) fn run(
        &mut self,
        context: &ReportContext,
        steps: u64,
        every: u64,
        on_report: &mut dyn FnMut(&Report) -> Result<()>,
    ) -> Result<()> {
        // The device clock, not a host count: a run stopped by an error in `on_report`
        // may have left chunks that ran past the last report.
        self.gpu.synchronize()?;
        let first_step = self.gpu.download(&self.clock)?[md_clock::STEP];
        let mut launched = 0u64;
        let mut chunk = 0usize;
        // Report slots of the chunks in flight, oldest first.
        let mut pending: VecDeque<usize> = VecDeque::new();
        while launched < steps || !pending.is_empty() {
            if launched < steps && pending.len() < 2 {
                let k = every.min(steps - launched);
                let slot = chunk % 2;
                self.launch_chunk(k)?;
                self.enqueue_report(slot)?;
                launched += k;
                chunk += 1;
                pending.push_back(slot);
                continue;
            }
            let Some(slot) = pending.pop_front() else { break };
            let mark =
                self.slots[slot].mark.take().ok_or_else(|| Error::Unsupported("MD report without a mark".into()))?;
            self.gpu.wait_for(&mark)?;
            if self.slots[slot].md_status[md_status::FROZEN] != 0 {
                // Later chunks ran frozen; wait for them, mend, and go back.
                self.gpu.synchronize()?;
                let saved_step = self.slots[slot].clock[md_clock::SAVED_STEP];
                self.recover(slot, context.batch)?;
                launched = saved_step - first_step;
                pending.clear();
                for s in &mut self.slots {
                    s.mark = None;
                }
                chunk = 0;
                continue;
            }
            self.show(slot, context, |r| on_report(r))?;
        }
        Ok(())
    }

    pub(super) fn resize_edge_buffers(&mut self, capacity: usize) -> Result<()> {
        self.workspace.grow_edges(capacity.max(1))?;
        self.graphs.clear();
        Ok(())
    }

    /// Handles a frozen state: an error for atoms on top of each other, bigger edge
    /// buffers for an overflow; then back to the saved state.
    fn recover(&mut self, slot: usize, batch: &Batch) -> Result<()> {
        let r = &self.slots[slot];
        if r.md_status[md_status::BAROSTAT] != 0 {
            let s = r.md_status[md_status::BAROSTAT] as usize - 1;
            // The structure's state as the refused step found it: read afresh (the slot's
            // copy was taken after later chunks, which ran frozen).
            let ensemble = self.gpu.download(&self.ensemble)?;
            return Err(barostat_error(s, r.clock[md_clock::FAULT_STEP], &ensemble[s * state::WORDS..]));
        }
        let words: [u32; status::WORDS] = std::array::from_fn(|k| r.md_status[md_status::CELL_STATUS + k]);
        let fault_step = r.clock[md_clock::FAULT_STEP] + 1;
        let build = crate::gpu_neighbors::BuildStatus { words, num_edges: 0 };
        self.workspace
            .state()
            .cells
            .check(&build, &batch.structure_of, &batch.offsets)
            .map_err(|e| e.in_context(format!("MD step {fault_step}")))?;
        if words[status::OVERFLOW] == 0 {
            return invalid_input!("internal: MD step {fault_step} froze without a known cause ({words:?})");
        }
        // The frozen steps kept rebuilding at the faulting positions: row_ptr[N] is their need.
        let edges = self.workspace.state().cells.num_edges()?;
        self.workspace.grow_edges(edges + edges / 4 + 256)?;
        self.graphs.clear();
        self.launch(k::RESTORE, self.save_config()?, &self.args()?)?;
        if self.plan.barostat {
            self.launch_ensemble(k::SET_RECORDS, grid_1d(self.potential.len(), BLOCK_THREADS)?)?;
        }
        self.gpu.synchronize()
    }
}

impl Drop for GpuDynamics {
    fn drop(&mut self) {
        // A run stopped by an error may have left chunks, and their copies into the
        // report slots' pinned buffers, in flight: they must land before the slots
        // are freed.
        let _ = self.gpu.synchronize();
    }
}

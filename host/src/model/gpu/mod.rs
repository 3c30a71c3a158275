//! The model on the GPU: weights and filter tables uploaded once ([`GpuWeights`]), a
//! workspace per batch shape ([`Workspace`], reused across calls), the whole call —
//! neighbour search, forward, adjoint, forces, per-structure sums — enqueued on one
//! stream and, from the second call of a shape on, replayed as one CUDA graph. What an
//! architecture does between the search and the forces is its `GpuPass`
//! (`model/student/gpu.rs`, `model/painn/gpu.rs`); the state it works on, and the
//! kernels every architecture shares, are here ([`DeviceState`]).

mod layers;

pub(crate) use layers::DeviceLinear;

use super::architecture::{check_elements, GpuArchitecture, GpuPass};
use super::tuning::Tuning;
use super::Weights;
use crate::error::{invalid_input, Error, Result};
use crate::gpu::{grid_1d, warp_per_atom, Gpu, Graph, Pinned, BLOCK_THREADS};
use crate::gpu_neighbors::GpuCellList;
use crate::structure::Batch;
use cudarc::driver::{CudaSlice, LaunchConfig};
use mlff_kernels::common::args::{
    EdgeGradientArgs, EmbedArgs, FilterTable, ForcesArgs, Rows, StructureSumsArgs, STRUCTURE_OUT_WORDS,
};
use mlff_kernels::common::entries as k;
use mlff_kernels::filter_table::table_len;
use mlff_kernels::kernel::{Kernel, KernelArgs};
use mlff_kernels::neighbors::args::status;
use mlff_kernels::neighbors::cell_list::StructureRecord;
use std::sync::Arc;

/// Hidden sizes the edge and atom kernels are instantiated for.
const SUPPORTED_HIDDEN: [usize; 4] = [32, 64, 128, 256];

/// A model's weights on one GPU, with the launch choices for that GPU.
pub struct GpuWeights {
    gpu: Arc<Gpu>,
    model: Arc<dyn GpuArchitecture>,
    tuning: Tuning,
}

impl GpuWeights {
    /// Uploads `weights`, with the measured launch choices for `gpu` and the
    /// environment's overrides (see [`Tuning`]).
    pub fn new(gpu: Arc<Gpu>, weights: &Weights) -> Result<Self> {
        let tuning = Tuning::from_env(gpu.properties())?;
        Self::with_tuning(gpu, weights, tuning)
    }

    /// Uploads `weights`, with the launch choices of `tuning`.
    pub fn with_tuning(gpu: Arc<Gpu>, weights: &Weights, tuning: Tuning) -> Result<Self> {
        let h = weights.architecture().hidden_dim();
        if !SUPPORTED_HIDDEN.contains(&h) {
            return Err(Error::Unsupported(format!(
                "the GPU kernels support {SUPPORTED_HIDDEN:?} feature channels, this model has {h}; use the CPU"
            )));
        }
        let model = weights.architecture().upload(&gpu)?;
        Ok(GpuWeights { gpu, model, tuning })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }
}

/// Device bytes per atom of the state every architecture has (state, per-block mid
/// states, gradients, per-atom outputs), and per edge at `groups` channel groups.
pub(crate) fn bytes_per_atom(hidden: usize, blocks: usize) -> usize {
    4 * ((12 + 4 * blocks) * hidden + 3 + 9 + 3 + 1) + 64
}
pub(crate) fn bytes_per_edge(groups: usize) -> usize {
    4 + 12 + 4 + 16 * groups
}

/// The buffers of one batch shape that every architecture's pass reads and writes:
/// the neighbour list, the per-atom state (s, v: N×H and N×3×H; q and μ for PaiNN),
/// its per-block mid states and adjoints, the edge adjoints and the outputs.
pub(crate) struct DeviceState {
    pub(crate) gpu: Arc<Gpu>,
    pub(crate) cells: GpuCellList,
    pub(crate) num_atoms: usize,
    pub(crate) num_structures: usize,
    pub(crate) hidden: usize,
    /// Channel groups of the edge kernels.
    pub(crate) groups: usize,
    /// Rows of the embedding (max_z + 1): every atomic number of the batch is below.
    embedding_rows: usize,
    numbers: CudaSlice<u32>,
    pub(crate) s: CudaSlice<f32>,
    pub(crate) v: CudaSlice<f32>,
    pub(crate) s_mid: Vec<CudaSlice<f32>>,
    pub(crate) v_mid: Vec<CudaSlice<f32>>,
    pub(crate) gs: CudaSlice<f32>,
    pub(crate) gv: CudaSlice<f32>,
    pub(crate) gs_mid: CudaSlice<f32>,
    pub(crate) gv_mid: CudaSlice<f32>,
    edge_adjoint: CudaSlice<f32>,
    atom_energy: CudaSlice<f32>,
    atom_virial: CudaSlice<f32>,
    pub(crate) forces: CudaSlice<f32>,
    pub(crate) structure_out: CudaSlice<f64>,
    /// Per-atom energy weights of weighted calls and per-atom split virials (9 floats
    /// an atom), made on first use.
    energy_weight: Option<CudaSlice<f32>>,
    pair_virial: Option<CudaSlice<f32>>,
    /// What the call being enqueued computes.
    kind: CallKind,
}

/// What a call computes, and so which CUDA graph replays it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CallKind {
    forces: bool,
    /// Energy weights given (`energy_weight` is live).
    weighted: bool,
    /// Per-atom split virials wanted (`pair_virial` is live).
    atom_virials: bool,
}

impl DeviceState {
    fn new(
        gpu: &Arc<Gpu>,
        model: &dyn GpuArchitecture,
        tuning: &Tuning,
        batch: &Batch,
        embedding_rows: usize,
    ) -> Result<Self> {
        let (n, s, h, t) = (batch.num_atoms(), batch.num_structures(), model.hidden(), model.num_blocks());
        // The embedding kernel reads row Z of the embedding for every atom.
        check_elements(embedding_rows.saturating_sub(1), None, &batch.numbers, &batch.structure_of)?;
        let cells = GpuCellList::new(gpu.clone(), batch, model.cutoff(), 0.0, false)?;
        let groups = tuning.channel_groups(h, n)?;
        let cap = cells.edge_capacity();
        let zeros = |len: usize| gpu.zeros::<f32>(len.max(1));
        Ok(DeviceState {
            gpu: gpu.clone(),
            num_atoms: n,
            num_structures: s,
            hidden: h,
            groups,
            embedding_rows,
            numbers: gpu.upload(&if batch.numbers.is_empty() { vec![1] } else { batch.numbers.clone() })?,
            s: zeros(n * h)?,
            v: zeros(3 * n * h)?,
            s_mid: (0..t).map(|_| zeros(n * h)).collect::<Result<_>>()?,
            v_mid: (0..t).map(|_| zeros(3 * n * h)).collect::<Result<_>>()?,
            gs: zeros(n * h)?,
            gv: zeros(3 * n * h)?,
            gs_mid: zeros(n * h)?,
            gv_mid: zeros(3 * n * h)?,
            edge_adjoint: zeros(4 * groups * cap)?,
            atom_energy: zeros(n)?,
            atom_virial: zeros(9 * n)?,
            forces: zeros(3 * n)?,
            structure_out: gpu.zeros::<f64>(STRUCTURE_OUT_WORDS * s.max(1))?,
            energy_weight: None,
            pair_virial: None,
            kind: CallKind::default(),
            cells,
        })
    }

    /// The energy weights for the readout kernels: null (all 1) unless the call being
    /// enqueued is weighted.
    pub(crate) fn energy_weight(&self) -> Result<*const f32> {
        match &self.energy_weight {
            Some(weights) if self.kind.weighted => Ok(self.gpu.device_ptr(weights, self.num_atoms)?),
            _ => Ok(std::ptr::null()),
        }
    }

    /// Launches a kernel of the shared passes below.
    fn launch<A: KernelArgs>(&self, kernel: Kernel<A>, config: LaunchConfig, args: &A) -> Result<()> {
        // SAFETY: every argument struct launched here is built by this type's
        // builders from its own buffers, through `Gpu::device_ptr`, which checks each
        // buffer against what the kernel will use for this shape (atoms, structures,
        // edge capacity). The buffers live as long as the state, which the workspace
        // drops only after its CUDA graph and after synchronising.
        unsafe { self.gpu.launch(kernel, config, args) }
    }

    /// A per-atom buffer of `width` floats an atom, checked.
    pub(crate) fn per_atom(&self, buffer: &CudaSlice<f32>, width: usize) -> Result<*mut f32> {
        self.gpu.device_ptr(buffer, width * self.num_atoms)
    }

    /// The receiver rows of the neighbour list for the edge kernels.
    pub(crate) fn rows(&self, cutoff: f32, unit_epsilon: f32) -> Result<Rows> {
        let (g, c, n) = (&self.gpu, &self.cells, self.num_atoms);
        let cap = c.edge_capacity();
        Ok(Rows {
            positions: g.device_ptr(&c.positions, 3 * n)? as *const [f32; 3],
            structure_of: g.device_ptr(&c.structure_of, n)?,
            records: g.device_ptr(&c.records, self.num_structures * size_of::<StructureRecord>() / 4)?
                as *const StructureRecord,
            row_ptr: g.device_ptr(&c.row_ptr, n + 1)?,
            src: g.device_ptr(&c.src, cap)?,
            shift: g.device_ptr(&c.shift, 3 * cap)? as *const [i32; 3],
            num_atoms: n as u32,
            hidden: self.hidden as u32,
            groups: self.groups as u32,
            edge_capacity: cap as u32,
            cutoff,
            unit_epsilon,
        })
    }

    /// A block's filter table for the edge kernels.
    pub(crate) fn filter(&self, table: &CudaSlice<f32>, cutoff: f32) -> Result<FilterTable> {
        Ok(FilterTable {
            table: self.gpu.device_ptr(table, table_len(self.hidden))?,
            inv_h: super::filter_table::inverse_spacing(cutoff),
        })
    }

    /// The edge adjoints: one [∂E/∂d, ∂E/∂u] per channel group and edge.
    pub(crate) fn edge_adjoint(&self) -> Result<*mut [f32; 4]> {
        let len = 4 * self.groups * self.cells.edge_capacity();
        Ok(self.gpu.device_ptr(&self.edge_adjoint, len)? as *mut [f32; 4])
    }

    /// The atom energies and the atomic numbers, for the readout kernels.
    pub(crate) fn readout_outputs(&self) -> Result<(*mut f32, *const u32)> {
        Ok((self.per_atom(&self.atom_energy, 1)?, self.gpu.device_ptr(&self.numbers, self.num_atoms)?))
    }

    /// A per-element table (`[max_z + 1]`, indexed by atomic number), checked.
    pub(crate) fn per_element(&self, table: &CudaSlice<f32>) -> Result<*const f32> {
        Ok(self.gpu.device_ptr(table, self.embedding_rows)?)
    }

    /// One thread per (atom, channel), in blocks of 256.
    fn per_channel(&self) -> Result<LaunchConfig> {
        grid_1d(self.num_atoms * self.hidden, BLOCK_THREADS)
    }

    /// Enqueues s = embedding[Z], v = 0 into (s, v) (`[max_z + 1][H]` embedding).
    pub(crate) fn enqueue_embed(&self, embedding: &CudaSlice<f32>, s: *mut f32, v: *mut f32) -> Result<()> {
        let args = EmbedArgs {
            numbers: self.gpu.device_ptr(&self.numbers, self.num_atoms)?,
            embedding: self.gpu.device_ptr(embedding, self.embedding_rows * self.hidden)?,
            s,
            v,
            num_atoms: self.num_atoms as u32,
            hidden: self.hidden as u32,
        };
        self.launch(k::EMBED, self.per_channel()?, &args)
    }

    /// Enqueues ∂E/∂r of every edge (with each atom's virial) and the forces, from the
    /// accumulated edge adjoints.
    fn enqueue_forces(&self, cutoff: f32, unit_epsilon: f32) -> Result<()> {
        let (g, n) = (&self.gpu, self.num_atoms);
        let cap = self.cells.edge_capacity();
        let edge_grad = self.edge_adjoint()?;
        let rows = warp_per_atom(n)?;
        let gradients = EdgeGradientArgs {
            rows: self.rows(cutoff, unit_epsilon)?,
            edge_adjoint: edge_grad,
            edge_grad,
            atom_virial: self.per_atom(&self.atom_virial, 9)? as *mut [f32; 9],
        };
        self.launch(k::EDGE_GRADIENTS, rows, &gradients)?;
        let rows_of = self.rows(cutoff, unit_epsilon)?;
        let forces = ForcesArgs {
            row_ptr: rows_of.row_ptr,
            reverse: g.device_ptr(&self.cells.reverse, cap)?,
            edge_grad,
            forces: self.per_atom(&self.forces, 3)? as *mut [f32; 3],
            pair_virial: match &self.pair_virial {
                Some(virials) if self.kind.atom_virials => self.per_atom(virials, 9)? as *mut [f32; 9],
                _ => std::ptr::null_mut(),
            },
            positions: rows_of.positions,
            structure_of: rows_of.structure_of,
            records: rows_of.records,
            src: rows_of.src,
            shift: rows_of.shift,
            num_atoms: n as u32,
            edge_capacity: cap as u32,
        };
        self.launch(k::FORCES, rows, &forces)
    }

    /// Enqueues the per-structure energies (and virials, after a pass with forces).
    pub(crate) fn enqueue_structure_sums(&self, with_virials: bool) -> Result<()> {
        if self.num_structures == 0 {
            return Ok(());
        }
        let args = StructureSumsArgs {
            records: self.gpu.device_ptr(&self.cells.records, self.num_structures * size_of::<StructureRecord>() / 4)?
                as *const StructureRecord,
            atom_energy: self.per_atom(&self.atom_energy, 1)?,
            atom_virial: if with_virials {
                self.per_atom(&self.atom_virial, 9)? as *const [f32; 9]
            } else {
                std::ptr::null()
            },
            structure_out: self.gpu.device_ptr(&self.structure_out, STRUCTURE_OUT_WORDS * self.num_structures)?,
            num_structures: self.num_structures as u32,
        };
        let per_structure = LaunchConfig {
            grid_dim: (self.num_structures as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (256 * STRUCTURE_OUT_WORDS * 8) as u32,
        };
        self.launch(k::STRUCTURE_SUMS, per_structure, &args)
    }

    /// Device bytes of the state and the edge buffers.
    fn bytes(&self) -> usize {
        self.num_atoms * bytes_per_atom(self.hidden, self.s_mid.len())
            + self.cells.edge_capacity() * bytes_per_edge(self.groups)
    }
}

/// Buffers of one batch shape, reused across calls.
pub struct Workspace {
    /// The weights this workspace's launches (and CUDA graph) read: kept alive here.
    model: Arc<dyn GpuArchitecture>,
    state: DeviceState,
    pass: Box<dyn GpuPass>,
    positions_in: Pinned<f32>,
    structure_out_host: Pinned<f64>,
    forces_host: Pinned<f32>,
    atom_energy_host: Pinned<f32>,
    status_host: Pinned<u32>,
    /// Pinned copies of the energy weights and split virials of weighted calls.
    energy_weight_host: Option<Pinned<f32>>,
    pair_virial_host: Option<Pinned<f32>>,
    graph: Option<(CallKind, Graph)>,
    /// False with `MLFF_NO_GRAPH` set (every call enqueued eagerly, e.g. to profile).
    use_graph: bool,
    calls_of_shape: usize,
    /// Identity of the batch (numbers, cells) the workspace was made for.
    key: (Vec<u32>, Vec<StructureRecord>),
}

/// What one call returns, for the whole batch.
pub struct GpuOutput {
    /// Σ w_i E_i per structure (w = 1 unless the call was weighted).
    pub energies: Vec<f64>,
    /// w_i E_i.
    pub atom_energies: Vec<f32>,
    pub forces: Option<Vec<[f32; 3]>>,
    /// Σ_edges r ⊗ ∂E/∂r per structure (row-major), when forces were asked for.
    pub virials: Option<Vec<[f64; 9]>>,
    /// Per atom ½ Σ_{edges e of i} r_e ⊗ (∂E/∂r_e − ∂E/∂r_rev(e)) (row-major), when
    /// asked for (`run_weighted`): each edge's r ⊗ ∂E/∂r split half and half between
    /// its two atoms, so they sum to `virials`.
    pub atom_virials: Option<Vec<[f32; 9]>>,
}

impl Workspace {
    /// Buffers for `batch`'s shape with `weights` (which it keeps alive).
    pub fn new(weights: &GpuWeights, batch: &Batch) -> Result<Self> {
        let (n, s) = (batch.num_atoms().max(1), batch.num_structures());
        let state =
            DeviceState::new(&weights.gpu, &*weights.model, &weights.tuning, batch, weights.model.embedding_rows())?;
        let pass = weights.model.clone().plan(&state, &weights.tuning)?;
        Ok(Workspace {
            model: weights.model.clone(),
            pass,
            positions_in: Pinned::new(3 * n)?,
            structure_out_host: Pinned::new(STRUCTURE_OUT_WORDS * s.max(1))?,
            forces_host: Pinned::new(3 * n)?,
            atom_energy_host: Pinned::new(n)?,
            status_host: Pinned::new(status::WORDS)?,
            energy_weight_host: None,
            pair_virial_host: None,
            graph: None,
            use_graph: weights.tuning.use_graphs(),
            calls_of_shape: 0,
            key: (batch.numbers.clone(), crate::gpu_neighbors::structure_records(batch)),
            state,
        })
    }

    /// Whether this workspace serves `batch` (same atoms, elements and cells).
    pub fn fits(&self, batch: &Batch) -> bool {
        self.key.0 == batch.numbers && self.key.1 == crate::gpu_neighbors::structure_records(batch)
    }

    /// The buffers the passes work on.
    pub(crate) fn state(&self) -> &DeviceState {
        &self.state
    }

    fn check_weights(&self, w: &GpuWeights) -> Result<()> {
        if !Arc::ptr_eq(&self.model, &w.model) {
            return invalid_input!("this workspace was made for other GPU weights");
        }
        Ok(())
    }

    /// Enqueues one whole call (positions already in `positions_in`), results copied
    /// into the pinned output buffers.
    fn enqueue(&mut self, want_forces: bool) -> Result<()> {
        let gpu = self.state.gpu.clone();
        // SAFETY: `positions_in` is pinned memory owned by the workspace, written only
        // between calls, each of which synchronises before returning; it outlives the
        // CUDA graph this copy may be captured into (both are fields of `self`).
        unsafe { gpu.copy_to_device(&mut self.state.cells.positions, &self.positions_in)? };
        if let (true, Some(device), Some(host)) =
            (self.state.kind.weighted, &mut self.state.energy_weight, &self.energy_weight_host)
        {
            // SAFETY: as for the positions: pinned, owned by the workspace, written only
            // between synchronised calls, outliving the graph.
            unsafe { gpu.copy_to_device(device, host)? };
        }
        self.enqueue_model(want_forces)?;
        self.state.enqueue_structure_sums(want_forces)?;
        let state = &self.state;
        // SAFETY: the copies' pinned destinations are owned by the workspace, sized
        // for its shape, read only after the call synchronises, and outlive the CUDA
        // graph the copies may be captured into.
        unsafe {
            if state.num_structures > 0 {
                gpu.copy_to_host(&mut self.structure_out_host, &state.structure_out)?;
            }
            if state.num_atoms > 0 {
                gpu.copy_to_host(&mut self.atom_energy_host, &state.atom_energy)?;
                if want_forces {
                    gpu.copy_to_host(&mut self.forces_host, &state.forces)?;
                }
                if let (true, Some(device), Some(host)) =
                    (state.kind.atom_virials, &state.pair_virial, &mut self.pair_virial_host)
                {
                    gpu.copy_to_host(host, device)?;
                }
            }
            gpu.copy_to_host(&mut self.status_host, &state.cells.status)
        }
    }

    /// Enqueues the neighbour search and the model at the device positions: atom
    /// energies, and with `want_forces` the forces and per-atom virials.
    pub(crate) fn enqueue_model(&mut self, want_forces: bool) -> Result<()> {
        let state = &mut self.state;
        state.cells.enqueue_build()?;
        if want_forces {
            state.gpu.clear(&mut state.edge_adjoint)?;
        }
        if state.num_atoms == 0 {
            return Ok(());
        }
        self.pass.enqueue(&self.state, want_forces)?;
        if want_forces {
            self.state.enqueue_forces(self.model.cutoff(), self.model.unit_epsilon())?;
        }
        Ok(())
    }

    /// Evaluates the batch at `positions` (one call; a graph replay when the shape
    /// repeats). Grows the edge buffers and repeats if the edges did not fit.
    pub fn run(
        &mut self,
        w: &GpuWeights,
        positions: &[[f32; 3]],
        want_forces: bool,
        batch: &Batch,
    ) -> Result<GpuOutput> {
        let kind = CallKind { forces: want_forces, ..CallKind::default() };
        self.run_kind(w, positions, kind, batch)
    }

    /// `run` with forces, of the weighted energy Σ w_i E_i (`energy_weights`: one per
    /// atom), and with `atom_virials` each atom's split virial
    /// ([`GpuOutput::atom_virials`]).
    pub fn run_weighted(
        &mut self,
        w: &GpuWeights,
        positions: &[[f32; 3]],
        energy_weights: &[f32],
        atom_virials: bool,
        batch: &Batch,
    ) -> Result<GpuOutput> {
        let n = self.state.num_atoms;
        if energy_weights.len() != n {
            return invalid_input!("{} energy weights for a workspace of {n} atoms", energy_weights.len());
        }
        let gpu = self.state.gpu.clone();
        if self.state.energy_weight.is_none() {
            self.state.energy_weight = Some(gpu.zeros::<f32>(n.max(1))?);
            self.energy_weight_host = Some(Pinned::new(n.max(1))?);
        }
        if atom_virials && self.state.pair_virial.is_none() {
            self.state.pair_virial = Some(gpu.zeros::<f32>(9 * n.max(1))?);
            self.pair_virial_host = Some(Pinned::new(9 * n.max(1))?);
        }
        if let Some(host) = &mut self.energy_weight_host {
            host[..n].copy_from_slice(energy_weights);
        }
        self.run_kind(w, positions, CallKind { forces: true, weighted: true, atom_virials }, batch)
    }

    fn run_kind(&mut self, w: &GpuWeights, positions: &[[f32; 3]], kind: CallKind, batch: &Batch) -> Result<GpuOutput> {
        let want_forces = kind.forces;
        self.state.kind = kind;
        self.check_weights(w)?;
        let n = self.state.num_atoms;
        if positions.len() != n {
            return invalid_input!("{} positions for a workspace of {n} atoms", positions.len());
        }
        for (k, p) in positions.iter().enumerate() {
            self.positions_in[3 * k..3 * k + 3].copy_from_slice(p);
        }
        let use_graph = self.use_graph;
        self.calls_of_shape += 1;
        let gpu = self.state.gpu.clone();
        match &self.graph {
            Some((graph_kind, graph)) if *graph_kind == kind && use_graph => {
                graph.launch().map_err(Error::cuda("replaying the CUDA graph"))?;
            }
            _ if use_graph && self.calls_of_shape >= 2 => {
                self.graph = None;
                let graph = gpu.capture(|| self.enqueue(want_forces))?;
                graph.launch().map_err(Error::cuda("launching the CUDA graph"))?;
                self.graph = Some((kind, graph));
            }
            _ => self.enqueue(want_forces)?,
        }
        gpu.synchronize()?;
        let st = &self.status_host;
        let words: [u32; status::WORDS] = std::array::from_fn(|k| st[k]);
        let build = crate::gpu_neighbors::BuildStatus { words, num_edges: 0 };
        self.state.cells.check(&build, &batch.structure_of, &batch.offsets)?;
        if words[status::OVERFLOW] != 0 {
            let total = self.state.cells.num_edges()?;
            self.grow_edges(total + total / 8)?;
            return self.run_kind(w, positions, kind, batch);
        }
        let s = self.state.num_structures;
        let out = &self.structure_out_host;
        let energies = (0..s).map(|k| out[k * STRUCTURE_OUT_WORDS]).collect();
        let virials = want_forces
            .then(|| (0..s).map(|k| std::array::from_fn(|q| out[k * STRUCTURE_OUT_WORDS + 1 + q])).collect());
        let forces =
            want_forces.then(|| (0..n).map(|i| std::array::from_fn(|x| self.forces_host[3 * i + x])).collect());
        let atom_virials = match &self.pair_virial_host {
            Some(host) if kind.atom_virials => Some((0..n).map(|i| std::array::from_fn(|q| host[9 * i + q])).collect()),
            _ => None,
        };
        Ok(GpuOutput { energies, atom_energies: self.atom_energy_host[..n].to_vec(), forces, virials, atom_virials })
    }

    /// Grows the edge buffers to `capacity` edges (the captured graph goes: it named
    /// the old buffers).
    pub(crate) fn grow_edges(&mut self, capacity: usize) -> Result<()> {
        let state = &mut self.state;
        state.cells.reserve_edges(capacity)?;
        let cap = state.cells.edge_capacity();
        state.edge_adjoint = state.gpu.zeros::<f32>(4 * state.groups * cap)?;
        self.graph = None;
        self.calls_of_shape = 0;
        Ok(())
    }

    pub fn edge_capacity(&self) -> usize {
        self.state.cells.edge_capacity()
    }

    /// Approximate device bytes this workspace holds.
    pub fn bytes(&self) -> usize {
        self.state.bytes() + self.pass.bytes()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // A failed call may have left copies into the pinned buffers in flight; they
        // must land before the buffers are freed (device buffers are freed in stream
        // order, so need no wait).
        let _ = self.state.gpu.synchronize();
    }
}

/// No edge kernels were instantiated for `channels` channels a lane.
pub(crate) fn unsupported_channels(channels: usize) -> Error {
    Error::Unsupported(format!("internal: no edge kernels for {channels} channels a lane"))
}

/// No atom-tile kernels were instantiated for tiles of `atoms` atoms.
pub(crate) fn unsupported_tile(atoms: usize) -> Error {
    Error::Unsupported(format!("internal: no atom-tile kernels for tiles of {atoms} atoms"))
}

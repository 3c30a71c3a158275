//! The student model on the GPU: weights and filter tables uploaded once, a
//! workspace per batch shape (reused across calls), the whole call — neighbour
//! search, forward, adjoint, forces, per-structure sums — enqueued on one stream and,
//! from the second call of a shape on, replayed as one CUDA graph.

use super::filter_table;
use super::student::Linear;
use super::Weights;
use crate::error::{invalid_input, Error, Result};
use crate::gpu::{grid_1d, warp_per_atom, Gpu, Pinned, BLOCK_THREADS};
use crate::gpu_neighbors::GpuCellList;
use crate::structure::Batch;
use cudarc::driver::{CudaGraph, CudaSlice, LaunchConfig};
use mlff_kernels::cell_list::StructureRecord;
use mlff_kernels::common::args::{ModelArgs, STRUCTURE_OUT_WORDS};
use mlff_kernels::common::entries as common_kernels;
use mlff_kernels::mma::TILE_ROWS;
use mlff_kernels::neighbors::args::status;
use mlff_kernels::painn::entries as painn_kernels;
use mlff_kernels::student::entries as student_kernels;
use mlff_kernels::student::tensor_core as tc;
use std::sync::Arc;

struct DeviceLinear {
    weight_t: CudaSlice<f32>,
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    /// `weight_t` and `weight` in the tensor-core fragment layout, where the
    /// layer's sizes fit it (both multiples of 8).
    tensor_core: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
}

impl DeviceLinear {
    fn new(gpu: &Gpu, l: &Linear) -> Result<Self> {
        Ok(DeviceLinear {
            weight_t: gpu.upload(&l.weight_t)?,
            weight: gpu.upload(&l.weight())?,
            bias: gpu.upload(&l.bias)?,
            tensor_core: None,
        })
    }

    /// `new`, plus the fragment layouts for the tensor-core kernels where the sizes
    /// fit them (only the student's update layers have such kernels).
    fn with_fragments(gpu: &Gpu, l: &Linear) -> Result<Self> {
        let (inputs, outputs) = (l.inputs(), l.bias.len());
        let weight = l.weight();
        let mut forward = vec![0.0f32; mlff_kernels::mma::fragment_len(inputs, outputs)];
        let mut backward = vec![0.0f32; forward.len()];
        let fits = mlff_kernels::mma::write_fragments(&l.weight_t, inputs, outputs, &mut forward)
            && mlff_kernels::mma::write_fragments(&weight, outputs, inputs, &mut backward);
        let tensor_core = if fits { Some((gpu.upload(&forward)?, gpu.upload(&backward)?)) } else { None };
        Ok(DeviceLinear {
            weight_t: gpu.upload(&l.weight_t)?,
            weight: gpu.upload(&weight)?,
            bias: gpu.upload(&l.bias)?,
            tensor_core,
        })
    }

    /// Device addresses of the fragment-layout weights (forward, backward), or nulls.
    fn tensor_core_addresses(&self, gpu: &Gpu) -> (*const f32, *const f32) {
        match &self.tensor_core {
            Some((forward, backward)) => (gpu.address(forward), gpu.address(backward)),
            None => (std::ptr::null(), std::ptr::null()),
        }
    }
}

struct DeviceBlock {
    table: CudaSlice<f32>,
    update_in: DeviceLinear,
    update_out: DeviceLinear,
    mixing: [f32; 9],
}

/// A PaiNN block: filter table, context network, channel mix and mixing network.
struct DevicePainnBlock {
    table: CudaSlice<f32>,
    context_in: DeviceLinear,
    context_out: DeviceLinear,
    channel_mix: DeviceLinear,
    update_in: DeviceLinear,
    update_out: DeviceLinear,
}

enum DeviceBlocks {
    Student(Vec<DeviceBlock>),
    Painn(Vec<DevicePainnBlock>),
}

/// A model's weights on one GPU.
pub struct GpuWeights {
    gpu: Arc<Gpu>,
    hidden: usize,
    cutoff: f32,
    embedding: CudaSlice<f32>,
    blocks: DeviceBlocks,
    head: Vec<DeviceLinear>,
    /// Per-element energy offsets (PaiNN's mean folded in), when the model has any.
    atomref: Option<CudaSlice<f32>>,
}

/// Hidden sizes the edge and atom kernels are instantiated for.
const SUPPORTED_HIDDEN: [usize; 4] = [32, 64, 128, 256];

impl GpuWeights {
    pub fn new(gpu: Arc<Gpu>, weights: &Weights) -> Result<Self> {
        let h = match weights {
            Weights::Student(w) => w.hidden_dim(),
            Weights::Painn(w) => w.features(),
        };
        if !SUPPORTED_HIDDEN.contains(&h) {
            return Err(Error::Unsupported(format!(
                "the GPU kernels support {SUPPORTED_HIDDEN:?} feature channels, this model has {h}; use the CPU"
            )));
        }
        match weights {
            Weights::Student(w) => {
                let blocks = (0..w.config.num_interactions)
                    .map(|t| {
                        let b = &w.interactions[t];
                        Ok(DeviceBlock {
                            table: gpu.upload(&filter_table::build(w, t)?)?,
                            update_in: DeviceLinear::with_fragments(&gpu, &b.update_in)?,
                            update_out: DeviceLinear::with_fragments(&gpu, &b.update_out)?,
                            mixing: b.mixing,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let head = w.head.iter().map(|l| DeviceLinear::new(&gpu, l)).collect::<Result<Vec<_>>>()?;
                let atomref = w.atomref.as_ref().map(|r| gpu.upload(r)).transpose()?;
                Ok(GpuWeights {
                    embedding: gpu.upload(&w.embedding)?,
                    blocks: DeviceBlocks::Student(blocks),
                    head,
                    atomref,
                    hidden: h,
                    cutoff: w.config.cutoff,
                    gpu,
                })
            }
            Weights::Painn(w) => {
                let blocks = (0..w.blocks.len())
                    .map(|t| {
                        let b = &w.blocks[t];
                        Ok(DevicePainnBlock {
                            table: gpu.upload(&filter_table::build_painn(w, t)?)?,
                            context_in: DeviceLinear::new(&gpu, &b.context_in)?,
                            context_out: DeviceLinear::new(&gpu, &b.context_out)?,
                            channel_mix: DeviceLinear::new(&gpu, &b.channel_mix)?,
                            update_in: DeviceLinear::new(&gpu, &b.update_in)?,
                            update_out: DeviceLinear::new(&gpu, &b.update_out)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let head = w.readout.iter().map(|l| DeviceLinear::new(&gpu, l)).collect::<Result<Vec<_>>>()?;
                let offsets: Vec<f32> = (0..=w.config.max_z as u32).map(|z| w.atom_offset(z)).collect();
                Ok(GpuWeights {
                    embedding: gpu.upload(&w.embedding)?,
                    blocks: DeviceBlocks::Painn(blocks),
                    head,
                    atomref: Some(gpu.upload(&offsets)?),
                    hidden: h,
                    cutoff: w.config.cutoff,
                    gpu,
                })
            }
        }
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn num_blocks(&self) -> usize {
        match &self.blocks {
            DeviceBlocks::Student(b) => b.len(),
            DeviceBlocks::Painn(b) => b.len(),
        }
    }

    /// Whether the student's update kernels for `atoms` atoms run on the tensor
    /// cores (`gpu_student_tc`): every block's update weights in the fragment layout,
    /// H ≤ 128 (what the tests cover; the adjoint then takes 75 KB of shared memory),
    /// and at least `TENSOR_CORE_MIN_TILES` tiles of 16 atoms. `MLFF_TENSOR_CORES=0|1`
    /// forces the choice, to compare.
    fn tensor_core_updates(&self, atoms: usize) -> bool {
        let DeviceBlocks::Student(blocks) = &self.blocks else { return false };
        let possible = self.hidden <= 128
            && blocks.iter().all(|b| b.update_in.tensor_core.is_some() && b.update_out.tensor_core.is_some());
        match std::env::var("MLFF_TENSOR_CORES").as_deref() {
            Ok("0") => false,
            Ok("1") => possible,
            _ => possible && atoms.div_ceil(TILE_ROWS) >= TENSOR_CORE_MIN_TILES,
        }
    }

    fn is_painn(&self) -> bool {
        matches!(self.blocks, DeviceBlocks::Painn(_))
    }
}

/// Device bytes per atom a call needs beyond the edges (state, per-block mid states,
/// gradients, per-atom outputs; PaiNN's context and its adjoint), and per edge.
pub fn bytes_per_atom(hidden: usize, blocks: usize, painn: bool) -> usize {
    4 * ((12 + 4 * blocks + if painn { 6 } else { 0 }) * hidden + 3 + 9 + 3 + 1) + 64
}
pub fn bytes_per_edge(groups: usize) -> usize {
    4 + 12 + 4 + 16 * groups
}

/// Channel groups per atom for the edge kernels: at most 2 channels a lane, then
/// enough warps to fill the GPU. Measured on the H100 (PERF.md, session 5): at 4
/// channels a lane the edge adjoint ran 3.3× its forward (10,000 atoms 8.1 ms,
/// against 5.7 ms at 2; PaiNN 13.7 against 10.0 ms). Each group adds 16 bytes per edge
/// of adjoint accumulator: at 2 groups 1,000,000 atoms still fit 16 KB per atom.
fn channel_groups(hidden: usize, atoms: usize) -> usize {
    if let Some(g) = std::env::var("MLFF_CHANNEL_GROUPS").ok().and_then(|v| v.parse::<usize>().ok()) {
        if g.is_power_of_two() && hidden % (32 * g) == 0 && hidden / (32 * g) <= 8 {
            return g;
        }
    }
    let mut g = 1;
    while hidden / (32 * g) > 2 {
        g *= 2;
    }
    while atoms * g < 8192 && hidden / (32 * g * 2) >= 1 {
        g *= 2;
    }
    g
}

/// Fewest 16-atom tiles for which the student's update runs on the tensor cores: from
/// where the CUDA-core path would take tiles of 8 atoms. A tensor-core block is
/// latency-bound (16 warps, each a chain of ~250 HMMA); a forward + adjoint pair of
/// launches takes ~65–80 µs whatever the input, against ~40 µs for the CUDA-core tiles
/// of 1 or 2 atoms and ~87 µs for tiles of 8. Measured (PERF.md, session 7): 1,000
/// atoms 869 → 831 µs, 10,000 atoms 5.33 → 4.79 ms, 256 × 24 1.88 → 1.47 ms, and 24
/// atoms 243 → 316 µs (hence CUDA cores there).
const TENSOR_CORE_MIN_TILES: usize = SMALL_TILES_BELOW_ATOMS.div_ceil(TILE_ROWS);

/// Below this many atoms the student keeps activations for the adjoint: each block's
/// input state (4H floats an atom a block: 2 KB at H = 128) instead of recomputing it
/// with one more update launch a block, and the update's [pre | g1 | g2] (3H floats:
/// 1.5 KB), so that its adjoint skips two of four products. Above, memory per atom
/// matters more (16 KB target; below, at most ~22 KB an atom, 180 MB). Measured
/// (PERF.md, session 7): the inputs 24 atoms −10 %, 1,000 atoms −3 %, 256 × 24 −9 %;
/// the update's activations a further −10 %, −4.3 % and −7 %.
const KEEP_ACTIVATIONS_BELOW_ATOMS: usize = 8192;

/// Whether a student workspace for `atoms` atoms keeps activations for the adjoint
/// (`MLFF_KEEP_BLOCK_INPUTS=0|1` forces the choice, to compare).
fn keeps_activations(w: &GpuWeights, atoms: usize) -> bool {
    if w.is_painn() {
        return false;
    }
    match std::env::var("MLFF_KEEP_BLOCK_INPUTS").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => atoms < KEEP_ACTIVATIONS_BELOW_ATOMS,
    }
}

/// Below this many atoms the atom-tile kernels (student and PaiNN) take tiles of 2
/// atoms: tiles of 8 would leave most of the 132 SMs idle.
const SMALL_TILES_BELOW_ATOMS: usize = 528;

/// Below this many atoms the student's atom-tile kernels take tiles of one atom (one
/// block an atom, k split over 8 slices): at 24 atoms 274 → 256 µs against tiles of 2,
/// at 1,000 atoms 938 → 951 µs (PERF.md, session 7).
const SINGLE_ATOM_TILES_BELOW_ATOMS: usize = 2 * 132;

/// Atoms per block of the student's atom-tile kernels.
///
/// 8 (measured against 16 on the H100, PERF.md, session 4: each thread walks one
/// serial chain over k, so halving the atoms per tile halves the chain's work and
/// doubles the blocks), and 2 below 528 atoms, where tiles of 8 leave most of the 132
/// SMs idle: measured in session 5, 24 atoms 525 → 399 µs against TA = 8, 1,000 atoms
/// a tie (1.811 / 1.813 ms), 10,000 atoms 9.54 → 9.78 ms and 256 × 24 2.38 → 2.71 ms
/// worse; 1 below `SINGLE_ATOM_TILES_BELOW_ATOMS`. `MLFF_TILE_ATOMS=1|2|4|8|16`
/// picks one, to measure it.
fn tile_atoms(hidden: usize, atoms: usize) -> usize {
    match std::env::var("MLFF_TILE_ATOMS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(16) if hidden <= 128 => 16,
        Some(t @ (1 | 2 | 4 | 8)) => t,
        _ if atoms < SINGLE_ATOM_TILES_BELOW_ATOMS => 1,
        _ if atoms < SMALL_TILES_BELOW_ATOMS => 2,
        _ => 8,
    }
}

/// Atoms per block of PaiNN's atom-tile kernels: 8 (4 at F = 256, for shared memory),
/// 2 for small inputs as the student (PERF.md, session 5: 24 atoms 1.03 → 0.63 ms).
/// 4 at F = 128 measured 7 % faster at 24 atoms but 8 % slower at 1,000 (session 4).
/// `MLFF_PAINN_TILE_ATOMS=2|4|8` picks one.
fn painn_tile_atoms(hidden: usize, atoms: usize) -> usize {
    match std::env::var("MLFF_PAINN_TILE_ATOMS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(t @ (2 | 4)) => t,
        Some(8) if hidden <= 128 => 8,
        _ if atoms < SMALL_TILES_BELOW_ATOMS => 2,
        _ if hidden <= 128 => 8,
        _ => 4,
    }
}

/// k-slices of the atom-tile kernels that split k (split-K): up to 4, at most
/// `max_threads` threads a block (the split kernels' register count decides it), and
/// only while the tiles alone leave the H100's 132 SMs short of work. Measured on the
/// shared model (PERF.md, session 4), S = 4 against 1: 24 atoms −19 %, 1,000 atoms
/// (125 tiles) −6 %, but 10,000 atoms +14 % and 256 × 24 atoms (768 tiles) +26 %.
/// `MLFF_SPLIT_K=1|2|4` overrides.
fn k_slices(hidden: usize, max_threads: usize, tiles: usize) -> usize {
    k_slices_at_most(hidden, max_threads, tiles, 4)
}

/// `k_slices` with up to `max_slices` slices.
fn k_slices_at_most(hidden: usize, max_threads: usize, tiles: usize, max_slices: usize) -> usize {
    let most = (max_threads / hidden).clamp(1, max_slices);
    match std::env::var("MLFF_SPLIT_K").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(s @ (1 | 2 | 4 | 8)) => s.min(most),
        _ if tiles < 2 * 132 => most,
        _ => 1,
    }
}

/// The student's update kernels: up to 1,024 threads and 8 slices at 1 atom a tile
/// (48 registers a thread), 512 threads a block at 2 to 8 atoms a tile (at H = 256,
/// (4 + 2)·H·8 floats is the 48 KB of shared memory a block may have without opting
/// in); tiles of 16 atoms (`MLFF_TILE_ATOMS=16`) take 168 registers a thread and stay
/// unsplit.
fn update_slices(hidden: usize, tile_atoms: usize, tiles: usize) -> usize {
    match tile_atoms {
        1 => k_slices_at_most(hidden, 1024, tiles, 8),
        2..=8 => k_slices(hidden, 512, tiles),
        _ => 1,
    }
}

/// PaiNN's context and mixing kernels: at most 256 threads a block (the split mixing
/// adjoint takes 166 registers a thread).
fn painn_slices(hidden: usize, tiles: usize) -> usize {
    k_slices(hidden, 256, tiles)
}

/// Buffers of one batch shape, reused across calls.
pub struct Workspace {
    pub(crate) cells: GpuCellList,
    num_atoms: usize,
    num_structures: usize,
    groups: usize,
    numbers: CudaSlice<u32>,
    s: CudaSlice<f32>,
    v: CudaSlice<f32>,
    s_mid: Vec<CudaSlice<f32>>,
    v_mid: Vec<CudaSlice<f32>>,
    /// The student's block inputs s, v of blocks 1..T, kept from the forward for the
    /// adjoint when the input is small (`keeps_activations`); empty otherwise, and
    /// the adjoint recomputes them (one update launch a block).
    kept_inputs: Vec<(CudaSlice<f32>, CudaSlice<f32>)>,
    /// With the kept inputs, each block's update activations [pre | g1 | g2] (3H
    /// floats an atom), so that the adjoint skips two of its four products.
    kept_update: Vec<CudaSlice<f32>>,
    gs: CudaSlice<f32>,
    gv: CudaSlice<f32>,
    gs_mid: CudaSlice<f32>,
    gv_mid: CudaSlice<f32>,
    /// PaiNN's per-atom context and its adjoint (one float for the student).
    x: CudaSlice<f32>,
    gx: CudaSlice<f32>,
    edge_adjoint: CudaSlice<f32>,
    atom_energy: CudaSlice<f32>,
    atom_virial: CudaSlice<f32>,
    pub(crate) forces: CudaSlice<f32>,
    pub(crate) structure_out: CudaSlice<f64>,
    positions_in: Pinned<f32>,
    structure_out_host: Pinned<f64>,
    forces_host: Pinned<f32>,
    atom_energy_host: Pinned<f32>,
    status_host: Pinned<u32>,
    graph: Option<(bool, CudaGraph)>,
    /// False with `MLFF_NO_GRAPH` set (every call enqueued eagerly, e.g. to profile).
    use_graph: bool,
    calls_of_shape: usize,
    /// Identity of the batch (numbers, cells) the workspace was made for.
    key: (Vec<u32>, Vec<StructureRecord>),
}

/// What one call returns, for the whole batch.
pub struct GpuOutput {
    pub energies: Vec<f64>,
    pub atom_energies: Vec<f32>,
    pub forces: Option<Vec<[f32; 3]>>,
    /// Σ_edges r ⊗ ∂E/∂r per structure (row-major), when forces were asked for.
    pub virials: Option<Vec<[f64; 9]>>,
}

impl Workspace {
    pub fn new(weights: &GpuWeights, batch: &Batch) -> Result<Self> {
        let gpu = weights.gpu.clone();
        let (n, s, h, t) = (batch.num_atoms(), batch.num_structures(), weights.hidden, weights.num_blocks());
        let context = if weights.is_painn() { 3 * n * h } else { 1 };
        let cells = GpuCellList::new(gpu.clone(), batch, weights.cutoff, 0.0, false)?;
        let groups = channel_groups(h, n);
        let cap = cells.edge_capacity();
        let nz = n.max(1);
        let zeros = |len: usize| gpu.zeros::<f32>(len.max(1));
        let keep = keeps_activations(weights, n);
        Ok(Workspace {
            num_atoms: n,
            num_structures: s,
            groups,
            numbers: gpu.upload(&if batch.numbers.is_empty() { vec![1] } else { batch.numbers.clone() })?,
            s: zeros(n * h)?,
            v: zeros(3 * n * h)?,
            s_mid: (0..t).map(|_| zeros(n * h)).collect::<Result<_>>()?,
            v_mid: (0..t).map(|_| zeros(3 * n * h)).collect::<Result<_>>()?,
            kept_inputs: (1..if keep { t } else { 1 })
                .map(|_| Ok((zeros(n * h)?, zeros(3 * n * h)?)))
                .collect::<Result<_>>()?,
            kept_update: (0..if keep { t } else { 0 }).map(|_| zeros(3 * n * h)).collect::<Result<_>>()?,
            gs: zeros(n * h)?,
            gv: zeros(3 * n * h)?,
            gs_mid: zeros(n * h)?,
            gv_mid: zeros(3 * n * h)?,
            x: zeros(context)?,
            gx: zeros(context)?,
            edge_adjoint: zeros(4 * groups * cap)?,
            atom_energy: zeros(n)?,
            atom_virial: zeros(9 * n)?,
            forces: zeros(3 * n)?,
            structure_out: gpu.zeros::<f64>(STRUCTURE_OUT_WORDS * s.max(1))?,
            positions_in: Pinned::new(3 * nz)?,
            structure_out_host: Pinned::new(STRUCTURE_OUT_WORDS * s.max(1))?,
            forces_host: Pinned::new(3 * nz)?,
            atom_energy_host: Pinned::new(nz)?,
            status_host: Pinned::new(status::WORDS)?,
            graph: None,
            use_graph: std::env::var_os("MLFF_NO_GRAPH").is_none(),
            calls_of_shape: 0,
            key: (batch.numbers.clone(), crate::gpu_neighbors::structure_records(batch)),
            cells,
        })
    }

    /// Whether this workspace serves `batch` (same atoms, elements and cells).
    pub fn fits(&self, batch: &Batch) -> bool {
        self.key.0 == batch.numbers && self.key.1 == crate::gpu_neighbors::structure_records(batch)
    }

    fn args(&self, w: &GpuWeights) -> ModelArgs {
        let g = &w.gpu;
        let cells = &self.cells;
        // PaiNN's readout has two layers: the third slot stays null.
        let head = |k: usize| -> (*const f32, *const f32, *const f32) {
            match w.head.get(k) {
                Some(l) => (g.address(&l.weight_t), g.address(&l.weight), g.address(&l.bias)),
                None => (std::ptr::null(), std::ptr::null(), std::ptr::null()),
            }
        };
        let (h0, h1, h2) = (head(0), head(1), head(2));
        ModelArgs {
            positions: g.address(&cells.positions) as *const [f32; 3],
            numbers: g.address(&self.numbers),
            structure_of: g.address(&cells.structure_of),
            records: g.address(&cells.records) as *const StructureRecord,
            row_ptr: g.address(&cells.row_ptr),
            src: g.address(&cells.src),
            shift: g.address(&cells.shift) as *const [i32; 3],
            reverse: g.address(&cells.reverse),
            s: g.address(&self.s),
            v: g.address(&self.v),
            s_mid: std::ptr::null_mut(),
            update_kept: std::ptr::null_mut(),
            v_mid: std::ptr::null_mut(),
            gs: g.address(&self.gs),
            gv: g.address(&self.gv),
            gs_mid: g.address(&self.gs_mid),
            gv_mid: g.address(&self.gv_mid),
            embedding: g.address(&w.embedding),
            table: std::ptr::null(),
            update_in_t: std::ptr::null(),
            update_in: std::ptr::null(),
            update_in_b: std::ptr::null(),
            update_out_t: std::ptr::null(),
            update_out: std::ptr::null(),
            update_out_b: std::ptr::null(),
            update_in_t_tc: std::ptr::null(),
            update_in_tc: std::ptr::null(),
            update_out_t_tc: std::ptr::null(),
            update_out_tc: std::ptr::null(),
            head_t: [h0.0, h1.0, h2.0],
            head: [h0.1, h1.1, h2.1],
            head_b: [h0.2, h1.2, h2.2],
            atomref: w.atomref.as_ref().map_or(std::ptr::null(), |r| g.address(r)),
            x: g.address(&self.x),
            gx: g.address(&self.gx),
            context_in_t: std::ptr::null(),
            context_in: std::ptr::null(),
            context_in_b: std::ptr::null(),
            context_out_t: std::ptr::null(),
            context_out: std::ptr::null(),
            context_out_b: std::ptr::null(),
            channel_mix_t: std::ptr::null(),
            channel_mix: std::ptr::null(),
            edge_adjoint: g.address(&self.edge_adjoint) as *mut [f32; 4],
            edge_grad: g.address(&self.edge_adjoint) as *mut [f32; 4],
            atom_energy: g.address(&self.atom_energy),
            atom_virial: g.address(&self.atom_virial) as *mut [f32; 9],
            forces: g.address(&self.forces) as *mut [f32; 3],
            structure_out: g.address(&self.structure_out),
            mixing: [0.0; 9],
            num_atoms: self.num_atoms as u32,
            num_structures: self.num_structures as u32,
            hidden: w.hidden as u32,
            groups: self.groups as u32,
            edge_capacity: cells.edge_capacity() as u32,
            cutoff: w.cutoff,
            table_inv_h: filter_table::inverse_spacing(w.cutoff),
            has_gv: 0,
            want_gradient: 0,
            unit_epsilon: if w.is_painn() { 0.0 } else { mlff_kernels::geometry::UNIT_EPSILON },
        }
    }

    /// Where the student keeps state t (the input of block t, t = T the output of
    /// the last): the kept inputs when there are, else the one state buffer.
    fn state(&self, w: &GpuWeights, t: usize) -> (*mut f32, *mut f32) {
        match self.kept_inputs.get(t.wrapping_sub(1)) {
            Some((s, v)) => (w.gpu.address(s), w.gpu.address(v)),
            None => (w.gpu.address(&self.s), w.gpu.address(&self.v)),
        }
    }

    /// `block_args` reading or writing state `state`.
    fn block_args_at(&self, w: &GpuWeights, base: &ModelArgs, t: usize, state: usize) -> ModelArgs {
        let (s, v) = self.state(w, state);
        ModelArgs { s, v, ..self.block_args(w, base, t) }
    }

    fn block_args(&self, w: &GpuWeights, base: &ModelArgs, t: usize) -> ModelArgs {
        let g = &w.gpu;
        let linear = |l: &DeviceLinear| (g.address(&l.weight_t), g.address(&l.weight), g.address(&l.bias));
        // What both architectures' blocks have: mid states, filter table, update MLP.
        let common = |table: &CudaSlice<f32>, update_in: &DeviceLinear, update_out: &DeviceLinear| {
            let (update_in_t_tc, update_in_tc) = update_in.tensor_core_addresses(g);
            let (update_out_t_tc, update_out_tc) = update_out.tensor_core_addresses(g);
            let (update_in_t, update_in, update_in_b) = linear(update_in);
            let (update_out_t, update_out, update_out_b) = linear(update_out);
            ModelArgs {
                update_in_t_tc,
                update_in_tc,
                update_out_t_tc,
                update_out_tc,
                s_mid: g.address(&self.s_mid[t]),
                v_mid: g.address(&self.v_mid[t]),
                table: g.address(table),
                update_in_t,
                update_in,
                update_in_b,
                update_out_t,
                update_out,
                update_out_b,
                ..*base
            }
        };
        match &w.blocks {
            DeviceBlocks::Student(blocks) => {
                let b = &blocks[t];
                let update_kept = self.kept_update.get(t).map_or(std::ptr::null_mut(), |k| g.address(k));
                ModelArgs { mixing: b.mixing, update_kept, ..common(&b.table, &b.update_in, &b.update_out) }
            }
            DeviceBlocks::Painn(blocks) => {
                let b = &blocks[t];
                let (context_in_t, context_in, context_in_b) = linear(&b.context_in);
                let (context_out_t, context_out, context_out_b) = linear(&b.context_out);
                ModelArgs {
                    context_in_t,
                    context_in,
                    context_in_b,
                    context_out_t,
                    context_out,
                    context_out_b,
                    channel_mix_t: g.address(&b.channel_mix.weight_t),
                    channel_mix: g.address(&b.channel_mix.weight),
                    ..common(&b.table, &b.update_in, &b.update_out)
                }
            }
        }
    }

    /// Enqueues one whole call (positions already in `positions_in`), results copied
    /// into the pinned output buffers.
    fn enqueue(&mut self, w: &GpuWeights, want_forces: bool) -> Result<()> {
        let gpu = w.gpu.clone();
        gpu.copy_to_device(&mut self.cells.positions, &self.positions_in)?;
        self.enqueue_model(w, want_forces)?;
        self.enqueue_structure_sums(w, want_forces)?;
        if self.num_structures > 0 {
            gpu.copy_to_host(&mut self.structure_out_host, &self.structure_out)?;
        }
        if self.num_atoms > 0 {
            gpu.copy_to_host(&mut self.atom_energy_host, &self.atom_energy)?;
            if want_forces {
                gpu.copy_to_host(&mut self.forces_host, &self.forces)?;
            }
        }
        gpu.copy_to_host(&mut self.status_host, &self.cells.status)
    }

    /// Enqueues the neighbour search and the model at the device positions: atom
    /// energies, and with `want_forces` the forces and per-atom virials.
    pub(crate) fn enqueue_model(&mut self, w: &GpuWeights, want_forces: bool) -> Result<()> {
        self.cells.enqueue_build()?;
        if want_forces {
            w.gpu.clear(&mut self.edge_adjoint)?;
        }
        if self.num_atoms == 0 {
            return Ok(());
        }
        match w.blocks {
            DeviceBlocks::Student(_) => self.enqueue_student(w, want_forces)?,
            DeviceBlocks::Painn(_) => self.enqueue_painn(w, want_forces)?,
        }
        if want_forces {
            let base = self.args(w);
            let rows = warp_per_atom(self.num_atoms)?;
            w.gpu.launch(common_kernels::EDGE_GRADIENTS, rows, &base)?;
            w.gpu.launch(common_kernels::FORCES, rows, &base)?;
        }
        Ok(())
    }

    /// Architecture 1: forward and adjoint, ending in the per-edge adjoints.
    fn enqueue_student(&mut self, w: &GpuWeights, want_forces: bool) -> Result<()> {
        let gpu = w.gpu.clone();
        let n = self.num_atoms;
        let h = w.hidden;
        let base = ModelArgs { want_gradient: want_forces as u32, ..self.args(w) };
        let ta = tile_atoms(h, n);
        let tiles = LaunchConfig {
            grid_dim: (n.div_ceil(ta).max(1) as u32, 1, 1),
            block_dim: (h as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let edge_warps = grid_1d(32 * n * self.groups, 128)?;
        let ch = h / (32 * self.groups);
        let (message, message_back) = student_kernels::message(ch).ok_or_else(|| unsupported_channels(ch))?;
        let (tile_update, tile_update_back) = student_kernels::update(ta).ok_or_else(|| unsupported_tile(ta))?;
        let (update_kernel, update_back_kernel, update, back) = if w.tensor_core_updates(n) {
            let blocks = LaunchConfig {
                grid_dim: (n.div_ceil(TILE_ROWS) as u32, 1, 1),
                block_dim: (32 * tc::BLOCK_WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let forward = LaunchConfig { shared_mem_bytes: tc::forward_shared_bytes(h) as u32, ..blocks };
            let backward = LaunchConfig { shared_mem_bytes: tc::backward_shared_bytes(h) as u32, ..blocks };
            (student_kernels::UPDATE_TC, student_kernels::UPDATE_BACK_TC, forward, backward)
        } else {
            // The update kernels split k over S slices of H threads (split-K).
            let slices = update_slices(h, ta, n.div_ceil(ta));
            let update_tiles = LaunchConfig { block_dim: ((h * slices) as u32, 1, 1), ..tiles };
            let forward = LaunchConfig { shared_mem_bytes: ((3 + slices) * h * ta * 4) as u32, ..update_tiles };
            let backward = LaunchConfig { shared_mem_bytes: ((4 + slices) * h * ta * 4) as u32, ..update_tiles };
            (tile_update, tile_update_back, forward, backward)
        };
        gpu.launch(common_kernels::EMBED, grid_1d(n * h, BLOCK_THREADS)?, &base)?;
        let blocks = w.num_blocks();
        for t in 0..blocks {
            gpu.launch(message, edge_warps, &self.block_args_at(w, &base, t, t))?;
            gpu.launch(update_kernel, update, &self.block_args_at(w, &base, t, t + 1))?;
        }
        let readout_atoms = readout_tile_atoms(ta);
        let readout_kernel = student_kernels::readout(readout_atoms).ok_or_else(|| unsupported_tile(readout_atoms))?;
        let readout = LaunchConfig {
            grid_dim: (n.div_ceil(readout_atoms).max(1) as u32, 1, 1),
            shared_mem_bytes: ((13 * h / 4) * readout_atoms * 4) as u32,
            ..tiles
        };
        let (s_out, v_out) = self.state(w, blocks);
        gpu.launch(readout_kernel, readout, &ModelArgs { s: s_out, v: v_out, ..base })?;
        if want_forces {
            for t in (0..blocks).rev() {
                // The block's input state again, unless kept: the embedding (which the
                // last update overwrote), or the update of the block before.
                if t == 0 {
                    gpu.launch(common_kernels::EMBED, grid_1d(n * h, BLOCK_THREADS)?, &base)?;
                } else if self.kept_inputs.is_empty() {
                    gpu.launch(update_kernel, update, &self.block_args(w, &base, t - 1))?;
                }
                let a = ModelArgs { has_gv: (t + 1 < blocks) as u32, ..self.block_args_at(w, &base, t, t) };
                gpu.launch(update_back_kernel, back, &a)?;
                gpu.launch(message_back, edge_warps, &a)?;
            }
        }
        Ok(())
    }

    /// PaiNN: forward and adjoint, ending in the per-edge adjoints. Per block: the
    /// context x of the block input, the interaction, the mixing. The adjoint
    /// recomputes each block's input (embedding, or the previous block's mixing) and
    /// its context instead of storing them.
    fn enqueue_painn(&mut self, w: &GpuWeights, want_forces: bool) -> Result<()> {
        let gpu = w.gpu.clone();
        let (n, h, blocks) = (self.num_atoms, w.hidden, w.num_blocks());
        let base = ModelArgs { want_gradient: want_forces as u32, ..self.args(w) };
        let ta = painn_tile_atoms(h, n);
        // Context and mixing split k over S slices (split-K, as the student's update);
        // the readout does not (its layers run on parts of the block only).
        let slices = painn_slices(h, n.div_ceil(ta));
        let tile_with = |floats: usize, slices: usize| LaunchConfig {
            grid_dim: (n.div_ceil(ta).max(1) as u32, 1, 1),
            block_dim: ((h * slices) as u32, 1, 1),
            shared_mem_bytes: ((floats + slices) * h * ta * 4) as u32,
        };
        let tile = |floats: usize| tile_with(floats, slices);
        let painn_kernels::TileKernels { context, context_back, mixing, mixing_back, readout } =
            painn_kernels::tiles(ta, slices > 1).ok_or_else(|| unsupported_tile(ta))?;
        let edge_warps = grid_1d(32 * n * self.groups, 128)?;
        let ch = h / (32 * self.groups);
        let (message, message_back) = painn_kernels::message(ch).ok_or_else(|| unsupported_channels(ch))?;
        let embed = grid_1d(n * h, BLOCK_THREADS)?;
        gpu.launch(common_kernels::EMBED, embed, &base)?;
        for t in 0..blocks {
            let a = self.block_args(w, &base, t);
            gpu.launch(context, tile(2), &a)?;
            gpu.launch(message, edge_warps, &a)?;
            gpu.launch(mixing, tile(5), &a)?;
        }
        let readout_tile =
            LaunchConfig { block_dim: (h as u32, 1, 1), shared_mem_bytes: (2 * h * ta * 4) as u32, ..tile(0) };
        gpu.launch(readout, readout_tile, &base)?;
        if !want_forces {
            return Ok(());
        }
        for t in (0..blocks).rev() {
            if t == 0 {
                gpu.launch(common_kernels::EMBED, embed, &base)?;
            } else {
                gpu.launch(mixing, tile(5), &self.block_args(w, &base, t - 1))?;
            }
            let a = ModelArgs { has_gv: (t + 1 < blocks) as u32, ..self.block_args(w, &base, t) };
            gpu.launch(context, tile(2), &a)?;
            gpu.launch(mixing_back, tile(6), &a)?;
            gpu.launch(message_back, edge_warps, &a)?;
            gpu.launch(context_back, tile(5), &a)?;
        }
        Ok(())
    }

    /// Enqueues the per-structure energies (and virials, after a pass with forces).
    pub(crate) fn enqueue_structure_sums(&self, w: &GpuWeights, with_virials: bool) -> Result<()> {
        if self.num_structures == 0 {
            return Ok(());
        }
        let base = self.args(w);
        let sums_args =
            ModelArgs { atom_virial: if with_virials { base.atom_virial } else { std::ptr::null_mut() }, ..base };
        let per_structure = LaunchConfig {
            grid_dim: (self.num_structures as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (256 * STRUCTURE_OUT_WORDS * 8) as u32,
        };
        w.gpu.launch(common_kernels::STRUCTURE_SUMS, per_structure, &sums_args)
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
        if positions.len() != self.num_atoms {
            return invalid_input!("{} positions for a workspace of {} atoms", positions.len(), self.num_atoms);
        }
        for (k, p) in positions.iter().enumerate() {
            self.positions_in[3 * k..3 * k + 3].copy_from_slice(p);
        }
        let use_graph = self.use_graph;
        self.calls_of_shape += 1;
        match &self.graph {
            Some((forces, graph)) if *forces == want_forces && use_graph => {
                graph.launch().map_err(Error::cuda("replaying the CUDA graph"))?;
            }
            _ if use_graph && self.calls_of_shape >= 2 => {
                self.graph = None;
                let gpu = w.gpu.clone();
                let graph = gpu.capture(|| self.enqueue(w, want_forces))?;
                graph.launch().map_err(Error::cuda("launching the CUDA graph"))?;
                self.graph = Some((want_forces, graph));
            }
            _ => self.enqueue(w, want_forces)?,
        }
        w.gpu.synchronize()?;
        let st = &self.status_host;
        let words: [u32; status::WORDS] = std::array::from_fn(|k| st[k]);
        let build = crate::gpu_neighbors::BuildStatus { words, num_edges: 0 };
        self.cells.check(&build, &batch.structure_of, &batch.offsets)?;
        if words[status::OVERFLOW] != 0 {
            let total = self.cells.num_edges()?;
            self.grow_edges(w, total + total / 8)?;
            return self.run(w, positions, want_forces, batch);
        }
        let s = self.num_structures;
        let out = &self.structure_out_host;
        let energies = (0..s).map(|k| out[k * STRUCTURE_OUT_WORDS]).collect();
        let virials = want_forces
            .then(|| (0..s).map(|k| std::array::from_fn(|q| out[k * STRUCTURE_OUT_WORDS + 1 + q])).collect());
        let n = self.num_atoms;
        let forces =
            want_forces.then(|| (0..n).map(|i| std::array::from_fn(|x| self.forces_host[3 * i + x])).collect());
        Ok(GpuOutput { energies, atom_energies: self.atom_energy_host[..n].to_vec(), forces, virials })
    }

    pub(crate) fn grow_edges(&mut self, w: &GpuWeights, capacity: usize) -> Result<()> {
        self.cells.reserve_edges(capacity)?;
        let cap = self.cells.edge_capacity();
        self.edge_adjoint = w.gpu.zeros::<f32>(4 * self.groups * cap)?;
        self.graph = None;
        self.calls_of_shape = 0;
        Ok(())
    }

    pub fn edge_capacity(&self) -> usize {
        self.cells.edge_capacity()
    }

    /// Approximate device bytes this workspace holds.
    pub fn bytes(&self) -> usize {
        let hidden = self.s.len() / self.num_atoms.max(1);
        let painn = self.x.len() > 1;
        let kept = 4 * self.kept_inputs.len() * (self.s.len() + self.v.len())
            + 4 * self.kept_update.iter().map(|k| k.len()).sum::<usize>();
        self.num_atoms * bytes_per_atom(hidden, self.s_mid.len(), painn)
            + self.edge_capacity() * bytes_per_edge(self.groups)
            + kept
    }
}

/// Atoms per block of the student's readout: those of the update's tiles, but at
/// most 2 (a chain of four small layers, so more blocks beat more reuse of each
/// weight): measured against 8 (PERF.md, session 7), 1,000 atoms −2.4 %, 10,000 atoms
/// −0.7 %, 256 × 24 −1.0 %. `MLFF_READOUT_TILE_ATOMS=1|2|4|8` picks one.
fn readout_tile_atoms(update_tile_atoms: usize) -> usize {
    match std::env::var("MLFF_READOUT_TILE_ATOMS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(t @ (1 | 2 | 4 | 8)) => t,
        _ => update_tile_atoms.min(2),
    }
}

/// No edge kernels were instantiated for `channels` channels a lane.
fn unsupported_channels(channels: usize) -> Error {
    Error::Unsupported(format!("internal: no edge kernels for {channels} channels a lane"))
}

/// No atom-tile kernels were instantiated for tiles of `atoms` atoms.
fn unsupported_tile(atoms: usize) -> Error {
    Error::Unsupported(format!("internal: no atom-tile kernels for tiles of {atoms} atoms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_kernels_take_at_most_two_channels_a_lane() {
        if std::env::var_os("MLFF_CHANNEL_GROUPS").is_some() {
            return;
        }
        // (hidden, atoms) → groups: ≤ 2 channels a lane, more groups for small inputs.
        for (h, atoms, groups) in [
            (128, 24, 4),
            (128, 1_000, 4),
            (128, 10_000, 2),
            (128, 1_000_000, 2),
            (256, 1_000_000, 4),
            (64, 1_000_000, 1),
            (32, 24, 1),
        ] {
            let g = channel_groups(h, atoms);
            assert_eq!(g, groups, "H={h}, {atoms} atoms");
            assert!(h / (32 * g) <= 2 && h % (32 * g) == 0);
        }
    }

    #[test]
    fn small_inputs_take_small_tiles() {
        if std::env::var_os("MLFF_TILE_ATOMS").is_some() {
            return;
        }
        assert_eq!(tile_atoms(128, 24), 1);
        assert_eq!(tile_atoms(128, 263), 1);
        assert_eq!(tile_atoms(128, 264), 2);
        assert_eq!(tile_atoms(128, 527), 2);
        assert_eq!(tile_atoms(128, 528), 8);
        assert_eq!(tile_atoms(128, 10_000), 8);
        if std::env::var_os("MLFF_PAINN_TILE_ATOMS").is_none() {
            assert_eq!(painn_tile_atoms(128, 24), 2);
            assert_eq!(painn_tile_atoms(128, 10_000), 8);
            assert_eq!(painn_tile_atoms(256, 10_000), 4);
        }
    }

    #[test]
    fn k_slices_split_small_inputs_within_the_thread_limits() {
        if std::env::var_os("MLFF_SPLIT_K").is_some() {
            return;
        }
        // (hidden, tiles) → slices, for the student at 8 and 16 atoms a tile and PaiNN.
        for (h, student8, painn) in [(32, 4, 4), (64, 4, 4), (128, 4, 2), (256, 2, 1)] {
            assert_eq!(update_slices(h, 8, 3), student8, "student H={h}");
            assert_eq!(update_slices(h, 1, 3), (1024 / h).min(8), "one-atom tiles H={h}");
            assert_eq!(update_slices(h, 16, 3), 1, "16-atom tiles H={h}");
            assert_eq!(painn_slices(h, 3), painn, "PaiNN H={h}");
            assert_eq!(update_slices(h, 8, 264), 1);
            assert_eq!(painn_slices(h, 264), 1);
        }
    }
}

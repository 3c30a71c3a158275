//! The public model API: load a model file, evaluate batches of structures.
//!
//! Each architecture of MODEL.md lives in its own folder (`student/`, `painn/`: the
//! weights and their loading, the CPU path, the GPU path, the filter the GPU
//! tabulates) and implements the traits of `architecture`; `architectures!` below
//! registers them. Shared by all: the tensor readers ([`tensors`]), the filter
//! tables ([`filter_table`]), the CPU path's outputs ([`output`]), the GPU path's
//! weights and workspaces ([`gpu`]) and launch choices ([`tuning`]).

pub(crate) mod architecture;
pub mod demo;
pub mod filter_table;
pub mod fused;
pub mod gpu;
pub mod output;
pub mod painn;
pub mod student;
pub mod tensors;
pub mod tuning;
pub mod weighted;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::neighbors::{neighbor_list, NeighborList};
use crate::structure::{Batch, Structure};
use architecture::{AnyArchitecture, Architecture};
use painn::PainnWeights;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use student::StudentWeights;

/// Energy, forces and (for periodic structures) stress of one structure.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// eV
    pub energy: f64,
    /// eV per atom
    pub atom_energies: Vec<f64>,
    /// eV/Å
    pub forces: Vec<[f64; 3]>,
    /// σ_ab = (1/V) Σ_edges r_a ∂E/∂r_b in eV/Å³ (ASE's sign), where the structure is
    /// periodic along some axis.
    pub stress: Option<[[f64; 3]; 3]>,
}

/// Writes [`Weights`], one variant per architecture, and the one dispatch over them:
/// a new architecture is a folder and one line here.
macro_rules! architectures {
    ($($(#[$doc:meta])* $variant:ident($weights:ty),)*) => {
        /// The weights of one of the architectures this engine runs (MODEL.md).
        #[derive(Clone, Debug)]
        pub enum Weights {
            $($(#[$doc])* $variant($weights),)*
        }

        impl Weights {
            /// The architecture, for the engine's calls.
            pub(crate) fn architecture(&self) -> &dyn AnyArchitecture {
                match self {
                    $(Weights::$variant(w) => w,)*
                }
            }

            /// The architectures' names, as model files' metadata name them.
            pub const NAMES: &'static [&'static str] = &[$(<$weights as Architecture>::NAME,)*];

            /// The weights of a file whose metadata names architecture `name`.
            fn from_file(name: &str, tensors: &SafeTensors, metadata: &HashMap<String, String>) -> Result<Self> {
                $(if name == <$weights as Architecture>::NAME {
                    return Ok(Weights::$variant(<$weights as Architecture>::from_file(tensors, metadata)?));
                })*
                Err(Error::InvalidModel(format!(
                    "unknown architecture `{name}` (this engine knows {})",
                    Self::NAMES.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" and ")
                )))
            }
        }

        $(impl From<$weights> for Weights {
            fn from(w: $weights) -> Self {
                Weights::$variant(w)
            }
        })*
    };
}

architectures! {
    /// Architecture 1, `mlff_distiller.StudentForceField`.
    Student(StudentWeights),
    /// Architecture 2, PaiNN as in SchNetPack.
    Painn(PainnWeights),
}

/// A loaded model.
#[derive(Clone, Debug)]
pub struct Model {
    weights: Weights,
    metadata: HashMap<String, String>,
    gpu_state: GpuState,
    /// The GPU engine asked for with [`Model::with_engine`]; None: `MLFF_ENGINE`, or
    /// the automatic choice.
    engine: Option<fused::EngineChoice>,
}

/// The model on the GPUs it has run on, one state per GPU (by ordinal), each made on
/// first use and kept for the next call, so that the GPUs of a device set work at
/// once, each with its own weights, workspaces and CUDA graphs.
#[derive(Clone, Default)]
struct GpuState {
    per_gpu: Arc<Mutex<Vec<Arc<OnGpu>>>>,
}

/// The model on one GPU: the layered engine's weights and the workspace of the last
/// batch shape, and the fused engine (molecules of the student).
struct OnGpu {
    ordinal: usize,
    layered: Mutex<Option<GpuResident>>,
    fused: Mutex<Option<fused::FusedStudentGpu>>,
}

/// Weights on one GPU, and the workspace of the last batch shape if any.
type GpuResident = (gpu::GpuWeights, Option<gpu::Workspace>);

impl GpuState {
    /// The state of `g`'s device (empty the first time). A new `Gpu` of an ordinal
    /// seen before takes over that ordinal's state (the engines notice the change and
    /// rebuild), so the states stay one per device however often it is opened.
    fn on(&self, g: &crate::gpu::Gpu) -> Arc<OnGpu> {
        let mut list = self.per_gpu.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = list.iter().find(|s| s.ordinal == g.ordinal()) {
            return state.clone();
        }
        let state = Arc::new(OnGpu { ordinal: g.ordinal(), layered: Mutex::new(None), fused: Mutex::new(None) });
        list.push(state.clone());
        state
    }
}

impl std::fmt::Debug for GpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuState")
    }
}

impl Model {
    /// Loads a model file in our safetensors layout (see `tools/export_student.py`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::model_file::read(path)?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::InvalidModel(m) => Error::InvalidModel(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mended = crate::model_file::without_gaps(bytes)?;
        let bytes = mended.as_deref().unwrap_or(bytes);
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::InvalidModel(format!("not a safetensors file: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| Error::InvalidModel(format!("not a safetensors file: {e}")))?;
        let name =
            metadata.get("architecture").ok_or_else(|| Error::InvalidModel("metadata has no `architecture`".into()))?;
        architecture::config(&metadata)?;
        let weights = Weights::from_file(name, &st, &metadata)?;
        Ok(Model { weights, metadata, gpu_state: GpuState::default(), engine: None })
    }

    /// A model from weights in memory (`metadata` as a file would carry it).
    pub fn from_weights(weights: StudentWeights, metadata: HashMap<String, String>) -> Self {
        Self::new(Weights::Student(weights), metadata)
    }

    /// A model of either architecture from weights in memory.
    pub fn new(weights: Weights, metadata: HashMap<String, String>) -> Self {
        Model { weights, metadata, gpu_state: GpuState::default(), engine: None }
    }

    pub fn architecture(&self) -> &str {
        self.weights.architecture().name()
    }

    /// Feature channels per atom (H, or F of PaiNN).
    pub fn hidden_dim(&self) -> usize {
        self.weights.architecture().hidden_dim()
    }

    pub fn num_interactions(&self) -> usize {
        self.weights.architecture().num_interactions()
    }

    pub fn cutoff(&self) -> f32 {
        self.weights.architecture().cutoff()
    }

    pub fn parameter_count(&self) -> usize {
        self.weights.architecture().parameter_count()
    }

    /// The file's metadata (architecture, config, provenance).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The weights, where the model is of architecture 1.
    pub fn student_weights(&self) -> Option<&StudentWeights> {
        if let Weights::Student(w) = &self.weights {
            Some(w)
        } else {
            None
        }
    }

    /// The model's neighbour list of a batch.
    pub fn neighbors(&self, batch: &Batch) -> Result<NeighborList> {
        neighbor_list(batch, self.cutoff())
    }

    /// The same model with its GPU engine chosen: `Fused` (molecules the fused
    /// small-structure engine can take go to it), `Layered` (everything to the layered
    /// engine) or `Auto` (by size, PERF.md). Without it `MLFF_ENGINE` decides.
    pub fn with_engine(&self, engine: fused::EngineChoice) -> Model {
        Model { engine: Some(engine), ..self.clone() }
    }

    /// The GPU engine choice in force for this model.
    pub fn engine_choice(&self) -> Result<fused::EngineChoice> {
        match self.engine {
            Some(choice) => Ok(choice),
            None => fused::EngineChoice::from_env(),
        }
    }

    /// Energies of every structure (no forces), in one batched pass.
    pub fn energies(&self, device: &Device, structures: &[Structure]) -> Result<Vec<f64>> {
        if let Device::Set(_) = device {
            return self.spread(device, structures, |member, part| self.energies(member, part));
        }
        if let Device::Gpu(g) = device {
            return Ok(self.predictions_gpu(g, structures, false)?.into_iter().map(|p| p.energy).collect());
        }
        let (batch, list) = self.prepare(structures, false)?;
        Ok(self.evaluate_cpu(self.cpu_of(device)?, &batch, &list, false, None).energies)
    }

    /// Runs whole-structure chunks of `structures` that fit the GPU's free memory.
    fn evaluate_gpu(
        &self,
        g: &Arc<crate::gpu::Gpu>,
        structures: &[Structure],
        want_forces: bool,
    ) -> Result<Vec<(Batch, gpu::GpuOutput)>> {
        let per_atom = self.gpu_bytes_per_atom();
        let (free, _) = g.memory_info()?;
        let on_gpu = self.gpu_state.on(g);
        let mut state = on_gpu.layered.lock().unwrap_or_else(|p| p.into_inner());
        let held = state.as_ref().and_then(|(_, ws)| ws.as_ref()).map_or(0, |ws| ws.bytes());
        let budget = (free + held) / 10 * 8;
        let mut chunks: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = 0;
        let mut atoms = 0usize;
        for (k, s) in structures.iter().enumerate() {
            if s.len() * per_atom > budget {
                return Err(too_large_for_one_gpu(k, s.len(), per_atom, budget, g));
            }
            if (atoms + s.len()) * per_atom > budget && k > start {
                chunks.push(start..k);
                start = k;
                atoms = 0;
            }
            atoms += s.len();
        }
        chunks.push(start..structures.len());
        let same_gpu = matches!(&*state, Some((w, _)) if Arc::ptr_eq(w.gpu(), g));
        if !same_gpu {
            // Free the old device buffers before allocating the new ones.
            *state = None;
            *state = Some((gpu::GpuWeights::new(g.clone(), &self.weights)?, None));
        }
        let Some((weights, workspace)) = state.as_mut() else { unreachable!() };
        let mut outputs = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let batch = self.prepare_batch(&structures[chunk])?;
            if !workspace.as_ref().is_some_and(|ws| ws.fits(&batch)) {
                // Free the old shape's buffers before allocating the new ones.
                *workspace = None;
                *workspace = Some(gpu::Workspace::new(weights, &batch)?);
            }
            let ws = workspace.as_mut().ok_or_else(|| Error::Unsupported("no GPU workspace".into()))?;
            let out = ws.run(weights, &batch.positions, want_forces, &batch)?;
            outputs.push((batch, out));
        }
        Ok(outputs)
    }

    /// Device bytes the layered engine needs per atom (with ~64 edges of up to 8
    /// channel groups per atom): the estimate that chunks a batch to the GPU's memory.
    fn gpu_bytes_per_atom(&self) -> usize {
        let (h, t) = (self.hidden_dim(), self.num_interactions());
        gpu::bytes_per_atom(h, t) + self.weights.architecture().gpu_bytes_per_atom() + 64 * gpu::bytes_per_edge(8) + 128
    }

    /// Refuses, with the numbers and the way out (LAMMPS), a batch with a structure
    /// that alone needs more of `g`'s memory than is free, as [`Model::evaluate`]
    /// does: MD keeps its batch on the GPUs, so no chunking would help.
    pub(crate) fn check_fits_gpu(&self, g: &crate::gpu::Gpu, batch: &Batch) -> Result<()> {
        let per_atom = self.gpu_bytes_per_atom();
        let (free, _) = g.memory_info()?;
        let budget = free / 10 * 8;
        match (0..batch.num_structures()).map(|s| (s, batch.offsets[s + 1] - batch.offsets[s])).max_by_key(|x| x.1) {
            Some((s, atoms)) if atoms * per_atom > budget => Err(too_large_for_one_gpu(s, atoms, per_atom, budget, g)),
            _ => Ok(()),
        }
    }

    /// Predictions on the GPU: molecules the fused engine takes (`fused::takes`) go to
    /// it, the rest to the layered engine; the results come back in input order.
    /// Without `want_forces` the forces are empty.
    fn predictions_gpu(
        &self,
        g: &Arc<crate::gpu::Gpu>,
        structures: &[Structure],
        want_forces: bool,
    ) -> Result<Vec<Prediction>> {
        let choice = self.engine_choice()?;
        let to_fused: Vec<bool> = structures
            .iter()
            .map(|s| self.student_weights().is_some() && fused::takes(choice, s.len(), s.pbc))
            .collect();
        if !to_fused.iter().any(|&f| f) {
            return self.predictions_layered(g, structures, want_forces);
        }
        let pick = |fused: bool| -> (Vec<usize>, Vec<Structure>) {
            (0..structures.len()).filter(|&k| to_fused[k] == fused).map(|k| (k, structures[k].clone())).unzip()
        };
        let (fused_index, fused_structures) = pick(true);
        let (layered_index, layered_structures) = pick(false);
        let mut predictions: Vec<Option<Prediction>> = vec![None; structures.len()];
        for (k, p) in fused_index.iter().zip(self.predictions_fused(g, &fused_structures, &fused_index, want_forces)?) {
            predictions[*k] = Some(p);
        }
        if !layered_structures.is_empty() {
            let layered = self
                .predictions_layered(g, &layered_structures, want_forces)
                .map_err(|e| renumber_structures(e, &layered_index))?;
            for (k, p) in layered_index.iter().zip(layered) {
                predictions[*k] = Some(p);
            }
        }
        predictions
            .into_iter()
            .map(|p| p.ok_or_else(|| Error::Unsupported("internal: a structure got no prediction".into())))
            .collect()
    }

    /// Molecules on the fused engine, in chunks whose scratch fits the GPU. `index`
    /// holds each structure's index in the caller's input, for error messages.
    fn predictions_fused(
        &self,
        g: &Arc<crate::gpu::Gpu>,
        structures: &[Structure],
        index: &[usize],
        want_forces: bool,
    ) -> Result<Vec<Prediction>> {
        let weights = self
            .student_weights()
            .ok_or_else(|| Error::Unsupported("internal: the fused engine runs the student only".into()))?;
        let on_gpu = self.gpu_state.on(g);
        let mut engine = on_gpu.fused.lock().unwrap_or_else(|p| p.into_inner());
        if !engine.as_ref().is_some_and(|e| Arc::ptr_eq(e.gpu(), g)) {
            *engine = None;
            *engine = Some(fused::FusedStudentGpu::new(g.clone(), &fused::FusedStudentWeights::new(weights)?)?);
        }
        let Some(engine) = engine.as_mut() else { unreachable!() };
        let (free, _) = g.memory_info()?;
        let budget = (free / 4).clamp(64 << 20, 4 << 30) / 4;
        let mut predictions = Vec::with_capacity(structures.len());
        let mut start = 0;
        while start < structures.len() {
            let mut end = start;
            let mut floats = 0usize;
            while end < structures.len() {
                let need = fused::scratch_floats(structures[end].len(), engine.hidden(), engine.num_blocks());
                if end > start && floats + need > budget {
                    break;
                }
                floats += need;
                end += 1;
            }
            let batch =
                self.prepare_batch(&structures[start..end]).map_err(|e| renumber_structures(e, &index[start..end]))?;
            let out = engine.evaluate(&batch, want_forces)?;
            if let Some(s) = out.faults.iter().position(|&f| f != 0) {
                return Err(fused::explain_fault(&batch, &batch.positions, s, out.faults[s], index[start + s]));
            }
            for s in 0..batch.num_structures() {
                let atoms = batch.offsets[s]..batch.offsets[s + 1];
                predictions.push(Prediction {
                    energy: out.energies[s],
                    atom_energies: out.atom_energies[atoms.clone()].iter().map(|&e| e as f64).collect(),
                    forces: if want_forces {
                        out.forces[atoms].iter().map(|f| f.map(|x| x as f64)).collect()
                    } else {
                        Vec::new()
                    },
                    stress: None,
                });
            }
            start = end;
        }
        Ok(predictions)
    }

    fn predictions_layered(
        &self,
        g: &Arc<crate::gpu::Gpu>,
        structures: &[Structure],
        want_forces: bool,
    ) -> Result<Vec<Prediction>> {
        let mut predictions = Vec::with_capacity(structures.len());
        for (batch, out) in self.evaluate_gpu(g, structures, want_forces)? {
            let forces = out.forces.unwrap_or_default();
            let virials = out.virials.unwrap_or_default();
            for s in 0..batch.num_structures() {
                let atoms = batch.offsets[s]..batch.offsets[s + 1];
                let structure = &structures[predictions.len()];
                let stress = if structure.is_periodic() && want_forces {
                    structure
                        .volume()
                        .map(|v| std::array::from_fn(|a| std::array::from_fn(|b| virials[s][3 * a + b] / v)))
                } else {
                    None
                };
                predictions.push(Prediction {
                    energy: out.energies[s],
                    atom_energies: out.atom_energies[atoms.clone()].iter().map(|&e| e as f64).collect(),
                    forces: forces.get(atoms).unwrap_or_default().iter().map(|f| f.map(|x| x as f64)).collect(),
                    stress,
                });
            }
        }
        Ok(predictions)
    }

    /// Energy, per-atom energies, forces and (periodic) stress of every structure, in
    /// one batched pass.
    pub fn evaluate(&self, device: &Device, structures: &[Structure]) -> Result<Vec<Prediction>> {
        if let Device::Set(_) = device {
            return self.spread(device, structures, |member, part| self.evaluate(member, part));
        }
        if let Device::Gpu(g) = device {
            return self.predictions_gpu(g, structures, true);
        }
        let (batch, list) = self.prepare(structures, true)?;
        let out = self.evaluate_cpu(self.cpu_of(device)?, &batch, &list, true, None);
        let forces = out.forces.unwrap_or_default();
        let edge_grad = out.edge_grad.unwrap_or_default();
        let stresses = stress(structures, &batch, &list, &edge_grad);
        Ok((0..batch.num_structures())
            .map(|s| {
                let atoms = batch.offsets[s]..batch.offsets[s + 1];
                Prediction {
                    energy: out.energies[s],
                    atom_energies: out.atom_energies[atoms.clone()].iter().map(|&e| e as f64).collect(),
                    forces: forces[atoms].iter().map(|f| f.map(|x| x as f64)).collect(),
                    stress: stresses[s],
                }
            })
            .collect())
    }

    /// `call` on each member of a device set with its contiguous share of
    /// `structures` (balanced by atom count), concurrently; the results in input order.
    fn spread<T: Send>(
        &self,
        device: &Device,
        structures: &[Structure],
        call: impl Fn(&Device, &[Structure]) -> Result<Vec<T>> + Sync,
    ) -> Result<Vec<T>> {
        let sizes: Vec<usize> = structures.iter().map(Structure::len).collect();
        let ranges = crate::spread::balanced_ranges(&sizes, device.members().len());
        let results = crate::spread::on_each(device, &ranges, |member, range| call(member, &structures[range]));
        crate::spread::join_in_order(device, &ranges, results)
    }

    fn prepare(&self, structures: &[Structure], forces: bool) -> Result<(Batch, NeighborList)> {
        let batch = self.prepare_batch(structures)?;
        let list = self.neighbors(&batch)?;
        crate::cpu::check_model_memory(self, &batch, &list, forces)?;
        Ok((batch, list))
    }

    /// Ok if the model computes atoms of atomic number `z`, else why not.
    pub fn check_element(&self, z: u32) -> Result<()> {
        self.weights.architecture().check_elements(&[z], &[0]).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(m.trim_start_matches("structure 0: ").to_string()),
            other => other,
        })
    }

    pub(crate) fn prepare_batch(&self, structures: &[Structure]) -> Result<Batch> {
        let batch = Batch::new(structures)?;
        self.weights.architecture().check_elements(&batch.numbers, &batch.structure_of)?;
        crate::neighbors::check_search(&batch, self.cutoff())?;
        Ok(batch)
    }

    pub(crate) fn evaluate_cpu(
        &self,
        cpu: &crate::cpu::Cpu,
        batch: &Batch,
        list: &NeighborList,
        forces: bool,
        energy_weights: Option<&[f32]>,
    ) -> output::BatchOutput {
        self.weights.architecture().evaluate_cpu(cpu, batch, list, forces, energy_weights)
    }

    fn cpu_of<'d>(&self, device: &'d Device) -> Result<&'d crate::cpu::Cpu> {
        match device {
            Device::Cpu(cpu) => Ok(cpu),
            Device::Gpu(_) => Err(Error::Unsupported("internal: a GPU device reached the CPU path".into())),
            Device::Set(_) => Err(Error::Unsupported("internal: a device set reached the one-device path".into())),
        }
    }
}

/// σ_ab = (1/V) Σ_e r_a ∂E/∂r_b for each periodic structure, accumulated in f64.
fn stress(
    structures: &[Structure],
    batch: &Batch,
    list: &NeighborList,
    edge_grad: &[[f32; 3]],
) -> Vec<Option<[[f64; 3]; 3]>> {
    structures
        .iter()
        .enumerate()
        .map(|(s, structure)| {
            if !structure.is_periodic() {
                return None;
            }
            let volume = structure.volume()?;
            let mut sigma = [[0.0f64; 3]; 3];
            for i in batch.offsets[s]..batch.offsets[s + 1] {
                for e in list.row(i) {
                    let (r, g) = (&list.geom[e], &edge_grad[e]);
                    for a in 0..3 {
                        for b in 0..3 {
                            sigma[a][b] += r[a] as f64 * g[b] as f64;
                        }
                    }
                }
            }
            Some(sigma.map(|row| row.map(|x| x / volume)))
        })
        .collect()
}

/// The error for structure `k` of `atoms` atoms, which alone needs more than the
/// `budget` bytes of `g`: no split over GPUs helps, but LAMMPS's domain decomposition does.
fn too_large_for_one_gpu(k: usize, atoms: usize, per_atom: usize, budget: usize, g: &crate::gpu::Gpu) -> Error {
    Error::InvalidInput(format!(
        "structure {k} has {atoms} atoms and needs about {:.1} GB on the GPU; {:.1} GB are free on GPU {}. One \
         structure runs on one GPU here (a device set spreads whole structures); for a structure beyond one GPU, \
         run it in LAMMPS with `pair_style mlff`, which splits it into domains over GPUs and nodes (README, \
         section LAMMPS)",
        (atoms * per_atom) as f64 / 1e9,
        budget as f64 / 1e9,
        g.ordinal()
    ))
}

/// An invalid-input error about "structure k" of a sub-batch, renamed to the structure's
/// index in the caller's input (`index[k]`).
fn renumber_structures(error: Error, index: &[usize]) -> Error {
    crate::spread::renumber_structures(error, |k| index.get(k).copied())
}

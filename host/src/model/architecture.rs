//! What an architecture of MODEL.md provides to the engine. A new architecture is a
//! folder under `model/` whose weights type implements [`Architecture`] (loading and
//! validation, the CPU path, the upload to a GPU) and whose device weights implement
//! [`GpuArchitecture`] (its buffers and the GPU enqueue of one batch shape), plus one
//! line in `architectures!` (`model/mod.rs`). The compiler lists what a new one lacks.

use super::gpu::DeviceState;
use super::output::BatchOutput;
use super::tuning::Tuning;
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::neighbors::NeighborList;
use crate::structure::Batch;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::sync::Arc;

/// One architecture: its weights, their loading and checks, and its two paths.
pub(crate) trait Architecture: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The `architecture` a model file's metadata names.
    const NAME: &'static str;
    /// The weights on a GPU.
    type Gpu: GpuArchitecture;

    /// Reads the weights from a file's tensors and checks them against the
    /// metadata's `config` (and whatever else of the metadata the architecture uses).
    fn from_file(tensors: &SafeTensors, metadata: &HashMap<String, String>) -> Result<Self>;
    /// Feature channels per atom (H, or F of PaiNN).
    fn hidden_dim(&self) -> usize;
    fn num_interactions(&self) -> usize;
    fn cutoff(&self) -> f32;
    /// Trainable parameters, as PyTorch counts them.
    fn parameter_count(&self) -> usize;
    /// Refuses atomic numbers the model does not cover.
    fn check_elements(&self, numbers: &[u32], structure_of: &[u32]) -> Result<()>;
    /// Energies, and with `forces` the forces and ∂E/∂r of every edge, on the CPU; with
    /// `energy_weights` (one per atom) of the weighted energy Σ w_i E_i.
    fn evaluate_cpu(
        &self,
        cpu: &Cpu,
        batch: &Batch,
        list: &NeighborList,
        forces: bool,
        energy_weights: Option<&[f32]>,
    ) -> BatchOutput;
    /// Device bytes per atom the GPU path needs beyond the state every architecture
    /// has (for splitting batches to fit the device).
    fn gpu_bytes_per_atom(&self) -> usize;
    /// The weights, and what the GPU path derives from them (filter tables), on `gpu`.
    fn upload(&self, gpu: &Arc<Gpu>) -> Result<Self::Gpu>;
}

/// An architecture's weights on one GPU.
pub(crate) trait GpuArchitecture: Send + Sync + 'static {
    /// Feature channels per atom.
    fn hidden(&self) -> usize;
    fn cutoff(&self) -> f32;
    /// Interaction blocks.
    fn num_blocks(&self) -> usize;
    /// ε of the unit vector r/(d + ε) in the edge kernels.
    fn unit_epsilon(&self) -> f32;
    /// Rows of the embedding (max_z + 1): the atomic numbers the kernels may index.
    fn embedding_rows(&self) -> usize;
    /// The buffers and launch choices of one batch shape, holding these weights.
    fn plan(self: Arc<Self>, state: &DeviceState, tuning: &Tuning) -> Result<Box<dyn GpuPass>>;
}

/// An architecture's part of one batch shape on the GPU: its own buffers (beyond the
/// shared [`DeviceState`]) and its launches.
pub(crate) trait GpuPass: Send {
    /// Enqueues the forward pass (atom energies into the state) and, with
    /// `want_forces`, the adjoint, ending in the per-edge adjoints of the state (the
    /// shared kernels turn those into forces and virials).
    fn enqueue(&self, state: &DeviceState, want_forces: bool) -> Result<()>;
    /// Device bytes of its own buffers.
    fn bytes(&self) -> usize;
}

/// [`Architecture`] behind a pointer, for the engine's one dispatch over the
/// registered architectures.
pub(crate) trait AnyArchitecture: Send + Sync {
    fn name(&self) -> &'static str;
    fn hidden_dim(&self) -> usize;
    fn num_interactions(&self) -> usize;
    fn cutoff(&self) -> f32;
    fn parameter_count(&self) -> usize;
    fn check_elements(&self, numbers: &[u32], structure_of: &[u32]) -> Result<()>;
    fn evaluate_cpu(
        &self,
        cpu: &Cpu,
        batch: &Batch,
        list: &NeighborList,
        forces: bool,
        energy_weights: Option<&[f32]>,
    ) -> BatchOutput;
    fn gpu_bytes_per_atom(&self) -> usize;
    fn upload(&self, gpu: &Arc<Gpu>) -> Result<Arc<dyn GpuArchitecture>>;
}

impl<A: Architecture> AnyArchitecture for A {
    fn name(&self) -> &'static str {
        A::NAME
    }
    fn hidden_dim(&self) -> usize {
        Architecture::hidden_dim(self)
    }
    fn num_interactions(&self) -> usize {
        Architecture::num_interactions(self)
    }
    fn cutoff(&self) -> f32 {
        Architecture::cutoff(self)
    }
    fn parameter_count(&self) -> usize {
        Architecture::parameter_count(self)
    }
    fn check_elements(&self, numbers: &[u32], structure_of: &[u32]) -> Result<()> {
        Architecture::check_elements(self, numbers, structure_of)
    }
    fn evaluate_cpu(
        &self,
        cpu: &Cpu,
        batch: &Batch,
        list: &NeighborList,
        forces: bool,
        energy_weights: Option<&[f32]>,
    ) -> BatchOutput {
        Architecture::evaluate_cpu(self, cpu, batch, list, forces, energy_weights)
    }
    fn gpu_bytes_per_atom(&self) -> usize {
        Architecture::gpu_bytes_per_atom(self)
    }
    fn upload(&self, gpu: &Arc<Gpu>) -> Result<Arc<dyn GpuArchitecture>> {
        Ok(Arc::new(Architecture::upload(self, gpu)?))
    }
}

/// The metadata's `config`, which every architecture's loader parses.
pub(crate) fn config(metadata: &HashMap<String, String>) -> Result<&str> {
    metadata.get("config").map(String::as_str).ok_or_else(|| Error::InvalidModel("metadata has no `config`".into()))
}

/// Checks that every atomic number is within 1..=max_z and, where the model names
/// the elements it was trained on, among them.
pub fn check_elements(max_z: usize, known: Option<&[u32]>, numbers: &[u32], structure_of: &[u32]) -> Result<()> {
    let max_z = max_z as u32;
    if let Some(atom) = numbers.iter().position(|&z| z == 0 || z > max_z) {
        return Err(Error::InvalidInput(format!(
            "structure {}: atomic number {} is not covered by the model's embedding (1..={max_z})",
            structure_of[atom], numbers[atom]
        )));
    }
    if let Some(known) = known {
        if let Some(atom) = numbers.iter().position(|z| !known.contains(z)) {
            let names: Vec<&str> = known.iter().map(|&z| crate::elements::symbol(z).unwrap_or("?")).collect();
            return Err(Error::InvalidInput(format!(
                "structure {}: element {} (Z = {}) was not in the model's training data ({})",
                structure_of[atom],
                crate::elements::symbol(numbers[atom]).unwrap_or("?"),
                numbers[atom],
                names.join(" ")
            )));
        }
    }
    Ok(())
}

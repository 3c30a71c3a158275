//! Architecture 2 (PaiNN as in SchNetPack): its weights, loaded from our safetensors
//! layout (`tools/export_student.py --painn` converts a SchNetPack state_dict) and
//! checked against the config before any computation; the CPU path (`cpu.rs`), the
//! GPU path (`gpu.rs`) and the filter W(d) the GPU tabulates (`filter.rs`).
//!
//! Tensor names are SchNetPack's with the `representation.` prefix dropped and the
//! output module's `outnet` called `readout`:
//! `radial_basis.{offsets,widths}`, `embedding.weight`, `filter_net.{weight,bias}`,
//! `interactions.t.interatomic_context_net.{0,1}.{weight,bias}`,
//! `mixing.t.intraatomic_context_net.{0,1}.{weight,bias}`, `mixing.t.mu_channel_mix.weight`,
//! `readout.{0,1}.{weight,bias}`, and optionally `atomref` `[max_z + 1]`. With shared
//! interactions only block 0 is stored.

pub mod cpu;
pub mod filter;
pub(crate) mod gpu;

use super::architecture::Architecture;
use super::tensors::{linear, tensor, weight_transposed, Linear};
use crate::error::{Error, Result};
use mlff_kernels::painn::{PainnBlockParams, PainnRadial, PainnReadout};
use safetensors::SafeTensors;

/// The architecture name the metadata must carry.
pub const ARCHITECTURE: &str = "schnetpack.PaiNN";

#[derive(Clone, Debug, PartialEq)]
pub struct PainnConfig {
    pub n_atom_basis: usize,
    pub n_interactions: usize,
    pub n_rbf: usize,
    pub cutoff: f32,
    pub max_z: usize,
    pub shared_interactions: bool,
    pub shared_filters: bool,
    /// Per-atom energy offset (SchNetPack's `AddOffsets` mean), eV.
    pub mean: f64,
}

impl PainnConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::InvalidModel(format!("config is not JSON: {e}")))?;
        let int = |key: &str| -> Result<usize> {
            json.get(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| Error::InvalidModel(format!("config lacks a non-negative integer `{key}`")))
        };
        let flag = |key: &str| -> Result<bool> {
            match json.get(key) {
                None => Ok(false),
                Some(v) => {
                    v.as_bool().ok_or_else(|| Error::InvalidModel(format!("config `{key}` must be true or false")))
                }
            }
        };
        let number = |key: &str| json.get(key).and_then(|v| v.as_f64());
        let cutoff =
            number("cutoff").ok_or_else(|| Error::InvalidModel("config lacks a number `cutoff`".into()))? as f32;
        let mean = match json.get("mean") {
            None => 0.0,
            Some(_) => number("mean").ok_or_else(|| Error::InvalidModel("config `mean` must be a number".into()))?,
        };
        let config = PainnConfig {
            n_atom_basis: int("n_atom_basis")?,
            n_interactions: int("n_interactions")?,
            n_rbf: int("n_rbf")?,
            cutoff,
            max_z: int("max_z")?,
            shared_interactions: flag("shared_interactions")?,
            shared_filters: flag("shared_filters")?,
            mean,
        };
        let f = config.n_atom_basis;
        if f == 0 || !f.is_multiple_of(2) || f > 4096 {
            return Err(Error::InvalidModel(format!("n_atom_basis {f} must be a positive even number, at most 4096")));
        }
        super::student::check_config_bounds(config.n_interactions, config.n_rbf, config.max_z, cutoff)?;
        if !mean.is_finite() {
            return Err(Error::InvalidModel(format!("config: mean {mean} must be finite")));
        }
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        format!(
            "{{\"n_atom_basis\": {}, \"n_interactions\": {}, \"n_rbf\": {}, \"cutoff\": {}, \"max_z\": {}, \
             \"shared_interactions\": {}, \"shared_filters\": {}, \"mean\": {}}}",
            self.n_atom_basis,
            self.n_interactions,
            self.n_rbf,
            self.cutoff,
            self.max_z,
            self.shared_interactions,
            self.shared_filters,
            self.mean
        )
    }
}

/// One block: its filter rows and its interaction and mixing layers.
#[derive(Clone, Debug)]
pub struct PainnBlock {
    /// K → 3F (this block's rows of `filter_net`).
    pub filter: Linear,
    pub context_in: Linear,
    pub context_out: Linear,
    /// F → 2F, no bias (`bias` is zero).
    pub channel_mix: Linear,
    pub update_in: Linear,
    pub update_out: Linear,
}

#[derive(Clone, Debug)]
pub struct PainnWeights {
    pub config: PainnConfig,
    pub offsets: Vec<f32>,
    pub widths: Vec<f32>,
    /// `[max_z + 1][F]`
    pub embedding: Vec<f32>,
    /// One per block (shared weights repeated).
    pub blocks: Vec<PainnBlock>,
    pub readout: [Linear; 2],
    /// Per-element reference energies `[max_z + 1]` (eV).
    pub atomref: Option<Vec<f32>>,
}

/// A bias-free layer `name.weight` `[out, in]`, transposed.
fn linear_no_bias(st: &SafeTensors, name: &str, inputs: usize, outputs: usize) -> Result<Linear> {
    let weight_t = weight_transposed(st, &format!("{name}.weight"), inputs, outputs)?;
    // A zero bias keeps `Linear::inputs` right; the kernels never read it.
    Ok(Linear { weight_t, bias: vec![0.0; outputs] })
}

impl PainnWeights {
    pub fn from_safetensors(st: &SafeTensors, config: PainnConfig) -> Result<Self> {
        let (f, k, t) = (config.n_atom_basis, config.n_rbf, config.n_interactions);
        let offsets = tensor(st, "radial_basis.offsets", &[k])?;
        let widths = tensor(st, "radial_basis.widths", &[k])?;
        if let Some(w) = widths.iter().find(|w| **w == 0.0) {
            return Err(Error::InvalidModel(format!(
                "radial_basis.widths contains {w}: a Gaussian width must be non-zero"
            )));
        }
        let embedding = tensor(st, "embedding.weight", &[config.max_z + 1, f])?;
        let filter_blocks = if config.shared_filters { 1 } else { t };
        let filter_net = linear(st, "filter_net", k, filter_blocks * 3 * f)?;
        let stored_blocks = if config.shared_interactions { 1 } else { t };
        let blocks = (0..t)
            .map(|b| {
                let filter_block = if config.shared_filters { 0 } else { b };
                let layer_block = b.min(stored_blocks - 1);
                let p = format!("interactions.{layer_block}.interatomic_context_net");
                let m = format!("mixing.{layer_block}");
                Ok(PainnBlock {
                    filter: filter_net.columns(filter_block * 3 * f..(filter_block + 1) * 3 * f),
                    context_in: linear(st, &format!("{p}.0"), f, f)?,
                    context_out: linear(st, &format!("{p}.1"), f, 3 * f)?,
                    channel_mix: linear_no_bias(st, &format!("{m}.mu_channel_mix"), f, 2 * f)?,
                    update_in: linear(st, &format!("{m}.intraatomic_context_net.0"), 2 * f, f)?,
                    update_out: linear(st, &format!("{m}.intraatomic_context_net.1"), f, 3 * f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let readout = [linear(st, "readout.0", f, f / 2)?, linear(st, "readout.1", f / 2, 1)?];
        let atomref = match st.tensor("atomref") {
            Ok(_) => Some(tensor(st, "atomref", &[config.max_z + 1])?),
            Err(_) => None,
        };
        Ok(PainnWeights { config, offsets, widths, embedding, blocks, readout, atomref })
    }

    pub fn features(&self) -> usize {
        self.config.n_atom_basis
    }

    pub fn radial(&self) -> PainnRadial<'_> {
        PainnRadial { offsets: &self.offsets, widths: &self.widths, cutoff: self.config.cutoff }
    }

    pub fn block(&self, t: usize) -> PainnBlockParams<'_> {
        let b = &self.blocks[t];
        PainnBlockParams {
            filter_t: &b.filter.weight_t,
            filter_b: &b.filter.bias,
            context_in_t: &b.context_in.weight_t,
            context_in_b: &b.context_in.bias,
            context_out_t: &b.context_out.weight_t,
            context_out_b: &b.context_out.bias,
            channel_mix_t: &b.channel_mix.weight_t,
            update_in_t: &b.update_in.weight_t,
            update_in_b: &b.update_in.bias,
            update_out_t: &b.update_out.weight_t,
            update_out_b: &b.update_out.bias,
        }
    }

    pub fn readout(&self) -> PainnReadout<'_> {
        PainnReadout {
            hidden_t: &self.readout[0].weight_t,
            hidden_b: &self.readout[0].bias,
            out_t: &self.readout[1].weight_t,
            out_b: self.readout[1].bias[0],
        }
    }

    /// What is added to the network's energy of an atom of element `z`.
    pub fn atom_offset(&self, z: u32) -> f32 {
        self.config.mean as f32 + self.atomref.as_ref().map_or(0.0, |r| r[z as usize])
    }

    /// Number of trainable parameters, counting shared weights once (as PyTorch does).
    pub fn parameter_count(&self) -> usize {
        let linear = |l: &Linear| l.weight_t.len() + l.bias.len();
        let c = &self.config;
        let filters = if c.shared_filters { 1 } else { c.n_interactions };
        let layers = if c.shared_interactions { 1 } else { c.n_interactions };
        self.embedding.len()
            + filters * linear(&self.blocks[0].filter)
            + self.blocks[..layers]
                .iter()
                .map(|b| {
                    linear(&b.context_in)
                        + linear(&b.context_out)
                        + b.channel_mix.weight_t.len()
                        + linear(&b.update_in)
                        + linear(&b.update_out)
                })
                .sum::<usize>()
            + self.readout.iter().map(linear).sum::<usize>()
    }
}

impl Architecture for PainnWeights {
    const NAME: &'static str = ARCHITECTURE;
    type Gpu = gpu::PainnGpu;

    fn from_file(tensors: &SafeTensors, metadata: &std::collections::HashMap<String, String>) -> Result<Self> {
        PainnWeights::from_safetensors(tensors, PainnConfig::from_json(super::architecture::config(metadata)?)?)
    }

    fn hidden_dim(&self) -> usize {
        self.features()
    }

    fn num_interactions(&self) -> usize {
        self.config.n_interactions
    }

    fn cutoff(&self) -> f32 {
        self.config.cutoff
    }

    fn parameter_count(&self) -> usize {
        PainnWeights::parameter_count(self)
    }

    fn check_elements(&self, numbers: &[u32], structure_of: &[u32]) -> Result<()> {
        super::architecture::check_elements(self.config.max_z, None, numbers, structure_of)
    }

    fn evaluate_cpu(
        &self,
        cpu: &crate::cpu::Cpu,
        batch: &crate::structure::Batch,
        list: &crate::neighbors::NeighborList,
        forces: bool,
        energy_weights: Option<&[f32]>,
    ) -> super::output::BatchOutput {
        cpu::evaluate(cpu, self, batch, list, forces, energy_weights)
    }

    fn gpu_bytes_per_atom(&self) -> usize {
        gpu::PainnGpu::bytes_per_atom(self.features())
    }

    fn upload(&self, gpu: &std::sync::Arc<crate::gpu::Gpu>) -> Result<gpu::PainnGpu> {
        gpu::PainnGpu::new(gpu, self)
    }
}

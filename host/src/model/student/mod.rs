//! Architecture 1 (`mlff_distiller.StudentForceField`): its weights, loaded from
//! safetensors and checked against the config before any computation; the CPU path
//! (`cpu.rs`), the GPU path (`gpu.rs`) and the filter φ(d) the GPU tabulates
//! (`filter.rs`).

pub mod cpu;
pub mod filter;
pub(crate) mod gpu;

pub use super::architecture::check_elements;
use super::architecture::Architecture;
pub use super::tensors::Linear;
use super::tensors::{linear, tensor};
use crate::error::{Error, Result};
use mlff_kernels::student::{InteractionParams, RadialParams, ReadoutParams};
use safetensors::{Dtype, SafeTensors};

/// The architecture name the metadata must carry.
pub const ARCHITECTURE: &str = "mlff_distiller.StudentForceField";

/// Sane upper bounds of a model's config, checked on load (both architectures):
/// beyond them a file is corrupt or hostile, and a cutoff of 1e6 Å would make every
/// periodic input search billions of images.
pub const MAX_CUTOFF: f32 = 30.0;
pub const MAX_INTERACTIONS: usize = 64;
pub const MAX_RBF: usize = 1024;
pub const MAX_Z: usize = 1000;

/// Checks the sizes and cutoff every architecture shares against the bounds above.
pub(crate) fn check_config_bounds(interactions: usize, rbf: usize, max_z: usize, cutoff: f32) -> Result<()> {
    for (name, value, max) in [
        ("interactions", interactions, MAX_INTERACTIONS),
        ("radial basis functions", rbf, MAX_RBF),
        ("max_z", max_z, MAX_Z),
    ] {
        if value == 0 || value > max {
            return Err(Error::InvalidModel(format!("config: {value} {name}; expected 1 to {max}")));
        }
    }
    if !(cutoff > 0.0 && cutoff <= MAX_CUTOFF) {
        return Err(Error::InvalidModel(format!(
            "config: cutoff {cutoff} Å; expected more than 0 and at most {MAX_CUTOFF} Å"
        )));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub struct StudentConfig {
    pub hidden_dim: usize,
    pub num_interactions: usize,
    pub num_rbf: usize,
    pub cutoff: f32,
    pub max_z: usize,
}

impl StudentConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::InvalidModel(format!("config is not JSON: {e}")))?;
        let int = |key: &str| -> Result<usize> {
            json.get(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| Error::InvalidModel(format!("config lacks a non-negative integer `{key}`")))
        };
        let cutoff = json
            .get("cutoff")
            .and_then(|v| v.as_f64())
            .ok_or_else(|| Error::InvalidModel("config lacks a number `cutoff`".into()))? as f32;
        let config = StudentConfig {
            hidden_dim: int("hidden_dim")?,
            num_interactions: int("num_interactions")?,
            num_rbf: int("num_rbf")?,
            cutoff,
            max_z: int("max_z")?,
        };
        let h = config.hidden_dim;
        if h == 0 || !h.is_multiple_of(4) || h > 4096 {
            return Err(Error::InvalidModel(format!("hidden_dim {h} must be a positive multiple of 4, at most 4096")));
        }
        check_config_bounds(config.num_interactions, config.num_rbf, config.max_z, cutoff)?;
        Ok(config)
    }
}

#[derive(Clone, Debug)]
pub struct Interaction {
    pub filter_in: Linear,
    pub filter_out: Linear,
    pub update_in: Linear,
    pub update_out: Linear,
    pub mixing: [f32; 9],
}

#[derive(Clone, Debug)]
pub struct StudentWeights {
    pub config: StudentConfig,
    pub centers: Vec<f32>,
    pub widths: Vec<f32>,
    /// `[max_z + 1][H]`
    pub embedding: Vec<f32>,
    pub interactions: Vec<Interaction>,
    pub head: [Linear; 3],
    /// Per-element reference energies `[max_z + 1]` (eV), added to each atom's
    /// energy; optional tensor `atomref` (an extension of MLFF-Distiller's layout).
    pub atomref: Option<Vec<f32>>,
    /// The elements the model was trained on (metadata `elements`); others are refused.
    pub elements: Option<Vec<u32>>,
}

impl StudentWeights {
    pub fn from_safetensors(st: &SafeTensors, config: StudentConfig) -> Result<Self> {
        let (h, k) = (config.hidden_dim, config.num_rbf);
        let centers = tensor(st, "rbf.centers", &[k])?;
        let widths = tensor(st, "rbf.widths", &[k])?;
        if let Some(w) = widths.iter().find(|w| **w == 0.0) {
            return Err(Error::InvalidModel(format!("rbf.widths contains {w}: a Gaussian width must be non-zero")));
        }
        let embedding = tensor(st, "embedding.weight", &[config.max_z + 1, h])?;
        let interactions = (0..config.num_interactions)
            .map(|t| {
                let p = format!("interactions.{t}");
                let m = tensor(st, &format!("{p}.update.mixing_matrix"), &[3, 3])?;
                Ok(Interaction {
                    filter_in: linear(st, &format!("{p}.message.rbf_to_scalar.0"), k, h)?,
                    filter_out: linear(st, &format!("{p}.message.rbf_to_scalar.2"), h, 3 * h)?,
                    update_in: linear(st, &format!("{p}.update.update_mlp.0"), 2 * h, h)?,
                    update_out: linear(st, &format!("{p}.update.update_mlp.2"), h, 3 * h)?,
                    mixing: std::array::from_fn(|i| m[i]),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = [
            linear(st, "energy_head.0", h, h / 2)?,
            linear(st, "energy_head.2", h / 2, h / 4)?,
            linear(st, "energy_head.4", h / 4, 1)?,
        ];
        let atomref = match st.tensor("atomref") {
            Ok(_) => Some(tensor(st, "atomref", &[config.max_z + 1])?),
            Err(_) => None,
        };
        Ok(StudentWeights { config, centers, widths, embedding, interactions, head, atomref, elements: None })
    }

    /// Restricts the model to `elements` (atomic numbers), as the metadata's
    /// `elements` (symbols separated by spaces) names them.
    pub fn with_elements(mut self, symbols: Option<&str>) -> Result<Self> {
        self.elements = symbols
            .map(|list| {
                list.split_whitespace()
                    .map(|sym| {
                        crate::elements::atomic_number(sym).ok_or_else(|| {
                            Error::InvalidModel(format!("metadata `elements` names unknown element `{sym}`"))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()
            })
            .transpose()?;
        Ok(self)
    }

    pub fn hidden_dim(&self) -> usize {
        self.config.hidden_dim
    }

    pub fn radial(&self) -> RadialParams<'_> {
        RadialParams { centers: &self.centers, widths: &self.widths, cutoff: self.config.cutoff }
    }

    pub fn interaction(&self, t: usize) -> InteractionParams<'_> {
        let b = &self.interactions[t];
        InteractionParams {
            filter_in_t: &b.filter_in.weight_t,
            filter_in_b: &b.filter_in.bias,
            filter_out_t: &b.filter_out.weight_t,
            filter_out_b: &b.filter_out.bias,
            update_in_t: &b.update_in.weight_t,
            update_in_b: &b.update_in.bias,
            update_out_t: &b.update_out.weight_t,
            update_out_b: &b.update_out.bias,
            mixing: b.mixing,
        }
    }

    pub fn readout(&self) -> ReadoutParams<'_> {
        ReadoutParams {
            weights_t: [&self.head[0].weight_t, &self.head[1].weight_t, &self.head[2].weight_t],
            biases: [&self.head[0].bias, &self.head[1].bias, &self.head[2].bias],
        }
    }

    /// Number of trainable parameters (as PyTorch counts them).
    pub fn parameter_count(&self) -> usize {
        let linear = |l: &Linear| l.weight_t.len() + l.bias.len();
        self.centers.len()
            + self.widths.len()
            + self.embedding.len()
            + self
                .interactions
                .iter()
                .map(|b| {
                    linear(&b.filter_in) + linear(&b.filter_out) + linear(&b.update_in) + linear(&b.update_out) + 9
                })
                .sum::<usize>()
            + self.head.iter().map(linear).sum::<usize>()
            + self.atomref.as_ref().map_or(0, Vec::len)
    }

    /// Checks that every atomic number has an embedding row and was trained on.
    pub fn check_elements(&self, numbers: &[u32], structure_of: &[u32]) -> Result<()> {
        check_elements(self.config.max_z, self.elements.as_deref(), numbers, structure_of)
    }
}

impl StudentWeights {
    /// The weights in our safetensors layout (f32, PyTorch names and shapes), with
    /// `architecture` and `config` added to `metadata`.
    pub fn to_safetensors(&self, mut metadata: std::collections::HashMap<String, String>) -> Result<Vec<u8>> {
        use safetensors::tensor::TensorView;
        let c = &self.config;
        metadata.insert("architecture".into(), ARCHITECTURE.into());
        metadata.insert(
            "config".into(),
            format!(
                "{{\"hidden_dim\": {}, \"num_interactions\": {}, \"num_rbf\": {}, \"cutoff\": {}, \"max_z\": {}}}",
                c.hidden_dim, c.num_interactions, c.num_rbf, c.cutoff, c.max_z
            ),
        );
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut push = |name: String, shape: Vec<usize>, values: &[f32]| {
            tensors.push((name, shape, values.iter().flat_map(|x| x.to_le_bytes()).collect()));
        };
        type Push<'a> = dyn FnMut(String, Vec<usize>, &[f32]) + 'a;
        let push_linear = |push: &mut Push, prefix: String, l: &Linear| {
            push(format!("{prefix}.weight"), vec![l.bias.len(), l.inputs()], &l.weight());
            push(format!("{prefix}.bias"), vec![l.bias.len()], &l.bias);
        };
        push("rbf.centers".into(), vec![c.num_rbf], &self.centers);
        push("rbf.widths".into(), vec![c.num_rbf], &self.widths);
        push("embedding.weight".into(), vec![c.max_z + 1, c.hidden_dim], &self.embedding);
        for (t, b) in self.interactions.iter().enumerate() {
            let p = format!("interactions.{t}");
            push_linear(&mut push, format!("{p}.message.rbf_to_scalar.0"), &b.filter_in);
            push_linear(&mut push, format!("{p}.message.rbf_to_scalar.2"), &b.filter_out);
            push_linear(&mut push, format!("{p}.update.update_mlp.0"), &b.update_in);
            push_linear(&mut push, format!("{p}.update.update_mlp.2"), &b.update_out);
            push(format!("{p}.update.mixing_matrix"), vec![3, 3], &b.mixing);
        }
        for (k, l) in self.head.iter().enumerate() {
            push_linear(&mut push, format!("energy_head.{}", 2 * k), l);
        }
        if let Some(atomref) = &self.atomref {
            push("atomref".into(), vec![c.max_z + 1], atomref);
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::InvalidModel(format!("tensor `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::InvalidModel(format!("serialising: {e}")))
    }
}

impl Architecture for StudentWeights {
    const NAME: &'static str = ARCHITECTURE;
    type Gpu = gpu::StudentGpu;

    fn from_file(tensors: &SafeTensors, metadata: &std::collections::HashMap<String, String>) -> Result<Self> {
        let config = StudentConfig::from_json(super::architecture::config(metadata)?)?;
        StudentWeights::from_safetensors(tensors, config)?.with_elements(metadata.get("elements").map(String::as_str))
    }

    fn hidden_dim(&self) -> usize {
        self.config.hidden_dim
    }

    fn num_interactions(&self) -> usize {
        self.config.num_interactions
    }

    fn cutoff(&self) -> f32 {
        self.config.cutoff
    }

    fn parameter_count(&self) -> usize {
        StudentWeights::parameter_count(self)
    }

    fn check_elements(&self, numbers: &[u32], structure_of: &[u32]) -> Result<()> {
        StudentWeights::check_elements(self, numbers, structure_of)
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
        // The kept activations depend on the batch size; `Workspace::bytes` counts them.
        0
    }

    fn upload(&self, gpu: &std::sync::Arc<crate::gpu::Gpu>) -> Result<gpu::StudentGpu> {
        gpu::StudentGpu::new(gpu, self)
    }
}

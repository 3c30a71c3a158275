//! Weights of architecture 1 (`mlff_distiller.StudentForceField`), loaded from
//! safetensors and checked against the config before any computation.

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
        if h == 0 || h % 4 != 0 || h > 4096 {
            return Err(Error::InvalidModel(format!("hidden_dim {h} must be a positive multiple of 4, at most 4096")));
        }
        check_config_bounds(config.num_interactions, config.num_rbf, config.max_z, cutoff)?;
        Ok(config)
    }
}

/// A `Linear` layer with its weight stored transposed (`[in][out]`).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight_t: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Linear {
    pub fn inputs(&self) -> usize {
        self.weight_t.len() / self.bias.len().max(1)
    }

    /// The layer restricted to output columns `range`.
    pub fn columns(&self, range: std::ops::Range<usize>) -> Linear {
        let outputs = self.bias.len();
        let weight_t = (0..self.inputs())
            .flat_map(|i| self.weight_t[i * outputs + range.start..i * outputs + range.end].iter().copied())
            .collect();
        Linear { weight_t, bias: self.bias[range].to_vec() }
    }

    /// The weight as PyTorch stores it, `[out][in]`.
    pub fn weight(&self) -> Vec<f32> {
        let (inputs, outputs) = (self.inputs(), self.bias.len());
        let mut w = vec![0.0; inputs * outputs];
        for i in 0..inputs {
            for o in 0..outputs {
                w[o * inputs + i] = self.weight_t[i * outputs + o];
            }
        }
        w
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

/// Reads tensor `name` as f32 and checks its shape.
pub(crate) fn tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = st.tensor(name).map_err(|_| Error::InvalidModel(format!("missing tensor `{name}`")))?;
    if view.shape() != shape {
        return Err(Error::InvalidModel(format!(
            "tensor `{name}` has shape {:?}, the config needs {shape:?}",
            view.shape()
        )));
    }
    let bytes = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(std::array::from_fn(|k| b[k])) as f32).collect(),
        other => return Err(Error::InvalidModel(format!("tensor `{name}` is {other:?}; F32 or F64 expected"))),
    };
    if let Some(k) = values.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidModel(format!("tensor `{name}` has a non-finite value at flat index {k}")));
    }
    Ok(values)
}

/// PyTorch `Linear` `prefix.weight` `[out, in]` and `prefix.bias` `[out]`, transposed.
pub(crate) fn linear(st: &SafeTensors, prefix: &str, inputs: usize, outputs: usize) -> Result<Linear> {
    let weight_t = weight_transposed(st, &format!("{prefix}.weight"), inputs, outputs)?;
    let bias = tensor(st, &format!("{prefix}.bias"), &[outputs])?;
    Ok(Linear { weight_t, bias })
}

/// Tensor `name` `[out, in]`, returned transposed (`[in][out]`).
pub(crate) fn weight_transposed(st: &SafeTensors, name: &str, inputs: usize, outputs: usize) -> Result<Vec<f32>> {
    let w = tensor(st, name, &[outputs, inputs])?;
    let mut weight_t = vec![0.0; inputs * outputs];
    for o in 0..outputs {
        for i in 0..inputs {
            weight_t[i * outputs + o] = w[o * inputs + i];
        }
    }
    Ok(weight_t)
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
        let push_linear = |push: &mut dyn FnMut(String, Vec<usize>, &[f32]), prefix: String, l: &Linear| {
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

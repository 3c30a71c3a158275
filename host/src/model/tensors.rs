//! Reading a model file's tensors: f32 tensors checked against the shapes the config
//! implies (F32 or F64 in the file, finite values only), and PyTorch `Linear` layers
//! stored transposed for the kernels.

use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};

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

/// Reads tensor `name` as f32 and checks its shape.
pub fn tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
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
pub fn linear(st: &SafeTensors, prefix: &str, inputs: usize, outputs: usize) -> Result<Linear> {
    let weight_t = weight_transposed(st, &format!("{prefix}.weight"), inputs, outputs)?;
    let bias = tensor(st, &format!("{prefix}.bias"), &[outputs])?;
    Ok(Linear { weight_t, bias })
}

/// Tensor `name` `[out, in]`, returned transposed (`[in][out]`).
pub fn weight_transposed(st: &SafeTensors, name: &str, inputs: usize, outputs: usize) -> Result<Vec<f32>> {
    let w = tensor(st, name, &[outputs, inputs])?;
    let mut weight_t = vec![0.0; inputs * outputs];
    for o in 0..outputs {
        for i in 0..inputs {
            weight_t[i * outputs + o] = w[o * inputs + i];
        }
    }
    Ok(weight_t)
}

//! Dense layers on the device: a host [`Linear`] uploaded in the layouts the kernels
//! read, and the checked argument structs that name them.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::tensors::Linear;
use cudarc::driver::CudaSlice;
use mlff_kernels::common::args::DenseLayer;
use mlff_kernels::student::args::FragmentLayer;

/// A `Linear` on the device: transposed (`[in][out]`, forward) and as stored
/// (`[out][in]`, input gradients), and optionally both again in the tensor-core
/// fragment layout.
pub(crate) struct DeviceLinear {
    inputs: usize,
    outputs: usize,
    weight_t: CudaSlice<f32>,
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    /// `weight_t` and `weight` in the fragment layout of `mma`, where asked for and
    /// the layer's sizes fit it (both multiples of 8).
    fragments: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
}

impl DeviceLinear {
    pub(crate) fn new(gpu: &Gpu, l: &Linear) -> Result<Self> {
        Ok(DeviceLinear {
            inputs: l.inputs(),
            outputs: l.bias.len(),
            weight_t: gpu.upload(&l.weight_t)?,
            weight: gpu.upload(&l.weight())?,
            bias: gpu.upload(&l.bias)?,
            fragments: None,
        })
    }

    /// `new`, plus the fragment layouts for the tensor-core kernels where the sizes
    /// fit them (only the student's update layers have such kernels).
    pub(crate) fn with_fragments(gpu: &Gpu, l: &Linear) -> Result<Self> {
        let (inputs, outputs) = (l.inputs(), l.bias.len());
        let weight = l.weight();
        let mut forward = vec![0.0f32; mlff_kernels::mma::fragment_len(inputs, outputs)];
        let mut backward = vec![0.0f32; forward.len()];
        let fits = mlff_kernels::mma::write_fragments(&l.weight_t, inputs, outputs, &mut forward)
            && mlff_kernels::mma::write_fragments(&weight, outputs, inputs, &mut backward);
        let fragments = if fits { Some((gpu.upload(&forward)?, gpu.upload(&backward)?)) } else { None };
        Ok(DeviceLinear {
            inputs,
            outputs,
            weight_t: gpu.upload(&l.weight_t)?,
            weight: gpu.upload(&weight)?,
            bias: gpu.upload(&l.bias)?,
            fragments,
        })
    }

    pub(crate) fn has_fragments(&self) -> bool {
        self.fragments.is_some()
    }

    /// The kernels' view of the layer, checked to be `inputs` → `outputs`.
    pub(crate) fn dense(&self, gpu: &Gpu, inputs: usize, outputs: usize) -> Result<DenseLayer> {
        self.check(inputs, outputs)?;
        Ok(DenseLayer {
            weight_t: gpu.device_ptr(&self.weight_t, inputs * outputs)?,
            weight: gpu.device_ptr(&self.weight, inputs * outputs)?,
            bias: gpu.device_ptr(&self.bias, outputs)?,
        })
    }

    /// The tensor-core kernels' view of the layer, checked to be `inputs` → `outputs`.
    pub(crate) fn fragments(&self, gpu: &Gpu, inputs: usize, outputs: usize) -> Result<FragmentLayer> {
        self.check(inputs, outputs)?;
        let (forward, backward) = self.fragments.as_ref().ok_or_else(|| {
            Error::Unsupported(format!("internal: a {inputs} → {outputs} layer has no tensor-core layout"))
        })?;
        let len = mlff_kernels::mma::fragment_len(inputs, outputs);
        Ok(FragmentLayer {
            weight_t: gpu.device_ptr(forward, len)?,
            weight: gpu.device_ptr(backward, len)?,
            bias: gpu.device_ptr(&self.bias, outputs)?,
        })
    }

    fn check(&self, inputs: usize, outputs: usize) -> Result<()> {
        if (self.inputs, self.outputs) != (inputs, outputs) {
            return Err(Error::Unsupported(format!(
                "internal: a kernel expects a {inputs} → {outputs} layer, the model's is {} → {}",
                self.inputs, self.outputs
            )));
        }
        Ok(())
    }
}

//! PaiNN on the GPU: its weights and filter tables on the device, and its pass over
//! one batch shape. Per block: the context x of the block input, the interaction, the
//! mixing; then the readout. The adjoint recomputes each block's input (embedding,
//! or the previous block's mixing) and its context instead of storing them.

use super::PainnWeights;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::architecture::{GpuArchitecture, GpuPass};
use crate::model::gpu::{unsupported_channels, unsupported_tile, DeviceLinear, DeviceState};
use crate::model::tuning::Tuning;
use cudarc::driver::{CudaSlice, LaunchConfig};
use mlff_kernels::common::args::ReadoutArgs;
use mlff_kernels::kernel::{Kernel, KernelArgs};
use mlff_kernels::painn::args::{
    ContextArgs, ContextBackArgs, MessageArgs, MessageBackArgs, MixingArgs, MixingBackArgs,
};
use mlff_kernels::painn::entries as k;
use std::sync::Arc;

/// One block on the device: filter table, context network, channel mix and mixing
/// network.
struct Block {
    table: CudaSlice<f32>,
    context_in: DeviceLinear,
    context_out: DeviceLinear,
    channel_mix: DeviceLinear,
    update_in: DeviceLinear,
    update_out: DeviceLinear,
}

/// PaiNN's weights on one GPU.
pub(crate) struct PainnGpu {
    gpu: Arc<Gpu>,
    hidden: usize,
    cutoff: f32,
    embedding: CudaSlice<f32>,
    blocks: Vec<Block>,
    readout: [DeviceLinear; 2],
    /// Per-element energy offsets (the mean folded in), `[max_z + 1]`.
    offsets: CudaSlice<f32>,
    embedding_rows: usize,
}

impl PainnGpu {
    pub(crate) fn new(gpu: &Arc<Gpu>, w: &PainnWeights) -> Result<Self> {
        let blocks = (0..w.blocks.len())
            .map(|t| {
                let b = &w.blocks[t];
                Ok(Block {
                    table: gpu.upload(&super::filter::build(w, t)?)?,
                    context_in: DeviceLinear::new(gpu, &b.context_in)?,
                    context_out: DeviceLinear::new(gpu, &b.context_out)?,
                    channel_mix: DeviceLinear::new(gpu, &b.channel_mix)?,
                    update_in: DeviceLinear::new(gpu, &b.update_in)?,
                    update_out: DeviceLinear::new(gpu, &b.update_out)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let offsets: Vec<f32> = (0..=w.config.max_z as u32).map(|z| w.atom_offset(z)).collect();
        let [r0, r1] = &w.readout;
        Ok(PainnGpu {
            gpu: gpu.clone(),
            hidden: w.features(),
            cutoff: w.config.cutoff,
            embedding: gpu.upload(&w.embedding)?,
            blocks,
            readout: [DeviceLinear::new(gpu, r0)?, DeviceLinear::new(gpu, r1)?],
            offsets: gpu.upload(&offsets)?,
            embedding_rows: w.config.max_z + 1,
        })
    }

    /// Device bytes per atom of the pass's own buffers: the context x and its adjoint.
    pub(crate) fn bytes_per_atom(hidden: usize) -> usize {
        4 * 6 * hidden
    }
}

impl GpuArchitecture for PainnGpu {
    fn hidden(&self) -> usize {
        self.hidden
    }

    fn cutoff(&self) -> f32 {
        self.cutoff
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// PaiNN's direction r/d has no ε.
    fn unit_epsilon(&self) -> f32 {
        0.0
    }

    fn embedding_rows(&self) -> usize {
        self.embedding_rows
    }

    fn plan(self: Arc<Self>, state: &DeviceState, tuning: &Tuning) -> Result<Box<dyn GpuPass>> {
        let (n, h) = (state.num_atoms, self.hidden);
        let tile_atoms = tuning.painn_tile_atoms(h, n)?;
        let context = |len: usize| self.gpu.zeros::<f32>(len.max(1));
        Ok(Box::new(PainnPass {
            tile_atoms,
            slices: tuning.painn_slices(h, n.div_ceil(tile_atoms)),
            x: context(3 * n * h)?,
            gx: context(3 * n * h)?,
            weights: self,
        }))
    }
}

/// PaiNN's part of one batch shape: its launch choices and the per-atom context.
struct PainnPass {
    weights: Arc<PainnGpu>,
    tile_atoms: usize,
    /// k-slices of the context and mixing kernels (split-K, as the student's update;
    /// the readout does not split: its layers run on parts of the block only).
    slices: usize,
    /// The per-atom context x (3F) of the current block and its adjoint.
    x: CudaSlice<f32>,
    gx: CudaSlice<f32>,
}

impl PainnPass {
    /// Launches one of PaiNN's kernels.
    fn launch<A: KernelArgs>(
        &self,
        state: &DeviceState,
        kernel: Kernel<A>,
        config: LaunchConfig,
        args: &A,
    ) -> Result<()> {
        // SAFETY: every argument struct launched here is built by this pass's
        // builders below: addresses of the state's buffers and of this pass's own
        // (checked by `Gpu::device_ptr` against this shape's atoms and edges) and of
        // the weights (checked layer by layer by `DeviceLinear`), which the pass holds.
        // The workspace that owns the state and the pass keeps both as long as its
        // CUDA graph and synchronises before dropping them.
        unsafe { state.gpu.launch(kernel, config, args) }
    }

    fn context_args(&self, state: &DeviceState, t: usize) -> Result<ContextArgs> {
        let (g, h, b) = (&self.weights.gpu, state.hidden, &self.weights.blocks[t]);
        Ok(ContextArgs {
            q: state.per_atom(&state.s, h)?,
            x: state.per_atom(&self.x, 3 * h)?,
            context_in: b.context_in.dense(g, h, h)?,
            context_out: b.context_out.dense(g, h, 3 * h)?,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
        })
    }

    fn context_back_args(&self, state: &DeviceState, t: usize) -> Result<ContextBackArgs> {
        let (g, h, b) = (&self.weights.gpu, state.hidden, &self.weights.blocks[t]);
        Ok(ContextBackArgs {
            q: state.per_atom(&state.s, h)?,
            gx: state.per_atom(&self.gx, 3 * h)?,
            gq_mid: state.per_atom(&state.gs_mid, h)?,
            gq: state.per_atom(&state.gs, h)?,
            context_in: b.context_in.dense(g, h, h)?,
            context_out: b.context_out.dense(g, h, 3 * h)?,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
        })
    }

    fn message_args(&self, state: &DeviceState, t: usize) -> Result<MessageArgs> {
        let (w, h) = (&self.weights, state.hidden);
        Ok(MessageArgs {
            rows: state.rows(w.cutoff, w.unit_epsilon())?,
            filter: state.filter(&w.blocks[t].table, w.cutoff)?,
            q: state.per_atom(&state.s, h)?,
            mu: state.per_atom(&state.v, 3 * h)?,
            x: state.per_atom(&self.x, 3 * h)?,
            q_mid: state.per_atom(&state.s_mid[t], h)?,
            mu_mid: state.per_atom(&state.v_mid[t], 3 * h)?,
        })
    }

    fn message_back_args(&self, state: &DeviceState, t: usize) -> Result<MessageBackArgs> {
        let (w, h) = (&self.weights, state.hidden);
        Ok(MessageBackArgs {
            rows: state.rows(w.cutoff, w.unit_epsilon())?,
            filter: state.filter(&w.blocks[t].table, w.cutoff)?,
            mu: state.per_atom(&state.v, 3 * h)?,
            x: state.per_atom(&self.x, 3 * h)?,
            gq_mid: state.per_atom(&state.gs_mid, h)?,
            gmu_mid: state.per_atom(&state.gv_mid, 3 * h)?,
            gx: state.per_atom(&self.gx, 3 * h)?,
            gmu: state.per_atom(&state.gv, 3 * h)?,
            edge_adjoint: state.edge_adjoint()?,
        })
    }

    fn mixing_args(&self, state: &DeviceState, t: usize) -> Result<MixingArgs> {
        let (g, h, b) = (&self.weights.gpu, state.hidden, &self.weights.blocks[t]);
        Ok(MixingArgs {
            q_mid: state.per_atom(&state.s_mid[t], h)?,
            mu_mid: state.per_atom(&state.v_mid[t], 3 * h)?,
            q: state.per_atom(&state.s, h)?,
            mu: state.per_atom(&state.v, 3 * h)?,
            channel_mix: b.channel_mix.dense(g, h, 2 * h)?,
            update_in: b.update_in.dense(g, 2 * h, h)?,
            update_out: b.update_out.dense(g, h, 3 * h)?,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
        })
    }

    fn mixing_back_args(&self, state: &DeviceState, t: usize) -> Result<MixingBackArgs> {
        let (g, h, b) = (&self.weights.gpu, state.hidden, &self.weights.blocks[t]);
        Ok(MixingBackArgs {
            q_mid: state.per_atom(&state.s_mid[t], h)?,
            mu_mid: state.per_atom(&state.v_mid[t], 3 * h)?,
            gq: state.per_atom(&state.gs, h)?,
            gmu: state.per_atom(&state.gv, 3 * h)?,
            gq_mid: state.per_atom(&state.gs_mid, h)?,
            gmu_mid: state.per_atom(&state.gv_mid, 3 * h)?,
            channel_mix: b.channel_mix.dense(g, h, 2 * h)?,
            update_in: b.update_in.dense(g, 2 * h, h)?,
            update_out: b.update_out.dense(g, h, 3 * h)?,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
            has_gmu: (t + 1 < self.weights.blocks.len()) as u32,
        })
    }

    fn readout_args(&self, state: &DeviceState, want_forces: bool) -> Result<ReadoutArgs<2>> {
        let (w, h) = (&self.weights, state.hidden);
        let (atom_energy, numbers) = state.readout_outputs()?;
        let [r0, r1] = &w.readout;
        Ok(ReadoutArgs {
            s: state.per_atom(&state.s, h)?,
            numbers,
            head: [r0.dense(&w.gpu, h, h / 2)?, r1.dense(&w.gpu, h / 2, 1)?],
            atomref: state.per_element(&w.offsets)?,
            atom_energy,
            gs: state.per_atom(&state.gs, h)?,
            energy_weight: state.energy_weight()?,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
            want_gradient: want_forces as u32,
        })
    }
}

impl GpuPass for PainnPass {
    /// PaiNN: forward and adjoint, ending in the per-edge adjoints.
    fn enqueue(&self, state: &DeviceState, want_forces: bool) -> Result<()> {
        let w = &self.weights;
        let (n, h, blocks) = (state.num_atoms, state.hidden, w.blocks.len());
        let (ta, slices) = (self.tile_atoms, self.slices);
        let tile_with = |floats: usize, slices: usize| LaunchConfig {
            grid_dim: (n.div_ceil(ta).max(1) as u32, 1, 1),
            block_dim: ((h * slices) as u32, 1, 1),
            shared_mem_bytes: ((floats + slices) * h * ta * 4) as u32,
        };
        let tile = |floats: usize| tile_with(floats, slices);
        let k::TileKernels { context, context_back, mixing, mixing_back, readout } =
            k::tiles(ta, slices > 1).ok_or_else(|| unsupported_tile(ta))?;
        let edge_warps = crate::gpu::grid_1d(32 * n * state.groups, 128)?;
        let ch = h / (32 * state.groups);
        let (message, message_back) = k::message(ch).ok_or_else(|| unsupported_channels(ch))?;
        let (q, mu) = (state.per_atom(&state.s, h)?, state.per_atom(&state.v, 3 * h)?);
        state.enqueue_embed(&w.embedding, q, mu)?;
        for t in 0..blocks {
            self.launch(state, context, tile(2), &self.context_args(state, t)?)?;
            self.launch(state, message, edge_warps, &self.message_args(state, t)?)?;
            self.launch(state, mixing, tile(5), &self.mixing_args(state, t)?)?;
        }
        let readout_tile =
            LaunchConfig { block_dim: (h as u32, 1, 1), shared_mem_bytes: (2 * h * ta * 4) as u32, ..tile(0) };
        self.launch(state, readout, readout_tile, &self.readout_args(state, want_forces)?)?;
        if !want_forces {
            return Ok(());
        }
        for t in (0..blocks).rev() {
            if t == 0 {
                state.enqueue_embed(&w.embedding, q, mu)?;
            } else {
                self.launch(state, mixing, tile(5), &self.mixing_args(state, t - 1)?)?;
            }
            self.launch(state, context, tile(2), &self.context_args(state, t)?)?;
            self.launch(state, mixing_back, tile(6), &self.mixing_back_args(state, t)?)?;
            self.launch(state, message_back, edge_warps, &self.message_back_args(state, t)?)?;
            self.launch(state, context_back, tile(5), &self.context_back_args(state, t)?)?;
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        let atoms = self.x.len() / (3 * self.weights.hidden);
        atoms * PainnGpu::bytes_per_atom(self.weights.hidden)
    }
}

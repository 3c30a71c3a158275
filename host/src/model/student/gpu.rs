//! The student on the GPU: its weights and filter tables on the device, and its pass
//! over one batch shape: embedding, T × (message, update), readout, then the adjoint
//! back through the blocks into the per-edge adjoints. Below
//! `KEEP_ACTIVATIONS_BELOW_ATOMS` atoms the forward keeps each block's input and
//! update activations for the adjoint instead of recomputing them.

use super::StudentWeights;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::architecture::{GpuArchitecture, GpuPass};
use crate::model::gpu::{unsupported_channels, unsupported_tile, DeviceLinear, DeviceState};
use crate::model::tuning::Tuning;
use cudarc::driver::{CudaSlice, LaunchConfig};
use mlff_kernels::common::args::{DenseLayer, ReadoutArgs};
use mlff_kernels::kernel::{Kernel, KernelArgs};
use mlff_kernels::mma::TILE_ROWS;
use mlff_kernels::student::args::{FragmentLayer, MessageArgs, MessageBackArgs, UpdateArgs, UpdateBackArgs};
use mlff_kernels::student::entries as k;
use mlff_kernels::student::tensor_core as tc;
use std::sync::Arc;

/// One interaction block on the device.
struct Block {
    table: CudaSlice<f32>,
    update_in: DeviceLinear,
    update_out: DeviceLinear,
    mixing: [f32; 9],
}

/// The student's weights on one GPU.
pub(crate) struct StudentGpu {
    gpu: Arc<Gpu>,
    hidden: usize,
    cutoff: f32,
    embedding_rows: usize,
    embedding: CudaSlice<f32>,
    blocks: Vec<Block>,
    head: [DeviceLinear; 3],
    /// Per-element energy offsets, when the model has them.
    atomref: Option<CudaSlice<f32>>,
}

impl StudentGpu {
    pub(crate) fn new(gpu: &Arc<Gpu>, w: &StudentWeights) -> Result<Self> {
        let blocks = (0..w.config.num_interactions)
            .map(|t| {
                let b = &w.interactions[t];
                Ok(Block {
                    table: gpu.upload(&super::filter::build(w, t)?)?,
                    update_in: DeviceLinear::with_fragments(gpu, &b.update_in)?,
                    update_out: DeviceLinear::with_fragments(gpu, &b.update_out)?,
                    mixing: b.mixing,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let [h0, h1, h2] = &w.head;
        Ok(StudentGpu {
            gpu: gpu.clone(),
            hidden: w.hidden_dim(),
            cutoff: w.config.cutoff,
            embedding_rows: w.config.max_z + 1,
            embedding: gpu.upload(&w.embedding)?,
            blocks,
            head: [DeviceLinear::new(gpu, h0)?, DeviceLinear::new(gpu, h1)?, DeviceLinear::new(gpu, h2)?],
            atomref: w.atomref.as_ref().map(|r| gpu.upload(r)).transpose()?,
        })
    }

    /// Whether the update can run on the tensor cores: every block's update weights
    /// in the fragment layout, H ≤ 128 (what the tests cover), and the adjoint's
    /// shared memory (75 KB at H = 128) within the device's.
    fn tensor_cores_possible(&self) -> bool {
        self.hidden <= 128
            && tc::backward_shared_bytes(self.hidden) <= self.gpu.properties().max_shared_bytes
            && self.blocks.iter().all(|b| b.update_in.has_fragments() && b.update_out.has_fragments())
    }
}

impl GpuArchitecture for StudentGpu {
    fn hidden(&self) -> usize {
        self.hidden
    }

    fn cutoff(&self) -> f32 {
        self.cutoff
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn unit_epsilon(&self) -> f32 {
        mlff_kernels::geometry::UNIT_EPSILON
    }

    fn embedding_rows(&self) -> usize {
        self.embedding_rows
    }

    fn plan(self: Arc<Self>, state: &DeviceState, tuning: &Tuning) -> Result<Box<dyn GpuPass>> {
        let (n, h, blocks) = (state.num_atoms, self.hidden, self.blocks.len());
        let tile_atoms = tuning.tile_atoms(h, n)?;
        let tensor_cores = tuning.tensor_core_updates(self.tensor_cores_possible(), n);
        let keep = tuning.keeps_activations(n);
        let zeros = |len: usize| self.gpu.zeros::<f32>(len.max(1));
        Ok(Box::new(StudentPass {
            tile_atoms,
            update_slices: tuning.update_slices(h, tile_atoms, n.div_ceil(tile_atoms)),
            readout_tile_atoms: tuning.readout_tile_atoms(tile_atoms),
            tensor_cores,
            kept_inputs: (1..if keep { blocks } else { 1 })
                .map(|_| Ok((zeros(n * h)?, zeros(3 * n * h)?)))
                .collect::<Result<_>>()?,
            kept_update: (0..if keep { blocks } else { 0 }).map(|_| zeros(3 * n * h)).collect::<Result<_>>()?,
            weights: self,
        }))
    }
}

/// The student's part of one batch shape: its launch choices, and the activations it
/// keeps for the adjoint.
struct StudentPass {
    weights: Arc<StudentGpu>,
    /// Atoms a tile of the CUDA-core update and of the readout.
    tile_atoms: usize,
    update_slices: usize,
    readout_tile_atoms: usize,
    /// Whether the update runs on the tensor cores.
    tensor_cores: bool,
    /// Block inputs s, v of blocks 1..T, kept from the forward for the adjoint when
    /// the input is small (`Tuning::keeps_activations`); empty otherwise, and the
    /// adjoint recomputes them (one update launch a block).
    kept_inputs: Vec<(CudaSlice<f32>, CudaSlice<f32>)>,
    /// With the kept inputs, each block's update activations [pre | g1 | g2] (3H
    /// floats an atom), so that the adjoint skips two of its four products.
    kept_update: Vec<CudaSlice<f32>>,
}

/// The update kernels of one pass: on the CUDA cores or on the tensor cores, each
/// with its layers' layout.
enum Update {
    CudaCores(Kernel<UpdateArgs<DenseLayer>>, Kernel<UpdateBackArgs<DenseLayer>>),
    TensorCores(Kernel<UpdateArgs<FragmentLayer>>, Kernel<UpdateBackArgs<FragmentLayer>>),
}

impl StudentPass {
    /// Launches one of the student's kernels.
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

    /// Where state t lives (the input of block t; t = T the output of the last): the
    /// kept inputs when there are, else the one state buffer.
    fn state_buffers<'a>(&'a self, state: &'a DeviceState, t: usize) -> (&'a CudaSlice<f32>, &'a CudaSlice<f32>) {
        match self.kept_inputs.get(t.wrapping_sub(1)) {
            Some((s, v)) => (s, v),
            None => (&state.s, &state.v),
        }
    }

    /// State t for a kernel to read or write.
    fn state_at(&self, state: &DeviceState, t: usize) -> Result<(*mut f32, *mut f32)> {
        let (s, v) = self.state_buffers(state, t);
        Ok((state.per_atom(s, state.hidden)?, state.per_atom(v, 3 * state.hidden)?))
    }

    fn message_args(&self, state: &DeviceState, t: usize) -> Result<MessageArgs> {
        let w = &self.weights;
        let (s, v) = self.state_at(state, t)?;
        Ok(MessageArgs {
            rows: state.rows(w.cutoff, w.unit_epsilon())?,
            filter: state.filter(&w.blocks[t].table, w.cutoff)?,
            s,
            v,
            s_mid: state.per_atom(&state.s_mid[t], state.hidden)?,
            v_mid: state.per_atom(&state.v_mid[t], 3 * state.hidden)?,
        })
    }

    fn message_back_args(&self, state: &DeviceState, t: usize) -> Result<MessageBackArgs> {
        let w = &self.weights;
        let h = state.hidden;
        let (s, v) = self.state_at(state, t)?;
        Ok(MessageBackArgs {
            rows: state.rows(w.cutoff, w.unit_epsilon())?,
            filter: state.filter(&w.blocks[t].table, w.cutoff)?,
            s,
            v,
            gs_mid: state.per_atom(&state.gs_mid, h)?,
            gv_mid: state.per_atom(&state.gv_mid, 3 * h)?,
            gs: state.per_atom(&state.gs, h)?,
            gv: state.per_atom(&state.gv, 3 * h)?,
            edge_adjoint: state.edge_adjoint()?,
        })
    }

    /// The update of block t writing state `output`, with layers `L`.
    fn update_args<L>(
        &self,
        state: &DeviceState,
        t: usize,
        output: usize,
        layer: impl Fn(&DeviceLinear, usize, usize) -> Result<L>,
    ) -> Result<UpdateArgs<L>> {
        let h = state.hidden;
        let b = &self.weights.blocks[t];
        let (s, v) = self.state_at(state, output)?;
        Ok(UpdateArgs {
            s_mid: state.per_atom(&state.s_mid[t], h)?,
            v_mid: state.per_atom(&state.v_mid[t], 3 * h)?,
            s,
            v,
            kept: self.kept_update(state, t)?,
            update_in: layer(&b.update_in, 2 * h, h)?,
            update_out: layer(&b.update_out, h, 3 * h)?,
            mixing: b.mixing,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
        })
    }

    fn update_back_args<L>(
        &self,
        state: &DeviceState,
        t: usize,
        layer: impl Fn(&DeviceLinear, usize, usize) -> Result<L>,
    ) -> Result<UpdateBackArgs<L>> {
        let h = state.hidden;
        let b = &self.weights.blocks[t];
        Ok(UpdateBackArgs {
            s_mid: state.per_atom(&state.s_mid[t], h)?,
            v_mid: state.per_atom(&state.v_mid[t], 3 * h)?,
            kept: self.kept_update(state, t)?,
            gs: state.per_atom(&state.gs, h)?,
            gv: state.per_atom(&state.gv, 3 * h)?,
            gs_mid: state.per_atom(&state.gs_mid, h)?,
            gv_mid: state.per_atom(&state.gv_mid, 3 * h)?,
            update_in: layer(&b.update_in, 2 * h, h)?,
            update_out: layer(&b.update_out, h, 3 * h)?,
            mixing: b.mixing,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
            has_gv: (t + 1 < self.weights.blocks.len()) as u32,
        })
    }

    /// Block t's kept update activations, or null when not kept.
    fn kept_update(&self, state: &DeviceState, t: usize) -> Result<*mut f32> {
        match self.kept_update.get(t) {
            Some(kept) => state.per_atom(kept, 3 * state.hidden),
            None => Ok(std::ptr::null_mut()),
        }
    }

    fn readout_args(&self, state: &DeviceState, want_forces: bool) -> Result<ReadoutArgs<3>> {
        let (w, h) = (&self.weights, state.hidden);
        let (s, _) = self.state_at(state, w.blocks.len())?;
        let (atom_energy, numbers) = state.readout_outputs()?;
        let [h0, h1, h2] = &w.head;
        Ok(ReadoutArgs {
            s,
            numbers,
            head: [h0.dense(&w.gpu, h, h / 2)?, h1.dense(&w.gpu, h / 2, h / 4)?, h2.dense(&w.gpu, h / 4, 1)?],
            atomref: match &w.atomref {
                Some(r) => state.per_element(r)?,
                None => std::ptr::null(),
            },
            atom_energy,
            gs: state.per_atom(&state.gs, h)?,
            energy_weight: state.energy_weight()?,
            num_atoms: state.num_atoms as u32,
            hidden: h as u32,
            want_gradient: want_forces as u32,
        })
    }

    /// The update kernels of this pass and their launches (forward, adjoint).
    fn update_kernels(&self, state: &DeviceState) -> Result<(Update, LaunchConfig, LaunchConfig)> {
        let (n, h, ta) = (state.num_atoms, state.hidden, self.tile_atoms);
        if self.tensor_cores {
            let blocks = LaunchConfig {
                grid_dim: (n.div_ceil(TILE_ROWS) as u32, 1, 1),
                block_dim: (32 * tc::BLOCK_WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let forward = LaunchConfig { shared_mem_bytes: tc::forward_shared_bytes(h) as u32, ..blocks };
            let backward = LaunchConfig { shared_mem_bytes: tc::backward_shared_bytes(h) as u32, ..blocks };
            return Ok((Update::TensorCores(k::UPDATE_TC, k::UPDATE_BACK_TC), forward, backward));
        }
        let (forward_kernel, back_kernel) = k::update(ta).ok_or_else(|| unsupported_tile(ta))?;
        // The update kernels split k over S slices of H threads (split-K).
        let slices = self.update_slices;
        let tiles = LaunchConfig {
            grid_dim: (n.div_ceil(ta).max(1) as u32, 1, 1),
            block_dim: ((h * slices) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let forward = LaunchConfig { shared_mem_bytes: ((3 + slices) * h * ta * 4) as u32, ..tiles };
        let backward = LaunchConfig { shared_mem_bytes: ((4 + slices) * h * ta * 4) as u32, ..tiles };
        Ok((Update::CudaCores(forward_kernel, back_kernel), forward, backward))
    }

    /// Enqueues the update of block t, writing state `output`.
    fn enqueue_update(
        &self,
        state: &DeviceState,
        update: &Update,
        config: LaunchConfig,
        t: usize,
        output: usize,
    ) -> Result<()> {
        let gpu = &self.weights.gpu;
        match update {
            Update::CudaCores(forward, _) => {
                let args = self.update_args(state, t, output, |l, i, o| l.dense(gpu, i, o))?;
                self.launch(state, *forward, config, &args)
            }
            Update::TensorCores(forward, _) => {
                let args = self.update_args(state, t, output, |l, i, o| l.fragments(gpu, i, o))?;
                self.launch(state, *forward, config, &args)
            }
        }
    }

    /// Enqueues the adjoint of the update of block t.
    fn enqueue_update_back(&self, state: &DeviceState, update: &Update, config: LaunchConfig, t: usize) -> Result<()> {
        let gpu = &self.weights.gpu;
        match update {
            Update::CudaCores(_, back) => {
                let args = self.update_back_args(state, t, |l, i, o| l.dense(gpu, i, o))?;
                self.launch(state, *back, config, &args)
            }
            Update::TensorCores(_, back) => {
                let args = self.update_back_args(state, t, |l, i, o| l.fragments(gpu, i, o))?;
                self.launch(state, *back, config, &args)
            }
        }
    }
}

impl GpuPass for StudentPass {
    /// Architecture 1: forward and adjoint, ending in the per-edge adjoints.
    fn enqueue(&self, state: &DeviceState, want_forces: bool) -> Result<()> {
        let w = &self.weights;
        let (n, h, blocks) = (state.num_atoms, state.hidden, w.blocks.len());
        let edge_warps = crate::gpu::grid_1d(32 * n * state.groups, 128)?;
        let ch = h / (32 * state.groups);
        let (message, message_back) = k::message(ch).ok_or_else(|| unsupported_channels(ch))?;
        let (update, forward, backward) = self.update_kernels(state)?;
        let (s0, v0) = self.state_at(state, 0)?;
        state.enqueue_embed(&w.embedding, s0, v0)?;
        for t in 0..blocks {
            self.launch(state, message, edge_warps, &self.message_args(state, t)?)?;
            self.enqueue_update(state, &update, forward, t, t + 1)?;
        }
        let readout_atoms = self.readout_tile_atoms;
        let readout_kernel = k::readout(readout_atoms).ok_or_else(|| unsupported_tile(readout_atoms))?;
        let readout = LaunchConfig {
            grid_dim: (n.div_ceil(readout_atoms).max(1) as u32, 1, 1),
            block_dim: (h as u32, 1, 1),
            shared_mem_bytes: ((13 * h / 4) * readout_atoms * 4) as u32,
        };
        self.launch(state, readout_kernel, readout, &self.readout_args(state, want_forces)?)?;
        if !want_forces {
            return Ok(());
        }
        for t in (0..blocks).rev() {
            // The block's input state again, unless kept: the embedding (which the
            // last update overwrote), or the update of the block before.
            if t == 0 {
                state.enqueue_embed(&w.embedding, s0, v0)?;
            } else if self.kept_inputs.is_empty() {
                self.enqueue_update(state, &update, forward, t - 1, t)?;
            }
            self.enqueue_update_back(state, &update, backward, t)?;
            self.launch(state, message_back, edge_warps, &self.message_back_args(state, t)?)?;
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        4 * self.kept_inputs.iter().map(|(s, v)| s.len() + v.len()).sum::<usize>()
            + 4 * self.kept_update.iter().map(|k| k.len()).sum::<usize>()
    }
}

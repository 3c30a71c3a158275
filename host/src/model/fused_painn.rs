//! The fused engine for PaiNN (`kernels::fused::painn`), beside the student's in
//! [`super`]: [`FusedPainnWeights`] holds the kernel's weights as flat host arrays, the
//! GPU driver [`FusedPainnGpu`] uploads them once, and [`emulate_painn`] runs the very
//! same kernel source on the CPU (one thread, or several OS threads with a barrier
//! standing in for a thread block), which is how the tests check the kernel without a
//! GPU.

use super::check_batch_elements;
use super::{
    as_bytes, emulate, layout_offsets, linear_pointers, Architecture, Body, DeviceLinear, Engine, FusedOutput,
    LinearArrays, MdChunk, MdPointers,
};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::filter_table::inverse_spacing;
use crate::model::painn::filter::build as build_painn;
use crate::model::painn::PainnWeights;
use crate::structure::Batch;
use cudarc::driver::CudaSlice;
use mlff_kernels::fused::painn::{FusedPainnArgs, FusedPainnBlock, PainnLayout};
use mlff_kernels::fused::student::FusedLinear;
use mlff_kernels::fused::team::Team;
use mlff_kernels::md::Integrator;
use std::sync::Arc;

/// The evaluate and MD kernels.
pub(crate) use mlff_kernels::fused::entries::{PAINN_EVALUATE as EVALUATE, PAINN_MD as MD};

/// PaiNN's kernels.
struct Painn;

impl Architecture for Painn {
    type Args = FusedPainnArgs;
    const EVALUATE: mlff_kernels::kernel::Kernel<FusedPainnArgs> = EVALUATE;
    const MD: mlff_kernels::kernel::Kernel<FusedPainnArgs> = MD;
    unsafe fn evaluate<T: Team>(team: &T, args: &FusedPainnArgs, s: usize, want_forces: bool) -> u32 {
        mlff_kernels::fused::painn::evaluate(team, args, s, want_forces)
    }
    unsafe fn md<T: Team>(team: &T, args: &FusedPainnArgs, s: usize) {
        mlff_kernels::fused::painn::md(team, args, s)
    }
}

/// One block's dense layers, each in both layouts.
#[derive(Clone, Debug)]
pub struct FusedPainnLayers {
    /// `interatomic_context_net.0` (F → F) and `.1` (F → 3F).
    pub context_in: LinearArrays,
    pub context_out: LinearArrays,
    /// `mu_channel_mix` (F → 2F; its bias is zero and unread).
    pub channel_mix: LinearArrays,
    /// `intraatomic_context_net.0` (2F → F) and `.1` (F → 3F).
    pub update_in: LinearArrays,
    pub update_out: LinearArrays,
}

/// PaiNN's weights for the fused kernel: filter tables, each block's layers, the
/// readout, the embedding, and the per-element energy offsets.
#[derive(Clone, Debug)]
pub struct FusedPainnWeights {
    pub features: usize,
    pub cutoff: f32,
    pub max_z: usize,
    /// Hermite tables of W(d): one per block, or one for all with shared filters.
    pub tables: Vec<Vec<f32>>,
    pub blocks: Vec<FusedPainnLayers>,
    /// F → F/2 (SiLU) → 1.
    pub readout: [LinearArrays; 2],
    /// `[max_z + 1][F]`.
    pub embedding: Vec<f32>,
    /// `[max_z + 1]`: SchNetPack's mean plus the element's atomref (what the CPU path
    /// adds to an atom's energy).
    pub atom_offsets: Vec<f32>,
}

impl FusedPainnWeights {
    pub fn new(w: &PainnWeights) -> Result<Self> {
        let filters = if w.config.shared_filters { 1 } else { w.blocks.len() };
        Ok(FusedPainnWeights {
            features: w.features(),
            cutoff: w.config.cutoff,
            max_z: w.config.max_z,
            tables: (0..filters).map(|t| build_painn(w, t)).collect::<Result<_>>()?,
            blocks: w
                .blocks
                .iter()
                .map(|b| FusedPainnLayers {
                    context_in: LinearArrays::new(&b.context_in),
                    context_out: LinearArrays::new(&b.context_out),
                    channel_mix: LinearArrays::new(&b.channel_mix),
                    update_in: LinearArrays::new(&b.update_in),
                    update_out: LinearArrays::new(&b.update_out),
                })
                .collect(),
            readout: [LinearArrays::new(&w.readout[0]), LinearArrays::new(&w.readout[1])],
            embedding: w.embedding.clone(),
            atom_offsets: (0..=w.config.max_z as u32).map(|z| w.atom_offset(z)).collect(),
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Which of `tables` block `t` reads.
    fn table_of(&self, t: usize) -> usize {
        t.min(self.tables.len() - 1)
    }
}

/// The scratch floats of a structure of n atoms, for F = `features` and `blocks` blocks.
fn layout_floats(features: usize, blocks: usize) -> impl Fn(usize) -> usize + Copy {
    move |n| PainnLayout::new(n, features, blocks).floats
}

/// Per-structure scratch offsets (floats) of a batch for PaiNN with `features`
/// channels and `blocks` blocks, and the total.
pub fn scratch_offsets(batch: &Batch, features: usize, blocks: usize) -> Result<(Vec<u64>, usize)> {
    layout_offsets(batch, |n| PainnLayout::new(n, features, blocks).floats)
}

/// PaiNN's argument struct with its weights filled in and the batch pointers null.
fn painn_args(
    blocks: *const FusedPainnBlock,
    readout: [FusedLinear; 2],
    embedding: *const f32,
    atom_offsets: *const f32,
    shape: (usize, usize, f32),
) -> FusedPainnArgs {
    let (features, num_blocks, cutoff) = shape;
    FusedPainnArgs {
        blocks,
        readout,
        embedding,
        atom_offsets,
        offsets: std::ptr::null(),
        scratch_offsets: std::ptr::null(),
        numbers: std::ptr::null(),
        positions: std::ptr::null_mut(),
        forces: std::ptr::null_mut(),
        atom_energies: std::ptr::null_mut(),
        energies: std::ptr::null_mut(),
        faults: std::ptr::null_mut(),
        scratch: std::ptr::null_mut(),
        velocities: std::ptr::null_mut(),
        masses: std::ptr::null(),
        fault_steps: std::ptr::null_mut(),
        heat: std::ptr::null_mut(),
        integrator: Integrator::default(),
        first_step: 0,
        steps: 0,
        num_structures: 0,
        num_blocks: num_blocks as u32,
        features: features as u32,
        cutoff,
        table_inv_h: inverse_spacing(cutoff),
        want_forces: 0,
        pad: 0,
    }
}

/// Runs the fused PaiNN kernel body on the CPU over `batch` (molecules only): with
/// `threads` = 1 one thread plays each block, with more, that many OS threads with a
/// barrier do. For tests of the kernel source; the CPU path proper is
/// `model::painn_cpu`.
pub fn emulate_painn(w: &FusedPainnWeights, batch: &Batch, threads: usize, want_forces: bool) -> Result<FusedOutput> {
    let mut positions = batch.positions.clone();
    emulate_painn_body(w, batch, threads, &mut positions, None, Body::Evaluate(want_forces))
}

/// MD on the fused PaiNN kernel body on the CPU (see [`emulate_painn`]): the forces of
/// the positions, then `steps` steps from step `first_step`, as one MD launch does.
pub fn emulate_painn_md(
    w: &FusedPainnWeights,
    batch: &Batch,
    threads: usize,
    mut md: MdChunk<'_>,
) -> Result<FusedOutput> {
    md.check(batch)?;
    let pointers = MdPointers::new(&mut md);
    emulate_painn_body(w, batch, threads, md.positions, Some(pointers), Body::Md)
}

fn emulate_painn_body(
    w: &FusedPainnWeights,
    batch: &Batch,
    threads: usize,
    positions: &mut [[f32; 3]],
    md: Option<MdPointers>,
    body: Body,
) -> Result<FusedOutput> {
    check_batch_elements(w.max_z, batch)?;
    let blocks: Vec<FusedPainnBlock> = w
        .blocks
        .iter()
        .enumerate()
        .map(|(t, b)| FusedPainnBlock {
            table: w.tables[w.table_of(t)].as_ptr(),
            context_in: linear_pointers(&b.context_in),
            context_out: linear_pointers(&b.context_out),
            channel_mix: linear_pointers(&b.channel_mix),
            update_in: linear_pointers(&b.update_in),
            update_out: linear_pointers(&b.update_out),
        })
        .collect();
    let base = painn_args(
        blocks.as_ptr(),
        [linear_pointers(&w.readout[0]), linear_pointers(&w.readout[1])],
        w.embedding.as_ptr(),
        w.atom_offsets.as_ptr(),
        (w.features, w.num_blocks(), w.cutoff),
    );
    emulate::<Painn>(base, batch, threads, positions, md, body, layout_floats(w.features, w.num_blocks()))
}

/// The fused PaiNN engine on one GPU: weights uploaded once; per call one upload of
/// the inputs, one launch, one download of the results.
pub struct FusedPainnGpu {
    engine: Engine,
    features: usize,
    cutoff: f32,
    max_z: usize,
    _tables: Vec<CudaSlice<f32>>,
    /// Per block: context_in, context_out, channel_mix, update_in, update_out.
    layers: Vec<[DeviceLinear; 5]>,
    readout: [DeviceLinear; 2],
    block_params: CudaSlice<u8>,
    embedding: CudaSlice<f32>,
    atom_offsets: CudaSlice<f32>,
}

impl FusedPainnGpu {
    pub fn new(gpu: Arc<Gpu>, w: &FusedPainnWeights) -> Result<Self> {
        let tables = w.tables.iter().map(|t| gpu.upload(t)).collect::<Result<Vec<_>>>()?;
        let layers = w
            .blocks
            .iter()
            .map(|b| {
                Ok([
                    DeviceLinear::new(&gpu, &b.context_in)?,
                    DeviceLinear::new(&gpu, &b.context_out)?,
                    DeviceLinear::new(&gpu, &b.channel_mix)?,
                    DeviceLinear::new(&gpu, &b.update_in)?,
                    DeviceLinear::new(&gpu, &b.update_out)?,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        let params: Vec<FusedPainnBlock> = layers
            .iter()
            .enumerate()
            .map(|(t, l)| {
                let [context_in, context_out, channel_mix, update_in, update_out] =
                    l.each_ref().map(|l| l.pointers(&gpu));
                FusedPainnBlock {
                    table: gpu.address(&tables[w.table_of(t)]),
                    context_in,
                    context_out,
                    channel_mix,
                    update_in,
                    update_out,
                }
            })
            .collect();
        let block_params = gpu.upload(as_bytes(&params))?;
        Ok(FusedPainnGpu {
            readout: [DeviceLinear::new(&gpu, &w.readout[0])?, DeviceLinear::new(&gpu, &w.readout[1])?],
            embedding: gpu.upload(&w.embedding)?,
            atom_offsets: gpu.upload(&w.atom_offsets)?,
            _tables: tables,
            layers,
            block_params,
            features: w.features,
            cutoff: w.cutoff,
            max_z: w.max_z,
            engine: Engine::new::<Painn>(gpu)?,
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.engine.gpu
    }

    pub fn features(&self) -> usize {
        self.features
    }

    pub fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    /// The most threads a block may have (the kernels' register use bounds it).
    pub fn max_threads(&self) -> u32 {
        self.engine.max_threads
    }

    /// The argument struct with the weights filled in and the batch pointers null.
    pub(crate) fn base_args(&self) -> FusedPainnArgs {
        let g = &self.engine.gpu;
        painn_args(
            g.address(&self.block_params) as *const FusedPainnBlock,
            [self.readout[0].pointers(g), self.readout[1].pointers(g)],
            g.address(&self.embedding),
            g.address(&self.atom_offsets),
            (self.features, self.num_blocks(), self.cutoff),
        )
    }

    /// Energies, atom energies, (forces) and fault bits of every molecule of `batch`.
    pub fn evaluate(&mut self, batch: &Batch, want_forces: bool) -> Result<FusedOutput> {
        check_batch_elements(self.max_z, batch)?;
        let (base, floats) = (self.base_args(), layout_floats(self.features, self.num_blocks()));
        self.engine.evaluate::<Painn>(base, batch, want_forces, floats)
    }

    /// MD of every molecule of `batch` from the state in `md` (left at the last step):
    /// the forces of the starting positions, then all `md.steps` steps in one launch.
    /// A structure whose positions fault stops there (`FusedOutput::faults`,
    /// `fault_steps`); the others run on.
    pub fn md(&mut self, batch: &Batch, md: MdChunk<'_>) -> Result<FusedOutput> {
        check_batch_elements(self.max_z, batch)?;
        let (base, floats) = (self.base_args(), layout_floats(self.features, self.num_blocks()));
        self.engine.md::<Painn>(base, batch, md, floats)
    }
}

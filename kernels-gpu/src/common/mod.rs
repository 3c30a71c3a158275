//! What every architecture uses: f32 math with the same bits on CPU and GPU, dense
//! layers, radial features, edge geometry, the Hermite filter table, 16-row dense
//! layers on the tensor cores; on the GPU, the walk over a receiver's row, dense
//! layers over atom tiles, and the kernels every model runs (embedding, edge
//! gradients, forces, per-structure sums).

pub mod args;
pub mod entries;
pub mod filter_table;
pub mod geometry;
pub mod math;
pub mod mma;
pub mod nn;
pub mod radial;

#[cfg(target_arch = "nvptx64")]
pub(crate) mod edges;
#[cfg(target_arch = "nvptx64")]
mod gpu;
#[cfg(target_arch = "nvptx64")]
pub(crate) mod tiles;

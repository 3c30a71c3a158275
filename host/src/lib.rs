//! Host side of mlff: devices, buffers and launches, the CPU path, the public API.

pub mod cpu;
pub mod device;
pub mod dynamics;
pub mod elements;
pub mod error;
pub mod extxyz;
pub mod gpu;
pub mod gpu_neighbors;
pub mod model;
pub mod model_file;
pub mod neighbors;
pub mod relax;
pub mod resources;
pub mod selftest;
pub mod spread;
pub mod structure;

pub use device::Device;
pub use error::{Error, Result};
/// The kernel bodies (shared by the CPU path and the PTX).
pub use mlff_kernels as kernels;
pub use model::weighted::{AtomVirials, WeightedPrediction};
pub use model::{Model, Prediction};
pub use neighbors::{neighbor_list, NeighborList};
pub use structure::{Batch, Structure};

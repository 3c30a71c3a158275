//! Entry points every architecture launches, and their typed handles.

use super::args::{EdgeGradientArgs, EmbedArgs, ForcesArgs, StructureSumsArgs};
#[cfg(target_arch = "nvptx64")]
use super::gpu;

crate::kernels! {
    /// The block-0 state from the embedding: s = embedding[Z], v = 0.
    EMBED = mlff_embed(EmbedArgs) => gpu::embed;
    /// ∂E/∂r of every edge from the accumulated edge adjoints, and each atom's virial.
    EDGE_GRADIENTS = mlff_edge_gradients(EdgeGradientArgs) => gpu::edge_gradients;
    /// F_i from the edge gradients of row i and of the reverse edges.
    FORCES = mlff_forces(ForcesArgs) => gpu::forces;
    /// Energy and virial of each structure, in f64 (one block a structure).
    STRUCTURE_SUMS = mlff_structure_sums(StructureSumsArgs) => gpu::structure_sums;
}

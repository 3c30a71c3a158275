//! mlff: a fast inference engine for distilled machine-learned force fields.
//!
//! The engine lives in the `mlff-host` crate (`host/`) and its kernels in
//! `mlff-kernels` (`kernels-gpu/`); this package is the one name users depend on,
//! and it carries the bundled defaults of `data/`.
pub use mlff_host::*;

/// The bundled default model's file (`data/gfn2-student.safetensors`): a student
/// (architecture 1, H=64, T=2) distilled from GFN2-xTB on small organic molecules
/// of H C N O F S Cl by `tools/distill/`; its metadata records the teacher, the data,
/// the training settings and the held-out errors.
pub const DEFAULT_MODEL_BYTES: &[u8] = include_bytes!("../data/gfn2-student.safetensors");

/// Sample molecules (`data/molecules.xyz`): water, ammonia, methane, benzene and a
/// 24-atom benzene dimer.
pub const SAMPLE_MOLECULES: &str = include_str!("../data/molecules.xyz");

/// A periodic sample (`data/water-box.xyz`): 64 water molecules at about 1 g/cm³.
pub const SAMPLE_WATER_BOX: &str = include_str!("../data/water-box.xyz");

/// The bundled default model.
pub fn default_model() -> Result<Model> {
    Model::from_bytes(DEFAULT_MODEL_BYTES)
}

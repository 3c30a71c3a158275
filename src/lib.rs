//! mlff: a fast inference engine for distilled machine-learned force fields.
//!
//! The engine lives in the `mlff-host` crate (`host/`) and its kernels in
//! `mlff-kernels` (`kernels-gpu/`); this package is the one name users depend on.
pub use mlff_host::*;

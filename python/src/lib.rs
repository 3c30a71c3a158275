//! `mlff._mlff`: the native half of the `mlff` Python package. It binds the
//! library's public API (`Model`, `Device`, `dynamics`, `relax`, `extxyz`) over flat
//! numpy arrays; the pure-Python half (`python/mlff/`) turns ASE atoms and tuples into
//! those arrays and the arrays back into results.
//!
//! Every call copies its inputs out of numpy while holding the GIL, releases the GIL
//! while the engine works, and copies the results into new numpy arrays.

mod arrays;
mod dynamics;
mod errors;
mod model;

use pyo3::prelude::*;

#[pymodule]
mod _mlff {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::dynamics::{relax, Dynamics};
    #[pymodule_export]
    use crate::model::{atomic_number, read_extxyz, Device, Model};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("KERNELS_ARCH", mlff::gpu::KERNELS_ARCH)?;
        // eV/K, the constant the integrators use (ASE's differs in the 7th digit).
        m.add("BOLTZMANN", mlff::kernels::md::BOLTZMANN)?;
        Ok(())
    }
}

//! `Model` and `Device`: loading, evaluating batches, and timing the Rust API alone
//! (so that a benchmark measures the Python layer's overhead in the same session).

use crate::arrays::{atoms_structures, points_f64, BatchArrays, BatchResultArrays, BatchResults};
use crate::errors::guarded;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::time::Instant;

/// Where the engine computes: `Device("auto" | "cpu" | "gpu" | "gpu:N")`. Making
/// one is expensive (a thread pool, or a CUDA context and the kernels); keep it.
#[pyclass(frozen, module = "mlff._mlff")]
pub struct Device {
    pub(crate) inner: mlff::Device,
}

#[pymethods]
impl Device {
    /// `auto` honours `MLFF_DEVICE` and else takes GPU 0 if usable, else the CPU.
    #[new]
    fn new(py: Python<'_>, spec: &str) -> PyResult<Self> {
        let spec = spec.to_string();
        let inner = py.detach(move || {
            guarded(|| {
                if spec.trim().eq_ignore_ascii_case("auto") {
                    mlff::Device::auto()
                } else {
                    mlff::Device::parse(&spec)
                }
            })
        })?;
        Ok(Device { inner })
    }

    #[getter]
    fn is_gpu(&self) -> bool {
        self.inner.is_gpu()
    }

    /// E.g. `GPU 0 (NVIDIA H200)` or `CPU (16 threads)`.
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn __repr__(&self) -> String {
        format!("<mlff device: {}>", self.inner.describe())
    }
}

/// The engine's `Model`, shareable between threads.
pub(crate) struct SharedModel(pub(crate) mlff::Model);

// SAFETY: the one part of the engine's `Model` that is not `Send` is the CUDA graph
// (cudarc's `CudaGraph`, raw CUgraph/CUgraphExec handles) in the GPU workspace the
// model keeps. That workspace sits behind the model's own `Mutex`, which every GPU
// evaluation holds while it uses it, so one thread at a time reaches the graph, as
// CUDA requires; CUDA handles are not tied to the thread that made them, and cudarc
// binds the context to the calling thread before each use. The rest (weights,
// metadata) is plain data.
unsafe impl Send for SharedModel {}
// SAFETY: as above: every `&self` path to the graph goes through that `Mutex`.
unsafe impl Sync for SharedModel {}

impl std::ops::Deref for SharedModel {
    type Target = mlff::Model;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A loaded model (either architecture of MODEL.md). Evaluations on one GPU keep
/// the model's weights and the buffers of the last batch shape there.
#[pyclass(frozen, module = "mlff._mlff")]
pub struct Model {
    pub(crate) inner: SharedModel,
}

#[pymethods]
impl Model {
    /// The bundled default model (GFN2-xTB student).
    #[staticmethod]
    fn default() -> PyResult<Self> {
        Ok(Model { inner: guarded(|| mlff::default_model().map(SharedModel))? })
    }

    /// A safetensors file in our layout (`tools/export_student.py` writes it).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        Ok(Model { inner: py.detach(move || guarded(|| mlff::Model::load(&path).map(SharedModel)))? })
    }

    /// The same from the file's bytes.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(Model { inner: guarded(|| mlff::Model::from_bytes(data).map(SharedModel))? })
    }

    /// Architecture, sizes, cutoff (Å), parameter count and the file's metadata.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.inner;
        let info = PyDict::new(py);
        info.set_item("architecture", m.architecture())?;
        info.set_item("hidden_dim", m.hidden_dim())?;
        info.set_item("num_interactions", m.num_interactions())?;
        info.set_item("cutoff", m.cutoff() as f64)?;
        info.set_item("parameters", m.parameter_count())?;
        let metadata = PyDict::new(py);
        for (k, v) in m.metadata() {
            metadata.set_item(k, v)?;
        }
        info.set_item("metadata", metadata)?;
        Ok(info)
    }

    #[getter]
    fn cutoff(&self) -> f64 {
        self.inner.cutoff() as f64
    }

    /// Energy, forces, per-atom energies and stress of every structure of `batch`
    /// (see `arrays.rs`), in one engine call with the GIL released.
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        device: &Device,
        batch: BatchArrays<'py>,
    ) -> PyResult<BatchResultArrays<'py>> {
        let structures = batch.structures(self.inner.cutoff() as f64)?;
        drop(batch);
        let (model, device) = (&self.inner, &device.inner);
        let results = py.detach(|| guarded(|| model.evaluate(device, &structures).map(|p| BatchResults::new(&p))))?;
        results.into_py(py)
    }

    /// `evaluate` of a list of `ase.Atoms`, read directly (see `atoms_structures`),
    /// with the atom offsets `[0, n0, n0 + n1, …]`; `None` if an item is not laid out
    /// as an `ase.Atoms`.
    #[allow(clippy::type_complexity)]
    fn evaluate_atoms<'py>(
        &self,
        py: Python<'py>,
        device: &Device,
        atoms: &Bound<'py, PyList>,
    ) -> PyResult<Option<(BatchResultArrays<'py>, Vec<usize>)>> {
        let Some(structures) = atoms_structures(atoms, self.inner.cutoff() as f64)? else { return Ok(None) };
        let mut offsets = Vec::with_capacity(structures.len() + 1);
        offsets.push(0);
        for s in &structures {
            offsets.push(offsets[offsets.len() - 1] + s.len());
        }
        let (model, device) = (&self.inner, &device.inner);
        let results = py.detach(|| guarded(|| model.evaluate(device, &structures).map(|p| BatchResults::new(&p))))?;
        Ok(Some((results.into_py(py)?, offsets)))
    }

    /// Seconds of each of `repeats` calls of the Rust API (`Model::evaluate` with the
    /// structures already built), timed in Rust with the GIL released.
    fn time_evaluate(
        &self,
        py: Python<'_>,
        device: &Device,
        batch: BatchArrays<'_>,
        repeats: usize,
    ) -> PyResult<Vec<f64>> {
        let structures = batch.structures(self.inner.cutoff() as f64)?;
        drop(batch);
        let (model, device) = (&self.inner, &device.inner);
        py.detach(|| {
            guarded(|| {
                (0..repeats)
                    .map(|_| {
                        let start = Instant::now();
                        let out = model.evaluate(device, &structures)?;
                        let seconds = start.elapsed().as_secs_f64();
                        drop(out);
                        Ok(seconds)
                    })
                    .collect::<mlff::Result<Vec<f64>>>()
            })
        })
    }

    fn __repr__(&self) -> String {
        let m = &self.inner;
        format!(
            "<mlff model: {}, {} features, {} interactions, cutoff {} Å, {} parameters>",
            m.architecture(),
            m.hidden_dim(),
            m.num_interactions(),
            m.cutoff(),
            m.parameter_count()
        )
    }
}

/// The atomic number of an element symbol (`"Cl"` → 17).
#[pyfunction]
pub fn atomic_number(symbol: &str) -> PyResult<u32> {
    mlff::elements::atomic_number(symbol.trim())
        .ok_or_else(|| pyo3::exceptions::PyValueError::new_err(format!("unknown element symbol {symbol:?}")))
}

/// Every frame of an extended-XYZ file, read by the engine's reader: a list of dicts
/// with `numbers`, `positions`, `cell` (None without `Lattice`), `pbc`, `info`
/// (the comment line's other keys, as strings), and `energy` / `forces` if present.
#[pyfunction]
pub fn read_extxyz<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyList>> {
    let frames = py.detach(move || guarded(|| mlff::extxyz::read(&path)))?;
    let out = PyList::empty(py);
    for f in frames {
        let d = PyDict::new(py);
        let s = &f.structure;
        d.set_item("numbers", PyArray1::from_iter(py, s.numbers.iter().map(|&z| z as i64)))?;
        d.set_item("positions", points_f64(py, &s.positions)?)?;
        match &s.cell {
            Some(c) => d.set_item("cell", PyArray1::from_iter(py, c.iter().flatten().copied()).reshape([3, 3])?)?,
            None => d.set_item("cell", py.None())?,
        }
        d.set_item("pbc", s.pbc.to_vec())?;
        let info = PyDict::new(py);
        for (k, v) in &f.info {
            info.set_item(k, v)?;
        }
        d.set_item("info", info)?;
        d.set_item("energy", f.energy)?;
        match &f.forces {
            Some(forces) => d.set_item("forces", points_f64(py, forces)?)?,
            None => d.set_item("forces", py.None())?,
        }
        out.append(d)?;
    }
    Ok(out)
}

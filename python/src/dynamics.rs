//! Molecular dynamics and FIRE relaxation: many steps of the engine per Python call,
//! with the GIL released while the engine steps and one Python crossing per report.

use crate::arrays::{points_f32, points_f64, BatchArrays};
use crate::errors::{catch_panic, guarded, internal_error, value_error, IntoPyResult};
use crate::model::{Device, Model};
use mlff::dynamics::{MdSettings, Report, Thermostat};
use mlff::relax::{FireSettings, RelaxStep};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// The message of the error that carries "the Python side stopped" out of the
/// engine's loop; it never reaches the user.
const STOPPED: &str = "stopped from Python";

/// What a Python callback did with a report.
enum Answer {
    Continue,
    /// It returned `False`.
    Stop,
    /// It raised (or Ctrl-C arrived): the run ends with this exception.
    Raised(PyErr),
}

/// Calls `callback(frame)` (if any) after checking for Ctrl-C.
fn ask(
    py: Python<'_>,
    callback: Option<&Py<PyAny>>,
    frame: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyTuple>>,
) -> Answer {
    let outcome = (|| -> PyResult<bool> {
        py.check_signals()?;
        let Some(callback) = callback else { return Ok(true) };
        let answer = callback.call1(py, (frame(py)?,))?;
        // Only an explicit `False` stops; `None` (no return statement) goes on.
        Ok(!answer.bind(py).is(pyo3::types::PyBool::new(py, false)))
    })();
    match outcome {
        Ok(true) => Answer::Continue,
        Ok(false) => Answer::Stop,
        Err(e) => Answer::Raised(e),
    }
}

/// Turns the answer into what the engine's loop expects, keeping a raised exception.
fn answer_to_engine(answer: Answer, raised: &mut Option<PyErr>, stopped: &mut bool) -> mlff::Result<()> {
    match answer {
        Answer::Continue => Ok(()),
        Answer::Stop => {
            *stopped = true;
            Err(mlff::Error::InvalidInput(STOPPED.into()))
        }
        Answer::Raised(e) => {
            *raised = Some(e);
            Err(mlff::Error::InvalidInput(STOPPED.into()))
        }
    }
}

/// The engine's `Dynamics`, movable between threads.
struct Engine(mlff::dynamics::Dynamics);

// SAFETY: the one part of the engine's `Dynamics` that is not `Send` is cudarc's
// `CudaGraph` (raw CUgraph/CUgraphExec handles). CUDA driver handles are not tied to
// the thread that made them, and cudarc binds the graph's context to the calling
// thread before each use. What CUDA does require, that calls on one graph are
// serialised, the `Mutex` that is the only way to reach an `Engine` guarantees.
unsafe impl Send for Engine {}

impl std::ops::Deref for Engine {
    type Target = mlff::dynamics::Dynamics;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Engine {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A batch of structures being integrated (velocity Verlet or Langevin BAOAB), its
/// state on the GPU when the device is one.
#[pyclass(frozen, module = "mlff._mlff")]
pub struct Dynamics {
    inner: Mutex<Engine>,
    /// Set when the engine panicked in a call (a bug): its state cannot be trusted.
    broken: AtomicBool,
}

impl Dynamics {
    fn lock(&self) -> PyResult<MutexGuard<'_, Engine>> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(PyRuntimeError::new_err("this Dynamics failed in an earlier call and cannot be used"));
        }
        match self.inner.try_lock() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(
                "this Dynamics is busy (running in another thread, or called from its own callback)",
            )),
            // As `broken`: a panic may have left the state half-written.
            Err(TryLockError::Poisoned(_)) => {
                Err(PyRuntimeError::new_err("this Dynamics failed in an earlier call and cannot be used"))
            }
        }
    }

    /// `guarded` for calls on the engine's state: after a panic the object is unusable.
    fn guarded<T>(&self, work: impl FnOnce() -> mlff::Result<T>) -> PyResult<T> {
        match catch_panic(work) {
            Ok(result) => result.py(),
            Err(message) => {
                self.broken.store(true, Ordering::Relaxed);
                Err(internal_error(&message))
            }
        }
    }
}

/// One report as a tuple: (step, time fs, positions (N, 3) Å, velocities (N, 3) Å/fs,
/// forces (N, 3) eV/Å, potential (S,) eV, kinetic (S,) eV). Positions are absolute:
/// each structure's origin added back in f64 (the engine integrates relative to it).
fn frame<'py>(py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyTuple>> {
    let positions: Vec<[f64; 3]> = (0..r.num_structures()).flat_map(|s| r.absolute_positions(s)).collect();
    PyTuple::new(
        py,
        [
            r.step.into_pyobject(py)?.into_any(),
            r.time.into_pyobject(py)?.into_any(),
            points_f64(py, &positions)?.into_any(),
            points_f32(py, r.velocities)?.into_any(),
            points_f32(py, r.forces)?.into_any(),
            PyArray1::from_slice(py, r.potential).into_any(),
            PyArray1::from_slice(py, r.kinetic).into_any(),
        ],
    )
}

#[pymethods]
impl Dynamics {
    /// `thermostat` is `"nve"` or `"langevin"` (then `temperature` K and `friction`
    /// 1/fs hold the bath); `timestep` in fs; `seed` seeds the thermostat's noise.
    /// Computes the first forces; the atoms start at rest.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Model,
        device: &Device,
        batch: BatchArrays<'_>,
        timestep: f64,
        thermostat: &str,
        temperature: f64,
        friction: f64,
        seed: u64,
    ) -> PyResult<Self> {
        let structures = batch.structures(model.inner.cutoff() as f64)?;
        drop(batch);
        let thermostat = match thermostat {
            "nve" => Thermostat::None,
            "langevin" => Thermostat::Langevin { temperature, friction },
            other => return value_error!("thermostat {other:?}: expected \"nve\" or \"langevin\""),
        };
        let settings = MdSettings { timestep, thermostat, seed };
        let (model, device) = (&model.inner, &device.inner);
        let md =
            py.detach(|| guarded(|| mlff::dynamics::Dynamics::new(model, device, &structures, settings).map(Engine)))?;
        Ok(Dynamics { inner: Mutex::new(md), broken: AtomicBool::new(false) })
    }

    /// `offsets[s]:offsets[s + 1]` are structure s's atoms in every per-atom array.
    #[getter]
    fn offsets(&self) -> PyResult<Vec<usize>> {
        Ok(self.lock()?.batch().offsets.clone())
    }

    #[getter]
    fn numbers(&self) -> PyResult<Vec<u32>> {
        Ok(self.lock()?.batch().numbers.clone())
    }

    /// Sets every atom's velocity (Å/fs) from an (N, 3) array.
    fn set_velocities(&self, py: Python<'_>, velocities: PyReadonlyArray2<'_, f64>) -> PyResult<()> {
        let v = crate::arrays::points_from(&velocities, "velocities")?;
        drop(velocities);
        let mut md = self.lock()?;
        let md = &mut *md;
        py.detach(|| self.guarded(|| md.set_velocities(&v)))
    }

    /// Maxwell–Boltzmann velocities at `temperature` K, without centre-of-mass motion.
    fn maxwell_boltzmann(&self, py: Python<'_>, temperature: f64, seed: u64) -> PyResult<()> {
        let mut md = self.lock()?;
        let md = &mut *md;
        py.detach(|| self.guarded(|| md.maxwell_boltzmann(temperature, seed)))
    }

    /// The current state as a frame tuple (see `frame`).
    fn current<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let mut md = self.lock()?;
        self.guarded(|| md.current(|r| frame(py, r)))?
    }

    /// Integrates `steps` steps and calls `callback(frame)` every `every` steps and
    /// after the last; the GIL is free between reports. A callback that returns
    /// `False` stops the run; one that raises stops it with its exception. Returns
    /// (steps integrated up to the last report shown, seconds).
    #[pyo3(signature = (steps, every, callback=None))]
    fn run(&self, py: Python<'_>, steps: u64, every: u64, callback: Option<Py<PyAny>>) -> PyResult<(u64, f64)> {
        let mut guard = self.lock()?;
        let md = &mut *guard;
        let (mut raised, mut stopped, mut shown) = (None, false, 0u64);
        let start = std::time::Instant::now();
        let outcome = py.detach(|| {
            self.guarded(|| {
                md.run(steps, every, |r| {
                    shown += 1;
                    let answer = Python::attach(|py| ask(py, callback.as_ref(), |py| frame(py, r)));
                    answer_to_engine(answer, &mut raised, &mut stopped)
                })
            })
        });
        let seconds = start.elapsed().as_secs_f64();
        if let Some(e) = raised {
            return Err(e);
        }
        if stopped {
            return Ok(((shown * every).min(steps), seconds));
        }
        outcome.map(|summary| (summary.steps, summary.seconds))
    }
}

/// Results of `relax`, concatenated over structures: positions (N, 3), cells
/// (S, 3, 3; NaN without a cell), energy (S,), forces (N, 3), per-atom energies (N,),
/// stress (S, 3, 3; NaN where not periodic), steps (S,), converged (S,), fmax (S,).
type RelaxArrays<'py> = Bound<'py, PyTuple>;

fn cells_array<'py>(py: Python<'py>, structures: &[&mlff::Structure]) -> PyResult<Bound<'py, PyAny>> {
    let flat: Vec<f64> = structures
        .iter()
        .flat_map(|s| s.cell.map_or([f64::NAN; 9], |c| std::array::from_fn(|k| c[k / 3][k % 3])))
        .collect();
    Ok(PyArray1::from_vec(py, flat).reshape([structures.len(), 3, 3])?.into_any())
}

/// (step, active (K,), counts (K,), positions (M, 3), cells (K, 3, 3), energy (K,),
/// forces (M, 3)) of the structures still relaxing.
fn relax_frame<'py>(py: Python<'py>, s: &RelaxStep) -> PyResult<Bound<'py, PyTuple>> {
    let positions: Vec<[f64; 3]> = s.structures.iter().flat_map(|x| x.positions.iter().copied()).collect();
    let forces: Vec<[f64; 3]> = s.predictions.iter().flat_map(|p| p.forces.iter().copied()).collect();
    let structures: Vec<&mlff::Structure> = s.structures.iter().collect();
    PyTuple::new(
        py,
        [
            s.step.into_pyobject(py)?.into_any(),
            PyArray1::from_iter(py, s.active.iter().map(|&k| k as i64)).into_any(),
            PyArray1::from_iter(py, s.structures.iter().map(|x| x.len() as i64)).into_any(),
            points_f64(py, &positions)?.into_any(),
            cells_array(py, &structures)?,
            PyArray1::from_iter(py, s.predictions.iter().map(|p| p.energy)).into_any(),
            points_f64(py, &forces)?.into_any(),
        ],
    )
}

/// FIRE relaxation of every structure of `batch` (the cell too for periodic ones
/// with `relax_cell`), one batched model call per iteration. `callback(frame)` sees
/// the structures still relaxing every `every` iterations (see `relax_frame`); it
/// may stop the relaxation by raising.
#[pyfunction]
#[pyo3(signature = (model, device, batch, fmax, max_steps, relax_cell, max_move, callback=None, every=1))]
#[allow(clippy::too_many_arguments)]
pub fn relax<'py>(
    py: Python<'py>,
    model: &Model,
    device: &Device,
    batch: BatchArrays<'py>,
    fmax: f64,
    max_steps: usize,
    relax_cell: bool,
    max_move: f64,
    callback: Option<Py<PyAny>>,
    every: usize,
) -> PyResult<RelaxArrays<'py>> {
    if every == 0 {
        return value_error!("every must be at least 1");
    }
    let structures = batch.structures(model.inner.cutoff() as f64)?;
    drop(batch);
    let settings = FireSettings { fmax, max_steps, relax_cell, max_move };
    let (model, device) = (&model.inner, &device.inner);
    let (mut raised, mut stopped) = (None, false);
    let outcome = py.detach(|| {
        guarded(|| {
            mlff::relax::relax_observed(model, device, &structures, settings, |s| {
                if s.step % every != 0 {
                    return Ok(());
                }
                let answer = Python::attach(|py| ask(py, callback.as_ref(), |py| relax_frame(py, s)));
                answer_to_engine(answer, &mut raised, &mut stopped)
            })
        })
    });
    if let Some(e) = raised {
        return Err(e);
    }
    if stopped {
        return Err(PyRuntimeError::new_err("the relaxation was stopped by its callback"));
    }
    let relaxed = outcome?;
    let positions: Vec<[f64; 3]> = relaxed.iter().flat_map(|r| r.structure.positions.iter().copied()).collect();
    let forces: Vec<[f64; 3]> = relaxed.iter().flat_map(|r| r.prediction.forces.iter().copied()).collect();
    let stress: Vec<f64> = relaxed
        .iter()
        .flat_map(|r| r.prediction.stress.map_or([f64::NAN; 9], |s| std::array::from_fn(|k| s[k / 3][k % 3])))
        .collect();
    let finals: Vec<&mlff::Structure> = relaxed.iter().map(|r| &r.structure).collect();
    PyTuple::new(
        py,
        [
            points_f64(py, &positions)?.into_any(),
            cells_array(py, &finals)?,
            PyArray1::from_iter(py, relaxed.iter().map(|r| r.prediction.energy)).into_any(),
            points_f64(py, &forces)?.into_any(),
            PyArray1::from_iter(py, relaxed.iter().flat_map(|r| r.prediction.atom_energies.iter().copied())).into_any(),
            PyArray1::from_vec(py, stress).reshape([relaxed.len(), 3, 3])?.into_any(),
            PyArray1::from_iter(py, relaxed.iter().map(|r| r.steps as i64)).into_any(),
            PyArray1::from_iter(py, relaxed.iter().map(|r| r.converged)).into_any(),
            PyArray1::from_iter(py, relaxed.iter().map(|r| r.fmax)).into_any(),
        ],
    )
}

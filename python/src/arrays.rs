//! Flat numpy arrays to the engine's structures, and the engine's results back to
//! flat numpy arrays.
//!
//! A batch crosses as five arrays: `numbers` (N,) int64, `positions` (N, 3) float64,
//! `counts` (S,) int64 atoms per structure, `cells` (S, 3, 3) float64 with lattice
//! vectors as rows, `pbc` (S, 3) bool. Results come back concatenated the same way;
//! the Python side slices them per structure (views, no copies).

use crate::errors::{value_error, IntoPyResult};
use mlff::{Prediction, Structure};
use numpy::{
    PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3,
    PyUntypedArrayMethods,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The five input arrays of a batch, borrowed from numpy: one Python tuple
/// `(numbers, positions, counts, cells, pbc)`.
#[derive(FromPyObject)]
pub struct BatchArrays<'py>(
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray2<'py, f64>,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray3<'py, f64>,
    PyReadonlyArray2<'py, bool>,
);

impl BatchArrays<'_> {
    /// The structures, checked for consistent shapes, atomic numbers that fit the
    /// engine's `u32`, and periodic cells not so small for `cutoff` that their
    /// neighbour lists could not be held (see `check_density`); everything else
    /// (finite positions, a non-singular cell, known elements) the engine checks with
    /// its own messages.
    pub fn structures(&self, cutoff: f64) -> PyResult<Vec<Structure>> {
        let BatchArrays(numbers, positions, counts, cells, pbc) = self;
        let (numbers, positions, counts) = (numbers.as_array(), positions.as_array(), counts.as_array());
        let (cells, pbc) = (cells.as_array(), pbc.as_array());
        if positions.shape()[1] != 3 {
            return value_error!("positions must have shape (N, 3), not {:?}", positions.shape());
        }
        if numbers.len() != positions.shape()[0] {
            return value_error!("{} atomic numbers but {} positions", numbers.len(), positions.shape()[0]);
        }
        let structures = counts.len();
        if cells.shape() != [structures, 3, 3] {
            return value_error!("cells must have shape ({structures}, 3, 3), not {:?}", cells.shape());
        }
        if pbc.shape() != [structures, 3] {
            return value_error!("pbc must have shape ({structures}, 3), not {:?}", pbc.shape());
        }
        let mut total = 0usize;
        for (s, &n) in counts.iter().enumerate() {
            match usize::try_from(n) {
                Ok(n) => total = total.saturating_add(n),
                Err(_) => return value_error!("structure {s} has a negative atom count {n}"),
            }
        }
        if total != numbers.len() {
            return value_error!("the atom counts add up to {total}, but there are {} atoms", numbers.len());
        }
        let mut out = Vec::with_capacity(structures);
        let mut start = 0usize;
        for (s, &n) in counts.iter().enumerate() {
            let atoms = start..start + n as usize;
            start = atoms.end;
            let mut z = Vec::with_capacity(atoms.len());
            for i in atoms.clone() {
                match u32::try_from(numbers[i]) {
                    Ok(number) => z.push(number),
                    Err(_) => {
                        return value_error!(
                            "structure {s}: atom {} has atomic number {}, which is no element",
                            i - atoms.start,
                            numbers[i]
                        )
                    }
                }
            }
            let r = atoms.map(|i| [positions[[i, 0]], positions[[i, 1]], positions[[i, 2]]]).collect();
            let periodic = [pbc[[s, 0]], pbc[[s, 1]], pbc[[s, 2]]];
            // Without a periodic axis the cell changes no result, so an absent (zero)
            // cell, as ASE keeps for molecules, is not an error.
            out.push(if periodic.iter().any(|&p| p) {
                let cell = std::array::from_fn(|a| std::array::from_fn(|b| cells[[s, a, b]]));
                let structure = Structure::periodic(z, r, cell, periodic);
                // The engine's own checks first: a singular cell is reported as such.
                structure.validate(s).py()?;
                check_density(&structure, s, cutoff)?;
                structure
            } else {
                Structure::molecule(z, r)
            });
        }
        Ok(out)
    }
}

/// Rejects a periodic structure whose neighbour list, at its mean density, would
/// exceed the engine's 32-bit edge indices. The engine finds that out only after
/// building the list, and for a cell given in the wrong unit (nm, a scale slip) that
/// list has ~1e12 edges: it would exhaust the memory first.
fn check_density(s: &Structure, index: usize, cutoff: f64) -> PyResult<()> {
    let Some(volume) = s.volume() else { return Ok(()) };
    let n = s.len() as f64;
    let edges = n * n / volume * 4.0 / 3.0 * std::f64::consts::PI * cutoff.powi(3);
    // A NaN (a non-finite cell, which the engine reports) passes here.
    if n > 0.0 && edges > u32::MAX as f64 {
        return value_error!(
            "structure {index}: {} atoms in a periodic cell of {volume:.3e} Å³ would have about {edges:.1e} \
             neighbour pairs within the model's cutoff ({cutoff} Å), more than the engine's 32-bit edge \
             indices hold; is the cell in Å?",
            s.len()
        );
    }
    Ok(())
}

/// The structures of a list of `ase.Atoms`, read in one pass (numbers and positions
/// from `atoms.arrays`, `atoms.cell.array`, `atoms.pbc`), without the concatenated
/// arrays the general path builds: a batch of 1,000 small molecules costs about a
/// microsecond per molecule here instead of several in Python. `None` when an item
/// is not laid out as an `ase.Atoms` (the general path then says what is wrong).
pub fn atoms_structures(list: &Bound<'_, PyList>, cutoff: f64) -> PyResult<Option<Vec<Structure>>> {
    let mut out = Vec::with_capacity(list.len());
    for (s, item) in list.iter().enumerate() {
        let Some(parts) = atoms_parts(&item)? else { return Ok(None) };
        let (numbers, positions, cell, pbc) = parts;
        let (numbers, positions, cell, pbc) =
            (numbers.as_array(), positions.as_array(), cell.as_array(), pbc.as_array());
        if positions.shape()[1] != 3
            || numbers.len() != positions.shape()[0]
            || cell.shape() != [3, 3]
            || pbc.len() != 3
        {
            return Ok(None);
        }
        let mut z = Vec::with_capacity(numbers.len());
        for (i, &n) in numbers.iter().enumerate() {
            match u32::try_from(n) {
                Ok(n) => z.push(n),
                Err(_) => return value_error!("structure {s}: atom {i} has atomic number {n}, which is no element"),
            }
        }
        let r = positions.rows().into_iter().map(|p| [p[0], p[1], p[2]]).collect();
        let periodic = [pbc[0], pbc[1], pbc[2]];
        out.push(if periodic.iter().any(|&p| p) {
            let structure =
                Structure::periodic(z, r, std::array::from_fn(|a| std::array::from_fn(|b| cell[[a, b]])), periodic);
            structure.validate(s).py()?;
            check_density(&structure, s, cutoff)?;
            structure
        } else {
            Structure::molecule(z, r)
        });
    }
    Ok(Some(out))
}

type AtomsParts<'py> =
    (PyReadonlyArray1<'py, i64>, PyReadonlyArray2<'py, f64>, PyReadonlyArray2<'py, f64>, PyReadonlyArray1<'py, bool>);

/// An `ase.Atoms`' numbers, positions, cell and pbc arrays, or `None`.
fn atoms_parts<'py>(item: &Bound<'py, PyAny>) -> PyResult<Option<AtomsParts<'py>>> {
    let py = item.py();
    let Ok(arrays) = item.getattr(intern!(py, "arrays")) else { return Ok(None) };
    let Ok(arrays) = arrays.cast_into::<PyDict>() else { return Ok(None) };
    let (Some(numbers), Some(positions)) =
        (arrays.get_item(intern!(py, "numbers"))?, arrays.get_item(intern!(py, "positions"))?)
    else {
        return Ok(None);
    };
    let Ok(cell) = item.getattr(intern!(py, "cell")).and_then(|c| c.getattr(intern!(py, "array"))) else {
        return Ok(None);
    };
    let Ok(pbc) = item.getattr(intern!(py, "pbc")) else { return Ok(None) };
    let (Ok(numbers), Ok(positions), Ok(cell), Ok(pbc)) = (
        numbers.cast_into::<PyArray1<i64>>(),
        positions.cast_into::<PyArray2<f64>>(),
        cell.cast_into::<PyArray2<f64>>(),
        pbc.cast_into::<PyArray1<bool>>(),
    ) else {
        return Ok(None);
    };
    Ok(Some((numbers.readonly(), positions.readonly(), cell.readonly(), pbc.readonly())))
}

/// Results of a batch, concatenated: energy (S,), forces (N, 3), per-atom energies
/// (N,), stress (S, 3, 3) with NaN where a structure has none (not periodic).
pub struct BatchResults {
    energy: Vec<f64>,
    forces: Vec<f64>,
    energies: Vec<f64>,
    stress: Vec<f64>,
}

pub type BatchResultArrays<'py> =
    (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray3<f64>>);

impl BatchResults {
    pub fn new(predictions: &[Prediction]) -> Self {
        let atoms: usize = predictions.iter().map(|p| p.forces.len()).sum();
        let mut out = BatchResults {
            energy: Vec::with_capacity(predictions.len()),
            forces: Vec::with_capacity(3 * atoms),
            energies: Vec::with_capacity(atoms),
            stress: Vec::with_capacity(9 * predictions.len()),
        };
        for p in predictions {
            out.energy.push(p.energy);
            out.forces.extend(p.forces.iter().flatten());
            out.energies.extend(&p.atom_energies);
            match &p.stress {
                Some(s) => out.stress.extend(s.iter().flatten()),
                None => out.stress.extend([f64::NAN; 9]),
            }
        }
        out
    }

    pub fn into_py(self, py: Python<'_>) -> PyResult<BatchResultArrays<'_>> {
        let structures = self.energy.len();
        let atoms = self.energies.len();
        Ok((
            PyArray1::from_vec(py, self.energy),
            PyArray1::from_vec(py, self.forces).reshape([atoms, 3])?,
            PyArray1::from_vec(py, self.energies),
            PyArray1::from_vec(py, self.stress).reshape([structures, 3, 3])?,
        ))
    }
}

/// An (N, 3) float64 array from f32 points (the MD state).
pub fn points_f32<'py>(py: Python<'py>, points: &[[f32; 3]]) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let flat: Vec<f64> = points.iter().flatten().map(|&x| x as f64).collect();
    PyArray1::from_vec(py, flat).reshape([points.len(), 3])
}

/// An (N, 3) float64 array from f64 points.
pub fn points_f64<'py>(py: Python<'py>, points: &[[f64; 3]]) -> PyResult<Bound<'py, PyArray2<f64>>> {
    PyArray1::from_vec(py, points.iter().flatten().copied().collect()).reshape([points.len(), 3])
}

/// A (K, 3) float64 array into K points, checking the shape.
pub fn points_from(array: &PyReadonlyArray2<'_, f64>, what: &str) -> PyResult<Vec<[f64; 3]>> {
    let a = array.as_array();
    if a.shape()[1] != 3 {
        return value_error!("{what} must have shape (N, 3), not {:?}", array.shape());
    }
    Ok(a.rows().into_iter().map(|r| [r[0], r[1], r[2]]).collect())
}

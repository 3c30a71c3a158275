//! Input structures and their validation, and batches of them as one atom array.

use crate::error::{invalid_input, Result};

/// One structure: atoms, and optionally a cell with per-axis periodicity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Structure {
    /// Atomic numbers.
    pub numbers: Vec<u32>,
    /// Cartesian positions in Å.
    pub positions: Vec<[f64; 3]>,
    /// Lattice vectors as rows (Å), if any.
    pub cell: Option<[[f64; 3]; 3]>,
    /// Periodicity along each lattice vector (needs `cell` where any is true).
    pub pbc: [bool; 3],
}

impl Structure {
    /// A molecule: no cell, no periodicity.
    pub fn molecule(numbers: Vec<u32>, positions: Vec<[f64; 3]>) -> Self {
        Structure { numbers, positions, cell: None, pbc: [false; 3] }
    }

    /// A structure in `cell` with periodicity `pbc`.
    pub fn periodic(numbers: Vec<u32>, positions: Vec<[f64; 3]>, cell: [[f64; 3]; 3], pbc: [bool; 3]) -> Self {
        Structure { numbers, positions, cell: Some(cell), pbc }
    }

    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    /// Whether the structure is periodic along at least one axis.
    pub fn is_periodic(&self) -> bool {
        self.pbc.iter().any(|&p| p)
    }

    /// Volume of the cell (Å³), if there is a cell.
    pub fn volume(&self) -> Option<f64> {
        self.cell.map(|c| determinant(&c).abs())
    }

    /// Checks everything that does not depend on the model: consistent lengths, finite
    /// numbers, a non-degenerate cell where one is needed.
    pub fn validate(&self, index: usize) -> Result<()> {
        if self.numbers.len() != self.positions.len() {
            return invalid_input!(
                "structure {index}: {} atomic numbers but {} positions",
                self.numbers.len(),
                self.positions.len()
            );
        }
        if let Some((atom, p)) = self.positions.iter().enumerate().find(|(_, p)| p.iter().any(|x| !x.is_finite())) {
            return invalid_input!("structure {index}: atom {atom} has a non-finite position {p:?}");
        }
        match &self.cell {
            None if self.is_periodic() => {
                return invalid_input!("structure {index}: periodic boundaries {:?} need a cell", self.pbc)
            }
            None => {}
            Some(cell) => {
                if cell.iter().flatten().any(|x| !x.is_finite()) {
                    return invalid_input!("structure {index}: the cell {cell:?} has non-finite entries");
                }
                let volume = determinant(cell).abs();
                let scale: f64 = cell.iter().map(norm).product();
                if !(volume > 1e-9 * scale.max(1e-300)) {
                    return invalid_input!("structure {index}: the cell {cell:?} is singular (volume {volume:.3e} Å³)");
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn determinant(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

pub(crate) fn norm(v: &[f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// Inverse of a non-singular 3×3 matrix.
pub(crate) fn inverse(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = determinant(m);
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [c(1, 1, 2, 2) / det, -c(0, 1, 2, 2) / det, c(0, 1, 1, 2) / det],
        [-c(1, 0, 2, 2) / det, c(0, 0, 2, 2) / det, -c(0, 0, 1, 2) / det],
        [c(1, 0, 2, 1) / det, -c(0, 0, 2, 1) / det, c(0, 0, 1, 1) / det],
    ]
}

/// Distance between adjacent lattice planes per unit of fractional coordinate, along
/// each axis, from the inverse cell (1/|column a of the inverse|).
pub(crate) fn plane_spacing(inv: &[[f64; 3]; 3]) -> [f64; 3] {
    std::array::from_fn(|a| 1.0 / (0..3).map(|k| inv[k][a] * inv[k][a]).sum::<f64>().sqrt())
}

/// Largest distance (Å) of an atom from its structure's origin: f32, in which the
/// model computes, keeps 1e-3 Å there (its spacing at 8,192 to 16,384 Å is
/// 9.8e-4 Å). Farther atoms would lose the precision of their forces silently.
pub const MAX_COORDINATE: f64 = 1.0e4;

/// The origin of a structure and its atoms' positions relative to it, in f64.
/// Along periodic axes every atom is first wrapped into the cell (fractional
/// coordinates in [0, 1)); the origin is then the centre of the atoms' bounding box,
/// so the relative positions do not depend on where the structure sits.
pub fn relative_positions(s: &Structure, index: usize) -> Result<([f64; 3], Vec<[f64; 3]>)> {
    let wrapped: Vec<[f64; 3]> = match &s.cell {
        Some(cell) if s.is_periodic() => {
            let inv = inverse(cell);
            s.positions
                .iter()
                .map(|p| {
                    let f: [f64; 3] = std::array::from_fn(|a| {
                        let f = (0..3).map(|k| p[k] * inv[k][a]).sum::<f64>();
                        if s.pbc[a] {
                            f - f.floor()
                        } else {
                            f
                        }
                    });
                    std::array::from_fn(|x| (0..3).map(|a| f[a] * cell[a][x]).sum())
                })
                .collect()
        }
        _ => s.positions.clone(),
    };
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in &wrapped {
        for x in 0..3 {
            lo[x] = lo[x].min(p[x]);
            hi[x] = hi[x].max(p[x]);
        }
    }
    if wrapped.is_empty() {
        return Ok(([0.0; 3], wrapped));
    }
    // Halfway computed so that it cannot overflow for coordinates near f64::MAX.
    let origin: [f64; 3] = std::array::from_fn(|x| lo[x] / 2.0 + hi[x] / 2.0);
    let relative: Vec<[f64; 3]> = wrapped.iter().map(|p| std::array::from_fn(|x| p[x] - origin[x])).collect();
    let (atom, far) = relative
        .iter()
        .map(|p| p.iter().fold(0.0f64, |m, x| m.max(x.abs())))
        .enumerate()
        .fold((0, 0.0f64), |best, (i, d)| if d > best.1 { (i, d) } else { best });
    if far.is_nan() || far > MAX_COORDINATE {
        return invalid_input!(
            "structure {index}: atom {atom} is {far:.3e} Å from the centre of the structure{}; beyond \
             {MAX_COORDINATE:.0e} Å the model's f32 arithmetic keeps less than 1e-3 Å. Put far-apart parts \
             into separate structures (frames)",
            if s.is_periodic() { " (after wrapping into the cell)" } else { "" }
        );
    }
    Ok((origin, relative))
}

/// A batch: every structure's atoms in one array, with offsets.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `offsets[s]..offsets[s + 1]` are the atoms of structure s.
    pub offsets: Vec<usize>,
    pub numbers: Vec<u32>,
    /// Positions in f32, as the model computes, relative to the structure's
    /// `origins[s]` (and wrapped into the cell along periodic axes): see
    /// [`relative_positions`]. [`Batch::absolute_positions`] adds the origin back.
    pub positions: Vec<[f32; 3]>,
    /// Each structure's origin (Å, f64): absolute = origin + relative position.
    pub origins: Vec<[f64; 3]>,
    /// Each structure's cell in f32, row-major (zero where there is none).
    pub cells: Vec<[f32; 9]>,
    /// Each structure's cell as given, and its periodicity.
    pub cells64: Vec<Option<[[f64; 3]; 3]>>,
    pub pbc: Vec<[bool; 3]>,
    /// Structure of each atom.
    pub structure_of: Vec<u32>,
}

/// Most atoms in one batch: atom and edge indices are 32-bit on the device.
pub const MAX_BATCH_ATOMS: usize = u32::MAX as usize / 2;

impl Batch {
    /// Validates and concatenates `structures`.
    pub fn new(structures: &[Structure]) -> Result<Self> {
        let total = structures.iter().try_fold(0usize, |sum, s| sum.checked_add(s.len()));
        let total = match total {
            Some(t) if t <= MAX_BATCH_ATOMS => t,
            _ => {
                let shown = structures.iter().map(|s| s.len() as f64).sum::<f64>();
                return invalid_input!(
                    "{shown:.3e} atoms in one batch exceed the engine's limit of {MAX_BATCH_ATOMS} \
                     (32-bit atom indices); split the input"
                );
            }
        };
        let mut batch = Batch {
            offsets: Vec::with_capacity(structures.len() + 1),
            numbers: Vec::with_capacity(total),
            positions: Vec::with_capacity(total),
            origins: Vec::with_capacity(structures.len()),
            cells: Vec::with_capacity(structures.len()),
            cells64: structures.iter().map(|s| s.cell).collect(),
            pbc: structures.iter().map(|s| s.pbc).collect(),
            structure_of: Vec::with_capacity(total),
        };
        batch.offsets.push(0);
        for (index, s) in structures.iter().enumerate() {
            s.validate(index)?;
            let (origin, relative) = relative_positions(s, index)?;
            batch.numbers.extend_from_slice(&s.numbers);
            batch.positions.extend(relative.iter().map(|p| p.map(|x| x as f32)));
            batch.origins.push(origin);
            let cell = s.cell.unwrap_or([[0.0; 3]; 3]);
            batch.cells.push(std::array::from_fn(|k| cell[k / 3][k % 3] as f32));
            batch.structure_of.extend(std::iter::repeat_n(index as u32, s.len()));
            batch.offsets.push(batch.numbers.len());
        }
        Ok(batch)
    }

    pub fn num_atoms(&self) -> usize {
        self.numbers.len()
    }

    pub fn num_structures(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Structure `s`'s atoms at `positions` (relative, as in [`Batch::positions`] or
    /// an MD report) as absolute f64 positions: the origin added back in f64.
    pub fn absolute_positions(&self, s: usize, positions: &[[f32; 3]]) -> Vec<[f64; 3]> {
        absolute(self.origins[s], &positions[self.offsets[s]..self.offsets[s + 1]])
    }
}

/// `origin` + each relative position, in f64.
pub fn absolute(origin: [f64; 3], relative: &[[f32; 3]]) -> Vec<[f64; 3]> {
    relative.iter().map(|p| std::array::from_fn(|x| origin[x] + p[x] as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_bad_input() {
        let ok = Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.7, 0.0, 0.0]]);
        assert!(ok.validate(0).is_ok());
        let mismatch = Structure::molecule(vec![1], vec![[0.0; 3], [1.0; 3]]);
        assert!(mismatch.validate(0).unwrap_err().to_string().contains("1 atomic numbers but 2 positions"));
        let nan = Structure::molecule(vec![1], vec![[f64::NAN, 0.0, 0.0]]);
        assert!(nan.validate(3).unwrap_err().to_string().contains("structure 3: atom 0"));
        let no_cell = Structure { pbc: [true, false, false], ..ok.clone() };
        assert!(no_cell.validate(0).unwrap_err().to_string().contains("need a cell"));
        let flat = Structure::periodic(
            vec![1],
            vec![[0.0; 3]],
            [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
            [true; 3],
        );
        assert!(flat.validate(0).unwrap_err().to_string().contains("singular"));
    }

    #[test]
    fn inverse_inverts() {
        let m = [[3.0, 0.2, 0.1], [0.5, 4.0, -0.3], [0.0, 1.0, 5.0]];
        let inv = inverse(&m);
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| m[i][k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}

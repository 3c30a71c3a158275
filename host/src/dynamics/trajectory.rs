//! Trajectory frames of MD reports: extended XYZ as ASE reads it (positions,
//! momenta, forces, the cell and the energies of every frame), and GROMACS's XTC
//! (compressed positions and the cell, through the `molly` crate), which MDAnalysis,
//! MDTraj, VMD, GROMACS and chemfiles read, at ~4 bytes an atom instead of ~150.

use super::Report;
use crate::elements;
use crate::error::{Error, Result};
use crate::structure::inverse;
use std::fmt::Write as _;
use std::io::Write;

/// ASE's unit of time is Å·√(amu/eV) = 10.18 fs: `ase.units.fs` (CODATA 2014, ASE's
/// default) is 1 fs in it. ASE's momenta are amu · Å per that unit.
pub const ASE_FS: f64 = 0.098_226_947_884_640_63;

/// Structure `s`'s absolute positions (Å, f64), wrapped into its cell along the
/// periodic axes if `wrap`.
pub fn positions(r: &Report, s: usize, wrap: bool) -> Vec<[f64; 3]> {
    let mut p = r.absolute_positions(s);
    if let (true, Some(cell)) = (wrap, r.cell(s)) {
        let inv = inverse(&cell);
        let pbc = r.pbc[s];
        for x in &mut p {
            let f: [f64; 3] = std::array::from_fn(|a| {
                let f = (0..3).map(|k| x[k] * inv[k][a]).sum::<f64>();
                if pbc[a] {
                    f - f.floor()
                } else {
                    f
                }
            });
            *x = std::array::from_fn(|c| (0..3).map(|a| f[a] * cell[a][c]).sum());
        }
    }
    p
}

/// Appends structure `s` of report `r` as one extended-XYZ frame: species, positions
/// (`wrap`: into the cell), momenta (ASE's units, which `ase.io.read` turns into
/// `atoms.get_momenta()` and velocities), forces; `Lattice` (the current cell),
/// `pbc`, and `step`, `time_fs`, `energy` (potential, which ASE reads with the forces
/// as its calculator's results), `kinetic_energy`, `temperature_K`, `pressure_bar`
/// and `volume` (periodic), `conserved_energy`, then `extra`.
pub fn write_extxyz(out: &mut String, r: &Report, s: usize, wrap: bool, extra: &[(&str, String)]) {
    let atoms = r.offsets[s]..r.offsets[s + 1];
    let _ = writeln!(out, "{}", atoms.len());
    if let Some(cell) = r.cells[s] {
        let v: Vec<String> = cell.iter().flatten().map(|x| format!("{x}")).collect();
        let _ = write!(out, "Lattice=\"{}\" ", v.join(" "));
    }
    let _ = write!(
        out,
        "Properties=species:S:1:pos:R:3:momenta:R:3:forces:R:3 step={} time_fs={} energy={} kinetic_energy={} \
         temperature_K={}",
        r.step,
        r.time,
        r.potential[s],
        r.kinetic[s],
        r.temperature(s)
    );
    if let (Some(p), Some(v)) = (r.pressure(s), r.volume(s)) {
        let _ = write!(out, " pressure_bar={} volume={v}", p / super::BAR);
    }
    if let Some(c) = r.conserved(s) {
        let _ = write!(out, " conserved_energy={c}");
    }
    for (k, v) in extra {
        let _ = write!(out, " {k}={v}");
    }
    let flag = |p: bool| if p { "T" } else { "F" };
    let pbc = r.pbc[s];
    let _ = writeln!(out, " pbc=\"{} {} {}\"", flag(pbc[0]), flag(pbc[1]), flag(pbc[2]));
    for (i, x) in atoms.zip(positions(r, s, wrap)) {
        let _ = write!(out, "{:<2}", elements::symbol(r.numbers[i]).unwrap_or("X"));
        let m = r.masses[i] as f64;
        let momentum = r.velocities[i].map(|v| m * v as f64 / ASE_FS);
        let force = r.forces[i].map(|f| f as f64);
        for value in x.iter().chain(&momentum).chain(&force) {
            // The leading space keeps numbers apart when one is wider than 15 characters.
            let _ = write!(out, " {value:>15.8}");
        }
        out.push('\n');
    }
}

/// An XTC trajectory of one structure: a frame per report, positions in nm with
/// 1e-3 nm resolution, the cell as the box (zero for a molecule), the time in ps.
pub struct XtcWriter<W: Write> {
    inner: molly::XTCWriter<W>,
    atoms: Option<usize>,
}

impl<W: Write> XtcWriter<W> {
    pub fn new(sink: W) -> Self {
        XtcWriter { inner: molly::XTCWriter::new(sink), atoms: None }
    }

    /// Appends structure `s` of `r` (`wrap`: positions wrapped into the cell). `what`
    /// names the output in errors.
    pub fn write(&mut self, r: &Report, s: usize, wrap: bool, what: &std::path::Path) -> Result<()> {
        let n = r.num_atoms(s);
        if *self.atoms.get_or_insert(n) != n {
            return Err(Error::InvalidInput(format!("{}: an XTC file holds one structure", what.display())));
        }
        let positions: Vec<[f32; 3]> = positions(r, s, wrap).iter().map(|p| p.map(|x| (x / 10.0) as f32)).collect();
        let cell = r.cells[s].unwrap_or_default();
        let boxvec: [f32; 9] = std::array::from_fn(|k| (cell[k / 3][k % 3] / 10.0) as f32);
        let step = u32::try_from(r.step).unwrap_or(u32::MAX);
        self.inner
            .write_frame_parts(step, (r.time / 1000.0) as f32, boxvec, positions.iter(), 1000.0)
            .map_err(|source| Error::Write { path: what.to_path_buf(), source })
    }

    /// Where the frames go (an in-memory buffer can be drained between frames).
    pub fn sink_mut(&mut self) -> &mut W {
        &mut self.inner.file
    }

    pub fn into_inner(self) -> W {
        self.inner.file
    }
}

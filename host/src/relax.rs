//! Geometry optimisation with FIRE (Bitzek et al. 2006, with ASE's defaults), for a
//! batch of structures at once: one model call per iteration evaluates every
//! structure that has not converged. Periodic structures may relax their cell too,
//! through a deformation gradient D (cell = cell₀ Dᵀ, positions r = D u) whose
//! generalised force is −V σ D⁻ᵀ, scaled by the atom count as ASE's UnitCellFilter does.

use crate::device::Device;
use crate::error::{invalid_input, Result};
use crate::model::{Model, Prediction};
use crate::structure::{inverse, Structure};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FireSettings {
    /// Converged when every atom's force (and the cell's generalised force) is below this, eV/Å.
    pub fmax: f64,
    pub max_steps: usize,
    /// Relax the cell of periodic structures too (zero pressure).
    pub relax_cell: bool,
    /// Longest move of one step over all degrees of freedom, Å.
    pub max_move: f64,
}

impl Default for FireSettings {
    fn default() -> Self {
        FireSettings { fmax: 0.05, max_steps: 500, relax_cell: false, max_move: 0.2 }
    }
}

/// A relaxed (or given-up) structure.
#[derive(Clone, Debug)]
pub struct Relaxed {
    pub structure: Structure,
    pub prediction: Prediction,
    pub steps: usize,
    pub converged: bool,
    /// The largest force at the end (eV/Å), the cell's generalised force included.
    pub fmax: f64,
}

/// FIRE's state for one structure.
struct Fire {
    cell0: Option<[[f64; 3]; 3]>,
    /// Positions in the undeformed frame (u), then 9 entries of c·D when the cell relaxes.
    q: Vec<f64>,
    velocity: Vec<f64>,
    dt: f64,
    alpha: f64,
    downhill_steps: usize,
    cell_factor: f64,
    relax_cell: bool,
}

const DT_START: f64 = 0.1;
const DT_MAX: f64 = 1.0;
const N_MIN: usize = 5;
const F_INC: f64 = 1.1;
const F_DEC: f64 = 0.5;
const ALPHA_START: f64 = 0.1;
const F_ALPHA: f64 = 0.99;

fn mat_vec(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|a| m[a][0] * v[0] + m[a][1] * v[1] + m[a][2] * v[2])
}

impl Fire {
    fn new(s: &Structure, relax_cell: bool) -> Self {
        let relax_cell = relax_cell && s.is_periodic() && s.cell.is_some();
        let cell_factor = s.len().max(1) as f64;
        let mut q: Vec<f64> = s.positions.iter().flatten().copied().collect();
        if relax_cell {
            q.extend([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0].map(|x| x * cell_factor));
        }
        Fire {
            cell0: s.cell,
            velocity: vec![0.0; q.len()],
            q,
            dt: DT_START,
            alpha: ALPHA_START,
            downhill_steps: 0,
            cell_factor,
            relax_cell,
        }
    }

    fn deformation(&self) -> [[f64; 3]; 3] {
        if !self.relax_cell {
            return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        }
        let d = &self.q[self.q.len() - 9..];
        std::array::from_fn(|a| std::array::from_fn(|b| d[3 * a + b] / self.cell_factor))
    }

    /// The structure at the current coordinates.
    fn structure(&self, template: &Structure) -> Structure {
        let d = self.deformation();
        let n = template.len();
        let mut s = template.clone();
        s.positions = (0..n).map(|i| mat_vec(&d, [self.q[3 * i], self.q[3 * i + 1], self.q[3 * i + 2]])).collect();
        if self.relax_cell {
            s.cell = self.cell0.map(|c| c.map(|row| mat_vec(&d, row)));
        }
        s
    }

    /// Generalised forces and the largest force norm.
    fn forces(&self, structure: &Structure, p: &Prediction) -> (Vec<f64>, f64) {
        let d = self.deformation();
        let mut g = Vec::with_capacity(self.q.len());
        let mut fmax = 0.0f64;
        for f in &p.forces {
            fmax = fmax.max((f[0] * f[0] + f[1] * f[1] + f[2] * f[2]).sqrt());
            // Dᵀ f: the force on the undeformed-frame coordinates.
            g.extend((0..3).map(|a| d[0][a] * f[0] + d[1][a] * f[1] + d[2][a] * f[2]));
        }
        if self.relax_cell {
            let volume = structure.volume().unwrap_or(1.0);
            let sigma = p.stress.unwrap_or_default();
            let d_inv = inverse(&d);
            for a in 0..3 {
                let row: [f64; 3] = std::array::from_fn(|b| {
                    // (−V σ D⁻ᵀ)_ab / c
                    -(0..3).map(|k| volume * sigma[a][k] * d_inv[b][k]).sum::<f64>() / self.cell_factor
                });
                fmax = fmax.max((row[0] * row[0] + row[1] * row[1] + row[2] * row[2]).sqrt());
                g.extend(row);
            }
        }
        (g, fmax)
    }

    /// One FIRE step along the generalised forces `f`.
    fn step(&mut self, f: &[f64], max_move: f64) {
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let power = dot(f, &self.velocity);
        if power > 0.0 {
            let (vn, fn_) = (dot(&self.velocity, &self.velocity).sqrt(), dot(f, f).sqrt());
            if fn_ > 0.0 {
                for (v, f) in self.velocity.iter_mut().zip(f) {
                    *v = (1.0 - self.alpha) * *v + self.alpha * f / fn_ * vn;
                }
            }
            if self.downhill_steps > N_MIN {
                self.dt = (self.dt * F_INC).min(DT_MAX);
                self.alpha *= F_ALPHA;
            }
            self.downhill_steps += 1;
        } else {
            self.velocity.iter_mut().for_each(|v| *v = 0.0);
            self.alpha = ALPHA_START;
            self.dt *= F_DEC;
            self.downhill_steps = 0;
        }
        for (v, f) in self.velocity.iter_mut().zip(f) {
            *v += self.dt * f;
        }
        let mut dr: Vec<f64> = self.velocity.iter().map(|v| self.dt * v).collect();
        let norm = dot(&dr, &dr).sqrt();
        if norm > max_move {
            dr.iter_mut().for_each(|x| *x *= max_move / norm);
        }
        for (q, d) in self.q.iter_mut().zip(&dr) {
            *q += d;
        }
    }
}

/// What [`relax_observed`] shows after each model call: the structures still
/// relaxing, at their current coordinates, with the model's results there.
pub struct RelaxStep<'a> {
    /// Iteration; 0 is the input geometry.
    pub step: usize,
    /// Indices (into the input) of the structures shown, ascending.
    pub active: &'a [usize],
    pub structures: &'a [Structure],
    pub predictions: &'a [Prediction],
}

/// Relaxes every structure; `on_step(step, active)` is told how many are still going.
/// On a device set each iteration spreads the structures still going over its devices
/// ([`Model::evaluate`]), so the split follows them as they converge; the steps and
/// results are those of one device.
pub fn relax(
    model: &Model,
    device: &Device,
    structures: &[Structure],
    settings: FireSettings,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Vec<Relaxed>> {
    fire(model, device, structures, settings, &mut on_step, &mut |_| Ok(()))
}

/// [`relax`] that shows every iteration's structures and results to `observe`
/// (e.g. to write a trajectory); an error from `observe` stops the relaxation.
pub fn relax_observed(
    model: &Model,
    device: &Device,
    structures: &[Structure],
    settings: FireSettings,
    mut observe: impl FnMut(&RelaxStep) -> Result<()>,
) -> Result<Vec<Relaxed>> {
    fire(model, device, structures, settings, &mut |_, _| {}, &mut observe)
}

fn fire(
    model: &Model,
    device: &Device,
    structures: &[Structure],
    settings: FireSettings,
    on_step: &mut dyn FnMut(usize, usize),
    observe: &mut dyn FnMut(&RelaxStep) -> Result<()>,
) -> Result<Vec<Relaxed>> {
    if !(settings.fmax > 0.0 && settings.fmax.is_finite() && settings.max_move > 0.0 && settings.max_move.is_finite()) {
        return invalid_input!("fmax {} and max_move {} must be positive and finite", settings.fmax, settings.max_move);
    }
    let mut fire: Vec<Fire> = structures.iter().map(|s| Fire::new(s, settings.relax_cell)).collect();
    let mut done: Vec<Option<Relaxed>> = vec![None; structures.len()];
    for step in 0..=settings.max_steps {
        let active: Vec<usize> = (0..structures.len()).filter(|&k| done[k].is_none()).collect();
        if active.is_empty() {
            break;
        }
        on_step(step, active.len());
        let current: Vec<Structure> = active.iter().map(|&k| fire[k].structure(&structures[k])).collect();
        let predictions = model.evaluate(device, &current)?;
        observe(&RelaxStep { step, active: &active, structures: &current, predictions: &predictions })?;
        for ((&k, structure), prediction) in active.iter().zip(current).zip(predictions) {
            let (forces, fmax) = fire[k].forces(&structure, &prediction);
            let converged = fmax < settings.fmax;
            if converged || step == settings.max_steps {
                done[k] = Some(Relaxed { structure, prediction, steps: step, converged, fmax });
            } else {
                fire[k].step(&forces, settings.max_move);
            }
        }
    }
    Ok(done.into_iter().flatten().collect())
}

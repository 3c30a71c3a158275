//! Molecular dynamics, per atom: the BAOAB splitting of Langevin dynamics, which is
//! velocity Verlet when the friction is zero. The same bodies step atoms on the CPU
//! path and in the GPU kernels, so both integrate the same way and draw the same
//! thermostat noise (a counter-based hash of seed, step and atom: no RNG state to keep).
//!
//! Units: Å, fs, eV, atomic mass units.

pub mod args;
pub mod ensemble;
pub mod entries;
#[cfg(target_arch = "nvptx64")]
mod gpu;

use crate::math::{cos, exp, ln, sin, sqrt};

/// 1 eV/(Å·amu) in Å/fs² (the constant's digits; the compiler rounds them to f32).
#[allow(clippy::excessive_precision)]
pub const ACCELERATION_UNIT: f32 = 9.648_533_2e-3;
/// Boltzmann's constant in eV/K.
pub const BOLTZMANN: f64 = 8.617_333_262e-5;

/// One step's constants, the same for every atom.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Integrator {
    /// Time step, fs.
    pub dt: f32,
    /// exp(−γ dt): the velocity kept by the friction over a step (1 for NVE).
    pub velocity_decay: f32,
    /// √(1 − decay²)·√(kB T): scales √(1/m) to the noise's standard deviation.
    pub noise: f32,
    /// Index, in the whole run, of this batch's first atom: atom i draws the noise of
    /// atom `first_atom + i`, so a run split over several devices draws the noise one
    /// device would (0 for a batch that is the whole run).
    pub first_atom: u32,
    pub seed: u64,
}

impl Integrator {
    /// Velocity Verlet (constant energy).
    pub fn verlet(dt: f32) -> Self {
        Integrator { dt, velocity_decay: 1.0, ..Default::default() }
    }

    /// Langevin at `temperature` (K) with friction `gamma` (1/fs).
    pub fn langevin(dt: f32, temperature: f64, gamma: f64, seed: u64) -> Self {
        let decay = exp(-(gamma as f32) * dt);
        let kt = (BOLTZMANN * temperature) as f32;
        Integrator { dt, velocity_decay: decay, noise: sqrt((1.0 - decay * decay) * kt), first_atom: 0, seed }
    }
}

/// B, A, O, A of BAOAB: half kick with the forces of the current positions, half
/// drift, friction and noise, half drift. `step` and `atom` (within the batch; see
/// [`Integrator::first_atom`]) pick the noise. Returns
/// the kinetic energy the thermostat added (eV; 0 without one), whose running sum
/// the conserved quantity of Langevin dynamics subtracts.
#[inline(always)]
pub fn kick_drift(
    x: &mut [f32; 3],
    v: &mut [f32; 3],
    f: [f32; 3],
    mass: f32,
    p: &Integrator,
    step: u64,
    atom: u32,
) -> f64 {
    let heat = kick_drift_thermostat(x, v, f, mass, p, step, atom);
    drift(x, v, p);
    heat
}

/// B, A, O of BAOAB (see [`kick_drift`]): the part before a barostat moves the cell.
#[inline(always)]
pub fn kick_drift_thermostat(
    x: &mut [f32; 3],
    v: &mut [f32; 3],
    f: [f32; 3],
    mass: f32,
    p: &Integrator,
    step: u64,
    atom: u32,
) -> f64 {
    let half = 0.5 * p.dt;
    let accel = ACCELERATION_UNIT / mass;
    for a in 0..3 {
        v[a] += half * accel * f[a];
        x[a] += half * v[a];
    }
    if p.velocity_decay != 1.0 || p.noise != 0.0 {
        let before = kinetic_energy(*v, mass);
        let sigma = p.noise * sqrt(accel);
        let g = gaussians(p.seed, step, p.first_atom.wrapping_add(atom));
        for a in 0..3 {
            v[a] = p.velocity_decay * v[a] + sigma * g[a];
        }
        return kinetic_energy(*v, mass) - before;
    }
    0.0
}

/// The second A of BAOAB: half drift.
#[inline(always)]
pub fn drift(x: &mut [f32; 3], v: &[f32; 3], p: &Integrator) {
    let half = 0.5 * p.dt;
    for a in 0..3 {
        x[a] += half * v[a];
    }
}

/// The closing B of BAOAB: half kick with the forces of the new positions.
#[inline(always)]
pub fn kick(v: &mut [f32; 3], f: [f32; 3], mass: f32, p: &Integrator) {
    let scale = 0.5 * p.dt * ACCELERATION_UNIT / mass;
    for a in 0..3 {
        v[a] += scale * f[a];
    }
}

/// ½ m v² in eV.
#[inline(always)]
pub fn kinetic_energy(v: [f32; 3], mass: f32) -> f64 {
    let v2 = v[0] as f64 * v[0] as f64 + v[1] as f64 * v[1] as f64 + v[2] as f64 * v[2] as f64;
    0.5 * mass as f64 * v2 / ACCELERATION_UNIT as f64
}

/// SplitMix64's finaliser: a bijection that spreads every input bit.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform in (0, 1] from 24 bits (never 0, so its logarithm is finite).
#[inline(always)]
fn unit_interval(bits: u32) -> f32 {
    ((bits >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Three independent standard normals for (seed, step, atom), by Box–Muller.
#[inline(always)]
pub fn gaussians(seed: u64, step: u64, atom: u32) -> [f32; 3] {
    let base = mix64(seed ^ mix64(step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((atom as u64) << 1)));
    let r1 = mix64(base.wrapping_add(1));
    let r2 = mix64(base.wrapping_add(2));
    let radius_a = sqrt(-2.0 * ln(unit_interval(r1 as u32)));
    let angle_a = 2.0 * core::f32::consts::PI * unit_interval((r1 >> 32) as u32);
    let radius_b = sqrt(-2.0 * ln(unit_interval(r2 as u32)));
    let angle_b = 2.0 * core::f32::consts::PI * unit_interval((r2 >> 32) as u32);
    [radius_a * cos(angle_a), radius_a * sin(angle_a), radius_b * cos(angle_b)]
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn gaussians_have_unit_moments_and_no_correlation_between_atoms() {
        let draws: Vec<[f32; 3]> = (0..20_000u32).map(|a| gaussians(7, 3, a)).collect();
        let n = (3 * draws.len()) as f64;
        let all = || draws.iter().flatten().map(|&x| x as f64);
        let mean = all().sum::<f64>() / n;
        let var = all().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let kurt = all().map(|x| (x - mean).powi(4)).sum::<f64>() / n / (var * var);
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.15, "kurtosis {kurt}");
        let lag: f64 =
            draws.windows(2).map(|w| w[0][0] as f64 * w[1][0] as f64).sum::<f64>() / (draws.len() - 1) as f64;
        assert!(lag.abs() < 0.03, "neighbouring atoms correlate: {lag}");
        assert_ne!(gaussians(7, 3, 0), gaussians(7, 4, 0));
        assert_ne!(gaussians(7, 3, 0), gaussians(8, 3, 0));
    }

    #[test]
    fn a_batch_that_starts_later_in_the_run_draws_that_part_of_the_noise() {
        let whole = Integrator::langevin(1.0, 300.0, 0.05, 5);
        let tail = Integrator { first_atom: 10, ..whole };
        let step_with = |p: &Integrator, atom: u32| {
            let (mut x, mut v) = ([0.5f32, -0.25, 1.0], [0.01f32, 0.02, -0.03]);
            kick_drift(&mut x, &mut v, [0.1, 0.2, 0.3], 12.0, p, 3, atom);
            (x, v)
        };
        for atom in 0..5 {
            assert_eq!(step_with(&tail, atom), step_with(&whole, 10 + atom), "atom {atom}");
            assert_ne!(step_with(&tail, atom), step_with(&whole, atom), "atom {atom}");
        }
    }

    #[test]
    fn verlet_on_a_harmonic_oscillator_conserves_energy() {
        // m = 2 amu, k = 3 eV/Å²: period 2π√(m/(k·ACCELERATION_UNIT)) ≈ 52 fs.
        let (mass, k) = (2.0f32, 3.0f32);
        let p = Integrator::verlet(0.5);
        let (mut x, mut v) = ([0.3f32, 0.0, 0.0], [0.0f32; 3]);
        let energy = |x: &[f32; 3], v: &[f32; 3]| kinetic_energy(*v, mass) + 0.5 * (k * x[0] * x[0]) as f64;
        let e0 = energy(&x, &v);
        let mut worst = 0.0f64;
        let mut f = [-k * x[0], 0.0, 0.0];
        for step in 0..2000 {
            kick_drift(&mut x, &mut v, f, mass, &p, step, 0);
            f = [-k * x[0], 0.0, 0.0];
            kick(&mut v, f, mass, &p);
            worst = worst.max((energy(&x, &v) - e0).abs());
        }
        assert!(worst < 2e-3 * e0, "energy wandered by {worst} of {e0}");
    }

    #[test]
    fn langevin_thermalises_free_particles() {
        let (mass, temperature) = (12.0f32, 300.0f64);
        let p = Integrator::langevin(1.0, temperature, 0.05, 11);
        let mut v = std::vec![[0.0f32; 3]; 4000];
        let mut x = std::vec![[0.0f32; 3]; 4000];
        for step in 0..200 {
            for (a, (x, v)) in x.iter_mut().zip(v.iter_mut()).enumerate() {
                kick_drift(x, v, [0.0; 3], mass, &p, step, a as u32);
                kick(v, [0.0; 3], mass, &p);
            }
        }
        let ke: f64 = v.iter().map(|&v| kinetic_energy(v, mass)).sum::<f64>() / v.len() as f64;
        let t = 2.0 * ke / (3.0 * BOLTZMANN);
        assert!((t - temperature).abs() < 0.04 * temperature, "temperature {t} K");
    }
}

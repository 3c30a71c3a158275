//! Per-structure ensemble bodies: the Nosé–Hoover chain (as ASE's
//! `NoseHooverChainNVT`: Martyna–Tuckerman–Klein chain, Suzuki–Yoshida fourth-order
//! factorisation) and the stochastic cell rescaling barostat (Bernetti & Bussi,
//! J. Chem. Phys. 153, 114107 (2020)), isotropic or with x, y and z coupled
//! independently. Every body here is plain f64 arithmetic without fused multiply-adds
//! (rustc contracts none), so the CPU path and the GPU kernels compute the same bits
//! from the same inputs.
//!
//! The state each structure carries between steps is [`state::WORDS`] f64 words (see
//! [`state`]); a checkpoint stores them as they are.

use super::{gaussians, ACCELERATION_UNIT};
use crate::neighbors::cell_list::StructureRecord;

/// Longest Nosé–Hoover chain.
pub const MAX_CHAIN: usize = 8;

/// Words of one structure's ensemble state (f64).
pub mod state {
    use super::MAX_CHAIN;
    /// The cell (Å, rows), as the barostat moves it.
    pub const CELL: usize = 0;
    /// Energy the barostat exchanged with its bath so far (eV): the conserved
    /// quantity subtracts it.
    pub const HEAT: usize = 9;
    /// The volume at the start (Å³): the barostat stops a run whose volume leaves
    /// [¼, 4] times it rather than let a collapsing cell blow up the neighbour search.
    pub const START_VOLUME: usize = 10;
    /// The barostat's scale factors of the running step, per axis.
    pub const SCALE: usize = 11;
    /// Their logarithms, until the step's heat is completed (then 0).
    pub const LOG_SCALE: usize = 14;
    /// The virial's diagonal Σ_edges r_a ∂E/∂r_a (eV) at the current positions, kept
    /// here (and so saved, restored and checkpointed with the rest) by
    /// [`super::barostat_after_forces`].
    pub const VIRIAL: usize = 17;
    /// Chain positions η_j and momenta p_j (eV·fs).
    pub const ETA: usize = 20;
    pub const P_ETA: usize = ETA + MAX_CHAIN;
    pub const WORDS: usize = P_ETA + MAX_CHAIN;
}

/// Which barostat.
pub mod coupling {
    pub const NONE: u32 = 0;
    /// One scale factor for the three axes (volume moves, shape kept).
    pub const ISOTROPIC: u32 = 1;
    /// x, y and z each with its own scale factor, driven by P_xx, P_yy, P_zz (no shear).
    pub const ANISOTROPIC: u32 = 2;
}

/// The constants of the ensemble, the same for every structure.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EnsembleParams {
    /// Time step, fs.
    pub dt: f64,
    /// k_B T of the bath (eV): the chain's target and the barostat's noise.
    pub kt: f64,
    /// Chain damping time τ (fs): masses Q₁ = N_f kT τ², Q_j = kT τ².
    pub damping: f64,
    /// Chain length (0: no chain) and Suzuki–Yoshida repetitions.
    pub chain: u32,
    pub loops: u32,
    /// See [`coupling`].
    pub coupling: u32,
    pub pad: u32,
    /// Target pressure, eV/Å³.
    pub pressure: f64,
    /// Isothermal compressibility over the relaxation time, β_T/τ_p (Å³/(eV·fs)).
    pub compressibility_rate: f64,
    /// Seeds the barostat's noise (a stream apart from the atoms').
    pub seed: u64,
}

/// √x, correctly rounded on every target.
#[inline(always)]
pub fn sqrt64(x: f64) -> f64 {
    #[cfg(target_arch = "nvptx64")]
    {
        let out: f64;
        // SAFETY: one register-to-register instruction, no memory.
        unsafe {
            core::arch::asm!("sqrt.rn.f64 {o}, {x};", o = out(reg64) out, x = in(reg64) x,
                             options(pure, nomem, nostack));
        }
        out
    }
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_cvtsd_f64, _mm_set_sd, _mm_sqrt_sd};
        // SAFETY: SSE2 is part of the x86_64 baseline, so these are always available.
        unsafe { _mm_cvtsd_f64(_mm_sqrt_sd(_mm_set_sd(0.0), _mm_set_sd(x))) }
    }
    #[cfg(not(any(target_arch = "nvptx64", target_arch = "x86_64")))]
    {
        if !(x > 0.0) || x == f64::INFINITY {
            return if x == 0.0 || x == f64::INFINITY { x } else { f64::NAN };
        }
        let mut y = f64::from_bits((x.to_bits() >> 1) + 0x1ff8_0000_0000_0000);
        for _ in 0..8 {
            y = 0.5 * (y + x / y);
        }
        y
    }
}

/// eˣ in f64 from + and × only (Cody–Waite reduction by ln 2, then a degree-13
/// Taylor polynomial on |r| ≤ ½ ln 2), so that both targets compute the same bits.
/// Relative error about 2e-16; 0 below −708, +∞ above 709.
#[inline(always)]
pub fn exp64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    const LOG2E: f64 = core::f64::consts::LOG2_E;
    // ln 2 split so that k·LN2_HI is exact for |k| < 2¹¹ (fdlibm's constants).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    let t = x * LOG2E + 0.5;
    let mut k = t as i64;
    if (k as f64) > t {
        k -= 1;
    }
    let kf = k as f64;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // Σ_{j ≤ 13} r^j / j! as Horner steps 1 + r/n · (1 + r/(n+1) · (…)).
    let mut p = 1.0;
    for n in (1..=13).rev() {
        p = 1.0 + r * p / n as f64;
    }
    p * f64::from_bits(((k + 1023) as u64) << 52)
}

/// The Suzuki–Yoshida fourth-order weights 1/(2 − 2^⅓), −2^⅓/(2 − 2^⅓), 1/(2 − 2^⅓).
const SUZUKI_YOSHIDA: [f64; 3] = [1.351_207_191_959_657_8, -1.702_414_383_919_315_5, 1.351_207_191_959_657_8];

/// Degrees of freedom of a structure of `atoms` atoms whose centre of mass is at
/// rest (3N − 3), or all 3N where nothing keeps it so (`momentum_conserved` false:
/// Langevin) or for a lone atom.
#[inline(always)]
pub fn degrees_of_freedom(atoms: usize, momentum_conserved: bool) -> f64 {
    if momentum_conserved && atoms > 1 {
        (3 * atoms - 3) as f64
    } else {
        (3 * atoms) as f64
    }
}

/// The chain's mass of element j.
#[inline(always)]
fn chain_mass(j: usize, dof: f64, p: &EnsembleParams) -> f64 {
    let base = p.kt * p.damping * p.damping;
    if j == 0 {
        dof * base
    } else {
        base
    }
}

/// Half a step (dt/2) of the Nosé–Hoover chain on one structure whose Σ m v² is
/// `twice_kinetic` (eV) with `dof` degrees of freedom; returns the factor its
/// velocities are to be scaled by. `words` is the structure's state.
pub fn nhc_half_step(words: &mut [f64], twice_kinetic: f64, dof: f64, p: &EnsembleParams) -> f64 {
    let m = p.chain as usize;
    if m == 0 || !(dof > 0.0) || m > MAX_CHAIN {
        return 1.0;
    }
    let loops = p.loops.max(1) as f64;
    let mut scale = 1.0;
    let mut two_k = twice_kinetic;
    for _ in 0..p.loops.max(1) {
        for w in SUZUKI_YOSHIDA {
            let delta = w * 0.5 * p.dt / loops;
            let (d2, d4) = (delta / 2.0, delta / 4.0);
            for j in (0..m).rev() {
                update_chain_momentum(words, j, two_k, dof, d2, d4, p);
            }
            for j in 0..m {
                words[state::ETA + j] += delta * words[state::P_ETA + j] / chain_mass(j, dof, p);
            }
            let s = exp64(-delta * words[state::P_ETA] / chain_mass(0, dof, p));
            scale *= s;
            two_k = two_k * s * s;
            for j in 0..m {
                update_chain_momentum(words, j, two_k, dof, d2, d4, p);
            }
        }
    }
    scale
}

/// p_j ← p_j e^{−δ/4 · p_{j+1}/Q_{j+1}}, + δ/2 · G_j, × the same factor again.
#[inline(always)]
fn update_chain_momentum(words: &mut [f64], j: usize, two_k: f64, dof: f64, d2: f64, d4: f64, p: &EnsembleParams) {
    let m = p.chain as usize;
    let damp = if j + 1 < m { exp64(-d4 * words[state::P_ETA + j + 1] / chain_mass(j + 1, dof, p)) } else { 1.0 };
    words[state::P_ETA + j] *= damp;
    let force = if j == 0 {
        two_k - dof * p.kt
    } else {
        let prev = words[state::P_ETA + j - 1];
        prev * prev / chain_mass(j - 1, dof, p) - p.kt
    };
    words[state::P_ETA + j] += d2 * force;
    words[state::P_ETA + j] *= damp;
}

/// The chain's energy: N_f kT η₁ + kT Σ_{j>1} η_j + Σ p_j²/(2Q_j) (eV).
pub fn nhc_energy(words: &[f64], dof: f64, p: &EnsembleParams) -> f64 {
    let m = (p.chain as usize).min(MAX_CHAIN);
    let mut e = 0.0;
    for j in 0..m {
        let eta_weight = if j == 0 { dof * p.kt } else { p.kt };
        let pj = words[state::P_ETA + j];
        e += eta_weight * words[state::ETA + j] + pj * pj / (2.0 * chain_mass(j, dof, p));
    }
    e
}

/// Determinant of a row-major 3×3 matrix, in the order `structure::determinant` uses.
#[inline(always)]
pub fn determinant(m: &[f64]) -> f64 {
    m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6])
}

/// What the barostat did in one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BarostatStep {
    /// Positions scale by these per axis, velocities by their inverses.
    pub scale: [f64; 3],
    /// Energy exchanged with the bath (eV): the change of K + U + P₀V the step caused,
    /// with U's change from the virial.
    pub heat: f64,
    /// False if the new volume left [¼, 4] × the start's or is not finite: the
    /// step is then not taken.
    pub ok: bool,
}

/// One stochastic-cell-rescaling step of one structure (state `words`, whose
/// [`state::VIRIAL`] is that of the step's start), from Σ m v_a² per axis (eV) and
/// three standard normals. Moves the cell in `words`; the caller scales positions and velocities.
///
/// In ε = ln V, Itô: dε = (β_T/τ_p)(P − P₀) dt + √(2 kT β_T/(V τ_p)) dW samples
/// e^{−β(H + P₀V)} in the positions, momenta and V, with the velocities scaled as the
/// positions' inverse (the −kT/V of the paper's volume equation is the Itô correction
/// of this change of variable). P = (2K − tr W)/(3V), plus kT/V where the centre of
/// mass is at rest (`momentum_conserved`): its 3 missing momenta would have carried
/// that Jacobian. Anisotropically each ε_a = ln of the cell's extent along a moves
/// with P_aa, at a third of the rate, so that the volume relaxes as in the isotropic case.
pub fn barostat_step(
    words: &mut [f64],
    twice_kinetic: [f64; 3],
    noise: [f32; 3],
    momentum_conserved: bool,
    p: &EnsembleParams,
) -> BarostatStep {
    let virial: [f64; 3] = core::array::from_fn(|a| words[state::VIRIAL + a]);
    let volume = determinant(&words[state::CELL..state::CELL + 9]).abs();
    let rate = p.compressibility_rate;
    let centre_of_mass = if momentum_conserved { p.kt / volume } else { 0.0 };
    let mut log_scale = [0.0f64; 3];
    if p.coupling == coupling::ISOTROPIC {
        let pressure = ((twice_kinetic[0] + twice_kinetic[1] + twice_kinetic[2]) - (virial[0] + virial[1] + virial[2]))
            / (3.0 * volume)
            + centre_of_mass;
        let sigma = sqrt64(2.0 * p.kt * rate * p.dt / volume);
        let d_eps = rate * (pressure - p.pressure) * p.dt + sigma * noise[0] as f64;
        log_scale = [d_eps / 3.0; 3];
    } else if p.coupling == coupling::ANISOTROPIC {
        let sigma = sqrt64(2.0 * p.kt * rate * p.dt / (3.0 * volume));
        for a in 0..3 {
            let pressure = (twice_kinetic[a] - virial[a]) / volume + centre_of_mass;
            log_scale[a] = rate / 3.0 * (pressure - p.pressure) * p.dt + sigma * noise[a] as f64;
        }
    }
    // The factors as the f32 positions get them, so that cell and atoms move alike.
    let scale: [f64; 3] = core::array::from_fn(|a| exp64(log_scale[a]) as f32 as f64);
    let new_volume = volume * (scale[0] * scale[1] * scale[2]);
    let start = words[state::START_VOLUME];
    let ok = new_volume.is_finite() && new_volume >= 0.25 * start && new_volume <= 4.0 * start;
    if !ok {
        return BarostatStep { scale: [1.0; 3], heat: 0.0, ok: false };
    }
    let mut heat = p.pressure * (new_volume - volume);
    for a in 0..3 {
        // ΔK of v_a → v_a/μ_a, and ΔU ≈ W_aa ln μ_a (dU/d ln μ_a = Σ r_a ∂E/∂r_a) to
        // first order; `barostat_heat_correction` adds the second.
        let log = log_scale_of(scale[a], log_scale[a]);
        heat += 0.5 * twice_kinetic[a] * (1.0 / (scale[a] * scale[a]) - 1.0);
        heat += virial[a] * log;
        for row in 0..3 {
            words[state::CELL + 3 * row + a] *= scale[a];
        }
        words[state::SCALE + a] = scale[a];
        words[state::LOG_SCALE + a] = log;
    }
    words[state::HEAT] += heat;
    BarostatStep { scale, heat, ok: true }
}

/// After the forces of new positions: keeps their virial's diagonal `virial` for the
/// next barostat step, and completes the heat of the cell move that led there:
/// ΔU ≈ ½ (W_before + W_after) ln μ, the trapezoid rule, whose error is third order
/// in ln μ (the first-order estimate alone leaves a second-order error, ½ U'' (ln μ)²,
/// always of one sign, that per unit time does not shrink with the time step).
pub fn barostat_after_forces(words: &mut [f64], virial: [f64; 3]) {
    let mut heat = 0.0;
    for a in 0..3 {
        heat += 0.5 * (virial[a] - words[state::VIRIAL + a]) * words[state::LOG_SCALE + a];
        words[state::LOG_SCALE + a] = 0.0;
        words[state::VIRIAL + a] = virial[a];
    }
    words[state::HEAT] += heat;
}

/// ln μ for the rounded factor μ, from the unrounded logarithm (they differ by the
/// f32 rounding, at most 6e-8, which is kept to first order).
#[inline(always)]
fn log_scale_of(scale: f64, log_scale: f64) -> f64 {
    log_scale + (scale - exp64(log_scale)) / scale
}

/// Three standard normals of the barostat of structure `s` at `step`.
#[inline(always)]
pub fn barostat_noise(p: &EnsembleParams, step: u64, structure: u32) -> [f32; 3] {
    // A stream of its own: the atoms' noise uses the seed as it is.
    gaussians(p.seed ^ 0x6261_726f_7374_6174, step, structure)
}

/// A structure record's cell, inverse and plane spacings from the f64 cell, in the
/// arithmetic of the host's `structure::inverse` and `plane_spacing`, so that the
/// records the device derives equal those the host makes.
pub fn set_record_cell(rec: &mut StructureRecord, cell: &[f64]) {
    let m = |r: usize, c: usize| cell[3 * r + c];
    let det = determinant(cell);
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m(r0, c0) * m(r1, c1) - m(r0, c1) * m(r1, c0);
    let inv = [
        [c(1, 1, 2, 2) / det, -c(0, 1, 2, 2) / det, c(0, 1, 1, 2) / det],
        [-c(1, 0, 2, 2) / det, c(0, 0, 2, 2) / det, -c(0, 0, 1, 2) / det],
        [c(1, 0, 2, 1) / det, -c(0, 0, 2, 1) / det, c(0, 0, 1, 1) / det],
    ];
    for k in 0..9 {
        rec.cell[k] = cell[k] as f32;
        rec.inverse[k] = inv[k / 3][k % 3] as f32;
    }
    for a in 0..3 {
        let norm2 = (inv[0][a] * inv[0][a] + inv[1][a] * inv[1][a]) + inv[2][a] * inv[2][a];
        rec.plane_spacing[a] = (1.0 / sqrt64(norm2)) as f32;
    }
}

/// Σ m v_a² of one atom per axis (eV).
#[inline(always)]
pub fn twice_kinetic(v: [f32; 3], mass: f32) -> [f64; 3] {
    core::array::from_fn(|a| mass as f64 * (v[a] as f64 * v[a] as f64) / ACCELERATION_UNIT as f64)
}

/// The barostat's move of one atom: x_a ← μ_a x_a, v_a ← v_a/μ_a.
#[inline(always)]
pub fn scale_atom(x: &mut [f32; 3], v: &mut [f32; 3], scale: &[f64]) {
    for a in 0..3 {
        x[a] *= scale[a] as f32;
        v[a] *= (1.0 / scale[a]) as f32;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn f64_functions_match_std() {
        let mut worst = 0.0f64;
        for k in -4000..4000 {
            let x = k as f64 * 0.173;
            let (ours, theirs) = (exp64(x), x.exp());
            if theirs.is_finite() && theirs > 1e-300 {
                worst = worst.max(((ours - theirs) / theirs).abs());
            }
        }
        assert!(worst < 1e-15, "exp64 relative error {worst:e}");
        assert_eq!(exp64(0.0), 1.0);
        for x in [0.0, 1e-300, 0.5, 2.0, 3.0, 1e10, 12345.678] {
            assert_eq!(sqrt64(x), x.sqrt(), "sqrt64({x})");
        }
    }

    /// Over 4 ps of a free-particle gas started three times too hot, the worst relative
    /// change of H' = K + chain energy (conserved by the exact flow), and the lowest T/T₀.
    fn chain_run(dt: f64) -> (f64, f64) {
        let p = EnsembleParams { dt, kt: 0.025, damping: 20.0, chain: 3, loops: 1, ..Default::default() };
        let dof = 30.0;
        let mut words = [0.0f64; state::WORDS];
        let mut two_k = 3.0 * dof * p.kt;
        let start = 0.5 * two_k;
        let (mut worst, mut lowest) = (0.0f64, f64::INFINITY);
        for _ in 0..(4000.0 / dt) as usize {
            for _ in 0..2 {
                let s = nhc_half_step(&mut words, two_k, dof, &p);
                two_k *= s * s;
            }
            let h = 0.5 * two_k + nhc_energy(&words, dof, &p);
            worst = worst.max((h - start).abs() / start);
            lowest = lowest.min(two_k / dof / p.kt);
        }
        (worst, lowest)
    }

    #[test]
    fn chain_conserves_its_energy_to_fourth_order() {
        let (coarse, lowest) = chain_run(1.0);
        let (fine, _) = chain_run(0.5);
        assert!(fine < 1e-6, "H' moved by {fine:e} (relative)");
        // Suzuki–Yoshida is fourth order: halving dt divides the error by ~16.
        assert!(coarse / fine > 10.0, "errors {coarse:e} at 1 fs, {fine:e} at 0.5 fs");
        assert!(lowest < 1.5, "the chain never cooled the gas: T/T0 ≥ {lowest}");
    }

    #[test]
    fn barostat_heat_accounts_for_the_cell_move() {
        let p = EnsembleParams {
            dt: 1.0,
            kt: 0.025,
            coupling: coupling::ANISOTROPIC,
            pressure: 1e-4,
            compressibility_rate: 1e-3,
            seed: 3,
            ..Default::default()
        };
        let mut words = [0.0f64; state::WORDS];
        for (k, x) in [10.0, 0.0, 0.0, 1.0, 11.0, 0.0, 0.5, 0.3, 12.0].iter().enumerate() {
            words[state::CELL + k] = *x;
        }
        let v0 = determinant(&words[..9]);
        words[state::START_VOLUME] = v0;
        let (two_k, virial) = ([2.0, 2.5, 1.5], [-1.0, 3.0, 0.2]);
        barostat_after_forces(&mut words, virial);
        let step = barostat_step(&mut words, two_k, [0.3, -1.2, 0.8], true, &p);
        assert!(step.ok);
        let v1 = determinant(&words[..9]);
        assert!((v1 / v0 - step.scale.iter().product::<f64>()).abs() < 1e-14);
        let mut expected = p.pressure * (v1 - v0);
        for a in 0..3 {
            expected += 0.5 * two_k[a] * (1.0 / step.scale[a].powi(2) - 1.0) + virial[a] * step.scale[a].ln();
        }
        assert!((step.heat - expected).abs() < 1e-12, "{} vs {expected}", step.heat);
        // A runaway volume is refused and leaves the cell alone.
        let runaway = EnsembleParams { compressibility_rate: 1e3, ..p };
        barostat_after_forces(&mut words, [1e6; 3]);
        let before = words;
        assert!(!barostat_step(&mut words, two_k, [0.0; 3], false, &runaway).ok);
        assert_eq!(words, before);
    }
}

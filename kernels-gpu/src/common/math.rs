//! f32 elementary functions written once for the CPU and the GPU.
//!
//! Why our own: `core` has no `exp`/`cos` without `std`, libm's versions drag large
//! reduction tables and a local stack frame into PTX, and one implementation on both
//! sides makes the GPU and CPU paths agree to the last bits. Arguments here are the
//! model's: |x| of at most a few hundred for `exp`, a few multiples of π for `cos`/`sin`.
//! Accuracy: about 1 ulp (checked against f64 in the tests below).

/// IEEE square root, correctly rounded on every target (so bit-identical CPU vs GPU).
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    #[cfg(target_arch = "nvptx64")]
    {
        let out: f32;
        // SAFETY: one register-to-register instruction, no memory.
        unsafe {
            core::arch::asm!("sqrt.rn.f32 {o}, {x};", o = out(reg32) out, x = in(reg32) x,
                             options(pure, nomem, nostack));
        }
        out
    }
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_cvtss_f32, _mm_set_ss, _mm_sqrt_ss};
        // SAFETY: SSE is part of the x86_64 baseline, so these are always available.
        unsafe { _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(x))) }
    }
    #[cfg(not(any(target_arch = "nvptx64", target_arch = "x86_64")))]
    {
        sqrt_newton(x)
    }
}

/// Portable fallback: Newton on f64 then round, correctly rounded for finite x ≥ 0.
#[allow(dead_code)]
fn sqrt_newton(x: f32) -> f32 {
    if !(x > 0.0) || x == f32::INFINITY {
        return if x == 0.0 || x == f32::INFINITY { x } else { f32::NAN };
    }
    let xd = x as f64;
    let mut y = f32::from_bits((x.to_bits() >> 1) + 0x1fbd_1df5) as f64;
    for _ in 0..5 {
        y = 0.5 * (y + xd / y);
    }
    y as f32
}

/// a·b + c. On the GPU one fused `fma.rn.f32`: rustc emits `mul.rn` + `add.rn` for
/// `a * b + c`, and ptxas never contracts instructions with an explicit rounding
/// mode, so every multiply-add of a kernel would cost two instructions. On the host
/// (the oracle path, where x86_64's baseline has no FMA) the unfused expression.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_arch = "nvptx64")]
    {
        let out: f32;
        // SAFETY: one register-to-register instruction, no memory.
        unsafe {
            core::arch::asm!("fma.rn.f32 {o}, {a}, {b}, {c};", o = out(reg32) out, a = in(reg32) a,
                             b = in(reg32) b, c = in(reg32) c, options(pure, nomem, nostack));
        }
        out
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        a * b + c
    }
}

const LOG2_E: f32 = core::f32::consts::LOG2_E;
// ln 2 split so that k * LN2_HI is exact for |k| < 2^9.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// Round to nearest integer (ties away from zero), without `std`.
#[inline(always)]
fn round_to_int(x: f32) -> i32 {
    if x >= 0.0 {
        (x + 0.5) as i32
    } else {
        (x - 0.5) as i32
    }
}

/// e^x.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > 88.72284 {
        return f32::INFINITY;
    }
    if x < -103.97208 {
        return 0.0;
    }
    let k = round_to_int(x * LOG2_E);
    let kf = k as f32;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // Taylor to degree 7 on |r| <= ln2/2: truncation error < 6e-9 relative.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    scale_by_power_of_two(p, k)
}

/// p · 2^k for p in [0.7, 1.42] and k in [-150, 128], handling subnormal results.
#[inline(always)]
fn scale_by_power_of_two(p: f32, k: i32) -> f32 {
    if k > -126 {
        let k1 = if k > 127 { 127 } else { k };
        let r = p * f32::from_bits(((k1 + 127) as u32) << 23);
        if k > 127 {
            r * 2.0
        } else {
            r
        }
    } else {
        // Two steps so that neither factor underflows on its own.
        p * f32::from_bits(((k + 100 + 127) as u32) << 23) * f32::from_bits(((127 - 100) as u32) << 23)
    }
}

// π/2 in three parts (Cody-Waite, as in Cephes): the first two have trailing zero bits
// so that q·part is exact for the quadrant counts we meet.
const PI_OVER_2_A: f32 = 1.570_312_5;
#[allow(clippy::excessive_precision)] // this f32's exact value, to show its trailing zero bits
const PI_OVER_2_B: f32 = 4.837_512_969_970_703e-4;
const PI_OVER_2_C: f32 = 7.549_79e-8;
const TWO_OVER_PI: f32 = core::f32::consts::FRAC_2_PI;

/// x reduced to r in [-π/4, π/4] and the quadrant q (mod 4), x = q·π/2 + r.
#[inline(always)]
fn reduce_quadrant(x: f32) -> (f32, i32) {
    let q = round_to_int(x * TWO_OVER_PI);
    let qf = q as f32;
    (((x - qf * PI_OVER_2_A) - qf * PI_OVER_2_B) - qf * PI_OVER_2_C, q & 3)
}

#[inline(always)]
fn sin_poly(r: f32) -> f32 {
    let r2 = r * r;
    r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0)))))
}

#[inline(always)]
fn cos_poly(r: f32) -> f32 {
    let r2 = r * r;
    1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40_320.0))))
}

/// cos x, for |x| up to about 10^4.
#[inline(always)]
pub fn cos(x: f32) -> f32 {
    let (r, q) = reduce_quadrant(x);
    match q {
        0 => cos_poly(r),
        1 => -sin_poly(r),
        2 => -cos_poly(r),
        _ => sin_poly(r),
    }
}

/// sin x, for |x| up to about 10^4.
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    let (r, q) = reduce_quadrant(x);
    match q {
        0 => sin_poly(r),
        1 => cos_poly(r),
        2 => -sin_poly(r),
        _ => -cos_poly(r),
    }
}

/// Natural logarithm of a positive normal x (the Box–Muller draws of the Langevin
/// thermostat take it of uniforms in (0, 1]).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    if !(x > 0.0) {
        return if x == 0.0 { f32::NEG_INFINITY } else { f32::NAN };
    }
    if x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > core::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh s, s = (m-1)/(m+1), |s| <= 0.172: the series to s^11 is below 1e-9.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = s * (2.0 + s2 * (2.0 / 3.0 + s2 * (0.4 + s2 * (2.0 / 7.0 + s2 * (2.0 / 9.0 + s2 * (2.0 / 11.0))))));
    let ef = e as f32;
    (ef * LN2_HI + p) + ef * LN2_LO
}

/// Logistic sigmoid 1 / (1 + e^-x), stable for large |x|.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

/// SiLU(x) = x σ(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// SiLU(x) and its derivative σ(x)(1 + x(1 − σ(x))) from one sigmoid.
#[inline(always)]
pub fn silu_and_grad(x: f32) -> (f32, f32) {
    let s = sigmoid(x);
    (x * s, s * (1.0 + x * (1.0 - s)))
}

/// floor(x) for finite x (core has no `f32::floor` without std). Values beyond 2²³
/// are already integers.
#[inline(always)]
pub fn floor(x: f32) -> f32 {
    // One `cvt.rmi` on the GPU instead of a saturating conversion and its checks.
    #[cfg(target_arch = "nvptx64")]
    {
        let out: f32;
        // SAFETY: one register-to-register instruction, no memory.
        unsafe {
            core::arch::asm!("cvt.rmi.f32.f32 {o}, {x};", o = out(reg32) out, x = in(reg32) x,
                             options(pure, nomem, nostack));
        }
        out
    }
    #[cfg(not(target_arch = "nvptx64"))]
    floor_portable(x)
}

/// `floor` without the GPU instruction (the host's).
#[inline(always)]
#[allow(dead_code)]
fn floor_portable(x: f32) -> f32 {
    if !(x.abs() < 8_388_608.0) {
        return x;
    }
    let t = x as i32 as f32;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// ceil(x) for finite x.
#[inline(always)]
pub fn ceil(x: f32) -> f32 {
    -floor(-x)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn rel_err(a: f32, b: f64) -> f64 {
        ((a as f64 - b) / b.abs().max(1e-30)).abs()
    }

    #[test]
    fn exp_matches_f64_within_two_ulp() {
        let mut x = -100.0f32;
        while x < 88.0 {
            let err = rel_err(exp(x), (x as f64).exp());
            assert!(err < 2.5e-7 || (x as f64).exp() < 1e-37, "exp({x}) rel err {err}");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(100.0).is_infinite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn ln_matches_f64() {
        let mut x = 1.0e-30f32;
        while x < 1.0e30 {
            let want = (x as f64).ln();
            assert!((ln(x) as f64 - want).abs() <= 2.5e-7 * want.abs().max(1.0), "ln({x}) = {} vs {want}", ln(x));
            x *= 1.0173;
        }
        assert_eq!(ln(1.0), 0.0);
        assert!(ln(0.0).is_infinite() && ln(-1.0).is_nan());
    }

    #[test]
    fn cos_and_sin_match_f64() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let c = (x as f64).cos();
            let s = (x as f64).sin();
            assert!((cos(x) as f64 - c).abs() < 3e-7, "cos({x})");
            assert!((sin(x) as f64 - s).abs() < 3e-7, "sin({x})");
            x += 0.00731;
        }
    }

    #[test]
    fn sqrt_is_correctly_rounded() {
        for i in 0..100_000u32 {
            let x = f32::from_bits(0x3000_0000 + i * 9973);
            assert_eq!(sqrt(x), ((x as f64).sqrt()) as f32, "sqrt({x})");
            assert_eq!(sqrt_newton(x), ((x as f64).sqrt()) as f32, "sqrt_newton({x})");
        }
        assert_eq!(sqrt(0.0), 0.0);
    }

    #[test]
    fn silu_grad_matches_finite_difference() {
        for i in -80..80 {
            let x = i as f32 * 0.1;
            let (_, g) = silu_and_grad(x);
            let h = 1e-3f64;
            let f = |t: f64| t / (1.0 + (-t).exp());
            let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            assert!((g as f64 - fd).abs() < 1e-5, "silu'({x}) = {g}, fd {fd}");
        }
    }
}

//! Radial features × cosine cutoff, fused, with their derivative in d.

use crate::math;

/// fc(d) = ½(cos(πd/rc) + 1) for d < rc, else 0; and dfc/dd.
#[inline(always)]
pub fn cosine_cutoff(d: f32, rc: f32) -> (f32, f32) {
    if d < rc {
        let x = core::f32::consts::PI * d / rc;
        (0.5 * (math::cos(x) + 1.0), -0.5 * core::f32::consts::PI / rc * math::sin(x))
    } else {
        (0.0, 0.0)
    }
}

/// e_k = exp(−(d − μ_k)²/w_k²)·fc(d) and, when `de` is given, de_k/dd.
#[inline(always)]
pub fn gaussian_features(d: f32, rc: f32, centers: &[f32], widths: &[f32], e: &mut [f32], de: Option<&mut [f32]>) {
    let (fc, dfc) = cosine_cutoff(d, rc);
    match de {
        Some(de) => {
            for k in 0..e.len() {
                let inv_w2 = 1.0 / (widths[k] * widths[k]);
                let t = d - centers[k];
                let g = math::exp(-t * t * inv_w2);
                e[k] = g * fc;
                de[k] = g * (dfc - 2.0 * t * inv_w2 * fc);
            }
        }
        None => {
            for k in 0..e.len() {
                let t = d - centers[k];
                e[k] = math::exp(-t * t / (widths[k] * widths[k])) * fc;
            }
        }
    }
}

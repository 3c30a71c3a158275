//! Builds the Hermite tables of the filter φ(d) (layout in `kernels::filter_table`)
//! from the exact network, in f64 with forward-mode derivatives.

use super::painn::PainnWeights;
use super::student::StudentWeights;
use crate::error::{invalid_input, Result};
use mlff_kernels::filter_table::{table_len, TABLE_INTERVALS};
use rayon::prelude::*;

/// `inv_h` for the kernels: knots per Å.
pub fn inverse_spacing(cutoff: f32) -> f32 {
    (TABLE_INTERVALS as f64 / cutoff as f64) as f32
}

/// fc(d) = ½(cos(πd/rc) + 1) below rc, else 0, and dfc/dd, in f64.
fn cosine_cutoff(d: f64, rc: f64) -> (f64, f64) {
    if d < rc {
        let x = std::f64::consts::PI * d / rc;
        (0.5 * (x.cos() + 1.0), -0.5 * std::f64::consts::PI / rc * x.sin())
    } else {
        (0.0, 0.0)
    }
}

/// φ(d) and dφ/dd (3H each) of block `t`, in f64.
pub fn filter_with_slope(w: &StudentWeights, t: usize, d: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    let Some(b) = w.interactions.get(t) else {
        return invalid_input!("block {t} asked for, the model has {}", w.interactions.len());
    };
    let (h, k) = (w.hidden_dim(), w.config.num_rbf);
    let rc = w.config.cutoff as f64;
    let (fc, dfc) = cosine_cutoff(d, rc);
    let mut e = vec![0.0f64; k];
    let mut de = vec![0.0f64; k];
    for q in 0..k {
        let inv_w2 = 1.0 / (w.widths[q] as f64 * w.widths[q] as f64);
        let x = d - w.centers[q] as f64;
        let g = (-x * x * inv_w2).exp();
        e[q] = g * fc;
        de[q] = g * (dfc - 2.0 * x * inv_w2 * fc);
    }
    let mut hidden = vec![0.0f64; h];
    let mut dhidden = vec![0.0f64; h];
    for o in 0..h {
        let (mut pre, mut dpre) = (b.filter_in.bias[o] as f64, 0.0);
        for q in 0..k {
            let wq = b.filter_in.weight_t[q * h + o] as f64;
            pre += e[q] * wq;
            dpre += de[q] * wq;
        }
        let sig = 1.0 / (1.0 + (-pre).exp());
        hidden[o] = pre * sig;
        dhidden[o] = sig * (1.0 + pre * (1.0 - sig)) * dpre;
    }
    let mut phi: Vec<f64> = b.filter_out.bias.iter().map(|&x| x as f64).collect();
    let mut dphi = vec![0.0f64; 3 * h];
    for i in 0..h {
        let row = &b.filter_out.weight_t[i * 3 * h..(i + 1) * 3 * h];
        for o in 0..3 * h {
            phi[o] += hidden[i] * row[o] as f64;
            dphi[o] += dhidden[i] * row[o] as f64;
        }
    }
    Ok((phi, dphi))
}

/// The table of block `t`.
pub fn build(w: &StudentWeights, t: usize) -> Result<Vec<f32>> {
    if t >= w.interactions.len() {
        return invalid_input!("block {t} asked for, the model has {}", w.interactions.len());
    }
    Ok(tabulate(w.hidden_dim(), w.config.cutoff, |d| filter_with_slope(w, t, d)))
}

/// PaiNN's filter W(d) = (Wf·rbf(d) + b)·fc(d) and dW/dd (3F each) of block `t`, in f64.
pub fn painn_filter_with_slope(w: &PainnWeights, t: usize, d: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    let Some(b) = w.blocks.get(t) else {
        return invalid_input!("block {t} asked for, the model has {}", w.blocks.len());
    };
    let outputs = 3 * w.features();
    let rc = w.config.cutoff as f64;
    let (fc, dfc) = cosine_cutoff(d, rc);
    let mut pre: Vec<f64> = b.filter.bias.iter().map(|&x| x as f64).collect();
    let mut dpre = vec![0.0f64; outputs];
    for k in 0..w.offsets.len() {
        let inv_w2 = 1.0 / (w.widths[k] as f64 * w.widths[k] as f64);
        let x = d - w.offsets[k] as f64;
        let e = (-0.5 * x * x * inv_w2).exp();
        let de = -x * inv_w2 * e;
        let row = &b.filter.weight_t[k * outputs..(k + 1) * outputs];
        for o in 0..outputs {
            pre[o] += e * row[o] as f64;
            dpre[o] += de * row[o] as f64;
        }
    }
    let value = pre.iter().map(|p| p * fc).collect();
    let slope = pre.iter().zip(&dpre).map(|(p, dp)| dp * fc + p * dfc).collect();
    Ok((value, slope))
}

/// The table of PaiNN block `t`.
pub fn build_painn(w: &PainnWeights, t: usize) -> Result<Vec<f32>> {
    if t >= w.blocks.len() {
        return invalid_input!("block {t} asked for, the model has {}", w.blocks.len());
    }
    Ok(tabulate(w.features(), w.config.cutoff, |d| painn_filter_with_slope(w, t, d)))
}

/// Knots of `filter` (3H values and slopes at d) over [0, cutoff].
fn tabulate(h: usize, cutoff: f32, filter: impl Fn(f64) -> Result<(Vec<f64>, Vec<f64>)> + Sync) -> Vec<f32> {
    let step = cutoff as f64 / TABLE_INTERVALS as f64;
    let mut table = vec![0.0f32; table_len(h)];
    table.par_chunks_mut(6 * h).enumerate().for_each(|(m, row)| {
        let Ok((phi, dphi)) = filter(m as f64 * step) else { return };
        for q in 0..3 * h {
            row[q] = phi[q] as f32;
            row[3 * h + q] = (step * dphi[q]) as f32;
        }
    });
    table
}

//! The student's filter φ(d) = L2(SiLU(L1(rbf(d)·fc(d)))) of a block in f64 with its
//! slope, and the Hermite table the GPU path reads (`model::filter_table`).

use super::StudentWeights;
use crate::error::{invalid_input, Result};
use crate::model::filter_table::{cosine_cutoff, tabulate};

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

//! PaiNN's filter W(d) = (Wf·rbf(d) + b)·fc(d) of a block in f64 with its slope, and
//! the Hermite table the GPU path reads (`model::filter_table`).

use super::PainnWeights;
use crate::error::{invalid_input, Result};
use crate::model::filter_table::{cosine_cutoff, tabulate};

/// PaiNN's filter W(d) = (Wf·rbf(d) + b)·fc(d) and dW/dd (3F each) of block `t`, in f64.
pub fn filter_with_slope(w: &PainnWeights, t: usize, d: f64) -> Result<(Vec<f64>, Vec<f64>)> {
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
pub fn build(w: &PainnWeights, t: usize) -> Result<Vec<f32>> {
    if t >= w.blocks.len() {
        return invalid_input!("block {t} asked for, the model has {}", w.blocks.len());
    }
    Ok(tabulate(w.features(), w.config.cutoff, |d| filter_with_slope(w, t, d)))
}

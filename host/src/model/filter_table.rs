//! The Hermite tables of a block's filter (layout in `kernels::filter_table`), built
//! from the exact network of each architecture (`student/filter.rs`,
//! `painn/filter.rs`) in f64 with forward-mode derivatives.

use crate::error::Result;
use mlff_kernels::filter_table::{table_len, TABLE_INTERVALS};
use rayon::prelude::*;

/// `inv_h` for the kernels: knots per Å.
pub fn inverse_spacing(cutoff: f32) -> f32 {
    (TABLE_INTERVALS as f64 / cutoff as f64) as f32
}

/// fc(d) = ½(cos(πd/rc) + 1) below rc, else 0, and dfc/dd, in f64.
pub(crate) fn cosine_cutoff(d: f64, rc: f64) -> (f64, f64) {
    if d < rc {
        let x = std::f64::consts::PI * d / rc;
        (0.5 * (x.cos() + 1.0), -0.5 * std::f64::consts::PI / rc * x.sin())
    } else {
        (0.0, 0.0)
    }
}

/// Knots of `filter` (3H values and slopes at d) over [0, cutoff].
pub(crate) fn tabulate(h: usize, cutoff: f32, filter: impl Fn(f64) -> Result<(Vec<f64>, Vec<f64>)> + Sync) -> Vec<f32> {
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

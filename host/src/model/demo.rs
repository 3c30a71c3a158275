//! The synthetic demo model bundled in `data/`: deterministic weights, no training,
//! there so that the tools run out of the box until a trained default exists.
//!
//! Its filter layers have no biases and its mixing matrices are the identity, so
//! unlike the shared trained model it is smooth at the cutoff (φ → 0 with the radial
//! features) and rotation-invariant: constant-energy MD with it conserves energy.

use super::painn::{PainnBlock, PainnConfig, PainnWeights};
use super::student::{Interaction, Linear, StudentConfig, StudentWeights};

/// What the demo model's metadata says it is.
pub const DEMO_NOTE: &str = "SYNTHETIC DEMO MODEL: deterministic pseudo-random weights, not trained; \
energies and forces are not physical. Used by tests that need every element (the bundled default covers H C N O F S Cl).";

/// SplitMix64, enough for reproducible weights.
struct SplitMix(u64);

impl SplitMix {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32) / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// PyTorch's default `Linear` initialisation: U(−1/√in, 1/√in), scaled.
    fn linear(&mut self, inputs: usize, outputs: usize, scale: f32, with_bias: bool) -> Linear {
        let bound = scale / (inputs as f32).sqrt();
        let weight_t = (0..inputs * outputs).map(|_| bound * self.uniform()).collect();
        let bias = (0..outputs).map(|_| if with_bias { bound * self.uniform() } else { 0.0 }).collect();
        Linear { weight_t, bias }
    }
}

/// H = 64, T = 2, K = 12, rc = 5 Å, every element up to Z = 100.
pub fn demo_config() -> StudentConfig {
    StudentConfig { hidden_dim: 64, num_interactions: 2, num_rbf: 12, cutoff: 5.0, max_z: 100 }
}

pub fn synthetic_weights(config: StudentConfig, seed: u64) -> StudentWeights {
    let mut rng = SplitMix(seed);
    let (h, k) = (config.hidden_dim, config.num_rbf);
    let centers = (0..k).map(|i| config.cutoff * i as f32 / (k - 1).max(1) as f32).collect();
    let widths = vec![config.cutoff / k as f32 * 1.5; k];
    let embedding = (0..(config.max_z + 1) * h).map(|_| rng.uniform()).collect();
    let interactions = (0..config.num_interactions)
        .map(|_| Interaction {
            filter_in: rng.linear(k, h, 1.0, false),
            filter_out: rng.linear(h, 3 * h, 0.5, false),
            update_in: rng.linear(2 * h, h, 1.0, true),
            update_out: rng.linear(h, 3 * h, 0.5, true),
            mixing: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        })
        .collect();
    let head = [rng.linear(h, h / 2, 1.0, true), rng.linear(h / 2, h / 4, 1.0, true), rng.linear(h / 4, 1, 1.0, true)];
    StudentWeights { config, centers, widths, embedding, interactions, head, atomref: None, elements: None }
}

/// A PaiNN with deterministic pseudo-random weights (SchNetPack's radial basis:
/// offsets linspace(0, rc, K), widths their spacing), for benchmarks and tests that
/// need a PaiNN of a given size.
pub fn synthetic_painn(config: PainnConfig, seed: u64) -> PainnWeights {
    let mut rng = SplitMix(seed);
    let (f, k) = (config.n_atom_basis, config.n_rbf);
    let offsets: Vec<f32> = (0..k).map(|i| config.cutoff * i as f32 / (k - 1).max(1) as f32).collect();
    let widths = vec![config.cutoff / (k - 1).max(1) as f32; k];
    let embedding = (0..(config.max_z + 1) * f).map(|_| rng.uniform()).collect();
    let blocks = (0..config.n_interactions)
        .map(|_| PainnBlock {
            filter: rng.linear(k, 3 * f, 1.0, true),
            context_in: rng.linear(f, f, 1.0, true),
            context_out: rng.linear(f, 3 * f, 1.0, true),
            channel_mix: rng.linear(f, 2 * f, 1.0, false),
            update_in: rng.linear(2 * f, f, 1.0, true),
            update_out: rng.linear(f, 3 * f, 0.5, true),
        })
        .collect();
    let readout = [rng.linear(f, f / 2, 1.0, true), rng.linear(f / 2, 1, 1.0, true)];
    PainnWeights { config, offsets, widths, embedding, blocks, readout, atomref: None }
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use mlff::gpu::{unavailable_reason, Gpu};

/// SplitMix64: deterministic, dependency-free random numbers for tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn f32_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.range(-1.0, 1.0) as f32).collect()
    }
}

/// Distance between two points.
pub fn dist(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Fourth-order central difference dE/dx from E(x + h), E(x − h), E(x + 2h), E(x − 2h).
pub fn fd4(e: &[f64], h: f64) -> f64 {
    (-e[2] + 8.0 * e[0] - 8.0 * e[1] + e[3]) / (12.0 * h)
}

/// GPU 0, or `None` after printing why the calling GPU test is skipped.
pub fn gpu_or_skip(test: &str) -> Option<Gpu> {
    if let Some(reason) = unavailable_reason() {
        // Written to the stderr handle, which the test harness does not capture, so the
        // skip shows in a passing run.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{test}: skipped: no CUDA device ({reason})");
        return None;
    }
    match Gpu::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => panic!("{test}: a CUDA device is present but unusable: {e}"),
    }
}

/// A frame of the float64 reference file (`tests/data/student-g2.extxyz`).
pub struct ReferenceFrame {
    pub name: String,
    pub structure: mlff::Structure,
    pub energy: f64,
    pub forces: Vec<[f64; 3]>,
}

/// The repository's test data (`tests/data`).
pub fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The users' trained student (Orb-v2 teacher, H = 128, T = 3; MIT, see
/// `tests/data/NOTICE.md`).
pub fn shared_model_path() -> std::path::PathBuf {
    data_dir().join("student-orbv2-h128.safetensors")
}

/// Reads `tests/data/student-g2.extxyz` (species, pos, forces; energy= and name= in
/// the comment) with the engine's own extended-XYZ reader.
pub fn reference_frames() -> Vec<ReferenceFrame> {
    let path = data_dir().join("student-g2.extxyz");
    mlff::extxyz::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|f| ReferenceFrame {
            name: f.info.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone()).expect("name="),
            energy: f.energy.expect("energy="),
            forces: f.forces.expect("forces column"),
            structure: f.structure,
        })
        .collect()
}

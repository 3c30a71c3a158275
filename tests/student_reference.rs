//! The CPU path against the float64 reference of the shared trained model.
mod common;

use common::{reference_frames, shared_model_path};
use mlff::{Device, Model};

#[test]
fn cpu_matches_float64_reference() {
    let model = Model::load(shared_model_path()).expect("load shared model");
    let frames = reference_frames();
    assert!(frames.len() >= 10);
    let structures: Vec<_> = frames.iter().map(|f| f.structure.clone()).collect();
    let device = Device::cpu().unwrap();
    let predictions = model.evaluate(&device, &structures).unwrap();
    let mut worst_energy = 0.0f64;
    let mut worst_force = 0.0f64;
    for (frame, p) in frames.iter().zip(&predictions) {
        let rel = ((p.energy - frame.energy) / frame.energy).abs();
        worst_energy = worst_energy.max(rel);
        assert!(rel <= 1e-5, "{}: E = {} vs reference {} (rel {rel:.2e})", frame.name, p.energy, frame.energy);
        for (atom, (f, r)) in p.forces.iter().zip(&frame.forces).enumerate() {
            for x in 0..3 {
                let err = (f[x] - r[x]).abs();
                worst_force = worst_force.max(err);
                assert!(err <= 1e-4, "{} atom {atom}: F = {f:?} vs reference {r:?}", frame.name);
            }
        }
    }
    println!("worst relative energy error {worst_energy:.2e}, worst force error {worst_force:.2e} eV/Å");
}

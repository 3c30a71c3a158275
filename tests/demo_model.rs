//! The bundled synthetic demo model: regenerable bit for bit from its recipe, and
//! as smooth and invariant as its construction promises.

use mlff::model::demo::{demo_config, synthetic_weights};
use mlff::{Device, Structure};

#[test]
fn bundled_file_is_the_recipe() {
    let bundled = mlff::default_model().unwrap();
    let fresh = synthetic_weights(demo_config(), 2026);
    let w = bundled.student_weights().expect("architecture 1");
    assert_eq!(w.config, fresh.config);
    assert_eq!(w.embedding, fresh.embedding);
    assert_eq!(w.centers, fresh.centers);
    for (a, b) in w.interactions.iter().zip(&fresh.interactions) {
        assert_eq!(a.filter_out.weight_t, b.filter_out.weight_t);
        assert_eq!(a.update_in.bias, b.update_in.bias);
        assert_eq!(a.mixing, b.mixing);
    }
    assert_eq!(w.head[2].weight_t, fresh.head[2].weight_t);
    assert!(bundled.metadata()["note"].contains("SYNTHETIC DEMO MODEL"));
}

fn energy(positions: Vec<[f64; 3]>, numbers: Vec<u32>) -> f64 {
    let model = mlff::default_model().unwrap();
    model.energies(&Device::cpu().unwrap(), &[Structure::molecule(numbers, positions)]).unwrap()[0]
}

#[test]
fn rotation_invariant_and_continuous_at_the_cutoff() {
    let frames = mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "molecules.xyz").unwrap();
    let dimer = frames.iter().find(|f| f.structure.len() == 24).unwrap().structure.clone();
    let (s, c) = (0.7f64.sin(), 0.7f64.cos());
    let rotated: Vec<[f64; 3]> = dimer.positions.iter().map(|p| [c * p[0] - s * p[2], p[1], s * p[0] + c * p[2]]).collect();
    let (e0, e1) = (energy(dimer.positions.clone(), dimer.numbers.clone()), energy(rotated, dimer.numbers.clone()));
    assert!((e0 - e1).abs() < 1e-5 * e0.abs(), "rotation moved E from {e0} to {e1}");
    // Two atoms just inside and just outside the 5 Å cutoff.
    let pair = |d: f64| energy(vec![[0.0; 3], [d, 0.0, 0.0]], vec![6, 8]);
    let (inside, outside) = (pair(5.0 - 1e-4), pair(5.0 + 1e-4));
    assert!((inside - outside).abs() < 1e-6, "E jumps across the cutoff: {inside} vs {outside}");
}

//! The bundled default model (distilled from GFN2-xTB by `tools/distill/`): it loads,
//! says what it is, reproduces held-out teacher labels to its training accuracy, is
//! smooth and rotation-invariant as trained, and refuses elements it never saw.

use mlff::{Device, Structure};

fn cpu() -> Device {
    Device::cpu().unwrap()
}

#[test]
fn default_model_records_its_provenance() {
    let model = mlff::default_model().unwrap();
    let meta = model.metadata();
    assert!(meta["teacher"].contains("GFN2-xTB"), "{meta:?}");
    assert_eq!(meta["elements"], "H C N O F S Cl");
    let errors: serde_json::Value = serde_json::from_str(&meta["held_out_errors"]).unwrap();
    assert!(errors["force_mae_ev_per_a"].as_f64().unwrap() < 0.1, "{errors}");
    assert_eq!((model.hidden_dim(), model.num_interactions()), (64, 2));
}

#[test]
fn default_model_reproduces_held_out_teacher_labels() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gfn2-heldout.extxyz");
    let frames = mlff::extxyz::read(&path).unwrap();
    assert!(frames.len() >= 40);
    let structures: Vec<Structure> = frames.iter().map(|f| f.structure.clone()).collect();
    let predictions = mlff::default_model().unwrap().evaluate(&cpu(), &structures).unwrap();
    let (mut e_sum, mut f_sum, mut f_count, mut atoms) = (0.0, 0.0, 0usize, 0usize);
    for (p, f) in predictions.iter().zip(&frames) {
        e_sum += (p.energy - f.energy.unwrap()).abs();
        atoms += p.forces.len();
        for (a, b) in p.forces.iter().zip(f.forces.as_ref().unwrap()) {
            for x in 0..3 {
                f_sum += (a[x] - b[x]).abs();
                f_count += 1;
            }
        }
    }
    let (e_mae_per_atom, f_mae) = (e_sum / atoms as f64, f_sum / f_count as f64);
    // Training reached 6.7 meV/atom and 0.039 eV/Å on 1,224 held-out frames; one frame
    // per molecule here. A wrong file, layout or reference energy is off by far more.
    assert!(e_mae_per_atom < 0.03, "energy MAE {e_mae_per_atom} eV/atom");
    assert!(f_mae < 0.1, "force MAE {f_mae} eV/Å");
}

#[test]
fn default_model_is_rotation_invariant_and_smooth_at_the_cutoff() {
    let model = mlff::default_model().unwrap();
    let frames = mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "molecules.xyz").unwrap();
    let dimer = frames.iter().find(|f| f.structure.len() == 24).unwrap().structure.clone();
    let (s, c) = (0.7f64.sin(), 0.7f64.cos());
    let mut rotated = dimer.clone();
    rotated.positions = dimer.positions.iter().map(|p| [c * p[0] - s * p[2], p[1], s * p[0] + c * p[2]]).collect();
    let e = model.energies(&cpu(), &[dimer, rotated]).unwrap();
    assert!((e[0] - e[1]).abs() < 1e-5 * e[0].abs(), "rotation moved E from {} to {}", e[0], e[1]);
    let rc = model.cutoff() as f64;
    let pair = |d: f64| Structure::molecule(vec![6, 8], vec![[0.0; 3], [d, 0.0, 0.0]]);
    let out = model.evaluate(&cpu(), &[pair(rc - 1e-4), pair(rc + 1e-4)]).unwrap();
    assert!(
        (out[0].energy - out[1].energy).abs() < 1e-5,
        "E jumps across the cutoff: {} vs {}",
        out[0].energy,
        out[1].energy
    );
    assert!(out[0].forces[0][0].abs() < 1e-4, "F jumps across the cutoff: {:?}", out[0].forces);
}

#[test]
fn default_model_refuses_elements_it_was_not_trained_on() {
    let model = mlff::default_model().unwrap();
    let silane = Structure::molecule(vec![14, 1], vec![[0.0; 3], [1.48, 0.0, 0.0]]);
    let e = model.evaluate(&cpu(), &[silane]).unwrap_err().to_string();
    assert!(e.contains("Si") && e.contains("training data"), "{e}");
    let copper = Structure::molecule(vec![29], vec![[0.0; 3]]);
    let e = model.evaluate(&cpu(), &[copper]).unwrap_err().to_string();
    assert!(e.contains("29"), "{e}");
}

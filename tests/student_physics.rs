//! Properties of the CPU path that must hold whatever the weights: forces are the
//! gradient of the energy, batching changes nothing, symmetries, and edge cases.
mod common;

use common::{dist, fd4, reference_frames, shared_model_path, Rng};
use mlff::{Device, Model, Structure};

fn model() -> Model {
    Model::load(shared_model_path()).expect("load shared model")
}

fn cpu() -> Device {
    Device::cpu().unwrap()
}

/// A random organic-density molecule-like cluster of H C N O.
fn random_structure(rng: &mut Rng, n: usize) -> Structure {
    let side = (10.0 * n as f64).cbrt();
    loop {
        let positions: Vec<[f64; 3]> = (0..n).map(|_| [0; 3].map(|_| rng.range(0.0, side))).collect();
        let too_close = (0..n).any(|i| (0..i).any(|j| dist(&positions[i], &positions[j]) < 0.7));
        if !too_close {
            let numbers = (0..n).map(|_| [1, 6, 7, 8][rng.below(4)]).collect();
            return Structure::molecule(numbers, positions);
        }
    }
}

/// Shortest distance |d − rc| over all pairs and images within ±2 cells.
fn closest_to_cutoff(s: &Structure, rc: f64) -> f64 {
    let cell = s.cell.unwrap_or([[0.0; 3]; 3]);
    let range: Vec<f64> = if s.cell.is_some() { vec![-2.0, -1.0, 0.0, 1.0, 2.0] } else { vec![0.0] };
    let mut closest = f64::INFINITY;
    for i in 0..s.len() {
        for j in 0..s.len() {
            for &a in &range {
                for &b in &range {
                    for &c in &range {
                        let q: [f64; 3] = std::array::from_fn(|x| {
                            s.positions[j][x] + a * cell[0][x] + b * cell[1][x] + c * cell[2][x]
                        });
                        let d = dist(&s.positions[i], &q);
                        if d > 0.0 {
                            closest = closest.min((d - rc).abs());
                        }
                    }
                }
            }
        }
    }
    closest
}

#[test]
fn forces_are_minus_the_gradient_of_the_energy() {
    let (model, device) = (model(), cpu());
    // f32 energies: rounding noise ~ε|E|/h favours large steps, the stiff bonds of these
    // off-equilibrium molecules favour small ones (at h = 1e-2 Å truncation reaches
    // 1e-2 eV/Å on C–Cl); h = 2e-3 Å with a 4th-order stencil keeps both near 2e-3.
    // The model's energy jumps where a pair crosses rc, so only molecules with no pair
    // within 2.5h of rc are used.
    let h = 2e-3;
    let rc = model.cutoff() as f64;
    let frames: Vec<_> = reference_frames()
        .into_iter()
        .filter(|f| f.structure.len() >= 5 && closest_to_cutoff(&f.structure, rc) > 2.5 * h)
        .collect();
    assert!(frames.len() >= 4, "too few reference molecules away from the cutoff");
    for frame in &frames {
        let base = &frame.structure;
        let forces = &model.evaluate(&device, std::slice::from_ref(base)).unwrap()[0].forces;
        let mut displaced = Vec::new();
        for atom in 0..base.len() {
            for x in 0..3 {
                for step in [h, -h, 2.0 * h, -2.0 * h] {
                    let mut s = base.clone();
                    s.positions[atom][x] += step;
                    displaced.push(s);
                }
            }
        }
        let energies = model.energies(&device, &displaced).unwrap();
        let mut sum_sq = 0.0;
        for atom in 0..base.len() {
            for x in 0..3 {
                let k = 4 * (3 * atom + x);
                let fd = -fd4(&energies[k..k + 4], h);
                let err = (fd - forces[atom][x]).abs();
                sum_sq += err * err;
                // Rounding noise of f32 energies grows with the local curvature.
                assert!(
                    err < 5e-3 + 1e-3 * forces[atom][x].abs(),
                    "{} atom {atom} axis {x}: analytic {} vs FD {fd}",
                    frame.name,
                    forces[atom][x]
                );
            }
        }
        // A missing or wrong adjoint term shows as errors of 0.1 eV/Å and more on many
        // components; f32 rounding noise stays at a few 1e-3 here. The sharp check of the forces is
        // against the float64 reference (student_reference.rs).
        let rms = (sum_sq / (3 * base.len()) as f64).sqrt();
        assert!(rms < 4e-3, "{}: RMS |analytic − FD| = {rms:.2e} eV/Å", frame.name);
    }
}

#[test]
fn a_batch_gives_exactly_the_per_structure_results() {
    let (model, device) = (model(), cpu());
    let mut rng = Rng::new(11);
    let structures: Vec<Structure> = [5, 1, 24, 0, 13, 40].iter().map(|&n| random_structure(&mut rng, n)).collect();
    let batched = model.evaluate(&device, &structures).unwrap();
    for (s, b) in structures.iter().zip(&batched) {
        let alone = &model.evaluate(&device, std::slice::from_ref(s)).unwrap()[0];
        assert_eq!(alone, b, "batching changed a result");
    }
}

#[test]
fn permuting_atoms_permutes_forces_and_translation_keeps_energy() {
    let (model, device) = (model(), cpu());
    let mut rng = Rng::new(12);
    let s = random_structure(&mut rng, 30);
    let base = &model.evaluate(&device, std::slice::from_ref(&s)).unwrap()[0];
    let perm: Vec<usize> = (0..s.len()).rev().collect();
    let permuted = Structure::molecule(
        perm.iter().map(|&p| s.numbers[p]).collect(),
        perm.iter().map(|&p| s.positions[p]).collect(),
    );
    let pp = &model.evaluate(&device, &[permuted]).unwrap()[0];
    assert!(((pp.energy - base.energy) / base.energy).abs() < 1e-6);
    for (k, &p) in perm.iter().enumerate() {
        for x in 0..3 {
            assert!((pp.forces[k][x] - base.forces[p][x]).abs() < 1e-4, "atom {p}");
        }
    }
    let mut moved = s.clone();
    for p in &mut moved.positions {
        p[0] += 3.25;
        p[1] -= 1.5;
        p[2] += 0.75;
    }
    let pm = &model.evaluate(&device, &[moved]).unwrap()[0];
    assert!(((pm.energy - base.energy) / base.energy).abs() < 1e-5, "{} vs {}", pm.energy, base.energy);
    let sum: [f64; 3] = std::array::from_fn(|x| base.forces.iter().map(|f| f[x]).sum());
    assert!(sum.iter().all(|c| c.abs() < 1e-3), "net force {sum:?} of an isolated molecule");
}

#[test]
fn empty_single_and_isolated_atoms() {
    let (model, device) = (model(), cpu());
    let empty = Structure::molecule(vec![], vec![]);
    let single = Structure::molecule(vec![8], vec![[0.0, 0.0, 0.0]]);
    // Two atoms 12 Å apart: no edges, so each is a lone atom.
    let apart = Structure::molecule(vec![8, 1], vec![[0.0; 3], [12.0, 0.0, 0.0]]);
    let out = model.evaluate(&device, &[empty, single, apart]).unwrap();
    assert_eq!(out[0].energy, 0.0);
    assert!(out[0].forces.is_empty());
    assert!(out[1].energy.is_finite());
    assert_eq!(out[1].forces, vec![[0.0; 3]]);
    assert!((out[2].energy - (out[1].energy + out[2].atom_energies[1])).abs() < 1e-9);
    assert!(out[2].forces.iter().flatten().all(|&f| f == 0.0));
}

#[test]
fn bad_input_is_a_clear_error() {
    let (model, device) = (model(), cpu());
    let unknown = Structure::molecule(vec![1, 150], vec![[0.0; 3], [1.0, 0.0, 0.0]]);
    let err = model.evaluate(&device, &[unknown]).unwrap_err().to_string();
    assert!(err.contains("atomic number 150"), "{err}");
    let zero = Structure::molecule(vec![0], vec![[0.0; 3]]);
    assert!(model.evaluate(&device, &[zero]).is_err());
    let overlap = Structure::molecule(vec![1, 1], vec![[1.0; 3], [1.0; 3]]);
    let err = model.evaluate(&device, &[overlap]).unwrap_err().to_string();
    assert!(err.contains("on top of each other"), "{err}");
    let nan = Structure::molecule(vec![1], vec![[f64::NAN, 0.0, 0.0]]);
    assert!(model.evaluate(&device, &[nan]).unwrap_err().to_string().contains("non-finite"));
}

#[test]
fn periodic_stress_is_the_strain_derivative() {
    let (model, device) = (model(), cpu());
    let mut rng = Rng::new(13);
    // A small skewed periodic box (smaller than two cutoffs: several images per pair).
    let cell = [[6.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 7.0]];
    let n = 8;
    let positions: Vec<[f64; 3]> = loop {
        let p: Vec<[f64; 3]> = (0..n)
            .map(|_| {
                let f = [rng.uniform(), rng.uniform(), rng.uniform()];
                std::array::from_fn(|x| (0..3).map(|a| f[a] * cell[a][x]).sum())
            })
            .collect();
        let s = Structure::periodic(vec![6; n], p.clone(), cell, [true; 3]);
        if min_image_ok(&p, &cell) && closest_to_cutoff(&s, model.cutoff() as f64) > 0.03 {
            break p;
        }
    };
    let numbers: Vec<u32> = (0..n).map(|_| [1, 6, 7, 8][rng.below(4)]).collect();
    let s = Structure::periodic(numbers, positions, cell, [true; 3]);
    let p = &model.evaluate(&device, std::slice::from_ref(&s)).unwrap()[0];
    let stress = p.stress.expect("periodic structure has a stress");
    let volume = s.volume().unwrap();
    // Strain steps of 1e-3 move atoms by < 0.015 Å: no pair crosses rc (checked above).
    let h = 1e-3;
    for a in 0..3 {
        for b in 0..3 {
            let strained = |e: f64| {
                let mut eps = [[0.0; 3]; 3];
                eps[a][b] = e;
                let apply = |v: &[f64; 3]| -> [f64; 3] {
                    std::array::from_fn(|y| v[y] + (0..3).map(|x| v[x] * eps[x][y]).sum::<f64>())
                };
                let mut t = s.clone();
                t.positions = s.positions.iter().map(apply).collect();
                t.cell = Some(cell.map(|row| apply(&row)));
                t
            };
            let e =
                model.energies(&device, &[strained(h), strained(-h), strained(2.0 * h), strained(-2.0 * h)]).unwrap();
            let fd = fd4(&e, h) / volume;
            assert!((fd - stress[a][b]).abs() < 1e-4, "σ[{a}][{b}] = {} vs FD {fd}", stress[a][b]);
        }
    }
    // Forces of the periodic structure are the gradient too.
    let forces = &p.forces;
    let hx = 1e-2;
    for atom in [0, 7] {
        let moved = |step: f64| {
            let mut t = s.clone();
            t.positions[atom][1] += step;
            t
        };
        let e = model.energies(&device, &[moved(hx), moved(-hx), moved(2.0 * hx), moved(-2.0 * hx)]).unwrap();
        let fd = -fd4(&e, hx);
        assert!((fd - forces[atom][1]).abs() < 2e-3, "periodic atom {atom}: {} vs FD {fd}", forces[atom][1]);
    }
}

/// No two atoms (in any image) closer than 0.8 Å.
fn min_image_ok(p: &[[f64; 3]], cell: &[[f64; 3]; 3]) -> bool {
    for i in 0..p.len() {
        for j in 0..p.len() {
            for s in [-1.0, 0.0, 1.0f64] {
                for t in [-1.0, 0.0, 1.0f64] {
                    for u in [-1.0, 0.0, 1.0f64] {
                        if i == j && s == 0.0 && t == 0.0 && u == 0.0 {
                            continue;
                        }
                        let q: [f64; 3] =
                            std::array::from_fn(|x| p[j][x] + s * cell[0][x] + t * cell[1][x] + u * cell[2][x]);
                        if dist(&p[i], &q) < 0.8 {
                            return false;
                        }
                    }
                }
            }
        }
    }
    true
}

//! Weighted evaluation (`Model::evaluate_weighted`): the energy Σ w_i E_i, its forces
//! over every atom, the virial and per-atom virials. What a domain-decomposed MD code
//! relies on: unit weights are `evaluate` exactly; forces are the gradient of the
//! weighted energy; per-atom virials sum to the virial; a periodic structure equals a
//! non-periodic cluster of its atoms (weight 1) and their images (weight 0) within
//! T × rc; and the GPU agrees with the CPU.
// 3×3 tensors read best indexed by their components.
#![allow(clippy::needless_range_loop)]
mod common;

use common::{dist, fd4, reference_frames, shared_model_path, Rng};
use mlff::{AtomVirials, Device, Model, Structure, WeightedPrediction};
use std::sync::Arc;

fn cpu() -> Device {
    Device::cpu().unwrap()
}

/// The three architectures' test models: the shared student (H=128, T=3), the bundled
/// default student (H=64, T=2) and a PaiNN fixture (F=32, T=3, atomrefs and mean).
fn models() -> Vec<(&'static str, Model)> {
    let painn = common::data_dir().join("painn-f32-t3.safetensors");
    vec![
        ("shared student", Model::load(shared_model_path()).unwrap()),
        ("default student", mlff::default_model().unwrap()),
        ("PaiNN", Model::load(painn).unwrap()),
    ]
}

fn water_box() -> Structure {
    mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "water-box.xyz").unwrap().remove(0).structure
}

/// A molecule of the reference set (C, H, N, O only, which every test model knows).
fn molecule() -> Structure {
    reference_frames()
        .into_iter()
        .map(|f| f.structure)
        .find(|s| s.len() >= 8 && s.numbers.iter().all(|z| [1, 6, 7, 8].contains(z)))
        .expect("a reference molecule of H C N O")
}

/// Shortest |d − rc| over the pairs of a molecule.
fn closest_to_cutoff(s: &Structure, rc: f64) -> f64 {
    let mut closest = f64::INFINITY;
    for i in 0..s.len() {
        for j in 0..i {
            closest = closest.min((dist(&s.positions[i], &s.positions[j]) - rc).abs());
        }
    }
    closest
}

#[test]
fn unit_weights_reproduce_evaluate_exactly() {
    let device = cpu();
    for (name, model) in models() {
        for s in [molecule(), water_box()] {
            let plain = &model.evaluate(&device, std::slice::from_ref(&s)).unwrap()[0];
            let w = model.evaluate_weighted(&device, &s, &vec![1.0; s.len()], AtomVirials::Compute).unwrap();
            assert_eq!(w.energy, plain.energy, "{name}");
            assert_eq!(w.atom_energies, plain.atom_energies, "{name}");
            assert_eq!(w.forces, plain.forces, "{name}");
            if let (Some(stress), Some(volume)) = (plain.stress, s.volume()) {
                // σ = −W/V, both summed in the same order.
                for a in 0..3 {
                    for b in 0..3 {
                        assert_eq!(stress[a][b], -w.virial[a][b] / volume, "{name} σ[{a}][{b}]");
                    }
                }
            }
        }
    }
}

#[test]
fn weighted_forces_are_the_gradient_of_the_weighted_energy() {
    let device = cpu();
    let mut rng = Rng::new(21);
    // h and tolerances as in student_physics.rs (f32 energies, 4th-order stencil).
    let h = 2e-3;
    for (name, model) in models() {
        let s = molecule();
        assert!(closest_to_cutoff(&s, model.cutoff() as f64) > 2.5 * h, "{name}: a pair sits at rc");
        // Some atoms own nothing (0), some all (1), the rest a random share.
        let weights: Vec<f64> = (0..s.len()).map(|i| [0.0, 1.0, rng.range(-0.5, 1.5)][i % 3]).collect();
        let base = model.evaluate_weighted(&device, &s, &weights, AtomVirials::Skip).unwrap();
        let expected: f64 = base.atom_energies.iter().sum();
        assert!((base.energy - expected).abs() <= 1e-9 * expected.abs(), "{name}: E ≠ Σ w_i E_i");
        let energy = |atom: usize, x: usize, step: f64| {
            let mut t = s.clone();
            t.positions[atom][x] += step;
            model.evaluate_weighted(&device, &t, &weights, AtomVirials::Skip).unwrap().energy
        };
        let mut sum_sq = 0.0;
        for atom in 0..s.len() {
            for x in 0..3 {
                let e: Vec<f64> = [h, -h, 2.0 * h, -2.0 * h].iter().map(|&step| energy(atom, x, step)).collect();
                let fd = -fd4(&e, h);
                let err = (fd - base.forces[atom][x]).abs();
                sum_sq += err * err;
                assert!(
                    err < 5e-3 + 1e-3 * fd.abs(),
                    "{name} atom {atom} axis {x}: analytic {} vs FD {fd}",
                    base.forces[atom][x]
                );
            }
        }
        let rms = (sum_sq / (3 * s.len()) as f64).sqrt();
        assert!(rms < 4e-3, "{name}: RMS |analytic − FD| = {rms:.2e} eV/Å");
        // Weights of zero everywhere: no energy, no force.
        let zero = model.evaluate_weighted(&device, &s, &vec![0.0; s.len()], AtomVirials::Skip).unwrap();
        assert_eq!(zero.energy, 0.0);
        assert!(zero.forces.iter().flatten().all(|&f| f == 0.0), "{name}");
    }
}

/// Σ_i of the per-atom virials, as a 3×3.
fn sum_atom_virials(p: &WeightedPrediction) -> [[f64; 3]; 3] {
    let mut sum = [[0.0; 3]; 3];
    for w in p.atom_virials.as_ref().expect("atom virials asked for") {
        for a in 0..3 {
            for b in 0..3 {
                sum[a][b] += w[a][b];
            }
        }
    }
    sum
}

#[test]
fn atom_virials_sum_to_the_virial_and_the_virial_is_r_dot_f() {
    let device = cpu();
    let mut rng = Rng::new(22);
    for (name, model) in models() {
        for s in [molecule(), water_box()] {
            let weights: Vec<f64> = (0..s.len()).map(|_| rng.range(0.0, 1.0)).collect();
            let p = model.evaluate_weighted(&device, &s, &weights, AtomVirials::Compute).unwrap();
            let sum = sum_atom_virials(&p);
            let scale = p.virial.iter().flatten().map(|x| x.abs()).fold(1.0, f64::max);
            for a in 0..3 {
                for b in 0..3 {
                    assert!((sum[a][b] - p.virial[a][b]).abs() < 1e-9 * scale, "{name} W[{a}][{b}]");
                }
            }
            if s.cell.is_none() {
                // Without a cell, W = Σ_i R_i ⊗ F_i (translation invariance).
                for a in 0..3 {
                    for b in 0..3 {
                        let rf: f64 = s.positions.iter().zip(&p.forces).map(|(r, f)| r[a] * f[b]).sum();
                        assert!(
                            (rf - p.virial[a][b]).abs() < 1e-4 * scale,
                            "{name}: Σ R⊗F {rf} vs W {}",
                            p.virial[a][b]
                        );
                    }
                }
            }
        }
    }
}

/// `s`'s atoms (first, in order) and every periodic image within `reach` of one of
/// them, as a non-periodic cluster, with the owner of each cluster atom.
fn ghost_cluster(s: &Structure, reach: f64) -> (Structure, Vec<usize>) {
    let cell = s.cell.expect("periodic");
    let n = s.len();
    let mut numbers = s.numbers.clone();
    let mut positions = s.positions.clone();
    let mut owner: Vec<usize> = (0..n).collect();
    let m = 2i32;
    for a in -m..=m {
        for b in -m..=m {
            for c in -m..=m {
                if (a, b, c) == (0, 0, 0) {
                    continue;
                }
                let shift: [f64; 3] =
                    std::array::from_fn(|x| a as f64 * cell[0][x] + b as f64 * cell[1][x] + c as f64 * cell[2][x]);
                for j in 0..n {
                    let p: [f64; 3] = std::array::from_fn(|x| s.positions[j][x] + shift[x]);
                    if s.positions.iter().any(|q| dist(q, &p) <= reach) {
                        numbers.push(s.numbers[j]);
                        positions.push(p);
                        owner.push(j);
                    }
                }
            }
        }
    }
    (Structure::molecule(numbers, positions), owner)
}

#[test]
fn a_ghost_cluster_reproduces_the_periodic_structure() {
    // What the LAMMPS pair style does on one rank: owned atoms weight 1, ghosts within
    // T × rc weight 0, ghost forces summed back onto their owners.
    let device = cpu();
    let model = mlff::default_model().unwrap();
    let s = water_box();
    let reach = model.num_interactions() as f64 * model.cutoff() as f64;
    let (cluster, owner) = ghost_cluster(&s, reach);
    assert!(cluster.len() > 5 * s.len(), "the shell of T × rc holds most of the cluster");
    let weights: Vec<f64> = (0..cluster.len()).map(|k| if k < s.len() { 1.0 } else { 0.0 }).collect();
    let periodic = &model.evaluate(&device, std::slice::from_ref(&s)).unwrap()[0];
    let p = model.evaluate_weighted(&device, &cluster, &weights, AtomVirials::Compute).unwrap();
    let rel = ((p.energy - periodic.energy) / periodic.energy).abs();
    assert!(rel < 1e-6, "cluster E {} vs periodic {} (rel {rel:.1e})", p.energy, periodic.energy);
    let mut folded = vec![[0.0f64; 3]; s.len()];
    for (k, f) in p.forces.iter().enumerate() {
        for x in 0..3 {
            folded[owner[k]][x] += f[x];
        }
    }
    let worst_difference = |a: &[[f64; 3]], b: &[[f64; 3]]| {
        a.iter().zip(b).flat_map(|(a, b)| (0..3).map(move |x| (a[x] - b[x]).abs())).fold(0.0, f64::max)
    };
    // The f32 noise floor: the cluster's atoms sit at other coordinates relative to its
    // origin than in the box, so they round to f32 differently (~6e-8 of ~15 Å). The
    // same box with every coordinate moved by about that much shows the size of it;
    // the cluster must agree within a small multiple.
    let mut rng = Rng::new(4);
    let mut moved = s.clone();
    moved.positions.iter_mut().flatten().for_each(|x| *x += rng.range(-1.0, 1.0) * 15.0 * 6e-8);
    let translated = &model.evaluate(&device, std::slice::from_ref(&moved)).unwrap()[0];
    let noise = worst_difference(&translated.forces, &periodic.forces);
    let worst = worst_difference(&folded, &periodic.forces);
    println!("cluster vs periodic forces: {worst:.1e} eV/Å; f32 rounding noise {noise:.1e} eV/Å");
    assert!(
        worst < 1e-5f64.max(3.0 * noise),
        "cluster forces differ from the periodic ones by {worst:.1e} eV/Å (f32 noise {noise:.1e})"
    );
    let volume = s.volume().unwrap();
    let stress = periodic.stress.unwrap();
    let sum = sum_atom_virials(&p);
    for a in 0..3 {
        for b in 0..3 {
            let w = -stress[a][b] * volume;
            assert!((p.virial[a][b] - w).abs() < 1e-4 * w.abs().max(1.0), "W[{a}][{b}] {} vs −σV {w}", p.virial[a][b]);
            assert!((sum[a][b] - w).abs() < 1e-4 * w.abs().max(1.0), "Σ atom W[{a}][{b}] {} vs −σV {w}", sum[a][b]);
        }
    }
}

#[test]
fn bad_weights_are_clear_errors() {
    let (device, model) = (cpu(), mlff::default_model().unwrap());
    let s = molecule();
    let short = model.evaluate_weighted(&device, &s, &[1.0], AtomVirials::Skip).unwrap_err().to_string();
    assert!(short.contains(&format!("1 energy weights for {} atoms", s.len())), "{short}");
    let mut nan = vec![1.0; s.len()];
    nan[2] = f64::NAN;
    let err = model.evaluate_weighted(&device, &s, &nan, AtomVirials::Skip).unwrap_err().to_string();
    assert!(err.contains("atom 2 has a non-finite energy weight"), "{err}");
    let unknown = Structure::molecule(vec![1, 92], vec![[0.0; 3], [1.5, 0.0, 0.0]]);
    assert!(model.evaluate_weighted(&device, &unknown, &[1.0, 1.0], AtomVirials::Skip).is_err());
}

#[test]
fn gpu_matches_cpu_for_random_weights() {
    let Some(gpu) = common::gpu_or_skip("weighted::gpu_matches_cpu_for_random_weights") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let device = cpu();
    let mut rng = Rng::new(23);
    for (name, model) in models() {
        let water = water_box();
        let (cluster, _) = ghost_cluster(&water, model.num_interactions() as f64 * model.cutoff() as f64);
        for s in [molecule(), water, cluster] {
            let weights: Vec<f64> = (0..s.len()).map(|i| if i % 4 == 0 { 0.0 } else { rng.range(-1.0, 2.0) }).collect();
            let c = model.evaluate_weighted(&device, &s, &weights, AtomVirials::Compute).unwrap();
            // Three calls: eager, graph capture, graph replay (and once without atom virials).
            for virials in [AtomVirials::Compute, AtomVirials::Compute, AtomVirials::Skip, AtomVirials::Compute] {
                let g = model.evaluate_weighted(&gpu, &s, &weights, virials).unwrap();
                let scale = c.energy.abs().max(1.0);
                assert!((g.energy - c.energy).abs() < 1e-5 * scale, "{name}: E gpu {} cpu {}", g.energy, c.energy);
                for (eg, ec) in g.atom_energies.iter().zip(&c.atom_energies) {
                    assert!((eg - ec).abs() < 1e-5 * ec.abs().max(1.0), "{name}: atom E gpu {eg} cpu {ec}");
                }
                for (fg, fc) in g.forces.iter().zip(&c.forces) {
                    for x in 0..3 {
                        assert!((fg[x] - fc[x]).abs() < 1e-4 + 1e-5 * fc[x].abs(), "{name}: F gpu {fg:?} cpu {fc:?}");
                    }
                }
                // The virial sums r ⊗ ∂E/∂r over every edge in f32 per atom: ~1e-5 of
                // its size is f32 noise (measured 2e-5 on the H200 for the water box),
                // so 1e-4 of it.
                let wscale = c.virial.iter().flatten().map(|x| x.abs()).fold(1.0, f64::max);
                for a in 0..3 {
                    for b in 0..3 {
                        assert!(
                            (g.virial[a][b] - c.virial[a][b]).abs() < 1e-4 * wscale,
                            "{name}, {} atoms, {virials:?}: W[{a}][{b}] gpu {} cpu {} (scale {wscale})",
                            s.len(),
                            g.virial[a][b],
                            c.virial[a][b]
                        );
                    }
                }
                match virials {
                    AtomVirials::Skip => assert!(g.atom_virials.is_none()),
                    AtomVirials::Compute => {
                        let (ga, ca) = (g.atom_virials.as_ref().unwrap(), c.atom_virials.as_ref().unwrap());
                        for (wg, wc) in ga.iter().zip(ca) {
                            for a in 0..3 {
                                for b in 0..3 {
                                    assert!(
                                        (wg[a][b] - wc[a][b]).abs() < 1e-4 + 1e-5 * wc[a][b].abs(),
                                        "{name}: atom W gpu {wg:?} cpu {wc:?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        // Unit weights on the GPU are the GPU's own `evaluate` on the layered engine
        // (which weighted calls use; molecules would otherwise go to the fused one).
        let s = molecule();
        let layered = model.with_engine(mlff::model::fused::EngineChoice::Layered);
        let plain = &layered.evaluate(&gpu, std::slice::from_ref(&s)).unwrap()[0];
        let w = model.evaluate_weighted(&gpu, &s, &vec![1.0; s.len()], AtomVirials::Skip).unwrap();
        assert_eq!(w.forces, plain.forces, "{name}");
        assert_eq!(w.energy, plain.energy, "{name}");
    }
}

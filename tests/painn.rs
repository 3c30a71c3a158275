//! PaiNN (architecture 2 of MODEL.md): SchNetPack's own float64 results on the
//! fixtures of `tools/painn_reference.py`, forces as the gradient, rotation
//! invariance and equivariance, smoothness across the cutoff, stress, the GPU
//! against the CPU, and clear errors for malformed files.
mod common;

use common::{dist, fd4, Rng};
use mlff::{Device, Model, Prediction, Structure};
use std::path::PathBuf;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// The two fixtures: F=32, T=3 with mean and atomrefs; F=64, T=2 with shared filters
/// and interactions.
const MODELS: [&str; 2] = ["painn-f32-t3", "painn-f64-shared"];

fn model(name: &str) -> Model {
    Model::load(fixture(&format!("{name}.safetensors"))).expect("load PaiNN fixture")
}

fn cpu() -> Device {
    Device::cpu().unwrap()
}

fn reference(name: &str) -> Vec<mlff::extxyz::Frame> {
    mlff::extxyz::read(fixture(&format!("{name}.extxyz"))).expect("read PaiNN reference")
}

/// A random molecule-like cluster of H C N O (no two atoms closer than 0.9 Å).
fn random_molecule(rng: &mut Rng, n: usize) -> Structure {
    let side = (10.0 * n as f64).cbrt();
    loop {
        let positions: Vec<[f64; 3]> = (0..n).map(|_| [0; 3].map(|_| rng.range(0.0, side))).collect();
        if !(0..n).any(|i| (0..i).any(|j| dist(&positions[i], &positions[j]) < 0.9)) {
            let numbers = (0..n).map(|_| [1, 6, 7, 8][rng.below(4)]).collect();
            return Structure::molecule(numbers, positions);
        }
    }
}

#[test]
fn loads_schnetpack_models_with_their_config() {
    let m = model("painn-f32-t3");
    assert_eq!(m.architecture(), "schnetpack.PaiNN");
    assert_eq!((m.hidden_dim(), m.num_interactions(), m.cutoff()), (32, 3, 5.0));
    let shared = model("painn-f64-shared");
    assert_eq!((shared.hidden_dim(), shared.num_interactions(), shared.cutoff()), (64, 2, 4.5));
    // Shared weights count once: one filter K→3F and one block.
    let f = 64;
    let block = (f * f + f) + (f * 3 * f + 3 * f) + 2 * f * f + (2 * f * f + f) + (f * 3 * f + 3 * f);
    assert_eq!(shared.parameter_count(), 100 * f + (16 * 3 * f + 3 * f) + block + (f * f / 2 + f / 2) + (f / 2 + 1));
}

#[test]
fn cpu_matches_schnetpack_float64() {
    let device = cpu();
    for name in MODELS {
        let m = model(name);
        let frames = reference(name);
        let structures: Vec<Structure> = frames.iter().map(|f| f.structure.clone()).collect();
        let predictions = m.evaluate(&device, &structures).unwrap();
        let (mut worst_e, mut worst_f) = (0.0f64, 0.0f64);
        for (k, (p, f)) in predictions.iter().zip(&frames).enumerate() {
            let e_ref = f.energy.expect("energy=");
            let rel = ((p.energy - e_ref) / e_ref.abs().max(1.0)).abs();
            worst_e = worst_e.max(rel);
            assert!(rel < 1e-5, "{name} structure {k}: E {} vs SchNetPack {e_ref} (rel {rel:.1e})", p.energy);
            for (i, (fa, fr)) in p.forces.iter().zip(f.forces.as_ref().expect("forces")).enumerate() {
                for x in 0..3 {
                    let d = (fa[x] - fr[x]).abs();
                    worst_f = worst_f.max(d);
                    assert!(
                        d < 1e-4 + 1e-5 * fr[x].abs(),
                        "{name} structure {k} atom {i}: F {fa:?} vs SchNetPack {fr:?}"
                    );
                }
            }
        }
        eprintln!("{name}: worst relative energy error {worst_e:.1e}, worst force error {worst_f:.1e} eV/Å");
    }
}

#[test]
fn forces_are_minus_the_gradient_of_the_energy() {
    let device = cpu();
    let mut rng = Rng::new(5);
    for name in MODELS {
        let m = model(name);
        let base = random_molecule(&mut rng, 10);
        let forces = &m.evaluate(&device, std::slice::from_ref(&base)).unwrap()[0].forces;
        let h = 2e-3;
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
        let energies = m.energies(&device, &displaced).unwrap();
        let scale = forces.iter().flatten().fold(0.0f64, |a, f| a.max(f.abs()));
        for atom in 0..base.len() {
            for x in 0..3 {
                let k = 4 * (3 * atom + x);
                let fd = -fd4(&energies[k..k + 4], h);
                // f32 rounding of energies of |E| ~ 1e2 eV over h = 2e-3 Å: ~1e-3 eV/Å.
                assert!(
                    (fd - forces[atom][x]).abs() < 3e-3 + 2e-3 * scale,
                    "{name} atom {atom} axis {x}: analytic {} vs FD {fd}",
                    forces[atom][x]
                );
            }
        }
    }
}

/// A random proper rotation (unit quaternion).
fn rotation(rng: &mut Rng) -> [[f64; 3]; 3] {
    let mut q = [0.0f64; 4].map(|_| rng.range(-1.0, 1.0));
    let n = q.iter().map(|x| x * x).sum::<f64>().sqrt();
    q = q.map(|x| x / n);
    let [a, b, c, d] = q;
    [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a - b * b + c * c - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ]
}

fn rotate(m: &[[f64; 3]; 3], v: &[f64; 3]) -> [f64; 3] {
    std::array::from_fn(|x| (0..3).map(|y| m[x][y] * v[y]).sum())
}

#[test]
fn energy_is_rotation_invariant_and_forces_rotate_with_the_molecule() {
    let device = cpu();
    let mut rng = Rng::new(17);
    for name in MODELS {
        let m = model(name);
        let molecules: Vec<Structure> = (0..3).map(|k| random_molecule(&mut rng, 8 + 4 * k)).collect();
        for s in &molecules {
            let r = rotation(&mut rng);
            let mut turned = s.clone();
            turned.positions = s.positions.iter().map(|p| rotate(&r, p)).collect();
            let out = m.evaluate(&device, &[s.clone(), turned]).unwrap();
            let (a, b) = (&out[0], &out[1]);
            let e_rel = ((a.energy - b.energy) / a.energy.abs().max(1.0)).abs();
            assert!(e_rel < 1e-5, "{name}: E {} vs rotated {} (rel {e_rel:.1e})", a.energy, b.energy);
            let scale = a.forces.iter().flatten().fold(1.0f64, |acc, f| acc.max(f.abs()));
            for (fa, fb) in a.forces.iter().zip(&b.forces) {
                let expected = rotate(&r, fa);
                for x in 0..3 {
                    assert!((expected[x] - fb[x]).abs() < 1e-5 * scale, "{name}: R·F {expected:?} vs F(R·x) {fb:?}");
                }
            }
        }
    }
}

#[test]
fn energy_and_forces_are_continuous_across_the_cutoff() {
    let device = cpu();
    for name in MODELS {
        let m = model(name);
        let rc = m.cutoff() as f64;
        let pair = |d: f64| Structure::molecule(vec![6, 8], vec![[0.0, 0.0, 0.0], [d, 0.0, 0.0]]);
        let out = m
            .evaluate(&device, &[pair(rc + 0.05), pair(rc - 1e-3), pair(rc - 1e-4), pair(rc - 1e-5), pair(rc - 0.05)])
            .unwrap();
        // Beyond rc the two atoms do not interact: E is the sum of isolated atoms.
        let isolated = out[0].energy;
        let force = |k: usize| out[k].forces[0][0].abs();
        // Well inside, the pair does interact (the test could fail).
        assert!(force(4) > 1e-6, "{name}: no force at rc − 0.05 Å");
        // Approaching rc, fc ~ δ² takes E − E(∞) to 0 as δ² and F as δ.
        assert!((out[3].energy - isolated).abs() < 1e-6 * (1.0 + isolated.abs()), "{name}: E jumps at rc");
        assert!(
            force(2) < 0.2 * force(1) && force(3) < 0.2 * force(2),
            "{name}: F does not vanish at rc: {} {} {}",
            force(1),
            force(2),
            force(3)
        );
    }
}

#[test]
fn periodic_stress_is_the_strain_derivative() {
    let device = cpu();
    let m = model("painn-f32-t3");
    let cell = [[6.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 7.0]];
    let mut rng = Rng::new(23);
    let positions: Vec<[f64; 3]> = (0..6)
        .map(|_| {
            let f = [rng.uniform(), rng.uniform(), rng.uniform()];
            std::array::from_fn(|x| (0..3).map(|a| f[a] * cell[a][x]).sum())
        })
        .collect();
    let s = Structure::periodic(vec![6, 8, 1, 1, 7, 6], positions, cell, [true; 3]);
    let p = &m.evaluate(&device, std::slice::from_ref(&s)).unwrap()[0];
    let stress = p.stress.expect("periodic structure has a stress");
    let volume = s.volume().unwrap();
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
            let e = m.energies(&device, &[strained(h), strained(-h), strained(2.0 * h), strained(-2.0 * h)]).unwrap();
            let fd = fd4(&e, h) / volume;
            assert!((fd - stress[a][b]).abs() < 2e-4, "σ[{a}][{b}] = {} vs FD {fd}", stress[a][b]);
        }
    }
}

#[test]
fn malformed_painn_files_are_clear_errors() {
    let bytes = std::fs::read(fixture("painn-f32-t3.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rewrite = |drop: Option<&str>, config: Option<String>| -> Vec<u8> {
        let tensors: Vec<(String, safetensors::tensor::TensorView)> =
            st.tensors().into_iter().filter(|(name, _)| Some(name.as_str()) != drop).collect();
        let mut meta = metadata.clone();
        if let Some(c) = &config {
            meta.insert("config".into(), c.clone());
        }
        safetensors::serialize(tensors, Some(meta)).unwrap()
    };
    let error = |bytes: Vec<u8>| Model::from_bytes(&bytes).expect_err("must be refused").to_string();
    let missing = error(rewrite(Some("mixing.1.mu_channel_mix.weight"), None));
    assert!(missing.contains("mixing.1.mu_channel_mix.weight"), "{missing}");
    let config = metadata["config"].replace("\"n_atom_basis\": 32", "\"n_atom_basis\": 48");
    let shape = error(rewrite(None, Some(config)));
    assert!(shape.contains("shape"), "{shape}");
    let no_cutoff = error(rewrite(None, Some(metadata["config"].replace("\"cutoff\"", "\"radius\""))));
    assert!(no_cutoff.contains("cutoff"), "{no_cutoff}");
    // An element beyond the embedding is an input error, not a panic.
    let m = model("painn-f32-t3");
    let e = m.evaluate(&cpu(), &[Structure::molecule(vec![1, 100], vec![[0.0; 3], [1.0, 0.0, 0.0]])]).unwrap_err();
    assert!(e.to_string().contains("atomic number 100"), "{e}");
}

fn assert_same(name: &str, gpu: &[Prediction], cpu: &[Prediction]) {
    for (k, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let rel = ((g.energy - c.energy) / c.energy.abs().max(1.0)).abs();
        assert!(rel < 1e-5, "{name} structure {k}: E gpu {} cpu {}", g.energy, c.energy);
        for (fg, fc) in g.forces.iter().zip(&c.forces) {
            for x in 0..3 {
                assert!(
                    (fg[x] - fc[x]).abs() < 1e-4 + 1e-5 * fc[x].abs(),
                    "{name} structure {k}: F gpu {fg:?} cpu {fc:?}"
                );
            }
        }
        if let (Some(sg), Some(sc)) = (&g.stress, &c.stress) {
            for a in 0..3 {
                for b in 0..3 {
                    assert!((sg[a][b] - sc[a][b]).abs() < 1e-5, "{name} structure {k}: stress gpu {sg:?} cpu {sc:?}");
                }
            }
        }
        assert_eq!(g.stress.is_some(), c.stress.is_some());
    }
}

#[test]
fn gpu_matches_cpu() {
    let Some(gpu) = common::gpu_or_skip("painn::gpu_matches_cpu") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let mut rng = Rng::new(31);
    for name in MODELS {
        let m = model(name);
        let mut structures: Vec<Structure> = reference(name).into_iter().map(|f| f.structure).collect();
        structures.extend((0..20).map(|k| random_molecule(&mut rng, 3 + k * 2)));
        let on_cpu = m.evaluate(&cpu(), &structures).unwrap();
        // Twice: the second call replays the captured graph.
        for _ in 0..2 {
            let on_gpu = m.evaluate(&gpu, &structures).unwrap();
            assert_same(name, &on_gpu, &on_cpu);
        }
        let energies = m.energies(&gpu, &structures).unwrap();
        for (e, c) in energies.iter().zip(&on_cpu) {
            assert!(((e - c.energy) / c.energy.abs().max(1.0)).abs() < 1e-5);
        }
    }
    // A large periodic structure: many channel groups per atom are not used, one per warp is.
    let m = model("painn-f64-shared");
    let water = mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "water-box.xyz").unwrap().remove(0).structure;
    let big = supercell(&water, [3, 3, 2]);
    let (g, c) = (
        m.evaluate(&gpu, std::slice::from_ref(&big)).unwrap(),
        m.evaluate(&cpu(), std::slice::from_ref(&big)).unwrap(),
    );
    assert_same("water 3×3×2", &g, &c);
}

/// `s` repeated `n[a]` times along each cell vector.
fn supercell(s: &Structure, n: [usize; 3]) -> Structure {
    let cell = s.cell.expect("periodic");
    let mut numbers = Vec::new();
    let mut positions = Vec::new();
    for a in 0..n[0] {
        for b in 0..n[1] {
            for c in 0..n[2] {
                let shift: [f64; 3] =
                    std::array::from_fn(|x| a as f64 * cell[0][x] + b as f64 * cell[1][x] + c as f64 * cell[2][x]);
                numbers.extend_from_slice(&s.numbers);
                positions.extend(s.positions.iter().map(|p| std::array::from_fn(|x| p[x] + shift[x])));
            }
        }
    }
    let big_cell = std::array::from_fn(|a| cell[a].map(|x| x * n[a] as f64));
    Structure::periodic(numbers, positions, big_cell, [true; 3])
}

#[test]
fn gpu_md_runs_painn() {
    let Some(gpu) = common::gpu_or_skip("painn::gpu_md_runs_painn") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let m = model("painn-f32-t3");
    let molecule = reference("painn-f32-t3").remove(4).structure;
    let settings = mlff::dynamics::MdSettings { timestep: 0.25, thermostat: mlff::dynamics::Thermostat::None, seed: 1 };
    let run = |device: &Device| {
        let mut md = mlff::dynamics::Dynamics::new(&m, device, std::slice::from_ref(&molecule), settings).unwrap();
        md.maxwell_boltzmann(300.0, 1).unwrap();
        md.run(20, 20, |_| Ok(())).unwrap();
        md.current(|r| r.positions.to_vec()).unwrap()
    };
    let (on_gpu, on_cpu) = (run(&gpu), run(&cpu()));
    for (a, b) in on_gpu.iter().zip(&on_cpu) {
        for x in 0..3 {
            assert!((a[x] - b[x]).abs() < 1e-4, "GPU {a:?} vs CPU {b:?} after 20 steps");
        }
    }
}

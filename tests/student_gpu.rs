//! The GPU path of the student model against the CPU path and the float64 reference,
//! and the filter table it reads against the exact filter network.
mod common;

use common::{reference_frames, shared_model_path, Rng};
use mlff::kernels::filter_table::{hermite, value_and_slope, TABLE_INTERVALS};
use mlff::model::filter_table::inverse_spacing;
use mlff::model::student::filter::{build, filter_with_slope};
use mlff::{Device, Model, Prediction, Structure};
use std::sync::Arc;

fn model() -> Model {
    Model::load(shared_model_path()).expect("load shared model")
}

#[test]
fn filter_table_matches_exact_filter() {
    let model = model();
    let w = model.student_weights().expect("architecture 1");
    let h = w.hidden_dim();
    let rc = w.config.cutoff;
    let mut rng = Rng::new(3);
    for t in 0..w.config.num_interactions {
        let table = build(w, t).unwrap();
        let (mut worst_value, mut worst_slope, mut scale, mut slope_scale) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for _ in 0..400 {
            let d = rng.range(1e-3, rc as f64) as f32;
            let (phi, dphi) = filter_with_slope(w, t, d as f64).unwrap();
            let at = hermite(d, inverse_spacing(rc), h);
            for q in 0..3 * h {
                // SAFETY: `table` is the whole table of H = h (`build`), `at` is for the
                // same h and a d within [0, rc], and q < 3h: the knots read lie within.
                let (v, s) = unsafe { value_and_slope(table.as_ptr(), &at, q, h) };
                worst_value = worst_value.max((v as f64 - phi[q]).abs());
                worst_slope = worst_slope.max((s as f64 - dphi[q]).abs());
                scale = scale.max(phi[q].abs());
                slope_scale = slope_scale.max(dphi[q].abs());
            }
        }
        println!("block {t}: max |φ| {scale:.3}, worst φ error {worst_value:.2e}; max |φ'| {slope_scale:.3}, worst φ' error {worst_slope:.2e} ({TABLE_INTERVALS} intervals)");
        assert!(worst_value <= 2e-6 * scale, "block {t}: φ error {worst_value:.2e} vs scale {scale:.2e}");
        assert!(worst_slope <= 3e-5 * slope_scale, "block {t}: φ' error {worst_slope:.2e} vs scale {slope_scale:.2e}");
    }
}

fn gpu_device(test: &str) -> Option<Device> {
    common::gpu_or_skip(test).map(|g| Device::Gpu(Arc::new(g)))
}

/// Energies to `rel` relative; forces to `force` eV/Å plus 1e-5 of their size (the
/// random structures have forces of tens of eV/Å, where f32 summation order and the
/// filter table's ~1e-5 relative slope error show at that level); stress to 1e-5 eV/Å³.
fn assert_close(name: &str, gpu: &[Prediction], cpu: &[Prediction], rel: f64, force: f64) -> (f64, f64) {
    assert_eq!(gpu.len(), cpu.len(), "{name}");
    let (mut worst_e, mut worst_f) = (0.0f64, 0.0f64);
    for (k, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let e = ((g.energy - c.energy) / c.energy.abs().max(1.0)).abs();
        worst_e = worst_e.max(e);
        assert!(e <= rel, "{name} structure {k}: E gpu {} cpu {} (rel {e:.2e})", g.energy, c.energy);
        assert_eq!(g.forces.len(), c.forces.len());
        for (i, (fg, fc)) in g.forces.iter().zip(&c.forces).enumerate() {
            for x in 0..3 {
                let d = (fg[x] - fc[x]).abs();
                worst_f = worst_f.max(d);
                assert!(d <= force + 1e-5 * fc[x].abs(), "{name} structure {k} atom {i}: F gpu {fg:?} cpu {fc:?}");
            }
        }
        match (&g.stress, &c.stress) {
            (None, None) => {}
            (Some(sg), Some(sc)) => {
                for a in 0..3 {
                    for b in 0..3 {
                        assert!(
                            (sg[a][b] - sc[a][b]).abs() <= 1e-5,
                            "{name} structure {k}: stress gpu {sg:?} cpu {sc:?}"
                        );
                    }
                }
            }
            other => panic!("{name} structure {k}: stress presence differs: {other:?}"),
        }
    }
    (worst_e, worst_f)
}

#[test]
fn gpu_matches_reference_and_cpu() {
    let Some(gpu) = gpu_device("gpu_matches_reference_and_cpu") else { return };
    let model = model();
    let frames = reference_frames();
    let structures: Vec<_> = frames.iter().map(|f| f.structure.clone()).collect();
    let on_gpu = model.evaluate(&gpu, &structures).unwrap();
    let on_cpu = model.evaluate(&Device::cpu().unwrap(), &structures).unwrap();
    let (e, f) = assert_close("reference frames", &on_gpu, &on_cpu, 1e-5, 1e-4);
    println!("GPU vs CPU on the reference: worst relative energy {e:.2e}, worst force {f:.2e} eV/Å");
    for (frame, p) in frames.iter().zip(&on_gpu) {
        assert!(((p.energy - frame.energy) / frame.energy).abs() <= 1e-5, "{}", frame.name);
        for (f, r) in p.forces.iter().zip(&frame.forces) {
            for x in 0..3 {
                assert!((f[x] - r[x]).abs() <= 1e-4, "{}: {f:?} vs {r:?}", frame.name);
            }
        }
    }
    // A repeated call replays the captured graph: same answer; moved atoms: new answer.
    let again = model.evaluate(&gpu, &structures).unwrap();
    let third = model.evaluate(&gpu, &structures).unwrap();
    assert_eq!(again, on_gpu);
    assert_eq!(third, on_gpu);
    let mut moved = structures.clone();
    moved[0].positions[0][0] += 0.05;
    let after_move = model.evaluate(&gpu, &moved).unwrap();
    let cpu_moved = model.evaluate(&Device::cpu().unwrap(), &moved).unwrap();
    assert_ne!(after_move[0].energy, on_gpu[0].energy);
    assert_close("moved atom", &after_move, &cpu_moved, 1e-5, 1e-4);
}

fn random_structure(rng: &mut Rng, n: usize, periodic: bool) -> Structure {
    let side = (10.0 * n as f64).cbrt();
    let z = [1u32, 6, 7, 8];
    let numbers: Vec<u32> = (0..n).map(|_| z[rng.below(4)]).collect();
    // Keep atoms apart (≥ 0.7 Å) as a real structure would.
    let mut positions: Vec<[f64; 3]> = Vec::with_capacity(n);
    while positions.len() < n {
        let p = [0; 3].map(|_| rng.range(0.0, side));
        if positions.iter().all(|q| (0..3).map(|x| (p[x] - q[x]).powi(2)).sum::<f64>() > 0.49) {
            positions.push(p);
        }
    }
    if periodic {
        let cell = [[side, 0.0, 0.0], [0.3, side, 0.0], [-0.2, 0.4, side]];
        Structure::periodic(numbers, positions, cell, [true, true, periodic])
    } else {
        Structure::molecule(numbers, positions)
    }
}

#[test]
fn gpu_matches_cpu_on_random_batches() {
    let Some(gpu) = gpu_device("gpu_matches_cpu_on_random_batches") else { return };
    let model = model();
    let cpu = Device::cpu().unwrap();
    let mut rng = Rng::new(17);
    let mut structures: Vec<Structure> = (0..40)
        .map(|k| {
            let n = 3 + rng.below(60);
            random_structure(&mut rng, n, k % 3 == 0)
        })
        .collect();
    structures.push(random_structure(&mut rng, 400, true));
    structures.push(Structure::molecule(vec![8], vec![[0.0; 3]]));
    let on_gpu = model.evaluate(&gpu, &structures).unwrap();
    let on_cpu = model.evaluate(&cpu, &structures).unwrap();
    let (e, f) = assert_close("random batch", &on_gpu, &on_cpu, 1e-5, 1e-4);
    println!("GPU vs CPU on a random batch: worst relative energy {e:.2e}, worst force {f:.2e} eV/Å");
    let energies = model.energies(&gpu, &structures).unwrap();
    for (e, p) in energies.iter().zip(&on_gpu) {
        assert!((e - p.energy).abs() <= 1e-9 * p.energy.abs().max(1.0));
    }
}

/// Each atom-tile path of the update step against the CPU: the shared model (H = 128)
/// at 300 atoms takes CUDA-core tiles of 2 atoms; a synthetic H = 256 model (no
/// tensor-core kernels) takes tiles of 1 atom at 40 atoms and of 8 at 600. (The
/// reference frames take tiles of 1, the random batch and 10,000 atoms the tensor
/// cores, 10,000 atoms also recomputing the block inputs instead of keeping them.)
#[test]
fn gpu_matches_cpu_on_every_atom_tile_size() {
    let Some(gpu) = gpu_device("gpu_matches_cpu_on_every_atom_tile_size") else { return };
    let cpu = Device::cpu().unwrap();
    let mut rng = Rng::new(29);
    let wide = {
        use mlff::model::demo::{demo_config, synthetic_weights};
        let mut config = demo_config();
        config.hidden_dim = 256;
        Model::from_weights(synthetic_weights(config, 7), Default::default())
    };
    for (model, atoms, name) in [
        (model(), 300, "H = 128, 300 atoms"),
        (wide.clone(), 40, "H = 256, 40 atoms"),
        (wide, 600, "H = 256, 600 atoms"),
    ] {
        let structures = vec![random_structure(&mut rng, atoms, false)];
        let on_gpu = model.evaluate(&gpu, &structures).unwrap();
        let on_cpu = model.evaluate(&cpu, &structures).unwrap();
        let (e, f) = assert_close(name, &on_gpu, &on_cpu, 1e-5, 1e-4);
        println!("GPU vs CPU, {name}: relative energy {e:.2e}, worst force {f:.2e} eV/Å");
    }
}

#[test]
fn gpu_matches_cpu_on_10000_atoms() {
    let Some(gpu) = gpu_device("gpu_matches_cpu_on_10000_atoms") else { return };
    let model = model();
    let mut rng = Rng::new(23);
    let side = (10.0f64 * 10_000.0).cbrt();
    let z = [1u32, 6, 7, 8];
    // A jittered lattice keeps atoms apart without an O(N²) rejection loop.
    let k = 22usize;
    let step = side / k as f64;
    let mut numbers = Vec::new();
    let mut positions = Vec::new();
    for a in 0..k {
        for b in 0..k {
            for c in 0..k {
                if positions.len() == 10_000 {
                    break;
                }
                numbers.push(z[rng.below(4)]);
                positions.push([a, b, c].map(|q| (q as f64 + 0.5) * step + rng.range(-0.4, 0.4) * step));
            }
        }
    }
    let structures = vec![Structure::molecule(numbers, positions)];
    let on_gpu = model.evaluate(&gpu, &structures).unwrap();
    let on_cpu = model.evaluate(&Device::cpu().unwrap(), &structures).unwrap();
    let (e, f) = assert_close("10,000 atoms", &on_gpu, &on_cpu, 1e-5, 1e-4);
    println!("GPU vs CPU on 10,000 atoms: relative energy {e:.2e}, worst force {f:.2e} eV/Å");
}

#[test]
fn gpu_rejects_bad_input_like_the_cpu() {
    let Some(gpu) = gpu_device("gpu_rejects_bad_input_like_the_cpu") else { return };
    let model = model();
    let close = Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 1e-6]]);
    let err = model.evaluate(&gpu, &[close]).unwrap_err().to_string();
    assert!(err.contains("on top of each other"), "{err}");
    let unknown = Structure::molecule(vec![1, 150], vec![[0.0; 3], [1.0, 0.0, 0.0]]);
    assert!(model.evaluate(&gpu, &[unknown]).unwrap_err().to_string().contains("atomic number 150"));
    let nan = Structure::molecule(vec![1], vec![[f64::NAN, 0.0, 0.0]]);
    assert!(model.evaluate(&gpu, &[nan]).is_err());
    // After errors the GPU still works.
    let ok = Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.74, 0.0, 0.0]]);
    let gpu_e = model.evaluate(&gpu, std::slice::from_ref(&ok)).unwrap();
    let cpu_e = model.evaluate(&Device::cpu().unwrap(), &[ok]).unwrap();
    assert_close("H2 after errors", &gpu_e, &cpu_e, 1e-5, 1e-4);
}

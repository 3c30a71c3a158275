//! The fused small-structure engine's kernel source, run on the CPU (one thread, and
//! several OS threads with a barrier standing in for a thread block), against the
//! exact CPU path; and on the GPU against the CPU path.
mod common;

use common::{reference_frames, shared_model_path, Rng};
use mlff::dynamics::{Dynamics, MdSettings, Thermostat};
use mlff::kernels::md::Integrator;
use mlff::model::fused::{
    emulate_student, emulate_student_md, EmulatedMd, FusedOutput, FusedStudentGpu, FusedStudentWeights,
};
use mlff::{Batch, Device, Model, Prediction, Structure};
use std::sync::Arc;

fn shared_model() -> Model {
    Model::load(shared_model_path()).expect("load shared model")
}

/// A random molecule of `n` atoms (H C N O) with atoms at least 0.7 Å apart, in a
/// cube sized for ~1 atom per 10 Å³ but at most `side` Å, so most pairs are edges.
fn random_molecule(rng: &mut Rng, n: usize, side: f64) -> Structure {
    let z = [1u32, 6, 7, 8];
    let side = side.min((10.0 * n as f64).cbrt());
    let mut positions: Vec<[f64; 3]> = Vec::with_capacity(n);
    while positions.len() < n {
        let p = [rng.range(0.0, side), rng.range(0.0, side), rng.range(0.0, side)];
        if positions.iter().all(|q| common::dist(&p, q) > 0.7) {
            positions.push(p);
        }
    }
    Structure::molecule((0..n).map(|_| z[rng.below(4)]).collect(), positions)
}

/// Energies to `rel` relative and forces to `force` eV/Å (+1e-5 of their size): the
/// fused kernel reads the filter from the Hermite table, as the layered GPU engine does.
fn assert_matches(name: &str, fused: &FusedOutput, cpu: &[Prediction], rel: f64, force: f64) {
    assert!(fused.faults.iter().all(|&f| f == 0), "{name}: faults {:?}", fused.faults);
    let mut atom = 0;
    let (mut worst_e, mut worst_f) = (0.0f64, 0.0f64);
    for (k, c) in cpu.iter().enumerate() {
        let e = ((fused.energies[k] - c.energy) / c.energy.abs().max(1.0)).abs();
        worst_e = worst_e.max(e);
        assert!(e <= rel, "{name} structure {k}: E fused {} cpu {} (rel {e:.2e})", fused.energies[k], c.energy);
        for (i, fc) in c.forces.iter().enumerate() {
            let ff = fused.forces[atom + i];
            for x in 0..3 {
                let d = (ff[x] as f64 - fc[x]).abs();
                worst_f = worst_f.max(d);
                assert!(d <= force + 1e-5 * fc[x].abs(), "{name} structure {k} atom {i}: F fused {ff:?} cpu {fc:?}");
            }
            let ea = (fused.atom_energies[atom + i] as f64 - c.atom_energies[i]).abs();
            assert!(ea <= rel * c.energy.abs().max(1.0), "{name} structure {k} atom {i}: atom energy");
        }
        atom += c.forces.len();
    }
    println!("{name}: worst relative energy {worst_e:.2e}, worst force {worst_f:.2e} eV/Å");
}

#[test]
fn emulated_fused_kernel_matches_cpu_on_the_reference() {
    let model = shared_model();
    let w = FusedStudentWeights::new(model.student_weights().unwrap()).unwrap();
    let structures: Vec<Structure> = reference_frames().into_iter().map(|f| f.structure).collect();
    let cpu = model.evaluate(&Device::cpu().unwrap(), &structures).unwrap();
    let batch = Batch::new(&structures).unwrap();
    for threads in [1, 3] {
        let fused = emulate_student(&w, &batch, threads, true).unwrap();
        assert_matches(&format!("reference, {threads} thread(s)"), &fused, &cpu, 1e-5, 1e-4);
    }
}

#[test]
fn emulated_fused_kernel_matches_cpu_on_random_molecules() {
    let mut rng = Rng::new(11);
    for model in [shared_model(), mlff::default_model().unwrap()] {
        let w = FusedStudentWeights::new(model.student_weights().unwrap()).unwrap();
        // Sizes around the tile and warp counts, and a molecule larger than the cutoff.
        let structures: Vec<Structure> =
            [1, 2, 7, 8, 9, 17, 24, 33].iter().map(|&n| random_molecule(&mut rng, n, 9.0)).collect();
        let structures: Vec<Structure> = structures
            .into_iter()
            .map(|mut s| {
                let elements = [1u32, 6, 7, 8];
                s.numbers.iter_mut().enumerate().for_each(|(i, z)| *z = elements[i % 4]);
                s
            })
            .collect();
        let cpu = model.evaluate(&Device::cpu().unwrap(), &structures).unwrap();
        let batch = Batch::new(&structures).unwrap();
        let fused = emulate_student(&w, &batch, 2, true).unwrap();
        assert_matches(&format!("random molecules, H = {}", model.hidden_dim()), &fused, &cpu, 2e-5, 2e-4);
        let energies_only = emulate_student(&w, &batch, 1, false).unwrap();
        assert_eq!(energies_only.energies, fused.energies, "energies do not depend on asking for forces");
    }
}

#[test]
fn emulated_fused_kernel_flags_bad_positions() {
    let model = shared_model();
    let w = FusedStudentWeights::new(model.student_weights().unwrap()).unwrap();
    let good = Structure::molecule(vec![8, 1, 1], vec![[0.0, 0.0, 0.1], [0.0, 0.76, -0.5], [0.0, -0.76, -0.5]]);
    let close = Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 5e-5]]);
    let batch = Batch::new(&[good.clone(), close, good]).unwrap();
    let out = emulate_student(&w, &batch, 1, true).unwrap();
    assert_eq!(out.faults, vec![0, mlff::kernels::fused::fault::TOO_CLOSE, 0]);
    // The batch's positions are finite by validation; the kernel still checks its own
    // input, as MD positions come from the integrator.
    let mut nan = Batch::new(&[Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 0.7]])]).unwrap();
    nan.positions[1][2] = f32::NAN;
    let out = emulate_student(&w, &nan, 2, true).unwrap();
    assert_ne!(out.faults[0] & mlff::kernels::fused::fault::NON_FINITE, 0);
}

#[test]
fn fused_gpu_matches_cpu() {
    let Some(gpu) = common::gpu_or_skip("fused_gpu_matches_cpu") else { return };
    let gpu = Arc::new(gpu);
    let mut rng = Rng::new(5);
    for model in [shared_model(), mlff::default_model().unwrap()] {
        let w = FusedStudentWeights::new(model.student_weights().unwrap()).unwrap();
        let mut engine = FusedStudentGpu::new(gpu.clone(), &w).unwrap();
        let mut structures: Vec<Structure> = reference_frames().into_iter().map(|f| f.structure).collect();
        structures.retain(|s| s.numbers.iter().all(|&z| [1, 6, 7, 8].contains(&z)));
        structures.extend([1, 8, 24, 33, 64].iter().map(|&n| {
            let mut s = random_molecule(&mut rng, n, 9.0);
            s.numbers.iter_mut().enumerate().for_each(|(i, z)| *z = [1u32, 6, 7, 8][i % 4]);
            s
        }));
        let cpu = model.evaluate(&Device::cpu().unwrap(), &structures).unwrap();
        let batch = Batch::new(&structures).unwrap();
        let fused = engine.evaluate(&batch, true).unwrap();
        assert_matches(&format!("GPU fused, H = {}", model.hidden_dim()), &fused, &cpu, 2e-5, 2e-4);
        let emulated = emulate_student(&w, &batch, 1, true).unwrap();
        assert_matches("GPU fused vs emulation", &fused, &cpu, 2e-5, 2e-4);
        let _ = emulated;
    }
}

fn demo() -> Model {
    use mlff::model::demo::{demo_config, synthetic_weights};
    Model::from_weights(synthetic_weights(demo_config(), 2026), Default::default())
}

fn sample_molecules() -> Vec<Structure> {
    mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "molecules.xyz").unwrap().into_iter().map(|f| f.structure).collect()
}

/// Positions every `every` steps of a CPU-path MD run, from Maxwell–Boltzmann
/// velocities, and the starting velocities.
fn cpu_trajectory(
    model: &Model,
    structures: &[Structure],
    settings: MdSettings,
    steps: u64,
) -> (Vec<[f32; 3]>, Vec<Vec<[f32; 3]>>) {
    let mut md = Dynamics::new(model, &Device::cpu().unwrap(), structures, settings).unwrap();
    md.maxwell_boltzmann(300.0, 5).unwrap();
    let start = md.current(|r| r.velocities.to_vec()).unwrap();
    let mut frames = Vec::new();
    md.run(steps, steps, |r| {
        frames.push(r.positions.to_vec());
        Ok(())
    })
    .unwrap();
    (start, frames)
}

fn worst_difference(a: &[[f32; 3]], b: &[[f32; 3]]) -> f32 {
    a.iter().zip(b).map(|(p, q)| (0..3).map(|k| (p[k] - q[k]).abs()).fold(0.0, f32::max)).fold(0.0, f32::max)
}

#[test]
fn emulated_fused_md_follows_the_cpu_md() {
    let model = demo();
    let w = FusedStudentWeights::new(model.student_weights().unwrap()).unwrap();
    let structures = sample_molecules();
    let batch = Batch::new(&structures).unwrap();
    let masses: Vec<f32> = batch.numbers.iter().map(|&z| mlff::elements::mass(z).unwrap() as f32).collect();
    for thermostat in [Thermostat::None, Thermostat::Langevin { temperature: 400.0, friction: 0.02 }] {
        let settings = MdSettings { timestep: 0.5, thermostat, seed: 12 };
        let (start, frames) = cpu_trajectory(&model, &structures, settings, 20);
        let integrator = match thermostat {
            Thermostat::None => Integrator::verlet(0.5),
            Thermostat::Langevin { temperature, friction } => Integrator::langevin(0.5, temperature, friction, 12),
            other => panic!("the fused engine integrates NVE and Langevin only, not {other:?}"),
        };
        let mut positions = batch.positions.clone();
        let mut velocities = start.clone();
        let md = EmulatedMd {
            positions: &mut positions,
            velocities: &mut velocities,
            masses: &masses,
            integrator,
            first_step: 0,
            steps: 20,
        };
        let out = emulate_student_md(&w, &batch, 2, md).unwrap();
        assert!(out.faults.iter().all(|&f| f == 0));
        let worst = worst_difference(&positions, &frames[0]);
        println!("{thermostat:?}: emulated fused MD vs CPU MD after 20 steps: {worst:.2e} Å");
        assert!(worst < 1e-4, "{thermostat:?}: {worst} Å apart");
        assert!(worst_difference(&positions, &batch.positions) > 1e-3, "the atoms moved");
    }
}

#[test]
fn fused_gpu_md_follows_the_cpu_md() {
    let Some(gpu) = common::gpu_or_skip("fused_gpu_md_follows_the_cpu_md") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let model = demo().with_engine(mlff::model::fused::EngineChoice::Fused);
    let structures = sample_molecules();
    for thermostat in [Thermostat::None, Thermostat::Langevin { temperature: 400.0, friction: 0.02 }] {
        let settings = MdSettings { timestep: 0.5, thermostat, seed: 12 };
        let (_, frames) = cpu_trajectory(&model, &structures, settings, 40);
        let mut md = Dynamics::new(&model, &gpu, &structures, settings).unwrap();
        md.maxwell_boltzmann(300.0, 5).unwrap();
        let mut last = Vec::new();
        md.run(40, 8, |r| {
            last = r.positions.to_vec();
            Ok(())
        })
        .unwrap();
        let worst = worst_difference(&last, &frames[0]);
        println!("{thermostat:?}: fused GPU MD vs CPU MD after 40 steps: {worst:.2e} Å");
        assert!(worst < 1e-4, "{thermostat:?}: {worst} Å apart");
    }
}

#[test]
fn the_engine_choice_follows_size_periodicity_and_the_switch() {
    use mlff::model::fused::{takes, EngineChoice, AUTO_MAX_ATOMS, MAX_ATOMS};
    let molecule = [false; 3];
    // The automatic choice sends a molecule to the fused engine only up to the
    // measured crossover (none on the H200: PERF.md).
    match AUTO_MAX_ATOMS {
        Some(max) => {
            assert!(takes(EngineChoice::Auto, max, molecule));
            assert!(!takes(EngineChoice::Auto, max + 1, molecule));
        }
        None => assert!((1..=MAX_ATOMS + 1).all(|n| !takes(EngineChoice::Auto, n, molecule))),
    }
    assert!(!takes(EngineChoice::Auto, 10, [true, false, false]));
    assert!(takes(EngineChoice::Fused, MAX_ATOMS, molecule));
    assert!(!takes(EngineChoice::Fused, MAX_ATOMS + 1, molecule));
    assert!(!takes(EngineChoice::Fused, 10, [true; 3]));
    assert!(!takes(EngineChoice::Layered, 10, molecule));
}

/// Molecules at and beyond the fused engine's largest, a periodic box and the sample
/// molecules in one batch, with the fused engine asked for: on the GPU some go to it
/// and some to the layered one, and every result matches the CPU path in input order.
#[test]
fn a_mixed_batch_goes_to_both_engines_and_matches_the_cpu() {
    let Some(gpu) = common::gpu_or_skip("a_mixed_batch_goes_to_both_engines_and_matches_the_cpu") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let model = mlff::default_model().unwrap().with_engine(mlff::model::fused::EngineChoice::Fused);
    let mut rng = Rng::new(17);
    let threshold = mlff::model::fused::MAX_ATOMS;
    let mut structures = vec![
        random_molecule(&mut rng, threshold, 40.0),
        mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "water-box.xyz").unwrap().remove(0).structure,
        random_molecule(&mut rng, threshold + 1, 40.0),
        random_molecule(&mut rng, 5, 30.0),
    ];
    // The samples, nudged off their symmetric geometries: at a centre of symmetry (the
    // carbon of methane) ‖v‖ = 0 and the model has a cusp (README), where any two
    // summation orders give different forces.
    structures.extend(sample_molecules().into_iter().map(|mut s| {
        s.positions.iter_mut().flatten().for_each(|x| *x += rng.range(-0.02, 0.02));
        s
    }));
    let on_gpu = model.evaluate(&gpu, &structures).unwrap();
    let on_cpu = model.evaluate(&Device::cpu().unwrap(), &structures).unwrap();
    for (k, (g, c)) in on_gpu.iter().zip(&on_cpu).enumerate() {
        assert!(
            ((g.energy - c.energy) / c.energy.abs().max(1.0)).abs() < 2e-5,
            "structure {k}: {} vs {}",
            g.energy,
            c.energy
        );
        assert_eq!(g.stress.is_some(), c.stress.is_some(), "structure {k}");
        for (fg, fc) in g.forces.iter().zip(&c.forces) {
            for x in 0..3 {
                assert!((fg[x] - fc[x]).abs() < 2e-4 + 1e-5 * fc[x].abs(), "structure {k}: {fg:?} vs {fc:?}");
            }
        }
    }
    let energies = model.energies(&gpu, &structures).unwrap();
    for (k, (e, p)) in energies.iter().zip(&on_gpu).enumerate() {
        assert!(
            (e - p.energy).abs() <= 1e-9 * p.energy.abs().max(1.0),
            "structure {k}: energies() {e} vs evaluate {}",
            p.energy
        );
    }
    // A collision in one molecule is an error that names it by its input index.
    let mut bad = structures.clone();
    bad[3].positions[1] = bad[3].positions[0];
    let message = model.evaluate(&gpu, &bad).unwrap_err().to_string();
    assert!(message.contains("structure 3"), "{message}");
}

#[test]
fn the_fused_engine_refuses_elements_beyond_the_embedding() {
    let model = shared_model();
    let w = FusedStudentWeights::new(model.student_weights().unwrap()).unwrap();
    let beyond = (w.max_z() + 1) as u32;
    let batch = Batch::new(&[Structure::molecule(vec![1, beyond], vec![[0.0; 3], [1.0, 0.0, 0.0]])]).unwrap();
    let e = emulate_student(&w, &batch, 1, true).unwrap_err().to_string();
    assert!(e.contains(&format!("atomic number {beyond}")), "{e}");
    if let Some(gpu) = common::gpu_or_skip("the_fused_engine_refuses_elements_beyond_the_embedding (GPU)") {
        let mut engine = FusedStudentGpu::new(Arc::new(gpu), &w).unwrap();
        let e = engine.evaluate(&batch, true).unwrap_err().to_string();
        assert!(e.contains(&format!("atomic number {beyond}")), "{e}");
    }
}

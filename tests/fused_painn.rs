//! The fused engine's PaiNN kernel source, run on the CPU (one thread, and several OS
//! threads with a barrier standing in for a thread block), against the exact CPU path
//! on SchNetPack's fixtures and random molecules, in MD against the CPU MD, with its
//! fault bits; and on the GPU against the CPU path.
mod common;

use common::{dist, Rng};
use mlff::dynamics::{Dynamics, MdSettings, Thermostat};
use mlff::kernels::fused::fault;
use mlff::kernels::md::Integrator;
use mlff::model::fused::{emulate_painn, emulate_painn_md, FusedOutput, FusedPainnGpu, FusedPainnWeights, MdChunk};
use mlff::model::Weights;
use mlff::{Batch, Device, Model, Prediction, Structure};
use std::path::PathBuf;
use std::sync::Arc;

/// SchNetPack's fixtures: F=32, T=3 with mean and atomrefs; F=64, T=2 with shared
/// filters and interactions.
const MODELS: [&str; 2] = ["painn-f32-t3", "painn-f64-shared"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn model(name: &str) -> Model {
    Model::load(fixture(&format!("{name}.safetensors"))).expect("load PaiNN fixture")
}

fn fused_weights(model: &Model) -> FusedPainnWeights {
    match model.weights() {
        Weights::Painn(w) => FusedPainnWeights::new(w).unwrap(),
        Weights::Student(_) => panic!("not a PaiNN model"),
    }
}

/// The molecules of a fixture's reference file (the fused engine takes no cells).
fn reference_molecules(name: &str) -> Vec<Structure> {
    let frames = mlff::extxyz::read(fixture(&format!("{name}.extxyz"))).expect("read PaiNN reference");
    let molecules: Vec<Structure> = frames.into_iter().map(|f| f.structure).filter(|s| !s.is_periodic()).collect();
    assert!(molecules.len() >= 2, "{name}: the fixture has molecules");
    molecules
}

/// A random molecule of `n` atoms (H C N O) with atoms at least 0.9 Å apart, in a
/// cube of ~10 Å³ per atom (so most pairs are within the cutoff).
fn random_molecule(rng: &mut Rng, n: usize) -> Structure {
    let side = (10.0 * n as f64).cbrt();
    let mut positions: Vec<[f64; 3]> = Vec::with_capacity(n);
    while positions.len() < n {
        let p = [rng.range(0.0, side), rng.range(0.0, side), rng.range(0.0, side)];
        if positions.iter().all(|q| dist(&p, q) > 0.9) {
            positions.push(p);
        }
    }
    Structure::molecule((0..n).map(|_| [1, 6, 7, 8][rng.below(4)]).collect(), positions)
}

fn cpu() -> Device {
    Device::cpu().unwrap()
}

/// Energies to `rel` relative and atom energies to `rel` of the structure's energy,
/// forces to `force` eV/Å + 1e-5 of their size (the fused kernel reads the filter from
/// the Hermite table, as the layered GPU engine does, whose test holds PaiNN to
/// 1e-5 and 1e-4 eV/Å).
fn assert_matches(name: &str, fused: &FusedOutput, cpu: &[Prediction], rel: f64, force: f64) {
    assert!(fused.faults.iter().all(|&f| f == 0), "{name}: faults {:?}", fused.faults);
    assert_eq!(fused.energies.len(), cpu.len(), "{name}: structures");
    let mut atom = 0;
    let (mut worst_e, mut worst_f) = (0.0f64, 0.0f64);
    for (k, c) in cpu.iter().enumerate() {
        let scale = c.energy.abs().max(1.0);
        let e = ((fused.energies[k] - c.energy) / scale).abs();
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
            assert!(ea <= rel * scale, "{name} structure {k} atom {i}: atom energy {ea:.2e} off");
        }
        atom += c.forces.len();
    }
    assert_eq!(fused.forces.len(), atom, "{name}: atoms");
    println!("{name}: worst relative energy {worst_e:.2e}, worst force {worst_f:.2e} eV/Å");
}

#[test]
fn emulated_fused_painn_matches_cpu_on_the_fixtures() {
    for name in MODELS {
        let m = model(name);
        let w = fused_weights(&m);
        let structures = reference_molecules(name);
        let on_cpu = m.evaluate(&cpu(), &structures).unwrap();
        let batch = Batch::new(&structures).unwrap();
        for threads in [1, 3] {
            let fused = emulate_painn(&w, &batch, threads, true).unwrap();
            assert_matches(&format!("{name}, {threads} thread(s)"), &fused, &on_cpu, 1e-5, 1e-4);
        }
    }
}

#[test]
fn emulated_fused_painn_matches_cpu_on_random_molecules() {
    let mut rng = Rng::new(29);
    for name in MODELS {
        let m = model(name);
        let w = fused_weights(&m);
        // Sizes around the tile (8 atoms) and warp counts, and molecules larger than
        // the cutoff.
        let structures: Vec<Structure> =
            [1, 2, 7, 8, 9, 17, 24, 33, 64].iter().map(|&n| random_molecule(&mut rng, n)).collect();
        let on_cpu = m.evaluate(&cpu(), &structures).unwrap();
        let batch = Batch::new(&structures).unwrap();
        let fused = emulate_painn(&w, &batch, 2, true).unwrap();
        assert_matches(&format!("{name}, random molecules"), &fused, &on_cpu, 1e-5, 1e-4);
        let energies_only = emulate_painn(&w, &batch, 1, false).unwrap();
        assert_eq!(energies_only.energies, fused.energies, "energies do not depend on asking for forces");
        assert!(energies_only.forces.iter().all(|f| *f == [0.0; 3]), "no forces asked, none written");
    }
}

#[test]
fn emulated_fused_painn_flags_bad_positions_and_refuses_bad_input() {
    let m = model("painn-f32-t3");
    let w = fused_weights(&m);
    let good = Structure::molecule(vec![8, 1, 1], vec![[0.0, 0.0, 0.1], [0.0, 0.76, -0.5], [0.0, -0.76, -0.5]]);
    let close = Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 5e-5]]);
    let batch = Batch::new(&[good.clone(), close, good.clone()]).unwrap();
    for threads in [1, 3] {
        let out = emulate_painn(&w, &batch, threads, true).unwrap();
        assert_eq!(out.faults, vec![0, fault::TOO_CLOSE, 0]);
        // The structures beside the faulty one are evaluated as usual.
        assert_eq!(out.energies[0], out.energies[2]);
        assert!(out.energies[0] != 0.0);
    }
    // Batch positions are finite by validation; the kernel still checks its own
    // input, as MD positions come from the integrator.
    let mut nan = Batch::new(&[Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 0.7]])]).unwrap();
    nan.positions[1][2] = f32::NAN;
    let out = emulate_painn(&w, &nan, 2, true).unwrap();
    assert_ne!(out.faults[0] & fault::NON_FINITE, 0);
    // Clear errors, not out-of-bounds reads: an element beyond the embedding, a cell,
    // a molecule beyond the dense pair slots.
    let heavy = Batch::new(&[Structure::molecule(vec![1, 100], vec![[0.0; 3], [1.0, 0.0, 0.0]])]).unwrap();
    let e = emulate_painn(&w, &heavy, 1, true).unwrap_err().to_string();
    assert!(e.contains("atomic number 100"), "{e}");
    let cell = [[6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]];
    let periodic = Structure::periodic(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 0.7]], cell, [true; 3]);
    let e = emulate_painn(&w, &Batch::new(&[periodic]).unwrap(), 1, true).unwrap_err().to_string();
    assert!(e.contains("periodic"), "{e}");
    let big = Structure::molecule(vec![1; 257], (0..257).map(|i| [i as f64, 0.0, 0.0]).collect());
    let e = emulate_painn(&w, &Batch::new(&[big]).unwrap(), 1, false).unwrap_err().to_string();
    assert!(e.contains("at most 256"), "{e}");
}

fn sample_molecules() -> Vec<Structure> {
    mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "molecules.xyz").unwrap().into_iter().map(|f| f.structure).collect()
}

fn masses_of(batch: &Batch) -> Vec<f32> {
    batch.numbers.iter().map(|&z| mlff::elements::mass(z).unwrap() as f32).collect()
}

/// The integrator the CPU MD runs for `thermostat`.
fn integrator(settings: &MdSettings) -> Integrator {
    let dt = settings.timestep as f32;
    match settings.thermostat {
        Thermostat::None => Integrator::verlet(dt),
        Thermostat::Langevin { temperature, friction } => {
            Integrator::langevin(dt, temperature, friction, settings.seed)
        }
        other => panic!("the fused engine integrates NVE and Langevin only, not {other:?}"),
    }
}

/// The positions after `steps` steps of a CPU-path MD run from Maxwell–Boltzmann
/// velocities, and the starting velocities.
fn cpu_trajectory(
    model: &Model,
    structures: &[Structure],
    settings: MdSettings,
    steps: u64,
) -> (Vec<[f32; 3]>, Vec<[f32; 3]>) {
    let mut md = Dynamics::new(model, &cpu(), structures, settings).unwrap();
    md.maxwell_boltzmann(300.0, 5).unwrap();
    let start = md.current(|r| r.velocities.to_vec()).unwrap();
    let mut last = Vec::new();
    md.run(steps, steps, |r| {
        last = r.positions.to_vec();
        Ok(())
    })
    .unwrap();
    (start, last)
}

fn worst_difference(a: &[[f32; 3]], b: &[[f32; 3]]) -> f32 {
    a.iter().zip(b).map(|(p, q)| (0..3).map(|k| (p[k] - q[k]).abs()).fold(0.0, f32::max)).fold(0.0, f32::max)
}

/// The MD settings the tests compare: Verlet and Langevin.
fn md_settings() -> [MdSettings; 2] {
    [Thermostat::None, Thermostat::Langevin { temperature: 400.0, friction: 0.02 }].map(|thermostat| MdSettings {
        timestep: 0.25,
        thermostat,
        seed: 12,
    })
}

#[test]
fn emulated_fused_painn_md_follows_the_cpu_md() {
    let m = model("painn-f32-t3");
    let w = fused_weights(&m);
    let structures = sample_molecules();
    let batch = Batch::new(&structures).unwrap();
    let masses = masses_of(&batch);
    let mut ends = Vec::new();
    for settings in md_settings() {
        let (start, last) = cpu_trajectory(&m, &structures, settings, 20);
        let mut positions = batch.positions.clone();
        let mut velocities = start.clone();
        let md = MdChunk {
            positions: &mut positions,
            velocities: &mut velocities,
            masses: &masses,
            integrator: integrator(&settings),
            first_step: 0,
            steps: 20,
        };
        let out = emulate_painn_md(&w, &batch, 2, md).unwrap();
        assert!(out.faults.iter().all(|&f| f == 0), "faults {:?}", out.faults);
        let worst = worst_difference(&positions, &last);
        println!("{:?}: emulated fused PaiNN MD vs CPU MD after 20 steps: {worst:.2e} Å", settings.thermostat);
        assert!(worst < 1e-4, "{:?}: {worst} Å apart", settings.thermostat);
        assert!(worst_difference(&positions, &batch.positions) > 1e-3, "the atoms moved");
        ends.push(positions);
    }
    // The thermostat changes the trajectory by more than the tolerance, so the
    // comparison sees it.
    assert!(worst_difference(&ends[0], &ends[1]) > 1e-3, "Langevin and Verlet end apart");
}

#[test]
fn emulated_fused_painn_md_stops_only_the_faulty_structure() {
    let m = model("painn-f32-t3");
    let w = fused_weights(&m);
    let good = Structure::molecule(vec![8, 1, 1], vec![[0.0, 0.0, 0.1], [0.0, 0.76, -0.5], [0.0, -0.76, -0.5]]);
    let close = Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 5e-5]]);
    let batch = Batch::new(&[good, close]).unwrap();
    let masses = masses_of(&batch);
    let mut positions = batch.positions.clone();
    let mut velocities = vec![[0.01f32, -0.02, 0.005]; batch.num_atoms()];
    let md = MdChunk {
        positions: &mut positions,
        velocities: &mut velocities,
        masses: &masses,
        integrator: Integrator::verlet(0.25),
        first_step: 0,
        steps: 5,
    };
    let out = emulate_painn_md(&w, &batch, 3, md).unwrap();
    assert_eq!(out.faults, vec![0, fault::TOO_CLOSE]);
    assert_eq!(out.fault_steps[1], u64::MAX, "the starting positions faulted");
    assert!(worst_difference(&positions[..3], &batch.positions[..3]) > 1e-4, "the good molecule moved");
    assert_eq!(&positions[3..], &batch.positions[3..], "the faulty one did not");
    // A fault met during the steps names its step: an atom so fast that its position
    // overflows. Each 1 fs step moves it 1e38 Å: 1e38, 2e38, 3e38 after steps 100,
    // 101, 102, and past f32::MAX (3.4e38) in step 103.
    let runaway = Structure::molecule(vec![1, 1], vec![[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]);
    let batch = Batch::new(&[runaway]).unwrap();
    let masses = masses_of(&batch);
    let mut positions = batch.positions.clone();
    let mut velocities = vec![[1e38, 0.0, 0.0], [0.0; 3]];
    let md = MdChunk {
        positions: &mut positions,
        velocities: &mut velocities,
        masses: &masses,
        integrator: Integrator::verlet(1.0),
        first_step: 100,
        steps: 20,
    };
    let out = emulate_painn_md(&w, &batch, 2, md).unwrap();
    assert_eq!(out.faults, vec![fault::NON_FINITE], "positions {positions:?}");
    assert_eq!(out.fault_steps, vec![103]);
}

#[test]
fn fused_painn_gpu_matches_cpu() {
    let Some(gpu) = common::gpu_or_skip("fused_painn_gpu_matches_cpu") else { return };
    let gpu = Arc::new(gpu);
    let mut rng = Rng::new(31);
    for name in MODELS {
        let m = model(name);
        let w = fused_weights(&m);
        let mut engine = FusedPainnGpu::new(gpu.clone(), &w).unwrap();
        let mut structures = reference_molecules(name);
        // Sizes around the tile and warp counts, up to the largest the engine takes.
        structures.extend([1, 2, 8, 9, 17, 24, 33, 64, 100, 256].iter().map(|&n| random_molecule(&mut rng, n)));
        let on_cpu = m.evaluate(&cpu(), &structures).unwrap();
        let batch = Batch::new(&structures).unwrap();
        // Twice: the second call reuses the scratch.
        for _ in 0..2 {
            let fused = engine.evaluate(&batch, true).unwrap();
            assert_matches(&format!("{name}, GPU fused"), &fused, &on_cpu, 1e-5, 1e-4);
        }
        let energies = engine.evaluate(&batch, false).unwrap();
        for (e, c) in energies.energies.iter().zip(&on_cpu) {
            assert!(((e - c.energy) / c.energy.abs().max(1.0)).abs() < 1e-5, "{name}: energy only {e} vs {}", c.energy);
        }
        // 256 copies of one molecule in one launch: one block each, the same result.
        let copies = vec![structures[0].clone(); 256];
        let many = engine.evaluate(&Batch::new(&copies).unwrap(), true).unwrap();
        assert_matches(&format!("{name}, 256 copies"), &many, &vec![on_cpu[0].clone(); 256], 1e-5, 1e-4);
        let close = Structure::molecule(vec![1, 1], vec![[0.0; 3], [0.0, 0.0, 5e-5]]);
        let out = engine.evaluate(&Batch::new(&[structures[0].clone(), close]).unwrap(), true).unwrap();
        assert_eq!(out.faults, vec![0, fault::TOO_CLOSE]);
    }
}

#[test]
fn fused_painn_gpu_md_follows_the_cpu_md() {
    let Some(gpu) = common::gpu_or_skip("fused_painn_gpu_md_follows_the_cpu_md") else { return };
    let gpu = Arc::new(gpu);
    let m = model("painn-f32-t3");
    let mut engine = FusedPainnGpu::new(gpu, &fused_weights(&m)).unwrap();
    let structures = sample_molecules();
    let batch = Batch::new(&structures).unwrap();
    let masses = masses_of(&batch);
    for settings in md_settings() {
        let (start, last) = cpu_trajectory(&m, &structures, settings, 40);
        let mut positions = batch.positions.clone();
        let mut velocities = start.clone();
        // Two chunks of 20 steps, as two reports would.
        for first_step in [0, 20] {
            let md = MdChunk {
                positions: &mut positions,
                velocities: &mut velocities,
                masses: &masses,
                integrator: integrator(&settings),
                first_step,
                steps: 20,
            };
            let out = engine.md(&batch, md).unwrap();
            assert!(out.faults.iter().all(|&f| f == 0), "faults {:?}", out.faults);
        }
        let worst = worst_difference(&positions, &last);
        println!("{:?}: GPU fused PaiNN MD vs CPU MD after 40 steps: {worst:.2e} Å", settings.thermostat);
        assert!(worst < 1e-4, "{:?}: {worst} Å apart", settings.thermostat);
    }
}

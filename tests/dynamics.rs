//! Molecular dynamics and relaxation: conservation laws on the CPU path, the GPU
//! integrator against the CPU one step for step, recovery from edge-buffer overflow,
//! and clear errors.
mod common;

use common::gpu_or_skip;
use mlff::dynamics::{Dynamics, MdSettings, Report, Thermostat};
use mlff::relax::{relax, relax_observed, FireSettings};
use mlff::{Device, Model, Structure};
use std::sync::Arc;

/// The synthetic demo model (deterministic, every element up to Z = 100): smooth
/// and rotation-invariant by construction, so conservation laws are exact tests.
fn demo() -> Model {
    use mlff::model::demo::{demo_config, synthetic_weights};
    Model::from_weights(synthetic_weights(demo_config(), 2026), Default::default())
}

fn samples() -> Vec<Structure> {
    mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "molecules.xyz").unwrap().into_iter().map(|f| f.structure).collect()
}

fn water_box() -> Structure {
    mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "water-box.xyz").unwrap().remove(0).structure
}

fn nve(dt: f64) -> MdSettings {
    MdSettings { timestep: dt, thermostat: Thermostat::None, seed: 0 }
}

struct Snapshot {
    step: u64,
    positions: Vec<[f32; 3]>,
    total: Vec<f64>,
    temperature: Vec<f64>,
}

fn snapshot(r: &Report) -> Snapshot {
    Snapshot {
        step: r.step,
        positions: r.positions.to_vec(),
        total: (0..r.num_structures()).map(|s| r.total_energy(s)).collect(),
        temperature: (0..r.num_structures()).map(|s| r.temperature(s)).collect(),
    }
}

fn trajectory(md: &mut Dynamics, steps: u64, every: u64) -> Vec<Snapshot> {
    let mut out = vec![md.current(snapshot).unwrap()];
    md.run(steps, every, |r| {
        out.push(snapshot(r));
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn nve_conserves_energy_and_reports_every_k_steps() {
    let cpu = Device::cpu().unwrap();
    let mut md = Dynamics::new(&demo(), &cpu, &samples(), nve(0.5)).unwrap();
    md.maxwell_boltzmann(600.0, 3).unwrap();
    let traj = trajectory(&mut md, 205, 50);
    assert_eq!(traj.iter().map(|s| s.step).collect::<Vec<_>>(), vec![0, 50, 100, 150, 200, 205]);
    let (first, last) = (&traj[0], &traj[traj.len() - 1]);
    assert!(first.temperature.iter().all(|&t| t > 100.0), "velocities were drawn: {:?}", first.temperature);
    for s in 0..first.total.len() {
        let drift = (last.total[s] - first.total[s]).abs();
        assert!(drift < 1e-4 * first.total[s].abs().max(0.1), "structure {s}: total energy moved {drift:.3e} eV");
    }
    let moved = first.positions.iter().zip(&last.positions).any(|(a, b)| (a[0] - b[0]).abs() > 1e-3);
    assert!(moved, "the atoms did not move");
}

#[test]
fn maxwell_boltzmann_removes_centre_of_mass_motion() {
    let cpu = Device::cpu().unwrap();
    let structures = vec![water_box()];
    let mut md = Dynamics::new(&demo(), &cpu, &structures, nve(0.5)).unwrap();
    md.maxwell_boltzmann(300.0, 9).unwrap();
    let numbers = md.batch().numbers.clone();
    let (momentum, temperature) = md
        .current(|r| {
            let p: [f64; 3] = std::array::from_fn(|a| {
                r.velocities
                    .iter()
                    .zip(&numbers)
                    .map(|(v, &z)| mlff::elements::mass(z).unwrap() * v[a] as f64)
                    .sum::<f64>()
            });
            (p, r.temperature(0))
        })
        .unwrap();
    assert!(momentum.iter().all(|p| p.abs() < 1e-6), "momentum {momentum:?}");
    // 192 atoms: the drawn temperature is within a few standard deviations (√(2/3N) ≈ 6 %).
    assert!((temperature - 300.0).abs() < 60.0, "drawn temperature {temperature} K");
}

#[test]
fn langevin_heats_a_cold_box_towards_the_bath() {
    let cpu = Device::cpu().unwrap();
    let settings =
        MdSettings { timestep: 1.0, thermostat: Thermostat::Langevin { temperature: 500.0, friction: 0.05 }, seed: 4 };
    let mut md = Dynamics::new(&demo(), &cpu, &[water_box()], settings).unwrap();
    let traj = trajectory(&mut md, 120, 40);
    let temperatures: Vec<f64> = traj.iter().map(|s| s.temperature[0]).collect();
    assert_eq!(temperatures[0], 0.0);
    let t = temperatures[temperatures.len() - 1];
    assert!(t > 350.0 && t < 650.0, "after 6 friction times the box is at {t} K: {temperatures:?}");
}

#[test]
fn bad_settings_and_colliding_atoms_are_errors() {
    let cpu = Device::cpu().unwrap();
    let model = demo();
    for settings in [
        nve(0.0),
        nve(f64::NAN),
        MdSettings { timestep: 1.0, thermostat: Thermostat::Langevin { temperature: -1.0, friction: 0.1 }, seed: 0 },
    ] {
        assert!(Dynamics::new(&model, &cpu, &samples(), settings).is_err(), "{settings:?}");
    }
    let mut md = Dynamics::new(&model, &cpu, &samples(), nve(0.5)).unwrap();
    assert!(md.set_velocities(&[[0.0; 3]]).is_err());
    assert!(md.run(10, 0, |_| Ok(())).is_err());
    assert_colliding_pair_is_an_error(&cpu);
}

/// Two H atoms 1e-3 Å apart flying at each other meet within one 0.5 fs step.
fn assert_colliding_pair_is_an_error(device: &Device) {
    let pair = Structure::molecule(vec![1, 1], vec![[0.0, 0.0, 0.0], [1e-3, 0.0, 0.0]]);
    let mut md = Dynamics::new(&demo(), device, &[pair], nve(0.5)).unwrap();
    md.set_velocities(&[[1e-3, 0.0, 0.0], [-1e-3, 0.0, 0.0]]).unwrap();
    let e = md.run(4, 2, |_| Ok(())).unwrap_err().to_string();
    assert!(e.contains("MD step 1") && e.contains("on top of each other"), "{}: {e}", device.describe());
}

/// `relax_observed` shows each still-relaxing structure every iteration, its last
/// view is the result, and an error from the observer stops the relaxation.
#[test]
fn relax_observed_shows_every_step_and_can_stop() {
    let cpu = Device::cpu().unwrap();
    let model = demo();
    let structures = samples();
    let settings = FireSettings { fmax: 2e-3, max_steps: 400, ..Default::default() };
    let plain = relax(&model, &cpu, &structures, settings, |_, _| {}).unwrap();
    let mut last: Vec<Option<(usize, f64, Structure)>> = vec![None; structures.len()];
    let mut steps_seen = 0;
    let observed = relax_observed(&model, &cpu, &structures, settings, |s| {
        assert_eq!(s.step, steps_seen);
        steps_seen += 1;
        assert_eq!(s.active.len(), s.structures.len());
        assert_eq!(s.active.len(), s.predictions.len());
        for ((&k, structure), p) in s.active.iter().zip(s.structures).zip(s.predictions) {
            last[k] = Some((s.step, p.energy, structure.clone()));
        }
        Ok(())
    })
    .unwrap();
    for (k, (o, p)) in observed.iter().zip(&plain).enumerate() {
        assert_eq!(o.prediction, p.prediction, "molecule {k}: observing changed the result");
        let (step, energy, structure) = last[k].clone().unwrap();
        assert_eq!((step, energy), (o.steps, o.prediction.energy), "molecule {k}");
        assert_eq!(structure, o.structure);
    }
    let stopped = relax_observed(&model, &cpu, &structures, settings, |s| {
        if s.step == 3 {
            return Err(mlff::Error::InvalidInput("stop here".into()));
        }
        Ok(())
    });
    assert!(stopped.unwrap_err().to_string().contains("stop here"));
}

#[test]
fn fire_relaxes_molecules_and_a_cell() {
    let cpu = Device::cpu().unwrap();
    let model = demo();
    let structures = samples();
    let before = model.evaluate(&cpu, &structures).unwrap();
    let settings = FireSettings { fmax: 2e-3, max_steps: 400, ..Default::default() };
    let relaxed = relax(&model, &cpu, &structures, settings, |_, _| {}).unwrap();
    for (k, (r, b)) in relaxed.iter().zip(&before).enumerate() {
        assert!(r.converged, "molecule {k} did not converge: fmax {}", r.fmax);
        let worst =
            r.prediction.forces.iter().map(|f| (f[0] * f[0] + f[1] * f[1] + f[2] * f[2]).sqrt()).fold(0.0, f64::max);
        assert!(worst < 2e-3, "molecule {k}: force {worst}");
        assert!(r.prediction.energy <= b.energy + 1e-9, "molecule {k}: energy rose");
    }
    // fcc Cu under the demo model: E(a) falls from a = 5.2 Å to a minimum near 5.8 Å.
    let a = 5.2;
    let h = a / 2.0;
    let fcc = Structure::periodic(
        vec![29; 4],
        vec![[0.0, 0.0, 0.0], [h, h, 0.0], [h, 0.0, h], [0.0, h, h]],
        [[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, a]],
        [true; 3],
    );
    let cell_settings = FireSettings { fmax: 1e-4, max_steps: 400, relax_cell: true, ..Default::default() };
    let start = model.evaluate(&cpu, std::slice::from_ref(&fcc)).unwrap();
    let out = relax(&model, &cpu, std::slice::from_ref(&fcc), cell_settings, |_, _| {}).unwrap();
    assert!(out[0].converged, "cell relaxation: fmax {} after {} steps", out[0].fmax, out[0].steps);
    let stress = out[0].prediction.stress.unwrap();
    let volume = out[0].structure.volume().unwrap();
    // Converged means |V σ| / N < fmax in every row.
    let worst = stress.iter().flatten().map(|x| x.abs()).fold(0.0, f64::max);
    assert!(worst * volume / 4.0 < 1e-4 * 3f64.sqrt(), "stress {stress:?} at V = {volume}");
    let side = volume.cbrt();
    assert!(side > 5.3 && side < 6.5, "relaxed lattice constant {side}");
    assert!(out[0].prediction.energy < start[0].energy);
}

#[test]
fn gpu_md_follows_the_cpu_step_for_step() {
    let Some(gpu) = gpu_or_skip("gpu_md_follows_the_cpu_step_for_step") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let cpu = Device::cpu().unwrap();
    let model = demo();
    let mut structures = samples();
    structures.push(water_box());
    for thermostat in [Thermostat::None, Thermostat::Langevin { temperature: 400.0, friction: 0.02 }] {
        let settings = MdSettings { timestep: 0.5, thermostat, seed: 12 };
        let run = |device: &Device| {
            let mut md = Dynamics::new(&model, device, &structures, settings).unwrap();
            md.maxwell_boltzmann(300.0, 5).unwrap();
            trajectory(&mut md, 40, 8)
        };
        let (on_cpu, on_gpu) = (run(&cpu), run(&gpu));
        assert_eq!(on_cpu.len(), on_gpu.len());
        let mut worst_x = 0.0f32;
        let mut worst_e = 0.0f64;
        for (c, g) in on_cpu.iter().zip(&on_gpu) {
            assert_eq!(c.step, g.step);
            for (a, b) in c.positions.iter().zip(&g.positions) {
                worst_x = worst_x.max((0..3).map(|k| (a[k] - b[k]).abs()).fold(0.0, f32::max));
            }
            for (a, b) in c.total.iter().zip(&g.total) {
                worst_e = worst_e.max((a - b).abs() / a.abs().max(1.0));
            }
        }
        println!("{thermostat:?}: worst position difference {worst_x:.2e} Å, total energy {worst_e:.2e} (relative)");
        assert!(worst_x < 1e-4, "{thermostat:?}: GPU and CPU trajectories part by {worst_x} Å");
        assert!(worst_e < 1e-5, "{thermostat:?}: energies part by {worst_e}");
    }
}

#[test]
fn gpu_md_recovers_from_overflowing_edges_and_reports_collisions() {
    let Some(gpu) = gpu_or_skip("gpu_md_recovers_from_overflowing_edges_and_reports_collisions") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let model = demo();
    let structures = vec![water_box(); 3];
    let run = |shrink: bool| {
        let mut md = Dynamics::new(&model, &gpu, &structures, nve(0.5)).unwrap();
        md.maxwell_boltzmann(300.0, 5).unwrap();
        md.run(10, 5, |_| Ok(())).unwrap();
        if shrink {
            // Far below the ~30 edges per atom the box needs: the next chunk overflows.
            md.resize_edge_buffers(1000).unwrap();
        }
        trajectory(&mut md, 30, 10)
    };
    let (plain, recovered) = (run(false), run(true));
    assert_eq!(plain.iter().map(|s| s.step).collect::<Vec<_>>(), recovered.iter().map(|s| s.step).collect::<Vec<_>>());
    for (a, b) in plain.iter().zip(&recovered) {
        assert_eq!(a.positions, b.positions, "step {}: the replayed chunk differs", a.step);
    }
    assert_colliding_pair_is_an_error(&gpu);
}

//! The ensembles of issue 24 on the CPU path (and the GPU, skipping without one): the
//! conserved quantities of the Nosé–Hoover chain, of Langevin and of the barostat stay
//! flat while the baths exchange far more energy; mean temperature and pressure match
//! their targets within statistical error; checkpoints continue a run bit for bit.
mod common;

use common::gpu_or_skip;
use mlff::dynamics::{Barostat, Checkpoint, Coupling, Dynamics, MdSettings, Report, Thermostat, BAR};
use mlff::{Device, Model, Structure};
use std::sync::Arc;

/// The synthetic demo model: smooth, so conservation laws are exact tests.
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

/// fcc copper, `n`³ conventional cells of a = 5.8 Å (near the demo model's minimum),
/// with the atoms nudged off their sites by `jitter` Å.
fn copper(n: usize, jitter: f64) -> Structure {
    let a = 5.8;
    let mut positions = Vec::new();
    let mut rng = common::Rng::new(7);
    for (i, j, k) in (0..n).flat_map(|i| (0..n).flat_map(move |j| (0..n).map(move |k| (i, j, k)))) {
        for site in [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]] {
            let base = [i as f64 + site[0], j as f64 + site[1], k as f64 + site[2]];
            positions.push(std::array::from_fn(|x| a * base[x] + jitter * rng.range(-1.0, 1.0)));
        }
    }
    let side = a * n as f64;
    Structure::periodic(
        vec![29; positions.len()],
        positions,
        [[side, 0.0, 0.0], [0.0, side, 0.0], [0.0, 0.0, side]],
        [true; 3],
    )
}

/// A dilute gas of `n` argon atoms in a cube of `side` Å, at least 3 Å apart: cheap
/// on the CPU (few neighbours) and nearly ideal, so its pressure is ~N k T / V.
fn argon_gas(n: usize, side: f64) -> Structure {
    let mut rng = common::Rng::new(19);
    let mut positions: Vec<[f64; 3]> = Vec::new();
    while positions.len() < n {
        let p: [f64; 3] = std::array::from_fn(|_| rng.range(0.0, side));
        let far = positions.iter().all(|q| {
            let d: [f64; 3] = std::array::from_fn(|x| {
                let d = (p[x] - q[x]).abs();
                d.min(side - d)
            });
            (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt() > 3.0
        });
        if far {
            positions.push(p);
        }
    }
    Structure::periodic(vec![18; n], positions, [[side, 0.0, 0.0], [0.0, side, 0.0], [0.0, 0.0, side]], [true; 3])
}

fn nhc(temperature: f64) -> Thermostat {
    Thermostat::NoseHooverChain { temperature, damping: 25.0, chain: 3, loops: 1 }
}

fn langevin(temperature: f64) -> Thermostat {
    Thermostat::Langevin { temperature, friction: 0.02 }
}

/// The demo model's "copper" is nearly an ideal gas (at 400 K its pressure is ~1 kbar
/// at a = 5.8 Å, almost all of it kinetic), so its compressibility is ~1/P.
fn barostat(coupling: Coupling) -> Barostat {
    gas_barostat(1000.0, coupling)
}

fn gas_barostat(bar: f64, coupling: Coupling) -> Barostat {
    Barostat { pressure: bar * BAR, time_constant: 100.0, compressibility: 1.0 / (bar * BAR), coupling }
}

/// Per report: conserved quantity, total energy (+ P₀V), temperature, pressure, volume.
#[derive(Clone, Debug)]
struct Sample {
    conserved: Vec<f64>,
    enthalpy: Vec<f64>,
    temperature: Vec<f64>,
    pressure: Vec<Option<f64>>,
    volume: Vec<Option<f64>>,
}

fn sample(r: &Report) -> Sample {
    let s = 0..r.num_structures();
    let p0 = r.barostat.map_or(0.0, |b| b.pressure);
    Sample {
        conserved: s.clone().map(|s| r.conserved(s).expect("tracked on this engine")).collect(),
        enthalpy: s.clone().map(|s| r.total_energy(s) + p0 * r.volume(s).unwrap_or(0.0)).collect(),
        temperature: s.clone().map(|s| r.temperature(s)).collect(),
        pressure: s.clone().map(|s| r.pressure(s)).collect(),
        volume: s.map(|s| r.volume(s)).collect(),
    }
}

fn run(md: &mut Dynamics, steps: u64, every: u64) -> Vec<Sample> {
    let mut out = vec![md.current(sample).unwrap()];
    md.run(steps, every, |r| {
        out.push(sample(r));
        Ok(())
    })
    .unwrap();
    out
}

/// Per structure: the conserved quantity's largest excursion and that of E (+ P₀V),
/// which the baths change.
fn excursions(samples: &[Sample]) -> Vec<(f64, f64)> {
    let spread = |v: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = v.collect();
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max) - v.iter().copied().fold(f64::INFINITY, f64::min)
    };
    (0..samples[0].conserved.len())
        .map(|s| {
            (spread(&mut samples.iter().map(|x| x.conserved[s])), spread(&mut samples.iter().map(|x| x.enthalpy[s])))
        })
        .collect()
}

#[test]
fn thermostats_keep_their_conserved_quantities_flat() {
    let cpu = Device::cpu().unwrap();
    for thermostat in [nhc(600.0), langevin(600.0)] {
        let settings = MdSettings { timestep: 0.5, thermostat, seed: 3 };
        let mut md = Dynamics::new(&demo(), &cpu, &samples(), settings).unwrap();
        md.maxwell_boltzmann(150.0, 4).unwrap();
        let samples = run(&mut md, 300, 10);
        for (s, (conserved, energy)) in excursions(&samples).into_iter().enumerate() {
            // The bath heats from 150 to ~600 K: E moves by ~N_f k ΔT / 2, the
            // conserved quantity by the integration error alone.
            assert!(energy > 0.05, "{thermostat:?} structure {s}: the bath did nothing ({energy} eV)");
            println!("{thermostat:?} structure {s}: conserved moved {conserved:.2e} eV, E {energy:.2e} eV");
            assert!(
                conserved < 2e-3 * energy,
                "{thermostat:?} structure {s}: conserved moved {conserved:.2e} eV while E moved {energy:.2e} eV"
            );
        }
    }
}

#[test]
fn barostats_keep_their_conserved_quantity_flat_and_move_the_cell() {
    let cpu = Device::cpu().unwrap();
    let structures = vec![copper(2, 0.05), copper(2, 0.1)];
    for (thermostat, coupling) in [(langevin(500.0), Coupling::Isotropic), (nhc(500.0), Coupling::Anisotropic)] {
        let settings = MdSettings { timestep: 1.0, thermostat, seed: 8 };
        // τ_p = 1 ps: the volume still moves ~1 % a step in this gas-like box; the
        // conserved quantity's error is third order in that move.
        let b = Barostat { time_constant: 1000.0, ..barostat(coupling) };
        let mut md = Dynamics::with_barostat(&demo(), &cpu, &structures, settings, b).unwrap();
        md.maxwell_boltzmann(500.0, 2).unwrap();
        let mut cells = Vec::new();
        let samples = {
            let mut out = vec![md.current(sample).unwrap()];
            md.run(300, 10, |r| {
                out.push(sample(r));
                cells.push(r.cells[0].unwrap());
                Ok(())
            })
            .unwrap();
            out
        };
        for (s, (conserved, enthalpy)) in excursions(&samples).into_iter().enumerate() {
            assert!(enthalpy > 0.05, "{coupling:?} structure {s}: the baths did nothing ({enthalpy} eV)");
            println!("{coupling:?} structure {s}: conserved moved {conserved:.2e} eV, E + P₀V {enthalpy:.2e} eV");
            assert!(
                conserved < 1e-4 * enthalpy,
                "{coupling:?} structure {s}: conserved moved {conserved:.2e} eV while E + P₀V moved {enthalpy:.2e} eV"
            );
        }
        let volumes: Vec<f64> = samples.iter().map(|x| x.volume[0].unwrap()).collect();
        assert!(volumes.windows(2).any(|w| w[0] != w[1]), "{coupling:?}: the volume never moved");
        let last = cells.last().unwrap();
        let axes: Vec<f64> = (0..3).map(|a| last[a][a]).collect();
        match coupling {
            Coupling::Isotropic => {
                assert!((axes[0] - axes[1]).abs() < 1e-9 && (axes[0] - axes[2]).abs() < 1e-9, "{axes:?}")
            }
            Coupling::Anisotropic => assert!((axes[0] - axes[1]).abs() > 1e-6, "the axes moved together: {axes:?}"),
        }
        assert!(last.iter().enumerate().all(|(a, row)| (0..3).all(|b| a == b || row[b] == 0.0)), "no shear: {last:?}");
    }
}

#[test]
fn ensemble_settings_are_checked() {
    let cpu = Device::cpu().unwrap();
    let model = demo();
    let cu = vec![copper(1, 0.0)];
    let settings = |thermostat| MdSettings { timestep: 1.0, thermostat, seed: 1 };
    let bad_chains = [
        Thermostat::NoseHooverChain { temperature: 0.0, damping: 10.0, chain: 3, loops: 1 },
        Thermostat::NoseHooverChain { temperature: 300.0, damping: 0.0, chain: 3, loops: 1 },
        Thermostat::NoseHooverChain { temperature: 300.0, damping: 10.0, chain: 0, loops: 1 },
        Thermostat::NoseHooverChain { temperature: 300.0, damping: 10.0, chain: 9, loops: 1 },
        Thermostat::NoseHooverChain { temperature: 300.0, damping: 10.0, chain: 3, loops: 0 },
    ];
    for t in bad_chains {
        assert!(Dynamics::new(&model, &cpu, &cu, settings(t)).is_err(), "{t:?}");
    }
    let e = |r: Result<Dynamics, mlff::Error>| r.err().expect("an error").to_string();
    let iso = barostat(Coupling::Isotropic);
    assert!(
        e(Dynamics::with_barostat(&model, &cpu, &cu, settings(Thermostat::None), iso)).contains("needs a thermostat")
    );
    assert!(e(Dynamics::with_barostat(&model, &cpu, &samples(), settings(nhc(300.0)), iso)).contains("not periodic"));
    for bad in [
        Barostat { pressure: f64::NAN, ..iso },
        Barostat { time_constant: 0.0, ..iso },
        Barostat { compressibility: -1.0, ..iso },
    ] {
        assert!(Dynamics::with_barostat(&model, &cpu, &cu, settings(nhc(300.0)), bad).is_err(), "{bad:?}");
    }
    // A pressure far beyond what the box holds at this coupling: the barostat stops
    // the run with the reason rather than crush the cell.
    let crushing = Barostat { pressure: 1e8 * BAR, time_constant: 10.0, compressibility: 1e-3 / BAR, ..iso };
    let mut md = Dynamics::with_barostat(&model, &cpu, &cu, settings(nhc(300.0)), crushing).unwrap();
    let error = md.run(200, 10, |_| Ok(())).unwrap_err().to_string();
    assert!(error.contains("barostat would take the volume"), "{error}");
}

/// Mean temperature and pressure of `replicas` copies after `equilibration` steps,
/// against their targets within 5 standard errors (replicas are independent, so the
/// error is the spread of the replicas' time averages over √replicas).
fn check_means(device: &Device, structure: Structure, bar: f64, replicas: usize, equilibration: u64, steps: u64) {
    let (temperature, b) = (400.0, gas_barostat(bar, Coupling::Isotropic));
    let settings = MdSettings { timestep: 1.0, thermostat: nhc(temperature), seed: 11 };
    let structures = vec![structure; replicas];
    let mut md = Dynamics::with_barostat(&demo(), device, &structures, settings, b).unwrap();
    md.maxwell_boltzmann(temperature, 12).unwrap();
    md.run(equilibration, equilibration, |_| Ok(())).unwrap();
    let samples = run(&mut md, steps, 5);
    let per_replica = |f: &dyn Fn(&Sample, usize) -> f64| -> (f64, f64) {
        let means: Vec<f64> =
            (0..replicas).map(|s| samples.iter().map(|x| f(x, s)).sum::<f64>() / samples.len() as f64).collect();
        let mean = means.iter().sum::<f64>() / replicas as f64;
        let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (replicas - 1) as f64;
        (mean, (var / replicas as f64).sqrt())
    };
    let (t, t_error) = per_replica(&|x, s| x.temperature[s]);
    let (p, p_error) = per_replica(&|x, s| x.pressure[s].unwrap() / BAR);
    println!("{}: T = {t:.1} ± {t_error:.1} K, P = {p:.0} ± {p_error:.0} bar", device.describe());
    assert!((t - temperature).abs() < 5.0 * t_error + 1.0, "T = {t} ± {t_error} K, target {temperature}");
    let target = b.pressure / BAR;
    assert!((p - target).abs() < 5.0 * p_error, "P = {p} ± {p_error} bar, target {target}");
}

#[test]
fn npt_means_match_their_targets_on_a_dilute_gas() {
    check_means(&Device::cpu().unwrap(), argon_gas(40, 20.0), 275.0, 8, 400, 1600);
}

#[test]
#[ignore = "long (minutes on 2 cores): the water box; runs on the GPU in gpu_npt_means_match_on_water_boxes"]
fn npt_means_match_their_targets_on_the_water_box() {
    check_means(&Device::cpu().unwrap(), water_box(), 6000.0, 8, 500, 2000);
}

#[test]
fn gpu_npt_means_match_on_water_boxes() {
    let Some(gpu) = gpu_or_skip("gpu_npt_means_match_on_water_boxes") else { return };
    check_means(&Device::Gpu(Arc::new(gpu)), water_box(), 6000.0, 32, 2000, 10_000);
}

/// Positions, velocities, cells and ensemble words after a run, as bits.
fn state_bits(md: &mut Dynamics) -> (Vec<u32>, Vec<u64>, u64) {
    md.current(|r| {
        let atoms = r.positions.iter().chain(r.velocities).chain(r.forces).flatten().map(|x| x.to_bits()).collect();
        let words = r
            .ensemble
            .iter()
            .chain(r.heat)
            .chain(r.cells.iter().flatten().flatten().flatten())
            .map(|x| x.to_bits())
            .collect();
        (atoms, words, r.step)
    })
    .unwrap()
}

/// Every ensemble: a run of 2k steps, and k steps + checkpoint (through its bytes) +
/// k steps, end in the same bits.
fn restarts_are_exact(device: &Device) {
    let model = demo();
    let molecules = samples();
    let boxes = vec![copper(1, 0.05), copper(2, 0.1)];
    let cases: Vec<(Thermostat, Option<Coupling>, &[Structure])> = vec![
        (Thermostat::None, None, &molecules),
        (langevin(300.0), None, &molecules),
        (nhc(300.0), None, &molecules),
        (langevin(300.0), Some(Coupling::Isotropic), &boxes),
        (nhc(300.0), Some(Coupling::Anisotropic), &boxes),
    ];
    for (thermostat, coupling, structures) in cases {
        let settings = MdSettings { timestep: 1.0, thermostat, seed: 21 };
        let make = || {
            let mut md = match coupling {
                Some(c) => Dynamics::with_barostat(&model, device, structures, settings, barostat(c)),
                None => Dynamics::new(&model, device, structures, settings),
            }
            .unwrap();
            md.maxwell_boltzmann(300.0, 22).unwrap();
            md
        };
        let mut whole = make();
        whole.run(40, 10, |_| Ok(())).unwrap();
        let mut first = make();
        first.run(20, 10, |_| Ok(())).unwrap();
        let bytes = first.checkpoint().unwrap().to_bytes().unwrap();
        let checkpoint = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(checkpoint.step, 20);
        let mut second = Dynamics::from_checkpoint(&model, device, &checkpoint).unwrap();
        assert_eq!(second.engine_name(), whole.engine_name());
        second.run(20, 10, |_| Ok(())).unwrap();
        let (a, b) = (state_bits(&mut whole), state_bits(&mut second));
        assert_eq!(a.2, b.2, "{thermostat:?} {coupling:?}: steps");
        assert!(a.0 == b.0, "{thermostat:?} {coupling:?}: positions, velocities or forces differ after the restart");
        assert!(a.1 == b.1, "{thermostat:?} {coupling:?}: ensemble state, heat or cells differ after the restart");
    }
}

#[test]
fn restarts_continue_bit_for_bit() {
    restarts_are_exact(&Device::cpu().unwrap());
}

#[test]
fn gpu_restarts_continue_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("gpu_restarts_continue_bit_for_bit") else { return };
    restarts_are_exact(&Device::Gpu(Arc::new(gpu)));
}

#[test]
fn checkpoints_refuse_another_model_and_damaged_files() {
    let cpu = Device::cpu().unwrap();
    let settings = MdSettings { timestep: 1.0, thermostat: nhc(300.0), seed: 1 };
    let mut md = Dynamics::new(&demo(), &cpu, &samples(), settings).unwrap();
    md.run(3, 3, |_| Ok(())).unwrap();
    let mut checkpoint = md.checkpoint().unwrap();
    checkpoint.metadata.insert("note".into(), "kept".into());
    let bytes = checkpoint.to_bytes().unwrap();
    let back = Checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(back, checkpoint, "the file holds the checkpoint whole");
    let other = {
        use mlff::model::demo::{demo_config, synthetic_weights};
        Model::from_weights(synthetic_weights(demo_config(), 7), Default::default())
    };
    let error = Dynamics::from_checkpoint(&other, &cpu, &back).err().unwrap().to_string();
    assert!(error.contains("only with the model it was made with"), "{error}");
    assert!(Checkpoint::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    assert!(Checkpoint::from_bytes(b"not a checkpoint").is_err());
    let mut short = checkpoint.clone();
    short.velocities.pop();
    assert!(short.to_bytes().unwrap_err().to_string().contains("velocities"));
    // Through a file.
    let path = std::env::temp_dir().join(format!("mlff-checkpoint-{}.safetensors", std::process::id()));
    checkpoint.write(&path).unwrap();
    assert_eq!(Checkpoint::read(&path).unwrap(), checkpoint);
    let _ = std::fs::remove_file(&path);
}

/// CPU and GPU (layered engine) integrate the chain and the barostats alike.
#[test]
fn gpu_ensembles_follow_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_ensembles_follow_the_cpu") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let cpu = Device::cpu().unwrap();
    let model = demo();
    let water = vec![water_box(), water_box()];
    let copper = vec![copper(2, 0.1)];
    let molecules = samples();
    // Each box at about its own pressure (both are gas-like under the demo model).
    let (water_iso, copper_aniso) =
        (gas_barostat(6000.0, Coupling::Isotropic), gas_barostat(1000.0, Coupling::Anisotropic));
    let cases: Vec<(Thermostat, Option<Barostat>, &[Structure])> = vec![
        (nhc(400.0), None, &molecules),
        (nhc(400.0), None, &water),
        (langevin(400.0), Some(water_iso), &water),
        (nhc(400.0), Some(copper_aniso), &copper),
    ];
    for (thermostat, coupling, structures) in cases {
        let settings = MdSettings { timestep: 0.5, thermostat, seed: 5 };
        let trace = |device: &Device| {
            let mut md = match coupling {
                Some(b) => Dynamics::with_barostat(&model, device, structures, settings, b),
                None => Dynamics::new(&model, device, structures, settings),
            }
            .unwrap();
            md.maxwell_boltzmann(300.0, 6).unwrap();
            let mut out = Vec::new();
            md.run(40, 10, |r| {
                out.push((r.positions.to_vec(), sample(r)));
                Ok(())
            })
            .unwrap();
            (md.engine_name(), out)
        };
        let ((cpu_engine, on_cpu), (gpu_engine, on_gpu)) = (trace(&cpu), trace(&gpu));
        assert_eq!((cpu_engine, gpu_engine), ("cpu", "gpu"));
        let mut worst = (0.0f32, 0.0f64, 0.0f64);
        for ((xc, sc), (xg, sg)) in on_cpu.iter().zip(&on_gpu) {
            for (a, b) in xc.iter().zip(xg) {
                worst.0 = worst.0.max((0..3).map(|k| (a[k] - b[k]).abs()).fold(0.0, f32::max));
            }
            for s in 0..sc.conserved.len() {
                worst.1 = worst.1.max((sc.conserved[s] - sg.conserved[s]).abs() / sc.conserved[s].abs().max(1.0));
                if let (Some(a), Some(b)) = (sc.volume[s], sg.volume[s]) {
                    worst.2 = worst.2.max((a - b).abs() / a);
                }
            }
        }
        println!(
            "{thermostat:?} {coupling:?}: positions {:.1e} Å, conserved {:.1e}, volume {:.1e}",
            worst.0, worst.1, worst.2
        );
        assert!(worst.0 < 1e-3, "{thermostat:?} {coupling:?}: positions part by {} Å", worst.0);
        assert!(worst.1 < 1e-5, "{thermostat:?} {coupling:?}: conserved quantities part by {}", worst.1);
        assert!(worst.2 < 1e-5, "{thermostat:?} {coupling:?}: volumes part by {}", worst.2);
    }
}

/// A chunk that overflows the edge buffers is replayed from its saved state, chain,
/// barostat, cell and neighbour-search records included: the same bits as a run
/// that never overflowed.
#[test]
fn gpu_npt_recovers_from_overflowing_edges() {
    let Some(gpu) = gpu_or_skip("gpu_npt_recovers_from_overflowing_edges") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let structures = vec![water_box(); 2];
    let settings = MdSettings { timestep: 0.5, thermostat: nhc(400.0), seed: 3 };
    let run = |shrink: bool| {
        let b = gas_barostat(6000.0, Coupling::Anisotropic);
        let mut md = Dynamics::with_barostat(&demo(), &gpu, &structures, settings, b).unwrap();
        md.maxwell_boltzmann(400.0, 5).unwrap();
        md.run(10, 5, |_| Ok(())).unwrap();
        if shrink {
            md.resize_edge_buffers(1000).unwrap();
        }
        md.run(30, 10, |_| Ok(())).unwrap();
        state_bits(&mut md)
    };
    let (plain, recovered) = (run(false), run(true));
    assert_eq!(plain.2, recovered.2);
    assert!(plain.0 == recovered.0, "the replayed chunk's atoms differ");
    assert!(plain.1 == recovered.1, "the replayed chunk's ensemble state or cells differ");
}

/// Langevin on the fused engine (molecules) tracks the thermostat's heat too.
#[test]
fn gpu_fused_langevin_keeps_its_conserved_quantity_flat() {
    let Some(gpu) = gpu_or_skip("gpu_fused_langevin_keeps_its_conserved_quantity_flat") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let settings = MdSettings { timestep: 0.5, thermostat: langevin(600.0), seed: 3 };
    let model = demo().with_engine(mlff::model::fused::EngineChoice::Fused);
    let mut md = Dynamics::new(&model, &gpu, &samples(), settings).unwrap();
    assert_eq!(md.engine_name(), "fused");
    md.maxwell_boltzmann(150.0, 4).unwrap();
    let samples = run(&mut md, 300, 10);
    for (s, (conserved, energy)) in excursions(&samples).into_iter().enumerate() {
        println!("fused Langevin structure {s}: conserved moved {conserved:.2e} eV, E {energy:.2e} eV");
        assert!(energy > 0.05, "structure {s}: the bath did nothing ({energy} eV)");
        assert!(conserved < 1e-3 * energy, "structure {s}: conserved moved {conserved:.2e} eV, E {energy:.2e} eV");
    }
}

//! Device sets (issue 23): structures and replicas spread over several devices give
//! the numbers, the errors, the MD reports and the trajectories of one device. The
//! split is forced over a set of CPU devices here (the CPU path's per-atom work does
//! not depend on what else is in the batch, so the numbers agree bit for bit); on a
//! host with two GPUs the same checks run on `gpu:0,1` (they skip loudly with fewer).
mod common;

use common::Rng;
use mlff::cpu::Cpu;
use mlff::dynamics::{Dynamics, MdSettings, Report, Thermostat};
use mlff::relax::{relax, FireSettings};
use mlff::{Device, Model, Prediction, Structure};
use std::path::Path;
use std::process::Command;

/// A CPU device of one thread (CI has two cores; a set of them takes both).
fn cpu1() -> Device {
    Device::Cpu(Cpu::new(1).unwrap())
}

fn cpu_set(n: usize) -> Device {
    Device::set((0..n).map(|_| cpu1()).collect()).unwrap()
}

fn samples() -> Vec<Structure> {
    mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "molecules.xyz").unwrap().into_iter().map(|f| f.structure).collect()
}

fn water_box() -> Structure {
    mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "water-box.xyz").unwrap().remove(0).structure
}

/// The sample molecules, each three times with its atoms shaken by up to 0.05 Å,
/// and the periodic water box as structure 8: 16 structures of 3 to 192 atoms.
fn mixed_batch() -> Vec<Structure> {
    let mut rng = Rng::new(23);
    let mut out = Vec::new();
    for _ in 0..3 {
        for mut s in samples() {
            for p in &mut s.positions {
                for x in p.iter_mut() {
                    *x += rng.range(-0.05, 0.05);
                }
            }
            out.push(s);
        }
    }
    out.insert(8, water_box());
    out
}

/// The synthetic demo model (every element; smooth), as the MD tests use.
fn demo() -> Model {
    use mlff::model::demo::{demo_config, synthetic_weights};
    Model::from_weights(synthetic_weights(demo_config(), 2026), Default::default())
}

#[test]
fn device_strings_name_sets_and_bad_ones_say_why() {
    let set = Device::parse("cpu, CPU,cpu").unwrap();
    assert_eq!(set.members().len(), 3);
    assert!(!set.is_gpu());
    assert!(set.describe().starts_with("3 CPU devices: CPU ("), "{}", set.describe());
    // One device is itself, a set in a set is opened up.
    assert!(matches!(Device::set(vec![cpu1()]).unwrap(), Device::Cpu(_)));
    assert_eq!(Device::set(vec![cpu_set(2), cpu1()]).unwrap().members().len(), 3);
    assert_eq!(cpu1().members().len(), 1);
    let refused = |choice: &str, expected: &str| {
        let e = Device::parse(choice).unwrap_err().to_string();
        assert!(e.contains(expected), "{choice:?}: {e}");
    };
    refused("cpu,,cpu", "an empty entry cannot be one entry of a device set");
    refused("cpu,auto", "auto cannot be one entry of a device set");
    refused("gpu:all,cpu", "gpu:all cannot be one entry");
    refused("tpu", "unknown device \"tpu\"");
    refused("cpu,tpu", "unknown device \"tpu\"");
    refused("7", "unknown device \"7\"");
    refused("gpu:x", "bad GPU ordinal in device \"gpu:x\"");
    assert!(Device::set(Vec::new()).unwrap_err().to_string().contains("at least one device"));
    if mlff::gpu::device_count() > 0 {
        refused("gpu:0,gpu:0", "GPU 0 is named twice");
        refused("cpu,gpu:0", "all GPUs or all CPUs");
    } else {
        refused("gpu:0,1", "no CUDA device");
        refused("gpu:all", "no CUDA device");
    }
}

fn assert_same_predictions(split: &[Prediction], whole: &[Prediction], what: &str) {
    assert_eq!(split.len(), whole.len(), "{what}");
    for (k, (a, b)) in split.iter().zip(whole).enumerate() {
        assert_eq!(a, b, "{what}: structure {k}");
    }
}

#[test]
fn a_set_of_cpus_evaluates_as_one_cpu_in_input_order() {
    let model = mlff::default_model().unwrap();
    let structures = mixed_batch();
    let whole = model.evaluate(&cpu1(), &structures).unwrap();
    assert!(whole[8].stress.is_some(), "the water box is in the batch");
    for members in [2, 3, 5] {
        let set = cpu_set(members);
        let split = model.evaluate(&set, &structures).unwrap();
        assert_same_predictions(&split, &whole, &format!("{members} CPU devices"));
        let energies = model.energies(&set, &structures).unwrap();
        assert_eq!(energies, whole.iter().map(|p| p.energy).collect::<Vec<_>>(), "{members} CPU devices");
    }
    // More devices than structures: the last ones stay idle.
    let two = &structures[..2];
    assert_same_predictions(&model.evaluate(&cpu_set(4), two).unwrap(), &whole[..2], "4 devices, 2 structures");
    assert!(model.evaluate(&cpu_set(2), &[]).unwrap().is_empty());
    // One structure is not split: the weighted call runs on the set's first device.
    let weights = vec![1.0; structures[8].len()];
    let on_set =
        model.evaluate_weighted(&cpu_set(2), &structures[8], &weights, mlff::AtomVirials::Skip).unwrap().energy;
    assert_eq!(on_set, whole[8].energy);
}

#[test]
fn an_error_on_one_device_names_the_structure_as_one_device_would() {
    let model = mlff::default_model().unwrap();
    let set = cpu_set(3);
    let mut structures = mixed_batch();
    let last = structures.len() - 1;
    // Two atoms 1e-5 Å apart (an error), in the last device's share.
    let mut bad = structures[last].clone();
    bad.positions[1] = bad.positions[0];
    bad.positions[1][0] += 1e-5;
    structures[last] = bad;
    let on_one = model.evaluate(&cpu1(), &structures).unwrap_err().to_string();
    let on_set = model.evaluate(&set, &structures).unwrap_err().to_string();
    assert!(on_one.contains(&format!("structure {last}")), "{on_one}");
    assert_eq!(on_set, on_one);
    // An element the model was not trained on, in the middle device's share.
    structures[last] = structures[0].clone();
    structures[7].numbers[0] = 92;
    let on_one = model.energies(&cpu1(), &structures).unwrap_err().to_string();
    let on_set = model.energies(&set, &structures).unwrap_err().to_string();
    assert!(on_one.contains("structure 7"), "{on_one}");
    assert_eq!(on_set, on_one);
}

#[test]
fn relax_on_a_set_of_cpus_is_relax_on_one() {
    let model = mlff::default_model().unwrap();
    let structures: Vec<Structure> = mixed_batch().into_iter().filter(|s| !s.is_periodic()).take(7).collect();
    let settings = FireSettings { max_steps: 15, ..Default::default() };
    let whole = relax(&model, &cpu1(), &structures, settings, |_, _| {}).unwrap();
    let split = relax(&model, &cpu_set(3), &structures, settings, |_, _| {}).unwrap();
    assert_eq!(split.len(), whole.len());
    for (k, (a, b)) in split.iter().zip(&whole).enumerate() {
        assert_eq!((a.steps, a.converged, a.fmax), (b.steps, b.converged, b.fmax), "structure {k}");
        assert_eq!(a.structure.positions, b.structure.positions, "structure {k}");
        assert_eq!(a.prediction, b.prediction, "structure {k}");
    }
}

/// Everything a report shows, copied.
#[derive(Debug, PartialEq)]
struct Shown {
    step: u64,
    time: f64,
    offsets: Vec<usize>,
    numbers: Vec<u32>,
    origins: Vec<[f64; 3]>,
    positions: Vec<[f32; 3]>,
    velocities: Vec<[f32; 3]>,
    forces: Vec<[f32; 3]>,
    potential: Vec<f64>,
    kinetic: Vec<f64>,
}

fn shown(r: &Report) -> Shown {
    Shown {
        step: r.step,
        time: r.time,
        offsets: r.offsets.to_vec(),
        numbers: r.numbers.to_vec(),
        origins: r.origins.to_vec(),
        positions: r.positions.to_vec(),
        velocities: r.velocities.to_vec(),
        forces: r.forces.to_vec(),
        potential: r.potential.to_vec(),
        kinetic: r.kinetic.to_vec(),
    }
}

/// The reports of `steps` steps (and the state before and after), or the error that
/// ended the run with the reports made before it.
fn md_reports(
    device: &Device,
    structures: &[Structure],
    settings: MdSettings,
    velocities: Option<&[[f64; 3]]>,
    steps: u64,
    every: u64,
) -> (Vec<Shown>, Option<String>) {
    let mut md = Dynamics::new(&demo(), device, structures, settings).unwrap();
    match velocities {
        Some(v) => md.set_velocities(v).unwrap(),
        None => md.maxwell_boltzmann(400.0, 5).unwrap(),
    }
    let mut reports = vec![md.current(shown).unwrap()];
    let result = md.run(steps, every, |r| {
        reports.push(shown(r));
        Ok(())
    });
    match result {
        Ok(summary) => {
            assert_eq!(summary.atoms, md.num_atoms());
            reports.push(md.current(shown).unwrap());
            (reports, None)
        }
        Err(e) => (reports, Some(e.to_string())),
    }
}

fn replicas() -> Vec<Structure> {
    samples().iter().flat_map(|s| std::iter::repeat_n(s.clone(), 3)).collect()
}

#[test]
fn md_on_a_set_of_cpus_reports_what_one_cpu_reports() {
    let langevin =
        MdSettings { timestep: 0.5, thermostat: Thermostat::Langevin { temperature: 300.0, friction: 0.02 }, seed: 8 };
    let nve = MdSettings { timestep: 0.5, thermostat: Thermostat::None, seed: 0 };
    let mut structures = replicas();
    structures.insert(4, water_box());
    for settings in [langevin, nve] {
        let (whole, failed) = md_reports(&cpu1(), &structures, settings, None, 7, 3);
        assert!(failed.is_none(), "{failed:?}");
        assert_eq!(whole.iter().map(|r| r.step).collect::<Vec<_>>(), vec![0, 3, 6, 7, 7]);
        for members in [2, 4] {
            let (split, failed) = md_reports(&cpu_set(members), &structures, settings, None, 7, 3);
            assert!(failed.is_none(), "{failed:?}");
            assert_eq!(split.len(), whole.len());
            for (a, b) in split.iter().zip(&whole) {
                assert_eq!(a, b, "{members} CPU devices, {settings:?}, step {}", b.step);
            }
        }
    }
}

#[test]
fn an_md_fault_on_one_device_is_reported_with_its_structure_after_the_reports_before_it() {
    // Two H atoms 0.2 Å apart closing at 0.1 Å/fs meet at step 4, in the last
    // device's share; the others run on until that report.
    let pair = Structure::molecule(vec![1, 1], vec![[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]]);
    let mut structures = replicas();
    structures.push(pair);
    let mut velocities = vec![[0.0; 3]; structures.iter().map(Structure::len).sum::<usize>()];
    let n = velocities.len();
    velocities[n - 2] = [0.05, 0.0, 0.0];
    velocities[n - 1] = [-0.05, 0.0, 0.0];
    let nve = MdSettings { timestep: 0.5, thermostat: Thermostat::None, seed: 0 };
    let (whole, on_one) = md_reports(&cpu1(), &structures, nve, Some(&velocities), 40, 2);
    let on_one = on_one.expect("the pair collides");
    let last = structures.len() - 1;
    assert!(on_one.contains(&format!("MD step 4: structure {last}: atoms 0 and 1")), "{on_one}");
    assert_eq!(whole.iter().map(|r| r.step).collect::<Vec<_>>(), vec![0, 2], "reports before the collision");
    let (split, on_set) = md_reports(&cpu_set(3), &structures, nve, Some(&velocities), 40, 2);
    assert_eq!(on_set.as_deref(), Some(on_one.as_str()));
    assert_eq!(split, whole);
}

#[test]
fn models_and_md_runs_can_move_between_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_and_sync::<Model>();
    send_and_sync::<Device>();
    send::<Dynamics>();
}

fn mlff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mlff"))
        .args(args)
        .env_remove("MLFF_DEVICE")
        .env("MLFF_NUM_THREADS", "1")
        .output()
        .expect("run mlff")
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name).display().to_string()
}

#[test]
fn the_cli_writes_the_same_files_on_a_set_of_cpus() {
    let dir = std::env::temp_dir().join(format!("mlff-multi-device-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.xyz");
    let mut text = String::new();
    for s in mixed_batch() {
        mlff::extxyz::write_frame(&mut text, &s, &[], None);
    }
    std::fs::write(&input, text).unwrap();
    let input = input.to_str().unwrap();
    let file = |device: &str, name: &str| dir.join(format!("{}-{name}", device.replace(',', "+")));
    let molecules = data("molecules.xyz");
    for device in ["cpu", "cpu,cpu,cpu"] {
        let path = |name: &str| file(device, name).display().to_string();
        let (eval_out, relax_out, log, traj) =
            (path("eval.xyz"), path("relaxed.xyz"), path("md.log"), path("traj.xyz"));
        let runs: [&[&str]; 3] = [
            &["eval", "default", input, "-o", &eval_out, "--batch-atoms", "300"],
            &["relax", "default", &molecules, "-o", &relax_out, "--steps", "10"],
            &[
                "md",
                "default",
                &molecules,
                "--replicas",
                "3",
                "--steps",
                "6",
                "--every",
                "2",
                "--thermostat",
                "langevin",
                "--log",
                &log,
                "--traj",
                &traj,
            ],
        ];
        for args in runs {
            let run = mlff(&[args, &["--device", device]].concat());
            // relax may stop before convergence (exit code 3): its output is written.
            let code = run.status.code();
            assert!(code == Some(0) || (args[0] == "relax" && code == Some(3)), "{args:?}: {run:?}");
            if args[0] == "md" && device != "cpu" {
                let said = String::from_utf8_lossy(&run.stderr);
                assert!(said.contains("on 3 CPU devices"), "{said}");
            }
        }
    }
    for name in ["eval.xyz", "relaxed.xyz", "md.log", "traj.xyz"] {
        let one = std::fs::read(file("cpu", name)).unwrap();
        let set = std::fs::read(file("cpu,cpu,cpu", name)).unwrap();
        assert!(!one.is_empty(), "{name}");
        assert!(one == set, "{name} differs on a set of CPU devices");
    }
    // MLFF_DEVICE names a set too.
    let run = Command::new(env!("CARGO_BIN_EXE_mlff"))
        .args(["md", "default", &data("molecules.xyz"), "--steps", "2", "--every", "1"])
        .env("MLFF_DEVICE", "cpu,cpu")
        .env("MLFF_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("on 2 CPU devices"), "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Two GPUs (skipped with fewer) ----

/// GPUs 0 and 1 as a set, or `None` after printing why the test is skipped.
fn two_gpus_or_skip(test: &str) -> Option<(Device, Device)> {
    use std::io::Write;
    let count = mlff::gpu::device_count();
    if count < 2 {
        let _ = writeln!(std::io::stderr(), "{test}: skipped: needs 2 CUDA devices, found {count}");
        return None;
    }
    let set = Device::parse("gpu:0,1").unwrap_or_else(|e| panic!("{test}: two GPUs present but unusable: {e}"));
    Some((Device::gpu(0).unwrap(), set))
}

/// Round-off between batch compositions on the GPU: the bounds the GPU keeps against
/// the CPU (README: 1.2e-7 relative, 3e-5 eV/Å), with room.
fn assert_close_predictions(split: &[Prediction], whole: &[Prediction], what: &str) {
    assert_eq!(split.len(), whole.len(), "{what}");
    for (k, (a, b)) in split.iter().zip(whole).enumerate() {
        assert!((a.energy - b.energy).abs() <= 5e-7 * b.energy.abs().max(1.0), "{what}: structure {k}");
        assert_eq!(a.forces.len(), b.forces.len(), "{what}: structure {k}");
        for (fa, fb) in a.forces.iter().zip(&b.forces) {
            assert!((0..3).all(|c| (fa[c] - fb[c]).abs() < 1e-4), "{what}: structure {k}: {fa:?} vs {fb:?}");
        }
        assert_eq!(a.stress.is_some(), b.stress.is_some(), "{what}: structure {k}");
    }
}

#[test]
fn two_gpus_give_the_numbers_of_one() {
    let Some((one, two)) = two_gpus_or_skip("two_gpus_give_the_numbers_of_one") else { return };
    let model = mlff::default_model().unwrap();
    // Molecules (the fused engine) and periodic boxes (the layered one), many of each.
    let mut structures: Vec<Structure> = (0..40).flat_map(|_| mixed_batch()).collect();
    structures.truncate(500);
    let whole = model.evaluate(&one, &structures).unwrap();
    for round in 0..2 {
        // The second round replays each GPU's kept workspaces and graphs.
        let split = model.evaluate(&two, &structures).unwrap();
        assert_close_predictions(&split, &whole, &format!("2 GPUs, call {round}"));
    }
    let cpu = model.evaluate(&cpu1(), &structures[..20]).unwrap();
    assert_close_predictions(&model.evaluate(&two, &structures[..20]).unwrap(), &cpu, "2 GPUs against the CPU");
    // A fault on one GPU names the structure in the input's terms.
    let mut bad = structures.clone();
    let last = bad.len() - 1;
    bad[last].positions[1] = bad[last].positions[0];
    let on_one = model.evaluate(&one, &bad).unwrap_err().to_string();
    assert_eq!(model.evaluate(&two, &bad).unwrap_err().to_string(), on_one);
}

#[test]
fn md_on_two_gpus_follows_md_on_one() {
    let Some((one, two)) = two_gpus_or_skip("md_on_two_gpus_follows_md_on_one") else { return };
    let langevin =
        MdSettings { timestep: 0.5, thermostat: Thermostat::Langevin { temperature: 300.0, friction: 0.02 }, seed: 8 };
    // Molecules alone (the fused engine), and with a periodic box (the layered one).
    let molecules: Vec<Structure> = (0..20).flat_map(|_| replicas()).collect();
    let mut with_box = replicas();
    with_box.insert(3, water_box());
    for structures in [molecules, with_box] {
        let (whole, failed) = md_reports(&one, &structures, langevin, None, 20, 5);
        assert!(failed.is_none(), "{failed:?}");
        let (split, failed) = md_reports(&two, &structures, langevin, None, 20, 5);
        assert!(failed.is_none(), "{failed:?}");
        assert_eq!(split.len(), whole.len());
        for (a, b) in split.iter().zip(&whole) {
            assert_eq!(
                (a.step, a.time, &a.offsets, &a.numbers, &a.origins),
                (b.step, b.time, &b.offsets, &b.numbers, &b.origins)
            );
            let worst = a
                .positions
                .iter()
                .zip(&b.positions)
                .flat_map(|(p, q)| (0..3).map(move |c| (p[c] - q[c]).abs()))
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "step {}: positions differ by {worst} Å", b.step);
            for (s, (ea, eb)) in a.potential.iter().zip(&b.potential).enumerate() {
                assert!((ea - eb).abs() < 1e-4 * eb.abs().max(1.0), "step {}: structure {s}: {ea} vs {eb}", b.step);
            }
        }
    }
    // A collision on the second GPU: reported with its structure, after the reports before it.
    let mut structures = replicas();
    structures.push(Structure::molecule(vec![1, 1], vec![[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]]));
    let n: usize = structures.iter().map(Structure::len).sum();
    let mut velocities = vec![[0.0; 3]; n];
    velocities[n - 2] = [0.05, 0.0, 0.0];
    velocities[n - 1] = [-0.05, 0.0, 0.0];
    let nve = MdSettings { timestep: 0.5, thermostat: Thermostat::None, seed: 0 };
    let (_, on_one) = md_reports(&one, &structures, nve, Some(&velocities), 40, 2);
    let (_, on_two) = md_reports(&two, &structures, nve, Some(&velocities), 40, 2);
    let last = structures.len() - 1;
    let on_two = on_two.expect("the pair collides on two GPUs");
    assert!(on_two.contains(&format!("structure {last}")), "{on_two} (one GPU: {on_one:?})");
}

#[test]
fn a_structure_beyond_one_gpu_points_to_lammps() {
    let Some(gpu) = common::gpu_or_skip("a_structure_beyond_one_gpu_points_to_lammps") else { return };
    let gpu = Device::Gpu(std::sync::Arc::new(gpu));
    let model = mlff::default_model().unwrap();
    // A cubic grid of carbon atoms 3 Å apart (sparse enough for the neighbour search's
    // own limit on candidate pairs), more atoms than the GPU's memory holds.
    let (free, _) = gpu.as_gpu().unwrap().memory_info().unwrap();
    let side = ((free / 8000) as f64).cbrt().ceil() as usize;
    let positions: Vec<[f64; 3]> = (0..side * side * side)
        .map(|k| [(k % side) as f64 * 3.0, (k / side % side) as f64 * 3.0, (k / side / side) as f64 * 3.0])
        .collect();
    let huge = Structure::molecule(vec![6; positions.len()], positions);
    let small = samples().remove(0);
    let e = model.evaluate(&gpu, &[small.clone(), huge.clone()]).unwrap_err().to_string();
    assert!(e.contains("structure 1 has") && e.contains("LAMMPS"), "{e}");
    if let Some((_, two)) = two_gpus_or_skip("a_structure_beyond_one_gpu_points_to_lammps (2 GPUs)") {
        let e = model.evaluate(&two, &[small, huge.clone()]).unwrap_err().to_string();
        assert!(e.contains("structure 1 has") && e.contains("LAMMPS"), "{e}");
    }
    let settings = MdSettings { timestep: 0.5, thermostat: Thermostat::None, seed: 0 };
    let e = Dynamics::new(&model, &gpu, &[huge], settings).err().expect("refused").to_string();
    assert!(e.contains("LAMMPS"), "{e}");
}

//! The library against careless or hostile input (issue 17): answers that must not
//! depend on where a structure sits, inputs that must be refused quickly with the
//! numbers (tiny or needle-thin cells, absurd configs, endless files), and messages
//! that must say what is wrong.
mod common;

use common::{gpu_or_skip, shared_model_path, Rng};
use mlff::dynamics::{Dynamics, MdSettings, Thermostat};
use mlff::{Batch, Device, Model, Structure};
use std::sync::Arc;

fn cpu() -> Device {
    Device::cpu().unwrap()
}

fn samples() -> Vec<Structure> {
    mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "molecules.xyz").unwrap().into_iter().map(|f| f.structure).collect()
}

fn water_box() -> Structure {
    mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "water-box.xyz").unwrap().remove(0).structure
}

fn translated(s: &Structure, by: [f64; 3]) -> Structure {
    let mut t = s.clone();
    t.positions = s.positions.iter().map(|p| std::array::from_fn(|x| p[x] + by[x])).collect();
    t
}

fn worst_force_difference(a: &mlff::Prediction, b: &mlff::Prediction) -> f64 {
    a.forces.iter().zip(&b.forces).flat_map(|(f, g)| (0..3).map(move |x| (f[x] - g[x]).abs())).fold(0.0, f64::max)
}

/// The same molecule 1e5 Å away: forces within f32 rounding of the ones at the origin
/// (before the per-structure origin, the error there reached eV/Å).
fn assert_translation_invariant(device: &Device) {
    let model = mlff::default_model().unwrap();
    let dimer = samples().into_iter().find(|s| s.len() == 24).unwrap();
    let far = [1.0e5 + 0.123, -2.0e5 + 0.456, 3.3e4 + 0.789];
    let out = model.evaluate(device, &[dimer.clone(), translated(&dimer, far)]).unwrap();
    let worst = worst_force_difference(&out[0], &out[1]);
    assert!(worst < 1e-4, "{}: forces moved by {worst} eV/Å with the molecule", device.describe());
    assert!(
        (out[0].energy - out[1].energy).abs() < 1e-5 * out[0].energy.abs(),
        "{} vs {}",
        out[0].energy,
        out[1].energy
    );
}

#[test]
fn forces_do_not_depend_on_where_the_molecule_sits() {
    assert_translation_invariant(&cpu());
}

#[test]
fn gpu_forces_do_not_depend_on_where_the_molecule_sits() {
    let Some(gpu) = gpu_or_skip("gpu_forces_do_not_depend_on_where_the_molecule_sits") else { return };
    assert_translation_invariant(&Device::Gpu(Arc::new(gpu)));
}

/// A periodic box moved by 1e6 lattice vectors (1e7 Å): the same energy, not atoms
/// on top of each other.
#[test]
fn a_box_moved_by_a_million_cells_has_the_same_energy() {
    let model = mlff::default_model().unwrap();
    let water = water_box();
    let cell = water.cell.unwrap();
    let shift: [f64; 3] = std::array::from_fn(|x| 1.0e6 * (cell[0][x] + cell[1][x] - cell[2][x]));
    let out = model.evaluate(&cpu(), &[water.clone(), translated(&water, shift)]).unwrap();
    assert!(
        (out[0].energy - out[1].energy).abs() < 1e-5 * out[0].energy.abs(),
        "{} vs {}",
        out[0].energy,
        out[1].energy
    );
    let worst = worst_force_difference(&out[0], &out[1]);
    assert!(worst < 1e-3, "forces moved by {worst} eV/Å");
}

#[test]
fn batches_hold_positions_relative_to_an_f64_origin() {
    let dimer = samples().into_iter().find(|s| s.len() == 24).unwrap();
    let far = translated(&dimer, [1.0e5, 0.0, -1.0e5]);
    let batch = Batch::new(&[dimer.clone(), far.clone()]).unwrap();
    // The relative positions are the same bits, whatever the translation.
    let (a, b) = batch.positions.split_at(24);
    for (p, q) in a.iter().zip(b) {
        assert!((0..3).all(|x| (p[x] - q[x]).abs() <= 1e-5), "{p:?} vs {q:?}");
    }
    for (s, structure) in [&dimer, &far].into_iter().enumerate() {
        for (p, q) in batch.absolute_positions(s, &batch.positions).iter().zip(&structure.positions) {
            assert!((0..3).all(|x| (p[x] - q[x]).abs() < 1e-5), "structure {s}: {p:?} vs {q:?}");
        }
    }
    // Periodic: wrapped into the cell in f64 first.
    let water = water_box();
    let cell = water.cell.unwrap();
    let moved = translated(&water, std::array::from_fn(|x| 7.0 * cell[0][x] - 3.0 * cell[2][x]));
    let batch = Batch::new(&[water.clone(), moved]).unwrap();
    let n = water.len();
    for i in 0..n {
        let (p, q) = (batch.positions[i], batch.positions[n + i]);
        assert!((0..3).all(|x| (p[x] - q[x]).abs() < 1e-4), "atom {i}: {p:?} vs {q:?}");
    }
}

#[test]
fn coordinates_f32_cannot_hold_are_refused() {
    let model = mlff::default_model().unwrap();
    // One atom far away is fine: its origin is where it is.
    let lone = Structure::molecule(vec![1], vec![[1e300, -1e300, 5.0]]);
    assert!(model.evaluate(&cpu(), &[lone]).is_ok());
    // Two atoms 1e300 Å apart cannot share an f32 frame.
    let spread = Structure::molecule(vec![1, 1], vec![[0.0; 3], [1e300, 0.0, 0.0]]);
    let e = model.evaluate(&cpu(), &[spread]).unwrap_err().to_string();
    assert!(e.contains("from the centre of the structure") && e.contains("separate structures"), "{e}");
}

#[test]
fn md_reports_absolute_positions() {
    let model = mlff::default_model().unwrap();
    let dimer = samples().into_iter().find(|s| s.len() == 24).unwrap();
    let far = translated(&dimer, [2.5e4, -1.0e4, 7.0]);
    let settings = MdSettings { timestep: 0.5, thermostat: Thermostat::None, seed: 1 };
    let mut md = Dynamics::new(&model, &cpu(), std::slice::from_ref(&far), settings).unwrap();
    let start = md.current(|r| r.absolute_positions(0)).unwrap();
    for (p, q) in start.iter().zip(&far.positions) {
        assert!((0..3).all(|x| (p[x] - q[x]).abs() < 1e-5), "{p:?} vs {q:?}");
    }
    md.maxwell_boltzmann(300.0, 2).unwrap();
    md.run(10, 10, |r| {
        let moved = r.absolute_positions(0);
        let worst = moved.iter().zip(&far.positions).map(|(p, q)| common::dist(p, q)).fold(0.0, f64::max);
        assert!(worst > 0.0 && worst < 0.5, "after 5 fs the atoms are {worst} Å from where they started");
        Ok(())
    })
    .unwrap();
}

/// Each case must be refused (quickly: before the fix they ran for minutes or grew
/// to tens of GB), with a message naming the problem.
#[test]
fn tiny_and_thin_cells_are_refused_with_the_numbers() {
    let model = mlff::default_model().unwrap();
    let cases = [
        // One atom in a 0.01 Å cell.
        ([[0.01, 0.0, 0.0], [0.0, 0.01, 0.0], [0.0, 0.0, 0.01]], vec![[0.0; 3]], "neighbours per atom"),
        // Passes the singular-cell test, but its planes are 1e-6 Å apart.
        ([[10.0, 0.0, 0.0], [10.0, 1e-6, 0.0], [0.0, 0.0, 10.0]], vec![[0.0; 3]], "neighbours per atom"),
        // Two lattice vectors 1e-4 Å apart.
        ([[10.0, 0.0, 0.0], [10.0, 1e-4, 0.0], [0.0, 0.0, 10.0]], vec![[0.0; 3], [1.0, 1.0, 1.0]], "neighbours"),
    ];
    for (cell, positions, want) in cases {
        let s = Structure::periodic(vec![1; positions.len()], positions, cell, [true; 3]);
        let e = model.evaluate(&cpu(), std::slice::from_ref(&s)).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("check the cell"), "{cell:?}: {e}");
        let e = mlff::neighbor_list(&Batch::new(&[s]).unwrap(), 5.0).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    // A slab (not periodic along c) whose a and b planes are 1e-5 Å apart: no density
    // to speak of, but the search would visit 1e12 images.
    let slab = Structure::periodic(
        vec![1],
        vec![[0.0; 3]],
        [[10.0, 0.0, 0.0], [10.0, 1e-5, 0.0], [0.0, 0.0, 10.0]],
        [true, true, false],
    );
    let e = model.evaluate(&cpu(), &[slab]).unwrap_err().to_string();
    assert!(e.contains("too small or too thin") && e.contains("periodic images"), "{e}");
}

#[test]
fn an_atom_on_its_own_image_is_named_as_such() {
    // A cell 5e-5 Å long along a: the atom sits on its own image.
    let s = Structure::periodic(
        vec![1],
        vec![[0.0; 3]],
        [[5e-5, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]],
        [true, false, false],
    );
    let e = mlff::neighbor_list(&Batch::new(&[s]).unwrap(), 1e-3).unwrap_err().to_string();
    assert!(e.contains("atom 0 and its own periodic image"), "{e}");
    assert!(!e.contains("atoms 0 and 0"), "{e}");
}

#[test]
fn the_cpu_path_refuses_what_does_not_fit_in_memory() {
    // The engine's neighbour list and model state for 30,000 atoms need ~300 MB;
    // under a 100 MB limit (a child process, so the variable stays there) it refuses.
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .args(["--exact", "memory_limit_child", "--nocapture", "--include-ignored"])
        .env("MLFF_MEMORY_LIMIT", "100M")
        .env("MLFF_TEST_CHILD", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&child.stdout).to_string() + &String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success() && said.contains("child refused:"), "{said}");
    assert!(said.contains("of memory") && said.contains("MLFF_MEMORY_LIMIT"), "{said}");
}

#[test]
#[ignore = "run by the_cpu_path_refuses_what_does_not_fit_in_memory in a child process"]
fn memory_limit_child() {
    if std::env::var("MLFF_TEST_CHILD").is_err() {
        return;
    }
    let mut rng = Rng::new(5);
    let side = (10.0f64 * 30_000.0).cbrt();
    let positions = (0..30_000).map(|_| [0; 3].map(|_| rng.range(0.0, side))).collect();
    let s = Structure::periodic(
        vec![1; 30_000],
        positions,
        [[side, 0.0, 0.0], [0.0, side, 0.0], [0.0, 0.0, side]],
        [true; 3],
    );
    let e = mlff::default_model().unwrap().evaluate(&cpu(), &[s]).unwrap_err();
    println!("child refused: {e}");
}

#[test]
fn thread_counts_are_bounded() {
    assert!(mlff::cpu::Cpu::new(100_000).unwrap_err().to_string().contains("at most 1024"));
    assert!(mlff::cpu::Cpu::new(2).is_ok());
}

/// The shared model's file with its header rewritten by `edit`.
fn with_header(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let bytes = std::fs::read(shared_model_path()).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    [&(text.len() as u64).to_le_bytes()[..], &text, &bytes[8 + n..]].concat()
}

#[test]
fn absurd_model_configs_are_refused_on_load() {
    let cases = [
        ("cutoff", serde_json::json!(1e6), "cutoff 1000000 Å"),
        ("cutoff", serde_json::json!(-5.0), "cutoff -5 Å"),
        ("cutoff", serde_json::json!(0.0), "cutoff 0 Å"),
        ("num_interactions", serde_json::json!(999), "999 interactions"),
        ("num_rbf", serde_json::json!(99999), "99999 radial basis functions"),
        ("max_z", serde_json::json!(99999), "99999 max_z"),
        ("hidden_dim", serde_json::json!(1u64 << 40), "hidden_dim"),
    ];
    for (key, value, want) in cases {
        let file = with_header(|h| {
            let meta = h["__metadata__"].as_object_mut().unwrap();
            let mut config: serde_json::Value = serde_json::from_str(meta["config"].as_str().unwrap()).unwrap();
            config[key] = value.clone();
            meta.insert("config".into(), config.to_string().into());
        });
        let e = Model::from_bytes(&file).unwrap_err().to_string();
        assert!(e.contains(want), "{key} = {value}: {e}");
    }
}

/// A tensor deleted from the header leaves a gap in the data: the error must name
/// the missing tensor, not the one after the gap.
#[test]
fn a_missing_tensor_is_reported_under_its_own_name() {
    for name in ["interactions.1.update.mixing_matrix", "energy_head.2.bias", "embedding.weight"] {
        let file = with_header(|h| assert!(h.remove(name).is_some(), "{name}"));
        let e = Model::from_bytes(&file).unwrap_err().to_string();
        assert!(e.contains(&format!("missing tensor `{name}`")), "{name}: {e}");
    }
}

#[test]
fn endless_or_binary_files_are_refused_quickly() {
    if !std::path::Path::new("/dev/zero").exists() {
        eprintln!("endless_or_binary_files_are_refused_quickly: skipped: no /dev/zero");
        return;
    }
    let e = Model::load("/dev/zero").unwrap_err().to_string();
    assert!(e.contains("/dev/zero") && e.contains("not a safetensors file"), "{e}");
    let e = mlff::extxyz::read("/dev/zero").unwrap_err().to_string();
    assert!(e.contains("not a text file"), "{e}");
    let e = mlff::extxyz::read(shared_model_path()).unwrap_err().to_string();
    assert!(e.contains("not a text file") || e.contains("expected an atom count"), "{e}");
}

#[test]
fn oversized_batches_are_refused_before_allocating() {
    // A structure that claims more atoms than exist is caught by its lengths; a batch
    // over the 32-bit limit is refused by count, not by an allocation failure.
    let one = Structure::molecule(vec![1], vec![[0.0; 3]]);
    let many = vec![one; 1 << 12];
    assert!(Batch::new(&many).is_ok());
    let e = Batch::new(&[Structure::molecule(vec![1, 1], vec![[0.0; 3]])]).unwrap_err().to_string();
    assert!(e.contains("2 atomic numbers but 1 positions"), "{e}");
}

#[test]
fn md_on_a_diverging_cpu_run_says_so() {
    // Positions that become non-finite (a velocity of 1e38 Å/fs) are an error, not
    // the energy of isolated atoms.
    let model = mlff::default_model().unwrap();
    let water = samples().remove(0);
    // 3e38 Å/fs × 2 fs overflows f32 in the first drift.
    let settings = MdSettings { timestep: 2.0, thermostat: Thermostat::None, seed: 1 };
    let mut md = Dynamics::new(&model, &cpu(), &[water], settings).unwrap();
    md.set_velocities(&[[3e38, 0.0, 0.0], [0.0; 3], [0.0; 3]]).unwrap();
    let e = md.run(3, 1, |_| Ok(())).unwrap_err().to_string();
    assert!(e.contains("MD step 1") && (e.contains("non-finite") || e.contains("diverged")), "{e}");
}

#[test]
fn gpu_refuses_tiny_cells_and_reports_absolute_md_positions() {
    let Some(gpu) = gpu_or_skip("gpu_refuses_tiny_cells_and_reports_absolute_md_positions") else { return };
    let gpu = Device::Gpu(Arc::new(gpu));
    let model = mlff::default_model().unwrap();
    let tiny =
        Structure::periodic(vec![1], vec![[0.0; 3]], [[0.01, 0.0, 0.0], [0.0, 0.01, 0.0], [0.0, 0.0, 0.01]], [true; 3]);
    let e = model.evaluate(&gpu, std::slice::from_ref(&tiny)).unwrap_err().to_string();
    assert!(e.contains("neighbours per atom"), "{e}");
    let gpu_cells = match &gpu {
        Device::Gpu(g) => {
            mlff::gpu_neighbors::GpuCellList::new(g.clone(), &Batch::new(&[tiny]).unwrap(), 5.0, 0.0, false)
        }
        _ => unreachable!(),
    };
    assert!(gpu_cells.is_err(), "the GPU cell list accepted a 0.01 Å cell");
    let dimer = samples().into_iter().find(|s| s.len() == 24).unwrap();
    let far = translated(&dimer, [2.5e4, -1.0e4, 7.0]);
    let settings = MdSettings { timestep: 0.5, thermostat: Thermostat::None, seed: 1 };
    let mut md = Dynamics::new(&model, &gpu, std::slice::from_ref(&far), settings).unwrap();
    let start = md.current(|r| r.absolute_positions(0)).unwrap();
    for (p, q) in start.iter().zip(&far.positions) {
        assert!((0..3).all(|x| (p[x] - q[x]).abs() < 1e-5), "{p:?} vs {q:?}");
    }
}

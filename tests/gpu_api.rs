//! The GPU path's public types keep their guarantees: a workspace holds on to the
//! weights its launches read and refuses others, refuses atomic numbers beyond the
//! embedding before any kernel reads it, the launch choices come from the device,
//! and every launch choice the tuning can make (tile sizes, split-K, channel groups,
//! tensor cores, kept activations, graphs on or off) gives the CPU's answer.
mod common;

use common::{gpu_or_skip, reference_frames, shared_model_path};
use mlff::model::gpu::{GpuWeights, Workspace};
use mlff::model::tuning::{Overrides, Tuning};
use mlff::{Batch, Device, Model, Structure};
use std::sync::Arc;

fn model() -> Model {
    Model::load(shared_model_path()).expect("load shared model")
}

fn gpu(test: &str) -> Option<Arc<mlff::gpu::Gpu>> {
    gpu_or_skip(test).map(Arc::new)
}

#[test]
fn launch_choices_come_from_the_device() {
    let Some(gpu) = gpu("launch_choices_come_from_the_device") else { return };
    let properties = gpu.properties();
    println!("{}: {properties:?}", gpu.name());
    assert!(properties.sm_count > 0);
    // Every GPU of sm_90 lets a block opt in to more than the 48 KB default.
    assert!(properties.max_shared_bytes > 48 * 1024, "{properties:?}");
    let weights = GpuWeights::new(gpu.clone(), model().weights()).unwrap();
    assert_eq!(weights.tuning().device, properties);
}

#[test]
fn a_workspace_keeps_its_weights_and_refuses_others() {
    let Some(gpu) = gpu("a_workspace_keeps_its_weights_and_refuses_others") else { return };
    let model = model();
    let structures: Vec<Structure> = reference_frames().into_iter().map(|f| f.structure).collect();
    let batch = Batch::new(&structures).unwrap();
    let weights = GpuWeights::new(gpu.clone(), model.weights()).unwrap();
    let mut workspace = Workspace::new(&weights, &batch).unwrap();
    let first = workspace.run(&weights, &batch.positions, true, &batch).unwrap();
    // Other weights (even of the same model) are refused: the workspace's launches
    // and CUDA graph read the weights it was made with, which it holds.
    let other = GpuWeights::new(gpu.clone(), model.weights()).unwrap();
    let err = workspace.run(&other, &batch.positions, true, &batch).err().expect("other weights refused");
    assert!(err.to_string().contains("other GPU weights"), "{err}");
    drop(other);
    let again = workspace.run(&weights, &batch.positions, true, &batch).unwrap();
    let third = workspace.run(&weights, &batch.positions, true, &batch).unwrap();
    assert_eq!(first.energies, again.energies);
    assert_eq!(again.energies, third.energies);
    assert_eq!(again.forces, third.forces);
    // `evaluate` on the layered engine is a workspace run (molecules would otherwise
    // go to the fused engine, whose sums are ordered otherwise).
    let layered = model.with_engine(mlff::model::fused::EngineChoice::Layered);
    let expected = layered.evaluate(&Device::Gpu(gpu), &structures).unwrap();
    for (s, p) in expected.iter().enumerate() {
        assert_eq!(first.energies[s], p.energy, "structure {s}");
    }
}

#[test]
fn a_workspace_refuses_elements_beyond_the_embedding() {
    let Some(gpu) = gpu("a_workspace_refuses_elements_beyond_the_embedding") else { return };
    let weights = GpuWeights::new(gpu, model().weights()).unwrap();
    let batch = Batch::new(&[Structure::molecule(vec![1, 150], vec![[0.0; 3], [1.0, 0.0, 0.0]])]).unwrap();
    let err = Workspace::new(&weights, &batch).err().expect("Z = 150 refused");
    assert!(err.to_string().contains("atomic number 150"), "{err}");
}

/// Energies to 1e-5 relative and forces to 1e-4 eV/Å (plus 1e-5 of their size), as
/// `tests/student_gpu.rs` asks of the default choices.
fn assert_matches_cpu(name: &str, gpu: &mlff::model::gpu::GpuOutput, cpu: &[mlff::Prediction]) {
    let forces = gpu.forces.as_ref().expect("forces");
    let mut atom = 0;
    for (s, p) in cpu.iter().enumerate() {
        let e = ((gpu.energies[s] - p.energy) / p.energy.abs().max(1.0)).abs();
        assert!(e <= 1e-5, "{name}: structure {s}: E gpu {} cpu {}", gpu.energies[s], p.energy);
        for f in &p.forces {
            for x in 0..3 {
                let d = (forces[atom][x] as f64 - f[x]).abs();
                assert!(d <= 1e-4 + 1e-5 * f[x].abs(), "{name}: atom {atom}: {:?} vs {f:?}", forces[atom]);
            }
            atom += 1;
        }
    }
}

#[test]
fn every_launch_choice_gives_the_cpu_answer() {
    let Some(gpu) = gpu("every_launch_choice_gives_the_cpu_answer") else { return };
    let cpu = Device::cpu().unwrap();
    // The shared student on its reference molecules, and the F = 64 PaiNN fixture
    // (shared filters and interactions) on its SchNetPack reference structures.
    let painn_fixture = |ext: &str| common::data_dir().join(format!("painn-f64-shared.{ext}"));
    let cases = [
        (model(), reference_frames().into_iter().map(|f| f.structure).collect::<Vec<_>>()),
        (
            Model::load(painn_fixture("safetensors")).unwrap(),
            mlff::extxyz::read(painn_fixture("extxyz")).unwrap().into_iter().map(|f| f.structure).collect(),
        ),
    ];
    let measured = Tuning::measured(gpu.properties());
    let choices: Vec<(&str, Overrides)> = vec![
        ("measured", Overrides::default()),
        ("tiles of 2, readout 4", Overrides { tile_atoms: Some(2), readout_tile_atoms: Some(4), ..Default::default() }),
        ("tiles of 16", Overrides { tile_atoms: Some(16), ..Default::default() }),
        ("tiles of 8, split 2", Overrides { tile_atoms: Some(8), split_k: Some(2), ..Default::default() }),
        ("PaiNN tiles of 4", Overrides { painn_tile_atoms: Some(4), ..Default::default() }),
        ("1 channel group", Overrides { channel_groups: Some(1), ..Default::default() }),
        ("tensor cores", Overrides { tensor_cores: Some(true), ..Default::default() }),
        ("recompute, no graph", Overrides { keep_activations: Some(false), no_graph: true, ..Default::default() }),
    ];
    for (model, structures) in &cases {
        let batch = Batch::new(structures).unwrap();
        let expected = model.evaluate(&cpu, structures).unwrap();
        for (name, overrides) in &choices {
            let tuning = Tuning { overrides: overrides.clone(), ..measured.clone() };
            let weights = GpuWeights::with_tuning(gpu.clone(), model.weights(), tuning).unwrap();
            let mut workspace = Workspace::new(&weights, &batch).unwrap();
            // The second and third calls replay the captured graph (unless off).
            for _ in 0..3 {
                let out = workspace.run(&weights, &batch.positions, true, &batch).unwrap();
                assert_matches_cpu(&format!("{} {name}", model.architecture()), &out, &expected);
            }
        }
    }
}

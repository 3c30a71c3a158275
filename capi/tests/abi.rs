//! The C ABI called from Rust: its results are `Model::evaluate_weighted`'s, exactly,
//! for a periodic structure given by cell and pbc, with weights and per-atom virials.

use mlff::{AtomVirials, Device};
use mlff_capi::*;
use std::ffi::CString;

#[test]
fn results_are_those_of_evaluate_weighted() {
    let water = mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "water-box.xyz").unwrap().remove(0).structure;
    let n = water.len();
    let weights: Vec<f64> = (0..n).map(|i| [1.0, 0.0, 0.25][i % 3]).collect();
    let model = mlff::default_model().unwrap();
    let device = Device::Cpu(mlff::cpu::Cpu::new(2).unwrap());
    let expected = model.evaluate_weighted(&device, &water, &weights, AtomVirials::Compute).unwrap();

    let path = CString::new("default").unwrap();
    let choice = CString::new("cpu:2").unwrap();
    let mut handle: *mut MlffModel = std::ptr::null_mut();
    // SAFETY: valid strings and output pointer.
    assert_eq!(unsafe { mlff_model_load(path.as_ptr(), choice.as_ptr(), &mut handle) }, MlffStatus::Ok);
    let numbers: Vec<i32> = water.numbers.iter().map(|&z| z as i32).collect();
    let positions: Vec<f64> = water.positions.iter().flatten().copied().collect();
    let cell: Vec<f64> = water.cell.unwrap().iter().flatten().copied().collect();
    let pbc = [1i32; 3];
    let system = MlffSystem {
        num_atoms: n,
        atomic_numbers: numbers.as_ptr(),
        positions: positions.as_ptr(),
        cell: cell.as_ptr(),
        pbc: pbc.as_ptr(),
        energy_weights: weights.as_ptr(),
    };
    let (mut forces, mut atom_energies, mut atom_virials) = (vec![0.0; 3 * n], vec![0.0; n], vec![0.0; 9 * n]);
    let mut results = MlffResults {
        energy: 0.0,
        virial: [0.0; 9],
        forces: forces.as_mut_ptr(),
        atom_energies: atom_energies.as_mut_ptr(),
        atom_virials: atom_virials.as_mut_ptr(),
    };
    // SAFETY: every array has the length the header gives for n atoms.
    assert_eq!(unsafe { mlff_evaluate(handle, &system, &mut results) }, MlffStatus::Ok);
    // SAFETY: a live handle, freed once.
    unsafe { mlff_model_free(handle) };

    assert_eq!(results.energy, expected.energy);
    assert_eq!(atom_energies, expected.atom_energies);
    let flat = |m: &[[f64; 3]; 3]| -> Vec<f64> { m.iter().flatten().copied().collect() };
    assert_eq!(results.virial.to_vec(), flat(&expected.virial));
    assert_eq!(forces, expected.forces.iter().flatten().copied().collect::<Vec<f64>>());
    let expected_atom_virials: Vec<f64> = expected.atom_virials.unwrap().iter().flat_map(flat).collect();
    assert_eq!(atom_virials, expected_atom_virials);
}

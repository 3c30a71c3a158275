//! Cell-list neighbour search against brute force over explicit images.
mod common;

use common::Rng;
use mlff::gpu_neighbors::{gpu_neighbor_list, GpuCellList};
use mlff::kernels::geometry::{edge_vector, shift_vector};
use mlff::{neighbor_list, Batch, Structure};
use std::sync::Arc;

/// Every (j, S) with d ≤ rc by brute force, S within ±reach on periodic axes.
fn brute_force(batch: &Batch, cutoff: f32, reach: i32) -> Vec<Vec<(u32, [i32; 3])>> {
    let mut rows = vec![Vec::new(); batch.num_atoms()];
    for s in 0..batch.num_structures() {
        let pbc = batch.pbc[s];
        let r = |a: usize| if pbc[a] { -reach..=reach } else { 0..=0 };
        for i in batch.offsets[s]..batch.offsets[s + 1] {
            for j in batch.offsets[s]..batch.offsets[s + 1] {
                for a in r(0) {
                    for b in r(1) {
                        for c in r(2) {
                            let shift = [a, b, c];
                            if i == j && shift == [0; 3] {
                                continue;
                            }
                            let (_, d) = edge_vector(
                                batch.positions[i],
                                batch.positions[j],
                                shift_vector(shift, &batch.cells[s]),
                            );
                            if d <= cutoff {
                                rows[i].push((j as u32, shift));
                            }
                        }
                    }
                }
            }
            rows[i].sort();
        }
    }
    rows
}

fn random_in_cell(rng: &mut Rng, n: usize, cell: [[f64; 3]; 3], pbc: [bool; 3]) -> Structure {
    let positions = (0..n)
        .map(|_| {
            // Some atoms outside the cell too: wrapping must handle them.
            let f = [rng.range(-0.3, 1.3), rng.range(-0.3, 1.3), rng.range(-0.3, 1.3)];
            std::array::from_fn(|x| (0..3).map(|a| f[a] * cell[a][x]).sum())
        })
        .collect();
    Structure::periodic(vec![1; n], positions, cell, pbc)
}

fn mixed_structures(rng: &mut Rng) -> Vec<Structure> {
    vec![
        // molecule-like cluster
        Structure::molecule(vec![6; 40], (0..40).map(|_| [0; 3].map(|_| rng.range(0.0, 8.0))).collect()),
        // dense periodic box
        random_in_cell(rng, 120, [[10.0, 0.0, 0.0], [0.0, 11.0, 0.0], [0.0, 0.0, 12.0]], [true; 3]),
        // sparse periodic box
        random_in_cell(rng, 15, [[16.0, 0.0, 0.0], [0.0, 16.0, 0.0], [0.0, 0.0, 16.0]], [true; 3]),
        // skewed triclinic, left-handed
        random_in_cell(rng, 60, [[9.0, 0.0, 0.0], [4.5, 8.0, 0.0], [3.0, -2.5, -9.5]], [true; 3]),
        // tiny cell: several images of each neighbour, images of the atom itself
        random_in_cell(rng, 3, [[2.1, 0.0, 0.0], [0.7, 2.4, 0.0], [0.3, 0.4, 2.6]], [true; 3]),
        // mixed periodicity (slab and wire)
        random_in_cell(rng, 50, [[7.0, 0.0, 0.0], [1.0, 7.5, 0.0], [0.0, 0.0, 20.0]], [true, true, false]),
        random_in_cell(rng, 30, [[3.0, 0.0, 0.0], [0.0, 15.0, 0.0], [0.0, 0.0, 15.0]], [true, false, false]),
        Structure::molecule(vec![], vec![]),
        Structure::molecule(vec![1], vec![[1.0, 2.0, 3.0]]),
    ]
}

#[test]
fn cell_lists_equal_brute_force_on_mixed_batches() {
    let mut rng = Rng::new(21);
    let cutoff = 5.0f32;
    let structures = mixed_structures(&mut rng);
    let batch = Batch::new(&structures).unwrap();
    let list = neighbor_list(&batch, cutoff).unwrap();
    let expected = brute_force(&batch, cutoff, 4);
    for i in 0..batch.num_atoms() {
        let got: Vec<(u32, [i32; 3])> = list.row(i).map(|e| (list.src[e], list.shift[e])).collect();
        assert_eq!(got, expected[i], "row of atom {i} (structure {})", batch.structure_of[i]);
        for e in list.row(i) {
            let rev = list.reverse[e] as usize;
            assert_eq!(list.src[rev] as usize, i);
            assert_eq!(list.shift[rev], list.shift[e].map(|x| -x));
            assert_eq!(list.geom[rev][3], list.geom[e][3], "d differs between directions");
        }
    }
    assert!(list.num_edges() > 1000);
    // The tiny cell sees its own images.
    let tiny = batch.offsets[4];
    assert!(list.row(tiny).any(|e| list.src[e] as usize == tiny));
}

#[test]
fn singular_cells_and_bad_cutoffs_are_errors() {
    let flat =
        Structure::periodic(vec![1], vec![[0.0; 3]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], [true; 3]);
    assert!(Batch::new(&[flat]).unwrap_err().to_string().contains("singular"));
    let ok = Batch::new(&[Structure::molecule(vec![1], vec![[0.0; 3]])]).unwrap();
    assert!(neighbor_list(&ok, 0.0).is_err());
    assert!(neighbor_list(&ok, f32::NAN).is_err());
}

/// An fcc crystal of `k`³ cubic cells (4 atoms each), lattice constant `a`, rattled.
fn fcc(rng: &mut Rng, k: usize, a: f64) -> Structure {
    let basis = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]];
    let mut positions = Vec::new();
    for x in 0..k {
        for y in 0..k {
            for z in 0..k {
                for b in &basis {
                    positions.push([
                        (x as f64 + b[0]) * a + rng.range(-0.05, 0.05),
                        (y as f64 + b[1]) * a + rng.range(-0.05, 0.05),
                        (z as f64 + b[2]) * a + rng.range(-0.05, 0.05),
                    ]);
                }
            }
        }
    }
    let l = k as f64 * a;
    Structure::periodic(vec![29; positions.len()], positions, [[l, 0.0, 0.0], [0.0, l, 0.0], [0.0, 0.0, l]], [true; 3])
}

fn random_molecule(rng: &mut Rng, n: usize) -> Structure {
    let side = (10.0 * n as f64).cbrt();
    Structure::molecule(vec![6; n], (0..n).map(|_| [0; 3].map(|_| rng.range(0.0, side))).collect())
}

#[test]
fn gpu_lists_equal_cpu_lists_exactly() {
    let Some(gpu) = common::gpu_or_skip("gpu_lists_equal_cpu_lists_exactly") else { return };
    let gpu = Arc::new(gpu);
    let mut rng = Rng::new(5);
    let cases: Vec<(&str, Vec<Structure>)> = vec![
        ("mixed batch", mixed_structures(&mut rng)),
        ("256 molecules of 24 atoms", (0..256).map(|_| random_molecule(&mut rng, 24)).collect()),
        ("3000-atom molecule", vec![random_molecule(&mut rng, 3000)]),
        ("fcc 8x8x8", vec![fcc(&mut rng, 8, 3.61)]),
        // Dense enough that the first edge-capacity guess overflows and the buffers grow;
        // its rows (~290 edges) take the fill kernel's one-lane sort, the other cases'
        // rows (≤ 128 edges) its warp rank sort.
        (
            "dense box",
            vec![random_in_cell(&mut rng, 400, [[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]], [true; 3])],
        ),
    ];
    for (name, structures) in cases {
        let batch = Batch::new(&structures).unwrap();
        let cpu = neighbor_list(&batch, 5.0).unwrap();
        let gpu_list = gpu_neighbor_list(&gpu, &batch, 5.0).unwrap();
        assert_eq!(gpu_list.row_ptr, cpu.row_ptr, "{name}: row pointers");
        assert_eq!(gpu_list.src, cpu.src, "{name}: senders");
        assert_eq!(gpu_list.shift, cpu.shift, "{name}: shifts");
        assert_eq!(gpu_list.reverse, cpu.reverse, "{name}: reverse edges");
        assert_eq!(gpu_list.geom, cpu.geom, "{name}: geometry");
        assert!(cpu.num_edges() > 0, "{name}");
    }
}

#[test]
fn gpu_list_rejects_atoms_on_top_of_each_other() {
    let Some(gpu) = common::gpu_or_skip("gpu_list_rejects_atoms_on_top_of_each_other") else { return };
    let gpu = Arc::new(gpu);
    let s = Structure::molecule(vec![1, 1, 1], vec![[0.0; 3], [1.0, 0.0, 0.0], [1.0, 0.0, 1e-6]]);
    let batch = Batch::new(&[s]).unwrap();
    let err = gpu_neighbor_list(&gpu, &batch, 5.0).unwrap_err().to_string();
    assert!(err.contains("on top of each other"), "{err}");
    assert!(neighbor_list(&batch, 5.0).unwrap_err().to_string().contains("on top of each other"));
}

#[test]
fn gpu_skin_check_flags_only_large_moves() {
    let Some(gpu) = common::gpu_or_skip("gpu_skin_check_flags_only_large_moves") else { return };
    let gpu = Arc::new(gpu);
    let mut rng = Rng::new(9);
    let s = fcc(&mut rng, 4, 3.61);
    let batch = Batch::new(&[s]).unwrap();
    let mut list = GpuCellList::new(gpu, &batch, 5.0, 1.0, false).unwrap();
    list.build(&batch.positions, &batch.structure_of, &batch.offsets).unwrap();
    assert!(!list.moved_beyond_skin().unwrap());
    let mut moved = batch.positions.clone();
    moved[7][1] += 0.45;
    list.set_positions(&moved).unwrap();
    assert!(!list.moved_beyond_skin().unwrap(), "0.45 Å < skin/2");
    moved[7][1] += 0.1;
    list.set_positions(&moved).unwrap();
    assert!(list.moved_beyond_skin().unwrap(), "0.55 Å > skin/2");
}

//! GPU benches (H100 numbers in PERF.md):
//! - `neighbors/*`: cell-list build (bins, counts, scan, fill, sort, reverse) from
//!   positions on the device, random organic-density molecules and fcc copper, 5 Å;
//!   `brute_force/*`: the O(N²) pair count it replaces;
//! - `student/*`: energy + forces of the shared model, neighbour search included,
//!   positions in and energies/forces out (`Workspace::run`, a CUDA-graph replay), and
//!   `Model::evaluate` end to end (structures in, predictions out);
//! - `painn/*`: the same for a PaiNN of the same width (F = 128, T = 3, K = 20);
//! - then a report of peak device memory per atom at 10k, 100k and 1M atoms.
//!
//! Skips (and says why) without a GPU.
use criterion::{BenchmarkId, Criterion, Throughput};
use mlff::gpu::Gpu;
use mlff::gpu_neighbors::GpuCellList;
use mlff::model::fused::{FusedPainnGpu, FusedPainnWeights, FusedStudentGpu, FusedStudentWeights};
use mlff::model::gpu::{GpuWeights, Workspace};
use mlff::{Batch, Device, Model, Structure};
use std::sync::Arc;
use std::time::Duration;

struct Lcg(u64);
impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Uniform random atoms at ~1 per 10 Å³ (as `../shared/bench/torch_student.py`), H C N O.
fn organic(n: usize, seed: u64) -> Structure {
    let side = (10.0 * n as f64).cbrt();
    let mut rng = Lcg(seed);
    let positions = (0..n).map(|_| [0; 3].map(|_| rng.uniform() * side)).collect();
    let numbers = (0..n).map(|i| [1, 6, 7, 8][(i * 7 + 3) % 4]).collect();
    Structure::molecule(numbers, positions)
}

/// fcc copper (a = 3.61 Å), `cells` cubic cells along each axis, periodic.
fn fcc(cells: [usize; 3]) -> Structure {
    let a = 3.61;
    let basis = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]];
    let mut positions = Vec::new();
    for x in 0..cells[0] {
        for y in 0..cells[1] {
            for z in 0..cells[2] {
                for b in &basis {
                    positions.push([(x as f64 + b[0]) * a, (y as f64 + b[1]) * a, (z as f64 + b[2]) * a]);
                }
            }
        }
    }
    let cell = [[cells[0] as f64 * a, 0.0, 0.0], [0.0, cells[1] as f64 * a, 0.0], [0.0, 0.0, cells[2] as f64 * a]];
    Structure::periodic(vec![29; positions.len()], positions, cell, [true; 3])
}

fn neighbor_benches(c: &mut Criterion, gpu: &Arc<Gpu>) {
    let mut cases: Vec<(String, Vec<Structure>)> = Vec::new();
    for n in [100usize, 1_000, 10_000, 100_000, 1_000_000] {
        cases.push((format!("organic/{n}"), vec![organic(n, n as u64)]));
    }
    cases.push(("fcc/8192".into(), vec![fcc([16, 16, 8])]));
    cases.push(("fcc/131072".into(), vec![fcc([32, 32, 32])]));
    cases.push(("fcc/1048576".into(), vec![fcc([64, 64, 64])]));
    cases.push(("fcc_batch/512x1024".into(), (0..512).map(|_| fcc([8, 8, 4])).collect()));
    cases.push(("organic_batch/256x24".into(), (0..256).map(|k| organic(24, k)).collect()));
    let mut group = c.benchmark_group("neighbors");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (name, structures) in &cases {
        let batch = Batch::new(structures).unwrap();
        let mut list = GpuCellList::new(gpu.clone(), &batch, 5.0, 0.0, false).unwrap();
        let edges = list.build(&batch.positions, &batch.structure_of, &batch.offsets).unwrap();
        println!(
            "neighbors/{name}: {} atoms, {edges} edges ({:.1} per atom)",
            batch.num_atoms(),
            edges as f64 / batch.num_atoms() as f64
        );
        group.throughput(Throughput::Elements(batch.num_atoms() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                list.enqueue_build().unwrap();
                gpu.synchronize().unwrap();
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("brute_force");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in [100usize, 1_000, 10_000, 100_000] {
        let batch = Batch::new(&[organic(n, n as u64)]).unwrap();
        let mut list = GpuCellList::new(gpu.clone(), &batch, 5.0, 0.0, false).unwrap();
        list.build(&batch.positions, &batch.structure_of, &batch.offsets).unwrap();
        group.bench_function(BenchmarkId::from_parameter(format!("organic/{n}")), |b| {
            b.iter(|| {
                list.enqueue_brute_force_count().unwrap();
                gpu.synchronize().unwrap();
            })
        });
    }
    group.finish();
}

fn model_benches(c: &mut Criterion, gpu: &Arc<Gpu>, model: &Model, group_name: &str) {
    let weights = GpuWeights::new(gpu.clone(), model.weights()).unwrap();
    let cases: Vec<(String, Vec<Structure>)> = vec![
        ("24".into(), vec![organic(24, 1)]),
        ("1000".into(), vec![organic(1000, 2)]),
        ("10000".into(), vec![organic(10_000, 3)]),
        ("batch_256x24".into(), (0..256).map(|k| organic(24, 100 + k)).collect()),
    ];
    let mut group = c.benchmark_group(group_name);
    group.sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (name, structures) in &cases {
        let batch = Batch::new(structures).unwrap();
        let mut ws = Workspace::new(&weights, &batch).unwrap();
        for _ in 0..3 {
            ws.run(&weights, &batch.positions, true, &batch).unwrap();
        }
        group.bench_function(BenchmarkId::new("energy_forces", name), |b| {
            b.iter(|| ws.run(&weights, &batch.positions, true, &batch).unwrap())
        });
    }
    // The fused small-structure engine on the same molecules (issue 20): one launch.
    for (name, structures) in [&cases[0], &cases[3]] {
        let batch = Batch::new(structures).unwrap();
        let mut run: Box<dyn FnMut()> = match model.weights() {
            mlff::model::Weights::Student(w) => {
                let mut engine = FusedStudentGpu::new(gpu.clone(), &FusedStudentWeights::new(w).unwrap()).unwrap();
                Box::new(move || assert!(engine.evaluate(&batch, true).unwrap().faults.iter().all(|&f| f == 0)))
            }
            mlff::model::Weights::Painn(w) => {
                let mut engine = FusedPainnGpu::new(gpu.clone(), &FusedPainnWeights::new(w).unwrap()).unwrap();
                Box::new(move || assert!(engine.evaluate(&batch, true).unwrap().faults.iter().all(|&f| f == 0)))
            }
        };
        for _ in 0..3 {
            run();
        }
        group.bench_function(BenchmarkId::new("fused_energy_forces", name), |b| b.iter(&mut run));
    }
    let device = Device::Gpu(gpu.clone());
    for (name, structures) in [&cases[0], &cases[3]] {
        model.evaluate(&device, structures).unwrap();
        group.bench_function(BenchmarkId::new("evaluate_end_to_end", name), |b| {
            b.iter(|| model.evaluate(&device, structures).unwrap())
        });
    }
    group.finish();
}

fn memory_report(gpu: &Arc<Gpu>, model: &Model) {
    let weights = GpuWeights::new(gpu.clone(), model.weights()).unwrap();
    for n in [10_000usize, 100_000, 1_000_000] {
        let batch = Batch::new(&[organic(n, 7)]).unwrap();
        gpu.synchronize().unwrap();
        let (free_before, _) = gpu.memory_info().unwrap();
        let mut ws = Workspace::new(&weights, &batch).unwrap();
        let start = std::time::Instant::now();
        let out = ws.run(&weights, &batch.positions, true, &batch).unwrap();
        let first = start.elapsed();
        let start = std::time::Instant::now();
        ws.run(&weights, &batch.positions, true, &batch).unwrap();
        let second = start.elapsed();
        let (free_after, _) = gpu.memory_info().unwrap();
        let used = free_before.saturating_sub(free_after);
        println!(
            "memory: {n} atoms: {:.2} GB on the device, {:.1} KB per atom (edge capacity {}); E = {:.3} eV; first call {:.1} ms, second {:.2} ms",
            used as f64 / 1e9,
            used as f64 / n as f64 / 1024.0,
            ws.edge_capacity(),
            out.energies[0],
            first.as_secs_f64() * 1e3,
            second.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let gpu = match Gpu::new(0) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            eprintln!("gpu benches skipped: {e}");
            return;
        }
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/student-orbv2-h128.safetensors");
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let only = std::env::var("MLFF_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "neighbors" {
        neighbor_benches(&mut criterion, &gpu);
    }
    if only.is_empty() || only == "student" {
        model_benches(&mut criterion, &gpu, &model, "student");
    }
    if only.is_empty() || only == "painn" {
        // A PaiNN of the shared student's width: F = 128, T = 3, K = 20, rc = 5 Å.
        let config = mlff::model::painn::PainnConfig {
            n_atom_basis: 128,
            n_interactions: 3,
            n_rbf: 20,
            cutoff: 5.0,
            max_z: 100,
            shared_interactions: false,
            shared_filters: false,
            mean: 0.0,
        };
        let painn =
            Model::new(mlff::model::Weights::Painn(mlff::model::demo::synthetic_painn(config, 7)), Default::default());
        model_benches(&mut criterion, &gpu, &painn, "painn");
    }
    if only.is_empty() || only == "memory" {
        memory_report(&gpu, &model);
    }
    criterion.final_summary();
}

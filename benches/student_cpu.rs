//! Energy + forces of the shared student model on the CPU path (neighbour search
//! included), for a 24-atom molecule and a 1000-atom cluster at organic density.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mlff::{Device, Model, Structure};

fn random_structure(n: usize, seed: u64) -> Structure {
    // Same density as ../shared/bench/torch_student.py: ~1 atom per 10 Å³.
    let side = (10.0 * n as f64).cbrt();
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut positions: Vec<[f64; 3]> = Vec::with_capacity(n);
    while positions.len() < n {
        let p = [uniform() * side, uniform() * side, uniform() * side];
        let clear = positions.iter().all(|q| (0..3).map(|x| (p[x] - q[x]).powi(2)).sum::<f64>() > 0.8f64.powi(2));
        if clear {
            positions.push(p);
        }
    }
    let numbers = (0..n).map(|i| [1, 6, 7, 8][i % 4]).collect();
    Structure::molecule(numbers, positions)
}

fn bench(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/student-orbv2-h128.safetensors");
    let model = match Model::load(&path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("student_cpu bench skipped: {e}");
            return;
        }
    };
    let device = Device::cpu().expect("cpu");
    let mut group = c.benchmark_group(format!("student_cpu_energy_forces/{}", device.describe()));
    group.sample_size(10);
    for n in [24usize, 1000] {
        let s = vec![random_structure(n, 7)];
        group.bench_with_input(BenchmarkId::from_parameter(n), &s, |b, s| {
            b.iter(|| model.evaluate(&device, s).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Launch overhead and a bandwidth-bound reduction through the device layer, on the
//! GPU when there is one (the numbers that bound every later kernel's latency).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mlff::gpu::{unavailable_reason, Gpu};
use mlff::selftest;

fn bench(c: &mut Criterion) {
    if let Some(reason) = unavailable_reason() {
        eprintln!("device_layer bench skipped: no CUDA device ({reason})");
        return;
    }
    let gpu = match Gpu::new(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("device_layer bench skipped: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("gpu_block_reduce");
    for n in [1usize << 10, 1 << 20, 1 << 24] {
        let input: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.01).collect();
        group.throughput(Throughput::Bytes((n * 4) as u64));
        // Includes the host->device copy and the download: the round trip a naive
        // per-call API would pay.
        group.bench_with_input(BenchmarkId::from_parameter(n), &input, |b, input| {
            b.iter(|| selftest::block_reduce(&gpu, input, 256).expect("block_reduce"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

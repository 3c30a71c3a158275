//! Every primitive of the device layer, GPU against its host equivalent, on random
//! data and on sizes that are not multiples of the block size.
mod common;

use common::{gpu_or_skip, Rng};
use mlff::kernels::selftest as oracle;
use mlff::selftest::{self, Shuffle};
use std::sync::atomic::AtomicU32;

const SIZES: [usize; 6] = [1, 31, 32, 1000, 4097, 100_003];

#[test]
fn global_ids_cover_every_index_once() {
    let Some(gpu) = gpu_or_skip("global_ids_cover_every_index_once") else { return };
    for n in SIZES {
        for block in [32, 256, 1024] {
            let out = selftest::global_id(&gpu, n, block).unwrap();
            let expected: Vec<u32> = (0..n as u32).map(oracle::global_id_pattern).collect();
            assert_eq!(out, expected, "n={n} block={block}");
        }
    }
}

#[test]
fn atomic_add_matches_host_atomics() {
    let Some(gpu) = gpu_or_skip("atomic_add_matches_host_atomics") else { return };
    let mut rng = Rng::new(1);
    for (n, nbins) in [(1, 1), (1000, 7), (100_003, 13), (65_536, 1)] {
        let values = rng.f32_vec(n);
        let gpu_bins = selftest::atomic_histogram(&gpu, &values, nbins).unwrap();
        let host_bins: Vec<AtomicU32> = (0..nbins).map(|_| AtomicU32::new(0)).collect();
        oracle::atomic_histogram_host(&values, &host_bins);
        for (bin, (g, h)) in gpu_bins.iter().zip(&host_bins).enumerate() {
            let h = f32::from_bits(h.load(std::sync::atomic::Ordering::Relaxed));
            // Atomic order differs between runs; only rounding may differ.
            let scale = (n / nbins) as f32 * 1e-6 + 1e-6;
            assert!((g - h).abs() <= scale, "n={n} bin {bin}: gpu {g} host {h}");
        }
    }
}

#[test]
fn shuffles_match_host_lanes_exactly() {
    let Some(gpu) = gpu_or_skip("shuffles_match_host_lanes_exactly") else { return };
    let mut rng = Rng::new(2);
    for n in SIZES {
        let input = rng.f32_vec(n);
        for amount in [0, 1, 5, 16, 31] {
            for (kind, xor) in [(Shuffle::Xor(amount), true), (Shuffle::Down(amount), false)] {
                let got = selftest::shuffle(&gpu, &input, kind).unwrap();
                let mut expected = vec![0.0; n];
                oracle::shuffle_host(&input, &mut expected, amount, xor);
                assert_eq!(got, expected, "n={n} {kind:?}");
            }
        }
    }
}

#[test]
fn warp_and_block_reductions_are_bit_identical_to_host() {
    let Some(gpu) = gpu_or_skip("warp_and_block_reductions_are_bit_identical_to_host") else { return };
    let mut rng = Rng::new(3);
    for n in SIZES {
        let input = rng.f32_vec(n);
        let got = selftest::warp_reduce(&gpu, &input).unwrap();
        let mut expected = vec![0.0; n.div_ceil(32)];
        oracle::warp_reduce_host(&input, &mut expected);
        assert_eq!(got, expected, "warp reduce n={n}");
        let got = selftest::warp_reduce4(&gpu, &input).unwrap();
        let mut expected = vec![0.0; 4 * n.div_ceil(4).div_ceil(32)];
        oracle::warp_reduce4_host(&input, &mut expected);
        assert_eq!(got, expected, "four warp reductions at once, n={n}");
        for block in [32u32, 96, 256, 1024] {
            let got = selftest::block_reduce(&gpu, &input, block).unwrap();
            let mut expected = vec![0.0; n.div_ceil(block as usize)];
            let mut scratch = vec![0.0; block as usize];
            oracle::block_reduce_host(&input, block as usize, &mut expected, &mut scratch);
            assert_eq!(got, expected, "block reduce n={n} block={block}");
        }
    }
}

#[test]
fn dynamic_shared_memory_round_trips() {
    let Some(gpu) = gpu_or_skip("dynamic_shared_memory_round_trips") else { return };
    let mut rng = Rng::new(4);
    for n in SIZES {
        let input = rng.f32_vec(n);
        for block in [32u32, 128, 1024] {
            let got = selftest::shared_reverse(&gpu, &input, block).unwrap();
            let mut expected = vec![0.0; n];
            oracle::shared_reverse_host(&input, block as usize, &mut expected);
            assert_eq!(got, expected, "n={n} block={block}");
        }
    }
}

#[test]
fn bad_launch_arguments_are_errors_not_panics() {
    let Some(gpu) = gpu_or_skip("bad_launch_arguments_are_errors_not_panics") else { return };
    assert!(selftest::block_reduce(&gpu, &[1.0], 100).is_err());
    assert!(selftest::shuffle(&gpu, &[1.0], Shuffle::Xor(32)).is_err());
    assert!(selftest::atomic_histogram(&gpu, &[1.0], 0).is_err());
}

/// Host-side checks of the oracles themselves (run everywhere, GPU or not).
#[test]
fn host_oracles_agree_with_plain_sums() {
    let mut rng = Rng::new(5);
    let input = rng.f32_vec(1000);
    let mut sums = vec![0.0; 1000usize.div_ceil(256)];
    let mut scratch = vec![0.0; 256];
    oracle::block_reduce_host(&input, 256, &mut sums, &mut scratch);
    for (b, s) in sums.iter().enumerate() {
        let plain: f64 = input[b * 256..((b + 1) * 256).min(1000)].iter().map(|&x| x as f64).sum();
        assert!((*s as f64 - plain).abs() < 1e-4, "block {b}: {s} vs {plain}");
    }
    let lanes: [f32; 32] = std::array::from_fn(|i| i as f32);
    assert_eq!(mlff::kernels::device::host::shfl_xor_lanes(&lanes, 1)[0], 1.0);
    assert_eq!(mlff::kernels::device::host::shfl_down_lanes(&lanes, 4)[30], 30.0);
    let bins: Vec<AtomicU32> = (0..3).map(|_| AtomicU32::new(0)).collect();
    oracle::atomic_histogram_host(&[1.0, 2.0, 3.0, 4.0], &bins);
    assert_eq!(f32::from_bits(bins[0].load(std::sync::atomic::Ordering::Relaxed)), 5.0);
}

#[test]
fn device_selection_respects_the_override() {
    assert!(mlff::Device::parse("cpu").unwrap().describe().starts_with("CPU"));
    assert!(mlff::Device::parse("tpu").is_err());
    assert!(mlff::Device::parse("gpu:x").is_err());
    let auto = mlff::Device::parse("auto").unwrap();
    assert_eq!(auto.is_gpu(), mlff::gpu::unavailable_reason().is_none());
    if mlff::gpu::unavailable_reason().is_some() {
        let err = mlff::Device::parse("gpu").unwrap_err().to_string();
        assert!(err.contains("no CUDA device"), "{err}");
    }
}

/// The tensor-core product (3xTF32) against f64: within a few f32 roundings of each
/// entry's Σ|a·b|, where one-pass TF32 (10-bit mantissa) would be ~1e-3 off.
#[test]
fn tensor_core_products_match_f64_to_f32_accuracy() {
    let Some(gpu) = gpu_or_skip("tensor_core_products_match_f64_to_f32_accuracy") else { return };
    let mut rng = Rng::new(11);
    for (k, n) in [(8, 8), (16, 8), (64, 24), (256, 128), (384, 128), (96, 264)] {
        let a = rng.f32_vec(16 * k);
        // Magnitudes over several decades, so the small TF32 halves matter.
        let b: Vec<f32> = rng.f32_vec(k * n).iter().enumerate().map(|(i, x)| x * [1.0, 37.0, 1e-3][i % 3]).collect();
        let got = selftest::mma(&gpu, &a, &b, k, n).unwrap();
        let mut worst = 0.0f64;
        for row in 0..16 {
            for col in 0..n {
                let (mut exact, mut scale) = (0.0f64, 0.0f64);
                for q in 0..k {
                    let term = a[row * k + q] as f64 * b[q * n + col] as f64;
                    exact += term;
                    scale += term.abs();
                }
                worst = worst.max((got[row * n + col] as f64 - exact).abs() / scale);
            }
        }
        println!("k={k} n={n}: worst error {worst:.2e} of Σ|a·b|");
        assert!(worst < 2e-6, "k={k} n={n}: worst error {worst:e} of Σ|a·b|");
    }
    assert!(selftest::mma(&gpu, &[0.0; 16 * 12], &[0.0; 12 * 8], 12, 8).is_err(), "k % 8 != 0 must be refused");
}

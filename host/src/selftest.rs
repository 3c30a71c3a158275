//! Launchers for the device-layer self-test kernels (`kernels::selftest`): the GPU
//! half of the checks that every device primitive agrees with its host equivalent.

use crate::error::{invalid_input, Error, Result};
use crate::gpu::{grid_1d, len_u32, Gpu};
use cudarc::driver::PushKernelArg;

fn check_block(block: u32) -> Result<()> {
    if block == 0 || block % 32 != 0 || block > 1024 {
        return invalid_input!("block size {block} must be a multiple of 32 in 32..=1024");
    }
    Ok(())
}

/// `out[i] = global_id_pattern(i)` for i < n, with blocks of `block` threads.
pub fn global_id(gpu: &Gpu, n: usize, block: u32) -> Result<Vec<u32>> {
    check_block(block)?;
    let n32 = len_u32(n, "global_id")?;
    let mut out = gpu.zeros::<u32>(n.max(1))?;
    let f = gpu.function("mlff_selftest_global_id")?;
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(&mut out).arg(&n32);
    unsafe { launch.launch(grid_1d(n, block)?) }.map_err(Error::cuda("launching mlff_selftest_global_id"))?;
    let mut host = gpu.download(&out)?;
    host.truncate(n);
    Ok(host)
}

/// `bins[i % nbins] += values[i]` with `atom.add.f32`.
pub fn atomic_histogram(gpu: &Gpu, values: &[f32], nbins: usize) -> Result<Vec<f32>> {
    if nbins == 0 {
        return invalid_input!("atomic_histogram needs at least one bin");
    }
    let n = len_u32(values.len(), "atomic_histogram values")?;
    let nb = len_u32(nbins, "atomic_histogram bins")?;
    let input = gpu.upload(values)?;
    let mut bins = gpu.zeros::<f32>(nbins)?;
    let f = gpu.function("mlff_selftest_atomic_add")?;
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(&input).arg(&n).arg(&mut bins).arg(&nb);
    unsafe { launch.launch(grid_1d(values.len(), 256)?) }.map_err(Error::cuda("launching mlff_selftest_atomic_add"))?;
    gpu.download(&bins)
}

/// Which warp shuffle [`shuffle`] runs.
#[derive(Clone, Copy, Debug)]
pub enum Shuffle {
    Xor(u32),
    Down(u32),
}

/// Each lane's value after the shuffle (lanes past the input read 0).
pub fn shuffle(gpu: &Gpu, input: &[f32], kind: Shuffle) -> Result<Vec<f32>> {
    let (name, amount) = match kind {
        Shuffle::Xor(mask) if mask < 32 => ("mlff_selftest_shfl_xor", mask),
        Shuffle::Down(delta) if delta < 32 => ("mlff_selftest_shfl_down", delta),
        other => return invalid_input!("shuffle amount in {other:?} must be below 32"),
    };
    one_input_kernel(gpu, name, input, input.len(), input.len(), 128, amount)
}

/// One sum per 32 consecutive inputs.
pub fn warp_reduce(gpu: &Gpu, input: &[f32]) -> Result<Vec<f32>> {
    one_input_kernel(gpu, "mlff_selftest_warp_reduce", input, input.len(), input.len().div_ceil(32), 128, None)
}

/// Four sums per warp (`warp_reduce_sum4`): thread i's values are input[4i..4i + 4].
pub fn warp_reduce4(gpu: &Gpu, input: &[f32]) -> Result<Vec<f32>> {
    let threads = input.len().div_ceil(4);
    one_input_kernel(gpu, "mlff_selftest_warp_reduce4", input, threads, 4 * threads.div_ceil(32), 128, None)
}

/// One sum per `block` consecutive inputs, through static shared memory and barriers.
pub fn block_reduce(gpu: &Gpu, input: &[f32], block: u32) -> Result<Vec<f32>> {
    check_block(block)?;
    one_input_kernel(
        gpu,
        "mlff_selftest_block_reduce",
        input,
        input.len(),
        input.len().div_ceil(block as usize),
        block,
        None,
    )
}

/// Each block's chunk reversed through dynamic shared memory.
pub fn shared_reverse(gpu: &Gpu, input: &[f32], block: u32) -> Result<Vec<f32>> {
    check_block(block)?;
    one_input_kernel(gpu, "mlff_selftest_shared_reverse", input, input.len(), input.len(), block, None)
}

/// Kernels of the form `(input, n, out[, amount])`, launched with `threads` threads
/// (one an input, or fewer for kernels that read several).
fn one_input_kernel(
    gpu: &Gpu,
    name: &'static str,
    input: &[f32],
    threads: usize,
    out_len: usize,
    block: u32,
    amount: impl Into<Option<u32>>,
) -> Result<Vec<f32>> {
    let n = len_u32(input.len(), name)?;
    let device_input = gpu.upload(input)?;
    let mut out = gpu.zeros::<f32>(out_len.max(1))?;
    let f = gpu.function(name)?;
    let mut config = grid_1d(threads, block)?;
    config.shared_mem_bytes = block * 4;
    let amount = amount.into();
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(&device_input).arg(&n).arg(&mut out);
    if let Some(amount) = amount.as_ref() {
        launch.arg(amount);
    }
    unsafe { launch.launch(config) }.map_err(Error::cuda(format!("launching {name}")))?;
    let mut host = gpu.download(&out)?;
    host.truncate(out_len);
    Ok(host)
}

/// a (16 × k, row-major) · b (k × n, row-major) on the tensor cores (`kernels::mma`,
/// 3xTF32), one warp.
pub fn mma(gpu: &Gpu, a: &[f32], b: &[f32], k: usize, n: usize) -> Result<Vec<f32>> {
    use mlff_kernels::mma::{fragment_len, operand_bytes, write_fragments, TILE_ROWS};
    if a.len() != TILE_ROWS * k {
        return invalid_input!("mma: a holds {} floats, 16 × {k} expected", a.len());
    }
    let mut fragments = vec![0.0f32; fragment_len(k, n)];
    if !write_fragments(b, k, n, &mut fragments) {
        return invalid_input!(
            "mma: b must be k × n with k % 8 == 0 and n % 8 == 0 (k = {k}, n = {n}, {} floats)",
            b.len()
        );
    }
    let (k32, n32) = (len_u32(k, "mma k")?, len_u32(n, "mma n")?);
    let (device_a, device_b) = (gpu.upload(a)?, gpu.upload(&fragments)?);
    let mut out = gpu.zeros::<f32>((TILE_ROWS * n).max(1))?;
    let f = gpu.function("mlff_selftest_mma")?;
    let shared_mem_bytes = len_u32(operand_bytes(k), "mma shared memory")?;
    crate::gpu::allow_shared_memory(&f, "mlff_selftest_mma", shared_mem_bytes)?;
    let config = cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes };
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(&device_a).arg(&k32).arg(&device_b).arg(&n32).arg(&mut out);
    unsafe { launch.launch(config) }.map_err(Error::cuda("launching mlff_selftest_mma"))?;
    let mut host = gpu.download(&out)?;
    host.truncate(TILE_ROWS * n);
    Ok(host)
}

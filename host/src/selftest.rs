//! Launchers for the device-layer self-test kernels (`kernels::selftest`): the GPU
//! half of the checks that every device primitive agrees with its host equivalent.

use crate::error::{invalid_input, Result};
use crate::gpu::{grid_1d, len_u32, Gpu};
use mlff_kernels::kernel::Kernel;
use mlff_kernels::selftest::{self as k, AtomicAddArgs, GlobalIdArgs, MmaArgs, OneInputArgs};

fn check_block(block: u32) -> Result<()> {
    if block == 0 || !block.is_multiple_of(32) || block > 1024 {
        return invalid_input!("block size {block} must be a multiple of 32 in 32..=1024");
    }
    Ok(())
}

/// `out[i] = global_id_pattern(i)` for i < n, with blocks of `block` threads.
pub fn global_id(gpu: &Gpu, n: usize, block: u32) -> Result<Vec<u32>> {
    check_block(block)?;
    let n32 = len_u32(n, "global_id")?;
    let out = gpu.zeros::<u32>(n.max(1))?;
    let args = GlobalIdArgs { out: gpu.device_ptr(&out, n)?, n: n32 };
    // SAFETY: the kernel writes out[i] for i < n (checked length); `out` outlives
    // the launch (the download below waits for it).
    unsafe { gpu.launch(k::GLOBAL_ID, grid_1d(n, block)?, &args)? };
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
    let bins = gpu.zeros::<f32>(nbins)?;
    let args = AtomicAddArgs {
        values: gpu.device_ptr(&input, values.len())?,
        bins: gpu.device_ptr(&bins, nbins)?,
        n,
        nbins: nb,
    };
    // SAFETY: the kernel reads values[i], i < n, and adds into bins[i % nbins]
    // (checked lengths); both buffers outlive the launch (the download waits for it).
    unsafe { gpu.launch(k::ATOMIC_ADD, grid_1d(values.len(), 256)?, &args)? };
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
    let (kernel, amount) = match kind {
        Shuffle::Xor(mask) if mask < 32 => (k::SHFL_XOR, mask),
        Shuffle::Down(delta) if delta < 32 => (k::SHFL_DOWN, delta),
        other => return invalid_input!("shuffle amount in {other:?} must be below 32"),
    };
    one_input_kernel(gpu, kernel, input, input.len(), input.len(), 128, amount)
}

/// One sum per 32 consecutive inputs.
pub fn warp_reduce(gpu: &Gpu, input: &[f32]) -> Result<Vec<f32>> {
    one_input_kernel(gpu, k::WARP_REDUCE, input, input.len(), input.len().div_ceil(32), 128, 0)
}

/// Four sums per warp (`warp_reduce_sum4`): thread i's values are input[4i..4i + 4].
pub fn warp_reduce4(gpu: &Gpu, input: &[f32]) -> Result<Vec<f32>> {
    let threads = input.len().div_ceil(4);
    one_input_kernel(gpu, k::WARP_REDUCE4, input, threads, 4 * threads.div_ceil(32), 128, 0)
}

/// One sum per `block` consecutive inputs, through static shared memory and barriers.
pub fn block_reduce(gpu: &Gpu, input: &[f32], block: u32) -> Result<Vec<f32>> {
    check_block(block)?;
    one_input_kernel(gpu, k::BLOCK_REDUCE, input, input.len(), input.len().div_ceil(block as usize), block, 0)
}

/// Each block's chunk reversed through dynamic shared memory.
pub fn shared_reverse(gpu: &Gpu, input: &[f32], block: u32) -> Result<Vec<f32>> {
    check_block(block)?;
    one_input_kernel(gpu, k::SHARED_REVERSE, input, input.len(), input.len(), block, 0)
}

/// Kernels of one input and one output (`OneInputArgs`), launched with `threads`
/// threads (one an input, or fewer for kernels that read several), writing `out_len`
/// values.
fn one_input_kernel(
    gpu: &Gpu,
    kernel: Kernel<OneInputArgs>,
    input: &[f32],
    threads: usize,
    out_len: usize,
    block: u32,
    amount: u32,
) -> Result<Vec<f32>> {
    let n = len_u32(input.len(), kernel.name())?;
    let device_input = gpu.upload(input)?;
    let out = gpu.zeros::<f32>(out_len.max(1))?;
    let mut config = grid_1d(threads, block)?;
    config.shared_mem_bytes = block * 4;
    let args = OneInputArgs {
        input: gpu.device_ptr(&device_input, input.len())?,
        out: gpu.device_ptr(&out, out_len)?,
        n,
        amount,
    };
    // SAFETY: each of these kernels reads input[i] for i < n and writes at most
    // `out_len` outputs, the lengths checked above (the callers give each kernel's
    // count); the buffers outlive the launch (the download waits for it).
    unsafe { gpu.launch(kernel, config, &args)? };
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
    let out = gpu.zeros::<f32>((TILE_ROWS * n).max(1))?;
    let shared_mem_bytes = len_u32(operand_bytes(k), "mma shared memory")?;
    let config = cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes };
    let args = MmaArgs {
        a: gpu.device_ptr(&device_a, TILE_ROWS * k)?,
        b: gpu.device_ptr(&device_b, fragment_len(k, n))?,
        out: gpu.device_ptr(&out, TILE_ROWS * n)?,
        k: k32,
        n: n32,
    };
    // SAFETY: the kernel reads a (16 × k) and b (fragments of k × n) and writes out
    // (16 × n), the lengths checked above; the buffers outlive the launch (the
    // download waits for it).
    unsafe { gpu.launch(k::MMA, config, &args)? };
    let mut host = gpu.download(&out)?;
    host.truncate(TILE_ROWS * n);
    Ok(host)
}

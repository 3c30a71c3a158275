//! `extern "ptx-kernel"` entry points: thin wrappers that turn thread ids and raw
//! pointers into calls of the kernel bodies. Kept apart so the bodies stay plain Rust.
//!
//! Safety contract of every entry point: the host passes device pointers to buffers
//! of at least the lengths the arguments name; the launch wrappers in `mlff-host`
//! check those lengths before launching.
#![allow(clippy::missing_safety_doc)]

use crate::device::gpu;
use crate::selftest;

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_global_id(out: *mut u32, n: u32) {
    let i = gpu::global_id();
    if i < n as usize {
        *out.add(i) = selftest::global_id_pattern(i as u32);
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_atomic_add(values: *const f32, n: u32, bins: *mut f32, nbins: u32) {
    let i = gpu::global_id();
    if i < n as usize {
        gpu::atomic_add_f32(bins.add(i % nbins as usize), *values.add(i));
    }
}

/// Every lane of a partial last warp takes part (loading 0), as shuffles require.
#[inline(always)]
unsafe fn load_or_zero(input: *const f32, n: u32, i: usize) -> f32 {
    if i < n as usize {
        *input.add(i)
    } else {
        0.0
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_shfl_xor(input: *const f32, n: u32, out: *mut f32, mask: u32) {
    let i = gpu::global_id();
    let v = gpu::shfl_xor_f32(load_or_zero(input, n, i), mask);
    if i < n as usize {
        *out.add(i) = v;
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_shfl_down(input: *const f32, n: u32, out: *mut f32, delta: u32) {
    let i = gpu::global_id();
    let v = gpu::shfl_down_f32(load_or_zero(input, n, i), delta);
    if i < n as usize {
        *out.add(i) = v;
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_warp_reduce(input: *const f32, n: u32, sums: *mut f32) {
    let i = gpu::global_id();
    let s = gpu::warp_reduce_sum(load_or_zero(input, n, i));
    if gpu::lane_id() == 0 {
        *sums.add(i / crate::device::WARP_SIZE) = s;
    }
}

/// Four sums per warp: thread i's values are input[4i..4i + 4].
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_warp_reduce4(input: *const f32, n: u32, sums: *mut f32) {
    let i = gpu::global_id();
    let s = gpu::warp_reduce_sum4(core::array::from_fn(|q| load_or_zero(input, n, 4 * i + q)));
    let lane = gpu::lane_id();
    // Only warps that hold inputs have a place in `sums`.
    if lane % 8 == 0 && 4 * (i - lane) < n as usize {
        *sums.add(4 * (i / crate::device::WARP_SIZE) + lane / 8) = s;
    }
}

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_block_reduce(input: *const f32, n: u32, sums: *mut f32) {
    let i = gpu::global_id();
    let s = gpu::block_reduce_sum(load_or_zero(input, n, i));
    if gpu::thread_idx() == 0 {
        *sums.add(gpu::block_idx()) = s;
    }
}

/// Needs `block_dim * 4` bytes of dynamic shared memory.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_shared_reverse(input: *const f32, n: u32, out: *mut f32) {
    let shared = gpu::dynamic_shared_f32();
    let t = gpu::thread_idx();
    let i = gpu::global_id();
    *shared.add(t) = load_or_zero(input, n, i);
    gpu::sync_threads();
    if i < n as usize {
        *out.add(i) = *shared.add(gpu::block_dim() - 1 - t);
    }
}

/// out (16 × n, row-major) = a (16 × k, row-major) · b (k × n, fragment layout of
/// `mma`), one warp walking the 8-column tiles.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_selftest_mma(a: *const f32, k: u32, b: *const f32, n: u32, out: *mut f32) {
    use crate::mma::{accumulator_position, padded, warp_product, SplitPair, TILE_ROWS};
    let (k, n) = (k as usize, n as usize);
    let lda = padded(k);
    let shared = gpu::dynamic_shared_f32() as *mut SplitPair;
    let lane = gpu::lane_id();
    for e in (lane..TILE_ROWS * k).step_by(32) {
        *shared.add(e / k * lda + e % k) = SplitPair::new(*a.add(e));
    }
    gpu::sync_warp();
    for tile in 0..n / 8 {
        let mut acc = [[0.0f32; 4]; 1];
        warp_product::<1, 1>(&mut acc, shared, lda, b, k, [tile]);
        for (e, value) in acc[0].iter().enumerate() {
            let (row, col) = accumulator_position(lane, e);
            *out.add(row * n + 8 * tile + col) = *value;
        }
    }
}

// ---- Neighbour search -------------------------------------------------------------

use crate::launch_args::{CellArgs, MdArgs, ModelArgs, ScanArgs};
use crate::{gpu_cells, gpu_md, gpu_painn, gpu_scan, gpu_student};

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_grid(a: CellArgs) {
    gpu_cells::grid_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_bin(a: CellArgs) {
    gpu_cells::bin_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_scatter(a: CellArgs) {
    gpu_cells::scatter_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_count(a: CellArgs) {
    gpu_cells::count_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_fill(a: CellArgs) {
    gpu_cells::fill_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_reverse(a: CellArgs) {
    gpu_cells::reverse_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_moved(a: CellArgs) {
    gpu_cells::moved_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_scan_block(a: ScanArgs) {
    gpu_scan::scan_block_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_scan_add(a: ScanArgs) {
    gpu_scan::scan_add_kernel(&a)
}

// ---- Student model ----------------------------------------------------------------

/// `$name` for each (suffix, const) pair: one entry per channels-per-lane or tile size.
macro_rules! instantiate {
    ($module:ident::$body:ident, $($entry:ident = $n:literal),*) => {$(
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $entry(a: ModelArgs) {
            $module::$body::<$n>(&a)
        }
    )*};
}

instantiate!(
    gpu_student::message_forward,
    mlff_student_message_c1 = 1,
    mlff_student_message_c2 = 2,
    mlff_student_message_c4 = 4,
    mlff_student_message_c8 = 8
);
instantiate!(
    gpu_student::message_backward,
    mlff_student_message_back_c1 = 1,
    mlff_student_message_back_c2 = 2,
    mlff_student_message_back_c4 = 4,
    mlff_student_message_back_c8 = 8
);
instantiate!(
    gpu_student::update_forward,
    mlff_student_update_t1 = 1,
    mlff_student_update_t2 = 2,
    mlff_student_update_t4 = 4,
    mlff_student_update_t8 = 8,
    mlff_student_update_t16 = 16
);
instantiate!(
    gpu_student::update_backward,
    mlff_student_update_back_t1 = 1,
    mlff_student_update_back_t2 = 2,
    mlff_student_update_back_t4 = 4,
    mlff_student_update_back_t8 = 8,
    mlff_student_update_back_t16 = 16
);
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_student_update_tc(a: ModelArgs) {
    crate::gpu_student_tc::update_forward_tc(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_student_update_back_tc(a: ModelArgs) {
    crate::gpu_student_tc::update_backward_tc(&a)
}
instantiate!(
    gpu_student::readout,
    mlff_student_readout_t1 = 1,
    mlff_student_readout_t2 = 2,
    mlff_student_readout_t4 = 4,
    mlff_student_readout_t8 = 8,
    mlff_student_readout_t16 = 16
);

// ---- PaiNN ------------------------------------------------------------------------

instantiate!(
    gpu_painn::message_forward,
    mlff_painn_message_c1 = 1,
    mlff_painn_message_c2 = 2,
    mlff_painn_message_c4 = 4,
    mlff_painn_message_c8 = 8
);
instantiate!(
    gpu_painn::message_backward,
    mlff_painn_message_back_c1 = 1,
    mlff_painn_message_back_c2 = 2,
    mlff_painn_message_back_c4 = 4,
    mlff_painn_message_back_c8 = 8
);
/// `$name` for each (tile atoms, split-K) pair of the PaiNN atom-tile kernels.
macro_rules! instantiate_split {
    ($module:ident::$body:ident, $($entry:ident = $n:literal, $split:literal),*) => {$(
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $entry(a: ModelArgs) {
            $module::$body::<$n, $split>(&a)
        }
    )*};
}

instantiate_split!(
    gpu_painn::context,
    mlff_painn_context_t2 = 2,
    false,
    mlff_painn_context_t2_split = 2,
    true,
    mlff_painn_context_t4 = 4,
    false,
    mlff_painn_context_t8 = 8,
    false,
    mlff_painn_context_t4_split = 4,
    true,
    mlff_painn_context_t8_split = 8,
    true
);
instantiate_split!(
    gpu_painn::context_backward,
    mlff_painn_context_back_t2 = 2,
    false,
    mlff_painn_context_back_t2_split = 2,
    true,
    mlff_painn_context_back_t4 = 4,
    false,
    mlff_painn_context_back_t8 = 8,
    false,
    mlff_painn_context_back_t4_split = 4,
    true,
    mlff_painn_context_back_t8_split = 8,
    true
);
instantiate_split!(
    gpu_painn::mixing_forward,
    mlff_painn_mixing_t2 = 2,
    false,
    mlff_painn_mixing_t2_split = 2,
    true,
    mlff_painn_mixing_t4 = 4,
    false,
    mlff_painn_mixing_t8 = 8,
    false,
    mlff_painn_mixing_t4_split = 4,
    true,
    mlff_painn_mixing_t8_split = 8,
    true
);
instantiate_split!(
    gpu_painn::mixing_backward,
    mlff_painn_mixing_back_t2 = 2,
    false,
    mlff_painn_mixing_back_t2_split = 2,
    true,
    mlff_painn_mixing_back_t4 = 4,
    false,
    mlff_painn_mixing_back_t8 = 8,
    false,
    mlff_painn_mixing_back_t4_split = 4,
    true,
    mlff_painn_mixing_back_t8_split = 8,
    true
);
instantiate!(gpu_painn::readout, mlff_painn_readout_t2 = 2, mlff_painn_readout_t4 = 4, mlff_painn_readout_t8 = 8);

#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_student_embed(a: ModelArgs) {
    gpu_student::embed(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_student_edge_gradients(a: ModelArgs) {
    gpu_student::edge_gradients(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_student_forces(a: ModelArgs) {
    gpu_student::forces(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_student_structure_sums(a: ModelArgs) {
    gpu_student::structure_sums(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_cells_brute_force_count(a: CellArgs) {
    gpu_cells::brute_force_count_kernel(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_md_kick_drift(a: MdArgs) {
    gpu_md::kick_drift(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_md_kick(a: MdArgs) {
    gpu_md::kick(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_md_save(a: MdArgs) {
    gpu_md::save(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_md_restore(a: MdArgs) {
    gpu_md::restore(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_md_kinetic(a: MdArgs) {
    gpu_md::kinetic(&a)
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_fused_student_evaluate(a: crate::fused::student::FusedStudentArgs) {
    let s = gpu::block_idx();
    if s < a.num_structures as usize {
        crate::fused::student::evaluate(&crate::fused::team::BlockTeam, &a, s, a.want_forces != 0);
    }
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_fused_student_md(a: crate::fused::student::FusedStudentArgs) {
    let s = gpu::block_idx();
    if s < a.num_structures as usize {
        crate::fused::student::md(&crate::fused::team::BlockTeam, &a, s);
    }
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_fused_painn_evaluate(a: crate::fused::painn::FusedPainnArgs) {
    let s = gpu::block_idx();
    if s < a.num_structures as usize {
        crate::fused::painn::evaluate(&crate::fused::team::BlockTeam, &a, s, a.want_forces != 0);
    }
}
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mlff_fused_painn_md(a: crate::fused::painn::FusedPainnArgs) {
    let s = gpu::block_idx();
    if s < a.num_structures as usize {
        crate::fused::painn::md(&crate::fused::team::BlockTeam, &a, s);
    }
}

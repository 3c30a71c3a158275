//! Entry points of the fused small-structure engine and their typed handles: one
//! thread block per structure (`blockIdx.x`).

use super::painn::FusedPainnArgs;
use super::student::FusedStudentArgs;

crate::kernels! {
    /// Energy (and forces) of each structure; its fault bits into `faults[s]`.
    STUDENT_EVALUATE = mlff_fused_student_evaluate(FusedStudentArgs) => gpu::student_evaluate;
    /// `steps` MD steps of each structure from the forces in `forces`.
    STUDENT_MD = mlff_fused_student_md(FusedStudentArgs) => gpu::student_md;
    /// PaiNN: energy (and forces) of each structure; its fault bits into `faults[s]`.
    PAINN_EVALUATE = mlff_fused_painn_evaluate(FusedPainnArgs) => gpu::painn_evaluate;
    /// PaiNN: `steps` MD steps of each structure.
    PAINN_MD = mlff_fused_painn_md(FusedPainnArgs) => gpu::painn_md;
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::super::painn::{self, FusedPainnArgs};
    use super::super::student::{self, FusedStudentArgs};
    use super::super::team::BlockTeam;
    use crate::device::gpu;

    /// Structure `blockIdx.x`'s evaluation, its fault bits written by thread 0.
    ///
    /// # Safety
    /// `faults` holds `num_structures` words; `evaluate` is safe for every structure
    /// of the launch (the launch contract of `kernels!`).
    #[inline(always)]
    unsafe fn evaluate_block(num_structures: u32, faults: *mut u32, evaluate: impl FnOnce(usize) -> u32) {
        let s = gpu::block_idx();
        if s < num_structures as usize {
            let bits = evaluate(s);
            if gpu::thread_idx() == 0 {
                *faults.add(s) = bits;
            }
        }
    }

    /// # Safety
    /// The launch contract of `kernels!`: every address in `a` covers the batch.
    pub unsafe fn student_evaluate(a: &FusedStudentArgs) {
        evaluate_block(a.num_structures, a.faults, |s| student::evaluate(&BlockTeam, a, s, a.want_forces != 0));
    }

    /// # Safety
    /// As `student_evaluate`, with the MD arrays too.
    pub unsafe fn student_md(a: &FusedStudentArgs) {
        let s = gpu::block_idx();
        if s < a.num_structures as usize {
            student::md(&BlockTeam, a, s);
        }
    }

    /// # Safety
    /// As `student_evaluate`.
    pub unsafe fn painn_evaluate(a: &FusedPainnArgs) {
        evaluate_block(a.num_structures, a.faults, |s| painn::evaluate(&BlockTeam, a, s, a.want_forces != 0));
    }

    /// # Safety
    /// As `student_md`.
    pub unsafe fn painn_md(a: &FusedPainnArgs) {
        let s = gpu::block_idx();
        if s < a.num_structures as usize {
            painn::md(&BlockTeam, a, s);
        }
    }
}

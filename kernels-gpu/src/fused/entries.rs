//! Entry points of the fused small-structure engine and their typed handles: one
//! thread block per structure (`blockIdx.x`).

use super::student::FusedStudentArgs;

crate::kernels! {
    /// Energy (and forces) of each structure; its fault bits into `faults[s]`.
    STUDENT_EVALUATE = mlff_fused_student_evaluate(FusedStudentArgs) => gpu::student_evaluate;
    /// `steps` MD steps of each structure from the forces in `forces`.
    STUDENT_MD = mlff_fused_student_md(FusedStudentArgs) => gpu::student_md;
}

#[cfg(target_arch = "nvptx64")]
mod gpu {
    use super::super::student::{evaluate, md, FusedStudentArgs};
    use super::super::team::BlockTeam;
    use crate::device::gpu;

    /// # Safety
    /// The launch contract of `kernels!`: every address in `a` covers the batch.
    pub unsafe fn student_evaluate(a: &FusedStudentArgs) {
        let s = gpu::block_idx();
        if s < a.num_structures as usize {
            let faults = evaluate(&BlockTeam, a, s, a.want_forces != 0);
            if gpu::thread_idx() == 0 {
                *a.faults.add(s) = faults;
            }
        }
    }

    /// # Safety
    /// As `student_evaluate`, with the MD arrays too.
    pub unsafe fn student_md(a: &FusedStudentArgs) {
        let s = gpu::block_idx();
        if s < a.num_structures as usize {
            md(&BlockTeam, a, s);
        }
    }
}

//! Entry points of the student (architecture 1) and their typed handles, with the
//! choice among the instantiations (channels a lane, atoms a tile).

use super::args::{FragmentLayer, MessageArgs, MessageBackArgs, UpdateArgs, UpdateBackArgs};
#[cfg(target_arch = "nvptx64")]
use super::{gpu, gpu_tensor_core};
use crate::common::args::{DenseLayer, ReadoutArgs};
use crate::kernel::Kernel;

crate::kernels! {
    /// The message pass at 1 channel a lane.
    MESSAGE_C1 = mlff_student_message_c1(MessageArgs) => gpu::message_forward::<1>;
    /// The message pass at 2 channels a lane.
    MESSAGE_C2 = mlff_student_message_c2(MessageArgs) => gpu::message_forward::<2>;
    /// The message pass at 4 channels a lane.
    MESSAGE_C4 = mlff_student_message_c4(MessageArgs) => gpu::message_forward::<4>;
    /// The message pass at 8 channels a lane.
    MESSAGE_C8 = mlff_student_message_c8(MessageArgs) => gpu::message_forward::<8>;
    /// The message adjoint at 1 channel a lane.
    MESSAGE_BACK_C1 = mlff_student_message_back_c1(MessageBackArgs) => gpu::message_backward::<1>;
    /// The message adjoint at 2 channels a lane.
    MESSAGE_BACK_C2 = mlff_student_message_back_c2(MessageBackArgs) => gpu::message_backward::<2>;
    /// The message adjoint at 4 channels a lane.
    MESSAGE_BACK_C4 = mlff_student_message_back_c4(MessageBackArgs) => gpu::message_backward::<4>;
    /// The message adjoint at 8 channels a lane.
    MESSAGE_BACK_C8 = mlff_student_message_back_c8(MessageBackArgs) => gpu::message_backward::<8>;
    /// The update step over tiles of 1 atom.
    UPDATE_T1 = mlff_student_update_t1(UpdateArgs<DenseLayer>) => gpu::update_forward::<1>;
    /// The update step over tiles of 2 atoms.
    UPDATE_T2 = mlff_student_update_t2(UpdateArgs<DenseLayer>) => gpu::update_forward::<2>;
    /// The update step over tiles of 4 atoms.
    UPDATE_T4 = mlff_student_update_t4(UpdateArgs<DenseLayer>) => gpu::update_forward::<4>;
    /// The update step over tiles of 8 atoms.
    UPDATE_T8 = mlff_student_update_t8(UpdateArgs<DenseLayer>) => gpu::update_forward::<8>;
    /// The update step over tiles of 16 atoms.
    UPDATE_T16 = mlff_student_update_t16(UpdateArgs<DenseLayer>) => gpu::update_forward::<16>;
    /// The update adjoint over tiles of 1 atom.
    UPDATE_BACK_T1 = mlff_student_update_back_t1(UpdateBackArgs<DenseLayer>) => gpu::update_backward::<1>;
    /// The update adjoint over tiles of 2 atoms.
    UPDATE_BACK_T2 = mlff_student_update_back_t2(UpdateBackArgs<DenseLayer>) => gpu::update_backward::<2>;
    /// The update adjoint over tiles of 4 atoms.
    UPDATE_BACK_T4 = mlff_student_update_back_t4(UpdateBackArgs<DenseLayer>) => gpu::update_backward::<4>;
    /// The update adjoint over tiles of 8 atoms.
    UPDATE_BACK_T8 = mlff_student_update_back_t8(UpdateBackArgs<DenseLayer>) => gpu::update_backward::<8>;
    /// The update adjoint over tiles of 16 atoms.
    UPDATE_BACK_T16 = mlff_student_update_back_t16(UpdateBackArgs<DenseLayer>) => gpu::update_backward::<16>;
    /// The update step of 16 atoms on the tensor cores.
    UPDATE_TC = mlff_student_update_tc(UpdateArgs<FragmentLayer>) => gpu_tensor_core::update_forward_tc;
    /// The update adjoint of 16 atoms on the tensor cores.
    UPDATE_BACK_TC = mlff_student_update_back_tc(UpdateBackArgs<FragmentLayer>) => gpu_tensor_core::update_backward_tc;
    /// The energy head over tiles of 1 atom.
    READOUT_T1 = mlff_student_readout_t1(ReadoutArgs<3>) => gpu::readout::<1>;
    /// The energy head over tiles of 2 atoms.
    READOUT_T2 = mlff_student_readout_t2(ReadoutArgs<3>) => gpu::readout::<2>;
    /// The energy head over tiles of 4 atoms.
    READOUT_T4 = mlff_student_readout_t4(ReadoutArgs<3>) => gpu::readout::<4>;
    /// The energy head over tiles of 8 atoms.
    READOUT_T8 = mlff_student_readout_t8(ReadoutArgs<3>) => gpu::readout::<8>;
    /// The energy head over tiles of 16 atoms.
    READOUT_T16 = mlff_student_readout_t16(ReadoutArgs<3>) => gpu::readout::<16>;
}

/// The edge kernels (forward, adjoint) at `channels` channels a lane: 1, 2, 4 or 8.
pub const fn message(channels: usize) -> Option<(Kernel<MessageArgs>, Kernel<MessageBackArgs>)> {
    match channels {
        1 => Some((MESSAGE_C1, MESSAGE_BACK_C1)),
        2 => Some((MESSAGE_C2, MESSAGE_BACK_C2)),
        4 => Some((MESSAGE_C4, MESSAGE_BACK_C4)),
        8 => Some((MESSAGE_C8, MESSAGE_BACK_C8)),
        _ => None,
    }
}

/// The CUDA-core update kernels: forward and adjoint.
pub type UpdateKernels = (Kernel<UpdateArgs<DenseLayer>>, Kernel<UpdateBackArgs<DenseLayer>>);

/// The CUDA-core update kernels (forward, adjoint) over tiles of `atoms`: 1, 2, 4, 8
/// or 16.
pub const fn update(atoms: usize) -> Option<UpdateKernels> {
    match atoms {
        1 => Some((UPDATE_T1, UPDATE_BACK_T1)),
        2 => Some((UPDATE_T2, UPDATE_BACK_T2)),
        4 => Some((UPDATE_T4, UPDATE_BACK_T4)),
        8 => Some((UPDATE_T8, UPDATE_BACK_T8)),
        16 => Some((UPDATE_T16, UPDATE_BACK_T16)),
        _ => None,
    }
}

/// The readout over tiles of `atoms`: 1, 2, 4, 8 or 16.
pub const fn readout(atoms: usize) -> Option<Kernel<ReadoutArgs<3>>> {
    match atoms {
        1 => Some(READOUT_T1),
        2 => Some(READOUT_T2),
        4 => Some(READOUT_T4),
        8 => Some(READOUT_T8),
        16 => Some(READOUT_T16),
        _ => None,
    }
}

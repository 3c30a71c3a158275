//! Entry points of PaiNN (architecture 2) and their typed handles, with the choice
//! among the instantiations (channels a lane, atoms a tile, split-K or not).

use super::args::{ContextArgs, ContextBackArgs, MessageArgs, MessageBackArgs, MixingArgs, MixingBackArgs};
#[cfg(target_arch = "nvptx64")]
use super::gpu;
use crate::common::args::ReadoutArgs;
use crate::kernel::Kernel;

crate::kernels! {
    /// The message pass at 1 channel a lane.
    MESSAGE_C1 = mlff_painn_message_c1(MessageArgs) => gpu::message_forward::<1>;
    /// The message pass at 2 channels a lane.
    MESSAGE_C2 = mlff_painn_message_c2(MessageArgs) => gpu::message_forward::<2>;
    /// The message pass at 4 channels a lane.
    MESSAGE_C4 = mlff_painn_message_c4(MessageArgs) => gpu::message_forward::<4>;
    /// The message pass at 8 channels a lane.
    MESSAGE_C8 = mlff_painn_message_c8(MessageArgs) => gpu::message_forward::<8>;
    /// The message adjoint at 1 channel a lane.
    MESSAGE_BACK_C1 = mlff_painn_message_back_c1(MessageBackArgs) => gpu::message_backward::<1>;
    /// The message adjoint at 2 channels a lane.
    MESSAGE_BACK_C2 = mlff_painn_message_back_c2(MessageBackArgs) => gpu::message_backward::<2>;
    /// The message adjoint at 4 channels a lane.
    MESSAGE_BACK_C4 = mlff_painn_message_back_c4(MessageBackArgs) => gpu::message_backward::<4>;
    /// The message adjoint at 8 channels a lane.
    MESSAGE_BACK_C8 = mlff_painn_message_back_c8(MessageBackArgs) => gpu::message_backward::<8>;
    /// The context network over tiles of 2 atoms.
    CONTEXT_T2 = mlff_painn_context_t2(ContextArgs) => gpu::context::<2, false>;
    /// The context network over tiles of 2 atoms, k split over slices.
    CONTEXT_T2_SPLIT = mlff_painn_context_t2_split(ContextArgs) => gpu::context::<2, true>;
    /// The context network over tiles of 4 atoms.
    CONTEXT_T4 = mlff_painn_context_t4(ContextArgs) => gpu::context::<4, false>;
    /// The context network over tiles of 4 atoms, k split over slices.
    CONTEXT_T4_SPLIT = mlff_painn_context_t4_split(ContextArgs) => gpu::context::<4, true>;
    /// The context network over tiles of 8 atoms.
    CONTEXT_T8 = mlff_painn_context_t8(ContextArgs) => gpu::context::<8, false>;
    /// The context network over tiles of 8 atoms, k split over slices.
    CONTEXT_T8_SPLIT = mlff_painn_context_t8_split(ContextArgs) => gpu::context::<8, true>;
    /// The context adjoint over tiles of 2 atoms.
    CONTEXT_BACK_T2 = mlff_painn_context_back_t2(ContextBackArgs) => gpu::context_backward::<2, false>;
    /// The context adjoint over tiles of 2 atoms, k split over slices.
    CONTEXT_BACK_T2_SPLIT = mlff_painn_context_back_t2_split(ContextBackArgs) => gpu::context_backward::<2, true>;
    /// The context adjoint over tiles of 4 atoms.
    CONTEXT_BACK_T4 = mlff_painn_context_back_t4(ContextBackArgs) => gpu::context_backward::<4, false>;
    /// The context adjoint over tiles of 4 atoms, k split over slices.
    CONTEXT_BACK_T4_SPLIT = mlff_painn_context_back_t4_split(ContextBackArgs) => gpu::context_backward::<4, true>;
    /// The context adjoint over tiles of 8 atoms.
    CONTEXT_BACK_T8 = mlff_painn_context_back_t8(ContextBackArgs) => gpu::context_backward::<8, false>;
    /// The context adjoint over tiles of 8 atoms, k split over slices.
    CONTEXT_BACK_T8_SPLIT = mlff_painn_context_back_t8_split(ContextBackArgs) => gpu::context_backward::<8, true>;
    /// The mixing step over tiles of 2 atoms.
    MIXING_T2 = mlff_painn_mixing_t2(MixingArgs) => gpu::mixing_forward::<2, false>;
    /// The mixing step over tiles of 2 atoms, k split over slices.
    MIXING_T2_SPLIT = mlff_painn_mixing_t2_split(MixingArgs) => gpu::mixing_forward::<2, true>;
    /// The mixing step over tiles of 4 atoms.
    MIXING_T4 = mlff_painn_mixing_t4(MixingArgs) => gpu::mixing_forward::<4, false>;
    /// The mixing step over tiles of 4 atoms, k split over slices.
    MIXING_T4_SPLIT = mlff_painn_mixing_t4_split(MixingArgs) => gpu::mixing_forward::<4, true>;
    /// The mixing step over tiles of 8 atoms.
    MIXING_T8 = mlff_painn_mixing_t8(MixingArgs) => gpu::mixing_forward::<8, false>;
    /// The mixing step over tiles of 8 atoms, k split over slices.
    MIXING_T8_SPLIT = mlff_painn_mixing_t8_split(MixingArgs) => gpu::mixing_forward::<8, true>;
    /// The mixing adjoint over tiles of 2 atoms.
    MIXING_BACK_T2 = mlff_painn_mixing_back_t2(MixingBackArgs) => gpu::mixing_backward::<2, false>;
    /// The mixing adjoint over tiles of 2 atoms, k split over slices.
    MIXING_BACK_T2_SPLIT = mlff_painn_mixing_back_t2_split(MixingBackArgs) => gpu::mixing_backward::<2, true>;
    /// The mixing adjoint over tiles of 4 atoms.
    MIXING_BACK_T4 = mlff_painn_mixing_back_t4(MixingBackArgs) => gpu::mixing_backward::<4, false>;
    /// The mixing adjoint over tiles of 4 atoms, k split over slices.
    MIXING_BACK_T4_SPLIT = mlff_painn_mixing_back_t4_split(MixingBackArgs) => gpu::mixing_backward::<4, true>;
    /// The mixing adjoint over tiles of 8 atoms.
    MIXING_BACK_T8 = mlff_painn_mixing_back_t8(MixingBackArgs) => gpu::mixing_backward::<8, false>;
    /// The mixing adjoint over tiles of 8 atoms, k split over slices.
    MIXING_BACK_T8_SPLIT = mlff_painn_mixing_back_t8_split(MixingBackArgs) => gpu::mixing_backward::<8, true>;
    /// The readout over tiles of 2 atoms.
    READOUT_T2 = mlff_painn_readout_t2(ReadoutArgs<2>) => gpu::readout::<2>;
    /// The readout over tiles of 4 atoms.
    READOUT_T4 = mlff_painn_readout_t4(ReadoutArgs<2>) => gpu::readout::<4>;
    /// The readout over tiles of 8 atoms.
    READOUT_T8 = mlff_painn_readout_t8(ReadoutArgs<2>) => gpu::readout::<8>;
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

/// PaiNN's atom-tile kernels over tiles of one size.
#[derive(Clone, Copy, Debug)]
pub struct TileKernels {
    pub context: Kernel<ContextArgs>,
    pub context_back: Kernel<ContextBackArgs>,
    pub mixing: Kernel<MixingArgs>,
    pub mixing_back: Kernel<MixingBackArgs>,
    pub readout: Kernel<ReadoutArgs<2>>,
}

/// The atom-tile kernels over tiles of `atoms` (2, 4 or 8), the context and mixing
/// kernels with k split over slices or not (the readout never splits).
pub const fn tiles(atoms: usize, split: bool) -> Option<TileKernels> {
    let (context, context_back, mixing, mixing_back, readout) = match (atoms, split) {
        (2, false) => (CONTEXT_T2, CONTEXT_BACK_T2, MIXING_T2, MIXING_BACK_T2, READOUT_T2),
        (2, true) => (CONTEXT_T2_SPLIT, CONTEXT_BACK_T2_SPLIT, MIXING_T2_SPLIT, MIXING_BACK_T2_SPLIT, READOUT_T2),
        (4, false) => (CONTEXT_T4, CONTEXT_BACK_T4, MIXING_T4, MIXING_BACK_T4, READOUT_T4),
        (4, true) => (CONTEXT_T4_SPLIT, CONTEXT_BACK_T4_SPLIT, MIXING_T4_SPLIT, MIXING_BACK_T4_SPLIT, READOUT_T4),
        (8, false) => (CONTEXT_T8, CONTEXT_BACK_T8, MIXING_T8, MIXING_BACK_T8, READOUT_T8),
        (8, true) => (CONTEXT_T8_SPLIT, CONTEXT_BACK_T8_SPLIT, MIXING_T8_SPLIT, MIXING_BACK_T8_SPLIT, READOUT_T8),
        _ => return None,
    };
    Some(TileKernels { context, context_back, mixing, mixing_back, readout })
}

//! Arguments of the molecular-dynamics kernels, passed by value as one `#[repr(C)]`
//! struct per launch, and the layout of the state words they keep on the device.

use crate::kernel::KernelArgs;
use crate::neighbors::cell_list::StructureRecord;

/// Molecular-dynamics kernels (`mlff_md_*`): the state lives on the device between
/// steps, and a fault in any step freezes the state until the host has looked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MdArgs {
    pub positions: *mut [f32; 3],
    pub velocities: *mut [f32; 3],
    pub forces: *mut [f32; 3],
    pub masses: *const f32,
    pub records: *const StructureRecord,
    /// Per atom [x, v, f] at the start of the running chunk of steps, to go back to.
    pub saved: *mut [f32; 9],
    /// See [`md_clock`].
    pub clock: *mut u64,
    /// See [`md_status`].
    pub md_status: *mut u32,
    /// The neighbour search's status words of the step's build.
    pub cell_status: *const u32,
    /// Per structure: kinetic energy (eV).
    pub kinetic: *mut f64,
    pub integrator: super::Integrator,
    pub num_atoms: u32,
    pub num_structures: u32,
}

/// Words of the MD clock (u64).
pub mod md_clock {
    /// Steps taken (also the thermostat noise's counter).
    pub const STEP: usize = 0;
    /// `STEP` at the saved state.
    pub const SAVED_STEP: usize = 1;
    /// The step whose build faulted.
    pub const FAULT_STEP: usize = 2;
    pub const WORDS: usize = 3;
}

/// Words of the MD status (u32).
pub mod md_status {
    /// Nonzero once a step's neighbour search faulted: every MD kernel then leaves
    /// the state alone until the host restores the saved state.
    pub const FROZEN: usize = 0;
    /// The faulting build's status words (`status::WORDS` of them) from here on.
    pub const CELL_STATUS: usize = 1;
    pub const WORDS: usize = 1 + crate::neighbors::args::status::WORDS;
}

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for MdArgs {}

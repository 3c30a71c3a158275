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
    /// Per atom: the kinetic energy the thermostat's noise and friction added so far
    /// (eV), and its copy at the saved state.
    pub heat: *mut f64,
    pub saved_heat: *mut f64,
    /// Every structure's ensemble state (`ensemble_words` f64 words), and its copy at
    /// the saved state.
    pub ensemble: *mut f64,
    pub saved_ensemble: *mut f64,
    pub ensemble_words: u32,
    pub pad: u32,
    pub integrator: super::Integrator,
    pub num_atoms: u32,
    pub num_structures: u32,
}

/// The ensemble kernels (`mlff_md_nhc_half`, `mlff_md_barostat`, `mlff_md_scale_drift`,
/// `mlff_md_set_records`): per-structure thermostat and barostat steps.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnsembleArgs {
    pub positions: *mut [f32; 3],
    pub velocities: *mut [f32; 3],
    pub masses: *const f32,
    /// The neighbour search's records, whose cells the barostat moves.
    pub records: *mut StructureRecord,
    pub structure_of: *const u32,
    /// Per structure `STRUCTURE_OUT_WORDS`: energy, then the virial (row-major).
    pub structure_out: *const f64,
    /// Per structure `ensemble::state::WORDS` f64 words.
    pub ensemble: *mut f64,
    pub clock: *mut u64,
    pub md_status: *mut u32,
    pub params: super::ensemble::EnsembleParams,
    pub integrator: super::Integrator,
    pub num_atoms: u32,
    pub num_structures: u32,
    /// 1 where the centre of mass is at rest (3N − 3 degrees of freedom), 0 for Langevin.
    pub momentum_conserved: u32,
    pub pad: u32,
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
    /// 1 + the structure whose barostat would have left the allowed volumes (0: none).
    pub const BAROSTAT: usize = 1 + crate::neighbors::args::status::WORDS;
    pub const WORDS: usize = 2 + crate::neighbors::args::status::WORDS;
}

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for MdArgs {}

// SAFETY: `#[repr(C)]`, plain values and device addresses only.
unsafe impl KernelArgs for EnsembleArgs {}

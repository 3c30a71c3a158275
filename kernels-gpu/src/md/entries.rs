//! Entry points of the MD integrator and their typed handles.

use super::args::MdArgs;
#[cfg(target_arch = "nvptx64")]
use super::gpu;

crate::kernels! {
    /// First half of a step: kick, drift, thermostat, drift.
    KICK_DRIFT = mlff_md_kick_drift(MdArgs) => gpu::kick_drift;
    /// Second half of a step: the closing kick, or a freeze if the step's search faulted.
    KICK = mlff_md_kick(MdArgs) => gpu::kick;
    /// Keeps [x, v, f] and the step to return to.
    SAVE = mlff_md_save(MdArgs) => gpu::save;
    /// Goes back to the saved state and thaws.
    RESTORE = mlff_md_restore(MdArgs) => gpu::restore;
    /// Kinetic energy per structure (one block each).
    KINETIC = mlff_md_kinetic(MdArgs) => gpu::kinetic;
}

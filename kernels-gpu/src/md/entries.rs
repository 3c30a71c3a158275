//! Entry points of the MD integrator and their typed handles.

use super::args::{EnsembleArgs, MdArgs};
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
    /// B, A, O of a step, where a barostat moves the cell before the second A.
    KICK_DRIFT_THERMOSTAT = mlff_md_kick_drift_thermostat(MdArgs) => gpu::kick_drift_thermostat;
    /// Half a step of each structure's Nosé–Hoover chain (one block each).
    NHC_HALF = mlff_md_nhc_half(EnsembleArgs) => gpu::nhc_half;
    /// Each structure's stochastic cell rescaling (one block each).
    BAROSTAT = mlff_md_barostat(EnsembleArgs) => gpu::barostat;
    /// Each structure's new virial into its ensemble words, completing the barostat's heat.
    BAROSTAT_HEAT = mlff_md_barostat_heat(EnsembleArgs) => gpu::barostat_heat;
    /// The barostat's scaling of positions and velocities, then the second A.
    SCALE_DRIFT = mlff_md_scale_drift(EnsembleArgs) => gpu::scale_drift;
    /// The neighbour-search records from the ensemble's cells (one thread each).
    SET_RECORDS = mlff_md_set_records(EnsembleArgs) => gpu::set_records;
}

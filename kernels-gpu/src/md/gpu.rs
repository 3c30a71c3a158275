//! GPU drivers of the MD integrator (the bodies of [`crate::md`]), one thread per
//! atom, with the step counter and a fault flag in device memory so that many steps
//! can be one CUDA-graph replay with no host involvement.

use super::args::{md_clock, md_status, MdArgs};
use crate::device::gpu;
use crate::md;
use crate::neighbors::args::status;

#[inline(always)]
unsafe fn frozen(a: &MdArgs) -> bool {
    *a.md_status.add(md_status::FROZEN) != 0
}

/// First half of a step: kick, drift, thermostat, drift.
pub unsafe fn kick_drift(a: &MdArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize || frozen(a) {
        return;
    }
    let step = *a.clock.add(md_clock::STEP);
    let (mut x, mut v) = (*a.positions.add(i), *a.velocities.add(i));
    md::kick_drift(&mut x, &mut v, *a.forces.add(i), *a.masses.add(i), &a.integrator, step, i as u32);
    *a.positions.add(i) = x;
    *a.velocities.add(i) = v;
}

/// Second half of a step: the closing kick with the new forces, unless the step's
/// neighbour search faulted (then the state freezes and the fault is kept).
pub unsafe fn kick(a: &MdArgs) {
    if frozen(a) {
        return;
    }
    let i = gpu::global_id();
    let fault = *a.cell_status.add(status::TOO_CLOSE) != 0
        || *a.cell_status.add(status::OVERFLOW) != 0
        || *a.cell_status.add(status::ASYMMETRIC) != 0;
    if fault {
        if i == 0 {
            for w in 0..status::WORDS {
                *a.md_status.add(md_status::CELL_STATUS + w) = *a.cell_status.add(w);
            }
            *a.clock.add(md_clock::FAULT_STEP) = *a.clock.add(md_clock::STEP);
            *a.md_status.add(md_status::FROZEN) = 1;
        }
        return;
    }
    if i < a.num_atoms as usize {
        let mut v = *a.velocities.add(i);
        md::kick(&mut v, *a.forces.add(i), *a.masses.add(i), &a.integrator);
        *a.velocities.add(i) = v;
    }
    if i == 0 {
        *a.clock.add(md_clock::STEP) += 1;
    }
}

/// Keeps [x, v, f] and the step to return to if a later step faults.
pub unsafe fn save(a: &MdArgs) {
    if frozen(a) {
        return;
    }
    let i = gpu::global_id();
    if i < a.num_atoms as usize {
        let (x, v, f) = (*a.positions.add(i), *a.velocities.add(i), *a.forces.add(i));
        *a.saved.add(i) = [x[0], x[1], x[2], v[0], v[1], v[2], f[0], f[1], f[2]];
    }
    if i == 0 {
        *a.clock.add(md_clock::SAVED_STEP) = *a.clock.add(md_clock::STEP);
    }
}

/// Goes back to the saved state and thaws.
pub unsafe fn restore(a: &MdArgs) {
    let i = gpu::global_id();
    if i < a.num_atoms as usize {
        let s = *a.saved.add(i);
        *a.positions.add(i) = [s[0], s[1], s[2]];
        *a.velocities.add(i) = [s[3], s[4], s[5]];
        *a.forces.add(i) = [s[6], s[7], s[8]];
    }
    if i == 0 {
        *a.clock.add(md_clock::STEP) = *a.clock.add(md_clock::SAVED_STEP);
        *a.md_status.add(md_status::FROZEN) = 0;
    }
}

/// Kinetic energy per structure (one block each), in f64.
pub unsafe fn kinetic(a: &MdArgs) {
    let s = gpu::block_idx();
    if s >= a.num_structures as usize {
        return;
    }
    let rec = &*a.records.add(s);
    let mut acc = [0.0f64];
    let mut i = rec.atom_start as usize + gpu::thread_idx();
    while i < rec.atom_end as usize {
        acc[0] += md::kinetic_energy(*a.velocities.add(i), *a.masses.add(i));
        i += gpu::block_dim();
    }
    let total = gpu::block_sum_f64(acc);
    if gpu::thread_idx() == 0 {
        *a.kinetic.add(s) = total[0];
    }
}

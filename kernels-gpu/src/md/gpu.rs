//! GPU drivers of the MD integrator (the bodies of [`crate::md`]), one thread per
//! atom, with the step counter and a fault flag in device memory so that many steps
//! can be one CUDA-graph replay with no host involvement.

use super::args::{md_clock, md_status, EnsembleArgs, MdArgs};
use super::ensemble::{self, state};
use crate::common::args::STRUCTURE_OUT_WORDS;
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
    let heat = md::kick_drift(&mut x, &mut v, *a.forces.add(i), *a.masses.add(i), &a.integrator, step, i as u32);
    *a.positions.add(i) = x;
    *a.velocities.add(i) = v;
    *a.heat.add(i) += heat;
}

/// B, A, O of a step (the barostat and the second A follow).
pub unsafe fn kick_drift_thermostat(a: &MdArgs) {
    let i = gpu::global_id();
    if i >= a.num_atoms as usize || frozen(a) {
        return;
    }
    let step = *a.clock.add(md_clock::STEP);
    let (mut x, mut v) = (*a.positions.add(i), *a.velocities.add(i));
    let heat =
        md::kick_drift_thermostat(&mut x, &mut v, *a.forces.add(i), *a.masses.add(i), &a.integrator, step, i as u32);
    *a.positions.add(i) = x;
    *a.velocities.add(i) = v;
    *a.heat.add(i) += heat;
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
        *a.saved_heat.add(i) = *a.heat.add(i);
    }
    if i < a.ensemble_words as usize {
        *a.saved_ensemble.add(i) = *a.ensemble.add(i);
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
        *a.heat.add(i) = *a.saved_heat.add(i);
    }
    if i < a.ensemble_words as usize {
        *a.ensemble.add(i) = *a.saved_ensemble.add(i);
    }
    if i == 0 {
        *a.clock.add(md_clock::STEP) = *a.clock.add(md_clock::SAVED_STEP);
        *a.md_status.add(md_status::FROZEN) = 0;
        *a.md_status.add(md_status::BAROSTAT) = 0;
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

#[inline(always)]
unsafe fn ensemble_frozen(e: &EnsembleArgs) -> bool {
    *e.md_status.add(md_status::FROZEN) != 0
}

/// Structure s's ensemble words.
///
/// # Safety
/// `s < num_structures` (the host checked `ensemble` holds that many structures'
/// words), and only one thread of the launch touches structure s's words.
#[inline(always)]
unsafe fn words<'a>(e: &EnsembleArgs, s: usize) -> &'a mut [f64] {
    // SAFETY: within the buffer by the contract above; no other live reference.
    unsafe { core::slice::from_raw_parts_mut(e.ensemble.add(s * state::WORDS), state::WORDS) }
}

/// Half a step of each structure's Nosé–Hoover chain: one block per structure sums
/// Σ m v², thread 0 moves the chain, and the block scales the velocities.
pub unsafe fn nhc_half(e: &EnsembleArgs) {
    let s = gpu::block_idx();
    if s >= e.num_structures as usize || ensemble_frozen(e) {
        return;
    }
    let rec = &*e.records.add(s);
    let (start, end) = (rec.atom_start as usize, rec.atom_end as usize);
    let mut acc = [0.0f64];
    let mut i = start + gpu::thread_idx();
    while i < end {
        acc[0] += 2.0 * md::kinetic_energy(*e.velocities.add(i), *e.masses.add(i));
        i += gpu::block_dim();
    }
    let total = gpu::block_sum_f64(acc);
    // Every thread has read the total before thread 0 reuses the shared word.
    gpu::sync_threads();
    let shared = gpu::dynamic_shared_f32() as *mut f64;
    if gpu::thread_idx() == 0 {
        let dof = ensemble::degrees_of_freedom(end - start, e.momentum_conserved != 0);
        *shared = ensemble::nhc_half_step(words(e, s), total[0], dof, &e.params);
    }
    gpu::sync_threads();
    let scale = *shared as f32;
    let mut i = start + gpu::thread_idx();
    while i < end {
        let v = &mut *e.velocities.add(i);
        for a in 0..3 {
            v[a] *= scale;
        }
        i += gpu::block_dim();
    }
}

/// Each structure's stochastic cell rescaling: one block per structure sums Σ m v_a²,
/// thread 0 moves the cell and its neighbour-search record, or freezes the run if
/// the volume would leave the allowed range.
pub unsafe fn barostat(e: &EnsembleArgs) {
    let s = gpu::block_idx();
    if s >= e.num_structures as usize || ensemble_frozen(e) {
        return;
    }
    let rec = &*e.records.add(s);
    let (start, end) = (rec.atom_start as usize, rec.atom_end as usize);
    let mut acc = [0.0f64; 3];
    let mut i = start + gpu::thread_idx();
    while i < end {
        let k = ensemble::twice_kinetic(*e.velocities.add(i), *e.masses.add(i));
        for a in 0..3 {
            acc[a] += k[a];
        }
        i += gpu::block_dim();
    }
    let total = gpu::block_sum_f64(acc);
    if gpu::thread_idx() == 0 {
        let step = *e.clock.add(md_clock::STEP);
        let noise = ensemble::barostat_noise(&e.params, step, s as u32);
        let w = words(e, s);
        if ensemble::barostat_step(w, total, noise, e.momentum_conserved != 0, &e.params).ok {
            ensemble::set_record_cell(&mut *e.records.add(s), &w[state::CELL..state::CELL + 9]);
        } else {
            *e.md_status.add(md_status::BAROSTAT) = s as u32 + 1;
            *e.clock.add(md_clock::FAULT_STEP) = step;
            *e.md_status.add(md_status::FROZEN) = 1;
        }
    }
}

/// Each structure's virial after the forces (from the per-structure sums) into its
/// ensemble words, completing the barostat's heat of the step (one thread each).
pub unsafe fn barostat_heat(e: &EnsembleArgs) {
    let s = gpu::global_id();
    if s >= e.num_structures as usize || ensemble_frozen(e) {
        return;
    }
    let out = e.structure_out.add(s * STRUCTURE_OUT_WORDS + 1);
    ensemble::barostat_after_forces(words(e, s), [*out, *out.add(4), *out.add(8)]);
}

/// The barostat's move of each atom (x_a ← μ_a x_a, v_a ← v_a/μ_a), then the second
/// half drift.
pub unsafe fn scale_drift(e: &EnsembleArgs) {
    let i = gpu::global_id();
    if i >= e.num_atoms as usize || ensemble_frozen(e) {
        return;
    }
    let s = *e.structure_of.add(i) as usize;
    // SAFETY: s is an atom's structure, below num_structures; the barostat kernel
    // wrote these words before this launch and nothing writes them during it.
    let scale = unsafe { core::slice::from_raw_parts(e.ensemble.add(s * state::WORDS + state::SCALE), 3) };
    let (mut x, mut v) = (*e.positions.add(i), *e.velocities.add(i));
    ensemble::scale_atom(&mut x, &mut v, scale);
    md::drift(&mut x, &v, &e.integrator);
    *e.positions.add(i) = x;
    *e.velocities.add(i) = v;
}

/// The neighbour-search records of every structure from its ensemble cell.
pub unsafe fn set_records(e: &EnsembleArgs) {
    let s = gpu::global_id();
    if s >= e.num_structures as usize {
        return;
    }
    // SAFETY: s < num_structures; one thread per structure, which only reads its cell.
    let cell = unsafe { core::slice::from_raw_parts(e.ensemble.add(s * state::WORDS + state::CELL), 9) };
    ensemble::set_record_cell(&mut *e.records.add(s), cell);
}

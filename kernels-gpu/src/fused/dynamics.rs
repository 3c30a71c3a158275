//! MD in a fused kernel, the same for both architectures: a team integrates its
//! structure for a whole chunk of steps (velocity Verlet or BAOAB, the bodies of
//! [`crate::md`]), calling the architecture's evaluation for the forces of each step.

use super::team::{items, Team};
use crate::md::{self, Integrator};

/// One structure's MD state in the batch arrays.
pub struct Trajectory<'a> {
    /// The structure's atoms in the per-atom arrays.
    pub atoms: core::ops::Range<usize>,
    pub positions: *mut [f32; 3],
    pub velocities: *mut [f32; 3],
    /// The forces of the current positions (the evaluation writes them).
    pub forces: *const [f32; 3],
    pub masses: *const f32,
    /// Per atom: the kinetic energy the thermostat added so far (eV), or null.
    pub heat: *mut f64,
    pub integrator: &'a Integrator,
    /// The structure's fault bits and the step a fault stopped it at.
    pub fault: *mut u32,
    pub fault_step: *mut u64,
    /// Step number of the first step (the thermostat's noise counter), and steps.
    pub first_step: u64,
    pub steps: u32,
}

/// `t.steps` steps, starting from the forces in `t.forces` (those of the current
/// positions); `evaluate` computes the forces of new positions and returns the fault
/// bits (0: fine). A fault stops the structure: its bits go to `fault`, its step to
/// `fault_step`; the state is left as the faulting step made it. A structure that had
/// faulted before does not move.
///
/// # Safety
/// The pointers of `t` must cover `t.atoms`; every thread of the team must call it.
#[inline(always)]
pub unsafe fn integrate<T: Team>(team: &T, t: &Trajectory, mut evaluate: impl FnMut() -> u32) {
    if *t.fault != 0 {
        return;
    }
    for k in 0..t.steps as u64 {
        let step = t.first_step + k;
        kick_drift(team, t, step);
        team.sync();
        let faults = evaluate();
        if faults != 0 {
            if team.thread() == 0 {
                *t.fault = faults;
                *t.fault_step = step;
            }
            return;
        }
        kick(team, t);
        team.sync();
    }
}

/// The first half of an MD step (a phase of its own, not inlined: the thermostat's
/// noise would otherwise raise the whole kernel's registers).
#[inline(never)]
unsafe fn kick_drift<T: Team>(team: &T, t: &Trajectory, step: u64) {
    for i in items(team, t.atoms.len()) {
        let atom = t.atoms.start + i;
        let (mut x, mut v) = (*t.positions.add(atom), *t.velocities.add(atom));
        let heat =
            md::kick_drift(&mut x, &mut v, *t.forces.add(atom), *t.masses.add(atom), t.integrator, step, atom as u32);
        *t.positions.add(atom) = x;
        *t.velocities.add(atom) = v;
        if !t.heat.is_null() {
            *t.heat.add(atom) += heat;
        }
    }
}

/// The closing kick of an MD step.
#[inline(never)]
unsafe fn kick<T: Team>(team: &T, t: &Trajectory) {
    for i in items(team, t.atoms.len()) {
        let atom = t.atoms.start + i;
        let mut v = *t.velocities.add(atom);
        md::kick(&mut v, *t.forces.add(atom), *t.masses.add(atom), t.integrator);
        *t.velocities.add(atom) = v;
    }
}

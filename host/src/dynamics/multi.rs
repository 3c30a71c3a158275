//! MD over a device set. The structures (frames × replicas) are cut into contiguous
//! runs of nearly equal atom count, one per device (`crate::spread`), and each run is
//! integrated by a [`Dynamics`] of its own on that device (its own weights,
//! workspaces and CUDA graphs), on a thread of its own.
//!
//! The devices meet at reports only: each hands over a copy of its report and waits
//! until the caller has seen the joined one. So the caller sees one report per step in
//! the batch's order, as from one device (the same log and trajectory), and a run
//! stopped at a report (by an error from the caller, or by a device's fault) leaves
//! every other device at that same report. Between reports the devices run freely; on
//! a GPU the next chunk of steps is already running while the caller looks at a report,
//! as on one GPU. The thermostat's noise follows the batch's atom numbering
//! (`Integrator::first_atom`), so the split changes no trajectory beyond the round-off
//! of the model on a smaller batch.

use super::{Barostat, Dynamics, MdSettings, Report, ReportContext};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::spread::{balanced_ranges, bind, describe_short, in_input_terms, on_each};
use crate::structure::Structure;
use std::ops::Range;
use std::sync::mpsc;

pub(super) struct MultiDynamics {
    parts: Vec<Part>,
}

/// One device's share of the batch.
struct Part {
    device: Device,
    /// Its structures and atoms, as indices into the whole batch.
    structures: Range<usize>,
    atoms: Range<usize>,
    dynamics: Dynamics,
}

/// One device's report, copied out to be joined with the others'.
#[derive(Default)]
struct Snapshot {
    step: u64,
    time: f64,
    positions: Vec<[f32; 3]>,
    velocities: Vec<[f32; 3]>,
    forces: Vec<[f32; 3]>,
    potential: Vec<f64>,
    kinetic: Vec<f64>,
    virials: Vec<[f64; 9]>,
    cells: Vec<Option<[[f64; 3]; 3]>>,
    ensemble: Vec<f64>,
    /// Empty where the engine does not track it (then empty for the whole set).
    heat: Vec<f64>,
}

impl Snapshot {
    fn of(r: &Report) -> Self {
        Snapshot {
            step: r.step,
            time: r.time,
            positions: r.positions.to_vec(),
            velocities: r.velocities.to_vec(),
            forces: r.forces.to_vec(),
            potential: r.potential.to_vec(),
            kinetic: r.kinetic.to_vec(),
            virials: r.virials.to_vec(),
            cells: r.cells.to_vec(),
            ensemble: r.ensemble.to_vec(),
            heat: r.heat.to_vec(),
        }
    }

    /// The devices' snapshots of one step, end to end (they hold consecutive runs of
    /// the batch, in order).
    fn join(parts: Vec<Snapshot>) -> Result<Snapshot> {
        let steps: Vec<u64> = parts.iter().map(|p| p.step).collect();
        if steps.windows(2).any(|w| w[0] != w[1]) {
            return Err(Error::Unsupported(format!(
                "the devices of the set are at different steps ({steps:?}) after an earlier run stopped with an \
                 error; start a new MD run"
            )));
        }
        let every_heat = parts.iter().all(|p| !p.heat.is_empty());
        let mut parts = parts.into_iter();
        let Some(mut joined) = parts.next() else { return Ok(Snapshot::default()) };
        for p in parts {
            joined.positions.extend(p.positions);
            joined.velocities.extend(p.velocities);
            joined.forces.extend(p.forces);
            joined.potential.extend(p.potential);
            joined.kinetic.extend(p.kinetic);
            joined.virials.extend(p.virials);
            joined.cells.extend(p.cells);
            joined.ensemble.extend(p.ensemble);
            joined.heat.extend(p.heat);
        }
        if !every_heat {
            joined.heat.clear();
        }
        Ok(joined)
    }

    fn report<'a>(&'a self, context: &'a ReportContext) -> Report<'a> {
        let batch = context.batch;
        Report {
            step: self.step,
            time: self.time,
            offsets: &batch.offsets,
            numbers: &batch.numbers,
            origins: &batch.origins,
            positions: &self.positions,
            velocities: &self.velocities,
            forces: &self.forces,
            potential: &self.potential,
            kinetic: &self.kinetic,
            virials: &self.virials,
            cells: &self.cells,
            pbc: &batch.pbc,
            masses: context.masses,
            ensemble: &self.ensemble,
            heat: &self.heat,
            settings: context.settings,
            barostat: context.barostat,
        }
    }
}

/// What a device's run returns when the others stopped it at a report.
fn stopped_with_the_others() -> Error {
    Error::Unsupported("stopped at a report with the other devices of the set".into())
}

impl MultiDynamics {
    /// A [`Dynamics`] per member of `device` for its share of `structures` (made
    /// concurrently: each evaluates its first forces).
    pub(super) fn new(
        model: &Model,
        device: &Device,
        structures: &[Structure],
        settings: MdSettings,
        barostat: Option<Barostat>,
    ) -> Result<Self> {
        let sizes: Vec<usize> = structures.iter().map(Structure::len).collect();
        let ranges = balanced_ranges(&sizes, device.members().len());
        let first_atom = |structure: usize| sizes[..structure].iter().sum::<usize>();
        let made = on_each(device, &ranges, |member, range| {
            // `Batch::new` of the whole batch has held its atoms to u32 indices.
            let first = u32::try_from(first_atom(range.start)).map_err(|_| {
                Error::InvalidInput(format!("{} atoms is beyond the engine's indices", first_atom(range.start)))
            })?;
            Dynamics::starting_at_atom(model, member, &structures[range], settings, barostat, first)
        });
        let mut parts = Vec::with_capacity(ranges.len());
        for ((member, range), made) in device.members().iter().zip(&ranges).zip(made) {
            match made {
                None => {}
                Some(Ok(dynamics)) => parts.push(Part {
                    device: member.clone(),
                    atoms: first_atom(range.start)..first_atom(range.end),
                    structures: range.clone(),
                    dynamics,
                }),
                Some(Err(e)) => return Err(in_input_terms(e, member, range)),
            }
        }
        Ok(MultiDynamics { parts })
    }

    pub(super) fn set_velocities(&mut self, v: &[[f32; 3]]) -> Result<()> {
        for part in &mut self.parts {
            // f32 → f64 → f32 is exact: each device gets these very velocities.
            let share: Vec<[f64; 3]> = v[part.atoms.clone()].iter().map(|v| v.map(f64::from)).collect();
            bind(&part.device)
                .and_then(|()| part.dynamics.set_velocities(&share))
                .map_err(|e| in_input_terms(e, &part.device, &part.structures))?;
        }
        Ok(())
    }

    pub(super) fn current<T>(&mut self, context: &ReportContext, look: impl FnOnce(&Report) -> T) -> Result<T> {
        let mut snapshots = Vec::with_capacity(self.parts.len());
        for part in &mut self.parts {
            let snapshot = bind(&part.device).and_then(|()| part.dynamics.current(Snapshot::of));
            snapshots.push(snapshot.map_err(|e| in_input_terms(e, &part.device, &part.structures))?);
        }
        Ok(look(&Snapshot::join(snapshots)?.report(context)))
    }

    /// Runs every device's share for `steps` steps on threads of their own, showing
    /// the joined state to `on_report` (on the calling thread) at every report.
    pub(super) fn run(
        &mut self,
        context: &ReportContext,
        steps: u64,
        every: u64,
        on_report: &mut dyn FnMut(&Report) -> Result<()>,
    ) -> Result<()> {
        let (caller, devices) = std::thread::scope(|scope| {
            // Per device: its reports to this thread, and this thread's word to go on
            // (a closed channel, either way, stops the device at that report).
            let mut links = Vec::with_capacity(self.parts.len());
            let mut threads = Vec::with_capacity(self.parts.len());
            for part in self.parts.iter_mut() {
                let (report_to_caller, reports) = mpsc::sync_channel::<Snapshot>(1);
                let (go_on, go_ahead) = mpsc::sync_channel::<()>(1);
                let (dynamics, device) = (&mut part.dynamics, &part.device);
                let spawned = std::thread::Builder::new()
                    .name(format!("mlff-md-{}", describe_short(&part.device)))
                    .spawn_scoped(scope, move || {
                        let mut stopped = false;
                        let result = bind(device).and_then(|()| {
                            dynamics.run(steps, every, |r| {
                                if report_to_caller.send(Snapshot::of(r)).is_ok() && go_ahead.recv().is_ok() {
                                    Ok(())
                                } else {
                                    stopped = true;
                                    Err(stopped_with_the_others())
                                }
                            })
                        });
                        (result.map(|_| ()), stopped)
                    });
                match spawned {
                    Ok(thread) => {
                        links.push((reports, go_on));
                        threads.push(thread);
                    }
                    Err(e) => {
                        // The started devices stop at their first report.
                        drop(links);
                        let devices: Vec<_> = threads.into_iter().map(join_device).collect();
                        return (Err(Error::ThreadPool(format!("cannot start a device thread: {e}"))), devices);
                    }
                }
            }
            let mut caller: Result<()> = Ok(());
            'reports: loop {
                let mut snapshots = Vec::with_capacity(links.len());
                for (reports, _) in &links {
                    match reports.recv() {
                        Ok(snapshot) => snapshots.push(snapshot),
                        // That device's run ended: all ended together (done), or it failed.
                        Err(_) => break 'reports,
                    }
                }
                if let Err(e) = Snapshot::join(snapshots).and_then(|joined| on_report(&joined.report(context))) {
                    caller = Err(e);
                    break;
                }
                for (_, go_on) in &links {
                    // A device that has gone has its error waiting below.
                    let _ = go_on.send(());
                }
            }
            // Every device still running stops at its next report.
            drop(links);
            (caller, threads.into_iter().map(join_device).collect::<Vec<_>>())
        });
        // The caller's own error first (it stopped the run); else the first device's.
        caller?;
        let failed: Vec<Error> = self
            .parts
            .iter()
            .zip(devices)
            .filter_map(|(part, (result, stopped))| match result {
                Err(e) if !stopped => Some(in_input_terms(e, &part.device, &part.structures)),
                _ => None,
            })
            .collect();
        let count = failed.len();
        match failed.into_iter().next() {
            None => Ok(()),
            Some(e) if count > 1 => Err(e.in_context(format!("{count} devices of the set failed; the first"))),
            Some(e) => Err(e),
        }
    }

    pub(super) fn resize_edge_buffers(&mut self, capacity: usize) -> Result<()> {
        self.parts.iter_mut().try_for_each(|p| p.dynamics.resize_edge_buffers(capacity))
    }
}

/// A device thread's outcome; its panic (a bug) goes on unwinding in the caller.
fn join_device<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

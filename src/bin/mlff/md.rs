//! `mlff md`: every input frame × replicas integrated as one batch; energies logged
//! and the trajectory written while the next chunk of steps runs.
//!
//! Everything is checked before an output is touched. The outputs go to temporary
//! files that replace the destinations at the first report; from then on every
//! report is written whole and handed to the system at once, so a run that fails or
//! is stopped (Ctrl-C, SIGTERM: it stops at the next report) keeps every report made
//! so far, and one that fails before its first report leaves the old files as they were.

use crate::output::{resolve, same_file, AtomicFile};
use crate::{in_file, load_model, read_frames, signals, DeviceChoice, Outcome};
use mlff::dynamics::{Dynamics, MdSettings, Report, Thermostat};
use mlff::extxyz;
use mlff::Structure;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct MdArgs {
    /// Model file, or `default`
    model: String,
    input: PathBuf,
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Time step, fs
    #[arg(long, default_value_t = 0.5)]
    dt: f64,
    /// nve or langevin
    #[arg(long, default_value = "nve")]
    thermostat: String,
    /// Initial (and, with langevin, bath) temperature, K
    #[arg(long, default_value_t = 300.0)]
    temperature: f64,
    /// Langevin friction, 1/fs [default: 0.01]; only with --thermostat langevin
    #[arg(long)]
    friction: Option<f64>,
    /// Independent copies of every frame (different initial velocities)
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Report (log line, trajectory frame) every this many steps
    #[arg(long, default_value_t = 100)]
    every: u64,
    /// Trajectory output (extended XYZ; every frame of every replica per report)
    #[arg(long)]
    traj: Option<PathBuf>,
    /// Energy log output (whitespace-separated columns)
    #[arg(long)]
    log: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    device: DeviceChoice,
}

const DEFAULT_FRICTION: f64 = 0.01;

/// Host bytes per atom of an MD run besides the model: the structures, the batch,
/// positions, velocities and forces, and a report's copies.
const HOST_BYTES_PER_ATOM: f64 = 160.0;

/// Per structure: total energy at the start, per atom.
struct Drift {
    start: Vec<f64>,
    worst: f64,
    last: Vec<f64>,
}

fn invalid(message: String) -> mlff::Error {
    mlff::Error::InvalidInput(message)
}

/// The options alone: everything that needs neither the model nor the input.
fn check_options(args: &MdArgs) -> mlff::Result<Thermostat> {
    if args.replicas == 0 {
        return Err(invalid("--replicas must be at least 1".into()));
    }
    if args.every == 0 {
        return Err(invalid("--every must be at least 1 (steps between reports)".into()));
    }
    let thermostat = match args.thermostat.as_str() {
        "nve" => {
            if let Some(f) = args.friction {
                return Err(invalid(format!(
                    "--friction {f} has no effect with --thermostat nve (constant energy); leave it out or use \
                     --thermostat langevin"
                )));
            }
            Thermostat::None
        }
        "langevin" => {
            Thermostat::Langevin { temperature: args.temperature, friction: args.friction.unwrap_or(DEFAULT_FRICTION) }
        }
        other => return Err(invalid(format!("--thermostat {other}: nve or langevin"))),
    };
    // The outputs: writable places, none the input, none the other.
    let outputs: Vec<(&str, &Path)> = [("--log", &args.log), ("--traj", &args.traj)]
        .into_iter()
        .filter_map(|(n, p)| Some((n, p.as_deref()?)))
        .collect();
    for (name, path) in &outputs {
        resolve(path)?;
        if same_file(path, &args.input) {
            return Err(invalid(format!("{name} {} is the input file; it would be overwritten", path.display())));
        }
    }
    if let [(_, log), (_, traj)] = outputs[..] {
        if same_file(log, traj) {
            return Err(invalid(format!("--log and --traj are the same file ({}); give two files", log.display())));
        }
    }
    Ok(thermostat)
}

/// Every frame × replicas, refused before allocating if the batch is beyond the
/// engine's indices or the memory.
fn replicate(frames: &[extxyz::Frame], replicas: usize, input: &Path) -> mlff::Result<Vec<Structure>> {
    let atoms_per_copy = frames.iter().map(|f| f.structure.len()).sum::<usize>();
    let structures = frames.len().checked_mul(replicas);
    let atoms = atoms_per_copy.checked_mul(replicas);
    let max = mlff::structure::MAX_BATCH_ATOMS;
    match (structures, atoms) {
        (Some(s), Some(a)) if s <= max && a <= max => {
            let bytes = a as f64 * HOST_BYTES_PER_ATOM + s as f64 * 256.0;
            mlff::resources::check_memory(bytes, || format!("md with {s} structures and {a} atoms"))?;
        }
        _ => {
            return Err(invalid(format!(
                "{}: {replicas} replicas of {} frames ({atoms_per_copy} atoms) would be {:.3e} structures and \
                 {:.3e} atoms; one run holds at most {max} of each",
                input.display(),
                frames.len(),
                replicas as f64 * frames.len() as f64,
                replicas as f64 * atoms_per_copy as f64
            )))
        }
    }
    Ok(frames.iter().flat_map(|f| std::iter::repeat_n(f.structure.clone(), replicas)).collect())
}

/// A log and a trajectory being written report by report.
struct Outputs {
    log: Option<AtomicFile>,
    traj: Option<AtomicFile>,
    published: bool,
}

impl Outputs {
    fn create(args: &MdArgs, structures: usize) -> mlff::Result<Self> {
        let mut log = args.log.as_deref().map(|p| AtomicFile::create(Some(p))).transpose()?;
        let traj = args.traj.as_deref().map(|p| AtomicFile::create(Some(p))).transpose()?;
        if let Some(log) = &mut log {
            log.write(
                format!(
                    "# step time_ps  mean over {structures} structures: E_pot E_kin E_total (eV) T (K)  max \
                     |ΔE_total|/atom (eV)\n"
                )
                .as_bytes(),
            )?;
        }
        Ok(Outputs { log, traj, published: false })
    }

    /// Writes one report whole, then (the first time) puts the files in place. No
    /// signal ends the process halfway through.
    fn report(&mut self, line: &str, frames: &str) -> mlff::Result<()> {
        signals::uninterrupted(|| -> mlff::Result<()> {
            if let Some(log) = &mut self.log {
                log.write(line.as_bytes())?;
            }
            if let Some(traj) = &mut self.traj {
                traj.write(frames.as_bytes())?;
            }
            Ok(())
        })?;
        if !self.published {
            for out in [&mut self.log, &mut self.traj].into_iter().flatten() {
                out.publish()?;
            }
            self.published = true;
        }
        Ok(())
    }

    /// Everything written so far on disk.
    fn sync(&mut self) -> mlff::Result<()> {
        for out in [&mut self.log, &mut self.traj].into_iter().flatten() {
            out.sync()?;
        }
        Ok(())
    }

    fn finish(self) -> mlff::Result<()> {
        for out in [self.log, self.traj].into_iter().flatten() {
            out.commit()?;
        }
        Ok(())
    }
}

pub fn run(args: &MdArgs) -> mlff::Result<Outcome> {
    let thermostat = check_options(args)?;
    let model = load_model(&args.model)?;
    let device = args.device.open()?;
    let frames = read_frames(&args.input)?;
    let templates = replicate(&frames, args.replicas, &args.input)?;
    let settings = MdSettings { timestep: args.dt, thermostat, seed: args.seed };
    let context = if args.replicas > 1 {
        format!("{} (structure s is frame s / {} of it)", args.input.display(), args.replicas)
    } else {
        args.input.display().to_string()
    };
    let mut md = Dynamics::new(&model, &device, &templates, settings).map_err(|e| e.in_context(&context))?;
    md.maxwell_boltzmann(args.temperature, args.seed)?;
    let atoms_of: Vec<f64> = templates.iter().map(|s| s.len().max(1) as f64).collect();
    let mut drift = md.current(|r| {
        let start: Vec<f64> = (0..r.num_structures()).map(|s| r.total_energy(s) / atoms_of[s]).collect();
        Drift { last: start.clone(), start, worst: 0.0 }
    })?;
    let mut outputs = Outputs::create(args, templates.len())?;
    eprintln!(
        "md: {} structures, {} atoms, {} steps of {} fs on {}",
        templates.len(),
        md.num_atoms(),
        args.steps,
        args.dt,
        device.describe()
    );
    signals::stop_gracefully();
    let mut last_step = 0;
    let mut on_report = |r: &Report| -> mlff::Result<()> {
        let n = r.num_structures().max(1) as f64;
        let mean = |f: &dyn Fn(usize) -> f64| (0..r.num_structures()).map(f).sum::<f64>() / n;
        for (s, (last, atoms)) in drift.last.iter_mut().zip(&atoms_of).enumerate() {
            *last = r.total_energy(s) / atoms;
            drift.worst = drift.worst.max((*last - drift.start[s]).abs());
        }
        let line = format!(
            "{:>8} {:>10.4} {:>16.6} {:>14.6} {:>16.6} {:>10.2} {:>12.3e}\n",
            r.step,
            r.time / 1000.0,
            mean(&|s| r.potential[s]),
            mean(&|s| r.kinetic[s]),
            mean(&|s| r.total_energy(s)),
            mean(&|s| r.temperature(s)),
            drift.worst
        );
        let mut text = String::new();
        if args.traj.is_some() {
            for (s, template) in templates.iter().enumerate() {
                let mut structure = template.clone();
                structure.positions = r.absolute_positions(s);
                let info = [
                    ("step".to_string(), r.step.to_string()),
                    ("time_fs".to_string(), format!("{}", r.time)),
                    ("replica".to_string(), s.to_string()),
                    ("energy_total".to_string(), format!("{}", r.total_energy(s))),
                    ("energy_potential".to_string(), format!("{}", r.potential[s])),
                ];
                extxyz::write_frame(&mut text, &structure, &info, None);
            }
        }
        outputs.report(&line, &text)?;
        last_step = r.step;
        match signals::stop_requested() {
            Some(signal) => Err(invalid(format!("stopped by {}", signals::name(signal)))),
            None => Ok(()),
        }
    };
    let result = md.run(args.steps, args.every, &mut on_report);
    if result.is_err() && outputs.published {
        // A failure after the first report: the outputs keep what was reported.
        let _ = outputs.sync();
    }
    if let Some(signal) = signals::stop_requested() {
        // Stopped at a report: what was reported stays.
        eprintln!(
            "md: stopped by {} at step {last_step}; the log and trajectory hold every report up to it",
            signals::name(signal)
        );
        return Ok(Outcome::Interrupted(signal));
    }
    let summary = result.map_err(in_file(&args.input))?;
    outputs.finish()?;
    let ps = args.steps as f64 * args.dt / 1000.0;
    let changes: Vec<f64> = drift.last.iter().zip(&drift.start).map(|(l, s)| l - s).collect();
    let mean_change = changes.iter().sum::<f64>() / changes.len().max(1) as f64;
    println!(
        "{} steps in {:.3} s: {:.0} steps/s, {:.3e} atom-steps/s",
        summary.steps,
        summary.seconds,
        summary.steps_per_second(),
        summary.atom_steps_per_second()
    );
    println!(
        "total energy: change {:+.3e} eV/atom over {ps} ps (mean of {} structures; {:+.3e} eV/atom/ps), largest excursion {:.3e} eV/atom",
        mean_change,
        changes.len(),
        if ps > 0.0 { mean_change / ps } else { 0.0 },
        drift.worst
    );
    Ok(Outcome::Done)
}

//! `mlff md`: every input frame × replicas integrated as one batch (NVE, Langevin,
//! Nosé–Hoover chain; NPT with the stochastic cell rescaling barostat); energies
//! logged, the trajectory written while the next chunk of steps runs, checkpoints
//! written every k steps and at the end (Ctrl-C included), and `--restart` continuing
//! a run exactly.
//!
//! Everything is checked before an output is touched. The outputs go to temporary
//! files that replace the destinations at the first report; from then on every
//! report is written whole and handed to the system at once, so a run that fails or
//! is stopped (Ctrl-C, SIGTERM: it stops at the next report) keeps every report made
//! so far, and one that fails before its first report leaves the old files as they were.

use crate::output::{resolve, same_file, AtomicFile};
use crate::progress::Progress;
use crate::{in_file, load_model, read_frames, signals, DeviceChoice, Outcome};
use mlff::dynamics::trajectory::{self, XtcWriter};
use mlff::dynamics::{Barostat, Checkpoint, Coupling, Dynamics, MdSettings, Report, Thermostat, BAR};
use mlff::extxyz;
use mlff::Structure;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct MdArgs {
    /// Model file, or `default`
    model: String,
    /// Input frames (extended XYZ); not with --restart, which carries its structures
    #[arg(required_unless_present = "restart")]
    input: Option<PathBuf>,
    /// The run's last step [default: 1000]; with --restart the checkpointed run's own
    #[arg(long)]
    steps: Option<u64>,
    /// Time step, fs [default: 0.5]
    #[arg(long)]
    dt: Option<f64>,
    /// nve, langevin or nhc (Nosé–Hoover chain) [default: nve]
    #[arg(long)]
    thermostat: Option<String>,
    /// Initial (and, with a thermostat, bath) temperature, K [default: 300]
    #[arg(long)]
    temperature: Option<f64>,
    /// Langevin friction, 1/fs [default: 0.01]; only with --thermostat langevin
    #[arg(long)]
    friction: Option<f64>,
    /// Nosé–Hoover chain damping time, fs [default: 100 time steps]; only with nhc
    #[arg(long)]
    tdamp: Option<f64>,
    /// Thermostats in the Nosé–Hoover chain [default: 3]
    #[arg(long)]
    tchain: Option<usize>,
    /// Suzuki–Yoshida loops of the chain [default: 1]
    #[arg(long)]
    tloop: Option<usize>,
    /// NPT for periodic frames: iso (volume) or aniso (x, y, z independently); stochastic
    /// cell rescaling with --thermostat langevin or nhc
    #[arg(long)]
    barostat: Option<String>,
    /// Target pressure, bar [default: 1.01325]
    #[arg(long)]
    pressure: Option<f64>,
    /// Barostat relaxation time, fs [default: 1000]
    #[arg(long)]
    tau_p: Option<f64>,
    /// Isothermal compressibility, 1/bar [default: 4.5e-5, water's]
    #[arg(long)]
    compressibility: Option<f64>,
    /// Independent copies of every frame (different initial velocities) [default: 1]
    #[arg(long)]
    replicas: Option<usize>,
    /// Report (log line, trajectory frame) every this many steps
    #[arg(long, default_value_t = 100)]
    every: u64,
    /// Trajectory output: extended XYZ (positions, momenta, forces, cell per frame), or
    /// XTC for a name ending in .xtc (one file per structure: NAME-sK.xtc where several)
    #[arg(long)]
    traj: Option<PathBuf>,
    /// Only these replicas of every frame in the trajectory, e.g. 0 or 0,2-5 [default: all]
    #[arg(long)]
    traj_replicas: Option<String>,
    /// Wrap trajectory positions into the cell (periodic frames)
    #[arg(long)]
    wrap: bool,
    /// Energy log output (whitespace-separated columns, means over structures)
    #[arg(long)]
    log: Option<PathBuf>,
    /// One log line per structure and report instead of the means
    #[arg(long)]
    log_structures: bool,
    /// Checkpoint file, rewritten every --checkpoint-every steps and when the run ends
    /// or is stopped
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Steps between checkpoints (a multiple of --every) [default: 10 × --every]
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Continue the run of this checkpoint exactly (same model; settings and
    /// structures come from it)
    #[arg(long)]
    restart: Option<PathBuf>,
    /// Seeds the initial velocities and the thermostat's noise [default: 1]
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    device: DeviceChoice,
}

const DEFAULT_STEPS: u64 = 1000;
const DEFAULT_DT: f64 = 0.5;
const DEFAULT_TEMPERATURE: f64 = 300.0;
const DEFAULT_FRICTION: f64 = 0.01;
const DEFAULT_PRESSURE_BAR: f64 = 1.01325;
const DEFAULT_TAU_P: f64 = 1000.0;
const DEFAULT_COMPRESSIBILITY_PER_BAR: f64 = 4.5e-5;

/// Checkpoint metadata: the run's last step, the replicas per frame.
const META_STEPS: &str = "steps";
const META_REPLICAS: &str = "replicas";

/// Host bytes per atom of an MD run besides the model: the structures, the batch,
/// positions, velocities and forces, and a report's copies.
const HOST_BYTES_PER_ATOM: f64 = 160.0;

/// Per structure: the conserved quantity at the start, per atom.
struct Drift {
    start: Vec<f64>,
    worst: f64,
    last: Vec<f64>,
}

fn invalid(message: String) -> mlff::Error {
    mlff::Error::InvalidInput(message)
}

/// The ensemble the options ask for.
struct Ensemble {
    settings: MdSettings,
    barostat: Option<Barostat>,
}

/// The options that set the dynamics, which a restart takes from its checkpoint.
fn dynamics_options(args: &MdArgs) -> Vec<&'static str> {
    let given = [
        ("--dt", args.dt.is_some()),
        ("--thermostat", args.thermostat.is_some()),
        ("--temperature", args.temperature.is_some()),
        ("--friction", args.friction.is_some()),
        ("--tdamp", args.tdamp.is_some()),
        ("--tchain", args.tchain.is_some()),
        ("--tloop", args.tloop.is_some()),
        ("--barostat", args.barostat.is_some()),
        ("--pressure", args.pressure.is_some()),
        ("--tau-p", args.tau_p.is_some()),
        ("--compressibility", args.compressibility.is_some()),
        ("--replicas", args.replicas.is_some()),
        ("--seed", args.seed.is_some()),
    ];
    given.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect()
}

fn ensemble(args: &MdArgs) -> mlff::Result<Ensemble> {
    let dt = args.dt.unwrap_or(DEFAULT_DT);
    let temperature = args.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    let name = args.thermostat.as_deref().unwrap_or("nve");
    let only = |option: &str, given: bool, with: &str| -> mlff::Result<()> {
        if given {
            return Err(invalid(format!("{option} has no effect with --thermostat {name}; it goes with {with}")));
        }
        Ok(())
    };
    let thermostat = match name {
        "nve" => {
            if let Some(f) = args.friction {
                return Err(invalid(format!(
                    "--friction {f} has no effect with --thermostat nve (constant energy); leave it out or use \
                     --thermostat langevin"
                )));
            }
            only("--tdamp/--tchain/--tloop", args.tdamp.or(args.tchain.map(|x| x as f64)).is_some(), "nhc")?;
            Thermostat::None
        }
        "langevin" => {
            only("--tdamp/--tchain/--tloop", args.tdamp.or(args.tchain.map(|x| x as f64)).is_some(), "nhc")?;
            Thermostat::Langevin { temperature, friction: args.friction.unwrap_or(DEFAULT_FRICTION) }
        }
        "nhc" | "nose-hoover-chain" => {
            only("--friction", args.friction.is_some(), "langevin")?;
            Thermostat::NoseHooverChain {
                temperature,
                damping: args.tdamp.unwrap_or(100.0 * dt),
                chain: args.tchain.unwrap_or(3),
                loops: args.tloop.unwrap_or(1),
            }
        }
        other => return Err(invalid(format!("--thermostat {other}: nhc (Nosé–Hoover chain), nve or langevin"))),
    };
    let barostat = match args.barostat.as_deref() {
        None => {
            if args.pressure.is_some() || args.tau_p.is_some() || args.compressibility.is_some() {
                return Err(invalid(
                    "--pressure, --tau-p and --compressibility go with --barostat iso or aniso".to_string(),
                ));
            }
            None
        }
        Some(kind) => {
            let coupling = match kind {
                "iso" | "isotropic" => Coupling::Isotropic,
                "aniso" | "anisotropic" => Coupling::Anisotropic,
                other => return Err(invalid(format!("--barostat {other}: iso or aniso"))),
            };
            if matches!(thermostat, Thermostat::None) {
                return Err(invalid(
                    "--barostat needs --thermostat langevin or nhc: the barostat's noise is the bath's".to_string(),
                ));
            }
            Some(Barostat {
                pressure: args.pressure.unwrap_or(DEFAULT_PRESSURE_BAR) * BAR,
                time_constant: args.tau_p.unwrap_or(DEFAULT_TAU_P),
                compressibility: args.compressibility.unwrap_or(DEFAULT_COMPRESSIBILITY_PER_BAR) / BAR,
                coupling,
            })
        }
    };
    Ok(Ensemble { settings: MdSettings { timestep: dt, thermostat, seed: args.seed.unwrap_or(1) }, barostat })
}

/// The replicas of `LIST` ("0,2-5"), each below `replicas`.
fn replica_list(list: &str, replicas: usize) -> mlff::Result<Vec<bool>> {
    let mut keep = vec![false; replicas];
    let bad = || invalid(format!("--traj-replicas {list}: replica numbers or ranges (0,2-5) below {replicas}"));
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.trim().parse::<usize>(), part.trim().parse::<usize>()),
        };
        let (a, b) = (a.map_err(|_| bad())?, b.map_err(|_| bad())?);
        if a > b || b >= replicas {
            return Err(bad());
        }
        keep[a..=b].iter_mut().for_each(|k| *k = true);
    }
    Ok(keep)
}

/// The options alone: everything that needs neither the model nor the input.
fn check_options(args: &MdArgs) -> mlff::Result<()> {
    if args.replicas == Some(0) {
        return Err(invalid("--replicas must be at least 1".into()));
    }
    if args.every == 0 {
        return Err(invalid("--every must be at least 1 (steps between reports)".into()));
    }
    if let Some(k) = args.checkpoint_every {
        if args.checkpoint.is_none() {
            return Err(invalid("--checkpoint-every needs --checkpoint FILE".into()));
        }
        if k == 0 || !k.is_multiple_of(args.every) {
            return Err(invalid(format!(
                "--checkpoint-every {k} must be a positive multiple of --every {} (checkpoints are taken at reports)",
                args.every
            )));
        }
    }
    if args.restart.is_some() {
        if let Some(input) = &args.input {
            return Err(invalid(format!(
                "{} and --restart: a restart continues the checkpoint's own structures; leave the input out",
                input.display()
            )));
        }
        let given = dynamics_options(args);
        if !given.is_empty() {
            return Err(invalid(format!(
                "{} with --restart: the checkpoint carries the run's settings, and changing them would not continue \
                 the same run",
                given.join(", ")
            )));
        }
    }
    // The outputs: writable places, none an input, none another.
    let inputs: Vec<(&str, &Path)> = [("the input", &args.input), ("--restart", &args.restart)]
        .into_iter()
        .filter_map(|(n, p)| Some((n, p.as_deref()?)))
        .collect();
    let outputs: Vec<(&str, &Path)> =
        [("--log", &args.log), ("--traj", &args.traj), ("--checkpoint", &args.checkpoint)]
            .into_iter()
            .filter_map(|(n, p)| Some((n, p.as_deref()?)))
            .collect();
    for (k, (name, path)) in outputs.iter().enumerate() {
        resolve(path)?;
        for (input_name, input) in &inputs {
            if same_file(path, input) {
                let what =
                    if *input_name == "the input" { "the input file".to_string() } else { input_name.to_string() };
                return Err(invalid(format!("{name} {} is {what}; it would be overwritten", path.display())));
            }
        }
        for (other, other_path) in &outputs[k + 1..] {
            if same_file(path, other_path) {
                return Err(invalid(format!(
                    "{name} and {other} are the same file ({}); give two files",
                    path.display()
                )));
            }
        }
    }
    if args.restart.is_none() {
        ensemble(args)?;
    }
    Ok(())
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

/// Where the trajectory goes.
enum Trajectory {
    None,
    Extxyz(AtomicFile),
    /// One XTC file per structure written: (structure, path, file).
    Xtc(Vec<(usize, PathBuf, XtcWriter<Vec<u8>>, AtomicFile)>),
}

/// A log, a trajectory and a checkpoint being written report by report.
struct Outputs {
    log: Option<AtomicFile>,
    trajectory: Trajectory,
    published: bool,
}

fn is_xtc(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xtc"))
}

/// NAME-sK.xtc for structure k where several structures are written.
fn xtc_path(path: &Path, structure: usize, several: bool) -> PathBuf {
    if !several {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}-s{structure}.xtc"))
}

impl Outputs {
    fn create(args: &MdArgs, structures: usize, written: &[usize], periodic: bool) -> mlff::Result<Self> {
        let mut log = args.log.as_deref().map(|p| AtomicFile::create(Some(p))).transpose()?;
        let trajectory = match &args.traj {
            None => Trajectory::None,
            Some(path) if is_xtc(path) => {
                let several = written.len() > 1;
                let files = written
                    .iter()
                    .map(|&s| {
                        let p = xtc_path(path, s, several);
                        let file = AtomicFile::create(Some(&p))?;
                        Ok((s, p, XtcWriter::new(Vec::new()), file))
                    })
                    .collect::<mlff::Result<Vec<_>>>()?;
                if several {
                    eprintln!("md: {} XTC files, {}", files.len(), xtc_path(path, written[0], true).display());
                }
                Trajectory::Xtc(files)
            }
            Some(path) => Trajectory::Extxyz(AtomicFile::create(Some(path))?),
        };
        if let Some(log) = &mut log {
            let columns = if periodic { " P (bar) V (Å³)" } else { "" };
            let header = if args.log_structures {
                format!(
                    "# step time_ps structure: E_pot E_kin E_total (eV) T (K){columns} E_conserved (eV)  \
                     |ΔE_conserved|/atom (eV)\n"
                )
            } else {
                format!(
                    "# step time_ps  mean over {structures} structures: E_pot E_kin E_total (eV) T (K){columns} \
                     E_conserved (eV)  max |ΔE_conserved|/atom (eV)\n"
                )
            };
            log.write(header.as_bytes())?;
        }
        Ok(Outputs { log, trajectory, published: false })
    }

    fn files(&mut self) -> Vec<&mut AtomicFile> {
        let mut files: Vec<&mut AtomicFile> = self.log.iter_mut().collect();
        match &mut self.trajectory {
            Trajectory::None => {}
            Trajectory::Extxyz(f) => files.push(f),
            Trajectory::Xtc(list) => files.extend(list.iter_mut().map(|(_, _, _, f)| f)),
        }
        files
    }

    /// Writes one report whole, then (the first time) puts the files in place. No
    /// signal ends the process halfway through.
    fn report(&mut self, line: &str, frames: &str, r: &Report, wrap: bool) -> mlff::Result<()> {
        if let Trajectory::Xtc(list) = &mut self.trajectory {
            for (s, path, writer, _) in list.iter_mut() {
                writer.write(r, *s, wrap, path)?;
            }
        }
        signals::uninterrupted(|| -> mlff::Result<()> {
            if let Some(log) = &mut self.log {
                log.write(line.as_bytes())?;
            }
            match &mut self.trajectory {
                Trajectory::None => {}
                Trajectory::Extxyz(f) => f.write(frames.as_bytes())?,
                Trajectory::Xtc(list) => {
                    for (_, _, writer, file) in list.iter_mut() {
                        file.write(&std::mem::take(writer.sink_mut()))?;
                    }
                }
            }
            Ok(())
        })?;
        if !self.published {
            for out in self.files() {
                out.publish()?;
            }
            self.published = true;
        }
        Ok(())
    }

    /// Everything written so far on disk.
    fn sync(&mut self) -> mlff::Result<()> {
        for out in self.files() {
            out.sync()?;
        }
        Ok(())
    }

    fn finish(self) -> mlff::Result<()> {
        let mut files: Vec<AtomicFile> = self.log.into_iter().collect();
        match self.trajectory {
            Trajectory::None => {}
            Trajectory::Extxyz(f) => files.push(f),
            Trajectory::Xtc(list) => files.extend(list.into_iter().map(|(_, _, _, f)| f)),
        }
        for out in files {
            out.commit()?;
        }
        Ok(())
    }
}

/// "-" where a value does not apply.
fn optional(value: Option<f64>, precision: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.precision$}"))
}

/// The run's start: the dynamics, its structures, replicas per frame, the last step.
struct Start {
    md: Dynamics,
    templates: Vec<Structure>,
    replicas: usize,
    last_step: u64,
    context: String,
}

fn start(args: &MdArgs, model: &mlff::Model, device: &mlff::Device) -> mlff::Result<Start> {
    if let Some(path) = &args.restart {
        let checkpoint = Checkpoint::read(path)?;
        let md = Dynamics::from_checkpoint(model, device, &checkpoint).map_err(in_file(path))?;
        let replicas = checkpoint.metadata.get(META_REPLICAS).and_then(|r| r.parse().ok()).unwrap_or(1usize).max(1);
        let last_step = match args.steps {
            Some(n) => n,
            None => checkpoint.metadata.get(META_STEPS).and_then(|r| r.parse().ok()).unwrap_or(checkpoint.step),
        };
        if last_step < checkpoint.step {
            return Err(invalid(format!(
                "--steps {last_step}: the checkpoint is at step {} already (--steps is the run's last step)",
                checkpoint.step
            )));
        }
        eprintln!("md: continuing {} from step {} to step {last_step}", path.display(), checkpoint.step);
        return Ok(Start {
            templates: checkpoint.structures(),
            md,
            replicas,
            last_step,
            context: path.display().to_string(),
        });
    }
    let input = args.input.as_deref().ok_or_else(|| invalid("no input file".into()))?;
    let Ensemble { settings, barostat } = ensemble(args)?;
    let replicas = args.replicas.unwrap_or(1);
    let frames = read_frames(input)?;
    let templates = replicate(&frames, replicas, input)?;
    let context = if replicas > 1 {
        format!("{} (structure s is frame s / {replicas} of it)", input.display())
    } else {
        input.display().to_string()
    };
    let mut md = match barostat {
        Some(b) => Dynamics::with_barostat(model, device, &templates, settings, b),
        None => Dynamics::new(model, device, &templates, settings),
    }
    .map_err(|e| e.in_context(&context))?;
    md.maxwell_boltzmann(args.temperature.unwrap_or(DEFAULT_TEMPERATURE), settings.seed)?;
    Ok(Start { md, templates, replicas, last_step: args.steps.unwrap_or(DEFAULT_STEPS), context })
}

pub fn run(args: &MdArgs) -> mlff::Result<Outcome> {
    check_options(args)?;
    let model = load_model(&args.model)?;
    let device = args.device.open()?;
    let Start { mut md, templates, replicas, last_step, context } = start(args, &model, &device)?;
    let written: Vec<usize> = match &args.traj_replicas {
        Some(list) => {
            let keep = replica_list(list, replicas)?;
            (0..templates.len()).filter(|s| keep[s % replicas]).collect()
        }
        None => (0..templates.len()).collect(),
    };
    if let (Some(path), true) = (&args.traj, written.is_empty()) {
        return Err(invalid(format!("--traj {}: no structure selected", path.display())));
    }
    let atoms_of: Vec<f64> = templates.iter().map(|s| s.len().max(1) as f64).collect();
    let (mut drift, first_step, tracked) = md.current(|r| {
        let start: Vec<f64> =
            (0..r.num_structures()).map(|s| r.conserved(s).unwrap_or(r.total_energy(s)) / atoms_of[s]).collect();
        let tracked = (0..r.num_structures()).all(|s| r.conserved(s).is_some());
        (Drift { last: start.clone(), start, worst: 0.0 }, r.step, tracked)
    })?;
    let periodic = templates.iter().any(|s| s.is_periodic() && s.cell.is_some());
    let mut outputs = Outputs::create(args, templates.len(), &written, periodic)?;
    let steps = last_step - first_step;
    let checkpoint_every = args.checkpoint_every.unwrap_or(10 * args.every);
    eprintln!(
        "md: {} structures, {} atoms, {steps} steps of {} fs ({:?}{}) on {} ({} engine)",
        templates.len(),
        md.num_atoms(),
        md.settings().timestep,
        md.settings().thermostat,
        md.barostat().map(|b| format!(", {b:?}")).unwrap_or_default(),
        device.describe(),
        md.engine_name()
    );
    signals::stop_gracefully();
    let mut progress = Progress::new("md", "steps", first_step, last_step);
    let mut reached = first_step;
    let mut on_report = |r: &Report| -> mlff::Result<()> {
        let n = r.num_structures().max(1) as f64;
        let mean = |f: &dyn Fn(usize) -> f64| (0..r.num_structures()).map(f).sum::<f64>() / n;
        // Where the conserved quantity is not tracked (Langevin on the fused engine),
        // the drift is the total energy's and the column says "-".
        let conserved = |s: usize| r.conserved(s).unwrap_or(r.total_energy(s));
        let conserved_column = |s: usize| optional(r.conserved(s), 6);
        let mut line = String::new();
        for (s, (last, atoms)) in drift.last.iter_mut().zip(&atoms_of).enumerate() {
            *last = conserved(s) / atoms;
            let change = (*last - drift.start[s]).abs();
            drift.worst = drift.worst.max(change);
            if args.log_structures {
                let pv = if periodic {
                    format!(" {:>12} {:>12}", optional(r.pressure(s).map(|p| p / BAR), 2), optional(r.volume(s), 3))
                } else {
                    String::new()
                };
                line += &format!(
                    "{:>8} {:>10.4} {s:>6} {:>16.6} {:>14.6} {:>16.6} {:>10.2}{pv} {:>16} {:>12.3e}\n",
                    r.step,
                    r.time / 1000.0,
                    r.potential[s],
                    r.kinetic[s],
                    r.total_energy(s),
                    r.temperature(s),
                    conserved_column(s),
                    change
                );
            }
        }
        if !args.log_structures {
            let pv = if periodic {
                let periodic_mean = |f: &dyn Fn(usize) -> Option<f64>| {
                    let values: Vec<f64> = (0..r.num_structures()).filter_map(f).collect();
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
                };
                format!(
                    " {:>12} {:>12}",
                    optional(periodic_mean(&|s| r.pressure(s).map(|p| p / BAR)), 2),
                    optional(periodic_mean(&|s| r.volume(s)), 3)
                )
            } else {
                String::new()
            };
            let tracked = (0..r.num_structures()).all(|s| r.conserved(s).is_some());
            line = format!(
                "{:>8} {:>10.4} {:>16.6} {:>14.6} {:>16.6} {:>10.2}{pv} {:>16} {:>12.3e}\n",
                r.step,
                r.time / 1000.0,
                mean(&|s| r.potential[s]),
                mean(&|s| r.kinetic[s]),
                mean(&|s| r.total_energy(s)),
                mean(&|s| r.temperature(s)),
                optional(tracked.then(|| mean(&conserved)), 6),
                drift.worst
            );
        }
        let mut text = String::new();
        if matches!(outputs.trajectory, Trajectory::Extxyz(_)) {
            for &s in &written {
                let replica = [("replica", (s % replicas).to_string()), ("frame", (s / replicas).to_string())];
                trajectory::write_extxyz(&mut text, r, s, args.wrap, &replica);
            }
        }
        outputs.report(&line, &text, r, args.wrap)?;
        reached = r.step;
        let stop = signals::stop_requested();
        if let Some(path) = &args.checkpoint {
            let due = (r.step - first_step).is_multiple_of(checkpoint_every) || r.step == last_step || stop.is_some();
            if due {
                write_checkpoint(path, r, last_step, replicas)?;
            }
        }
        progress.set(r.step, &format!("T {:.1} K", mean(&|s| r.temperature(s))));
        match stop {
            Some(signal) => Err(invalid(format!("stopped by {}", signals::name(signal)))),
            None => Ok(()),
        }
    };
    let result = md.run(steps, args.every, &mut on_report);
    progress.finish();
    if result.is_err() && outputs.published {
        // A failure after the first report: the outputs keep what was reported.
        let _ = outputs.sync();
    }
    if let Some(signal) = signals::stop_requested() {
        // Stopped at a report: what was reported stays.
        let saved = match &args.checkpoint {
            Some(path) => format!(", and {} continues from there (--restart)", path.display()),
            None => String::new(),
        };
        eprintln!(
            "md: stopped by {} at step {reached}; the log and trajectory hold every report up to it{saved}",
            signals::name(signal)
        );
        return Ok(Outcome::Interrupted(signal));
    }
    let summary = result.map_err(|e| e.in_context(&context))?;
    outputs.finish()?;
    let ps = steps as f64 * md.settings().timestep / 1000.0;
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
        "total energy: change {:+.3e} eV/atom over {ps} ps (mean of {} structures; {:+.3e} eV/atom/ps), largest excursion {:.3e} eV/atom{}",
        mean_change,
        changes.len(),
        if ps > 0.0 { mean_change / ps } else { 0.0 },
        drift.worst,
        if !tracked {
            " (of the total energy: this engine does not track the thermostat's heat)"
        } else if matches!(md.settings().thermostat, Thermostat::None) && md.barostat().is_none() {
            ""
        } else {
            " (of the conserved quantity)"
        }
    );
    Ok(Outcome::Done)
}

/// Writes the checkpoint of report `r` whole (a temporary file renamed over the old
/// one, which a signal cannot interrupt halfway).
fn write_checkpoint(path: &Path, r: &Report, last_step: u64, replicas: usize) -> mlff::Result<()> {
    let mut checkpoint = r.checkpoint();
    checkpoint.metadata.insert(META_STEPS.into(), last_step.to_string());
    checkpoint.metadata.insert(META_REPLICAS.into(), replicas.to_string());
    let bytes = checkpoint.to_bytes()?;
    let mut file = AtomicFile::create(Some(path))?;
    file.write(&bytes)?;
    file.commit()
}

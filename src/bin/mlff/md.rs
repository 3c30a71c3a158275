//! `mlff md`: every input frame × replicas integrated as one batch; energies logged
//! and the trajectory written while the next chunk of steps runs.

use crate::{load_model, read_frames, DeviceChoice};
use mlff::dynamics::{Dynamics, MdSettings, Report, Thermostat};
use mlff::extxyz;
use mlff::Structure;
use std::io::Write;
use std::path::PathBuf;

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
    /// Langevin friction, 1/fs
    #[arg(long, default_value_t = 0.01)]
    friction: f64,
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

fn create(path: &std::path::Path) -> mlff::Result<std::io::BufWriter<std::fs::File>> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|source| mlff::Error::Io { path: path.to_path_buf(), source })
}

/// Per structure: total energy at the start, per atom.
struct Drift {
    start: Vec<f64>,
    worst: f64,
    last: Vec<f64>,
}

pub fn run(args: &MdArgs) -> mlff::Result<()> {
    let model = load_model(&args.model)?;
    let device = args.device.open()?;
    let frames = read_frames(&args.input)?;
    if args.replicas == 0 {
        return Err(mlff::Error::InvalidInput("--replicas must be at least 1".into()));
    }
    let thermostat = match args.thermostat.as_str() {
        "nve" => Thermostat::None,
        "langevin" => Thermostat::Langevin { temperature: args.temperature, friction: args.friction },
        other => return Err(mlff::Error::InvalidInput(format!("--thermostat {other}: nve or langevin"))),
    };
    let templates: Vec<Structure> =
        frames.iter().flat_map(|f| std::iter::repeat_n(f.structure.clone(), args.replicas)).collect();
    let settings = MdSettings { timestep: args.dt, thermostat, seed: args.seed };
    let mut md = Dynamics::new(&model, &device, &templates, settings)?;
    md.maxwell_boltzmann(args.temperature, args.seed)?;
    let atoms_of: Vec<f64> = templates.iter().map(|s| s.len().max(1) as f64).collect();
    let mut drift = md.current(|r| {
        let start: Vec<f64> = (0..r.num_structures()).map(|s| r.total_energy(s) / atoms_of[s]).collect();
        Drift { last: start.clone(), start, worst: 0.0 }
    })?;
    let mut log = args.log.as_deref().map(create).transpose()?;
    let mut traj = args.traj.as_deref().map(create).transpose()?;
    if let Some(log) = &mut log {
        writeln!(
            log,
            "# step time_ps  mean over {} structures: E_pot E_kin E_total (eV) T (K)  max |ΔE_total|/atom (eV)",
            templates.len()
        )
        .map_err(|source| mlff::Error::Io { path: args.log.clone().unwrap_or_default(), source })?;
    }
    eprintln!(
        "md: {} structures, {} atoms, {} steps of {} fs on {}",
        templates.len(),
        md.num_atoms(),
        args.steps,
        args.dt,
        device.describe()
    );
    let mut on_report = |r: &Report| -> mlff::Result<()> {
        let n = r.num_structures().max(1) as f64;
        let mean = |f: &dyn Fn(usize) -> f64| (0..r.num_structures()).map(f).sum::<f64>() / n;
        for s in 0..r.num_structures() {
            drift.last[s] = r.total_energy(s) / atoms_of[s];
            drift.worst = drift.worst.max((drift.last[s] - drift.start[s]).abs());
        }
        let line = format!(
            "{:>8} {:>10.4} {:>16.6} {:>14.6} {:>16.6} {:>10.2} {:>12.3e}",
            r.step,
            r.time / 1000.0,
            mean(&|s| r.potential[s]),
            mean(&|s| r.kinetic[s]),
            mean(&|s| r.total_energy(s)),
            mean(&|s| r.temperature(s)),
            drift.worst
        );
        if let Some(log) = &mut log {
            writeln!(log, "{line}")
                .map_err(|source| mlff::Error::Io { path: args.log.clone().unwrap_or_default(), source })?;
        }
        if let Some(traj) = &mut traj {
            let mut text = String::new();
            for (s, template) in templates.iter().enumerate() {
                let mut structure = template.clone();
                let atoms = r.offsets[s]..r.offsets[s + 1];
                structure.positions = r.positions[atoms].iter().map(|p| p.map(|x| x as f64)).collect();
                let info = [
                    ("step".to_string(), r.step.to_string()),
                    ("time_fs".to_string(), format!("{}", r.time)),
                    ("replica".to_string(), s.to_string()),
                    ("energy_total".to_string(), format!("{}", r.total_energy(s))),
                    ("energy_potential".to_string(), format!("{}", r.potential[s])),
                ];
                extxyz::write_frame(&mut text, &structure, &info, None);
            }
            traj.write_all(text.as_bytes())
                .map_err(|source| mlff::Error::Io { path: args.traj.clone().unwrap_or_default(), source })?;
        }
        Ok(())
    };
    let summary = md.run(args.steps, args.every, &mut on_report)?;
    for (w, path) in [(log.as_mut(), &args.log), (traj.as_mut(), &args.traj)] {
        if let Some(w) = w {
            w.flush().map_err(|source| mlff::Error::Io { path: path.clone().unwrap_or_default(), source })?;
        }
    }
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
    Ok(())
}

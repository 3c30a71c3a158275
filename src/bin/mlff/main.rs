//! `mlff`: evaluate, run MD, relax and benchmark student force fields from the
//! command line. MODEL is a safetensors file, or `default` for the bundled model.

mod bench;
mod md;
mod output;
mod progress;
mod signals;

use clap::{Parser, Subcommand};
use mlff::extxyz::{self, Frame};
use mlff::{Device, Model, Prediction, Structure};
use output::{AtomicFile, Progress};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "mlff", version, about = "Fast inference for distilled ML force fields (GPU kernels in Rust)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct DeviceChoice {
    /// auto (GPU 0 if present, else the CPU), cpu, gpu, gpu:N, or several GPUs sharing
    /// the work: gpu:all, gpu:0,1 (structures and replicas split by atom count)
    #[arg(long, default_value = "auto")]
    device: String,
}

impl DeviceChoice {
    pub fn open(&self) -> mlff::Result<Device> {
        if self.is_auto() {
            Device::auto()
        } else {
            Device::parse(&self.device)
        }
    }

    /// Whether the device was left to `auto` (then `MLFF_DEVICE` may name one).
    pub fn is_auto(&self) -> bool {
        self.device.trim().eq_ignore_ascii_case("auto")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Energies, forces (and stress of periodic frames) of every frame of an extended-XYZ file.
    Eval {
        /// Model file, or `default`
        model: String,
        input: PathBuf,
        /// Output file (extended XYZ); standard output if not given
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Frames are evaluated in batches of at most this many atoms per device
        #[arg(long, default_value_t = 200_000)]
        batch_atoms: usize,
        #[command(flatten)]
        device: DeviceChoice,
    },
    /// Molecular dynamics (NVE, Langevin, Nosé–Hoover chain; NPT) of every frame, with replicas, in one batch.
    Md(Box<md::MdArgs>),
    /// FIRE geometry optimisation of every frame (and the cell with --cell).
    Relax {
        model: String,
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Force criterion, eV/Å
        #[arg(long, default_value_t = 0.05)]
        fmax: f64,
        #[arg(long, default_value_t = 500)]
        steps: usize,
        /// Relax the cell of periodic frames too (zero pressure)
        #[arg(long)]
        cell: bool,
        #[command(flatten)]
        device: DeviceChoice,
    },
    /// A table of energy + forces timings on the bundled model (CPU, and GPU if present).
    Bench(bench::BenchArgs),
    /// Architecture, configuration, parameter count and elements of a model.
    Info { model: String },
}

pub fn load_model(name: &str) -> mlff::Result<Model> {
    if name == "default" {
        mlff::default_model()
    } else {
        Model::load(name)
    }
}

/// How a command ended, beyond success and error: each has its exit code.
pub enum Outcome {
    Done,
    /// `relax`: the output is written, but these frames did not converge.
    NotConverged(usize),
    /// `md`: stopped by this signal at a report; the outputs hold every report so far.
    Interrupted(i32),
}

/// Exit codes (README): 0 done, 1 error, 2 bad arguments (clap's), 3 `relax` wrote its
/// output but some frames did not converge, 128 + N stopped by signal N.
const EXIT_NOT_CONVERGED: u8 = 3;

/// Reads frames and warns about atoms closer than 0.1 Å (legal, but rarely meant).
pub fn read_frames(path: &std::path::Path) -> mlff::Result<Vec<Frame>> {
    let frames = extxyz::read(path)?;
    if frames.is_empty() {
        return Err(mlff::Error::InvalidInput(format!("{}: no frames", path.display())));
    }
    for (k, f) in frames.iter().enumerate() {
        match closest_contact(&f.structure, 0.1) {
            Some((i, j, d)) if i == j => eprintln!(
                "warning: {} frame {k}: atom {i} and its own periodic image are {} Å apart",
                path.display(),
                distance(d)
            ),
            Some((i, j, d)) => {
                eprintln!("warning: {} frame {k}: atoms {i} and {j} are {} Å apart", path.display(), distance(d))
            }
            None => {}
        }
    }
    Ok(frames)
}

/// The same error, an invalid-input message prefixed with the input file's name.
pub fn in_file(path: &std::path::Path) -> impl FnOnce(mlff::Error) -> mlff::Error + '_ {
    move |e| e.in_context(path.display())
}

/// "0.050", or "1.0e-4" where three decimals would say 0.000.
fn distance(d: f32) -> String {
    if d >= 0.01 {
        format!("{d:.3}")
    } else {
        format!("{d:.1e}")
    }
}

fn closest_contact(s: &Structure, within: f32) -> Option<(usize, usize, f32)> {
    let batch = mlff::Batch::new(std::slice::from_ref(s)).ok()?;
    let list = mlff::neighbor_list(&batch, within).ok()?;
    (0..s.len())
        .flat_map(|i| list.row(i).map(move |e| (i, e)))
        .map(|(i, e)| (i, list.src[e] as usize, list.geom[e][3]))
        .min_by(|a, b| a.2.total_cmp(&b.2))
}

fn eval(
    model: &str,
    input: &std::path::Path,
    output: Option<PathBuf>,
    batch_atoms: usize,
    device: &DeviceChoice,
) -> mlff::Result<()> {
    let model = load_model(model)?;
    let device = device.open()?;
    let started = Instant::now();
    let frames = read_frames(input)?;
    let out = AtomicFile::create(output.as_deref())?;
    // Each device of a set gets a batch of the size one device would.
    let batch_atoms = batch_atoms.max(1).saturating_mul(device.members().len());
    let mut batches = Vec::new();
    let mut start = 0;
    while start < frames.len() {
        let mut end = start;
        let mut atoms = 0;
        while end < frames.len() && (end == start || atoms + frames[end].structure.len() <= batch_atoms) {
            atoms += frames[end].structure.len();
            end += 1;
        }
        batches.push(start..end);
        start = end;
    }
    // The text of one batch is made and written on another thread, by the CPU's
    // threads, while the device works on the next: the output keeps up with several
    // GPUs instead of leaving them waiting.
    let text_threads = mlff::device::cpu_from_env()?;
    let mut in_model = Duration::ZERO;
    let out = std::thread::scope(|scope| -> mlff::Result<AtomicFile> {
        let (to_writer, evaluated) = std::sync::mpsc::sync_channel::<(Range<usize>, Vec<Prediction>)>(1);
        let frames = &frames;
        let writer = scope.spawn(move || -> mlff::Result<AtomicFile> {
            let mut out = out;
            let mut progress = Progress::new("eval", frames.len());
            for (range, predictions) in evaluated {
                let text = text_threads.install(|| frames_text(&frames[range.clone()], &predictions));
                out.write(text.as_bytes())?;
                progress.advance(range.len());
            }
            progress.finish();
            Ok(out)
        });
        for range in batches {
            let structures: Vec<Structure> = frames[range.clone()].iter().map(|f| f.structure.clone()).collect();
            let clock = Instant::now();
            let predictions = model
                .evaluate(&device, &structures)
                .map_err(|e| e.in_context(format!("{}: frames {}..{}", input.display(), range.start, range.end)))?;
            in_model += clock.elapsed();
            if to_writer.send((range, predictions)).is_err() {
                // The writer failed: its error follows.
                break;
            }
        }
        drop(to_writer);
        writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    out.commit()?;
    let atoms: usize = frames.iter().map(|f| f.structure.len()).sum();
    eprintln!(
        "eval: {} frames ({atoms} atoms) read, evaluated and written in {:.3} s, {:.3} s of it in the model on {}",
        frames.len(),
        started.elapsed().as_secs_f64(),
        in_model.as_secs_f64(),
        device.describe()
    );
    Ok(())
}

/// The extended-XYZ text of `frames` with their predictions, made in pieces on the
/// threads of the current rayon pool and joined in order.
fn frames_text(frames: &[Frame], predictions: &[Prediction]) -> String {
    use rayon::prelude::*;
    const PIECE: usize = 256;
    let pieces: Vec<String> = frames
        .par_chunks(PIECE)
        .zip(predictions.par_chunks(PIECE))
        .map(|(frames, predictions)| {
            let mut text = String::new();
            for (f, p) in frames.iter().zip(predictions) {
                extxyz::write_frame(&mut text, &f.structure, &f.info, Some(p));
            }
            text
        })
        .collect();
    pieces.concat()
}

fn relax(
    model: &str,
    input: &std::path::Path,
    output: &std::path::Path,
    settings: mlff::relax::FireSettings,
    device: &DeviceChoice,
) -> mlff::Result<Outcome> {
    let model = load_model(model)?;
    let device = device.open()?;
    let frames = read_frames(input)?;
    if settings.relax_cell {
        if let Some(k) = frames.iter().position(|f| !f.structure.is_periodic()) {
            return Err(mlff::Error::InvalidInput(format!(
                "{}: frame {k} is not periodic, so it has no cell to relax: --cell needs periodic frames",
                input.display()
            )));
        }
    }
    let structures: Vec<Structure> = frames.iter().map(|f| f.structure.clone()).collect();
    let mut out = AtomicFile::create(Some(output))?;
    let mut progress = progress::Progress::new("relax", "steps", 0, settings.max_steps as u64);
    let relaxed = mlff::relax::relax(&model, &device, &structures, settings, |step, active| {
        progress.set(step as u64, &format!("{active} of {} frames still moving", structures.len()));
    })
    .map_err(in_file(input))?;
    progress.finish();
    let mut text = String::new();
    println!("{:>6} {:>8} {:>10} {:>18} {:>12}", "frame", "atoms", "steps", "energy (eV)", "fmax (eV/Å)");
    for (k, (f, r)) in frames.iter().zip(&relaxed).enumerate() {
        let mut info = f.info.clone();
        info.push(("relax_converged".into(), if r.converged { "T" } else { "F" }.into()));
        extxyz::write_frame(&mut text, &r.structure, &info, Some(&r.prediction));
        println!(
            "{k:>6} {:>8} {:>10} {:>18.6} {:>12.4}{}",
            r.structure.len(),
            r.steps,
            r.prediction.energy,
            r.fmax,
            if r.converged { "" } else { "  (not converged)" }
        );
    }
    out.write(text.as_bytes())?;
    out.commit()?;
    let unconverged = relaxed.iter().filter(|r| !r.converged).count();
    if unconverged > 0 {
        eprintln!(
            "relax: {unconverged} of {} frames did not converge to fmax {} eV/Å within {} steps \
             ({} has them, marked relax_converged=F); exit code {EXIT_NOT_CONVERGED}",
            relaxed.len(),
            settings.fmax,
            settings.max_steps,
            output.display()
        );
        return Ok(Outcome::NotConverged(unconverged));
    }
    Ok(Outcome::Done)
}

fn info(model: &str) -> mlff::Result<()> {
    let m = load_model(model)?;
    println!("architecture   {}", m.architecture());
    println!("hidden_dim     {}", m.hidden_dim());
    println!("interactions   {}", m.num_interactions());
    println!("cutoff         {} Å", m.cutoff());
    println!("parameters     {}", m.parameter_count());
    if let Some(config) = m.metadata().get("config") {
        println!("config         {config}");
    }
    let mut keys: Vec<_> =
        m.metadata().iter().filter(|(k, _)| !matches!(k.as_str(), "architecture" | "config")).collect();
    keys.sort();
    for (k, v) in keys {
        println!("{k:<14} {v}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = signals::install() {
        eprintln!("warning: cannot watch for Ctrl-C ({e}): an interrupted run may leave a .mlff-*.partial file");
    }
    let done = |r: mlff::Result<()>| r.map(|()| Outcome::Done);
    let result = match cli.command {
        Command::Eval { model, input, output, batch_atoms, device } => {
            done(eval(&model, &input, output, batch_atoms, &device))
        }
        Command::Md(args) => md::run(&args),
        Command::Relax { model, input, output, fmax, steps, cell, device } => {
            let settings = mlff::relax::FireSettings { fmax, max_steps: steps, relax_cell: cell, ..Default::default() };
            relax(&model, &input, &output, settings, &device)
        }
        Command::Bench(args) => done(bench::run(&args)),
        Command::Info { model } => done(info(&model)),
    };
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::NotConverged(_)) => ExitCode::from(EXIT_NOT_CONVERGED),
        Ok(Outcome::Interrupted(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

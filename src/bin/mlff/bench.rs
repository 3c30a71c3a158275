//! `mlff bench`: energy + forces timings of a few sizes on the bundled model (or
//! another), on the CPU path and, where there is one, the GPU; with a device set
//! (`--device gpu:all`) also on the set, beside its first device. Medians of repeated
//! calls after one warm-up call.

use crate::{load_model, DeviceChoice};
use mlff::{Device, Model, Structure};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model file, or `default`
    #[arg(long, default_value = "default")]
    model: String,
    /// Seconds to spend on each case and device (at least 3 calls)
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Leave out the GPU (or the CPU)
    #[arg(long)]
    no_gpu: bool,
    #[arg(long)]
    no_cpu: bool,
    #[command(flatten)]
    device: DeviceChoice,
}

/// The 24-atom benzene dimer of `data/molecules.xyz`.
fn dimer() -> mlff::Result<Structure> {
    let frames = mlff::extxyz::parse(mlff::SAMPLE_MOLECULES, "data/molecules.xyz")?;
    frames
        .into_iter()
        .map(|f| f.structure)
        .find(|s| s.len() == 24)
        .ok_or_else(|| mlff::Error::InvalidInput("no 24-atom molecule in the samples".into()))
}

/// The 64-water box repeated `k` times along each axis.
fn water_box(k: usize) -> mlff::Result<Structure> {
    let base = mlff::extxyz::parse(mlff::SAMPLE_WATER_BOX, "data/water-box.xyz")?.remove(0).structure;
    let cell = base.cell.ok_or_else(|| mlff::Error::InvalidInput("the water box has no cell".into()))?;
    let mut out = Structure::periodic(Vec::new(), Vec::new(), cell.map(|r| r.map(|x| x * k as f64)), [true; 3]);
    for (a, b, c) in (0..k).flat_map(|a| (0..k).flat_map(move |b| (0..k).map(move |c| (a, b, c)))) {
        let shift: [f64; 3] =
            std::array::from_fn(|x| a as f64 * cell[0][x] + b as f64 * cell[1][x] + c as f64 * cell[2][x]);
        out.numbers.extend(&base.numbers);
        out.positions.extend(base.positions.iter().map(|p| std::array::from_fn(|x| p[x] + shift[x])));
    }
    Ok(out)
}

/// Median seconds per call.
fn time(model: &Model, device: &Device, structures: &[Structure], budget: Duration) -> mlff::Result<f64> {
    model.evaluate(device, structures)?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || (start.elapsed() < budget && samples.len() < 200) {
        let t = Instant::now();
        model.evaluate(device, structures)?;
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn show(seconds: Option<f64>, structures: usize) -> String {
    match seconds {
        None => "—".to_string(),
        Some(t) if structures > 1 => format!("{:.3} ms ({:.1} µs/structure)", t * 1e3, t * 1e6 / structures as f64),
        Some(t) => format!("{:.3} ms", t * 1e3),
    }
}

/// Longest `--seconds`: an hour per case and device is already a long benchmark.
const MAX_SECONDS: f64 = 3600.0;

pub fn run(args: &BenchArgs) -> mlff::Result<()> {
    if !(args.seconds >= 0.0 && args.seconds <= MAX_SECONDS) {
        return Err(mlff::Error::InvalidInput(format!(
            "--seconds {}: expected a number of seconds from 0 to {MAX_SECONDS}",
            args.seconds
        )));
    }
    if args.no_cpu && args.no_gpu {
        return Err(mlff::Error::InvalidInput("--no-cpu and --no-gpu leave nothing to benchmark".into()));
    }
    let model = load_model(&args.model)?;
    let columns = columns(args)?;
    if columns.is_empty() {
        return Err(mlff::Error::InvalidInput("--no-cpu given and there is no GPU: nothing to benchmark".into()));
    }
    let budget = Duration::from_secs_f64(args.seconds);
    let dimer = dimer()?;
    // (name, structures, whether the CPU runs it: the large cases take it too long).
    let cases: Vec<(&str, Vec<Structure>, bool)> = vec![
        ("benzene dimer", vec![dimer.clone()], true),
        ("256 × benzene dimer", vec![dimer.clone(); 256], true),
        ("4096 × benzene dimer", vec![dimer; 4096], false),
        ("water box 2×2×2 (periodic)", vec![water_box(2)?], true),
        ("water box 4×4×4 (periodic)", vec![water_box(4)?], false),
    ];
    println!(
        "model: {} (H={}, T={}), energy + forces, median per call",
        args.model,
        model.hidden_dim(),
        model.num_interactions()
    );
    for (label, device) in &columns {
        let described = device.describe();
        if described.starts_with(label.as_str()) {
            println!("{described}");
        } else {
            println!("{label}: {described}");
        }
    }
    print!("{:<30} {:>8}", "case", "atoms");
    for (label, _) in &columns {
        print!(" {label:>28}");
    }
    println!();
    for (name, structures, on_cpu) in &cases {
        let atoms: usize = structures.iter().map(|s| s.len()).sum();
        print!("{name:<30} {atoms:>8}");
        for (_, device) in &columns {
            let seconds =
                if device.is_gpu() || *on_cpu { Some(time(&model, device, structures, budget)?) } else { None };
            print!(" {:>28}", show(seconds, structures.len()));
        }
        println!();
    }
    Ok(())
}

/// The devices to time, with their column titles: the CPU (unless `--no-cpu`), and
/// GPU 0 or the GPU `--device` names (unless `--no-gpu`); for a device set, its first
/// device and the whole set, so that the table shows what the others add.
fn columns(args: &BenchArgs) -> mlff::Result<Vec<(String, Device)>> {
    let chosen = chosen_device(args)?;
    let mut columns = Vec::new();
    if !args.no_cpu && chosen.as_ref().is_none_or(|d| d.is_gpu()) {
        columns.push(("CPU".to_string(), Device::cpu()?));
    }
    match chosen {
        None => {}
        Some(d) if d.is_gpu() && args.no_gpu => {}
        Some(d) if !d.is_gpu() && args.no_cpu => {}
        Some(Device::Set(set)) => {
            let first = set.members()[0].clone();
            columns.push((title(&first), first));
            let kind = if set.members()[0].is_gpu() { "GPUs" } else { "CPU devices" };
            columns.push((format!("{} {kind}", set.members().len()), Device::Set(set)));
        }
        Some(d) => columns.push((title(&d), d)),
    }
    Ok(columns)
}

/// The device `--device` names; for `auto`, what `MLFF_DEVICE` names, or else GPU 0
/// (the CPU has a column of its own) unless `--no-gpu` or there is none.
fn chosen_device(args: &BenchArgs) -> mlff::Result<Option<Device>> {
    if !args.device.is_auto() {
        return args.device.open().map(Some);
    }
    if std::env::var(mlff::device::DEVICE_ENV).is_ok_and(|d| !d.trim().is_empty()) {
        return Device::auto().map(Some);
    }
    if args.no_gpu {
        return Ok(None);
    }
    match Device::gpu(0) {
        Ok(d) => Ok(Some(d)),
        Err(e) => {
            eprintln!("bench: no GPU ({e}); CPU only");
            Ok(None)
        }
    }
}

/// `GPU 1`, or `CPU`.
fn title(device: &Device) -> String {
    match device {
        Device::Gpu(g) => format!("GPU {}", g.ordinal()),
        _ => "CPU".to_string(),
    }
}

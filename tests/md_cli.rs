//! `mlff md` end to end for issue 24: ensembles from the command line, checkpoints
//! (every k steps, at the end and on Ctrl-C) and `--restart` continuing a run to the
//! same bits, trajectories with momenta and the cell (read back by our reader, by ASE
//! where it is installed, and XTC by `molly`), wrapping, replica subsets, progress lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlff"));
    c.args(args).env("MLFF_DEVICE", "cpu").env_remove("MLFF_MEMORY_LIMIT");
    c
}

fn mlff(args: &[&str]) -> Output {
    command(args).output().expect("run mlff")
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name).display().to_string()
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlff-md-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn assert_ok(run: &Output) {
    assert!(run.status.success(), "{}", text(run));
}

fn assert_failed_with(run: &Output, want: &str) {
    let said = text(run);
    assert!(!run.status.success(), "accepted: {said}");
    assert!(said.contains(want), "expected {want:?} in: {said}");
    assert!(!said.contains("panicked"), "{said}");
}

/// The frames of an extended-XYZ file, as text.
fn frames(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < lines.len() {
        let n: usize = lines[k].trim().parse().unwrap();
        out.push(lines[k..k + n + 2].join("\n"));
        k += n + 2;
    }
    out
}

/// The value of `key=` in a frame's comment line.
fn key(frame: &str, key: &str) -> String {
    let comment = frame.lines().nth(1).unwrap();
    let start = comment.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key} in {comment}")) + key.len() + 2;
    comment[start..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_restarted_run_ends_where_the_uninterrupted_one_does() {
    let dir = scratch("restart");
    let (whole, first, second) = (dir.join("whole.xyz"), dir.join("first.xyz"), dir.join("second.xyz"));
    let checkpoint = dir.join("run.ckpt");
    let md = |extra: &[&str]| {
        let mut args = vec!["md", "default", "--every", "10"];
        args.extend_from_slice(extra);
        mlff(&args)
    };
    let molecules = data("molecules.xyz");
    let ensemble = ["--thermostat", "nhc", "--temperature", "350", "--tdamp", "20", "--seed", "4"];
    let mut args = vec![molecules.as_str(), "--steps", "40", "--traj", s(&whole)];
    args.extend_from_slice(&ensemble);
    assert_ok(&md(&args));
    let mut args = vec![molecules.as_str(), "--steps", "20", "--traj", s(&first), "--checkpoint", s(&checkpoint)];
    args.extend_from_slice(&ensemble);
    assert_ok(&md(&args));
    // The settings come from the checkpoint; changing them is refused.
    assert_failed_with(&md(&["--restart", s(&checkpoint), "--dt", "1"]), "--dt with --restart");
    assert_failed_with(&md(&[&molecules, "--restart", s(&checkpoint)]), "leave the input out");
    assert_failed_with(&md(&["--restart", s(&checkpoint), "--steps", "10"]), "at step 20 already");
    let run = md(&["--restart", s(&checkpoint), "--steps", "40", "--traj", s(&second)]);
    assert_ok(&run);
    assert!(text(&run).contains("from step 20 to step 40"), "{}", text(&run));
    let (whole, second) = (frames(&whole), frames(&second));
    assert_eq!(whole.len(), 4 * 5);
    assert_eq!(second.len(), 2 * 5);
    // Every frame of the continuation, to the last digit written, is the uninterrupted run's.
    assert_eq!(&whole[10..], &second[..], "the restarted run differs");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ctrl_c_writes_a_checkpoint_that_continues_the_run() {
    let dir = scratch("signal");
    let (log, checkpoint, traj) = (dir.join("md.log"), dir.join("run.ckpt"), dir.join("rest.xyz"));
    let molecules = data("molecules.xyz");
    let args = ["md", "default", &molecules, "--steps", "100000000", "--every", "2", "--thermostat", "langevin"];
    let mut child = command(&args)
        .args(["--log", s(&log), "--checkpoint", s(&checkpoint), "--checkpoint-every", "1000"])
        .env("MLFF_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 4 {
        assert!(child.try_wait().unwrap().is_none(), "md ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "no reports");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(130), "{}", text(&run));
    assert!(text(&run).contains("continues from there"), "{}", text(&run));
    let last: u64 = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ck = mlff::dynamics::Checkpoint::read(&checkpoint).unwrap();
    assert_eq!(ck.step, last, "the checkpoint is the last report's state");
    assert_eq!(ck.metadata.get("steps").map(String::as_str), Some("100000000"));
    // It continues (two more reports).
    let until = (last + 4).to_string();
    let run =
        mlff(&["md", "default", "--restart", s(&checkpoint), "--steps", &until, "--every", "2", "--traj", s(&traj)]);
    assert_ok(&run);
    let steps: Vec<String> = frames(&traj).iter().map(|f| key(f, "step")).collect();
    assert_eq!(steps, [vec![(last + 2).to_string(); 5], vec![(last + 4).to_string(); 5]].concat());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn trajectories_carry_momenta_cells_and_chosen_replicas() {
    let dir = scratch("traj");
    let (traj, log) = (dir.join("t.xyz"), dir.join("t.log"));
    let molecules = data("molecules.xyz");
    let run = mlff(&[
        "md",
        "default",
        &molecules,
        "--steps",
        "6",
        "--every",
        "3",
        "--replicas",
        "3",
        "--traj-replicas",
        "1-2",
        "--traj",
        s(&traj),
        "--log",
        s(&log),
        "--log-structures",
        "--thermostat",
        "langevin",
    ]);
    assert_ok(&run);
    let all = frames(&traj);
    assert_eq!(all.len(), 2 * 5 * 2, "2 reports × 5 frames × replicas 1 and 2");
    assert!(all.iter().all(|f| ["1", "2"].contains(&key(f, "replica").as_str())));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().filter(|l| !l.starts_with('#')).count(), 2 * 15);
    // Momenta (ASE's units) give back the kinetic energy the frame states.
    let back = mlff::extxyz::read(&traj).unwrap();
    assert_eq!(back.len(), all.len());
    for frame in &all {
        let kinetic: f64 = key(frame, "kinetic_energy").parse().unwrap();
        let mut sum = 0.0;
        for line in frame.lines().skip(2) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let z = (1..=118).find(|&z| mlff::elements::symbol(z) == Some(f[0])).unwrap();
            let m = mlff::elements::mass(z).unwrap() as f32 as f64;
            let p: Vec<f64> = f[4..7].iter().map(|x| x.parse().unwrap()).collect();
            // p = m v / ase.units.fs; K = Σ m v² / 2 in eV with v in Å/fs.
            let v2: f64 = p.iter().map(|p| (p * mlff::dynamics::trajectory::ASE_FS / m).powi(2)).sum();
            sum += 0.5 * m * v2 / mlff::kernels::md::ACCELERATION_UNIT as f64;
        }
        assert!((sum - kinetic).abs() < 1e-5 * kinetic.max(1e-3), "K from momenta {sum} vs {kinetic}");
    }
    ase_reads(&traj, &all);
    // Bad selections.
    let bad =
        |list: &str| mlff(&["md", "default", &molecules, "--steps", "2", "--replicas", "2", "--traj-replicas", list]);
    assert_failed_with(&bad("2"), "below 2");
    assert_failed_with(&bad("x"), "--traj-replicas x");
    let _ = std::fs::remove_dir_all(dir);
}

/// ASE reads the momenta, forces, energy and cell of our frames (skips loudly without ASE).
fn ase_reads(traj: &Path, frames: &[String]) {
    let script = format!(
        "import sys\ntry:\n    import ase.io\nexcept ImportError:\n    print('NO-ASE'); sys.exit(0)\n\
         for a in ase.io.read('{}', index=':'):\n    print(a.get_kinetic_energy(), a.get_potential_energy(), \
         abs(a.get_forces()).max(), a.cell.volume)\n",
        traj.display()
    );
    let out = match Command::new("python3").args(["-c", &script]).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("trajectories_carry_momenta_cells_and_chosen_replicas: ASE check skipped: no python3 ({e})");
            return;
        }
    };
    let said = String::from_utf8_lossy(&out.stdout);
    if said.contains("NO-ASE") {
        eprintln!("trajectories_carry_momenta_cells_and_chosen_replicas: ASE check skipped: ase is not installed");
        return;
    }
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<f64>> =
        said.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(rows.len(), frames.len());
    for (row, frame) in rows.iter().zip(frames) {
        let kinetic: f64 = key(frame, "kinetic_energy").parse().unwrap();
        let energy: f64 = key(frame, "energy").parse().unwrap();
        // ASE's masses are not ours to the last digit (IUPAC editions): 1e-3.
        assert!((row[0] - kinetic).abs() < 1e-3 * kinetic.max(1e-3), "ASE kinetic {} vs {kinetic}", row[0]);
        assert_eq!(row[1], energy);
        assert!(row[2] > 0.0, "ASE read no forces");
    }
}

#[test]
fn npt_from_the_command_line_wraps_and_writes_xtc() {
    let dir = scratch("npt");
    let (traj, xtc, log) = (dir.join("w.xyz"), dir.join("w.xtc"), dir.join("w.log"));
    let water = data("water-box.xyz");
    let run = mlff(&[
        "md",
        "default",
        &water,
        "--steps",
        "4",
        "--every",
        "2",
        "--thermostat",
        "nhc",
        "--barostat",
        "aniso",
        "--pressure",
        "1000",
        "--tau-p",
        "500",
        "--wrap",
        "--traj",
        s(&traj),
        "--log",
        s(&log),
    ]);
    assert_ok(&run);
    assert!(text(&run).contains("md: 4/4 steps"), "a plain progress line: {}", text(&run));
    let back = mlff::extxyz::read(&traj).unwrap();
    assert_eq!(back.len(), 2);
    let first_cell = back[0].structure.cell.unwrap();
    for f in &back {
        let cell = f.structure.cell.unwrap();
        assert!((0..3).all(|a| (0..3).all(|b| a == b || cell[a][b] == 0.0)), "no shear");
        for p in &f.structure.positions {
            for a in 0..3 {
                assert!(p[a] >= -1e-9 && p[a] < cell[a][a] + 1e-9, "{p:?} outside {cell:?}");
            }
        }
    }
    assert_ne!(back[1].structure.cell.unwrap(), first_cell, "the barostat moved the cell");
    let header = std::fs::read_to_string(&log).unwrap();
    assert!(header.starts_with('#') && header.lines().next().unwrap().contains("P (bar)"), "{header}");
    // The same run as XTC: the positions and box to XTC's 1e-3 nm.
    let run = mlff(&[
        "md",
        "default",
        &water,
        "--steps",
        "4",
        "--every",
        "2",
        "--thermostat",
        "nhc",
        "--barostat",
        "aniso",
        "--pressure",
        "1000",
        "--tau-p",
        "500",
        "--wrap",
        "--traj",
        s(&xtc),
    ]);
    assert_ok(&run);
    let mut reader = molly::XTCReader::open(&xtc).unwrap();
    let read = reader.read_all_frames().unwrap();
    assert_eq!(read.len(), 2);
    for (frame, extxyz) in read.iter().zip(&back) {
        assert_eq!(frame.natoms(), 192);
        let cell = extxyz.structure.cell.unwrap();
        let boxvec = frame.boxvec_cols_2d();
        for a in 0..3 {
            assert!((boxvec[a][a] as f64 * 10.0 - cell[a][a]).abs() < 1e-4, "box {boxvec:?} vs {cell:?}");
        }
        for (p, q) in frame.coords().zip(&extxyz.structure.positions) {
            for a in 0..3 {
                assert!((p[a] as f64 * 10.0 - q[a]).abs() < 0.01, "{p:?} nm vs {q:?} Å");
            }
        }
    }
    // Several structures: one XTC file each.
    let run = mlff(&["md", "default", &data("molecules.xyz"), "--steps", "2", "--every", "2", "--traj", s(&xtc)]);
    assert_ok(&run);
    for k in 0..5 {
        let path = dir.join(format!("w-s{k}.xtc"));
        assert_eq!(molly::XTCReader::open(&path).unwrap().read_all_frames().unwrap().len(), 1, "{}", path.display());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ensemble_options_are_checked_before_anything_runs() {
    let molecules = data("molecules.xyz");
    let md = |extra: &[&str]| {
        let mut args = vec!["md", "default", molecules.as_str(), "--steps", "2"];
        args.extend_from_slice(extra);
        mlff(&args)
    };
    assert_failed_with(&md(&["--barostat", "iso"]), "needs --thermostat langevin or nhc");
    assert_failed_with(&md(&["--thermostat", "nhc", "--barostat", "iso"]), "not periodic along all three axes");
    assert_failed_with(&md(&["--thermostat", "nhc", "--barostat", "tri"]), "iso or aniso");
    assert_failed_with(&md(&["--pressure", "10"]), "go with --barostat");
    assert_failed_with(&md(&["--thermostat", "nhc", "--friction", "0.1"]), "--friction has no effect");
    assert_failed_with(&md(&["--thermostat", "langevin", "--tdamp", "10"]), "goes with nhc");
    assert_failed_with(&md(&["--thermostat", "nhc", "--tchain", "20"]), "1 to 8");
    assert_failed_with(&md(&["--checkpoint-every", "10"]), "needs --checkpoint");
    assert_failed_with(&md(&["--checkpoint", "/tmp/x.ckpt", "--checkpoint-every", "150"]), "multiple of --every");
    assert_failed_with(&mlff(&["md", "default", "--restart", "/nonexistent/ckpt"]), "cannot read /nonexistent/ckpt");
    assert_failed_with(&mlff(&["md", "default", "--restart", &molecules]), "not an mlff MD checkpoint");
}

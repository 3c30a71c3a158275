//! The `mlff` tool's files and exit codes under careless or hostile use (issue 17):
//! outputs written through links and into devices, modes kept, nothing lost when a
//! run fails or is interrupted, clear messages, no panic.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mlff(args: &[&str]) -> Output {
    command(args).output().expect("run mlff")
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlff"));
    c.args(args).env("MLFF_DEVICE", "cpu").env_remove("MLFF_NUM_THREADS").env_remove("MLFF_MEMORY_LIMIT");
    c
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name).display().to_string()
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlff-files-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Temporary files left in `dir`.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial"))
        .collect()
}

fn assert_failed_with(run: &Output, want: &str) {
    let said = text(run);
    assert!(!run.status.success(), "accepted: {said}");
    assert!(said.contains(want), "expected {want:?} in: {said}");
    assert!(!said.contains("panicked"), "{said}");
}

#[test]
fn outputs_go_through_links_and_into_devices_keeping_modes() {
    let dir = scratch("links");
    let molecules = data("molecules.xyz");
    // A symbolic link: the file it points to is replaced, the link stays a link.
    let target = dir.join("target.xyz");
    std::fs::write(&target, "old\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.join("link.xyz");
    std::os::unix::fs::symlink("target.xyz", &link).unwrap();
    let run = mlff(&["eval", "default", &molecules, "-o", s(&link)]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_eq!(mlff::extxyz::read(&target).unwrap().len(), 5);
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640, "mode not kept");
    // A new file gets what any new file gets here (0666 less the umask), not 0600.
    let reference = dir.join("reference");
    std::fs::write(&reference, "").unwrap();
    let fresh = dir.join("fresh.xyz");
    let run = mlff(&["eval", "default", &molecules, "-o", s(&fresh)]);
    assert!(run.status.success(), "{}", text(&run));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), mode(&reference));
    // A FIFO is written into, and stays a FIFO.
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let run = mlff(&["eval", "default", &molecules, "-o", s(&fifo)]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(mlff::extxyz::parse(&reader.join().unwrap(), "fifo").unwrap().len(), 5);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // /dev/null stays the device (as root, renaming over it used to make it a file).
    let run = mlff(&["eval", "default", &molecules, "-o", "/dev/null"]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    assert!(partials(&dir).is_empty(), "{:?}", partials(&dir));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn write_failures_say_cannot_write_and_why() {
    let dir = scratch("write");
    let molecules = data("molecules.xyz");
    let run = mlff(&["eval", "default", &molecules, "-o", s(&dir)]);
    assert_failed_with(&run, "cannot write");
    assert_failed_with(&run, "is a directory");
    let run = mlff(&["eval", "default", &molecules, "-o", s(&dir.join("no/such/dir/out.xyz"))]);
    assert_failed_with(&run, "cannot write");
    assert_failed_with(&run, "no such directory");
    if Path::new("/dev/full").exists() {
        let run = mlff(&["eval", "default", &molecules, "-o", "/dev/full"]);
        assert_failed_with(&run, "cannot write /dev/full: the disk is full");
    }
    // A reader that went away: standard output is a closed pipe.
    let mut child =
        command(&["eval", "default", &molecules]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let run = child.wait_with_output().unwrap();
    assert_failed_with(&run, "cannot write <stdout>: broken pipe");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn md_checks_everything_before_touching_an_output() {
    let dir = scratch("md-check");
    let input = dir.join("in.xyz");
    std::fs::copy(data("molecules.xyz"), &input).unwrap();
    let traj = dir.join("traj.xyz");
    let log = dir.join("md.log");
    let keep = "precious\n";
    std::fs::write(&traj, keep).unwrap();
    std::fs::write(&log, keep).unwrap();
    let md = |extra: &[&str]| {
        let mut args = vec!["md", "default", s(&input), "--steps", "4"];
        args.extend_from_slice(extra);
        mlff(&args)
    };
    assert_failed_with(&md(&["--every", "0", "--traj", s(&traj)]), "--every must be at least 1");
    assert_failed_with(&md(&["--traj", s(&input)]), "is the input file");
    let link = dir.join("link-to-input.xyz");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    assert_failed_with(&md(&["--log", s(&link)]), "is the input file");
    assert_failed_with(&md(&["--log", s(&traj), "--traj", s(&traj)]), "same file");
    assert_failed_with(&md(&["--friction", "0.1"]), "--friction 0.1 has no effect with --thermostat nve");
    assert_failed_with(&md(&["--replicas", "1000000000000"]), "one run holds at most");
    assert_failed_with(&md(&["--replicas", "18446744073709551615"]), "one run holds at most");
    assert_failed_with(&md(&["--thermostat", "langevin", "--temperature=-3", "--traj", s(&traj)]), "temperature");
    // A run that fails at its first report (its log on a full disk): the
    // trajectory it would have replaced is untouched.
    if Path::new("/dev/full").exists() {
        let run = md(&["--log", "/dev/full", "--traj", s(&traj)]);
        assert_failed_with(&run, "cannot write /dev/full: the disk is full");
    }
    for path in [&traj, &log] {
        assert_eq!(std::fs::read_to_string(path).unwrap(), keep, "{} was touched", path.display());
    }
    assert_eq!(std::fs::read_to_string(&input).unwrap(), std::fs::read_to_string(data("molecules.xyz")).unwrap());
    assert!(partials(&dir).is_empty(), "{:?}", partials(&dir));
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits until `dir` holds a temporary output (the run is under way), at most a minute.
fn wait_for_partial(dir: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while partials(dir).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        assert!(start.elapsed() < Duration::from_secs(60), "no temporary output appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &std::process::Child, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap().success());
}

#[test]
fn an_interrupted_relax_leaves_no_file_and_the_old_output_intact() {
    let dir = scratch("relax-signal");
    let out = dir.join("relaxed.xyz");
    std::fs::write(&out, "precious\n").unwrap();
    for name in ["INT", "TERM"] {
        // fmax 1e-9 is never reached: the run goes on until the signal.
        let mut child = command(&["relax", "default", &data("water-box.xyz"), "-o", s(&out), "--fmax", "1e-9"])
            .env("MLFF_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_partial(&dir, &mut child);
        signal(&child, name);
        let status = child.wait().unwrap();
        assert!(!status.success(), "{name}: {status:?}");
        assert!(partials(&dir).is_empty(), "{name} left {:?}", partials(&dir));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_interrupted_md_keeps_every_report() {
    let dir = scratch("md-signal");
    let (log, traj) = (dir.join("md.log"), dir.join("traj.xyz"));
    let mut child = command(&[
        "md",
        "default",
        &data("molecules.xyz"),
        "--steps",
        "100000000",
        "--every",
        "2",
        "--log",
        s(&log),
        "--traj",
        s(&traj),
    ])
    .env("MLFF_NUM_THREADS", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Until a few reports are in the log (published at the first report).
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 4 {
        assert!(child.try_wait().unwrap().is_none(), "md ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "no reports");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "INT");
    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(130), "{}", text(&run));
    assert!(text(&run).contains("stopped by SIGINT at step"), "{}", text(&run));
    let reports: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(reports.len() >= 3);
    assert_eq!(reports, (1..=reports.len() as u64).map(|k| 2 * k).collect::<Vec<_>>());
    // The trajectory holds whole frames: 5 molecules at every logged report.
    let frames = mlff::extxyz::read(&traj).unwrap();
    assert_eq!(frames.len(), 5 * reports.len());
    assert!(partials(&dir).is_empty(), "{:?}", partials(&dir));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hostile_arguments_and_inputs_are_clear_errors() {
    let dir = scratch("hostile");
    let write = |name: &str, content: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let molecules = data("molecules.xyz");
    assert_failed_with(&mlff(&["bench", "--seconds", "inf"]), "--seconds inf");
    assert_failed_with(&mlff(&["bench", "--seconds", "1e30"]), "expected a number of seconds");
    assert_failed_with(&mlff(&["bench", "--no-cpu", "--no-gpu"]), "nothing to benchmark");
    let run = command(&["eval", "default", &molecules]).env("MLFF_NUM_THREADS", "100000").output().unwrap();
    assert_failed_with(&run, "MLFF_NUM_THREADS");
    let big = write("big.xyz", "18446744073709551615\n\nH 0 0 0\n");
    assert_failed_with(&mlff(&["eval", "default", &big]), "promises 18446744073709551615 atoms");
    let tiny = write("tiny.xyz", "1\nLattice=\"0.01 0 0 0 0.01 0 0 0 0.01\" pbc=\"T T T\"\nH 0 0 0\n");
    let run = mlff(&["eval", "default", &tiny]);
    assert_failed_with(&run, "neighbours per atom");
    assert!(text(&run).contains("atom 0 and its own periodic image") && !text(&run).contains("atoms 0 and 0"));
    let thin = write("thin.xyz", "1\nLattice=\"10 0 0 10 1e-6 0 0 0 10\"\nH 0 0 0\n");
    assert_failed_with(&mlff(&["eval", "default", &thin]), "check the cell");
    assert_failed_with(&mlff(&["eval", "default", "/dev/zero"]), "not a text file");
    assert_failed_with(&mlff(&["eval", "/dev/zero", &molecules]), "not a safetensors file");
    assert_failed_with(&mlff(&["info", s(&dir)]), "cannot read");
    // relax: --cell on a molecule; errors name the file.
    let out = dir.join("out.xyz");
    assert_failed_with(&mlff(&["relax", "default", &molecules, "-o", s(&out), "--cell"]), "frame 0 is not periodic");
    let far = write("far.xyz", "2\n\nH 0 0 0\nH 1e300 0 0\n");
    assert_failed_with(&mlff(&["relax", "default", &far, "-o", s(&out)]), "far.xyz: structure 0");
    assert_failed_with(&mlff(&["md", "default", &far, "--steps", "2"]), "far.xyz");
    // A byte-order mark and gzip are read.
    let bom = write("bom.xyz", &format!("\u{feff}{}", mlff::SAMPLE_MOLECULES));
    let run = mlff(&["eval", "default", &bom, "-o", s(&out)]);
    assert!(run.status.success(), "{}", text(&run));
    let gz = dir.join("molecules.xyz.gz");
    assert!(Command::new("sh").arg("-c").arg(format!("gzip -c {molecules} > {}", s(&gz))).status().unwrap().success());
    let run = mlff(&["eval", "default", s(&gz), "-o", s(&out)]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(mlff::extxyz::read(&out).unwrap().len(), 5);
    assert!(!out.exists() || partials(&dir).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

//! The extended-XYZ reader and writer: property tests of the round trip, every file
//! we write read back by ASE itself (when ASE is importable), and the inputs that
//! used to be misread (wide numbers run together, a byte-order mark, an unbalanced
//! quote, gzip, an absurd atom count).

use mlff::extxyz::{parse, write_frame, Frame};
use mlff::{Prediction, Structure};
use proptest::prelude::*;
use std::io::Write;

/// Keys the writer owns (any case): generated `info` keys avoid them.
fn reserved(key: &str) -> bool {
    ["lattice", "properties", "pbc", "energy", "stress", "free_energy", "virial", "forces"]
        .contains(&key.to_ascii_lowercase().as_str())
}

fn coordinate() -> impl Strategy<Value = f64> {
    prop_oneof![-20.0..20.0f64, -2.0e6..2.0e6f64, Just(100001.20832), Just(-100000.697624), Just(0.0)]
}

fn structure() -> impl Strategy<Value = Structure> {
    let atoms = prop::collection::vec((1u32..=100, [coordinate(), coordinate(), coordinate()]), 0..6);
    // Diagonally dominant cells are never singular.
    let cell = prop::option::of(([1.0..60.0f64, 1.0..60.0, 1.0..60.0], prop::array::uniform6(-0.4..0.4f64)));
    (atoms, cell, prop::array::uniform3(any::<bool>())).prop_map(|(atoms, cell, pbc)| {
        let (numbers, positions) = atoms.into_iter().unzip();
        match cell {
            None => Structure::molecule(numbers, positions),
            Some((d, off)) => {
                let c = [
                    [d[0], off[0] * d[0], off[1] * d[0]],
                    [off[2] * d[1], d[1], off[3] * d[1]],
                    [off[4] * d[2], off[5] * d[2], d[2]],
                ];
                Structure::periodic(numbers, positions, c, pbc)
            }
        }
    })
}

fn info() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", "[ -~]{0,12}"), 0..4)
        .prop_map(|kv| kv.into_iter().filter(|(k, _)| !reserved(k)).collect())
}

fn results(s: &Structure) -> impl Strategy<Value = Option<Prediction>> {
    let n = s.len();
    let periodic = s.is_periodic();
    prop::option::of((
        -1e6..1e6f64,
        prop::collection::vec([-50.0..50.0f64, -50.0..50.0, -50.0..50.0], n),
        [[-1.0..1.0f64, -1.0..1.0, -1.0..1.0], [-1.0..1.0, -1.0..1.0, -1.0..1.0], [-1.0..1.0, -1.0..1.0, -1.0..1.0]],
    ))
    .prop_map(move |r| {
        r.map(|(energy, forces, stress)| Prediction {
            energy,
            atom_energies: vec![0.0; n],
            forces,
            stress: periodic.then_some(stress),
        })
    })
}

fn frame() -> impl Strategy<Value = (Structure, Vec<(String, String)>, Option<Prediction>)> {
    structure().prop_flat_map(|s| {
        let r = results(&s);
        (Just(s), info(), r)
    })
}

fn close(a: f64, b: f64) -> bool {
    // Positions and forces are written with 8 decimals.
    (a - b).abs() <= 1e-8 * a.abs().max(1.0)
}

fn assert_same(back: &Frame, s: &Structure, info: &[(String, String)], r: &Option<Prediction>) {
    assert_eq!(back.structure.numbers, s.numbers);
    assert_eq!(back.structure.cell, s.cell);
    assert_eq!(back.structure.pbc, s.pbc);
    for (p, q) in back.structure.positions.iter().zip(&s.positions) {
        assert!((0..3).all(|x| close(p[x], q[x])), "{p:?} vs {q:?}");
    }
    assert_eq!(back.info, info);
    match r {
        None => assert!(back.energy.is_none() && back.forces.is_none()),
        Some(r) => {
            assert_eq!(back.energy, Some(r.energy));
            for (f, g) in back.forces.as_ref().unwrap().iter().zip(&r.forces) {
                assert!((0..3).all(|x| close(f[x], g[x])), "{f:?} vs {g:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn written_frames_read_back((s, info, r) in frame(), (s2, info2, r2) in frame()) {
        let mut text = String::new();
        write_frame(&mut text, &s, &info, r.as_ref());
        write_frame(&mut text, &s2, &info2, r2.as_ref());
        let back = parse(&text, "round-trip.xyz").unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert_eq!(back.len(), 2);
        assert_same(&back[0], &s, &info, &r);
        assert_same(&back[1], &s2, &info2, &r2);
    }

    /// Whatever the bytes, the reader answers (frames or an error) and does not panic.
    #[test]
    fn the_reader_never_panics(text in "[0-9a-zA-Z =\"{}.\\-\n\u{feff}]{0,200}") {
        let _ = parse(&text, "fuzz.xyz");
    }

    /// Whatever is damaged in a model file, loading it answers and does not panic.
    #[test]
    fn the_model_loader_never_panics(cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                     truncate in any::<prop::sample::Index>(), shorten in any::<bool>()) {
        let mut bytes = mlff::DEFAULT_MODEL_BYTES.to_vec();
        // Mostly in the header, where the structure is.
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, value) in cuts {
            let k = at.index(header.min(bytes.len()));
            bytes[k] = value;
        }
        if shorten {
            bytes.truncate(truncate.index(bytes.len()));
        }
        let _ = mlff::Model::from_bytes(&bytes);
    }
}

#[test]
fn wide_numbers_stay_apart() {
    let s = Structure::molecule(vec![6, 1], vec![[100001.20832, -100000.697624, 1e7], [-1.5e9, 2.0, -3.0]]);
    let mut text = String::new();
    write_frame(&mut text, &s, &[], None);
    assert!(!text.contains("100001.20832000-100000.69762400"), "{text}");
    for line in text.lines().skip(2) {
        assert_eq!(line.split_whitespace().count(), 4, "{line:?}");
    }
    let back = parse(&text, "wide.xyz").unwrap();
    assert_eq!(back[0].structure.positions, s.positions);
}

#[test]
fn misread_inputs_are_read_or_refused() {
    // A UTF-8 byte-order mark before the count.
    let frames = parse("\u{feff}1\n\nH 0 0 0\n", "bom.xyz").unwrap();
    assert_eq!(frames[0].structure.numbers, vec![1]);
    // An unbalanced quote used to drop pbc silently (the frame read as a molecule).
    let e = parse("1\nLattice=\"3 0 0 0 3 0 0 0 3\" pbc=\"T T T\" name=\"open\nH 0 0 0\n", "q.xyz").unwrap_err();
    assert!(e.to_string().contains("q.xyz:2: unbalanced quotes"), "{e}");
    let e = parse("1\npbc=\"T T T\nH 0 0 0\n", "q.xyz").unwrap_err();
    assert!(e.to_string().contains("unbalanced"), "{e}");
    // Free text without `=` stays a plain XYZ comment.
    assert!(parse("1\nit's a \"molecule\n H 0 0 0\n", "plain.xyz").is_ok());
    // An atom count of usize::MAX: the file ends first, no overflow.
    let e = parse("18446744073709551615\n\nH 0 0 0\n", "big.xyz").unwrap_err();
    assert!(e.to_string().contains("promises 18446744073709551615 atoms; the file ends first"), "{e}");
}

#[test]
fn compressed_files_are_read_or_named() {
    let dir = std::env::temp_dir().join(format!("mlff-extxyz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gz = dir.join("molecules.xyz.gz");
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(mlff::SAMPLE_MOLECULES.as_bytes()).unwrap();
    std::fs::write(&gz, z.finish().unwrap()).unwrap();
    let frames = mlff::extxyz::read(&gz).unwrap();
    assert_eq!(frames, parse(mlff::SAMPLE_MOLECULES, "m").unwrap());
    let xz = dir.join("molecules.xyz.xz");
    std::fs::write(&xz, b"\xfd7zXZ\x00\x00\x04rest").unwrap();
    let e = mlff::extxyz::read(&xz).unwrap_err().to_string();
    assert!(e.contains("compressed with xz"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every kind of frame we write, as ASE reads it: symbols, positions, cell, pbc,
/// energy, forces, stress and the info keys.
#[test]
fn ase_reads_what_we_write() {
    let have_ase =
        std::process::Command::new("python3").args(["-c", "import ase"]).output().is_ok_and(|o| o.status.success());
    if !have_ase {
        let _ = writeln!(std::io::stderr(), "ase_reads_what_we_write: skipped: python3 cannot import ase");
        return;
    }
    let molecule = Structure::molecule(
        vec![8, 1, 1],
        vec![[100001.20832, -100000.697624, 0.0], [0.0, 0.76, -0.5], [-1e7, -0.76, -0.5]],
    );
    let crystal = Structure::periodic(
        vec![29, 29],
        vec![[0.0; 3], [1.8, 1.8, 0.0]],
        [[3.6, 0.0, 0.0], [0.1, 3.6, 0.0], [0.0, 0.0, 3.6]],
        [true, true, false],
    );
    let results = Prediction {
        energy: -7.25,
        atom_energies: vec![0.0; 2],
        forces: vec![[0.5, -0.25, 1e6], [-0.5, 0.25, -123456.789]],
        stress: Some([[0.01, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.0, 0.03]]),
    };
    let info = vec![
        ("name".to_string(), "two words".to_string()),
        ("quoted".to_string(), "say \"hi\"".to_string()),
        ("step".to_string(), "42".to_string()),
        ("relax_converged".to_string(), "F".to_string()),
        ("multi".to_string(), "line one\nline two".to_string()),
    ];
    let mut text = String::new();
    write_frame(&mut text, &molecule, &info, None);
    write_frame(&mut text, &crystal, &info, Some(&results));
    let dir = std::env::temp_dir().join(format!("mlff-ase-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ours.xyz");
    std::fs::write(&path, &text).unwrap();
    let script = r#"
import json, sys
import ase.io
out = []
for a in ase.io.read(sys.argv[1], index=":", format="extxyz"):
    calc = a.calc
    results = {} if calc is None else {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in calc.results.items()}
    out.append({"numbers": a.numbers.tolist(), "positions": a.positions.tolist(), "cell": a.cell.array.tolist(),
                "pbc": a.pbc.tolist(), "info": {k: str(v) for k, v in a.info.items()}, "results": results})
print(json.dumps(out))
"#;
    let run = std::process::Command::new("python3").args(["-c", script, path.to_str().unwrap()]).output().unwrap();
    assert!(run.status.success(), "ASE cannot read our file:\n{}\n{text}", String::from_utf8_lossy(&run.stderr));
    let frames: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(frames.as_array().unwrap().len(), 2);
    for (f, s) in frames.as_array().unwrap().iter().zip([&molecule, &crystal]) {
        let numbers: Vec<u32> = serde_json::from_value(f["numbers"].clone()).unwrap();
        assert_eq!(numbers, s.numbers);
        let positions: Vec<[f64; 3]> = serde_json::from_value(f["positions"].clone()).unwrap();
        for (p, q) in positions.iter().zip(&s.positions) {
            assert!((0..3).all(|x| close(p[x], q[x])), "ASE read {p:?}, we wrote {q:?}");
        }
        let pbc: [bool; 3] = serde_json::from_value(f["pbc"].clone()).unwrap();
        assert_eq!(pbc, s.pbc);
        let cell: [[f64; 3]; 3] = serde_json::from_value(f["cell"].clone()).unwrap();
        assert_eq!(cell, s.cell.unwrap_or([[0.0; 3]; 3]));
        assert_eq!(f["info"]["name"], "two words");
        assert_eq!(f["info"]["quoted"], "say \"hi\"");
        assert_eq!(f["info"]["step"], "42");
        assert_eq!(f["info"]["multi"], "line one line two");
    }
    let r = &frames[1]["results"];
    assert_eq!(r["energy"].as_f64(), Some(-7.25));
    let forces: Vec<[f64; 3]> = serde_json::from_value(r["forces"].clone()).unwrap();
    for (f, g) in forces.iter().zip(&results.forces) {
        assert!((0..3).all(|x| close(f[x], g[x])), "{f:?} vs {g:?}");
    }
    assert!(r.get("stress").is_some(), "ASE found no stress: {r}");
    let _ = std::fs::remove_dir_all(dir);
}

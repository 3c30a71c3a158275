//! Extended XYZ (ASE's dialect): many frames, each an atom count, a comment line of
//! `key=value` pairs (`Lattice`, `pbc`, `Properties`, anything else kept as text),
//! then one line per atom with the columns `Properties` names.

use crate::elements;
use crate::error::{Error, Result};
use crate::model::Prediction;
use crate::structure::Structure;
use std::fmt::Write as _;
use std::path::Path;

/// One frame: the structure, the comment line's other keys, and what it carried of
/// energies and forces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub structure: Structure,
    /// `key=value` pairs of the comment line other than `Lattice`, `pbc`,
    /// `Properties` and the results (`energy`, `stress`, …), in order; a bare key has
    /// the value `T`.
    pub info: Vec<(String, String)>,
    pub energy: Option<f64>,
    pub forces: Option<Vec<[f64; 3]>>,
}

/// Keys that results written by this module replace.
const RESULT_KEYS: [&str; 5] = ["energy", "stress", "free_energy", "virial", "forces"];

/// Reads every frame of a file.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<Frame>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse(&text, &path.display().to_string())
}

fn at(name: &str, line: usize, message: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{name}:{line}: {message}"))
}

/// Parses frames from `text`; errors name `name` and the line.
pub fn parse(text: &str, name: &str) -> Result<Vec<Frame>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut frames = Vec::new();
    let mut k = 0;
    while k < lines.len() {
        if lines[k].trim().is_empty() {
            k += 1;
            continue;
        }
        let count: usize = lines[k]
            .trim()
            .parse()
            .map_err(|_| at(name, k + 1, format!("expected an atom count, found `{}`", lines[k].trim())))?;
        let comment = lines.get(k + 1).ok_or_else(|| at(name, k + 2, "the file ends before the comment line"))?;
        if k + 2 + count > lines.len() {
            return Err(at(
                name,
                lines.len() + 1,
                format!("the frame at line {} promises {count} atoms; the file ends first", k + 1),
            ));
        }
        frames.push(parse_frame(comment, &lines[k + 2..k + 2 + count], name, k + 2)?);
        k += 2 + count;
    }
    Ok(frames)
}

/// A column group of `Properties`: name, type letter, width.
struct Column {
    name: String,
    kind: char,
    width: usize,
}

fn parse_properties(spec: &str) -> Option<Vec<Column>> {
    let parts: Vec<&str> = spec.split(':').collect();
    if !parts.len().is_multiple_of(3) {
        return None;
    }
    parts
        .chunks(3)
        .map(|c| {
            let kind = c[1].chars().next()?;
            Some(Column { name: c[0].to_string(), kind, width: c[2].parse().ok().filter(|&w: &usize| w > 0)? })
        })
        .collect()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "T" | "True" | "true" | "1" => Some(true),
        "F" | "False" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Splits a comment line into `key=value` pairs (values may be "quoted" or {braced}).
fn key_values(comment: &str) -> Option<Vec<(String, String)>> {
    let chars: Vec<char> = comment.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let token = |i: &mut usize, stop_at_eq: bool| -> Option<String> {
        let mut s = String::new();
        match chars.get(*i) {
            Some('"') => {
                *i += 1;
                while *i < chars.len() && chars[*i] != '"' {
                    if chars[*i] == '\\' && *i + 1 < chars.len() {
                        *i += 1;
                    }
                    s.push(chars[*i]);
                    *i += 1;
                }
                if *i == chars.len() {
                    return None;
                }
                *i += 1;
            }
            Some('{') => {
                *i += 1;
                while *i < chars.len() && chars[*i] != '}' {
                    s.push(chars[*i]);
                    *i += 1;
                }
                if *i == chars.len() {
                    return None;
                }
                *i += 1;
            }
            _ => {
                while *i < chars.len() && !chars[*i].is_whitespace() && !(stop_at_eq && chars[*i] == '=') {
                    s.push(chars[*i]);
                    *i += 1;
                }
            }
        }
        Some(s)
    };
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i == chars.len() {
            return Some(out);
        }
        let key = token(&mut i, true)?;
        if key.is_empty() {
            return None;
        }
        let mut value = "T".to_string();
        // Spaces are allowed around '='.
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if chars.get(j) == Some(&'=') {
            i = j + 1;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            value = token(&mut i, false)?;
        }
        out.push((key, value));
    }
}

fn parse_frame(comment: &str, atom_lines: &[&str], name: &str, comment_line: usize) -> Result<Frame> {
    let err = |line: usize, m: String| at(name, line, m);
    let pairs = match key_values(comment) {
        Some(p) => p,
        // A plain XYZ comment (free text) carries no keys.
        None if !comment.contains("Properties=") && !comment.contains("Lattice=") => Vec::new(),
        None => return Err(err(comment_line, "unbalanced quotes or braces in the comment line".into())),
    };
    let mut frame = Frame::default();
    let mut cell = None;
    let mut pbc = None;
    let mut properties = "species:S:1:pos:R:3".to_string();
    for (key, value) in pairs {
        match key.as_str() {
            "Lattice" => {
                let v: Vec<f64> = value
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| err(comment_line, format!("Lattice=\"{value}\" is not nine numbers")))?;
                if v.len() != 9 {
                    return Err(err(comment_line, format!("Lattice=\"{value}\" has {} numbers, not nine", v.len())));
                }
                cell = Some([[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]]);
            }
            "pbc" => {
                let v: Option<Vec<bool>> = value.split_whitespace().map(parse_bool).collect();
                match v.as_deref() {
                    Some([a, b, c]) => pbc = Some([*a, *b, *c]),
                    _ => return Err(err(comment_line, format!("pbc=\"{value}\" is not three of T/F"))),
                }
            }
            "Properties" => properties = value,
            "energy" => {
                frame.energy =
                    Some(value.parse().map_err(|_| err(comment_line, format!("energy={value} is not a number")))?)
            }
            _ if RESULT_KEYS.contains(&key.as_str()) => {}
            _ => frame.info.push((key, value)),
        }
    }
    let columns = parse_properties(&properties)
        .ok_or_else(|| err(comment_line, format!("Properties={properties} is not name:type:width triples")))?;
    let total: usize = columns.iter().map(|c| c.width).sum();
    let find = |n: &str| -> Option<(usize, &Column)> {
        let mut start = 0;
        for c in &columns {
            if c.name == n {
                return Some((start, c));
            }
            start += c.width;
        }
        None
    };
    let pos = match find("pos") {
        Some((start, c)) if c.kind == 'R' && c.width == 3 => start,
        _ => return Err(err(comment_line, format!("Properties={properties} has no pos:R:3 column"))),
    };
    let species = find("species").filter(|(_, c)| c.kind == 'S' && c.width == 1).map(|(s, _)| s);
    let numbers_column = find("Z").filter(|(_, c)| c.kind == 'I' && c.width == 1).map(|(s, _)| s);
    if species.is_none() && numbers_column.is_none() {
        return Err(err(comment_line, format!("Properties={properties} has neither species:S:1 nor Z:I:1")));
    }
    let forces_column = find("forces").filter(|(_, c)| c.kind == 'R' && c.width == 3).map(|(s, _)| s);
    let mut forces = Vec::new();
    for (a, line) in atom_lines.iter().enumerate() {
        let line_no = comment_line + 1 + a;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != total {
            return Err(err(line_no, format!("{} columns, Properties names {total}", fields.len())));
        }
        let number = |k: usize| -> Result<f64> {
            let x: f64 = fields[k].parse().map_err(|_| err(line_no, format!("`{}` is not a number", fields[k])))?;
            if !x.is_finite() {
                return Err(err(line_no, format!("non-finite value `{}`", fields[k])));
            }
            Ok(x)
        };
        let z = match (species, numbers_column) {
            (Some(s), _) => elements::atomic_number(fields[s])
                .ok_or_else(|| err(line_no, format!("unknown element `{}`", fields[s])))?,
            (None, Some(s)) => match fields[s].parse::<u32>() {
                Ok(z) if elements::symbol(z).is_some() => z,
                _ => return Err(err(line_no, format!("`{}` is not a known atomic number", fields[s]))),
            },
            (None, None) => unreachable!("checked above"),
        };
        frame.structure.numbers.push(z);
        frame.structure.positions.push([number(pos)?, number(pos + 1)?, number(pos + 2)?]);
        if let Some(f) = forces_column {
            forces.push([number(f)?, number(f + 1)?, number(f + 2)?]);
        }
    }
    if forces_column.is_some() {
        frame.forces = Some(forces);
    }
    frame.structure.cell = cell;
    frame.structure.pbc = pbc.unwrap_or([cell.is_some(); 3]);
    if frame.structure.pbc.iter().any(|&p| p) && cell.is_none() {
        return Err(err(comment_line, "pbc has a periodic axis but there is no Lattice".into()));
    }
    frame.structure.validate(0).map_err(|e| match e {
        Error::InvalidInput(m) => err(comment_line, m.replacen("structure 0: ", "", 1)),
        other => other,
    })?;
    Ok(frame)
}

fn quote(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
        value.to_string()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Appends one frame to `out`: the structure, its other keys, and results if given
/// (energy, forces, and stress for periodic structures, as ASE writes them).
pub fn write_frame(out: &mut String, structure: &Structure, info: &[(String, String)], results: Option<&Prediction>) {
    let _ = writeln!(out, "{}", structure.len());
    let mut comment = String::new();
    if let Some(c) = &structure.cell {
        let v: Vec<String> = c.iter().flatten().map(|x| format!("{x}")).collect();
        let _ = write!(comment, "Lattice=\"{}\" ", v.join(" "));
    }
    comment.push_str("Properties=species:S:1:pos:R:3");
    if results.is_some() {
        comment.push_str(":forces:R:3");
    }
    if let Some(r) = results {
        let _ = write!(comment, " energy={}", r.energy);
        if let Some(s) = &r.stress {
            let v: Vec<String> = s.iter().flatten().map(|x| format!("{x}")).collect();
            let _ = write!(comment, " stress=\"{}\"", v.join(" "));
        }
    }
    for (k, v) in info {
        if !RESULT_KEYS.contains(&k.as_str()) {
            let _ = write!(comment, " {}={}", quote(k), quote(v));
        }
    }
    let flag = |p: bool| if p { "T" } else { "F" };
    let _ =
        writeln!(comment, " pbc=\"{} {} {}\"", flag(structure.pbc[0]), flag(structure.pbc[1]), flag(structure.pbc[2]));
    out.push_str(&comment);
    for (a, (&z, p)) in structure.numbers.iter().zip(&structure.positions).enumerate() {
        let _ = write!(out, "{:<3}{:>16.8}{:>16.8}{:>16.8}", elements::symbol(z).unwrap_or("X"), p[0], p[1], p[2]);
        if let Some(r) = results {
            let f = r.forces[a];
            let _ = write!(out, "{:>16.8}{:>16.8}{:>16.8}", f[0], f[1], f[2]);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATER: &str = "3\nProperties=species:S:1:pos:R:3:forces:R:3 name=H2O energy=-13.2 pbc=\"F F F\"\n\
O 0.0 0.0 0.1 0.1 0.2 0.3\nH 0.0 0.76 -0.5 0 0 0\nH 0.0 -0.76 -0.5 0 0 0\n";

    #[test]
    fn reads_ase_frames_with_results_and_keys() {
        let text = format!("{WATER}2\nLattice=\"3 0 0 0 3 0 0 0 3\" Properties=species:S:1:pos:R:3 comment=\"two words\" pbc=\"T T F\"\nCu 0 0 0\nCu 1.5 1.5 0\n");
        let frames = parse(&text, "t.xyz").unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].structure.numbers, vec![8, 1, 1]);
        assert_eq!(frames[0].energy, Some(-13.2));
        assert_eq!(frames[0].forces.as_ref().unwrap()[0], [0.1, 0.2, 0.3]);
        assert_eq!(frames[0].info, vec![("name".to_string(), "H2O".to_string())]);
        assert_eq!(frames[1].structure.cell, Some([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]]));
        assert_eq!(frames[1].structure.pbc, [true, true, false]);
        assert_eq!(frames[1].info[0].1, "two words");
    }

    #[test]
    fn written_frames_read_back() {
        let frames = parse(WATER, "w.xyz").unwrap();
        let s = Structure::periodic(
            vec![29, 29],
            vec![[0.0, 0.0, 0.0], [1.8, 1.8, 0.0]],
            [[3.6, 0.0, 0.0], [0.0, 3.6, 0.0], [0.0, 0.0, 3.6]],
            [true; 3],
        );
        let results = Prediction {
            energy: -7.25,
            atom_energies: vec![-3.6, -3.65],
            forces: vec![[0.5, -0.25, 0.0], [-0.5, 0.25, 0.0]],
            stress: Some([[0.01, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.0, 0.03]]),
        };
        let mut out = String::new();
        write_frame(&mut out, &frames[0].structure, &frames[0].info, None);
        write_frame(&mut out, &s, &[("tag".into(), "a b".into())], Some(&results));
        let back = parse(&out, "out.xyz").unwrap();
        assert_eq!(back[0].structure, frames[0].structure);
        assert_eq!(back[0].info, frames[0].info);
        assert_eq!(back[1].structure, s);
        assert_eq!(back[1].energy, Some(-7.25));
        assert_eq!(back[1].forces.as_ref().unwrap()[1], [-0.5, 0.25, 0.0]);
        assert_eq!(back[1].info, vec![("tag".to_string(), "a b".to_string())]);
        assert!(out.contains("stress=\"0.01 0 0 0 0.02 0 0 0 0.03\""));
    }

    #[test]
    fn bad_input_names_the_line() {
        let cases = [
            ("3\nProperties=species:S:1:pos:R:3\nO 0 0 0\nXx 1 0 0\nH 0 1 0\n", "t.xyz:4: unknown element `Xx`"),
            ("2\n\nO 0 0 nan\nH 1 0 0\n", "t.xyz:3: non-finite value `nan`"),
            ("2\n\nO 0 0 0\nH 1 0\n", "t.xyz:4: 3 columns"),
            ("5\n\nO 0 0 0\n", "promises 5 atoms"),
            ("two\n\n", "t.xyz:1: expected an atom count"),
            ("1\nLattice=\"1 0 0 0 1 0 0 0\" \nH 0 0 0\n", "t.xyz:2: Lattice"),
            ("1\nLattice=\"1 0 0 2 0 0 0 0 1\" \nH 0 0 0\n", "singular"),
            ("1\npbc=\"T T T\"\nH 0 0 0\n", "no Lattice"),
            ("1\nProperties=species:S:1:pos:R:3 x=\"open\nH 0 0 0\n", "unbalanced"),
            ("1\nProperties=species:S:1\nH\n", "no pos:R:3"),
        ];
        for (text, want) in cases {
            let e = parse(text, "t.xyz").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // A plain XYZ comment is not an error.
        assert_eq!(parse("1\nfree text \"here\n He 0 0 0\n", "t.xyz").unwrap()[0].structure.numbers, vec![2]);
    }
}

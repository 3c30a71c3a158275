"""(c) calculate_batch of 1,000 small molecules (water, ammonia, methane, benzene,
rattled and rotated) against the Rust API on the same batch (Model::evaluate timed
in Rust, structures prebuilt), in one process. calculate_batch returns a sequence
whose per-molecule dicts are made when read: the call alone, and the call with every
dict read, are both shown.

    python3 python/bench/batch.py [--device gpu] [--molecules 1000] [--repeats 20]
"""

import numpy as np
from common import arguments, median, molecules, timed

import mlff
from mlff._structures import batch_arrays
from mlff.ase import MLFFCalculator

args = arguments(__doc__, molecules=1000, repeats=20)


def main():
    device = mlff.device(args.device)
    small = [m for m in molecules() if len(m) <= 12]
    rng = np.random.default_rng(0)
    atoms_list = []
    for k in range(args.molecules):
        a = small[k % len(small)].copy()
        a.rattle(0.05, seed=k)
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        atoms_list.append(a)
    calc = MLFFCalculator("default", device=device)
    batch, _ = batch_arrays(atoms_list)
    native = calc.model._native
    calc.calculate_batch(atoms_list)  # warm-up
    python, read_all, rust = [], [], []
    for _ in range(args.repeats):
        # Interleaved, so that drifts of the device's clocks hit all three alike.
        python += timed(lambda: calc.calculate_batch(atoms_list), 1)
        read_all += timed(lambda: list(calc.calculate_batch(atoms_list)), 1)
        rust += native.time_evaluate(device, batch, 1)
    p, a, r = median(python), median(read_all), median(rust)
    atoms = sum(len(a) for a in atoms_list)
    print(f"{args.molecules} molecules ({atoms} atoms), {device.describe()}, medians of {args.repeats}:")
    print(
        f"  Rust API (Model::evaluate, timed in Rust)     {1e3 * r:8.3f} ms  ({1e6 * r / args.molecules:.2f} µs per molecule)"
    )
    print(f"  MLFFCalculator.calculate_batch                {1e3 * p:8.3f} ms  ratio {p / r:.3f}")
    print(f"  calculate_batch, every result dict read       {1e3 * a:8.3f} ms  ratio {a / r:.3f}")
    print("issue 19's aim: calculate_batch within 1.3× of the Rust API")


main()

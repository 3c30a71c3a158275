"""(b) Python overhead per call over the Rust API, in one process and session: the
Rust API alone (Model::evaluate timed in Rust, GIL released) against the same call
through the package (`Model.evaluate`) and through ASE (`atoms.get_forces()` after a
move, with ASE's own cache bookkeeping), on the 24-atom benzene dimer.

    python3 python/bench/overhead.py [--device gpu] [--calls 3000] [--repeats 5]
"""

import numpy as np
from common import arguments, dimer, median

import mlff
from mlff._structures import single_batch
from mlff.ase import MLFFCalculator

args = arguments(__doc__, calls=3000, repeats=5)


def per_call(fn, calls):
    import time

    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main():
    device = mlff.device(args.device)
    model = mlff.Model("default", device=device)
    atoms = dimer()
    batch = single_batch(atoms)
    atoms.calc = MLFFCalculator(model, device=device)
    step = np.zeros_like(atoms.positions)

    def ase_call():
        # A move as an integrator makes one: ASE sees changed positions and calls us.
        step[0, 0] = 1e-7 if step[0, 0] <= 0 else -1e-7
        atoms.positions += step
        atoms.get_forces()

    model.evaluate(atoms)  # warm-up: weights and the batch shape on the device
    rows = {
        "Rust API (Model::evaluate, timed in Rust)": [],
        "mlff.Model.evaluate(atoms)": [],
        "ASE atoms.get_forces() after a move": [],
    }
    for _ in range(args.repeats):
        # Interleaved, so that drifts of the device's clocks hit all three alike.
        rows["Rust API (Model::evaluate, timed in Rust)"].append(
            median(model._native.time_evaluate(device, batch, args.calls))
        )
        rows["mlff.Model.evaluate(atoms)"].append(per_call(lambda: model.evaluate(atoms), args.calls))
        rows["ASE atoms.get_forces() after a move"].append(per_call(ase_call, args.calls))
    rust = median(rows["Rust API (Model::evaluate, timed in Rust)"])
    print(
        f"per-call time, benzene dimer (24 atoms), {device.describe()}, medians of {args.repeats} × {args.calls} calls:"
    )
    for name, xs in rows.items():
        m = median(xs)
        extra = (
            ""
            if xs is rows["Rust API (Model::evaluate, timed in Rust)"]
            else f"   overhead {1e6 * (m - rust):+7.1f} µs"
        )
        print(f"  {name:45s} {1e6 * m:8.1f} µs{extra}")
    print("issue 19's aim: Python overhead per call <= 30 µs over the Rust API")


main()

"""(a) ASE VelocityVerlet with MLFFCalculator on the 24-atom benzene dimer, steps/s,
beside `mlff md default dimer.xyz` on the same system and device (NVE, 0.5 fs).

    python3 python/bench/ase_md.py [--device gpu] [--steps 2000] [--repeats 5]
"""

from common import arguments, cli_md_steps_per_second, dimer, dimer_file, median, timed

from mlff.ase import MLFFCalculator

args = arguments(__doc__, steps=2000, repeats=5)


def main():
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = dimer()
    atoms.calc = MLFFCalculator("default", device=args.device)
    atoms.set_velocities(0.0 * atoms.positions)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.run(200)  # warm-up: device buffers, CUDA graph of this shape
    seconds = timed(lambda: dyn.run(args.steps), args.repeats)
    ase_rate = median([args.steps / s for s in seconds])

    path = dimer_file()
    device = args.device
    # Reports every 100 steps, as md_api.py: the layered engine captures one CUDA graph
    # of `every` steps, which for --every 2000 costs more to build than to run.
    cli = [path, "--steps", str(args.steps), "--every", "100", "--device", device, "--temperature", "0"]
    cli_rate = median([cli_md_steps_per_second(["default", *cli]) for _ in range(args.repeats)])
    print(
        f"ASE VelocityVerlet + MLFFCalculator, benzene dimer (24 atoms), {device}: {ase_rate:,.0f} steps/s (median of {args.repeats} × {args.steps} steps)"
    )
    print(f"mlff md default, same system and device:                {cli_rate:,.0f} steps/s")
    print(f"ASE loop / mlff md: {ase_rate / cli_rate:.3f}   (issue 19's aim: >= 3,000 steps/s through ASE)")


main()

"""(d) The Python MD API (Model.md(...).run with a callback every 100 steps) against
`mlff md` on the same systems, device and settings (NVE, 0.5 fs, 300 K start): the
benzene dimer alone and 256 replicas of it. Both numbers are the integrator's run
alone (the tool's own steps/s; RunSummary.seconds here).

    python3 python/bench/md_api.py [--device gpu] [--steps 4000] [--repeats 3]
"""

from common import arguments, cli_md_steps_per_second, dimer, dimer_file, median

import mlff

args = arguments(__doc__, steps=4000, repeats=3)


def main():
    model = mlff.Model("default", device=args.device)
    path = dimer_file()
    print(
        f"MD, NVE 0.5 fs, every 100 steps, {model.device.describe()}, medians of {args.repeats} runs of {args.steps} steps:"
    )
    for replicas in (1, 256):
        ours = []
        for _ in range(args.repeats):
            md = model.md(dimer(), temperature=300, replicas=replicas, seed=1)
            md.run(200, every=100)  # warm-up: CUDA graphs of this chunk length
            frames = []
            summary = md.run(args.steps, every=100, callback=frames.append)
            ours.append(summary.steps_per_second)
        cli_args = [path, "--steps", str(args.steps), "--every", "100", "--replicas", str(replicas)]
        cli_args += ["--device", args.device, "--temperature", "300"]
        cli = [cli_md_steps_per_second(["default", *cli_args]) for _ in range(args.repeats)]
        o, c = median(ours), median(cli)
        print(
            f"  dimer × {replicas:3d}: Python API {o:10,.0f} steps/s   mlff md {c:10,.0f} steps/s   mlff md / Python {c / o:.3f}"
        )
    print("issue 19's aim: the Python MD API within 1.1× of mlff md")


main()

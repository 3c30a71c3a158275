import sys, numpy as np
sys.path.insert(0, "/work/main/tools/distill")
from train import read_frames
from ase.io import read, write
frames = read("/work/distill-work/gfn2-samples.extxyz", ":")
own = read_frames("/work/distill-work/gfn2-samples.extxyz")
assert len(frames) == len(own)
rng = np.random.default_rng(2026)
order = rng.permutation(len(frames))
held = order[:int(round(0.1 * len(frames)))]
# One held-out frame per molecule (the first in held-out order), for a spread of chemistry.
seen, pick = set(), []
for k in held:
    name = frames[k].info["molecule"]
    if name not in seen:
        seen.add(name); pick.append(k)
out = []
for k in pick:
    f = frames[k]
    from ase import Atoms
    g = Atoms(f.get_chemical_symbols(), positions=f.positions)
    g.info = {"energy": float(f.get_potential_energy()), "molecule": f.info["molecule"]}
    g.arrays["forces"] = f.get_forces().copy()
    out.append(g)
write("/work/main/tests/data/gfn2-heldout.extxyz", out, format="extxyz")
print(len(out), "frames")

#!/usr/bin/env python3
"""Sample configurations of small organic molecules and label them with GFN2-xTB.

    python3 tools/distill/sample.py OUT.extxyz [--seed 2026] [--quick]

Each molecule (SMILES below, H C N O F S Cl) gets an RDKit conformer, is relaxed
with GFN2-xTB (tblite), then runs short Langevin trajectories under GFN2-xTB at
several temperatures; frames are taken every `--stride` steps and written with
their GFN2-xTB energy and forces (eV, eV/Å) as extended XYZ. Some frames are
also rattled off the trajectory, so the student sees compressed bonds that MD at
room temperature rarely reaches but that hot MD and relaxations do.

MD of a dimer rarely visits the whole intermolecular range, so every dimer also
gets `--dimer-scans` single points at random relative orientations, with the
closest intermolecular contact drawn between 2.2 and 5 Å, and the benzene dimer a
scan of stacked and slipped geometries (3.2-6 Å between the rings).
"""
import argparse
import sys
import time

import numpy as np
from ase import Atoms, units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import BFGS
from rdkit import Chem
from rdkit.Chem import AllChem
from tblite.ase import TBLite

MONOMERS = {
    "water": "O", "ammonia": "N", "methane": "C", "hydrogen fluoride": "F",
    "hydrogen sulfide": "S", "hydrogen chloride": "Cl",
    "methanol": "CO", "ethanol": "CCO", "formaldehyde": "C=O", "formic acid": "OC=O",
    "acetic acid": "CC(=O)O", "acetone": "CC(C)=O", "acetonitrile": "CC#N",
    "ethylene": "C=C", "acetylene": "C#C", "ethane": "CC", "propane": "CCC",
    "benzene": "c1ccccc1", "pyridine": "c1ccncc1", "phenol": "Oc1ccccc1",
    "toluene": "Cc1ccccc1", "urea": "NC(N)=O", "glycine": "NCC(=O)O",
    "dimethyl ether": "COC", "methylamine": "CN", "acetamide": "CC(N)=O",
    "fluoromethane": "CF", "chloromethane": "CCl", "dichloromethane": "ClCCl",
    "methanethiol": "CS", "dimethyl sulfide": "CSC", "thiophene": "c1ccsc1",
    "chlorobenzene": "Clc1ccccc1", "fluorobenzene": "Fc1ccccc1", "furan": "c1ccoc1",
    "pyrrole": "c1cc[nH]c1", "imidazole": "c1c[nH]cn1", "nitromethane": "C[N+](=O)[O-]",
    "cyclohexane": "C1CCCCC1", "trifluoromethane": "FC(F)F",
}
# Clusters of one molecule, so that the student sees the crowded first shell of a
# liquid (a water in liquid water has ~4 hydrogen-bonded neighbours), not only pairs.
CLUSTERS = [("water", 4), ("water", 8), ("water", 16), ("methanol", 5)]
DIMERS = [("water", "water"), ("benzene", "benzene"), ("methanol", "water"),
          ("formic acid", "formic acid"), ("ammonia", "water"), ("methane", "water")]


def conformer(smiles, seed):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    AllChem.MMFFOptimizeMolecule(mol)
    pos = mol.GetConformer().GetPositions()
    return Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=pos)


def random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a*a+b*b-c*c-d*d, 2*(b*c-a*d), 2*(b*d+a*c)],
                     [2*(b*c+a*d), a*a-b*b+c*c-d*d, 2*(c*d-a*b)],
                     [2*(b*d-a*c), 2*(c*d+a*b), a*a-b*b-c*c+d*d]])


def dimer(first, second, rng, seed):
    a, b = conformer(MONOMERS[first], seed), conformer(MONOMERS[second], seed + 1)
    a.positions -= a.get_center_of_mass()
    b.positions = (b.positions - b.get_center_of_mass()) @ random_rotation(rng).T
    # Push the second molecule out along a random direction until no two atoms are
    # closer than 2.6 Å (a loose contact the relaxation then tightens).
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    for shift in np.arange(2.0, 12.0, 0.1):
        moved = b.positions + shift * direction
        if np.min(np.linalg.norm(a.positions[:, None] - moved[None], axis=2)) > 2.6:
            break
    b.positions = moved
    return a + b


def relaxed(atoms):
    atoms = atoms.copy()
    atoms.calc = calculator()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    atoms.calc = None
    return atoms


def placed(a, b, contact, rng):
    """b rotated at random and moved along a random direction until its closest atom
    is `contact` Å from a's; both centred on a's centre of mass."""
    a = a.copy()
    a.positions -= a.get_center_of_mass()
    moved = (b.positions - b.get_center_of_mass()) @ random_rotation(rng).T
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    lo, hi = 0.0, 30.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        gap = np.min(np.linalg.norm(a.positions[:, None] - (moved + mid * direction)[None], axis=2))
        lo, hi = (mid, hi) if gap < contact else (lo, mid)
    out = a + Atoms(b.get_chemical_symbols(), positions=moved + hi * direction)
    return out


def dimer_scans(args, rng, frames):
    monomers = {name: relaxed(conformer(MONOMERS[name], args.seed + k)) for k, name in enumerate(MONOMERS)
                if any(name in pair for pair in DIMERS)}
    for first, second in DIMERS:
        for _ in range(args.dimer_scans):
            atoms = placed(monomers[first], monomers[second], rng.uniform(2.2, 5.0), rng)
            atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
            frame = label(atoms)
            frame.info.update(molecule=f"{first}+{second} scan", temperature=-2)
            frames.append(frame)
    benzene = monomers["benzene"]
    benzene.positions -= benzene.get_center_of_mass()
    for _ in range(args.dimer_scans):
        top = benzene.copy()
        angle = rng.uniform(0, 2 * np.pi)
        c, s_ = np.cos(angle), np.sin(angle)
        top.positions = top.positions @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]).T
        top.positions += [rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(3.2, 6.0)]
        atoms = benzene + top
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        frame = label(atoms)
        frame.info.update(molecule="benzene stack scan", temperature=-2)
        frames.append(frame)


def cluster(name, count, rng, seed):
    """`count` copies of a molecule at liquid density, random orientations, no two
    molecules' atoms closer than 2.0 Å."""
    monomer = conformer(MONOMERS[name], seed)
    monomer.positions -= monomer.get_center_of_mass()
    radius = (count * 3 * 30.0 / (4 * np.pi)) ** (1 / 3)
    atoms = Atoms()
    while len(atoms) < count * len(monomer):
        centre = rng.uniform(-radius, radius, size=3)
        if np.linalg.norm(centre) > radius:
            continue
        moved = monomer.positions @ random_rotation(rng).T + centre
        if len(atoms) and np.min(np.linalg.norm(atoms.positions[:, None] - moved[None], axis=2)) < 2.0:
            continue
        atoms += Atoms(monomer.get_chemical_symbols(), positions=moved)
    return atoms


def calculator():
    return TBLite(method="GFN2-xTB", verbosity=0)


def label(atoms):
    atoms = atoms.copy()
    atoms.calc = calculator()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions)
    out.info["energy"] = float(energy)
    out.arrays["forces"] = np.array(forces)
    return out


def sample(name, atoms, args, rng, frames):
    atoms.calc = calculator()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    for temperature in args.temperatures:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        dyn = Langevin(atoms, args.dt * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
        for _ in range(args.frames):
            dyn.run(args.stride)
            frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions.copy())
            frame.info.update(energy=float(atoms.get_potential_energy()), molecule=name, temperature=temperature)
            frame.arrays["forces"] = atoms.get_forces().copy()
            frames.append(frame)
            if rng.random() < args.rattle_fraction:
                rattled = frame.copy()
                rattled.positions += rng.normal(scale=0.08, size=rattled.positions.shape)
                labelled = label(rattled)
                labelled.info.update(molecule=name, temperature=-1)
                frames.append(labelled)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0, 1000.0])
    ap.add_argument("--frames", type=int, default=40, help="frames per trajectory")
    ap.add_argument("--stride", type=int, default=10, help="MD steps between frames")
    ap.add_argument("--dt", type=float, default=0.5, help="fs")
    ap.add_argument("--rattle-fraction", type=float, default=0.25)
    ap.add_argument("--dimer-scans", type=int, default=150, help="single points per dimer at random placements")
    ap.add_argument("--quick", action="store_true", help="three molecules, few frames (a smoke test)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    systems = [(name, lambda name=name, k=k: conformer(MONOMERS[name], args.seed + k))
               for k, name in enumerate(MONOMERS)]
    systems += [(f"{a}+{b}", lambda a=a, b=b, k=k: dimer(a, b, rng, args.seed + 100 + k))
                for k, (a, b) in enumerate(DIMERS)]
    systems += [(f"{name} x{count}", lambda name=name, count=count, k=k: cluster(name, count, rng, args.seed + 200 + k))
                for k, (name, count) in enumerate(CLUSTERS)]
    if args.quick:
        systems, args.frames, args.dimer_scans = systems[:3], 4, 2
    frames = []
    for name, build in systems:
        start = time.time()
        sample(name, build(), args, rng, frames)
        print(f"{name}: {len(frames)} frames so far ({time.time() - start:.1f} s)", file=sys.stderr, flush=True)
    start = time.time()
    dimer_scans(args, rng, frames)
    print(f"dimer scans: {len(frames)} frames so far ({time.time() - start:.1f} s)", file=sys.stderr, flush=True)
    write(args.out, frames, format="extxyz")
    print(f"wrote {len(frames)} frames to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

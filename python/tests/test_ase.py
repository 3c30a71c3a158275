"""The ASE calculator: ASE's own numerical forces and stress against ours, caching by
system_changes, batches, dynamics, optimisation and extended-XYZ round trips."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from conftest import REFERENCE, closest_to_cutoff

import mlff
from mlff.ase import MLFFCalculator


@pytest.fixture(scope="module")
def calc(default_model):
    return MLFFCalculator(default_model, device="cpu")


def triclinic_cell(calc, seed: int):
    """Two water molecules, a methanol and an HCl in a small triclinic cell (the
    default model's elements), placed so that no pair, images included, sits within
    0.02 Å of the cutoff (where the energy jumps)."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    cell = np.array([[6.3, 0.0, 0.0], [1.4, 6.0, 0.0], [-0.9, 1.1, 6.6]])
    while True:
        parts = [molecule("H2O"), molecule("H2O"), molecule("CH3OH"), molecule("HCl")]
        atoms = Atoms(cell=cell, pbc=True)
        for p in parts:
            p.rotate(rng.uniform(0, 360), rng.normal(size=3))
            p.translate(rng.uniform(0, 1, size=3) @ cell)
            atoms += p
        distances = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
        if distances.min() > 1.6 * 0.6 and closest_to_cutoff(atoms, calc.model.cutoff) > 0.02:
            # Intramolecular distances are ~1 Å; intermolecular contacts above 1.6 Å.
            atoms.calc = calc
            return atoms


def test_forces_match_ase_numerical_forces_on_molecules(calc, molecules):
    # f32 energies: the noise of a central difference is ~ε|E|/h; at h = 4e-3 Å it
    # and the truncation error are both near 1e-3 eV/Å here (measured: h = 1e-3 Å
    # gives 7e-3 eV/Å of noise, 8e-3 Å no better than 4e-3 Å).
    checked = 0
    for m in molecules:
        if closest_to_cutoff(m, calc.model.cutoff) < 0.02:
            continue
        atoms = m.copy()
        atoms.rattle(0.05, seed=len(atoms))
        atoms.calc = calc
        numerical = calculate_numerical_forces(atoms, eps=4e-3)
        analytic = atoms.get_forces()
        np.testing.assert_allclose(analytic, numerical, rtol=1e-3, atol=4e-3, err_msg=f"{len(atoms)} atoms")
        checked += 1
    assert checked >= 4


def test_forces_and_stress_match_ase_numerics_in_a_triclinic_cell(calc):
    atoms = triclinic_cell(calc, seed=7)
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    # A strain of 3e-3 changes no distance near the cutoff by more than 0.015 Å, so
    # no pair crosses it; smaller strains drown in the f32 energies' rounding.
    numerical_stress = calculate_numerical_stress(atoms, eps=3e-3)
    np.testing.assert_allclose(stress, numerical_stress, rtol=1e-3, atol=3e-5)
    assert np.abs(stress).max() > 3e-3, "a stress this small would test nothing"
    numerical_forces = calculate_numerical_forces(atoms, eps=4e-3)
    np.testing.assert_allclose(atoms.get_forces(), numerical_forces, rtol=1e-3, atol=4e-3)
    # The 3×3 stress of the model API is the same tensor.
    full = calc.model.evaluate(atoms).stress
    np.testing.assert_array_equal(stress, [full[0, 0], full[1, 1], full[2, 2], full[1, 2], full[0, 2], full[0, 1]])


def test_molecules_have_no_stress(calc, molecules):
    atoms = molecules[0].copy()
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_results_are_cached_by_system_changes(default_model, molecules):
    calls = []

    class Counting(MLFFCalculator):
        def calculate(self, *args, **kwargs):
            calls.append(1)
            super().calculate(*args, **kwargs)

    atoms = molecules[3].copy()
    atoms.calc = Counting(default_model, device="cpu")
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert atoms.get_potential_energy(force_consistent=True) == e
    assert atoms.calc.get_property("energies").sum() == pytest.approx(e, rel=1e-9)
    assert len(calls) == 1, "energy, forces and energies come from one call"
    f[0, 0] += 1.0  # ASE hands out copies: the cache is not changed through them
    assert atoms.get_forces()[0, 0] != f[0, 0]
    atoms.positions[0, 0] += 0.01
    assert atoms.get_potential_energy() != e
    assert len(calls) == 2
    atoms.numbers[0] = 7
    atoms.get_forces()
    assert len(calls) == 3


def test_calculate_batch_is_one_call_with_the_same_numbers(calc, molecules):
    box = triclinic_cell(calc, seed=3)
    atoms_list = list(molecules) + [box]
    batch = calc.calculate_batch(atoms_list)
    assert len(batch) == len(atoms_list)
    for atoms, r in zip(atoms_list, batch):
        single = calc.model.evaluate(atoms)
        assert r["energy"] == r["free_energy"] == single.energy
        np.testing.assert_array_equal(r["forces"], single.forces)
        np.testing.assert_array_equal(r["energies"], single.energies)
        assert ("stress" in r) == atoms.pbc.any()
    np.testing.assert_array_equal(batch[-1]["stress"], box.get_stress())
    np.testing.assert_array_equal(batch[-1]["forces"], batch[len(batch) - 1]["forces"])
    assert [r["energy"] for r in batch[1:3]] == [r["energy"] for r in list(batch)[1:3]]
    np.testing.assert_array_equal(batch.energy, [r["energy"] for r in batch])
    with pytest.raises(IndexError):
        batch[len(batch)]
    assert len(calc.calculate_batch([])) == 0


def test_velocity_verlet_conserves_energy(calc, dimer):
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    atoms = dimer.copy()
    atoms.calc = calc
    # ASE 3.29 renamed MaxwellBoltzmannDistribution; older ones have only that.
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=300, rng=np.random.default_rng(1))
    vd.Stationary(atoms)
    start = atoms.get_total_energy()
    worst = 0.0
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    for _ in range(40):
        dyn.run(10)
        worst = max(worst, abs(atoms.get_total_energy() - start))
    # 200 fs at 300 K; the engine's own NVE keeps excursions near 1e-4 eV/atom.
    assert worst / len(atoms) < 5e-4, f"largest |ΔE| {worst / len(atoms):.2e} eV/atom"
    assert atoms.get_temperature() > 50, "the molecules did move"


def test_ase_optimizer_converges(calc, molecules):
    from ase.optimize import BFGS

    for m in molecules:
        if len(m) == 5:
            continue  # methane: the model has a cusp at its carbon (README)
        atoms = m.copy()
        atoms.rattle(0.1, seed=2)
        atoms.calc = calc
        start = atoms.get_potential_energy()
        assert BFGS(atoms, logfile=None).run(fmax=0.05, steps=300), f"{len(atoms)} atoms did not converge"
        assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05
        assert atoms.get_potential_energy() < start


def test_results_survive_extxyz_write_and_read(calc, tmp_path):
    from ase.io import read, write

    box = triclinic_cell(calc, seed=11)
    # A calculator holds the results of the last Atoms it computed, and ase.io.write
    # writes calc.results: one calculator per Atoms here.
    box.calc = MLFFCalculator(calc.model, device="cpu")
    water = Atoms("OH2", positions=[[0, 0, 0.1], [0, 0.76, -0.5], [0, -0.76, -0.5]])
    water.calc = MLFFCalculator(calc.model, device="cpu")
    expected = [
        (a.get_potential_energy(), a.get_forces(), a.get_stress() if a.pbc.any() else None) for a in (box, water)
    ]
    path = tmp_path / "out.extxyz"
    write(path, [box, water], format="extxyz")
    back = read(path, ":", format="extxyz")
    for (energy, forces, stress), a in zip(expected, back):
        assert a.get_potential_energy() == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(a.get_forces(), forces, rtol=1e-7, atol=1e-7)
        if stress is not None:
            np.testing.assert_allclose(a.get_stress(), stress, rtol=1e-7, atol=1e-10)
    # The engine's own reader sees the same structures; re-evaluated, the same numbers.
    engine = mlff.read_extxyz(path)
    np.testing.assert_allclose(engine[0]["cell"], box.cell.array, rtol=1e-12)
    assert engine[0]["pbc"] == [True, True, True] and engine[1]["pbc"] == [False, False, False]
    again = calc.model.evaluate([(f["numbers"], f["positions"], f["cell"], f["pbc"]) for f in engine])
    assert again[0].energy == pytest.approx(expected[0][0], abs=1e-4)
    np.testing.assert_allclose(again[1].forces, expected[1][1], atol=1e-4)


def test_reference_file_read_by_ase_and_by_the_engine_agree():
    from ase.io import read

    by_ase = read(REFERENCE, ":")
    by_engine = mlff.read_extxyz(REFERENCE)
    assert len(by_ase) == len(by_engine)
    for a, e in zip(by_ase, by_engine):
        np.testing.assert_array_equal(a.numbers, e["numbers"])
        np.testing.assert_array_equal(a.positions, e["positions"])
        assert a.get_potential_energy() == e["energy"]
        assert a.info["name"] == e["info"]["name"]


def test_check_state_agrees_with_ase(calc, molecules):
    """The calculator's faster check_state gives ASE's compare_atoms answers."""
    from ase.calculators.calculator import compare_atoms

    base = molecules[3].copy()
    base.calc = calc
    base.get_potential_energy()
    variants = []
    for change in range(9):
        a = base.copy()
        if change == 1:
            a.positions[2, 1] += 1e-9
        elif change == 2:
            a.positions[2, 1] += 1e-16  # below ASE's tolerance
        elif change == 3:
            a.numbers[0] = 7
        elif change == 4:
            a.cell = [5.0, 5.0, 5.0]
        elif change == 5:
            a.pbc = [True, False, False]
        elif change == 6:
            a.set_initial_charges(np.ones(len(a)))
        elif change == 7:
            a.positions[0, 0] = np.nan
        elif change == 8:
            a.set_initial_magnetic_moments(np.zeros(len(a)))
        variants.append(a)
    for a in variants:
        assert sorted(calc.check_state(a)) == sorted(compare_atoms(calc.atoms, a)), a
    fresh = MLFFCalculator(calc.model, device="cpu")
    assert sorted(fresh.check_state(base)) == sorted(compare_atoms(None, base))

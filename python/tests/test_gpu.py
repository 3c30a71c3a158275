"""The GPU path from Python (skipped, loudly, without a CUDA device): the same
numbers as the CPU path, the ASE calculator, batches, MD with its state on the GPU,
relaxation, errors, and threads sharing one model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import DATA, REFERENCE, SHARED_MODEL

import mlff
from mlff.ase import MLFFCalculator


@pytest.fixture(scope="module")
def models(gpu):
    return mlff.Model(SHARED_MODEL, device="cpu"), mlff.Model(SHARED_MODEL, device=gpu)


def test_gpu_matches_cpu_on_the_reference(models):
    from ase.io import read

    cpu, gpu = models
    frames = read(REFERENCE, ":")
    for a, b, f in zip(cpu.evaluate(frames), gpu.evaluate(frames), frames):
        assert b.energy == pytest.approx(a.energy, rel=1e-6), f.info["name"]
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-4, err_msg=f.info["name"])
        # And the float64 reference itself, to the Rust tests' tolerances.
        assert abs(b.energy - f.get_potential_energy()) <= 1e-5 * abs(f.get_potential_energy())
        np.testing.assert_allclose(b.forces, f.get_forces(), atol=1e-4)


def test_gpu_stress_matches_cpu(gpu):
    from ase.io import read

    box = read(DATA / "water-box.xyz")
    box.set_cell(box.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, -0.04], [0.03, 0.0, 1.0]]), scale_atoms=True)
    cpu = mlff.Model("default", device="cpu").evaluate(box)
    g = mlff.Model("default", device=gpu).evaluate(box)
    np.testing.assert_allclose(g.stress, cpu.stress, atol=1e-6)
    np.testing.assert_allclose(g.forces, cpu.forces, atol=2e-4)


def test_calculate_batch_of_a_thousand_molecules(gpu, molecules):
    rng = np.random.default_rng(0)
    atoms_list = []
    for k in range(1000):
        a = molecules[k % 4].copy()
        a.rattle(0.05, seed=k)
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        atoms_list.append(a)
    on_gpu = MLFFCalculator("default", device=gpu).calculate_batch(atoms_list)
    on_cpu = MLFFCalculator("default", device="cpu").calculate_batch(atoms_list)
    for g, c in zip(on_gpu, on_cpu):
        assert g["energy"] == pytest.approx(c["energy"], rel=1e-6)
        np.testing.assert_allclose(g["forces"], c["forces"], atol=2e-4)


def test_ase_velocity_verlet_on_the_gpu_conserves_energy(gpu, dimer):
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    atoms = dimer.copy()
    atoms.calc = MLFFCalculator("default", device=gpu)
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=300, rng=np.random.default_rng(1))
    vd.Stationary(atoms)
    start = atoms.get_total_energy()
    worst = 0.0
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    for _ in range(100):
        dyn.run(20)
        worst = max(worst, abs(atoms.get_total_energy() - start))
    assert worst / len(atoms) < 5e-4


def test_md_on_the_gpu(gpu, molecules):
    model = mlff.Model("default", device=gpu)
    sample = [m for m in molecules if len(m) in (3, 4, 12, 24)]
    md = model.md(sample, temperature=300, replicas=64, seed=2)
    start = md.current()
    frames = []
    summary = md.run(2000, every=250, callback=frames.append)
    assert [f.step for f in frames] == list(range(250, 2001, 250)) and summary.steps == 2000
    atoms = np.diff(md.offsets)
    worst = max(np.abs((f.total_energy - start.total_energy) / atoms).max() for f in frames)
    assert worst < 1e-3, f"largest |ΔE| {worst:.2e} eV/atom"
    # Stopping from the callback, then the iterator form.
    assert md.run(1000, every=100, callback=lambda f: f.step < start.step + 2300).steps <= 1000
    assert [f.step - frames[-1].step for f in md.frames(300, every=100)][-1] >= 300


def test_md_gpu_follows_the_cpu_integrator(gpu, molecules):
    """The same start on both devices stays together over a few steps (f32 state)."""
    sample = [molecules[3]]
    runs = []
    for device in ("cpu", gpu):
        md = mlff.Model("default", device=device).md(sample)
        md.set_velocities(np.random.default_rng(4).normal(scale=0.005, size=(md.num_atoms, 3)))
        runs.append(list(md.frames(20, every=5)))
    for c, g in zip(*runs):
        np.testing.assert_allclose(g.positions, c.positions, atol=1e-4)
        np.testing.assert_allclose(g.potential, c.potential, rtol=1e-5)


def test_relax_on_the_gpu(gpu, molecules):
    rattled = []
    for m in molecules:
        if len(m) != 5:
            a = m.copy()
            a.rattle(0.1, seed=1)
            rattled.append(a)
    on_gpu = mlff.Model("default", device=gpu).relax(rattled, fmax=0.02, steps=1000)
    on_cpu = mlff.Model("default", device="cpu").relax(rattled, fmax=0.02, steps=1000)
    for g, c in zip(on_gpu, on_cpu):
        assert g.converged and c.converged
        assert g.energy == pytest.approx(c.energy, abs=2e-3)


def test_gpu_errors_are_exceptions(gpu):
    model = mlff.Model("default", device=gpu)
    with pytest.raises(ValueError, match="on top of each other"):
        model.evaluate(([1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="not covered"):
        model.evaluate(([99], [[0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="on top of each other"):
        model.md(([1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert np.isfinite(model.evaluate(([8, 1, 1], [[0, 0, 0.1], [0, 0.76, -0.5], [0, -0.76, -0.5]])).energy)


def test_threads_share_a_model_on_the_gpu(gpu, molecules):
    model = mlff.Model("default", device=gpu)
    expected = [r.energy for r in model.evaluate(list(molecules))]
    results, errors = [], []

    def work():
        try:
            for _ in range(50):
                results.append([r.energy for r in model.evaluate(list(molecules))])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 200
    for r in results:
        np.testing.assert_allclose(r, expected, rtol=1e-6)

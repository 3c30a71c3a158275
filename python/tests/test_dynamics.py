"""Batched MD and relaxation from Python: frames every k steps through a callback or
an iterator, conservation, stopping, and the relaxation's frames and results."""

from __future__ import annotations

import numpy as np
import pytest

import mlff


@pytest.fixture(scope="module")
def sample(molecules):
    """Water, ammonia and benzene: small, away from the model's cusps."""
    return [m for m in molecules if len(m) in (3, 4, 12)]


def test_nve_conserves_energy_and_reports_every_k_steps(default_model, sample):
    md = default_model.md(sample, timestep=0.5, temperature=300, replicas=2, seed=3)
    assert md.num_atoms == 2 * sum(len(m) for m in sample)
    start = md.current()
    assert start.step == 0 and start.positions.shape == (md.num_atoms, 3)
    frames = []
    summary = md.run(200, every=50, callback=frames.append)
    assert [f.step for f in frames] == [50, 100, 150, 200]
    assert [f.time for f in frames] == [25.0, 50.0, 75.0, 100.0]
    assert summary.steps == 200 and summary.seconds > 0
    atoms = np.diff(md.offsets)
    worst = max(np.abs((f.total_energy - start.total_energy) / atoms).max() for f in frames)
    assert worst < 5e-4, f"largest |ΔE| {worst:.2e} eV/atom"
    # Replicas start from different velocities, so their trajectories differ.
    a, b = md.offsets[0:2], md.offsets[1:3]
    assert not np.allclose(frames[-1].positions[a[0] : a[1]], frames[-1].positions[b[0] : b[1]])
    # The initial draw: near 300 K on average, no centre-of-mass motion.
    assert 100 < start.temperature.mean() < 600
    for s in range(len(atoms)):
        lo, hi = md.offsets[s], md.offsets[s + 1]
        masses = np.array([ase_mass(z) for z in mdnumbers(md)[lo:hi]])
        np.testing.assert_allclose((masses[:, None] * start.velocities[lo:hi]).sum(0), 0, atol=1e-5)


def ase_mass(z):
    from ase.data import atomic_masses

    return atomic_masses[z]


def mdnumbers(md):
    return np.concatenate([t[0] for t in md._templates])


def test_iterator_gives_the_callback_frames(default_model, sample):
    def fresh():
        md = default_model.md(sample, timestep=0.5)
        md.set_velocities(np.random.default_rng(5).normal(scale=0.01, size=(md.num_atoms, 3)))
        return md

    by_callback = []
    fresh().run(60, every=20, callback=by_callback.append)
    by_iterator = list(fresh().frames(60, every=20))
    assert [f.step for f in by_iterator] == [20, 40, 60]
    for a, b in zip(by_callback, by_iterator):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
        np.testing.assert_allclose(a.potential, b.potential, rtol=1e-6)


def test_a_callback_can_stop_the_run_or_raise(default_model, sample):
    md = default_model.md(sample, temperature=100)
    seen = []

    def stop_at_30(frame):
        seen.append(frame.step)
        return frame.step < 30

    summary = md.run(100, every=10, callback=stop_at_30)
    assert seen == [10, 20, 30] and summary.steps == 30

    def fails(frame):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        md.run(20, every=5, callback=fails)

    def reenters(frame):
        md.run(1, 1)

    with pytest.raises(RuntimeError, match="busy"):
        md.run(5, every=5, callback=reenters)
    # Still usable afterwards.
    assert md.run(5, every=5).steps == 5


def test_langevin_heads_for_its_bath(default_model, sample):
    # Started at rest; a friction of 0.1/fs relaxes the temperature within ~10 fs.
    md = default_model.md(sample, thermostat="langevin", temperature=500, friction=0.1, timestep=1.0, replicas=4)
    md.set_velocities(np.zeros((md.num_atoms, 3)))
    temperatures = []
    md.run(300, every=30, callback=lambda f: temperatures.append(f.temperature.mean()))
    assert 250 < np.mean(temperatures[-5:]) < 800, temperatures


def test_frames_become_ase_atoms(default_model, sample):
    from ase import units

    md = default_model.md(sample, temperature=300)
    frame = md.current()
    atoms = frame.atoms(2)
    assert len(atoms) == 12 and (atoms.numbers == sample[2].numbers).all()
    np.testing.assert_allclose(atoms.get_velocities() * units.fs, frame.velocities[md.offsets[2] : md.offsets[3]])
    assert atoms.get_potential_energy() == frame.potential[2]
    # Velocities taken from ase.Atoms, in ASE's units.
    again = default_model.md([atoms], velocities="atoms")
    np.testing.assert_allclose(again.current().velocities, frame.velocities[md.offsets[2] : md.offsets[3]], atol=1e-7)


def test_relax_converges_and_shows_frames(default_model, sample):
    rattled = []
    for m in sample:
        a = m.copy()
        a.rattle(0.1, seed=4)
        rattled.append(a)
    start = default_model.evaluate(rattled)
    frames = []
    relaxed = default_model.relax(rattled, fmax=0.01, steps=1000, callback=frames.append, every=5)
    assert len(relaxed) == len(rattled)
    for r, s, a in zip(relaxed, start, rattled):
        assert r.converged and r.fmax < 0.01 and r.steps > 0
        assert np.linalg.norm(r.forces, axis=1).max() < 0.01
        assert r.energy < s.energy
        again = default_model.evaluate(r.atoms())
        assert again.energy == pytest.approx(r.energy, abs=1e-9)
    assert [f.step for f in frames[:3]] == [0, 5, 10]
    assert list(frames[0].active) == [0, 1, 2]
    assert frames[0].energy == pytest.approx([s.energy for s in start])
    assert frames[-1].fmax.max() >= 0.01 or frames[-1].step == max(r.steps for r in relaxed)


def test_relax_the_cell_of_a_periodic_structure(default_model):
    from ase.build import molecule

    box = molecule("H2O")
    box.center(vacuum=2.2)
    box.pbc = True
    # The student's energy jumps where a pair (here: an image) crosses the cutoff
    # (MODEL.md), so FIRE cannot go below a force floor set by the jump: 0.023 eV/Å for
    # this box. 0.03 is above it.
    r = default_model.relax(box, fmax=0.03, cell=True, steps=2000)
    assert r.converged, r
    assert r.cell is not None and not np.allclose(r.cell, box.cell.array)
    assert np.abs(r.stress).max() * abs(np.linalg.det(r.cell)) / len(box) < 0.03 * np.sqrt(3)


def test_relax_callback_may_stop_it(default_model, sample):
    def fails(frame):
        if frame.step == 2:
            raise StopIteration("enough")

    with pytest.raises(StopIteration, match="enough"):
        default_model.relax(sample, callback=fails)
    single = default_model.relax(sample[0], fmax=0.05)
    assert isinstance(single, mlff.Relaxed)

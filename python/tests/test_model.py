"""The model API: loading, the structure forms it takes, batches, and the numbers
against the float64 reference and the `mlff` tool (the Rust API)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REFERENCE, ROOT, SHARED_MODEL

import mlff

WATER = ([8, 1, 1], [[0.0, 0.0, 0.1], [0.0, 0.76, -0.5], [0.0, -0.76, -0.5]])


def test_info_describes_the_models(default_model, shared_model):
    info = default_model.info
    assert info["architecture"] == "mlff_distiller.StudentForceField"
    assert (info["hidden_dim"], info["num_interactions"], info["cutoff"]) == (64, 2, 5.0)
    assert info["parameters"] == 71933
    assert "GFN2" in info["metadata"]["teacher"]
    assert shared_model.info["hidden_dim"] == 128
    assert "StudentForceField" in repr(shared_model)


def test_model_loads_from_a_path_bytes_or_another_model(shared_model):
    from_bytes = mlff.Model(SHARED_MODEL.read_bytes(), device="cpu")
    from_model = mlff.Model(shared_model)
    # One device for all three: the CPU and a GPU agree to tolerance, not to the bit.
    expected = shared_model.evaluate(WATER, device="cpu")
    for m in (from_bytes, from_model):
        r = m.evaluate(WATER, device="cpu")
        assert r.energy == expected.energy
        np.testing.assert_array_equal(r.forces, expected.forces)


def test_structure_forms_agree(default_model, molecules):
    """ase.Atoms, tuples with integers or symbols, lists and arrays give the same numbers."""
    benzene = next(m for m in molecules if len(m) == 12)
    by_atoms = default_model.evaluate(benzene)
    by_tuple = default_model.evaluate((benzene.numbers, benzene.positions))
    by_symbols = default_model.evaluate((benzene.get_chemical_symbols(), benzene.positions.tolist()))
    by_int32 = default_model.evaluate((benzene.numbers.astype(np.int32), benzene.positions.astype(np.float32)))
    by_plain_tuples = default_model.evaluate((tuple(benzene.numbers.tolist()), tuple(map(tuple, benzene.positions))))
    assert by_plain_tuples.energy == by_atoms.energy
    pair = default_model.evaluate(((benzene.numbers, benzene.positions), (benzene.numbers, benzene.positions)))
    assert [r.energy for r in pair] == [by_atoms.energy] * 2
    for r in (by_tuple, by_symbols):
        assert r.energy == by_atoms.energy
        np.testing.assert_array_equal(r.forces, by_atoms.forces)
    # float32 positions are exact in float64 and the engine computes in float32.
    assert by_int32.energy == pytest.approx(by_atoms.energy, rel=1e-7)
    assert by_atoms.stress is None and by_atoms.forces.shape == (12, 3) and by_atoms.energies.shape == (12,)
    assert by_atoms.energies.sum() == pytest.approx(by_atoms.energy, rel=1e-9)
    # Strided (non-contiguous) positions are read correctly.
    wide = np.zeros((12, 6))
    wide[:, ::2] = benzene.positions
    assert default_model.evaluate((benzene.numbers, wide[:, ::2])).energy == by_atoms.energy


def test_a_batch_gives_the_single_results(default_model, molecules):
    one_by_one = [default_model.evaluate(m) for m in molecules]
    batch = default_model.evaluate(molecules)
    assert isinstance(batch, list) and len(batch) == len(molecules)
    for a, b in zip(one_by_one, batch):
        assert a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)
        np.testing.assert_array_equal(a.energies, b.energies)
    assert default_model.evaluate([]) == []
    # A list of ase.Atoms is read in Rust; tuples go through numpy: the same numbers.
    as_tuples = default_model.evaluate([(m.numbers, m.positions, m.cell.array, m.pbc) for m in molecules])
    for a, b in zip(as_tuples, batch):
        assert a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)
    arrays = default_model.evaluate_arrays(
        np.concatenate([m.numbers for m in molecules]),
        np.concatenate([m.positions for m in molecules]),
        [len(m) for m in molecules],
        np.zeros((len(molecules), 3, 3)),
        np.zeros((len(molecules), 3), dtype=bool),
    )
    np.testing.assert_array_equal(arrays["energy"], [r.energy for r in batch])
    assert np.isnan(arrays["stress"]).all()


def test_periodic_structures_have_stress(default_model):
    from ase.io import read

    box = read(ROOT / "data" / "water-box.xyz")
    r = default_model.evaluate(box)
    assert r.stress.shape == (3, 3)
    np.testing.assert_allclose(r.stress, r.stress.T, atol=1e-6)
    assert r.stress_voigt[3] == r.stress[1, 2]
    # The tuple form: a cell without pbc means periodic; pbc=False drops the stress.
    assert default_model.evaluate((box.numbers, box.positions, box.cell.array)).energy == r.energy
    assert default_model.evaluate((box.numbers, box.positions, np.diag(box.cell.array), True)).energy == r.energy
    assert default_model.evaluate((box.numbers, box.positions, box.cell.array, False)).stress is None


def test_reference_energies_and_forces(shared_model):
    """The shared H=128 student against its float64 reference, to the Rust tests'
    tolerances (energy 1e-5 relative, forces 1e-4 eV/Å)."""
    from ase.io import read

    frames = read(REFERENCE, ":")
    assert len(frames) >= 10
    results = shared_model.evaluate(frames)
    for frame, r in zip(frames, results):
        reference_energy = frame.get_potential_energy()
        assert abs(r.energy - reference_energy) <= 1e-5 * abs(reference_energy), frame.info["name"]
        np.testing.assert_allclose(r.forces, frame.get_forces(), rtol=0, atol=1e-4, err_msg=frame.info["name"])


def test_same_numbers_as_the_mlff_tool(shared_model, mlff_cli, tmp_path):
    """`mlff eval` (the Rust API, written as text) and this package agree exactly: the
    energy to the last bit, the forces to the tool's 8 decimals."""
    out = tmp_path / "eval.xyz"
    subprocess.run(
        [mlff_cli, "eval", str(SHARED_MODEL), str(REFERENCE), "-o", str(out), "--device", "cpu"],
        check=True,
        capture_output=True,
    )
    tool = mlff.read_extxyz(out)
    inputs = mlff.read_extxyz(REFERENCE)
    assert len(tool) == len(inputs) >= 10
    ours = shared_model.evaluate([(f["numbers"], f["positions"]) for f in inputs])
    for t, r in zip(tool, ours):
        assert t["energy"] == r.energy
        assert [f"{x:.8f}" for x in r.forces.ravel()] == [f"{x:.8f}" for x in t["forces"].ravel()]


def test_an_exported_model_loads_in_one_line(tmp_path):
    """tools/export_student.py (MLFF-Distiller checkpoint → safetensors) then one line."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import export_student as ex
    finally:
        sys.path.pop(0)
    import json

    metadata, tensors = ex.read_safetensors(str(SHARED_MODEL))
    path = tmp_path / "exported.safetensors"
    ex.export({k: v.copy() for k, v in tensors.items()}, json.loads(metadata["config"]), str(path), {"source": "test"})

    from ase.build import molecule

    from mlff.ase import MLFFCalculator

    atoms = molecule("CH3CH2OH")
    atoms.calc = MLFFCalculator(str(path), device="cpu")
    expected = mlff.Model(SHARED_MODEL, device="cpu").evaluate(atoms)
    assert atoms.get_potential_energy() == expected.energy
    np.testing.assert_array_equal(atoms.get_forces(), expected.forces)


def test_devices_are_made_once():
    assert mlff.device("cpu") is mlff.device("CPU")
    assert not mlff.device("cpu").is_gpu
    assert "CPU" in mlff.device("cpu").describe()


def test_the_gil_is_free_while_the_engine_works(default_model, molecules):
    """Another Python thread runs during a long engine call (it could not, were the
    GIL held), and threads sharing one model get the serial results."""
    import threading

    big = list(molecules) * 60
    started = threading.Event()
    out = []

    def work():
        started.set()
        out.append(default_model.evaluate(big))

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    spins = 0
    while t.is_alive():
        spins += 1
    t.join()
    assert len(out[0]) == len(big)
    assert spins > 1000, f"the main thread ran only {spins} loop iterations during the call"

    expected = [r.energy for r in default_model.evaluate(list(molecules))]
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.extend([r.energy for r in default_model.evaluate(list(molecules))] for _ in range(5))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 15

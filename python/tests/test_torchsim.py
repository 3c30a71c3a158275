"""The TorchSim model against the model API, and TorchSim's own interface checks.
Skipped, loudly, without torch and torch_sim (CI has neither; the GPU machine
installs torch_sim from the wheels listed in python/bench/README.md)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import DATA, SHARED_MODEL

for _name in ("torch", "torch_sim"):
    try:
        __import__(_name)
    except ImportError as _e:
        print(f"\nSKIPPED: test_torchsim.py needs {_name} ({_e})", file=sys.stderr)
        pytest.skip(f"{_name} is not installed ({_e})", allow_module_level=True)

import torch  # noqa: E402
import torch_sim as ts  # noqa: E402

import mlff  # noqa: E402
from mlff.torchsim import MLFFModel  # noqa: E402


def compare(model: MLFFModel, atoms_list, dtype=torch.float64):
    """Identical to `evaluate` for molecules in float64; periodic positions are
    wrapped into the cell first (a float32 engine), which moves the last bits."""
    state = ts.io.atoms_to_state(atoms_list, model.device, dtype)
    out = model(state)
    expected = model.model.evaluate(atoms_list, device=model.engine_device)
    exact = dtype == torch.float64 and not any(a.pbc.any() for a in atoms_list)
    assert out["energy"].shape == (len(atoms_list),) and out["energy"].dtype == model.dtype
    np.testing.assert_allclose(out["energy"].cpu().numpy(), [r.energy for r in expected], rtol=0 if exact else 1e-6)
    forces = np.concatenate([r.forces for r in expected])
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=2e-4)
    np.testing.assert_allclose(out["forces"].cpu().numpy(), forces, **tol)
    stress = np.stack([r.stress if r.stress is not None else np.zeros((3, 3)) for r in expected])
    np.testing.assert_allclose(out["stress"].cpu().numpy(), stress, rtol=tol["rtol"], atol=tol["atol"] / 100)
    return out


@pytest.fixture(scope="module")
def torch_cpu_model():
    return MLFFModel(mlff.Model("default", device="cpu"), device="cpu")


def test_molecules_match_evaluate(torch_cpu_model, molecules):
    out = compare(torch_cpu_model, list(molecules))
    assert not out["stress"].any()


def test_periodic_structures_match_evaluate(torch_cpu_model):
    from ase.build import molecule
    from ase.io import read

    box = read(DATA / "water-box.xyz")
    small = molecule("CH3OH")
    small.set_cell([[6.0, 0.0, 0.0], [1.2, 5.8, 0.0], [-0.7, 0.9, 6.4]])
    small.pbc = True
    out = compare(torch_cpu_model, [box, small])
    assert out["stress"].abs().max() > 0
    compare(torch_cpu_model, [box, small], dtype=torch.float32)


def test_systems_out_of_order_are_handled(torch_cpu_model, molecules):
    atoms_list = [molecules[0], molecules[3]]
    state = ts.io.atoms_to_state(atoms_list, torch_cpu_model.device, torch.float64)
    n0 = len(molecules[0])
    order = torch.cat([torch.arange(n0, state.n_atoms), torch.arange(0, n0)])
    swapped = ts.SimState(
        positions=state.positions[order],
        masses=state.masses[order],
        cell=state.cell.flip(0),
        pbc=state.pbc,
        atomic_numbers=state.atomic_numbers[order],
        system_idx=1 - state.system_idx[order],
    )
    out = torch_cpu_model(swapped)
    direct = torch_cpu_model(state)
    torch.testing.assert_close(out["forces"], direct["forces"][order])


def off_symmetry(state):
    """The same small displacement of each system's k-th atom, whatever the batch:
    at a centre of symmetry (every atom of perfect diamond Si) the student has a cusp
    (README), so its forces there are rounding noise, and TorchSim's check that a
    lattice translation leaves them unchanged would compare noise."""
    s = state.clone()
    counts = torch.bincount(s.system_idx)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(s.n_atoms, device=s.positions.device) - starts[s.system_idx]
    phase = local.to(s.positions.dtype)[:, None] * torch.tensor(
        [0.7, 1.3, 2.9], dtype=s.positions.dtype, device=s.positions.device
    )
    s.positions = s.positions + 0.04 * torch.sin(phase + 0.3)
    return s


def test_torch_sim_validates_the_interface():
    from torch_sim.models.interface import validate_model_outputs

    # Si, Mg and Fe: the shared H=128 student embeds every element up to Z = 100.
    model = MLFFModel(mlff.Model(SHARED_MODEL, device="cpu"), device="cpu")
    validate_model_outputs(model, torch.device("cpu"), torch.float64, state_modifier=off_symmetry)


def test_on_the_gpu(gpu, molecules):
    from torch_sim.models.interface import validate_model_outputs

    model = MLFFModel(SHARED_MODEL, device="cuda")
    assert model.engine_device.is_gpu
    validate_model_outputs(model, torch.device("cuda"), torch.float64, state_modifier=off_symmetry)
    # Off the symmetric geometries (methane's carbon is a cusp, where GPU and CPU
    # summation orders give different forces: README).
    state = off_symmetry(ts.io.atoms_to_state(list(molecules), model.device, torch.float64))
    out = model(state)
    expected = mlff.Model(SHARED_MODEL, device="cpu").evaluate(ts.io.state_to_atoms(state))
    np.testing.assert_allclose(out["energy"].cpu().numpy(), [r.energy for r in expected], rtol=2e-6)
    np.testing.assert_allclose(out["forces"].cpu().numpy(), np.concatenate([r.forces for r in expected]), atol=1e-3)

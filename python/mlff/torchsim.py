"""A TorchSim model on the mlff engine (needs ``torch`` and ``torch_sim``).

::

    import torch_sim as ts
    from mlff.torchsim import MLFFModel

    model = MLFFModel("default", device="cuda")        # or a .safetensors file
    out = model(ts.io.atoms_to_state(atoms_list, model.device, model.dtype))
    out["energy"], out["forces"], out["stress"]           # (S,), (N, 3), (S, 3, 3)

This first version crosses through host memory: positions go to numpy, the engine
evaluates the whole batched state in one call (on the GPU when ``device`` is CUDA),
and the results come back as tensors on ``device``. A zero-copy path on the GPU
would need from the engine an entry point that reads positions from, and writes
forces to, caller-owned device pointers (float32 on the engine's side, so a
float64 state still needs one conversion kernel each way), ordered after torch's
current stream with an event; cudarc and torch share the device's primary context,
so the pointers themselves would be valid as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_sim.models.interface import ModelInterface

from . import Model
from . import device as _engine_device

__all__ = ["MLFFModel"]


def _engine_spec(device: torch.device) -> str:
    if device.type == "cuda":
        return f"gpu:{device.index if device.index is not None else torch.cuda.current_device()}"
    if device.type == "cpu":
        return "cpu"
    raise ValueError(f"mlff runs on CUDA GPUs and the CPU, not on {device}")


def _wrapped(positions: np.ndarray, counts: np.ndarray, cells: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Positions moved into the cell along periodic axes, in float64. The engine
    computes in float32: an atom a few cells away (TorchSim's integrators do not
    wrap) would lose digits there; results do not change otherwise."""
    periodic = pbc.any(axis=1)
    if not periodic.any():
        return positions
    cell_of = np.repeat(cells, counts, axis=0)  # (N, 3, 3), rows are lattice vectors
    frac = np.linalg.solve(np.swapaxes(cell_of, 1, 2), positions[:, :, None])[:, :, 0]
    wrap = np.repeat(pbc, counts, axis=0)
    frac = np.where(wrap, frac - np.floor(frac), frac)
    out = np.einsum("na,nab->nb", frac, cell_of)
    # Molecules (no periodic axis) keep their positions bit for bit.
    return np.where(np.repeat(periodic, counts)[:, None], out, positions)


class MLFFModel(ModelInterface):
    """TorchSim ``ModelInterface`` for mlff models.

    model: ``"default"``, a safetensors file (``tools/export_student.py``), or an
        :class:`mlff.Model`.
    device: where the returned tensors live (default: CUDA if available, else CPU);
        the engine runs there too unless ``engine_device`` says otherwise.
    dtype: of the returned tensors (the engine computes in float32 with float64
        energy sums).

    ``forward(state)`` returns ``energy`` (S,), ``forces`` (N, 3) and ``stress``
    (S, 3, 3, eV/Å³, ASE's sign; zero for non-periodic states), and ``energies``
    (N,) with ``per_atom_energies=True``.
    """

    def __init__(
        self,
        model="default",
        device=None,
        dtype: torch.dtype = torch.float64,
        *,
        compute_forces: bool = True,
        compute_stress: bool = True,
        per_atom_energies: bool = False,
        engine_device=None,
    ):
        super().__init__()
        self._device = (
            torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self._dtype = dtype
        self._compute_forces = compute_forces
        self._compute_stress = compute_stress
        self._memory_scales_with = "n_atoms_x_density"
        self.per_atom_energies = per_atom_energies
        self.engine_device = _engine_device(engine_device if engine_device is not None else _engine_spec(self._device))
        self.model = model if isinstance(model, Model) else Model(model, device=self.engine_device)
        self._evaluate = self.model._native.evaluate

    # TorchSim's validation (and cell filters) switch these on; every call computes
    # everything anyway, so they only choose what is returned.
    @ModelInterface.compute_stress.setter
    def compute_stress(self, value: bool) -> None:
        self._compute_stress = bool(value)

    @ModelInterface.compute_forces.setter
    def compute_forces(self, value: bool) -> None:
        self._compute_forces = bool(value)

    def forward(self, state, **kwargs) -> dict:
        positions = state.positions.detach().to(device="cpu", dtype=torch.float64)
        numbers = state.atomic_numbers.detach().to(device="cpu", dtype=torch.int64)
        system_idx = state.system_idx.detach().to("cpu")
        n_systems = state.n_systems
        # TorchSim keeps each system's atoms contiguous; the engine also wants the
        # systems in order. Reorder (stably) if they are not.
        order = None
        if len(system_idx) > 1 and bool((system_idx[1:] < system_idx[:-1]).any()):
            order = torch.argsort(system_idx, stable=True)
            positions, numbers, system_idx = positions[order], numbers[order], system_idx[order]
        counts = torch.bincount(system_idx, minlength=n_systems).numpy().astype(np.int64)
        row_cells = getattr(state, "row_vector_cell", None)
        if row_cells is None:
            row_cells = state.cell.transpose(-2, -1)  # TorchSim stores lattice vectors as columns
        cells = row_cells.detach().to(device="cpu", dtype=torch.float64).reshape(n_systems, 3, 3).numpy()
        pbc = state.pbc
        pbc = pbc.detach().cpu().numpy() if isinstance(pbc, torch.Tensor) else np.asarray(pbc)
        pbc = np.broadcast_to(pbc.astype(bool).reshape(-1), (3,))
        pbc = np.ascontiguousarray(np.broadcast_to(pbc, (n_systems, 3)))
        positions = _wrapped(positions.numpy(), counts, cells, pbc)
        energy, forces, energies, stress = self._evaluate(
            self.engine_device, (numbers.numpy(), positions, counts, np.ascontiguousarray(cells), pbc)
        )

        def out(a):
            return torch.from_numpy(a).to(device=self._device, dtype=self._dtype)

        result = {"energy": out(energy)}
        if self._compute_forces:
            f = torch.from_numpy(forces)
            if order is not None:
                f = torch.empty_like(f).index_copy_(0, order, f)
            result["forces"] = f.to(device=self._device, dtype=self._dtype)
        if self._compute_stress:
            result["stress"] = out(np.nan_to_num(stress, nan=0.0))
        if self.per_atom_energies:
            e = torch.from_numpy(energies)
            if order is not None:
                e = torch.empty_like(e).index_copy_(0, order, e)
            result["energies"] = e.to(device=self._device, dtype=self._dtype)
        return result

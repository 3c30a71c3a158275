"""An ASE calculator on the mlff engine.

::

    from mlff.ase import MLFFCalculator
    atoms.calc = MLFFCalculator("student.safetensors")   # or "default", device="gpu"
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Results are cached by ASE's ``system_changes`` (positions, numbers, cell, pbc, …):
asking for forces after the energy of the same atoms costs nothing. One engine call
computes every property at once. ``calculate_batch`` evaluates many ``Atoms`` in
one batched engine call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from . import Model
from . import device as _device
from ._structures import evaluate_list

__all__ = ["BatchResults", "MLFFCalculator"]


_ARRAY_CHANGES = [name for name in all_changes if name not in ("cell", "pbc")]


def _same(a, b, tol: float) -> bool:
    """ASE's ``equal(a, b, atol=tol)``: same shape and |a − b| ≤ tol (NaN never equal)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if (a == b).all():
        return True
    return a.dtype.kind != "b" and b.dtype.kind != "b" and bool((np.abs(a - b) <= tol).all())


def _voigt(s: np.ndarray) -> np.ndarray:
    """3×3 stress in ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


class MLFFCalculator(Calculator):
    """ASE calculator for mlff models.

    model: ``"default"`` (the bundled GFN2-xTB student), a safetensors file written
        by ``tools/export_student.py`` (MLFF-Distiller or SchNetPack checkpoints), or
        an :class:`mlff.Model`.
    device: ``"auto"`` (GPU 0 if there is one, else the CPU; ``MLFF_DEVICE``
        overrides), ``"cpu"``, ``"gpu"`` or ``"gpu:N"``.

    Properties: energy and free_energy (eV; the same here), forces (eV/Å), energies
    (per atom, eV), and stress (Voigt, eV/Å³, ASE's sign) for periodic atoms; asking
    a molecule for stress raises ASE's ``PropertyNotImplementedError``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model="default", device="auto", **kwargs):
        Calculator.__init__(self, **kwargs)
        self.model = model if isinstance(model, Model) else Model(model, device=device)
        # Resolved once: the native handles are what each call uses.
        self._device = _device(device) if device is not None else self.model.device
        self._evaluate = self.model._native.evaluate

    def check_state(self, atoms, tol=1e-15):
        """ASE's ``compare_atoms`` (same properties, same tolerance, ``ignored_changes``
        honoured) without its per-array ``np.allclose``, which costs more than a
        GPU evaluation of a small molecule: exact equality first, then |a − b| ≤ tol."""
        old = self.atoms
        if old is None:
            return list(all_changes)
        changes = []
        ignored = self.ignored_changes
        if "cell" not in ignored and not _same(old.cell.array, atoms.cell.array, tol):
            changes.append("cell")
        if "pbc" not in ignored and not _same(old.pbc, atoms.pbc, tol):
            changes.append("pbc")
        a1, a2 = old.arrays, atoms.arrays
        for name in _ARRAY_CHANGES:
            if name in ignored:
                continue
            if (name in a1) != (name in a2) or (name in a1 and not _same(a1[name], a2[name], tol)):
                changes.append(name)
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)  # keeps a copy as self.atoms
        a = self.atoms
        n = len(a)
        pbc = a.pbc
        energy, forces, energies, stress = self._evaluate(
            self._device, (a.numbers, a.positions, np.array([n], dtype=np.int64), a.cell.array[None], pbc[None])
        )
        e = float(energy[0])
        self.results = {"energy": e, "free_energy": e, "forces": forces, "energies": energies}
        if pbc.any():
            self.results["stress"] = _voigt(stress[0])

    def calculate_batch(self, atoms_list, properties=None) -> "BatchResults":
        """Energy, free_energy, forces, energies (and stress of periodic ones) of
        every ``Atoms`` in ``atoms_list``, in one batched engine call. Returns a
        sequence of one dict per ``Atoms`` (see :class:`BatchResults`); neither the
        ``Atoms`` nor this calculator's cache change."""
        arrays, offsets = evaluate_list(self.model._native, self._device, list(atoms_list))
        return BatchResults(*arrays, offsets)


class BatchResults(Sequence):
    """The results of ``calculate_batch``: a sequence of one dict per structure
    (``energy``, ``free_energy``, ``forces``, ``energies``, and ``stress`` in Voigt
    order where periodic), each made when read, its arrays views into the batch's.
    The batch's own arrays are attributes: ``energy`` (S,), ``forces`` (N, 3),
    ``energies`` (N,), ``stress`` (S, 3, 3; NaN where not periodic) and ``offsets``
    (structure s is atoms ``offsets[s]:offsets[s + 1]``)."""

    __slots__ = ("energy", "forces", "energies", "stress", "offsets")

    def __init__(self, energy, forces, energies, stress, offsets):
        self.energy, self.forces, self.energies, self.stress, self.offsets = energy, forces, energies, stress, offsets

    def __len__(self) -> int:
        return len(self.energy)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = range(len(self))[k]  # negative indices, and IndexError past the end
        a, b = self.offsets[k], self.offsets[k + 1]
        e = float(self.energy[k])
        r = {"energy": e, "free_energy": e, "forces": self.forces[a:b], "energies": self.energies[a:b]}
        if not np.isnan(self.stress[k, 0, 0]):
            r["stress"] = _voigt(self.stress[k])
        return r

    def __repr__(self) -> str:
        return f"<mlff BatchResults of {len(self)} structures>"

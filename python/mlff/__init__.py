"""mlff: a fast inference engine for distilled machine-learned force fields.

Energies, forces and stress of small PaiNN-style "student" models, on the GPU (Rust
kernels compiled to PTX, found at run time) or the CPU::

    import mlff
    model = mlff.Model("default")            # or a .safetensors file
    r = model.evaluate(atoms)                # an ase.Atoms or (numbers, positions[, cell, pbc])
    r.energy, r.forces, r.stress

``mlff.ase.MLFFCalculator`` is an ASE calculator; ``Model.md`` and ``Model.relax``
run many steps of the engine's integrators per Python call; ``mlff.torchsim`` (with
torch and torch_sim installed) is a TorchSim model.

Units: Å, eV, eV/Å, eV/Å³ (stress, ASE's sign), fs, Å/fs (MD velocities), K.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Optional

import numpy as np

from . import _mlff
from ._structures import (
    batch_arrays,
    evaluate_list,
    float_array,
    is_atoms,
    is_structure,
    numbers_array,
    single_batch,
    split,
)

__version__ = _mlff.__version__
__all__ = [
    "Device",
    "Frame",
    "MolecularDynamics",
    "Model",
    "Relaxed",
    "Result",
    "device",
    "read_extxyz",
]

Device = _mlff.Device
BOLTZMANN = _mlff.BOLTZMANN  # eV/K

_DEVICES: dict = {}


def device(spec="auto") -> Device:
    """The engine's device for ``"auto"``, ``"cpu"``, ``"gpu"``, ``"gpu:N"`` (or
    ``"cuda:N"``, or a ``torch.device``), made once per name and kept: making one
    starts a thread pool or a CUDA context. ``"auto"`` honours ``MLFF_DEVICE`` (read
    the first time) and else takes GPU 0 if usable, else the CPU."""
    if isinstance(spec, Device):
        return spec
    if spec is None:
        spec = "auto"
    if not isinstance(spec, str):
        if type(spec).__name__ == "device":  # torch.device, without importing torch
            spec = str(spec)
        else:
            raise TypeError(f"a device is a string such as 'cpu' or 'gpu:0', not {type(spec).__name__}")
    key = spec.strip().lower()
    found = _DEVICES.get(key)
    if found is None:
        found = _DEVICES[key] = Device(key)
    return found


def read_extxyz(path) -> list:
    """Every frame of an extended-XYZ file, read by the engine's own reader (the one
    the ``mlff`` tool uses): dicts with ``numbers``, ``positions``, ``cell`` (None
    without ``Lattice``), ``pbc``, ``info``, ``energy`` and ``forces`` (None if absent)."""
    return _mlff.read_extxyz(os.fspath(path))


class Result:
    """Energy (eV), forces (N, 3) eV/Å, per-atom energies (N,) eV and stress (3, 3)
    eV/Å³ (ASE's sign; None unless the structure is periodic) of one structure."""

    __slots__ = ("energy", "forces", "energies", "stress")

    def __init__(self, energy: float, forces: np.ndarray, energies: np.ndarray, stress: Optional[np.ndarray]):
        self.energy = energy
        self.forces = forces
        self.energies = energies
        self.stress = stress

    @property
    def stress_voigt(self) -> Optional[np.ndarray]:
        """Stress in ASE's Voigt order (xx, yy, zz, yz, xz, xy)."""
        s = self.stress
        return None if s is None else np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])

    def __repr__(self) -> str:
        stress = "" if self.stress is None else ", with stress"
        return f"<mlff.Result energy={self.energy:.6f} eV, {len(self.forces)} atoms{stress}>"


def _results(arrays, offsets: list) -> list:
    energy, forces, energies, stress = arrays
    periodic = (~np.isnan(stress[:, 0, 0])).tolist()
    return [
        Result(e, forces[a:b], energies[a:b], stress[k] if periodic[k] else None)
        for k, (e, a, b) in enumerate(zip(energy.tolist(), offsets, offsets[1:]))
    ]


class Model:
    """A model file in our safetensors layout (``tools/export_student.py`` writes it
    from an MLFF-Distiller or SchNetPack checkpoint), ``"default"`` for the bundled
    GFN2-xTB student, or the file's bytes. ``device`` is where calls run unless they
    say otherwise (see :func:`device`)."""

    def __init__(self, model="default", device="auto"):
        if isinstance(model, Model):
            native = model._native
        elif isinstance(model, _mlff.Model):
            native = model
        elif isinstance(model, (bytes, bytearray, memoryview)):
            native = _mlff.Model.from_bytes(bytes(model))
        elif isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            native = _mlff.Model.default() if path == "default" else _mlff.Model.load(path)
        else:
            raise TypeError(f"a model is 'default', a path or bytes, not {type(model).__name__}")
        self._native = native
        self._device_spec = device
        self._device = None

    @property
    def device(self) -> Device:
        """The device calls use by default (made on first use)."""
        if self._device is None:
            self._device = globals()["device"](self._device_spec)
        return self._device

    def _device_for(self, spec) -> Device:
        return self.device if spec is None else device(spec)

    @property
    def info(self) -> dict:
        """Architecture, hidden_dim, num_interactions, cutoff (Å), parameters, and the
        file's metadata (provenance, elements, config)."""
        return self._native.info()

    @property
    def cutoff(self) -> float:
        return self._native.cutoff

    def __repr__(self) -> str:
        return repr(self._native)

    def evaluate(self, structures, device=None):
        """Energy, forces, per-atom energies and (periodic) stress, in one batched
        engine call. ``structures`` is one structure (an ``ase.Atoms`` or a tuple
        ``(numbers, positions[, cell, pbc])``; a cell without ``pbc`` means periodic)
        and then one :class:`Result` comes back, or a list of them and then a list."""
        if is_structure(structures):
            batch = single_batch(structures)
            arrays = self._native.evaluate(self._device_for(device), batch)
            return _results(arrays, [0, len(batch[0])])[0]
        if isinstance(structures, (str, bytes)) or not hasattr(structures, "__iter__"):
            raise TypeError(f"evaluate takes a structure or a list of structures, not {type(structures).__name__}")
        arrays, offsets = evaluate_list(self._native, self._device_for(device), list(structures))
        return _results(arrays, offsets)

    def evaluate_arrays(self, numbers, positions, counts, cells, pbc, device=None) -> dict:
        """The batched call on arrays as the engine takes them: numbers (N,),
        positions (N, 3), counts (S,) atoms per structure, cells (S, 3, 3) rows as
        lattice vectors, pbc (S, 3). Returns concatenated ``energy`` (S,), ``forces``
        (N, 3), ``energies`` (N,) and ``stress`` (S, 3, 3), NaN where not periodic."""
        batch = (
            numbers_array(numbers),
            float_array(positions, "positions").reshape(-1, 3),
            np.asarray(counts, dtype=np.int64).reshape(-1),
            float_array(cells, "cells").reshape(-1, 3, 3),
            np.asarray(pbc, dtype=bool).reshape(-1, 3),
        )
        energy, forces, energies, stress = self._native.evaluate(self._device_for(device), batch)
        return {"energy": energy, "forces": forces, "energies": energies, "stress": stress}

    def md(self, structures, **settings) -> "MolecularDynamics":
        """:class:`MolecularDynamics` of ``structures`` with this model."""
        return MolecularDynamics(self, structures, **settings)

    def relax(
        self,
        structures,
        *,
        fmax: float = 0.05,
        steps: int = 500,
        cell: bool = False,
        max_move: float = 0.2,
        callback: Optional[Callable] = None,
        every: int = 1,
        device=None,
    ):
        """FIRE relaxation (ASE's defaults) of every structure at once: one batched
        engine call per iteration, the GIL released throughout. With ``cell=True``
        periodic cells relax too (zero pressure). ``callback(frame)`` sees a
        :class:`RelaxFrame` of the structures still moving every ``every`` iterations;
        it may stop the relaxation by raising. Returns :class:`Relaxed` results (one,
        or a list, as given)."""
        single = is_structure(structures)
        items = [structures] if single else list(structures)
        _check_count(steps, "steps")
        _check_count(every, "every", least=1)
        batch, offsets = batch_arrays(items)
        wrapped = None if callback is None else (lambda raw: callback(RelaxFrame(*raw)))
        out = _mlff.relax(
            self._native,
            self._device_for(device),
            batch,
            float(fmax),
            int(steps),
            bool(cell),
            float(max_move),
            wrapped,
            int(every),
        )
        results = _relaxed(items, batch, offsets, out)
        return results[0] if single else results


def _check_count(n, what: str, least: int = 0) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, not {type(n).__name__}")
    if n < least:
        raise ValueError(f"{what} must be at least {least}, not {n}")
    if n >= 2**63:
        raise ValueError(f"{what} = {n} is too large")


class Relaxed:
    """A relaxed structure: positions (N, 3), cell (3, 3) or None, energy, forces,
    energies, stress (or None), steps taken, whether it converged, and its final
    largest force (eV/Å, the cell's generalised force included)."""

    __slots__ = (
        "input",
        "numbers",
        "pbc",
        "positions",
        "cell",
        "energy",
        "forces",
        "energies",
        "stress",
        "steps",
        "converged",
        "fmax",
    )

    def __init__(self, **fields):
        for k, v in fields.items():
            setattr(self, k, v)

    def atoms(self):
        """An ``ase.Atoms`` of the result (a copy of the input's, if it was one) with a
        single-point calculator holding energy, forces and stress."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        if is_atoms(self.input):
            atoms = self.input.copy()
            atoms.calc = None
            atoms.positions = self.positions
            if self.cell is not None:
                atoms.set_cell(self.cell)
        else:
            cell = self.cell if self.cell is not None else np.zeros((3, 3))
            atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=cell, pbc=self.pbc)
        results = {"energy": self.energy, "free_energy": self.energy, "forces": self.forces, "energies": self.energies}
        if self.stress is not None:
            s = self.stress
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def __repr__(self) -> str:
        state = "converged" if self.converged else "not converged"
        return (
            f"<mlff.Relaxed {state} after {self.steps} steps, energy {self.energy:.6f} eV, fmax {self.fmax:.4f} eV/Å>"
        )


def _relaxed(items, batch, offsets, out) -> list:
    positions, cells, energy, forces, energies, stress, steps, converged, fmax = out
    per_positions, per_forces, per_energies = (
        split(positions, offsets),
        split(forces, offsets),
        split(energies, offsets),
    )
    per_numbers = split(batch[0], offsets)
    return [
        Relaxed(
            input=items[k],
            numbers=per_numbers[k],
            pbc=batch[4][k],
            positions=per_positions[k],
            cell=None if np.isnan(cells[k, 0, 0]) else cells[k],
            energy=float(energy[k]),
            forces=per_forces[k],
            energies=per_energies[k],
            stress=None if np.isnan(stress[k, 0, 0]) else stress[k],
            steps=int(steps[k]),
            converged=bool(converged[k]),
            fmax=float(fmax[k]),
        )
        for k in range(len(items))
    ]


class RelaxFrame:
    """What a relaxation callback sees: the iteration, the indices (into the input)
    of the structures still moving, and their current positions (concatenated,
    ``offsets`` split them), cells (NaN without one), energies and forces."""

    __slots__ = ("step", "active", "offsets", "positions", "cells", "energy", "forces")

    def __init__(self, step, active, counts, positions, cells, energy, forces):
        self.step = step
        self.active = active
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.positions = positions
        self.cells = cells
        self.energy = energy
        self.forces = forces

    @property
    def fmax(self) -> np.ndarray:
        """Largest atomic force (eV/Å) of each structure shown."""
        norms = np.linalg.norm(self.forces, axis=1)
        return np.array([norms[a:b].max(initial=0.0) for a, b in zip(self.offsets[:-1], self.offsets[1:])])


class Frame:
    """The MD state at one report. Per-atom arrays span the whole batch;
    ``offsets[s]:offsets[s + 1]`` are structure s's atoms. positions Å (not wrapped
    into the cell), velocities Å/fs, forces eV/Å; potential and kinetic energy per
    structure, eV; time in fs."""

    __slots__ = ("step", "time", "positions", "velocities", "forces", "potential", "kinetic", "offsets", "_md")

    def __init__(self, raw, offsets, md=None):
        self.step, self.time, self.positions, self.velocities, self.forces, self.potential, self.kinetic = raw
        self.offsets = offsets
        self._md = md

    @property
    def total_energy(self) -> np.ndarray:
        return self.potential + self.kinetic

    @property
    def temperature(self) -> np.ndarray:
        """Instantaneous temperature (K) per structure, with 3N − 3 degrees of
        freedom (the centre of mass is at rest) for N > 1 atoms, as the engine."""
        n = np.diff(self.offsets)
        dof = np.where(n > 1, 3 * n - 3, 3 * n)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(dof > 0, 2.0 * self.kinetic / (np.maximum(dof, 1) * BOLTZMANN), 0.0)

    def atoms(self, s: int = 0):
        """Structure ``s`` as an ``ase.Atoms`` (cell and pbc of its input, velocities
        in ASE's units) with a single-point calculator holding energy and forces."""
        from ase import Atoms, units
        from ase.calculators.singlepoint import SinglePointCalculator

        if self._md is None:
            raise ValueError("this frame does not know its structures")
        a, b = self.offsets[s], self.offsets[s + 1]
        numbers, cell, pbc = self._md._templates[s]
        atoms = Atoms(numbers=numbers, positions=self.positions[a:b], cell=cell, pbc=pbc)
        atoms.set_velocities(self.velocities[a:b] / units.fs)
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(self.potential[s]), free_energy=float(self.potential[s]), forces=self.forces[a:b]
        )
        return atoms

    def __repr__(self) -> str:
        return f"<mlff.Frame step {self.step}, {self.time:g} fs, {len(self.potential)} structures>"


class RunSummary:
    """Steps integrated (up to the last frame shown, if a callback stopped the run)
    and the wall time in seconds."""

    __slots__ = ("steps", "seconds", "atoms")

    def __init__(self, steps: int, seconds: float, atoms: int):
        self.steps, self.seconds, self.atoms = steps, seconds, atoms

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")

    def __repr__(self) -> str:
        return f"<mlff.RunSummary {self.steps} steps in {self.seconds:.3f} s ({self.steps_per_second:.0f} steps/s)>"


class MolecularDynamics:
    """Molecular dynamics of many structures (and replicas) as one batch, with the
    engine's integrators: velocity Verlet (``thermostat="nve"``) or Langevin BAOAB
    (``thermostat="langevin"``, bath at ``temperature`` K with ``friction`` 1/fs).
    On a GPU positions, velocities and forces stay there; a chunk of steps between
    two reports is one CUDA-graph replay and Python is called once per report.

    ``structures``: one structure or a list (``ase.Atoms`` or tuples), each repeated
    ``replicas`` times. Initial velocities: ``velocities`` (N, 3) Å/fs for the whole
    batch, or ``"atoms"`` to take the ``ase.Atoms``' own; else Maxwell–Boltzmann at
    ``temperature`` (seeded by ``seed``; each replica differs); else at rest.
    ``timestep`` in fs."""

    def __init__(
        self,
        model,
        structures,
        *,
        timestep: float = 0.5,
        thermostat: str = "nve",
        temperature: Optional[float] = None,
        friction: float = 0.01,
        seed: int = 1,
        replicas: int = 1,
        velocities=None,
        device=None,
    ):
        model = model if isinstance(model, Model) else Model(model)
        items = [structures] if is_structure(structures) else list(structures)
        _check_count(replicas, "replicas", least=1)
        _check_count(seed, "seed")
        if thermostat not in ("nve", "langevin"):
            raise ValueError(f"thermostat must be 'nve' or 'langevin', not {thermostat!r}")
        if thermostat == "langevin" and temperature is None:
            raise ValueError("the Langevin thermostat needs a temperature")
        items = [s for s in items for _ in range(replicas)]
        batch, offsets = batch_arrays(items)
        self.model = model
        self.offsets = np.asarray(offsets)
        self._templates = [(n, c, p) for n, c, p in zip(split(batch[0], offsets), batch[3], batch[4])]
        bath = float(temperature) if temperature is not None else 0.0
        self._native = _mlff.Dynamics(
            model._native,
            model._device_for(device),
            batch,
            float(timestep),
            thermostat,
            bath,
            float(friction),
            int(seed),
        )
        if isinstance(velocities, str) and velocities == "atoms":
            from ase import units

            v = [s.get_velocities() * units.fs if is_atoms(s) else np.zeros((len(s[0]), 3)) for s in items]
            self.set_velocities(np.concatenate(v) if v else np.zeros((0, 3)))
        elif velocities is not None:
            self.set_velocities(velocities)
        elif temperature is not None:
            self.maxwell_boltzmann(float(temperature), seed)

    @property
    def num_atoms(self) -> int:
        return int(self.offsets[-1])

    def set_velocities(self, velocities) -> None:
        """Every atom's velocity, (N, 3) Å/fs."""
        v = float_array(velocities, "velocities")
        if v.shape != (self.num_atoms, 3):
            raise ValueError(f"velocities must have shape ({self.num_atoms}, 3), not {v.shape}")
        self._native.set_velocities(v)

    def maxwell_boltzmann(self, temperature: float, seed: int = 1) -> None:
        """Velocities drawn at ``temperature`` K, each structure's centre of mass at rest."""
        _check_count(seed, "seed")
        self._native.maxwell_boltzmann(float(temperature), int(seed))

    def current(self) -> Frame:
        """The state now."""
        return Frame(self._native.current(), self.offsets, self)

    def run(self, steps: int, every: int = 100, callback: Optional[Callable[[Frame], object]] = None) -> RunSummary:
        """Integrates ``steps`` steps in one engine call, calling ``callback(frame)``
        every ``every`` steps and after the last (the GIL is free in between). A
        callback that returns ``False`` stops the run; one that raises stops it with
        its exception. On a GPU the next chunk runs while the callback works."""
        _check_count(steps, "steps")
        _check_count(every, "every", least=1)
        offsets = self.offsets
        wrapped = None if callback is None else (lambda raw: callback(Frame(raw, offsets, self)))
        done, seconds = self._native.run(int(steps), int(every), wrapped)
        return RunSummary(done, seconds, self.num_atoms)

    def frames(self, steps: int, every: int = 100) -> Iterator[Frame]:
        """The frames of ``steps`` steps every ``every`` steps, as an iterator: each
        ``next`` integrates one chunk of ``every`` steps (the engine waits while the
        loop body runs; ``run`` with a callback overlaps the two)."""
        _check_count(steps, "steps")
        _check_count(every, "every", least=1)
        done = 0
        while done < steps:
            k = min(every, steps - done)
            shown = []
            self._native.run(k, k, shown.append)
            done += k
            yield Frame(shown[-1], self.offsets, self)

"""Structures (``ase.Atoms`` or tuples) to the flat arrays the engine takes.

A batch crosses into Rust as one tuple ``(numbers, positions, counts, cells, pbc)``:
int64 (N,), float64 (N, 3), int64 (S,) atoms per structure, float64 (S, 3, 3)
lattice vectors as rows, bool (S, 3). Results come back concatenated the same way
and are sliced per structure here (views, not copies).
"""

from __future__ import annotations

import numpy as np

from . import _mlff

_NO_CELL = np.zeros((3, 3))
_NO_PBC = np.zeros(3, dtype=bool)


def is_atoms(obj) -> bool:
    """Whether ``obj`` is an ``ase.Atoms`` (checked without importing ASE)."""
    return hasattr(obj, "get_atomic_numbers") and hasattr(obj, "cell") and hasattr(obj, "pbc")


def is_structure(obj) -> bool:
    """A single structure: an ``ase.Atoms`` or a tuple ``(numbers, positions[, cell, pbc])``.

    A list is always a batch; a tuple is a batch only if its first item is itself a
    structure (``((8, 1, 1), positions)`` is one water molecule)."""
    if is_atoms(obj):
        return True
    return isinstance(obj, tuple) and 2 <= len(obj) <= 4 and not _looks_like_structure(obj[0])


def _looks_like_structure(item) -> bool:
    if is_atoms(item):
        return True
    return isinstance(item, tuple) and 2 <= len(item) <= 4 and np.ndim(item[0]) >= 1


def numbers_array(numbers) -> np.ndarray:
    """Atomic numbers (integers) or element symbols as int64, nothing rounded."""
    a = np.asarray(numbers)
    if a.ndim != 1:
        raise ValueError(f"atomic numbers must be one-dimensional, not of shape {a.shape}")
    kind = a.dtype.kind
    if kind in "iu":
        if kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
            raise ValueError(f"atomic number {a.max()} is no element")
        return a.astype(np.int64, copy=False)
    if kind in "US" or (kind == "O" and all(isinstance(x, str) for x in a)):
        return np.array([_mlff.atomic_number(str(s)) for s in a], dtype=np.int64)
    raise TypeError(f"atomic numbers must be integers or element symbols, not {a.dtype}")


def float_array(x, what: str) -> np.ndarray:
    """float64 array of real numbers (no silent loss of an imaginary part)."""
    a = np.asarray(x)
    if a.dtype.kind in "fiu":
        return a.astype(np.float64, copy=False)
    if a.dtype.kind == "O":
        return np.asarray(a, dtype=np.float64)
    raise TypeError(f"{what} must be real numbers, not {a.dtype}")


def positions_array(positions) -> np.ndarray:
    a = float_array(positions, "positions")
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), not {a.shape}")
    return a


def cell_array(cell) -> np.ndarray:
    """A 3×3 cell from a matrix, three lengths, or an ``ase.cell.Cell``."""
    a = float_array(getattr(cell, "array", cell), "the cell")
    if a.shape == (3,):
        return np.diag(a)
    if a.shape != (3, 3):
        raise ValueError(f"a cell must be 3×3 (rows are lattice vectors) or three lengths, not of shape {a.shape}")
    return a


def pbc_array(pbc) -> np.ndarray:
    a = np.asarray(pbc)
    if a.dtype.kind != "b" and not (a.dtype.kind in "iu" and np.isin(a, (0, 1)).all()):
        raise TypeError(f"pbc must be booleans, not {a.dtype}")
    if a.shape not in ((), (3,)):
        raise ValueError(f"pbc must be one boolean or three, not of shape {a.shape}")
    return np.broadcast_to(a.astype(bool), (3,))


def structure_arrays(s):
    """(numbers, positions, cell, pbc) of one structure, checked and converted."""
    if is_atoms(s):
        # ASE keeps these as int64, float64 (N, 3), float64 (3, 3) and bool (3,).
        return s.numbers, s.positions, s.cell.array, s.pbc
    if not isinstance(s, tuple) or not 2 <= len(s) <= 4:
        raise TypeError(
            "a structure is an ase.Atoms or a tuple (numbers, positions[, cell, pbc]), " f"not {type(s).__name__}"
        )
    numbers, positions = numbers_array(s[0]), positions_array(s[1])
    cell = s[2] if len(s) > 2 else None
    if cell is None:
        if len(s) > 3 and pbc_array(s[3]).any():
            raise ValueError("periodic boundaries need a cell")
        return numbers, positions, _NO_CELL, _NO_PBC
    pbc = pbc_array(s[3]) if len(s) > 3 else np.ones(3, dtype=bool)
    return numbers, positions, cell_array(cell), pbc


def batch_arrays(structures):
    """The engine's batch tuple and the atom offsets (a list of ints) of a list of
    structures."""
    parts = [structure_arrays(s) for s in structures]
    counts = np.fromiter((len(p[0]) for p in parts), dtype=np.int64, count=len(parts))
    if parts:
        numbers = np.concatenate([p[0] for p in parts])
        positions = np.concatenate([p[1] for p in parts])
        cells = np.array([p[2] for p in parts])
        pbc = np.array([p[3] for p in parts], dtype=bool)
    else:
        numbers, positions = np.zeros(0, np.int64), np.zeros((0, 3))
        cells, pbc = np.zeros((0, 3, 3)), np.zeros((0, 3), dtype=bool)
    return (numbers, positions, counts, cells, pbc), offsets_of(counts)


def offsets_of(counts: np.ndarray) -> list:
    """[0, n0, n0 + n1, …] as Python ints (slicing with them is cheaper)."""
    return [0, *np.cumsum(counts).tolist()]


def single_batch(s):
    """The batch tuple of one structure (the calculator's path: no concatenation)."""
    numbers, positions, cell, pbc = structure_arrays(s)
    return (numbers, positions, np.array([len(numbers)], dtype=np.int64), cell[None], pbc[None])


def evaluate_list(native, device, structures: list):
    """The engine's concatenated results and the atom offsets of a list of
    structures: a list of ``ase.Atoms`` is read in Rust in one pass (the fast path
    of ``calculate_batch``), anything else through `batch_arrays`."""
    if structures and not isinstance(structures[0], tuple):
        fast = native.evaluate_atoms(device, structures)
        if fast is not None:
            return fast
    batch, offsets = batch_arrays(structures)
    return native.evaluate(device, batch), offsets


def split(array: np.ndarray, offsets: list):
    """Per-structure views of a concatenated per-atom array."""
    return [array[a:b] for a, b in zip(offsets, offsets[1:])]

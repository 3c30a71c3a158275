"""Shared fixtures. Every file the tests read is in the repository (data/, tests/data/).

GPU tests use the ``gpu`` fixture, which skips loudly (reason on stderr and in
pytest's -rs summary) where no CUDA device is usable.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import mlff

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
TEST_DATA = ROOT / "tests" / "data"
SHARED_MODEL = TEST_DATA / "student-orbv2-h128.safetensors"
REFERENCE = TEST_DATA / "student-g2.extxyz"


def skip_loudly(reason: str):
    print(f"\nSKIPPED: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cpu():
    return mlff.device("cpu")


@pytest.fixture(scope="session")
def gpu():
    try:
        return mlff.device("gpu")
    except RuntimeError as e:
        if "no CUDA device" in str(e):
            skip_loudly(f"no CUDA device ({e})")
        raise


@pytest.fixture(scope="session")
def default_model():
    return mlff.Model("default", device="cpu")


@pytest.fixture(scope="session")
def shared_model():
    return mlff.Model(SHARED_MODEL, device="cpu")


@pytest.fixture(scope="session")
def molecules():
    """Water, ammonia, methane, benzene and the 24-atom benzene dimer (data/molecules.xyz)."""
    from ase.io import read

    return read(DATA / "molecules.xyz", ":")


@pytest.fixture(scope="session")
def dimer(molecules):
    (d,) = [m for m in molecules if len(m) == 24]
    return d


@pytest.fixture(scope="session")
def mlff_cli():
    """The `mlff` binary of this checkout (MLFF_BIN overrides): the Rust API's output."""
    path = os.environ.get("MLFF_BIN") or str(ROOT / "target" / "release" / "mlff")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        found = shutil.which("mlff")
        if found is None:
            skip_loudly(f"no mlff binary at {path} (build it with `cargo build --release` or set MLFF_BIN)")
        path = found
    return path


def closest_to_cutoff(atoms, cutoff: float) -> float:
    """Smallest |d − cutoff| over all pairs (periodic images included): the models'
    energy jumps where a pair crosses the cutoff, so finite differences must stay
    clear of it."""
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, cutoff + 0.5)
    return float(np.abs(d - cutoff).min()) if len(d) else np.inf

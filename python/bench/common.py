"""Helpers shared by the speed scripts: medians, the benzene dimer, the `mlff` tool."""

from __future__ import annotations

import os
import re
import shutil
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MOLECULES = ROOT / "data" / "molecules.xyz"


def median(xs) -> float:
    return statistics.median(xs)


def timed(fn, repeats: int) -> list:
    """Wall time of each of `repeats` calls of fn(), seconds."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def molecules():
    from ase.io import read

    return read(MOLECULES, ":")


def dimer():
    """The 24-atom benzene dimer of data/molecules.xyz."""
    (d,) = [m for m in molecules() if len(m) == 24]
    return d


def dimer_file() -> str:
    """The dimer alone in an extended-XYZ file (for `mlff md`)."""
    from ase.io import write

    path = os.path.join(tempfile.mkdtemp(prefix="mlff-bench-"), "dimer.xyz")
    write(path, dimer(), format="extxyz")
    return path


def mlff_cli() -> str:
    path = os.environ.get("MLFF_BIN") or str(ROOT / "target" / "release" / "mlff")
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    found = shutil.which("mlff")
    if found:
        return found
    sys.exit(f"no mlff binary at {path}: build it (cargo build --release) or set MLFF_BIN")


def cli_md_steps_per_second(args: list) -> float:
    """Runs `mlff md ARGS` and returns the steps/s it reports (its md.run alone)."""
    out = subprocess.run([mlff_cli(), "md", *args], check=True, capture_output=True, text=True).stdout
    m = re.search(r"([0-9.]+) steps/s", out)
    if m is None:
        sys.exit(f"no steps/s in the output of mlff md:\n{out}")
    return float(m.group(1))


def arguments(description: str, **defaults) -> argparse.Namespace:
    """--device (default gpu) and the script's own integer options."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="gpu", help="cpu, gpu or gpu:N (default gpu)")
    for name, value in defaults.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    return p.parse_args()

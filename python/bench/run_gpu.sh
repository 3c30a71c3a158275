#!/usr/bin/env bash
# On the GPU machine (Python 3.12 with torch, numpy and scipy; no internet), from the
# repository root, with `.whl/` (the wheels listed in python/bench/README.md, this
# package's included) and `target/release/mlff` carried over:
#
#     bash python/bench/run_gpu.sh
#
# installs the wheels into /tmp/site, runs the whole Python test suite (the GPU and
# TorchSim tests for real there) and the four speed scripts, which print medians.
set -uo pipefail
cd "$(dirname "$0")/../.."
rm -rf /tmp/site
python3 -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
export MLFF_BIN="$PWD/target/release/mlff"
python3 -c "import mlff; print('mlff', mlff.__version__, 'on', mlff.device('auto').describe())" || exit 1
python3 -m pytest -q -rs -p no:cacheprovider python/tests
status=$?
for script in ase_md overhead batch md_api; do
    echo "== python/bench/$script.py"
    python3 "python/bench/$script.py" || status=1
done
exit $status

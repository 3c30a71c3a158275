#!/usr/bin/env bash
# Issue 23's GPU runs on a host with two or more GPUs, without Rust or internet, from
# binaries built elsewhere (python3 is the only other need):
#   MLFF=path/to/mlff            (default: .carry/mlff, else target/release/mlff)
#   MULTI_TEST=path/to/multi_device test binary (default: .carry/multi_device)
#
#   bash tools/multi_gpu.sh test    # the device-set tests on GPUs 0 and 1 (numbers, MD
#                                   # reports, faults, the LAMMPS pointer)
#   bash tools/multi_gpu.sh bench   # eval of 100,000 small molecules and md of 512
#                                   # replicas on GPU 0 and on every GPU; then the
#                                   # one-GPU runs of 1/2, 1/4, 1/8 of the work, which
#                                   # bound what 2, 4 and 8 GPUs can do
# OUT (default /tmp/mlff-multi) holds the inputs and outputs. A dry run on the CPU:
#   ONE=cpu ALL=cpu,cpu COUNT=400 REPLICAS=8 STEPS=20 bash tools/multi_gpu.sh bench
set -euo pipefail
cd "$(dirname "$0")/.."
MLFF=${MLFF:-$([ -x .carry/mlff ] && echo .carry/mlff || echo target/release/mlff)}
MULTI_TEST=${MULTI_TEST:-.carry/multi_device}
OUT=${OUT:-/tmp/mlff-multi}
ONE=${ONE:-gpu:0}
ALL=${ALL:-gpu:all}
COUNT=${COUNT:-100000}
REPLICAS=${REPLICAS:-512}
STEPS=${STEPS:-10000}
EVERY=$((STEPS / 10 > 0 ? STEPS / 10 : 1))
mkdir -p "$OUT"
nvidia-smi -L || true

# The 24-atom benzene dimer of data/molecules.xyz.
dimer() {
  python3 - "$OUT/dimer.xyz" <<'EOF'
import sys
lines = open("data/molecules.xyz").read().splitlines()
k = 0
while k < len(lines):
    n = int(lines[k])
    if n == 24:
        open(sys.argv[1], "w").write("\n".join(lines[k : k + n + 2]) + "\n")
        break
    k += n + 2
EOF
}

# Wall time of a command, and its last line of standard error (eval's and md's summary).
timed() {
  local start end
  start=$EPOCHREALTIME
  "$@" >"$OUT/stdout.txt" 2>"$OUT/stderr.txt"
  end=$EPOCHREALTIME
  printf '%8.3f s wall | %s | %s\n' "$(python3 -c "print($end - $start)")" "$(tail -n 1 "$OUT/stderr.txt")" \
    "$(grep -h 'steps/s' "$OUT/stdout.txt" || true)"
}

case "${1:-}" in
  test)
    # The CLI test runs the mlff binary at the path it was built at: skipped here.
    "$MULTI_TEST" --test-threads=1 --skip the_cli_writes ;;
  bench)
    python3 tools/make_molecules.py "$COUNT" "$OUT/molecules-all.xyz"
    for k in 2 4 8; do
      python3 tools/make_molecules.py $((COUNT / k)) "$OUT/molecules-1of$k.xyz"
    done
    dimer
    echo "== bench (energy + forces per call; the 4096-dimer case shows the split)"
    # shellcheck disable=SC2046 # no flag at all on a CPU dry run
    "$MLFF" bench --device "$ALL" $([[ $ALL == gpu* ]] && echo --no-cpu) --seconds 2
    echo "== eval of $COUNT small molecules (3 to 24 atoms), three runs each"
    for device in "$ONE" "$ALL"; do
      for run in 1 2 3; do
        echo -n "$device run $run: "
        timed "$MLFF" eval default "$OUT/molecules-all.xyz" -o "$OUT/eval.xyz" --device "$device"
      done
    done
    echo "== md of $REPLICAS replicas of the benzene dimer (NVE, $STEPS steps, a report every $EVERY)"
    for device in "$ONE" "$ALL" "$ONE" "$ALL"; do
      echo -n "$device: "
      timed "$MLFF" md default "$OUT/dimer.xyz" --replicas "$REPLICAS" --steps "$STEPS" --every "$EVERY" \
        --device "$device"
    done
    echo "== one device with 1/k of the work: what k devices can at best do (k = 2, 4, 8)"
    for k in 2 4 8; do
      echo -n "eval $((COUNT / k)) molecules on $ONE: "
      timed "$MLFF" eval default "$OUT/molecules-1of$k.xyz" -o "$OUT/eval.xyz" --device "$ONE"
    done
    for k in 2 4 8; do
      echo -n "md $((REPLICAS / k)) replicas on $ONE: "
      timed "$MLFF" md default "$OUT/dimer.xyz" --replicas $((REPLICAS / k)) --steps "$STEPS" --every "$EVERY" \
        --device "$ONE"
    done ;;
  *)
    echo "usage: $0 test | bench" >&2
    exit 2 ;;
esac

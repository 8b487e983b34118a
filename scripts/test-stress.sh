#!/usr/bin/env bash
# `make test-stress`: the whole suite exactly as CI runs it (scripts/test.sh) while a CPU hog spins on every core,
# RUNS times in a row (default 3), stopping at the first failure. A test that passes here does not depend on the
# machine's speed or load: with every core contended, each test process gets about half the CPU it gets on a quiet
# machine, timers fire late and child processes start slowly, which is what shakes out races against the clock.
#
# usage: scripts/test-stress.sh [RUNS]
# Each run's TAP stream is kept as .tap/stress-<n>.tap; the last line is "stress: N of RUNS runs passed".
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/test-stress.sh [RUNS]" >&2; exit 2; }
bash scripts/setup.sh || exit 1
mkdir -p .tap

hogs=()
stop_hogs() { [ "${#hogs[@]}" -eq 0 ] || kill "${hogs[@]}" 2>/dev/null; wait "${hogs[@]}" 2>/dev/null; hogs=(); }
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM
cores=$(nproc)
for _ in $(seq "$cores"); do
  ( trap 'exit 0' TERM; while :; do :; done ) &
  hogs+=("$!")
done
echo "[stress] $cores CPU hogs running; $runs run(s) of scripts/test.sh" >&2

passed=0
for n in $(seq "$runs"); do
  start=$(date +%s)
  bash scripts/test.sh > .tap/stress-run.log 2>&1
  status=$?
  took=$(( $(date +%s) - start ))
  cp .tap/results.tap ".tap/stress-$n.tap" 2>/dev/null || true
  summary=$(tail -n 1 .tap/stress-run.log)
  echo "[stress] run $n/$runs: $summary in ${took} s (exit $status)" >&2
  if [ "$status" -ne 0 ]; then
    grep -E '^\s*not ok ' ".tap/stress-$n.tap" >&2 || tail -n 40 .tap/stress-run.log >&2
    break
  fi
  passed=$(( passed + 1 ))
done
stop_hogs
echo "stress: $passed of $runs runs passed"
[ "$passed" -eq "$runs" ]

#!/usr/bin/env bash
# The README's test command (via `make test`): set-up, type check, lint (ESLint), knip, the whole tap suite with
# coverage, and a final `N passed, N failed` line counted from the TAP stream (top-level subtests of every test file).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
. scripts/env.sh

echo "[test] type check" >&2
npx tsc -p tsconfig.test.json || { echo "0 passed, 1 failed"; exit 1; }

echo "[test] lint" >&2
npm run --silent lint || { echo "0 passed, 1 failed"; exit 1; }
# Unused files, exports and dependencies (knip.json): a few seconds, the same answer every run.
echo "[test] knip" >&2
npm run --silent knip || { echo "0 passed, 1 failed"; exit 1; }

mkdir -p .tap
out=.tap/results.tap
rm -rf .c8
# --reporter=tap keeps the raw stream (parsed below). Coverage: c8 wraps the whole run and collects V8 coverage from
# every test process (tap's own per-test coverage files do not merge correctly), gated by scripts/coverage-gate.mjs.
npx c8 --temp-directory .c8 --reporter none --clean false npx tap --disable-coverage --reporter=tap "$@" > "$out" 2> .tap/stderr.log
status=$?
cat "$out" | grep -E '^(not ok|ok) |^# (Subtest|failed)|^\s+not ok' | grep -vE '^\s+ok' | tail -n 200 >&2 || true
[ -s .tap/stderr.log ] && tail -n 50 .tap/stderr.log >&2

# Count second-level results: each file's top-level t.test() blocks (4-space indented "ok"/"not ok" lines).
passed=$(grep -cE '^    ok [0-9]+ ' "$out" || true)
failed=$(grep -cE '^    not ok [0-9]+ ' "$out" || true)
# A file that crashed before any subtest shows up only as a failed top-level line.
crashed=$(grep -E '^not ok [0-9]+ ' "$out" | wc -l)
if [ "$crashed" -gt 0 ] && [ "$failed" -eq 0 ]; then failed=$crashed; fi

if [ "$status" -eq 0 ] && [ "$failed" -eq 0 ]; then
  node scripts/coverage-gate.mjs || status=1
fi
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed passed, $failed failed"
exit "$status"

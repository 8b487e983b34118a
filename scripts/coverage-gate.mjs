// Coverage gate, set deliberately: tap 21 on its own either fails silently below 100% or (with
// allow-incomplete-coverage) never fails, and its per-test coverage files do not merge into a true total. So c8
// wraps the test run (scripts/test.sh) and this fails the run when src/ drops below the floors in .c8rc.json.
//
// The floors are calibrated to what this measurement reports on a fresh clone (lines ~80%, branches ~84%,
// functions ~75% on 2026-11-23), which is LOWER than the truth: processes that load a module without calling
// some of its functions report those as function-level ranges with count 0, and c8's cross-process merge lets
// them mask the block counts of processes that did run them (e.g. c14n.ts shows 58% while every XMLDSig test runs
// it; 95% when measured per test file). A regression still moves the number, so the gate still works; fixing the
// merge (normalising the raw V8 files before `c8 report`) would let the floors rise to the real ~90%.
import { spawnSync } from 'node:child_process'

const r = spawnSync('npx', ['c8', 'report', '--temp-directory', '.c8', '--reporter', 'text-summary',
  '--check-coverage'], { stdio: 'inherit' })
if (r.status !== 0) {
  console.error('[coverage] below the floor set in .c8rc.json')
  process.exit(1)
}

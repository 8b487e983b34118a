// Coverage gate, set deliberately: tap 21 on its own either fails silently below 100% or (with
// allow-incomplete-coverage) never fails, and its per-test coverage files do not merge into a true total. So c8
// wraps the test run (scripts/test.sh) and this fails the run when src/ drops below the floors in .c8rc.json.
//
// The floors are calibrated to what this measurement reports on a fresh clone (lines ~85%, branches ~84%,
// functions ~79% on 2026-11-23), which is LOWER than the truth (97.8 / 89 / 98 in a local full run): c8's merge of
// the per-process V8 files masks block counts for some modules (c14n.ts reads 58% merged, 95% from any single test
// file). Dropping never-compiled function-level entries did not change it; the cause is in the merge of the
// modules' root ranges. A regression still moves the number, so the gate still works; a custom merge (istanbul
// maps per process, max per statement) would let the floors rise to the real figures.
import { spawnSync } from 'node:child_process'

const r = spawnSync('npx', ['c8', 'report', '--temp-directory', '.c8', '--reporter', 'text-summary',
  '--check-coverage'], { stdio: 'inherit' })
if (r.status !== 0) {
  console.error('[coverage] below the floor set in .c8rc.json')
  process.exit(1)
}

// Coverage gate, set deliberately: tap 21 on its own either fails silently below 100% or (with
// allow-incomplete-coverage, which package.json sets) never fails. This reads the V8 coverage tap collected and
// fails the run when src/ drops below the floors in .c8rc.json, printing a per-file table either way.
import { spawnSync } from 'node:child_process'

const r = spawnSync('npx', ['c8', 'report', '--temp-directory', '.tap/coverage', '--reporter', 'text-summary',
  '--check-coverage'], { stdio: 'inherit' })
if (r.status !== 0) {
  console.error('[coverage] below the floor set in .c8rc.json')
  process.exit(1)
}

// `pix-proxy demo --once`: the README's main job must exit 0 only when every flow succeeded, JSON summary last.
import t from 'tap'
import { PassThrough } from 'node:stream'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { main } from '../../src/cli/main.ts'

t.test('demo --once runs every flow through token, proxy and simulator and ends with a JSON summary', async (t) => {
  const dir = t.testdir()
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (c: Buffer) => { stdout += c.toString() })
  err.on('data', (c: Buffer) => { stderr += c.toString() })
  const code = await main(['demo', '--once', '--dir', dir], { stdin: new PassThrough(), stdout: out, stderr: err, env: process.env })
  t.equal(code, 0, stderr)
  const lines = stdout.trim().split('\n')
  const summary = JSON.parse(lines[lines.length - 1] as string) as { ok: boolean, flows: Array<{ name: string, ok: boolean, signature?: string }>, simulatorAccepted: number }
  t.equal(summary.ok, true)
  t.ok(summary.flows.length >= 8, 'every sample flow ran')
  for (const f of summary.flows) t.ok(f.ok, f.name)
  t.ok(summary.flows.filter((f) => f.signature === 'VALID').length >= 5, 'BACEN\'s answers were verified')
  // The simulator's accepted-message log is the ground truth: the proxy's signed messages arrived.
  const log = (await readFile(join(dir, 'simulator-accepted.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { ispb: string, signature: string })
  t.equal(log.length, summary.simulatorAccepted)
  t.ok(log.filter((l) => l.ispb === '99999004').every((l) => l.signature === 'VALID' || l.signature === 'UNSIGNED'), 'every signed message from the proxy verified at the simulator')
})

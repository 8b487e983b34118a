// `pix-proxy demo --once --signer kms`: the same sample flows with the signing key in the local KMS and the mTLS key
// read from the local Secrets Manager, against the simulator, ending with the same JSON summary.
import t from 'tap'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { main } from '../../tools/cli/main.ts'

async function runMain (argv: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (c: Buffer) => { stdout += c.toString() })
  err.on('data', (c: Buffer) => { stderr += c.toString() })
  const code = await main(argv, { stdin: new PassThrough(), stdout: out, stderr: err, env: process.env })
  return { code, stdout, stderr }
}

interface Summary {
  ok: boolean
  signer: string
  signingKey: string
  simulatorAccepted: number
  flows: Array<{ name: string, ok: boolean, signature?: string, detail?: string }>
}

t.test('demo --once --signer kms: every flow succeeds with the KMS signer and the Secrets Manager TLS key; the audit has every row', async (t) => {
  const dir = t.testdir()
  const awsBefore = process.env.AWS_ENDPOINT_URL
  const r = await runMain(['demo', '--once', '--signer', 'kms', '--dir', dir])
  t.equal(r.code, 0, r.stderr)
  const summary = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as Summary
  t.equal(summary.ok, true)
  t.equal(summary.signer, 'kms')
  t.match(summary.signingKey, /^arn:aws:kms:[a-z0-9-]+:\d{12}:key\/[0-9a-f-]{36}$/, 'the summary names the KMS key')
  t.ok(summary.flows.length >= 8, 'every sample flow ran')
  for (const f of summary.flows) t.ok(f.ok, `${f.name}${f.detail === undefined ? '' : ': ' + f.detail}`)
  t.ok(summary.flows.some((f) => f.name === 'DICT CreateEntry (signed in KMS)' && f.signature === 'VALID'))
  t.match(summary.flows.find((f) => f.name.startsWith('audit rows'))?.detail, /^(\d+) of \1 calls audited/, 'the audit has every row')
  t.match(r.stderr, /mTLS key from Secrets Manager \(pix\/proxy\/tls-key\)/)
  // The simulator registered only the KMS key's certificate and the secret's TLS certificates for the participant:
  // its log shows it identified the proxy's calls and verified their signatures.
  const log = (await readFile(join(dir, 'simulator-accepted.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { ispb: string, signature: string })
  t.equal(log.length, summary.simulatorAccepted)
  const ours = log.filter((l) => l.ispb === '99999004')
  t.ok(ours.length > 0 && ours.every((l) => l.signature === 'VALID' || l.signature === 'UNSIGNED'), 'every signed message from the proxy verified at the simulator')
  t.ok(ours.some((l) => l.signature === 'VALID'))
  t.equal(process.env.AWS_ENDPOINT_URL, awsBefore, 'the local endpoint\'s environment is restored when the demo ends')
  const top = await readdir(dir)
  t.notOk(top.some((f) => /kms|secret|tls-key/i.test(f)), `no key material of the KMS variant in the state directory (${top.join(', ')})`)
})

t.test('demo --signer: hsm or kms, and only for a local stack', async (t) => {
  const bad = await runMain(['demo', '--once', '--signer', 'cloudhsm', '--dir', t.testdir()])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--signer must be hsm or kms, got cloudhsm/)
  const remote = await runMain(['demo', '--signer', 'kms', '--proxy-url', 'http://127.0.0.1:1', '--simulator-url', 'https://localhost:1', '--pki-dir', '/x', '--lake', '/y'])
  t.equal(remote.code, 2)
  t.match(remote.stderr, /--signer is for a local stack/)
})

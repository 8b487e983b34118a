/**
 * The local KMS for bench/kms.ts in a process of its own: the local AWS endpoint (tools/aws-local) seeded as
 * `demo --signer kms` seeds it (tools/demo/kms-backend.ts: the signing key, with a certificate from the stack's token
 * CA, and the mTLS key secret). Prints one JSON line ({ url, region, credentials, settings }), then reads commands,
 * one JSON object a line on stdin, and answers each with the Sign calls answered so far:
 *
 *   {"latencyMs": 30, "quota": {"perSecond": 500, "burst": 50}}   every Sign delayed by latencyMs; the RSA quota (null: none)
 *   {}                                                             nothing changed: the counts only
 *
 * Answer: {"sign": {"ok": N, "ThrottlingException": M, …}} (cumulative, by error type). Serves until SIGTERM.
 *
 *   node bench/lib/kms-host.ts HSM_JSON ISPB
 */
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { startKmsBackend } from '../../tools/demo/kms-backend.ts'
import type { HsmInitResult } from '../../tools/token/hsm-init.ts'
import type { KmsRequestQuota } from '../../tools/aws-local/endpoint.ts'

export interface KmsHostCommand {
  readonly latencyMs?: number
  readonly quota?: KmsRequestQuota | null
}

export interface KmsHostCounts {
  /** Sign calls answered, by outcome: `ok` or the error type. */
  readonly sign: Record<string, number>
}

const [hsmJson, ispb] = process.argv.slice(2)
if (hsmJson === undefined || ispb === undefined) throw new Error('usage: kms-host.ts HSM_JSON ISPB')
const kms = await startKmsBackend({ hsm: JSON.parse(await readFile(hsmJson, 'utf8')) as HsmInitResult, ispb })
const { aws } = kms
process.stdout.write(JSON.stringify({ url: aws.url, region: aws.region, credentials: kms.credentials, settings: kms.settings }) + '\n')

/** Counted incrementally: the call log is kept whole (the backend sets no bound), so only its new tail is read. */
const counts: Record<string, number> = {}
let seen = 0
function count (): KmsHostCounts {
  const calls = aws.calls
  for (; seen < calls.length; seen++) {
    const c = calls[seen]
    if (c?.target !== 'TrentService.Sign') continue
    const k = c.errorType ?? 'ok'
    counts[k] = (counts[k] ?? 0) + 1
  }
  return { sign: { ...counts } }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as KmsHostCommand
  if (cmd.latencyMs !== undefined) {
    aws.clearFaults()
    if (cmd.latencyMs > 0) aws.addLatency({ target: 'TrentService.Sign', ms: cmd.latencyMs })
  }
  if (cmd.quota !== undefined) aws.setKmsRequestQuota(cmd.quota)
  process.stdout.write(JSON.stringify(count()) + '\n')
})
process.once('SIGTERM', () => {
  kms.close().then(() => process.exit(0), (err: unknown) => {
    process.stderr.write(`kms-host: ${(err as Error).message}\n`)
    process.exit(1)
  })
})

/**
 * A reload that never ends is abandoned at its deadline: it is reported refused, the reloads asked after it run and
 * apply, and when its read finally ends what it read is discarded, never put in place of the newer material. The
 * deadline's timer is the test's own (GatewayOptions.reloadTimer), fired only once the reload is seen hanging, so that
 * which reload is abandoned never depends on how fast the machine reads.
 */
import { EventEmitter, once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { S3Client } from '@aws-sdk/client-s3'
import pino from 'pino'
import t from 'tap'
import type { Test } from 'tap'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import type { Gateway, GatewayOptions } from '../../src/gateway/gateway.ts'
import { createGatewayPki, issueCrl } from '../helpers/gateway-pki.ts'
import { attempt, gatewayConfig, HOLDABLE_S3_SOURCES, holdableS3, startBackend } from './helpers.ts'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-deadline-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const pki = await createGatewayPki(dir)
const backend = await startBackend(pki)
t.teardown(() => backend.close())

/** A deadline the test fires itself: each reload's, in the order armed. */
interface Deadline { readonly ms: number, readonly fire: () => void, cancelled: boolean }

async function start (t: Test, s3: S3Client, o: Partial<GatewayOptions> = {}): Promise<{ gw: Gateway, deadlines: Deadline[], log: EventEmitter }> {
  const deadlines: Deadline[] = []
  // Every log line is an event the test can wait on.
  const log = new EventEmitter()
  const logger = pino({ level: 'debug' }, { write: (s: string) => { const line = JSON.parse(s) as { msg: string }; log.emit('line', line); log.emit(line.msg, line) } })
  const gw = await startGateway({
    config: gatewayConfig(pki, backend, { ...HOLDABLE_S3_SOURCES, PIXGW_RELOAD_INTERVAL_MS: '0' }),
    logger,
    identify: icpBrasilIdentity,
    audit: { write: () => {} },
    s3,
    reloadTimer: (ms, fire) => {
      const d: Deadline = { ms, fire, cancelled: false }
      deadlines.push(d)
      return () => { d.cancelled = true }
    },
    ...o
  })
  t.teardown(() => gw.close())
  return { gw, deadlines, log }
}

const reloadCounts = async (gw: Gateway): Promise<Record<string, number>> =>
  Object.fromEntries((await gw.metrics.reloads.get()).values.map((v) => [String(v.labels.result), v.value]))

const ABANDONED = 'truststore/CRL reload abandoned at its deadline; the previous ones stay in use'
const DISCARDED = 'an abandoned truststore/CRL reload ended; what it read is discarded'
const APPLIED = 'truststore and CRLs reloaded'

t.test('a reload held past its deadline is abandoned, the next one applies, and the held one never applies when it ends', async (t) => {
  const { s3, put, hold } = await holdableS3(pki)
  const { gw, deadlines, log } = await start(t, s3, { reloadDeadlineMs: 50 })
  const results: string[] = []
  gw.events.on('reloaded', (r: string) => { results.push(r) })
  const initial = gw.material

  // Reload A reads an intermediate CRL that revokes the valid client, then hangs on the root CRL.
  put('int.crl', issueCrl(pki.intermediate, { serials: [pki.clients.valid.certificate.serial, pki.clients.revoked.certificate.serial], number: 2 }))
  const held = hold()
  const abandoned = once(log, ABANDONED)
  const a = gw.reload()
  await held.reached
  t.equal(deadlines.length, 1, 'A armed its deadline')
  t.equal(deadlines[0]?.ms, 50, 'with the injected deadline')
  deadlines[0]?.fire()
  t.equal(await a, 'refused', 'A is reported refused at its deadline while its read still hangs')
  const [line] = await abandoned as [{ deadlineMs: number }]
  t.equal(line.deadlineMs, 50, 'and logged as abandoned')
  t.equal(gw.material, initial, 'nothing was applied')

  // The CA publishes another CRL (the valid client not revoked after all); reload B runs although A still hangs.
  put('int.crl', issueCrl(pki.intermediate, { serials: [pki.clients.revoked.certificate.serial], number: 3 }))
  t.equal(await gw.reload(), 'applied', 'B, asked after A was abandoned, applies')
  t.equal(deadlines.length, 2, 'B armed its own deadline')
  t.equal(deadlines[1]?.cancelled, true, 'cancelled when B ended')
  const applied = gw.material
  t.not(applied, initial, 'B\'s material is in use')

  // A's read ends at last, with the CRL that revokes the valid client: it must not replace B's newer material.
  // Its end, discarded or (were the deadline not enforced) applied: either is logged, so a regression fails here
  // rather than hanging.
  const ended = new Promise<{ msg: string, digest: string }>((resolve) => {
    log.on('line', (l: { msg: string, digest: string }) => { if (l.msg === DISCARDED || l.msg === APPLIED) resolve(l) })
  })
  held.release()
  const end = await ended
  t.equal(end.msg, DISCARDED, 'A ended, and what it read was discarded')
  t.not(end.digest, applied.digest, 'A read other material than B')
  t.equal(gw.material, applied, 'B\'s material stays in use')
  t.same(results, ['refused', 'applied'], 'A\'s end reports no reload')
  t.same(await reloadCounts(gw), { refused: 1, applied: 1 }, 'A counted once, as refused at its deadline')
  const ok = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(ok.ok && ok.status === 200, 'the client A\'s CRL revoked is admitted under B\'s CRL')
  t.match(await attempt(gw.url, pki, { client: pki.clients.revoked }), { ok: false }, 'the one B\'s CRL revokes is refused')
})

t.test('a reload\'s deadline is 150 s unless the gateway is built with another, and is cancelled when it ends', async (t) => {
  const { s3 } = await holdableS3(pki)
  const { gw, deadlines } = await start(t, s3)
  t.equal(await gw.reload({ force: true }), 'applied')
  t.same(deadlines.map((d) => [d.ms, d.cancelled]), [[150_000, true]])
})

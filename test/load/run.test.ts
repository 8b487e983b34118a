/**
 * runLoad end to end on the real local stack (SoftHSM token, BACEN simulator over mTLS, pix-proxy as in
 * production): the full mix through the proxy, then the same straight to the simulator with the load tool signing
 * and verifying itself. Every operation must succeed with valid signatures, the counts must add up, and the
 * simulator's accepted-message log (ground truth) must hold what the report claims was sent.
 */
import t from 'tap'
import type { Test } from 'tap'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { loadCommand } from '../../tools/cli/load.ts'
import { captureIo } from '../helpers/cli-io.ts'
import { COUNTERPARTY_ISPB, PROXY_ISPB, startE2e } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import { createDirectTransport, createProxyTransport, OPERATIONS, runLoad } from '../../tools/load/index.ts'
import type { LoadReport, LoadTransport } from '../../tools/load/index.ts'

let e2e: E2e
let proxy: LoadTransport
let direct: LoadTransport

t.before(async () => {
  e2e = await startE2e(t)
  const s = e2e.stack
  proxy = await createProxyTransport({ url: s.proxyUrl, ispb: PROXY_ISPB })
  const cp = s.counterparty.identity
  direct = await createDirectTransport({
    url: s.simulator.dictUrl,
    ispb: COUNTERPARTY_ISPB,
    xmlSigner: cp.signing.xmlSigner,
    bacenTrust: new TrustStore([s.simulatorPki.bcbSigning.certificate]),
    tls: { ca: s.simulatorPki.ca.certPem, certPem: cp.tls.certPem, keyPem: cp.tls.keyPem }
  })
  t.teardown(async () => {
    await proxy.close()
    await direct.close()
  })
})

function assertClean (t: Test, r: LoadReport, rate: number, seconds: number): void {
  for (const op of OPERATIONS) {
    const o = r.ops[op]
    if (o === undefined) {
      t.fail(`${op} ran`)
      continue
    }
    t.ok(o.count > 0, `${op} was sent (${o.count})`)
    t.equal(o.ok, o.count, `${op}: every request succeeded ${JSON.stringify(o.errorsByCode)} ${JSON.stringify(o.errorDetails)}`)
    t.equal(o.signatureFailures, 0, `${op}: no signature failure`)
    t.equal(o.ok + o.errors + o.dropped, o.count, `${op}: count = ok + errors + dropped`)
    if (o.latencyMs.count > 0) {
      const l = o.latencyMs
      t.ok((l.min as number) <= (l.p50 as number) && (l.p50 as number) <= (l.p90 as number) && (l.p90 as number) <= (l.p99 as number) && (l.p99 as number) <= (l.max as number), `${op}: ordered percentiles ${JSON.stringify(l)}`)
    }
    t.equal(o.series.reduce((a, s) => a + s.ok + s.errors + s.dropped, 0), o.count, `${op}: the time series holds every arrival`)
  }
  const sum = Object.values(r.ops).reduce((a, o) => a + o.count, 0)
  t.equal(r.totals.count, sum, 'totals are the sum of the operations')
  t.equal(r.totals.count, r.totals.ok + r.totals.errors + r.totals.dropped, 'sent = ok + errors + dropped')
  // Open model: the schedule is fixed, whatever the answers.
  t.equal(r.totals.count, Math.ceil(rate * seconds), 'every scheduled arrival is accounted for')
  t.equal(r.totals.errors + r.totals.dropped + r.totals.signatureFailures, 0, 'no failure at all')
  t.equal(r.spi.admi002, 0, 'the SPI refused none of the payments')
  t.ok(r.spi.settled > 0, `pacs.002 ACSC reports were read back for the payments (${r.spi.settled} of ${r.ops['spi-send']?.ok})`)
  t.equal(r.spi.messagesSignatureInvalid, 0, 'every stream message verified')
  t.equal(Object.keys(r.prepare.errorsByCode).length, 0, `prepare phase clean ${JSON.stringify(r.prepare.errorsByCode)}`)
}

/** Accepted DICT/SPI messages of `ispb` in the simulator's log from index `from` on, by operation. */
function accepted (from: number, ispb: string): Map<string, { n: number, valid: number }> {
  const out = new Map<string, { n: number, valid: number }>()
  for (const m of e2e.log.slice(from)) {
    if (m.ispb !== ispb) continue
    const name = m.system === 'dict' ? String(m.operation) : `spi ${String(m.msgDefIdr ?? '').split('.').slice(0, 2).join('.')}`
    const e = out.get(name) ?? { n: 0, valid: 0 }
    e.n++
    if (m.signature === 'VALID' || m.signature === 'UNSIGNED') e.valid++
    out.set(name, e)
  }
  return out
}

t.test('the full mix through pix-proxy: all succeed, signatures valid, counts add up', async (t) => {
  const from = e2e.log.length
  const r = await runLoad({ target: proxy, counterparty: direct, model: { kind: 'open', ratePerSec: 30 }, durationMs: 3000 })
  t.equal(r.target, 'proxy')
  t.equal(r.latencyFrom, 'scheduled')
  assertClean(t, r, 30, 3)
  const seen = accepted(from, PROXY_ISPB)
  // Prepare created our keys for the confirmable claims and acknowledged them; the run added the measured writes.
  t.equal(seen.get('createEntry')?.n, (r.ops['create-entry']?.ok ?? 0) + (r.prepare.items['confirm-claim'] ?? 0), 'the simulator accepted every CreateEntry the report counts')
  t.equal(seen.get('createClaim')?.n, r.ops['create-claim']?.ok, 'and every CreateClaim')
  t.equal(seen.get('confirmClaim')?.n, r.ops['confirm-claim']?.ok, 'and every ConfirmClaim')
  t.equal(seen.get('getEntry')?.n, r.ops['get-entry']?.ok, 'and every GetEntry')
  t.equal(seen.get('spi pacs.008')?.n, r.ops['spi-send']?.ok, 'and every pacs.008')
  for (const [op, e] of seen) t.equal(e.valid, e.n, `${op}: every request signed by the HSM key verified at the simulator`)
  t.comment(`proxy: p50/p99 ms ${JSON.stringify(Object.fromEntries(Object.entries(r.ops).map(([k, v]) => [k, [v.latencyMs.p50, v.latencyMs.p99]])))}`)
})

t.test('the full mix straight to the simulator: the tool signs, does mTLS and verifies', async (t) => {
  const from = e2e.log.length
  const r = await runLoad({ target: direct, counterparty: proxy, model: { kind: 'open', ratePerSec: 30 }, durationMs: 3000 })
  t.equal(r.target, 'direct')
  t.equal(r.ispb, COUNTERPARTY_ISPB)
  assertClean(t, r, 30, 3)
  const seen = accepted(from, COUNTERPARTY_ISPB)
  t.equal(seen.get('spi pacs.008')?.n, r.ops['spi-send']?.ok, 'the simulator accepted every pacs.008 the report counts')
  t.equal(seen.get('confirmClaim')?.n, r.ops['confirm-claim']?.ok, 'and every ConfirmClaim')
  for (const [op, e] of seen) t.equal(e.valid, e.n, `${op}: every request this process signed verified at the simulator`)
  t.comment(`direct: p50/p99 ms ${JSON.stringify(Object.fromEntries(Object.entries(r.ops).map(([k, v]) => [k, [v.latencyMs.p50, v.latencyMs.p99]])))}`)
})

t.test('a bad BACEN signature is counted as a signature failure, not as a success', async (t) => {
  e2e.setFaults({ responseSignature: 'invalid', routes: ['/api/v2/entries'] })
  t.teardown(() => { e2e.setFaults({}) })
  const r = await runLoad({ target: proxy, model: { kind: 'open', ratePerSec: 20 }, durationMs: 1000, mix: { 'create-entry': 1 } })
  const o = r.ops['create-entry']
  t.equal(o?.count, 20)
  t.equal(o?.ok, 0, 'no success: the proxy refused every badly signed answer')
  t.equal(o?.signatureFailures, 20, 'each one is a signature failure')
  t.same(Object.keys(o?.errorsByCode ?? {}), ['502 PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID'])
})

t.test('options out of range and a mix without its counterparty are usage errors', async (t) => {
  await t.rejects(runLoad({ target: proxy, model: { kind: 'open', ratePerSec: 0 } }), { code: 'PIXPROXY_ERR_USAGE' })
  await t.rejects(runLoad({ target: proxy, model: { kind: 'closed', concurrency: 1.5 } }), { code: 'PIXPROXY_ERR_USAGE' })
  await t.rejects(runLoad({ target: proxy, model: { kind: 'open', ratePerSec: 1 }, mix: { 'get-entry': 1 } }), { code: 'PIXPROXY_ERR_USAGE', message: /counterparty/ })
  await t.rejects(runLoad({ target: proxy, counterparty: proxy, model: { kind: 'open', ratePerSec: 1 } }), { code: 'PIXPROXY_ERR_USAGE', message: /another participant/ })
  await t.rejects(runLoad({ target: proxy, model: { kind: 'open', ratePerSec: 1 }, mix: { 'create-entry': -1 } }), { code: 'PIXPROXY_ERR_USAGE', message: /non-negative/ })
  await t.rejects(runLoad({ target: proxy, model: { kind: 'open', ratePerSec: 1 }, mix: { 'spi-send': 0 } }), { code: 'PIXPROXY_ERR_USAGE', message: /no operation/ })
})

t.test('pix-proxy load --pki takes the demo\'s directory: the stack writes the simulator PKI files load needs', async (t) => {
  const bacen = join(e2e.dir, 'bacen')
  for (const f of ['ca.pem', 'bcb-signing.pem', 'bcb-signing-expired.pem', 'participants/99999010/tls.pem', 'participants/99999010/signing.pem']) {
    t.ok(statSync(join(bacen, f)).isFile(), `bacen/${f}`)
  }
  for (const f of ['participants/99999010/tls.key', 'participants/99999010/signing.key']) {
    t.equal(statSync(join(bacen, f)).mode & 0o777, 0o600, `bacen/${f} is private (0600)`)
  }
  const c = captureIo()
  // The demo directory itself, as `make demo` leaves .local/demo: the full mix through the proxy, the counterparty
  // from the directory preparing keys and claims at the demo's simulator.
  const code = await loadCommand(['--url', e2e.stack.proxyUrl, '--pki', e2e.dir, '--simulator-url', e2e.stack.simulator.dictUrl, '--rate', '20', '--duration', '1s', '--json'], c.io)
  const { stdout, stderr } = c.text()
  t.equal(code, 0, stderr)
  const r = JSON.parse(stdout) as LoadReport
  t.same(Object.keys(r.ops).sort(), [...OPERATIONS].sort(), 'the full mix, counterparty operations included')
  t.equal(r.totals.count, 20)
  t.equal(r.totals.ok, 20, JSON.stringify(r.totals.errorsByCode))
  t.ok(r.prepare.ok > 0 && r.prepare.ok === r.prepare.requests, 'prepared by the counterparty from the demo directory')
  // The demo's own participant keeps its keys in the HSM: the simulator target cannot sign as it from files.
  const d = captureIo()
  t.equal(await loadCommand(['--target', 'simulator', '--url', e2e.stack.simulator.dictUrl, '--pki', e2e.dir, '--duration', '1s'], d.io).catch((err: { code?: string, message?: string }) => {
    t.equal(err.code, 'PIXPROXY_ERR_USAGE')
    t.match(err.message, /no identity for 99999004 .*HSM/)
    return 2
  }), 2)
})

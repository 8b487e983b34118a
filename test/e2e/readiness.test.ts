/**
 * Readiness means "this task can serve now" (src/routes/health.ts): it goes false when the task's own means fail
 * (audit spool at its high-water mark, audit thread dead, HSM gone) and stays true while BACEN cannot be reached,
 * which every task sees alike. One stack; the causes that cannot be undone in-process come last.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import type { AuditStatus } from '../../src/audit/service.ts'
import type { Readiness } from '../../src/routes/health.ts'
import { metricSamples, startE2e } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })

async function readiness (): Promise<{ status: number, body: Readiness }> {
  // Probes are cached for 5 s; each step asks afresh rather than waiting that out.
  e2e.stack.proxy.health.forget()
  const res = await e2e.proxy('GET', '/readyz')
  return { status: res.status, body: JSON.parse(res.text) as Readiness }
}

t.test('BACEN unreachable: still ready, reported under upstreams and in pixproxy_upstream_reachable', async (t) => {
  const server = e2e.stack.simulator.app.server
  // Every connection dropped before TLS begins: what a BACEN outage or a cut RSFN link looks like from here.
  const drop = (socket: Socket): void => { socket.destroy() }
  server.prependListener('connection', drop)
  server.closeAllConnections()
  try {
    const { status, body } = await readiness()
    t.equal(status, 200, JSON.stringify(body))
    t.equal(body.status, 'ready')
    t.equal(body.checks.tls?.ok, true, 'our identity is not in question')
    t.equal(body.upstreams?.dict?.reachable, false)
    t.equal(body.upstreams?.spi?.reachable, false)
    t.notMatch(body.upstreams?.dict?.detail, /refused our client certificate/)
    const m = (await e2e.proxy('GET', '/metrics')).text
    t.same(metricSamples(m, 'pixproxy_upstream_reachable', { upstream: 'dict' }), [0])
    t.same(metricSamples(m, 'pixproxy_upstream_reachable', { upstream: 'spi' }), [0])
  } finally {
    server.off('connection', drop)
  }
  const { status, body } = await readiness()
  t.equal(status, 200)
  t.equal(body.upstreams?.dict?.reachable, true, 'back once BACEN answers')
  const m = (await e2e.proxy('GET', '/metrics')).text
  t.same(metricSamples(m, 'pixproxy_upstream_reachable', { upstream: 'dict' }), [1])
})

t.test('audit spool at its high-water mark (90 % of PIXPROXY_AUDIT_SPOOL_MAX_BYTES): not ready, and ready again below it', async (t) => {
  const audit = e2e.stack.proxy.audit
  const real = audit.status
  const real0 = await real()
  if (real0 === null) throw new Error('auditing is on in the local stack')
  const max = real0.spool.maxBytes
  // The worker's snapshot with the spool filled to a given level: filling a 2 GiB spool for real would need the
  // sink down for a long time; the rule reads only these numbers.
  const at = (bytes: number): void => {
    audit.status = async () => ({ ...real0, spool: { ...real0.spool, bytes, nearFull: bytes >= 0.8 * max } } satisfies AuditStatus)
  }
  t.teardown(() => { audit.status = real })
  at(Math.ceil(0.9 * max))
  let r = await readiness()
  t.equal(r.status, 503, JSON.stringify(r.body))
  t.equal(r.body.checks.audit?.ok, false)
  t.match(r.body.checks.audit?.detail, /high-water/)
  t.equal(r.body.checks.hsm?.ok, true, 'nothing else is wrong')
  at(Math.floor(0.9 * max) - 1)
  r = await readiness()
  t.equal(r.status, 200, 'below the mark: ready (the near-full warning stays in the detail)')
  t.match(r.body.checks.audit?.detail, /WARNING: spool near full/)
  audit.status = real
  r = await readiness()
  t.equal(r.status, 200)
})

t.test('audit writer thread dead: not ready', async (t) => {
  const worker = e2e.stack.proxy.audit.worker
  if (worker === null) throw new Error('auditing is on in the local stack')
  await worker.abort()
  const { status, body } = await readiness()
  t.equal(status, 503, JSON.stringify(body))
  t.equal(body.checks.audit?.ok, false)
  t.match(body.checks.audit?.detail, /AUDIT_WORKER_FAILED/)
  t.equal(body.checks.hsm?.ok, true)
  t.equal(body.checks.tls?.ok, true)
})

// Last: finalising the PKCS#11 module takes the TLS engine's key with it for the rest of the process.
t.test('HSM gone: not ready, on the HSM and on the TLS key both', async (t) => {
  const keyStore = e2e.stack.proxy.crypto.keyStore
  if (keyStore === null) throw new Error('the local stack signs in the HSM')
  await keyStore.close()
  const { status, body } = await readiness()
  t.equal(status, 503, JSON.stringify(body))
  t.equal(body.checks.hsm?.ok, false)
  t.match(body.checks.hsm?.detail, /HSM_POOL_CLOSED/)
  t.equal(body.checks.tls?.ok, false, 'the TLS key agent cannot sign a handshake')
  t.match(body.checks.tls?.detail, /could not complete a handshake/)
})

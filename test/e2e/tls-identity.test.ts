/**
 * The proxy's mutual-TLS identity refused by BACEN: the simulator stops trusting the CA that issued the proxy's
 * client certificate (the key stays in the HSM; the certificate is now from a CA BACEN does not know). Every request
 * fails with a stable 502 and nothing reaches BACEN, the counterparty (a trusted CA) still gets through, and the
 * task is not ready: its identity is wrong, which a task started with the right certificate does not share (BACEN
 * merely unreachable leaves it ready: test/e2e/readiness.test.ts). Trusted again, it is ready again.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import type { Test } from 'tap'
import { pacs008 } from '../../tools/samples/messages.ts'
import { COUNTERPARTY_ISPB, PROXY_ISPB, problemOf, startE2e } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'
import type { Readiness } from '../../src/routes/health.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })

/** Only the simulator's own PKI CA is trusted for client certificates from now on (new connections); or, with
 * `trustProxy`, the proxy's CA (the token's) again, as tools/demo/stack.ts starts it. */
function distrustProxyCa (maxVersion: 'TLSv1.2' | 'TLSv1.3', trustProxy = false): void {
  const pki = e2e.stack.simulatorPki
  const server = e2e.stack.simulator.app.server
  server.setSecureContext({ cert: pki.bcbTls.certPem, key: pki.bcbTls.keyPem, ca: trustProxy ? pki.ca.certPem + '\n' + readFileSync(e2e.stack.hsm.caCertFile, 'utf8') : pki.ca.certPem, minVersion: 'TLSv1.2', maxVersion })
  server.closeAllConnections()
}

/**
 * On TLS 1.2 BACEN's alert ends the handshake before anything is written: NOT SENT. On TLS 1.3 the client has
 * finished its handshake, and written its request, before BACEN judges the certificate; the refusal arrives as a
 * closed connection that nothing distinguishes from a reset after BACEN read the request: OUTCOME UNKNOWN
 * (docs/outcomes.md). Either way nothing got past BACEN's TLS.
 */
async function assertRefused (t: Test, version: 'TLSv1.2' | 'TLSv1.3'): Promise<void> {
  const mark = e2e.seen.length
  const logged = e2e.log.length
  const expected = version === 'TLSv1.2'
    // The alert, or the connection BACEN closes with it, during the handshake: either way a failure to connect.
    ? { code: /^PIXPROXY_ERR_UPSTREAM_(UNAVAILABLE|TLS_HANDSHAKE)$/, outcome: 'not-sent' }
    : { code: 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', outcome: 'unknown', reason: 'PIXPROXY_ERR_UPSTREAM_CONNECTION_LOST' }
  const dict = await e2e.proxy('GET', '/api/v2/policies/', { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  t.equal(dict.status, 502, dict.text.slice(0, 200))
  t.match(problemOf(dict), expected, `DICT: ${String(expected.code)}`)
  const spi = await e2e.proxyXml(`/api/v1/in/${PROXY_ISPB}/msgs`, pacs008().xml)
  t.equal(spi.status, 502)
  t.match(problemOf(spi), expected, `ICOM: ${String(expected.code)}`)
  t.same(e2e.seenSince(mark), [], 'no request got past BACEN\'s TLS')
  t.equal(e2e.log.length, logged, 'nothing accepted')
  const counterparty = await e2e.stack.counterparty.client.request('GET', '/api/v2/policies/', { headers: { 'pi-requestingparticipant': COUNTERPARTY_ISPB } })
  t.equal(counterparty.status, 200, 'a participant with a trusted certificate still gets through')
}

async function readiness (): Promise<{ status: number, body: Readiness }> {
  // /readyz caches its probes for 5 s: each step asks afresh instead of sleeping that out.
  e2e.stack.proxy.health.forget()
  const res = await e2e.proxy('GET', '/readyz')
  return { status: res.status, body: JSON.parse(res.text) as Readiness }
}

async function assertIdentityRefused (t: Test): Promise<void> {
  const { status, body } = await readiness()
  t.equal(status, 503, `readyz: ${JSON.stringify(body)}`)
  t.equal(body.status, 'not ready')
  t.equal(body.checks.hsm?.ok, true, 'the HSM itself is fine')
  t.equal(body.checks.tls?.ok, false, 'our identity is refused')
  t.match(body.checks.tls?.detail, /BACEN refused our client certificate \(dict, spi\)/)
  t.equal(body.upstreams?.dict?.reachable, false, 'dict reported')
  t.equal(body.upstreams?.spi?.reachable, false, 'spi reported')
}

t.test('client certificate from a CA BACEN does not trust (TLS 1.3): requests fail with 502, readiness reports it', async (t) => {
  distrustProxyCa('TLSv1.3')
  await assertRefused(t, 'TLSv1.3')
  await assertIdentityRefused(t)
})

t.test('client certificate from a CA BACEN does not trust (TLS 1.2): requests fail with 502, readyz 503', async (t) => {
  distrustProxyCa('TLSv1.2')
  await assertRefused(t, 'TLSv1.2')
  await assertIdentityRefused(t)
})

t.test('trusted again: ready again', async (t) => {
  distrustProxyCa('TLSv1.3', true)
  const { status, body } = await readiness()
  t.equal(status, 200, JSON.stringify(body))
  t.equal(body.checks.tls?.ok, true)
  t.equal(body.upstreams?.dict?.reachable, true)
})

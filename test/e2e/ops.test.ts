/**
 * The operational endpoints of a proxy configured as in production (HSM signer, engine mTLS): liveness,
 * readiness with its HSM and BACEN checks, and Prometheus metrics that move with real traffic.
 */
import t from 'tap'
import { createEntryRequest, pacs008 } from '../../src/samples/messages.ts'
import { metricSamples, PROXY_ISPB, startE2e } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })

interface Readiness {
  status: string
  checks: Record<string, { ok: boolean, detail: string }>
}

const sum = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0)

t.test('/healthz answers 200 without touching dependencies', async (t) => {
  const mark = e2e.seen.length
  const res = await e2e.proxy('GET', '/healthz')
  t.equal(res.status, 200)
  t.same(JSON.parse(res.text), { status: 'ok' })
  t.same(e2e.seenSince(mark), [], 'BACEN is not contacted')
})

t.test('/readyz answers 200 with the HSM, DICT, SPI and audit checks passing', async (t) => {
  const res = await e2e.proxy('GET', '/readyz')
  t.equal(res.status, 200, res.text)
  const body = JSON.parse(res.text) as Readiness
  t.equal(body.status, 'ready')
  t.same(Object.keys(body.checks).sort(), ['audit', 'dict', 'hsm', 'spi'])
  t.equal(body.checks.audit?.ok, true)
  t.match(body.checks.audit?.detail, /rows pending/)
  t.equal(body.checks.hsm?.ok, true)
  t.match(body.checks.hsm?.detail, /idle of \d+ sessions/)
  t.equal(body.checks.dict?.ok, true)
  t.match(body.checks.dict?.detail, /^TLSv1\.[23]$/, 'a mutual-TLS handshake with the HSM-held client key')
  t.equal(body.checks.spi?.ok, true)
})

t.test('/metrics exposes request, signature, HSM and ICOM metrics after traffic', async (t) => {
  const before = (await e2e.proxy('GET', '/metrics')).text
  const created = await e2e.proxyXml('/api/v2/entries/', createEntryRequest().xml)
  t.equal(created.status, 201)
  const posted = await e2e.proxyXml(`/api/v1/in/${PROXY_ISPB}/msgs`, pacs008().xml)
  t.equal(posted.status, 201)
  const read = await e2e.readStream({ multipart: true, until: (ms) => ms.length > 0 })
  t.ok(read.messages.length > 0)

  const res = await e2e.proxy('GET', '/metrics')
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  const m = res.text
  const delta = (name: string, labels: Record<string, string>): number => sum(metricSamples(m, name, labels)) - sum(metricSamples(before, name, labels))

  t.equal(delta('pixproxy_requests_total', { route: '/api/v2/entries/', method: 'POST', status: '201' }), 1, 'the DICT write counted by route template')
  t.equal(delta('pixproxy_requests_total', { route: '/api/v1/in/:ispb/msgs', method: 'POST', status: '201' }), 1, 'the ICOM POST counted by route template')
  t.ok(delta('pixproxy_response_signatures_total', { upstream: 'dict', code: 'VALID' }) >= 1, 'DICT answer verified VALID')
  t.ok(delta('pixproxy_response_signatures_total', { upstream: 'spi', code: 'VALID' }) >= 1, 'stream message verified VALID')
  t.equal(delta('pixproxy_sign_duration_seconds_count', { profile: 'dict' }), 1, 'one DICT signature')
  t.equal(delta('pixproxy_sign_duration_seconds_count', { profile: 'spi' }), 1, 'one SPI signature')
  t.ok(delta('pixproxy_upstream_requests_total', { upstream: 'spi', status: '201' }) === 1)

  const idle = metricSamples(m, 'pixproxy_hsm_sessions', { state: 'idle' })
  t.same(idle, [e2e.stack.config.hsm?.poolSize], 'every HSM session idle again')
  t.same(metricSamples(m, 'pixproxy_hsm_sessions', { state: 'busy' }), [0])
  t.same(metricSamples(m, 'pixproxy_spi_in_flight'), [0], 'pixproxy_spi_in_flight exposed, back to 0')
  t.same(metricSamples(m, 'pixproxy_spi_queued'), [0])
  t.ok(metricSamples(m, 'pixproxy_process_cpu_user_seconds_total').length === 1, 'process metrics on the app registry')
})

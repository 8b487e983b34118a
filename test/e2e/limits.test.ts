/**
 * The proxy's own limits over real sockets, with a slow simulator: the ICOM in-flight limiter (BACEN allows 6
 * concurrent requests per participant and answers 429 beyond; the proxy holds the excess and sheds with 503 +
 * Retry-After) and the upstream headers timeout (504 with a stable code).
 */
import t from 'tap'
import type { Test } from 'tap'
import { pacs008 } from '../../src/samples/messages.ts'
import { header, metricSamples, PROXY_ISPB, problemOf, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'

const HEADERS_TIMEOUT_MS = 1_000
const QUEUE_TIMEOUT_MS = 300

let e2e: E2e
t.before(async () => {
  e2e = await startE2e(t, {
    settings: {
      PIXPROXY_SPI_MAX_IN_FLIGHT: '1',
      PIXPROXY_SPI_QUEUE_MAX: '1',
      PIXPROXY_SPI_QUEUE_TIMEOUT_MS: String(QUEUE_TIMEOUT_MS),
      PIXPROXY_UPSTREAM_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS)
    }
  })
})
t.afterEach(() => { e2e.setFaults({}) })

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`

function codes (responses: readonly ProxyResponse[]): string[] {
  return responses.map((r) => r.status === 503 ? problemOf(r).code : String(r.status)).sort()
}

function assertShed (t: Test, responses: readonly ProxyResponse[]): void {
  for (const r of responses.filter((x) => x.status === 503)) {
    t.equal(header(r, 'retry-after'), '1', `${problemOf(r).code}: Retry-After`)
    t.match(header(r, 'content-type'), /^application\/problem\+json/)
  }
}

t.test('ICOM POSTs beyond the limit: one in flight, one queued until its deadline, the rest shed at once', async (t) => {
  // Slower than the queue deadline, faster than the headers timeout.
  e2e.setFaults({ latencyMs: 700, routes: ['/api/v1/in/'] })
  const mark = e2e.seen.length
  const logged = e2e.log.length
  const results = await Promise.all([0, 1, 2].map(async () => await e2e.proxyXml(MSGS, pacs008().xml)))
  t.same(codes(results), ['201', 'PIXPROXY_ERR_SPI_QUEUE_FULL', 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT'])
  assertShed(t, results)
  t.equal(e2e.seenSince(mark, '/api/v1/in/').length, 1, 'only the admitted POST reached the SPI')
  t.equal(e2e.log.length - logged, 1, 'one message accepted')
  t.equal(e2e.maxConcurrent('/api/v1/in/', mark), 1)
})

t.test('queued POSTs are sent one at a time: the SPI never sees more than the limit concurrently', async (t) => {
  // Faster than the queue deadline: the queued request gets the slot in time.
  e2e.setFaults({ latencyMs: 220, routes: ['/api/v1/in/'] })
  const mark = e2e.seen.length
  const first = e2e.proxyXml(MSGS, pacs008().xml)
  // The second arrives while the first holds the slot.
  t.ok(await waitFor(() => e2e.seenSince(mark, '/api/v1/in/').length === 1), 'the first POST reached the SPI')
  const metrics = (await e2e.proxy('GET', '/metrics')).text
  t.same(metricSamples(metrics, 'pixproxy_spi_in_flight'), [1], 'pixproxy_spi_in_flight while one POST is at BACEN')
  const second = e2e.proxyXml(MSGS, pacs008().xml)
  const results = await Promise.all([first, second])
  t.same(results.map((r) => r.status), [201, 201])
  t.equal(e2e.seenSince(mark, '/api/v1/in/').length, 2)
  t.equal(e2e.maxConcurrent('/api/v1/in/', mark), 1, 'serialised at the SPI')
  const after = (await e2e.proxy('GET', '/metrics')).text
  t.same(metricSamples(after, 'pixproxy_spi_in_flight'), [0])
  t.same(metricSamples(after, 'pixproxy_spi_queued'), [0])
})

t.test('stream readers are limited the same way', async (t) => {
  e2e.setFaults({ latencyMs: 700, routes: ['/api/v1/out/'] })
  const mark = e2e.seen.length
  const results = await Promise.all([0, 1, 2].map(async () => await e2e.proxy('GET', `/api/v1/out/${PROXY_ISPB}/stream/start`)))
  t.same(codes(results).filter((c) => c.startsWith('PIXPROXY')), ['PIXPROXY_ERR_SPI_QUEUE_FULL', 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT'])
  assertShed(t, results)
  t.equal(e2e.maxConcurrent('/api/v1/out/', mark), 1)
  const admitted = results.find((r) => r.status !== 503)
  t.ok(admitted !== undefined && (admitted.status === 200 || admitted.status === 204), 'the admitted reader got its page')
  const next = header(admitted ?? { headers: {} }, 'pi-pull-next')
  if (next !== undefined) t.equal((await e2e.proxy('DELETE', next)).status, 204)
})

t.test('BACEN slower than PIXPROXY_UPSTREAM_HEADERS_TIMEOUT_MS: 504 UPSTREAM_HEADERS_TIMEOUT', async (t) => {
  e2e.setFaults({ latencyMs: 3_000, routes: ['/api/v2/policies/', '/api/v1/in/'] })
  const started = Date.now()
  const dict = await e2e.proxy('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  const took = Date.now() - started
  t.equal(dict.status, 504, dict.text.slice(0, 200))
  t.equal(problemOf(dict).code, 'PIXPROXY_ERR_UPSTREAM_HEADERS_TIMEOUT')
  t.ok(took >= HEADERS_TIMEOUT_MS && took < 2_900, `gave up after ${took} ms, before BACEN answered`)

  const spi = await e2e.proxyXml(MSGS, pacs008().xml)
  t.equal(spi.status, 504)
  const p = problemOf(spi)
  t.equal(p.code, 'PIXPROXY_ERR_UPSTREAM_HEADERS_TIMEOUT')
  t.match(p.detail, /may have processed/, 'the caller is told the message may have been accepted')
  const metrics = (await e2e.proxy('GET', '/metrics')).text
  t.same(metricSamples(metrics, 'pixproxy_spi_in_flight'), [0], 'the ICOM slot was released')
})

/**
 * The proxy's own limits over real sockets, with a slow simulator: the ICOM in-flight limiter (BACEN allows 6
 * concurrent requests per participant and answers 429 beyond; the proxy holds the excess and sheds with 503 +
 * Retry-After) and the upstream headers timeout (504 with a stable code).
 */
import t from 'tap'
import type { Test } from 'tap'
import { buildMultipart } from '../../src/http/multipart.ts'
import { pacs008 } from '../../tools/samples/messages.ts'
import { header, metricSamples, PROXY_ISPB, problemOf, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'
import { holdRequests } from '../helpers/gate.ts'
import type { RequestGate } from '../helpers/gate.ts'

// BACEN holds the admitted request until the test releases it (a gate, not a latency), so a queued request gives up
// whatever the machine's speed. The queue deadline only has to outlast what the test does while one waits (poll
// /metrics, send and sign one more request), and the held request's headers timeout has to outlast the queue
// deadline plus that: seconds of margin either way on a loaded machine.
const QUEUE_TIMEOUT_MS = 2_500
const HEADERS_TIMEOUT_MS = 6_000
// Far above the headers timeout, so that the connection and the HSM-signed handshake of a loaded machine never let
// the deadline end a call the headers timeout test expects to end.
const DEADLINE_MS = 15_000

let e2e: E2e
t.before(async () => {
  e2e = await startE2e(t, {
    settings: {
      PIXPROXY_SPI_MAX_IN_FLIGHT: '1',
      PIXPROXY_SPI_QUEUE_MAX: '1',
      PIXPROXY_SPI_QUEUE_TIMEOUT_MS: String(QUEUE_TIMEOUT_MS),
      PIXPROXY_UPSTREAM_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
      PIXPROXY_UPSTREAM_DEADLINE_MS: String(DEADLINE_MS)
    }
  })
})
t.afterEach(() => { e2e.setFaults({}) })

/** Holds requests on these paths at BACEN until the test releases them (and at the end of the test). */
function bacenHolds (t: Test, prefixes: string[]): RequestGate {
  const gate = holdRequests(e2e.stack.simulator.app.server, prefixes)
  t.teardown(() => { gate.restore() })
  return gate
}

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`

function codes (responses: readonly ProxyResponse[]): string[] {
  return responses.map((r) => r.status === 503 ? problemOf(r).code : String(r.status)).sort()
}

/** Polls the proxy's /metrics until the gauge shows the value. */
async function waitForMetric (name: string, value: number): Promise<boolean> {
  return await waitFor(async () => {
    const samples = metricSamples((await e2e.proxy('GET', '/metrics')).text, name)
    return samples.length === 1 && samples[0] === value
  }, 5_000, 10)
}

function assertShed (t: Test, responses: readonly ProxyResponse[]): void {
  for (const r of responses.filter((x) => x.status === 503)) {
    t.equal(header(r, 'retry-after'), '1', `${problemOf(r).code}: Retry-After`)
    t.match(header(r, 'content-type'), /^application\/problem\+json/)
  }
}

t.test('ICOM POSTs beyond the limit: one in flight, one queued until its deadline, the rest shed at once', async (t) => {
  const bacen = bacenHolds(t, ['/api/v1/in/'])
  const mark = e2e.seen.length
  const logged = e2e.log.length
  // Each POST is signed before it asks for a slot, so three sent together reach the limiter at moments the
  // machine decides; sent one after the other, each finds the state the assertion is about.
  const first = e2e.proxyXml(MSGS, pacs008().xml)
  t.ok(await waitFor(() => bacen.held() === 1), 'the first POST holds the slot (BACEN holds it until released)')
  t.same(metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_spi_in_flight'), [1], 'pixproxy_spi_in_flight while one POST is at BACEN')
  const second = e2e.proxyXml(MSGS, pacs008().xml)
  t.ok(await waitForMetric('pixproxy_spi_queued', 1), 'the second POST waits in the queue')
  const third = await e2e.proxyXml(MSGS, pacs008().xml)
  t.equal(codes([third])[0], 'PIXPROXY_ERR_SPI_QUEUE_FULL', 'the third is shed while the second still waits')
  const gaveUp = await second
  t.equal(bacen.held(), 1, 'the second gave up while the first was still at BACEN')
  bacen.release()
  const results = [await first, gaveUp, third]
  t.same(results.map((r) => codes([r])[0]), ['201', 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT', 'PIXPROXY_ERR_SPI_QUEUE_FULL'])
  assertShed(t, results)
  t.equal(e2e.seenSince(mark, '/api/v1/in/').length, 1, 'only the admitted POST reached the SPI')
  t.equal(e2e.log.length - logged, 1, 'one message accepted')
  t.equal(e2e.maxConcurrent('/api/v1/in/', mark), 1)
})

t.test('queued POSTs are sent one at a time: the SPI never sees more than the limit concurrently', async (t) => {
  const bacen = bacenHolds(t, ['/api/v1/in/'])
  const mark = e2e.seen.length
  const first = e2e.proxyXml(MSGS, pacs008().xml)
  // The second arrives while the first holds the slot (BACEN answers the first only once the second is queued).
  t.ok(await waitFor(() => bacen.held() === 1), 'the first POST reached the SPI')
  const second = e2e.proxyXml(MSGS, pacs008().xml)
  t.ok(await waitForMetric('pixproxy_spi_queued', 1), 'the second waits for the slot')
  bacen.release()
  const results = await Promise.all([first, second])
  t.same(results.map((r) => r.status), [201, 201])
  t.equal(e2e.seenSince(mark, '/api/v1/in/').length, 2)
  t.equal(e2e.maxConcurrent('/api/v1/in/', mark), 1, 'serialised at the SPI')
  const after = (await e2e.proxy('GET', '/metrics')).text
  t.same(metricSamples(after, 'pixproxy_spi_in_flight'), [0])
  t.same(metricSamples(after, 'pixproxy_spi_queued'), [0])
})

t.test('a multipart POST waiting for the slot counts as one queued request', async (t) => {
  const bacen = bacenHolds(t, ['/api/v1/in/'])
  const first = e2e.proxyXml(MSGS, pacs008().xml)
  t.ok(await waitFor(() => bacen.held() === 1), 'the first POST holds the slot (BACEN holds it until released)')
  const mp = buildMultipart([pacs008(), pacs008()].map((m) => ({ headers: { 'content-type': 'application/xml; charset=utf-8' }, body: Buffer.from(m.xml) })))
  const second = e2e.proxy('POST', MSGS, { headers: { 'content-type': mp.contentType }, body: mp.body })
  t.ok(await waitForMetric('pixproxy_spi_queued', 1), 'pixproxy_spi_queued counts the waiting post once')
  const gaveUp = await second
  t.ok(await waitForMetric('pixproxy_spi_queued', 0), 'and not after it gave up')
  t.equal(bacen.held(), 1, 'it gave up while the first was still at BACEN')
  bacen.release()
  t.same([(await first).status, codes([gaveUp])[0]], [201, 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT'])
})

t.test('stream readers are limited the same way', async (t) => {
  const bacen = bacenHolds(t, ['/api/v1/out/'])
  const mark = e2e.seen.length
  const start = `/api/v1/out/${PROXY_ISPB}/stream/start`
  const first = e2e.proxy('GET', start)
  t.ok(await waitFor(() => bacen.held() === 1), 'the first reader holds the slot (BACEN holds it until released)')
  t.ok(await waitForMetric('pixproxy_spi_readers_in_flight', 1), 'pixproxy_spi_readers_in_flight counts it')
  // A reader asks for its slot before any other work, so these two reach the limiter together.
  const shedding = Promise.all([0, 1].map(async () => await e2e.proxy('GET', start)))
  t.ok(await waitForMetric('pixproxy_spi_readers_queued', 1), 'pixproxy_spi_readers_queued counts the one waiting')
  const shed = await shedding
  t.ok(await waitForMetric('pixproxy_spi_readers_queued', 0), 'and not after it gave up')
  t.equal(bacen.held(), 1, 'they were shed while the first was still at BACEN')
  bacen.release()
  const admitted = await first
  t.same(codes(shed), ['PIXPROXY_ERR_SPI_QUEUE_FULL', 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT'])
  assertShed(t, shed)
  t.equal(e2e.maxConcurrent('/api/v1/out/', mark), 1)
  t.ok(admitted.status === 200 || admitted.status === 204, 'the admitted reader got its page')
  const next = header(admitted, 'pi-pull-next')
  if (next !== undefined) t.equal((await e2e.proxy('DELETE', next)).status, 204)
})

t.test('BACEN slower than PIXPROXY_UPSTREAM_HEADERS_TIMEOUT_MS: 502 UPSTREAM_OUTCOME_UNKNOWN (reason UPSTREAM_HEADERS_TIMEOUT)', async (t) => {
  // BACEN holds these requests until the end of the test: it never answers before the proxy gives up.
  const bacen = bacenHolds(t, ['/api/v2/policies/', '/api/v1/in/'])
  // DICT and SPI at the same time: both wait out the same timeout.
  const started = Date.now()
  const [{ dict, took }, spi] = await Promise.all([
    e2e.proxy('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: { 'pi-requestingparticipant': PROXY_ISPB } }).then((r) => ({ dict: r, took: Date.now() - started })),
    e2e.proxyXml(MSGS, pacs008().xml)
  ])
  t.equal(dict.status, 502, dict.text.slice(0, 200))
  t.match(problemOf(dict), { code: 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', reason: 'PIXPROXY_ERR_UPSTREAM_HEADERS_TIMEOUT' })
  // undici runs timeouts above 1 s on a shared 0.5 s tick, so one can fire up to ~0.5 s early (measured 3,514 ms
  // for 3,600).
  t.ok(took >= HEADERS_TIMEOUT_MS - 600, `gave up after ${took} ms, not before the timeout`)
  t.equal(spi.status, 502)
  const p = problemOf(spi)
  t.match(p, { code: 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', outcome: 'unknown', reason: 'PIXPROXY_ERR_UPSTREAM_HEADERS_TIMEOUT' })
  t.match(p.detail, /may have reached ICOM and been acted on/, 'the caller is told the message may have been accepted')
  t.equal(header(spi, 'retry-after'), undefined, 'and is not invited to retry')
  t.equal(bacen.held(), 2, 'both reached BACEN and BACEN had answered neither: they are still held there')
  const metrics = (await e2e.proxy('GET', '/metrics')).text
  t.same(metricSamples(metrics, 'pixproxy_spi_in_flight'), [0], 'the ICOM slot was released')
})

t.test('BACEN dribbling its answer a byte at a time: the call is abandoned at PIXPROXY_UPSTREAM_DEADLINE_MS and its slot freed', async (t) => {
  // One byte every 400 ms: each gap is far inside the body timeout (10 s), and the whole answer would take many
  // minutes. Before, such an answer held its ICOM slot for as long as BACEN kept dribbling.
  // The ICOM post is answered with a (dribbled) 400 problem: ICOM's 201 has no body to dribble.
  e2e.setFaults({ dribbleMs: 400, errorRate: 1, errorStatus: 400, routes: ['/api/v2/policies/', '/api/v1/in/'] })
  const mark = e2e.seen.length
  const started = Date.now()
  const [dict, post] = await Promise.all([
    e2e.proxy('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: { 'pi-requestingparticipant': PROXY_ISPB } }),
    e2e.proxyXml(MSGS, pacs008().xml)
  ])
  const took = Date.now() - started
  t.ok(took >= DEADLINE_MS - 600, `gave up after ${took} ms, not before the deadline`)
  for (const [what, res] of [['DICT read', dict], ['ICOM post', post]] as const) {
    t.equal(res.status, 502, `${what}: ${res.text.slice(0, 200)}`)
    t.match(problemOf(res), { code: 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', outcome: 'unknown', reason: 'PIXPROXY_ERR_UPSTREAM_DEADLINE', upstreamStatus: 400 }, what)
  }
  t.equal(e2e.seenSince(mark).length, 2, 'both reached BACEN')
  e2e.setFaults({})
  // The one ICOM slot (PIXPROXY_SPI_MAX_IN_FLIGHT=1) is free again: the next post goes at once.
  t.equal(metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_spi_in_flight')[0], 0, 'no ICOM slot held')
  t.equal((await e2e.proxyXml(MSGS, pacs008().xml)).status, 201, 'the next post is served')
})

/**
 * W3C trace context through the proxy (issue 14): a caller's valid traceparent gives the request its trace id
 * (every log line of the request, the audit row's trace_id, the traceparent answered with the proxy's span as
 * parent-id); an invalid or absent one is never refused, the proxy starts a trace of its own; and no tracing
 * header ever reaches BACEN (ICOM answers 400 to headers it does not document).
 */
import { Writable } from 'node:stream'
import { join } from 'node:path'
import t from 'tap'
import { pino } from 'pino'
import { queryAudit } from '../../tools/audit/query.ts'
import { createEntryRequest, pacs008 } from '../../tools/samples/messages.ts'
import { header, PROXY_ISPB, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const PARENT = '00f067aa0ba902b7'
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/

const lines: Array<Record<string, unknown>> = []
const capture = new Writable({
  write (chunk: Buffer, _enc, done) {
    for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>)
    done()
  }
})

let e2e: E2e
t.before(async () => { e2e = await startE2e(t, { proxyLogger: pino({ level: 'debug' }, capture) }) })

async function auditRow (requestId: string): Promise<Record<string, unknown> | undefined> {
  let row: Record<string, unknown> | undefined
  // The bound only ends a failing test: shipping and DuckDB on a loaded 2-core machine can take seconds.
  await waitFor(async () => {
    for await (const r of queryAudit(join(e2e.dir, 'audit', 'lake'), `SELECT * FROM audit WHERE correlation_id = '${requestId}'`)) row = r
    return row !== undefined
  }, 90_000, 100)
  return row
}

function answered (res: ProxyResponse): { traceId: string, spanId: string, flags: string } {
  const m = TRACEPARENT.exec(header(res, 'traceparent') ?? '')
  return { traceId: m?.[1] ?? '', spanId: m?.[2] ?? '', flags: m?.[3] ?? '' }
}

t.test('a valid traceparent: its trace id in the answer, every log line of the request and the audit row; not sent to BACEN', async (t) => {
  const mark = e2e.seen.length
  const res = await e2e.proxy('POST', '/api/v2/entries/', {
    headers: { 'content-type': 'application/xml', traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'core=1' },
    body: createEntryRequest().xml
  })
  t.equal(res.status, 201, res.text)
  const a = answered(res)
  t.equal(a.traceId, TRACE, 'the answer continues the caller\'s trace')
  t.match(a.spanId, /^[0-9a-f]{16}$/)
  t.not(a.spanId, PARENT, 'with the proxy\'s own span as parent-id')
  t.equal(a.flags, '01', 'the sampled flag as received')

  const requestId = header(res, 'x-request-id') as string
  t.ok(await waitFor(() => lines.some((l) => l.reqId === requestId && l.msg === 'request completed')), 'the request was logged')
  const logged = lines.filter((l) => l.reqId === requestId)
  t.ok(logged.length >= 1, `the request has log lines (${logged.length})`)
  // One access line per request (src/http/request-log.ts): what Fastify's "incoming request" said is on it.
  const access = logged.filter((l) => l.msg === 'request completed' || l.msg === 'incoming request')
  t.equal(access.length, 1, 'one access-log line, not two')
  t.match(access[0], { req: { method: 'POST', url: '/api/v2/entries/' }, res: { statusCode: 201 }, responseTime: Number }, 'with the request, the status and the time')
  t.same(logged.filter((l) => l.traceId !== TRACE), [], 'every one carries the trace id')

  const row = await auditRow(requestId)
  t.equal(row?.trace_id, TRACE, 'the audit row has the trace id')
  t.notMatch(String(row?.request_header), /traceparent|tracestate/, 'the audited request headers (what BACEN got) have no tracing header')

  const upstream = e2e.seenSince(mark)
  t.ok(upstream.length >= 1, 'the call reached the simulator')
  for (const r of upstream) {
    t.equal(r.headers.traceparent, undefined, `no traceparent sent to BACEN (${r.method} ${r.url})`)
    t.equal(r.headers.tracestate, undefined, `no tracestate sent to BACEN (${r.method} ${r.url})`)
  }
})

t.test('an SPI post with a traceparent: accepted by ICOM (which refuses undocumented headers), no traceparent upstream', async (t) => {
  const mark = e2e.seen.length
  const res = await e2e.proxy('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, {
    headers: { 'content-type': 'application/xml', traceparent: `00-${TRACE}-${PARENT}-00` },
    body: pacs008().xml
  })
  t.equal(res.status, 201, res.text)
  t.equal(answered(res).traceId, TRACE)
  t.equal(answered(res).flags, '00')
  const upstream = e2e.seenSince(mark, '/api/v1/in/')
  t.equal(upstream.length, 1, 'the post reached the simulator')
  t.equal(upstream[0]?.headers.traceparent, undefined, 'without a traceparent')
  t.equal((await auditRow(header(res, 'x-request-id') as string))?.trace_id, TRACE)
})

t.test('an invalid or absent traceparent is never refused: the proxy starts a new trace', async (t) => {
  const invalid: Record<string, string | undefined> = {
    absent: undefined,
    'wrong length': `00-${TRACE.slice(2)}-${PARENT}-01`,
    'all-zero trace id': `00-${'0'.repeat(32)}-${PARENT}-01`,
    'version ff': `ff-${TRACE}-${PARENT}-01`,
    'upper-case hex': `00-${TRACE.toUpperCase()}-${PARENT}-01`
  }
  const seen = new Set<string>()
  for (const [what, traceparent] of Object.entries(invalid)) {
    const mark = e2e.seen.length
    // An ICOM post: ICOM answers 400 to any header it does not document, so a traceparent leaking upstream shows.
    const res = await e2e.proxy('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, {
      headers: { 'content-type': 'application/xml', ...(traceparent === undefined ? {} : { traceparent }) },
      body: pacs008().xml
    })
    t.equal(res.status, 201, `${what}: answered as usual`)
    const a = answered(res)
    t.match(a.traceId, /^[0-9a-f]{32}$/, `${what}: a traceparent is answered`)
    t.not(a.traceId, TRACE, `${what}: not the caller's`)
    t.not(a.traceId, '0'.repeat(32), `${what}: a valid trace id`)
    t.equal(a.flags, '00', `${what}: not sampled`)
    t.notOk(seen.has(a.traceId), `${what}: a trace of its own`)
    seen.add(a.traceId)
    const requestId = header(res, 'x-request-id') as string
    t.ok(await waitFor(() => lines.some((l) => l.reqId === requestId && l.msg === 'request completed')), `${what}: logged`)
    t.same(lines.filter((l) => l.reqId === requestId && l.traceId !== a.traceId), [], `${what}: every log line has the new trace id`)
    if (traceparent !== undefined) {
      t.ok(lines.some((l) => l.reqId === requestId && l.traceparent !== undefined && l.level === 20), `${what}: the refused value logged at debug`)
    }
    t.equal((await auditRow(requestId))?.trace_id, a.traceId, `${what}: the audit row has the new trace id`)
    for (const r of e2e.seenSince(mark)) t.equal(r.headers.traceparent, undefined, `${what}: no traceparent sent to BACEN`)
  }
})

t.test('answers the proxy makes itself (a problem, a health check) carry a traceparent too', async (t) => {
  const notFound = await e2e.proxy('GET', '/nowhere', { headers: { traceparent: `00-${TRACE}-${PARENT}-01` } })
  t.equal(notFound.status, 404)
  t.equal(answered(notFound).traceId, TRACE)
  const health = await e2e.proxy('GET', '/healthz')
  t.match(header(health, 'traceparent'), TRACEPARENT)
})

/**
 * Span export over OTLP/HTTP (issue 14), over real sockets: the proxy with PIXPROXY_OTLP_ENDPOINT set posts its spans
 * to a collector this test runs (POST /v1/traces, OTLP JSON: ExportTraceServiceRequest, answered with an
 * ExportTraceServiceResponse). A request with a sampled traceparent gives a server span continuing the caller's trace
 * (its span id the one answered in traceparent) and child spans for the HSM sign, the BACEN call, the check of
 * BACEN's signature and the audit writes, with codes and statuses as attributes and nothing of the message; an
 * unsampled traceparent gives no span; BACEN still gets no tracing header; close() exports what is buffered.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { createEntryRequest, pacs008 } from '../../tools/samples/messages.ts'
import { header, metricSamples, PROXY_ISPB, readHeaders, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'

const TRACE = '0af7651916cd43dd8448eb211c80319c'
const UNSAMPLED = '5bd66ef5095369c7b0d1f8f4bd33716a'
const CLOSING = 'e3a1d49b0e5b4e2a9c6a1f7d2b8c4e10'
const PARENT = 'b7ad6b7169203331'

type AnyValue = { stringValue?: string, intValue?: number | string, boolValue?: boolean, doubleValue?: number }
interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  startTimeUnixNano: string
  endTimeUnixNano: string
  attributes?: Array<{ key: string, value: AnyValue }>
  status?: { code?: number }
}
interface Export {
  resourceSpans: Array<{ resource?: { attributes?: Array<{ key: string, value: AnyValue }> }, scopeSpans: Array<{ scope?: { name?: string }, spans: OtlpSpan[] }> }>
}

// OTLP span kinds (opentelemetry/proto/trace/v1/trace.proto): 1 INTERNAL, 2 SERVER, 3 CLIENT.
const SERVER = 2
const CLIENT = 3
const INTERNAL = 1

/** The collector: what was posted, raw (for what must never be there) and decoded. */
const bodies: string[] = []
const spans: OtlpSpan[] = []
const resources: Array<Record<string, unknown>> = []
const refused: string[] = []
/** When set, the collector answers every export with this status (a collector refusing the spans). */
let refuseWith: number | null = null
let refusedExports = 0
const collector = createServer((req, res) => {
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      refused.push(`${String(req.method)} ${String(req.url)}`)
      res.writeHead(404).end()
      return
    }
    if (req.headers['content-type'] !== 'application/json') {
      refused.push(`content-type ${String(req.headers['content-type'])}`)
      res.writeHead(415).end()
      return
    }
    if (refuseWith !== null) {
      refusedExports++
      res.writeHead(refuseWith, { 'content-type': 'application/json' }).end('{"code":3,"message":"refused by the test"}')
      return
    }
    const text = Buffer.concat(chunks).toString('utf8')
    bodies.push(text)
    const body = JSON.parse(text) as Export
    for (const rs of body.resourceSpans) {
      resources.push(Object.fromEntries((rs.resource?.attributes ?? []).map((a) => [a.key, value(a.value)])))
      for (const ss of rs.scopeSpans) spans.push(...ss.spans)
    }
    // ExportTraceServiceResponse: empty is full success.
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
  })
})

function value (v: AnyValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue
  if (v.intValue !== undefined) return Number(v.intValue)
  if (v.boolValue !== undefined) return v.boolValue
  return v.doubleValue
}
function attrs (s: OtlpSpan): Record<string, unknown> {
  return Object.fromEntries((s.attributes ?? []).map((a) => [a.key, value(a.value)]))
}

let e2e: E2e
t.before(async () => {
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve))
  const { port } = collector.address() as AddressInfo
  e2e = await startE2e(t, { settings: { PIXPROXY_OTLP_ENDPOINT: `http://127.0.0.1:${port}/` } })
})
t.teardown(async () => { await new Promise((resolve) => collector.close(resolve)) })

t.test('a sampled traceparent: a server span continuing the caller\'s trace, and spans for each stage', async (t) => {
  const mark = e2e.seen.length
  // First a request the caller does not sample: it must give no span at all.
  const quiet = await e2e.proxy('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, {
    headers: { 'content-type': 'application/xml', traceparent: `00-${UNSAMPLED}-${PARENT}-00` },
    body: pacs008().xml
  })
  t.equal(quiet.status, 201, quiet.text)

  const entry = createEntryRequest()
  const taxId = /<TaxIdNumber>([^<]+)</.exec(entry.xml)?.[1] as string
  const res = await e2e.proxy('POST', '/api/v2/entries/', {
    headers: { 'content-type': 'application/xml', traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'core=1' },
    body: entry.xml
  })
  t.equal(res.status, 201, res.text)
  const answeredSpan = /^00-[0-9a-f]{32}-([0-9a-f]{16})-01$/.exec(header(res, 'traceparent') ?? '')?.[1]
  // A read whose path holds the key (a DICT key can be a tax id): the path must not reach the spans.
  const read = await e2e.proxy('GET', `/api/v2/entries/${encodeURIComponent(entry.key)}`, {
    headers: { ...readHeaders(), traceparent: `00-${TRACE}-${PARENT}-01` }
  })
  t.match(read.status, Number, 'answered (DICT refuses a read of one\'s own key for a transfer: either is fine here)')

  const ofTrace = (): OtlpSpan[] => spans.filter((s) => s.traceId === TRACE)
  t.ok(await waitFor(() => ofTrace().filter((s) => s.kind === SERVER).length >= 2 && ofTrace().length >= 8, 30_000, 50), `the spans arrived (${ofTrace().length})`)
  t.same(refused, [], 'every post was OTLP/HTTP JSON to /v1/traces')

  const server = ofTrace().find((s) => s.kind === SERVER && s.spanId === answeredSpan)
  t.ok(server, 'the server span has the span id answered to the caller in traceparent')
  if (server === undefined) return
  t.equal(server.parentSpanId, PARENT, 'its parent is the caller\'s span')
  t.equal(server.name, 'POST /api/v2/entries/')
  t.match(attrs(server), {
    'http.request.method': 'POST',
    'http.route': '/api/v2/entries/',
    'http.response.status_code': 201,
    'pixproxy.outcome': 'answered',
    'pixproxy.signature.code': 'VALID',
    'pixproxy.upstream.status': 201,
    'pixproxy.request_id': header(res, 'x-request-id')
  })
  t.not(server.status?.code, 2, 'not an error')
  t.match(resources[0], { 'service.name': 'pix-proxy', 'service.instance.id': e2e.stack.proxy.instanceId })

  const children = ofTrace().filter((s) => s.parentSpanId === server.spanId)
  const named = (name: string): OtlpSpan | undefined => children.find((s) => s.name === name)
  t.same(children.map((s) => s.name).sort(), ['BACEN dict POST', 'HSM sign', 'audit begin durable', 'audit end durable', 'verify BACEN signature'], 'the stages, each a child of the server span')
  const sign = named('HSM sign')
  const call = named('BACEN dict POST')
  const verify = named('verify BACEN signature')
  const begin = named('audit begin durable')
  const end = named('audit end durable')
  t.match(attrs(sign as OtlpSpan), { 'pixproxy.signer': 'hsm' })
  t.equal(sign?.kind, INTERNAL)
  t.equal(call?.kind, CLIENT, 'the BACEN call is a client span')
  t.match(attrs(call as OtlpSpan), { 'pixproxy.upstream': 'dict', 'http.request.method': 'POST', 'http.response.status_code': 201 })
  t.match(attrs(verify as OtlpSpan), { 'pixproxy.signature.code': 'VALID', 'pixproxy.signature.valid': true, 'pixproxy.signature.messages': 1 })
  t.match(attrs(begin as OtlpSpan), { 'pixproxy.audit.half': 'begin' })
  t.match(attrs(end as OtlpSpan), { 'pixproxy.audit.half': 'end' })
  // The order of a call: signed, made durable, sent, verified, the answer made durable.
  const at = (s: OtlpSpan | undefined, k: 'startTimeUnixNano' | 'endTimeUnixNano'): bigint => BigInt(s?.[k] ?? '0')
  t.ok(at(sign, 'endTimeUnixNano') <= at(call, 'startTimeUnixNano'), 'signed before the call')
  t.ok(at(begin, 'endTimeUnixNano') <= at(call, 'startTimeUnixNano'), 'the request half durable before the call')
  t.ok(at(call, 'endTimeUnixNano') <= at(verify, 'startTimeUnixNano'), 'verified after the answer')
  t.ok(at(verify, 'endTimeUnixNano') <= at(end, 'endTimeUnixNano'), 'the answer half durable after the verdict')
  for (const c of children) t.ok(at(c, 'startTimeUnixNano') >= at(server, 'startTimeUnixNano') && at(c, 'endTimeUnixNano') <= at(server, 'endTimeUnixNano'), `${c.name} within the request`)

  const readSpan = ofTrace().find((s) => s.kind === SERVER && s.spanId !== server.spanId)
  t.equal(readSpan?.name, 'GET /api/v2/entries/:Key', 'a read is named by its route template')
  t.match(attrs(readSpan as OtlpSpan), { 'http.route': '/api/v2/entries/:Key', 'http.response.status_code': read.status, 'pixproxy.upstream.status': read.status })

  t.same(spans.filter((s) => s.traceId === UNSAMPLED), [], 'a caller\'s unsampled trace gives no span')

  const all = bodies.join('\n')
  for (const [what, secret] of Object.entries({ 'the DICT key': entry.key, 'the encoded key': encodeURIComponent(entry.key), 'the tax id': taxId, 'the payer\'s tax id (PI-PayerId)': readHeaders()['pi-payerid'] as string, 'the DICT RequestId': entry.requestId, XML: '<?xml', 'an XML element': '<Entry>', PEM: '-----BEGIN', 'the tracestate': 'core=1' })) {
    t.notOk(all.includes(secret), `no ${what} in what was exported`)
  }
  for (const s of spans) {
    for (const [k, v] of Object.entries(attrs(s))) {
      if (typeof v === 'string') t.ok(v.length <= 100 && !v.includes('<'), `${s.name} ${k}: a short code, not content`)
    }
  }

  const upstream = e2e.seenSince(mark)
  t.ok(upstream.length >= 3, 'the calls reached the simulator')
  for (const r of upstream) {
    for (const h of Object.keys(r.headers)) t.notMatch(h, /^(traceparent|tracestate|baggage|b3|x-b3-.*|uber-trace-id|x-amzn-trace-id)$/, `no tracing header to BACEN (${r.method} ${r.url})`)
  }
})

t.test('a refused request has its span too, with the problem\'s code and outcome', async (t) => {
  const res = await e2e.proxy('POST', '/api/v2/entries/', {
    headers: { 'content-type': 'application/xml', traceparent: `00-${TRACE}-${PARENT}-01` },
    body: '<CreateEntryRequest><Entry>'
  })
  t.equal(res.status, 400)
  const id = header(res, 'x-request-id')
  const find = (): OtlpSpan | undefined => spans.find((s) => s.kind === SERVER && attrs(s)['pixproxy.request_id'] === id)
  t.ok(await waitFor(() => find() !== undefined, 30_000, 50), 'exported')
  const a = attrs(find() as OtlpSpan)
  t.match(a, { 'http.response.status_code': 400, 'pixproxy.outcome': 'not-sent', 'pixproxy.error.code': String })
  t.same(spans.filter((s) => s.parentSpanId === find()?.spanId && s.name.startsWith('BACEN')), [], 'nothing was sent')
})

t.test('a collector that refuses the spans: each failed export is counted, never silent', async (t) => {
  const counted = async (name: string): Promise<number> => metricSamples((await e2e.proxy('GET', '/metrics')).text, name)[0] ?? 0
  const failuresBefore = await counted('pixproxy_otlp_export_failures_total')
  const lostBefore = await counted('pixproxy_otlp_spans_lost_total')
  // 400 is not retried by the OTLP exporter (a 503 would be, with back-off): the export fails at once.
  refuseWith = 400
  try {
    const res = await e2e.proxy('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, {
      headers: { 'content-type': 'application/xml', traceparent: `00-${TRACE}-${PARENT}-01` },
      body: pacs008().xml
    })
    t.equal(res.status, 201, 'the request itself is unaffected')
    t.ok(await waitFor(async () => await counted('pixproxy_otlp_export_failures_total') > failuresBefore, 30_000, 50), 'the failed export is counted')
    t.ok(refusedExports > 0, 'the collector did refuse an export')
    t.ok(await counted('pixproxy_otlp_spans_lost_total') > lostBefore, 'and its spans are counted as lost')
  } finally {
    refuseWith = null
  }
})

t.test('closing the proxy exports the spans still buffered', async (t) => {
  const res = await e2e.proxy('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, {
    headers: { 'content-type': 'application/xml', traceparent: `00-${CLOSING}-${PARENT}-01` },
    body: pacs008().xml
  })
  t.equal(res.status, 201, res.text)
  // The batch processor waits a second before it exports: the close must not wait for it, nor lose the spans.
  await e2e.stack.proxy.close()
  const server = spans.find((s) => s.traceId === CLOSING && s.kind === SERVER)
  t.ok(server, 'the request\'s server span was exported by the time close() resolved')
  t.equal(server?.name, 'POST /api/v1/in/:ispb/msgs')
  t.match(attrs(server as OtlpSpan), { 'pixproxy.outcome': 'answered', 'pixproxy.signature.code': 'NOT_APPLICABLE', 'pixproxy.upstream.status': 201 })
})

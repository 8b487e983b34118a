/**
 * EMF request records (src/plugins/emf.ts): every record is checked against the rules of CloudWatch's embedded metric
 * format specification
 * (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html),
 * written here as assertions of each MUST, and the values follow the request: outcome class, status class, the
 * signature verdict (on a relayed answer's header, or on a rejection's error), 5xx; nothing for health endpoints or
 * unrouted requests; no hook at all when off.
 */
import t from 'tap'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import emfPlugin, { EMF_DIMENSIONS, EMF_KMS_SIGN_LATENCY, EMF_METRICS } from '../../src/plugins/emf.ts'
import { ManualClock } from '../audit/fixtures/clock.ts'
import type { Config } from '../../src/config.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { sendProblem } from '../../src/http/problem.ts'
import { NOT_APPLICABLE, SIGNATURE_CODE_HEADER } from '../../src/forwarding/answer.ts'
import { signatureRejection } from '../../src/forwarding/pipeline.ts'
import type { CheckedBody } from '../../src/forwarding/answer.ts'
import { OUTCOME_HEADER, outcomeUnknown } from '../../src/forwarding/outcome.ts'
import { emptyFacts } from '../../core/pix/facts.ts'

// The units CloudWatch accepts (MetricDatum), as the specification's schema lists them.
const UNITS = new Set(['Seconds', 'Microseconds', 'Milliseconds', 'Bytes', 'Kilobytes', 'Megabytes', 'Gigabytes', 'Terabytes', 'Bits', 'Kilobits', 'Megabits', 'Gigabits', 'Terabits', 'Percent', 'Count', 'Bytes/Second', 'Kilobytes/Second', 'Megabytes/Second', 'Gigabytes/Second', 'Terabytes/Second', 'Bits/Second', 'Kilobits/Second', 'Megabits/Second', 'Gigabits/Second', 'Terabits/Second', 'Count/Second', 'None'])

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isName = (v: unknown): v is string => typeof v === 'string' && v.length >= 1 && v.length <= 255

/** Every rule of the specification a record can break; returns the broken ones (empty = valid). */
function emfViolations (line: string): string[] {
  const out: string[] = []
  if (!line.endsWith('\n') || line.slice(0, -1).includes('\n')) out.push('one line, ending in a newline')
  let root: unknown
  try {
    root = JSON.parse(line)
  } catch {
    return [...out, 'the log event is valid JSON with nothing before or after it']
  }
  if (!isObject(root)) return [...out, 'the root node is an object']
  if (Buffer.byteLength(line) > 16 * 1024) out.push('under 16 KiB (Docker splits longer lines; CloudWatch Logs caps events at 256 KB)')
  const aws = root._aws
  if (!isObject(aws)) return [...out, '_aws is an object']
  for (const k of Object.keys(aws)) if (k !== 'Timestamp' && k !== 'CloudWatchMetrics') out.push(`_aws has no member ${k}`)
  if (!Number.isInteger(aws.Timestamp) || (aws.Timestamp as number) < 0) out.push('_aws.Timestamp is an integer (ms since the epoch)')
  const directives = aws.CloudWatchMetrics
  if (!Array.isArray(directives)) return [...out, '_aws.CloudWatchMetrics is an array']
  for (const [i, d] of directives.entries()) {
    if (!isObject(d)) { out.push(`directive ${i} is an object`); continue }
    for (const k of Object.keys(d)) if (!['Namespace', 'Dimensions', 'Metrics'].includes(k)) out.push(`directive ${i} has no member ${k}`)
    if (!isName(d.Namespace)) out.push(`directive ${i}: Namespace is a string of 1-255`)
    if (!Array.isArray(d.Dimensions) || d.Dimensions.length < 1) out.push(`directive ${i}: Dimensions is an array of at least one DimensionSet`)
    else {
      for (const set of d.Dimensions as unknown[]) {
        if (!Array.isArray(set) || set.length > 9) { out.push(`directive ${i}: a DimensionSet is an array of at most 9 keys`); continue }
        for (const key of set) {
          if (!isName(key)) out.push(`directive ${i}: dimension key ${String(key)} is a string of 1-255`)
          else if (typeof root[key] !== 'string') out.push(`directive ${i}: dimension target ${key} is a string member of the root`)
        }
      }
    }
    if (!Array.isArray(d.Metrics) || d.Metrics.length > 100) { out.push(`directive ${i}: Metrics is an array of at most 100`); continue }
    for (const m of d.Metrics as unknown[]) {
      if (!isObject(m) || !isName(m.Name)) { out.push(`directive ${i}: a MetricDefinition has a Name of 1-255`); continue }
      for (const k of Object.keys(m)) if (k !== 'Name' && k !== 'Unit') out.push(`metric ${m.Name} has no member ${k}`)
      if (m.Unit !== undefined && !UNITS.has(m.Unit as string)) out.push(`metric ${m.Name}: Unit ${String(m.Unit)} is a CloudWatch unit`)
      const v = root[m.Name]
      const numeric = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x)
      if (!(numeric(v) || (Array.isArray(v) && v.length <= 100 && v.every(numeric)))) out.push(`metric target ${m.Name} is a number (or up to 100 numbers) on the root`)
    }
  }
  return out
}

const emfOn = { emf: { namespace: 'PixProxy/test', service: 'pix-proxy-test' } } as unknown as Config
const checked = (code: CheckedBody['code']): CheckedBody => ({ body: Buffer.alloc(0), contentType: undefined, valid: code === 'VALID', code, results: [] })

async function app (config: Config, lines: string[]): Promise<FastifyInstance> {
  const a = Fastify()
  a.decorate('config', config)
  await a.register(emfPlugin, { write: (l) => { lines.push(l) }, now: () => 1_700_000_000_123 })
  a.setErrorHandler((err, req, reply) => {
    const e = err instanceof PixProxyError ? err : new PixProxyError(Errors.INTERNAL)
    return sendProblem(reply, req, e.statusCode, e.code, e.message, { outcome: e.outcome, ...(e as { extensions?: object }).extensions })
  })
  // Stand-ins for the forwarding routes: what forward.ts's relay() and the pipeline's errors leave on the reply.
  a.get('/api/v2/entries/:Key', async (req, reply) => {
    const code = (req.query as { code?: string }).code ?? 'VALID'
    return reply.header(OUTCOME_HEADER, 'answered').header(SIGNATURE_CODE_HEADER, code).code(200).send('<ok/>')
  })
  a.post('/api/v2/entries/', async () => { throw signatureRejection('DICT', checked('DIGEST_MISMATCH'), 200) })
  a.post('/api/v1/in/:ispb/msgs', async () => { throw outcomeUnknown({ name: 'spi', method: 'POST' }, emptyFacts(), new PixProxyError(Errors.INTERNAL)) })
  a.delete('/api/v1/out/:ispb/stream/:streamId', async () => { throw new PixProxyError(Errors.SHUTTING_DOWN) })
  a.get('/healthz', async () => ({ ok: true }))
  return a
}

t.test('every record is valid EMF: the specification\'s rules, one JSON line each', async (t) => {
  const lines: string[] = []
  const a = await app(emfOn, lines)
  t.teardown(async () => { await a.close() })
  await a.inject({ method: 'GET', url: '/api/v2/entries/+5561988887777' })
  await a.inject({ method: 'POST', url: '/api/v2/entries/', payload: '<x/>', headers: { 'content-type': 'text/plain' } })
  await a.inject({ method: 'POST', url: '/api/v1/in/99999004/msgs' })
  await a.inject({ method: 'DELETE', url: '/api/v1/out/99999004/stream/abc' })
  t.equal(lines.length, 4)
  for (const line of lines) t.same(emfViolations(line), [], line)
  const r = JSON.parse(lines[0] as string) as Record<string, unknown>
  t.equal((r._aws as { Timestamp: number }).Timestamp, 1_700_000_000_123)
  const directives = (r._aws as { CloudWatchMetrics: Array<{ Namespace: string, Dimensions: string[][], Metrics: Array<{ Name: string, Unit: string }> }> }).CloudWatchMetrics
  t.same(directives.map((d) => d.Namespace), ['PixProxy/test', 'PixProxy/test'])
  t.same(directives[0]?.Dimensions, [['service']], 'every metric by service alone: what the alarms read')
  t.same(directives[0]?.Metrics.map((m) => m.Name).sort(), Object.values(EMF_METRICS).sort())
  t.equal(directives[0]?.Metrics.find((m) => m.Name === EMF_METRICS.latency)?.Unit, 'Milliseconds')
  t.same(directives[1]?.Dimensions, [['service', 'operation'], ['service', 'outcome', 'statusClass']])
  t.same(Object.keys(r).filter((k) => Object.values(EMF_DIMENSIONS).includes(k as never)).sort(), Object.values(EMF_DIMENSIONS).sort())
})

t.test('values follow the request; dimensions stay low-cardinality (route templates, classes)', async (t) => {
  const lines: string[] = []
  const a = await app(emfOn, lines)
  t.teardown(async () => { await a.close() })
  const pick = (l: string): Record<string, unknown> => {
    const r = JSON.parse(l) as Record<string, unknown>
    return { service: r.service, operation: r.operation, outcome: r.outcome, statusClass: r.statusClass, Requests: r.Requests, OutcomeUnknown: r.OutcomeUnknown, SignatureInvalid: r.SignatureInvalid, Responses5xx: r.Responses5xx, status: r.status, signatureCode: r.signatureCode }
  }
  await a.inject({ method: 'GET', url: '/api/v2/entries/+5561988887777', headers: { 'x-request-id': 'req-1' } })
  t.same(pick(lines[0] as string), { service: 'pix-proxy-test', operation: 'GET /api/v2/entries/:Key', outcome: 'answered', statusClass: '2xx', Requests: 1, OutcomeUnknown: 0, SignatureInvalid: 0, Responses5xx: 0, status: 200, signatureCode: 'VALID' }, 'the key is not in the operation')
  const first = JSON.parse(lines[0] as string) as { Latency: number, requestId: string, traceId: string }
  t.ok(first.Latency >= 0 && first.Latency < 10_000, 'latency in ms')
  t.match(first.traceId, /^[0-9a-f]{32}$/, 'trace id as a plain member')

  await a.inject({ method: 'GET', url: '/api/v2/entries/k?code=CERT_UNKNOWN' })
  t.same(pick(lines[1] as string), { service: 'pix-proxy-test', operation: 'GET /api/v2/entries/:Key', outcome: 'answered', statusClass: '2xx', Requests: 1, OutcomeUnknown: 0, SignatureInvalid: 1, Responses5xx: 0, status: 200, signatureCode: 'CERT_UNKNOWN' }, 'flagged (flag policy): relayed, counted as a signature failure')

  await a.inject({ method: 'GET', url: `/api/v2/entries/k?code=${NOT_APPLICABLE}` })
  t.equal(pick(lines[2] as string).SignatureInvalid, 0, 'nothing to verify is not a failure')
  await a.inject({ method: 'GET', url: '/api/v2/entries/k?code=DIGESTS_VALID' })
  t.equal(pick(lines[3] as string).SignatureInvalid, 1, 'short of VALID (signature value unchecked) is a failure, as for the reject policy')

  await a.inject({ method: 'POST', url: '/api/v2/entries/', payload: '<x/>', headers: { 'content-type': 'text/plain' } })
  t.same(pick(lines[4] as string), { service: 'pix-proxy-test', operation: 'POST /api/v2/entries/', outcome: 'answered', statusClass: '5xx', Requests: 1, OutcomeUnknown: 0, SignatureInvalid: 1, Responses5xx: 1, status: 502, signatureCode: 'DIGEST_MISMATCH' }, 'rejected (reject policy): the verdict comes from the error')

  await a.inject({ method: 'POST', url: '/api/v1/in/99999004/msgs' })
  t.same(pick(lines[5] as string), { service: 'pix-proxy-test', operation: 'POST /api/v1/in/:ispb/msgs', outcome: 'unknown', statusClass: '5xx', Requests: 1, OutcomeUnknown: 1, SignatureInvalid: 0, Responses5xx: 1, status: 502, signatureCode: undefined })

  await a.inject({ method: 'DELETE', url: '/api/v1/out/99999004/stream/abc' })
  t.same(pick(lines[6] as string), { service: 'pix-proxy-test', operation: 'DELETE /api/v1/out/:ispb/stream/:streamId', outcome: 'not-sent', statusClass: '5xx', Requests: 1, OutcomeUnknown: 0, SignatureInvalid: 0, Responses5xx: 1, status: 503, signatureCode: undefined })

  await a.inject({ method: 'GET', url: '/healthz' })
  await a.inject({ method: 'GET', url: '/api/v9/nothing' })
  t.equal(lines.length, 7, 'no record for a health endpoint or an unrouted request')
})

t.test('off (the default): no hook is added, nothing is written', async (t) => {
  const lines: string[] = []
  const a = Fastify()
  t.teardown(async () => { await a.close() })
  a.decorate('config', { emf: null } as unknown as Config)
  const hooks: string[] = []
  const addHook = a.addHook.bind(a)
  a.addHook = ((name: string, fn: never) => { hooks.push(name); return addHook(name as never, fn) }) as typeof a.addHook
  await a.register(emfPlugin, { write: (l) => { lines.push(l) } })
  a.get('/api/v2/entries/:Key', async (_req, reply) => reply.header(OUTCOME_HEADER, 'answered').send('ok'))
  await a.inject({ method: 'GET', url: '/api/v2/entries/k' })
  t.same(hooks, [])
  t.same(lines, [])
  t.equal(a.emf, null, 'nothing to report KMS latencies to')
})

t.test('KMS Sign latencies: records of up to 100 samples by service, at 100 gathered, 10 s after the first of a batch, and at close', async (t) => {
  const lines: string[] = []
  const clock = new ManualClock()
  const a = Fastify()
  a.decorate('config', emfOn)
  await a.register(emfPlugin, { write: (l) => { lines.push(l) }, now: () => 1_700_000_000_123, clock })
  await a.ready()
  const emf = a.emf
  if (emf === null) throw new Error('EMF is on')
  const samples = (l: string): unknown => (JSON.parse(l) as Record<string, unknown>)[EMF_KMS_SIGN_LATENCY]

  for (let i = 0; i < 250; i++) emf.kmsSignLatency(i + 0.0004)
  t.equal(lines.length, 2, 'a record at each 100th value')
  for (const line of lines) t.same(emfViolations(line), [], line)
  const r = JSON.parse(lines[0] as string) as Record<string, unknown>
  t.same(r._aws, { Timestamp: 1_700_000_000_123, CloudWatchMetrics: [{ Namespace: 'PixProxy/test', Dimensions: [['service']], Metrics: [{ Name: 'KmsSignLatency', Unit: 'Milliseconds' }] }] })
  t.equal(r.service, 'pix-proxy-test')
  t.same(samples(lines[0] as string), Array.from({ length: 100 }, (_, i) => i), 'every call a sample, in ms (to the microsecond)')
  t.same(samples(lines[1] as string), Array.from({ length: 100 }, (_, i) => i + 100))

  clock.advance(9_999)
  t.equal(lines.length, 2, 'the rest waits')
  clock.advance(1)
  t.equal(lines.length, 3, 'for 10 s at most')
  t.same(samples(lines[2] as string), Array.from({ length: 50 }, (_, i) => i + 200))
  t.same(clock.armed(), [], 'no timer while nothing waits')

  emf.kmsSignLatency(1_234.5)
  emf.kmsSignLatency(Number.NaN)
  await a.close()
  t.equal(lines.length, 4, 'close writes the partial batch')
  t.same(samples(lines[3] as string), [1_234.5], 'a non-number is no sample')
  t.same(clock.armed(), [], 'and leaves no timer')
})

t.test('the rule checker itself rejects what the specification forbids', async (t) => {
  const ok = { _aws: { Timestamp: 1, CloudWatchMetrics: [{ Namespace: 'N', Dimensions: [['d']], Metrics: [{ Name: 'm', Unit: 'Count' }] }] }, d: 'x', m: 1 }
  t.same(emfViolations(JSON.stringify(ok) + '\n'), [])
  t.not(emfViolations('prefix ' + JSON.stringify(ok) + '\n').length, 0, 'text before the JSON')
  t.not(emfViolations(JSON.stringify({ ...ok, d: 3 }) + '\n').length, 0, 'a dimension target that is not a string')
  t.not(emfViolations(JSON.stringify({ ...ok, m: '1' }) + '\n').length, 0, 'a metric target that is not a number')
  t.not(emfViolations(JSON.stringify({ ...ok, _aws: { ...ok._aws, Timestamp: 1.5 } }) + '\n').length, 0, 'a fractional timestamp')
  const tenKeys = Array.from({ length: 10 }, (_, i) => `k${i}`)
  t.not(emfViolations(JSON.stringify({ ...ok, _aws: { ...ok._aws, CloudWatchMetrics: [{ ...ok._aws.CloudWatchMetrics[0], Dimensions: [tenKeys] }] } }) + '\n').length, 0, 'more than 9 dimension keys')
  t.not(emfViolations(JSON.stringify({ ...ok, _aws: { ...ok._aws, CloudWatchMetrics: [{ ...ok._aws.CloudWatchMetrics[0], Metrics: [{ Name: 'm', Unit: 'Requests' }] }] } }) + '\n').length, 0, 'an unknown unit')
})

/**
 * Request metrics in CloudWatch embedded metric format (EMF): one record per completed forwarding request, written
 * to stdout as a JSON line of its own (PIXPROXY_METRICS_EMF). Specification:
 * https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
 *
 * Why stdout and not the CloudWatch agent's EMF socket (tcp/udp 25888): in ECS the proxy's stdout goes through the
 * awslogs driver to CloudWatch Logs, which extracts EMF from a log event that is the EMF JSON object; the
 * x-amzn-logs-format: json/emf header is optional ("you have the option to include ... but it's not required",
 * CloudWatch_Embedded_Metric_Format_Generation_PutLogEvents.html). So the metrics depend on nothing the request log
 * does not already depend on: no socket to the non-essential agent sidecar (whose loss would silently drop UDP
 * datagrams), no extra IAM, no second copy of the records. The awslogs driver runs non-blocking with a buffer: under
 * sustained pressure it drops lines, these included, exactly as it drops log lines (docs/operations.md).
 *
 * A record is small (well under Docker's 16 KiB line split and the 4 KiB a pipe writes atomically) and written
 * synchronously in one write, so it never interleaves with pino's lines. Dimensions stay low-cardinality: the service,
 * the operation (method and route template, never a key or an id), the outcome class (pix-proxy-outcome) and the
 * status class; ids (request id, trace id) are plain members, searchable in Logs Insights, not dimensions.
 *
 * With the signing key in KMS, the time of each Sign call to KMS goes out too (`KmsSignLatency`), by service only: the
 * Prometheus histogram pixproxy_kms_sign_duration_seconds is scraped by nobody in ECS (the CloudWatch agent drops
 * histograms), and a request's own Latency cannot tell a slow KMS from a slow BACEN. The values are batched, up to
 * 100 a record (an EMF metric value may be an array of at most 100 numbers, each a sample, so CloudWatch's
 * percentiles see every call), written when 100 are gathered, every 10 s, and at close: at 150 signs/s that is 90
 * records a minute beside 9000 request records. A crash loses at most 10 s of these samples.
 *
 * Off (the default), the plugin adds no hook: nothing runs per request, and `app.emf` is null.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { traceOf } from '../http/trace.ts'
import { realClock } from '../audit/clock.ts'
import type { AuditClock } from '../audit/clock.ts'
import { PixProxyError } from '../../core/errors.ts'
import { OUTCOME_HEADER } from '../forwarding/outcome.ts'
import { NOT_APPLICABLE, SIGNATURE_CODE_HEADER } from '../forwarding/answer.ts'

/** Metric names as CloudWatch shows them; infra/terraform reads the same names (test/infra/terraform.test.ts). */
export const EMF_METRICS = Object.freeze({
  latency: 'Latency',
  requests: 'Requests',
  outcomeUnknown: 'OutcomeUnknown',
  signatureInvalid: 'SignatureInvalid',
  responses5xx: 'Responses5xx'
} as const)

/** The KMS Sign latency (only with the signing key in KMS), its own record; infra/terraform reads the same name. */
export const EMF_KMS_SIGN_LATENCY = 'KmsSignLatency'

/** Dimension names. */
export const EMF_DIMENSIONS = Object.freeze({
  service: 'service',
  operation: 'operation',
  outcome: 'outcome',
  statusClass: 'statusClass'
} as const)

/**
 * The dimension sets, per metric. Every metric by service alone (what the alarms read: an alarm cannot sum across
 * dimension values); latency and request count also by operation, and by outcome and status class. Each dimension
 * set is a metric of its own in CloudWatch (and on the bill), so the breakdowns carry only the two metrics a
 * breakdown is read for.
 */
export const EMF_DIRECTIVES = Object.freeze([
  {
    dimensions: [[EMF_DIMENSIONS.service]],
    metrics: [EMF_METRICS.latency, EMF_METRICS.requests, EMF_METRICS.outcomeUnknown, EMF_METRICS.signatureInvalid, EMF_METRICS.responses5xx]
  },
  {
    dimensions: [[EMF_DIMENSIONS.service, EMF_DIMENSIONS.operation], [EMF_DIMENSIONS.service, EMF_DIMENSIONS.outcome, EMF_DIMENSIONS.statusClass]],
    metrics: [EMF_METRICS.latency, EMF_METRICS.requests]
  }
] as const)

const UNITS: Readonly<Record<string, string>> = {
  [EMF_METRICS.latency]: 'Milliseconds',
  [EMF_METRICS.requests]: 'Count',
  [EMF_METRICS.outcomeUnknown]: 'Count',
  [EMF_METRICS.signatureInvalid]: 'Count',
  [EMF_METRICS.responses5xx]: 'Count'
}

export type OutcomeClass = 'not-sent' | 'unknown' | 'answered'

/** What one completed forwarding request contributes. */
export interface RequestFacts {
  readonly operation: string
  readonly outcome: OutcomeClass
  readonly status: number
  readonly latencyMs: number
  /** BACEN's signature verdict code (pix-proxy-signature-code), or null when no answer was verified. */
  readonly signatureCode: string | null
  readonly requestId: string
  readonly traceId: string
}

export interface EmfTarget {
  readonly namespace: string
  readonly service: string
}

/** Anything short of VALID is a failure, except NOT_APPLICABLE (BACEN signs nothing in that answer): the reject rule. */
function signatureFailed (code: string | null): boolean {
  return code !== null && code !== 'VALID' && code !== NOT_APPLICABLE
}

/** One EMF document (the root node) for a request. */
function emfRecord (target: EmfTarget, facts: RequestFacts, timestamp: number): Record<string, unknown> {
  return {
    _aws: {
      Timestamp: Math.trunc(timestamp),
      CloudWatchMetrics: EMF_DIRECTIVES.map((d) => ({
        Namespace: target.namespace,
        Dimensions: d.dimensions.map((set) => [...set]),
        Metrics: d.metrics.map((name) => ({ Name: name, Unit: UNITS[name] }))
      }))
    },
    [EMF_DIMENSIONS.service]: target.service,
    [EMF_DIMENSIONS.operation]: facts.operation,
    [EMF_DIMENSIONS.outcome]: facts.outcome,
    [EMF_DIMENSIONS.statusClass]: `${Math.trunc(facts.status / 100)}xx`,
    [EMF_METRICS.latency]: Math.round(facts.latencyMs * 1000) / 1000,
    [EMF_METRICS.requests]: 1,
    [EMF_METRICS.outcomeUnknown]: facts.outcome === 'unknown' ? 1 : 0,
    [EMF_METRICS.signatureInvalid]: signatureFailed(facts.signatureCode) ? 1 : 0,
    [EMF_METRICS.responses5xx]: facts.status >= 500 ? 1 : 0,
    // Not dimensions: for Logs Insights only.
    status: facts.status,
    ...(facts.signatureCode === null ? {} : { signatureCode: facts.signatureCode }),
    requestId: facts.requestId,
    traceId: facts.traceId
  }
}

function outcomeClass (value: unknown): OutcomeClass {
  // Every answer of a forwarding route carries the header; without it a core cannot know either: unknown.
  return value === 'not-sent' || value === 'answered' ? value : 'unknown'
}

export interface EmfPluginOptions {
  /** Where a record line goes (tests); default: one synchronous write to stdout. */
  readonly write?: (line: string) => void
  /** Epoch ms (tests). */
  readonly now?: () => number
  /** Timers of the KMS latency batch (tests: a manual clock). */
  readonly clock?: AuditClock
}

/** What other plugins report through EMF (plugins/crypto.ts: each KMS Sign call). */
export interface EmfRecorder {
  /** One Sign call to KMS ended after `ms` milliseconds (whatever its result). */
  kmsSignLatency (ms: number): void
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Null when PIXPROXY_METRICS_EMF is off. */
    emf: EmfRecorder | null
  }
}

/** Values per EMF metric array (the specification's limit). */
const MAX_VALUES = 100
/** How long a partial batch of KMS latencies waits: well inside the alarm's one-minute period. */
const KMS_FLUSH_MS = 10_000

/** The KMS Sign latencies, batched into records of up to 100 samples. */
class KmsSignBatch implements EmfRecorder {
  readonly #target: EmfTarget
  readonly #write: (line: string) => void
  readonly #now: () => number
  readonly #clock: AuditClock
  #values: number[] = []
  #cancel: (() => void) | null = null
  #closed = false

  constructor (target: EmfTarget, write: (line: string) => void, now: () => number, clock: AuditClock) {
    this.#target = target
    this.#write = write
    this.#now = now
    this.#clock = clock
  }

  kmsSignLatency (ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return
    this.#values.push(Math.round(ms * 1000) / 1000)
    if (this.#values.length >= MAX_VALUES || this.#closed) this.flush()
    else this.#cancel ??= this.#clock.timer(() => { this.#cancel = null; this.flush() }, KMS_FLUSH_MS, false)
  }

  flush (): void {
    this.#cancel?.()
    this.#cancel = null
    if (this.#values.length === 0) return
    const values = this.#values
    this.#values = []
    this.#write(JSON.stringify({
      _aws: {
        Timestamp: Math.trunc(this.#now()),
        CloudWatchMetrics: [{ Namespace: this.#target.namespace, Dimensions: [[EMF_DIMENSIONS.service]], Metrics: [{ Name: EMF_KMS_SIGN_LATENCY, Unit: 'Milliseconds' }] }]
      },
      [EMF_DIMENSIONS.service]: this.#target.service,
      [EMF_KMS_SIGN_LATENCY]: values
    }) + '\n')
  }

  /** Writes what is gathered; later values go out one record each (nothing should sign after close). */
  close (): void {
    this.#closed = true
    this.flush()
  }
}

/** Forwarding routes mirror BACEN's API paths (DICT /api/v2, ICOM /api/v1); health endpoints and 404s are not. */
function isForwarding (template: string | undefined): template is string {
  return template !== undefined && template.startsWith('/api/')
}

export default fp(async function emfPlugin (app: FastifyInstance, opts: EmfPluginOptions) {
  const target = app.config.emf
  if (target === null) {
    app.decorate('emf', null)
    return
  }
  const write = opts.write ?? ((line: string) => { process.stdout.write(line) })
  const now = opts.now ?? Date.now
  const kms = new KmsSignBatch(target, write, now, opts.clock ?? realClock)
  app.decorate('emf', kms)
  // Registered before the crypto plugin, so closed after it: the guard has made its last call by then.
  app.addHook('onClose', async () => { kms.close() })
  // A rejected answer's verdict travels on the error (its signatureCode extension), not on a response header.
  const rejected = new WeakMap<FastifyRequest, string>()
  app.addHook('onError', async (req, _reply, err) => {
    const code = err instanceof PixProxyError ? err.extensions.signatureCode : undefined
    if (code !== undefined) rejected.set(req, code)
  })
  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
    const template = req.routeOptions.url
    if (!isForwarding(template)) return
    const header = reply.getHeader(SIGNATURE_CODE_HEADER)
    const record = emfRecord(target, {
      operation: `${req.method} ${template}`,
      outcome: outcomeClass(reply.getHeader(OUTCOME_HEADER)),
      status: reply.statusCode,
      latencyMs: reply.elapsedTime,
      signatureCode: typeof header === 'string' ? header : rejected.get(req) ?? null,
      requestId: req.id,
      traceId: traceOf(req.raw).traceId
    }, now())
    write(JSON.stringify(record) + '\n')
  })
}, { name: 'pix-emf', fastify: '5.x', decorators: { fastify: ['config'] } })

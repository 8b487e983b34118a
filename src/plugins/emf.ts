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
 * Off (the default), the plugin adds no hook: nothing runs per request.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { traceOf } from '../http/trace.ts'
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
}

/** Forwarding routes mirror BACEN's API paths (DICT /api/v2, ICOM /api/v1); health endpoints and 404s are not. */
function isForwarding (template: string | undefined): template is string {
  return template !== undefined && template.startsWith('/api/')
}

export default fp(async function emfPlugin (app: FastifyInstance, opts: EmfPluginOptions) {
  const target = app.config.emf
  if (target === null) return
  const write = opts.write ?? ((line: string) => { process.stdout.write(line) })
  const now = opts.now ?? Date.now
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

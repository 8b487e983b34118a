/**
 * Tracing on (http/tracing.ts says what and why): OpenTelemetry's SDK, a BatchSpanProcessor and the OTLP/HTTP (JSON)
 * exporter. Imported only when PIXPROXY_OTLP_ENDPOINT is set.
 *
 * Nothing global is registered (no global tracer provider, context manager or propagator): the proxy owns its spans,
 * and several apps in one process (tests) stay apart. The current request is found through an AsyncLocalStorage of
 * this module, entered in a preHandler hook (after the body is read: a stream's callbacks run in the context the
 * request was created in), so the signer and the audit recorder need not be handed the request.
 *
 * The server span has the span id http/trace.ts made for the request (answered in traceparent, and so known to the
 * core) and its trace id: the id generator hands them to the SDK while that span starts.
 *
 * Sampling follows the caller (ParentBased): a traceparent whose sampled flag is 0 gets no spans; a request with
 * none (or an invalid one) is a new trace, sampled.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import type { Attributes, Context, HrTime, Span, Tracer } from '@opentelemetry/api'
import { AlwaysOnSampler, BatchSpanProcessor, ParentBasedSampler, RandomIdGenerator, TracerProvider } from '@opentelemetry/sdk-trace'
import type { IdGenerator, ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace'
import { Counter } from 'prom-client'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingMessage } from 'node:http'
import type { Signer } from '../../core/signer.ts'
import { outcomeOf, OUTCOME_HEADER } from '../forwarding/outcome.ts'
import type { TraceContext } from './trace.ts'
import type { TracedAnswer, TracedVerdict, Tracing } from './tracing.ts'

const SIGNATURE_CODE_HEADER = 'pix-proxy-signature-code'

/** One request's span and what its children learnt for it. */
interface RequestSpan {
  readonly span: Span
  readonly context: Context
  ended: boolean
  errorCode?: string
}

/** Hands the SDK the ids http/trace.ts made for a request while its server span starts; random ids otherwise. */
class RequestIds implements IdGenerator {
  private readonly random = new RandomIdGenerator()
  pending: TraceContext | null = null
  generateTraceId (): string { return this.pending?.traceId ?? this.random.generateTraceId() }
  generateSpanId (): string { return this.pending?.spanId ?? this.random.generateSpanId() }
}

/**
 * Span times on one high-resolution clock: the SDK's own default starts a span at Date.now() (whole milliseconds), so a
 * stage that starts right after another could appear to start before it ended. performance.now() plus a wall-clock
 * anchor, re-read every minute (the monotonic clock and the wall clock drift apart over days).
 */
class SpanClock {
  private anchorMs = 0
  private anchoredAt = Number.NEGATIVE_INFINITY
  at (perfMs: number): HrTime {
    if (perfMs - this.anchoredAt > 60_000) {
      this.anchoredAt = performance.now()
      this.anchorMs = Date.now() - this.anchoredAt
    }
    const ms = this.anchorMs + perfMs
    const s = Math.floor(ms / 1000)
    return [s, Math.min(999_999_999, Math.round((ms - s * 1000) * 1e6))]
  }

  now (): HrTime { return this.at(performance.now()) }
}

type ExportCallback = Parameters<SpanExporter['export']>[1]
type ExportResult = Parameters<ExportCallback>[0]
/** ExportResultCode.SUCCESS of @opentelemetry/core (not a dependency of ours: the value is part of the OTLP SDK's API). */
const EXPORT_SUCCESS = 0
/** While exports keep failing, one warning per this long: a collector that is down must not flood the log. */
const EXPORT_WARN_EVERY_MS = 60_000

/**
 * The OTLP exporter, with its failures made visible. The SDK reports a failed export only to OpenTelemetry's global
 * diagnostic logger, which the proxy does not register (nothing global, see above): without this, a collector that
 * is down or refuses the spans would lose every span without a trace. Each failed export is counted in
 * pixproxy_otlp_export_failures_total and its spans in pixproxy_otlp_spans_lost_total; the first failure is logged as
 * a warning, then one warning a minute while they go on, and the recovery once.
 */
class ObservedExporter implements SpanExporter {
  readonly failures: Counter
  readonly lost: Counter
  #failingSince: number | null = null
  #warnedAt = Number.NEGATIVE_INFINITY
  #failedSinceWarning = 0
  readonly #inner: SpanExporter
  readonly #log: FastifyInstance['log']
  readonly #now: () => number

  constructor (inner: SpanExporter, log: FastifyInstance['log'], now: () => number = Date.now) {
    this.#inner = inner
    this.#log = log
    this.#now = now
    // Registered in the app's registry once the metrics plugin has made it (tracing starts before it).
    this.failures = new Counter({ name: 'pixproxy_otlp_export_failures_total', help: 'OTLP span exports that failed (collector unreachable, refused or too slow); their spans are lost', registers: [] })
    this.lost = new Counter({ name: 'pixproxy_otlp_spans_lost_total', help: 'Spans lost in failed OTLP exports', registers: [] })
  }

  export (spans: ReadableSpan[], done: ExportCallback): void {
    this.#inner.export(spans, (result: ExportResult) => {
      this.#observe(result, spans.length)
      done(result)
    })
  }

  #observe (result: ExportResult, spans: number): void {
    const now = this.#now()
    if (result.code === EXPORT_SUCCESS) {
      if (this.#failingSince !== null) {
        this.#log.info({ failingForMs: now - this.#failingSince }, 'OTLP span export recovered')
        this.#failingSince = null
        this.#warnedAt = Number.NEGATIVE_INFINITY
        this.#failedSinceWarning = 0
      }
      return
    }
    this.failures.inc()
    this.lost.inc(spans)
    this.#failingSince ??= now
    this.#failedSinceWarning++
    if (now - this.#warnedAt >= EXPORT_WARN_EVERY_MS) {
      this.#log.warn({ err: result.error, failedExports: this.#failedSinceWarning, spans }, 'OTLP span export failed: these spans are lost (pixproxy_otlp_export_failures_total)')
      this.#warnedAt = now
      this.#failedSinceWarning = 0
    }
  }

  async shutdown (): Promise<void> { await this.#inner.shutdown() }
  async forceFlush (): Promise<void> { await this.#inner.forceFlush?.() }
}

function codeOf (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code !== '' ? code : 'INTERNAL'
}

function headerText (reply: FastifyReply, name: string): string | undefined {
  const v = reply.getHeader(name)
  return typeof v === 'string' ? v : undefined
}

export function startOtelTracing (app: FastifyInstance, o: { tracesUrl: string, instanceId: string }): Tracing {
  const ids = new RequestIds()
  const clock = new SpanClock()
  const exporter = new ObservedExporter(new OTLPTraceExporter({ url: o.tracesUrl, timeoutMillis: 5_000 }), app.log)
  app.addHook('onReady', async () => {
    // The app always has its metrics plugin; an app built without it (tests of tracing alone) counts nothing.
    if (!app.hasDecorator('metrics')) return
    app.metrics.registry.registerMetric(exporter.failures)
    app.metrics.registry.registerMetric(exporter.lost)
  })
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'pix-proxy', 'service.instance.id': o.instanceId }),
    sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    idGenerator: ids,
    spanProcessors: [new BatchSpanProcessor({ exporter, maxQueueSize: 8_192, scheduledDelayMillis: 1_000, exportTimeoutMillis: 5_000 })]
  })
  const tracer: Tracer = provider.getTracer('pix-proxy')
  const requests = new WeakMap<IncomingMessage, RequestSpan>()
  const current = new AsyncLocalStorage<RequestSpan>()

  app.addHook('onRequest', async (req) => {
    const tc = req.trace
    const parent = tc.parentId === null
      ? ROOT_CONTEXT
      : trace.setSpanContext(ROOT_CONTEXT, { traceId: tc.traceId, spanId: tc.parentId, traceFlags: tc.flags, isRemote: true })
    ids.pending = tc
    let span: Span
    try {
      span = tracer.startSpan(req.method, { kind: SpanKind.SERVER, startTime: clock.now(), attributes: { 'http.request.method': req.method, 'pixproxy.request_id': req.id } }, parent)
    } finally {
      ids.pending = null
    }
    requests.set(req.raw, { span, context: trace.setSpan(ROOT_CONTEXT, span), ended: false })
  })
  // Callback style: the handler and everything it awaits run inside run().
  app.addHook('preHandler', (req, _reply, done) => {
    const r = requests.get(req.raw)
    if (r === undefined || !r.span.isRecording()) {
      done()
      return
    }
    current.run(r, done)
  })
  app.addHook('onError', async (req, _reply, err) => {
    const r = requests.get(req.raw)
    if (r !== undefined) r.errorCode = codeOf(err)
  })
  const end = (req: FastifyRequest, reply: FastifyReply | null): void => {
    const r = requests.get(req.raw)
    if (r === undefined || r.ended) return
    r.ended = true
    const { span } = r
    const route = req.routeOptions.url
    if (route !== undefined) {
      span.updateName(`${req.method} ${route}`)
      span.setAttribute('http.route', route)
    }
    if (reply === null) {
      span.setAttribute('pixproxy.aborted', true)
    } else {
      const status = reply.statusCode
      span.setAttribute('http.response.status_code', status)
      const outcome = headerText(reply, OUTCOME_HEADER)
      if (outcome !== undefined) span.setAttribute('pixproxy.outcome', outcome)
      const verdict = headerText(reply, SIGNATURE_CODE_HEADER)
      if (verdict !== undefined) span.setAttribute('pixproxy.signature.code', verdict)
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
    }
    if (r.errorCode !== undefined) {
      span.setAttribute('pixproxy.error.code', r.errorCode)
      span.setAttribute('error.type', r.errorCode)
    }
    span.end(clock.now())
  }
  app.addHook('onResponse', async (req, reply) => { end(req, reply) })
  app.addHook('onRequestAbort', async (req) => { end(req, null) })

  /** A child span of the current request's, or null outside a traced request. */
  const child = (name: string, kind: SpanKind, attributes: Attributes, startPerf = performance.now()): Span | null => {
    const r = current.getStore()
    if (r === undefined) return null
    return tracer.startSpan(name, { kind, attributes, startTime: clock.at(startPerf) }, r.context)
  }
  const failed = (span: Span, err: unknown): void => {
    const code = codeOf(err)
    span.setAttribute('pixproxy.error.code', code)
    span.setAttribute('error.type', code)
    span.setStatus({ code: SpanStatusCode.ERROR })
  }

  return {
    enabled: true,
    async bacenCall<T extends TracedAnswer>(call: { readonly name: string, readonly method: string }, send: () => Promise<T>): Promise<T> {
      const span = child(`BACEN ${call.name} ${call.method}`, SpanKind.CLIENT, { 'pixproxy.upstream': call.name, 'http.request.method': call.method })
      if (span === null) return await send()
      try {
        const answer = await send()
        span.setAttribute('http.response.status_code', answer.status)
        current.getStore()?.span.setAttribute('pixproxy.upstream.status', answer.status)
        return answer
      } catch (err) {
        failed(span, err)
        span.setAttribute('pixproxy.outcome', outcomeOf(err))
        const status = (err as { upstreamStatus?: unknown }).upstreamStatus
        if (typeof status === 'number') span.setAttribute('http.response.status_code', status)
        throw err
      } finally {
        span.end(clock.now())
      }
    },
    verify<T extends TracedVerdict>(check: () => T): T {
      const span = child('verify BACEN signature', SpanKind.INTERNAL, {})
      if (span === null) return check()
      try {
        const verdict = check()
        span.setAttributes({ 'pixproxy.signature.code': verdict.code, 'pixproxy.signature.valid': verdict.valid, 'pixproxy.signature.messages': verdict.results.length })
        return verdict
      } catch (err) {
        failed(span, err)
        throw err
      } finally {
        span.end(clock.now())
      }
    },
    signer (signer: Signer, kind: 'hsm' | 'kms' | 'software'): Signer {
      return {
        publicKey: signer.publicKey,
        description: signer.description,
        async sign (data: Uint8Array): Promise<Buffer> {
          const span = child(kind === 'hsm' ? 'HSM sign' : kind === 'kms' ? 'KMS sign' : 'software sign', SpanKind.INTERNAL, { 'pixproxy.signer': kind })
          if (span === null) return await signer.sign(data)
          try {
            return await signer.sign(data)
          } catch (err) {
            failed(span, err)
            throw err
          } finally {
            span.end(clock.now())
          }
        }
      }
    },
    auditWait (half: 'begin' | 'end', ms: number): void {
      const end = performance.now()
      const span = child(`audit ${half} durable`, SpanKind.INTERNAL, { 'pixproxy.audit.half': half }, end - ms)
      span?.end(clock.at(end))
    },
    async close (timeoutMs: number): Promise<void> {
      let timer: NodeJS.Timeout | undefined
      const bound = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs) })
      try {
        await Promise.race([provider.shutdown().catch((err: unknown) => { app.log.warn({ err }, 'span export did not finish at shutdown') }), bound])
      } finally {
        clearTimeout(timer)
      }
    }
  }
}

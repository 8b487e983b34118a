/**
 * Span export over OTLP (issue 14), off by default. The W3C trace context itself (the trace id in logs, audit rows
 * and the answered traceparent) is http/trace.ts and is always on; this adds spans, and only when
 * PIXPROXY_OTLP_ENDPOINT is set.
 *
 * Off (the default) is NO_TRACING: every call below runs its function and nothing else, no hook is added and no
 * OpenTelemetry module is loaded (test/tracing-off.test.ts checks). On, http/tracing-otel.ts is imported, once,
 * and it alone imports the OpenTelemetry API and SDK.
 *
 * What is traced, from a few points (the forwarding pipeline calls two of them): a server span per request, continuing the
 * caller's traceparent with the proxy's own span id (the one answered in traceparent and logged), and child spans
 * for the HSM sign (plugins/crypto.ts), the BACEN call and the check of BACEN's signature (forwarding/pipeline.ts), and
 * each durable audit write (plugins/audit.ts). Attributes are codes, statuses and names of routes: never a message,
 * a header value, a path with its parameters (a DICT key is a tax id), a key or a PIN.
 */
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import type { Signer } from '../../core/signer.ts'

/** What a BACEN call resolved to, as far as its span needs. */
export interface TracedAnswer { readonly status: number }
/** A signature verdict, as far as its span needs. */
export interface TracedVerdict { readonly code: string, readonly valid: boolean, readonly results: readonly unknown[] }

export interface Tracing {
  readonly enabled: boolean
  /** The call to BACEN of the current request (`send`, retries and ICOM batching included): a client span. */
  bacenCall: <T extends TracedAnswer>(call: { readonly name: string, readonly method: string }, send: () => Promise<T>) => Promise<T>
  /** The check of BACEN's signature(s) on an answer. */
  verify: <T extends TracedVerdict>(check: () => T) => T
  /** A signer whose every sign is a span of the request it signs for. */
  signer: (signer: Signer, kind: 'hsm' | 'kms' | 'software') => Signer
  /** A durable audit write that just ended after `ms` (AuditRecorder's wait observer). */
  auditWait: (half: 'begin' | 'end', ms: number) => void
  /** Exports what is buffered and stops, within `timeoutMs`. */
  close: (timeoutMs: number) => Promise<void>
}

export const NO_TRACING: Tracing = Object.freeze({
  enabled: false,
  bacenCall: async <T>(_call: unknown, send: () => Promise<T>): Promise<T> => await send(),
  verify: <T>(check: () => T): T => check(),
  signer: (signer: Signer): Signer => signer,
  auditWait: (): void => {},
  close: async (): Promise<void> => {}
})

declare module 'fastify' {
  interface FastifyInstance {
    tracing: Tracing
  }
}

/** The app's tracing, or NO_TRACING for an instance built without it (unit tests of the routes' helpers). */
export function tracingOf (app: FastifyInstance): Tracing {
  return (app as { tracing?: Tracing }).tracing ?? NO_TRACING
}

/**
 * Decorates `app.tracing`; with an OTLP endpoint, loads the SDK, adds the request hooks and flushes on close
 * (bounded by the shutdown deadline). Call before the other onRequest hooks, so that a request they refuse is traced.
 */
export async function installTracing (app: FastifyInstance, config: Config): Promise<void> {
  if (config.otlp === null) {
    app.decorate('tracing', NO_TRACING)
    return
  }
  const { startOtelTracing } = await import('./tracing-otel.ts')
  const tracing = startOtelTracing(app, { tracesUrl: config.otlp.tracesUrl, instanceId: app.instanceId })
  app.decorate('tracing', tracing)
  app.log.info({ otlpTracesUrl: config.otlp.tracesUrl }, 'exporting spans over OTLP/HTTP')
  app.addHook('onClose', async () => {
    await tracing.close(Math.min(5_000, config.shutdownTimeoutMs))
  })
}

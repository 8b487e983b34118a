/**
 * The forwarding pipeline (forwarding/pipeline.ts) for the app: BACEN's two upstreams, the audit journal, BACEN's
 * trust store and the Prometheus metrics, wired once. Routes reach it as `app.forwarding` and a request's context as
 * `callContext(req)`.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Forwarding } from '../forwarding/pipeline.ts'
import type { CallContext } from '../forwarding/pipeline.ts'
import { tracingOf } from '../http/tracing.ts'

declare module 'fastify' {
  interface FastifyInstance {
    forwarding: Forwarding
  }
}

/** What the pipeline needs of a caller's request. */
export function callContext (req: FastifyRequest): CallContext {
  return {
    receivedAt: req.receivedAt,
    receivedPerf: req.receivedPerf,
    id: req.id,
    traceId: req.trace.traceId,
    log: req.log,
    gone: () => req.raw.socket?.destroyed === true
  }
}

export default fp(async function forwardingPlugin (app: FastifyInstance) {
  const { metrics } = app
  app.decorate('forwarding', new Forwarding({
    upstreams: { dict: app.upstreams.dict, spi: app.upstreams.spi },
    journal: app.audit.recorder,
    trust: () => app.crypto.bacenTrust,
    invalidSignaturePolicy: app.config.invalidSignaturePolicy,
    deadlineMs: app.config.upstream.deadlineMs,
    tracing: tracingOf(app),
    metrics: {
      upstream: (name, status, ms) => {
        metrics.upstreamRequests.inc({ upstream: name, status: String(status) })
        if (ms !== undefined) metrics.upstreamSeconds.observe({ upstream: name }, ms / 1000)
      },
      verdict: (name, r) => { metrics.signatures.inc({ upstream: name, code: r.code }) },
      error: (code) => { metrics.errors.inc({ code }) }
    }
  }))
}, { name: 'pix-forwarding', fastify: '5.x', dependencies: ['pix-metrics', 'pix-crypto', 'pix-upstreams', 'pix-audit'] })

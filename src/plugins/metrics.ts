/**
 * Prometheus metrics on a registry of the app's own (no global default registry: two apps in one test process
 * must not share counters). Exposed on GET /metrics by routes/health.ts.
 *
 * Conventions (https://prometheus.io/docs/practices/naming/): Node's default metrics keep their standard names
 * (process_*, nodejs_*, no prefix) so stock dashboards work; the proxy's own are pixproxy_*. A value that only grows
 * is a Counter named *_total (never a gauge set from a "since start" number); one unit per metric, in its name
 * (_seconds, _bytes, _rows); a label never mixes units. test/e2e/ops.test.ts checks every family.
 */
import fp from 'fastify-plugin'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { FastifyInstance } from 'fastify'

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export interface ProxyMetrics {
  readonly registry: Registry
  readonly requests: Counter<'route' | 'method' | 'status'>
  readonly requestSeconds: Histogram<'route' | 'method'>
  readonly upstreamRequests: Counter<'upstream' | 'status'>
  readonly upstreamSeconds: Histogram<'upstream'>
  readonly signatures: Counter<'upstream' | 'code'>
  readonly signSeconds: Histogram<'profile'>
  readonly errors: Counter<'code'>
  readonly spiInFlight: Gauge
  readonly spiQueued: Gauge
  readonly spiReadersInFlight: Gauge
  readonly spiReadersQueued: Gauge
  readonly spiPostParts: Histogram
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ProxyMetrics
  }
}

function createMetrics (): ProxyMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const registers = [registry]
  return {
    registry,
    requests: new Counter({ name: 'pixproxy_requests_total', help: 'Requests answered, by route template, method and status', labelNames: ['route', 'method', 'status'], registers }),
    requestSeconds: new Histogram({ name: 'pixproxy_request_duration_seconds', help: 'Time from request to response, by route template', labelNames: ['route', 'method'], buckets: LATENCY_BUCKETS, registers }),
    upstreamRequests: new Counter({ name: 'pixproxy_upstream_requests_total', help: 'Requests to BACEN by upstream and status (error = no response)', labelNames: ['upstream', 'status'], registers }),
    upstreamSeconds: new Histogram({ name: 'pixproxy_upstream_duration_seconds', help: 'BACEN response time (to the full body) by upstream', labelNames: ['upstream'], buckets: LATENCY_BUCKETS, registers }),
    signatures: new Counter({ name: 'pixproxy_response_signatures_total', help: 'BACEN response signature checks by result code', labelNames: ['upstream', 'code'], registers }),
    signSeconds: new Histogram({ name: 'pixproxy_sign_duration_seconds', help: 'Time to sign one message (HSM round trip included)', labelNames: ['profile'], buckets: LATENCY_BUCKETS, registers }),
    errors: new Counter({ name: 'pixproxy_errors_total', help: 'Requests that ended in a pix-proxy error, by code', labelNames: ['code'], registers }),
    spiInFlight: new Gauge({ name: 'pixproxy_spi_in_flight', help: 'Requests to ICOM in flight (BACEN allows 6 per participant)', registers }),
    spiQueued: new Gauge({ name: 'pixproxy_spi_queued', help: 'Requests waiting for an ICOM slot', registers }),
    spiReadersInFlight: new Gauge({ name: 'pixproxy_spi_readers_in_flight', help: 'ICOM stream reads (GET/DELETE) in flight (BACEN allows 6 readers per participant)', registers }),
    spiReadersQueued: new Gauge({ name: 'pixproxy_spi_readers_queued', help: 'ICOM stream reads waiting for a reader slot', registers }),
    spiPostParts: new Histogram({ name: 'pixproxy_spi_post_parts', help: 'Messages per POST to ICOM (above 1: coalesced into multipart/mixed while slots were busy)', buckets: [1, 2, 3, 5, 8, 10], registers })
  }
}

export default fp(async function metricsPlugin (app: FastifyInstance) {
  const metrics = createMetrics()
  app.decorate('metrics', metrics)
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched'
    metrics.requests.inc({ route, method: req.method, status: String(reply.statusCode) })
    metrics.requestSeconds.observe({ route, method: req.method }, reply.elapsedTime / 1000)
  })
}, { name: 'pix-metrics', fastify: '5.x' })

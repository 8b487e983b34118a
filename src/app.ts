/**
 * The pix-proxy application as a Fastify instance that tests build and drive (inject() or a real port);
 * src/server.ts only adds listen, signals and process exit.
 *
 * Plugin order is the start-up order and, reversed, the shutdown order: config → metrics (and EMF) → callers (the
 * inbound allowlist) → crypto (HSM key store, signer, BACEN trust) → upstreams (TLS key agent, keep-alive pools) →
 * audit → forwarding (the pipeline) → ICOM (its limits) → routes → the operations listener (plugins/ops.ts, when
 * configured; it starts listening once the app is ready). Fastify closes in reverse, so on
 * close the routes stop (503 while closing), in-flight requests drain, the upstream agents close, and the HSM
 * sessions are logged out last.
 */
import Fastify from 'fastify'
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify'
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { hostname } from 'node:os'
import { readPemSettingSync } from './config.ts'
import type { Config } from './config.ts'
import { Errors, PixProxyError } from '../core/errors.ts'
import { drainConnections } from './http/drain.ts'
import { OneLineRequestLog } from './http/request-log.ts'
import { installMemoryBudget } from './http/budget.ts'
import { problemErrorHandler, sendProblem } from './http/problem.ts'
import { formatTraceparent, traceOf } from './http/trace.ts'
import { installTracing } from './http/tracing.ts'
import type { TraceContext } from './http/trace.ts'
import metricsPlugin from './plugins/metrics.ts'
import callersPlugin from './plugins/callers.ts'
import emfPlugin from './plugins/emf.ts'
import cryptoPlugin from './plugins/crypto.ts'
import upstreamsPlugin from './plugins/upstreams.ts'
import auditPlugin from './plugins/audit.ts'
import forwardingPlugin from './plugins/forwarding.ts'
import icomPlugin from './plugins/icom.ts'
import type { UpstreamsPluginOptions } from './plugins/upstreams.ts'
import type { CryptoPluginOptions } from './plugins/crypto.ts'
import dictRoutes from './routes/dict.ts'
import spiRoutes from './routes/spi.ts'
import healthRoutes, { healthEndpoints } from './routes/health.ts'
import opsListener from './plugins/ops.ts'
import { registerCertificateExpiry } from './plugins/certificate-metrics.ts'
import type { HeldCertificate } from './plugins/certificate-metrics.ts'
import { installInputChecks, shown } from './routes/params.ts'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export interface AppOptions {
  readonly config: Config
  /** pino options or an instance; false in tests that read nothing from logs. */
  readonly logger?: FastifyServerOptions['logger'] | FastifyServerOptions['loggerInstance']
  /** Tests resolve BACEN host names to loopback. */
  readonly lookup?: UpstreamsPluginOptions['lookup']
  /** Tests trigger the mTLS key secret's periodic refresh themselves (plugins/upstreams.ts). */
  readonly scheduleSecretRefresh?: UpstreamsPluginOptions['scheduleSecretRefresh']
  /** Tests drive the KMS guard's time (rate limit, backoff, deadline, cool-down) with a manual clock. */
  readonly kmsClock?: CryptoPluginOptions['kmsClock']
}

/** The caller's x-request-id when it is 1–64 characters of A–Z, a–z, 0–9, '.', '_', ':' or '-'; else undefined. */
function callerRequestId (value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(value) ? value : undefined
}

/** Builds the app; resolves once the HSM, signer, trust store and upstream agents are ready. */
export async function buildApp (opts: AppOptions): Promise<FastifyInstance> {
  const { config } = opts
  const https = config.inbound.tls === null
    ? null
    : {
        cert: readPemSettingSync(config.inbound.tls.certFile),
        key: readPemSettingSync(config.inbound.tls.keyFile),
        minVersion: 'TLSv1.2' as const,
        ...(config.inbound.clientCaFile === null
          ? {}
          : { ca: readPemSettingSync(config.inbound.clientCaFile), requestCert: true, rejectUnauthorized: true })
      }
  const loggerOpt = opts.logger === undefined
    ? {
        logger: {
          level: config.logLevel,
          // Credentials never reach the logs, whatever a future log line includes.
          redact: ['req.headers.authorization', 'pin', '*.pin', 'key', '*.privateKey']
        }
      }
    : (typeof opts.logger === 'object' && opts.logger !== null && 'child' in opts.logger
        ? { loggerInstance: opts.logger as FastifyServerOptions['loggerInstance'] }
        : { logger: opts.logger as FastifyServerOptions['logger'] })
  const app: FastifyInstance = Fastify({
    ...loggerOpt,
    // One access-log line per request, not two (http/request-log.ts).
    logController: new OneLineRequestLog(),
    ...(https === null ? {} : { https }),
    bodyLimit: config.maxBodyBytes,
    // Closing is answered by our own hook below (problem+json with a stable code and Retry-After).
    return503OnClosing: false,
    // A caller's x-request-id becomes the request id (logs, the problem's instance, the audit row's correlation id)
    // only in a safe form; anything else is replaced by a UUID and logged, truncated, at debug (hook below).
    requestIdHeader: false,
    genReqId: (raw) => callerRequestId(raw.headers['x-request-id']) ?? randomUUID(),
    // Every log line of a request carries its trace id (http/trace.ts): the caller's W3C traceparent's, or a new
    // one. Bound here, not in a hook, so that the lines Fastify logs before any hook runs have it too.
    childLoggerFactory: (logger, bindings, opts, raw) =>
      logger.child({ ...bindings, traceId: traceOf(raw as IncomingMessage).traceId }, opts),
    // Only the methods BACEN lists reach a route. Fastify would add HEAD to every GET: a HEAD on the stream route
    // pulled a page from ICOM, audited it and answered headers only, and the next pull acknowledged it (the messages
    // never reached the core). HEAD and every other method get 404 ROUTE_NOT_ALLOWED; nothing is sent upstream.
    exposeHeadRoutes: false,
    // Requests to BACEN can take up to the upstream timeouts plus the ICOM queue wait.
    requestTimeout: config.upstream.connectTimeoutMs + config.upstream.headersTimeoutMs + config.upstream.bodyTimeoutMs + config.spi.queueTimeoutMs,
    // Not true (it would cut in-flight requests); idle connections are ended by drainConnections() below.
    forceCloseConnections: false,
    // No fixed deadline on start-up (Fastify's default is 10 s per plugin): the audit plugin replays what a crash
    // left in the spool (up to PIXPROXY_AUDIT_SPOOL_MAX_BYTES) and starts its thread, the HSM plugin logs in and
    // opens sessions, and on a loaded machine or with a large spool that took longer than 10 s, failing a start
    // that would have succeeded. A start that hangs is bounded where it can be judged: by the orchestrator's health
    // check grace period (the image's HEALTHCHECK start period, the ECS health check), which replaces the task.
    pluginTimeout: 0,
    // Errors Fastify raises before routing (a malformed URL or percent-encoding) bypass setErrorHandler: answer
    // them as problems too, so no caller ever sees a bare Fastify JSON error.
    frameworkErrors: (error, req, reply) => {
      app.metrics.errors.inc({ code: Errors.BAD_REQUEST.code })
      return sendProblem(reply as FastifyReply, req as FastifyRequest, 400, Errors.BAD_REQUEST.code, new PixProxyError(Errors.BAD_REQUEST, [error.message]).message)
    }
  }) as unknown as FastifyInstance
  app.decorate('config', config)
  if (config.unauthenticatedCallers) {
    app.log.warn({ listen: config.listen, setting: 'PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS' }, 'callers are not authenticated (no inbound mutual TLS with a client CA and an allowlist) on a non-loopback address: whoever reaches the port can have messages signed with the participant\'s key')
  }
  // Before any route is registered: every route's path parameters and query string are checked (routes/params.ts).
  installInputChecks(app)
  app.decorate('instanceId', config.instanceId ?? `${hostname()}-${process.pid}`)
  // Span export (OTLP), when configured: its request hooks before every other, so that refused requests have spans.
  await installTracing(app, config)

  // Bodies are XML (or multipart of XML) and stay bytes: signing needs the caller's exact text.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser(['application/xml', 'text/xml', 'multipart/mixed'], { parseAs: 'buffer' }, (_req, body, done) => { done(null, body) })

  await app.register(metricsPlugin)
  // CloudWatch EMF request metrics (PIXPROXY_METRICS_EMF); no hook at all when off.
  await app.register(emfPlugin)
  app.setErrorHandler(problemErrorHandler)
  app.setNotFoundHandler((req, reply) => {
    app.metrics.errors.inc({ code: Errors.ROUTE_NOT_ALLOWED.code })
    return sendProblem(reply, req, 404, Errors.ROUTE_NOT_ALLOWED.code, new PixProxyError(Errors.ROUTE_NOT_ALLOWED, [req.method, req.url.split('?')[0]]).message)
  })
  app.decorateRequest('receivedAt', 0)
  app.decorateRequest('receivedPerf', 0)
  app.decorateRequest('trace', { getter (this: FastifyRequest): TraceContext { return traceOf(this.raw) } })
  app.addHook('onRequest', async (req) => {
    req.receivedAt = Date.now()
    req.receivedPerf = performance.now()
    const given = req.headers['x-request-id']
    if (given !== undefined && given !== req.id) req.log.debug({ callerRequestId: shown(String(given), 64) }, 'x-request-id not in the accepted form (1-64 of A-Z a-z 0-9 . _ : -): replaced')
    const traceparent = req.headers.traceparent
    if (traceparent !== undefined && req.trace.parentId === null) req.log.debug({ traceparent: shown(String(traceparent), 64) }, 'traceparent not a valid W3C trace context: a new trace started')
  })
  // Shutdown: once close() starts, new requests get 503 + Retry-After (another task will take them) while the
  // ones in flight finish. Connections end as their last response is flushed (http/drain.ts says why Node's own
  // closeIdleConnections(), which server.close() calls, must not do it: it cuts responses still being written).
  let closing = false
  const drain = drainConnections(app.server)
  app.addHook('preClose', async () => {
    closing = true
    drain.start()
  })
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id)
    // The caller's trace continues through the proxy's span (http/trace.ts); never sent to BACEN (forwarding/pipeline.ts).
    reply.header('traceparent', formatTraceparent(req.trace))
    // While draining, a connection's last response says Connection: close, so the client sends nothing more on it
    // and takes its next request to another task. A response with requests pipelined behind it stays keep-alive:
    // Node drops whatever is queued behind a "close" response, and those requests are owed their 503.
    if (closing && drain.openResponses(req.raw.socket) <= 1) reply.header('connection', 'close')
  })
  app.addHook('onRequest', async () => {
    if (closing) throw new PixProxyError(Errors.SHUTTING_DOWN)
  })

  // Who may call: the inbound mutual-TLS client allowlist (plugins/callers.ts).
  await app.register(callersPlugin)

  installMemoryBudget(app, config.memoryBudgetBytes, config.maxBodyBytes)

  await app.register(cryptoPlugin, { config, ...(opts.kmsClock === undefined ? {} : { kmsClock: opts.kmsClock }) })
  await app.register(upstreamsPlugin, {
    config,
    ...(opts.lookup === undefined ? {} : { lookup: opts.lookup }),
    ...(opts.scheduleSecretRefresh === undefined ? {} : { scheduleSecretRefresh: opts.scheduleSecretRefresh })
  })
  registerCertificateExpiry(app.metrics.registry, function * (): Iterable<HeldCertificate> {
    yield { role: 'signing', certificate: app.crypto.signingCertificate }
    // The agent's current identity: after a SIGHUP rotation, the new certificate and CA bundle.
    yield { role: 'tls-client', certificate: app.upstreams.agent.certificate }
    for (const certificate of app.crypto.bacenTrust.certificates()) yield { role: 'bacen-signing', certificate }
    for (const certificate of app.upstreams.agent.cas) yield { role: 'bacen-ca', certificate }
  })
  await app.register(auditPlugin, { config })
  await app.register(forwardingPlugin)
  await app.register(icomPlugin)
  app.decorate('health', healthEndpoints(app, { ...(opts.lookup === undefined ? {} : { lookup: opts.lookup }), isClosing: () => closing }))
  await app.register(healthRoutes)
  await app.register(dictRoutes)
  await app.register(spiRoutes)
  await app.register(opsListener)
  await app.ready()
  return app
}

declare module 'fastify' {
  interface FastifyInstance {
    instanceId: string
  }
  interface FastifyRequest {
    /** Epoch ms and performance.now() when the request arrived (audit request_date, total latency). */
    receivedAt: number
    receivedPerf: number
    /** The request's W3C trace context: from the caller's traceparent, or a trace the proxy started (http/trace.ts). */
    readonly trace: TraceContext
  }
}

/**
 * The operations listener (PIXPROXY_OPS_LISTEN_PORT): plain HTTP, by default on loopback, serving only GET
 * /healthz, /readyz and /metrics. The callers' listener demands TLS and, in production, a client certificate from
 * the bank's allow-list; a metrics sidecar or a container health check in the same task holds neither, and issuing
 * one a client certificate would let it post payments. This listener gives them the three read-only endpoints and
 * nothing else.
 *
 * Its requests are not logged and not counted in pixproxy_requests_total (a scrape every 10 s would drown the
 * request log). It listens once the app is ready and closes with it; while the app
 * drains, /readyz answers 503 "shutting down" and /metrics keeps answering.
 */
import Fastify, { LogController } from 'fastify'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { isIP } from 'node:net'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { sendProblem } from '../http/problem.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The operations listener's URL once listening (null when none is configured or before ready). */
    opsUrl: string | null
  }
}

function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
}

function notAllowed (req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const err = new PixProxyError(Errors.ROUTE_NOT_ALLOWED, [req.method, req.url.split('?')[0]])
  return sendProblem(reply, req, 404, err.code, `${err.message} (the operations listener serves GET /healthz, /readyz and /metrics only)`)
}

export default fp(async function opsListener (app: FastifyInstance): Promise<void> {
  app.decorate('opsUrl', null)
  const where = app.config.ops
  if (where === null) return
  const ops = Fastify({
    loggerInstance: app.log.child({ listener: 'ops' }),
    logController: new LogController({ disableRequestLogging: true }),
    // Nothing here takes a body.
    bodyLimit: 1,
    // GET only: a HEAD /readyz would probe BACEN like a GET does (src/app.ts says why the main listener refuses HEAD).
    exposeHeadRoutes: false,
    forceCloseConnections: true,
    frameworkErrors: (_err, req, reply) => notAllowed(req as FastifyRequest, reply as FastifyReply)
  })
  ops.removeAllContentTypeParsers()
  ops.get('/healthz', async () => app.health.healthz())
  ops.get('/readyz', async (_req, reply) => await app.health.readyz(reply))
  ops.get('/metrics', async (_req, reply) => await app.health.metrics(reply))
  ops.setNotFoundHandler(notAllowed)
  ops.setErrorHandler((err, req, reply) => {
    req.log.error({ err }, 'operations endpoint failed')
    return sendProblem(reply, req, 500, Errors.INTERNAL.code, 'internal error; the request id identifies it in the logs')
  })

  // Listening fails the app's start-up (a port taken is a configuration error the operator must see).
  app.addHook('onReady', async () => {
    // Its own log text: tools read the callers' URL from Fastify's "Server listening at" line.
    app.opsUrl = await ops.listen({ host: where.host, port: where.port, listenTextResolver: (address) => `operations listener at ${address}` })
    if (!isLoopback(where.host)) {
      app.log.warn({ url: app.opsUrl }, 'the operations listener is not on loopback: readiness details and metrics are served without TLS or client check')
    }
  })
  app.addHook('onClose', async () => { await ops.close() })
}, { name: 'pix-ops-listener', fastify: '5.x' })

/**
 * /healthz: the process answers (liveness; never touches dependencies, so a BACEN outage does not get tasks killed).
 * /readyz: an HSM session can be taken and the token answers, and each BACEN upstream completes a TLS handshake
 * with our client identity (cached briefly: a load balancer polling every second must not become a handshake load).
 * /metrics: Prometheus text format.
 *
 * The same three answer on the callers' listener (behind its TLS and client allow-list) and on the operations
 * listener when one is configured (src/plugins/ops.ts): both serve the handlers built here.
 */
import { connect } from 'node:tls'
import type { LookupFunction } from 'node:net'
import type { FastifyInstance, FastifyReply } from 'fastify'

declare module 'fastify' {
  interface FastifyInstance {
    health: HealthEndpoints
  }
}

export interface HealthEndpoints {
  healthz (): { status: 'ok' }
  readyz (reply: FastifyReply): Promise<FastifyReply>
  metrics (reply: FastifyReply): Promise<FastifyReply>
}

export interface Readiness {
  readonly status: 'ready' | 'not ready' | 'shutting down'
  readonly checks: Record<string, { ok: boolean, detail: string }>
}

const PROBE_CACHE_MS = 5_000
const PROBE_TIMEOUT_MS = 3_000
// A server that accepts us sends its session ticket at once; one that refuses sends an alert at once. The grace only
// decides for a quiet server, so it can be generous: a short one would call a refusal that arrives late (a busy
// BACEN front end, a slow link) accepted.
const TLS13_GRACE_MS = 1_500

interface ProbeResult { ok: boolean, detail: string, at: number }

/** The handlers, decorated on the app as `app.health`; `isClosing` says when shutdown has begun. */
export function healthEndpoints (app: FastifyInstance, opts: { lookup?: LookupFunction, isClosing: () => boolean }): HealthEndpoints {
  const cache = new Map<string, ProbeResult>()

  const probe = async (origin: string): Promise<ProbeResult> => {
    const hit = cache.get(origin)
    if (hit !== undefined && Date.now() - hit.at < PROBE_CACHE_MS) return hit
    const url = new URL(origin)
    const result = await new Promise<ProbeResult>((resolve) => {
      const socket = connect({
        host: url.hostname,
        port: Number(url.port === '' ? 443 : url.port),
        servername: url.hostname,
        secureContext: app.upstreams.agent.secureContext,
        ...(opts.lookup === undefined ? {} : { lookup: opts.lookup })
      })
      let settled = false
      const done = (ok: boolean, detail: string): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.destroy()
        resolve({ ok, detail, at: Date.now() })
      }
      const timer = setTimeout(() => done(false, `no TLS handshake within ${PROBE_TIMEOUT_MS} ms`), PROBE_TIMEOUT_MS)
      timer.unref()
      socket.once('secureConnect', () => {
        const protocol = socket.getProtocol() ?? 'tls'
        if (protocol !== 'TLSv1.3') {
          done(true, protocol)
          return
        }
        // In TLS 1.3 the client finishes before the server has judged its certificate: a refused certificate shows
        // up only afterwards, as an alert or a closed connection. The server's session ticket comes after it
        // accepted us; a quiet server that sends none is taken as accepting after a short grace period.
        const grace = setTimeout(() => done(true, protocol), TLS13_GRACE_MS)
        grace.unref()
        socket.once('session', () => { clearTimeout(grace); done(true, protocol) })
        socket.once('end', () => { clearTimeout(grace); done(false, 'BACEN closed the connection after the handshake: client certificate refused?') })
        socket.once('close', () => { clearTimeout(grace); done(false, 'connection closed after the handshake: client certificate refused?') })
      })
      socket.once('error', (err: Error & { code?: string }) => done(false, `${err.code ?? 'error'}: ${err.message}`))
    })
    cache.set(origin, result)
    return result
  }

  const readyz = async (reply: FastifyReply): Promise<FastifyReply> => {
    // Draining: the callers' listener already answers 503 SHUTTING_DOWN to everything; say the same here.
    if (opts.isClosing()) return await reply.code(503).send({ status: 'shutting down', checks: {} } satisfies Readiness)
    const checks: Record<string, { ok: boolean, detail: string }> = {}
    if (app.crypto.keyStore !== null) {
      try {
        await app.crypto.keyStore.check()
        const s = app.crypto.keyStore.stats()
        checks.hsm = { ok: true, detail: `${s.idle} idle of ${s.size} sessions` }
      } catch (err) {
        checks.hsm = { ok: false, detail: `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}` }
      }
    }
    const audit = app.audit.status()
    if (audit !== null) {
      // Near the bound the task stays ready (it still audits) but says so; a failed spool refuses every request.
      checks.audit = await audit.then(({ spool: s }) => s.failed
        ? { ok: false, detail: 'the audit spool failed: requests are refused' }
        : { ok: true, detail: `${s.pendingRows} rows pending, ${s.bytes} of ${s.maxBytes} spool bytes${s.nearFull ? ' (WARNING: spool near full; is the sink down?)' : ''}` },
      (err: unknown) => ({ ok: false, detail: `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}` }))
    }
    const [dict, spi] = await Promise.all([probe(app.config.dict.url), probe(app.config.spi.url)])
    checks.dict = { ok: dict.ok, detail: dict.detail }
    checks.spi = { ok: spi.ok, detail: spi.detail }
    const ok = Object.values(checks).every((c) => c.ok)
    return await reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready', checks } satisfies Readiness)
  }

  return {
    healthz: () => ({ status: 'ok' }),
    readyz,
    metrics: async (reply) => {
      const registry = app.metrics.registry
      return await reply.type(registry.contentType).send(await registry.metrics())
    }
  }
}

export default async function healthRoutes (app: FastifyInstance): Promise<void> {
  app.get('/healthz', async () => app.health.healthz())
  app.get('/readyz', async (_req, reply) => await app.health.readyz(reply))
  app.get('/metrics', async (_req, reply) => await app.health.metrics(reply))
}

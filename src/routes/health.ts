/**
 * /healthz: the process answers (liveness; never touches dependencies, so a BACEN outage does not get tasks killed).
 * /readyz: this task can serve now. Counted (any one failing answers 503):
 *   - hsm: an HSM session can be taken, the token answers, and the signing and TLS keys are still on it;
 *   - kms (signing key in KMS): the guard's circuit is not open and the key is still Enabled;
 *   - tls: the TLS key agent completes a mutual-TLS handshake with our certificate against a loopback server in
 *     this process (the HSM key signs through the engine), and BACEN has not refused that identity;
 *   - audit: the audit thread answers and its spool is below the high-water mark (audit/readiness.ts, the gateway's too).
 * BACEN's reachability is reported under `upstreams` and in pixproxy_upstream_reachable, never counted: an outage
 * of BACEN or of the RSFN link is the same for every task, and draining them all helps nobody. Only a refusal that
 * names our identity counts (see identityVerdict; docs/operations.md "What readiness means").
 * Probes are cached briefly: a load balancer polling every second must not become a handshake load on BACEN or on
 * the HSM.
 * /metrics: Prometheus text format.
 *
 * The same three answer on the callers' listener (behind its TLS and client allow-list) and on the operations
 * listener when one is configured (src/plugins/ops.ts): both serve the handlers built here.
 */
import { generateKeyPair, X509Certificate } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { connect, createServer } from 'node:tls'
import type { TLSSocket } from 'node:tls'
import type { AddressInfo, LookupFunction } from 'node:net'
import { promisify } from 'node:util'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { Gauge } from 'prom-client'
import { auditCheck } from '../audit/readiness.ts'
import type { Check } from '../audit/readiness.ts'
import { issueCertificate } from '../../core/pki/ca.ts'

declare module 'fastify' {
  interface FastifyInstance {
    health: HealthEndpoints
  }
}

export interface HealthEndpoints {
  healthz (): { status: 'ok' }
  readyz (reply: FastifyReply): Promise<FastifyReply>
  metrics (reply: FastifyReply): Promise<FastifyReply>
  /** Drops the cached probe results: the next /readyz or scrape probes again (tests, and after a rotation). */
  forget (): void
}

export interface Readiness {
  readonly status: 'ready' | 'not ready' | 'shutting down'
  /** What decides `status`. */
  readonly checks: Record<string, Check>
  /** BACEN as this task sees it: reported, not counted (absent while shutting down). */
  readonly upstreams?: Record<string, { readonly reachable: boolean, readonly detail: string }>
}

const PROBE_CACHE_MS = 5_000
const PROBE_TIMEOUT_MS = 3_000
// A server that accepts us sends its session ticket at once; one that refuses sends an alert at once. The grace only
// decides for a quiet server, so it can be generous: a short one would call a refusal that arrives late (a busy
// BACEN front end, a slow link) accepted.
const TLS13_GRACE_MS = 1_500

/**
 * accepted: the mutual-TLS handshake completed and BACEN kept the connection. refused: BACEN answered TLS and
 * turned our identity down (a certificate alert, or the connection ended once it had our certificate).
 * unreachable: anything else (no route, refused or reset before our certificate was sent, timeout, BACEN's own
 * certificate not verifying against our pinned CAs).
 */
export type ProbeVerdict = 'accepted' | 'refused' | 'unreachable'
export interface UpstreamProbe { readonly verdict: ProbeVerdict, readonly detail: string }
interface Cached<T> { readonly value: T, readonly at: number }

// Alerts a server sends about the client's certificate or its CertificateVerify signature (RFC 8446 §6.2), as
// Node names them.
const IDENTITY_ALERT = /^ERR_SSL_(SSLV3|TLSV1|TLSV13)_ALERT_(BAD_CERTIFICATE|UNSUPPORTED_CERTIFICATE|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED|CERTIFICATE_UNKNOWN|UNKNOWN_CA|ACCESS_DENIED|DECRYPT_ERROR|CERTIFICATE_REQUIRED)$/

const ENDED_BY_PEER: ReadonlySet<string> = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED'])

/**
 * Classifies how a probe ended (`error`: the error's code, absent for a connection closed cleanly). `identitySent`: our certificate went out (TLS 1.2: the master secret was derived,
 * which happens in the flight that carries Certificate and CertificateVerify; TLS 1.3: the client finished its
 * handshake). A connection BACEN ends after that point is a refusal of the identity; before it, BACEN (or the link)
 * is down and our identity was never judged.
 */
export function probeVerdict (end: { error?: string, identitySent: boolean }): ProbeVerdict {
  if (end.error !== undefined && IDENTITY_ALERT.test(end.error)) return 'refused'
  // Our own refusals (BACEN's certificate failing verification against the pinned CAs, a wrong host name) are
  // errors of another kind: they say nothing about our identity.
  const endedByBacen = end.error === undefined || ENDED_BY_PEER.has(end.error) || /^ERR_SSL_\w+_ALERT_/.test(end.error)
  return end.identitySent && endedByBacen ? 'refused' : 'unreachable'
}

/**
 * The `tls` check: our own handshake (null when not yet run) and what BACEN made of our identity. BACEN counts
 * only when no upstream accepted us and one refused: both use the same certificate, so one accepting it shows
 * the other's refusal is about that server, not about us.
 */
export function identityCheck (local: Check, upstreams: Readonly<Record<string, UpstreamProbe>>): Check {
  if (!local.ok) return local
  const probes = Object.entries(upstreams)
  const refused = probes.filter(([, p]) => p.verdict === 'refused').map(([name]) => name)
  if (refused.length > 0 && !probes.some(([, p]) => p.verdict === 'accepted')) {
    return { ok: false, detail: `BACEN refused our client certificate (${refused.join(', ')}); ${local.detail}` }
  }
  return local
}

function describe (err: unknown): string {
  return `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`
}

/** The handlers, decorated on the app as `app.health`; `isClosing` says when shutdown has begun. */
export function healthEndpoints (app: FastifyInstance, opts: { lookup?: LookupFunction, isClosing: () => boolean }): HealthEndpoints {
  const cache = new Map<string, Cached<UpstreamProbe>>()
  let selfTest: Cached<Check> | null = null
  const fresh = <T>(c: Cached<T> | null | undefined): c is Cached<T> => c !== null && c !== undefined && Date.now() - c.at < PROBE_CACHE_MS
  const forget = (): void => { cache.clear(); selfTest = null }
  // A rotated certificate is judged afresh, not by what BACEN made of the previous one.
  app.upstreams.agent.onRotate(forget)

  const probe = async (origin: string): Promise<UpstreamProbe> => {
    const hit = cache.get(origin)
    if (fresh(hit)) return hit.value
    const url = new URL(origin)
    const result = await new Promise<UpstreamProbe>((resolve) => {
      const socket = connect({
        host: url.hostname,
        port: Number(url.port === '' ? 443 : url.port),
        servername: url.hostname,
        secureContext: app.upstreams.agent.secureContext,
        ...(opts.lookup === undefined ? {} : { lookup: opts.lookup })
      })
      let identitySent = false
      let settled = false
      const done = (verdict: ProbeVerdict, detail: string): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.destroy()
        resolve({ verdict, detail })
      }
      const ended = (what: string, error?: string): void => {
        const verdict = probeVerdict({ identitySent, ...(error === undefined ? {} : { error }) })
        done(verdict, verdict === 'refused' ? `${what}: BACEN refused our client certificate` : what)
      }
      socket.on('keylog', (line: Buffer) => { if (line.toString('latin1').startsWith('CLIENT_RANDOM ')) identitySent = true })
      const timer = setTimeout(() => done('unreachable', `no TLS handshake within ${PROBE_TIMEOUT_MS} ms`), PROBE_TIMEOUT_MS)
      timer.unref()
      socket.once('secureConnect', () => {
        identitySent = true
        const protocol = socket.getProtocol() ?? 'tls'
        if (protocol !== 'TLSv1.3') {
          done('accepted', protocol)
          return
        }
        // In TLS 1.3 the client finishes before the server has judged its certificate: a refused certificate shows
        // up only afterwards, as an alert or a closed connection. The server's session ticket comes after it
        // accepted us; a quiet server that sends none is taken as accepting after a short grace period.
        const grace = setTimeout(() => done('accepted', protocol), TLS13_GRACE_MS)
        grace.unref()
        socket.once('session', () => { clearTimeout(grace); done('accepted', protocol) })
        socket.once('end', () => { clearTimeout(grace); ended('BACEN closed the connection after the handshake') })
        socket.once('close', () => { clearTimeout(grace); ended('connection closed after the handshake') })
      })
      socket.once('error', (err: Error & { code?: string }) => { ended(describe(err), err.code ?? 'ERROR') })
      socket.once('close', () => { ended('connection closed during the handshake') })
    })
    cache.set(origin, { value: result, at: Date.now() })
    return result
  }

  // The loopback server's own certificate: made once, only the client side of the handshake is under test.
  let loopback: Promise<{ cert: string, key: string, fingerprint256: string }> | null = null
  const loopbackIdentity = async (): Promise<{ cert: string, key: string, fingerprint256: string }> => {
    loopback ??= promisify(generateKeyPair)('rsa', { modulusLength: 2048 }).then(({ publicKey, privateKey }: { publicKey: KeyObject, privateKey: KeyObject }) => {
      const cert = issueCertificate({ subject: 'CN=pix-proxy readiness loopback', publicKey, selfSignKey: privateKey, extKeyUsage: ['serverAuth'] })
      return { cert: cert.pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, fingerprint256: new X509Certificate(cert.pem).fingerprint256 }
    })
    return await loopback
  }

  /**
   * The TLS key agent, without BACEN: a handshake with a server in this process that asks for a client certificate.
   * It completes only if the engine signed CertificateVerify with the HSM key and the signature matches our
   * certificate: the HSM reachable through the engine, the key there, the certificate the one for it.
   */
  const tlsSelfTest = async (): Promise<Check> => {
    if (fresh(selfTest)) return selfTest.value
    const agent = app.upstreams.agent
    const { cert, key, fingerprint256 } = await loopbackIdentity()
    const result = await new Promise<Check>((resolve) => {
      // Neither side can verify the other by a chain: our certificate's CA is not in this server's store, and the
      // agent's context trusts BACEN's CAs only (adding this certificate to it would widen what BACEN connections
      // accept). So chain checks are off on both ends and each end pins the other's certificate by its SHA-256
      // fingerprint instead, which is stricter than a chain: one certificate, the one this process holds.
      const server = createServer({ cert, key, requestCert: true, rejectUnauthorized: false })
      let client: TLSSocket | null = null
      let settled = false
      let serverSaw: string | null = null
      let clientSaw = false
      const done = (ok: boolean, detail: string): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        client?.destroy()
        server.close()
        resolve({ ok, detail })
      }
      const timer = setTimeout(() => done(false, `the TLS key completed no loopback handshake within ${PROBE_TIMEOUT_MS} ms`), PROBE_TIMEOUT_MS)
      timer.unref()
      server.on('secureConnection', (socket: TLSSocket) => {
        const peer = socket.getPeerX509Certificate()
        const protocol = socket.getProtocol() ?? 'tls'
        socket.destroy()
        if (peer?.fingerprint256 !== agent.certificate.fingerprint256) done(false, 'the TLS key agent did not present its certificate')
        else {
          serverSaw = `${protocol} handshake signed by ${agent.keyDescription}`
          if (clientSaw) done(true, serverSaw)
        }
      })
      server.on('tlsClientError', (err) => { done(false, `the TLS key could not complete a handshake: ${describe(err)}`) })
      server.on('error', (err) => { done(false, `loopback server: ${describe(err)}`) })
      server.listen(0, '127.0.0.1', () => {
        const socket = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, secureContext: agent.secureContext, rejectUnauthorized: false })
        client = socket
        socket.on('secureConnect', () => {
          if (socket.getPeerX509Certificate()?.fingerprint256 !== fingerprint256) {
            done(false, 'the loopback handshake reached a server other than this process\'s')
            return
          }
          clientSaw = true
          // Either end may finish first (TLS 1.2: the server; TLS 1.3: the client): both must have checked.
          if (serverSaw !== null) done(true, serverSaw)
        })
        socket.on('error', (err) => { done(false, `the TLS key could not complete a handshake: ${describe(err)}`) })
      })
    })
    selfTest = { value: result, at: Date.now() }
    return result
  }

  const hsmCheck = async (): Promise<Check | null> => {
    const keyStore = app.crypto.keyStore
    if (keyStore === null) return null
    const labels = [app.config.signing.keyLabel, app.config.tls.keyLabel].filter((l): l is string => l !== null)
    try {
      await keyStore.check(labels)
      const s = keyStore.stats()
      return { ok: true, detail: `${s.idle} idle of ${s.size} sessions; keys ${labels.join(', ') || '(none in the HSM)'} present` }
    } catch (err) {
      return { ok: false, detail: describe(err) }
    }
  }

  /** The signing key in KMS: its circuit not open (kms/guard.ts, no KMS call) and the key still Enabled (kms/signer.ts, cached 10 s). */
  const kmsCheck = async (): Promise<Check | null> => {
    const guard = app.crypto.kmsGuard
    if (guard === null) return null
    try {
      return { ok: true, detail: await guard.check() }
    } catch (err) {
      return { ok: false, detail: describe(err) }
    }
  }

  // The gateway's /readyz makes the same check (audit/readiness.ts). Through app.audit.status(), not the worker's own:
  // tests replace it to show a spool at its high-water mark.
  const auditReadiness = async (): Promise<Check | null> => await auditCheck({ failure: app.audit.worker?.failure ?? null, status: () => app.audit.status() })

  const upstreamProbes = async (): Promise<Record<string, UpstreamProbe>> => {
    const [dict, spi] = await Promise.all([probe(app.config.dict.url), probe(app.config.spi.url)])
    return { dict, spi }
  }

  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_upstream_reachable',
    help: '1 when the last probe of this BACEN upstream completed a mutual-TLS handshake with this task\'s identity (probes cached 5 s); 0 when BACEN could not be reached or refused the identity. Not part of readiness',
    labelNames: ['upstream'],
    registers: [app.metrics.registry],
    async collect () {
      // While draining the upstream agents are closing: show the last result rather than open new connections.
      if (opts.isClosing()) {
        for (const [name, origin] of [['dict', app.config.dict.url], ['spi', app.config.spi.url]] as const) {
          const last = cache.get(origin)
          if (last !== undefined) this.set({ upstream: name }, last.value.verdict === 'accepted' ? 1 : 0)
        }
        return
      }
      for (const [name, p] of Object.entries(await upstreamProbes())) this.set({ upstream: name }, p.verdict === 'accepted' ? 1 : 0)
    }
  })

  const readyz = async (reply: FastifyReply): Promise<FastifyReply> => {
    // Draining: the callers' listener already answers 503 SHUTTING_DOWN to everything; say the same here.
    if (opts.isClosing()) return await reply.code(503).send({ status: 'shutting down', checks: {} } satisfies Readiness)
    const [hsm, kms, audit, local, upstreams] = await Promise.all([hsmCheck(), kmsCheck(), auditReadiness(), tlsSelfTest(), upstreamProbes()])
    const checks: Record<string, Check> = {}
    if (hsm !== null) checks.hsm = hsm
    if (kms !== null) checks.kms = kms
    checks.tls = identityCheck(local, upstreams)
    if (audit !== null) checks.audit = audit
    const ok = Object.values(checks).every((c) => c.ok)
    const reported = Object.fromEntries(Object.entries(upstreams).map(([name, p]) => [name, { reachable: p.verdict === 'accepted', detail: p.detail }]))
    return await reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready', checks, upstreams: reported } satisfies Readiness)
  }

  return {
    healthz: () => ({ status: 'ok' }),
    readyz,
    forget,
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

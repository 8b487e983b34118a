/**
 * The inbound mutual-TLS gateway for Open Finance Brasil (`pix-proxy gateway`): terminates TLS with the server key
 * in the HSM (or a PEM file), admits only clients whose ICP-Brasil certificate verifies against the truststore and
 * its CRLs under the Open Finance TLS policy, and forwards allowlisted requests to the backend with the client's
 * certificate, thumbprint and identity in headers no client can forge. docs/gateway.md describes the order of the
 * checks.
 *
 * node:https rather than Fastify: the gateway is a pass-through with no routes of its own, and it needs the socket's
 * life (the verdict right after the handshake, setSecureContext for reloads) more than a framework's routing.
 */
import { randomUUID } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { Server as HttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import { Pool } from 'undici'
import type { S3Client } from '@aws-sdk/client-s3'
import { createS3Client } from '../aws/clients.ts'
import type { Dispatcher } from 'undici'
import { errorSpec, Errors, PixProxyError } from '../../core/errors.ts'
import type { ErrorSpec } from '../../core/errors.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { auditCheck } from '../audit/readiness.ts'
import type { Check } from '../audit/readiness.ts'
import type { GatewayAuditRow, GatewayAuditSink } from './audit.ts'
import type { GatewayConfig } from './config.ts'
import { crlIsStale } from './crl.ts'
import { forwardHeaders, responseHeaders, thumbprintS256 } from './headers.ts'
import type { AssertedIdentity } from './headers.ts'
import { createGatewayMetrics } from './metrics.ts'
import type { GatewayMetrics } from './metrics.ts'
import { matchRoute } from './routes.ts'
import type { RoutePattern } from './routes.ts'
import { createSourceReader } from './sources.ts'
import { clientVerdict, connectionVerdict, loadTrustMaterial, peerChain } from './trust.ts'
import type { ConnectionCloseReason, TrustMaterial } from './trust.ts'

/** Longest a reload may take before it is abandoned (S3's timeouts and retries end a read in ~100 s at worst). */
const RELOAD_DEADLINE_MS = 150_000

export interface GatewayOptions {
  readonly config: GatewayConfig
  readonly logger: Logger
  /** Reads the identity the backend gets from a verified client certificate (icpBrasilIdentity in production). */
  readonly identify: (cert: Certificate) => AssertedIdentity
  readonly audit: GatewayAuditSink
  readonly instanceId?: string
  readonly now?: () => Date
  /**
   * The S3 client for s3:// truststore and CRL locations (tests: the local endpoint). By default one is made at the
   * first S3 read from the SDK's usual sources (the task role; AWS_ENDPOINT_URL locally), and closed with the gateway.
   */
  readonly s3?: S3Client
  /**
   * Arms a connection's max-age timer (PIXGW_MAX_CONNECTION_AGE_MS) and returns its cancel. By default an unref'd
   * setTimeout; tests pass one they fire themselves, so that a connection's age never races its requests.
   */
  readonly connectionTimer?: (ms: number, fire: () => void) => () => void
  /** Longest a reload may take before it is abandoned (it can then never apply); RELOAD_DEADLINE_MS by default. */
  readonly reloadDeadlineMs?: number
  /**
   * Arms a reload's deadline (reloadDeadlineMs) and returns its cancel. By default an unref'd setTimeout; tests pass one
   * they fire themselves, so that which reload is abandoned never depends on how fast the machine reads.
   */
  readonly reloadTimer?: (ms: number, fire: () => void) => () => void
}

/** What the 'closing' event carries: a client connection the gateway decided to close, and why. */
export interface ConnectionClosing {
  readonly reason: ConnectionCloseReason | 'max_age'
  readonly detail: string
  readonly subject: string
  readonly serial: string
  /** Requests on it not yet answered: the connection closes after their answers (with `connection: close`). */
  readonly inFlight: number
}

export type ReloadResult = 'applied' | 'unchanged' | 'refused'

export interface Gateway {
  /** https://host:port of the mutual-TLS listener. */
  readonly url: string
  /** http://host:port of the operations listener. */
  readonly opsUrl: string
  readonly metrics: GatewayMetrics
  /**
   * Emits 'refused' ({ reason, detail }) for every client refused at or right after its handshake, and 'reloaded'
   * (the ReloadResult) after every reload, whatever started it (interval, nextUpdate, SIGHUP, a call), and 'closing'
   * (ConnectionClosing) when it decides to close a client connection (judged again after a reload, or at max age),
   * before that connection closes.
   */
  readonly events: EventEmitter
  /** The truststore/CRL material in use. */
  readonly material: TrustMaterial
  /**
   * Re-reads the server certificate, key, truststore and CRLs; applies them to new handshakes when they load, keeps the
   * old ones and logs why when they do not. `force` applies even unchanged files. Once applied, every open client
   * connection is judged again against them (connectionVerdict): one whose client a handshake would now refuse is closed,
   * at once when idle, after its answer when a request is in flight. Resolves after that decision is taken.
   */
  reload (opts?: { force?: boolean }): Promise<ReloadResult>
  /** Stops accepting, lets requests in flight finish, waits for every client connection to close, closes the backend pool. */
  close (): Promise<void>
}

/** A verified client's connection, from its handshake to its socket's 'close'. */
interface Connection {
  readonly socket: TLSSocket
  readonly certificate: X509Certificate
  /** The chain its handshake verified, leaf first: what a reload judges again. */
  readonly chain: readonly X509Certificate[]
  readonly thumbprint: string
  readonly identity: AssertedIdentity
  /** Responses not yet ended: the connection is idle when this is empty. */
  readonly inFlight: Set<ServerResponse>
  /** Set once the gateway has decided to close it. */
  closing: { readonly reason: ConnectionCloseReason | 'max_age', readonly detail: string } | null
  cancelMaxAge: (() => void) | null
  /** Settles once the socket's 'close' has been handled (the connection forgotten, its timer cleared). */
  gone: Promise<void>
}

/** An unref'd setTimeout: a connection's max age or a reload's deadline never keeps the process alive. */
function unrefTimer (ms: number, fire: () => void): () => void {
  const t = setTimeout(fire, ms)
  t.unref()
  return () => clearTimeout(t)
}

/** A problem+json answer (RFC 9457), as the proxy's http/problem.ts writes them. */
function sendProblem (res: ServerResponse, requestId: string, spec: ErrorSpec, args: readonly unknown[], close = false): void {
  sendError(res, requestId, new PixProxyError(spec, args), close)
}

function sendError (res: ServerResponse, requestId: string, err: PixProxyError, close = false): void {
  const body = JSON.stringify({
    type: `urn:pix-proxy:problem:${err.code}`,
    title: err.code.replace(/^PIXPROXY_ERR_/, '').toLowerCase().replace(/_/g, ' '),
    status: err.statusCode,
    detail: err.message,
    code: err.code,
    instance: `urn:uuid:${requestId}`,
    outcome: errorSpec(err.code)?.outcome ?? 'unknown'
  })
  const headers: Record<string, string | number> = { 'content-type': 'application/problem+json', 'content-length': Buffer.byteLength(body) }
  if (close) headers.connection = 'close'
  res.writeHead(err.statusCode, headers).end(body)
}

/** Reasons from a failed handshake, as a small set of metric labels. */
function handshakeReason (err: { code?: unknown }): string {
  const code = typeof err.code === 'string' ? err.code : 'unknown'
  return code.replace(/^ERR_SSL_/, '').toLowerCase()
}

/** Connection-level failures that mean the request never reached the backend. */
const NOT_SENT_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'
])

function backendError (err: unknown): { spec: ErrorSpec, detail: string } {
  const e = err as { code?: unknown, message?: unknown }
  const code = typeof e.code === 'string' ? e.code : 'unknown'
  const detail = `${code}: ${String(e.message ?? err)}`
  if (NOT_SENT_CODES.has(code)) return { spec: Errors.GATEWAY_BACKEND_UNREACHABLE, detail }
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return { spec: Errors.GATEWAY_BACKEND_TIMEOUT, detail }
  return { spec: Errors.GATEWAY_BACKEND_FAILED, detail }
}

/** Reads the body up to `max` bytes; null when it is larger (the rest is not read). */
async function readBody (req: IncomingMessage, max: number): Promise<Buffer | null> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > max) return null
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

/** Builds the gateway and opens both listeners. Throws what loadTrustMaterial throws. */
export async function startGateway (opts: GatewayOptions): Promise<Gateway> {
  const { config, logger } = opts
  const now = opts.now ?? (() => new Date())
  const instanceId = opts.instanceId ?? `${hostname()}-${process.pid}`
  const metrics = createGatewayMetrics(opts.audit.worker)
  const sources = createSourceReader({
    s3: () => opts.s3 ?? createS3Client({ forcePathStyle: config.s3ForcePathStyle }),
    ownsClient: opts.s3 === undefined,
    onRead: (result) => metrics.sourceReads.inc({ result })
  })
  let material: TrustMaterial
  try {
    material = await loadTrustMaterial(config, sources)
  } catch (err) {
    sources.close()
    throw err
  }
  const staleSeen = new Set<string>()

  /** Logs each CRL going stale (or fresh again) once, and keeps the CRL gauges current. */
  const observeCrls = (): void => {
    const t = now()
    metrics.crlAgeSeconds.reset()
    metrics.crlStale.reset()
    for (const crl of material.crls) {
      metrics.crlAgeSeconds.set({ crl: crl.source }, Math.max(0, (t.getTime() - crl.thisUpdate.getTime()) / 1000))
      const stale = crlIsStale(crl, t)
      metrics.crlStale.set({ crl: crl.source }, stale ? 1 : 0)
      if (stale && !staleSeen.has(crl.source)) {
        staleSeen.add(crl.source)
        const msg = config.crlStalePolicy === 'fail-closed'
          ? 'CRL is past its nextUpdate: every client it covers is refused (PIXGW_CRL_STALE_POLICY=fail-closed) until a fresh one is loaded'
          : 'CRL is past its nextUpdate: clients it covers are accepted without fresh revocation data (PIXGW_CRL_STALE_POLICY=fail-open)'
        logger[config.crlStalePolicy === 'fail-closed' ? 'error' : 'warn']({ crl: crl.source, issuer: crl.issuer, nextUpdate: crl.nextUpdate?.toISOString() }, msg)
      } else if (!stale && staleSeen.delete(crl.source)) {
        logger.info({ crl: crl.source, nextUpdate: crl.nextUpdate?.toISOString() }, 'CRL is fresh again')
      }
    }
  }
  observeCrls()

  const connections = new Map<TLSSocket, Connection>()
  const connectionTimer = opts.connectionTimer ?? unrefTimer
  const events = new EventEmitter()
  const server: HttpsServer = createHttpsServer({
    ...material.options,
    requestCert: true,
    // The verdict is the gateway's own, in 'secureConnection' below, so that every refusal has a logged reason;
    // Node's rejectUnauthorized would destroy the same sockets at the same point, silently (trust.ts).
    rejectUnauthorized: false,
    // Slow or idle clients cannot hold sockets forever.
    requestTimeout: config.backend.timeoutMs + 10_000,
    headersTimeout: 10_000,
    keepAliveTimeout: 60_000
  })
  // The material each connection's handshake started under (tls gives a new connection the context in use when it
  // arrives), by the connection's remote address and port, until its handshake ends or it closes.
  const startedUnder = new Map<string, TrustMaterial>()
  const peerKey = (sock: { remoteAddress?: string, remotePort?: number }): string => `${String(sock.remoteAddress)}|${String(sock.remotePort)}`
  server.prependListener('connection', (raw: Socket) => {
    const key = peerKey(raw)
    startedUnder.set(key, material)
    raw.once('close', () => { if (startedUnder.get(key) !== undefined) startedUnder.delete(key) })
  })
  server.prependListener('secureConnection', (socket: TLSSocket) => {
    const key = peerKey(socket)
    const began = startedUnder.get(key)
    startedUnder.delete(key)
    let verdict: ReturnType<typeof clientVerdict>
    try {
      verdict = clientVerdict(socket.getPeerCertificate(true), socket.authorizationError as unknown as string | null, material, config.crlStalePolicy, now())
    } catch (err) {
      // A certificate our parser cannot read where the verdict needs it (the fail-open path): refused, never a crash.
      verdict = { accepted: false, reason: 'unreadable_certificate', detail: (err as Error).message }
    }
    if (!verdict.accepted) {
      metrics.handshakeFailures.inc({ reason: verdict.reason })
      logger.warn({ reason: verdict.reason, detail: verdict.detail, remoteAddress: socket.remoteAddress }, 'client refused')
      socket.destroy()
      events.emit('refused', { reason: verdict.reason, detail: verdict.detail })
      return
    }
    // OpenSSL judged the handshake with the context the connection started under: a reload applied while it was in
    // progress (a client can hold a handshake open for up to the handshake timeout) revokes nothing for it. Such a
    // chain is judged again against the material in use now, as every open connection is after a reload. Only then:
    // OpenSSL's own verdict on a current context is the one that counts (core/pki's parser is stricter than OpenSSL's,
    // and must never refuse a chain OpenSSL accepts for no reason but that).
    const chain = peerChain(socket.getPeerCertificate(true))
    let current: ReturnType<typeof connectionVerdict> = { keep: true }
    if (began !== material) {
      try {
        current = connectionVerdict(chain, material, config.crlStalePolicy, now())
      } catch (err) {
        // Not judged against what changed meanwhile: refused; its next handshake is judged by OpenSSL afresh.
        current = { keep: false, reason: 'untrusted', detail: `its chain could not be judged against the material in use (${(err as Error).message})` }
      }
    }
    if (!current.keep) {
      metrics.handshakeFailures.inc({ reason: `reload_${current.reason}` })
      logger.warn({ reason: current.reason, detail: current.detail, remoteAddress: socket.remoteAddress }, 'client refused: its handshake began before the reload that now refuses it')
      socket.destroy()
      events.emit('refused', { reason: `reload_${current.reason}`, detail: current.detail })
      return
    }
    if (verdict.warning !== undefined) logger.warn({ subject: verdict.certificate.subject.replace(/\n/g, ', ') }, verdict.warning)
    let identity: AssertedIdentity = { cnpj: null, organisationId: null, softwareStatementId: null }
    try {
      identity = opts.identify(parseCertificate(verdict.certificate.raw))
    } catch (err) {
      // A certificate OpenSSL accepted but our parser does not: no identity is asserted (never a guess).
      logger.warn({ err, subject: verdict.certificate.subject }, 'client identity unreadable; no identity headers sent')
    }
    const conn: Connection = {
      socket,
      certificate: verdict.certificate,
      chain,
      thumbprint: thumbprintS256(verdict.certificate),
      identity,
      inFlight: new Set(),
      closing: null,
      cancelMaxAge: null,
      gone: Promise.resolve()
    }
    connections.set(socket, conn)
    metrics.openConnections.inc()
    // A plain 'close' listener, not events.once: that one rejects on the 'error' a reset connection emits first.
    conn.gone = new Promise<void>((resolve) => socket.once('close', () => {
      conn.cancelMaxAge?.()
      conn.cancelMaxAge = null
      connections.delete(socket)
      metrics.openConnections.dec()
      resolve()
    }))
    if (config.maxConnectionAgeMs > 0) {
      // Somewhere in the last tenth of the maximum: connections opened together (a deploy, a client's restart) do not
      // all come back for a full handshake, with the server key in the HSM, at the same moment.
      const ms = Math.ceil(config.maxConnectionAgeMs * (0.9 + 0.1 * Math.random()))
      conn.cancelMaxAge = connectionTimer(ms, () => { retire(conn, 'max_age', `open longer than PIXGW_MAX_CONNECTION_AGE_MS (${config.maxConnectionAgeMs} ms)`) })
    }
  })

  /**
   * Closes a client connection gracefully: at once when it is idle; otherwise each request in flight gets its answer,
   * with `connection: close` when its headers are not sent yet, and the connection closes after the last one.
   */
  const retire = (conn: Connection, reason: ConnectionCloseReason | 'max_age', detail: string): void => {
    if (conn.socket.destroyed) return
    // Already closing: only a refusal may replace a close for age (its later requests are then refused, not served).
    if (conn.closing !== null && (conn.closing.reason !== 'max_age' || reason === 'max_age')) return
    conn.closing = { reason, detail }
    conn.cancelMaxAge?.()
    conn.cancelMaxAge = null
    const subject = conn.certificate.subject.replace(/\n/g, ', ')
    const serial = conn.certificate.serialNumber
    metrics.connectionsClosed.inc({ reason })
    logger.warn({ reason, detail, subject, serial, remoteAddress: conn.socket.remoteAddress, inFlight: conn.inFlight.size }, 'client connection closed by the gateway')
    for (const res of conn.inFlight) {
      if (!res.headersSent) res.setHeader('connection', 'close')
    }
    events.emit('closing', { reason, detail, subject, serial, inFlight: conn.inFlight.size } satisfies ConnectionClosing)
    // destroySoon: our close_notify and FIN go after whatever is queued, and the socket does not wait for the client's.
    if (conn.inFlight.size === 0) conn.socket.destroySoon()
  }

  /** Every open client connection judged again against the material in use (after a reload). */
  const rejudge = (applied: boolean): void => {
    const t = now()
    for (const conn of connections.values()) {
      // A connection closing for its age still serves requests until it closes: it is judged again like any other.
      if (conn.closing !== null && conn.closing.reason !== 'max_age') continue
      let v: ReturnType<typeof connectionVerdict>
      try {
        v = connectionVerdict(conn.chain, material, config.crlStalePolicy, t)
      } catch (err) {
        // A chain OpenSSL accepted that core/pki cannot read: it cannot be vouched for again, so it does not stay (a
        // new handshake is judged by OpenSSL afresh).
        // Only new material can have changed its verdict: after a reload that applied none, it stays.
        if (!applied) continue
        logger.error({ err, subject: conn.certificate.subject }, 'client connection could not be judged again')
        v = { keep: false, reason: 'untrusted', detail: `its chain could not be judged again (${(err as Error).message})` }
      }
      if (!v.keep) retire(conn, v.reason, v.detail)
    }
  }
  server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
    const reason = handshakeReason(err)
    metrics.handshakeFailures.inc({ reason })
    logger.info({ reason, err: err.message, remoteAddress: socket.remoteAddress }, 'TLS handshake failed')
    events.emit('refused', { reason, detail: err.message })
  })

  const backendCa = config.backend.caFile === null ? undefined : readFileSync(config.backend.caFile, 'utf8')
  const pool = new Pool(config.backend.url, {
    connections: config.backend.connections,
    headersTimeout: config.backend.timeoutMs,
    bodyTimeout: config.backend.timeoutMs,
    connect: { timeout: config.backend.connectTimeoutMs, ...(backendCa === undefined ? {} : { ca: backendCa }) }
  })

  let closing = false
  // Audit rows being written (a refusal's row is written after its answer): close() waits for them before it closes
  // the audit trail, so that no row of a call the gateway answered is lost to shutdown.
  const recording = new Set<Promise<void>>()
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = process.hrtime.bigint()
    const receivedAt = new Date().toISOString()
    const requestId = randomUUID()
    const method = req.method ?? 'GET'
    const target = req.url ?? '/'
    const client = connections.get(req.socket as TLSSocket)
    let route: RoutePattern | null = null
    let errorCode: string | null = null
    let requestBytes = 0
    let responseBytes = 0
    // Set when the answer's last byte is held until the row is durable (a forwarded call's end half): only then is
    // writing the row a wait that auditing adds to the call (pixproxy_audit_wait_seconds{half="end"}).
    let answerWaits = false
    // One row per request. A forwarded call's outcome (its begin is already durable) is written before the answer's
    // last byte, so a client holding a complete answer implies a complete row; a refusal's row right after its
    // answer; a call whose connection closed first, then.
    let audited: Promise<void> | null = null
    const finish = async (): Promise<void> => {
      if (audited === null) {
        const p = record()
        audited = p
        recording.add(p)
        void p.finally(() => recording.delete(p))
      }
      await audited
    }
    const record = async (): Promise<void> => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      // 499 (nginx's "client closed request") when no status was ever sent.
      const status = res.headersSent ? res.statusCode : 499
      metrics.requests.inc({ route: route?.text ?? 'none', method, status: String(status) })
      metrics.requestSeconds.observe({ route: route?.text ?? 'none' }, seconds)
      const row: GatewayAuditRow = {
        id: requestId,
        request_date: receivedAt,
        client_subject: client?.certificate.subject.replace(/\n/g, ', ') ?? null,
        client_serial: client?.certificate.serialNumber ?? null,
        client_thumbprint: client?.thumbprint ?? null,
        client_cnpj: client?.identity.cnpj ?? null,
        client_organisation_id: client?.identity.organisationId ?? null,
        client_software_statement_id: client?.identity.softwareStatementId ?? null,
        route: route?.text ?? null,
        method,
        path: target.split('?')[0] as string,
        status,
        error_code: errorCode,
        latency_ms: seconds * 1000,
        request_bytes: requestBytes,
        response_bytes: responseBytes,
        instance_id: instanceId
      }
      try {
        const t0 = performance.now()
        await opts.audit.write(row)
        if (answerWaits) metrics.auditWait('end', performance.now() - t0)
      } catch (err) {
        // A call begun is in the spool already: a replay ships it, as PIXPROXY_ERR_AUDIT_INCOMPLETE at worst.
        logger.error({ err, id: requestId }, 'gateway audit row not written')
      }
    }
    res.on('close', () => {
      // The connection ended before the gateway ended its answer: the client went away (or the backend's body failed).
      if (!res.writableEnded) errorCode ??= Errors.CLIENT_GONE.code
      void finish()
    })
    const problem = (spec: ErrorSpec, args: readonly unknown[], close = false): void => {
      errorCode = spec.code
      sendProblem(res, requestId, spec, args, close)
      void finish()
    }

    // Defence in depth: a socket without a verdict never reaches the backend.
    if (client === undefined) return problem(Errors.GATEWAY_CLIENT_REFUSED, ['no verified client certificate on this connection'], true)
    // A request that arrives on a connection being closed: a client no longer acceptable is refused (it never reaches
    // the backend); one only past its max age is served, on a connection that then closes.
    const refusedNow = (): string | null => (client.closing !== null && client.closing.reason !== 'max_age' ? client.closing.detail : null)
    const refusal = refusedNow()
    if (refusal !== null) return problem(Errors.GATEWAY_CLIENT_REFUSED, [refusal], true)
    if (client.closing !== null) res.setHeader('connection', 'close')
    if (closing) return problem(Errors.GATEWAY_SHUTTING_DOWN, [], true)
    const match = matchRoute(config.routes, method, target)
    if (match.kind === 'none') return problem(Errors.GATEWAY_ROUTE_NOT_ALLOWED, [method, target.split('?')[0]])
    if (match.kind === 'method') return problem(Errors.GATEWAY_METHOD_NOT_ALLOWED, [method, target.split('?')[0]])
    route = match.route

    const declared = Number(req.headers['content-length'] ?? 0)
    if (Number.isFinite(declared) && declared > config.maxBodyBytes) return problem(Errors.GATEWAY_BODY_TOO_LARGE, [config.maxBodyBytes], true)
    let body: Buffer | null
    try {
      body = await readBody(req, config.maxBodyBytes)
    } catch (err) {
      return problem(Errors.GATEWAY_BAD_REQUEST, [`the request body could not be read (${(err as Error).message})`], true)
    }
    if (body === null) return problem(Errors.GATEWAY_BODY_TOO_LARGE, [config.maxBodyBytes], true)
    requestBytes = body.length
    // A reload may have refused the client while its body arrived (a payment POST's body can trail its headers).
    const refusedAfterBody = refusedNow()
    if (refusedAfterBody !== null) return problem(Errors.GATEWAY_CLIENT_REFUSED, [refusedAfterBody], true)

    // The call is durable in the audit spool before it reaches the backend: one that cannot be is refused (503, not
    // sent), never forwarded unaudited (docs/gateway.md, "Audit").
    if (opts.audit.begin !== undefined) {
      try {
        const t0 = performance.now()
        await opts.audit.begin({
          id: requestId,
          request_date: receivedAt,
          client_subject: client.certificate.subject.replace(/\n/g, ', '),
          client_serial: client.certificate.serialNumber,
          client_thumbprint: client.thumbprint,
          client_cnpj: client.identity.cnpj,
          client_organisation_id: client.identity.organisationId,
          client_software_statement_id: client.identity.softwareStatementId,
          route: route.text,
          method,
          path: target.split('?')[0] as string,
          request_bytes: requestBytes,
          instance_id: instanceId
        })
        metrics.auditWait('begin', performance.now() - t0)
      } catch (err) {
        // The spool's own code (AUDIT_SPOOL_FULL, _IO, _CLOSED, _LOCKED), or the audit thread's (AUDIT_WORKER_FAILED,
        // _UNRESPONSIVE), reaches the client: all 503 and not sent.
        const refusal = err instanceof PixProxyError ? err : new PixProxyError(Errors.AUDIT_SPOOL_IO, ['begin', (err as Error).message], { cause: err })
        logger.error({ id: requestId, err }, 'gateway call not audited: refused, not forwarded')
        errorCode = refusal.code
        sendError(res, requestId, refusal)
        void finish()
        return
      }
    }

    // The last moment before the backend: a reload that refused the client during the audit write still stops it.
    const refusedBeforeSend = refusedNow()
    if (refusedBeforeSend !== null) return problem(Errors.GATEWAY_CLIENT_REFUSED, [refusedBeforeSend], true)

    let answer: Dispatcher.ResponseData
    try {
      answer = await pool.request({
        method: method as Dispatcher.HttpMethod,
        path: target,
        headers: forwardHeaders({
          rawHeaders: req.rawHeaders,
          certHeader: config.clientCertHeader,
          certificate: client.certificate,
          identity: client.identity,
          remoteAddress: req.socket.remoteAddress,
          host: req.headers.host,
          requestId,
          bodyLength: body.length
        }),
        body: body.length > 0 ? body : null
      })
    } catch (err) {
      const { spec, detail } = backendError(err)
      logger.warn({ id: requestId, code: spec.code, detail }, 'backend call failed')
      return problem(spec, [detail])
    }
    res.writeHead(answer.statusCode, responseHeaders(answer.headers).flatMap(([n, v]) => Array.isArray(v) ? v.flatMap((x) => [n, x]) : [n, v]))
    try {
      for await (const chunk of answer.body) {
        responseBytes += (chunk as Buffer).length
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve))
      }
      // The outcome is durable before the answer's last byte leaves, as the proxy's end half is.
      answerWaits = true
      await finish()
      res.end()
    } catch (err) {
      // Headers are gone: all that is left is to cut the response short, so the client sees it incomplete.
      errorCode = Errors.GATEWAY_BACKEND_FAILED.code
      logger.warn({ id: requestId, err: (err as Error).message }, 'backend response body failed')
      res.destroy()
      await finish()
    }
  }
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const conn = connections.get(req.socket as TLSSocket)
    if (conn !== undefined) {
      conn.inFlight.add(res)
      // 'close' follows the answer's end (or the connection's loss): the connection may now be idle, and closing.
      res.once('close', () => {
        conn.inFlight.delete(res)
        if (conn.closing !== null && conn.inFlight.size === 0) conn.socket.destroySoon()
      })
    }
    handle(req, res).catch((err: unknown) => {
      logger.error({ err }, 'gateway request failed')
      if (!res.headersSent) sendProblem(res, randomUUID(), Errors.INTERNAL, [])
      else res.destroy()
    })
  })

  // Which reload may apply: one abandoned at its deadline (below) must never apply later, after a newer one.
  let reloadTurn = 0
  const reloadDeadlineMs = opts.reloadDeadlineMs ?? RELOAD_DEADLINE_MS
  const reloadTimer = opts.reloadTimer ?? unrefTimer
  const reloadOnce = async (o: { force?: boolean }, turn: number): Promise<ReloadResult> => {
    let next: TrustMaterial
    try {
      next = await loadTrustMaterial(config, sources)
    } catch (err) {
      // Abandoned: its result was reported (refused) at its deadline already, and is not counted twice.
      if (turn !== reloadTurn) {
        logger.warn({ err: (err as Error).message }, 'an abandoned truststore/CRL reload ended, failed')
        return 'refused'
      }
      metrics.reloads.inc({ result: 'refused' })
      logger.error({ code: (err as PixProxyError).code, err: (err as Error).message }, 'truststore/CRL reload refused; the previous ones stay in use')
      return 'refused'
    }
    if (turn !== reloadTurn) {
      // Abandoned at its deadline: newer material may be in use by now, and what this one read must never replace it.
      logger.warn({ digest: next.digest }, 'an abandoned truststore/CRL reload ended; what it read is discarded')
      return 'refused'
    }
    if (o.force !== true && next.digest === material.digest) {
      observeCrls()
      metrics.reloads.inc({ result: 'unchanged' })
      return 'unchanged'
    }
    try {
      server.setSecureContext(next.options)
    } catch (err) {
      // loadTrustMaterial built this context once already; a second build failing (the engine, the HSM) keeps the old.
      metrics.reloads.inc({ result: 'refused' })
      logger.error({ err: (err as Error).message }, 'truststore/CRL reload refused: the new context could not be applied; the previous one stays in use')
      return 'refused'
    }
    material = next
    // At once, in the same turn as the new material: no request passes its last check in between.
    rejudge(true)
    observeCrls()
    scheduleAtNextUpdate()
    metrics.reloads.inc({ result: 'applied' })
    logger.info({ cas: next.cas.length, crls: next.crls.map((c) => c.source), digest: next.digest }, 'truststore and CRLs reloaded')
    return 'applied'
  }
  // One reload at a time, in the order asked: an overlapping one that read the CRLs before a revocation could
  // otherwise finish last and put the older CRL back. After each, every open connection is judged again, whatever
  // the result (a certificate may have expired, a CRL gone stale, with nothing new to read).
  // A reload that does not end (a file on a hung network mount; S3's own timeouts bound it at ~100 s) is abandoned at
  // its deadline (reloadDeadlineMs: RELOAD_DEADLINE_MS by default) and reported refused, so that the ones after it
  // still run; when it ends at last, what it read is discarded (reloadOnce).
  let reloading: Promise<unknown> = Promise.resolve()
  const reload = async (o: { force?: boolean } = {}): Promise<ReloadResult> => {
    const run = reloading.then(async () => {
      const turn = ++reloadTurn
      let result: ReloadResult
      let cancel: (() => void) | undefined
      try {
        const deadline = new Promise<'deadline'>((resolve) => { cancel = reloadTimer(reloadDeadlineMs, () => resolve('deadline')) })
        const r = await Promise.race([reloadOnce(o, turn), deadline])
        if (r === 'deadline') {
          reloadTurn++ // the abandoned run can no longer apply
          metrics.reloads.inc({ result: 'refused' })
          logger.error({ deadlineMs: reloadDeadlineMs }, 'truststore/CRL reload abandoned at its deadline; the previous ones stay in use')
          result = 'refused'
        } else {
          result = r
        }
      } catch (err) {
        // Nothing here may end the process: reload runs from timers and SIGHUP, where a rejection is unhandled.
        metrics.reloads.inc({ result: 'refused' })
        logger.error({ err }, 'truststore/CRL reload failed; the previous ones stay in use')
        result = 'refused'
      } finally {
        cancel?.()
      }
      try {
        // After an applied reload the connections were judged with the new material already; after any other, time
        // alone may have changed a verdict (an expired certificate, a CRL gone stale).
        events.emit('reloaded', result)
        if (result !== 'applied') rejudge(false)
      } catch (err) {
        logger.error({ err }, 'after a reload')
      }
      return result
    })
    reloading = run.catch(() => {})
    return await run
  }
  const timer = config.reloadIntervalMs > 0 ? setInterval(() => { void reload() }, config.reloadIntervalMs) : null
  timer?.unref()
  // Also at the earliest nextUpdate of the CRLs in use: the moment a CRL goes stale is when its successor is due,
  // whatever the interval (a CA publishing late is then picked up by the interval, or by SIGHUP).
  let nextUpdateTimer: NodeJS.Timeout | null = null
  const scheduleAtNextUpdate = (): void => {
    if (nextUpdateTimer !== null) clearTimeout(nextUpdateTimer)
    nextUpdateTimer = null
    if (closing) return
    const t = now().getTime()
    const due = material.crls.map((c) => c.nextUpdate?.getTime() ?? Infinity).filter((n) => n > t)
    if (due.length === 0) return
    // One second past it, so the CRL in use is already stale by the gateway's clock; setTimeout takes at most 2^31-1.
    const delay = Math.min(Math.min(...due) - t + 1_000, 2 ** 31 - 1)
    nextUpdateTimer = setTimeout(() => {
      // A CRL has just gone stale whether or not its successor is there: open connections are judged again either way
      // (under fail-closed, those it alone covers close, as their next handshake would fail).
      void reload().finally(scheduleAtNextUpdate)
    }, delay)
    nextUpdateTimer.unref()
  }
  scheduleAtNextUpdate()

  /**
   * Whether this task can take calls now: not while it closes, nor when its audit thread has stopped or does not answer
   * in time, nor with its spool near its bound (audit/readiness.ts, the proxy's own check): every call would be refused
   * with 503, and the NLB should send them to another task meanwhile.
   */
  const readiness = async (): Promise<{ ready: boolean, body: { status: 'ready' | 'not ready' | 'closing', checks?: Record<string, Check> } }> => {
    if (closing || !server.listening) return { ready: false, body: { status: 'closing' } }
    const audit = opts.audit.worker === undefined ? null : await auditCheck(opts.audit.worker)
    const checks: Record<string, Check> = audit === null ? {} : { audit }
    const ready = Object.values(checks).every((c) => c.ok)
    return { ready, body: { status: ready ? 'ready' : 'not ready', checks } }
  }

  const ops: HttpServer = createHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET') return res.writeHead(405, { allow: 'GET' }).end()
    if (path === '/healthz') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}')
    if (path === '/readyz') {
      readiness().then(
        ({ ready, body }) => res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
        () => res.writeHead(500).end()
      )
      return
    }
    if (path === '/metrics') {
      observeCrls()
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end()
      )
      return
    }
    res.writeHead(404).end()
  })

  const listen = async (s: HttpServer | HttpsServer, host: string, port: number): Promise<AddressInfo> => {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, host, () => { s.off('error', reject); resolve() })
    })
    return s.address() as AddressInfo
  }
  const hostPart = (a: AddressInfo): string => a.family === 'IPv6' ? `[${a.address}]` : a.address
  const main = await listen(server, config.listen.host, config.listen.port)
  let opsAddress: AddressInfo
  try {
    opsAddress = await listen(ops, config.ops.host, config.ops.port)
  } catch (err) {
    server.close()
    await pool.close()
    sources.close()
    throw err
  }
  logger.info({ url: `https://${hostPart(main)}:${main.port}`, cas: material.cas.length, crls: material.crls.length, backend: config.backend.url }, 'gateway listening')

  let closed: Promise<void> | null = null
  return {
    url: `https://${hostPart(main)}:${main.port}`,
    opsUrl: `http://${hostPart(opsAddress)}:${opsAddress.port}`,
    metrics,
    events,
    get material () { return material },
    reload,
    close: async () => {
      closed ??= (async () => {
        closing = true
        if (timer !== null) clearInterval(timer)
        if (nextUpdateTimer !== null) clearTimeout(nextUpdateTimer)
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
        server.closeIdleConnections()
        await stopped
        // The server's 'close' comes before its sockets' own: wait for those too, so that every connection's timer is
        // cleared (in its 'close') by the time close() resolves.
        await Promise.all([...connections.values()].map(async (c) => { await c.gone }))
        await new Promise<void>((resolve) => ops.close(() => resolve()))
        await pool.close()
        sources.close()
        await Promise.allSettled([...recording])
        await opts.audit.close?.()
      })()
      await closed
    }
  }
}

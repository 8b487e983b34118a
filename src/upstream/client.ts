/**
 * A keep-alive connection pool to one BACEN origin (DICT or SPI/ICOM) over the TLS key agent's context.
 *
 * Certificate rotation swaps the pool: requests already dispatched finish on the old pool's connections (old
 * client certificate), which then close gracefully; new requests open connections with the new context. TLS
 * session resumption cannot carry the old identity over, as each pool has its own session cache.
 */
import type { LookupFunction } from 'node:net'
import { buildConnector, Pool } from 'undici'
import type { Dispatcher } from 'undici'
import { Errors, PixProxyError } from '../../core/errors.ts'

/**
 * Largest response body accepted from BACEN, as sent (undici's maxResponseSize: a Content-Length above it, or a body
 * that grows past it, ends the connection with UND_ERR_RES_EXCEEDED_MAX_SIZE) and, by the pipeline, decompressed.
 */
export const MAX_RESPONSE_BYTES = 32 * 1024 * 1024
import type { TlsKeyAgent } from './tls-key-agent.ts'

/**
 * undici checks the connect, headers and body timeouts with a coarse timer (ticks of ~0.5 s): one fires up to
 * ~1 s late (measured: 300 ms fired after ~820 ms).
 */
export interface UpstreamOptions {
  /** Used in errors and metrics: `dict`, `spi`. */
  name: 'dict' | 'spi' | string
  /** `https://host[:port]`, no path, e.g. `https://dict-h.pi.rsfn.net.br:16522`. */
  origin: string
  agent: TlsKeyAgent
  /** Keep-alive connections to the origin. Default 16. */
  connections?: number
  /** TCP connect plus TLS handshake. Default 10000. */
  connectTimeoutMs?: number
  /** From the request being sent to the response headers. Default 30000. */
  headersTimeoutMs?: number
  /** Between two chunks of the response body. Default 30000. */
  bodyTimeoutMs?: number
  /** How long an idle connection is kept when the server does not say. Default 4000 (undici's). */
  keepAliveTimeoutMs?: number
  /**
   * How long close() and a rotation let requests in flight finish before their connections are destroyed.
   * Default 30000.
   */
  closeTimeoutMs?: number
  /**
   * Test seam: arms the close/rotation deadline (`fn` after `ms`) and returns a function that disarms it. Default: an
   * unref'd setTimeout. Tests pass a manual clock to pass the deadline when they choose.
   */
  schedule?: (fn: () => void, ms: number) => () => void
  /** SNI and the name the server certificate must carry. Default: the origin's host. */
  servername?: string
  /** Tests map BACEN host names to 127.0.0.1. */
  lookup?: LookupFunction
}

export interface UpstreamRequest {
  method: string
  /** Path and query, starting with `/`. */
  path: string
  headers: Record<string, string>
  body?: Buffer | string
  /** The caller's own abort: the request rejects with its reason, unchanged. */
  signal?: AbortSignal
  /** One deadline for the whole exchange, the body included (UPSTREAM_DEADLINE when it passes). */
  deadlineMs?: number
}

/** A whole response: status, headers (lower-case names, repeated ones joined with ", ") and the body as sent. */
export interface UpstreamResponse {
  statusCode: number
  headers: Record<string, string>
  body: Buffer
}

export interface UpstreamStats {
  /** Open connections, including those of a pool draining after a rotation. */
  connected: number
  /** Requests not yet sent. */
  pending: number
  /** Requests sent, response not finished. */
  running: number
  /** pending + running. */
  size: number
}

/** OpenSSL certificate verification results as Node reports them in `err.code`. */
const UNTRUSTED = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'CERT_CHAIN_TOO_LONG', 'CERT_REVOKED', 'INVALID_CA',
  'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'CERT_UNTRUSTED', 'CERT_REJECTED'
])
const HOSTNAME = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH'])

/**
 * Errors raised while a connection was being made (DNS, TCP connect, the TLS handshake, the connect timeout). undici
 * fails with them only requests still waiting for that connection, never one already written to a socket
 * (lib/dispatcher/client.js handleConnectError), so a request rejected with one of them was not sent. Any other
 * failure may come after the request left: the caller cannot know whether BACEN received it.
 */
const connectFailures = new WeakSet<object>()

function markConnectFailure (err: unknown): void {
  if (typeof err === 'object' && err !== null) connectFailures.add(err)
}

function positiveInt (value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new PixProxyError(Errors.CONFIG_INVALID, [`${name} must be a positive integer, got ${value}`])
  }
  return value
}

function parseOrigin (origin: string): URL {
  let url: URL
  try {
    url = new URL(origin)
  } catch (err) {
    throw new PixProxyError(Errors.CONFIG_INVALID, [`upstream origin ${JSON.stringify(origin)} is not a URL`], { cause: err })
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '' || (url.pathname !== '/' && url.pathname !== '') ||
    url.search !== '' || url.hash !== '') {
    throw new PixProxyError(Errors.CONFIG_INVALID, [`upstream origin ${JSON.stringify(origin)} must be https://host[:port] without a path`])
  }
  return url
}

function realTimer (fn: () => void, ms: number): () => void {
  const timer = setTimeout(fn, ms)
  timer.unref()
  return () => { clearTimeout(timer) }
}

/**
 * One call's deadline: an AbortSignal that aborts with a TimeoutError `ms` after the call starts, or when `outer`
 * aborts (with its reason), and whose timer is cleared as soon as the call ends.
 *
 * Why not `AbortSignal.timeout(ms)` (+ `AbortSignal.any`): measured (bench/RESULTS.md "Session 7"), its timer stays
 * in the timer list for the whole 20 s deadline after the call has ended, so the timer, its closure and its WeakRef
 * to the signal are promoted to the old generation, and the signal is released only through a FinalizationRegistry
 * after a major GC. A timer cleared when the call ends leaves garbage that dies young.
 */
class Deadline {
  readonly #controller = new AbortController()
  readonly #timer: NodeJS.Timeout
  readonly #outer: AbortSignal | undefined
  readonly #onOuterAbort: (() => void) | undefined
  #expired = false

  constructor (ms: number, outer: AbortSignal | undefined) {
    const c = this.#controller
    this.#timer = setTimeout(() => {
      this.#expired = true
      c.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'))
    }, ms)
    this.#timer.unref()
    this.#outer = outer
    if (outer !== undefined) {
      if (outer.aborted) {
        c.abort(outer.reason)
      } else {
        this.#onOuterAbort = () => { c.abort(outer.reason) }
        outer.addEventListener('abort', this.#onOuterAbort, { once: true })
      }
    }
  }

  get signal (): AbortSignal {
    return this.#controller.signal
  }

  /** Whether the deadline itself passed (not the outer signal). */
  get expired (): boolean {
    return this.#expired
  }

  clear (): void {
    clearTimeout(this.#timer)
    if (this.#onOuterAbort !== undefined) this.#outer?.removeEventListener('abort', this.#onOuterAbort)
  }
}

/**
 * Closes a pool gracefully (dispatched requests finish), then destroys it if that takes longer than `deadlineMs`.
 * Requests still running at the deadline fail with UPSTREAM_CONNECTION_LOST.
 */
async function closePool (pool: Pool, name: string, deadlineMs: number, schedule: (fn: () => void, ms: number) => () => void = realTimer): Promise<void> {
  let cancel = (): void => {}
  const deadline = new Promise<'deadline'>((resolve) => {
    cancel = schedule(() => resolve('deadline'), deadlineMs)
  })
  const closed = pool.close().then(() => 'closed' as const, (err: unknown) => err)
  const first = await Promise.race([closed, deadline])
  cancel()
  if (first === 'closed') return
  if (first !== 'deadline') throw first
  // Requests still running may have been received: they fail as such (a request still queued fails the same way,
  // which only errs on the safe side).
  await pool.destroy(new PixProxyError(Errors.UPSTREAM_CONNECTION_LOST, [name, `the pool was closed after ${deadlineMs} ms with requests in flight`]))
  // After destroy() the pending close() settles with undici's ClientDestroyedError: the outcome is the destroy.
  await closed
}

/** One BACEN origin: keep-alive pool over the current TLS context, swapped on rotation. */
export class Upstream {
  readonly name: string
  readonly origin: string
  readonly #agent: TlsKeyAgent
  readonly #host: string
  readonly #servername: string | undefined
  readonly #connections: number
  readonly #connectTimeoutMs: number
  readonly #headersTimeoutMs: number
  readonly #bodyTimeoutMs: number
  readonly #keepAliveTimeoutMs: number
  readonly #closeTimeoutMs: number
  readonly #schedule: ((fn: () => void, ms: number) => () => void) | undefined
  readonly #lookup: LookupFunction | undefined
  #pool: Pool
  /** Pools replaced by a rotation, closing while their requests finish. */
  readonly #draining = new Map<Pool, Promise<void>>()
  readonly #unsubscribe: () => void
  #closing: Promise<void> | undefined

  constructor (opts: UpstreamOptions) {
    if (typeof opts.name !== 'string' || opts.name === '') throw new PixProxyError(Errors.CONFIG_INVALID, ['upstream name must be a non-empty string'])
    const url = parseOrigin(opts.origin)
    this.name = opts.name
    this.origin = url.origin
    this.#agent = opts.agent
    this.#host = url.hostname
    this.#servername = opts.servername
    this.#connections = positiveInt(opts.connections, 16, 'connections')
    this.#connectTimeoutMs = positiveInt(opts.connectTimeoutMs, 10_000, 'connectTimeoutMs')
    this.#headersTimeoutMs = positiveInt(opts.headersTimeoutMs, 30_000, 'headersTimeoutMs')
    this.#bodyTimeoutMs = positiveInt(opts.bodyTimeoutMs, 30_000, 'bodyTimeoutMs')
    this.#keepAliveTimeoutMs = positiveInt(opts.keepAliveTimeoutMs, 4_000, 'keepAliveTimeoutMs')
    this.#closeTimeoutMs = positiveInt(opts.closeTimeoutMs, 30_000, 'closeTimeoutMs')
    this.#schedule = opts.schedule
    this.#lookup = opts.lookup
    this.#pool = this.#createPool()
    this.#unsubscribe = this.#agent.onRotate(() => { this.#swap() })
  }

  #createPool (): Pool {
    return new Pool(this.origin, {
      connections: this.#connections,
      headersTimeout: this.#headersTimeoutMs,
      bodyTimeout: this.#bodyTimeoutMs,
      keepAliveTimeout: this.#keepAliveTimeoutMs,
      maxResponseSize: MAX_RESPONSE_BYTES,
      connect: this.#connector()
    })
  }

  /** undici's own connector, with its failures marked as "before anything was sent" (see connectFailures). */
  #connector (): buildConnector.connector {
    const connect = buildConnector({
      // With a secureContext, Node ignores per-connection key/cert/ca: everything is on the context.
      secureContext: this.#agent.secureContext,
      timeout: this.#connectTimeoutMs,
      ...(this.#servername === undefined ? {} : { servername: this.#servername }),
      ...(this.#lookup === undefined ? {} : { lookup: this.#lookup })
    } as buildConnector.BuildOptions)
    return (opts, callback) => connect(opts, (err, socket) => {
      if (err !== null) {
        markConnectFailure(err)
        callback(err, null)
      } else {
        callback(null, socket)
      }
    })
  }

  #swap (): void {
    if (this.#closing !== undefined) return
    const old = this.#pool
    this.#pool = this.#createPool()
    this.#retire(old)
  }

  #retire (pool: Pool): void {
    // Nobody awaits a rotation's close: close() awaits, and reports, whatever is still draining.
    const done = closePool(pool, this.name, this.#closeTimeoutMs, this.#schedule)
    this.#draining.set(pool, done)
    // Observed here so that a failure is not an unhandled rejection; close() awaits `done` and reports it.
    done.then(() => { this.#draining.delete(pool) }, () => { /* reported by close() */ })
  }

  /**
   * Sends a request on the current pool and resolves with the whole response (the body read, at most
   * MAX_RESPONSE_BYTES). This is the one place where undici's and Node's errors become pix-proxy's: it rejects with
   * PixProxyError, whose `outcome` says whether the request can have left:
   * - nothing was sent (`not-sent`): UPSTREAM_CONNECT_TIMEOUT, UPSTREAM_TLS_HOSTNAME, UPSTREAM_TLS_UNTRUSTED,
   *   UPSTREAM_TLS_HANDSHAKE, UPSTREAM_UNAVAILABLE (DNS, refused, unreachable: any failure while connecting),
   *   UPSTREAM_CLOSED (the upstream was closing before the request was dispatched);
   * - it may have been received (`unknown`, or a code the pipeline reports as OUTCOME UNKNOWN): UPSTREAM_HEADERS_TIMEOUT,
   *   UPSTREAM_TIMEOUT (the body stalled), UPSTREAM_DEADLINE (`deadlineMs` passed), UPSTREAM_BAD_RESPONSE (an answer
   *   larger than MAX_RESPONSE_BYTES), UPSTREAM_CONNECTION_LOST (a reset, a closed socket, a TLS alert after the
   *   handshake, the pool destroyed at its close deadline, anything else).
   * A failure after the status line carries it as `extensions.upstreamStatus`. The undici/Node error is the `cause`.
   * An abort through `signal` rejects with the abort reason unchanged. A client certificate refused by the server is
   * UPSTREAM_TLS_HANDSHAKE on TLS 1.2 (the alert ends the handshake) but UPSTREAM_CONNECTION_LOST (UND_ERR_SOCKET)
   * on TLS 1.3, where the client has finished its handshake, and may have written the request, before the server
   * judges the certificate.
   */
  async request (opts: UpstreamRequest): Promise<UpstreamResponse> {
    if (this.#closing !== undefined) throw new PixProxyError(Errors.UPSTREAM_CLOSED, [this.name])
    const deadline = opts.deadlineMs === undefined ? undefined : new Deadline(opts.deadlineMs, opts.signal)
    const signal = deadline?.signal ?? opts.signal
    const fail = (err: unknown): unknown => {
      if (opts.signal?.aborted === true) return err
      const mapped = this.#error(err)
      // The deadline, unless the request provably never left (then its own not-sent code is the truth).
      if (deadline?.expired === true && !(mapped instanceof PixProxyError && mapped.outcome === 'not-sent')) {
        return new PixProxyError(Errors.UPSTREAM_DEADLINE, [this.name, opts.deadlineMs], { cause: err })
      }
      return mapped
    }
    let res: Dispatcher.ResponseData
    let body: Buffer
    try {
      try {
        res = await this.#pool.request({
          method: opts.method as Dispatcher.HttpMethod,
          path: opts.path,
          headers: opts.headers,
          ...(opts.body === undefined ? {} : { body: opts.body }),
          ...(signal === undefined ? {} : { signal })
        })
      } catch (err) {
        throw fail(err)
      }
      try {
        body = Buffer.from(await res.body.arrayBuffer())
      } catch (err) {
        // BACEN's status line arrived but not its whole answer: what it said is not known.
        const e = fail(err)
        if (e instanceof PixProxyError) e.extensions = { ...e.extensions, upstreamStatus: res.statusCode }
        throw e
      }
    } finally {
      // The deadline covers the answer's last byte, and nothing after it.
      deadline?.clear()
    }
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(res.headers)) {
      if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v
    }
    return { statusCode: res.statusCode, headers, body }
  }

  #error (err: unknown): unknown {
    if (err instanceof PixProxyError) return err
    const code = err instanceof Error ? (err as { code?: unknown }).code : undefined
    const reason = `${typeof code === 'string' ? code + ': ' : ''}${err instanceof Error ? err.message : String(err)}`
    if (code === 'UND_ERR_HEADERS_TIMEOUT') {
      return new PixProxyError(Errors.UPSTREAM_HEADERS_TIMEOUT, [this.name, this.#headersTimeoutMs], { cause: err })
    }
    if (code === 'UND_ERR_BODY_TIMEOUT') {
      return new PixProxyError(Errors.UPSTREAM_TIMEOUT, [this.name, reason], { cause: err })
    }
    if (code === 'UND_ERR_RES_EXCEEDED_MAX_SIZE') {
      return new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [this.name, `an answer larger than ${MAX_RESPONSE_BYTES} bytes`], { cause: err })
    }
    if (code === 'UND_ERR_CLOSED' || code === 'UND_ERR_DESTROYED') {
      // Raised by dispatch() on a pool already closed or destroyed (its destroy() is always given our own error).
      return new PixProxyError(Errors.UPSTREAM_CLOSED, [this.name], { cause: err })
    }
    if (!connectFailures.has(err as object)) {
      // Not a failure to connect: the request may have been written before it happened.
      return new PixProxyError(Errors.UPSTREAM_CONNECTION_LOST, [this.name, reason], { cause: err })
    }
    if (code === 'UND_ERR_CONNECT_TIMEOUT') {
      return new PixProxyError(Errors.UPSTREAM_CONNECT_TIMEOUT, [this.name, this.#connectTimeoutMs], { cause: err })
    }
    if (typeof code === 'string' && HOSTNAME.has(code)) {
      return new PixProxyError(Errors.UPSTREAM_TLS_HOSTNAME, [this.name, this.#servername ?? this.#host, reason], { cause: err })
    }
    if (typeof code === 'string' && UNTRUSTED.has(code)) {
      return new PixProxyError(Errors.UPSTREAM_TLS_UNTRUSTED, [this.name, reason], { cause: err })
    }
    // OpenSSL failures (an alert from the server, e.g. our certificate refused; an HSM error while signing).
    if (code === 'EPROTO' || (typeof code === 'string' && code.startsWith('ERR_SSL_'))) {
      return new PixProxyError(Errors.UPSTREAM_TLS_HANDSHAKE, [this.name, reason], { cause: err })
    }
    return new PixProxyError(Errors.UPSTREAM_UNAVAILABLE, [this.name, reason], { cause: err })
  }

  /** Connections and requests of the current pool plus any pool still draining after a rotation. */
  stats (): UpstreamStats {
    const out: UpstreamStats = { connected: 0, pending: 0, running: 0, size: 0 }
    for (const pool of [this.#pool, ...this.#draining.keys()]) {
      const s = pool.stats
      out.connected += s.connected
      out.pending += s.pending
      out.running += s.running
      out.size += s.size
    }
    return out
  }

  /**
   * Stops accepting requests, lets those in flight finish for up to `closeTimeoutMs`, then destroys what is left
   * (those requests fail with UPSTREAM_CONNECTION_LOST). Idempotent.
   */
  close (): Promise<void> {
    this.#closing ??= (async () => {
      this.#unsubscribe()
      const results = await Promise.allSettled([
        closePool(this.#pool, this.name, this.#closeTimeoutMs, this.#schedule),
        ...this.#draining.values()
      ])
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown)
      if (failed.length > 0) throw new AggregateError(failed, `closing the ${this.name} upstream failed`)
    })()
    return this.#closing
  }
}

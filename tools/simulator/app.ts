/**
 * A BACEN simulator: DICT v2 and SPI/ICOM over mutual TLS, with BCB-signed answers, rate limits, the ICOM
 * concurrency limits and header rules, fault injection, and a log of every message accepted. It is what the
 * proxy's end-to-end tests, the demo and the load tests run against, so it behaves like BACEN wherever the proxy
 * could get it wrong (docs/bacen.md §1–§3); what it simplifies is listed in dict.ts and spi.ts.
 *
 * This module builds the Fastify application; tools/simulator/server.ts listens on ports.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Server } from 'node:https'
import { setTimeout as sleep } from 'node:timers/promises'
import { Readable } from 'node:stream'
import { gunzipSync, gzipSync } from 'node:zlib'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { Signer } from '../../core/signer.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import {
  faultsFor, isDictPath, isIcomPath, normaliseFingerprint, pathOf, peerFingerprint, requestState, sendDictProblem,
  sendIcomProblem
} from './context.ts'
import type { ParticipantInfo, SimulatorContext } from './context.ts'
import { DictService } from './dict.ts'
import type { DictOptions } from './dict.ts'
import { validateFaults } from './faults.ts'
import type { FaultConfig, ResponseMultipartMode } from './faults.ts'
import { MessageLog } from './log.ts'
import type { AcceptedMessage } from './log.ts'
import { DictProblem, dictError, icomProblemXml } from './problem.ts'
import { SpiService } from './spi.ts'
import type { SpiOptions } from './spi.ts'

export type { FaultConfig } from './faults.ts'
export type { AcceptedMessage } from './log.ts'
export type { DictOptions } from './dict.ts'
export type { SpiOptions } from './spi.ts'

export interface SimulatorParticipant {
  readonly ispb: string
  /** Certificates whose keys may sign this participant's DICT requests and SPI messages. */
  readonly signingCerts: Certificate[]
  /**
   * SHA-256 fingerprints (any case, colons optional) of the participant's TLS client certificates. When any
   * participant lists fingerprints, a client certificate must match one (403 otherwise) and it identifies the
   * caller; when none does, any certificate from the client CA is accepted and the caller is taken from the
   * request (path ISPB, PI-RequestingParticipant, or the request signer).
   */
  readonly tlsCertFingerprints256?: string[]
}

export interface SimulatorOptions {
  /** mTLS: the client certificate is required and must chain to clientCaPem. */
  tls: { certPem: string, keyPem: string, clientCaPem: string }
  /** BCB's signing identity; `expired` (an expired certificate and its key) enables the expired-cert fault. */
  bcb: { signer: Signer, certificate: Certificate, expired?: { signer: Signer, certificate: Certificate } }
  participants: SimulatorParticipant[]
  spi?: SpiOptions
  dict?: DictOptions
  faults?: FaultConfig
  /** JSON lines of every message accepted (see log.ts). */
  logFile?: string
  /**
   * Also keep every accepted message in memory (`simulator.log`, what in-process tests compare against). Default
   * true; a standalone simulator turns it off: the file is its record, and an hour at 100 messages/s would keep
   * 360,000 objects for nobody to read.
   */
  logInMemory?: boolean
  /** Fastify's logger option. Default false. */
  logger?: boolean | object
}

export interface SimulatorControl {
  /** Replaces the fault configuration (validated; throws SIMULATOR_CONFIG). Requests already admitted keep theirs. */
  setFaults (f: FaultConfig): void
  readonly faults: FaultConfig
  /** Every accepted message, in acceptance order (the same objects as the log file's lines). */
  readonly log: AcceptedMessage[]
  readonly dict: DictService
  readonly spi: SpiService
  /**
   * Test seam: requests whose path starts with `prefix` wait before their handler (after the ICOM limits have
   * counted them and after the faults) until `release()` is called, or the simulator closes. A test keeps requests
   * in flight for exactly as long as it needs, where a latency fault would race a slow machine.
   */
  hold (prefix: string): RouteHold
}

/** A hold on a path prefix (see SimulatorControl.hold). */
export interface RouteHold {
  /** Requests waiting at the hold now. */
  readonly waiting: number
  /** Lets the waiting requests (and any later ones) proceed and removes the hold. Safe to call more than once. */
  release (): void
}

export type SimulatorInstance = FastifyInstance<Server, IncomingMessage, ServerResponse> & { simulator: SimulatorControl }

/**
 * Request headers ICOM accepts; any other is answered 400 `…/error/invalidHeader`. BACEN rejects headers outside
 * its documented set — APM and tracing headers (traceparent, tracestate, x-datadog-*, newrelic, x-b3-*) were
 * reported rejected in bacen/pix-perguntas-e-respostas #205, #223 and #331 (docs/bacen.md §2.5). The set is the
 * headers of the Manual das Interfaces de Comunicação §2.1.2–2.1.7 (Content-Type; Connection, Content-Length,
 * Transfer-Encoding; compression; Host; User-Agent) plus Accept and Accept-Encoding, which working clients send.
 */
export const ICOM_ALLOWED_HEADERS: ReadonlySet<string> = new Set([
  'host', 'user-agent', 'accept', 'accept-encoding', 'content-type', 'content-length', 'transfer-encoding',
  'content-encoding', 'connection'
])

/** `host:port` (or `[v6]:port`): BACEN closes the connection (docs/bacen.md §1.2, issue #204). */
function hostHasPort (host: string): boolean {
  return host.startsWith('[') ? /\]:\d*$/.test(host) : host.includes(':')
}

const DICT_STATUS_TYPES: Readonly<Record<number, string>> = {
  400: 'BadRequest', 403: 'Forbidden', 404: 'NotFound', 409: 'ResourceConflict', 410: 'Gone', 429: 'RateLimited', 503: 'ServiceUnavailable'
}

const ICOM_STATUS_TYPES: Readonly<Record<number, readonly [string, string]>> = {
  400: ['badRequest', 'Bad Request'],
  403: ['forbidden', 'Forbidden'],
  404: ['notFound', 'Not Found'],
  413: ['payloadTooLarge', 'Payload Too Large'],
  415: ['unsupportedMediaType', 'Unsupported Media Type'],
  429: ['tooManyRequests', 'Too Many Requests'],
  500: ['internalServerError', 'Internal Server Error'],
  503: ['serviceUnavailable', 'Service Unavailable']
}

async function problemFor (ctx: SimulatorContext, request: FastifyRequest, reply: FastifyReply, status: number, detail: string): Promise<FastifyReply> {
  if (isDictPath(pathOf(request))) {
    const type = DICT_STATUS_TYPES[status] ?? 'InternalServerError'
    const base = dictError(type, detail)
    return await sendDictProblem(ctx, request, reply, new DictProblem(type, status, base.title, detail))
  }
  const [type, title] = ICOM_STATUS_TYPES[status] ?? ['error', 'Error']
  return await sendIcomProblem(request, reply, status, type, title, detail)
}

function closeConnection (request: FastifyRequest, reply: FastifyReply): FastifyReply {
  reply.hijack()
  request.raw.socket.destroy()
  return reply
}

function buildParticipants (list: readonly SimulatorParticipant[]): Map<string, ParticipantInfo> {
  const out = new Map<string, ParticipantInfo>()
  for (const p of list) {
    if (!/^[0-9A-Za-z]{8}$/.test(p.ispb)) throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`participant ISPB ${JSON.stringify(p.ispb)} is not 8 alphanumerics`])
    if (out.has(p.ispb)) throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`participant ${p.ispb} is listed twice`])
    out.set(p.ispb, {
      ispb: p.ispb,
      signingCerts: [...p.signingCerts],
      trust: new TrustStore(p.signingCerts),
      tlsFingerprints: new Set((p.tlsCertFingerprints256 ?? []).map(normaliseFingerprint))
    })
  }
  return out
}

/** Builds the simulator (not listening). Close it with `app.close()`: it flushes the log and the DICT state. */
export async function buildSimulator (opts: SimulatorOptions): Promise<SimulatorInstance> {
  const participants = buildParticipants(opts.participants)
  const fingerprintToIspb = new Map<string, string>()
  for (const p of participants.values()) {
    for (const fp of p.tlsFingerprints) {
      const other = fingerprintToIspb.get(fp)
      if (other !== undefined && other !== p.ispb) throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`TLS fingerprint ${fp} is listed for ${other} and ${p.ispb}`])
      fingerprintToIspb.set(fp, p.ispb)
    }
  }
  const expired = opts.bcb.expired
  const ctx: SimulatorContext = {
    participants,
    allTrust: new TrustStore([...participants.values()].flatMap((p) => p.signingCerts)),
    fingerprintMode: fingerprintToIspb.size > 0,
    bcbSigner: new XmlSigner({ signer: opts.bcb.signer, certificate: opts.bcb.certificate }),
    // XmlSigner refuses to sign outside the certificate's validity; the fault is precisely that, so its clock is
    // set inside the validity period while the verifier's clock stays the real one.
    bcbExpiredSigner: expired === undefined
      ? undefined
      : new XmlSigner({ signer: expired.signer, certificate: expired.certificate, clock: () => new Date(expired.certificate.notBefore.getTime() + 1000) }),
    log: new MessageLog(opts.logFile, { memory: opts.logInMemory ?? true }),
    faults: {},
    state: new WeakMap(),
    closing: false
  }
  ctx.faults = validateFaults(opts.faults ?? {}, ctx.bcbExpiredSigner !== undefined)
  const dict = new DictService(ctx, opts.dict)
  await dict.store.load()
  const spi = new SpiService(ctx, opts.spi)

  const app = Fastify({
    https: {
      cert: opts.tls.certPem,
      key: opts.tls.keyPem,
      ca: opts.tls.clientCaPem,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2'
    },
    logger: opts.logger ?? false,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 },
    bodyLimit: opts.spi?.maxBodyBytes ?? 4 * 1024 * 1024
  })

  app.removeAllContentTypeParsers()
  // Bodies stay bytes: signatures are verified over exactly what arrived.
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })

  app.addHook('onRequest', async (request, reply) => {
    const host = request.headers.host
    if (host !== undefined && hostHasPort(host)) return closeConnection(request, reply)
    const path = pathOf(request)
    const state = requestState(ctx, request)
    if (ctx.fingerprintMode) {
      const fp = peerFingerprint(request)
      const ispb = fp === undefined ? undefined : fingerprintToIspb.get(fp)
      if (ispb === undefined) return await problemFor(ctx, request, reply, 403, 'The client certificate is not registered for any participant')
      state.tlsIspb = ispb
    }
    if (isIcomPath(path)) {
      const unexpected = Object.keys(request.headers).filter((h) => !ICOM_ALLOWED_HEADERS.has(h))
      const te = request.headers['transfer-encoding']
      if (te !== undefined && te.trim().toLowerCase() !== 'chunked') unexpected.push(`transfer-encoding: ${te}`)
      if (unexpected.length > 0) {
        return await sendIcomProblem(request, reply, 400, 'invalidHeader', 'Invalid header', `Header not allowed: ${unexpected.join(', ')}`)
      }
      const m = /^\/api\/v1\/(?:in|out)\/([^/]+)\//.exec(path)
      if (m !== null) {
        const ispb = decodeURIComponent(m[1] as string)
        if (!participants.has(ispb) || (state.tlsIspb !== undefined && state.tlsIspb !== ispb)) {
          return await sendIcomProblem(request, reply, 403, 'forbidden', 'Forbidden', `The client certificate does not belong to ISPB ${ispb}`)
        }
      }
    }
  })

  interface Hold { readonly prefix: string, waiting: number, readonly released: Promise<void>, release: () => void }
  const holds = new Set<Hold>()
  const hold = (prefix: string): RouteHold => {
    let release = (): void => {}
    const released = new Promise<void>((resolve) => { release = resolve })
    const h: Hold = { prefix, waiting: 0, released, release: () => { holds.delete(h); release() } }
    holds.add(h)
    return { get waiting () { return h.waiting }, release: h.release }
  }

  app.addHook('preHandler', async (request, reply) => {
    const f = faultsFor(ctx, request)
    if (f.drop) return closeConnection(request, reply)
    if (f.delayMs > 0) await sleep(f.delayMs, undefined, { ref: false })
    if (f.errorStatus !== null) return await problemFor(ctx, request, reply, f.errorStatus, 'Injected fault')
    const path = pathOf(request)
    for (const h of holds) {
      if (!path.startsWith(h.prefix)) continue
      h.waiting++
      await h.released
      h.waiting--
    }
  })

  app.setNotFoundHandler(async (request, reply) => await problemFor(ctx, request, reply, 404, `No resource at ${request.method} ${pathOf(request)}`))

  app.setErrorHandler(async (err: Error & { statusCode?: number }, request, reply) => {
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode <= 599 ? err.statusCode : 500
    if (status >= 500) request.log.error({ err }, 'simulator error')
    try {
      return await problemFor(ctx, request, reply, status, status >= 500 ? 'Unexpected condition while processing the request' : err.message)
    } catch (inner) {
      // Signing the problem failed too: answer unsigned rather than let Fastify answer JSON.
      request.log.error({ err: inner }, 'cannot sign the error answer')
      reply.code(500).header('content-type', 'application/problem+xml')
      return await reply.send(icomProblemXml('internalServerError', 500, 'Internal Server Error'))
    }
  })

  dict.register(app)
  spi.register(app)

  // While closing, every answer ends its connection (a long poll answered 204 must not linger as keep-alive).
  app.addHook('onSend', async (_request, reply) => {
    if (ctx.closing) reply.header('connection', 'close')
  })
  // Faults that damage the answer itself: its multipart framing or its Content-Type (faults.ts).
  app.addHook('onSend', async (request, reply, payload) => {
    const f = faultsFor(ctx, request)
    const damaged = f.responseMultipart === null && f.responseContentType === undefined ? payload : damageAnswer(reply, payload, f.responseMultipart, f.responseContentType)
    return f.dribbleMs > 0 ? dribble(reply, damaged, f.dribbleMs) : damaged
  })
  app.addHook('preClose', (done) => {
    ctx.closing = true
    for (const h of holds) h.release()
    spi.close()
    done()
  })
  app.addHook('onClose', async () => {
    await dict.store.close()
    await ctx.log.close()
  })

  const control: SimulatorControl = {
    setFaults (f: FaultConfig): void {
      ctx.faults = validateFaults(f, ctx.bcbExpiredSigner !== undefined)
    },
    get faults (): FaultConfig {
      return ctx.faults
    },
    log: ctx.log.entries,
    dict,
    spi,
    hold
  }
  app.decorate('simulator', control)
  return app as unknown as SimulatorInstance
}

/** The answer as a damaged link or a broken BACEN would send it (gzip-decoded and re-encoded around the change). */
/** The body as a stream of one byte every `ms` (chunked: no Content-Length), ended early if the client goes. */
function dribble (reply: FastifyReply, payload: unknown, ms: number): unknown {
  if (typeof payload !== 'string' && !Buffer.isBuffer(payload)) return payload
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
  if (body.length === 0) return payload
  reply.removeHeader('content-length')
  let i = 0
  let timer: NodeJS.Timeout | undefined
  const out = new Readable({
    read () {
      timer = setTimeout(() => {
        timer = undefined
        out.push(body.subarray(i, i + 1))
        i++
        if (i >= body.length) out.push(null)
      }, ms)
    },
    destroy (err, cb) {
      if (timer !== undefined) clearTimeout(timer)
      cb(err)
    }
  })
  reply.raw.once('close', () => { out.destroy() })
  return out
}

function damageAnswer (reply: FastifyReply, payload: unknown, multipart: ResponseMultipartMode | null, contentType: string | null | undefined): unknown {
  const ct = reply.getHeader('content-type')
  const type = typeof ct === 'string' ? ct : undefined
  if (contentType === null) reply.removeHeader('content-type')
  else if (contentType !== undefined) reply.header('content-type', contentType)
  const boundary = /boundary="?([^";]+)"?/i.exec(type ?? '')?.[1]
  if (multipart === null || type === undefined || !type.toLowerCase().startsWith('multipart/mixed') || boundary === undefined) return payload
  if (multipart === 'no-boundary') {
    reply.header('content-type', 'multipart/mixed')
    return payload
  }
  if (typeof payload !== 'string' && !Buffer.isBuffer(payload)) return payload
  const gzipped = reply.getHeader('content-encoding') === 'gzip'
  let body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
  if (gzipped) body = gunzipSync(body)
  const close = body.lastIndexOf(`--${boundary}--`)
  if (close >= 0) body = body.subarray(0, close)
  return gzipped ? gzipSync(body) : body
}

/**
 * How the load tool reaches a target. Two kinds, one interface, so the same flows measure both:
 *   - the proxy: plain HTTP to pix-proxy on BACEN's paths, unsigned bodies; the proxy signs, forwards over mTLS and
 *     reports its verdict on BACEN's signature in `pix-proxy-signature-*` headers;
 *   - direct: a bank core without a proxy. It signs each write itself (SPI or DICT profile), speaks mutual TLS to
 *     the simulator (or plain HTTP to a forwarding proxy such as nginx that does the mTLS), verifies every signed
 *     answer with core/xmldsig, and keeps to ICOM's 6 concurrent POSTs and 6 stream readers per participant as the
 *     proxy does (excess waits in a queue, which the open model's latency includes).
 */
import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import { Agent } from 'undici'
import type { Dispatcher } from 'undici'
import { InFlightLimiter } from '../../src/icom/limiter.ts'
import { multipartBoundary, parseMultipart } from '../../src/http/multipart.ts'
import type { XmlSigner } from '../../core/xmldsig/sign.ts'
import type { TrustStore } from '../../core/xmldsig/truststore.ts'
import { verifyXml } from '../../core/xmldsig/verify.ts'
import { assertLoopbackUrl, loopbackOnlyLookup } from './loopback.ts'
import type { ResolveAll } from './loopback.ts'

const gunzipAsync = promisify(gunzip)

/** Signature profiles: DICT answers are signed in 'dict', ICOM messages in 'spi'. */
export type LoadProfile = 'dict' | 'spi'

export interface LoadRequest {
  readonly method: 'GET' | 'POST' | 'DELETE'
  /** Path and query on BACEN's API (`/api/v2/…`, `/api/v1/…`). */
  readonly path: string
  readonly headers?: Readonly<Record<string, string>>
  /** Unsigned XML. */
  readonly body?: string
  /** Sign the body in this profile before it leaves (a direct client does; the proxy signs it itself). */
  readonly sign?: LoadProfile
  /** The profile the answer's signature is checked in. */
  readonly answerProfile: LoadProfile
  readonly signal?: AbortSignal
}

/**
 * `code` is a core/xmldsig VerifyCode, or NOT_APPLICABLE for answers BACEN signs nothing in (answers to ICOM posts,
 * ICOM errors, empty bodies). `valid` here means "no signature failure": true for VALID and NOT_APPLICABLE (the
 * proxy's own pix-proxy-signature-valid header is true only for VALID; NOT_APPLICABLE is read from its code).
 */
export interface SignatureVerdict {
  readonly valid: boolean
  readonly code: string
}

export interface AnswerPart {
  readonly body: Buffer
  readonly signature: SignatureVerdict
}

export interface LoadResponse {
  readonly status: number
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>
  /** Decompressed body. */
  readonly body: Buffer
  /** The answer's verdict; for a multipart page, the first invalid part's (VALID when all are). */
  readonly signature: SignatureVerdict
  /** The messages of the answer: one per multipart part, one for a single XML body, none without a body. */
  readonly parts: readonly AnswerPart[]
}

/** What the load engine sends requests through. Implement it to measure another path (e.g. a peer proxy). */
export interface LoadTransport {
  /** 'proxy', 'direct', or a caller's own name: reported as the target. */
  readonly kind: string
  /** The participant (ISPB) the requests are sent as. */
  readonly ispb: string
  request (req: LoadRequest): Promise<LoadResponse>
  close (): Promise<void>
}

export const NOT_APPLICABLE = 'NOT_APPLICABLE'
/** @deprecated the code is NOT_APPLICABLE (the proxy's name for it since issue 13); kept for importers. */
export const UNSIGNED = NOT_APPLICABLE
const NOT_SIGNED: SignatureVerdict = Object.freeze({ valid: true, code: NOT_APPLICABLE })

interface CommonOptions {
  /** Base URL (scheme, host, port), e.g. http://127.0.0.1:8080. */
  readonly url: string
  /** Participant ISPB the requests are sent as. */
  readonly ispb: string
  /** Skip the loopback-only check (--allow-remote). */
  readonly allowRemote?: boolean
  /** Keep-alive connections per origin. Default: as many as requests in flight. */
  readonly connections?: number
  /** Name resolution for the loopback check (tests). */
  readonly resolve?: ResolveAll
}

export type ProxyTransportOptions = CommonOptions

function flatHeaders (h: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v
  return out
}

async function readBody (res: Dispatcher.ResponseData): Promise<{ headers: Record<string, string>, body: Buffer }> {
  const headers = flatHeaders(res.headers)
  let body: Buffer = Buffer.from(await res.body.arrayBuffer())
  if (headers['content-encoding']?.toLowerCase() === 'gzip' && body.length > 0) {
    body = await gunzipAsync(body)
    delete headers['content-encoding']
  }
  return { headers, body }
}

function proxyVerdict (headers: Record<string, string>): SignatureVerdict {
  const valid = headers['pix-proxy-signature-valid']
  const code = headers['pix-proxy-signature-code']
  if ((valid === undefined && code === undefined) || code === NOT_APPLICABLE) return NOT_SIGNED
  return { valid: valid === 'true' && (code === undefined || code === 'VALID'), code: code ?? (valid === 'true' ? 'VALID' : 'INVALID') }
}

/** The proxy's own problem answers carry BACEN's verdict when it refused a badly signed answer (policy reject). */
function problemSignatureCode (headers: Record<string, string>, body: Buffer): string | undefined {
  if (!(headers['content-type'] ?? '').startsWith('application/problem+json')) return undefined
  try {
    const p = JSON.parse(body.toString('utf8')) as { code?: unknown, signatureCode?: unknown }
    if (p.code === 'PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID') return typeof p.signatureCode === 'string' ? p.signatureCode : 'INVALID'
  } catch {}
  return undefined
}

function agentFor (o: CommonOptions, connect: Record<string, unknown>): Agent {
  return new Agent({
    connect: { ...connect, ...(o.allowRemote === true ? {} : { lookup: loopbackOnlyLookup(o.resolve) }) },
    ...(o.connections === undefined ? {} : { connections: o.connections }),
    keepAliveTimeout: 10_000
  })
}

/**
 * pix-proxy over plain HTTP: bodies go unsigned, the proxy signs them; the answer's signature verdict comes from
 * the proxy's headers (per part on stream pages). Refuses a non-loopback URL unless `allowRemote`.
 */
export async function createProxyTransport (o: ProxyTransportOptions): Promise<LoadTransport> {
  if (o.allowRemote !== true) await assertLoopbackUrl(o.url, { what: 'proxy', ...(o.resolve === undefined ? {} : { resolve: o.resolve }) })
  const origin = new URL(o.url).origin
  const agent = agentFor(o, {})
  return {
    kind: 'proxy',
    ispb: o.ispb,
    async request (req: LoadRequest): Promise<LoadResponse> {
      const res = await agent.request({
        origin,
        path: req.path,
        method: req.method,
        headers: { ...(req.body === undefined ? {} : { 'content-type': 'application/xml' }), ...req.headers },
        ...(req.body === undefined ? {} : { body: req.body }),
        ...(req.signal === undefined ? {} : { signal: req.signal })
      })
      const { headers, body } = await readBody(res)
      let signature = proxyVerdict(headers)
      const refused = problemSignatureCode(headers, body)
      if (refused !== undefined) signature = { valid: false, code: refused }
      const boundary = multipartBoundary(headers['content-type'])
      const parts: AnswerPart[] = boundary === null
        ? (body.length === 0 ? [] : [{ body, signature }])
        : parseMultipart(body, boundary).map((p) => ({ body: p.body, signature: proxyVerdict(p.headers) }))
      return { status: res.statusCode, headers, body, signature, parts }
    },
    async close (): Promise<void> {
      if (!agent.closed && !agent.destroyed) await agent.close()
    }
  }
}

export interface DirectTransportOptions extends CommonOptions {
  /** Signs requests as the participant (software key, or an HSM-backed Signer). */
  readonly xmlSigner: XmlSigner
  /** BACEN's signing certificates, to verify every signed answer. */
  readonly bacenTrust: TrustStore
  /**
   * Mutual TLS to the simulator: its CA, the participant's client certificate and key. Omit for plain HTTP to a
   * forwarding proxy that does the mTLS itself (e.g. nginx), or pass `dispatcher` to bring your own connections.
   */
  readonly tls?: { readonly ca: string, readonly certPem: string, readonly keyPem: string, readonly servername?: string }
  /** A ready dispatcher (e.g. a TLS agent over an HSM key); used as is, without the connect-time loopback check. */
  readonly dispatcher?: Dispatcher
  /** Host header (BACEN wants no port). Default: tls.servername, else dict-h.pi.rsfn.net.br. */
  readonly host?: string
  /** ICOM's concurrent POSTs and stream readers per participant. Default 6 (BACEN's limit). */
  readonly maxSpiInFlight?: number
  /** How long a request may wait for an ICOM slot. Default 30000 ms. */
  readonly spiQueueTimeoutMs?: number
}

/** Verifies an answer as the proxy does (src/forwarding/answer.ts checkResponse), without the proxy. */
function verifyAnswer (status: number, headers: Record<string, string>, body: Buffer, profile: LoadProfile, trust: TrustStore): Omit<LoadResponse, 'status' | 'headers' | 'body'> {
  if (body.length === 0) return { signature: NOT_SIGNED, parts: [] }
  const boundary = multipartBoundary(headers['content-type'])
  if (boundary !== null) {
    const parts = parseMultipart(body, boundary).map((p) => {
      const r = verifyXml(p.body, { profile, trustStore: trust })
      return { body: p.body, signature: { valid: r.valid, code: r.code } }
    })
    return { signature: parts.find((p) => !p.signature.valid)?.signature ?? { valid: true, code: 'VALID' }, parts }
  }
  // Every DICT answer with a body is signed, problems included, and every stream page, whatever the media type;
  // ICOM's error documents are not SPI messages and go unsigned (posts answer 201 with no body).
  const icomUnsigned = profile === 'spi' && (status < 200 || status >= 300)
  if (icomUnsigned || status === 204) return { signature: NOT_SIGNED, parts: [{ body, signature: NOT_SIGNED }] }
  const r = verifyXml(body, { profile, trustStore: trust })
  const signature = { valid: r.valid, code: r.code }
  return { signature, parts: [{ body, signature }] }
}

/** Takes a limiter slot, giving up (and handing the slot back when it comes) if the request is aborted. */
async function acquire (limiter: InFlightLimiter, signal: AbortSignal | undefined): Promise<() => void> {
  if (signal === undefined) return await limiter.acquire()
  signal.throwIfAborted()
  const pending = limiter.acquire()
  return await new Promise((resolve, reject) => {
    const onAbort = (): void => {
      pending.then((release) => { release() }, () => {})
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    pending.then((release) => {
      signal.removeEventListener('abort', onAbort)
      if (signal.aborted) release()
      else resolve(release)
    }, (err: unknown) => {
      signal.removeEventListener('abort', onAbort)
      reject(err)
    })
  })
}

/**
 * A bank core without a proxy: signs, speaks mTLS to the simulator itself and verifies BACEN's answers.
 * Refuses a non-loopback URL unless `allowRemote`.
 */
export async function createDirectTransport (o: DirectTransportOptions): Promise<LoadTransport> {
  if (o.allowRemote !== true) await assertLoopbackUrl(o.url, { what: 'simulator', ...(o.resolve === undefined ? {} : { resolve: o.resolve }) })
  const origin = new URL(o.url).origin
  const servername = o.tls?.servername ?? 'dict-h.pi.rsfn.net.br'
  const host = o.host ?? servername
  const owned = o.dispatcher === undefined
    ? agentFor(o, o.tls === undefined ? {} : { ca: o.tls.ca, cert: o.tls.certPem, key: o.tls.keyPem, servername, minVersion: 'TLSv1.2' })
    : undefined
  const dispatcher: Dispatcher = o.dispatcher ?? (owned as Agent)
  const max = o.maxSpiInFlight ?? 6
  const queueTimeoutMs = o.spiQueueTimeoutMs ?? 30_000
  const posts = new InFlightLimiter({ maxInFlight: max, queueMax: 100_000, queueTimeoutMs })
  const readers = new InFlightLimiter({ maxInFlight: max, queueMax: 100_000, queueTimeoutMs })
  return {
    kind: 'direct',
    ispb: o.ispb,
    async request (req: LoadRequest): Promise<LoadResponse> {
      // Signed before waiting for an ICOM slot, as the proxy does: signing does not hold one of BACEN's six.
      const body = req.body === undefined ? undefined : req.sign === undefined ? req.body : await o.xmlSigner.sign(req.body, req.sign)
      const limiter = req.path.startsWith('/api/v1/in/') ? posts : req.path.startsWith('/api/v1/out/') ? readers : undefined
      const release = limiter === undefined ? undefined : await acquire(limiter, req.signal)
      try {
        const res = await dispatcher.request({
          origin,
          path: req.path,
          method: req.method,
          headers: { host, ...(body === undefined ? {} : { 'content-type': 'application/xml; charset=utf-8' }), ...req.headers },
          ...(body === undefined ? {} : { body }),
          ...(req.signal === undefined ? {} : { signal: req.signal })
        })
        const { headers, body: answer } = await readBody(res)
        return { status: res.statusCode, headers, body: answer, ...verifyAnswer(res.statusCode, headers, answer, req.answerProfile, o.bacenTrust) }
      } finally {
        release?.()
      }
    },
    async close (): Promise<void> {
      // A dispatcher passed in belongs to the caller.
      if (owned !== undefined && !owned.closed && !owned.destroyed) await owned.close()
    }
  }
}

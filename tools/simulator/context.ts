/**
 * What the DICT and SPI halves of the simulator share: participants and their trust stores, the BCB signers,
 * the current faults, the message log, per-request state, and the helpers that sign and send answers.
 */
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import { gzip } from 'node:zlib'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Certificate } from '../../core/pki/x509.ts'
import { peerCertificate } from '../../core/pki/peer.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import type { XmlSigner } from '../../core/xmldsig/sign.ts'
import type { Profile } from '../../core/xmldsig/profile.ts'
import { rewritten, sampleFaults } from './faults.ts'
import type { AppliedFaults, FaultConfig, ResponseSignatureMode } from './faults.ts'
import type { MessageLog } from './log.ts'
import { DictProblem, dictProblemXml, icomProblemXml, PROBLEM_CONTENT_TYPE } from './problem.ts'

const gzipAsync = promisify(gzip)

export const XML_CONTENT_TYPE = 'application/xml; charset=utf-8'

export interface ParticipantInfo {
  readonly ispb: string
  readonly signingCerts: readonly Certificate[]
  readonly trust: TrustStore
  /** Normalised (upper-case hex, no colons) SHA-256 fingerprints of the participant's TLS client certificates. */
  readonly tlsFingerprints: ReadonlySet<string>
}

/** Per-request state, kept beside the request rather than decorated onto it. */
export interface RequestState {
  /** The participant the TLS client certificate belongs to; undefined when no fingerprints are configured. */
  tlsIspb?: string
  faults?: AppliedFaults
}

export interface SimulatorContext {
  readonly participants: ReadonlyMap<string, ParticipantInfo>
  /** Union of every participant's signing certificates (for callers not identified by their TLS certificate). */
  readonly allTrust: TrustStore
  /** True when at least one participant lists TLS fingerprints: then every client certificate must be listed. */
  readonly fingerprintMode: boolean
  readonly bcbSigner: XmlSigner
  readonly bcbExpiredSigner: XmlSigner | undefined
  readonly log: MessageLog
  faults: FaultConfig
  readonly state: WeakMap<FastifyRequest, RequestState>
  closing: boolean
}

export function normaliseFingerprint (fp: string): string {
  return fp.replace(/:/g, '').toUpperCase()
}

/** The ISPB whose signing certificate this is (matched by DER fingerprint), or undefined. */
export function participantOfSigner (ctx: SimulatorContext, fingerprint256: string | undefined): string | undefined {
  if (fingerprint256 === undefined) return undefined
  for (const p of ctx.participants.values()) {
    if (p.signingCerts.some((c) => c.fingerprint256 === fingerprint256)) return p.ispb
  }
  return undefined
}

export function requestState (ctx: SimulatorContext, request: FastifyRequest): RequestState {
  let s = ctx.state.get(request)
  if (s === undefined) {
    s = {}
    ctx.state.set(request, s)
  }
  return s
}

/** The faults sampled for this request (sampled once, on first use). */
export function faultsFor (ctx: SimulatorContext, request: FastifyRequest): AppliedFaults {
  const s = requestState(ctx, request)
  s.faults ??= sampleFaults(ctx.faults, pathOf(request))
  return s.faults
}

export function pathOf (request: FastifyRequest): string {
  const url = request.raw.url ?? '/'
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

/** The client certificate's fingerprint in normalised form (read once per connection: core/pki/peer.ts). */
export function peerFingerprint (request: FastifyRequest): string | undefined {
  const peer = peerCertificate(request.raw.socket)
  return peer === null ? undefined : normaliseFingerprint(peer.fingerprint256)
}

/** 32 hex characters, the form of BACEN's CorrelationId. */
export function correlationId (): string {
  return randomBytes(16).toString('hex')
}

/** Replaces the first character of the SignatureValue so that the value no longer verifies (digests still match). */
export function corruptSignatureValue (signed: string): string {
  const open = signed.indexOf('<ds:SignatureValue>')
  if (open < 0) return signed
  const at = open + '<ds:SignatureValue>'.length
  const c = signed[at]
  return signed.slice(0, at) + (c === 'A' ? 'B' : 'A') + signed.slice(at + 1)
}

/** Signs a BCB message or response the way the fault configuration says. */
export async function signAsBcb (ctx: SimulatorContext, xml: string, profile: Profile, mode: ResponseSignatureMode): Promise<string> {
  switch (mode) {
    case 'missing': return xml
    case 'invalid': return corruptSignatureValue(await ctx.bcbSigner.sign(xml, profile))
    case 'expired-cert':
      // validateFaults refuses this mode without an expired identity; the fallback only guards a race with setFaults
      return await (ctx.bcbExpiredSigner ?? ctx.bcbSigner).sign(xml, profile)
    default: return await ctx.bcbSigner.sign(xml, profile)
  }
}

function acceptsGzip (header: string | undefined): boolean {
  if (header === undefined) return false
  return header.split(',').some((item) => {
    const [coding, ...params] = item.split(';').map((x) => x.trim().toLowerCase())
    if (coding !== 'gzip') return false
    const q = params.find((p) => p.startsWith('q='))
    return q === undefined || Number(q.slice(2)) > 0
  })
}

/** Sends `body`, gzip-compressed when the client accepts it (BACEN compresses on Accept-Encoding: gzip). */
export async function sendBody (request: FastifyRequest, reply: FastifyReply, status: number, contentType: string, body: string | Buffer): Promise<FastifyReply> {
  reply.code(status).header('content-type', contentType)
  if (acceptsGzip(request.headers['accept-encoding'])) {
    const zipped = await gzipAsync(typeof body === 'string' ? Buffer.from(body, 'utf8') : body)
    reply.header('content-encoding', 'gzip').header('vary', 'accept-encoding')
    return await reply.send(zipped)
  }
  return await reply.send(body)
}

/** Signs (per the request's faults) and sends a DICT answer. */
export async function sendDict (ctx: SimulatorContext, request: FastifyRequest, reply: FastifyReply, status: number, unsigned: string, contentType = XML_CONTENT_TYPE): Promise<FastifyReply> {
  const f = faultsFor(ctx, request)
  const signed = await signAsBcb(ctx, rewritten(unsigned, f), 'dict', f.responseSignature)
  return await sendBody(request, reply, status, contentType, signed)
}

export async function sendDictProblem (ctx: SimulatorContext, request: FastifyRequest, reply: FastifyReply, problem: DictProblem): Promise<FastifyReply> {
  if (problem.status === 503) reply.header('retry-after', String(problem.retryAfter ?? 1))
  return await sendDict(ctx, request, reply, problem.status, dictProblemXml(problem, correlationId()), PROBLEM_CONTENT_TYPE)
}

export async function sendIcomProblem (request: FastifyRequest, reply: FastifyReply, status: number, type: string, title: string, detail?: string): Promise<FastifyReply> {
  if (status === 503) reply.header('retry-after', '1')
  return await sendBody(request, reply, status, PROBLEM_CONTENT_TYPE, icomProblemXml(type, status, title, detail))
}

export function isDictPath (path: string): boolean {
  return path.startsWith('/api/v2/')
}

export function isIcomPath (path: string): boolean {
  return path.startsWith('/api/v1/')
}

/**
 * Forwarding to BACEN and verifying what comes back, shared by the DICT and SPI routes.
 *
 * Only headers BACEN documents go upstream (ICOM answers 400 to anything else, tracing headers included), Host
 * carries no port (BACEN closes the connection otherwise), requests are never compressed, responses are requested
 * with gzip and decompressed (with a bound) before their signature is checked.
 */
import { gunzip } from 'node:zlib'
import { promisify } from 'node:util'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { AuditTx } from '../audit/recorder.ts'
import { spiFacts } from '../audit/facts.ts'
import type { MessageFacts } from '../audit/facts.ts'
import type { Dispatcher } from 'undici'
import type { Upstream } from '../tls/upstream.ts'
import { verifyDocument, verifyXml } from '../xmldsig/verify.ts'
import type { VerifyCode, VerifyOptions, VerifyResult } from '../xmldsig/verify.ts'
import { childElements, parseXml, textContent, XmlError } from '../xmldsig/xml.ts'
import type { XmlDocument, XmlElement } from '../xmldsig/xml.ts'
import type { Profile } from '../xmldsig/profile.ts'
import { buildMultipart, MultipartError, multipartBoundary, parseMultipart } from '../http/multipart.ts'
import { Errors, PixProxyError } from '../errors.ts'
import { answeredError, OUTCOME_HEADER, outcomeOf, outcomeUnknown } from './outcome.ts'

const gunzipAsync = promisify(gunzip)

/** Largest response body accepted from BACEN, compressed or not. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024

const SIGNATURE_VALID_HEADER = 'pix-proxy-signature-valid'
const SIGNATURE_CODE_HEADER = 'pix-proxy-signature-code'
/**
 * The verdict code of answers BACEN signs nothing in (an empty ICOM 201 or 204, ICOM's error documents, any answer
 * to an ICOM post): there is no signature to verify, so pix-proxy-signature-valid is false, but it is not a failure.
 */
export const NOT_APPLICABLE = 'NOT_APPLICABLE'

/**
 * Which answers BACEN signs on a route: every DICT answer with a body ('every-body'); every ICOM stream page
 * and part ('2xx-bodies': its error documents are not signed); nothing on an ICOM post ('none'). Where BACEN signs,
 * the body is verified whatever its Content-Type (or none): an unsigned answer under another media type is invalid,
 * not "unsigned".
 */
export type SignedAnswers = 'every-body' | '2xx-bodies' | 'none'

/** Upstream response headers a caller needs, those BACEN documents (docs/bacen.md §1.5, §1.6, §2.2, §2.3: DICT's
 * Cache-Control on reads, Retry-After, ICOM's PI-ResourceId and PI-Pull-Next); everything else (cookies, server
 * banners, a Location naming BACEN's internals, hop-by-hop such as keep-alive, which describes the proxy's connection
 * to BACEN) stays here. */
const RESPONSE_HEADER_ALLOWLIST = ['content-type', 'retry-after', 'cache-control', 'pi-resourceid', 'pi-pull-next']
/** The headers of a multipart answer's parts the caller gets (plus the verdict headers the proxy adds). */
const PART_HEADER_ALLOWLIST = new Set(['content-type', 'pi-resourceid'])
/** A value with a control character (a bare CR or LF, NUL) could split a header where the caller parses it. */
const UNSAFE_HEADER_VALUE = /[\u0000-\u0008\u000a-\u001f\u007f]/ // eslint-disable-line no-control-regex

export interface UpstreamCall {
  readonly upstream: Upstream
  readonly name: 'dict' | 'spi'
  readonly method: string
  readonly path: string
  readonly headers: Record<string, string>
  readonly body?: Buffer | string
}

export interface UpstreamAnswer {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Buffer
  readonly upstreamMs: number
}

function hostWithoutPort (origin: string): string {
  return new URL(origin).hostname
}

/** Exactly the headers sent to BACEN for a call (also what the audit row records). */
function upstreamHeaders (call: UpstreamCall, origin: string): Record<string, string> {
  return { host: hostWithoutPort(origin), 'accept-encoding': 'gzip', 'user-agent': 'pix-proxy', ...call.headers }
}

/**
 * Sends one request to BACEN and reads the whole (decompressed) body; maps transport failures to stable codes.
 * The whole call, answer included, has one deadline (PIXPROXY_UPSTREAM_DEADLINE_MS): undici's timeouts bound the
 * wait for headers and between two body chunks, so an answer dribbled a byte at a time would hold its ICOM slot for
 * as long as BACEN kept dribbling.
 */
export async function callUpstream (app: FastifyInstance, call: UpstreamCall, origin: string): Promise<UpstreamAnswer> {
  const started = performance.now()
  const deadlineMs = app.config.upstream.deadlineMs
  const signal = AbortSignal.timeout(deadlineMs)
  const failed = (err: unknown): PixProxyError => {
    app.metrics.upstreamRequests.inc({ upstream: call.name, status: 'error' })
    if (signal.aborted && !(err instanceof PixProxyError && err.outcome === 'not-sent')) {
      return new PixProxyError(Errors.UPSTREAM_DEADLINE, [call.name, deadlineMs], { cause: err })
    }
    return transportError(call.name, err)
  }
  let res: Dispatcher.ResponseData
  try {
    res = await call.upstream.request({
      method: call.method,
      path: call.path,
      headers: upstreamHeaders(call, origin),
      ...(call.body === undefined ? {} : { body: call.body }),
      signal
    })
  } catch (err) {
    throw failed(err)
  }
  let raw: Buffer
  try {
    raw = await readBounded(res.body, MAX_RESPONSE_BYTES)
  } catch (err) {
    // BACEN's status line arrived but not its whole answer: what it said is not known.
    throw Object.assign(failed(err), { upstreamStatus: res.statusCode })
  }
  const upstreamMs = performance.now() - started
  app.metrics.upstreamRequests.inc({ upstream: call.name, status: String(res.statusCode) })
  app.metrics.upstreamSeconds.observe({ upstream: call.name }, upstreamMs / 1000)
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(res.headers)) {
    if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v
  }
  let body = raw
  const encoding = headers['content-encoding']?.toLowerCase()
  if (encoding === 'gzip' && raw.length > 0) {
    try {
      body = await gunzipAsync(raw, { maxOutputLength: MAX_RESPONSE_BYTES })
    } catch (err) {
      throw answeredError(new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [call.name, `gzip body: ${(err as Error).message}`], { cause: err }), res.statusCode)
    }
  } else if (encoding !== undefined && encoding !== 'identity' && raw.length > 0) {
    throw answeredError(new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [call.name, `unsupported Content-Encoding ${encoding}`]), res.statusCode)
  }
  delete headers['content-encoding']
  return { status: res.statusCode, headers, body, upstreamMs }
}

async function readBounded (body: Dispatcher.ResponseData['body'], max: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const chunk of body) {
    n += (chunk as Buffer).length
    if (n > max) {
      body.destroy()
      throw new Error(`response body larger than ${max} bytes`)
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

/**
 * A failure of a call already handed to the upstream (Upstream.request classifies its own): a timeout or a lost
 * connection, both after the request may have left. Never "not sent": that needs proof (upstream.ts).
 */
function transportError (name: string, err: unknown): PixProxyError {
  const code = (err as { code?: string }).code ?? ''
  const message = (err as Error).message ?? String(err)
  if (err instanceof PixProxyError) return err
  if (code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'ETIMEDOUT') {
    return new PixProxyError(Errors.UPSTREAM_TIMEOUT, [name, `${code}: ${message}`], { cause: err })
  }
  return new PixProxyError(Errors.UPSTREAM_CONNECTION_LOST, [name, code === '' ? message : `${code}: ${message}`], { cause: err })
}

export interface CheckedBody {
  /** Body to send to the caller (multipart parts gain a signature header each). */
  readonly body: Buffer
  readonly contentType: string | undefined
  readonly valid: boolean
  readonly code: VerifyCode | typeof NOT_APPLICABLE
  readonly results: readonly VerifyResult[]
  /** The first message that is not about the request it answers (see Binding), or null. */
  readonly mismatch?: { readonly got: string | null } | null
}

/**
 * What a successful answer must say about the request it answers: a valid BACEN signature proves BACEN wrote the
 * answer, not that it answers this request. Checked in every message of a 2xx answer: the first element found at
 * one of `paths` (below the message's root) must hold one of `expected`; none found is a mismatch too.
 */
export interface Binding {
  /** What the value names, for the error: 'key', 'claim', 'policy', 'recipient'. */
  readonly what: string
  readonly expected: readonly string[]
  readonly paths: ReadonlyArray<readonly string[]>
}

function at (root: XmlElement, path: readonly string[]): XmlElement | undefined {
  let el: XmlElement | undefined = root
  for (const local of path) el = el === undefined ? undefined : childElements(el).find((c) => c.local === local)
  return el
}

/** The value a message gives for the binding, or null; `ok` when it is one of the expected values. */
function bound (doc: XmlDocument, b: Binding): { ok: boolean, got: string | null } {
  for (const p of b.paths) {
    const el = at(doc.root, p)
    if (el !== undefined) {
      const got = textContent(el).trim()
      return { ok: b.expected.includes(got), got }
    }
  }
  return { ok: false, got: null }
}

/**
 * Verifies a BACEN response body: one XML message, or each part of a multipart/mixed page. `valid` is true only for
 * VALID. Where BACEN signs (see SignedAnswers) every body is verified whatever its media type; where it signs nothing
 * the code is NOT_APPLICABLE (valid false, not a failure). A multipart body that cannot be read throws
 * UPSTREAM_BAD_RESPONSE.
 * With `delivered`, the SPI facts of every message checked (type, BizMsgIdr, EndToEndIds) are added to it, read
 * from the tree parsed for verification: what an ICOM stream page delivered, for its audit row. With `bind`, every
 * message of a 2xx answer is checked against the request (Binding), on that same tree.
 */
export function checkResponse (app: FastifyInstance, name: 'dict' | 'spi', profile: Profile, answer: UpstreamAnswer, signed: SignedAnswers, o: { delivered?: MessageFacts, bind?: Binding } = {}): CheckedBody {
  const { delivered } = o
  const ct = answer.headers['content-type']
  const options: VerifyOptions = { profile, trustStore: app.crypto.bacenTrust }
  const bind = answer.status >= 200 && answer.status < 300 ? o.bind : undefined
  let mismatch: { got: string | null } | null = null
  const verify = (xml: Buffer): VerifyResult => {
    if (delivered === undefined && bind === undefined) return verifyXml(xml, options)
    let doc: XmlDocument
    try {
      doc = parseXml(xml)
    } catch (err) {
      if (err instanceof XmlError) return verifyXml(xml, options) // the same parse failure, as its verdict
      throw err
    }
    if (delivered !== undefined) spiFacts(doc, delivered)
    if (bind !== undefined && mismatch === null) {
      const b = bound(doc, bind)
      if (!b.ok) mismatch = { got: b.got }
    }
    return verifyDocument(doc, options)
  }
  const record = (r: VerifyResult): VerifyResult => {
    app.metrics.signatures.inc({ upstream: name, code: r.code })
    return r
  }
  const bacenSigns = answer.body.length > 0 && (signed === 'every-body' || (signed === '2xx-bodies' && answer.status >= 200 && answer.status < 300))
  if (!bacenSigns) return { body: answer.body, contentType: ct, valid: false, code: NOT_APPLICABLE, results: [] }
  let boundary: string | null
  try {
    boundary = multipartBoundary(ct)
  } catch (err) {
    throw new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [name, (err as Error).message], { cause: err })
  }
  if (boundary !== null) {
    let parts
    try {
      parts = parseMultipart(answer.body, boundary)
    } catch (err) {
      if (err instanceof MultipartError) throw new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [name, err.message], { cause: err })
      throw err
    }
    if (parts.length === 0) throw new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [name, 'a multipart body with no parts'])
    const results = parts.map((p) => record(verify(p.body)))
    const annotated = parts.map((p, i) => ({
      headers: { ...safePartHeaders(p.headers), [SIGNATURE_VALID_HEADER]: String(results[i]?.code === 'VALID'), [SIGNATURE_CODE_HEADER]: results[i]?.code as string },
      body: p.body
    }))
    let rebuilt
    try {
      rebuilt = buildMultipart(annotated, boundary)
    } catch (err) {
      if (err instanceof MultipartError) throw new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [name, err.message], { cause: err })
      throw err
    }
    const firstBad = results.find((r) => r.code !== 'VALID')
    return { body: rebuilt.body, contentType: ct, valid: firstBad === undefined, code: firstBad?.code ?? 'VALID', results, mismatch }
  }
  // Whatever the media type (text/plain, octet-stream, none, problem+xml on a stream page): BACEN signs it here.
  const r = record(verify(answer.body))
  return { body: answer.body, contentType: ct, valid: r.code === 'VALID', code: r.code, results: [r], mismatch }
}

/** Sends BACEN's answer to the caller with the signature verdict in headers. */
function relay (reply: FastifyReply, answer: UpstreamAnswer, checked: CheckedBody): FastifyReply {
  reply.headers(relayedHeaders(answer))
  reply.header(OUTCOME_HEADER, 'answered')
  if (checked.contentType !== undefined) reply.header('content-type', checked.contentType)
  reply.header(SIGNATURE_VALID_HEADER, String(checked.valid))
  reply.header(SIGNATURE_CODE_HEADER, checked.code)
  return reply.code(answer.status).send(checked.body)
}

/** The response headers a caller (and the audit row) sees: allowlisted, and none with a control character. */
export function relayedHeaders (answer: UpstreamAnswer): Record<string, string> {
  const out: Record<string, string> = {}
  for (const h of RESPONSE_HEADER_ALLOWLIST) {
    const v = answer.headers[h]
    if (v !== undefined && !UNSAFE_HEADER_VALUE.test(v)) out[h] = v
  }
  return out
}

function safePartHeaders (headers: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(headers)) {
    if (PART_HEADER_ALLOWLIST.has(k.toLowerCase()) && !UNSAFE_HEADER_VALUE.test(v)) out[k] = v
  }
  return out
}

/** How the answer's part of an audit row is finished once its signature verdict is known. */
export interface AuditRow {
  /**
   * Finishes the row with BACEN's answer and the verdict on its signature; `errorCode` when the proxy refuses the
   * answer, `delivered` (an ICOM stream page's messages) replacing the row's message facts.
   */
  end (checked: CheckedBody, errorCode?: string | null, delivered?: MessageFacts | null): Promise<void>
}

/**
 * The one owner of an audited round trip: begin → send → verify → end, and of the outcome class the caller hears.
 *
 * The request half of the row is durable in the spool before the message leaves (a spool that cannot take it
 * refuses the request: nothing is sent); `send` makes the call; `finish` verifies the answer and ends the row through
 * `row.end()`. Whatever throws after begin (the call, an answer that cannot be read or verified, a relay that fails),
 * the `finally` below ends a row not yet ended, with the caller's error code and, when BACEN answered, its answer: no
 * row stays open, so the spool's oldest segment can always be shipped and deleted.
 *
 * Nothing is sent for a caller whose connection closed while the request waited: CLIENT_GONE, NOT SENT.
 *
 * Outcome classes (docs/outcomes.md), decided here and nowhere else:
 * - an error of `send` whose class is `not-sent` (a connection never made, no ICOM slot) passes through unchanged;
 * - any other error of `send`, and any error of `finish` that is not an `answered` refusal, may follow a message
 *   that BACEN received: it becomes UPSTREAM_OUTCOME_UNKNOWN, with the message's identifiers and advice;
 * - a failure to record BACEN's answer in the row (the spool's disk full, a stuck audit thread) does not hide that
 *   answer from the core: the answer is relayed and the failure logged. The row's request half is durable; the
 *   spool, failed, refuses every later request, and its replay at the next start closes the row AUDIT_INCOMPLETE.
 */
export async function audited<T> (app: FastifyInstance, req: FastifyRequest, call: UpstreamCall, origin: string, facts: MessageFacts, send: () => Promise<UpstreamAnswer>, finish: (answer: UpstreamAnswer, row: AuditRow) => Promise<T>): Promise<T> {
  const tx = await beginAudit(app, req, call, origin, facts)
  let answer: UpstreamAnswer | undefined
  let ended = false
  let failure: { err: unknown } | null = null
  const row: AuditRow = {
    end: async (checked, errorCode = null, delivered = null) => {
      if (ended) throw new PixProxyError(Errors.AUDIT_UNKNOWN_TRANSACTION, [tx.id ?? '(auditing off)'])
      ended = true
      try {
        await endAudit(tx, answer as UpstreamAnswer, checked, errorCode, delivered)
      } catch (err) {
        app.metrics.errors.inc({ code: errorCodeOf(err) })
        req.log.error({ err, auditId: tx.id, code: errorCodeOf(err) }, 'cannot record BACEN\'s answer in the audit row: the answer is relayed; the row is closed when the spool is replayed')
      }
    }
  }
  try {
    // A caller that gave up while its request waited (an audit write that stalled, a queue) has already decided
    // what to do without an answer, perhaps to send again: a message sent now would be a second one nobody expects.
    if (req.raw?.socket?.destroyed === true) throw new PixProxyError(Errors.CLIENT_GONE)
    try {
      answer = await send()
    } catch (err) {
      if (outcomeOf(err) === 'not-sent') throw err
      req.log.warn({ err, auditId: tx.id }, 'the request may have reached BACEN: its outcome is unknown')
      const status = (err as { upstreamStatus?: unknown }).upstreamStatus
      throw outcomeUnknown(call, facts, err, typeof status === 'number' ? status : undefined)
    }
    try {
      return await finish(answer, row)
    } catch (err) {
      if (outcomeOf(err) === 'answered') throw answeredError(err as PixProxyError, answer.status)
      req.log.warn({ err, auditId: tx.id }, 'BACEN answered but the answer could not be handled: its outcome is unknown to the caller')
      throw outcomeUnknown(call, facts, err, answer.status)
    }
  } catch (err) {
    failure = { err }
    throw err
  } finally {
    if (!ended) {
      ended = true
      const code = failure === null ? Errors.INTERNAL.code : errorCodeOf(failure.err)
      try {
        if (answer === undefined) {
          await tx.fail(code)
        } else {
          await tx.end({ status: answer.status, headers: relayedHeaders(answer), body: answer.body, signatureValid: null, signatureCode: null, upstreamMs: answer.upstreamMs, errorCode: code })
        }
      } catch (endErr) {
        // The spool failed under us: the caller's answer is the original failure, the log says why the row is open.
        req.log.error({ err: endErr, auditId: tx.id, code }, 'cannot end the audit row')
        if (failure === null) throw endErr // eslint-disable-line no-unsafe-finally
      }
    }
  }
}

function errorCodeOf (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code !== '' ? code : Errors.INTERNAL.code
}

/** The request half of a call's audit row, durable when this resolves: only then may the call leave. */
async function beginAudit (app: FastifyInstance, req: FastifyRequest, call: UpstreamCall, origin: string, facts: MessageFacts): Promise<AuditTx> {
  return await app.audit.recorder.begin({
    system: call.name,
    receivedAt: req.receivedAt,
    receivedPerf: req.receivedPerf,
    method: call.method,
    path: call.path,
    headers: upstreamHeaders(call, origin),
    body: call.body ?? null,
    facts,
    correlationId: req.id,
    traceId: req.trace.traceId
  })
}

async function endAudit (tx: AuditTx, answer: UpstreamAnswer, checked: CheckedBody, errorCode: string | null, delivered: MessageFacts | null): Promise<void> {
  await tx.end({
    status: answer.status,
    headers: relayedHeaders(answer),
    body: answer.body,
    signatureValid: checked.code === NOT_APPLICABLE ? null : checked.valid,
    signatureCode: checked.code,
    upstreamMs: answer.upstreamMs,
    errorCode,
    facts: delivered
  })
}

function signatureRejection (name: string, checked: CheckedBody, status: number): PixProxyError {
  const first = checked.results.find((r) => r.code !== 'VALID')
  const err = new PixProxyError(Errors.UPSTREAM_SIGNATURE_INVALID, [name, checked.code, first?.message ?? ''])
  Object.assign(err, { extensions: { signatureCode: checked.code } })
  return answeredError(err, status)
}

/**
 * The end of every call through the proxy: BACEN's signature checked, the audit row finished with the verdict (and
 * the refusal code when the reject policy applies), then the answer relayed or the refusal thrown (ANSWERED, with
 * BACEN's status). With `delivered` (an ICOM stream page), the messages the page delivered go into the row.
 *
 * A stream page refused under `reject` is withheld and not acknowledged: the refusal carries no PI-Pull-Next, so the
 * core reads the same path again and ICOM serves the same page again (docs/bacen.md §2.3); the page is acknowledged
 * only when a page after it is read. Under `flag` it is delivered, each message flagged with its own verdict.
 *
 * With `bind`, a 2xx answer about another request than this one (another key, claim, policy; a stream message to
 * another participant) is refused whatever the policy and however valid its signature: UPSTREAM_ANSWER_MISMATCH,
 * ANSWERED, withheld like an invalid page.
 */
export async function finishCall (app: FastifyInstance, reply: FastifyReply, row: AuditRow, answer: UpstreamAnswer, o: { name: 'dict' | 'spi', label: string, signed: SignedAnswers, delivered?: MessageFacts, bind?: Binding }): Promise<FastifyReply> {
  const checked = checkResponse(app, o.name, o.name, answer, o.signed, { delivered: o.delivered, bind: o.bind })
  // Nothing to verify is not a failure; anything else short of VALID is.
  const reject = checked.code !== 'VALID' && checked.code !== NOT_APPLICABLE && app.config.invalidSignaturePolicy === 'reject'
  const mismatch = reject ? null : checked.mismatch ?? null
  const refusal = reject ? Errors.UPSTREAM_SIGNATURE_INVALID.code : mismatch !== null ? Errors.UPSTREAM_ANSWER_MISMATCH.code : null
  await row.end(checked, refusal, o.delivered ?? null)
  if (reject) throw signatureRejection(o.label, checked, answer.status)
  if (mismatch !== null && o.bind !== undefined) {
    const got = mismatch.got === null ? '(none)' : JSON.stringify(mismatch.got.slice(0, 80))
    const err = new PixProxyError(Errors.UPSTREAM_ANSWER_MISMATCH, [o.label, o.bind.what, got, o.bind.what, o.bind.expected.join(' or ')])
    Object.assign(err, { extensions: { signatureCode: checked.code } })
    throw answeredError(err, answer.status)
  }
  return relay(reply, answer, checked)
}

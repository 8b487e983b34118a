/**
 * BACEN's answer as the proxy reads it: the verdict on its signature (one message, or every part of a multipart
 * page), whether it is about the request it answers (Binding), and the headers a caller may see.
 */
import type { MessageFacts } from '../../core/pix/facts.ts'
import { spiFacts } from '../../core/pix/facts.ts'
import { verifyDocument, verifyXml } from '../../core/xmldsig/verify.ts'
import type { VerifyCode, VerifyOptions, VerifyResult } from '../../core/xmldsig/verify.ts'
import { childElements, parseXml, textContent, XmlError } from '../../core/xmldsig/xml.ts'
import type { XmlDocument, XmlElement } from '../../core/xmldsig/xml.ts'
import type { Profile } from '../../core/xmldsig/profile.ts'
import type { TrustStore } from '../../core/xmldsig/truststore.ts'
import { buildMultipart, MultipartError, multipartBoundary, parseMultipart } from '../http/multipart.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'

export const SIGNATURE_VALID_HEADER = 'pix-proxy-signature-valid'
export const SIGNATURE_CODE_HEADER = 'pix-proxy-signature-code'
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

/** BACEN's answer, read whole and decompressed. */
export interface UpstreamAnswer {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Buffer
  readonly upstreamMs: number
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

export interface CheckOptions {
  /** BACEN's signing certificates. */
  readonly trust: TrustStore
  readonly signed: SignedAnswers
  /** Called with each verdict (metrics). */
  readonly onVerdict?: (r: VerifyResult) => void
  /** Collects the SPI facts of every message checked (an ICOM stream page's delivered messages). */
  readonly delivered?: MessageFacts
  readonly bind?: Binding
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
export function checkResponse (name: 'dict' | 'spi', profile: Profile, answer: UpstreamAnswer, o: CheckOptions): CheckedBody {
  const { delivered } = o
  const ct = answer.headers['content-type']
  const options: VerifyOptions = { profile, trustStore: o.trust }
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
    o.onVerdict?.(r)
    return r
  }
  const bacenSigns = answer.body.length > 0 && (o.signed === 'every-body' || (o.signed === '2xx-bodies' && answer.status >= 200 && answer.status < 300))
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

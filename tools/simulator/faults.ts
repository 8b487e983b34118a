/**
 * Fault injection: what a real BACEN link does on a bad day, on demand. Settable at start and at run time; each
 * request samples the current configuration once, so a change never affects a request already being answered.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'

export type ResponseSignatureMode = 'valid' | 'invalid' | 'missing' | 'expired-cert'

/**
 * Damage to a multipart/mixed answer (a stream page read with Accept: multipart/mixed): the body cut before its
 * close delimiter (a truncated transfer), or the Content-Type sent without its boundary parameter.
 */
export type ResponseMultipartMode = 'truncated' | 'no-boundary'

export interface FaultConfig {
  /** Milliseconds added before answering. */
  latencyMs?: number
  /** Up to this many more milliseconds, uniformly random, on top of latencyMs. */
  jitterMs?: number
  /** Fraction (0–1) of requests answered with `errorStatus` as a problem document. */
  errorRate?: number
  /** Default 503 (with Retry-After). */
  errorStatus?: number
  /** Fraction (0–1) of requests whose connection is destroyed without an answer, after the request was read. */
  dropRate?: number
  /**
   * Milliseconds between the bytes of an answer's body: the status line and headers go at once, then the body one
   * byte at a time (a link, or a BACEN, that dribbles). 0 or unset: the body goes whole.
   */
  dribbleMs?: number
  /**
   * How DICT responses and the SPI messages delivered on streams are signed: with the BCB key (valid), with a
   * corrupted SignatureValue (invalid), not at all (missing), or with the expired BCB certificate.
   */
  responseSignature?: ResponseSignatureMode
  /** Damage to multipart answers (see ResponseMultipartMode); answers of other types are left alone. */
  responseMultipart?: ResponseMultipartMode
  /**
   * The Content-Type of every answer replaced by this one, or sent without one (null): a signed or unsigned body
   * under a media type the proxy does not expect.
   */
  responseContentType?: string | null
  /**
   * An answer about another request: every occurrence of `find` in a DICT answer or a delivered SPI message is
   * replaced before BCB signs it, so the answer is genuinely signed but names another key, claim or recipient.
   */
  responseRewrite?: { find: string, replace: string }
  /** Limit the faults to requests whose path starts with one of these prefixes (e.g. '/api/v2/entries'). */
  routes?: string[]
}

const MODES: readonly ResponseSignatureMode[] = ['valid', 'invalid', 'missing', 'expired-cert']
const MULTIPART_MODES: readonly ResponseMultipartMode[] = ['truncated', 'no-boundary']

/** Throws SIMULATOR_CONFIG for out-of-range values, so a typo fails the test that set it, not a later one. */
export function validateFaults (f: FaultConfig, hasExpiredBcb: boolean): FaultConfig {
  const rate = (name: keyof FaultConfig, v: number | undefined): void => {
    if (v !== undefined && !(Number.isFinite(v) && v >= 0 && v <= 1)) {
      throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`faults.${name} must be between 0 and 1, got ${String(v)}`])
    }
  }
  const ms = (name: keyof FaultConfig, v: number | undefined): void => {
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) {
      throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`faults.${name} must be a non-negative number of milliseconds, got ${String(v)}`])
    }
  }
  rate('errorRate', f.errorRate)
  rate('dropRate', f.dropRate)
  ms('latencyMs', f.latencyMs)
  ms('dribbleMs', f.dribbleMs)
  ms('jitterMs', f.jitterMs)
  if (f.errorStatus !== undefined && !(Number.isInteger(f.errorStatus) && f.errorStatus >= 400 && f.errorStatus <= 599)) {
    throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`faults.errorStatus must be an HTTP error status, got ${String(f.errorStatus)}`])
  }
  if (f.responseSignature !== undefined && !MODES.includes(f.responseSignature)) {
    throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`faults.responseSignature must be one of ${MODES.join(', ')}`])
  }
  if (f.responseSignature === 'expired-cert' && !hasExpiredBcb) {
    throw new PixProxyError(Errors.SIMULATOR_CONFIG, ['faults.responseSignature "expired-cert" needs bcb.expired (an expired BCB signing certificate and its key)'])
  }
  if (f.responseMultipart !== undefined && !MULTIPART_MODES.includes(f.responseMultipart)) {
    throw new PixProxyError(Errors.SIMULATOR_CONFIG, [`faults.responseMultipart must be one of ${MULTIPART_MODES.join(', ')}`])
  }
  if (f.responseContentType !== undefined && f.responseContentType !== null && (typeof f.responseContentType !== 'string' || /[\r\n]/.test(f.responseContentType))) {
    throw new PixProxyError(Errors.SIMULATOR_CONFIG, ['faults.responseContentType must be a header value or null'])
  }
  const rw = f.responseRewrite
  if (rw !== undefined && !(typeof rw === 'object' && rw !== null && typeof rw.find === 'string' && rw.find !== '' && typeof rw.replace === 'string')) {
    throw new PixProxyError(Errors.SIMULATOR_CONFIG, ['faults.responseRewrite must be { find: non-empty string, replace: string }'])
  }
  return { ...f, ...(rw === undefined ? {} : { responseRewrite: { ...rw } }), routes: f.routes === undefined ? undefined : [...f.routes] }
}

/** The faults that apply to one request path. */
export interface AppliedFaults {
  readonly delayMs: number
  readonly drop: boolean
  readonly errorStatus: number | null
  readonly responseSignature: ResponseSignatureMode
  readonly responseMultipart: ResponseMultipartMode | null
  /** undefined: the answer's own Content-Type; null: none at all. */
  readonly responseContentType: string | null | undefined
  /** Applied to an answer's text before it is signed (see FaultConfig.responseRewrite). */
  readonly responseRewrite: { readonly find: string, readonly replace: string } | null
  /** Milliseconds between the body's bytes, or 0. */
  readonly dribbleMs: number
}

const NONE: AppliedFaults = Object.freeze({ delayMs: 0, drop: false, errorStatus: null, responseSignature: 'valid', responseMultipart: null, responseContentType: undefined, responseRewrite: null, dribbleMs: 0 })

/** An answer's text as the responseRewrite fault wants it, before it is signed. */
export function rewritten (xml: string, f: AppliedFaults): string {
  return f.responseRewrite === null ? xml : xml.split(f.responseRewrite.find).join(f.responseRewrite.replace)
}

export function sampleFaults (f: FaultConfig, path: string, random: () => number = Math.random): AppliedFaults {
  if (f.routes !== undefined && !f.routes.some((r) => path.startsWith(r))) return NONE
  const drop = (f.dropRate ?? 0) > 0 && random() < (f.dropRate ?? 0)
  const error = (f.errorRate ?? 0) > 0 && random() < (f.errorRate ?? 0)
  return {
    delayMs: (f.latencyMs ?? 0) + (f.jitterMs ?? 0) * random(),
    drop,
    errorStatus: error ? (f.errorStatus ?? 503) : null,
    responseSignature: f.responseSignature ?? 'valid',
    responseMultipart: f.responseMultipart ?? null,
    responseContentType: f.responseContentType,
    responseRewrite: f.responseRewrite ?? null,
    dribbleMs: f.dribbleMs ?? 0
  }
}

/**
 * Server-side check of AWS Signature Version 4 on a request, for the local AWS endpoint. It exists to catch a
 * client that is not signing (no credentials resolved, a custom handler that drops headers, a body changed after
 * signing, a request scoped to the wrong service): the same mistakes AWS rejects. It is not an authorisation layer.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

export interface SigV4Request {
  readonly method: string
  /** Path and query as received (`/`, `/?a=b`). */
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer
}

export interface SigV4Options {
  /** Access key id → secret access key. Without it only the shape of the signature is checked. */
  readonly secrets?: Readonly<Record<string, string>>
  /** Signing name the credential scope must name (`firehose`, `ssm`, `secretsmanager`). */
  readonly service: string
  readonly now: Date
  /** AWS refuses signatures more than 15 minutes away from its clock. */
  readonly maxSkewMs?: number
  /** S3 signs the path as sent; every other service encodes it once more. */
  readonly s3?: boolean
}

export type SigV4Result =
  | { readonly ok: true, readonly accessKeyId: string, readonly region: string }
  | { readonly ok: false, readonly errorType: string, readonly message: string }

const AUTH_RE = /^AWS4-HMAC-SHA256 Credential=([^/\s,]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/
const AMZ_DATE_RE = /^(\d{8})T(\d{2})(\d{2})(\d{2})Z$/

const sha256Hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex')
const hmac = (key: string | Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest()

/** RFC 3986 encoding as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
function uriEncode (s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
}

function headerValue (headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name]
  if (v === undefined) return undefined
  return (Array.isArray(v) ? v.join(',') : v).trim().replace(/\s+/g, ' ')
}

function canonicalQuery (query: string): string {
  if (query === '') return ''
  return query.split('&').filter((p) => p !== '').map((p) => {
    const i = p.indexOf('=')
    const k = decodeURIComponent(i < 0 ? p : p.slice(0, i))
    const v = i < 0 ? '' : decodeURIComponent(p.slice(i + 1))
    return [uriEncode(k), uriEncode(v)] as const
  }).sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : 1)).map(([k, v]) => `${k}=${v}`).join('&')
}

/**
 * Checks the `Authorization` header of `req`. Error types and messages follow what AWS JSON services answer
 * (MissingAuthenticationTokenException, IncompleteSignatureException, InvalidSignatureException,
 * UnrecognizedClientException), so a client's error handling sees what it would see in AWS.
 */
export function checkSigV4 (req: SigV4Request, opts: SigV4Options): SigV4Result {
  const fail = (errorType: string, message: string): SigV4Result => ({ ok: false, errorType, message })
  const auth = headerValue(req.headers, 'authorization')
  if (auth === undefined || auth === '') return fail('MissingAuthenticationTokenException', 'Missing Authentication Token')
  const m = AUTH_RE.exec(auth)
  if (m === null) return fail('IncompleteSignatureException', `Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' for AWS4-HMAC-SHA256: ${auth.slice(0, 40)}…`)
  const [, accessKeyId = '', scopeDate = '', region = '', service = '', signedHeaderList = '', signature = ''] = m
  const signed = signedHeaderList.split(';')
  if (!signed.includes('host')) return fail('IncompleteSignatureException', "'Host' must be a signed header")
  const amzDate = headerValue(req.headers, 'x-amz-date')
  const dm = amzDate === undefined ? null : AMZ_DATE_RE.exec(amzDate)
  if (amzDate === undefined || dm === null) return fail('IncompleteSignatureException', 'Authorization header requires existence of either a \'X-Amz-Date\' or a \'Date\' header')
  if (dm[1] !== scopeDate) return fail('InvalidSignatureException', `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${scopeDate}' != '${dm[1] ?? ''}'`)
  if (service !== opts.service) return fail('InvalidSignatureException', `Credential should be scoped to correct service: '${opts.service}'.`)
  const signedAt = Date.UTC(Number(amzDate.slice(0, 4)), Number(amzDate.slice(4, 6)) - 1, Number(amzDate.slice(6, 8)), Number(dm[2]), Number(dm[3]), Number(dm[4]))
  const skew = opts.maxSkewMs ?? 15 * 60_000
  if (Math.abs(opts.now.getTime() - signedAt) > skew) return fail('InvalidSignatureException', `Signature expired: ${amzDate} is now outside the allowed skew from ${opts.now.toISOString()}`)
  const declaredHash = headerValue(req.headers, 'x-amz-content-sha256')
  const bodyHash = sha256Hex(req.body)
  if (declaredHash !== undefined && declaredHash !== 'UNSIGNED-PAYLOAD' && declaredHash !== bodyHash) {
    return fail('InvalidSignatureException', 'The provided x-amz-content-sha256 header does not match what was computed.')
  }
  if (opts.secrets === undefined) return { ok: true, accessKeyId, region }

  const secret = opts.secrets[accessKeyId]
  if (secret === undefined) return fail('UnrecognizedClientException', 'The security token included in the request is invalid.')
  const q = req.url.indexOf('?')
  const path = q < 0 ? req.url : req.url.slice(0, q)
  // Non-S3 services sign the path URI-encoded once more (each segment of the already-encoded path); S3 as sent.
  const canonicalPath = opts.s3 === true ? path : path.split('/').map((seg) => uriEncode(seg)).join('/') || '/'
  const headerLines: string[] = []
  for (const name of signed) {
    const v = headerValue(req.headers, name)
    if (v === undefined) return fail('IncompleteSignatureException', `signed header ${name} is missing from the request`)
    headerLines.push(`${name}:${v}\n`)
  }
  const canonicalRequest = [req.method.toUpperCase(), canonicalPath, canonicalQuery(q < 0 ? '' : req.url.slice(q + 1)),
    headerLines.join(''), signedHeaderList, declaredHash ?? bodyHash].join('\n')
  const scope = `${scopeDate}/${region}/${service}/aws4_request`
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n')
  const key = hmac(hmac(hmac(hmac('AWS4' + secret, scopeDate), region), service), 'aws4_request')
  const expected = createHmac('sha256', key).update(stringToSign).digest()
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
    return fail('InvalidSignatureException', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.')
  }
  return { ok: true, accessKeyId, region }
}

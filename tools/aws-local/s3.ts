/**
 * S3 for the local AWS endpoint (endpoint.ts): GetObject, path-style (`/bucket/key`), on versioned
 * buckets, which is what the gateway reads its truststore and CRLs with (src/gateway/sources.ts). Objects are put
 * with `putObject` (plain code, as an operator's `aws s3 cp` would): each put is a new version with a new ETag.
 *
 * S3 speaks REST + XML, not AWS JSON: the request is named by method and path, errors are
 * `<Error><Code>…</Code><Message>…</Message></Error>` with the HTTP status S3 uses (404 NoSuchBucket and NoSuchKey),
 * and a GET whose If-None-Match names the current ETag is answered 304 with no body (RFC 9110 §13.1.2, as S3 does).
 * The ETag of an object put in one piece without KMS encryption is the hex MD5 of its bytes, quoted, as in S3.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AwsError } from './protocol.ts'

interface StoredObject {
  readonly bytes: Buffer
  readonly etag: string
  readonly versionId: string
  readonly lastModified: Date
  readonly contentType: string
}

/** What the endpoint writes back. */
export interface S3Answer {
  readonly status: number
  readonly headers: Record<string, string | number>
  readonly body: Buffer
}

/** `S3.GetObject` and so on: the name the call log and the fault rules use for S3 calls (`target: 'S3'` matches all). */
const S3_TARGET_PREFIX = 'S3'

export class S3Handler {
  readonly signingName = 's3'
  readonly #now: () => Date
  /** bucket → key → versions, newest last. */
  readonly #buckets = new Map<string, Map<string, StoredObject[]>>()

  constructor (opts: { readonly now: () => Date }) {
    this.#now = opts.now
  }

  createBucket (name: string): void {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`invalid bucket name ${JSON.stringify(name)}`])
    if (!this.#buckets.has(name)) this.#buckets.set(name, new Map())
  }

  /** A new version of `bucket/key` (the bucket is made when missing); returns its ETag and VersionId. */
  putObject (bucket: string, key: string, body: string | Uint8Array, contentType = 'application/octet-stream'): { etag: string, versionId: string } {
    this.createBucket(bucket)
    const objects = this.#buckets.get(bucket) as Map<string, StoredObject[]>
    const bytes = Buffer.from(body)
    const stored: StoredObject = {
      bytes,
      etag: `"${createHash('md5').update(bytes).digest('hex')}"`,
      // S3's version ids are opaque URL-safe strings of 32 characters.
      versionId: randomBytes(24).toString('base64url'),
      lastModified: this.#now(),
      contentType
    }
    objects.set(key, [...(objects.get(key) ?? []), stored])
    return { etag: stored.etag, versionId: stored.versionId }
  }

  /** A delete marker in S3's terms: the key reads as missing afterwards. */
  deleteObject (bucket: string, key: string): void {
    this.#buckets.get(bucket)?.delete(key)
  }

  /** The call's name for the log and fault rules, before it is answered. */
  target (method: string): string {
    return `${S3_TARGET_PREFIX}.${method === 'GET' ? 'GetObject' : 'Unsupported'}`
  }

  /** Answers one request; throws AwsError for S3's errors (the endpoint writes them as S3 XML). */
  handle (method: string, url: string, headers: IncomingHttpHeaders): S3Answer {
    if (method !== 'GET') throw new AwsError('NotImplemented', `the local endpoint answers S3 GetObject only, not ${method}`, 501)
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    if (q >= 0 && url.slice(q + 1) !== '' && !/^x-id=GetObject$/.test(url.slice(q + 1))) {
      throw new AwsError('NotImplemented', `the local endpoint does not implement S3 query parameters (${url.slice(q + 1)})`, 501)
    }
    const slash = path.indexOf('/', 1)
    const bucket = decodeURIComponent(slash < 0 ? path.slice(1) : path.slice(1, slash))
    const key = slash < 0 ? '' : decodeURIComponent(path.slice(slash + 1))
    const objects = this.#buckets.get(bucket)
    if (objects === undefined) throw new AwsError('NoSuchBucket', 'The specified bucket does not exist', 404)
    if (key === '') throw new AwsError('NotImplemented', 'the local endpoint does not list buckets', 501)
    const current = objects.get(key)?.at(-1)
    if (current === undefined) throw new AwsError('NoSuchKey', 'The specified key does not exist.', 404)
    const common = { etag: current.etag, 'x-amz-version-id': current.versionId, 'last-modified': current.lastModified.toUTCString() }
    const ifNoneMatch = headers['if-none-match']
    if (ifNoneMatch !== undefined && ifNoneMatch.split(',').map((s) => s.trim()).some((t) => t === current.etag || t === '*')) {
      return { status: 304, headers: common, body: Buffer.alloc(0) }
    }
    return {
      status: 200,
      headers: { ...common, 'content-type': current.contentType, 'content-length': current.bytes.length, 'accept-ranges': 'bytes' },
      body: current.bytes
    }
  }
}

/** S3's error document. */
export function s3ErrorXml (code: string, message: string, requestId: string): string {
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${esc(code)}</Code><Message>${esc(message)}</Message><RequestId>${requestId}</RequestId></Error>`
}

/**
 * Where the gateway reads its truststore bundle and its CRLs: a file, or an S3 object (`s3://bucket/key`), as
 * PIXGW_TRUSTSTORE and PIXGW_CRLS name them. In AWS both live in a versioned bucket that the bank's PKI team
 * updates; the gateway re-reads them at every reload (trust.ts builds and checks the new material, gateway.ts keeps
 * the old one when it fails).
 *
 * S3 reads are conditional (If-None-Match with the ETag of the copy in memory): an unchanged object costs a 304
 * and no transfer, so a short reload interval stays cheap even for a CA's multi-megabyte CRL. The copy in memory is
 * only ever the last object S3 served for that location; a failed read never falls back to it silently (the reload
 * is refused and the material in use stays, as for a bad file).
 */
import { readFile } from 'node:fs/promises'
import { GetObjectCommand } from '@aws-sdk/client-s3'
import type { S3Client } from '@aws-sdk/client-s3'
import { Errors, PixProxyError } from '../../core/errors.ts'

export type SourceLocation =
  | { readonly kind: 'file', readonly path: string }
  | { readonly kind: 's3', readonly bucket: string, readonly key: string }

/** S3's bucket naming rules (3–63 characters of lower-case letters, digits, dots and hyphens), then a key. */
const S3_URI = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.+)$/

/** Largest object accepted: far above a truststore or an ICP-Brasil CA's CRL, far below what would hurt the task. */
const MAX_SOURCE_BYTES = 64 * 1024 * 1024

/**
 * A file path, or `s3://bucket/key`.
 * @throws Error with the reason when an `s3://` location is malformed.
 */
export function parseSourceLocation (text: string): SourceLocation {
  if (!text.startsWith('s3://')) return { kind: 'file', path: text }
  const m = S3_URI.exec(text)
  if (m === null) throw new Error(`${text} is not s3://bucket/key (a bucket name of 3-63 lower-case letters, digits, dots and hyphens, then the object key)`)
  return { kind: 's3', bucket: m[1] as string, key: m[2] as string }
}

/** What a reader reports per read, for the gateway's metrics and logs. */
export type SourceReadResult = 'file' | 'fetched' | 'not-modified' | 'failed'

export interface SourceReader {
  /**
   * The bytes at `location` (a path or an s3:// URI). `what` names it in errors ("truststore", "CRL").
   * @throws PixProxyError FILE_READ for a file, AWS_S3_READ for an object, GATEWAY_SOURCE_INVALID for a malformed URI.
   */
  read: (what: string, location: string) => Promise<Buffer>
  /** Releases the S3 client's sockets, when the reader made the client itself. */
  close: () => void
}

interface Cached {
  readonly etag: string
  readonly versionId: string | undefined
  readonly bytes: Buffer
}

function describe (err: unknown): string {
  const e = err as { code?: unknown, name?: unknown, message?: unknown, $metadata?: { httpStatusCode?: number } }
  const status = e.$metadata?.httpStatusCode
  const name = typeof e.code === 'string' ? e.code : typeof e.name === 'string' && e.name !== 'Error' ? e.name : ''
  const base = `${name === '' ? '' : name + ': '}${String(e.message ?? err)}${status === undefined ? '' : ` (HTTP ${status})`}`
  // Without s3:ListBucket, S3 answers a missing key with 403, not 404: say so rather than let it read as an IAM fault.
  return name === 'AccessDenied' ? `${base}; S3 also answers this for a key that does not exist when the role may not list the bucket` : base
}

/**
 * A reader for files and S3 objects. `s3` is called at the first S3 read only (a gateway reading files never makes
 * an S3 client); `onRead` sees every read's result.
 */
export function createSourceReader (opts: { readonly s3: () => S3Client, readonly ownsClient?: boolean, readonly onRead?: (result: SourceReadResult, location: string) => void }): SourceReader {
  let client: S3Client | null = null
  const cache = new Map<string, Cached>()
  const report = opts.onRead ?? (() => {})

  const readS3 = async (what: string, text: string, loc: SourceLocation & { kind: 's3' }): Promise<Buffer> => {
    client ??= opts.s3()
    const cached = cache.get(text)
    let out
    try {
      out = await client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key, ...(cached === undefined ? {} : { IfNoneMatch: cached.etag }) }))
    } catch (err) {
      if (cached !== undefined && (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 304) {
        report('not-modified', text)
        return cached.bytes
      }
      report('failed', text)
      throw new PixProxyError(Errors.AWS_S3_READ, [what, text, describe(err)], { cause: err })
    }
    const length = out.ContentLength
    if (length === undefined || length > MAX_SOURCE_BYTES) {
      // Not read: destroy the body so the socket is not left holding it.
      (out.Body as { destroy?: () => void } | undefined)?.destroy?.()
      report('failed', text)
      throw new PixProxyError(Errors.AWS_S3_READ, [what, text, length === undefined ? 'S3 sent no Content-Length' : `the object is ${length} bytes; the limit is ${MAX_SOURCE_BYTES}`])
    }
    let bytes: Buffer
    try {
      bytes = Buffer.from(await (out.Body as { transformToByteArray: () => Promise<Uint8Array> }).transformToByteArray())
    } catch (err) {
      report('failed', text)
      throw new PixProxyError(Errors.AWS_S3_READ, [what, text, describe(err)], { cause: err })
    }
    if (bytes.length !== length) {
      report('failed', text)
      throw new PixProxyError(Errors.AWS_S3_READ, [what, text, `the body was ${bytes.length} bytes where Content-Length said ${length}`])
    }
    if (out.ETag !== undefined) cache.set(text, { etag: out.ETag, versionId: out.VersionId, bytes })
    else cache.delete(text)
    report('fetched', text)
    return bytes
  }

  return {
    read: async (what, text) => {
      let loc: SourceLocation
      try {
        loc = parseSourceLocation(text)
      } catch (err) {
        throw new PixProxyError(Errors.GATEWAY_SOURCE_INVALID, [what, (err as Error).message])
      }
      if (loc.kind === 's3') return await readS3(what, text, loc)
      try {
        const bytes = await readFile(loc.path)
        report('file', text)
        return bytes
      } catch (err) {
        report('failed', text)
        const e = err as { code?: unknown, message?: unknown }
        throw new PixProxyError(Errors.FILE_READ, [`${what} ${loc.path}`, `${typeof e.code === 'string' ? e.code + ': ' : ''}${String(e.message ?? err)}`], { cause: err })
      }
    },
    close: () => {
      if (opts.ownsClient === true) client?.destroy()
    }
  }
}

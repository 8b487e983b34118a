/**
 * The CRL files the gateway hands to OpenSSL, read with core/pki/crl.ts: one entry per CRL (a PEM file may hold
 * several, and node:tls reads only the first CRL of each buffer, so each goes to OpenSSL on its own), with what the
 * gateway itself decides on: whether it is past its nextUpdate, and the serials it lists (RFC 5280 §5.1).
 */
import { parseCrl, splitCrlPem } from '../../core/pki/crl.ts'
import type { Dn } from '../../core/pki/dn.ts'

export interface CrlInfo {
  /** The file it was read from (with #n when the file holds several), for logs and metrics. */
  readonly source: string
  /** One `X509 CRL` block, as OpenSSL gets it. */
  readonly pem: string
  readonly issuer: string
  readonly issuerDn: Dn
  readonly thisUpdate: Date
  readonly nextUpdate: Date | null
  readonly revokedSerials: ReadonlySet<bigint>
}

/** Every CRL of a file, PEM (one or more `X509 CRL` blocks) or DER. Throws CRL_PARSE, or Error when there is none. */
export function readCrlFile (source: string, data: Buffer): CrlInfo[] {
  const text = data.toString('latin1')
  const blocks: Array<string | Buffer> = text.includes('-----BEGIN X509 CRL-----') ? splitCrlPem(text) : [data]
  if (blocks.length === 0) throw new Error('no X509 CRL in the file')
  return blocks.map((block, i) => {
    const crl = parseCrl(block)
    return Object.freeze({
      source: blocks.length > 1 ? `${source}#${i + 1}` : source,
      pem: crl.pem,
      issuer: crl.issuerString,
      issuerDn: crl.issuer,
      thisUpdate: crl.thisUpdate,
      nextUpdate: crl.nextUpdate,
      revokedSerials: new Set(crl.revoked.map((r) => r.serial))
    })
  })
}

/** True when `now` is past the CRL's nextUpdate (a CRL without one never goes stale by time). */
export function crlIsStale (crl: Pick<CrlInfo, 'nextUpdate'>, now: Date): boolean {
  return crl.nextUpdate !== null && now.getTime() > crl.nextUpdate.getTime()
}

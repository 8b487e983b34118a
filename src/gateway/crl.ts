/**
 * What the gateway needs to know about a CRL before handing it to OpenSSL: its issuer, whether it is past its
 * nextUpdate, and the serials it lists (RFC 5280 §5.1). OpenSSL does the signature check and the revocation check
 * itself; this only decides, per the stale policy, what OpenSSL gets.
 */
import { X509Certificate } from 'node:crypto'
import { children, contextTag, decode, expectTag, readInteger, readTime, Tag } from '../../core/pki/der.ts'
import { dnFromDer, formatDn } from '../../core/pki/dn.ts'

export interface CrlInfo {
  /** Where it was read from, for logs and metrics. */
  readonly source: string
  readonly pem: string
  readonly issuer: string
  /** DER of the issuer Name, byte for byte (compared with a certificate's issuer). */
  readonly issuerDer: Buffer
  readonly thisUpdate: Date
  readonly nextUpdate: Date | null
  readonly revokedSerials: ReadonlySet<bigint>
}

const TIME_TAGS: ReadonlySet<number> = new Set([Tag.UTC_TIME, Tag.GENERALIZED_TIME])

/** Parses one CRL, PEM (`X509 CRL`) or DER. Throws (DER_INVALID or Error) on anything else. */
export function parseCrl (source: string, data: Buffer): CrlInfo {
  const text = data.toString('latin1')
  const m = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/.exec(text)
  const der = m !== null ? Buffer.from((m[1] as string).replace(/\s+/g, ''), 'base64') : data
  if (m === null && data[0] !== 0x30) throw new Error('neither a PEM X509 CRL nor DER')
  const [tbs] = children(expectTag(decode(der), Tag.SEQUENCE, 'CertificateList'))
  const fields = children(expectTag(tbs, Tag.SEQUENCE, 'tbsCertList'))
  let i = 0
  if (fields[0]?.tag === Tag.INTEGER) i++ // version (v2)
  expectTag(fields[i++], Tag.SEQUENCE, 'signature')
  const issuerTlv = expectTag(fields[i++], Tag.SEQUENCE, 'issuer')
  const thisTlv = fields[i++]
  if (thisTlv === undefined || !TIME_TAGS.has(thisTlv.tag)) throw new Error('CRL without thisUpdate')
  const thisUpdate = readTime(thisTlv)
  let nextUpdate: Date | null = null
  const next = fields[i]
  if (next !== undefined && TIME_TAGS.has(next.tag)) {
    nextUpdate = readTime(next)
    i++
  }
  const revoked = new Set<bigint>()
  const list = fields[i]
  if (list !== undefined && list.tag === Tag.SEQUENCE) {
    for (const entry of children(list)) revoked.add(readInteger(expectTag(children(entry)[0], Tag.INTEGER, 'userCertificate')))
    i++
  }
  if (fields[i] !== undefined && fields[i]?.tag !== contextTag(0, true)) throw new Error('unexpected field after revokedCertificates')
  const pem = `-----BEGIN X509 CRL-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END X509 CRL-----\n`
  return Object.freeze({ source, pem, issuer: formatDn(dnFromDer(issuerTlv)), issuerDer: issuerTlv.raw, thisUpdate, nextUpdate, revokedSerials: revoked })
}

/** True when `now` is past the CRL's nextUpdate (a CRL without one never goes stale by time). */
export function crlIsStale (crl: CrlInfo, now: Date): boolean {
  return crl.nextUpdate !== null && now.getTime() > crl.nextUpdate.getTime()
}

/** The DER of a certificate's issuer Name (compared byte for byte with a CRL's issuer). */
export function issuerDerOf (cert: X509Certificate): Buffer {
  const [tbs] = children(expectTag(decode(cert.raw), Tag.SEQUENCE, 'Certificate'))
  const fields = children(expectTag(tbs, Tag.SEQUENCE, 'tbsCertificate'))
  const i = fields[0]?.tag === contextTag(0, true) ? 1 : 0
  return expectTag(fields[i + 2], Tag.SEQUENCE, 'issuer').raw
}

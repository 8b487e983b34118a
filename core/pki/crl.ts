/**
 * X.509 v2 certificate revocation lists (RFC 5280 §5): issuing one for the test PKIs, and reading one a CA published
 * (issuer, thisUpdate / nextUpdate, revoked serials) so that the gateway can tell a stale CRL from a fresh one and
 * refresh it on its nextUpdate. node:tls enforces the revocation itself (its `crl` option); this module does not
 * decide whether a certificate is revoked.
 */
import { sign, verify, type KeyObject } from 'node:crypto'
import { Errors, PixProxyError } from '../errors.ts'
import {
  children, contextTag, decode, encode, encodeExplicit, encodeInteger, encodeNull, encodeOctetString, encodeOid,
  encodeSequence, encodeTime, expectTag, integerContents, readBitString, readInteger, readOid, readTime, Tag, type Tlv
} from './der.ts'
import { dnEquals, dnFromDer, formatDn, type Dn } from './dn.ts'
import { certificateMatchesKey, certificateParts, type Certificate } from './x509.ts'

const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11'
const OID_AUTHORITY_KEY_ID = '2.5.29.35'
const OID_SUBJECT_KEY_ID = '2.5.29.14'
const OID_CRL_NUMBER = '2.5.29.20'
const OID_REASON_CODE = '2.5.29.21'
const ENUMERATED = 0x0a

/** CRLReason (RFC 5280 §5.3.1); 7 is unused. */
export const CrlReason = Object.freeze({
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10
})
export type CrlReasonName = keyof typeof CrlReason

export interface RevokedEntry {
  readonly serial: bigint
  readonly revocationDate: Date
  readonly reason?: CrlReasonName
}

export interface IssueCrlOptions {
  /** The CA that signs: its certificate (issuer name, key identifier) and RSA private key. */
  readonly issuer: { readonly certificate: Certificate, readonly key: KeyObject }
  readonly revoked?: readonly RevokedEntry[]
  /** Default: now. */
  readonly thisUpdate?: Date
  /** Default: thisUpdate + 7 days. In the past makes a stale CRL. */
  readonly nextUpdate?: Date
  /** The cRLNumber extension (monotonic per issuer). Default 1. */
  readonly crlNumber?: bigint
}

/** A CRL as published: the DER and its PEM (`X509 CRL` block). */
export interface Crl {
  readonly der: Buffer
  readonly pem: string
  readonly issuer: Dn
  /** formatDn(issuer) */
  readonly issuerString: string
  readonly thisUpdate: Date
  /** Null when the CRL has none (RFC 5280 requires it; some CAs omit it). */
  readonly nextUpdate: Date | null
  readonly crlNumber: bigint | null
  readonly revoked: ReadonlyArray<{ readonly serial: bigint, readonly revocationDate: Date }>
}

const DAY_MS = 86_400_000

function toPem (der: Buffer): string {
  const b64 = der.toString('base64')
  let body = ''
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n'
  return `-----BEGIN X509 CRL-----\n${body}-----END X509 CRL-----\n`
}

function extension (oid: string, value: Buffer): Buffer {
  return encodeSequence(encodeOid(oid), encodeOctetString(value))
}

/**
 * Issues a v2 CRL signed with sha256WithRSAEncryption, with authorityKeyIdentifier and cRLNumber, and a reasonCode
 * entry extension where given. Errors: CERT_ISSUE (inconsistent options), KEY_CERT_MISMATCH.
 */
export function issueCrl (opts: IssueCrlOptions): Crl {
  const { certificate, key } = opts.issuer
  if (!certificateMatchesKey(certificate, key)) throw new PixProxyError(Errors.KEY_CERT_MISMATCH, [certificate.subjectString])
  if (key.type !== 'private' || key.asymmetricKeyType !== 'rsa') {
    throw new PixProxyError(Errors.CERT_ISSUE, ['the CRL issuer key must be an RSA private key'])
  }
  const thisUpdate = opts.thisUpdate ?? new Date()
  const nextUpdate = opts.nextUpdate ?? new Date(thisUpdate.getTime() + 7 * DAY_MS)
  if (nextUpdate.getTime() <= thisUpdate.getTime()) throw new PixProxyError(Errors.CERT_ISSUE, ['CRL nextUpdate must be after thisUpdate'])
  const parts = certificateParts(certificate.der)
  const ski = parts.extensions.get(OID_SUBJECT_KEY_ID)
  if (ski === undefined) throw new PixProxyError(Errors.CERT_ISSUE, ['the CRL issuer certificate has no subjectKeyIdentifier'])
  const keyId = expectTag(decode(ski.value), Tag.OCTET_STRING, 'subjectKeyIdentifier').value

  const revoked = opts.revoked ?? []
  const entries = revoked.map((r) => {
    if (r.serial <= 0n || integerContents(r.serial).length > 20) throw new PixProxyError(Errors.CERT_ISSUE, [`serial ${r.serial} is not a certificate serial`])
    const ext = r.reason === undefined
      ? []
      : [encodeSequence(extension(OID_REASON_CODE, encode(ENUMERATED, integerContents(BigInt(CrlReason[r.reason])))))]
    return encodeSequence(encodeInteger(r.serial), encodeTime(r.revocationDate), ...ext)
  })
  const algorithm = encodeSequence(encodeOid(OID_SHA256_WITH_RSA), encodeNull())
  const tbs = encodeSequence(
    encodeInteger(1), // v2
    algorithm,
    parts.subject.raw, // the issuer's name byte for byte, as in the certificates it issued
    encodeTime(thisUpdate),
    encodeTime(nextUpdate),
    ...(entries.length > 0 ? [encodeSequence(...entries)] : []), // RFC 5280: absent, not empty, when none
    encodeExplicit(0, encodeSequence(
      extension(OID_AUTHORITY_KEY_ID, encodeSequence(encode(contextTag(0, false), keyId))),
      extension(OID_CRL_NUMBER, encodeInteger(opts.crlNumber ?? 1n))
    ))
  )
  const signature = sign('sha256', tbs, key)
  return parseCrl(encodeSequence(tbs, algorithm, encode(Tag.BIT_STRING, Buffer.from([0]), signature)))
}

function crlError (why: string, cause?: unknown): PixProxyError {
  return new PixProxyError(Errors.CRL_PARSE, [why], cause === undefined ? undefined : { cause })
}

const PEM_CRL_RE = /-----BEGIN X509 CRL-----([^-]*)-----END X509 CRL-----/

interface CrlParts { tbs: Tlv, sigAlg: Tlv, signature: Buffer, crl: Crl }

function crlParts (der: Buffer): CrlParts {
  const [tbs, sigAlg, sigValue, ...extra] = children(expectTag(decode(der), Tag.SEQUENCE, 'CertificateList'))
  if (extra.length > 0) throw crlError('CertificateList with extra elements')
  expectTag(sigAlg, Tag.SEQUENCE, 'signatureAlgorithm')
  const signature = readBitString(expectTag(sigValue, Tag.BIT_STRING, 'signatureValue')).bytes
  const fields = children(expectTag(tbs, Tag.SEQUENCE, 'tbsCertList'))
  let i = 0
  if (fields[0]?.tag === Tag.INTEGER) {
    if (readInteger(fields[0]) !== 1n) throw crlError('version is not v2')
    i++
  }
  expectTag(fields[i++], Tag.SEQUENCE, 'signature')
  const issuerTlv = expectTag(fields[i++], Tag.SEQUENCE, 'issuer')
  const thisUpdate = readTime(fields[i++] as Tlv)
  let nextUpdate: Date | null = null
  if (fields[i]?.tag === Tag.UTC_TIME || fields[i]?.tag === Tag.GENERALIZED_TIME) nextUpdate = readTime(fields[i++] as Tlv)
  const revoked: Array<{ serial: bigint, revocationDate: Date }> = []
  if (fields[i]?.tag === Tag.SEQUENCE) {
    for (const entry of children(fields[i++] as Tlv)) {
      const [serial, date] = children(expectTag(entry, Tag.SEQUENCE, 'revokedCertificate'))
      revoked.push({ serial: readInteger(expectTag(serial, Tag.INTEGER, 'userCertificate')), revocationDate: readTime(date as Tlv) })
    }
  }
  let crlNumber: bigint | null = null
  if (fields[i]?.tag === contextTag(0, true)) {
    const [list] = children(fields[i++] as Tlv)
    for (const ext of children(expectTag(list, Tag.SEQUENCE, 'crlExtensions'))) {
      const p = children(expectTag(ext, Tag.SEQUENCE, 'Extension'))
      if (readOid(expectTag(p[0], Tag.OID, 'extnID')) === OID_CRL_NUMBER) {
        crlNumber = readInteger(expectTag(decode(expectTag(p[p.length - 1], Tag.OCTET_STRING, 'extnValue').value), Tag.INTEGER, 'cRLNumber'))
      }
    }
  }
  if (i !== fields.length) throw crlError('unexpected fields in tbsCertList')
  const issuer = dnFromDer(issuerTlv)
  const copy = Buffer.from(der)
  return {
    tbs: tbs as Tlv,
    sigAlg: sigAlg as Tlv,
    signature,
    crl: Object.freeze({ der: copy, pem: toPem(copy), issuer, issuerString: formatDn(issuer), thisUpdate, nextUpdate, crlNumber, revoked })
  }
}

function crlDer (input: string | Buffer): Buffer {
  if (Buffer.isBuffer(input) && input[0] === Tag.SEQUENCE) return input
  const text = typeof input === 'string' ? input : input.toString('latin1')
  const m = PEM_CRL_RE.exec(text)
  if (m === null) throw crlError('no X509 CRL PEM block and not DER')
  return Buffer.from((m[1] as string).replace(/\s+/g, ''), 'base64')
}

/**
 * The `X509 CRL` blocks of a PEM text, each as its own PEM string. node:tls reads only the first CRL of each buffer
 * given as `crl` (and, given any, checks every CA of the chain: OpenSSL's CRL_CHECK_ALL), so a bundle file must be
 * split and passed as an array: `crl: splitCrlPem(text)`.
 */
export function splitCrlPem (text: string): string[] {
  return [...text.matchAll(new RegExp(PEM_CRL_RE.source, 'g'))].map((m) => m[0] + '\n')
}

/** Parses a CRL (PEM `X509 CRL` block, the first one, or DER). Does not check its signature. Errors.CRL_PARSE. */
export function parseCrl (input: string | Buffer): Crl {
  try {
    return crlParts(crlDer(input)).crl
  } catch (err) {
    if (err instanceof PixProxyError && err.code === Errors.CRL_PARSE.code) throw err
    throw crlError(err instanceof Error ? err.message : String(err), err)
  }
}

/** Whether `issuer`'s key signed the CRL (sha256WithRSAEncryption only) and the names match. Errors.CRL_PARSE. */
export function crlSignedBy (input: string | Buffer, issuer: Certificate): boolean {
  let p: CrlParts
  try {
    p = crlParts(crlDer(input))
  } catch (err) {
    throw crlError(err instanceof Error ? err.message : String(err), err)
  }
  if (readOid(children(p.sigAlg)[0] as Tlv) !== OID_SHA256_WITH_RSA) return false
  if (!dnEquals(p.crl.issuer, issuer.subject)) return false
  return verify('sha256', p.tbs.raw, issuer.publicKey, p.signature)
}

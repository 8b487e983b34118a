/**
 * X.509 certificates as this project needs them: issuer and subject as DNs (for X509IssuerSerial), serial as a
 * bigint, validity, public key. node:crypto's X509Certificate does the cryptography and OpenSSL's own parse; the
 * DER walk here gives what it does not (structured names, exact serial, the raw pieces ca.ts reuses).
 */
import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto'
import { Errors, PixProxyError } from '../errors.ts'
import { children, contextTag, decode, expectTag, readBoolean, readInteger, readOid, readTime, Tag, type Tlv } from './der.ts'
import { dnFromDer, formatDn, type Dn } from './dn.ts'

export interface Certificate {
  /** PEM of `der`, 64-column base64 with a trailing newline. */
  readonly pem: string
  readonly der: Buffer
  readonly x509: X509Certificate
  readonly subject: Dn
  readonly issuer: Dn
  /** formatDn(subject) */
  readonly subjectString: string
  /** formatDn(issuer): what goes into X509IssuerName. */
  readonly issuerString: string
  readonly serial: bigint
  /** The serial in decimal, as X509SerialNumber wants it. */
  readonly serialDecimal: string
  readonly notBefore: Date
  readonly notAfter: Date
  readonly publicKey: KeyObject
  /** SHA-256 of the DER, colon-separated upper-case hex (X509Certificate.fingerprint256). */
  readonly fingerprint256: string
}

/** The parts of a certificate's DER that ca.ts and parseCertificate need. @internal */
export interface CertificateParts {
  readonly serial: bigint
  readonly issuer: Tlv
  readonly subject: Tlv
  readonly notBefore: Date
  readonly notAfter: Date
  readonly spki: Tlv
  /** Extension values (the contents of their OCTET STRING) by OID. */
  readonly extensions: ReadonlyMap<string, { readonly critical: boolean, readonly value: Buffer }>
}

/** Walks Certificate / TBSCertificate (RFC 5280 §4.1). Throws DER_INVALID. @internal */
export function certificateParts (der: Buffer): CertificateParts {
  const [tbs, sigAlg, sigValue, ...extra] = children(expectTag(decode(der), Tag.SEQUENCE, 'Certificate'))
  expectTag(sigAlg, Tag.SEQUENCE, 'signatureAlgorithm')
  expectTag(sigValue, Tag.BIT_STRING, 'signatureValue')
  if (extra.length > 0) throw new PixProxyError(Errors.DER_INVALID, ['Certificate with extra elements'])
  const fields = children(expectTag(tbs, Tag.SEQUENCE, 'tbsCertificate'))
  let i = 0
  if (fields[0]?.tag === contextTag(0, true)) i++ // version; v1 certificates omit it
  const serial = readInteger(expectTag(fields[i++], Tag.INTEGER, 'serialNumber'))
  expectTag(fields[i++], Tag.SEQUENCE, 'signature')
  const issuer = expectTag(fields[i++], Tag.SEQUENCE, 'issuer')
  const validity = children(expectTag(fields[i++], Tag.SEQUENCE, 'validity'))
  if (validity.length !== 2) throw new PixProxyError(Errors.DER_INVALID, ['validity is not two times'])
  const subject = expectTag(fields[i++], Tag.SEQUENCE, 'subject')
  const spki = expectTag(fields[i++], Tag.SEQUENCE, 'subjectPublicKeyInfo')
  const extensions = new Map<string, { critical: boolean, value: Buffer }>()
  for (const f of fields.slice(i)) {
    if (f.tag !== contextTag(3, true)) continue // issuerUniqueID [1], subjectUniqueID [2]
    const [list] = children(f)
    for (const ext of children(expectTag(list, Tag.SEQUENCE, 'extensions'))) {
      const parts = children(expectTag(ext, Tag.SEQUENCE, 'Extension'))
      if (parts.length !== 2 && parts.length !== 3) throw new PixProxyError(Errors.DER_INVALID, ['Extension is not 2 or 3 elements'])
      const oid = readOid(expectTag(parts[0], Tag.OID, 'extnID'))
      const critical = parts.length === 3 ? readBoolean(parts[1] as Tlv) : false
      const value = expectTag(parts[parts.length - 1], Tag.OCTET_STRING, 'extnValue').value
      if (extensions.has(oid)) throw new PixProxyError(Errors.DER_INVALID, [`extension ${oid} appears twice`])
      extensions.set(oid, { critical, value })
    }
  }
  return {
    serial,
    issuer,
    subject,
    notBefore: readTime(validity[0] as Tlv),
    notAfter: readTime(validity[1] as Tlv),
    spki,
    extensions
  }
}

function toPem (der: Buffer): string {
  const b64 = der.toString('base64')
  let body = ''
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n'
  return `-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \1-----/g

/** DER of every CERTIFICATE block in a PEM text; other blocks (keys, CRLs) and text between blocks are skipped. */
function pemBlocks (pem: string): Buffer[] {
  const out: Buffer[] = []
  for (const m of pem.matchAll(PEM_RE)) {
    if (m[1] !== 'CERTIFICATE') continue
    const b64 = (m[2] as string).replace(/\s+/g, '')
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) {
      throw new PixProxyError(Errors.CERT_PARSE, ['invalid base64 in a PEM CERTIFICATE block'])
    }
    out.push(Buffer.from(b64, 'base64'))
  }
  return out
}

function fromDer (der: Buffer): Certificate {
  let parts: CertificateParts
  let x509: X509Certificate
  try {
    parts = certificateParts(der)
    x509 = new X509Certificate(der)
  } catch (err) {
    throw new PixProxyError(Errors.CERT_PARSE, [err instanceof Error ? err.message : String(err)], { cause: err })
  }
  const subject = dnFromDerOrThrow(parts.subject, 'subject')
  const issuer = dnFromDerOrThrow(parts.issuer, 'issuer')
  const copy = Buffer.from(der) // detach from the caller's buffer
  return Object.freeze({
    pem: toPem(copy),
    der: copy,
    x509,
    subject,
    issuer,
    subjectString: formatDn(subject),
    issuerString: formatDn(issuer),
    serial: parts.serial,
    serialDecimal: parts.serial.toString(10),
    notBefore: parts.notBefore,
    notAfter: parts.notAfter,
    publicKey: x509.publicKey,
    fingerprint256: x509.fingerprint256
  })
}

function dnFromDerOrThrow (name: Tlv, which: string): Dn {
  try {
    return dnFromDer(name)
  } catch (err) {
    throw new PixProxyError(Errors.CERT_PARSE, [`${which}: ${err instanceof Error ? err.message : String(err)}`], { cause: err })
  }
}

/**
 * Parses one certificate: PEM text holding exactly one CERTIFICATE block (other blocks are ignored), or DER.
 * A Buffer that does not start with a DER SEQUENCE is read as PEM text. Throws PixProxyError(Errors.CERT_PARSE).
 */
export function parseCertificate (input: string | Buffer): Certificate {
  if (Buffer.isBuffer(input) && input[0] === Tag.SEQUENCE) return fromDer(input)
  const blocks = pemBlocks(typeof input === 'string' ? input : input.toString('latin1'))
  if (blocks.length !== 1) throw new PixProxyError(Errors.CERT_PARSE, [`expected exactly one PEM CERTIFICATE block, found ${blocks.length}`])
  return fromDer(blocks[0] as Buffer)
}

/** Parses every CERTIFICATE block of a PEM bundle, in order; at least one is required. Errors.CERT_PARSE. */
export function parseCertificates (pem: string): Certificate[] {
  const blocks = pemBlocks(pem)
  if (blocks.length === 0) throw new PixProxyError(Errors.CERT_PARSE, ['no PEM CERTIFICATE block found'])
  return blocks.map(fromDer)
}

/**
 * Whether `publicKey` is the certificate's public key (SubjectPublicKeyInfo equality). A private KeyObject is
 * accepted and its public half compared.
 */
export function certificateMatchesKey (cert: Certificate, publicKey: KeyObject): boolean {
  const key = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey
  return cert.publicKey.export({ type: 'spki', format: 'der' }).equals(key.export({ type: 'spki', format: 'der' }))
}

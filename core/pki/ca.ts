/**
 * A small certificate authority for tests, the demo and the simulator. It signs a TBSCertificate for a public key
 * it is given, so it certifies keys that never leave an HSM; or, like a real CA, it takes a PKCS#10 request
 * (csr.ts, made by `pix-proxy csr` with the key in the HSM or KMS) and certifies its key once the request's
 * signature proves the requester holds it (issueFromCsr).
 *
 * Not for production PKI: no CRLs, no OCSP, no policy; it issues what it is asked.
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import { isIP } from 'node:net'
import { Errors, PixProxyError } from '../errors.ts'
import {
  children, contextTag, decode, encode, encodeBitString, encodeBoolean, encodeExplicit, encodeInteger, encodeNull,
  encodeOctetString, encodeOid, encodeSequence, encodeTime, expectTag, integerContents, readBitString,
  Tag
} from './der.ts'
import { dnToDer, parseDn, type Dn } from './dn.ts'
import { certificateMatchesKey, certificateParts, parseCertificate, type Certificate } from './x509.ts'
import { parseCsr, verifyCsr, type CertificationRequest } from './csr.ts'

export type KeyUsage = 'digitalSignature' | 'nonRepudiation' | 'keyEncipherment' | 'keyCertSign' | 'cRLSign'
export type ExtKeyUsage = 'serverAuth' | 'clientAuth'

export interface IssueOptions {
  /** A Dn, or a string parsed with parseDn (most specific RDN first). */
  subject: Dn | string
  /** The key to certify; a private KeyObject is accepted and its public half used. */
  publicKey: KeyObject
  /** The issuing CA; omitted => self-signed with `selfSignKey`. */
  issuer?: { certificate: Certificate, key: KeyObject }
  /** The private key of `publicKey`, for a self-signed certificate. */
  selfSignKey?: KeyObject
  /** Default: random positive 127-bit. Must be positive and at most 20 octets (RFC 5280 §4.1.2.2). */
  serial?: bigint
  /** Default: five minutes ago (clock skew between test processes and tools). */
  notBefore?: Date
  /** Default: notBefore + 365 days. */
  notAfter?: Date
  isCa?: boolean
  pathLength?: number
  /** Default: keyCertSign + cRLSign for a CA, digitalSignature + nonRepudiation + keyEncipherment otherwise. */
  keyUsage?: KeyUsage[]
  /** Default: none for a CA, serverAuth + clientAuth otherwise. An empty array omits the extension. */
  extKeyUsage?: ExtKeyUsage[]
  dnsNames?: string[]
  ipAddresses?: string[]
  /**
   * Extension values taken as they are from a certification request (issueFromCsr): keyUsage, extKeyUsage and
   * subjectAltName as requested, in place of the ones keyUsage, extKeyUsage, dnsNames, ipAddresses and otherNames make.
   */
  requestedExtensions?: ReadonlyMap<string, { readonly critical: boolean, readonly value: Buffer }>
  /**
   * SAN otherNames (RFC 5280 §4.2.1.6), e.g. ICP-Brasil's 2.16.76.1.3.3 (CNPJ). `value` is the complete DER of the
   * value inside `[0] EXPLICIT` (an OCTET STRING or PrintableString for ICP-Brasil), written as given.
   */
  otherNames?: ReadonlyArray<{ readonly oid: string, readonly value: Buffer }>
}

const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11'
const OID_SUBJECT_KEY_ID = '2.5.29.14'
const OID_KEY_USAGE = '2.5.29.15'
const OID_SUBJECT_ALT_NAME = '2.5.29.17'
const OID_BASIC_CONSTRAINTS = '2.5.29.19'
const OID_AUTHORITY_KEY_ID = '2.5.29.35'
const OID_EXT_KEY_USAGE = '2.5.29.37'
const EKU_OIDS: Readonly<Record<ExtKeyUsage, string>> = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' }
const KEY_USAGE_BITS: Readonly<Record<KeyUsage, number>> = {
  digitalSignature: 0, nonRepudiation: 1, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6
}
const DAY_MS = 86_400_000

function issueError (why: string): PixProxyError {
  return new PixProxyError(Errors.CERT_ISSUE, [why])
}

function extension (oid: string, critical: boolean, value: Buffer): Buffer {
  return critical
    ? encodeSequence(encodeOid(oid), encodeBoolean(true), encodeOctetString(value))
    : encodeSequence(encodeOid(oid), encodeOctetString(value))
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
function keyIdentifier (spki: Buffer): Buffer {
  const bits = children(expectTag(decode(spki), Tag.SEQUENCE, 'SubjectPublicKeyInfo'))[1]
  return createHash('sha1').update(readBitString(expectTag(bits, Tag.BIT_STRING, 'subjectPublicKey')).bytes).digest()
}

/** A DER named bit list: trailing zero bits dropped (X.690 §11.2.2). */
function keyUsageValue (usages: readonly KeyUsage[]): Buffer {
  let byte = 0
  for (const u of usages) {
    const bit = KEY_USAGE_BITS[u]
    if (bit === undefined) throw issueError(`unknown key usage ${String(u)}`)
    byte |= 0x80 >> bit
  }
  let unused = 0
  while (((byte >> unused) & 1) === 0) unused++
  return encodeBitString(Buffer.from([byte]), unused)
}

function ipAddressBytes (ip: string): Buffer {
  const version = isIP(ip)
  if (version === 4) return Buffer.from(ip.split('.').map(Number))
  if (version !== 6 || ip.includes('%')) throw issueError(`${JSON.stringify(ip)} is not an IP address`)
  let text = ip
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted !== null) { // ::ffff:1.2.3.4 -> two hex groups
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number]
    text = text.slice(0, dotted.index) + ((a << 8) | b).toString(16) + ':' + ((c << 8) | d).toString(16)
  }
  const [head, tail] = text.split('::') as [string, string | undefined]
  const groups = (s: string | undefined): string[] => s === undefined || s === '' ? [] : s.split(':')
  const h = groups(head)
  const t = groups(tail)
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  const out = Buffer.alloc(16)
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2))
  return out
}

function subjectAltName (dnsNames: readonly string[], ips: readonly string[], otherNames: NonNullable<IssueOptions['otherNames']>): Buffer {
  const names = [
    // otherName [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }
    ...otherNames.map((o) => encode(contextTag(0, true), encodeOid(o.oid), encodeExplicit(0, o.value))),
    ...dnsNames.map((n) => {
      if (!/^[\x21-\x7e]+$/.test(n)) throw issueError(`${JSON.stringify(n)} is not a DNS name (IA5String; use A-labels)`)
      return encode(contextTag(2, false), Buffer.from(n, 'latin1')) // dNSName [2] IMPLICIT IA5String
    }),
    ...ips.map((ip) => encode(contextTag(7, false), ipAddressBytes(ip)))
  ]
  return encodeSequence(...names)
}

function publicHalf (key: KeyObject): KeyObject {
  return key.type === 'private' ? createPublicKey(key) : key
}

function randomSerial (): bigint {
  const bytes = randomBytes(16)
  bytes[0] = (bytes[0] as number) & 0x7f
  const n = BigInt('0x' + bytes.toString('hex'))
  return n === 0n ? 1n : n
}

/**
 * Issues an X.509 v3 certificate signed with sha256WithRSAEncryption, with subjectKeyIdentifier,
 * authorityKeyIdentifier, basicConstraints, keyUsage, extKeyUsage and subjectAltName. Throws
 * PixProxyError(Errors.CERT_ISSUE) for inconsistent options, Errors.KEY_CERT_MISMATCH when the issuer key is not
 * the issuer certificate's.
 */
export function issueCertificate (opts: IssueOptions): Certificate {
  const subjectDn = typeof opts.subject === 'string' ? parseDn(opts.subject) : opts.subject
  const subjectName = dnToDer(subjectDn)
  const subjectKey = publicHalf(opts.publicKey)
  const spki = subjectKey.export({ type: 'spki', format: 'der' })
  const ski = keyIdentifier(spki)

  let issuerName: Buffer
  let authorityKeyId: Buffer
  let signingKey: KeyObject
  if (opts.issuer !== undefined) {
    const { certificate, key } = opts.issuer
    if (!certificateMatchesKey(certificate, key)) throw new PixProxyError(Errors.KEY_CERT_MISMATCH, [certificate.subjectString])
    const parts = certificateParts(certificate.der)
    issuerName = parts.subject.raw // byte for byte, so that chain building never depends on name comparison rules
    const issuerSki = parts.extensions.get(OID_SUBJECT_KEY_ID)
    authorityKeyId = issuerSki !== undefined
      ? expectTag(decode(issuerSki.value), Tag.OCTET_STRING, 'subjectKeyIdentifier').value
      : keyIdentifier(parts.spki.raw)
    signingKey = key
  } else {
    if (opts.selfSignKey === undefined) throw issueError('give either issuer or selfSignKey')
    if (!publicHalf(opts.selfSignKey).export({ type: 'spki', format: 'der' }).equals(spki)) {
      throw issueError('selfSignKey is not the private key of publicKey')
    }
    issuerName = subjectName
    authorityKeyId = ski
    signingKey = opts.selfSignKey
  }
  if (signingKey.type !== 'private' || signingKey.asymmetricKeyType !== 'rsa') {
    throw issueError('the issuing key must be an RSA private key (sha256WithRSAEncryption)')
  }

  const serial = opts.serial ?? randomSerial()
  if (serial <= 0n || integerContents(serial).length > 20) throw issueError(`serial ${serial} is not a positive integer of at most 20 octets`)
  const notBefore = opts.notBefore ?? new Date(Date.now() - 5 * 60_000)
  const notAfter = opts.notAfter ?? new Date(notBefore.getTime() + 365 * DAY_MS)
  if (notAfter.getTime() <= notBefore.getTime()) throw issueError('notAfter must be after notBefore')

  const isCa = opts.isCa === true
  const keyUsage = opts.keyUsage ?? (isCa ? ['keyCertSign', 'cRLSign'] : ['digitalSignature', 'nonRepudiation', 'keyEncipherment'])
  const extKeyUsage = opts.extKeyUsage ?? (isCa ? [] : ['serverAuth', 'clientAuth'])
  const dnsNames = opts.dnsNames ?? []
  const ips = opts.ipAddresses ?? []
  const otherNames = opts.otherNames ?? []
  if (opts.pathLength !== undefined && (!isCa || !Number.isInteger(opts.pathLength) || opts.pathLength < 0)) {
    throw issueError('pathLength needs isCa and a non-negative integer')
  }

  const extensions: Buffer[] = [
    extension(OID_BASIC_CONSTRAINTS, isCa, isCa
      ? encodeSequence(encodeBoolean(true), ...(opts.pathLength !== undefined ? [encodeInteger(opts.pathLength)] : []))
      : encodeSequence())
  ]
  const requested = opts.requestedExtensions
  if (requested !== undefined) {
    for (const oid of [OID_KEY_USAGE, OID_EXT_KEY_USAGE, OID_SUBJECT_ALT_NAME]) {
      const ext = requested.get(oid)
      if (ext !== undefined) extensions.push(extension(oid, ext.critical, ext.value))
    }
  } else if (keyUsage.length > 0) extensions.push(extension(OID_KEY_USAGE, true, keyUsageValue(keyUsage)))
  if (requested === undefined && extKeyUsage.length > 0) {
    extensions.push(extension(OID_EXT_KEY_USAGE, false, encodeSequence(...extKeyUsage.map((u) => {
      const oid = EKU_OIDS[u]
      if (oid === undefined) throw issueError(`unknown extended key usage ${String(u)}`)
      return encodeOid(oid)
    }))))
  }
  if (requested === undefined && dnsNames.length + ips.length + otherNames.length > 0) {
    // RFC 5280 §4.2.1.6: critical when the subject is empty
    extensions.push(extension(OID_SUBJECT_ALT_NAME, subjectDn.length === 0, subjectAltName(dnsNames, ips, otherNames)))
  }
  extensions.push(extension(OID_SUBJECT_KEY_ID, false, encodeOctetString(ski)))
  extensions.push(extension(OID_AUTHORITY_KEY_ID, false, encodeSequence(encode(contextTag(0, false), authorityKeyId))))

  const algorithm = encodeSequence(encodeOid(OID_SHA256_WITH_RSA), encodeNull())
  const tbs = encodeSequence(
    encodeExplicit(0, encodeInteger(2)), // v3
    encodeInteger(serial),
    algorithm,
    issuerName,
    encodeSequence(encodeTime(notBefore), encodeTime(notAfter)),
    subjectName,
    spki,
    encodeExplicit(3, encodeSequence(...extensions))
  )
  const signature = sign('sha256', tbs, signingKey) // RSA keys sign PKCS#1 v1.5 by default
  return parseCertificate(encodeSequence(tbs, algorithm, encodeBitString(signature)))
}

/** The extensions a request may ask for and issueFromCsr grants: an end entity's, never basicConstraints. */
const GRANTED_REQUEST_EXTENSIONS: ReadonlySet<string> = new Set([OID_KEY_USAGE, OID_EXT_KEY_USAGE, OID_SUBJECT_ALT_NAME])

/**
 * Issues an end-entity certificate from a PKCS#10 request (PEM, DER or parsed): the request's signature must verify
 * with the key it asks to certify (proof of possession), and it may ask only for keyUsage, extKeyUsage and
 * subjectAltName, which are copied as requested; the subject is copied byte for byte.
 * @throws PixProxyError CSR_PARSE, CSR_SIGNATURE (a tampered or forged request), CERT_ISSUE (an extension the CA does
 *   not grant, e.g. basicConstraints asking to be a CA; a keyCertSign key usage).
 */
export function issueFromCsr (
  request: CertificationRequest | string | Buffer,
  opts: { issuer: { certificate: Certificate, key: KeyObject }, serial?: bigint, notBefore?: Date, notAfter?: Date }
): Certificate {
  const csr = typeof request === 'string' || Buffer.isBuffer(request) ? parseCsr(request) : request
  verifyCsr(csr)
  for (const oid of csr.extensions.keys()) {
    if (!GRANTED_REQUEST_EXTENSIONS.has(oid)) throw issueError(`the request asks for extension ${oid}, which this CA does not grant`)
  }
  const ku = csr.extensions.get(OID_KEY_USAGE)
  if (ku !== undefined) {
    const bits = readBitString(expectTag(decode(ku.value), Tag.BIT_STRING, 'keyUsage')).bytes
    if (((bits[0] ?? 0) & 0x06) !== 0) throw issueError('the request asks for keyCertSign or cRLSign, the key usages of a CA')
  }
  return issueCertificate({
    subject: csr.subject,
    publicKey: csr.publicKey,
    issuer: opts.issuer,
    requestedExtensions: csr.extensions,
    ...(opts.serial === undefined ? {} : { serial: opts.serial }),
    ...(opts.notBefore === undefined ? {} : { notBefore: opts.notBefore }),
    ...(opts.notAfter === undefined ? {} : { notAfter: opts.notAfter })
  })
}

export interface TestPki {
  readonly ca: { readonly certificate: Certificate, readonly key: KeyObject }
  /**
   * Issues a certificate from the test CA. Without `opts.publicKey` it generates an RSA-2048 key pair and returns
   * the private key as `key`; with one (e.g. the public key of an HSM key) it returns only the certificate.
   */
  issue (subject: string, opts?: Partial<IssueOptions> & { publicKey?: KeyObject }): { certificate: Certificate, key?: KeyObject }
}

/**
 * A test PKI: a self-signed RSA-2048 CA (default subject `CN=pix-proxy Test CA, O=pix-proxy, C=BR`, valid from
 * five minutes ago for ten years unless given) and an `issue` function. Each call makes a new CA key.
 */
export function createTestPki (opts: { caSubject?: string, notBefore?: Date, notAfter?: Date } = {}): TestPki {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const notBefore = opts.notBefore ?? new Date(Date.now() - 5 * 60_000)
  const certificate = issueCertificate({
    subject: opts.caSubject ?? 'CN=pix-proxy Test CA, O=pix-proxy, C=BR',
    publicKey,
    selfSignKey: privateKey,
    isCa: true,
    notBefore,
    notAfter: opts.notAfter ?? new Date(notBefore.getTime() + 3650 * DAY_MS)
  })
  const ca = Object.freeze({ certificate, key: privateKey })
  return Object.freeze({
    ca,
    issue (subject: string, o: Partial<IssueOptions> & { publicKey?: KeyObject } = {}) {
      if (o.publicKey !== undefined) {
        return { certificate: issueCertificate({ ...o, subject, publicKey: o.publicKey, issuer: o.issuer ?? ca }) }
      }
      const pair = generateKeyPairSync('rsa', { modulusLength: 2048 })
      return {
        certificate: issueCertificate({ ...o, subject, publicKey: pair.publicKey, issuer: o.issuer ?? ca }),
        key: pair.privateKey
      }
    }
  })
}

/**
 * PKCS#10 certification requests (RFC 2986) signed by a key wherever it lives: the request is built here and its
 * signature comes from a {@link Signer} (HSM through PKCS#11, AWS KMS, a PEM file), so the private key never leaves
 * its store. What a request asks for follows what an ICP-Brasil equipment or application certificate for the RSFN
 * (SPI, DICT) carries: a subject with C=BR and a CN, keyUsage, extKeyUsage, and a subjectAltName with the four
 * ICP-Brasil otherName fields of DOC-ICP-04 §7.1.2.3 c.1 (company name, CNPJ, responsible person's name and data)
 * and DNS names. docs/certificates.md says where each rule comes from.
 *
 * The parser is strict (DER, one signature algorithm: sha256WithRSAEncryption) because its other user is the test
 * CA (ca.ts issueFromCsr), which must not certify a key whose holder did not sign the request.
 */
import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { Errors, PixProxyError } from '../errors.ts'
import type { Signer } from '../signer.ts'
import {
  children, contextTag, decode, encode, encodeBitString, encodeBoolean, encodeExplicit, encodeInteger, encodeNull, encodeOctetString,
  encodeOid, encodeSequence, encodeString, expectTag, isPrintableString, readBitString, readBoolean, readInteger,
  readOid, Tag, type Tlv
} from './der.ts'
import { dnFromDer, dnToDer, formatDn, Oid, parseDn, type Dn } from './dn.ts'

/** The key usages a request from this module may ask for (an end-entity certificate: no keyCertSign). */
export type RequestKeyUsage = 'digitalSignature' | 'nonRepudiation' | 'keyEncipherment'
export type RequestExtKeyUsage = 'serverAuth' | 'clientAuth'

/** OIDs of the ICP-Brasil otherName fields an equipment or application certificate carries (DOC-ICP-04 §7.1.2.3 c.1). */
export const IcpBrasilOid = Object.freeze({
  /** Nome do responsável pelo certificado. */
  RESPONSIBLE_NAME: '2.16.76.1.3.2',
  /** CNPJ, 14 positions. */
  CNPJ: '2.16.76.1.3.3',
  /** Responsible person's birth date (ddmmaaaa), CPF, NIS, RG, RG issuer and state, in fixed positions. */
  RESPONSIBLE_DATA: '2.16.76.1.3.4',
  /** Nome empresarial constante do CNPJ. */
  COMPANY_NAME: '2.16.76.1.3.8'
})

/** The four otherName fields, all required together (DOC-ICP-04 §7.1.2.3 c.1 makes them mandatory, in this order). */
export interface IcpBrasilIdentity {
  /** Nome empresarial as registered with the CNPJ, without abbreviations. */
  readonly companyName: string
  /** 14 positions: numeric or alphanumeric CNPJ (12 characters 0-9/A-Z and 2 check digits), without punctuation. */
  readonly cnpj: string
  /** Name of the person responsible for the certificate. */
  readonly responsibleName: string
  /**
   * The 2.16.76.1.3.4 value as written: birth date ddmmaaaa (8), CPF (11), NIS (11), RG (15), RG issuer and state
   * (up to 10); a number not available is all zeros, and without an RG the issuer is left out.
   */
  readonly responsibleData: string
}

export interface CsrOptions {
  /** In ASN.1 order (C first), e.g. from parseOpenSslSubject. Must hold C=BR and a CN. */
  readonly subject: Dn
  /** Signs the request; its public key is the one requested. RSA (sha256WithRSAEncryption). */
  readonly signer: Signer
  /** Default digitalSignature + nonRepudiation (an XMLDSig signing key). Requested as critical. */
  readonly keyUsage?: readonly RequestKeyUsage[]
  /** Default none. */
  readonly extKeyUsage?: readonly RequestExtKeyUsage[]
  /** dNSName entries of the subjectAltName (ASCII A-labels). */
  readonly dnsNames?: readonly string[]
  /** The ICP-Brasil otherName entries of the subjectAltName. */
  readonly icpBrasil?: IcpBrasilIdentity
}

/** A parsed certification request. */
export interface CertificationRequest {
  readonly der: Buffer
  /** PEM of `der` ("CERTIFICATE REQUEST"), 64-column base64 with a trailing newline. */
  readonly pem: string
  readonly subject: Dn
  /** formatDn(subject) */
  readonly subjectString: string
  readonly publicKey: KeyObject
  /** Extensions of the extensionRequest attribute (the contents of their OCTET STRING) by OID. */
  readonly extensions: ReadonlyMap<string, { readonly critical: boolean, readonly value: Buffer }>
  /** The signed CertificationRequestInfo, as encoded. */
  readonly info: Buffer
  readonly signatureAlgorithm: string
  readonly signature: Buffer
}

const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11'
const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14'
const OID_KEY_USAGE = '2.5.29.15'
const OID_SUBJECT_ALT_NAME = '2.5.29.17'
const OID_EXT_KEY_USAGE = '2.5.29.37'
const KEY_USAGE_BITS: Readonly<Record<RequestKeyUsage, number>> = { digitalSignature: 0, nonRepudiation: 1, keyEncipherment: 2 }
const EKU_OIDS: Readonly<Record<RequestExtKeyUsage, string>> = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' }

/**
 * The characters ICP-Brasil allows in names (DOC-ICP-04 §7.1.5: letters and digits without accents, cedillas or
 * diaereses, plus space ! " # $ % & ' ( ) * + , - . / : ; = ? @ \). A CA refuses a request with others.
 */
const ICP_CHARS = /^[A-Za-z0-9 !"#$%&'()*+,\-./:;=?@\\]*$/

function fieldError (field: string, why: string): PixProxyError {
  return new PixProxyError(Errors.CSR_FIELD_INVALID, [field, why])
}

// ---------------------------------------------------------------------------------------------------------------
// Subject

/** RFC 4514 escaping of every character parseDn treats specially, so that one OpenSSL component is one AVA. */
function escapeForParseDn (v: string): string {
  return v.replace(/["+,;<>\\ #=]/g, '\\$&')
}

/**
 * Parses a subject in OpenSSL's `-subj` form: `/C=BR/O=ICP-Brasil/OU=…/CN=…`, most general RDN first (the order the
 * name has in the certificate), `\` escaping the next character (`\/` is a slash inside a value). Types are the
 * keywords parseDn knows (C, O, OU, CN, L, ST, serialNumber, …) or dotted OIDs. One AVA per RDN.
 * Chosen over RFC 4514 because RFC 4514 writes the name in the opposite order, and a subject typed from a CA's
 * instructions in OpenSSL's order would come out reversed without any error.
 * @throws PixProxyError DN_PARSE for a string that is not in this form.
 */
export function parseOpenSslSubject (s: string): Dn {
  if (!s.startsWith('/')) {
    throw new PixProxyError(Errors.DN_PARSE, [`the subject must be in OpenSSL's form "/C=BR/O=ICP-Brasil/CN=…", most general first: ${JSON.stringify(s.slice(0, 80))} does not start with "/"`])
  }
  const parts: string[] = []
  let current = ''
  for (let i = 1; i < s.length; i++) {
    const ch = s[i] as string
    if (ch === '\\') {
      const next = s[i + 1]
      if (next === undefined) throw new PixProxyError(Errors.DN_PARSE, ['the subject ends with a lone "\\"'])
      current += '\\' + next
      i++
    } else if (ch === '/') {
      parts.push(current)
      current = ''
    } else {
      current += ch
    }
  }
  parts.push(current)
  return parts.map((part, n) => {
    const eq = part.indexOf('=')
    if (eq <= 0) throw new PixProxyError(Errors.DN_PARSE, [`component ${n + 1} of the subject (${JSON.stringify(part)}) is not TYPE=value`])
    const type = part.slice(0, eq)
    const value = part.slice(eq + 1).replace(/\\(.)/g, '$1')
    if (value === '') throw new PixProxyError(Errors.DN_PARSE, [`${type} has an empty value`])
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x1f\x7f]/.test(value)) throw new PixProxyError(Errors.DN_PARSE, [`${type} contains a control character`])
    if (!/^([A-Za-z][A-Za-z0-9-]*|[0-2](\.[0-9]+)+)$/.test(type)) throw new PixProxyError(Errors.DN_PARSE, [`${JSON.stringify(type)} is not an attribute type`])
    const dn = parseDn(`${type}=${escapeForParseDn(value)}`)
    return dn[0] as Dn[number]
  })
}

/**
 * The checks a CA of ICP-Brasil applies to a requested subject: exactly one C, and it is BR; exactly one CN; every
 * value in ICP-Brasil's character set. @throws PixProxyError CSR_FIELD_INVALID
 */
function checkIcpBrasilSubject (dn: Dn): void {
  const avas = dn.flat()
  const count = (oid: string): number => avas.filter((a) => a.oid === oid).length
  const c = avas.find((a) => a.oid === Oid.C)
  if (count(Oid.C) !== 1 || c?.value !== 'BR') throw fieldError('subject', 'it needs exactly one C, and C=BR (DOC-ICP-04 §7.1.4)')
  if (count(Oid.CN) !== 1) throw fieldError('subject', 'it needs exactly one CN: the URL or the name of the application (DOC-ICP-04 §7.1.4)')
  for (const a of avas) {
    if (a.value.startsWith('#') && a.tag !== undefined) throw fieldError('subject', `attribute ${a.oid} has a non-string value`)
    if (!ICP_CHARS.test(a.value)) {
      throw fieldError('subject', `${JSON.stringify(a.value)} has characters outside ICP-Brasil's set (letters and digits without accents or cedilla, space and !"#$%&'()*+,-./:;=?@\\)`)
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// ICP-Brasil identity fields

const CNPJ_WEIGHTS_1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
const CNPJ_WEIGHTS_2 = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]

function cnpjDigit (body: string, weights: readonly number[]): number {
  let sum = 0
  // The Receita Federal's rule for the alphanumeric CNPJ: each character counts as its ASCII code minus 48, so
  // digits keep their value and the numeric CNPJ is the special case.
  for (let i = 0; i < weights.length; i++) sum += (body.charCodeAt(i) - 48) * (weights[i] as number)
  const r = sum % 11
  return r < 2 ? 0 : 11 - r
}

/** Whether `cnpj` is 14 positions (12 of 0-9/A-Z, 2 digits) with valid check digits, numeric or alphanumeric. */
export function isValidCnpj (cnpj: string): boolean {
  if (!/^[0-9A-Z]{12}[0-9]{2}$/.test(cnpj) || /^(\d)\1{13}$/.test(cnpj)) return false
  const d1 = cnpjDigit(cnpj, CNPJ_WEIGHTS_1)
  const d2 = cnpjDigit(cnpj.slice(0, 12) + String(d1), CNPJ_WEIGHTS_2)
  return cnpj.slice(12) === `${d1}${d2}`
}

function checkName (field: string, v: string): void {
  if (v.trim() === '' || v !== v.trim()) throw fieldError(field, 'it must not be empty or start or end with a space')
  if (!ICP_CHARS.test(v)) throw fieldError(field, `${JSON.stringify(v)} has characters outside ICP-Brasil's set (no accents or cedilla)`)
}

function checkResponsibleData (v: string): void {
  const m = /^([0-9]{2})([0-9]{2})([0-9]{4})([0-9]{11})([0-9]{11})([0-9A-Z]{15})([A-Z]{0,10})$/.exec(v)
  if (m === null) {
    throw fieldError('responsible data (2.16.76.1.3.4)', 'expected birth date ddmmaaaa (8 digits), CPF (11), NIS (11), RG (15, zero-padded), RG issuer and state (up to 10 letters): 45 to 55 positions')
  }
  const [, dd, mm, yyyy, , , rg, issuer] = m as unknown as [string, string, string, string, string, string, string, string]
  const date = new Date(Date.UTC(Number(yyyy), Number(mm) - 1, Number(dd)))
  if (date.getUTCDate() !== Number(dd) || date.getUTCMonth() !== Number(mm) - 1) {
    throw fieldError('responsible data (2.16.76.1.3.4)', `${dd}${mm}${yyyy} is not a date ddmmaaaa`)
  }
  if (/^0+$/.test(rg) && issuer !== '') throw fieldError('responsible data (2.16.76.1.3.4)', 'without an RG (all zeros) the RG issuer must be left out')
}

/** @throws PixProxyError CSR_FIELD_INVALID naming the field. */
function checkIcpBrasilIdentity (id: IcpBrasilIdentity): void {
  checkName('company name (2.16.76.1.3.8)', id.companyName)
  if (!isValidCnpj(id.cnpj)) throw fieldError('CNPJ (2.16.76.1.3.3)', `${JSON.stringify(id.cnpj)} is not 14 positions with valid check digits (no dots, slash or dash)`)
  checkName('responsible name (2.16.76.1.3.2)', id.responsibleName)
  checkResponsibleData(id.responsibleData)
}

// ---------------------------------------------------------------------------------------------------------------
// Building

/**
 * An otherName value: PrintableString when the text fits one, else OCTET STRING of its ASCII bytes (ICP-Brasil
 * allows both; '&' or '@' in a company name do not fit a PrintableString).
 */
function otherName (oid: string, text: string): Buffer {
  const value = isPrintableString(text) ? encodeString(Tag.PRINTABLE_STRING, text) : encodeOctetString(Buffer.from(text, 'latin1'))
  return encode(contextTag(0, true), encodeOid(oid), encodeExplicit(0, value)) // otherName [0] IMPLICIT OtherName
}

function extension (oid: string, critical: boolean, value: Buffer): Buffer {
  return critical
    ? encodeSequence(encodeOid(oid), encodeBoolean(true), encodeOctetString(value))
    : encodeSequence(encodeOid(oid), encodeOctetString(value))
}

function keyUsageValue (usages: readonly RequestKeyUsage[]): Buffer {
  let byte = 0
  for (const u of usages) {
    const bit = KEY_USAGE_BITS[u]
    if (bit === undefined) throw fieldError('key usage', `unknown key usage ${String(u)} (digitalSignature, nonRepudiation, keyEncipherment)`)
    byte |= 0x80 >> bit
  }
  let unused = 0
  while (((byte >> unused) & 1) === 0) unused++
  return encodeBitString(Buffer.from([byte]), unused)
}

function requestedExtensions (o: CsrOptions): Buffer[] {
  const out: Buffer[] = []
  const keyUsage = o.keyUsage ?? ['digitalSignature', 'nonRepudiation']
  if (keyUsage.length > 0) out.push(extension(OID_KEY_USAGE, true, keyUsageValue(keyUsage)))
  const eku = o.extKeyUsage ?? []
  if (eku.length > 0) {
    out.push(extension(OID_EXT_KEY_USAGE, false, encodeSequence(...eku.map((u) => {
      const oid = EKU_OIDS[u]
      if (oid === undefined) throw fieldError('extended key usage', `unknown extended key usage ${String(u)} (serverAuth, clientAuth)`)
      return encodeOid(oid)
    }))))
  }
  const names: Buffer[] = []
  if (o.icpBrasil !== undefined) {
    const id = o.icpBrasil
    checkIcpBrasilIdentity(id)
    // DOC-ICP-04 §7.1.2.3 c.1 lists them in this order.
    names.push(otherName(IcpBrasilOid.COMPANY_NAME, id.companyName), otherName(IcpBrasilOid.CNPJ, id.cnpj),
      otherName(IcpBrasilOid.RESPONSIBLE_NAME, id.responsibleName), otherName(IcpBrasilOid.RESPONSIBLE_DATA, id.responsibleData))
  }
  for (const n of o.dnsNames ?? []) {
    if (!/^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(n) || n.length > 253) {
      throw fieldError('DNS name', `${JSON.stringify(n)} is not a DNS name (letters, digits, hyphens; A-labels for IDNs)`)
    }
    names.push(encode(contextTag(2, false), Buffer.from(n, 'latin1'))) // dNSName [2] IMPLICIT IA5String
  }
  if (names.length > 0) out.push(extension(OID_SUBJECT_ALT_NAME, false, encodeSequence(...names)))
  return out
}

function toPem (der: Buffer): string {
  const b64 = der.toString('base64')
  let body = ''
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n'
  return `-----BEGIN CERTIFICATE REQUEST-----\n${body}-----END CERTIFICATE REQUEST-----\n`
}

/**
 * Builds a CertificationRequestInfo for the signer's public key, has the signer sign it (sha256WithRSAEncryption,
 * RSASSA-PKCS1-v1_5) and checks the signature against that public key before returning: a signer whose key is
 * not the one it reports (a PKCS#11 label pointing at another pair) fails here, not at the CA.
 * @throws PixProxyError CSR_FIELD_INVALID for a subject or field a CA of ICP-Brasil would refuse, CSR_SIGNATURE when
 *   the signature does not verify; the signer's own errors (HSM_*, KMS_*) pass through.
 */
export async function createCsr (o: CsrOptions): Promise<CertificationRequest> {
  checkIcpBrasilSubject(o.subject)
  const key = o.signer.publicKey
  if (key.asymmetricKeyType !== 'rsa') throw fieldError('key', `${o.signer.description} is ${String(key.asymmetricKeyType)}; an RSA key is needed (sha256WithRSAEncryption)`)
  const extensions = requestedExtensions(o)
  const attributes = extensions.length === 0
    ? []
    : [encodeSequence(encodeOid(OID_EXTENSION_REQUEST), encode(Tag.SET, encodeSequence(...extensions)))]
  const info = encodeSequence(
    encodeInteger(0), // version v1(0)
    dnToDer(o.subject),
    key.export({ type: 'spki', format: 'der' }),
    encode(contextTag(0, true), ...(attributes.length === 0 ? [Buffer.alloc(0)] : attributes)) // [0] IMPLICIT SET OF Attribute
  )
  const signature = await o.signer.sign(info)
  if (!cryptoVerify('sha256', info, key, signature)) {
    throw new PixProxyError(Errors.CSR_SIGNATURE, [`the signature ${o.signer.description} made does not verify with its public key`])
  }
  return parseCsr(encodeSequence(info, encodeSequence(encodeOid(OID_SHA256_WITH_RSA), encodeNull()), encodeBitString(signature)))
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing and verification

function pemRequest (text: string): Buffer {
  const blocks = [...text.matchAll(/-----BEGIN (NEW )?CERTIFICATE REQUEST-----([^-]*)-----END \1?CERTIFICATE REQUEST-----/g)]
  if (blocks.length !== 1) throw new PixProxyError(Errors.CSR_PARSE, [`expected exactly one PEM CERTIFICATE REQUEST block, found ${blocks.length}`])
  const b64 = ((blocks[0] as RegExpMatchArray)[2] as string).replace(/\s+/g, '')
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) throw new PixProxyError(Errors.CSR_PARSE, ['invalid base64 in the PEM block'])
  return Buffer.from(b64, 'base64')
}

function walk (der: Buffer): Omit<CertificationRequest, 'pem' | 'subjectString'> {
  const [info, alg, sig, ...extra] = children(expectTag(decode(der), Tag.SEQUENCE, 'CertificationRequest'))
  if (extra.length > 0) throw new PixProxyError(Errors.DER_INVALID, ['CertificationRequest with extra elements'])
  const [version, subject, spki, attrs, ...more] = children(expectTag(info, Tag.SEQUENCE, 'certificationRequestInfo'))
  if (more.length > 0) throw new PixProxyError(Errors.DER_INVALID, ['certificationRequestInfo with extra elements'])
  if (readInteger(expectTag(version, Tag.INTEGER, 'version')) !== 0n) throw new PixProxyError(Errors.DER_INVALID, ['version is not v1(0)'])
  const extensions = new Map<string, { critical: boolean, value: Buffer }>()
  for (const attr of children(expectTag(attrs, contextTag(0, true), 'attributes'))) {
    const [type, values, ...rest] = children(expectTag(attr, Tag.SEQUENCE, 'Attribute'))
    if (rest.length > 0) throw new PixProxyError(Errors.DER_INVALID, ['Attribute with extra elements'])
    const oid = readOid(expectTag(type, Tag.OID, 'attribute type'))
    const set = children(expectTag(values, Tag.SET, 'attribute values'))
    if (oid !== OID_EXTENSION_REQUEST) continue // challengePassword and the like: nothing a CA here acts on
    if (set.length !== 1 || extensions.size > 0) throw new PixProxyError(Errors.DER_INVALID, ['extensionRequest must appear once with one value'])
    for (const ext of children(expectTag(set[0], Tag.SEQUENCE, 'Extensions'))) {
      const parts = children(expectTag(ext, Tag.SEQUENCE, 'Extension'))
      if (parts.length !== 2 && parts.length !== 3) throw new PixProxyError(Errors.DER_INVALID, ['Extension is not 2 or 3 elements'])
      const extOid = readOid(expectTag(parts[0], Tag.OID, 'extnID'))
      const critical = parts.length === 3 ? readBoolean(parts[1] as Tlv) : false
      if (extensions.has(extOid)) throw new PixProxyError(Errors.DER_INVALID, [`extension ${extOid} requested twice`])
      extensions.set(extOid, { critical, value: Buffer.from(expectTag(parts[parts.length - 1], Tag.OCTET_STRING, 'extnValue').value) })
    }
  }
  const algParts = children(expectTag(alg, Tag.SEQUENCE, 'signatureAlgorithm'))
  const signatureAlgorithm = readOid(expectTag(algParts[0], Tag.OID, 'signature algorithm'))
  if (algParts.length > 2 || (algParts[1] !== undefined && algParts[1].tag !== Tag.NULL)) {
    throw new PixProxyError(Errors.DER_INVALID, ['signature algorithm parameters other than NULL'])
  }
  const { unusedBits, bytes } = readBitString(expectTag(sig, Tag.BIT_STRING, 'signature'))
  if (unusedBits !== 0) throw new PixProxyError(Errors.DER_INVALID, ['signature BIT STRING with unused bits'])
  const publicKey = createPublicKey({ key: Buffer.from(expectTag(spki, Tag.SEQUENCE, 'subjectPKInfo').raw), format: 'der', type: 'spki' })
  return {
    der,
    subject: dnFromDer(expectTag(subject, Tag.SEQUENCE, 'subject')),
    publicKey,
    extensions,
    info: Buffer.from((info as Tlv).raw),
    signatureAlgorithm,
    signature: Buffer.from(bytes)
  }
}

/**
 * Parses a request: PEM text with one CERTIFICATE REQUEST (or NEW CERTIFICATE REQUEST) block, or DER. It does not
 * check the signature: {@link verifyCsr} does. @throws PixProxyError CSR_PARSE (the DER error as cause).
 */
export function parseCsr (input: string | Buffer): CertificationRequest {
  const der = Buffer.isBuffer(input) && input[0] === Tag.SEQUENCE
    ? Buffer.from(input)
    : pemRequest(typeof input === 'string' ? input : input.toString('latin1'))
  let parts: ReturnType<typeof walk>
  try {
    parts = walk(der)
  } catch (err) {
    throw new PixProxyError(Errors.CSR_PARSE, [err instanceof Error ? err.message : String(err)], { cause: err })
  }
  return Object.freeze({ ...parts, pem: toPem(der), subjectString: formatDn(parts.subject) })
}

/**
 * Proof of possession: the request's signature verifies with the public key it asks to certify. Only
 * sha256WithRSAEncryption (with NULL or absent parameters) is accepted.
 * @throws PixProxyError CSR_SIGNATURE
 */
export function verifyCsr (csr: CertificationRequest): void {
  if (csr.signatureAlgorithm !== OID_SHA256_WITH_RSA) {
    throw new PixProxyError(Errors.CSR_SIGNATURE, [`signature algorithm ${csr.signatureAlgorithm} is not sha256WithRSAEncryption`])
  }
  if (csr.publicKey.asymmetricKeyType !== 'rsa') throw new PixProxyError(Errors.CSR_SIGNATURE, [`the key is ${String(csr.publicKey.asymmetricKeyType)}, not RSA`])
  if (!cryptoVerify('sha256', csr.info, csr.publicKey, csr.signature)) {
    throw new PixProxyError(Errors.CSR_SIGNATURE, [`the signature over the request for ${csr.subjectString} does not verify`])
  }
}

/**
 * The identity an ICP-Brasil / Open Finance Brasil client certificate asserts, read for a backend: the CNPJ of the
 * legal entity, the Open Finance organisation and software statement identifiers, and the SAN names.
 *
 * Where each field comes from:
 *   - Open Finance Brasil certificate standard (Padrão de Certificados Open Finance Brasil, client certificate):
 *     subject serialNumber (2.5.4.5) = CNPJ, organizationIdentifier (2.5.4.97) = "OFBBR-<participant UUID>",
 *     UID (0.9.2342.19200300.100.1.1) = software statement ID, businessCategory (2.5.4.15), jurisdictionCountryName
 *     (1.3.6.1.4.1.311.60.2.1.3) = BR, CN = FQDN, SAN dNSName.
 *   - DOC-ICP-04 (ICP-Brasil certificate profiles): SAN otherName 2.16.76.1.3.3 = the CNPJ in 14 positions; the
 *     other 2.16.76.1.3.x otherNames (responsible person's name, CPF and birth date, CEI, ...) are positional
 *     strings, returned here raw by OID. Open Finance's template writes them as PrintableString, certificates in
 *     the field also carry OCTET STRING; UTF8String, IA5String and VisibleString are read too.
 *
 * This never throws on an odd certificate: whatever cannot be read, or is ambiguous (an attribute present twice, a
 * SAN CNPJ that differs from the subject's), comes out null and is named in `problems`. A backend that authorises by
 * CNPJ must treat null as "no identity", never guess.
 */
import { children, decode, expectTag, isStringTag, readOid, readString, Tag, type Tlv } from './der.ts'
import { Oid, type Ava } from './dn.ts'
import { certificateParts, type Certificate } from './x509.ts'

/** What `icpBrasilIdentity` reads. Every string field is null when absent, ambiguous or unreadable (see `problems`). */
export interface IcpBrasilIdentity {
  /** The entity's CNPJ, 14 characters, check digits valid; from SAN otherName 2.16.76.1.3.3 and/or subject serialNumber. */
  cnpj: string | null
  /** Subject organizationIdentifier (2.5.4.97), e.g. "OFBBR-<uuid>": the Open Finance participant (organisation). */
  organisationId: string | null
  /** Subject UID (0.9.2342.19200300.100.1.1): the software statement ID registered in the Open Finance directory. */
  softwareStatementId: string | null
  /** Subject businessCategory (2.5.4.15), e.g. "Private Organization". */
  businessCategory: string | null
  /** Subject jurisdictionCountryName (1.3.6.1.4.1.311.60.2.1.3), "BR" for Open Finance. */
  jurisdictionCountry: string | null
  /** Subject commonName (2.5.4.3): the FQDN of the client application. */
  commonName: string | null
  /** SAN dNSName entries, in certificate order. */
  dnsNames: string[]
  /** SAN otherNames under ICP-Brasil's arc 2.16.76.1.3 (including the CNPJ, .3), values as decoded strings, in order. */
  otherNames: Array<{ oid: string, value: string }>
  /** What was odd about the certificate, one sentence each; empty for a well-formed Open Finance certificate. */
  problems: string[]
}

/** OIDs of the attributes and otherNames read here. */
export const IcpOid = Object.freeze({
  /** SAN otherName: CNPJ of the legal entity (DOC-ICP-04). */
  OTHERNAME_CNPJ: '2.16.76.1.3.3',
  /** The ICP-Brasil arc of the otherNames of people and legal entities (DOC-ICP-04). */
  OTHERNAME_ARC: '2.16.76.1.3',
  JURISDICTION_COUNTRY: '1.3.6.1.4.1.311.60.2.1.3',
  SUBJECT_ALT_NAME: '2.5.29.17'
})

/** Open Finance's businessCategory values (certificate standard, client certificate). */
const OFB_BUSINESS_CATEGORIES: readonly string[] = Object.freeze([
  'Private Organization', 'Government Entity', 'Business Entity', 'Non-Commercial Entity'
])

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const OFB_ORG_RE = /^OFBBR-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
// C0 and C1 controls and DEL: never part of a legitimate identifier, and a header injection risk downstream.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/
const CNPJ_SHAPE_RE = /^[0-9A-Z]{12}[0-9]{2}$/

/**
 * The two check digits of a CNPJ's first 12 characters (módulo 11, weights 2-9 from the right). The first 12 may be
 * letters (the alphanumeric CNPJ of IN RFB 2.229/2024, issued from July 2026); each character counts as its ASCII code
 * minus 48, which for digits is the digit, so numeric CNPJs come out as they always did. Null when `base` is not 12
 * characters of [0-9A-Z].
 */
export function cnpjCheckDigits (base: string): string | null {
  if (!/^[0-9A-Z]{12}$/.test(base)) return null
  const digit = (s: string): number => {
    let sum = 0
    for (let i = 0; i < s.length; i++) sum += (s.charCodeAt(i) - 48) * (((s.length - 1 - i) % 8) + 2)
    const r = sum % 11
    return r < 2 ? 0 : 11 - r
  }
  const first = String(digit(base))
  return first + String(digit(base + first))
}

/** Whether `s` is a CNPJ: 14 characters, the last two the check digits of the first 12 (see cnpjCheckDigits). */
export function isValidCnpj (s: string): boolean {
  if (!CNPJ_SHAPE_RE.test(s)) return false
  if (/^(\d)\1{13}$/.test(s)) return false // 00000000000000 and the like pass módulo 11 but are not CNPJs
  return cnpjCheckDigits(s.slice(0, 12)) === s.slice(12)
}

function describe (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** The single value of a subject attribute, or null (absent, repeated, not a string, control characters). */
function subjectAttribute (avas: readonly Ava[], oid: string, name: string, problems: string[]): string | null {
  const found = avas.filter((a) => a.oid === oid)
  if (found.length === 0) return null
  if (found.length > 1) {
    problems.push(`subject ${name} appears ${found.length} times; ignored as ambiguous`)
    return null
  }
  const ava = found[0] as Ava
  if (ava.tag !== undefined && !isStringTag(ava.tag)) {
    problems.push(`subject ${name} is not a character string`)
    return null
  }
  if (CONTROL_RE.test(ava.value)) {
    problems.push(`subject ${name} contains control characters; ignored`)
    return null
  }
  return ava.value
}

interface San {
  dnsNames: string[]
  otherNames: Array<{ oid: string, value: string }>
}

/** An otherName's value ([0] EXPLICIT ANY) as a string, or a reason it is not one. */
function otherNameValue (explicit: Tlv | undefined): string | Error {
  if (explicit === undefined || explicit.tag !== 0xa0) return new Error('has no [0] value')
  const inner = children(explicit)
  if (inner.length !== 1) return new Error('[0] value does not hold exactly one element')
  const v = inner[0] as Tlv
  switch (v.tag) {
    case Tag.OCTET_STRING:
      return v.value.toString('latin1')
    case Tag.PRINTABLE_STRING: case Tag.UTF8_STRING: case Tag.IA5_STRING: case Tag.VISIBLE_STRING:
      return readString(v)
    default:
      return new Error(`value has type 0x${v.tag.toString(16).padStart(2, '0')}, not OCTET STRING or a character string`)
  }
}

/** Reads GeneralNames (RFC 5280 §4.2.1.6): dNSName [2] and otherName [0] under ICP-Brasil's arc; others skipped. */
function readSan (value: Buffer, problems: string[]): San {
  const san: San = { dnsNames: [], otherNames: [] }
  let names: Tlv[]
  try {
    names = children(expectTag(decode(value), Tag.SEQUENCE, 'GeneralNames'))
  } catch (err) {
    problems.push(`subjectAltName is not valid DER: ${describe(err)}`)
    return san
  }
  for (const name of names) {
    try {
      if (name.tag === 0x82) { // dNSName [2] IMPLICIT IA5String
        const dns = name.value.toString('latin1')
        if (!/^[\x21-\x7e]+$/.test(dns)) problems.push(`SAN dNSName ${JSON.stringify(dns)} is not printable ASCII; ignored`)
        else san.dnsNames.push(dns)
      } else if (name.tag === 0xa0) { // otherName [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }
        const [typeId, explicit, ...extra] = children(name)
        const oid = readOid(expectTag(typeId, Tag.OID, 'otherName type-id'))
        if (!oid.startsWith(IcpOid.OTHERNAME_ARC + '.')) continue
        const v = extra.length > 0 ? new Error('has extra elements') : otherNameValue(explicit)
        if (v instanceof Error) problems.push(`SAN otherName ${oid} ${v.message}; ignored`)
        else if (CONTROL_RE.test(v)) problems.push(`SAN otherName ${oid} contains control characters; ignored`)
        else san.otherNames.push({ oid, value: v })
      }
    } catch (err) {
      problems.push(`a SAN entry is not valid DER: ${describe(err)}`)
    }
  }
  return san
}

/** The CNPJ both sources agree on; invalid or disagreeing sources are problems. */
function resolveCnpj (sanValues: readonly string[], serialNumber: string | null, problems: string[]): string | null {
  let fromSan: string | null = null
  if (sanValues.length > 1) {
    problems.push(`SAN otherName ${IcpOid.OTHERNAME_CNPJ} (CNPJ) appears ${sanValues.length} times; ignored as ambiguous`)
  } else if (sanValues.length === 1) {
    const v = sanValues[0] as string
    if (isValidCnpj(v)) fromSan = v
    else problems.push(`SAN otherName ${IcpOid.OTHERNAME_CNPJ} ${JSON.stringify(v)} is not a valid CNPJ (14 characters, check digits)`)
  }
  let fromSubject: string | null = null
  if (serialNumber !== null) {
    if (isValidCnpj(serialNumber)) fromSubject = serialNumber
    else problems.push(`subject serialNumber ${JSON.stringify(serialNumber)} is not a valid CNPJ (14 characters, check digits)`)
  }
  if (fromSan !== null && fromSubject !== null && fromSan !== fromSubject) {
    problems.push(`CNPJ mismatch: SAN otherName ${IcpOid.OTHERNAME_CNPJ} says ${fromSan}, subject serialNumber says ${fromSubject}`)
    return null
  }
  return fromSan ?? fromSubject
}

function checkShape (value: string | null, ok: (v: string) => boolean, problem: string, problems: string[]): void {
  if (value !== null && !ok(value)) problems.push(problem)
}

/**
 * Reads the identity of an ICP-Brasil / Open Finance Brasil client certificate (see the module comment for the
 * sources). Never throws: unreadable, repeated or inconsistent fields are null and explained in `problems`; fields
 * that are present but off the Open Finance shape (organisationId not "OFBBR-<uuid>", a UID that is not a UUID, an
 * unknown businessCategory, a jurisdiction other than BR) are returned as found, with a problem naming the deviation.
 * Values never contain control characters; they may contain non-ASCII text (a header carrying them must encode it).
 */
export function icpBrasilIdentity (cert: Certificate): IcpBrasilIdentity {
  const problems: string[] = []
  const avas = cert.subject.flat()
  const attr = (oid: string, name: string): string | null => subjectAttribute(avas, oid, name, problems)

  const commonName = attr(Oid.CN, 'commonName')
  const serialNumber = attr(Oid.SERIALNUMBER, 'serialNumber')
  const organisationId = attr(Oid.ORGANIZATION_IDENTIFIER, 'organizationIdentifier')
  const softwareStatementId = attr(Oid.UID, 'UID')
  const businessCategory = attr(Oid.BUSINESS_CATEGORY, 'businessCategory')
  const jurisdictionCountry = attr(IcpOid.JURISDICTION_COUNTRY, 'jurisdictionCountryName')

  let san: San = { dnsNames: [], otherNames: [] }
  try {
    const ext = certificateParts(cert.der).extensions.get(IcpOid.SUBJECT_ALT_NAME)
    if (ext === undefined) problems.push('no subjectAltName extension')
    else san = readSan(ext.value, problems)
  } catch (err) {
    problems.push(`cannot read the certificate's extensions: ${describe(err)}`)
  }

  const sanCnpjs = san.otherNames.filter((o) => o.oid === IcpOid.OTHERNAME_CNPJ).map((o) => o.value)
  const cnpj = resolveCnpj(sanCnpjs, serialNumber, problems)
  if (cnpj === null && sanCnpjs.length === 0 && serialNumber === null) {
    problems.push(`no CNPJ: neither SAN otherName ${IcpOid.OTHERNAME_CNPJ} nor subject serialNumber`)
  }
  checkShape(organisationId, (v) => OFB_ORG_RE.test(v), 'subject organizationIdentifier is not "OFBBR-<uuid>"', problems)
  checkShape(softwareStatementId, (v) => UUID_RE.test(v), 'subject UID (software statement ID) is not a UUID', problems)
  checkShape(businessCategory, (v) => OFB_BUSINESS_CATEGORIES.includes(v), `subject businessCategory is not one of ${OFB_BUSINESS_CATEGORIES.join(', ')}`, problems)
  checkShape(jurisdictionCountry, (v) => v === 'BR', 'subject jurisdictionCountryName is not BR', problems)

  return {
    cnpj,
    organisationId,
    softwareStatementId,
    businessCategory,
    jurisdictionCountry,
    commonName,
    dnsNames: san.dnsNames,
    otherNames: san.otherNames,
    problems
  }
}

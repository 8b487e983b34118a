/**
 * Distinguished names: the DER form in certificates, the string form in XMLDSig's X509IssuerName, and a
 * comparison key that makes the spellings of other implementations meet.
 *
 * Output follows RFC 4514 (most specific RDN first, escaping per §2.4) with two choices made to match what
 * BACEN's Java reference signer writes (`X509Certificate.getIssuerDN().toString()`): ", " between RDNs, and the
 * keyword EMAILADDRESS for emailAddress (Java's spelling; OpenSSL writes emailAddress, .NET writes E; RFC 4514
 * itself would write the dotted OID). parseDn reads all of those spellings.
 */
import { isUtf8 } from 'node:buffer'
import { Errors, PixProxyError } from '../errors.ts'
import {
  children, decode, encodeOid, encodeSequence, encodeSet, encodeString, expectTag, isPrintableString,
  isStringTag, readOid, readString, Tag, type Tlv
} from './der.ts'

/** One attribute type and value. */
export interface Ava {
  /** Attribute type as a dotted OID ('2.5.4.3' for CN). */
  readonly oid: string
  /**
   * The decoded string; for a value that is not a character string (per `tag`), '#' followed by the lowercase
   * hex of its whole DER encoding.
   */
  readonly value: string
  /**
   * ASN.1 identifier octet of the value as encoded (0x0c UTF8String, 0x13 PrintableString, ...), present when the
   * value came from DER (a certificate, or a '#hex' value in a string). Absent means "a character string, type to
   * be chosen when encoding" (see dnToDer). It is what tells a string that happens to start with '#' from a hex
   * value, and lets a name read from a certificate be written back byte for byte.
   */
  readonly tag?: number
}
export type Rdn = readonly Ava[]
/** RDNs in ASN.1 order: as encoded in the certificate (C=BR usually first). */
export type Dn = readonly Rdn[]

/** Well-known OIDs of attribute types. */
export const Oid = Object.freeze({
  CN: '2.5.4.3',
  SURNAME: '2.5.4.4',
  SERIALNUMBER: '2.5.4.5',
  C: '2.5.4.6',
  L: '2.5.4.7',
  ST: '2.5.4.8',
  STREET: '2.5.4.9',
  O: '2.5.4.10',
  OU: '2.5.4.11',
  TITLE: '2.5.4.12',
  BUSINESS_CATEGORY: '2.5.4.15',
  POSTAL_CODE: '2.5.4.17',
  GIVEN_NAME: '2.5.4.42',
  INITIALS: '2.5.4.43',
  GENERATION: '2.5.4.44',
  DN_QUALIFIER: '2.5.4.46',
  PSEUDONYM: '2.5.4.65',
  ORGANIZATION_IDENTIFIER: '2.5.4.97',
  UID: '0.9.2342.19200300.100.1.1',
  DC: '0.9.2342.19200300.100.1.25',
  EMAIL: '1.2.840.113549.1.9.1'
})

/** Keywords formatDn writes. Every other type is written as a dotted OID with a '#hex' value (RFC 4514 §2.4). */
const SHORT_NAMES: ReadonlyMap<string, string> = new Map([
  [Oid.CN, 'CN'], [Oid.L, 'L'], [Oid.ST, 'ST'], [Oid.O, 'O'], [Oid.OU, 'OU'], [Oid.C, 'C'], [Oid.STREET, 'STREET'],
  [Oid.DC, 'DC'], [Oid.UID, 'UID'], [Oid.SERIALNUMBER, 'SERIALNUMBER'], [Oid.EMAIL, 'EMAILADDRESS']
])

/**
 * Keywords parseDn reads (upper-cased): RFC 4514's, Java's (S, EMAIL, EMAILADDRESS, SERIALNUMBER, T, DNQ, ...),
 * OpenSSL's short names (emailAddress, serialNumber, street, GN, ...), .NET's (E, S) and the long names.
 */
const KEYWORDS: ReadonlyMap<string, string> = new Map([
  ['CN', Oid.CN], ['COMMONNAME', Oid.CN],
  ['SN', Oid.SURNAME], ['SURNAME', Oid.SURNAME],
  ['SERIALNUMBER', Oid.SERIALNUMBER],
  ['C', Oid.C], ['COUNTRYNAME', Oid.C],
  ['L', Oid.L], ['LOCALITYNAME', Oid.L],
  ['ST', Oid.ST], ['S', Oid.ST], ['STATEORPROVINCENAME', Oid.ST],
  ['STREET', Oid.STREET], ['STREETADDRESS', Oid.STREET],
  ['O', Oid.O], ['ORGANIZATIONNAME', Oid.O],
  ['OU', Oid.OU], ['ORGANIZATIONALUNITNAME', Oid.OU],
  ['T', Oid.TITLE], ['TITLE', Oid.TITLE],
  ['BUSINESSCATEGORY', Oid.BUSINESS_CATEGORY],
  ['POSTALCODE', Oid.POSTAL_CODE],
  ['GN', Oid.GIVEN_NAME], ['GIVENNAME', Oid.GIVEN_NAME],
  ['INITIALS', Oid.INITIALS],
  ['GENERATION', Oid.GENERATION], ['GENERATIONQUALIFIER', Oid.GENERATION],
  ['DNQ', Oid.DN_QUALIFIER], ['DNQUALIFIER', Oid.DN_QUALIFIER],
  ['PSEUDONYM', Oid.PSEUDONYM],
  ['ORGANIZATIONIDENTIFIER', Oid.ORGANIZATION_IDENTIFIER],
  ['UID', Oid.UID], ['USERID', Oid.UID],
  ['DC', Oid.DC], ['DOMAINCOMPONENT', Oid.DC],
  ['E', Oid.EMAIL], ['EMAIL', Oid.EMAIL], ['EMAILADDRESS', Oid.EMAIL]
])

function dnError (why: string, cause?: unknown): PixProxyError {
  return new PixProxyError(Errors.DN_PARSE, [why], cause === undefined ? undefined : { cause })
}

/**
 * The string type a value without `tag` gets in DER: PrintableString where X.520 / RFC 5280 require it (C,
 * serialNumber, dnQualifier) and the value fits, IA5String for emailAddress and DC, UTF8String otherwise (RFC 5280
 * §4.1.2.6).
 */
function defaultTag (oid: string, value: string): number {
  switch (oid) {
    case Oid.C: case Oid.SERIALNUMBER: case Oid.DN_QUALIFIER:
      return isPrintableString(value) ? Tag.PRINTABLE_STRING : Tag.UTF8_STRING
    case Oid.EMAIL: case Oid.DC:
      // eslint-disable-next-line no-control-regex
      return /^[\x00-\x7f]*$/.test(value) ? Tag.IA5_STRING : Tag.UTF8_STRING
    default:
      return Tag.UTF8_STRING
  }
}

function isHexAva (ava: Ava): boolean {
  return ava.tag !== undefined && !isStringTag(ava.tag)
}

/** The DER encoding of an AVA's value. */
function valueDer (ava: Ava): Buffer {
  if (isHexAva(ava)) return Buffer.from(ava.value.slice(1), 'hex')
  return encodeString(ava.tag ?? defaultTag(ava.oid, ava.value), ava.value)
}

// ---------------------------------------------------------------------------------------------------------------
// DER

/** Reads a Name (SEQUENCE OF RelativeDistinguishedName) from its DER element. */
export function dnFromDer (name: Tlv): Dn {
  expectTag(name, Tag.SEQUENCE, 'Name')
  return children(name).map((rdnTlv) => {
    expectTag(rdnTlv, Tag.SET, 'RelativeDistinguishedName')
    const avas = children(rdnTlv)
    if (avas.length === 0) throw new PixProxyError(Errors.DER_INVALID, ['empty RelativeDistinguishedName'])
    return avas.map((avaTlv): Ava => {
      expectTag(avaTlv, Tag.SEQUENCE, 'AttributeTypeAndValue')
      const [type, value, ...extra] = children(avaTlv)
      if (extra.length > 0) throw new PixProxyError(Errors.DER_INVALID, ['AttributeTypeAndValue with extra elements'])
      const oid = readOid(expectTag(type, Tag.OID, 'attribute type'))
      if (value === undefined) throw new PixProxyError(Errors.DER_INVALID, ['AttributeTypeAndValue without a value'])
      return isStringTag(value.tag)
        ? { oid, value: readString(value), tag: value.tag }
        : { oid, value: '#' + value.raw.toString('hex'), tag: value.tag }
    })
  })
}

/**
 * Encodes a Name. AVAs that carry a `tag` are written with it (a name read from a certificate comes out byte for
 * byte); the others get the string type of defaultTag. Multi-valued RDNs are sorted as DER requires.
 */
export function dnToDer (dn: Dn): Buffer {
  return encodeSequence(...dn.map((rdn) => encodeSet(...rdn.map((ava) => encodeSequence(encodeOid(ava.oid), valueDer(ava))))))
}

// ---------------------------------------------------------------------------------------------------------------
// String form

/** RFC 4514 §2.4 escaping, plus control characters as \XX so that the string can go into XML 1.0. */
function escapeValue (v: string): string {
  let out = ''
  for (let i = 0; i < v.length; i++) {
    const c = v[i] as string
    const code = c.charCodeAt(0)
    if (code < 0x20 || code === 0x7f) out += '\\' + code.toString(16).toUpperCase().padStart(2, '0')
    else if ('"+,;<>\\'.includes(c)) out += '\\' + c
    else if ((c === ' ' && (i === 0 || i === v.length - 1)) || (c === '#' && i === 0)) out += '\\' + c
    else out += c
  }
  return out
}

function formatAva (ava: Ava): string {
  const name = SHORT_NAMES.get(ava.oid)
  if (name === undefined) return ava.oid + '=#' + valueDer(ava).toString('hex')
  return name + '=' + (isHexAva(ava) ? ava.value.toLowerCase() : escapeValue(ava.value))
}

/**
 * The RFC 4514 string of a name, most specific RDN first, ", " between RDNs and "+" inside a multi-valued RDN,
 * e.g. `CN=SERASA Autoridade Certificadora v5, OU=CSPB-4, O=ICP-Brasil, C=BR`: what goes into X509IssuerName.
 * Keywords: CN L ST O OU C STREET DC UID SERIALNUMBER EMAILADDRESS; other types are written as dotted OIDs with
 * the '#hex' DER of the value.
 */
export function formatDn (dn: Dn): string {
  const parts: string[] = []
  for (let i = dn.length - 1; i >= 0; i--) parts.push((dn[i] as Rdn).map(formatAva).join('+'))
  return parts.join(', ')
}

const TYPE_RE = /(?:oid\.)?([0-9]+(?:\.[0-9]+)*)|([A-Za-z][A-Za-z0-9-]*)/iy
const HEX_RE = /[0-9A-Fa-f]*/y
const ESCAPABLE = '"+,;<>\\ #='

/** Parser state over one input string. */
interface Cursor { readonly s: string, i: number }

function where (c: Cursor): string {
  const shown = c.s.length > 200 ? c.s.slice(0, 200) + '…' : c.s
  return `at offset ${c.i} of ${JSON.stringify(shown)}`
}

function skipSpaces (c: Cursor): void {
  while (c.s[c.i] === ' ') c.i++
}

function hexDigit (ch: string | undefined): boolean {
  return ch !== undefined && /^[0-9A-Fa-f]$/.test(ch)
}

function parseType (c: Cursor): string {
  TYPE_RE.lastIndex = c.i
  const m = TYPE_RE.exec(c.s)
  if (m === null) throw dnError(`expected an attribute type ${where(c)}`)
  c.i = TYPE_RE.lastIndex
  if (m[1] !== undefined) {
    if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(m[1])) throw dnError(`invalid OID ${m[1]} ${where(c)}`)
    return m[1]
  }
  const oid = KEYWORDS.get((m[2] as string).toUpperCase())
  if (oid === undefined) throw dnError(`unknown attribute type ${m[2] as string} ${where(c)}`)
  return oid
}

/** A '#hex' value: the DER of the attribute value. String types are decoded, so `CN=#0c03616263` equals `CN=abc`. */
function parseHexValue (c: Cursor, oid: string): Ava {
  c.i++
  HEX_RE.lastIndex = c.i
  const hex = (HEX_RE.exec(c.s) as RegExpExecArray)[0]
  c.i = HEX_RE.lastIndex
  if (hex.length === 0 || hex.length % 2 !== 0) throw dnError(`bad hex value ${where(c)}`)
  let tlv: Tlv
  try {
    tlv = decode(Buffer.from(hex, 'hex'))
    if (isStringTag(tlv.tag)) return { oid, value: readString(tlv), tag: tlv.tag }
  } catch (err) {
    throw dnError(`hex value is not one DER element ${where(c)}`, err)
  }
  return { oid, value: '#' + hex.toLowerCase(), tag: tlv.tag }
}

/**
 * An escaped or plain string value, or a quoted one (RFC 1779, which Java and Windows write when a value holds a
 * special character). \XX escapes are UTF-8 octets (OpenSSL writes `Jo\C3\A3o`).
 */
function parseStringValue (c: Cursor, oid: string): Ava {
  const s = c.s
  const quoted = s[c.i] === '"'
  if (quoted) c.i++
  let out = ''
  let octets: number[] = []
  let keep = 0 // length of `out` up to its last significant character: unescaped trailing spaces are dropped
  const flush = (): void => {
    if (octets.length === 0) return
    const bytes = Buffer.from(octets)
    if (!isUtf8(bytes)) throw dnError(`\\XX escapes are not valid UTF-8 ${where(c)}`)
    out += bytes.toString('utf8')
    octets = []
    keep = out.length
  }
  for (;;) {
    const ch = s[c.i]
    if (ch === undefined) {
      if (quoted) throw dnError(`unterminated quoted value ${where(c)}`)
      break
    }
    if (ch === '\\') {
      const next = s[c.i + 1]
      if (hexDigit(next) && hexDigit(s[c.i + 2])) {
        octets.push(parseInt(s.slice(c.i + 1, c.i + 3), 16))
        c.i += 3
        continue
      }
      if (next === undefined || !ESCAPABLE.includes(next)) throw dnError(`invalid escape ${where(c)}`)
      flush()
      out += next
      keep = out.length
      c.i += 2
      continue
    }
    flush()
    if (quoted) {
      c.i++
      if (ch === '"') { keep = out.length; break }
      out += ch
      keep = out.length
      continue
    }
    if (ch === ',' || ch === '+' || ch === ';') break
    out += ch
    c.i++
    if (ch !== ' ') keep = out.length
  }
  flush()
  return { oid, value: out.slice(0, keep) }
}

function parseAva (c: Cursor): Ava {
  const oid = parseType(c)
  skipSpaces(c)
  if (c.s[c.i] !== '=') throw dnError(`expected "=" ${where(c)}`)
  c.i++
  skipSpaces(c)
  const ava = c.s[c.i] === '#' ? parseHexValue(c, oid) : parseStringValue(c, oid)
  skipSpaces(c)
  return ava
}

/**
 * Parses a DN string into ASN.1 order (the inverse of formatDn). Accepts RFC 4514 / RFC 2253 (`,` without spaces),
 * Java's `, ` and ` + `, `;` separators, quoted RFC 1779 values, `#hex` values, keywords of Java, OpenSSL and .NET
 * (EMAILADDRESS / emailAddress / E, ST / S, SERIALNUMBER / serialNumber) and dotted OIDs with or without `OID.`.
 * The empty string is the empty DN. Throws PixProxyError(Errors.DN_PARSE).
 */
export function parseDn (s: string): Dn {
  const c: Cursor = { s, i: 0 }
  skipSpaces(c)
  const rdns: Ava[][] = []
  if (c.i === s.length) return rdns
  for (;;) {
    const rdn: Ava[] = [parseAva(c)]
    while (s[c.i] === '+') {
      c.i++
      skipSpaces(c)
      rdn.push(parseAva(c))
    }
    rdns.push(rdn)
    if (c.i === s.length) break
    if (s[c.i] !== ',' && s[c.i] !== ';') throw dnError(`unexpected ${JSON.stringify(s[c.i])} ${where(c)}`)
    c.i++
    skipSpaces(c)
  }
  return rdns.reverse()
}

// ---------------------------------------------------------------------------------------------------------------
// Comparison

/* eslint-disable no-control-regex */
// RFC 4518 §2.2: characters mapped to nothing, and characters mapped to SPACE. MAP_TO_NOTHING deletes lone combining
// and variation marks (U+034F, U+180B-U+180E, U+FE00-U+FE0F): a class of them is what it means.
// eslint-disable-next-line no-misleading-character-class -- RFC 4518's table, one code point at a time
const MAP_TO_NOTHING = /[\u0000-\u0008\u000e-\u001f\u007f-\u0084\u0086-\u009f\u00ad\u034f\u06dd\u070f\u1806\u180b-\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2063\u206a-\u206f\ufe00-\ufe0f\ufeff\ufff9-\ufffc]/g
const MAP_TO_SPACE = /[\t\n\v\f\r\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/g
const PLAIN_ASCII = /^[\x20-\x7e]*$/
const NEEDS_KEY_ESCAPE = /[\\,+]|^#/
/* eslint-enable no-control-regex */

/**
 * RFC 4518 string preparation for caseIgnoreMatch, approximated: map, case-fold (upper then lower, so that
 * 'ß' meets 'SS'), NFKC, then insignificant spaces (trim, collapse runs). Printable ASCII takes a fast path with
 * the same result.
 */
function prep (v: string): string {
  let s = PLAIN_ASCII.test(v)
    ? v.toLowerCase()
    : v.replace(MAP_TO_NOTHING, '').replace(MAP_TO_SPACE, ' ').toUpperCase().toLowerCase().normalize('NFKC')
  s = s.trim()
  if (s.includes('  ')) s = s.replace(/ {2,}/g, ' ')
  return s
}

function avaKey (ava: Ava): string {
  if (isHexAva(ava)) return ava.oid + '=' + ava.value.toLowerCase()
  // Escape the key's own separators, and a leading '#' so that no string value meets a hex value.
  const p = prep(ava.value)
  return ava.oid + '=' + (NEEDS_KEY_ESCAPE.test(p) ? p.replace(/[\\,+]|^#/g, '\\$&') : p)
}

/**
 * A canonical comparison key: equal keys mean equal names. Types by OID, string values prepared as in RFC 4518
 * (case, spaces, compatibility forms; the string type of the encoding does not matter), non-string values by their
 * DER, AVAs inside an RDN sorted, RDN order kept. Use it as a Map key to find a certificate by issuer.
 */
export function dnKey (dn: Dn): string {
  let key = ''
  for (let i = 0; i < dn.length; i++) {
    const rdn = dn[i] as Rdn
    if (i > 0) key += ','
    key += rdn.length === 1 ? avaKey(rdn[0] as Ava) : rdn.map(avaKey).sort().join('+')
  }
  return key
}

/** Whether two names are the same name (dnKey equality). */
export function dnEquals (a: Dn, b: Dn): boolean {
  return a.length === b.length && dnKey(a) === dnKey(b)
}

/**
 * A minimal DER codec: just what X.509 certificates and distinguished names need.
 *
 * The reader is strict (DER, not BER): indefinite lengths, non-minimal lengths, non-minimal INTEGERs, padded OID
 * arcs, multi-byte tags and trailing bytes are rejected, because a lenient parser lets two different byte strings
 * mean the same certificate or name. Errors are `PixProxyError(Errors.DER_INVALID)`; callers wrap them in the error
 * of their own layer (CERT_PARSE, DN_PARSE) with the DER error as `cause`.
 */
import { isUtf8 } from 'node:buffer'
import { Errors, PixProxyError } from '../errors.ts'

/** Identifier octets of the universal types used here (class universal; SEQUENCE and SET with the constructed bit). */
export const Tag = Object.freeze({
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  NUMERIC_STRING: 0x12,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  VISIBLE_STRING: 0x1a,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31
})

/** One decoded TLV. `value` and `raw` are views into the input buffer (no copy). */
export interface Tlv {
  /** The identifier octet: class (bits 8-7), constructed (bit 6) and tag number (bits 5-1, always < 31 here). */
  readonly tag: number
  /** The contents octets. */
  readonly value: Buffer
  /** The whole encoding: identifier, length and contents. */
  readonly raw: Buffer
}

function fail (why: string): never {
  throw new PixProxyError(Errors.DER_INVALID, [why])
}

function tagName (tag: number): string {
  return '0x' + tag.toString(16).padStart(2, '0')
}

/** Reads the TLV that starts at `offset`; the buffer may continue after it. */
export function readTlv (buf: Buffer, offset = 0): Tlv {
  if (offset >= buf.length) fail(`truncated: no tag at offset ${offset}`)
  const tag = buf[offset] as number
  if ((tag & 0x1f) === 0x1f) fail(`multi-byte tag at offset ${offset} is not supported`)
  let pos = offset + 1
  if (pos >= buf.length) fail(`truncated: no length at offset ${pos}`)
  const first = buf[pos++] as number
  let length = first
  if (first === 0x80) fail(`indefinite length at offset ${pos - 1}`)
  if (first > 0x80) {
    const n = first & 0x7f
    if (n > 4) fail(`length of ${n} octets at offset ${pos - 1}`)
    if (pos + n > buf.length) fail(`truncated length at offset ${pos - 1}`)
    if (buf[pos] === 0) fail(`non-minimal length at offset ${pos - 1}`)
    length = 0
    for (let i = 0; i < n; i++) length = length * 256 + (buf[pos++] as number)
    if (length < 0x80) fail(`non-minimal length at offset ${offset + 1}`)
  }
  if (pos + length > buf.length) fail(`truncated: ${tagName(tag)} at offset ${offset} needs ${length} octets, ${buf.length - pos} left`)
  return { tag, value: buf.subarray(pos, pos + length), raw: buf.subarray(offset, pos + length) }
}

/** Decodes a buffer that must hold exactly one TLV. */
export function decode (buf: Buffer): Tlv {
  const tlv = readTlv(buf, 0)
  if (tlv.raw.length !== buf.length) fail(`${buf.length - tlv.raw.length} trailing octets after the ${tagName(tlv.tag)} element`)
  return tlv
}

/** The elements inside a constructed TLV (SEQUENCE, SET, explicit context tag); they must fill it exactly. */
export function children (tlv: Tlv): Tlv[] {
  if ((tlv.tag & 0x20) === 0) fail(`${tagName(tlv.tag)} is not constructed`)
  const out: Tlv[] = []
  let offset = 0
  while (offset < tlv.value.length) {
    const child = readTlv(tlv.value, offset)
    out.push(child)
    offset += child.raw.length
  }
  return out
}

/** Returns `tlv` when it carries `tag`, else throws naming `what` (e.g. 'certificate serial number'). */
export function expectTag (tlv: Tlv | undefined, tag: number, what: string): Tlv {
  if (tlv === undefined) fail(`missing ${what}`)
  if (tlv.tag !== tag) fail(`${what}: expected tag ${tagName(tag)}, found ${tagName(tlv.tag)}`)
  return tlv
}

/** A context-specific tag number as an identifier octet, constructed (EXPLICIT or structured) or primitive. */
export function contextTag (n: number, constructed: boolean): number {
  return 0x80 | (constructed ? 0x20 : 0) | n
}

export function readBoolean (tlv: Tlv): boolean {
  expectTag(tlv, Tag.BOOLEAN, 'BOOLEAN')
  if (tlv.value.length !== 1) fail('BOOLEAN of length ' + tlv.value.length)
  const b = tlv.value[0]
  if (b !== 0 && b !== 0xff) fail('BOOLEAN neither 0x00 nor 0xff')
  return b === 0xff
}

/** An INTEGER as a bigint (two's complement, so negative values come out negative). */
export function readInteger (tlv: Tlv): bigint {
  expectTag(tlv, Tag.INTEGER, 'INTEGER')
  const v = tlv.value
  if (v.length === 0) fail('empty INTEGER')
  const b0 = v[0] as number
  if (v.length > 1) {
    const b1 = v[1] as number
    if ((b0 === 0 && b1 < 0x80) || (b0 === 0xff && b1 >= 0x80)) fail('non-minimal INTEGER')
  }
  const n = BigInt('0x' + v.toString('hex'))
  return b0 >= 0x80 ? n - (1n << BigInt(v.length * 8)) : n
}

/** An OBJECT IDENTIFIER as a dotted string ('1.2.840.113549.1.1.11'). Arcs may exceed 2^53 (2.25.<uuid>). */
export function readOid (tlv: Tlv): string {
  expectTag(tlv, Tag.OID, 'OBJECT IDENTIFIER')
  const v = tlv.value
  if (v.length === 0) fail('empty OBJECT IDENTIFIER')
  const arcs: string[] = []
  let acc = 0n
  let start = true
  for (let i = 0; i < v.length; i++) {
    const b = v[i] as number
    if (start && b === 0x80) fail('OBJECT IDENTIFIER arc with a leading 0x80 octet')
    acc = (acc << 7n) | BigInt(b & 0x7f)
    start = (b & 0x80) === 0
    if (!start) continue
    if (arcs.length === 0) {
      if (acc < 40n) arcs.push('0', acc.toString())
      else if (acc < 80n) arcs.push('1', (acc - 40n).toString())
      else arcs.push('2', (acc - 80n).toString())
    } else {
      arcs.push(acc.toString())
    }
    acc = 0n
  }
  if (!start) fail('truncated OBJECT IDENTIFIER')
  return arcs.join('.')
}

/** A BIT STRING: its octets and the number of unused bits in the last one (which must be zero bits). */
export function readBitString (tlv: Tlv): { readonly unusedBits: number, readonly bytes: Buffer } {
  expectTag(tlv, Tag.BIT_STRING, 'BIT STRING')
  const v = tlv.value
  if (v.length === 0) fail('empty BIT STRING')
  const unusedBits = v[0] as number
  if (unusedBits > 7 || (unusedBits > 0 && v.length === 1)) fail('BIT STRING with invalid unused-bits count')
  const bytes = v.subarray(1)
  if (unusedBits > 0 && ((bytes[bytes.length - 1] as number) & ((1 << unusedBits) - 1)) !== 0) fail('BIT STRING with non-zero unused bits')
  return { unusedBits, bytes }
}

const STRING_TAGS: ReadonlySet<number> = new Set([Tag.UTF8_STRING, Tag.NUMERIC_STRING, Tag.PRINTABLE_STRING, Tag.T61_STRING,
  Tag.IA5_STRING, Tag.VISIBLE_STRING, Tag.UNIVERSAL_STRING, Tag.BMP_STRING])

/** Whether `tag` is one of the character string types that names use. */
export function isStringTag (tag: number): boolean {
  return STRING_TAGS.has(tag)
}

/**
 * A character string as a JS string. The single-byte types are read as Latin-1 without checking their alphabet:
 * real CAs put '@', '_' or '&' in PrintableStrings, and rejecting those would reject their certificates.
 * TeletexString is read as Latin-1 too (what every certificate library does in practice).
 */
export function readString (tlv: Tlv): string {
  const v = tlv.value
  switch (tlv.tag) {
    case Tag.UTF8_STRING:
      if (!isUtf8(v)) fail('UTF8String is not valid UTF-8')
      return v.toString('utf8')
    case Tag.BMP_STRING: {
      if (v.length % 2 !== 0) fail('BMPString of odd length')
      return Buffer.from(v).swap16().toString('utf16le')
    }
    case Tag.UNIVERSAL_STRING: {
      if (v.length % 4 !== 0) fail('UniversalString length not a multiple of 4')
      let s = ''
      for (let i = 0; i < v.length; i += 4) {
        const cp = v.readUInt32BE(i)
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) fail('UniversalString with an invalid code point')
        s += String.fromCodePoint(cp)
      }
      return s
    }
    default:
      if (!isStringTag(tlv.tag)) fail(`${tagName(tlv.tag)} is not a character string type`)
      return v.toString('latin1')
  }
}

function readDigits (s: string, from: number, count: number): number {
  const part = s.slice(from, from + count)
  if (!/^[0-9]+$/.test(part) || part.length !== count) fail(`bad digits in time "${s}"`)
  return Number(part)
}

/**
 * UTCTime (YYMMDDHHMMSSZ, years 1950-2049 per RFC 5280) or GeneralizedTime (YYYYMMDDHHMMSS[.fff]Z). DER requires
 * UTC ('Z') and seconds; both are enforced.
 */
export function readTime (tlv: Tlv): Date {
  const s = tlv.value.toString('latin1')
  let year: number
  let rest: number
  if (tlv.tag === Tag.UTC_TIME) {
    if (!/^[0-9]{12}Z$/.test(s)) fail(`UTCTime "${s}" is not YYMMDDHHMMSSZ`)
    const yy = readDigits(s, 0, 2)
    year = yy < 50 ? 2000 + yy : 1900 + yy
    rest = 2
  } else if (tlv.tag === Tag.GENERALIZED_TIME) {
    if (!/^[0-9]{14}(\.[0-9]*[1-9])?Z$/.test(s)) fail(`GeneralizedTime "${s}" is not YYYYMMDDHHMMSS[.fff]Z`)
    year = readDigits(s, 0, 4)
    rest = 4
  } else {
    fail(`${tagName(tlv.tag)} is not a time type`)
  }
  const month = readDigits(s, rest, 2)
  const day = readDigits(s, rest + 2, 2)
  const hour = readDigits(s, rest + 4, 2)
  const minute = readDigits(s, rest + 6, 2)
  const second = readDigits(s, rest + 8, 2)
  const dot = s.indexOf('.')
  const ms = dot < 0 ? 0 : Math.floor(Number('0' + s.slice(dot, -1)) * 1000)
  const d = new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms))
  d.setUTCFullYear(year) // Date.UTC maps years 0-99 to 1900-1999
  if (d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day || d.getUTCHours() !== hour ||
    d.getUTCMinutes() !== minute || d.getUTCSeconds() !== second) fail(`time "${s}" is not a valid date`)
  return d
}

// ---------------------------------------------------------------------------------------------------------------
// Writer

function encodeLength (n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

/** One TLV with the given identifier octet around the concatenated contents. */
export function encode (tag: number, ...contents: Buffer[]): Buffer {
  const value = contents.length === 1 ? contents[0] as Buffer : Buffer.concat(contents)
  return Buffer.concat([Buffer.from([tag]), encodeLength(value.length), value])
}

export function encodeSequence (...items: Buffer[]): Buffer {
  return encode(Tag.SEQUENCE, ...items)
}

/** A SET OF in DER order: the element encodings sorted as octet strings (X.690 §11.6). */
export function encodeSet (...items: Buffer[]): Buffer {
  return encode(Tag.SET, ...[...items].sort(Buffer.compare))
}

/** `[n] EXPLICIT` around one encoded element. */
export function encodeExplicit (n: number, inner: Buffer): Buffer {
  return encode(contextTag(n, true), inner)
}

export function encodeBoolean (v: boolean): Buffer {
  return encode(Tag.BOOLEAN, Buffer.from([v ? 0xff : 0]))
}

export function encodeNull (): Buffer {
  return Buffer.from([Tag.NULL, 0])
}

/** Minimal two's-complement contents of an integer (shared by INTEGER and implicit tags over INTEGER). */
export function integerContents (n: bigint): Buffer {
  let hex: string
  if (n >= 0n) {
    hex = n.toString(16)
    if (hex.length % 2 !== 0) hex = '0' + hex
    if (parseInt(hex.slice(0, 1), 16) >= 8) hex = '00' + hex
  } else {
    let bytes = 1
    while (n < -(1n << BigInt(bytes * 8 - 1))) bytes++
    hex = ((1n << BigInt(bytes * 8)) + n).toString(16).padStart(bytes * 2, '0')
  }
  return Buffer.from(hex, 'hex')
}

export function encodeInteger (n: bigint | number): Buffer {
  return encode(Tag.INTEGER, integerContents(BigInt(n)))
}

export function encodeOid (dotted: string): Buffer {
  if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(dotted)) fail(`"${dotted}" is not a dotted OID`)
  const arcs = dotted.split('.').map((a) => BigInt(a))
  const [a0, a1] = arcs as [bigint, bigint]
  if (a0 < 2n && a1 >= 40n) fail(`"${dotted}": second arc must be below 40 under arc ${a0}`)
  const out: number[] = []
  for (const arc of [a0 * 40n + a1, ...arcs.slice(2)]) {
    const group: number[] = [Number(arc & 0x7fn)]
    for (let v = arc >> 7n; v > 0n; v >>= 7n) group.unshift(Number(v & 0x7fn) | 0x80)
    out.push(...group)
  }
  return encode(Tag.OID, Buffer.from(out))
}

export function encodeOctetString (bytes: Buffer): Buffer {
  return encode(Tag.OCTET_STRING, bytes)
}

export function encodeBitString (bytes: Buffer, unusedBits = 0): Buffer {
  return encode(Tag.BIT_STRING, Buffer.from([unusedBits]), bytes)
}

const SINGLE_BYTE_LIMIT: Readonly<Record<number, number>> = {
  [Tag.NUMERIC_STRING]: 0x7f,
  [Tag.PRINTABLE_STRING]: 0x7f,
  [Tag.IA5_STRING]: 0x7f,
  [Tag.VISIBLE_STRING]: 0x7f,
  [Tag.T61_STRING]: 0xff
}

/** A character string of the given string type; the inverse of readString. */
export function encodeString (tag: number, s: string): Buffer {
  switch (tag) {
    case Tag.UTF8_STRING:
      return encode(tag, Buffer.from(s, 'utf8'))
    case Tag.BMP_STRING:
      return encode(tag, Buffer.from(s, 'utf16le').swap16())
    case Tag.UNIVERSAL_STRING: {
      const cps = [...s].map((c) => c.codePointAt(0) as number)
      const buf = Buffer.alloc(cps.length * 4)
      cps.forEach((cp, i) => buf.writeUInt32BE(cp, i * 4))
      return encode(tag, buf)
    }
    default: {
      const limit = SINGLE_BYTE_LIMIT[tag]
      if (limit === undefined) fail(`${tagName(tag)} is not a character string type`)
      for (let i = 0; i < s.length; i++) {
        if (s.charCodeAt(i) > limit) fail(`character U+${s.charCodeAt(i).toString(16).padStart(4, '0')} cannot be encoded as ${tagName(tag)}`)
      }
      return encode(tag, Buffer.from(s, 'latin1'))
    }
  }
}

/** Whether `s` fits a PrintableString (X.680 §41.4). */
export function isPrintableString (s: string): boolean {
  return /^[A-Za-z0-9 '()+,\-./:=?]*$/.test(s)
}

/**
 * A certificate time per RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 (and before 1950),
 * whole seconds (milliseconds are dropped).
 */
export function encodeTime (date: Date): Buffer {
  const t = date.getTime()
  if (!Number.isFinite(t)) fail('invalid Date')
  const year = date.getUTCFullYear()
  if (year < 0 || year > 9999) fail(`year ${year} cannot be encoded`)
  // 2024-01-02T03:04:05.000Z -> 20240102030405
  const digits = new Date(Math.floor(t / 1000) * 1000).toISOString().slice(0, 19).replace(/[-T:]/g, '')
  return year >= 1950 && year < 2050
    ? encode(Tag.UTC_TIME, Buffer.from(digits.slice(2) + 'Z', 'latin1'))
    : encode(Tag.GENERALIZED_TIME, Buffer.from(digits + 'Z', 'latin1'))
}

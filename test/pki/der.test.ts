import t from 'tap'
import {
  children, decode, encode, encodeBitString, encodeInteger, encodeOid, encodeSequence, encodeSet, encodeString,
  encodeTime, readBitString, readInteger, readOid, readString, readTime, readTlv, Tag
} from '../../core/pki/der.ts'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const DER_INVALID = { code: 'PIXPROXY_ERR_DER_INVALID' }

t.test('lengths: short and long form round trip, and the reader refuses BER forms', async (t) => {
  for (const n of [0, 1, 127, 128, 255, 256, 65535, 65536]) {
    const der = encode(Tag.OCTET_STRING, Buffer.alloc(n, 7))
    const tlv = decode(der)
    t.equal(tlv.value.length, n, `length ${n}`)
    t.equal(tlv.raw.length, der.length)
  }
  t.same([...encode(Tag.OCTET_STRING, Buffer.alloc(128)).subarray(0, 3)], [0x04, 0x81, 0x80])
  t.throws(() => decode(hex('30 80 02 01 01 00 00')), DER_INVALID, 'indefinite length')
  t.throws(() => decode(hex('04 81 05 0102030405')), DER_INVALID, 'long form for a short length')
  t.throws(() => decode(hex('04 82 0005 0102030405')), DER_INVALID, 'long form with a leading zero octet')
  t.throws(() => decode(hex('04 05 01020304')), DER_INVALID, 'length past the end')
  t.throws(() => decode(hex('04 01 01 00')), DER_INVALID, 'trailing octets')
  t.throws(() => decode(hex('1f 81 01 00')), DER_INVALID, 'multi-byte tag')
  t.throws(() => decode(hex('04 85 0000000001 00')), DER_INVALID, 'length of more than four octets')
  t.throws(() => decode(Buffer.alloc(0)), DER_INVALID, 'empty input')
})

t.test('children must fill the constructed element exactly', async (t) => {
  const seq = encodeSequence(encodeInteger(1), encodeInteger(2))
  t.same(children(decode(seq)).map(readInteger), [1n, 2n])
  t.throws(() => children(decode(hex('30 03 02 02 01'))), DER_INVALID, 'child overruns its parent')
  t.throws(() => children(decode(hex('04 00'))), DER_INVALID, 'primitive element has no children')
  // readTlv reads one element and leaves the rest to the caller
  t.equal(readTlv(hex('02 01 05 ff'), 0).raw.length, 3)
})

t.test('INTEGER: minimal two\'s complement both ways, non-minimal input rejected', async (t) => {
  const cases: Array<[bigint, string]> = [
    [0n, '020100'], [1n, '020101'], [127n, '02017f'], [128n, '02020080'], [255n, '020200ff'], [256n, '02020100'],
    [-1n, '0201ff'], [-128n, '020180'], [-129n, '0202ff7f'], [-256n, '0202ff00'],
    [2n ** 64n, '0209010000000000000000'], [2n ** 127n - 1n, '02107fffffffffffffffffffffffffffffff']
  ]
  for (const [n, der] of cases) {
    t.equal(encodeInteger(n).toString('hex'), der, `encode ${n}`)
    t.equal(readInteger(decode(hex(der))), n, `decode ${der}`)
  }
  t.throws(() => readInteger(decode(hex('0202007f'))), DER_INVALID, 'leading 0x00 before a positive octet')
  t.throws(() => readInteger(decode(hex('0202ff80'))), DER_INVALID, 'leading 0xff before a negative octet')
  t.throws(() => readInteger(decode(hex('0200'))), DER_INVALID, 'empty INTEGER')
})

t.test('OBJECT IDENTIFIER: dotted round trip including large arcs', async (t) => {
  const cases: Array<[string, string]> = [
    ['1.2.840.113549.1.1.11', '06092a864886f70d01010b'],
    ['2.5.4.3', '0603550403'],
    ['0.9.2342.19200300.100.1.25', '060a0992268993f22c640119'],
    ['2.999.3', '0603883703']
  ]
  for (const [dotted, der] of cases) {
    t.equal(encodeOid(dotted).toString('hex'), der, dotted)
    t.equal(readOid(decode(hex(der))), dotted, der)
  }
  const uuidOid = '2.25.329800735698586629295641978511506172918'
  t.equal(readOid(decode(encodeOid(uuidOid))), uuidOid, 'arc above 2^64 survives a round trip')
  t.throws(() => readOid(decode(hex('0603 2a 80 01'))), DER_INVALID, 'arc padded with 0x80')
  t.throws(() => readOid(decode(hex('0602 2a 86'))), DER_INVALID, 'truncated arc')
  t.throws(() => encodeOid('1.40'), DER_INVALID, 'second arc >= 40 under arc 1')
  t.throws(() => encodeOid('1.02.3'), DER_INVALID, 'leading zero in an arc')
  t.throws(() => encodeOid('3.1'), DER_INVALID, 'first arc above 2')
})

t.test('strings: every name string type decodes, encodes back to the same octets', async (t) => {
  const text = 'João Ação 𝄞'
  for (const tag of [Tag.UTF8_STRING, Tag.BMP_STRING, Tag.UNIVERSAL_STRING]) {
    const der = encodeString(tag, text)
    t.equal(readString(decode(der)), text, `tag ${tag}`)
  }
  t.equal(encodeString(Tag.BMP_STRING, 'Aé').toString('hex'), '1e04004100e9')
  t.equal(readString(decode(hex('1404 4a6fe36f'))), 'João', 'TeletexString read as Latin-1')
  t.equal(readString(decode(hex('1303 612e40'))), 'a.@', 'PrintableString with an out-of-alphabet @ is still read')
  t.throws(() => readString(decode(hex('0c02 c328'))), DER_INVALID, 'invalid UTF-8')
  t.throws(() => readString(decode(hex('1e03 004100'))), DER_INVALID, 'odd-length BMPString')
  t.throws(() => readString(decode(hex('0401 41'))), DER_INVALID, 'OCTET STRING is not a string type')
  t.throws(() => encodeString(Tag.PRINTABLE_STRING, 'ã'), DER_INVALID, 'non-ASCII in PrintableString')
})

t.test('BIT STRING: unused bits are checked', async (t) => {
  t.same(readBitString(decode(encodeBitString(Buffer.from([0x86]), 1))), { unusedBits: 1, bytes: Buffer.from([0x86]) })
  t.throws(() => readBitString(decode(hex('0302 01 87'))), DER_INVALID, 'unused bit set')
  t.throws(() => readBitString(decode(hex('0301 01'))), DER_INVALID, 'unused bits without octets')
  t.throws(() => readBitString(decode(hex('0300'))), DER_INVALID, 'empty')
})

t.test('times: UTCTime through 2049, GeneralizedTime from 2050, strict DER forms', async (t) => {
  const d1 = new Date('2049-12-31T23:59:59.999Z')
  t.equal(encodeTime(d1).toString('latin1').slice(2), '491231235959Z', 'UTCTime, milliseconds dropped')
  t.equal(encodeTime(d1)[0], Tag.UTC_TIME)
  t.equal(readTime(decode(encodeTime(d1))).toISOString(), '2049-12-31T23:59:59.000Z')
  const d2 = new Date('2050-01-01T00:00:00Z')
  t.equal(encodeTime(d2)[0], Tag.GENERALIZED_TIME)
  t.equal(readTime(decode(encodeTime(d2))).toISOString(), d2.toISOString())
  t.equal(readTime(decode(encodeTime(new Date('1950-01-01T00:00:00Z')))).toISOString(), '1950-01-01T00:00:00.000Z')
  t.equal(encodeTime(new Date('1949-12-31T23:59:59Z'))[0], Tag.GENERALIZED_TIME)
  const time = (tag: number, text: string): Buffer => encode(tag, Buffer.from(text, 'latin1'))
  t.equal(readTime(decode(time(Tag.GENERALIZED_TIME, '20240209120000.5Z'))).toISOString(), '2024-02-09T12:00:00.500Z')
  const bad: Array<[number, string]> = [
    [Tag.UTC_TIME, '240229120000+0000'], [Tag.UTC_TIME, '2402291200Z'], [Tag.UTC_TIME, '241331120000Z'],
    [Tag.UTC_TIME, '230229120000Z'], [Tag.GENERALIZED_TIME, '20240209120000.0Z'], [Tag.GENERALIZED_TIME, '20240209120000'],
    [Tag.GENERALIZED_TIME, '202402091200Z'], [Tag.INTEGER, '240229120000Z']
  ]
  for (const [tag, text] of bad) t.throws(() => readTime(decode(time(tag, text))), DER_INVALID, `${tag} ${text}`)
})

t.test('SET OF is written in DER order', async (t) => {
  const a = encodeInteger(2)
  const b = encodeInteger(1)
  t.same(children(decode(encodeSet(a, b))).map(readInteger), [1n, 2n])
})

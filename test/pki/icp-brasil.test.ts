import { execFileSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { createTestPki, issueCertificate, type IssueOptions } from '../../core/pki/ca.ts'
import { encode, encodeInteger, encodeOctetString, encodeString, Tag } from '../../core/pki/der.ts'
import { Oid, type Ava, type Dn } from '../../core/pki/dn.ts'
import { icpBrasilIdentity, IcpOid, isValidCnpj } from '../../core/pki/icp-brasil.ts'
import { parseCertificate, type Certificate } from '../../core/pki/x509.ts'

const pki = createTestPki({ caSubject: 'CN=AC Teste SSL ICP-Brasil, OU=Autoridade Certificadora Raiz Brasileira v10, O=ICP-Brasil, C=BR' })
const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey

const CNPJ = '43142666000197' // the Open Finance certificate standard's example
const ORG = 'OFBBR-d7384bd0-842f-43c5-be02-9d2b2d5efc2c'
const SOFTWARE = 'bc97b8f0-cae0-4f2f-9978-d93f0e56a833'
const FQDN = 'web.conftpp.directory.openbankingbrasil.org.br'

/** One AVA per RDN, in the Open Finance standard's order and string types (its table 9.6), ASN.1 order. */
function ofbSubject (over: Partial<Record<string, string | null>> = {}): Dn {
  const attrs: Array<[string, string, number]> = [
    [Oid.BUSINESS_CATEGORY, 'Private Organization', Tag.UTF8_STRING],
    [IcpOid.JURISDICTION_COUNTRY, 'BR', Tag.PRINTABLE_STRING],
    [Oid.SERIALNUMBER, CNPJ, Tag.PRINTABLE_STRING],
    [Oid.C, 'BR', Tag.PRINTABLE_STRING],
    [Oid.O, 'Chicago Advisory Partners', Tag.UTF8_STRING],
    [Oid.ST, 'SP', Tag.UTF8_STRING],
    [Oid.L, 'Sao Paulo', Tag.UTF8_STRING],
    [Oid.ORGANIZATION_IDENTIFIER, ORG, Tag.UTF8_STRING],
    [Oid.UID, SOFTWARE, Tag.UTF8_STRING],
    [Oid.CN, FQDN, Tag.UTF8_STRING]
  ]
  const out: Ava[][] = []
  for (const [oid, value, tag] of attrs) {
    const v = oid in over ? over[oid] : value
    if (v !== null && v !== undefined) out.push([{ oid, value: v, tag }])
  }
  return out
}

const octet = (s: string): Buffer => encodeOctetString(Buffer.from(s, 'latin1'))
const printable = (s: string): Buffer => encodeString(Tag.PRINTABLE_STRING, s)
const ICP_OTHER_NAMES = [
  { oid: '2.16.76.1.3.2', value: printable('FULANO DE TAL') },
  { oid: IcpOid.OTHERNAME_CNPJ, value: octet(CNPJ) },
  { oid: '2.16.76.1.3.4', value: octet('01011980123456789090000000000000000000000000000000SSPSP') },
  { oid: '2.16.76.1.3.7', value: octet('000000000000') }
]

function issue (o: Partial<IssueOptions> & { subject?: Dn } = {}): Certificate {
  return issueCertificate({
    publicKey: key,
    issuer: pki.ca,
    dnsNames: [FQDN],
    otherNames: ICP_OTHER_NAMES,
    extKeyUsage: ['clientAuth'],
    ...o,
    subject: o.subject ?? ofbSubject()
  })
}

function openssl (args: string[], input: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })
}

/** The subject as OpenSSL reads it: short name (or dotted OID) -> values. */
function opensslSubject (pem: string): Map<string, string[]> {
  const line = openssl(['x509', '-noout', '-subject', '-nameopt', 'RFC2253,sname,-esc_msb'], pem).replace(/^subject=/, '').trim()
  const out = new Map<string, string[]>()
  for (const part of line.split(/(?<!\\),/)) {
    const eq = part.indexOf('=')
    const k = part.slice(0, eq)
    out.set(k, [...(out.get(k) ?? []), part.slice(eq + 1)])
  }
  return out
}

/** The SAN as `openssl asn1parse` dumps it: dNSNames and otherNames (oid, primitive type, value). */
function opensslSan (pem: string): { dns: string[], other: Array<{ oid: string, type: string, value: string }> } {
  const dump = openssl(['asn1parse'], pem).split('\n')
  const i = dump.findIndex((l) => l.includes(':X509v3 Subject Alternative Name'))
  const offset = /^\s*(\d+):/.exec(dump[i + 1] ?? '')?.[1]
  if (offset === undefined) throw new Error('no SAN in the asn1parse dump')
  const san = openssl(['asn1parse', '-strparse', offset], pem).split('\n')
  const dns: string[] = []
  const other: Array<{ oid: string, type: string, value: string }> = []
  for (let j = 0; j < san.length; j++) {
    const l = san[j] as string
    // asn1parse prints an implicit [2] dNSName without its text: count them here, `-ext subjectAltName` shows the names
    if (/prim: cont \[ 2 \]/.test(l)) {
      dns.push(l)
      continue
    }
    const oid = /OBJECT\s+:(2\.16\.76\.1\.3\.\d+)/.exec(l)?.[1]
    if (oid === undefined) continue
    const valueLine = san.slice(j + 1).find((x) => /prim:/.test(x)) as string
    const v = /prim: ([A-Z0-9 ]+?)\s+(?::|\[HEX DUMP\]:)(.*)$/.exec(valueLine)
    const hex = valueLine.includes('[HEX DUMP]:')
    other.push({ oid, type: v?.[1] ?? '?', value: hex ? Buffer.from(v?.[2] ?? '', 'hex').toString('latin1') : v?.[2] ?? '' })
  }
  return { dns, other }
}

t.test('isValidCnpj: check digits, numeric and alphanumeric', async (t) => {
  t.ok(isValidCnpj('43142666000197'))
  t.ok(isValidCnpj('11222333000181'))
  t.ok(isValidCnpj('12ABC34501DE35'), 'alphanumeric CNPJ (IN RFB 2.229/2024 example)')
  t.notOk(isValidCnpj('11222333000182'), 'wrong second check digit')
  t.notOk(isValidCnpj('11222333000191'), 'wrong first check digit')
  t.notOk(isValidCnpj('00000000000000'), 'repeated digits')
  t.notOk(isValidCnpj('1122233300018'), '13 digits')
  t.notOk(isValidCnpj('11.222.333/0001-81'), 'punctuation')
  t.notOk(isValidCnpj('12abc34501de35'), 'lower case letters')
})

t.test('a well-formed Open Finance client certificate, read as openssl reads it', async (t) => {
  const cert = issue()
  const id = icpBrasilIdentity(cert)
  t.same(id, {
    cnpj: CNPJ,
    organisationId: ORG,
    softwareStatementId: SOFTWARE,
    businessCategory: 'Private Organization',
    jurisdictionCountry: 'BR',
    commonName: FQDN,
    dnsNames: [FQDN],
    otherNames: [
      { oid: '2.16.76.1.3.2', value: 'FULANO DE TAL' },
      { oid: '2.16.76.1.3.3', value: CNPJ },
      { oid: '2.16.76.1.3.4', value: '01011980123456789090000000000000000000000000000000SSPSP' },
      { oid: '2.16.76.1.3.7', value: '000000000000' }
    ],
    problems: []
  })

  const subj = opensslSubject(cert.pem)
  t.same(subj.get('serialNumber'), [id.cnpj], 'serialNumber')
  t.same(subj.get('organizationIdentifier'), [id.organisationId], 'organizationIdentifier')
  t.same(subj.get('UID'), [id.softwareStatementId], 'UID')
  t.same(subj.get('businessCategory'), [id.businessCategory], 'businessCategory')
  t.same(subj.get('jurisdictionC'), [id.jurisdictionCountry], 'jurisdictionCountryName')
  t.same(subj.get('CN'), [id.commonName], 'CN')

  const san = opensslSan(cert.pem)
  t.equal(san.dns.length, id.dnsNames.length, 'as many dNSNames as openssl sees')
  const text = openssl(['x509', '-noout', '-ext', 'subjectAltName'], cert.pem)
  for (const d of id.dnsNames) t.match(text, `DNS:${d}`, `openssl -ext shows DNS:${d}`)
  t.same(san.other.map((o) => o.oid), id.otherNames.map((o) => o.oid), 'otherName OIDs in order')
  for (const [i, o] of san.other.entries()) {
    const ours = id.otherNames[i]?.value ?? ''
    t.equal(o.value, ours, `otherName ${o.oid} (${o.type})`)
    t.equal(o.type, o.oid === '2.16.76.1.3.2' ? 'PRINTABLESTRING' : 'OCTET STRING', `otherName ${o.oid} type as issued`)
  }
})

t.test('odd certificates: nulls and problems, never a throw', async (t) => {
  const cases: Array<{ name: string, cert: () => Certificate, expect: Record<string, unknown>, problem?: RegExp }> = [
    {
      name: 'no SAN: CNPJ from the subject serialNumber',
      cert: () => issue({ dnsNames: [], otherNames: [] }),
      expect: { cnpj: CNPJ, dnsNames: [], otherNames: [] },
      problem: /no subjectAltName/
    },
    {
      name: 'bad check digits in the SAN CNPJ: the subject one stands',
      cert: () => issue({ otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: octet('43142666000198') }] }),
      expect: { cnpj: CNPJ },
      problem: /SAN otherName 2\.16\.76\.1\.3\.3 "43142666000198" is not a valid CNPJ/
    },
    {
      name: 'bad CNPJ in both places',
      cert: () => issue({ subject: ofbSubject({ [Oid.SERIALNUMBER]: '4314266600019' }), otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: octet('43142666000198') }] }),
      expect: { cnpj: null },
      problem: /subject serialNumber "4314266600019" is not a valid CNPJ/
    },
    {
      name: 'SAN and subject CNPJ differ',
      cert: () => issue({ otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: octet('11222333000181') }] }),
      expect: { cnpj: null },
      problem: /CNPJ mismatch: SAN otherName 2\.16\.76\.1\.3\.3 says 11222333000181, subject serialNumber says 43142666000197/
    },
    {
      name: 'no CNPJ anywhere',
      cert: () => issue({ subject: ofbSubject({ [Oid.SERIALNUMBER]: null }), otherNames: [] }),
      expect: { cnpj: null },
      problem: /no CNPJ/
    },
    {
      name: 'SAN CNPJ only, as a PrintableString',
      cert: () => issue({ subject: ofbSubject({ [Oid.SERIALNUMBER]: null }), otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: printable(CNPJ) }] }),
      expect: { cnpj: CNPJ, problems: [] }
    },
    {
      name: 'the SAN CNPJ twice',
      cert: () => issue({ otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: octet(CNPJ) }, { oid: IcpOid.OTHERNAME_CNPJ, value: octet('11222333000181') }] }),
      expect: { cnpj: CNPJ },
      problem: /2\.16\.76\.1\.3\.3 \(CNPJ\) appears 2 times/
    },
    {
      name: 'duplicate UID',
      cert: () => issue({ subject: [...ofbSubject(), [{ oid: Oid.UID, value: '00000000-0000-0000-0000-000000000000', tag: Tag.UTF8_STRING }]] }),
      expect: { softwareStatementId: null, organisationId: ORG },
      problem: /subject UID appears 2 times/
    },
    {
      name: 'duplicate organizationIdentifier inside one multi-valued RDN',
      cert: () => issue({ subject: [...ofbSubject({ [Oid.ORGANIZATION_IDENTIFIER]: null }), [{ oid: Oid.ORGANIZATION_IDENTIFIER, value: ORG, tag: Tag.UTF8_STRING }, { oid: Oid.ORGANIZATION_IDENTIFIER, value: 'OFBBR-00000000-0000-0000-0000-000000000000', tag: Tag.UTF8_STRING }]] }),
      expect: { organisationId: null },
      problem: /organizationIdentifier appears 2 times/
    },
    {
      name: 'otherName with a wrong type (INTEGER)',
      cert: () => issue({ otherNames: [{ oid: '2.16.76.1.3.2', value: encodeInteger(42) }, { oid: IcpOid.OTHERNAME_CNPJ, value: octet(CNPJ) }] }),
      expect: { cnpj: CNPJ, otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: CNPJ }] },
      problem: /SAN otherName 2\.16\.76\.1\.3\.2 value has type 0x02/
    },
    {
      name: 'otherName [0] holding two elements',
      cert: () => issue({ otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: Buffer.concat([octet(CNPJ), octet(CNPJ)]) }] }),
      expect: { cnpj: CNPJ, otherNames: [] },
      problem: /does not hold exactly one element/
    },
    {
      name: 'otherName with truncated DER inside',
      cert: () => issue({ otherNames: [{ oid: '2.16.76.1.3.2', value: Buffer.from([0x04, 0x05, 0x31]) }] }),
      expect: { cnpj: CNPJ, otherNames: [] },
      problem: /a SAN entry is not valid DER/
    },
    {
      name: 'otherName outside the ICP-Brasil arc is not reported',
      cert: () => issue({ otherNames: [{ oid: '1.3.6.1.4.1.311.20.2.3', value: encodeString(Tag.UTF8_STRING, 'upn@example') }] }),
      expect: { otherNames: [], cnpj: CNPJ, problems: [] }
    },
    {
      name: 'control characters in CN and an otherName',
      cert: () => issue({ subject: ofbSubject({ [Oid.CN]: 'a\r\nX-Injected: 1' }), otherNames: [{ oid: '2.16.76.1.3.2', value: octet('x\ny') }] }),
      expect: { commonName: null, otherNames: [] },
      problem: /subject commonName contains control characters/
    },
    {
      name: 'UID that is not a character string',
      // a SEQUENCE: OpenSSL takes it in a name (it refuses an INTEGER there)
      cert: () => issue({ subject: [...ofbSubject({ [Oid.UID]: null }), [{ oid: Oid.UID, value: '#3000', tag: Tag.SEQUENCE }]] }),
      expect: { softwareStatementId: null },
      problem: /subject UID is not a character string/
    },
    {
      name: 'off-shape Open Finance values are kept and named',
      cert: () => issue({ subject: ofbSubject({ [Oid.ORGANIZATION_IDENTIFIER]: 'NTRBR-43142666000197', [Oid.UID]: 'software-1', [Oid.BUSINESS_CATEGORY]: 'Bank', [IcpOid.JURISDICTION_COUNTRY]: 'PT' }) }),
      expect: { organisationId: 'NTRBR-43142666000197', softwareStatementId: 'software-1', businessCategory: 'Bank', jurisdictionCountry: 'PT' },
      problem: /organizationIdentifier is not "OFBBR-<uuid>"/
    },
    {
      name: 'a plain TLS certificate (no Open Finance attributes)',
      cert: () => pki.issue('CN=client.example, O=Example, C=BR', { publicKey: key, dnsNames: ['client.example'] }).certificate,
      expect: { cnpj: null, organisationId: null, softwareStatementId: null, businessCategory: null, jurisdictionCountry: null, commonName: 'client.example', dnsNames: ['client.example'] },
      problem: /no CNPJ/
    }
  ]
  for (const c of cases) {
    let cert: Certificate
    try { cert = c.cert() } catch (e) { t.fail(`${c.name}: ${String(e)}`); continue }
    const id = icpBrasilIdentity(cert)
    t.match(id, c.expect, c.name)
    for (const [k, v] of Object.entries(c.expect)) if (Array.isArray(v)) t.same((id as unknown as Record<string, unknown>)[k], v, `${c.name}: ${k} exactly`)
    if (c.problem !== undefined) t.ok(id.problems.some((p) => c.problem?.test(p)), `${c.name}: problem ${String(c.problem)} in ${JSON.stringify(id.problems)}`)
  }
})

t.test('fuzz: corrupted certificates that still parse never make it throw', async (t) => {
  const base = issue().der
  let seed = 0x2545f491 // fixed seed: the same mutations on every run
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return seed % n
  }
  let parsed = 0
  for (let i = 0; i < 3000; i++) {
    const der = Buffer.from(base)
    for (let k = 0, n = 1 + rand(3); k < n; k++) der[rand(der.length)] = rand(256)
    let cert: Certificate
    try {
      cert = parseCertificate(der)
    } catch {
      continue
    }
    parsed++
    const id = icpBrasilIdentity(cert)
    if (!Array.isArray(id.problems)) t.fail('no problems array')
  }
  t.ok(parsed > 100, `${parsed} corrupted certificates parsed and were read without a throw`)
})

t.test('hostile SAN bytes in a parsed certificate', async (t) => {
  // An otherName whose [0] holds a SEQUENCE with a nested truncated element: readable outer DER, bad inner DER.
  const nested = encode(Tag.SEQUENCE, Buffer.from([0x04, 0x7f, 0x00]))
  const id = icpBrasilIdentity(issue({ otherNames: [{ oid: IcpOid.OTHERNAME_CNPJ, value: nested }] }))
  t.equal(id.cnpj, CNPJ)
  t.ok(id.problems.some((p) => /2\.16\.76\.1\.3\.3 value has type 0x30/.test(p)), JSON.stringify(id.problems))
})

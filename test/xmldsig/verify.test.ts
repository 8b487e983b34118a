import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { TrustStore, verifyXml, VerifyCodes } from '../../core/xmldsig/index.ts'
import { issueCertificate } from '../../core/pki/ca.ts'
import { Errors } from '../../core/errors.ts'
import type { VerifyResult } from '../../core/xmldsig/index.ts'
import { createClaimRequest, createEntryRequest, pacs008, pibr001 } from '../../tools/samples/messages.ts'
import { createXmldsigPki } from '../helpers/pki.ts'
import { independentSign, lxmlSpiDigests } from '../helpers/independent.ts'

const pki = createXmldsigPki()
const { participant } = pki
const trust = pki.trustStore(participant, pki.bcb, pki.expired, pki.notYetValid)

/** Replaces exactly one occurrence of `from`; a test whose edit silently did nothing would prove nothing. */
function edit (xml: string, from: string | RegExp, to: string): string {
  const hits = typeof from === 'string' ? xml.split(from).length - 1 : [...xml.matchAll(new RegExp(from.source, 'g' + from.flags.replace('g', '')))].length
  if (hits !== 1) throw new Error(`expected one ${String(from)} in the message, found ${hits}`)
  return xml.replace(from, to)
}

/** The DigestValues as written in the signature, in Reference order. */
function digestValues (xml: string): string[] {
  return [...xml.matchAll(/<ds:DigestValue>([^<]+)<\/ds:DigestValue>/g)].map((m) => m[1] as string)
}

function refs (r: VerifyResult): Array<[string, boolean]> {
  return r.references.map((x) => [x.target, x.digestValid])
}

const spiUnsigned = pacs008({ remittance: 'Aluguel de março' }).xml
const spiSigned = await participant.xmlSigner.sign(spiUnsigned, 'spi')
const dictSigned = await participant.xmlSigner.sign(createEntryRequest({ key: 'ana@example.com.br' }).xml, 'dict')

t.test('a valid SPI and DICT signature: every field of the result', async (t) => {
  const r = verifyXml(spiSigned, { trustStore: trust })
  t.match(r, {
    valid: true,
    code: 'VALID',
    profile: 'spi',
    signatureValid: true,
    signer: {
      issuer: participant.certificate.issuerString,
      serial: participant.certificate.serialDecimal,
      subject: participant.certificate.subjectString,
      notBefore: participant.certificate.notBefore.toISOString(),
      notAfter: participant.certificate.notAfter.toISOString(),
      fingerprint256: participant.certificate.fingerprint256
    }
  })
  // Each computed digest is the one the signer wrote (so a valid signature's digests name the signed content).
  const [ki, hdr, body] = digestValues(spiSigned)
  t.same(r.references, [
    { uri: '#key-info-id', target: 'KeyInfo', digestValid: true, digest: ki },
    { uri: '', target: 'AppHdr', digestValid: true, digest: hdr },
    { uri: null, target: 'Document', digestValid: true, digest: body }
  ])
  const d = verifyXml(dictSigned, { trustStore: trust })
  t.match(d, { valid: true, code: 'VALID', profile: 'dict', signatureValid: true, signer: { subject: participant.certificate.subjectString } })
  const [dki, ddoc] = digestValues(dictSigned)
  t.same(d.references, [
    { uri: '#key-info-id', target: 'KeyInfo', digestValid: true, digest: dki },
    { uri: '', target: 'document', digestValid: true, digest: ddoc }
  ])
  t.same(verifyXml(Buffer.from(spiSigned, 'utf8'), { trustStore: trust }).code, 'VALID', 'bytes in, same answer')
})

t.test('every outcome code is reachable, and each scenario gets its own code', async (t) => {
  const docId = edit(spiSigned, '<Document>', '<Document Id="x">')
  const scenarios: Array<[string, VerifyResult]> = [
    ['VALID', verifyXml(spiSigned, { trustStore: trust })],
    ['DIGESTS_VALID', verifyXml(spiSigned, { digestsOnly: true })],
    ['XML_MALFORMED', verifyXml(spiSigned.replace('</Envelope>', ''), { trustStore: trust })],
    ['XML_DTD_FORBIDDEN', verifyXml('<!DOCTYPE Envelope>' + spiSigned.replace(/^<\?xml[^>]*>/, ''), { trustStore: trust })],
    ['XML_LIMIT_EXCEEDED', verifyXml(spiSigned, { trustStore: trust, limits: { maxBytes: 1024, maxDepth: 64, maxAttributes: 64, maxElements: 1000 } })],
    ['XML_DUPLICATE_ID', verifyXml(edit(docId, '<AppHdr>', '<AppHdr Id="x">'), { trustStore: trust })],
    ['SIGNATURE_MISSING', verifyXml(spiUnsigned, { trustStore: trust })],
    ['PROFILE_VIOLATION', verifyXml(spiSigned, { trustStore: trust, profile: 'dict' })],
    ['DIGEST_MISMATCH', verifyXml(edit(spiSigned, 'Aluguel de março', 'Aluguel de abril'), { trustStore: trust })],
    ['CERT_UNKNOWN', verifyXml(spiSigned, { trustStore: pki.trustStore(pki.bcb) })],
    ['SIGNATURE_INVALID', verifyXml(spiSigned, { trustStore: pki.trustStore(pki.participantTwin) })],
    ['CERT_EXPIRED', verifyXml(await pki.expired.xmlSigner.sign(spiUnsigned, 'spi'), { trustStore: trust })],
    ['CERT_NOT_YET_VALID', verifyXml(await pki.notYetValid.xmlSigner.sign(spiUnsigned, 'spi'), { trustStore: trust })]
  ]
  for (const [code, r] of scenarios) {
    t.equal(r.code, code, `${code}: ${r.message}`)
    t.equal(r.valid, code === 'VALID' || code === 'DIGESTS_VALID', `${code}: valid flag`)
    t.type(r.message, 'string')
    t.ok(r.message.length > 0, `${code}: says why`)
  }
  t.same(scenarios.map(([c]) => c).sort(), Object.values(VerifyCodes).sort(), 'the scenarios cover every code exactly once')
})

t.test('unknown certificate: CERT_UNKNOWN, the signature value unchecked', async (t) => {
  for (const options of [{ trustStore: pki.trustStore(pki.bcb) }, {}]) {
    const r = verifyXml(spiSigned, options)
    t.equal(r.code, 'CERT_UNKNOWN', r.message)
    t.equal(r.valid, false)
    t.equal(r.signatureValid, null, 'not checked: no key to check it with')
    t.same(refs(r), [['KeyInfo', true], ['AppHdr', true], ['Document', true]], 'the digests were still checked')
    t.same(r.signer, { issuer: participant.certificate.issuerString, serial: participant.certificate.serialDecimal }, 'who it claims to be')
    t.match(r.message, participant.certificate.serialDecimal)
  }
})

t.test('wrong key: a trusted certificate with the same issuer and serial but another key gives SIGNATURE_INVALID', async (t) => {
  const r = verifyXml(spiSigned, { trustStore: pki.trustStore(pki.participantTwin) })
  t.equal(r.code, 'SIGNATURE_INVALID', r.message)
  t.equal(r.signatureValid, false)
  t.same(refs(r), [['KeyInfo', true], ['AppHdr', true], ['Document', true]])
  t.equal(r.signer?.fingerprint256, pki.participantTwin.certificate.fingerprint256, 'names the certificate it tried')
  t.not(r.signer?.fingerprint256, participant.certificate.fingerprint256)
  const d = verifyXml(dictSigned, { trustStore: pki.trustStore(pki.participantTwin) })
  t.equal(d.code, 'SIGNATURE_INVALID', d.message)
})

t.test('tampered Document, AppHdr or KeyInfo: DIGEST_MISMATCH naming that reference and only that one', async (t) => {
  const cases: Array<[string, string, [string, boolean][]]> = [
    ['Document', edit(spiSigned, '<IntrBkSttlmAmt Ccy="BRL">150.75<', '<IntrBkSttlmAmt Ccy="BRL">15075.00<'),
      [['KeyInfo', true], ['AppHdr', true], ['Document', false]]],
    ['Document attribute', edit(spiSigned, 'Ccy="BRL"', 'Ccy="USD"'), [['KeyInfo', true], ['AppHdr', true], ['Document', false]]],
    ['AppHdr', edit(spiSigned, '<Id>00038166</Id>', '<Id>99999010</Id>'), [['KeyInfo', true], ['AppHdr', false], ['Document', true]]],
    // White space inside X509IssuerName: the issuer still parses to the same DN (so the certificate is found and the
    // signature value checks out), but KeyInfo's canonical bytes changed.
    ['KeyInfo', edit(spiSigned, '<ds:X509IssuerName>', '<ds:X509IssuerName> '), [['KeyInfo', false], ['AppHdr', true], ['Document', true]]]
  ]
  for (const [what, xml, expected] of cases) {
    const r = verifyXml(xml, { trustStore: trust })
    t.equal(r.code, 'DIGEST_MISMATCH', `${what}: ${r.message}`)
    t.equal(r.valid, false)
    t.same(refs(r), expected, `${what}: which reference failed`)
    t.equal(r.signatureValid, true, `${what}: SignedInfo itself is intact`)
    const bad = expected.find(([, ok]) => !ok)?.[0] ?? ''
    t.match(r.message, bad, `${what}: the message names ${bad}`)
  }
  const d = verifyXml(edit(dictSigned, '<KeyType>EMAIL</KeyType>', '<KeyType>PHONE</KeyType>'), { trustStore: trust })
  t.equal(d.code, 'DIGEST_MISMATCH', d.message)
  t.same(refs(d), [['KeyInfo', true], ['document', false]])
  t.not(d.references[1]?.digest, digestValues(dictSigned)[1], 'the digest reported is the one computed, not the one written')
  // With the certificate unknown, the digest failure still wins and the signature value stays unchecked.
  const u = verifyXml(edit(spiSigned, 'Aluguel de março', 'Aluguel de abril'), { trustStore: pki.trustStore(pki.bcb) })
  t.equal(u.code, 'DIGEST_MISMATCH', u.message)
  t.equal(u.signatureValid, null)
  t.match(u.message, /Document/)
})

t.test('tampered SignatureValue or SignedInfo: SIGNATURE_INVALID with every digest intact', async (t) => {
  const value = /<ds:SignatureValue>([^<]+)</.exec(spiSigned)?.[1] ?? ''
  const flipped = (value[10] === 'A' ? 'B' : 'A')
  const r = verifyXml(edit(spiSigned, value, value.slice(0, 10) + flipped + value.slice(11)), { trustStore: trust })
  t.equal(r.code, 'SIGNATURE_INVALID', r.message)
  t.equal(r.signatureValid, false)
  t.same(refs(r), [['KeyInfo', true], ['AppHdr', true], ['Document', true]])

  // The classic forgery: alter the Document and update its DigestValue to match; only the signature value can tell.
  const forged = edit(spiSigned, 'Aluguel de março', 'Aluguel de abril')
  const newDigest = (await lxmlSpiDigests(forged)).document
  const oldDigest = [...spiSigned.matchAll(/<ds:DigestValue>([^<]+)</g)][2]?.[1] ?? ''
  const f = verifyXml(edit(forged, oldDigest, newDigest), { trustStore: trust })
  t.equal(f.code, 'SIGNATURE_INVALID', f.message)
  t.same(refs(f), [['KeyInfo', true], ['AppHdr', true], ['Document', true]], 'the digest was made to match')
  t.equal(f.signatureValid, false)
})

t.test('expired and not-yet-valid certificates: their own codes, with the signature value checked', async (t) => {
  const expired = verifyXml(await pki.expired.xmlSigner.sign(spiUnsigned, 'spi'), { trustStore: trust })
  t.match(expired, { valid: false, code: 'CERT_EXPIRED', signatureValid: true, signer: { notAfter: pki.expired.certificate.notAfter.toISOString() } })
  t.same(refs(expired), [['KeyInfo', true], ['AppHdr', true], ['Document', true]])
  const future = verifyXml(await pki.notYetValid.xmlSigner.sign(dictSigned.replace(/<ds:Signature[\s\S]*<\/ds:Signature>/, ''), 'dict'), { trustStore: trust })
  t.match(future, { valid: false, code: 'CERT_NOT_YET_VALID', signatureValid: true, signer: { notBefore: pki.notYetValid.certificate.notBefore.toISOString() } })
  // A broken signature by an expired certificate is reported as broken, not as expired.
  const brokenExpired = (await pki.expired.xmlSigner.sign(spiUnsigned, 'spi')).replace(/<ds:SignatureValue>[A-Za-z0-9+/]{4}/, '<ds:SignatureValue>AAAA')
  t.equal(verifyXml(brokenExpired, { trustStore: trust }).code, 'SIGNATURE_INVALID')
})

t.test('the now option is the clock for validity', async (t) => {
  const c = participant.certificate
  const at = (d: Date): VerifyResult => verifyXml(spiSigned, { trustStore: trust, now: d })
  t.equal(at(new Date(c.notAfter.getTime() + 1000)).code, 'CERT_EXPIRED')
  t.equal(at(new Date(c.notBefore.getTime() - 1000)).code, 'CERT_NOT_YET_VALID')
  t.equal(at(c.notAfter).code, 'VALID', 'notAfter itself is inside the validity period')
  t.equal(at(c.notBefore).code, 'VALID', 'notBefore itself is inside the validity period')
  const expiredSigned = await pki.expired.xmlSigner.sign(spiUnsigned, 'spi')
  const inside = new Date((pki.expired.certificate.notBefore.getTime() + pki.expired.certificate.notAfter.getTime()) / 2)
  t.equal(verifyXml(expiredSigned, { trustStore: trust, now: inside }).code, 'VALID', 'an expired certificate, at a time it was valid')
})

t.test('an invalid clock does not make an expired certificate valid', async (t) => {
  // new Date(NaN) compares false with everything: a validity check written as "now > notAfter" lets it through.
  const expiredSigned = await pki.expired.xmlSigner.sign(spiUnsigned, 'spi')
  let code: string
  try {
    code = verifyXml(expiredSigned, { trustStore: trust, now: new Date(Number.NaN) }).code
  } catch (err) {
    code = `threw ${(err as Error).name}`
  }
  t.not(code, 'VALID', `an Invalid Date as now: ${code}`)
})

t.test('the trust store refuses keys the verifier would never accept', async (t) => {
  for (const [what, key] of [
    ['RSA-1024', generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey],
    ['EC P-256', generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey]
  ] as const) {
    const certificate = issueCertificate({ subject: `CN=${what}`, publicKey: key, issuer: pki.ca })
    t.throws(() => new TrustStore([certificate]), { code: Errors.CERT_UNSUITABLE.code }, what)
  }
})

t.test('digestsOnly: DIGESTS_VALID without a trust store, DIGEST_MISMATCH when content changed', async (t) => {
  const r = verifyXml(spiSigned, { digestsOnly: true })
  t.match(r, { valid: true, code: 'DIGESTS_VALID', signatureValid: null, profile: 'spi', signer: { issuer: participant.certificate.issuerString, serial: participant.certificate.serialDecimal } })
  t.equal(r.signer?.subject, undefined, 'no certificate was looked up')
  // Digests-only says nothing about the signature value, so a forged one passes it: that is what the mode means.
  const value = /<ds:SignatureValue>([^<]+)</.exec(spiSigned)?.[1] ?? ''
  t.equal(verifyXml(edit(spiSigned, value, 'AAAA' + value.slice(4)), { digestsOnly: true }).code, 'DIGESTS_VALID')
  const bad = verifyXml(edit(spiSigned, '<Id>00038166</Id>', '<Id>99999010</Id>'), { digestsOnly: true })
  t.match(bad, { valid: false, code: 'DIGEST_MISMATCH', signatureValid: null })
  t.same(refs(bad), [['KeyInfo', true], ['AppHdr', false], ['Document', true]])
  t.equal(verifyXml(dictSigned, { digestsOnly: true }).code, 'DIGESTS_VALID')
  // The profile rules still apply in digests-only mode.
  t.equal(verifyXml(spiSigned, { digestsOnly: true, profile: 'dict' }).code, 'PROFILE_VIOLATION')
})

t.test('profile mismatch: an SPI message verified as DICT and the reverse', async (t) => {
  const a = verifyXml(spiSigned, { trustStore: trust, profile: 'dict' })
  t.match(a, { valid: false, code: 'PROFILE_VIOLATION', profile: 'dict', signatureValid: null, references: [] })
  t.match(a.message, /first child of the root/)
  const b = verifyXml(dictSigned, { trustStore: trust, profile: 'spi' })
  t.match(b, { valid: false, code: 'PROFILE_VIOLATION', profile: 'spi' })
  t.match(b.message, /AppHdr\/Sgntr/)
  t.equal(verifyXml(spiSigned, { trustStore: trust, profile: 'spi' }).code, 'VALID')
  t.equal(verifyXml(dictSigned, { trustStore: trust, profile: 'auto' }).code, 'VALID')
})

t.test('the issuer DN in KeyInfo spelled differently still finds the certificate', async (t) => {
  // Signed by the independent lxml + openssl signer, which writes whatever issuer text it is given.
  const keyPem = participant.key.export({ type: 'pkcs8', format: 'pem' }).toString()
  const serial = participant.certificate.serialDecimal
  const spellings = [
    'CN=Test AC SPB v5, OU=CSPB-4, O=ICP-Brasil, C=BR',
    'CN=Test AC SPB v5,OU=CSPB-4,O=ICP-Brasil,C=BR', // RFC 2253, no spaces
    'cn=Test AC SPB v5,ou=CSPB-4,o=ICP-Brasil,c=BR', // lower-case attribute types
    'Cn=TEST AC SPB V5, Ou=cspb-4, o=icp-brasil, C=br', // values differ only in case (caseIgnoreMatch)
    'CN = Test AC SPB v5 ; OU = CSPB-4 ; O = ICP-Brasil ; C = BR', // RFC 1779 separators
    'CN="Test AC SPB v5", OU=CSPB-4, O=ICP-Brasil, C=BR', // quoted value
    'OID.2.5.4.3=Test AC SPB v5, 2.5.4.11=CSPB-4, O=ICP-Brasil, C=BR' // OIDs for types
  ]
  for (const issuer of spellings) {
    const spi = await independentSign('spi', pibr001().xml, { keyPem, issuer, serial })
    const r = verifyXml(spi, { trustStore: trust })
    t.equal(r.code, 'VALID', `SPI, ${issuer}: ${r.message}`)
    t.equal(r.signer?.issuer, issuer, 'reported as written')
    t.equal(r.signer?.fingerprint256, participant.certificate.fingerprint256, 'the participant certificate')
  }
  const dict = await independentSign('dict', createClaimRequest().xml, { keyPem, issuer: spellings[2] as string, serial: '000' + serial })
  t.equal(verifyXml(dict, { trustStore: trust }).code, 'VALID', 'DICT, leading zeros in the serial')

  // Not the same name: RDNs in the other order, another CN, a missing RDN.
  for (const issuer of ['C=BR, O=ICP-Brasil, OU=CSPB-4, CN=Test AC SPB v5', 'CN=Test AC SPB v6, OU=CSPB-4, O=ICP-Brasil, C=BR', 'CN=Test AC SPB v5, O=ICP-Brasil, C=BR']) {
    const r = verifyXml(await independentSign('spi', pibr001().xml, { keyPem, issuer, serial }), { trustStore: trust })
    t.equal(r.code, 'CERT_UNKNOWN', `${issuer}: ${r.message}`)
  }
  const unparsable = verifyXml(await independentSign('spi', pibr001().xml, { keyPem, issuer: 'not a DN', serial }), { trustStore: trust })
  t.equal(unparsable.code, 'PROFILE_VIOLATION', unparsable.message)
  t.match(unparsable.message, /not a distinguished name/)
})

t.test('a SignatureValue wrapped as Java writes it (76 columns, &#13; and newline) is accepted', async (t) => {
  const value = /<ds:SignatureValue>([^<]+)</.exec(spiSigned)?.[1] ?? ''
  t.ok(value.length > 76, 'long enough to wrap')
  const lines = value.match(/.{1,76}/g) ?? []
  for (const [name, wrapped] of [
    ['&#13;\\n', lines.join('&#13;\n')],
    ['&#13;\\n with a leading and trailing break', '\n' + lines.join('&#13;\n') + '&#13;\n'],
    ['\\r\\n', lines.join('\r\n')],
    ['spaces and tabs', lines.join(' \t ')]
  ] as const) {
    const r = verifyXml(edit(spiSigned, value, wrapped), { trustStore: trust })
    t.equal(r.code, 'VALID', `${name}: ${r.message}`)
  }
  const d = /<ds:SignatureValue>([^<]+)</.exec(dictSigned)?.[1] ?? ''
  t.equal(verifyXml(edit(dictSigned, d, (d.match(/.{1,76}/g) ?? []).join('&#13;\n')), { trustStore: trust }).code, 'VALID', 'DICT')
  // Something that is not white space between the base64 characters is not tolerated.
  t.equal(verifyXml(edit(spiSigned, value, lines.join('&#13;.')), { trustStore: trust }).code, 'PROFILE_VIOLATION')
})

t.test('comments in signed content do not change validity; changed white space does', async (t) => {
  // Exclusive c14n without comments drops comments, so the digests are the same: a comment carries no content.
  const commented = edit(edit(edit(spiSigned, '<Document>', '<Document><!-- inserted in transit -->'),
    '<BizMsgIdr>', '<!-- x --><BizMsgIdr>'), '<ds:KeyInfo Id="key-info-id">', '<ds:KeyInfo Id="key-info-id"><!-- k -->')
  const r = verifyXml(commented, { trustStore: trust })
  t.equal(r.code, 'VALID', r.message)
  t.equal(verifyXml(edit(dictSigned, '<Reason>', '<!-- why --><Reason>'), { trustStore: trust }).code, 'VALID', 'DICT')
  t.equal(verifyXml('<!-- before -->' + spiSigned.replace(/^<\?xml[^>]*>/, '') + '<!-- after -->', { trustStore: trust }).code, 'VALID', 'outside the root')

  // White space between elements is text in the canonical form: changing it changes the digest.
  const ws = verifyXml(edit(spiSigned, '<Document>\n', '<Document>\n '), { trustStore: trust })
  t.equal(ws.code, 'DIGEST_MISMATCH', ws.message)
  t.same(refs(ws), [['KeyInfo', true], ['AppHdr', true], ['Document', false]])
  const text = verifyXml(edit(spiSigned, 'Aluguel de março', 'Aluguel  de março'), { trustStore: trust })
  t.same(refs(text), [['KeyInfo', true], ['AppHdr', true], ['Document', false]], 'a doubled space in text')
  const dws = verifyXml(edit(dictSigned, '</Entry>\n', '</Entry>\n\n'), { trustStore: trust })
  t.same(refs(dws), [['KeyInfo', true], ['document', false]], 'DICT')
})

t.test('verifyXml answers for any input and never throws', async (t) => {
  const inputs: Array<string | Uint8Array> = ['', ' ', '<', '<a', '<?xml version="1.0"?>', '\uFEFF', '<a/>', '<a/><b/>',
    Buffer.from([0xff, 0xfe, 0x00, 0x3c]), new Uint8Array(0), spiSigned.slice(0, spiSigned.length / 2), spiSigned.replace(/ds:/g, 'x:')]
  for (const input of inputs) {
    let r: VerifyResult | undefined
    t.doesNotThrow(() => { r = verifyXml(input, { trustStore: trust }) }, `input ${JSON.stringify(String(input).slice(0, 20))}`)
    t.equal(r?.valid, false)
    t.ok(Object.values(VerifyCodes).includes(r?.code as never), String(r?.code))
  }
})

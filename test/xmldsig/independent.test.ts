// Cross-checks of XMLDSig against independent implementations: libxml2's exclusive c14n through
// python3-lxml, xmlsec1, the openssl command line and an lxml-based signer of BACEN's two profiles
// (docs/bacen.md §3.1, §3.2). The first group proves the harness itself; the second proves our code against it.
// Our modules are imported dynamically inside the second group so that the harness self-tests run on their own.
import t from 'tap'
import type { Test } from 'tap'
import { createHash, createPublicKey, verify as rsaVerify } from 'node:crypto'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  independentSign,
  lxmlC14n,
  lxmlDictDigests,
  lxmlSignatureInfo,
  lxmlSignedInfoC14n,
  lxmlSpiDigests,
  opensslIdentity,
  opensslVerify,
  withTempDir,
  xmlsec1Verify
} from '../helpers/independent.ts'
import type { OpensslIdentity, SignatureInfo } from '../helpers/independent.ts'
// Type-only: erased at run time, so they do not stop the harness self-tests when our modules fail to load.
import type { Signer } from '../../core/signer.ts'
import type { Certificate } from '../../core/pki/x509.ts'

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url))
const EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#'
const ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature'
const RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256'
const SHA256 = 'http://www.w3.org/2001/04/xmlenc#sha256'

interface Fixture { name: string, path: string, xml: string }

async function fixtures (dir: 'spi' | 'dict' | 'c14n'): Promise<Fixture[]> {
  const names = (await readdir(join(FIXTURES, dir))).filter((n) => n.endsWith('.xml')).sort()
  return Promise.all(names.map(async (name) => {
    const path = join(FIXTURES, dir, name)
    return { name, path, xml: await readFile(path, 'utf8') }
  }))
}

// Subtrees worth canonicalising on their own: exclusive c14n of an element must bring along exactly the namespace
// declarations it visibly uses, emit no xmlns="" at the apex and not inherit xml:* attributes.
const C14N_SUBTREES: ReadonlyArray<[file: string, localName: string]> = [
  ['ns-redeclare.xml', 'child'],
  ['ns-redeclare.xml', 'inner'],
  ['prefixed-attributes.xml', 'e3'],
  ['default-namespace-undeclared.xml', 'AppHdr'],
  ['default-namespace-undeclared.xml', 'Nested'],
  ['default-namespace-undeclared.xml', 'Back'],
  ['xml-attributes.xml', 'nota'],
  ['deep-nesting.xml', 'n20'],
  ['deep-nesting.xml', 'leaf'],
  ['processing-instructions.xml', 'a'],
  ['comments.xml', 'a'],
  ['astral-plane.xml', 't']
]

const firstNamed = (localName: string) => `(//*[local-name()="${localName}"])[1]`

function flip (c: string): string {
  if (c >= '0' && c <= '9') return String((Number(c) + 1) % 10)
  if (c >= 'a' && c <= 'z') return c.toUpperCase()
  if (c >= 'A' && c <= 'Z') return c.toLowerCase()
  throw new Error(`refusing to tamper with ${JSON.stringify(c)}: not an ASCII letter or digit`)
}

/** Changes one byte: the first ASCII letter or digit in the text of the first element with this local name. */
function tamperElementText (xml: string, localName: string): string {
  const m = new RegExp(`<(?:[\\w.-]+:)?${localName.replace(/\./g, '\\.')}(?:\\s[^>]*)?>`).exec(xml)
  if (m === null) throw new Error(`no <${localName}> to tamper with`)
  let i = m.index + m[0].length
  while (i < xml.length && xml.charAt(i) !== '<' && !/[A-Za-z0-9]/.test(xml.charAt(i))) i++
  return xml.slice(0, i) + flip(xml.charAt(i)) + xml.slice(i + 1)
}

/** Changes one byte: the first character of the last non-blank text node before `end`. */
function tamperLastTextBefore (xml: string, end: number): string {
  const re = />[^<\s]/g
  let last = -1
  for (let m = re.exec(xml); m !== null && m.index < end; m = re.exec(xml)) last = m.index + 1
  if (last < 0) throw new Error('no text to tamper with')
  return xml.slice(0, last) + flip(xml.charAt(last)) + xml.slice(last + 1)
}

/** One byte of the Document element's content (SPI) or of the body after the signature (DICT). */
function tamperDocument (xml: string, profile: 'spi' | 'dict'): string {
  const end = profile === 'spi' ? xml.lastIndexOf('</Document>') : xml.lastIndexOf('</')
  if (end < 0) throw new Error('no end tag found')
  return tamperLastTextBefore(xml, end)
}

/** One byte inside the base64 SignatureValue. */
function tamperSignatureValue (xml: string): string {
  const m = /<(?:\w+:)?SignatureValue[^>]*>\s*/.exec(xml)
  if (m === null) throw new Error('no SignatureValue')
  let i = m.index + m[0].length + 10
  while (i < xml.length && !/[A-Za-z0-9]/.test(xml.charAt(i))) i++
  return xml.slice(0, i) + flip(xml.charAt(i)) + xml.slice(i + 1)
}

function rootName (xml: string): string {
  const m = /<([A-Za-z_][\w.-]*)[\s>]/.exec(xml.replace(/<\?[\s\S]*?\?>/g, ''))
  if (m?.[1] === undefined) throw new Error('no root element')
  return m[1]
}

function refs (info: SignatureInfo): NonNullable<SignatureInfo['references']> {
  if (info.references === undefined) throw new Error('the message has no ds:Signature')
  return info.references
}

function signatureBytes (info: SignatureInfo): Buffer {
  if (info.signatureValue === undefined) throw new Error('the message has no SignatureValue')
  return Buffer.from(info.signatureValue, 'base64')
}

/** The BACEN profile shape both signers must produce, checked on lxml's reading of the message. */
function assertProfileShape (t: Test, info: SignatureInfo, profile: 'spi' | 'dict', root: string): void {
  t.equal(info.count, 1, 'one ds:Signature')
  t.equal(info.placeholders, 0, 'no un-namespaced Signature placeholder left')
  t.equal(info.prefix, 'ds')
  if (profile === 'spi') {
    t.equal(info.parentPath, '/Envelope/AppHdr/Sgntr', 'the signature is in AppHdr/Sgntr')
    t.equal(info.elementIndex, 0, 'as its only element child')
  } else {
    t.equal(info.parentPath, `/${root}`, 'the signature is a child of the root')
    t.equal(info.elementIndex, 0, 'and its first element child')
  }
  t.equal(info.canonicalizationMethod, EXC_C14N)
  t.equal(info.signatureMethod, RSA_SHA256)
  const r = refs(info)
  t.ok(info.keyInfoId !== undefined && info.keyInfoId.length > 0, 'KeyInfo carries an Id')
  t.same(r.map((x) => x.uri), profile === 'spi' ? [`#${info.keyInfoId}`, '', null] : [`#${info.keyInfoId}`, ''],
    'Reference URIs (SPI Ref 3 has no URI attribute)')
  t.same(r.map((x) => x.transforms), profile === 'spi'
    ? [[EXC_C14N], [ENVELOPED, EXC_C14N], [EXC_C14N]]
    : [[EXC_C14N], [ENVELOPED, EXC_C14N]])
  t.ok(r.every((x) => x.digestMethod === SHA256), 'every DigestMethod is SHA-256')
}

t.test('harness self-tests', async (t) => {
  let identity: OpensslIdentity | undefined
  let stranger: OpensslIdentity | undefined
  t.before(async () => {
    identity = await opensslIdentity()
    stranger = await opensslIdentity('someone else')
  })
  const id = (): OpensslIdentity => {
    if (identity === undefined) throw new Error('openssl identity not created')
    return identity
  }

  t.test('DICT: independent_sign.py output verifies with xmlsec1 and matches lxml digests', async (t) => {
    for (const f of await fixtures('dict')) {
      const signed = await independentSign('dict', f.xml, id())
      const info = await lxmlSignatureInfo(signed)
      assertProfileShape(t, info, 'dict', rootName(f.xml))
      t.equal(info.issuerName, id().issuer)
      t.equal(info.serialNumber, id().serial)
      const v = await xmlsec1Verify(signed, id().certPem)
      t.ok(v.ok, `${f.name}: xmlsec1 verifies`, { output: v.output })
      t.equal(v.referencesOk, 2, `${f.name}: xmlsec1 checked both references`)
      const d = await lxmlDictDigests(signed)
      t.same(refs(info).map((r) => r.digestValue), [d.keyInfo, d.document], `${f.name}: digests equal lxml's`)
      t.ok(await opensslVerify(await lxmlSignedInfoC14n(signed), signatureBytes(info), id().certPem),
        `${f.name}: openssl verifies the SignatureValue over lxml's SignedInfo`)
    }
  })

  t.test('DICT: any tampering makes xmlsec1 fail', async (t) => {
    const [f] = (await fixtures('dict')).filter((x) => x.name === 'CreateEntryRequest.xml')
    if (f === undefined) throw new Error('fixture missing')
    const signed = await independentSign('dict', f.xml, id())
    t.ok((await xmlsec1Verify(signed, id().certPem)).ok, 'the untouched message verifies')

    const body = await xmlsec1Verify(tamperDocument(signed, 'dict'), id().certPem)
    t.notOk(body.ok, 'one byte of the body (Ref 2)')
    t.equal(body.referencesOk, 1, 'xmlsec1 saw the whole-document reference fail')

    const keyInfo = await xmlsec1Verify(tamperElementText(signed, 'X509SerialNumber'), id().certPem)
    t.notOk(keyInfo.ok, 'one byte of KeyInfo (Ref 1)')
    t.equal(keyInfo.referencesOk, 0, 'xmlsec1 saw the KeyInfo reference fail')

    const sigValue = await xmlsec1Verify(tamperSignatureValue(signed), id().certPem)
    t.notOk(sigValue.ok, 'one byte of the SignatureValue')

    if (stranger === undefined) throw new Error('second identity not created')
    const wrongKey = await xmlsec1Verify(signed, stranger.certPem)
    t.notOk(wrongKey.ok, 'another certificate')
    t.equal(wrongKey.referencesOk, 2, 'digests still match: it is the signature that fails')
  })

  t.test('SPI: independent_sign.py digests equal lxml spi-digests and openssl verifies it', async (t) => {
    for (const f of await fixtures('spi')) {
      const signed = await independentSign('spi', f.xml, id())
      const info = await lxmlSignatureInfo(signed)
      assertProfileShape(t, info, 'spi', 'Envelope')
      const d = await lxmlSpiDigests(signed)
      t.same(refs(info).map((r) => r.digestValue), [d.keyInfo, d.appHdr, d.document], `${f.name}: digests`)
      t.equal(d.document, (await lxmlSpiDigests(f.xml)).document, `${f.name}: the Document is left untouched`)
      t.ok(await opensslVerify(await lxmlSignedInfoC14n(signed), signatureBytes(info), id().certPem),
        `${f.name}: openssl verifies the SignatureValue over lxml's SignedInfo`)
    }
  })

  t.test('SPI: tampering is caught by lxml digests and openssl', async (t) => {
    const [f] = (await fixtures('spi')).filter((x) => x.name === 'pacs.008.xml')
    if (f === undefined) throw new Error('fixture missing')
    const signed = await independentSign('spi', f.xml, id())
    const [k, a, d] = refs(await lxmlSignatureInfo(signed)).map((r) => r.digestValue)

    const doc = await lxmlSpiDigests(tamperDocument(signed, 'spi'))
    t.not(doc.document, d, 'one byte of the Document changes Ref 3')
    t.equal(doc.appHdr, a, 'and not Ref 2')
    t.equal(doc.keyInfo, k, 'nor Ref 1')

    const hdr = await lxmlSpiDigests(tamperElementText(signed, 'BizMsgIdr'))
    t.not(hdr.appHdr, a, 'one byte of the AppHdr changes Ref 2')
    t.equal(hdr.document, d, 'and not Ref 3')

    const ki = await lxmlSpiDigests(tamperElementText(signed, 'X509SerialNumber'))
    t.not(ki.keyInfo, k, 'one byte of KeyInfo changes Ref 1')
    t.equal(ki.appHdr, a, 'and not Ref 2, which excludes the signature')

    const forged = tamperElementText(signed, 'DigestValue')
    t.notOk(await opensslVerify(await lxmlSignedInfoC14n(forged), signatureBytes(await lxmlSignatureInfo(forged)),
      id().certPem), 'a changed DigestValue breaks the SignatureValue')
    if (stranger === undefined) throw new Error('second identity not created')
    t.notOk(await opensslVerify(await lxmlSignedInfoC14n(signed), signatureBytes(await lxmlSignatureInfo(signed)),
      stranger.certPem), 'another certificate does not verify it')
  })

  t.test('every c14n fixture canonicalises with lxml', async (t) => {
    const outputs = new Map<string, string>()
    for (const f of await fixtures('c14n')) {
      const out = await lxmlC14n(f.path)
      t.ok(out.length > 0, `${f.name}: ${out.length} canonical bytes`)
      t.notOk(out.includes('\r'), `${f.name}: no raw carriage return survives`)
      t.notOk(out.includes('<!--'), `${f.name}: comments are dropped`)
      t.notOk(out.includes('<?xml '), `${f.name}: the XML declaration is dropped`)
      outputs.set(f.name, out.toString('utf8'))
    }
    t.ok(outputs.size >= 15, 'all fixtures were read')
    const crlf = await readFile(join(FIXTURES, 'c14n', 'crlf-line-endings.xml'))
    t.ok(crlf.includes('\r\n') && crlf.includes('CR\rhere'), 'the CRLF fixture still has its CRs (git left it alone)')
    // Spot checks that lxml is doing exclusive c14n, so the oracle cannot silently be the wrong algorithm.
    t.notMatch(outputs.get('ns-redeclare.xml'), /urn:example:unused/, 'unused namespace declarations are dropped')
    t.match(outputs.get('crlf-line-endings.xml'), /escaped CR&#xD;\n stays/, 'CRLF normalised, &#xD; kept')
    t.match(outputs.get('attribute-order.xml'), /<root xmlns:n1="urn:a" xmlns:n2="urn:b" Beta="2" /,
      'namespace declarations first, then attributes in code-point order')
    t.match(outputs.get('processing-instructions.xml'), /^<\?xml-stylesheet [^\n]*\?>\n<\?empty\?>\n<root>/,
      'PIs before the root kept, each followed by a newline')
    t.match(outputs.get('empty-elements.xml'), /<a><\/a>/, 'empty elements get an end tag')

    for (const [file, localName] of C14N_SUBTREES) {
      const out = (await lxmlC14n(join(FIXTURES, 'c14n', file), { xpath: firstNamed(localName) })).toString('utf8')
      t.match(out, new RegExp(`^<(?:\\w+:)?${localName}[ >]`), `${file} ${localName}: subtree canonicalised`)
    }
    const nota = await lxmlC14n(join(FIXTURES, 'c14n', 'xml-attributes.xml'), { xpath: firstNamed('nota') })
    t.notMatch(nota.toString('utf8'), /xml:lang/, 'exclusive c14n does not inherit xml:lang into a subtree')
  })

  t.test('lxmlC14n --remove-signature agrees with dict-digests', async (t) => {
    const [f] = await fixtures('dict')
    if (f === undefined) throw new Error('fixture missing')
    const signed = await independentSign('dict', f.xml, id())
    await withTempDir(async (dir) => {
      const file = join(dir, 'signed.xml')
      await writeFile(file, signed)
      const whole = await lxmlC14n(file, { removeSignature: true })
      t.notMatch(whole.toString('utf8'), /Signature/, 'the signature is gone')
      t.equal(createHash('sha256').update(whole).digest('base64'), (await lxmlDictDigests(signed)).document)
    })
  })
})

type XmlDsigModule = typeof import('../../core/xmldsig/index.ts')

t.test('our XMLDSig implementation agrees with the independent ones', async (t) => {
  let loaded: { xmldsig: XmlDsigModule, signer: Signer, certificate: Certificate, keyPem: string } | undefined
  // Once for the whole group: RSA key generation would dominate otherwise.
  t.before(async () => {
    const xmldsig = await import('../../core/xmldsig/index.ts')
    const { SoftwareSigner } = await import('../../core/signer.ts')
    const { createTestPki } = await import('../../core/pki/ca.ts')
    const { certificate, key } = createTestPki().issue('CN=99999004 Assinatura SPI Teste, O=Banco Exemplo S.A., C=BR')
    if (key === undefined) throw new Error('createTestPki().issue returned no private key')
    const keyPem = key.export({ type: 'pkcs8', format: 'pem' }).toString()
    loaded = { xmldsig, signer: SoftwareSigner.fromPem(keyPem), certificate, keyPem }
  })
  const ours = () => {
    if (loaded === undefined) throw new Error('core/xmldsig, core/signer or core/pki/ca did not load')
    return loaded
  }

  t.test('canonicalize equals libxml2 exclusive c14n on every c14n fixture', async (t) => {
    const { canonicalize } = ours().xmldsig
    for (const f of await fixtures('c14n')) {
      const expected = await lxmlC14n(f.path)
      const actual = canonicalize(f.xml)
      t.equal(actual, expected.toString('utf8'), f.name)
      t.ok(Buffer.from(actual, 'utf8').equals(expected), `${f.name}: byte for byte`)
    }
    for (const [file, localName] of C14N_SUBTREES) {
      const path = join(FIXTURES, 'c14n', file)
      const expected = await lxmlC14n(path, { xpath: firstNamed(localName) })
      t.equal(canonicalize(await readFile(path, 'utf8'), { localName }), expected.toString('utf8'),
        `${file}, subtree ${localName}`)
    }
  })

  t.test('canonicalize equals libxml2 on the sample messages', async (t) => {
    const { canonicalize } = ours().xmldsig
    for (const f of [...await fixtures('spi'), ...await fixtures('dict')]) {
      t.equal(canonicalize(f.xml), (await lxmlC14n(f.path)).toString('utf8'), f.name)
    }
    for (const f of await fixtures('spi')) {
      for (const part of ['AppHdr', 'Document']) {
        t.equal(canonicalize(f.xml, { localName: part }),
          (await lxmlC14n(f.path, { xpath: firstNamed(part) })).toString('utf8'), `${f.name} ${part}`)
      }
    }
  })

  t.test('SPI: signXml digests equal lxml spi-digests and the SignatureValue verifies', async (t) => {
    const { xmldsig, signer, certificate } = ours()
    const publicKey = createPublicKey(certificate.pem)
    for (const f of await fixtures('spi')) {
      const signed = await xmldsig.signXml(f.xml, { profile: 'spi', signer, certificate })
      const info = await lxmlSignatureInfo(signed)
      assertProfileShape(t, info, 'spi', 'Envelope')
      t.equal(info.issuerName, certificate.issuerString, `${f.name}: X509IssuerName is the issuer DN`)
      t.equal(info.serialNumber, certificate.serialDecimal, `${f.name}: decimal serial`)
      const d = await lxmlSpiDigests(signed)
      t.same(refs(info).map((r) => r.digestValue), [d.keyInfo, d.appHdr, d.document], `${f.name}: digests`)
      t.equal(d.document, (await lxmlSpiDigests(f.xml)).document, `${f.name}: the Document is left untouched`)
      const signedInfo = await lxmlSignedInfoC14n(signed)
      t.ok(rsaVerify('sha256', signedInfo, publicKey, signatureBytes(info)),
        `${f.name}: SignatureValue verifies over lxml's canonical SignedInfo`)
      t.ok(await opensslVerify(signedInfo, signatureBytes(info), certificate.pem), `${f.name}: and with openssl`)
    }
  })

  t.test('DICT: signXml output verifies with xmlsec1 and its digests equal lxml dict-digests', async (t) => {
    const { xmldsig, signer, certificate } = ours()
    const publicKey = createPublicKey(certificate.pem)
    for (const f of await fixtures('dict')) {
      const signed = await xmldsig.signXml(f.xml, { profile: 'dict', signer, certificate })
      const info = await lxmlSignatureInfo(signed)
      assertProfileShape(t, info, 'dict', rootName(f.xml))
      t.equal(info.issuerName, certificate.issuerString, `${f.name}: X509IssuerName is the issuer DN`)
      t.equal(info.serialNumber, certificate.serialDecimal, `${f.name}: decimal serial`)
      const v = await xmlsec1Verify(signed, certificate.pem)
      t.ok(v.ok, `${f.name}: xmlsec1 verifies`, { output: v.output })
      t.equal(v.referencesOk, 2, `${f.name}: both references checked by xmlsec1`)
      const d = await lxmlDictDigests(signed)
      t.same(refs(info).map((r) => r.digestValue), [d.keyInfo, d.document], `${f.name}: digests`)
      t.ok(rsaVerify('sha256', await lxmlSignedInfoC14n(signed), publicKey, signatureBytes(info)),
        `${f.name}: SignatureValue verifies over lxml's canonical SignedInfo`)
    }
  })

  for (const profile of ['spi', 'dict'] as const) {
    t.test(`${profile.toUpperCase()}: verifyXml accepts messages signed by independent_sign.py`, async (t) => {
      const { xmldsig, certificate, keyPem } = ours()
      const trustStore = new xmldsig.TrustStore([certificate])
      const opts = { keyPem, issuer: certificate.issuerString, serial: certificate.serialDecimal }
      for (const f of await fixtures(profile)) {
        const signed = await independentSign(profile, f.xml, opts)
        const r = await xmldsig.verifyXml(signed, { profile, trustStore })
        t.equal(r.code, 'VALID', `${f.name}: ${r.message}`)
        t.equal(r.valid, true)
        t.equal(r.signatureValid, true)
        t.equal(r.references.length, profile === 'spi' ? 3 : 2, `${f.name}: every reference reported`)
        t.ok(r.references.every((x) => x.digestValid), `${f.name}: every digest valid`)
        t.equal((await xmldsig.verifyXml(signed, { profile: 'auto', trustStore })).code, 'VALID',
          `${f.name}: profile detected`)

        const tampered = await xmldsig.verifyXml(tamperDocument(signed, profile), { profile, trustStore })
        t.equal(tampered.code, 'DIGEST_MISMATCH', `${f.name}: one byte changed in the Document`)
        t.equal(tampered.valid, false)
        t.ok(tampered.references.some((x) => !x.digestValid), `${f.name}: a reference is reported invalid`)
      }
    })
  }

  t.test('verifyXml rejects other tampering of independently signed messages', async (t) => {
    const { xmldsig, certificate, keyPem } = ours()
    const trustStore = new xmldsig.TrustStore([certificate])
    const opts = { keyPem, issuer: certificate.issuerString, serial: certificate.serialDecimal }
    const [pacs008] = (await fixtures('spi')).filter((x) => x.name === 'pacs.008.xml')
    const [entry] = (await fixtures('dict')).filter((x) => x.name === 'CreateEntryRequest.xml')
    if (pacs008 === undefined || entry === undefined) throw new Error('fixture missing')
    const spi = await independentSign('spi', pacs008.xml, opts)
    const dict = await independentSign('dict', entry.xml, opts)

    const hdr = await xmldsig.verifyXml(tamperElementText(spi, 'BizMsgIdr'), { profile: 'spi', trustStore })
    t.equal(hdr.code, 'DIGEST_MISMATCH', 'one byte of the AppHdr (Ref 2)')
    t.equal(hdr.valid, false)

    for (const [name, xml, profile] of [['SPI', spi, 'spi'], ['DICT', dict, 'dict']] as const) {
      const sv = await xmldsig.verifyXml(tamperSignatureValue(xml), { profile, trustStore })
      t.equal(sv.code, 'SIGNATURE_INVALID', `${name}: one byte of the SignatureValue`)
      t.equal(sv.valid, false)
      t.equal(sv.signatureValid, false)

      const untrusted = await xmldsig.verifyXml(xml, { profile, trustStore: new xmldsig.TrustStore([]) })
      t.equal(untrusted.valid, false, `${name}: a certificate missing from the trust store is not accepted`)
      t.not(untrusted.code, 'VALID')
    }
  })
})

/**
 * XMLDSig throughput on one core, compared in the same run against its two baselines:
 *   - raw RSA-2048 sign/verify with node:crypto and the same key (the bound: what signing costs without XML),
 *   - xml-crypto 6 signing and verifying the same document (the usual Node implementation).
 *
 *   node bench/xmldsig.ts [--json] [--seconds N] [--rounds N]
 *
 * Everything runs synchronously on the main thread (the signer used here signs in-thread rather than on the libuv
 * pool), so the numbers are per core. Each measurement runs `rounds` times, interleaved, and the median is kept.
 * Targets (issue 2): signPerSec >= 0.8 x rsaSignPerSec; verifyPerSec >= 20 x xmlCryptoVerifyPerSec.
 */
import { createPublicKey, generateKeyPairSync, sign as rsaSign, verify as rsaVerify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { SignedXml } from 'xml-crypto'
import { DOMParser } from '@xmldom/xmldom'
import { createTestPki } from '../src/pki/ca.ts'
import { XmlSigner, verifyXml, TrustStore } from '../src/xmldsig/index.ts'
import type { Signer } from '../src/hsm/signer.ts'
import { pacs008 } from '../src/samples/messages.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    seconds: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' }
  }
})
const seconds = Number(values.seconds)
const rounds = Number(values.rounds)

/** Ops/s of `fn` (sync or async) over `seconds`, after a short warm-up. */
async function measure (fn: () => unknown, secs: number): Promise<number> {
  const warm = performance.now() + 200
  while (performance.now() < warm) await fn()
  let n = 0
  const start = performance.now()
  const end = start + secs * 1000
  let now = start
  while (now < end) {
    // Batches of 10 keep the clock reads out of the measurement.
    for (let i = 0; i < 10; i++) await fn()
    n += 10
    now = performance.now()
  }
  return n / ((now - start) / 1000)
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

/** A Signer that signs on the calling thread: one core, no thread-pool parallelism hidden in the numbers. */
function inThreadSigner (key: KeyObject): Signer {
  return {
    publicKey: createPublicKey(key),
    description: 'bench in-thread RSA key',
    sign: async (data) => rsaSign('sha256', data, key)
  }
}

// A ~5 KB pacs.008 (five credit transfers), as BACEN's catalogue examples are sized.
let doc = pacs008({ amounts: [150.75, 32.1, 9.99, 1200, 48.5] }).xml
const docBytes = Buffer.byteLength(doc)

const pki = createTestPki()
const { certificate, key } = pki.issue('CN=pix-proxy bench 99999004, O=Banco Exemplo S.A., C=BR')
if (key === undefined) throw new Error('test PKI returned no key')
const signer = new XmlSigner({ signer: inThreadSigner(key), certificate })
const trustStore = new TrustStore([certificate])
const signed = await signer.sign(doc, 'spi')
const check = verifyXml(signed, { trustStore, profile: 'spi' })
if (!check.valid) throw new Error(`bench precondition: own signature does not verify: ${check.code}`)

// Raw RSA over what XMLDSig actually signs: the canonical SignedInfo (~1.1 KB).
const signedInfo = Buffer.from(signed.slice(signed.indexOf('<ds:SignedInfo'), signed.indexOf('</ds:SignedInfo>') + 16))
const rsaSig = rsaSign('sha256', signedInfo, key)
const pub = createPublicKey(key)

// xml-crypto, as close to the SPI profile as it can express: AppHdr and Document references with the same
// transforms, RSA-SHA256, exc-c14n, the signature appended into Sgntr. It cannot reference KeyInfo by Id without
// injecting Ids, so it signs two references where we sign three: the baseline is, if anything, flattered.
const privPem = key.export({ type: 'pkcs8', format: 'pem' }).toString()
const certPem = certificate.pem
function xmlCryptoSign (): string {
  const sig = new SignedXml({ privateKey: privPem, publicCert: certPem })
  sig.signatureAlgorithm = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256'
  sig.canonicalizationAlgorithm = 'http://www.w3.org/2001/10/xml-exc-c14n#'
  sig.addReference({
    xpath: "//*[local-name(.)='AppHdr']",
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256'
  })
  sig.addReference({
    xpath: "//*[local-name(.)='Document']",
    transforms: ['http://www.w3.org/2001/10/xml-exc-c14n#'],
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256'
  })
  sig.computeSignature(doc, { prefix: 'ds', location: { reference: "//*[local-name(.)='Sgntr']", action: 'append' } })
  return sig.getSignedXml()
}
const xcSigned = xmlCryptoSign()
function xmlCryptoVerify (): boolean {
  const dom = new DOMParser().parseFromString(xcSigned, 'text/xml')
  const sigNode = dom.getElementsByTagNameNS('http://www.w3.org/2000/09/xmldsig#', 'Signature')[0]
  if (sigNode === undefined) throw new Error('xml-crypto output has no signature')
  const v = new SignedXml({ publicCert: certPem })
  v.loadSignature(sigNode)
  return v.checkSignature(xcSigned)
}
if (!xmlCryptoVerify()) throw new Error('bench precondition: xml-crypto does not verify its own signature')

const runs: Record<string, number[]> = {
  rsaSignPerSec: [], rsaVerifyPerSec: [], signPerSec: [], verifyPerSec: [], xmlCryptoSignPerSec: [], xmlCryptoVerifyPerSec: []
}
for (let r = 0; r < rounds; r++) {
  runs.rsaSignPerSec!.push(await measure(() => rsaSign('sha256', signedInfo, key), seconds))
  runs.rsaVerifyPerSec!.push(await measure(() => rsaVerify('sha256', signedInfo, pub, rsaSig), seconds))
  runs.signPerSec!.push(await measure(async () => await signer.sign(doc, 'spi'), seconds))
  runs.verifyPerSec!.push(await measure(() => {
    if (!verifyXml(signed, { trustStore, profile: 'spi' }).valid) throw new Error('verify failed')
  }, seconds))
  runs.xmlCryptoSignPerSec!.push(await measure(xmlCryptoSign, seconds))
  runs.xmlCryptoVerifyPerSec!.push(await measure(xmlCryptoVerify, seconds))
}
doc = ''

const m = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, Math.round(median(v))])) as {
  rsaSignPerSec: number, rsaVerifyPerSec: number, signPerSec: number, verifyPerSec: number, xmlCryptoSignPerSec: number, xmlCryptoVerifyPerSec: number
}
const result = {
  bench: 'xmldsig',
  docBytes,
  ...m,
  signVsRsaSign: round(m.signPerSec / m.rsaSignPerSec),
  verifyVsXmlCryptoVerify: round(m.verifyPerSec / m.xmlCryptoVerifyPerSec),
  signVsXmlCryptoSign: round(m.signPerSec / m.xmlCryptoSignPerSec),
  targets: {
    signAtLeast0_8xRsaSign: m.signPerSec >= 0.8 * m.rsaSignPerSec,
    verifyAtLeast20xXmlCrypto: m.verifyPerSec >= 20 * m.xmlCryptoVerifyPerSec
  },
  seconds,
  rounds,
  node: process.versions.node,
  cpu: (await import('node:os')).cpus()[0]?.model ?? 'unknown'
}

function round (x: number): number {
  return Math.round(x * 100) / 100
}

if (values.json) {
  process.stdout.write(JSON.stringify(result) + '\n')
} else {
  console.table(m)
  console.log(result)
}

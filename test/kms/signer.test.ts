// The KMS signer (src/kms/signer.ts) against the local KMS with the real SDK client: the start-up checks, the error
// codes and their outcome class, and messages it signs verifying with xmlsec1 and with the project's verifier.
import t from 'tap'
import type { Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { createKmsClient } from '../../src/kms/client.ts'
import { KmsSigner } from '../../src/kms/signer.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import type { LocalAwsEndpoint, LocalKmsKey } from '../../tools/aws-local/endpoint.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { TrustStore, XmlSigner, verifyXml } from '../../core/xmldsig/index.ts'
import { createEntryRequest, pacs008 } from '../../tools/samples/messages.ts'
import { xmlsec1Verify } from '../helpers/independent.ts'

const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
const REGION = 'sa-east-1'
const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab'
const ALIAS = 'alias/pix-proxy-signing'
const SUBJECT = 'CN=99999004 Assinatura SPI, OU=SPB, O=Banco Exemplo S.A., C=BR'

const pki = createTestPki()
const pem = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()
const rsa = (bits = 2048): KeyObject => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey
/** The KMS key's private half (seeded into the endpoint) and the certificate the CA issued for it. */
const kmsKey = rsa()
const certificate: Certificate = pki.issue(SUBJECT, { publicKey: kmsKey }).certificate

async function endpoint (t: Test, keys: LocalKmsKey[] = [{ keyId: KEY_ID, aliases: [ALIAS], privateKeyPem: pem(kmsKey) }]): Promise<LocalAwsEndpoint> {
  const ep = await startLocalAwsEndpoint({ region: REGION, credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey }, kmsKeys: keys })
  t.teardown(() => ep.close())
  return ep
}

async function open (t: Test, ep: LocalAwsEndpoint, o: { keyId?: string, certificate?: Certificate } = {}): Promise<KmsSigner> {
  const signer = await KmsSigner.open({
    keyId: o.keyId ?? ALIAS,
    certificate: o.certificate ?? certificate,
    client: createKmsClient({ endpoint: ep.url, region: REGION, credentials: CREDS, maxAttempts: 1 })
  })
  t.teardown(() => signer.close())
  return signer
}

t.test('a DICT CreateEntry and a pacs.008 signed through KMS verify with xmlsec1 and the project verifier', async (t) => {
  const ep = await endpoint(t)
  const signer = await open(t, ep)
  t.equal(signer.keyArn, `arn:aws:kms:${REGION}:000000000000:key/${KEY_ID}`, 'the alias resolved to the key ARN at start')
  t.match(signer.description, /^aws-kms arn:aws:kms:.*key\/1234abcd.* spki-sha256:[0-9a-f]{16}$/)
  const xmlSigner = new XmlSigner({ signer, certificate })
  const trustStore = new TrustStore([certificate])

  const dict = await xmlSigner.sign(createEntryRequest().xml, 'dict')
  const independent = await xmlsec1Verify(dict, certificate.pem)
  t.ok(independent.ok, 'xmlsec1 verifies the DICT message', { output: independent.output })
  t.equal(independent.referencesOk, 2, 'both references')
  const ours = verifyXml(dict, { trustStore })
  t.ok(ours.valid, `the project verifier accepts it (${ours.code})`)
  t.equal(ours.signatureValid, true)

  const spi = await xmlSigner.sign(pacs008().xml, 'spi')
  const spiResult = verifyXml(spi, { trustStore })
  t.ok(spiResult.valid, `an SPI message too (${spiResult.code})`)

  const tampered = dict.replace('<KeyType>', '<KeyType>X')
  t.notOk(verifyXml(tampered, { trustStore }).valid, 'and a changed message does not')

  const signs = ep.calls.filter((c) => c.target === 'TrentService.Sign')
  t.equal(signs.length, 3, 'one Sign at start (the self-test) and one per message')
  t.same(ep.calls.slice(0, 2).map((c) => c.target), ['TrentService.DescribeKey', 'TrentService.GetPublicKey'])
})

t.test('start-up refuses a key that cannot sign for the certificate, each with its code', async (t) => {
  const other = rsa()
  const ENC = '22222222-2222-2222-2222-222222222222'
  const BIG = '33333333-3333-3333-3333-333333333333'
  const EC = '44444444-4444-4444-4444-444444444444'
  const OFF = '55555555-5555-5555-5555-555555555555'
  const ep = await endpoint(t, [
    { keyId: KEY_ID, aliases: [ALIAS], privateKeyPem: pem(kmsKey) },
    { keyId: ENC, privateKeyPem: pem(kmsKey), keyUsage: 'ENCRYPT_DECRYPT' },
    { keyId: BIG, privateKeyPem: pem(rsa(3072)) },
    { keyId: EC, privateKeyPem: pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey) },
    { keyId: OFF, privateKeyPem: pem(kmsKey), enabled: false }
  ])
  const refuse = async (o: { keyId?: string, certificate?: Certificate }, code: string, message: RegExp, what: string): Promise<void> => {
    const err = await open(t, ep, o).then(() => null, (e: unknown) => e as { code?: string, message: string, outcome?: string })
    t.equal(err?.code, code, what)
    t.match(err?.message, message, `${what}: message`)
    t.equal(err?.outcome, 'not-sent', `${what}: NOT SENT`)
  }
  await refuse({ certificate: pki.issue(SUBJECT, { publicKey: other }).certificate }, 'PIXPROXY_ERR_KMS_KEY_MISMATCH', /not the public key of the signing certificate CN=99999004/, 'a certificate of another key')
  await refuse({ keyId: OFF }, 'PIXPROXY_ERR_KMS_KEY_DISABLED', /KeyState Disabled/, 'a disabled key')
  await refuse({ keyId: ENC }, 'PIXPROXY_ERR_KMS_KEY_UNSUITABLE', /KeyUsage is ENCRYPT_DECRYPT/, 'an ENCRYPT_DECRYPT key')
  await refuse({ keyId: BIG }, 'PIXPROXY_ERR_KMS_KEY_UNSUITABLE', /KeySpec is RSA_3072, not RSA_2048/, 'an RSA-3072 key')
  await refuse({ keyId: EC }, 'PIXPROXY_ERR_KMS_KEY_UNSUITABLE', /KeySpec is ECC_NIST_P256/, 'an EC key')
  await refuse({ keyId: 'alias/nope' }, 'PIXPROXY_ERR_KMS_KEY_NOT_FOUND', /alias\/nope/, 'an unknown alias')
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'AccessDeniedException', message: 'User: arn:aws:sts::000000000000:assumed-role/pix-proxy is not authorized to perform: kms:Sign', times: 1 })
  await refuse({}, 'PIXPROXY_ERR_KMS_ACCESS_DENIED', /refused Sign .*kms:Sign/, 'a role without kms:Sign fails at start (the self-test)')
  ep.failCalls({ target: 'TrentService.DescribeKey', errorType: 'ThrottlingException', times: 1 })
  await refuse({}, 'PIXPROXY_ERR_KMS_THROTTLED', /throttled DescribeKey/, 'a throttle at start')
  t.ok(await open(t, ep), 'the right key and certificate open')
})

t.test('on the request path: throttling, a disabled key, an outage and a slow KMS are NOT SENT, each with its code', async (t) => {
  const ep = await endpoint(t)
  const signer = await KmsSigner.open({
    keyId: ALIAS,
    certificate,
    client: createKmsClient({ endpoint: ep.url, region: REGION, credentials: CREDS, maxAttempts: 1, requestTimeoutMs: 500 })
  })
  t.teardown(() => signer.close())
  const data = Buffer.from('<SignedInfo/>')
  const fails = async (code: string, what: string): Promise<void> => {
    const err = await signer.sign(data).then(() => null, (e: unknown) => e as { code?: string, outcome?: string, message: string })
    t.equal(err?.code, code, what)
    t.equal(err?.outcome, 'not-sent', `${what}: NOT SENT (retry-safe: nothing left for BACEN)`)
  }
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', message: 'Rate exceeded', times: 1 })
  await fails('PIXPROXY_ERR_KMS_THROTTLED', 'a throttle')
  ep.setKmsKeyEnabled(KEY_ID, false)
  await fails('PIXPROXY_ERR_KMS_KEY_DISABLED', 'a key disabled after start')
  ep.setKmsKeyEnabled(KEY_ID, true)
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'KMSInternalException', status: 500, times: 1 })
  await fails('PIXPROXY_ERR_KMS_UNAVAILABLE', 'a KMS 5xx')
  ep.addLatency({ target: 'TrentService.Sign', ms: 1_500, times: 1 })
  await fails('PIXPROXY_ERR_KMS_UNAVAILABLE', 'a Sign slower than the request timeout')
  await ep.outage('refuse')
  await fails('PIXPROXY_ERR_KMS_UNAVAILABLE', 'a refused connection')
  await ep.restore()
  t.equal((await signer.sign(data)).length, 256, 'signs again once KMS is back')
})

t.test('readiness: a signature still works, at most one sign per 10 s; a disabled key, a revoked permission or an unreachable KMS is not ready; a throttle is', async (t) => {
  const ep = await endpoint(t)
  let now = 1_000_000
  const signer = await KmsSigner.open({ keyId: ALIAS, certificate, now: () => now, client: createKmsClient({ endpoint: ep.url, region: REGION, credentials: CREDS, maxAttempts: 1 }) })
  t.teardown(() => signer.close())
  const signs = (): number => ep.calls.filter((c) => c.target === 'TrentService.Sign').length
  const atStart = signs()
  t.match(await signer.check(), /^signing key arn:aws:kms:.*key\/1234abcd.* signs$/)
  t.equal(signs(), atStart + 1, 'the probe is a real Sign')
  await signer.check()
  t.equal(signs(), atStart + 1, 'cached: no second sign within 10 s')
  ep.setKmsKeyEnabled(KEY_ID, false)
  now += 10_000
  await t.rejects(signer.check(), { code: 'PIXPROXY_ERR_KMS_KEY_DISABLED' }, 'a key disabled after start')
  ep.setKmsKeyEnabled(KEY_ID, true)
  t.match(await signer.check(), /signs$/, 'a failure is not cached')
  now += 10_000
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'AccessDeniedException', times: 1 })
  await t.rejects(signer.check(), { code: 'PIXPROXY_ERR_KMS_ACCESS_DENIED' }, 'kms:Sign taken away (DescribeKey alone would still pass)')
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'ServiceUnavailableException', times: 1 })
  await t.rejects(signer.check(), { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE' })
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', times: 1 })
  t.match(await signer.check(), /throttled/, 'a throttled probe is ready: the quota is the same for every task')
})

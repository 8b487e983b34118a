/**
 * The proxy with its XMLDSig key in AWS KMS (PIXPROXY_SIGNING_KMS_KEY_ID, the local KMS): a DICT CreateEntry it signs
 * is accepted by the BACEN simulator, which holds only the certificate of the KMS key for the participant; the mTLS
 * key stays in the HSM. A KMS throttle on the request path is answered NOT SENT, and nothing reaches BACEN.
 */
import t from 'tap'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { issueCertificate } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { PROXY_ISPB, startLocalStack } from '../../tools/demo/stack.ts'
import { createEntryRequest } from '../../tools/samples/messages.ts'
import { initSoftHsm } from '../../tools/token/hsm-init.ts'
import { assertVerified, E2e, problemOf } from '../helpers/e2e.ts'

const ALIAS = 'alias/pix-proxy-signing'

t.test('CreateEntry signed in KMS: the simulator accepts the signature; a throttle is NOT SENT', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-e2e-kms-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  // The token first (the mTLS key and the CA), then the signing certificate replaced by one for the KMS key, issued by
  // the same CA: the stack gives the simulator that certificate as the participant's only signing certificate.
  const hsm = await initSoftHsm({ dir: join(dir, 'hsm'), ispb: PROXY_ISPB, ...(process.env.PKCS11_MODULE_PATH === undefined ? {} : { modulePath: process.env.PKCS11_MODULE_PATH }) })
  const kmsKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const hsmCert = parseCertificate(await readFile(hsm.signing.certFile))
  const ca = { certificate: parseCertificate(await readFile(hsm.caCertFile)), key: createPrivateKey(await readFile(hsm.caKeyFile)) }
  const kmsCert = issueCertificate({ subject: hsmCert.subjectString, publicKey: kmsKey, issuer: ca, keyUsage: ['digitalSignature', 'nonRepudiation'], extKeyUsage: [] })
  await writeFile(hsm.signing.certFile, kmsCert.pem)

  const aws = await startLocalAwsEndpoint({ kmsKeys: [{ aliases: [ALIAS], privateKeyPem: kmsKey.export({ type: 'pkcs8', format: 'pem' }).toString() }] })
  t.teardown(() => aws.close())
  Object.assign(process.env, { AWS_ENDPOINT_URL: aws.url, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: 'AKIDLOCAL', AWS_SECRET_ACCESS_KEY: 'local' })

  const stack = await startLocalStack({ dir, longPollMs: 300, settings: { PIXPROXY_SIGNING_KEY_LABEL: '', PIXPROXY_SIGNING_KMS_KEY_ID: ALIAS } })
  const e2e = new E2e(stack, dir)
  t.teardown(() => e2e.close())
  t.equal(stack.proxy.crypto.kmsSigner?.keyArn.startsWith('arn:aws:kms:'), true, 'the proxy signs with the KMS signer')
  t.ok(stack.proxy.crypto.tlsPublicKey !== null, 'and its mTLS key is still the HSM\'s')

  const entry = createEntryRequest()
  const res = await e2e.proxyXml('/api/v2/entries/', entry.xml)
  t.equal(res.status, 201, res.text.slice(0, 300))
  assertVerified(t, e2e, res, 'dict', 'CreateEntryResponse')
  const accepted = e2e.log.filter((m) => m.system === 'dict' && m.operation === 'createEntry' && m.key === entry.key).at(-1)
  t.equal(accepted?.ispb, PROXY_ISPB, 'the simulator identified the participant from the signature')
  t.equal(accepted?.signature, 'VALID', 'and verified it with the KMS key\'s certificate')
  t.equal(accepted?.status, 201, 'and created the entry')
  t.ok(aws.calls.some((c) => c.target === 'TrentService.Sign' && c.status === 200), 'signed through KMS')

  const ready = await e2e.proxy('GET', '/readyz')
  const readiness = JSON.parse(ready.text) as { status: string, checks: Record<string, unknown> }
  t.match(readiness, { status: 'ready', checks: { kms: { ok: true, detail: /signs$/ } } }, '/readyz checks the KMS key')
  t.ok('hsm' in readiness.checks, 'and the HSM, which holds the mTLS key')

  const before = e2e.log.length
  aws.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', times: 10 })
  const throttled = await e2e.proxyXml('/api/v2/entries/', createEntryRequest().xml)
  t.equal(throttled.status, 503, 'a KMS throttle is a 503')
  t.equal(throttled.headers['pix-proxy-outcome'], 'not-sent', 'NOT SENT: the core may send it again')
  t.equal(problemOf(throttled).code, 'PIXPROXY_ERR_KMS_THROTTLED')
  t.equal(e2e.log.length, before, 'nothing reached the simulator')
  aws.clearFaults()
})

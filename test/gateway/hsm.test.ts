/**
 * The gateway's server key in the HSM (SoftHSM through the libp11 engine, as in production with CloudHSM): real
 * mutual-TLS handshakes over TLS 1.2 and 1.3 sign with the token's key, a reload builds a new context with the
 * engine again, and a wrong PIN or label stops the start with its own code. Its own process: SoftHSM and the
 * engine hold process-wide state.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Errors } from '../../core/errors.ts'
import { issueCertificate } from '../../core/pki/ca.ts'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import { runGateway } from '../../src/gateway/server.ts'
import { createSecretsManagerClient } from '../../src/aws/clients.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { setupSoftHsm } from '../helpers/softhsm.ts'
import { createGatewayPki } from '../helpers/gateway-pki.ts'
import { attempt, gatewayConfig, startBackend, testLogger } from './helpers.ts'

process.env.OPENSSL_ENGINES ??= ['/usr/lib/x86_64-linux-gnu/engines-3', '/usr/lib/aarch64-linux-gnu/engines-3'].find((d) => existsSync(d))
process.env.PKCS11_MODULE_PATH ??= '/usr/lib/softhsm/libsofthsm2.so'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-hsm-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const hsm = await setupSoftHsm(t, { tokenLabel: 'pix-gw', keyLabels: ['gw-tls'] })
const key = hsm.keys.get('gw-tls')
if (key === undefined) throw new Error('no HSM key')
const pki = await createGatewayPki(dir)
const backend = await startBackend(pki)
t.teardown(() => backend.close())

// The server certificate certifies the token's key; no PEM key exists for it anywhere.
const serverCert = issueCertificate({
  subject: 'CN=localhost, O=Banco Exemplo S.A., C=BR',
  publicKey: key.publicKey,
  issuer: { certificate: pki.intermediate.certificate, key: pki.intermediate.key },
  keyUsage: ['digitalSignature', 'keyEncipherment'],
  extKeyUsage: ['serverAuth'],
  dnsNames: ['localhost']
})
const certFile = join(dir, 'server-hsm.pem')
await writeFile(certFile, serverCert.pem + pki.intermediate.certPem)
const pinFile = join(dir, 'pin')
await writeFile(pinFile, hsm.pin, { mode: 0o600 })
const hsmSettings = (label: string, pin: string = pinFile): Record<string, string> => ({
  PIXGW_SERVER_CERT_FILE: certFile,
  PIXGW_SERVER_KEY_FILE: '',
  PIXGW_SERVER_KEY_LABEL: label,
  PIXPROXY_HSM_MODULE_PATH: hsm.modulePath,
  PIXPROXY_HSM_TOKEN_LABEL: hsm.tokenLabel,
  PIXPROXY_HSM_PIN_FILE: pin
})
/** As in AWS: the PIN in Secrets Manager, the certificate as PEM text (an ECS secret from SSM). */
const secretSettings = (secretId: string): Record<string, string> => ({
  ...hsmSettings('gw-tls', ''),
  PIXGW_SERVER_CERT_FILE: serverCert.pem + pki.intermediate.certPem,
  PIXPROXY_HSM_PIN_SECRET_ID: secretId,
  PIXGW_LOG_LEVEL: 'silent'
})

t.test('a key label that is not on the token stops the start: TLS_KEY_NOT_FOUND', async (t) => {
  const { logger } = testLogger()
  await t.rejects(startGateway({ config: gatewayConfig(pki, backend, hsmSettings('no-such-key')), logger, identify: icpBrasilIdentity, audit: { write: () => {} } }),
    { code: Errors.TLS_KEY_NOT_FOUND.code })
})

t.test('handshakes with the server key in the HSM, over TLS 1.2 and 1.3, before and after a reload', async (t) => {
  const { logger } = testLogger()
  const gw = await startGateway({ config: gatewayConfig(pki, backend, hsmSettings('gw-tls')), logger, identify: icpBrasilIdentity, audit: { write: () => {} } })
  t.teardown(() => gw.close())
  t.equal(gw.material.options.privateKeyEngine, 'pkcs11', 'the key is the engine\'s')
  t.equal(gw.material.options.key, undefined, 'no PEM key')
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const res = await attempt(gw.url, pki, { client: pki.clients.valid, minVersion: version, maxVersion: version })
    t.ok(res.ok && res.status === 200, `${version}: the client verified the HSM-signed handshake and was answered (${JSON.stringify(res.ok ? res.status : res)})`)
  }
  t.equal(await gw.reload({ force: true }), 'applied', 'a reload loads the key through the engine again')
  const after = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(after.ok && after.status === 200, 'a new handshake after the reload')
})

t.test('the PIN from Secrets Manager (PIXPROXY_HSM_PIN_SECRET_ID) and the certificate as PEM text, as the Terraform gives them', async (t) => {
  const creds = { accessKeyId: 'AKIDLOCALGW', secretAccessKey: 'local-gw-secret' }
  const ep = await startLocalAwsEndpoint({ credentials: { [creds.accessKeyId]: creds.secretAccessKey } })
  t.teardown(() => ep.close())
  const sm = createSecretsManagerClient({ endpoint: ep.url, region: 'sa-east-1', credentials: creds })
  t.teardown(() => sm.destroy())
  // As `aws secretsmanager create-secret --secret-string file://pin` stores it: one trailing newline.
  const arn = ep.putSecret({ name: 'pix-gw/hsm-pin', string: hsm.pin + '\n' })
  const env: NodeJS.ProcessEnv = { PKCS11_MODULE_PATH: hsm.modulePath }

  const gw = await runGateway(gatewayConfig(pki, backend, secretSettings(arn)), env, { secrets: sm })
  let closed = false
  t.teardown(async () => { if (!closed) await gw.close() })
  const id = String(gw.material.options.privateKeyIdentifier)
  const m = /pin-source=file:(.+)$/.exec(id)
  t.ok(m !== null, `the engine reads the PIN from a file (${id.replace(/pin-source=.*/, 'pin-source=…')})`)
  const file = (m as RegExpExecArray)[1] as string
  t.not(file, pinFile, 'a file of its own, not the test\'s')
  t.equal(await readFile(file, 'utf8'), hsm.pin, 'the secret\'s value, its trailing newline dropped')
  t.equal((await stat(file)).mode & 0o777, 0o600, 'readable by the process\'s user only')
  t.ok(ep.calls.some((c) => c.target === 'secretsmanager.GetSecretValue'), 'read with GetSecretValue (SigV4 checked by the endpoint)')
  const res = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(res.ok && res.status === 200, `a handshake signed by the HSM key opened with that PIN (${JSON.stringify(res.ok ? res.status : res)})`)
  t.equal(await gw.reload({ force: true }), 'applied', 'a reload opens the key through the engine again: the file is still there')
  closed = true
  await gw.close()
  t.notOk(existsSync(file), 'the PIN file is removed when the gateway closes')

  // A secret that does not exist stops the start with its own code, and leaves no PIN file.
  await t.rejects(runGateway(gatewayConfig(pki, backend, secretSettings('pix-gw/nope')), env, { secrets: sm }), { code: Errors.AWS_SECRET_NOT_FOUND.code })
  // (A wrong PIN cannot be shown here: the engine keeps the token logged in for the life of the process.)
  // A start that fails after the PIN file was written removes it: a key label not on the token.
  await t.rejects(runGateway(gatewayConfig(pki, backend, { ...secretSettings(arn), PIXGW_SERVER_KEY_LABEL: 'no-such-key' }), env, { secrets: sm }), { code: Errors.TLS_KEY_NOT_FOUND.code })
  const left = (await readdir(tmpdir())).filter((n) => n.startsWith(`pix-proxy-pin-${process.pid}-`))
  t.same(left, [], 'no PIN directory of this process is left behind')
})

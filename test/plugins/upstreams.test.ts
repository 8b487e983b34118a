// mTLS certificate rotation (what SIGHUP triggers in src/server.ts), through the real stack.
import t from 'tap'
import { createPrivateKey } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { request } from 'undici'
import { startLocalStack, PROXY_ISPB } from '../../tools/demo/stack.ts'
import type { LocalStack } from '../../tools/demo/stack.ts'
import { issueCertificate, createTestPki } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { scratchDir } from '../helpers/scratch.ts'

const scratch = scratchDir()

let stack: LocalStack
t.before(async () => { stack = await startLocalStack({ dir: scratch.dir }) })
t.teardown(async () => {
  await stack?.close()
  await scratch.remove() // only after the stack stopped writing there
})

async function policy (): Promise<number> {
  const r = await request(`${stack.proxyUrl}/api/v2/policies/ENTRIES_WRITE`, { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  await r.body.dump()
  return r.statusCode
}

t.test('rotation to a certificate for another key is refused and the current one stays in use', async (t) => {
  const certFile = stack.config.tls.certFile as string
  const original = await readFile(certFile, 'utf8')
  t.teardown(async () => { await writeFile(certFile, original) })
  t.equal(await policy(), 200)
  const foreign = createTestPki().issue('CN=foreign, C=BR', { extKeyUsage: ['clientAuth'] })
  await writeFile(certFile, foreign.certificate.pem)
  await t.rejects(stack.proxy.upstreams.reloadCertificates(), { code: 'PIXPROXY_ERR_TLS_KEY_CERT_MISMATCH' })
  t.equal(await policy(), 200, 'traffic continues on the current certificate')
})

t.test('rotation to a re-issued certificate for the same HSM key takes effect on new connections', async (t) => {
  const certFile = stack.config.tls.certFile as string
  const original = await readFile(certFile, 'utf8')
  t.teardown(async () => { await writeFile(certFile, original) })
  const ca = { certificate: parseCertificate(await readFile(stack.hsm.caCertFile)), key: createPrivateKey(await readFile(stack.hsm.caKeyFile)) }
  const reissued = issueCertificate({
    subject: 'CN=pix-proxy 99999004 tls rotated, OU=PIX, O=Banco Exemplo S.A., C=BR',
    publicKey: stack.proxy.crypto.tlsPublicKey as import('node:crypto').KeyObject,
    issuer: ca,
    extKeyUsage: ['clientAuth']
  })
  await writeFile(certFile, reissued.pem)
  await stack.proxy.upstreams.reloadCertificates()
  t.equal(stack.proxy.upstreams.agent.certificate.fingerprint256, reissued.fingerprint256, 'the agent holds the new certificate')
  // BACEN (the simulator) knows only registered certificates: the new one is presented, so it is refused.
  t.equal(await policy(), 403, 'the simulator sees the new, unregistered certificate')
  await writeFile(certFile, original)
  await stack.proxy.upstreams.reloadCertificates()
  t.equal(await policy(), 200, 'rotating back restores service without a restart')
})

/**
 * The libp11 engine and graphene (Pkcs11KeyStore) share one PKCS#11 module per process. This file pins what
 * happens when the key store initialised the module first and then closes it (C_Finalize): the engine's key
 * stops working for good. (The safe order, engine first and store closed afterwards, is exercised in
 * agent.test.ts: "a certificate that does not match the HSM key".) Its own process: the module ends up finalised.
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Errors } from '../../core/errors.ts'
import { initSoftHsm } from '../../tools/token/hsm-init.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { readPin } from '../../src/hsm/uri.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { TlsKeyAgent } from '../../src/upstream/tls-key-agent.ts'
import type { TlsClientIdentity } from '../../src/upstream/tls-key-agent.ts'
import { Upstream } from '../../src/upstream/client.ts'

process.env.OPENSSL_ENGINES ??= ['/usr/lib/x86_64-linux-gnu/engines-3', '/usr/lib/aarch64-linux-gnu/engines-3'].find((d) => existsSync(d))
process.env.PKCS11_MODULE_PATH ??= '/usr/lib/softhsm/libsofthsm2.so'

const HOST = 'dict-h.pi.rsfn.net.br'
const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-tls-sharing-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const hsm = await initSoftHsm({ dir: join(dir, 'hsm') })
process.env.SOFTHSM2_CONF = hsm.softhsmConf

t.test('a key store that initialised the module first and closes it takes the engine key down', async (t) => {
  const caPem = await readFile(hsm.caCertFile, 'utf8')
  const bacen = createTestPki()
  const server = bacen.issue(`CN=${HOST}`, { dnsNames: [HOST], extKeyUsage: ['serverAuth'] })
  const srv = https.createServer({
    key: server.key?.export({ type: 'pkcs8', format: 'pem' }),
    cert: server.certificate.pem,
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: true
  }, (_req, res) => res.end('ok'))
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    srv.close(() => resolve())
    srv.closeAllConnections()
  }))
  const lookup = ((_h: string, o: { all?: boolean }, cb: (...a: unknown[]) => void) => {
    if (o.all === true) cb(null, [{ address: '127.0.0.1', family: 4 }])
    else cb(null, '127.0.0.1', 4)
  }) as unknown as typeof import('node:dns').lookup
  const identity: TlsClientIdentity = {
    certPem: await readFile(hsm.tls.certFile, 'utf8'),
    caPem: bacen.ca.certificate.pem,
    key: { kind: 'engine', uri: hsm.tls.uri }
  }
  const origin = `https://${HOST}:${(srv.address() as AddressInfo).port}`

  // The store initialises the module (it owns C_Initialize, so its close() finalises).
  const store = await Pkcs11KeyStore.open({ modulePath: process.env.PKCS11_MODULE_PATH as string, tokenLabel: hsm.tokenLabel, pin: await readPin({ pinSource: `file:${hsm.pinFile}` }), poolSize: 1 })
  const signer = await store.signer('pix-sign')
  const agent = TlsKeyAgent.create(identity)

  const before = new Upstream({ name: 'dict', origin, agent, lookup })
  const res = await before.request({ method: 'GET', path: '/', headers: {} })
  t.equal(res.body.toString(), 'ok', 'engine and store work side by side')
  t.equal((await signer.sign(Buffer.from('x'))).length, 256)
  await before.close()

  await store.close()
  const after = new Upstream({ name: 'dict', origin, agent, lookup })
  t.teardown(() => after.close())
  await t.rejects(after.request({ method: 'GET', path: '/', headers: {} }), { code: Errors.UPSTREAM_TLS_HANDSHAKE.code },
    'a new connection fails: the engine key handle died with C_Finalize')
  t.throws(() => TlsKeyAgent.create(identity), { code: Errors.TLS_ENGINE_FAILED.code, cause: { code: 'ERR_OSSL_CRYPTOKI_NOT_INITIALIZED' } },
    'and libp11 cannot initialise the module again')
})

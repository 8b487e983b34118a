/**
 * The TLS key agent against real sockets: a local HTTPS server that requires a client certificate, and the client
 * key `pix-tls` on a real SoftHSM token used through the real libp11 engine.
 *
 * PKCS#11 state is process-wide and libp11 checks the PIN only at the first login of the process, so the order
 * of the tests matters: the wrong-PIN test runs first, before anything has logged in.
 */
import t from 'tap'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SecureContext, TLSSocket } from 'node:tls'
import { Errors } from '../../core/errors.ts'
import { initSoftHsm } from '../../tools/token/hsm-init.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { readPin } from '../../src/hsm/uri.ts'
import { createTestPki, issueCertificate } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { TlsKeyAgent } from '../../src/upstream/tls-key-agent.ts'
import type { TlsClientIdentity } from '../../src/upstream/tls-key-agent.ts'
import { Upstream } from '../../src/upstream/client.ts'

// scripts/env.sh sets these; probing the Debian directory keeps `npx tap` usable without it. They must be in the
// environment before the engine loads (OpenSSL and libp11 read them then).
process.env.OPENSSL_ENGINES ??= ['/usr/lib/x86_64-linux-gnu/engines-3', '/usr/lib/aarch64-linux-gnu/engines-3'].find((d) => existsSync(d))
process.env.PKCS11_MODULE_PATH ??= '/usr/lib/softhsm/libsofthsm2.so'

const BACEN_HOST = 'dict-h.pi.rsfn.net.br'
const AGENT_MODULE = fileURLToPath(new URL('../../src/upstream/tls-key-agent.ts', import.meta.url))

const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-tls-agent-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const hsm = await initSoftHsm({ dir: join(dir, 'hsm') })
// Before anything in this process initialises the PKCS#11 module.
process.env.SOFTHSM2_CONF = hsm.softhsmConf

const hsmCa = { certificate: parseCertificate(await readFile(hsm.caCertFile, 'utf8')), key: createPrivateKey(await readFile(hsm.caKeyFile, 'utf8')) }
const tlsCert = parseCertificate(await readFile(hsm.tls.certFile, 'utf8'))
const signCert = parseCertificate(await readFile(hsm.signing.certFile, 'utf8'))
const bacen = createTestPki({ caSubject: 'CN=Test RSFN TLS CA, O=Banco Central do Brasil, C=BR' })
const bacenServer = bacen.issue(`CN=${BACEN_HOST}`, { dnsNames: [BACEN_HOST], extKeyUsage: ['serverAuth'] })

function keyPem (key: KeyObject | undefined): string {
  if (key === undefined) throw new Error('the test CA returned no key')
  return key.export({ type: 'pkcs8', format: 'pem' }).toString()
}

/** A client certificate from the token's CA (which the test servers trust for clients) for `publicKey`. */
function clientCert (subject: string, publicKey: KeyObject, opts: { notBefore?: Date, notAfter?: Date } = {}): Certificate {
  return issueCertificate({ subject, publicKey, issuer: hsmCa, keyUsage: ['digitalSignature'], extKeyUsage: ['clientAuth'], ...opts })
}

function engineIdentity (extra: Partial<TlsClientIdentity> = {}): TlsClientIdentity {
  return { certPem: tlsCert.pem, caPem: bacen.ca.certificate.pem, key: { kind: 'engine', uri: hsm.tls.uri }, ...extra }
}

interface Seen { subject: string, fingerprint: string, protocol: string | null }

interface ServerOptions {
  minVersion?: 'TLSv1.2' | 'TLSv1.3'
  maxVersion?: 'TLSv1.2' | 'TLSv1.3'
  sigalgs?: string
  key?: string
  cert?: string
}

/** An HTTPS server on 127.0.0.1 that requires a client certificate from the token's CA and echoes what it saw. */
async function startServer (tt: Test, opts: ServerOptions = {}): Promise<{ port: number }> {
  const server = https.createServer({
    key: opts.key ?? keyPem(bacenServer.key),
    cert: opts.cert ?? bacenServer.certificate.pem,
    ca: hsmCa.certificate.pem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: opts.minVersion ?? 'TLSv1.2',
    ...(opts.maxVersion === undefined ? {} : { maxVersion: opts.maxVersion }),
    ...(opts.sigalgs === undefined ? {} : { sigalgs: opts.sigalgs })
  }, (req, res) => {
    const socket = req.socket as TLSSocket
    const peer = socket.getPeerCertificate()
    const seen: Seen = { subject: String(peer.subject?.CN ?? ''), fingerprint: peer.fingerprint256, protocol: socket.getProtocol() }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(seen))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  tt.teardown(() => new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  }))
  return { port: (server.address() as AddressInfo).port }
}

/** One request on a fresh connection (no pool, no session reuse) with the agent's context. */
function fetchWith (agent: TlsKeyAgent, port: number, servername = BACEN_HOST): Promise<Seen> {
  return new Promise((resolve, reject) => {
    // agent: false: a fresh connection and a full handshake every time.
    const options: https.RequestOptions & { secureContext: SecureContext } = { host: '127.0.0.1', port, servername, path: '/', agent: false, secureContext: agent.secureContext }
    const req = https.request(options, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`))
        else resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Seen)
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

const lookupLoopback = ((_host: string, options: { all?: boolean }, cb: (...args: unknown[]) => void) => {
  if (options.all === true) cb(null, [{ address: '127.0.0.1', family: 4 }])
  else cb(null, '127.0.0.1', 4)
}) as unknown as typeof import('node:dns').lookup

function upstreamTo (tt: Test, agent: TlsKeyAgent, port: number): Upstream {
  const upstream = new Upstream({ name: 'dict', origin: `https://${BACEN_HOST}:${port}`, agent, lookup: lookupLoopback, connectTimeoutMs: 5000 })
  tt.teardown(() => upstream.close())
  return upstream
}

t.test('a wrong PIN is TLS_KEY_PIN_INCORRECT (first login of the process)', async (t) => {
  const badPin = join(dir, 'wrong.pin')
  await writeFile(badPin, 'not-the-pin', { mode: 0o600 })
  const uri = hsm.tls.uri.replace(`pin-source=file:${hsm.pinFile}`, `pin-source=file:${badPin}`)
  t.not(uri, hsm.tls.uri)
  for (const attempt of [1, 2]) {
    t.throws(() => TlsKeyAgent.create(engineIdentity({ key: { kind: 'engine', uri } })),
      { code: Errors.TLS_KEY_PIN_INCORRECT.code, cause: { code: 'ERR_OSSL_PIN_INCORRECT' } }, `attempt ${attempt}`)
  }
})

t.test('the HSM key through the engine: the server sees the client certificate', async (t) => {
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    t.test(version, async (t) => {
      const { port } = await startServer(t, { minVersion: version, maxVersion: version })
      const agent = TlsKeyAgent.create(engineIdentity())
      t.equal(agent.certificate.fingerprint256, tlsCert.fingerprint256)
      t.equal(agent.keyDescription, 'pkcs11:token=pix-proxy;object=pix-tls;type=private', 'no pin-source in what gets logged')
      const seen = await fetchWith(agent, port)
      t.same(seen, { subject: 'pix-proxy 99999004 mtls', fingerprint: tlsCert.fingerprint256, protocol: version })
    })
  }
})

t.test('once logged in, the engine no longer checks the PIN (libp11 0.4.12)', async (t) => {
  // Pins a measured limitation so that a libp11 upgrade that changes it is noticed: after the first login of the
  // process, a key loads whatever the pin-source file holds.
  TlsKeyAgent.create(engineIdentity())
  const badPin = join(dir, 'wrong-again.pin')
  await writeFile(badPin, 'not-the-pin', { mode: 0o600 })
  const uri = hsm.tls.uri.replace(`pin-source=file:${hsm.pinFile}`, `pin-source=file:${badPin}`)
  t.doesNotThrow(() => TlsKeyAgent.create(engineIdentity({ key: { kind: 'engine', uri } })))
})

t.test('sigalgs RSA+SHA256: TLS 1.2 with PKCS#1 v1.5 signatures (CKM_RSA_PKCS)', async (t) => {
  // The server accepts nothing but rsa_pkcs1_sha256, so a successful handshake proves that the HSM key made a
  // PKCS#1 v1.5 signature; the server allows TLS 1.3, so the cap to TLS 1.2 is the agent's.
  const pkcs1Only = await startServer(t, { sigalgs: 'RSA+SHA256' })
  const agent = TlsKeyAgent.create(engineIdentity({ sigalgs: 'RSA+SHA256' }))
  t.same(await fetchWith(agent, pkcs1Only.port), { subject: 'pix-proxy 99999004 mtls', fingerprint: tlsCert.fingerprint256, protocol: 'TLSv1.2' })

  const defaultAgent = TlsKeyAgent.create(engineIdentity())
  await t.rejects(fetchWith(defaultAgent, pkcs1Only.port), 'without the setting, TLS 1.3 is negotiated and needs PSS, which this server refuses')

  const pssOnly = await startServer(t, { sigalgs: 'RSA-PSS+SHA256' })
  t.same((await fetchWith(defaultAgent, pssOnly.port)).protocol, 'TLSv1.3', 'default: TLS 1.3 with RSA-PSS')
  await t.rejects(fetchWith(agent, pssOnly.port), 'a PKCS#1-only client cannot talk to a PSS-only server')

  t.throws(() => TlsKeyAgent.create(engineIdentity({ sigalgs: 'RSA+SHA256', minVersion: 'TLSv1.3' })),
    { code: Errors.TLS_CONTEXT_INVALID.code, message: /RSA-PSS/ })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ sigalgs: 'NOT+AN_ALG' })), { code: Errors.TLS_CONTEXT_INVALID.code })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ ciphers: 'NO-SUCH-CIPHER' })), { code: Errors.TLS_CONTEXT_INVALID.code })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ minVersion: 'TLSv1.1' as 'TLSv1.2' })), { code: Errors.TLS_CONTEXT_INVALID.code })
})

t.test('minVersion TLSv1.3 refuses a TLS 1.2-only server', async (t) => {
  const { port } = await startServer(t, { maxVersion: 'TLSv1.2' })
  const agent = TlsKeyAgent.create(engineIdentity({ minVersion: 'TLSv1.3' }))
  await t.rejects(upstreamTo(t, agent, port).request({ method: 'GET', path: '/', headers: {} }), { code: Errors.UPSTREAM_TLS_HANDSHAKE.code })
  t.equal((await fetchWith(TlsKeyAgent.create(engineIdentity()), port)).protocol, 'TLSv1.2', 'the default accepts it')
})

t.test('the server certificate must name the host', async (t) => {
  const other = bacen.issue('CN=spi-h.pi.rsfn.net.br', { dnsNames: ['spi-h.pi.rsfn.net.br'], extKeyUsage: ['serverAuth'] })
  const { port } = await startServer(t, { key: keyPem(other.key), cert: other.certificate.pem })
  const agent = TlsKeyAgent.create(engineIdentity())
  await t.rejects(upstreamTo(t, agent, port).request({ method: 'GET', path: '/', headers: {} }), {
    code: Errors.UPSTREAM_TLS_HOSTNAME.code,
    message: new RegExp(BACEN_HOST.replace(/\./g, '\\.')),
    cause: { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }
  })
  t.same((await fetchWith(agent, port, 'spi-h.pi.rsfn.net.br')).subject, 'pix-proxy 99999004 mtls', 'the right name passes')
})

t.test('a server certificate from a CA that is not pinned is refused', async (t) => {
  const rogue = createTestPki({ caSubject: 'CN=Rogue CA, C=BR' }).issue(`CN=${BACEN_HOST}`, { dnsNames: [BACEN_HOST], extKeyUsage: ['serverAuth'] })
  const { port } = await startServer(t, { key: keyPem(rogue.key), cert: rogue.certificate.pem })
  const agent = TlsKeyAgent.create(engineIdentity())
  await t.rejects(upstreamTo(t, agent, port).request({ method: 'GET', path: '/', headers: {} }), {
    code: Errors.UPSTREAM_TLS_UNTRUSTED.code,
    cause: { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }
  })
})

t.test('a missing key or token is TLS_KEY_NOT_FOUND', async (t) => {
  t.throws(() => TlsKeyAgent.create(engineIdentity({ key: { kind: 'engine', uri: hsm.tls.uri.replace('object=pix-tls', 'object=pix-none') } })),
    { code: Errors.TLS_KEY_NOT_FOUND.code, message: /object=pix-none/, cause: { code: 'ERR_OSSL_OBJECT_NOT_FOUND' } })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ key: { kind: 'engine', uri: hsm.tls.uri.replace('token=pix-proxy', 'token=no-such-token') } })),
    { code: Errors.TLS_KEY_NOT_FOUND.code })
})

t.test('a certificate that does not match the HSM key is TLS_KEY_CERT_MISMATCH', async (t) => {
  // The HSM key's public half read through PKCS#11; the store shares the module the engine initialised (so its
  // close() does not finalise it under the engine).
  const store = await Pkcs11KeyStore.open({ modulePath: process.env.PKCS11_MODULE_PATH as string, tokenLabel: hsm.tokenLabel, pin: await readPin({ pinSource: `file:${hsm.pinFile}` }), poolSize: 1 })
  const expectedPublicKey = (await store.signer('pix-tls')).publicKey
  await store.close()

  t.throws(() => TlsKeyAgent.create(engineIdentity({ certPem: signCert.pem, expectedPublicKey })),
    { code: Errors.TLS_KEY_CERT_MISMATCH.code, message: /assinatura/ }, 'refused by expectedPublicKey')
  t.throws(() => TlsKeyAgent.create(engineIdentity({ certPem: signCert.pem })),
    { code: Errors.TLS_KEY_CERT_MISMATCH.code, cause: { code: 'ERR_OSSL_X509_KEY_VALUES_MISMATCH' } }, 'refused by OpenSSL without it')
  const agent = TlsKeyAgent.create(engineIdentity({ expectedPublicKey }))
  const { port } = await startServer(t)
  t.equal((await fetchWith(agent, port)).fingerprint, tlsCert.fingerprint256, 'the matching key works after the store closed')
})

t.test('several contexts in one process: old ones keep working, rotation swaps for new connections', async (t) => {
  const { port } = await startServer(t)
  const renewed = clientCert('CN=pix-proxy 99999004 mtls 2026, OU=PIX, O=Banco Exemplo S.A., C=BR', tlsCert.publicKey)
  const otherKey = clientCert('CN=pix-proxy 99999004 mtls other key, OU=PIX, O=Banco Exemplo S.A., C=BR', signCert.publicKey)
  const agents = [
    TlsKeyAgent.create(engineIdentity()),
    TlsKeyAgent.create(engineIdentity({ certPem: renewed.pem })),
    TlsKeyAgent.create(engineIdentity({ certPem: otherKey.pem, key: { kind: 'engine', uri: hsm.signing.uri } })),
    TlsKeyAgent.create(engineIdentity())
  ]
  const seen = await Promise.all(agents.map((a) => fetchWith(a, port)))
  t.same(seen.map((s) => s.fingerprint), [tlsCert.fingerprint256, renewed.fingerprint256, otherKey.fingerprint256, tlsCert.fingerprint256])

  const agent = agents[0] as TlsKeyAgent
  const before = agent.secureContext
  let notified = 0
  const off = agent.onRotate(() => { notified++ })
  agent.rotate(engineIdentity({ certPem: renewed.pem }))
  t.equal(notified, 1)
  t.not(agent.secureContext, before, 'a new context')
  t.equal(agent.certificate.fingerprint256, renewed.fingerprint256)
  t.equal((await fetchWith(agent, port)).fingerprint, renewed.fingerprint256, 'new connections present the new certificate')

  // A failed rotation changes nothing and notifies nobody.
  t.throws(() => agent.rotate(engineIdentity({ certPem: renewed.pem, key: { kind: 'engine', uri: hsm.tls.uri.replace('pix-tls', 'pix-gone') } })),
    { code: Errors.TLS_KEY_NOT_FOUND.code })
  t.equal(notified, 1)
  t.equal(agent.certificate.fingerprint256, renewed.fingerprint256)

  off()
  const failing = agent.onRotate(() => { throw new Error('listener broke') })
  let after = 0
  agent.onRotate(() => { after++ })
  t.throws(() => agent.rotate(engineIdentity()), AggregateError, 'a throwing listener is reported')
  t.equal(after, 1, 'the other listeners still ran')
  t.equal(notified, 1, 'unsubscribed')
  t.equal(agent.certificate.fingerprint256, tlsCert.fingerprint256, 'the rotation itself happened')
  failing()
})

t.test('the PEM key path', async (t) => {
  const { port } = await startServer(t)
  const software = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const cert = clientCert('CN=pix-proxy 99999004 mtls software, O=Banco Exemplo S.A., C=BR', software.publicKey)
  const pem = software.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const identity = (extra: Partial<TlsClientIdentity> = {}): TlsClientIdentity =>
    ({ certPem: cert.pem, caPem: bacen.ca.certificate.pem, key: { kind: 'pem', keyPem: pem }, ...extra })

  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const agent = TlsKeyAgent.create(identity({ minVersion: version }))
    t.equal(agent.keyDescription, 'the PEM private key')
    const { port: p } = await startServer(t, { maxVersion: version })
    t.same(await fetchWith(agent, p), { subject: 'pix-proxy 99999004 mtls software', fingerprint: cert.fingerprint256, protocol: version })
  }
  t.throws(() => TlsKeyAgent.create(identity({ certPem: tlsCert.pem })), { code: Errors.TLS_KEY_CERT_MISMATCH.code })
  t.throws(() => TlsKeyAgent.create(identity({ expectedPublicKey: tlsCert.publicKey })), { code: Errors.TLS_KEY_CERT_MISMATCH.code })
  t.throws(() => TlsKeyAgent.create(identity({ key: { kind: 'pem', keyPem: 'not a key' } })), { code: Errors.TLS_PEM_INVALID.code, message: /private key/ })
  const encrypted = software.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }).toString()
  t.throws(() => TlsKeyAgent.create(identity({ key: { kind: 'pem', keyPem: encrypted } })), { code: Errors.TLS_PEM_INVALID.code })
  t.equal((await fetchWith(TlsKeyAgent.create(identity()), port)).fingerprint, cert.fingerprint256)
})

t.test('bad certificates and CA bundles are refused before anything is loaded', async (t) => {
  t.throws(() => TlsKeyAgent.create(engineIdentity({ certPem: 'garbage' })), { code: Errors.TLS_PEM_INVALID.code, message: /client certificate/ })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ certPem: '' })), { code: Errors.TLS_PEM_INVALID.code })
  // Node's createSecureContext silently accepts this one: the server would then be trusted by nothing at all.
  t.throws(() => TlsKeyAgent.create(engineIdentity({ caPem: 'garbage' })), { code: Errors.TLS_PEM_INVALID.code, message: /CA bundle/ })
  const day = 86_400_000
  const expired = clientCert('CN=expired', tlsCert.publicKey, { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ certPem: expired.pem })), { code: Errors.CERT_UNSUITABLE.code, message: /expired/ })
  const future = clientCert('CN=future', tlsCert.publicKey, { notBefore: new Date(Date.now() + day), notAfter: new Date(Date.now() + 10 * day) })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ certPem: future.pem })), { code: Errors.CERT_UNSUITABLE.code, message: /not valid before/ })
  t.throws(() => TlsKeyAgent.create(engineIdentity({ key: { kind: 'file' } as unknown as TlsClientIdentity['key'] })), { code: Errors.TLS_CONTEXT_INVALID.code })
})

t.test('engine URIs are checked before the engine sees them', async (t) => {
  const base = `pkcs11:token=${hsm.tokenLabel};object=pix-tls;type=private`
  const cases: Array<[string, string, RegExp]> = [
    [`${base}?pin-value=1234`, Errors.HSM_PIN_SOURCE.code, /pin-value/],
    [base, Errors.HSM_PIN_SOURCE.code, /no pin-source/],
    [`${base}?pin-source=file:${join(dir, 'no-such.pin')}`, Errors.HSM_PIN_SOURCE.code, /ENOENT/],
    [`${base}?pin-source=env:PIN`, Errors.HSM_PIN_SOURCE.code, /only file:/],
    [`${base}?pin-source=file:${hsm.pinFile}&module-path=/usr/lib/softhsm/libsofthsm2.so`, Errors.HSM_URI_INVALID.code, /PKCS11_MODULE_PATH/],
    [`pkcs11:token=${hsm.tokenLabel};type=private?pin-source=file:${hsm.pinFile}`, Errors.HSM_URI_INVALID.code, /names no key/],
    [`pkcs11:token=${hsm.tokenLabel};object=pix-tls;type=cert?pin-source=file:${hsm.pinFile}`, Errors.HSM_URI_INVALID.code, /type=private/],
    ['file:/etc/key.pem', Errors.HSM_URI_INVALID.code, /pkcs11:/]
  ]
  for (const [uri, code, message] of cases) {
    const err = t.throws(() => TlsKeyAgent.create(engineIdentity({ key: { kind: 'engine', uri } })), { code, message }, uri)
    if (err instanceof Error) t.notMatch(err.message, /not-the-pin|1234/, 'no PIN in the message')
  }
})

/** Runs TlsKeyAgent.create in a child process with `env` and reports the error code (or "ok"). */
function createInChild (env: NodeJS.ProcessEnv, identity: TlsClientIdentity): Promise<string> {
  const script = [
    `const { TlsKeyAgent } = await import(${JSON.stringify(AGENT_MODULE)})`,
    'let input = ""',
    'for await (const c of process.stdin) input += c',
    'try { TlsKeyAgent.create(JSON.parse(input)); console.log("ok") } catch (err) { console.log(err.code) }'
  ].join('\n')
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env, stdio: ['pipe', 'pipe', 'ignore'], timeout: 60_000 })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString('utf8') })
    child.on('error', reject)
    child.on('close', () => resolve(out.trim()))
    child.stdin.end(JSON.stringify(identity))
  })
}

t.test('TLS_ENGINE_FAILED when the engine or the PKCS#11 module cannot be loaded', async (t) => {
  const identity = engineIdentity()
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, SOFTHSM2_CONF: hsm.softhsmConf, OPENSSL_ENGINES: process.env.OPENSSL_ENGINES, PKCS11_MODULE_PATH: process.env.PKCS11_MODULE_PATH }
  t.equal(await createInChild(env, identity), 'ok', 'the control works')
  t.equal(await createInChild({ ...env, OPENSSL_ENGINES: join(dir, 'no-engines-here') }, identity), Errors.TLS_ENGINE_FAILED.code, 'no engine')
  t.equal(await createInChild({ ...env, PKCS11_MODULE_PATH: join(dir, 'no-such-module.so') }, identity), Errors.TLS_ENGINE_FAILED.code, 'no module')
})

t.test('why the engine is named by id: by path it works once, then poisons the process (libp11 0.4.12)', async (t) => {
  // Pins the measured fact behind ENGINE_ID in src/upstream/tls-key-agent.ts, with raw node:tls in a child process.
  const script = [
    "import tls from 'node:tls'",
    `const cert = ${JSON.stringify(tlsCert.pem)}`,
    `const uri = ${JSON.stringify(hsm.tls.uri)}`,
    `const path = ${JSON.stringify(join(process.env.OPENSSL_ENGINES ?? '', 'pkcs11.so'))}`,
    'const out = []',
    'for (const engine of process.argv.slice(1)) {',
    "  try { tls.createSecureContext({ cert, privateKeyEngine: engine === 'path' ? path : 'pkcs11', privateKeyIdentifier: uri }); out.push('ok') }",
    "  catch (err) { out.push('fail') }",
    '}',
    "console.log(out.join(' '))"
  ].join('\n')
  const run = (...engines: string[]): Promise<string> => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...engines],
      { env: { ...process.env, SOFTHSM2_CONF: hsm.softhsmConf }, stdio: ['ignore', 'pipe', 'ignore'], timeout: 60_000 })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString('utf8') })
    child.on('error', reject)
    child.on('close', () => resolve(out.trim()))
  })
  t.equal(await run('id', 'id', 'id'), 'ok ok ok', 'by id, every context loads')
  t.equal(await run('path', 'path', 'id'), 'ok fail fail', 'by path, only the first; even by id afterwards')
})

import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { connect, createServer, type ConnectionOptions, type TLSSocket } from 'node:tls'
import t, { type Test } from 'tap'
import { createTestPki } from '../../core/pki/ca.ts'
import { OFB_TLS12_PERMITTED_SUITES, OFB_TLS12_REQUIRED_SUITES, OFB_TLS13_SUITES, OPENSSL_NAMES, ofbTlsPolicy } from '../../core/pki/ofb-tls-policy.ts'

const pki = createTestPki()
const server = pki.issue('CN=localhost', { dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] })
const ca = pki.ca.certificate.pem

/** A TLS server with the policy; resolves its port. Every accepted connection answers "ok" and closes. */
async function policyServer (t: Test, allowDhe = false): Promise<{ port: number, clientErrors: Error[] }> {
  const clientErrors: Error[] = []
  const s = createServer({
    ...ofbTlsPolicy({ allowDhe }),
    key: server.key?.export({ type: 'pkcs8', format: 'pem' }),
    cert: server.certificate.pem
  }, (sock) => { sock.end('ok') })
  s.on('tlsClientError', (err) => { clientErrors.push(err) })
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  t.teardown(() => new Promise<void>((resolve) => { s.close(() => { resolve() }) }))
  return { port: (s.address() as AddressInfo).port, clientErrors }
}

interface Outcome { ok: boolean, protocol?: string | null, cipher?: string, reused?: boolean, session?: Buffer, error?: string }

/** Connects, reads until the server closes, and reports what was negotiated (or the error). */
async function dial (port: number, opts: ConnectionOptions): Promise<Outcome> {
  return await new Promise((resolve) => {
    let session: Buffer | undefined
    const sock: TLSSocket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ...opts })
    sock.on('session', (s: Buffer) => { session = s })
    sock.on('error', (err) => { resolve({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message }) })
    sock.on('secureConnect', () => {
      const info = { protocol: sock.getProtocol(), cipher: sock.getCipher().standardName, reused: sock.isSessionReused() }
      sock.resume()
      sock.on('end', () => { resolve({ ok: true, ...info, session }) })
    })
  })
}

t.test('the suites are the ones the profile names', async (t) => {
  t.same([...OFB_TLS12_REQUIRED_SUITES].sort(), ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'])
  t.equal(OFB_TLS12_PERMITTED_SUITES.length, 4)
  for (const s of OFB_TLS12_REQUIRED_SUITES) t.ok(OFB_TLS12_PERMITTED_SUITES.includes(s), `${s} is permitted`)
  const p = ofbTlsPolicy()
  t.equal(p.minVersion, 'TLSv1.2')
  t.equal(p.tls12Ciphers, 'ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256')
  t.notOk('dhparam' in p, 'no DH parameters without allowDhe')
  const dhe = ofbTlsPolicy({ allowDhe: true })
  t.same(dhe.tls12Ciphers.split(':').sort(), Object.values(OPENSSL_NAMES).sort())
  t.equal(dhe.dhparam, 'auto')
})

t.test('TLS 1.2 with each required suite is accepted', async (t) => {
  const { port } = await policyServer(t)
  for (const suite of OFB_TLS12_REQUIRED_SUITES) {
    const r = await dial(port, { maxVersion: 'TLSv1.2', ciphers: OPENSSL_NAMES[suite] })
    t.equal(r.ok, true, `${suite}: ${r.error ?? 'ok'}`)
    t.equal(r.protocol, 'TLSv1.2')
    t.equal(r.cipher, suite)
  }
})

t.test('TLS 1.3 is accepted', async (t) => {
  const { port } = await policyServer(t)
  const r = await dial(port, { minVersion: 'TLSv1.3' })
  t.equal(r.ok, true, r.error ?? 'ok')
  t.equal(r.protocol, 'TLSv1.3')
  t.ok(OFB_TLS13_SUITES.includes(r.cipher ?? ''), `negotiated ${String(r.cipher)}`)
})

t.test('DHE suites only with allowDhe', async (t) => {
  const off = await policyServer(t)
  const refused = await dial(off.port, { maxVersion: 'TLSv1.2', ciphers: 'DHE-RSA-AES128-GCM-SHA256' })
  t.equal(refused.ok, false, 'DHE refused by default')
  const on = await policyServer(t, true)
  const r = await dial(on.port, { maxVersion: 'TLSv1.2', ciphers: 'DHE-RSA-AES128-GCM-SHA256' })
  t.equal(r.ok, true, r.error ?? 'ok')
  t.equal(r.cipher, 'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256')
})

t.test('suites outside the profile are refused by the server', async (t) => {
  const { port, clientErrors } = await policyServer(t)
  for (const cipher of ['ECDHE-RSA-AES128-SHA256', 'ECDHE-RSA-CHACHA20-POLY1305', 'AES128-GCM-SHA256', 'ECDHE-RSA-AES256-SHA']) {
    const before = clientErrors.length
    const r = await dial(port, { maxVersion: 'TLSv1.2', ciphers: cipher })
    t.equal(r.ok, false, `${cipher} refused`)
    t.match(String(clientErrors[before]?.message), /no shared cipher|no suitable|handshake failure/i, `${cipher}: the server refused it`)
  }
})

t.test('TLS 1.1 is refused by the server', async (t) => {
  const { port, clientErrors } = await policyServer(t)
  const r = await dial(port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' })
  t.equal(r.ok, false)
  t.match(String(clientErrors[0]?.message), /unsupported protocol|version/i, `server error: ${String(clientErrors[0]?.message)}`)
})

t.test('sessions are never resumed (the profile disables resumption)', async (t) => {
  const { port } = await policyServer(t)
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const first = await dial(port, { minVersion: version, maxVersion: version })
    t.equal(first.ok, true, `${version} first connection: ${first.error ?? 'ok'}`)
    const second = await dial(port, { minVersion: version, maxVersion: version, session: first.session })
    t.equal(second.ok, true, `${version} second connection: ${second.error ?? 'ok'}`)
    t.equal(second.reused, false, `${version}: not resumed`)
  }
})

// The client certificate read once per connection (core/pki/peer.ts), over real TLS.
import t from 'tap'
import type { Test } from 'tap'
import { X509Certificate } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { once } from 'node:events'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import tls from 'node:tls'
import { createTestPki } from '../../core/pki/ca.ts'
import { peerCertificate } from '../../core/pki/peer.ts'
import type { PeerCertificate } from '../../core/pki/peer.ts'

const pki = createTestPki()
const pem = (k: KeyObject | undefined): string => (k as KeyObject).export({ type: 'pkcs8', format: 'pem' }).toString()
const server = pki.issue('CN=localhost', { dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] })
const client = pki.issue('CN=99999004 tls, O=Banco Exemplo S.A., C=BR', { extKeyUsage: ['clientAuth'] })

/** A TLS 1.2 server (renegotiation exists only there) that hands each connection's socket to the test. */
async function tlsServer (t: Test, opts: { rejectUnauthorized: boolean }): Promise<{ port: number, next: () => Promise<tls.TLSSocket> }> {
  const srv = tls.createServer({ key: pem(server.key), cert: server.certificate.pem, ca: pki.ca.certificate.pem, requestCert: true, rejectUnauthorized: opts.rejectUnauthorized, maxVersion: 'TLSv1.2' })
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  t.teardown(() => { srv.close() })
  return { port: (srv.address() as AddressInfo).port, next: async () => (await once(srv, 'secureConnection'))[0] as tls.TLSSocket }
}

t.test('the certificate is read once per connection; renegotiation is refused after', async (t) => {
  const srv = await tlsServer(t, { rejectUnauthorized: true })
  const accepted = srv.next()
  const c = tls.connect({ port: srv.port, host: '127.0.0.1', servername: 'localhost', ca: pki.ca.certificate.pem, key: pem(client.key), cert: client.certificate.pem })
  t.teardown(() => { c.destroy() })
  const [socket] = await Promise.all([accepted, once(c, 'secureConnect')])
  const refused = new Promise<Error>((resolve) => { socket.once('error', (err) => { socket.destroy(); resolve(err) }) })
  const peer = peerCertificate(socket) as PeerCertificate
  t.equal(peer.fingerprint256, new X509Certificate(client.certificate.pem).fingerprint256, 'SHA-256 of the client certificate, Node\'s form')
  t.equal(peer.subjectCN, '99999004 tls')
  t.equal(peerCertificate(socket), peer, 'the second read is the cached one')

  c.on('error', () => {}) // the server's refusal ends the connection under the client's renegotiation
  socket.resume() // the server reads, so it sees the renegotiation's ClientHello
  c.renegotiate({}, () => {})
  t.match((await refused).message, /renegotiation/i, 'the client\'s renegotiation attempt is refused by the server')
})

t.test('no client certificate, or no TLS: null', async (t) => {
  const srv = await tlsServer(t, { rejectUnauthorized: false })
  const accepted = srv.next()
  const c = tls.connect({ port: srv.port, host: '127.0.0.1', servername: 'localhost', ca: pki.ca.certificate.pem })
  t.teardown(() => { c.destroy() })
  t.equal(peerCertificate(await accepted), null, 'a TLS connection without a client certificate')

  const plain = net.createServer()
  plain.listen(0, '127.0.0.1')
  await once(plain, 'listening')
  t.teardown(() => { plain.close() })
  const conn = once(plain, 'connection')
  const p = net.connect((plain.address() as AddressInfo).port, '127.0.0.1')
  t.teardown(() => { p.destroy() })
  const [s] = await conn as [net.Socket]
  t.equal(peerCertificate(s), null, 'a plain TCP connection')
  s.destroy()
})

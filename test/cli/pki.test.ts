// `pix-proxy pki inbound`: the local inbound mutual-TLS set-up docker/local-init.sh makes for docker-compose.yml.
// The certificates are proven by use: a TLS server with the written server certificate, requiring a certificate from
// the written client CA, accepts the written client (trusting only the written server CA) and nothing else.
import t from 'tap'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { lstatSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { connect, createServer } from 'node:tls'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { Errors } from '../../core/errors.ts'
import { main } from '../../tools/cli/main.ts'
import type { InboundPkiResult } from '../../tools/token/inbound-pki.ts'
import { certificateMatchesKey, parseCertificate } from '../../core/pki/x509.ts'
import { loadConfig } from '../../src/config.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { captureIo } from '../helpers/cli-io.ts'

async function pki (argv: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const c = captureIo()
  const code = await main(['pki', ...argv], c.io)
  return { code, ...c.text() }
}

t.test('pki inbound writes the server certificate, the client CA, a client and the allowlist; keys 0600', async (t) => {
  const dir = join(t.testdir(), 'inbound')
  const r = await pki(['inbound', '--dir', dir, '--server-name', 'proxy', '--server-name', 'localhost', '--server-name', '127.0.0.1'])
  t.equal(r.code, 0, r.stderr)
  const result = JSON.parse(r.stdout) as InboundPkiResult
  t.same(JSON.parse(await readFile(join(dir, 'inbound.json'), 'utf8')), result, 'inbound.json is what it printed')
  t.same((await readdir(dir)).sort(), ['allowlist.txt', 'client-ca.key', 'client-ca.pem', 'client.key', 'client.pem', 'inbound.json', 'server-ca.key', 'server-ca.pem', 'server.key', 'server.pem'])
  for (const f of ['server.key', 'client.key', 'server-ca.key', 'client-ca.key']) t.equal(lstatSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`)
  for (const f of ['server.pem', 'client.pem', 'server-ca.pem', 'client-ca.pem', 'allowlist.txt']) t.equal(lstatSync(join(dir, f)).mode & 0o777, 0o644, `${f} is 0644`)
  t.notMatch(r.stdout, /PRIVATE KEY/, 'no key printed')

  const cert = async (f: string): Promise<X509Certificate> => new X509Certificate(await readFile(join(dir, f)))
  const [serverCa, server, clientCa, client] = await Promise.all(['server-ca.pem', 'server.pem', 'client-ca.pem', 'client.pem'].map(cert)) as [X509Certificate, X509Certificate, X509Certificate, X509Certificate]
  t.ok(server.verify(serverCa.publicKey) && server.checkIssued(serverCa), 'the server certificate is the server CA\'s')
  t.ok(client.verify(clientCa.publicKey) && client.checkIssued(clientCa), 'the client certificate is the client CA\'s')
  t.notOk(client.checkIssued(serverCa) || server.checkIssued(clientCa), 'two CAs, neither issues for the other')
  t.equal(server.checkHost('proxy'), 'proxy')
  t.equal(server.checkHost('localhost'), 'localhost')
  t.equal(server.checkIP('127.0.0.1'), '127.0.0.1')
  t.equal(server.checkHost('example.com'), undefined)
  t.same(server.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'serverAuth only')
  t.same(client.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'clientAuth only')
  t.ok(certificateMatchesKey(parseCertificate(await readFile(join(dir, 'client.pem'))), createPrivateKey(await readFile(join(dir, 'client.key')))))
  t.ok(certificateMatchesKey(parseCertificate(await readFile(join(dir, 'server.pem'))), createPrivateKey(await readFile(join(dir, 'server.key')))))
  const allowlist = await readFile(join(dir, 'allowlist.txt'), 'utf8')
  t.equal(allowlist, client.fingerprint256 + '\n', 'the allowlist: the client certificate\'s SHA-256 fingerprint')
  t.equal(result.clientFingerprint256, client.fingerprint256)

  // The files, as the proxy's settings (the allowlist file's content as the local SSM serves it): accepted off loopback.
  const pem = parseCertificate(await readFile(join(dir, 'server.pem'))).pem
  const config = loadConfig({
    PIXPROXY_ISPB: '99999004',
    PIXPROXY_LISTEN_HOST: '0.0.0.0',
    PIXPROXY_SIGNING_KEY_FILE: pem,
    PIXPROXY_SIGNING_CERT_FILE: pem,
    PIXPROXY_TLS_KEY_FILE: pem,
    PIXPROXY_TLS_CERT_FILE: pem,
    PIXPROXY_TLS_CA_FILE: pem,
    PIXPROXY_BACEN_SIGNING_CERTS_FILE: pem,
    PIXPROXY_INBOUND_TLS_CERT_FILE: join(dir, 'server.pem'),
    PIXPROXY_INBOUND_TLS_KEY_FILE: join(dir, 'server.key'),
    PIXPROXY_INBOUND_CLIENT_CA_FILE: join(dir, 'client-ca.pem'),
    PIXPROXY_INBOUND_CLIENT_ALLOWLIST: allowlist
  })
  t.same(config.inbound.clientAllowlist, [client.fingerprint256])
  t.equal(config.unauthenticatedCallers, false)

  // By use: a TLS server as the proxy configures it (server cert, client CA required).
  const tlsServer = createServer({
    cert: await readFile(join(dir, 'server.pem')),
    key: await readFile(join(dir, 'server.key')),
    ca: await readFile(join(dir, 'client-ca.pem')),
    requestCert: true,
    rejectUnauthorized: true
  }, (s) => { s.end('hello\n') })
  tlsServer.on('tlsClientError', () => {})
  tlsServer.listen(0, '127.0.0.1')
  await once(tlsServer, 'listening')
  t.teardown(() => { tlsServer.close() })
  const port = (tlsServer.address() as AddressInfo).port
  const hello = async (opts: { cert?: Buffer | string, key?: Buffer | string, servername?: string }): Promise<string> => await new Promise((resolve, reject) => {
    const s: TLSSocket = connect({ host: '127.0.0.1', port, ca: serverCa.toString(), servername: opts.servername ?? 'localhost', ...opts })
    let data = ''
    s.on('data', (c: Buffer) => { data += c.toString() })
    s.once('end', () => { resolve(data) })
    s.once('error', reject)
  })
  const clientId = { cert: await readFile(join(dir, 'client.pem')), key: await readFile(join(dir, 'client.key')) }
  t.equal(await hello(clientId), 'hello\n', 'the client, trusting the server CA, is accepted (host name localhost)')
  t.equal(await hello({ ...clientId, servername: 'proxy' }), 'hello\n', 'and under the compose host name proxy')
  // TLS 1.3: the client may finish its side of the handshake before the server's alert arrives; refused either way.
  const refused = async (opts: { cert?: string, key?: string }): Promise<string> => await hello(opts).then((d) => d === '' ? 'refused' : d, () => 'refused')
  t.equal(await refused({}), 'refused', 'no client certificate: the handshake fails')
  const stranger = createTestPki().issue('CN=stranger, C=BR', { extKeyUsage: ['clientAuth'] })
  t.equal(await refused({ cert: stranger.certificate.pem, key: stranger.key?.export({ type: 'pkcs8', format: 'pem' }).toString() }), 'refused', 'a certificate from another CA: the handshake fails')
})

t.test('pki inbound refuses a directory that holds a set unless --force; the defaults name proxy, localhost, 127.0.0.1', async (t) => {
  const dir = join(t.testdir(), 'inbound')
  const first = await pki(['inbound', '--dir', dir])
  t.equal(first.code, 0, first.stderr)
  const before = await readFile(join(dir, 'allowlist.txt'), 'utf8')
  const server = new X509Certificate(await readFile(join(dir, 'server.pem')))
  t.equal(server.subjectAltName, 'DNS:proxy, DNS:localhost, IP Address:127.0.0.1')
  const again = await pki(['inbound', '--dir', dir])
  t.equal(again.code, 1)
  t.match(JSON.parse(again.stderr.trim()), { error: Errors.CERT_ISSUE.code, message: /already holds an inbound PKI .*pass --force/ })
  t.equal(await readFile(join(dir, 'allowlist.txt'), 'utf8'), before, 'nothing replaced')
  const forced = await pki(['inbound', '--dir', dir, '--force', '--client-subject', 'CN=core-2, O=Banco Exemplo S.A., C=BR'])
  t.equal(forced.code, 0, forced.stderr)
  t.not(await readFile(join(dir, 'allowlist.txt'), 'utf8'), before, 'a new client certificate')
  t.match(new X509Certificate(await readFile(join(dir, 'client.pem'))).subject, /CN=core-2/)
})

t.test('pki usage', async (t) => {
  t.match(await pki(['inbound']), { code: 2, stderr: /pki inbound needs --dir/ })
  t.match(await pki(['inbound', '--dir', t.testdir(), '--server-name', ' ']), { code: 2, stderr: /--server-name must not be empty/ })
  t.match(await pki(['inbound', '--dir', t.testdir(), '--bogus']), { code: 2, stderr: /"error":"PIXPROXY_ERR_USAGE"/ })
  t.match(await pki(['outbound']), { code: 2, stderr: /unknown pki command outbound/ })
  t.match(await pki(['inbound', '--help']), { code: 0, stdout: /usage: pix-proxy pki inbound --dir DIR/ })
  t.match(await pki([]), { code: 2, stdout: /usage: pix-proxy pki inbound/ })
})

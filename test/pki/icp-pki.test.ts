import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, createServer, type TLSSocket } from 'node:tls'
import t, { type Test } from 'tap'
import { crlSignedBy, parseCrl, splitCrlPem } from '../../core/pki/crl.ts'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { generateIcpPki, ICP_CLIENT_KINDS, type IcpPkiPaths } from '../../tools/token/icp-pki.ts'

const NOW = new Date()

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'icp-pki-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** `openssl verify` exit status and output (stdout + stderr). */
function verify (args: string[]): { status: number | null, out: string } {
  const r = spawnSync('openssl', ['verify', ...args], { encoding: 'utf8' })
  return { status: r.status, out: r.stdout + r.stderr }
}

function opensslText (args: string[]): string {
  const r = spawnSync('openssl', args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`)
  return r.stdout + r.stderr
}

let pki: IcpPkiPaths
t.before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'icp-pki-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  pki = await generateIcpPki(dir, { now: NOW })
})

t.test('openssl verify: chain, CRL and purpose', async (t) => {
  const chain = ['-CAfile', pki.rootsFile, '-untrusted', pki.intermediatesFile]
  const crl = ['-crl_check_all', '-CRLfile', pki.crlFile]
  const c = pki.clients

  const ok = verify([...chain, ...crl, '-purpose', 'sslclient', c.valid.certFile])
  t.equal(ok.status, 0, `valid client accepted with CRLs and sslclient: ${ok.out}`)
  t.match(ok.out, /: OK/)

  const revokedNoCrl = verify([...chain, c.revoked.certFile])
  t.equal(revokedNoCrl.status, 0, 'the revoked client chains fine: the CRL is the only thing against it')
  const revoked = verify([...chain, ...crl, c.revoked.certFile])
  t.not(revoked.status, 0, 'revoked client refused with the CRL')
  t.match(revoked.out, /error 23 .*certificate revoked/)
  const revokedLeafOnly = verify([...chain, '-crl_check', '-CRLfile', pki.intermediateCrlFile, c.revoked.certFile])
  t.match(revokedLeafOnly.out, /error 23 .*certificate revoked/, 'the intermediate CRL alone is enough for -crl_check')

  const expired = verify([...chain, c.expired.certFile])
  t.not(expired.status, 0)
  t.match(expired.out, /error 10 .*certificate has expired/)

  const foreign = verify([...chain, c.foreign.certFile])
  t.not(foreign.status, 0, 'client of the look-alike foreign CA refused')
  t.match(foreign.out, /error (20|7) /, foreign.out)
  const foreignTrusted = verify(['-CAfile', pki.foreignCaFile, c.foreign.certFile])
  t.equal(foreignTrusted.status, 0, `the foreign client is well formed: trusting its CA accepts it (${foreignTrusted.out})`)

  const noAuthPlain = verify([...chain, c.noClientAuth.certFile])
  t.equal(noAuthPlain.status, 0, 'without a purpose the noClientAuth certificate verifies')
  const noAuth = verify([...chain, '-purpose', 'sslclient', c.noClientAuth.certFile])
  t.not(noAuth.status, 0)
  t.match(noAuth.out, /error 26 .*(unsupported|unsuitable) certificate purpose/)

  const server = verify([...chain, '-purpose', 'sslserver', pki.server.certFile])
  t.equal(server.status, 0, `server certificate: ${server.out}`)
})

t.test('the CRLs: signatures, times, entries, as openssl reads them', async (t) => {
  t.match(opensslText(['crl', '-in', pki.intermediateCrlFile, '-noout', '-verify', '-CAfile', pki.intermediatesFile]), /verify OK/)
  t.match(opensslText(['crl', '-in', pki.rootCrlFile, '-noout', '-verify', '-CAfile', pki.rootsFile]), /verify OK/)
  const wrongCa = spawnSync('openssl', ['crl', '-in', pki.intermediateCrlFile, '-noout', '-verify', '-CAfile', pki.foreignCaFile], { encoding: 'utf8' })
  t.notMatch(wrongCa.stdout + wrongCa.stderr, /verify OK/, 'the look-alike CA did not sign it')

  const text = opensslText(['crl', '-in', pki.intermediateCrlFile, '-noout', '-text'])
  t.match(text, /Version 2/)
  t.match(text, /Serial Number: 0*([0-9A-F]+)/)
  const serialHex = /Serial Number: ([0-9A-F]+)/.exec(text)?.[1] ?? ''
  t.equal(BigInt('0x' + serialHex).toString(10), pki.revokedSerial, 'openssl lists the revoked client')
  t.equal(pki.revokedSerial, pki.clients.revoked.serial)
  t.match(text, /Key Compromise/)
  t.match(text, /X509v3 CRL Number:\s*\n\s*1/)
  t.match(text, /X509v3 Authority Key Identifier/)

  const crl = parseCrl(readFileSync(pki.intermediateCrlFile, 'utf8'))
  const intermediate = parseCertificate(readFileSync(pki.intermediatesFile, 'utf8'))
  const root = parseCertificate(readFileSync(pki.rootsFile, 'utf8'))
  const foreign = parseCertificate(readFileSync(pki.foreignCaFile, 'utf8'))
  t.same(crl.revoked.map((r) => r.serial.toString(10)), [pki.revokedSerial])
  t.equal(crl.crlNumber, 1n)
  t.equal(crl.issuerString, intermediate.subjectString)
  t.equal(crl.thisUpdate.getTime(), Math.floor((NOW.getTime() - 3_600_000) / 1000) * 1000, 'thisUpdate = now - 1 h')
  t.equal(crl.nextUpdate?.getTime(), Math.floor((NOW.getTime() + 7 * 86_400_000) / 1000) * 1000, 'nextUpdate = now + 7 days')
  const nextUpdateByOpenssl = /^nextUpdate=(.*)$/m.exec(opensslText(['crl', '-in', pki.intermediateCrlFile, '-noout', '-nextupdate']))?.[1]
  t.equal(new Date(nextUpdateByOpenssl ?? '').getTime(), crl.nextUpdate?.getTime(), 'openssl reads the same nextUpdate')
  t.equal(crlSignedBy(crl.der, intermediate), true)
  t.equal(crlSignedBy(crl.pem, root), false, 'not signed by the root')
  t.equal(crlSignedBy(crl.pem, foreign), false, 'not signed by the look-alike CA (same name, other key)')
  t.same(parseCrl(readFileSync(pki.rootCrlFile)).revoked, [], 'the root CRL lists nothing')
  t.throws(() => parseCrl('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), { code: 'PIXPROXY_ERR_CRL_PARSE' })
  t.throws(() => parseCrl(Buffer.from([0x30, 0x03, 0x02, 0x01])), { code: 'PIXPROXY_ERR_CRL_PARSE' })
})

t.test('a stale CRL (nextUpdate in the past) is refused by openssl', async (t) => {
  const stale = await generateIcpPki(tempDir(t), {
    now: NOW,
    crlThisUpdate: new Date(NOW.getTime() - 10 * 86_400_000),
    crlNextUpdate: new Date(NOW.getTime() - 86_400_000)
  })
  const r = verify(['-CAfile', stale.rootsFile, '-untrusted', stale.intermediatesFile, '-crl_check', '-CRLfile', stale.crlFile, stale.clients.valid.certFile])
  t.not(r.status, 0)
  t.match(r.out, /error 12 .*CRL has expired/)
  t.equal(parseCrl(readFileSync(stale.intermediateCrlFile)).nextUpdate?.getTime(), Math.floor((NOW.getTime() - 86_400_000) / 1000) * 1000)
})

t.test('every client carries the Open Finance identity it was given', async (t) => {
  for (const kind of ICP_CLIENT_KINDS) {
    const c = pki.clients[kind]
    const cert = parseCertificate(readFileSync(c.certFile, 'utf8'))
    const id = icpBrasilIdentity(cert)
    t.same({ cnpj: id.cnpj, organisationId: id.organisationId, softwareStatementId: id.softwareStatementId, commonName: id.commonName, dnsNames: id.dnsNames, problems: id.problems },
      { cnpj: c.cnpj, organisationId: c.organisationId, softwareStatementId: c.softwareStatementId, commonName: c.fqdn, dnsNames: [c.fqdn], problems: [] }, kind)
    t.same(id.otherNames.map((o) => o.oid), ['2.16.76.1.3.2', '2.16.76.1.3.3', '2.16.76.1.3.4', '2.16.76.1.3.7'], `${kind}: ICP-Brasil otherNames`)
    t.equal(cert.fingerprint256, c.fingerprint256)
    t.equal(statSync(c.keyFile).mode & 0o777, 0o600, `${kind}: key file 0600`)
    const chain = readFileSync(c.chainFile, 'utf8')
    t.equal(chain.match(/BEGIN CERTIFICATE/g)?.length, 2, `${kind}: chain file is leaf + issuer`)
  }
  const paths = JSON.parse(readFileSync(join(pki.dir, 'icp-pki.json'), 'utf8')) as IcpPkiPaths
  t.same(paths, pki, 'icp-pki.json is the result')
})

/** A node:tls server with the generated truststore and the given CRLs; resolves its port. */
async function mtlsServer (t: Test, crl: string | string[]): Promise<{ port: number }> {
  const s = createServer({
    key: readFileSync(pki.server.keyFile),
    cert: readFileSync(pki.server.chainFile),
    ca: readFileSync(pki.trustBundleFile),
    crl,
    requestCert: true,
    rejectUnauthorized: true
  }, (sock) => { sock.end('ok') })
  s.on('tlsClientError', () => {})
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  t.teardown(() => new Promise<void>((resolve) => { s.close(() => { resolve() }) }))
  return { port: (s.address() as AddressInfo).port }
}

async function dialAs (port: number, kind: typeof ICP_CLIENT_KINDS[number]): Promise<'accepted' | string> {
  const c = pki.clients[kind]
  return await new Promise((resolve) => {
    const sock: TLSSocket = connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: readFileSync(pki.rootsFile),
      key: readFileSync(c.keyFile),
      cert: readFileSync(c.chainFile),
      maxVersion: 'TLSv1.2'
    })
    let data = ''
    sock.on('data', (d: Buffer) => { data += d.toString() })
    sock.on('error', (err) => { resolve((err as NodeJS.ErrnoException).code ?? err.message) })
    sock.on('end', () => { resolve(data === 'ok' ? 'accepted' : 'closed without an answer') })
  })
}

t.test('node:tls with the trust bundle and the split CRL file takes exactly the valid client', async (t) => {
  const crls = splitCrlPem(readFileSync(pki.crlFile, 'utf8'))
  t.equal(crls.length, 2)
  const { port } = await mtlsServer(t, crls)
  t.equal(await dialAs(port, 'valid'), 'accepted')
  for (const kind of ['revoked', 'expired', 'foreign', 'noClientAuth'] as const) {
    t.not(await dialAs(port, kind), 'accepted', `${kind} refused by the handshake`)
  }
})

t.test('node:tls reads one CRL per buffer and then wants one for every CA: a bundle in one buffer refuses everyone', async (t) => {
  // Regression guard for the gateway: pass splitCrlPem(bundle), never the bundle as one string.
  const bundle = await mtlsServer(t, readFileSync(pki.crlFile, 'utf8'))
  t.not(await dialAs(bundle.port, 'valid'), 'accepted', 'bundle as one buffer: only the first CRL is read, the root has none')
  const leafOnly = await mtlsServer(t, [readFileSync(pki.intermediateCrlFile, 'utf8')])
  t.not(await dialAs(leafOnly.port, 'valid'), 'accepted', 'without the root CRL the intermediate cannot be checked')
})

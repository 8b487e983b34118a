/**
 * The gateway end to end over real mutual-TLS handshakes (Node's OpenSSL on both sides): who gets in, what reaches
 * the backend, what is refused and why (the refusal's reason is read from the gateway's 'refused' event, which
 * fires before the client can see its connection close: no timing involved).
 */
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { Agent } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { GATEWAY_AUDIT_COLUMNS } from '../../src/gateway/audit.ts'
import type { GatewayAuditRow } from '../../src/gateway/audit.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import type { Gateway } from '../../src/gateway/gateway.ts'
import { thumbprintS256 } from '../../src/gateway/headers.ts'
import { createGatewayPki, issueCrl } from '../helpers/gateway-pki.ts'
import { attempt, gatewayConfig, startBackend, testLogger } from './helpers.ts'
import type { Backend } from './helpers.ts'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const pki = await createGatewayPki(dir)
const backend = await startBackend(pki)
t.teardown(() => backend.close())

interface Started { gw: Gateway, rows: GatewayAuditRow[], lines: Array<Record<string, unknown>> }

async function start (t: Test, extra: Record<string, string> = {}, b: Backend = backend): Promise<Started> {
  const rows: GatewayAuditRow[] = []
  const { logger, lines } = testLogger()
  const gw = await startGateway({ config: gatewayConfig(pki, b, extra), logger, identify: icpBrasilIdentity, audit: { write: (r) => { rows.push(r) } }, instanceId: 'test' })
  t.teardown(() => gw.close())
  return { gw, rows, lines }
}

/** The reason of the next refusal, and the client's view of the same attempt. */
async function refused (gw: Gateway, run: () => Promise<unknown>): Promise<{ reason: string, client: unknown }> {
  const event = once(gw.events, 'refused') as Promise<[{ reason: string }]>
  const client = await run()
  const [{ reason }] = await event
  return { reason, client }
}

t.test('a valid client reaches the backend with its certificate and identity; forged identity headers never do', async (t) => {
  const { gw, rows } = await start(t)
  const before = backend.calls.length
  const forged = 'x-ssl-client-cert'
  const res = await attempt(gw.url, pki, {
    client: pki.clients.valid,
    path: '/open-banking/accounts/v2/accounts?page=1',
    rawHeaders: [
      forged, 'forged-pem', 'X-SSL-Client-Cert', 'forged-again', 'X-OFB-Client-CNPJ', '00000000000000',
      'x-ofb-organisation-id', 'evil-org', 'X-SSL-CLIENT-CERT-SHA256', 'forged-thumb', 'x-forwarded-for', '6.6.6.6',
      'Connection', 'keep-alive, X-Drop-Me', 'x-drop-me', 'hop', 'x-fapi-interaction-id', 'abc-123'
    ]
  })
  t.ok(res.ok && res.status === 200, `answered 200 (${JSON.stringify(res)})`)
  if (!res.ok) return
  t.equal(res.headers['x-backend'], 'stub', 'the backend answered')
  t.equal(res.headers['x-hop'], undefined, 'a header the backend named in Connection is not passed back')
  t.equal(backend.calls.length, before + 1)
  const call = backend.calls.at(-1)
  if (call === undefined) return
  t.equal(call.url, '/open-banking/accounts/v2/accounts?page=1', 'path and query forwarded')
  const all = (name: string): string[] =>
    call.rawHeaders.flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() === name ? [call.rawHeaders[i + 1] as string] : []))
  const cert = pki.clients.valid.certificate
  t.same(all('x-ssl-client-cert'), [encodeURIComponent(cert.x509.toString())], 'exactly one certificate header: the verified one, PEM URL-encoded')
  t.equal(decodeURIComponent(all('x-ssl-client-cert')[0] ?? ''), cert.pem, 'it decodes to the client\'s PEM')
  t.same(all('x-ssl-client-cert-sha256'), [thumbprintS256(cert.x509)], 'the x5t#S256 thumbprint')
  t.equal(all('x-ssl-client-cert-sha256')[0], Buffer.from(cert.x509.fingerprint256.replace(/:/g, ''), 'hex').toString('base64url'), 'thumbprint = base64url of the SHA-256 fingerprint')
  t.same(all('x-ofb-client-cnpj'), ['11222333000181'], 'the CNPJ from the certificate, not the forged one')
  t.same(all('x-ofb-organisation-id'), [], 'no organisation id in this certificate: the forged one is not passed on')
  t.same(all('x-forwarded-for'), ['127.0.0.1'], 'x-forwarded-for is the gateway\'s, not the caller\'s')
  t.same(all('x-drop-me'), [], 'a header the caller named in Connection is hop-by-hop')
  t.same(all('connection').filter((v) => /x-drop-me/i.test(v)), [], 'the caller\'s Connection header is not forwarded')
  t.same(all('x-fapi-interaction-id'), ['abc-123'], 'ordinary headers pass')
  const row = rows.at(-1)
  t.same(Object.keys(row ?? {}).sort(), [...GATEWAY_AUDIT_COLUMNS].sort(), 'the row has exactly the documented columns')
  t.match(row, { method: 'GET', path: '/open-banking/accounts/v2/accounts', status: 200, route: 'GET /open-banking/*', client_cnpj: '11222333000181', client_thumbprint: thumbprintS256(cert.x509), client_serial: cert.x509.serialNumber, error_code: null, instance_id: 'test' }, 'one audit row with the client identity')
})

t.test('a subject with non-ASCII letters is forwarded percent-encoded (a raw one would make the call fail)', async (t) => {
  const { gw } = await start(t)
  const { generateKeyPairSync } = await import('node:crypto')
  const { issueCertificate } = await import('../../core/pki/ca.ts')
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const certificate = issueCertificate({ subject: 'CN=app.exemplo.com.br, O=Banco São João S.A., serialNumber=11222333000181, C=BR', publicKey, issuer: { certificate: pki.intermediate.certificate, key: pki.intermediate.key }, keyUsage: ['digitalSignature'], extKeyUsage: ['clientAuth'] })
  const client = { certificate, key: privateKey, certPem: certificate.pem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
  const res = await attempt(gw.url, pki, { client, chain: certificate.pem + pki.intermediate.certPem })
  t.ok(res.ok && res.status === 200, `answered 200 (${JSON.stringify(res.ok ? res.status : res)})`)
  t.match(decodeURIComponent(String(backend.calls.at(-1)?.headers['x-ssl-client-subject'])), 'O=Banco São João S.A.', 'the subject decodes to the certificate\'s')
})

t.test('allowlist, method and body limit answer problem+json with stable codes, without reaching the backend', async (t) => {
  const { gw, rows } = await start(t)
  const before = backend.calls.length
  const cases: Array<[string, Parameters<typeof attempt>[2], number, string]> = [
    ['unlisted path', { path: '/admin/keys' }, 404, 'PIXPROXY_ERR_GATEWAY_ROUTE_NOT_ALLOWED'],
    ['dot segments', { path: '/open-banking/%2e%2e/admin' }, 404, 'PIXPROXY_ERR_GATEWAY_ROUTE_NOT_ALLOWED'],
    ['method not allowed', { method: 'DELETE', path: '/open-banking/accounts/v2/accounts' }, 405, 'PIXPROXY_ERR_GATEWAY_METHOD_NOT_ALLOWED'],
    ['body too large (declared)', { method: 'POST', path: '/open-banking/payments/v4/pix/payments', body: 'x'.repeat(2000) }, 413, 'PIXPROXY_ERR_GATEWAY_BODY_TOO_LARGE'],
    ['body too large (chunked)', { method: 'POST', path: '/open-banking/payments/v4/pix/payments', headers: { 'transfer-encoding': 'chunked' }, body: 'x'.repeat(2000) }, 413, 'PIXPROXY_ERR_GATEWAY_BODY_TOO_LARGE']
  ]
  for (const [name, o, status, code] of cases) {
    const res = await attempt(gw.url, pki, { client: pki.clients.valid, ...o })
    t.ok(res.ok, `${name}: answered`)
    if (!res.ok) continue
    t.equal(res.status, status, `${name}: ${status}`)
    t.equal(res.headers['content-type'], 'application/problem+json', `${name}: problem+json`)
    t.match(JSON.parse(res.body), { code, status, outcome: 'not-sent' }, `${name}: ${code}`)
  }
  t.equal(backend.calls.length, before, 'nothing reached the backend')
  t.equal(rows.length, cases.length, 'every refusal audited')
  const ok = await attempt(gw.url, pki, { client: pki.clients.valid, method: 'POST', path: '/open-banking/payments/v4/pix/payments', headers: { 'content-type': 'application/json' }, body: '{"a":1}' })
  t.ok(ok.ok && ok.status === 200, 'a POST within the limit passes')
  t.equal(backend.calls.at(-1)?.body, '{"a":1}', 'with its body')
})

t.test('bad certificates and TLS settings are refused at the handshake, each with its reason', async (t) => {
  const { gw } = await start(t)
  const before = backend.calls.length
  const cases: Array<[string, Parameters<typeof attempt>[2], string]> = [
    ['no certificate', {}, 'no_certificate'],
    ['revoked (CRL)', { client: pki.clients.revoked }, 'cert_revoked'],
    ['expired', { client: pki.clients.expired }, 'cert_has_expired'],
    ['foreign CA', { client: pki.clients.foreign }, 'unable_to_verify_leaf_signature'],
    ['no clientAuth EKU', { client: pki.clients.noClientAuth }, 'invalid_purpose'],
    ['TLS 1.1', { client: pki.clients.valid, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }, 'unsupported_protocol'],
    ['TLS 1.2 with a suite Open Finance does not permit', { client: pki.clients.valid, maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA256' }, 'no_shared_cipher'],
    ['TLS 1.2 ECDHE-RSA-CHACHA20 (not permitted either)', { client: pki.clients.valid, maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-CHACHA20-POLY1305' }, 'no_shared_cipher']
  ]
  for (const [name, o, reason] of cases) {
    const r = await refused(gw, async () => await attempt(gw.url, pki, o))
    t.equal(r.reason, reason, `${name}: refused (${reason})`)
    t.match(r.client, { ok: false }, `${name}: the client got no answer`)
  }
  t.equal(backend.calls.length, before, 'nothing reached the backend')
  const text = await (await fetch(`${gw.opsUrl}/metrics`)).text()
  for (const [, , reason] of cases) t.match(text, `pixgw_handshake_failures_total{reason="${reason}"}`, `metric for ${reason}`)
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const ok = await attempt(gw.url, pki, { client: pki.clients.valid, minVersion: version, maxVersion: version })
    t.ok(ok.ok && ok.status === 200, `a valid client over ${version} passes`)
  }
})

t.test('a stale CRL: fail-closed refuses its clients, fail-open accepts them but still refuses what it lists', async (t) => {
  const staleDir = await mkdtemp(join(tmpdir(), 'pix-gw-stale-'))
  t.teardown(() => rm(staleDir, { recursive: true, force: true }))
  const staleCrl = join(staleDir, 'intermediate-stale.crl')
  await writeFile(staleCrl, issueCrl(pki.intermediate, {
    serials: [pki.clients.revoked.certificate.serial],
    thisUpdate: new Date(Date.now() - 10 * 86_400_000),
    nextUpdate: new Date(Date.now() - 86_400_000)
  }))
  const crls = `${pki.files.rootCrl},${staleCrl}`
  await t.test('fail-closed (the default)', async (t) => {
    const { gw, lines } = await start(t, { PIXGW_CRLS: crls })
    t.ok(lines.some((l) => l.level === 50 && l.crl === staleCrl && /fail-closed/.test(String(l.msg))), 'an error log names the stale CRL')
    const r = await refused(gw, async () => await attempt(gw.url, pki, { client: pki.clients.valid }))
    t.equal(r.reason, 'crl_has_expired', 'a valid client of that CA is refused')
    const text = await (await fetch(`${gw.opsUrl}/metrics`)).text()
    t.match(text, `pixgw_crl_stale{crl="${staleCrl}"} 1`, 'the stale gauge is 1')
    t.match(text, new RegExp(`pixgw_crl_age_seconds\\{crl="${staleCrl.replace(/[.]/g, '\\.')}"\\} 8\\d{5}`), 'the CRL age is about ten days')
  })
  await t.test('fail-open', async (t) => {
    const { gw, lines } = await start(t, { PIXGW_CRLS: crls, PIXGW_CRL_STALE_POLICY: 'fail-open' })
    t.ok(lines.some((l) => l.level === 40 && l.crl === staleCrl), 'a warning names the stale CRL')
    const ok = await attempt(gw.url, pki, { client: pki.clients.valid })
    t.ok(ok.ok && ok.status === 200, 'a valid client of that CA is accepted')
    t.ok(lines.some((l) => /fail-open/.test(String(l.msg)) && l.subject !== undefined), 'with a warning per connection')
    for (const [name, client, reason] of [['revoked (listed by the stale CRL)', pki.clients.revoked, 'cert_revoked'], ['no clientAuth', pki.clients.noClientAuth, 'invalid_purpose'], ['expired', pki.clients.expired, 'cert_has_expired'], ['foreign', pki.clients.foreign, 'unable_to_verify_leaf_signature']] as const) {
      const r = await refused(gw, async () => await attempt(gw.url, pki, { client }))
      t.equal(r.reason, reason, `${name}: still refused`)
    }
  })
})

t.test('reload: an established keep-alive connection survives; the new truststore applies to new handshakes; a bad bundle is refused', async (t) => {
  const reloadDir = await mkdtemp(join(tmpdir(), 'pix-gw-reload-'))
  t.teardown(() => rm(reloadDir, { recursive: true, force: true }))
  const truststore = join(reloadDir, 'truststore.pem')
  await writeFile(truststore, pki.root.certPem + pki.intermediate.certPem)
  const { gw } = await start(t, { PIXGW_TRUSTSTORE: truststore })
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const first = await attempt(gw.url, pki, { client: pki.clients.valid, agent })
  t.ok(first.ok && first.status === 200 && !first.reusedSocket, 'first request on a new connection')

  // Drop the Open Finance CA from the truststore: new handshakes of its clients fail, the open connection does not.
  await writeFile(truststore, pki.root.certPem + pki.foreignRoot.certPem)
  t.equal(await gw.reload(), 'refused', 'a truststore whose CRL issuer is gone is refused (the intermediate CRL names a CA no longer trusted)')
  await writeFile(truststore, 'not a certificate\n')
  t.equal(await gw.reload(), 'refused', 'garbage is refused')
  await writeFile(truststore, pki.root.certPem + pki.intermediate.certPem)
  t.equal(await gw.reload(), 'unchanged', 'the same files: nothing to do')
  const again = await attempt(gw.url, pki, { client: pki.clients.valid, agent })
  t.ok(again.ok && again.status === 200, 'the old context stayed in use')

  // A truststore that adds the foreign root (with a CRL of its own) applies; the kept-alive connection carries on.
  const foreignCrl = join(reloadDir, 'foreign.crl')
  await writeFile(foreignCrl, issueCrl(pki.foreignRoot))
  await writeFile(truststore, pki.root.certPem + pki.intermediate.certPem + pki.foreignRoot.certPem)
  t.equal(await gw.reload({ force: true }), 'applied', 'reload applied')
  const kept = await attempt(gw.url, pki, { client: pki.clients.valid, agent })
  t.ok(kept.ok && kept.status === 200 && kept.reusedSocket, 'the established keep-alive connection still works after the reload')
  // The foreign client now chains to a trusted root but its CA's CRL is not configured: refused (every chain must
  // be covered by a CRL).
  const r = await refused(gw, async () => await attempt(gw.url, pki, { client: pki.clients.foreign }))
  t.equal(r.reason, 'unable_to_get_crl', 'a CA without a CRL admits nobody')
  const m = await (await fetch(`${gw.opsUrl}/metrics`)).text()
  t.match(m, 'pixgw_trust_reloads_total{result="refused"} 2')
  t.match(m, 'pixgw_trust_reloads_total{result="applied"} 1')
})

t.test('the backend unreachable: 502 not-sent; the ops listener answers health and readiness', async (t) => {
  const dead = await startBackend(pki)
  await dead.close()
  const { gw, rows } = await start(t, {}, dead)
  const res = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(res.ok && res.status === 502, '502')
  if (res.ok) t.match(JSON.parse(res.body), { code: 'PIXPROXY_ERR_GATEWAY_BACKEND_UNREACHABLE', outcome: 'not-sent' })
  t.equal(rows.at(-1)?.error_code, 'PIXPROXY_ERR_GATEWAY_BACKEND_UNREACHABLE', 'audited with its code')
  t.equal((await fetch(`${gw.opsUrl}/healthz`)).status, 200)
  t.equal((await fetch(`${gw.opsUrl}/readyz`)).status, 200)
})

t.test('a backend that never answers: 504 with an outcome-unknown code, after PIXGW_BACKEND_TIMEOUT_MS', async (t) => {
  const { createServer } = await import('node:https')
  // Accepts the request and never answers: the headers timeout is what ends the call, however long that takes.
  const silent = createServer({ cert: pki.server.certPem + pki.intermediate.certPem, key: pki.server.keyPem }, () => {})
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(async () => {
    silent.closeAllConnections()
    await new Promise<void>((resolve) => silent.close(() => resolve()))
  })
  const port = (silent.address() as { port: number }).port
  const { gw, rows } = await start(t, { PIXGW_BACKEND_TIMEOUT_MS: '100' }, { url: `https://127.0.0.1:${port}`, calls: [], close: async () => {} })
  const res = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(res.ok && res.status === 504, '504')
  if (res.ok) t.match(JSON.parse(res.body), { code: 'PIXPROXY_ERR_GATEWAY_BACKEND_TIMEOUT', outcome: 'unknown' }, 'the request may have been acted on')
  t.equal(rows.at(-1)?.error_code, 'PIXPROXY_ERR_GATEWAY_BACKEND_TIMEOUT')
})

/**
 * Open client connections after a reload and at their maximum age (issue 17): a client the new CRLs revoke (or whose
 * CRL went stale under fail-closed) loses its kept-alive connection, a request in flight still gets its answer (with
 * `connection: close`) first, others keep theirs; a connection past PIXGW_MAX_CONNECTION_AGE_MS closes and its client
 * comes back through a new handshake. Every wait is on an event (the gateway's 'closing', a socket's 'close', the
 * backend receiving a call); the max-age timer is injected and fired by the test, never raced.
 */
import { generateKeyPairSync, sign as cryptoSign } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { Agent, createServer } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect as netConnect, createServer as createNetServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from 'node:tls'
import t from 'tap'
import type { Test } from 'tap'
import { issueCertificate } from '../../core/pki/ca.ts'
import { children, decode } from '../../core/pki/der.ts'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import type { GatewayAuditRow } from '../../src/gateway/audit.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import type { ConnectionClosing, Gateway, GatewayOptions } from '../../src/gateway/gateway.ts'
import { createGatewayPki, issueCrl } from '../helpers/gateway-pki.ts'
import type { Issued } from '../helpers/gateway-pki.ts'
import { attempt, closed, gatewayConfig, startBackend, testLogger } from './helpers.ts'
import type { Backend } from './helpers.ts'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-conn-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const pki = await createGatewayPki(dir)
const backend = await startBackend(pki)
t.teardown(() => backend.close())

/** A second valid client of the same intermediate: its connection must survive what closes the first one's. */
const other: Issued = (() => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const certificate = issueCertificate({ subject: 'CN=other.example.com.br, OU=OFBBR, O=Outro Banco S.A., serialNumber=11222333000181, C=BR', publicKey, issuer: { certificate: pki.intermediate.certificate, key: pki.intermediate.key }, keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['clientAuth'] })
  return { certificate, key: privateKey, certPem: certificate.pem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
})()

interface Started { gw: Gateway, rows: GatewayAuditRow[], lines: Array<Record<string, unknown>>, crl: string }

/** A gateway whose intermediate CRL is a file of the test's own, rewritten to revoke. */
async function start (t: Test, extra: Record<string, string> = {}, b: Backend = backend, more: Partial<GatewayOptions> = {}): Promise<Started> {
  const own = await mkdtemp(join(tmpdir(), 'pix-gw-conn-t-'))
  t.teardown(() => rm(own, { recursive: true, force: true }))
  const crl = join(own, 'intermediate.crl')
  await copyFile(pki.files.intermediateCrl, crl)
  const rows: GatewayAuditRow[] = []
  const { logger, lines } = testLogger()
  const gw = await startGateway({
    config: gatewayConfig(pki, b, { PIXGW_CRLS: `${pki.files.rootCrl},${crl}`, PIXGW_MAX_CONNECTION_AGE_MS: '0', ...extra }),
    logger,
    identify: icpBrasilIdentity,
    audit: { write: (r) => { rows.push(r) } },
    instanceId: 'test',
    ...more
  })
  t.teardown(() => gw.close())
  return { gw, rows, lines, crl }
}

function keepAlive (t: Test): Agent {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  return agent
}

async function metrics (gw: Gateway): Promise<string> {
  return await (await fetch(`${gw.opsUrl}/metrics`)).text()
}

t.test('a reload whose CRL revokes a client closes its kept-alive connection; another client\'s stays open and works', async (t) => {
  const { gw, lines, crl } = await start(t)
  const agentA = keepAlive(t)
  const agentB = keepAlive(t)
  const a = await attempt(gw.url, pki, { client: pki.clients.valid, agent: agentA })
  const b = await attempt(gw.url, pki, { client: other, agent: agentB })
  t.ok(a.ok && a.status === 200 && b.ok && b.status === 200, 'both clients answered over kept-alive connections')
  if (!a.ok || !b.ok) return
  t.notOk(a.socket.destroyed, 'the first connection is open and idle')

  const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
  await writeFile(crl, issueCrl(pki.intermediate, { serials: [pki.clients.revoked.certificate.serial, pki.clients.valid.certificate.serial], number: 2 }))
  t.equal(await gw.reload(), 'applied', 'the new CRL is applied')
  const [event] = await closing
  t.match(event, { reason: 'revoked', serial: pki.clients.valid.certificate.x509.serialNumber, inFlight: 0 }, 'the revoked client\'s connection is closed, idle')
  t.match(event.detail, 'is listed by', 'the detail names the CRL')
  await closed(a.socket)
  t.pass('the revoked client\'s connection closed')

  t.notOk(b.socket.destroyed, 'the other client\'s connection is still open')
  const b2 = await attempt(gw.url, pki, { client: other, agent: agentB })
  t.ok(b2.ok && b2.status === 200 && b2.reusedSocket, 'and carries a request on the same connection')
  const again = once(gw.events, 'refused') as Promise<[{ reason: string }]>
  const a2 = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.match(a2, { ok: false }, 'the revoked client cannot come back')
  t.equal((await again)[0].reason, 'cert_revoked', 'refused at its new handshake')

  t.match(await metrics(gw), 'pixgw_connections_closed_total{reason="revoked"} 1', 'counted')
  const warn = lines.find((l) => l.msg === 'client connection closed by the gateway')
  t.match(warn, { level: 40, reason: 'revoked', serial: pki.clients.valid.certificate.x509.serialNumber, subject: /tpp\.example\.com\.br/ }, 'logged at warn with the client\'s subject and serial')

  // Reloading the same material again closes nothing more (the other client is still fine).
  t.equal(await gw.reload({ force: true }), 'applied')
  const b3 = await attempt(gw.url, pki, { client: other, agent: agentB })
  t.ok(b3.ok && b3.status === 200 && b3.reusedSocket, 'a forced reload of the same material leaves an acceptable client alone')
})

t.test('a reload that drops a client\'s CA from the truststore closes its connection (untrusted); a client of a CA still trusted keeps its', async (t) => {
  const own = await mkdtemp(join(tmpdir(), 'pix-gw-conn-trust-'))
  t.teardown(() => rm(own, { recursive: true, force: true }))
  const truststore = join(own, 'truststore.pem')
  const rootCrl = join(own, 'root.crl')
  const intermediateCrl = join(own, 'intermediate.crl')
  const foreignCrl = join(own, 'foreign.crl')
  await writeFile(truststore, pki.root.certPem + pki.intermediate.certPem + pki.foreignRoot.certPem)
  await copyFile(pki.files.rootCrl, rootCrl)
  await copyFile(pki.files.intermediateCrl, intermediateCrl)
  await writeFile(foreignCrl, issueCrl(pki.foreignRoot))
  const { gw } = await start(t, { PIXGW_TRUSTSTORE: truststore, PIXGW_CRLS: `${rootCrl},${intermediateCrl},${foreignCrl}` })
  const agentForeign = keepAlive(t)
  const valid = await attempt(gw.url, pki, { client: pki.clients.valid, agent: keepAlive(t) })
  const foreign = await attempt(gw.url, pki, { client: pki.clients.foreign, agent: agentForeign })
  t.ok(valid.ok && valid.status === 200 && foreign.ok && foreign.status === 200, 'both CAs\' clients admitted')
  if (!valid.ok || !foreign.ok) return

  // Only the foreign root stays trusted; the CRL files now hold CRLs of that root (every CRL must be signed by a CA
  // of the truststore for the reload to apply).
  await writeFile(truststore, pki.foreignRoot.certPem)
  await writeFile(rootCrl, issueCrl(pki.foreignRoot, { number: 2 }))
  await writeFile(intermediateCrl, issueCrl(pki.foreignRoot, { number: 3 }))
  const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
  t.equal(await gw.reload(), 'applied')
  const [event] = await closing
  t.match(event, { reason: 'untrusted', serial: pki.clients.valid.certificate.x509.serialNumber }, 'the Open Finance CA\'s client: untrusted')
  t.match(event.detail, 'is not in the truststore')
  await closed(valid.socket)
  const again = await attempt(gw.url, pki, { client: pki.clients.foreign, agent: agentForeign })
  t.ok(again.ok && again.status === 200 && again.reusedSocket, 'the foreign root\'s client carries on over its connection')
  t.match(await metrics(gw), 'pixgw_connections_closed_total{reason="untrusted"} 1')
})

/** An HTTPS backend that holds every request until the test releases it. */
async function startHoldingBackend (): Promise<Backend & { arrived: () => Promise<() => void>, requests: () => number }> {
  let requests = 0
  const waiting: Array<(release: () => void) => void> = []
  const held: Array<() => void> = []
  const server = createServer({ cert: pki.server.certPem + pki.intermediate.certPem, key: pki.server.keyPem }, (req: IncomingMessage, res: ServerResponse) => {
    requests++
    req.resume()
    req.on('end', () => {
      const release = (): void => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"held":true}') }
      const w = waiting.shift()
      if (w !== undefined) w(release)
      else held.push(release)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls: [],
    requests: () => requests,
    arrived: async () => await new Promise((resolve) => {
      const h = held.shift()
      if (h !== undefined) resolve(h)
      else waiting.push(resolve)
    }),
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

t.test('a request in flight at the reload gets its answer, with connection: close, then its connection closes', async (t) => {
  const holding = await startHoldingBackend()
  t.teardown(() => holding.close())
  const { gw, rows, crl } = await start(t, {}, holding)
  const agent = keepAlive(t)
  const arrived = holding.arrived()
  const answer = attempt(gw.url, pki, { client: pki.clients.valid, agent })
  const release = await arrived

  const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
  await writeFile(crl, issueCrl(pki.intermediate, { serials: [pki.clients.valid.certificate.serial], number: 2 }))
  t.equal(await gw.reload(), 'applied')
  const [event] = await closing
  t.match(event, { reason: 'revoked', inFlight: 1 }, 'the connection is to close after the request it carries')

  release()
  const res = await answer
  t.ok(res.ok && res.status === 200, 'the request in flight got the backend\'s answer')
  if (!res.ok) return
  t.equal(res.body, '{"held":true}')
  t.equal(res.headers.connection, 'close', 'with connection: close')
  await closed(res.socket)
  t.pass('then the connection closed')
  t.match(rows.at(-1), { status: 200, error_code: null }, 'the call is audited as answered')
})

t.test('a request that arrives on a connection closing for a revoked client is refused and never reaches the backend', async (t) => {
  const holding = await startHoldingBackend()
  t.teardown(() => holding.close())
  const audited = new EventEmitter()
  const { gw, crl } = await start(t, {}, holding, { audit: { write: (r) => { audited.emit('row', r) } } })
  // A raw TLS client, so that a second request can be pipelined behind one in flight.
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(gw.url).port), servername: 'localhost', ca: pki.root.certPem, cert: pki.chainOf(pki.clients.valid), key: pki.clients.valid.keyPem })
  t.teardown(() => socket.destroy())
  let received = ''
  socket.on('data', (d: Buffer) => { received += d.toString('latin1') })
  await once(socket, 'secureConnect')
  const arrived = holding.arrived()
  socket.write('GET /open-banking/accounts/v2/accounts HTTP/1.1\r\nHost: localhost\r\n\r\n')
  const release = await arrived

  const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
  await writeFile(crl, issueCrl(pki.intermediate, { serials: [pki.clients.valid.certificate.serial], number: 2 }))
  t.equal(await gw.reload(), 'applied')
  t.match((await closing)[0], { reason: 'revoked', inFlight: 1 })

  const refusedRow = once(audited, 'row') as Promise<[GatewayAuditRow]>
  socket.write('GET /open-banking/accounts/v2/accounts?second=1 HTTP/1.1\r\nHost: localhost\r\n\r\n')
  const [row] = await refusedRow
  t.match(row, { error_code: 'PIXPROXY_ERR_GATEWAY_CLIENT_REFUSED', status: 403 }, 'the second request is refused (403) and audited')
  const answered = once(audited, 'row') as Promise<[GatewayAuditRow]>
  release()
  t.match((await answered)[0], { status: 200, error_code: null }, 'the request in flight got its answer')
  await closed(socket)
  t.match(received, /^HTTP\/1\.1 200 /, 'the client read the answer to the request in flight')
  t.match(received, /\r\nconnection: close\r\n/i, 'with connection: close')
  t.notMatch(received, 'second=1', 'nothing of the second request came back from the backend')
  t.equal(received.match(/HTTP\/1\.1 200 /g)?.length, 1, 'exactly one answer from the backend')
  t.equal(holding.requests(), 1, 'which received only the request in flight')
})

t.test('a CRL gone stale: fail-closed closes the connections it covers, fail-open keeps them', async (t) => {
  const stale = (): string => issueCrl(pki.intermediate, { serials: [pki.clients.revoked.certificate.serial], thisUpdate: new Date(Date.now() - 10 * 86_400_000), nextUpdate: new Date(Date.now() - 86_400_000), number: 2 })
  await t.test('fail-closed', async (t) => {
    const { gw, crl } = await start(t)
    const a = await attempt(gw.url, pki, { client: pki.clients.valid, agent: keepAlive(t) })
    t.ok(a.ok && a.status === 200)
    if (!a.ok) return
    const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
    await writeFile(crl, stale())
    t.equal(await gw.reload(), 'applied')
    t.match((await closing)[0], { reason: 'crl_stale' }, 'closed: a new handshake would fail with crl_has_expired')
    await closed(a.socket)
    t.match(await metrics(gw), 'pixgw_connections_closed_total{reason="crl_stale"} 1')
  })
  await t.test('fail-open', async (t) => {
    const { gw, crl } = await start(t, { PIXGW_CRL_STALE_POLICY: 'fail-open' })
    const agent = keepAlive(t)
    const a = await attempt(gw.url, pki, { client: pki.clients.valid, agent })
    t.ok(a.ok && a.status === 200)
    let closings = 0
    gw.events.on('closing', () => { closings++ })
    await writeFile(crl, stale())
    t.equal(await gw.reload(), 'applied')
    t.equal(closings, 0, 'nothing decided to close')
    const a2 = await attempt(gw.url, pki, { client: pki.clients.valid, agent })
    t.ok(a2.ok && a2.status === 200 && a2.reusedSocket, 'the connection carries on')
  })
})

t.test('the reload at a CRL\'s nextUpdate finds no successor: fail-closed closes the connections it covers all the same', async (t) => {
  // The gateway's clock is the test's: the CRL stays fresh for OpenSSL (real time), while the gateway is told it is
  // one millisecond before its nextUpdate, so that the nextUpdate reload is due about a second later; by then the clock
  // says it is past. The test waits for the event, whatever that second takes.
  // Whole seconds: a CRL's times are (UTCTime).
  const nextUpdate = new Date(Math.floor(Date.now() / 1000) * 1000 + 86_400_000)
  let clock = new Date()
  const { gw, crl } = await start(t, {}, backend, { now: () => clock })
  await writeFile(crl, issueCrl(pki.intermediate, { serials: [pki.clients.revoked.certificate.serial], nextUpdate, number: 2 }))
  t.equal(await gw.reload(), 'applied')
  const a = await attempt(gw.url, pki, { client: pki.clients.valid, agent: keepAlive(t) })
  t.ok(a.ok && a.status === 200, 'admitted while its CRL is fresh')
  if (!a.ok) return
  const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
  clock = new Date(nextUpdate.getTime() - 1)
  t.equal(await gw.reload({ force: true }), 'applied', 'the nextUpdate reload is now scheduled about a second ahead')
  const reloaded: string[] = []
  gw.events.on('reloaded', (r: string) => reloaded.push(r))
  t.equal(a.socket.destroyed, false, 'the CRL is not stale yet: the connection stays')
  clock = new Date(nextUpdate.getTime() + 3_600_000)
  t.match((await closing)[0], { reason: 'crl_stale' }, 'closed when the CRL went stale')
  t.same(reloaded, ['unchanged'], 'by the nextUpdate reload, which found the same CRL')
  await closed(a.socket)
})

interface Armed { ms: number, fire: () => void, cancelled: boolean }

t.test('max age closes an idle connection; the client comes back through a new handshake; every timer is cancelled', async (t) => {
  const armed: Armed[] = []
  const connectionTimer = (ms: number, fire: () => void): () => void => {
    const a: Armed = { ms, fire, cancelled: false }
    armed.push(a)
    return () => { a.cancelled = true }
  }
  const { gw } = await start(t, { PIXGW_MAX_CONNECTION_AGE_MS: '60000' }, backend, { connectionTimer })
  const agent = keepAlive(t)
  const first = await attempt(gw.url, pki, { client: pki.clients.valid, agent })
  t.ok(first.ok && first.status === 200 && !first.reusedSocket, 'answered on a new connection')
  if (!first.ok) return
  t.equal(armed.length, 1, 'one timer for the connection')
  t.ok((armed[0]?.ms ?? 0) >= 54_000 && (armed[0]?.ms ?? Infinity) <= 60_000, `within the last tenth of the maximum (${armed[0]?.ms} ms)`)

  const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
  armed[0]?.fire()
  t.match((await closing)[0], { reason: 'max_age', serial: pki.clients.valid.certificate.x509.serialNumber })
  await closed(first.socket)
  t.pass('the connection closed at its max age')

  const back = await attempt(gw.url, pki, { client: pki.clients.valid, agent })
  t.ok(back.ok && back.status === 200 && !back.reusedSocket, 'the client is admitted again, over a new handshake')
  t.equal(armed.length, 2, 'whose connection has a timer of its own')
  t.match(await metrics(gw), 'pixgw_connections_closed_total{reason="max_age"} 1')
  t.match(await metrics(gw), 'pixgw_client_connections 1', 'one client connection open')

  await gw.close()
  t.same(armed.map((a) => a.cancelled), [true, true], 'no timer outlives its connection')
})

t.test('PIXGW_MAX_CONNECTION_AGE_MS=0 arms no timer', async (t) => {
  let arms = 0
  const { gw } = await start(t, { PIXGW_MAX_CONNECTION_AGE_MS: '0' }, backend, { connectionTimer: () => { arms++; return () => {} } })
  const res = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(res.ok && res.status === 200)
  t.equal(arms, 0)
})

// ---- Regressions found by review: no path lets a refused client's request through ----------------------------------

/** A raw TLS client on which the test writes HTTP/1.1 by hand (pipelining, a body that trails its headers). */
function rawClient (t: Test, url: string): { socket: ReturnType<typeof connect>, received: () => string } {
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(url).port), servername: 'localhost', ca: pki.root.certPem, cert: pki.chainOf(pki.clients.valid), key: pki.clients.valid.keyPem })
  t.teardown(() => socket.destroy())
  let received = ''
  socket.on('data', (d: Buffer) => { received += d.toString('latin1') })
  socket.on('error', () => {})
  return { socket, received: () => received }
}

const revokeValid = async (crl: string): Promise<void> => {
  await writeFile(crl, issueCrl(pki.intermediate, { serials: [pki.clients.valid.certificate.serial, pki.clients.revoked.certificate.serial], number: 2 }))
}

t.test('a connection closing for its age is still judged at a reload: a revoked client\'s next request is refused, not forwarded', async (t) => {
  const holding = await startHoldingBackend()
  t.teardown(() => holding.close())
  const fires: Array<() => void> = []
  const { gw, crl } = await start(t, { PIXGW_MAX_CONNECTION_AGE_MS: '60000' }, holding, { connectionTimer: (_ms, fire) => { fires.push(fire); return () => {} } })
  const c = rawClient(t, gw.url)
  await once(c.socket, 'secureConnect')
  const arrived = holding.arrived()
  c.socket.write('GET /open-banking/accounts/v2/accounts?first=1 HTTP/1.1\r\nHost: localhost\r\n\r\n')
  const release = await arrived
  const reasons: string[] = []
  gw.events.on('closing', (e: ConnectionClosing) => reasons.push(e.reason))
  fires[0]?.() // its max age, with a request in flight: it stays open until that answer
  await revokeValid(crl)
  t.equal(await gw.reload(), 'applied')
  t.same(reasons, ['max_age', 'revoked'], 'the revocation replaces the close for age')
  c.socket.write('GET /open-banking/accounts/v2/accounts?after-revocation=1 HTTP/1.1\r\nHost: localhost\r\n\r\n')
  release()
  await closed(c.socket)
  t.equal(holding.requests(), 1, 'only the request sent before the revocation reached the backend')
  // The first answer carries connection: close; the one after it is refused (403) or dropped with the connection,
  // depending on when Node parsed it: never answered 200.
  t.equal((c.received().match(/HTTP\/1\.1 200 /g) ?? []).length, 1, 'one answer from the backend, the first request\'s')
  t.match(c.received(), /^HTTP\/1\.1 200 OK\r\nconnection: close\r\n/, 'with connection: close')
})

t.test('a request whose body is still arriving when its client is revoked is refused, never forwarded', async (t) => {
  const { gw, crl } = await start(t)
  const c = rawClient(t, gw.url)
  await once(c.socket, 'secureConnect')
  const before = backend.calls.length
  // Expect: 100-continue: the gateway's "100 Continue" says the request is being handled before the body is sent.
  c.socket.write('POST /open-banking/payments/v4/pix/payments HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 19\r\nexpect: 100-continue\r\n\r\n')
  while (!c.received().includes('100 Continue')) await once(c.socket, 'data')
  c.socket.write('{"amount":')
  const closing = once(gw.events, 'closing') as Promise<[ConnectionClosing]>
  await revokeValid(crl)
  t.equal(await gw.reload(), 'applied')
  t.match((await closing)[0], { reason: 'revoked', inFlight: 1 }, 'revoked with the payment in flight')
  c.socket.write('"100.00"}')
  await closed(c.socket)
  t.equal(backend.calls.length, before, 'the payment never reached the backend')
  t.match(c.received(), /HTTP\/1\.1 403 [^]*PIXPROXY_ERR_GATEWAY_CLIENT_REFUSED/, 'the client was told it is refused')
})

t.test('a handshake begun before a revoking reload and finished after it is refused', async (t) => {
  const { gw, crl } = await start(t)
  // A TCP relay: the client's ClientHello goes through; what the client sends after the server's first flight (its
  // certificate, its proof) is held until the test lets it go.
  let releaseHeld: () => void = () => {}
  let serverSpoke: () => void = () => {}
  const spoke = new Promise<void>((resolve) => { serverSpoke = resolve })
  const relay = createNetServer((down: Socket) => {
    const up = netConnect(Number(new URL(gw.url).port), '127.0.0.1')
    let holding = false
    const held: Buffer[] = []
    up.on('data', (d: Buffer) => { holding = true; serverSpoke(); down.write(d) })
    up.on('error', () => down.destroy())
    down.on('error', () => up.destroy())
    up.on('close', () => down.destroy())
    down.on('close', () => up.destroy())
    releaseHeld = () => { holding = false; for (const h of held.splice(0)) up.write(h) }
    down.on('data', (d: Buffer) => { if (holding) held.push(d); else up.write(d) })
  })
  relay.listen(0, '127.0.0.1')
  await once(relay, 'listening')
  t.teardown(() => relay.close())
  const refused = once(gw.events, 'refused') as Promise<[{ reason: string }]>
  const before = backend.calls.length
  const pending = attempt(`https://127.0.0.1:${(relay.address() as AddressInfo).port}`, pki, { client: pki.clients.valid })
  await spoke // the server has answered the ClientHello: this connection's context is the one before the reload
  await revokeValid(crl)
  t.equal(await gw.reload(), 'applied', 'the client is revoked before the gateway has seen its certificate')
  releaseHeld()
  t.equal((await refused)[0].reason, 'reload_revoked', 'refused by the material in use when the handshake ended')
  t.match(await pending, { ok: false }, 'the client gets no answer')
  t.equal(backend.calls.length, before, 'nothing reached the backend')
})

/**
 * A client certificate OpenSSL accepts but core/pki's stricter DER parser does not: its critical flag encoded 0x01
 * (BER TRUE) where DER wants 0xff, re-signed by the intermediate.
 */
function berBooleanClient (): Issued {
  const leaf = pki.clients.valid
  const der = Buffer.from(leaf.certificate.der)
  const [tbs] = children(decode(der))
  if (tbs === undefined) throw new Error('no TBSCertificate')
  const tbsRaw = Buffer.from(tbs.raw)
  const at = tbsRaw.indexOf(Buffer.from([0x01, 0x01, 0xff]))
  tbsRaw[at + 2] = 0x01
  const signature = cryptoSign('sha256', tbsRaw, pki.intermediate.key)
  const out = Buffer.from(der)
  out.set(tbsRaw, der.indexOf(tbs.raw))
  out.set(signature, out.length - signature.length) // the BIT STRING's last bytes: the signature
  const pem = `-----BEGIN CERTIFICATE-----\n${(out.toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END CERTIFICATE-----\n`
  return { ...leaf, certPem: pem }
}

t.test('a certificate OpenSSL accepts and core/pki cannot read: admitted on a current context, refused (never a crash) where JS must judge it', async (t) => {
  const odd = berBooleanClient()
  const { gw } = await start(t)
  const res = await attempt(gw.url, pki, { client: odd, chain: odd.certPem + pki.intermediate.certPem })
  t.ok(res.ok && res.status === 200, 'no reload during its handshake: OpenSSL verdict stands')
  // Fail-open with a stale CRL: the gateway's own check must read the chain; it refuses, the process lives on.
  const own = await mkdtemp(join(tmpdir(), 'pix-gw-conn-odd-'))
  t.teardown(() => rm(own, { recursive: true, force: true }))
  const staleCrl = join(own, 'intermediate.crl')
  await writeFile(staleCrl, issueCrl(pki.intermediate, { thisUpdate: new Date(Date.now() - 3 * 86_400_000), nextUpdate: new Date(Date.now() - 86_400_000) }))
  const { gw: open } = await start(t, { PIXGW_CRLS: `${pki.files.rootCrl},${staleCrl}`, PIXGW_CRL_STALE_POLICY: 'fail-open' })
  const refusedEvent = once(open.events, 'refused') as Promise<[{ reason: string }]>
  const r2 = await attempt(open.url, pki, { client: odd, chain: odd.certPem + pki.intermediate.certPem })
  t.match(r2, { ok: false })
  t.equal((await refusedEvent)[0].reason, 'unreadable_certificate')
  const ok = await attempt(open.url, pki, { client: pki.clients.valid })
  t.ok(ok.ok && ok.status === 200, 'the gateway still serves')
})

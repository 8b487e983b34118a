/**
 * Connection draining (src/http/drain.ts) over real sockets. Regression: the 100 ms closeIdleConnections() sweep
 * the app ran while closing destroyed connections whose response was ended but not yet flushed, cutting large
 * answers and losing responses pipelined behind them (CI: "other side closed" in test/e2e/shutdown.test.ts).
 */
import t from 'tap'
import type { Test } from 'tap'
import { once } from 'node:events'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import type { KeyObject } from 'node:crypto'
import { drainConnections } from '../../src/http/drain.ts'
import type { ConnectionDrain, Every } from '../../src/http/drain.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { waitFor } from '../helpers/wait.ts'

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void

interface Served {
  server: http.Server
  drain: ConnectionDrain
  port: number
  closed: Promise<void>
}

/** Sweeps that run only when the test calls tick(): what a sweep sees no longer depends on the machine's speed. */
function manualSweeps (): { every: Every, tick: () => Promise<void> } {
  let fn: (() => void) | null = null
  return {
    every: (f) => { fn = f; return () => { fn = null } },
    // A sweep ends connections in a setImmediate after it: let that run too.
    tick: async () => { fn?.(); await new Promise((resolve) => setImmediate(resolve)) }
  }
}

async function serve (t: Test, handler: Handler, server: http.Server = http.createServer(), sweepIntervalMs?: number, every?: Every): Promise<Served> {
  server.on('request', handler)
  const drain = drainConnections(server, sweepIntervalMs, every)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const closed = new Promise<void>((resolve) => { server.once('close', () => { resolve() }) })
  t.teardown(async () => {
    server.closeAllConnections()
    if (server.listening) server.close()
    await closed
  })
  return { server, drain, port: (server.address() as AddressInfo).port, closed }
}

/** A raw client: what it sent, everything it received, and when the server closed the connection. */
function rawClient (port: number, connect: () => net.Socket = () => net.connect(port, '127.0.0.1')): { socket: net.Socket, received: () => string, ended: Promise<void> } {
  const socket = connect()
  const chunks: Buffer[] = []
  socket.on('data', (d: Buffer) => chunks.push(d))
  const ended = new Promise<void>((resolve) => { socket.once('close', () => { resolve() }) })
  return { socket, received: () => Buffer.concat(chunks).toString('latin1'), ended }
}

const get = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: test\r\n\r\n`

t.test('a large response to a slow reader is delivered whole while draining', async (t) => {
  const body = Buffer.alloc(32 * 1024 * 1024, 'a')
  let ended = false
  const s = await serve(t, (_req, res) => {
    res.setHeader('content-length', body.length)
    res.end(body)
    ended = true
  })
  const c = rawClient(s.port)
  c.socket.pause()
  c.socket.write(get('/big'))
  t.ok(await waitFor(() => ended), 'the response is ended (and mostly still queued: the client is not reading)')
  s.server.close()
  t.equal(s.drain.stats().openResponses, 1, 'the unflushed response still counts as open')
  c.socket.resume()
  await c.ended
  const text = c.received()
  const bodyStart = text.indexOf('\r\n\r\n') + 4
  t.equal(text.length - bodyStart, body.length, 'every byte arrived before the connection closed')
  await s.closed
})

t.test('a response pipelined behind a busy one is sent, then the connection ends', async (t) => {
  let releaseFirst = (): void => {}
  const order: string[] = []
  const sweeps = manualSweeps()
  const s = await serve(t, (req, res) => {
    order.push(req.url ?? '')
    if (req.url === '/slow') {
      releaseFirst = () => { res.end('slow done') }
    } else {
      res.setHeader('connection', 'close')
      res.statusCode = 503
      res.end('closing')
    }
  }, undefined, undefined, sweeps.every)
  const c = rawClient(s.port)
  c.socket.write(get('/slow') + get('/riding'))
  t.ok(await waitFor(() => order.length === 2), 'both requests were read')
  s.server.close()
  t.same(s.drain.stats(), { connections: 1, openResponses: 2 }, 'both responses open: the connection stays')
  // Past several sweeps: a connection with open responses is never ended.
  for (let i = 0; i < 3; i++) await sweeps.tick()
  t.equal(s.drain.stats().connections, 1, 'still open after several sweeps')
  releaseFirst()
  await c.ended
  const text = c.received()
  t.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*slow done/, 'the first answer')
  t.match(text, /HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*closing$/, 'then the pipelined one, whole')
  await s.closed
})

t.test('idle keep-alive connections end; one whose request is arriving is answered first', async (t) => {
  // The test drives the sweeps: the grace is one sweep, and the request's headers arrive before the test lets it pass.
  const sweeps = manualSweeps()
  const seen: string[] = []
  const s = await serve(t, (req, res) => { seen.push(req.url ?? ''); res.end(`answered ${req.url ?? ''}`) }, undefined, 1_000, sweeps.every)
  const idle = rawClient(s.port)
  idle.socket.write(get('/first'))
  t.ok(await waitFor(() => idle.received().includes('answered /first')), 'a keep-alive connection, now idle')
  const arriving = rawClient(s.port)
  await once(arriving.socket, 'connect')
  arriving.socket.write('GET /late HTTP/1.1\r\n')
  t.ok(await waitFor(() => s.drain.stats().connections === 2), 'the server holds both connections')

  s.server.close()
  arriving.socket.write('host: test\r\n\r\n')
  t.ok(await waitFor(() => seen.includes('/late')), 'the rest of the headers arrived')
  await sweeps.tick()
  await Promise.all([idle.ended, arriving.ended])
  t.match(arriving.received(), /answered \/late$/, 'the request whose headers were arriving was answered')
  t.notMatch(idle.received(), /answered \/first[\s\S]*HTTP/, 'the idle connection just closed')
  await s.closed
})

t.test('over TLS: connections are tracked from the handshake, idle ones end, busy ones finish', async (t) => {
  const pki = createTestPki()
  const cert = pki.issue('CN=localhost', { dnsNames: ['localhost'], extKeyUsage: ['serverAuth'] })
  let release = (): void => {}
  const server = https.createServer({ key: (cert.key as KeyObject).export({ type: 'pkcs8', format: 'pem' }), cert: cert.certificate.pem })
  const s = await serve(t, (req, res) => {
    if (req.url === '/slow') release = () => { res.end('slow done') }
    else res.end('quick')
  }, server)
  const connect = (): tls.TLSSocket => tls.connect({ port: s.port, host: '127.0.0.1', servername: 'localhost', ca: pki.ca.certificate.pem })
  const quiet = rawClient(s.port, connect)
  await once(quiet.socket, 'secureConnect')
  const busy = rawClient(s.port, connect)
  busy.socket.write(get('/slow'))
  t.ok(await waitFor(() => s.drain.stats().openResponses === 1 && s.drain.stats().connections === 2), 'a quiet and a busy TLS connection')

  s.server.close()
  await quiet.ended
  t.equal(quiet.received(), '', 'the connection that never sent a request ended')
  t.equal(s.drain.stats().connections, 1, 'the busy one stays')
  release()
  await busy.ended
  t.match(busy.received(), /slow done$/, 'and ends once answered')
  await s.closed
})

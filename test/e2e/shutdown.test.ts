/**
 * Graceful shutdown over real sockets: a request in flight to a slow BACEN completes after close() starts; new
 * connections are refused and requests arriving on live connections are answered 503. The operations listener says
 * "shutting down" on /readyz while metrics stay readable, and closes with the app.
 */
import t from 'tap'
import { Client, request } from 'undici'
import { header, PROXY_ISPB, startE2e, waitFor } from '../helpers/e2e.ts'
import { holdRequests } from '../helpers/gate.ts'
import type { E2e } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t, { settings: { PIXPROXY_OPS_LISTEN_PORT: '0' } }) })

t.test('close(): the in-flight request completes, new requests are refused', async (t) => {
  // BACEN holds the first requests until the test has checked everything that happens while they are in flight.
  const bacen = holdRequests(e2e.stack.simulator.app.server, ['/api/v2/policies/'])
  t.teardown(() => { bacen.restore() })
  // Pipelining lets a second request ride the busy connection: it is read while the server is draining.
  const client = new Client(e2e.stack.proxyUrl, { pipelining: 2 })
  // A client that waits for each answer before sending more on its connection (undici's default).
  const waiter = new Client(e2e.stack.proxyUrl)
  t.teardown(async () => { await Promise.all([client.destroy(), waiter.destroy()]) })
  const path = '/api/v2/policies/ENTRIES_WRITE'
  const headers = { 'pi-requestingparticipant': PROXY_ISPB }
  const mark = e2e.seen.length
  const events: string[] = []
  // blocking: false on both, or undici holds the second until the first answer's headers arrive (no pipelining).
  const slow = client.request({ method: 'GET', path, headers, blocking: false }).then(async (res) => {
    events.push('in-flight answered')
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
  })
  const waited = waiter.request({ method: 'GET', path, headers }).then(async (res) => {
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
  })
  t.ok(await waitFor(() => bacen.held() === 2), 'both slow requests are at BACEN')

  const closing = e2e.stack.proxy.close().then(() => { events.push('closed') })
  const riding = client.request({ method: 'GET', path, headers, blocking: false })
  const opsUrl = e2e.stack.proxy.opsUrl ?? ''
  const refusedWhileDraining = async (): Promise<boolean> => {
    const text = await (await request(opsUrl + '/metrics')).body.text()
    return /^pixproxy_errors_total\{code="PIXPROXY_ERR_SHUTTING_DOWN"\} 1$/m.test(text)
  }
  t.ok(await waitFor(refusedWhileDraining), 'the pipelined request was read and refused while the first is in flight')
  const fresh = await e2e.proxy('GET', '/healthz').then((r) => `status ${r.status}`, (err: { code?: string }) => err.code ?? 'error')
  // Refused outright, answered 503, or (a pooled keep-alive connection the draining server closes as idle) reset.
  t.ok(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 'status 503'].includes(fresh), `a new request is refused (${fresh})`)

  const ready = await request(opsUrl + '/readyz')
  t.same([ready.statusCode, await ready.body.json()], [503, { status: 'shutting down', checks: {} }], 'operations /readyz while draining')
  const metrics = await request(opsUrl + '/metrics')
  t.equal(metrics.statusCode, 200, 'metrics stay readable while draining')
  t.match(await metrics.body.text(), /^pixproxy_spi_in_flight/m)

  t.same(events, [], 'nothing answered yet: both requests are still at BACEN')
  bacen.release()
  const done = await slow
  t.equal(done.status, 200, 'the in-flight request completed')
  t.equal(header(done, 'pix-proxy-signature-code'), 'VALID', 'with its answer verified (HSM and upstream still up)')
  t.match(done.text, /<GetPolicyResponse>/)
  t.equal(done.headers.connection, 'keep-alive', 'kept alive: a response is pipelined behind it')
  const other = await waited
  t.equal(other.status, 200, 'the other in-flight request completed')
  t.equal(other.headers.connection, 'close', 'with Connection: close, so its client sends nothing more there')

  const late = await riding
  const lateText = await late.body.text()
  t.equal(late.statusCode, 503, 'a request read during the drain is refused')
  t.match(late.headers['content-type'], /^application\/problem\+json/, 'as problem+json')
  t.match(lateText, /PIXPROXY_ERR_SHUTTING_DOWN/, 'with the stable code')
  t.equal(late.headers['retry-after'], '1', 'and Retry-After')
  t.equal(late.headers.connection, 'close', 'and Connection: close, the last on its connection')
  t.equal(e2e.seenSince(mark, '/api/v2/policies/').length, 2, 'only the requests in flight reached BACEN')

  await closing
  t.same(events, ['in-flight answered', 'closed'], 'close() resolved after the in-flight request was answered')
  const after = await e2e.proxy('GET', '/healthz').then((r) => `status ${r.status}`, (err: { code?: string }) => err.code ?? 'error')
  t.equal(after, 'ECONNREFUSED', 'nothing listens after close()')
  const opsAfter = await request(opsUrl + '/healthz').then((r) => `status ${r.statusCode}`, (err: { code?: string }) => err.code ?? 'error')
  t.equal(opsAfter, 'ECONNREFUSED', 'nor on the operations port')
})

/**
 * Graceful shutdown over real sockets: a request in flight to a slow BACEN completes after close() starts; new
 * connections are refused and requests arriving on live connections are answered 503.
 */
import t from 'tap'
import { Client } from 'undici'
import { header, PROXY_ISPB, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })


t.test('close(): the in-flight request completes, new requests are refused', async (t) => {
  e2e.setFaults({ latencyMs: 800, routes: ['/api/v2/policies/'] })
  // Pipelining lets a second request ride the busy connection: it is read while the server is draining.
  const client = new Client(e2e.stack.proxyUrl, { pipelining: 2 })
  t.teardown(async () => { await client.destroy() })
  const path = '/api/v2/policies/ENTRIES_WRITE'
  const headers = { 'pi-requestingparticipant': PROXY_ISPB }
  const mark = e2e.seen.length
  const events: string[] = []
  const slow = client.request({ method: 'GET', path, headers }).then(async (res) => {
    events.push('in-flight answered')
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
  })
  t.ok(await waitFor(() => e2e.seenSince(mark, '/api/v2/policies/').length === 1), 'the slow request is at BACEN')

  const closing = e2e.stack.proxy.close().then(() => { events.push('closed') })
  const riding = client.request({ method: 'GET', path, headers })
  const fresh = await e2e.proxy('GET', '/healthz').then((r) => `status ${r.status}`, (err: { code?: string }) => err.code ?? 'error')
  // Refused outright, answered 503, or (a pooled keep-alive connection the draining server closes as idle) reset.
  t.ok(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 'status 503'].includes(fresh), `a new request is refused (${fresh})`)

  const done = await slow
  t.equal(done.status, 200, 'the in-flight request completed')
  t.equal(header(done, 'pix-proxy-signature-code'), 'VALID', 'with its answer verified (HSM and upstream still up)')
  t.match(done.text, /<GetPolicyResponse>/)

  const late = await riding
  const lateText = await late.body.text()
  t.equal(late.statusCode, 503, 'a request read during the drain is refused')
  t.match(late.headers['content-type'], /^application\/problem\+json/, 'as problem+json')
  t.match(lateText, /PIXPROXY_ERR_SHUTTING_DOWN/, 'with the stable code')
  t.equal(late.headers['retry-after'], '1', 'and Retry-After')
  t.equal(e2e.seenSince(mark, '/api/v2/policies/').length, 1, 'only the in-flight request reached BACEN')

  await closing
  t.same(events, ['in-flight answered', 'closed'], 'close() resolved after the in-flight request was answered')
  const after = await e2e.proxy('GET', '/healthz').then((r) => `status ${r.status}`, (err: { code?: string }) => err.code ?? 'error')
  t.equal(after, 'ECONNREFUSED', 'nothing listens after close()')
})

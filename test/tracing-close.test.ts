/**
 * Span export never holds the proxy up (issue 14): a collector that accepts connections and never answers neither
 * slows requests nor keeps close() past its bound (5 s, or PIXPROXY_SHUTDOWN_TIMEOUT_MS when lower).
 */
import { createServer } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import Fastify from 'fastify'
import type { Config } from '../src/config.ts'
import { installTracing } from '../src/http/tracing.ts'
import { formatTraceparent, traceOf } from '../src/http/trace.ts'
import type { TraceContext } from '../src/http/trace.ts'

t.test('a collector that never answers: requests are not slowed and close() ends within its bound', async (t) => {
  const held: Array<ServerResponse<IncomingMessage>> = []
  let posts = 0
  const blackhole = createServer((req, res) => {
    posts++
    req.resume()
    held.push(res)
  })
  await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const r of held) r.destroy()
    blackhole.closeAllConnections()
    await new Promise((resolve) => blackhole.close(resolve))
  })
  const { port } = blackhole.address() as AddressInfo

  const app = Fastify()
  app.decorate('instanceId', 'close-test')
  app.decorateRequest('trace', { getter (this: { raw: IncomingMessage }): TraceContext { return traceOf(this.raw) } })
  const config = { otlp: { tracesUrl: `http://127.0.0.1:${port}/v1/traces` }, shutdownTimeoutMs: 1_500 } as unknown as Config
  await installTracing(app, config)
  app.get('/x', async (req) => formatTraceparent(req.trace))

  // The collector answers nothing, ever: a request that waited for its span's export would never be answered (the
  // test's own timeout is the hang guard). No wall-clock bound: the machine's speed decides nothing here.
  for (let i = 0; i < 20; i++) {
    const res = await app.inject({ method: 'GET', url: '/x', headers: { traceparent: `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01` } })
    t.equal(res.statusCode, 200)
  }
  t.equal(held.filter((r) => r.writableEnded).length, 0, 'answered while the collector has answered nothing')

  await app.close()
  t.ok(posts >= 1, 'the spans were being posted at close')
  t.equal(held.filter((r) => r.writableEnded).length, 0, 'close() ended on its own bound, the collector still silent')
})

/**
 * Span export off (no PIXPROXY_OTLP_ENDPOINT, the default) costs nothing: the whole proxy starts and serves a request
 * with a traceparent without loading the OpenTelemetry SDK or exporter. A module resolution hook, registered before
 * anything of the project is imported (hence the dynamic imports below), sees every module this process loads, ESM or
 * CJS; the last test shows it does see the SDK when tracing is on.
 *
 * @opentelemetry/api itself is loaded whatever the setting, by prom-client (exemplars): a small API of no-op
 * singletons, never by the proxy's own code when tracing is off.
 */
import { registerHooks } from 'node:module'
import t from 'tap'

/** Every OpenTelemetry module resolved, and by which module outside OpenTelemetry. */
const otel: string[] = []
const importers = new Set<string>()
registerHooks({
  resolve (specifier, context, next) {
    const resolved = next(specifier, context)
    if (resolved.url.includes('/node_modules/@opentelemetry/')) {
      otel.push(resolved.url)
      const parent = context.parentURL ?? '(entry)'
      if (!parent.includes('/node_modules/@opentelemetry/')) importers.add(parent.replace(/^.*\/node_modules\//, ''))
    }
    return resolved
  }
})
const beyondApi = (): string[] => otel.filter((u) => !u.includes('/node_modules/@opentelemetry/api/'))

const { startE2e, PROXY_ISPB } = await import('./helpers/e2e.ts')
const { pacs008 } = await import('../tools/samples/messages.ts')
const { NO_TRACING, installTracing } = await import('../src/http/tracing.ts')

t.test('no endpoint: the proxy runs a traced request and no OpenTelemetry module is loaded', async (t) => {
  const e2e = await startE2e(t)
  t.equal(e2e.stack.config.otlp, null, 'no endpoint configured')
  t.equal(e2e.stack.proxy.tracing, NO_TRACING, 'the no-op tracing')
  const res = await e2e.proxy('POST', `/api/v1/in/${PROXY_ISPB}/msgs`, {
    headers: { 'content-type': 'application/xml', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
    body: pacs008().xml
  })
  t.equal(res.status, 201, res.text)
  t.match(res.headers.traceparent, /^00-4bf92f3577b34da6a3ce929d0e0e4736-/, 'the trace context still works')
  t.same(beyondApi(), [], 'no OpenTelemetry SDK, exporter or other package was resolved')
  t.same([...importers].filter((p) => !p.startsWith('prom-client/')), [], 'only prom-client imported @opentelemetry/api')
})

t.test('the check sees the SDK when tracing is on', async (t) => {
  const { default: Fastify } = await import('fastify')
  const app = Fastify()
  app.decorate('instanceId', 'control')
  const config = { otlp: { tracesUrl: 'http://127.0.0.1:9/v1/traces' }, shutdownTimeoutMs: 1_000 } as unknown as Parameters<typeof installTracing>[1]
  await installTracing(app, config)
  t.equal(app.tracing.enabled, true)
  t.ok(beyondApi().some((u) => u.includes('/@opentelemetry/sdk-trace/')), 'the SDK was loaded')
  t.ok([...importers].some((p) => p.endsWith('/src/http/tracing-otel.ts')), 'by the proxy\'s tracing module')
  t.ok(otel.some((u) => u.includes('/@opentelemetry/exporter-trace-otlp-http/')), 'and the exporter')
  await app.close()
})

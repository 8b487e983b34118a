// Inbound side of the proxy: TLS for callers, mutual TLS with a client-certificate allowlist, and the plain-HTTP
// operations listener beside it (the three read-only endpoints for a sidecar holding no client certificate).
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import type { Dispatcher } from 'undici'
import { createTestPki } from '../core/pki/ca.ts'
import { startLocalStack } from '../tools/demo/stack.ts'
import type { LocalStack } from '../tools/demo/stack.ts'
import { scratchDir } from './helpers/scratch.ts'

const scratch = scratchDir()

const callers = createTestPki({ caSubject: 'CN=Bank core callers CA, O=Banco Exemplo S.A., C=BR' })
const server = callers.issue('CN=pix-proxy.internal, O=Banco Exemplo S.A., C=BR', { dnsNames: ['pix-proxy.internal'], ipAddresses: ['127.0.0.1'], extKeyUsage: ['serverAuth'] })
const allowed = callers.issue('CN=core-banking-1, O=Banco Exemplo S.A., C=BR', { extKeyUsage: ['clientAuth'] })
const other = callers.issue('CN=some-other-service, O=Banco Exemplo S.A., C=BR', { extKeyUsage: ['clientAuth'] })
const stranger = createTestPki().issue('CN=stranger, C=BR', { extKeyUsage: ['clientAuth'] })

const pem = (k: import('node:crypto').KeyObject | undefined): string => (k as import('node:crypto').KeyObject).export({ type: 'pkcs8', format: 'pem' }).toString()

let stack: LocalStack
t.before(async () => {
  const dir = scratch.dir
  await writeFile(join(dir, 'in.crt'), server.certificate.pem)
  await writeFile(join(dir, 'in.key'), pem(server.key), { mode: 0o600 })
  await writeFile(join(dir, 'callers-ca.crt'), callers.ca.certificate.pem)
  stack = await startLocalStack({
    dir: join(dir, 'stack'),
    settings: {
      PIXPROXY_INBOUND_TLS_CERT_FILE: join(dir, 'in.crt'),
      PIXPROXY_INBOUND_TLS_KEY_FILE: join(dir, 'in.key'),
      PIXPROXY_INBOUND_CLIENT_CA_FILE: join(dir, 'callers-ca.crt'),
      PIXPROXY_INBOUND_CLIENT_ALLOWLIST: allowed.certificate.fingerprint256,
      PIXPROXY_OPS_LISTEN_PORT: '0'
    }
  })
})
t.teardown(async () => {
  await stack?.close()
  await scratch.remove() // only after the stack stopped writing there
})

async function get (path: string, client?: { certificate: { pem: string }, key?: import('node:crypto').KeyObject }): Promise<{ status: number, body: string }> {
  const dispatcher = new Agent({
    connect: {
      ca: callers.ca.certificate.pem,
      ...(client === undefined ? {} : { cert: client.certificate.pem, key: pem(client.key) })
    }
  })
  try {
    const r = await request(stack.proxyUrl + path, { dispatcher })
    return { status: r.statusCode, body: await r.body.text() }
  } finally {
    await dispatcher.close()
  }
}

t.test('the proxy speaks TLS to callers', async (t) => {
  t.match(stack.proxyUrl, /^https:\/\//)
})

t.test('an allowlisted client certificate gets through', async (t) => {
  const r = await get('/healthz', allowed)
  t.equal(r.status, 200)
})

t.test('a certificate from the callers CA that is not on the allowlist gets 403 with a stable code', async (t) => {
  const r = await get('/healthz', other)
  t.equal(r.status, 403)
  t.equal(JSON.parse(r.body).code, 'PIXPROXY_ERR_CLIENT_NOT_ALLOWED')
})

t.test('no client certificate, or one from another CA, fails the TLS handshake', async (t) => {
  await t.rejects(get('/healthz'))
  await t.rejects(get('/healthz', stranger))
})

async function ops (method: Dispatcher.HttpMethod, path: string, body?: string): Promise<{ status: number, type: string, body: string }> {
  const url = stack.proxy.opsUrl
  if (url === null) throw new Error('no operations listener')
  const r = await request(url + path, { method, ...(body === undefined ? {} : { body, headers: { 'content-type': 'application/xml' } }) })
  return { status: r.statusCode, type: String(r.headers['content-type']), body: await r.body.text() }
}

t.test('the operations listener: plain HTTP on loopback, /healthz /readyz /metrics without a client certificate', async (t) => {
  t.match(stack.proxy.opsUrl, /^http:\/\/127\.0\.0\.1:\d+$/, 'plain HTTP, loopback by default')
  t.not(stack.proxy.opsUrl, stack.proxyUrl.replace('https:', 'http:'), 'its own port')
  const live = await ops('GET', '/healthz')
  t.same([live.status, JSON.parse(live.body)], [200, { status: 'ok' }])
  const ready = await ops('GET', '/readyz')
  t.equal(ready.status, 200, ready.body)
  t.same(Object.keys(JSON.parse(ready.body).checks).sort(), ['audit', 'hsm', 'tls'], 'the same checks as the callers\' /readyz')
  t.same(Object.keys(JSON.parse(ready.body).upstreams).sort(), ['dict', 'spi'], 'and BACEN reported beside them')
  const metrics = await ops('GET', '/metrics')
  t.equal(metrics.status, 200)
  t.match(metrics.type, /^text\/plain/)
  t.match(metrics.body, /^pixproxy_requests_total/m)
})

t.test('the operations listener serves nothing else: no DICT, no ICOM, no other method', async (t) => {
  const upstream = async (): Promise<string[]> => (await ops('GET', '/metrics')).body.split('\n').filter((l) => l.startsWith('pixproxy_upstream_requests_total{'))
  const before = await upstream()
  for (const [method, path] of [
    ['GET', '/api/v2/entries/+5561988880000'],
    ['POST', '/api/v1/in/99999004/msgs'],
    ['GET', '/api/v1/out/99999004/stream/start'],
    ['POST', '/metrics'],
    ['DELETE', '/healthz'],
    ['GET', '/%zz']
  ] as const) {
    const r = await ops(method, path, method === 'POST' ? '<x/>' : undefined)
    t.equal(r.status, 404, `${method} ${path}`)
    t.match(r.type, /^application\/problem\+json/)
    t.equal(JSON.parse(r.body).code, 'PIXPROXY_ERR_ROUTE_NOT_ALLOWED', `${method} ${path}: ${r.body.slice(0, 200)}`)
  }
  t.same(await upstream(), before, 'nothing was sent to BACEN')
})

t.test('operations requests are not counted as callers\' requests', async (t) => {
  const count = async (): Promise<number> => {
    const text = (await ops('GET', '/metrics')).body
    return text.split('\n').filter((l) => l.startsWith('pixproxy_requests_total{')).reduce((n, l) => n + Number(l.split(' ').pop()), 0)
  }
  const before = await count()
  for (let i = 0; i < 5; i++) await ops('GET', '/readyz')
  t.equal(await count(), before)
  await get('/healthz', allowed)
  t.equal(await count(), before + 1, 'a caller\'s request is')
})

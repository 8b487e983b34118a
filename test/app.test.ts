// Inbound side of the proxy: TLS for callers, mutual TLS with a client-certificate allowlist.
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { createTestPki } from '../src/pki/ca.ts'
import { startLocalStack } from '../src/demo/stack.ts'
import type { LocalStack } from '../src/demo/stack.ts'
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
      PIXPROXY_INBOUND_CLIENT_ALLOWLIST: allowed.certificate.fingerprint256
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

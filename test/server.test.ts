// The entry point as operators run it: a child process configured from the environment.
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { request } from 'undici'
import { createTestPki } from '../core/pki/ca.ts'
import { startLocalAwsEndpoint } from '../tools/aws-local/endpoint.ts'
import { PEM_SETTINGS, ssmParameterName } from '../src/config.ts'
import { waitFor } from './helpers/wait.ts'

const serverTs = new URL('../src/server.ts', import.meta.url).pathname
const pki = createTestPki()
const sign = pki.issue('CN=pix-proxy 99999004 assinatura, O=Banco Exemplo S.A., C=BR')
const tls = pki.issue('CN=pix-proxy 99999004 tls, O=Banco Exemplo S.A., C=BR', { extKeyUsage: ['clientAuth'] })
const bcb = pki.issue('CN=BCB assinatura, O=Banco Central do Brasil, C=BR')
const dir = t.testdir()
const pem = (k: import('node:crypto').KeyObject | undefined): string => (k as import('node:crypto').KeyObject).export({ type: 'pkcs8', format: 'pem' }).toString()

let env: Record<string, string> = {}
t.before(async () => {
  await writeFile(join(dir, 'sign.key'), pem(sign.key), { mode: 0o600 })
  await writeFile(join(dir, 'sign.crt'), sign.certificate.pem)
  await writeFile(join(dir, 'tls.key'), pem(tls.key), { mode: 0o600 })
  await writeFile(join(dir, 'tls.crt'), tls.certificate.pem)
  await writeFile(join(dir, 'ca.crt'), pki.ca.certificate.pem)
  await writeFile(join(dir, 'bcb.crt'), bcb.certificate.pem)
  env = {
    PATH: process.env.PATH ?? '',
    PIXPROXY_ISPB: '99999004',
    PIXPROXY_LISTEN_PORT: '0',
    PIXPROXY_LOG_LEVEL: 'info',
    PIXPROXY_SIGNING_KEY_FILE: join(dir, 'sign.key'),
    PIXPROXY_SIGNING_CERT_FILE: join(dir, 'sign.crt'),
    PIXPROXY_TLS_KEY_FILE: join(dir, 'tls.key'),
    PIXPROXY_TLS_CERT_FILE: join(dir, 'tls.crt'),
    PIXPROXY_TLS_CA_FILE: join(dir, 'ca.crt'),
    PIXPROXY_BACEN_SIGNING_CERTS_FILE: join(dir, 'bcb.crt'),
    // Far above what a drain takes on a loaded machine: these tests assert clean stops (exit 0), not the deadline.
    PIXPROXY_SHUTDOWN_TIMEOUT_MS: '60000',
    PIXPROXY_AUDIT_SPOOL_DIR: join(dir, 'spool'),
    PIXPROXY_AUDIT_PARQUET_DIR: join(dir, 'lake')
  }
})

function start (extra: Record<string, string> = {}): { child: ReturnType<typeof spawn>, lines: string[], exit: Promise<number | null>, url: Promise<string> } {
  const child = spawn(process.execPath, [serverTs], { env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let resolveUrl: (u: string) => void = () => {}
  const url = new Promise<string>((resolve) => { resolveUrl = resolve })
  const onLine = (line: string): void => {
    if (line === '') return
    lines.push(line)
    const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(line)
    if (m !== null) resolveUrl(m[1] as string)
  }
  // Whole lines (a chunk can end mid-line); 'close' comes after both pipes are read to their end.
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', onLine)
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', onLine)
  const exit = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  return { child, lines, exit, url }
}

t.test('a bad configuration stops start-up with exit 78 and every problem in one JSON line', async (t) => {
  const p = start({ PIXPROXY_ISPB: 'nope', PIXPROXY_LISTEN_PORT: 'eighty' })
  t.equal(await p.exit, 78)
  const err = JSON.parse(p.lines.find((l) => l.startsWith('{"error"')) as string)
  t.equal(err.error, 'PIXPROXY_ERR_CONFIG_INVALID')
  t.match(err.message, /PIXPROXY_ISPB/)
  t.match(err.message, /PIXPROXY_LISTEN_PORT/)
})

t.test('an open listener (0.0.0.0 without inbound mutual TLS) refuses to start: exit 78, naming the settings', async (t) => {
  const p = start({ PIXPROXY_LISTEN_HOST: '0.0.0.0' })
  t.equal(await p.exit, 78)
  const err = JSON.parse(p.lines.find((l) => l.startsWith('{"error"')) as string)
  t.equal(err.error, 'PIXPROXY_ERR_CONFIG_INVALID')
  t.match(err.message, /PIXPROXY_INBOUND_CLIENT_CA_FILE, PIXPROXY_INBOUND_CLIENT_ALLOWLIST/)
})

t.test('an unreadable key file stops start-up with a coded error, exit 1', async (t) => {
  const p = start({ PIXPROXY_SIGNING_KEY_FILE: join(dir, 'missing.key') })
  t.equal(await p.exit, 1)
  t.ok(p.lines.some((l) => l.includes('"error"')), p.lines.join('\n'))
})

t.test('starts, answers /healthz, and exits 0 on SIGTERM', async (t) => {
  const p = start()
  const url = await p.url
  const r = await request(url + '/healthz')
  t.equal(r.statusCode, 200)
  t.same(await r.body.json(), { status: 'ok' })
  const notFound = await request(url + '/api/v9/anything')
  t.equal(notFound.statusCode, 404)
  t.equal(notFound.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(((await notFound.body.json()) as { code: string }).code, 'PIXPROXY_ERR_ROUTE_NOT_ALLOWED')
  // Fastify's own 4xx (here a malformed percent-encoding in a path parameter) is a catalogued problem, not a 500.
  const badUrl = await request(url + '/api/v2/entries/%E0%A4%A')
  t.equal(badUrl.statusCode, 400)
  t.equal(badUrl.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(((await badUrl.body.json()) as { code: string }).code, 'PIXPROXY_ERR_BAD_REQUEST')
  p.child.kill('SIGTERM')
  t.equal(await p.exit, 0)
  t.ok(p.lines.some((l) => l.includes('shutting down')), 'logs the shutdown')
})

t.test('SIGTERM during start-up: start-up completes, then the proxy drains and exits 0 (not killed by the signal)', async (t) => {
  const p = start()
  // The signer is loaded in buildApp, a few hundred ms before the listener opens (the audit worker starts between).
  t.ok(await waitFor(() => p.lines.some((l) => l.includes('"signer"'))), 'start-up is under way')
  p.child.kill('SIGTERM')
  t.equal(await p.exit, 0, 'exit 0')
  const at = (text: string): number => p.lines.findIndex((l) => l.includes(text))
  t.ok(at('Server listening') >= 0 && at('Server listening') < at('shutting down'), 'listened, then drained')
})

t.test('with PIXPROXY_OPS_LISTEN_PORT: both listeners, each logged under its own text; a taken port stops start-up', async (t) => {
  const p = start({ PIXPROXY_OPS_LISTEN_PORT: '0' })
  const url = await p.url
  const opsLine = p.lines.find((l) => l.includes('operations listener at'))
  const opsUrl = /operations listener at (http:\/\/127\.0\.0\.1:\d+)/.exec(opsLine ?? '')?.[1]
  t.ok(opsUrl !== undefined && opsUrl !== url, `${opsUrl ?? '(none)'} beside ${url}`)
  t.equal((await request(url + '/healthz')).statusCode, 200, '"Server listening at" names the callers\' listener')
  const metrics = await request(`${opsUrl ?? ''}/metrics`)
  t.equal(metrics.statusCode, 200)
  await metrics.body.dump()

  const taken = start({ PIXPROXY_OPS_LISTEN_PORT: new URL(opsUrl ?? 'http://x:1').port, PIXPROXY_AUDIT_SPOOL_DIR: join(dir, 'spool-2') })
  t.equal(await taken.exit, 1, 'a second proxy cannot take the same operations port')
  t.ok(taken.lines.some((l) => l.includes('"error"') && l.includes('EADDRINUSE')), taken.lines.join('\n'))
  p.child.kill('SIGTERM')
  t.equal(await p.exit, 0)
})

t.test('settings from SSM Parameter Store (PIXPROXY_CONFIG_SSM_PATH), certificates and keys as PEM text; the environment wins', async (t) => {
  const aws = await startLocalAwsEndpoint({ port: 0 })
  t.teardown(async () => { await aws.close() })
  // Everything but the bootstrap goes to SSM; one setting is also in the environment, which must win.
  // As in ECS: certificates and keys are parameters holding the PEM itself, not paths to files.
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('PIXPROXY_')) continue
    const value = (PEM_SETTINGS as readonly string[]).includes(k) ? await readFile(v, 'utf8') : v
    aws.putParameter({ name: ssmParameterName(k), value })
  }
  aws.putParameter({ name: ssmParameterName('PIXPROXY_LOG_LEVEL'), value: 'silent' })
  const awsEnv = { AWS_ENDPOINT_URL: aws.url, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: 'AKIDLOCAL', AWS_SECRET_ACCESS_KEY: 'local' }
  const bootstrapOnly: Record<string, string> = { PATH: env.PATH ?? '', PIXPROXY_CONFIG_SSM_PATH: '/pix/proxy/', PIXPROXY_LOG_LEVEL: 'info', ...awsEnv }
  const saved = env
  env = bootstrapOnly
  t.teardown(() => { env = saved })
  const p = start()
  const url = await p.url
  t.ok(p.lines.some((l) => l.includes('Server listening')), 'PIXPROXY_LOG_LEVEL from the environment (info) beat the parameter (silent)')
  const loaded = JSON.parse(p.lines.find((l) => l.includes('"settings loaded"')) as string) as { fromSsm: string[] }
  t.ok(loaded.fromSsm.includes('PIXPROXY_ISPB') && !loaded.fromSsm.includes('PIXPROXY_LOG_LEVEL'), 'origins are reported (names only)')
  t.ok(aws.calls.some((c) => c.target === 'AmazonSSM.GetParametersByPath'), 'read through the real SDK client')
  const r = await request(url + '/healthz')
  t.equal(r.statusCode, 200)
  await r.body.dump()
  p.child.kill('SIGTERM')
  t.equal(await p.exit, 0)

  aws.putParameter({ name: '/pix/proxy/ispb_typo', value: 'x' })
  const bad = start()
  t.equal(await bad.exit, 78, 'an unknown parameter under the path stops start-up')
  t.ok(bad.lines.some((l) => l.includes('PIXPROXY_ERR_AWS_SSM_UNKNOWN_PARAMETER')), bad.lines.join('\n'))
})

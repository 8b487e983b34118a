/**
 * The gateway's audit rows through the audit trail (src/audit/, system gateway, in the audit worker thread) over real
 * mutual-TLS handshakes: read back with DuckDB from the Parquet store (queryAudit, and `pix-proxy audit query`
 * itself), delivered to the gateway's own stream of the local Firehose, a full spool refusing calls (503, nothing
 * forwarded) instead of forwarding them unaudited, and a dead audit thread doing the same and telling the gateway to
 * shut down. No timing: the answer's last byte leaves only after its row is durable in the spool, closing the gateway
 * ships every completed row before it returns, and a thread ended by the test has ended when abort() resolves.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { Errors } from '../../core/errors.ts'
import { AuditSpool } from '../../src/audit/spool.ts'
import { GATEWAY_AUDIT_COLUMNS, journalAuditSink } from '../../src/gateway/audit.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import { thumbprintS256 } from '../../src/gateway/headers.ts'
import { openGatewayAudit, runGateway } from '../../src/gateway/server.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { main } from '../../tools/cli/main.ts'
import { captureIo } from '../helpers/cli-io.ts'
import { createGatewayPki } from '../helpers/gateway-pki.ts'
import { attempt, gatewayConfig, startBackend, testLogger } from './helpers.ts'

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-audit-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const pki = await createGatewayPki(dir)
const backend = await startBackend(pki)
t.teardown(() => backend.close())

// Closing ships within half the shutdown deadline: generous here, a hang guard only (a loaded machine is slow).
const GUARD = { PIXGW_SHUTDOWN_TIMEOUT_MS: '240000' }

async function rowsOf (store: string, sql: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(store, sql)) out.push(r)
  return out
}

t.test('Parquet: a forwarded call and a refused one are rows of the gateway table, with the client\'s identity', async (t) => {
  const root = await mkdtemp(join(dir, 'parquet-'))
  const store = join(root, 'lake')
  const config = gatewayConfig(pki, backend, { PIXGW_AUDIT_SPOOL_DIR: join(root, 'spool'), PIXGW_AUDIT_PARQUET_DIR: store, PIXGW_AUDIT_FLUSH_MS: '10', ...GUARD })
  const { logger, lines } = testLogger()
  const audit = await openGatewayAudit(config, logger)
  const gw = await startGateway({ config, logger, identify: icpBrasilIdentity, audit, instanceId: 'gw-test' })
  let closed = false
  t.teardown(async () => { if (!closed) await gw.close() })
  t.match(lines.find((l) => l.msg === 'gateway audit trail ready'), { sink: 'parquet', replayedRows: 0 }, 'the trail is up, its spool replayed')
  const client = pki.clients.valid
  const cert = client.certificate
  const ok = await attempt(gw.url, pki, { client, path: '/open-banking/accounts/v2/accounts?page=2' })
  t.ok(ok.ok && ok.status === 200, 'forwarded')
  // The spool is the audit thread's, asked through its port: the call's row was there, complete, before the answer
  // ended (the refusal below is written after its answer, so only this one can be counted exactly).
  const spool = (await audit.worker.status()).spool
  t.match(spool, { spooledRows: 1, openRows: 0 }, 'the forwarded call is one complete row in the audit thread\'s spool')
  const no = await attempt(gw.url, pki, { client, path: '/admin/secrets' })
  t.ok(no.ok && no.status === 404, `refused by the allowlist (${JSON.stringify(no)})`)
  // Closing ships every completed row (the refusal's row too: close waits for rows being written).
  await gw.close()
  closed = true

  const rows = await rowsOf(store, 'SELECT * EXCLUDE (year, month, day, hour) FROM gateway ORDER BY path')
  t.equal(rows.length, 2, 'one row per call')
  t.same(Object.keys(rows[0] ?? {}), [...GATEWAY_AUDIT_COLUMNS], 'the gateway table\'s columns, in order')
  t.match(rows[1], {
    method: 'GET',
    path: '/open-banking/accounts/v2/accounts',
    route: 'GET /open-banking/*',
    status: 200,
    error_code: null,
    client_cnpj: '11222333000181',
    client_thumbprint: thumbprintS256(cert.x509),
    client_serial: cert.x509.serialNumber,
    client_subject: /CN=/,
    request_bytes: 0,
    instance_id: 'gw-test'
  }, 'the forwarded call with the client certificate\'s identity')
  t.ok(typeof rows[1]?.response_bytes === 'number' && (rows[1].response_bytes as number) > 0, 'the answer\'s size')
  t.ok(typeof rows[1]?.latency_ms === 'number', 'its latency')
  t.match(rows[0], { path: '/admin/secrets', status: 404, error_code: Errors.GATEWAY_ROUTE_NOT_ALLOWED.code, route: null, client_thumbprint: thumbprintS256(cert.x509) }, 'the refused call, never forwarded, is audited too')
  const [part] = await rowsOf(store, 'SELECT year, month, day, hour FROM gateway LIMIT 1')
  t.match(part, { year: /^\d{4}$/, month: /^\d{2}$/, day: /^\d{2}$/, hour: /^\d{2}$/ }, 'partitioned like the proxy\'s rows (log/gateway/year=/month=/day=/hour=)')
  t.same(await rowsOf(store, 'SELECT count(*) AS n FROM audit'), [{ n: 0 }], 'the PIX view (spi, dict) does not take gateway files')
  // The command an operator runs: `pix-proxy audit query` over the same store.
  const c = captureIo({})
  t.equal(await main(['audit', 'query', 'SELECT client_cnpj, status FROM gateway ORDER BY status', '--dir', store], c.io), 0, 'pix-proxy audit query exits 0')
  t.equal(c.text().stdout, '{"client_cnpj":"11222333000181","status":200}\n{"client_cnpj":"11222333000181","status":404}\n', 'and prints the gateway\'s rows')
})

t.test('Firehose: the row arrives in the gateway\'s own stream, with the gateway\'s columns', async (t) => {
  const root = await mkdtemp(join(dir, 'firehose-'))
  const creds = { accessKeyId: 'AKIDGWAUDIT', secretAccessKey: 'local-secret' }
  const ep = await startLocalAwsEndpoint({ credentials: { [creds.accessKeyId]: creds.secretAccessKey } })
  t.teardown(() => ep.close())
  ep.createDeliveryStream('gw-audit-test', 'log/gateway/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/')
  // The SDK's own configuration chain (as in ECS): the endpoint and credentials of the local AWS.
  const saved = { ...process.env }
  Object.assign(process.env, { AWS_ENDPOINT_URL: ep.url, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey })
  t.teardown(() => {
    for (const k of ['AWS_ENDPOINT_URL', 'AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) {
      if (saved[k] === undefined) Reflect.deleteProperty(process.env, k)
      else process.env[k] = saved[k]
    }
  })
  const config = gatewayConfig(pki, backend, { PIXGW_AUDIT_SINK: 'firehose', PIXGW_AUDIT_FIREHOSE_STREAM: 'gw-audit-test', PIXGW_AUDIT_SPOOL_DIR: join(root, 'spool'), PIXGW_AUDIT_FLUSH_MS: '10', ...GUARD })
  const { logger } = testLogger()
  const gw = await startGateway({ config, logger, identify: icpBrasilIdentity, audit: await openGatewayAudit(config, logger), instanceId: 'gw-fh' })
  let closed = false
  t.teardown(async () => { if (!closed) await gw.close() })
  const res = await attempt(gw.url, pki, { client: pki.clients.valid, method: 'POST', path: '/open-banking/payments/v4/pix/payments', body: '{"x":1}', headers: { 'content-type': 'application/json' } })
  t.ok(res.ok && res.status === 200, 'forwarded')
  await gw.close()
  closed = true

  const delivered = ep.delivered('gw-audit-test').map((r) => JSON.parse(r.data.toString('utf8')) as Record<string, unknown>)
  t.equal(delivered.length, 1, 'one record in the gateway stream')
  t.same(Object.keys(delivered[0] ?? {}), [...GATEWAY_AUDIT_COLUMNS], 'exactly the gateway table\'s columns (the Glue table reads them by name)')
  t.match(delivered[0], { method: 'POST', path: '/open-banking/payments/v4/pix/payments', status: 200, request_bytes: 7, client_cnpj: '11222333000181', instance_id: 'gw-fh' })
  t.same(ep.delivered('pix-proxy-audit-spi'), [], 'nothing in the proxy\'s streams')
})

t.test('a full spool refuses the call with PIXPROXY_ERR_AUDIT_SPOOL_FULL; nothing reaches the backend', async (t) => {
  const root = await mkdtemp(join(dir, 'full-'))
  const spool = await AuditSpool.open({ dir: root, maxBytes: 1024 * 1024 })
  t.teardown(() => spool.close())
  // Fill it with rows nothing ships (no pipeline here), large then small, until it refuses even a row with an
  // empty header: a gateway call's row, larger than that, cannot fit.
  let n = 0
  for (const pad of [64 * 1024, 1024, 0]) {
    for (;;) {
      try {
        await spool.begin({ id: `fill-${n++}`, request_date: new Date().toISOString(), system: 'gateway', request_method: 'GET', request_path: '/', request_header: JSON.stringify({ pad: 'x'.repeat(pad) }), correlation_id: 'c', instance_id: 'i' })
      } catch (err) {
        t.equal((err as { code?: string }).code, Errors.AUDIT_SPOOL_FULL.code, `the spool is full (rows padded with ${pad} bytes)`)
        break
      }
    }
  }
  const { logger, lines } = testLogger()
  const gw = await startGateway({ config: gatewayConfig(pki, backend), logger, identify: icpBrasilIdentity, audit: journalAuditSink(spool), instanceId: 'gw-full' })
  t.teardown(() => gw.close())
  const before = backend.calls.length
  const res = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(res.ok && res.status === 503, `503 (${JSON.stringify(res)})`)
  const problem = res.ok ? JSON.parse(res.body) as Record<string, unknown> : {}
  t.match(problem, { code: Errors.AUDIT_SPOOL_FULL.code, status: 503 }, 'the problem names the full spool')
  t.equal(res.ok && res.headers['content-type'], 'application/problem+json')
  t.equal(backend.calls.length, before, 'not forwarded unaudited')
  t.ok(lines.some((l) => l.msg === 'gateway call not audited: refused, not forwarded'), 'logged')
})

t.test('the audit thread dies: the next call is refused with 503 PIXPROXY_ERR_AUDIT_WORKER_FAILED and never reaches the backend; the gateway is told to shut down', async (t) => {
  const root = await mkdtemp(join(dir, 'dies-'))
  const store = join(root, 'lake')
  const settings = { PIXGW_AUDIT_SPOOL_DIR: join(root, 'spool'), PIXGW_AUDIT_PARQUET_DIR: store, ...GUARD }
  const { logger, lines } = testLogger()
  // Nothing ships before the crash (flush after 10 minutes): the answered call's row is in the spool only.
  const gw = await runGateway(gatewayConfig(pki, backend, { ...settings, PIXGW_AUDIT_FLUSH_MS: '600000' }), {}, { logger })
  let closed = false
  t.teardown(async () => { if (!closed) await gw.close() })
  const heard: string[] = []
  gw.auditWorker.onFailure((err) => { heard.push(err.code) })
  const client = pki.clients.valid
  const ok = await attempt(gw.url, pki, { client })
  t.ok(ok.ok && ok.status === 200, 'forwarded while the audit thread runs')
  const before = backend.calls.length

  await gw.auditWorker.abort() // what a crash of the thread looks like; it has ended when this resolves
  t.same(heard, [Errors.AUDIT_WORKER_FAILED.code], 'the failure listener (the entry point: close, then exit 1) is told, once')
  t.match(lines.find((l) => l.msg === 'gateway audit trail lost: every call is refused; shutting down'), { level: 60, code: Errors.AUDIT_WORKER_FAILED.code }, 'a fatal log line with the stable code')

  const res = await attempt(gw.url, pki, { client, method: 'POST', path: '/open-banking/payments/v4/pix/payments', body: '{"x":1}', headers: { 'content-type': 'application/json' } })
  t.ok(res.ok && res.status === 503, `503 (${JSON.stringify(res)})`)
  t.equal(res.ok && res.headers['content-type'], 'application/problem+json')
  t.match(res.ok ? JSON.parse(res.body) as Record<string, unknown> : {}, { code: Errors.AUDIT_WORKER_FAILED.code, status: 503, outcome: 'not-sent' }, 'the problem names the dead audit thread: safe to retry')
  t.equal(backend.calls.length, before, 'not forwarded unaudited')
  t.ok(lines.some((l) => l.msg === 'gateway call not audited: refused, not forwarded'), 'logged')
  // The normal close path, with the thread gone: it resolves (nothing to ship; the spool stays for the next start).
  closed = true
  await gw.close()

  // The next start replays what the dead thread made durable, and ships it.
  const next = testLogger()
  const audit = await openGatewayAudit(gatewayConfig(pki, backend, { ...settings, PIXGW_AUDIT_FLUSH_MS: '10' }), next.logger)
  t.match(next.lines.find((l) => l.msg === 'gateway audit trail ready'), { replayedRows: 1, incomplete: 0 }, 'the answered call, complete')
  await audit.close()
  t.same(await rowsOf(store, 'SELECT method, path, status, error_code FROM gateway'), [{ method: 'GET', path: '/open-banking/accounts/v2/accounts', status: 200, error_code: null }], 'shipped by the next start; the refused call never became a row')
})

/**
 * The gateway's audit rows through the audit trail (src/audit/, system gateway, in the audit worker thread) over real
 * mutual-TLS handshakes: read back with DuckDB from the Parquet store (queryAudit, and `pix-proxy audit query`
 * itself), delivered to the gateway's own stream of the local Firehose, a full spool refusing calls (503, nothing
 * forwarded) instead of forwarding them unaudited, and a dead audit thread doing the same and telling the gateway to
 * shut down; the audit trail as an operator sees it on the ops listener: the proxy's pixproxy_audit_* metrics, and
 * /readyz failing once the thread has stopped or does not answer. No timing: the answer's last byte leaves only after
 * its row is durable in the spool, closing the gateway ships every completed row before it returns, a thread ended by
 * the test has ended when abort() resolves, and one that never answers is told apart only by a timeout's verdict.
 */
import { mkdtemp } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { Errors } from '../../core/errors.ts'
import { AuditWorker } from '../../src/audit/remote.ts'
import { AuditSpool } from '../../src/audit/spool.ts'
import { GATEWAY_AUDIT_COLUMNS, journalAuditSink } from '../../src/gateway/audit.ts'
import { startGateway } from '../../src/gateway/gateway.ts'
import type { Gateway } from '../../src/gateway/gateway.ts'
import { thumbprintS256 } from '../../src/gateway/headers.ts'
import { openGatewayAudit, runGateway } from '../../src/gateway/server.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { main } from '../../tools/cli/main.ts'
import { auditSettings } from '../audit/fixtures/settings.ts'
import { captureIo } from '../helpers/cli-io.ts'
import { auditFixture, GUARD, rowsOf } from './fixtures/audit.ts'
import { attempt, gatewayConfig, testLogger } from './helpers.ts'

const { dir, pki, backend } = await auditFixture(t, 'pix-gw-audit-')

/** /readyz on the ops listener: its status code and body. */
async function readyz (gw: Gateway): Promise<{ status: number, body: unknown }> {
  const res = await fetch(`${gw.opsUrl}/readyz`)
  return { status: res.status, body: await res.json() }
}

async function scrape (gw: Gateway): Promise<string> {
  const res = await fetch(`${gw.opsUrl}/metrics`)
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`)
  return await res.text()
}

/** The proxy's audit families (src/audit/metrics.ts) with their types: what its dashboards and alarms read. */
const AUDIT_FAMILIES = {
  pixproxy_audit_wait_seconds: 'histogram',
  pixproxy_audit_spool_bytes: 'gauge',
  pixproxy_audit_spool_max_bytes: 'gauge',
  pixproxy_audit_spool_rows: 'gauge',
  pixproxy_audit_rows_total: 'counter',
  pixproxy_audit_sink_consecutive_failures: 'gauge',
  pixproxy_audit_sink_failed_calls_total: 'counter',
  pixproxy_audit_sink_partial_failures_total: 'counter',
  pixproxy_audit_sink_retrying_rows: 'gauge',
  pixproxy_audit_worker_heap_bytes: 'gauge',
  pixproxy_audit_oldest_unshipped_seconds: 'gauge',
  pixproxy_audit_worker_up: 'gauge'
}

/** `# TYPE` of every pixproxy_audit_* family on a page. */
function auditFamilies (page: string): Record<string, string> {
  return Object.fromEntries([...page.matchAll(/^# TYPE (pixproxy_audit_\w+) (\w+)$/gm)].map((m) => [m[1] as string, m[2] as string]))
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

t.test('the ops listener shows the audit trail as the proxy\'s does: pixproxy_audit_* on /metrics, and /readyz ready while the thread runs, 503 once it has stopped', async (t) => {
  const root = await mkdtemp(join(dir, 'ops-'))
  // Nothing ships during the test (flush after 10 minutes): the row counts below are exact.
  const config = gatewayConfig(pki, backend, { PIXGW_AUDIT_SPOOL_DIR: join(root, 'spool'), PIXGW_AUDIT_PARQUET_DIR: join(root, 'lake'), PIXGW_AUDIT_FLUSH_MS: '600000', ...GUARD })
  const { logger } = testLogger()
  const audit = await openGatewayAudit(config, logger)
  const gw = await startGateway({ config, logger, identify: icpBrasilIdentity, audit, instanceId: 'gw-ops' })
  t.teardown(() => gw.close())

  const ready = await readyz(gw)
  t.equal(ready.status, 200, 'ready')
  t.match(ready.body, { status: 'ready', checks: { audit: { ok: true, detail: /0 rows pending, \d+ of 1073741824 spool bytes/ } } }, 'the audit check passes, with the spool\'s figures')
  t.same(auditFamilies(await scrape(gw)), AUDIT_FAMILIES, 'every audit family of the proxy, with its type, from the first scrape')

  const res = await attempt(gw.url, pki, { client: pki.clients.valid })
  t.ok(res.ok && res.status === 200, 'forwarded')
  // Both halves were durable before the answer's last byte left: the audit thread has counted the row, and the event
  // loop has observed both of its waits.
  const m = await scrape(gw)
  t.match(m, /^pixproxy_audit_rows_total\{state="spooled"\} 1$/m, 'the call\'s row, counted by the audit thread')
  t.match(m, /^pixproxy_audit_spool_rows\{state="pending"\} 1$/m, 'pending shipment')
  t.match(m, /^pixproxy_audit_spool_rows\{state="open"\} 0$/m, 'complete')
  t.match(m, /^pixproxy_audit_wait_seconds_count\{half="begin"\} 1$/m, 'the wait for its begin half, before it was forwarded')
  t.match(m, /^pixproxy_audit_wait_seconds_count\{half="end"\} 1$/m, 'and for its end half, before the answer\'s last byte')
  t.match(m, /^pixproxy_audit_spool_max_bytes 1073741824$/m, 'the bound (PIXGW_AUDIT_SPOOL_MAX_BYTES)')
  t.match(m, /^pixproxy_audit_worker_up 1$/m)
  t.match(m, /^pixgw_requests_total\{route="GET \/open-banking\/\*",method="GET",status="200"\} 1$/m, 'beside the gateway\'s own metrics, on the same page')

  await audit.worker.abort() // what a crash of the thread looks like; it has ended when this resolves
  const down = await readyz(gw)
  t.equal(down.status, 503, 'not ready: every call would be refused')
  t.match(down.body, { status: 'not ready', checks: { audit: { ok: false, detail: /^PIXPROXY_ERR_AUDIT_WORKER_FAILED: / } } }, 'the check names the stopped thread')
  t.match(await scrape(gw), /^pixproxy_audit_worker_up 0$/m, 'the metric says so')
})

t.test('an audit thread that does not answer: /readyz answers 503 PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE instead of hanging, and /metrics still answers', async (t) => {
  const { logger } = testLogger()
  // A thread that starts, then never answers again (stuck, e.g. in an fdatasync on a file system that stopped answering).
  const { worker } = await AuditWorker.start(auditSettings(await mkdtemp(join(dir, 'stuck-'))), logger, { workerUrl: new URL('../audit/fixtures/silent-worker.ts', import.meta.url) })
  const gw = await startGateway({ config: gatewayConfig(pki, backend), logger, identify: icpBrasilIdentity, audit: { ...journalAuditSink(worker), worker }, instanceId: 'gw-stuck' })
  t.teardown(async () => {
    await gw.close()
    await worker.abort()
  })
  // Only the status call's own timeout can settle the probe (the thread never answers), and whenever it fires the
  // verdict is the same: no wall-clock bound here, settling at all is the point.
  const r = await readyz(gw)
  t.equal(r.status, 503, 'not ready')
  t.match(r.body, { status: 'not ready', checks: { audit: { ok: false, detail: /^PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE: / } } }, 'the check says the thread did not answer')
  // A scrape gives up on the thread the same way, and answers.
  const m = await scrape(gw)
  t.match(m, /^pixgw_client_connections 0$/m, 'a scrape still answers')
  t.same(auditFamilies(m), AUDIT_FAMILIES, 'with every audit family')
})

// Audit rows for real traffic through the proxy, checked against the simulator's accepted-message log.
import t from 'tap'
import { join } from 'node:path'
import { request } from 'undici'
import { startLocalStack, PROXY_ISPB } from '../../tools/demo/stack.ts'
import type { LocalStack } from '../../tools/demo/stack.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { createEntryRequest, pacs008, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { scratchDir } from '../helpers/scratch.ts'

const scratch = scratchDir()

let stack: LocalStack
let lake: string
t.before(async () => {
  const dir = scratch.dir
  lake = join(dir, 'audit', 'lake')
  stack = await startLocalStack({ dir, longPollMs: 300 })
})
t.teardown(async () => {
  await stack?.close()
  await scratch.remove() // only after the stack stopped writing there
})

async function rows (sql: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(lake, sql)) out.push(r)
  return out
}

async function waitForRows (n: number): Promise<void> {
  // The bound only ends a failing test: replay, shipping and DuckDB on a loaded 2-core machine took seconds.
  const deadline = Date.now() + 90_000
  while (Date.now() < deadline) {
    const [r] = await rows('SELECT count(*) AS n FROM audit')
    if ((r?.n as number) >= n) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`fewer than ${n} audit rows after 90 s`)
}

async function post (path: string, xml: string): Promise<number> {
  const r = await request(stack.proxyUrl + path, { method: 'POST', headers: { 'content-type': 'application/xml' }, body: xml })
  await r.body.dump()
  return r.statusCode
}

t.test('every call to BACEN has one audit row, with the signed request, the answer and the verdict', async (t) => {
  const entries = Array.from({ length: 5 }, () => createEntryRequest())
  const payments = Array.from({ length: 5 }, () => pacs008({ amounts: [12.34, 5] }))
  for (const e of entries) t.equal(await post('/api/v2/entries/', e.xml), 201)
  for (const p of payments) t.equal(await post(`/api/v1/in/${PROXY_ISPB}/msgs`, p.xml), 201)
  await waitForRows(10)

  const all = await rows('SELECT * FROM audit ORDER BY request_date')
  t.equal(all.length, 10, 'one row per call, no duplicates')
  t.equal(new Set(all.map((r) => r.id)).size, 10)
  for (const e of entries) {
    const r = all.find((x) => x.dict_request_id === e.requestId)
    t.ok(r, `DICT row for RequestId ${e.requestId}`)
    t.equal(r?.system, 'dict')
    t.equal(r?.message_type, 'CreateEntryRequest')
    t.equal(r?.dict_key, e.key)
    t.equal(r?.request_method, 'POST')
    t.equal(r?.request_path, '/api/v2/entries/')
    t.match(r?.request_body as string, /<ds:Signature /, 'the request as sent: signed')
    t.equal(r?.response_status_code, 201)
    t.match(r?.response_body as string, /<CreateEntryResponse>/)
    t.equal(r?.response_signature_valid, true)
    t.equal(r?.response_signature_code, 'VALID')
    t.equal(r?.error_code, null)
    t.ok((r?.total_latency_ms as number) >= (r?.upstream_latency_ms as number), 'total latency covers the upstream call')
  }
  for (const p of payments) {
    const r = all.find((x) => x.biz_msg_id === p.msgId)
    t.ok(r, `SPI row for BizMsgIdr ${p.msgId}`)
    t.equal(r?.message_type, 'pacs.008.spi.1.13')
    t.equal(r?.end_to_end_ids, p.endToEndIds.join(','))
    t.equal(r?.response_status_code, 201)
    t.equal(r?.response_signature_code, 'NOT_APPLICABLE')
    t.equal(r?.response_signature_valid, null)
  }
  // Ground truth: every message the simulator accepted from this participant has its audit row.
  const accepted = stack.simulator.app.simulator.log.filter((m) => m.ispb === PROXY_ISPB)
  for (const m of accepted) {
    const hit = m.system === 'dict'
      ? all.some((r) => r.dict_request_id === m.requestId)
      : all.some((r) => String(r.biz_msg_id).split(',').includes(m.bizMsgIdr as string))
    t.ok(hit, `accepted ${m.system} message ${m.requestId ?? m.bizMsgIdr ?? ''} is audited`)
  }
  // The latency auditing adds is measured per call: one begin and one end wait each, durable before going on.
  const metrics = await (await request(stack.proxyUrl + '/metrics')).body.text()
  const count = (half: string): number => Number(new RegExp(`pixproxy_audit_wait_seconds_count\\{half="${half}"\\} (\\d+)`).exec(metrics)?.[1] ?? -1)
  t.equal(count('begin'), 10, 'pixproxy_audit_wait_seconds counts every begin')
  t.equal(count('end'), 10, 'and every end')
  // The Hive layout the S3 prefixes use: partitions derived from request_date, zero-padded.
  const [p] = await rows('SELECT year, month, day, hour, request_date FROM audit LIMIT 1')
  const d = new Date(p?.request_date as string)
  t.same([p?.year, p?.month, p?.day, p?.hour], [String(d.getUTCFullYear()), String(d.getUTCMonth() + 1).padStart(2, '0'), String(d.getUTCDate()).padStart(2, '0'), String(d.getUTCHours()).padStart(2, '0')])
})

t.test('a call that failed is audited with its error code and no response', async (t) => {
  const before = (await rows('SELECT count(*) AS n FROM audit'))[0]?.n as number
  stack.simulator.app.simulator.setFaults({ dropRate: 1, routes: ['/api/v2/entries/'] })
  t.teardown(() => { stack.simulator.app.simulator.setFaults({}) })
  const e = createEntryRequest()
  t.equal(await post('/api/v2/entries/', e.xml), 502)
  await waitForRows(before + 1)
  const [r] = await rows(`SELECT * FROM audit WHERE dict_request_id = '${e.requestId}'`)
  t.equal(r?.response_status_code, null)
  t.equal(r?.error_code, 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', 'BACEN read it and dropped the connection: the core was told the outcome is unknown')
  t.match(r?.request_body as string, /<ds:Signature /, 'the signed request is kept even though no answer came')
})

t.test('input refused before BACEN leaves no audit row (nothing was sent)', async (t) => {
  const before = (await rows('SELECT count(*) AS n FROM audit'))[0]?.n as number
  t.equal(await post('/api/v2/entries/', '<!DOCTYPE x><x/>'), 400)
  // A barrier instead of a sleep: a request sent after it is audited, and rows ship in the order they finish, so
  // once its row is in, a row of the refused request would be too.
  // (A fresh account: BACEN, and the simulator, allow 5 keys per account, and the first test used 5.)
  const after = createEntryRequest({ owner: { ...SAMPLE_PAYER, account: '700000001' } })
  t.equal(await post('/api/v2/entries/', after.xml), 201)
  const deadline = Date.now() + 30_000
  while ((await rows(`SELECT id FROM audit WHERE dict_request_id = '${after.requestId}'`)).length === 0) {
    if (Date.now() > deadline) throw new Error('the later request\'s audit row never came')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.equal((await rows('SELECT count(*) AS n FROM audit'))[0]?.n, before + 1, 'only the later request\'s row')
})

// Last: it leaves this stack's proxy without an audit trail.
t.test('if the audit thread dies, every request is refused (503, nothing sent to BACEN) and readiness fails', async (t) => {
  const worker = stack.proxy.audit.worker
  if (worker === null) throw new Error('auditing is on in the local stack')
  const heard: string[] = []
  stack.proxy.audit.onFailure((err) => { heard.push(err.code) })
  const sentBefore = stack.simulator.app.simulator.log.length
  await worker.abort()
  t.same(heard, ['PIXPROXY_ERR_AUDIT_WORKER_FAILED'], 'the server is told (it shuts down: src/server.ts)')
  const e = createEntryRequest()
  const r = await request(stack.proxyUrl + '/api/v2/entries/', { method: 'POST', headers: { 'content-type': 'application/xml' }, body: e.xml })
  const problem = await r.body.json() as { code?: string, status?: number }
  t.equal(r.statusCode, 503)
  t.equal(problem.code, 'PIXPROXY_ERR_AUDIT_WORKER_FAILED', 'problem JSON with the stable code')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(stack.simulator.app.simulator.log.length, sentBefore, 'nothing reached BACEN')
  const ready = await request(stack.proxyUrl + '/readyz')
  const body = await ready.body.json() as { checks?: { audit?: { ok: boolean, detail: string } } }
  t.equal(ready.statusCode, 503)
  t.equal(body.checks?.audit?.ok, false)
  t.match(body.checks?.audit?.detail, /AUDIT_WORKER_FAILED/)
  const metrics = await (await request(stack.proxyUrl + '/metrics')).body.text()
  t.match(metrics, /^pixproxy_audit_worker_up 0$/m, 'the metric says so')
})

// The audit trail through Kinesis Data Firehose (the production sink), inside the running proxy, against the local
// AWS endpoint with the real SDK client: partial batch failures, an outage then recovery, an oversize record.
import t from 'tap'
import { join } from 'node:path'
import { request } from 'undici'
import { startLocalStack } from '../../tools/demo/stack.ts'
import type { LocalStack } from '../../tools/demo/stack.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import type { LocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { decodeAuditBody } from '../../src/audit/pipeline.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { createEntryRequest, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { scratchDir } from '../helpers/scratch.ts'
import { waitFor } from '../helpers/wait.ts'
import type { AuditStatus } from '../../src/audit/service.ts'

const scratch = scratchDir()

const DICT_STREAM = 'pix-proxy-audit-dict'
let aws: LocalAwsEndpoint
let stack: LocalStack
let dataDir: string

t.before(async () => {
  const dir = scratch.dir
  dataDir = join(dir, 'aws')
  aws = await startLocalAwsEndpoint({ port: 0, dataDir })
  Object.assign(process.env, { AWS_ENDPOINT_URL: aws.url, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: 'AKIDLOCAL', AWS_SECRET_ACCESS_KEY: 'local' })
  stack = await startLocalStack({ dir, settings: { PIXPROXY_AUDIT_SINK: 'firehose', PIXPROXY_AUDIT_FLUSH_MS: '100' } })
})
t.teardown(async () => {
  await stack?.close()
  await scratch.remove()
  await aws?.close()
})

function deliveredRows (): Array<Record<string, unknown>> {
  return aws.delivered(DICT_STREAM).map((r) => JSON.parse(r.data.toString('utf8')) as Record<string, unknown>)
}

async function auditStatus (): Promise<AuditStatus> {
  return await (stack.proxy.audit.status() ?? Promise.reject(new Error('auditing is off')))
}

async function until (what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (ok()) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function createEntries (n: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    // A fresh account each time: BACEN (and the simulator) allow 5 keys per account of a natural person.
    const e = createEntryRequest({ owner: { ...SAMPLE_PAYER, account: String(100_000_000 + Math.floor(Math.random() * 899_999_999)) } })
    const r = await request(`${stack.proxyUrl}/api/v2/entries/`, { method: 'POST', headers: { 'content-type': 'application/xml' }, body: e.xml })
    await r.body.dump()
    if (r.statusCode === 201) ids.push(e.requestId)
  }
  return ids
}

const deliveredIds = (): Set<unknown> => new Set(deliveredRows().map((r) => r.dict_request_id))

t.test('rows reach Firehose as JSON lines in the S3 layout, queryable like the local store', async (t) => {
  const ids = await createEntries(5)
  t.equal(ids.length, 5)
  await until('5 rows', () => ids.every((id) => deliveredIds().has(id)))
  const row = deliveredRows().find((r) => r.dict_request_id === ids[0])
  t.equal(row?.system, 'dict')
  t.equal(row?.response_status_code, 201)
  t.equal(row?.response_signature_code, 'VALID')
  t.match(aws.delivered(DICT_STREAM)[0]?.key ?? '', /^log\/dict\/year=\d{4}\/month=\d{2}\/day=\d{2}\/hour=\d{2}\//)
  const counted: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(dataDir, 'SELECT count(DISTINCT id) AS n FROM audit')) counted.push(r)
  t.ok((counted[0]?.n as number) >= 5, 'the DuckDB view reads what Firehose delivered')
})

t.test('partial batch failure: only the failed records are sent again, none lost', async (t) => {
  const before = (await auditStatus()).pipeline.retriedRows
  aws.failRecords({ stream: DICT_STREAM, indexes: [0, 2], times: 1 })
  const ids = await createEntries(6)
  t.equal(ids.length, 6)
  await until('6 rows after the partial failure', () => ids.every((id) => deliveredIds().has(id)))
  t.ok((await auditStatus()).pipeline.retriedRows > before, 'the pipeline retried rows')
  const counts = new Map<unknown, number>()
  for (const r of deliveredRows()) counts.set(r.dict_request_id, (counts.get(r.dict_request_id) ?? 0) + 1)
  t.ok(ids.every((id) => counts.get(id) === 1), 'each row delivered exactly once (failed records were not accepted the first time)')
})

t.test('Firehose outage: requests keep flowing, rows wait in the spool, and drain when it returns', async (t) => {
  const failedBefore = (await auditStatus()).pipeline.failedCalls
  await aws.outage('503')
  const ids = await createEntries(5)
  t.equal(ids.length, 5, 'callers are served during the outage')
  // Instead of a sleep: the pipeline has tried to ship during the outage and failed.
  t.ok(await waitFor(async () => (await auditStatus()).pipeline.failedCalls > failedBefore, 30_000), 'the pipeline tried and failed')
  t.ok(ids.every((id) => !deliveredIds().has(id)), 'nothing delivered during the outage')
  t.ok((await auditStatus()).spool.pendingRows >= 5, 'the rows are pending in the spool')
  await aws.restore()
  // Backoff may have grown during the outage; the cap is 30 s.
  await until('drain after recovery', () => ids.every((id) => deliveredIds().has(id)), 40_000)
  // The endpoint records rows before it answers; the spool drops them once the audit thread has read that answer.
  t.ok(await waitFor(async () => (await auditStatus()).spool.pendingRows === 0), 'the spool drained')
})

t.test('a record over Firehose\'s 1,000 KiB limit is delivered compressed, not dropped', async (t) => {
  const e = createEntryRequest({ owner: { ...SAMPLE_PAYER, account: '555555555' } })
  // ~1.4 MB of comment inside the signed request: c14n drops comments, the request still verifies, the row is big.
  const big = e.xml.replace('<Reason>', `<!-- ${'x'.repeat(1_400_000)} --><Reason>`)
  const r = await request(`${stack.proxyUrl}/api/v2/entries/`, { method: 'POST', headers: { 'content-type': 'application/xml' }, body: big })
  await r.body.dump()
  t.equal(r.statusCode, 201)
  await until('the oversize row', () => deliveredIds().has(e.requestId))
  const row = deliveredRows().find((x) => x.dict_request_id === e.requestId)
  t.match(row?.request_body, /^gzip\+base64:/, 'the body was compressed to fit the record limit')
  t.match(decodeAuditBody(row?.request_body as string) ?? '', /x{1000}/, 'and decodes to the body as sent')
})

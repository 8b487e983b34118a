import t from 'tap'
import type { Test } from 'tap'
import { FirehoseClient, PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import { DuckDBInstance } from '@duckdb/node-api'
import { mockClient } from 'aws-sdk-client-mock'
import { createFirehoseClient } from '../../src/aws/firehose-client.ts'
import type { AwsClientOptions } from '../../src/aws/config.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import type { LocalAwsEndpoint, LocalAwsEndpointOptions } from '../../tools/aws-local/endpoint.ts'
import { encodeAuditRecord, FIREHOSE_MAX_RECORD_BYTES, FirehoseSink } from '../../src/audit/firehose.ts'
import { AUDIT_COLUMNS } from '../../src/audit/schema.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { sampleRow } from './fixtures/rows.ts'
import { rejection } from '../helpers/rejection.ts'

const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
const STREAMS = { spi: 'pix-proxy-audit-spi', dict: 'pix-proxy-audit-dict' }

interface Setup { ep: LocalAwsEndpoint, sink: FirehoseSink, opts: AwsClientOptions }

async function setup (t: Test, epOpts: LocalAwsEndpointOptions = {}, client: Partial<AwsClientOptions> = {}): Promise<Setup> {
  const ep = await startLocalAwsEndpoint({ credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey }, ...epOpts })
  t.teardown(() => ep.close())
  const opts: AwsClientOptions = { endpoint: ep.url, region: 'sa-east-1', credentials: CREDS, ...client }
  const sink = new FirehoseSink({ client: createFirehoseClient(opts), streams: STREAMS })
  t.teardown(() => sink.close())
  return { ep, sink, opts }
}

const deliveredIds = (ep: LocalAwsEndpoint, stream: string): string[] =>
  ep.delivered(stream).map((r) => (JSON.parse(r.data.toString('utf8')) as AuditRow).id)
const putCalls = (ep: LocalAwsEndpoint): number => ep.calls.filter((c) => c.target === 'Firehose_20150804.PutRecordBatch').length

t.test('limits the pipeline batches by', async (t) => {
  const sink = new FirehoseSink({ client: new FirehoseClient({ region: 'us-east-1' }), streams: STREAMS })
  t.teardown(() => sink.close())
  t.equal(sink.name, 'firehose')
  t.equal(sink.maxBatchRows, 500)
  t.ok(sink.maxRowBytes < 1_024_000 && sink.maxRowBytes > 1_000_000, 'just under 1,000 KiB')
  t.ok(sink.maxBatchBytes * 4 / 3 < 4 * 1024 * 1024, 'a full batch, base64-encoded, fits a 4 MiB call')
})

t.test('a record is the row as JSON in schema column order, one line', async (t) => {
  const r = sampleRow(3, { request_body: 'línea "1"\nlínea 2' })
  const rec = encodeAuditRecord({ ...r, extra: 'dropped' } as unknown as AuditRow)
  const text = rec.toString('utf8')
  t.ok(text.endsWith('\n'))
  t.equal(text.indexOf('\n'), text.length - 1, 'newlines inside values are escaped')
  const parsed = JSON.parse(text) as Record<string, unknown>
  t.same(Object.keys(parsed), AUDIT_COLUMNS.map((c) => c.name))
  t.same(parsed, r)
  const { biz_msg_id: _omitted, ...missing } = r
  t.equal((JSON.parse(encodeAuditRecord(missing as AuditRow).toString()) as Record<string, unknown>).biz_msg_id, null, 'absent is null')
})

t.test('a mixed batch goes in one call per delivery stream and every row is delivered', async (t) => {
  const { ep, sink } = await setup(t)
  const rows = Array.from({ length: 7 }, (_v, i) => sampleRow(i))
  const res = await sink.write(rows)
  t.same(res, { failed: [] })
  t.equal(putCalls(ep), 2)
  t.same(deliveredIds(ep, STREAMS.spi), [0, 2, 4, 6].map((i) => rows[i]?.id))
  t.same(deliveredIds(ep, STREAMS.dict), [1, 3, 5].map((i) => rows[i]?.id))
  t.same(JSON.parse(ep.delivered(STREAMS.dict)[0]?.data.toString() ?? ''), rows[1], 'the row round-trips')
  t.same(await sink.write([]), { failed: [] })
  t.equal(putCalls(ep), 2, 'an empty batch makes no call')
})

t.test('partial failures map back to the batch indexes; retrying them delivers each row once', async (t) => {
  const { ep, sink } = await setup(t)
  const rows = Array.from({ length: 6 }, (_v, i) => sampleRow(i)) // spi: 0 2 4, dict: 1 3 5
  ep.failRecords({ stream: STREAMS.spi, indexes: [1], times: 1 }) // the 2nd spi record: row 2
  ep.failRecords({ stream: STREAMS.dict, indexes: [0, 2], times: 1 }) // rows 1 and 5
  const res = await sink.write(rows)
  t.same(res.failed, [1, 2, 5])
  const retry = await sink.write(res.failed.map((i: number) => rows[i] as AuditRow))
  t.same(retry.failed, [])
  const all = [...deliveredIds(ep, STREAMS.spi), ...deliveredIds(ep, STREAMS.dict)].sort()
  t.same(all, rows.map((r) => r.id).sort(), 'every row exactly once')
})

t.test('a whole call throttled throws after exactly one attempt per stream', async (t) => {
  const { ep, sink } = await setup(t)
  ep.failCalls({ target: 'Firehose_20150804.PutRecordBatch', errorType: 'ThrottlingException' })
  const e = await rejection(sink.write([sampleRow(0), sampleRow(1)]))
  t.equal(e.code, 'PIXPROXY_ERR_AWS_FIREHOSE_PUT')
  t.match(e.message, /ThrottlingException \(HTTP 400\)/)
  t.equal((e.cause as Error).name, 'ThrottlingException')
  t.equal(putCalls(ep), 2, 'no SDK retries underneath the pipeline')
  ep.clearFaults()
  ep.failCalls({ errorType: 'ServiceUnavailableException' })
  t.match((await rejection(sink.write([sampleRow(0)]))).message, /ServiceUnavailableException \(HTTP 503\)/)
})

t.test('one stream failing whole while the other accepts: its rows are failed, no throw', async (t) => {
  const { ep, sink } = await setup(t)
  ep.failCalls({ stream: STREAMS.dict, errorType: 'ThrottlingException', times: 1 })
  const res = await sink.write([sampleRow(0), sampleRow(1), sampleRow(2), sampleRow(3)])
  t.same(res.failed, [1, 3])
  t.same(deliveredIds(ep, STREAMS.spi), [sampleRow(0).id, sampleRow(2).id])
})

t.test('every record refused individually: all failed, reported rather than thrown (the call worked)', async (t) => {
  const { ep, sink } = await setup(t)
  ep.failRecords({ probability: 1, times: 1 })
  t.same(await sink.write([sampleRow(0), sampleRow(2)]), { failed: [0, 1] })
})

t.test('outage: connection refused throws; after recovery the same rows go through', async (t) => {
  const { ep, sink } = await setup(t)
  await sink.write([sampleRow(0)])
  await ep.outage('refuse')
  const e = await rejection(sink.write([sampleRow(2), sampleRow(3)]))
  t.equal(e.code, 'PIXPROXY_ERR_AWS_FIREHOSE_PUT')
  t.match((e.cause as { code?: string }).code, /ECONNREFUSED|ECONNRESET/)
  await ep.restore()
  t.same(await sink.write([sampleRow(2), sampleRow(3)]), { failed: [] })
  t.same(deliveredIds(ep, STREAMS.spi), [sampleRow(0).id, sampleRow(2).id])
  t.same(deliveredIds(ep, STREAMS.dict), [sampleRow(3).id])
})

t.test('a hung Firehose is bounded by the client timeout', async (t) => {
  const { ep, sink } = await setup(t, {}, { requestTimeoutMs: 300 })
  await ep.outage('hang')
  // The endpoint never answers, so only a timeout can end the write: its settling at all proves the bound, and the
  // SDK's message names which timeout fired (the configured 300 ms, not the 10 s default). No wall-clock assert:
  // how fast a loaded machine fires a timer is not the behaviour under test.
  const e = await rejection(sink.write([sampleRow(0)]))
  t.equal(e.code, 'PIXPROXY_ERR_AWS_FIREHOSE_PUT')
  t.equal((e.cause as Error).name, 'TimeoutError')
  t.match((e.cause as Error).message, /\b300 ms\b/, 'the configured 300 ms timeout')
  await ep.restore()
})

t.test('oversize rows are reported as failed, never sent or dropped; the rest ships', async (t) => {
  const { ep, sink } = await setup(t)
  const base = encodeAuditRecord(sampleRow(1, { request_body: '' })).length
  const atLimit = sampleRow(1, { request_body: 'x'.repeat(FIREHOSE_MAX_RECORD_BYTES - base) })
  t.equal(encodeAuditRecord(atLimit).length, FIREHOSE_MAX_RECORD_BYTES)
  const over = sampleRow(2, { request_body: 'x'.repeat(FIREHOSE_MAX_RECORD_BYTES) })
  const res = await sink.write([sampleRow(0), atLimit, over, sampleRow(3)])
  t.same(res.failed, [2])
  t.same(deliveredIds(ep, STREAMS.spi), [sampleRow(0).id])
  t.same(deliveredIds(ep, STREAMS.dict), [atLimit.id, sampleRow(3).id], 'a record of exactly 1,000 KiB is accepted')
  const e = await rejection(sink.write([over]))
  t.equal(e.code, 'PIXPROXY_ERR_AWS_FIREHOSE_ROW_TOO_LARGE', 'nothing sendable: a coded error the pipeline can tell apart')
  t.match(e.message, `${encodeAuditRecord(over).length} bytes`)
})

t.test('a row whose JSON is exactly maxRowBytes (the pipeline\'s measure) is accepted, even with columns absent', async (t) => {
  const { ep, sink } = await setup(t)
  const { biz_msg_id: _a, dict_key: _b, end_to_end_ids: _c, ...partial } = sampleRow(0, { request_body: '' })
  const pad = sink.maxRowBytes - Buffer.byteLength(JSON.stringify(partial))
  const r = { ...partial, request_body: 'z'.repeat(pad) } as AuditRow
  t.equal(Buffer.byteLength(JSON.stringify(r)), sink.maxRowBytes)
  t.same(await sink.write([r]), { failed: [] })
  t.equal(ep.delivered(STREAMS.spi).length, 1)
})

t.test('large batches are split: at most 500 records and 4 MiB per call', async (t) => {
  const { ep, sink } = await setup(t)
  const many = Array.from({ length: 1201 }, (_v, i) => sampleRow(i, { system: 'spi' }))
  t.same(await sink.write(many), { failed: [] })
  t.equal(putCalls(ep), 3, '500 + 500 + 201')
  t.equal(ep.delivered(STREAMS.spi).length, 1201)

  // 600 KB records are 800 KB in base64: five fit under 4 MiB, the sixth would not.
  const big = Array.from({ length: 12 }, (_v, i) => sampleRow(10_000 + i, { system: 'dict', request_body: 'y'.repeat(600_000) }))
  t.same(await sink.write(big), { failed: [] })
  t.equal(putCalls(ep), 6, '5 + 5 + 2')
  t.equal(ep.calls.filter((c) => c.errorType !== null).length, 0, 'no call refused as too large')
  t.same(deliveredIds(ep, STREAMS.dict).sort(), big.map((r) => r.id).sort(), 'all delivered (calls run concurrently: no order across calls)')
})

t.test('delivered rows land under the S3 layout and DuckDB reads them with their columns', async (t) => {
  const dataDir = t.testdir()
  const { sink } = await setup(t, { dataDir, now: () => new Date('2026-05-06T07:30:00Z') })
  const rows = [sampleRow(0), sampleRow(1, { response_status_code: null, response_signature_valid: null, error_code: 'PIXPROXY_ERR_UPSTREAM_TIMEOUT' }), sampleRow(2)]
  t.same(await sink.write(rows), { failed: [] })
  const db = await DuckDBInstance.create(':memory:')
  const conn = await db.connect()
  t.teardown(() => { conn.closeSync(); db.closeSync() })
  const reader = await conn.runAndReadAll(`SELECT id, system, response_status_code, response_signature_valid, error_code, total_latency_ms, month, hour
    FROM read_json('${dataDir}/log/*/*/*/*/*/*.json', format = 'newline_delimited', hive_partitioning = true, hive_types_autocast = false)
    ORDER BY id`)
  t.same(reader.getRowObjectsJson(), [
    { id: rows[0]?.id, system: 'spi', response_status_code: 201, response_signature_valid: true, error_code: null, total_latency_ms: 15.25, month: '05', hour: '07' },
    { id: rows[1]?.id, system: 'dict', response_status_code: null, response_signature_valid: null, error_code: 'PIXPROXY_ERR_UPSTREAM_TIMEOUT', total_latency_ms: 15.25, month: '05', hour: '07' },
    { id: rows[2]?.id, system: 'spi', response_status_code: 201, response_signature_valid: true, error_code: null, total_latency_ms: 15.25, month: '05', hour: '07' }
  ])
})

t.test('close waits for the call in flight, then refuses writes', async (t) => {
  const { ep, sink } = await setup(t)
  ep.addLatency({ ms: 200, times: 1 })
  const order: string[] = []
  const pending = sink.write([sampleRow(0)]).finally(() => { order.push('write') })
  // close() right away: the write is in flight (200 ms at the endpoint), whatever the machine's speed.
  await sink.close()
  order.push('close')
  t.same(order, ['write', 'close'], 'close returned only after the write in flight')
  t.same(await pending, { failed: [] }, 'the write in flight finished')
  t.equal(ep.delivered(STREAMS.spi).length, 1)
  t.equal((await rejection(sink.write([sampleRow(2)]))).code, 'PIXPROXY_ERR_AWS_FIREHOSE_SINK_CLOSED')
})

// Answers the endpoint (a faithful Firehose) never gives, but a sink must not trust blindly.
t.test('unit: a response that is not one RequestResponse per record fails its rows', async (t) => {
  const client = new FirehoseClient({ region: 'us-east-1', credentials: CREDS })
  const mock = mockClient(client)
  t.teardown(() => mock.restore())
  const sink = new FirehoseSink({ client, streams: STREAMS })
  mock.on(PutRecordBatchCommand, { DeliveryStreamName: STREAMS.spi }).resolves({ FailedPutCount: 0, RequestResponses: [{ RecordId: 'only-one' }] })
  mock.on(PutRecordBatchCommand, { DeliveryStreamName: STREAMS.dict }).resolves({ FailedPutCount: 0, RequestResponses: [{ RecordId: 'a' }, {}] })
  const res = await sink.write([sampleRow(0), sampleRow(2), sampleRow(1), sampleRow(3)])
  t.same(res.failed, [0, 1, 3], 'spi: short answer, both rows failed; dict: an entry with neither RecordId nor ErrorCode')
  t.equal(mock.commandCalls(PutRecordBatchCommand).length, 2)
  await sink.close()
})

// ParquetSink: real DuckDB writing real Parquet files, read back by an independent DuckDB instance and by queryAudit.
import t from 'tap'
import type { Test } from 'tap'
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { DuckDBInstance } from '@duckdb/node-api'
import { DUCKDB_TYPES, invalidReason, ParquetSink, PARQUET_DEFAULT_BATCH_ROWS } from '../../src/audit/parquet.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { AUDIT_COLUMNS } from '../../src/audit/schema.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { sampleRow } from './fixtures/rows.ts'

const row = sampleRow

/** Every file under dir, relative, sorted. */
async function files (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)))
  }
  return out.sort()
}

async function collect (dir: string, sql: string): Promise<Array<Record<string, unknown>>> {
  const rows: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(dir, sql)) rows.push({ ...r })
  return rows
}

async function openSink (t: Test, dir: string, opts: { maxBatchRows?: number } = {}): Promise<ParquetSink> {
  const sink = await ParquetSink.open({ dir, ...opts })
  t.teardown(() => sink.close())
  return sink
}

/** A DuckDB of the test's own, to look at files without going through the code under test. */
async function independent (t: Test): Promise<{ rows: (sql: string) => Promise<Array<Record<string, unknown>>> }> {
  const db = await DuckDBInstance.create(':memory:')
  const conn = await db.connect()
  t.teardown(() => { conn.closeSync(); db.closeSync() })
  return { rows: async (sql) => (await conn.runAndReadAll(sql)).getRowObjectsJS() as Array<Record<string, unknown>> }
}

t.test('round trip of every column type, nulls, non-ASCII and a ~1 MB XML body', async (t) => {
  const dir = t.testdir()
  const sink = await openSink(t, dir)
  const big = '<?xml version="1.0" encoding="UTF-8"?><Envelope>' +
    '<Nm>Ação São João — 日本語 😀 "aspas" \'apóstrofo\' &amp; \\ barra</Nm>'.repeat(14_000) + '</Envelope>'
  t.ok(Buffer.byteLength(big) > 1_000_000, 'the body is over 1 MB')
  const full = row(0, {
    request_query: 'a=1&b=ç',
    request_body: big,
    biz_msg_id: 'M99999004202605060708abcdefghijk',
    end_to_end_ids: 'E1,E2',
    dict_request_id: 'b1a1e5c0-0000-4000-8000-000000000001',
    dict_key: 'chave@exemplo.com.br',
    response_body: 'réponse ✓',
    error_code: 'PIXPROXY_ERR_UPSTREAM_TIMEOUT',
    response_status_code: -2147483648,
    upstream_latency_ms: 0.001,
    total_latency_ms: 123456.789
  })
  const empty = row(1, {
    request_query: null,
    request_body: null,
    message_type: null,
    response_status_code: null,
    response_header: null,
    response_body: null,
    response_signature_valid: null,
    response_signature_code: null,
    upstream_latency_ms: null,
    total_latency_ms: null
  })
  const falsy = row(2, { response_signature_valid: false, response_status_code: 2147483647, request_body: '', upstream_latency_ms: 0 })
  const result = await sink.write([full, empty, falsy])
  t.same(result, { failed: [] })

  const back = await collect(dir, 'SELECT * EXCLUDE (year, month, day, hour) FROM audit ORDER BY id')
  t.equal(back.length, 3)
  for (const [i, original] of [full, empty, falsy].entries()) {
    const got = back[i] as Record<string, unknown>
    t.same(Object.keys(got), AUDIT_COLUMNS.map((c) => c.name), 'columns in schema order')
    for (const c of AUDIT_COLUMNS) {
      t.equal(got[c.name], (original as unknown as Record<string, unknown>)[c.name], `${original.id} ${c.name}`)
    }
  }

  // The files themselves, through a DuckDB of the test's own: the schema's types, no partition columns inside.
  const db = await independent(t)
  const described = await db.rows(`DESCRIBE SELECT * FROM read_parquet('${dir}/log/*/*/*/*/*/*.parquet', hive_partitioning = false)`)
  t.same(described.map((d) => [d.column_name, d.column_type]), AUDIT_COLUMNS.map((c) => [c.name, DUCKDB_TYPES[c.type]]))
  const raw = await db.rows(`SELECT request_body, request_date FROM read_parquet('${dir}/log/spi/*/*/*/*/*.parquet', hive_partitioning = false) WHERE id = '${full.id}'`)
  t.equal(raw[0]?.request_body, big, 'the 1 MB body is byte for byte in the file')
  t.equal((raw[0]?.request_date as Date).toISOString(), full.request_date, 'TIMESTAMP holds the UTC instant')
})

t.test('partition directories are zero-padded UTC from request_date, one file per system and hour', async (t) => {
  const dir = t.testdir()
  const sink = await openSink(t, dir)
  const rows = [
    row(0, { request_date: '2026-01-02T03:04:05.006Z' }),
    row(1, { request_date: '2026-12-31T23:59:59.999Z' }),
    // -03:00 (Brasília): 22:30 local on the 31st is 01:30 UTC on 1 January of the next year.
    row(2, { request_date: '2026-12-31T22:30:00.000-03:00' }),
    row(3, { request_date: '2026-01-02T03:59:59.999Z' }),
    row(4, { request_date: '2026-01-02T03:00:00.000Z' })
  ]
  t.same(await sink.write(rows), { failed: [] })
  const dirs = (await files(join(dir, 'log'))).map((f) => f.replace(/\/[^/]+$/, ''))
  t.same(dirs, [
    'dict/year=2026/month=01/day=02/hour=03',
    'dict/year=2026/month=12/day=31/hour=23',
    'spi/year=2026/month=01/day=02/hour=03',
    'spi/year=2027/month=01/day=01/hour=01'
  ])
  for (const f of await files(join(dir, 'log'))) t.match(f, /\/(spi|dict)-\d{8}T\d{6}Z-[0-9a-f-]{36}\.parquet$/)
  const back = await collect(dir, 'SELECT id, request_date, year, month, day, hour FROM audit ORDER BY id')
  t.same(back.map((r) => [r.request_date, `${r.year as string}-${r.month as string}-${r.day as string}T${r.hour as string}`]), [
    ['2026-01-02T03:04:05.006Z', '2026-01-02T03'],
    ['2026-12-31T23:59:59.999Z', '2026-12-31T23'],
    ['2027-01-01T01:30:00.000Z', '2027-01-01T01'],
    ['2026-01-02T03:59:59.999Z', '2026-01-02T03'],
    ['2026-01-02T03:00:00.000Z', '2026-01-02T03']
  ])
})

t.test('rows the schema cannot hold are reported by index, the rest stored', async (t) => {
  const dir = t.testdir()
  const sink = await openSink(t, dir)
  const bad = (extra: Record<string, unknown>): AuditRow => ({ ...row(9), ...extra }) as unknown as AuditRow
  const rows = [
    row(0),
    bad({ system: '../../etc' }),
    bad({ request_date: 'yesterday' }),
    bad({ request_date: '2026-05-06 07:08:09' }),
    bad({ correlation_id: null }),
    bad({ response_status_code: 2 ** 31 }),
    bad({ response_status_code: '201' }),
    bad({ response_signature_valid: 'true' }),
    row(2)
  ]
  const result = await sink.write(rows)
  t.same(result.failed, [1, 2, 3, 4, 5, 6, 7])
  t.same(rows.map((r) => invalidReason(r)), [
    null,
    'system must be spi, dict or gateway, not "../../etc"',
    'request_date "yesterday" is not an ISO-8601 timestamp with a zone',
    'request_date "2026-05-06 07:08:09" is not an ISO-8601 timestamp with a zone',
    'correlation_id is required',
    'response_status_code must be int, not number 2147483648',
    'response_status_code must be int, not string "201"',
    'response_signature_valid must be boolean, not string "true"',
    null
  ], 'each refusal says why')
  t.same((await collect(dir, 'SELECT id FROM audit ORDER BY id')).map((r) => r.id), [row(0).id, row(2).id])
  t.same((await files(dir)).filter((f) => f.includes('etc')), [], 'nothing named after the bad system')
})

t.test('a partition that cannot be written fails its rows only; nothing written at all throws', async (t) => {
  const dir = t.testdir()
  const sink = await openSink(t, dir)
  // A file where the year directory of spi rows must go: mkdir fails (ENOTDIR), as a full or broken disk would.
  await mkdir(join(dir, 'log', 'spi'), { recursive: true })
  await writeFile(join(dir, 'log', 'spi', 'year=2026'), 'in the way')
  const result = await sink.write([row(0), row(1), row(2), row(3)])
  t.same(result.failed, [0, 2], 'the spi rows failed, the dict rows were stored')
  t.same((await collect(dir, 'SELECT id FROM audit ORDER BY id')).map((r) => r.id), [row(1).id, row(3).id])

  const err = await sink.write([row(4), row(6)]).then(() => null, (e: unknown) => e)
  t.ok(err instanceof PixProxyError)
  t.equal((err as PixProxyError).code, Errors.AUDIT_PARQUET_WRITE.code)
  t.match((err as PixProxyError).message, /ENOTDIR|not a directory/i)
  t.same((await files(join(dir, 'log'))).filter((f) => f.endsWith('.tmp')), [], 'no temp file left by the failed writes')

  // The sink stays usable: a failed write leaves nothing behind in its staging table for the next one.
  t.same(await sink.write([row(5)]), { failed: [] })
  t.same((await collect(dir, 'SELECT id FROM audit ORDER BY id')).map((r) => r.id), [row(1).id, row(3).id, row(5).id])
})

t.test('crash safety: a half-written temp file next to complete ones is ignored by queries', async (t) => {
  const dir = t.testdir()
  const sink = await openSink(t, dir)
  t.same(await sink.write([row(0), row(2)]), { failed: [] })
  const [done] = await files(join(dir, 'log'))
  const complete = await readFile(join(dir, 'log', done as string))
  const partDir = join(dir, 'log', (done as string).replace(/\/[^/]+$/, ''))
  // What a crash between COPY and rename leaves: a truncated Parquet file under the temp name the sink uses.
  await writeFile(join(partDir, '.spi-20260506T070809Z-00000000-0000-4000-8000-000000000000.parquet.tmp'), complete.subarray(0, complete.length >> 1))
  const back = await collect(dir, 'SELECT count(*) AS n FROM audit')
  t.same(back, [{ n: 2 }])
  // And the complement: the same half file under a final name does break queries, so the naming is what protects.
  await writeFile(join(partDir, 'zz-broken.parquet'), complete.subarray(0, complete.length >> 1))
  await t.rejects(collect(dir, 'SELECT count(*) AS n FROM audit'), { code: Errors.AUDIT_QUERY_FAILED.code })
})

t.test('concurrent writes are serialised and all land; close waits for them, later writes throw', async (t) => {
  const dir = t.testdir()
  const sink = await ParquetSink.open({ dir })
  const writes = [0, 1, 2, 3].map(async (b) => await sink.write(Array.from({ length: 50 }, (_, i) => row(b * 50 + i))))
  await sink.close()
  for (const w of writes) t.same(await w, { failed: [] })
  await sink.close()
  await t.rejects(sink.write([row(999)]), { code: Errors.AUDIT_PARQUET_SINK_CLOSED.code })
  t.same(await collect(dir, 'SELECT count(DISTINCT id) AS n FROM audit'), [{ n: 200 }])
})

t.test('open fails with a coded error when the store cannot be created', async (t) => {
  const dir = t.testdir({ 'a-file': 'x' })
  await t.rejects(ParquetSink.open({ dir: join(dir, 'a-file') }), { code: Errors.AUDIT_STORE_OPEN.code })
})

t.test('5,000-row batches of ~5 KB rows are written whole (throughput reported, judged in bench/)', async (t) => {
  const dir = t.testdir()
  const sink = await openSink(t, dir)
  t.equal(sink.maxBatchRows, PARQUET_DEFAULT_BATCH_ROWS)
  const xml = Array.from({ length: 70 }, (_, i) => `<Amt Ccy="BRL">${i}.00</Amt><Nm>Fulano de Tal ${i}</Nm>`).join('')
  const batches = 6
  const base = Date.parse('2026-05-06T07:00:00.000Z')
  // Flat strings, as bodies decoded from buffers are.
  const data = Array.from({ length: batches }, (_, b) => Array.from({ length: PARQUET_DEFAULT_BATCH_ROWS }, (_, k) => {
    const i = b * PARQUET_DEFAULT_BATCH_ROWS + k
    return row(i, {
      request_date: new Date(base + i * 50).toISOString(),
      request_body: Buffer.from(`<Envelope n="${i}">${xml.slice(0, 3300)}</Envelope>`).toString(),
      response_body: Buffer.from(xml.slice(0, 1200)).toString()
    })
  }))
  const rowBytes = Buffer.byteLength(JSON.stringify(data[0]?.[0]))
  t.ok(rowBytes > 4500 && rowBytes < 6000, `rows are ~5 KB (${rowBytes} B)`)
  const loop = monitorEventLoopDelay({ resolution: 1 })
  loop.enable()
  const start = performance.now()
  const cpu0 = process.cpuUsage()
  for (const rows of data) t.same((await sink.write(rows)).failed, [])
  const cpu = process.cpuUsage(cpu0)
  const seconds = (performance.now() - start) / 1000
  loop.disable()
  const rowsPerSecond = Math.round(batches * PARQUET_DEFAULT_BATCH_ROWS / seconds)
  const cpuSeconds = (cpu.user + cpu.system) / 1e6
  const rowsPerCpuSecond = Math.round(batches * PARQUET_DEFAULT_BATCH_ROWS / cpuSeconds)
  const onDisk = (await Promise.all((await files(dir)).map(async (f) => (await stat(join(dir, f))).size))).reduce((a, b) => a + b, 0)
  t.comment(JSON.stringify({
    rowsPerSecond,
    rowsPerCpuSecond,
    msPerBatch: Math.round(seconds * 1000 / batches),
    rowBytes,
    eventLoopDelayMs: { p99: +(loop.percentile(99) / 1e6).toFixed(1), max: +(loop.max / 1e6).toFixed(1) },
    bytesOnDiskPerRow: Math.round(onDisk / (batches * PARQUET_DEFAULT_BATCH_ROWS))
  }))
  // No floor here: speed targets live in bench/ (bench/audit.ts --sink parquet), measured against a baseline in the
  // same run; a test that depends on the machine's speed fails on a busy one. This one proves the batches are whole.
  t.same(await collect(dir, 'SELECT count(*) AS n FROM audit'), [{ n: batches * PARQUET_DEFAULT_BATCH_ROWS }])
})

t.test('audit files are 0600 in 0700 directories, whatever the umask (they hold names, tax ids and accounts)', async (t) => {
  const dir = t.testdir()
  const old = process.umask(0)
  t.teardown(() => { process.umask(old) })
  const sink = await openSink(t, dir)
  t.same(await sink.write([row(0, { request_date: '2026-01-02T03:04:05.006Z' }), row(1, { request_date: '2026-01-02T03:04:05.006Z' })]), { failed: [] })
  const written = await files(join(dir, 'log'))
  t.ok(written.length > 0)
  for (const f of written) t.equal((await stat(join(dir, 'log', f))).mode & 0o777, 0o600, `${f}: 0600`)
  const dirs = new Set<string>(['.'])
  for (const f of written) for (let d = f.replace(/\/[^/]+$/, ''); d !== '.' && d !== ''; d = d.includes('/') ? d.replace(/\/[^/]+$/, '') : '.') dirs.add(d)
  for (const d of dirs) t.equal((await stat(join(dir, 'log', d))).mode & 0o777, 0o700, `log/${d === '.' ? '' : d}: 0700`)
})

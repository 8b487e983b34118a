// queryAudit over real files: Parquet from ParquetSink, JSON lines from the local Firehose endpoint, and the guard.
import t from 'tap'
import type { Test } from 'tap'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DuckDBInstance } from '@duckdb/node-api'
import { FirehoseSink } from '../../src/audit/firehose.ts'
import { DUCKDB_TYPES, ParquetSink } from '../../src/audit/parquet.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import type { AuditQueryOptions } from '../../tools/audit/query.ts'
import { AUDIT_COLUMNS, PARTITION_KEYS } from '../../src/audit/schema.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { createFirehoseClient } from '../../src/aws/firehose-client.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { Errors } from '../../core/errors.ts'
import { sampleRow } from './fixtures/rows.ts'

const row = sampleRow

async function collect (dir: string, sql: string, opts?: AuditQueryOptions): Promise<Array<Record<string, unknown>>> {
  const rows: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(dir, sql, opts)) rows.push({ ...r })
  return rows
}

async function store (t: Test, batches: AuditRow[][]): Promise<string> {
  const dir = t.testdir()
  const sink = await ParquetSink.open({ dir })
  t.teardown(() => sink.close())
  for (const b of batches) t.same(await sink.write(b), { failed: [] })
  return dir
}

const hourDate = (h: number, i: number): string => `2026-05-06T${String(h).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}:00.000Z`

t.test('many batches, then GROUP BY system and partition columns', async (t) => {
  const batches = Array.from({ length: 12 }, (_, b) => Array.from({ length: 100 }, (_, k) => {
    const i = b * 100 + k
    // Every third row is dict; four hours.
    return row(i, { system: i % 3 === 0 ? 'dict' : 'spi', request_date: hourDate(b % 4, i) })
  }))
  const dir = await store(t, batches)
  t.same(await collect(dir, 'SELECT system, count(*) AS n FROM audit GROUP BY system ORDER BY system'), [
    { system: 'dict', n: 400 },
    { system: 'spi', n: 800 }
  ])
  t.same(await collect(dir, 'SELECT hour, count(*) AS n FROM audit WHERE year = \'2026\' AND month = \'05\' GROUP BY ALL ORDER BY hour'), [
    { hour: '00', n: 300 }, { hour: '01', n: 300 }, { hour: '02', n: 300 }, { hour: '03', n: 300 }
  ])
})

t.test('partition pruning: a WHERE on year/month/day/hour never opens other partitions\' files', async (t) => {
  const dir = await store(t, [
    [row(0, { request_date: hourDate(1, 0) }), row(2, { request_date: hourDate(1, 1) })],
    [row(4, { request_date: hourDate(2, 0) })]
  ])
  // A file that is not Parquet at all, in a later partition: any query that opens it fails.
  const poisoned = join(dir, 'log', 'spi', 'year=2026', 'month=05', 'day=06', 'hour=09')
  await mkdir(poisoned, { recursive: true })
  await writeFile(join(poisoned, 'spi-poison.parquet'), 'not parquet')
  t.same(await collect(dir, 'SELECT count(*) AS n FROM audit WHERE year = \'2026\' AND month = \'05\' AND day = \'06\' AND hour = \'01\''), [{ n: 2 }])
  t.same(await collect(dir, 'SELECT id FROM audit WHERE hour IN (\'01\', \'02\') ORDER BY id'), [{ id: row(0).id }, { id: row(2).id }, { id: row(4).id }])
  await t.rejects(collect(dir, 'SELECT count(*) FROM audit'), { code: Errors.AUDIT_QUERY_FAILED.code }, 'without the WHERE the poisoned file is read')
  await t.rejects(collect(dir, 'SELECT count(*) FROM audit WHERE request_date < TIMESTAMP \'2026-05-06 03:00:00\''), { code: Errors.AUDIT_QUERY_FAILED.code },
    'a filter on request_date alone does not prune directories')
})

t.test('at-least-once delivery: duplicates removed with DISTINCT ON (id)', async (t) => {
  const rows = Array.from({ length: 30 }, (_, i) => row(i))
  // The pipeline retried the second half, and one row of it once more.
  const dir = await store(t, [rows, rows.slice(15), [rows[20] as AuditRow]])
  t.same(await collect(dir, 'SELECT count(*) AS n FROM audit'), [{ n: 46 }])
  t.same(await collect(dir, 'SELECT count(*) AS n FROM (SELECT DISTINCT ON (id) * FROM audit ORDER BY id, request_date)'), [{ n: 30 }])
  t.same(await collect(dir, 'SELECT id, count(*) AS copies FROM audit GROUP BY id HAVING count(*) > 2'), [{ id: rows[20]?.id, copies: 3 }])
})

t.test('rows through the local Firehose endpoint (JSON lines) and local Parquet rows are one table', async (t) => {
  const dir = t.testdir()
  const creds = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
  const ep = await startLocalAwsEndpoint({ dataDir: dir, credentials: { [creds.accessKeyId]: creds.secretAccessKey }, now: () => new Date('2026-05-06T07:30:00Z') })
  t.teardown(() => ep.close())
  const firehose = new FirehoseSink({ client: createFirehoseClient({ endpoint: ep.url, region: 'sa-east-1', credentials: creds }), streams: { spi: 'pix-proxy-audit-spi', dict: 'pix-proxy-audit-dict' } })
  t.teardown(() => firehose.close())
  const viaFirehose = [row(0, { response_status_code: null, response_signature_valid: null, request_body: 'Ação ✓' }), row(1)]
  t.same(await firehose.write(viaFirehose), { failed: [] })
  // JSON carries the timestamp as written: an offset must become the UTC instant, as in Parquet, on any machine zone.
  t.same(await firehose.write([row(5, { request_date: '2026-12-31T22:30:00.250-03:00' })]), { failed: [] })
  const parquet = await ParquetSink.open({ dir })
  t.teardown(() => parquet.close())
  const local = [row(2, { request_body: 'Ação ✓' }), row(3, { response_signature_valid: false })]
  t.same(await parquet.write(local), { failed: [] })

  const jsonFiles = (await readdir(join(dir, 'log'), { recursive: true })).filter((f) => f.endsWith('.json'))
  const parquetFiles = (await readdir(join(dir, 'log'), { recursive: true })).filter((f) => f.endsWith('.parquet'))
  t.equal(jsonFiles.length, 3, 'the endpoint wrote one JSON object per call and stream')
  t.equal(parquetFiles.length, 2)

  t.same(await collect(dir, `SELECT request_date FROM audit WHERE id = '${row(5).id}'`), [{ request_date: '2027-01-01T01:30:00.250Z' }])
  const back = await collect(dir, `SELECT * EXCLUDE (year, month, day, hour) FROM audit WHERE id <> '${row(5).id}' ORDER BY id`)
  t.same(back, [...viaFirehose, ...local].map((r) => Object.fromEntries(AUDIT_COLUMNS.map((c) => [c.name, (r as unknown as Record<string, unknown>)[c.name]]))),
    'identical values and types whichever way the row came')
  t.same(await collect(dir, 'SELECT system, count(*) AS n, count(*) FILTER (WHERE request_body = \'Ação ✓\') AS accented FROM audit GROUP BY system ORDER BY system'), [
    { system: 'dict', n: 3, accented: 0 },
    { system: 'spi', n: 2, accented: 2 }
  ])
})

t.test('DESCRIBE, SUMMARIZE, SHOW, WITH, FROM and VALUES run; the view has the schema\'s types', async (t) => {
  const dir = await store(t, [[row(0), row(1)]])
  const described = await collect(dir, 'DESCRIBE audit')
  t.same(described.map((d) => [d.column_name, d.column_type]), [
    ...AUDIT_COLUMNS.map((c) => [c.name, DUCKDB_TYPES[c.type]]),
    ...PARTITION_KEYS.map((k) => [k, 'VARCHAR'])
  ])
  t.equal((await collect(dir, 'SUMMARIZE audit')).length, AUDIT_COLUMNS.length + PARTITION_KEYS.length)
  t.same(await collect(dir, 'SHOW TABLES'), [{ name: 'audit' }, { name: 'gateway' }], 'the PIX view and the gateway\'s')
  t.same(await collect(dir, '-- comment first\nWITH x AS (SELECT id FROM audit) SELECT count(*) AS n FROM x;'), [{ n: 2 }])
  t.same(await collect(dir, 'FROM audit SELECT system ORDER BY system'), [{ system: 'dict' }, { system: 'spi' }])
  t.same(await collect(dir, 'VALUES (1, \'a\')'), [{ col0: 1, col1: 'a' }])
})

t.test('the guard refuses every statement that is not one query', async (t) => {
  const dir = await store(t, [[row(0)]])
  const outside = join(tmpdir(), `pix-proxy-audit-guard-${process.pid}.csv`)
  t.teardown(async () => { const { rm } = await import('node:fs/promises'); await rm(outside, { force: true }) })
  const forbidden: Record<string, string> = {
    COPY: `COPY (SELECT * FROM audit) TO '${outside}'`,
    'COPY FROM': `COPY audit FROM '${outside}'`,
    ATTACH: `ATTACH '${join(tmpdir(), 'x.duckdb')}' AS x`,
    DETACH: 'DETACH memory',
    INSTALL: 'INSTALL httpfs',
    LOAD: 'LOAD httpfs',
    PRAGMA: 'PRAGMA version',
    'PRAGMA set': 'PRAGMA enable_external_access = true',
    SET: 'SET enable_external_access = true',
    RESET: 'RESET allowed_directories',
    CALL: 'CALL pragma_version()',
    EXPORT: `EXPORT DATABASE '${join(tmpdir(), 'pix-proxy-audit-export')}'`,
    CREATE: 'CREATE TABLE t AS SELECT * FROM audit',
    'CREATE SECRET': 'CREATE SECRET s (TYPE s3, KEY_ID \'a\', SECRET \'b\')',
    INSERT: 'INSERT INTO audit SELECT * FROM audit',
    DELETE: 'DELETE FROM audit',
    DROP: 'DROP VIEW audit',
    EXPLAIN: 'EXPLAIN ANALYZE SELECT * FROM audit',
    'two queries': 'SELECT 1; SELECT 2',
    'query then COPY': `SELECT 1; COPY (SELECT 1) TO '${outside}'`,
    'COPY behind a comment': `/* SELECT */ COPY (SELECT 1) TO '${outside}'`,
    'lower case copy': `copy (select 1) to '${outside}'`,
    empty: '  \n ',
    'only a comment': '-- nothing'
  }
  for (const [kind, sql] of Object.entries(forbidden)) {
    await t.rejects(collect(dir, sql), { code: Errors.AUDIT_QUERY_REFUSED.code }, kind)
  }
  t.notOk(existsSync(outside), 'no COPY wrote anything')
  await t.rejects(collect(dir, 'COPY (SELECT 1) TO \'/x\''), { message: /not COPY/ }, 'the message names what was refused')
  await t.rejects(collect(dir, 'SELECT 1; SELECT 2'), { message: /one statement at a time, not 2/ })
})

t.test('a query cannot read files outside the store\'s log directory nor reach the network', async (t) => {
  const dir = await store(t, [[row(0)]])
  await writeFile(join(dir, 'secret.csv'), 'pin\n1234\n')
  const cases: Record<string, string> = {
    '/etc/passwd via read_csv': 'SELECT * FROM read_csv(\'/etc/passwd\')',
    'replacement scan of a path': 'SELECT * FROM \'/etc/passwd\'',
    'a file beside log/': `SELECT * FROM read_csv('${join(dir, 'secret.csv')}')`,
    'escape by ..': `SELECT * FROM read_text('${join(dir, 'log')}/../secret.csv')`,
    'glob of /': 'SELECT * FROM glob(\'/*\')',
    network: 'SELECT * FROM read_csv(\'https://example.com/x.csv\')'
  }
  for (const [kind, sql] of Object.entries(cases)) {
    await t.rejects(collect(dir, sql), { code: Errors.AUDIT_QUERY_FAILED.code }, kind)
  }
  // The store's own files stay readable, also directly.
  t.same(await collect(dir, `SELECT count(*) AS n FROM read_parquet('${join(dir, 'log')}/*/*/*/*/*/*.parquet')`), [{ n: 1 }])
  t.same(await collect(dir, 'SELECT current_setting(\'enable_external_access\') AS ext, current_setting(\'lock_configuration\') AS locked, current_setting(\'TimeZone\') AS tz'),
    [{ ext: false, locked: true, tz: 'UTC' }])
})

t.test('bad SQL fails with a coded error', async (t) => {
  const dir = await store(t, [[row(0)]])
  await t.rejects(collect(dir, 'SELEC * FROM audit'), { code: Errors.AUDIT_QUERY_FAILED.code, message: /syntax error/ })
  await t.rejects(collect(dir, 'SELECT no_such_column FROM audit'), { code: Errors.AUDIT_QUERY_FAILED.code, message: /no_such_column/ })
  await t.rejects(collect(dir, 'SELECT * FROM other_table'), { code: Errors.AUDIT_QUERY_FAILED.code })
  await t.rejects(collect(dir, 'SELECT 1 / 0 = error(\'boom\')'), { code: Errors.AUDIT_QUERY_FAILED.code, message: /boom/ })
})

t.test('JSON values: integers, decimals, doubles, timestamps, blobs, odd column names', async (t) => {
  const dir = await store(t, [[row(0)]])
  const [r] = await collect(dir, `SELECT
      count(*) AS n,
      9007199254740991::BIGINT AS max_safe,
      9007199254740993::BIGINT AS above_safe,
      (-9007199254740993)::HUGEINT AS below_safe,
      12.50::DECIMAL(10, 2) AS dec,
      123456789012345678.9::DECIMAL(38, 1) AS big_dec,
      'NaN'::DOUBLE AS nan,
      '-Infinity'::DOUBLE AS ninf,
      any_value(request_date) AS ts,
      TIMESTAMP '2026-05-06 07:08:09.123456' AS ts_micros,
      TIMESTAMPTZ '2026-05-06 04:08:09.5-03' AS ts_tz,
      '2026-05-06 07:08:09'::TIMESTAMP_S AS ts_s,
      '2026-05-06 07:08:09.000000789'::TIMESTAMP_NS AS ts_ns,
      DATE '2026-05-06' AS d,
      '\\x00\\xFFab'::BLOB AS b,
      [1, 2]::BIGINT[] AS list,
      {'k': 1::BIGINT} AS struct,
      1 AS "__proto__"
    FROM audit`)
  t.same(r, {
    n: 1,
    max_safe: 9007199254740991,
    above_safe: '9007199254740993',
    below_safe: '-9007199254740993',
    dec: 12.5,
    big_dec: '123456789012345678.9',
    nan: 'NaN',
    ninf: '-Infinity',
    ts: '2026-05-06T07:08:09.010Z',
    ts_micros: '2026-05-06T07:08:09.123456Z',
    ts_tz: '2026-05-06T07:08:09.500Z',
    ts_s: '2026-05-06T07:08:09.000Z',
    ts_ns: '2026-05-06T07:08:09.000Z',
    d: '2026-05-06',
    b: Buffer.from([0, 255, 0x61, 0x62]).toString('base64'),
    list: [1, 2],
    struct: { k: 1 },
    ['__proto__']: 1
  })
  for await (const raw of queryAudit(dir, 'SELECT 1 AS "__proto__", 2 AS "constructor"')) {
    t.ok(Object.hasOwn(raw, '__proto__'), 'a column named __proto__ is an own property')
    t.equal(JSON.stringify(raw), '{"__proto__":1,"constructor":2}')
  }
  t.same(await collect(dir, 'SELECT 1 AS a, 2 AS a'), [{ a: 1, 'a:1': 2 }], 'duplicate names are deduplicated, not overwritten')
})

t.test('an empty store has an empty audit view; a missing one is an error', async (t) => {
  const dir = t.testdir()
  t.same(await collect(dir, 'SELECT count(*) AS n FROM audit'), [{ n: 0 }])
  t.same((await collect(dir, 'DESCRIBE audit')).map((d) => d.column_name), [...AUDIT_COLUMNS.map((c) => c.name), ...PARTITION_KEYS])
  await t.rejects(collect(join(dir, 'nope'), 'SELECT 1'), { code: Errors.AUDIT_STORE_OPEN.code, message: /ENOENT/ })
  await writeFile(join(dir, 'file'), 'x')
  await t.rejects(collect(join(dir, 'file'), 'SELECT 1'), { code: Errors.AUDIT_STORE_OPEN.code, message: /not a directory/ })
})

t.test('stopping early closes DuckDB and removes its temporary directory', async (t) => {
  const dir = await store(t, [Array.from({ length: 5000 }, (_, i) => row(i))])
  // A temporary directory of this test's own: other test files' queries (tap runs two at once) make and remove
  // theirs in the system one. os.tmpdir() reads TMPDIR on each call.
  const saved = process.env.TMPDIR
  const own = await mkdtemp(join(tmpdir(), 'pix-proxy-query-test-'))
  process.env.TMPDIR = own
  t.teardown(async () => {
    if (saved === undefined) delete process.env.TMPDIR
    else process.env.TMPDIR = saved
    await rm(own, { recursive: true, force: true })
  })
  const spills = async (): Promise<string[]> => (await readdir(tmpdir())).filter((f) => f.startsWith('pix-proxy-audit-query-'))
  const before = await spills()
  let seen = 0
  for await (const r of queryAudit(dir, 'SELECT id FROM audit')) {
    t.type(r.id, 'string')
    if (++seen === 3) break
  }
  t.equal(seen, 3)
  t.same(before, [], 'the test starts from an empty temporary directory')
  t.same(await spills(), [], 'no temporary directory left behind')
})

t.test('files from before a column was added: refused by default, read with unionByName', async (t) => {
  const dir = await store(t, [[row(0, { request_date: hourDate(10, 0) })]])
  // An older file (sorts first) without dict_key, as a previous schema version would have written it.
  const old = join(dir, 'log', 'dict', 'year=2025', 'month=12', 'day=31', 'hour=23')
  await mkdir(old, { recursive: true })
  const db = await DuckDBInstance.create(':memory:')
  const conn = await db.connect()
  t.teardown(() => { conn.closeSync(); db.closeSync() })
  const cols = AUDIT_COLUMNS.filter((c) => c.name !== 'dict_key').map((c) => {
    const v = (row(1) as unknown as Record<string, unknown>)[c.name]
    const lit = v === null ? 'NULL' : typeof v === 'string' ? `'${v.replace(/'/g, "''")}'` : String(v)
    return `CAST(${c.name === 'request_date' ? '\'2025-12-31 23:00:00\'' : lit} AS ${DUCKDB_TYPES[c.type]}) AS ${c.name}`
  })
  await conn.run(`COPY (SELECT ${cols.join(', ')}) TO '${join(old, 'dict-old.parquet')}' (FORMAT PARQUET)`)

  await t.rejects(collect(dir, 'SELECT id, dict_key FROM audit'), { code: Errors.AUDIT_QUERY_FAILED.code })
  t.same(await collect(dir, 'SELECT id, dict_key FROM audit ORDER BY id', { unionByName: true }), [
    { id: row(0).id, dict_key: null },
    { id: row(1).id, dict_key: null }
  ])
})

t.test('rows from before trace_id: an old Parquet file (with unionByName) and old JSON lines read it as null', async (t) => {
  const dir = await store(t, [[row(0, { request_date: hourDate(10, 0) })]])
  const oldDir = join(dir, 'log', 'spi', 'year=2025', 'month=12', 'day=31', 'hour=23')
  await mkdir(oldDir, { recursive: true })
  const db = await DuckDBInstance.create(':memory:')
  const conn = await db.connect()
  t.teardown(() => { conn.closeSync(); db.closeSync() })
  const old = row(2) as unknown as Record<string, unknown>
  const cols = AUDIT_COLUMNS.filter((c) => c.name !== 'trace_id').map((c) => {
    const v = old[c.name]
    const lit = v === null ? 'NULL' : typeof v === 'string' ? `'${v.replace(/'/g, "''")}'` : String(v)
    return `CAST(${c.name === 'request_date' ? '\'2025-12-31 23:00:00\'' : lit} AS ${DUCKDB_TYPES[c.type]}) AS ${c.name}`
  })
  await conn.run(`COPY (SELECT ${cols.join(', ')}) TO '${join(oldDir, 'spi-old.parquet')}' (FORMAT PARQUET)`)
  // A JSON line the local Firehose endpoint wrote before the upgrade: no trace_id key.
  const jsonDir = join(dir, 'log', 'dict', 'year=2026', 'month=05', 'day=06', 'hour=10')
  await mkdir(jsonDir, { recursive: true })
  const oldJson = { ...row(1, { request_date: hourDate(10, 1) }) } as Record<string, unknown>
  delete oldJson.trace_id
  await writeFile(join(jsonDir, 'dict-old.json'), JSON.stringify(oldJson) + '\n')

  t.same(await collect(dir, 'SELECT id, trace_id FROM audit ORDER BY id', { unionByName: true }), [
    { id: row(0).id, trace_id: row(0).trace_id },
    { id: row(1).id, trace_id: null },
    { id: row(2).id, trace_id: null }
  ])
  t.match(row(0).trace_id, /^[0-9a-f]{32}$/, 'the new row keeps its trace id')
})

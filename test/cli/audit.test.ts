// `pix-proxy audit query`, driven in-process with captured stdout over a real store.
import t from 'tap'
import type { Test } from 'tap'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { ParquetSink } from '../../src/audit/parquet.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { auditCommand, defaultAuditDir, DEMO_DIR } from '../../tools/cli/audit.ts'
import { main } from '../../tools/cli/main.ts'
import { ConfigSchema } from '../../src/config.ts'
import { Errors } from '../../core/errors.ts'
import { rejection } from '../helpers/rejection.ts'
import { captureIo } from '../helpers/cli-io.ts'

function row (i: number): AuditRow {
  return {
    id: `0190f1d2-0000-7000-8000-${String(i).padStart(12, '0')}`,
    request_date: `2026-05-06T07:${String(i % 60).padStart(2, '0')}:09.010Z`,
    system: i % 2 === 0 ? 'spi' : 'dict',
    request_method: 'POST',
    request_path: '/api/v1/in/99999004/msgs',
    request_query: null,
    request_header: '{}',
    request_body: `<Envelope n="${i}">Ação</Envelope>`,
    message_type: null,
    biz_msg_id: null,
    end_to_end_ids: null,
    dict_request_id: null,
    dict_key: null,
    response_status_code: i % 5 === 0 ? null : 201,
    response_header: null,
    response_body: null,
    response_signature_valid: null,
    response_signature_code: null,
    error_code: i % 5 === 0 ? 'PIXPROXY_ERR_UPSTREAM_TIMEOUT' : null,
    upstream_latency_ms: null,
    total_latency_ms: 3.5,
    correlation_id: `req-${i}`,
    instance_id: 'task-1',
    trace_id: i % 3 === 0 ? null : `4bf92f3577b34da6a3ce929d${String(i).padStart(8, '0')}`
  }
}

interface Run { code: number, stdout: string }

async function run (args: string[], env: NodeJS.ProcessEnv = {}, stdout = new PassThrough()): Promise<Run> {
  const chunks: Buffer[] = []
  stdout.on('data', (c: Buffer) => chunks.push(c))
  const code = await auditCommand(args, { stdout, env })
  return { code, stdout: Buffer.concat(chunks).toString() }
}

async function store (t: Test, n: number): Promise<string> {
  const dir = t.testdir()
  const sink = await ParquetSink.open({ dir })
  await sink.write(Array.from({ length: n }, (_, i) => row(i)))
  await sink.close()
  return dir
}

t.test('prints one JSON object per row and exits 0', async (t) => {
  const dir = await store(t, 10)
  const r = await run(['query', 'SELECT id, system, request_date, response_status_code, request_body, hour FROM audit ORDER BY id LIMIT 3', '--dir', dir])
  t.equal(r.code, 0)
  t.ok(r.stdout.endsWith('\n'))
  const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  t.same(lines, [0, 1, 2].map((i) => ({
    id: row(i).id,
    system: row(i).system,
    request_date: row(i).request_date,
    response_status_code: row(i).response_status_code,
    request_body: row(i).request_body,
    hour: '07'
  })))
  const agg = await run(['query', 'SELECT error_code, count(*) AS n FROM audit GROUP BY ALL ORDER BY n DESC', '--dir', dir])
  t.same(agg.stdout.trimEnd().split('\n').map((l) => JSON.parse(l)), [{ error_code: null, n: 8 }, { error_code: 'PIXPROXY_ERR_UPSTREAM_TIMEOUT', n: 2 }])
})

t.test('no rows: no output, exit 0', async (t) => {
  const dir = await store(t, 2)
  const r = await run(['query', 'SELECT * FROM audit WHERE false', '--dir', dir])
  t.same(r, { code: 0, stdout: '' })
})

t.test('the directory: --dir, else PIXPROXY_AUDIT_PARQUET_DIR, else the proxy\'s default under the working directory, else the demo\'s', async (t) => {
  const dir = await store(t, 4)
  t.equal((await run(['query', 'SELECT count(*) AS n FROM audit'], { PIXPROXY_AUDIT_PARQUET_DIR: dir })).stdout, '{"n":4}\n')
  const other = await store(t, 1)
  t.equal((await run(['query', 'SELECT count(*) AS n FROM audit', '--dir', other], { PIXPROXY_AUDIT_PARQUET_DIR: dir })).stdout, '{"n":1}\n')

  // With neither, the store the proxy writes by default (PIXPROXY_AUDIT_PARQUET_DIR's default) from the same directory.
  const cwd = process.cwd()
  const work = t.testdir()
  process.chdir(work)
  t.teardown(() => process.chdir(cwd))
  const missing = await rejection(run(['query', 'SELECT 1']))
  t.equal(missing.code, Errors.AUDIT_STORE_OPEN.code)
  t.match(missing.message, join(work, ConfigSchema.properties.PIXPROXY_AUDIT_PARQUET_DIR.default as string))
  // Only the demo's store (`make demo` writes .local/demo/audit/lake): a bare query reads it, and says so on stderr.
  t.equal(DEMO_DIR, join('.local', 'demo', 'audit', 'lake'))
  const demo = await ParquetSink.open({ dir: DEMO_DIR })
  await demo.write([row(0), row(1), row(2)])
  await demo.close()
  const c = captureIo({})
  t.equal(await main(['audit', 'query', 'SELECT count(*) AS n FROM audit'], c.io), 0)
  t.equal(c.text().stdout, '{"n":3}\n')
  t.match(c.text().stderr, `reading ${DEMO_DIR}, the demo's`)
  t.same(defaultAuditDir({ PIXPROXY_AUDIT_PARQUET_DIR: dir }), { dir }, 'the environment still wins')
  // Once serve's store exists, it is the default again (no note).
  const sink = await ParquetSink.open({ dir: ConfigSchema.properties.PIXPROXY_AUDIT_PARQUET_DIR.default as string })
  await sink.write([row(0), row(1)])
  await sink.close()
  t.equal((await run(['query', 'SELECT count(*) AS n FROM audit'])).stdout, '{"n":2}\n')
  const d = captureIo({})
  t.equal(await main(['audit', 'query', 'SELECT count(*) AS n FROM audit'], d.io), 0)
  t.same(d.text(), { stdout: '{"n":2}\n', stderr: '' })
})

t.test('bad SQL, a refused statement and a missing store are coded errors', async (t) => {
  const dir = await store(t, 1)
  t.equal((await rejection(run(['query', 'SELECT nope FROM audit', '--dir', dir]))).code, Errors.AUDIT_QUERY_FAILED.code)
  t.equal((await rejection(run(['query', 'COPY audit TO \'/tmp/x.csv\'', '--dir', dir]))).code, Errors.AUDIT_QUERY_REFUSED.code)
  t.equal((await rejection(run(['query', 'SELECT 1', '--dir', `${dir}/missing`]))).code, Errors.AUDIT_STORE_OPEN.code)
})

t.test('through pix-proxy\'s main: JSON lines and exit 0; bad SQL is exit 1 with one coded JSON error line', async (t) => {
  const dir = await store(t, 3)
  const viaMain = async (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> => {
    const c = captureIo()
    const code = await main(args, c.io)
    return { code, ...c.text() }
  }
  const ok = await viaMain(['audit', 'query', 'SELECT id FROM audit ORDER BY id', '--dir', dir])
  t.same(ok, { code: 0, stdout: [0, 1, 2].map((i) => JSON.stringify({ id: row(i).id }) + '\n').join(''), stderr: '' })
  const bad = await viaMain(['audit', 'query', 'SELEC id FROM audit', '--dir', dir])
  t.equal(bad.code, 1)
  t.equal(bad.stdout, '')
  const line = JSON.parse(bad.stderr) as { error: string, message: string }
  t.equal(line.error, Errors.AUDIT_QUERY_FAILED.code)
  t.match(line.message, /syntax error/)
  const refused = await viaMain(['audit', 'query', 'ATTACH \'x.db\'', '--dir', dir])
  t.equal(refused.code, 1)
  t.equal((JSON.parse(refused.stderr) as { error: string }).error, Errors.AUDIT_QUERY_REFUSED.code)
  t.equal((await viaMain(['audit', 'query', '--dir', dir])).code, 2, 'usage error')
})

t.test('usage errors', async (t) => {
  const dir = await store(t, 1)
  for (const args of [['query', '--dir', dir], ['query', 'SELECT 1', 'SELECT 2', '--dir', dir], ['nope']]) {
    t.equal((await rejection(run(args))).code, Errors.USAGE.code, args.join(' '))
  }
  await t.rejects(run(['query', 'SELECT 1', '--dir', dir, '--bogus']), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' })
  const help = await run([])
  t.equal(help.code, 2)
  t.match(help.stdout, /pix-proxy audit query/)
})

t.test('a slow reader gets every row, and output waits for drain instead of piling up in memory', async (t) => {
  const dir = await store(t, 300)
  let maxBuffered = 0
  const out = new PassThrough({ highWaterMark: 256 })
  const write = out.write.bind(out) as (chunk: string) => boolean
  out.write = ((chunk: string) => {
    const ok = write(chunk)
    maxBuffered = Math.max(maxBuffered, out.writableLength)
    return ok
  }) as typeof out.write
  const chunks: Buffer[] = []
  const reader = (async () => {
    for await (const c of out) {
      chunks.push(c as Buffer)
      await sleep(1)
    }
  })()
  const code = await auditCommand(['query', 'SELECT id, request_body FROM audit ORDER BY id', '--dir', dir], { stdout: out, env: {} })
  out.end()
  await reader
  t.equal(code, 0)
  const lines = Buffer.concat(chunks).toString().trimEnd().split('\n')
  t.equal(lines.length, 300)
  t.same(JSON.parse(lines[299] as string), { id: row(299).id, request_body: row(299).request_body })
  // Without waiting for 'drain' the whole result (~25 KB) would sit in the stream's buffer.
  t.ok(maxBuffered < 1024, `at most ${maxBuffered} bytes were buffered`)
})

/**
 * The sink in its own thread (src/audit/ship.ts): what the pipeline relies on must hold across the boundary. The
 * rows a write was given land in the real sink; the indexes it refused come back as they were; its errors arrive
 * as the same codes; a thread that dies fails the writes waiting on it (never reported as accepted) and the next
 * write runs on a new thread; a thread that hangs is terminated at its deadline, the same way; close waits for
 * writes in flight, but not for ever.
 */
import t from 'tap'
import type { Test } from 'tap'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { join } from 'node:path'
import { existsSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { SHIP_WRITE_DEADLINE_MS, ThreadedSink } from '../../src/audit/ship.ts'
import { AuditPipeline } from '../../src/audit/pipeline.ts'
import { AuditSpool } from '../../src/audit/spool.ts'
import { ParquetSink, PARQUET_DEFAULT_BATCH_ROWS } from '../../src/audit/parquet.ts'
import type { AuditSettings } from '../../src/audit/service.ts'
import type { AuditLogger } from '../../src/audit/spool.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { requestHalf, responseHalf, sampleRow } from './fixtures/rows.ts'
import { ManualClock } from './fixtures/clock.ts'
import { waitFor } from '../helpers/wait.ts'
import { rejection } from '../helpers/rejection.ts'
import { auditSettings } from './fixtures/settings.ts'

const settings = auditSettings

function recordingLogger (): AuditLogger & { lines: Array<{ level: string, msg: string }> } {
  const lines: Array<{ level: string, msg: string }> = []
  const at = (level: string) => (_obj: object, msg: string): void => { lines.push({ level, msg }) }
  return { lines, info: at('info'), warn: at('warn'), error: at('error') }
}

async function open (t: Test, s: AuditSettings, logger = recordingLogger(), workerUrl?: URL): Promise<ThreadedSink> {
  const sink = await ThreadedSink.open(s, logger, workerUrl === undefined ? {} : { workerUrl })
  t.teardown(async () => { await sink.close() })
  return sink
}

async function ids (lake: string): Promise<string[]> {
  const out: string[] = []
  for await (const r of queryAudit(lake, 'SELECT id FROM audit ORDER BY id')) out.push(String(r.id))
  return out
}

t.test('rows written through the thread land in the sink it opened, with its limits', async (t) => {
  const s = settings(t.testdir())
  const sink = await open(t, s)
  t.equal(sink.name, 'parquet')
  t.equal(sink.maxBatchRows, PARQUET_DEFAULT_BATCH_ROWS, 'the limits are the real sink\'s')
  // More rows than one message carries (they cross in slices): every one arrives, once.
  const rows = Array.from({ length: 300 }, (_v, i) => sampleRow(i))
  t.same(await sink.write(rows), { failed: [] })
  await sink.close()
  t.same(await ids(s.parquetDir), rows.map((r) => r.id).sort(), 'every row is in the Parquet store')
})

t.test('the rows the sink refused come back by index, the others are stored', async (t) => {
  const s = settings(t.testdir())
  const sink = await open(t, s)
  // The refused row in the second slice of the write: indexes are the batch's, not the slice's.
  const rows = Array.from({ length: 100 }, (_v, i) => i === 70 ? sampleRow(i, { request_date: 'yesterday' }) : sampleRow(i))
  t.same(await sink.write(rows), { failed: [70] })
  await sink.close()
  t.same(await ids(s.parquetDir), rows.filter((_r, i) => i !== 70).map((r) => r.id).sort())
})

t.test('opening fails with the code the sink raised in its thread', async (t) => {
  const dir = t.testdir()
  await writeFile(join(dir, 'not-a-dir'), 'x')
  const s = settings(dir, { parquetDir: join(dir, 'not-a-dir', 'lake') })
  const inProcess = await rejection(ParquetSink.open({ dir: s.parquetDir }))
  const threaded = await rejection(ThreadedSink.open(s, recordingLogger()))
  t.ok(threaded instanceof PixProxyError)
  t.equal((threaded as PixProxyError).code, Errors.AUDIT_STORE_OPEN.code)
  t.equal((threaded as PixProxyError).code, (inProcess as PixProxyError).code, 'the same code as opened in-process')
})

t.test('a failing call arrives as the sink\'s own error code (Firehose, nothing listening)', async (t) => {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close() // the port was just free: connections to it are refused
  await once(server, 'close')
  const saved = { ...process.env }
  Object.assign(process.env, { AWS_ENDPOINT_URL: `http://127.0.0.1:${port}`, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: 'AKIDLOCAL', AWS_SECRET_ACCESS_KEY: 'local' })
  t.teardown(() => { for (const k of ['AWS_ENDPOINT_URL', 'AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) { if (saved[k] === undefined) Reflect.deleteProperty(process.env, k); else process.env[k] = saved[k] } })
  const sink = await open(t, settings(t.testdir(), { sink: 'firehose' }))
  t.equal(sink.name, 'firehose')
  const err = await rejection(sink.write([sampleRow(1), sampleRow(2)]))
  t.ok(err instanceof PixProxyError, 'a PixProxyError, revived from the thread')
  t.equal((err as PixProxyError).code, Errors.AWS_FIREHOSE_PUT.code)
})

t.test('a thread that dies fails the write it held; the next write runs on a new thread', async (t) => {
  const s = settings(t.testdir())
  const logger = recordingLogger()
  const sink = await open(t, s, logger, new URL('./fixtures/dying-ship.ts', import.meta.url))
  t.equal(sink.name, 'dying')
  const err = await rejection(sink.write([sampleRow(1)]))
  t.match(err.message, /ship thread stopped/, 'the write is failed, not reported accepted')
  t.ok(logger.lines.some((l) => l.level === 'error' && /ship thread stopped/.test(l.msg)), 'and logged')
  t.same(await sink.write([sampleRow(1), sampleRow(2)]), { failed: [] }, 'the next write runs on a new thread')
  t.ok(logger.lines.some((l) => l.level === 'info' && /restarted/.test(l.msg)))
})

t.test('close waits for a write in flight; a write after close is refused', async (t) => {
  const s = settings(t.testdir())
  const sink = await open(t, s)
  const rows = Array.from({ length: 40 }, (_v, i) => sampleRow(i))
  const written = sink.write(rows)
  await sink.close()
  t.same(await written, { failed: [] }, 'the write in flight finished first')
  t.same(await ids(s.parquetDir), rows.map((r) => r.id).sort())
  await rejection(sink.write([sampleRow(99)])).then((e) => { t.match(e.message, /closed/) })
  await sink.close() // idempotent
})

/** Blocks this thread (its event loop too) until `path` exists: what the ship thread does meanwhile is done by then. */
function blockUntil (path: string): void {
  const guard = performance.now() + 30_000 // a hang guard only
  while (!existsSync(path)) if (performance.now() > guard) throw new Error(`${path} never appeared`)
}

for (const mode of ['done', 'die'] as const) {
  t.test(`a write settled while its slices are still being posted (${mode === 'done' ? 'answered' : 'the thread exited'}) fails, and nothing is left unhandled`, async (t) => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
    process.on('unhandledRejection', onUnhandled)
    t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
    const s = settings(t.testdir())
    await writeFile(`${s.parquetDir}.mode`, mode)
    const sink = await open(t, s, recordingLogger(), new URL('./fixtures/settling-ship.ts', import.meta.url))
    // 5,000 rows: many slices, the first posted at once. The thread has settled the write before this thread
    // goes on posting the others: in the audit worker, a rejection nothing handled yet ended the thread.
    const written = sink.write(Array.from({ length: 5_000 }, (_v, i) => sampleRow(i)))
    blockUntil(`${s.parquetDir}.signalled`)
    const err = await rejection(written)
    t.match(err.message, mode === 'done' ? /refused while its rows were arriving/ : /ship thread stopped/, 'the write failed, not reported accepted')
    await new Promise((resolve) => setImmediate(resolve))
    t.same(unhandled, [], 'no unhandled rejection')
    t.same(await sink.write([sampleRow(1)]), { failed: [] }, 'the next write goes through')
  })
}

t.test('close while a large write is still posting its slices waits for it: its rows are stored, not refused', async (t) => {
  const s = settings(t.testdir())
  const sink = await open(t, s)
  const rows = Array.from({ length: 300 }, (_v, i) => sampleRow(i))
  const written = sink.write(rows) // its first slice is posted at once, the others after turns of this thread
  await sink.close() // called between two slices
  t.same(await written, { failed: [] }, 'the write finished first')
  t.same(await ids(s.parquetDir), rows.map((r) => r.id).sort())
})

t.test('a write the thread answers as accepted before it had every row is failed, not acknowledged', async (t) => {
  const s = settings(t.testdir())
  await writeFile(`${s.parquetDir}.mode`, 'accept')
  const sink = await open(t, s, recordingLogger(), new URL('./fixtures/settling-ship.ts', import.meta.url))
  // The answer comes after the first of many slices: the sink saw 64 of these rows at most.
  const written = sink.write(Array.from({ length: 5_000 }, (_v, i) => sampleRow(i)))
  blockUntil(`${s.parquetDir}.signalled`)
  const err = await rejection(written)
  t.equal(err.code, Errors.AUDIT_SINK_FAILED.code)
  t.match(err.message, /answered before the write was whole/)
})

const HANGING = new URL('./fixtures/hanging-ship.ts', import.meta.url)

async function until (what: string, cond: () => boolean): Promise<void> {
  if (!await waitFor(cond)) throw new Error(`timed out waiting for ${what}`)
}
/** A few turns of the event loop: a chance for something that must not happen (the manual clock stands still). */
const turns = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }

/** Ids of the rows the hanging fixture accepted, in order. */
function acceptedIds (s: AuditSettings): string[] {
  const path = `${s.parquetDir}.accepted`
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter((l) => l !== '') : []
}

/** A ThreadedSink on the hanging fixture in `mode` (see fixtures/hanging-ship.ts), its deadlines on a manual clock. */
async function hanging (t: Test, mode: string): Promise<{ s: AuditSettings, clock: ManualClock, logger: ReturnType<typeof recordingLogger>, sink: ThreadedSink }> {
  const s = settings(t.testdir())
  await writeFile(`${s.parquetDir}.hang`, mode)
  const clock = new ManualClock()
  const logger = recordingLogger()
  const sink = await ThreadedSink.open(s, logger, { workerUrl: HANGING, clock })
  t.teardown(async () => { await sink.close() })
  return { s, clock, logger, sink }
}

for (const mode of ['silent', 'spin'] as const) {
  t.test(`a write the thread never answers (${mode === 'silent' ? 'a call that never returns' : 'a busy loop'}) fails at its deadline; the thread is terminated and the next write runs on a new one`, async (t) => {
    const { s, clock, logger, sink } = await hanging(t, mode)
    let settled = false
    const written = sink.write([sampleRow(1), sampleRow(2)])
    void written.then(() => { settled = true }, () => { settled = true })
    await until('the thread holding the write', () => existsSync(`${s.parquetDir}.hung`))
    await clock.until('the write\'s deadline', SHIP_WRITE_DEADLINE_MS)
    clock.advance(SHIP_WRITE_DEADLINE_MS - 1)
    await turns()
    t.notOk(settled, 'still waiting before its deadline')
    clock.advance(1)
    const err = await rejection(written)
    t.equal(err.code, Errors.AUDIT_SINK_FAILED.code, 'failed like a thread that died: the pipeline keeps the rows and retries')
    t.match(err.message, `did not answer within ${SHIP_WRITE_DEADLINE_MS} ms and was terminated`)
    const errors = (): string[] => logger.lines.filter((l) => l.level === 'error').map((l) => l.msg)
    t.same(errors(), ['audit ship thread did not answer in time and was terminated; the next batch starts a new one'], 'logged once')
    await until('the hung thread\'s exit', () => logger.lines.some((l) => /did not answer has ended/.test(l.msg)))
    t.same(await sink.write([sampleRow(3), sampleRow(4)]), { failed: [] }, 'the next write runs on a new thread')
    t.ok(logger.lines.some((l) => l.level === 'info' && /restarted/.test(l.msg)))
    t.same(acceptedIds(s), [sampleRow(3).id, sampleRow(4).id], 'only the answered write was accepted')
    t.equal(errors().length, 1, 'its exit is not a second failure')
    t.same(clock.armed(), [], 'no deadline left armed')
  })
}

t.test('close of a thread that never answers returns at the deadline, the thread terminated', async (t) => {
  const { s, clock, logger, sink } = await hanging(t, 'close')
  t.same(await sink.write([sampleRow(1)]), { failed: [] })
  let closed = false
  const closing = sink.close().then(() => { closed = true })
  await until('the thread holding the close', () => existsSync(`${s.parquetDir}.hung`))
  await clock.until('the close\'s deadline', SHIP_WRITE_DEADLINE_MS)
  clock.advance(SHIP_WRITE_DEADLINE_MS - 1)
  await turns()
  t.notOk(closed, 'waits for the sink to close within the deadline')
  clock.advance(1)
  await closing
  t.ok(logger.lines.some((l) => l.level === 'error' && /did not answer in time/.test(l.msg)), 'logged')
  await until('the hung thread\'s exit', () => logger.lines.some((l) => /did not answer has ended/.test(l.msg)))
  t.match((await rejection(sink.write([sampleRow(2)]))).message, /closed/)
})

t.test('a thread that never says it is ready fails the start at the deadline', async (t) => {
  const s = settings(t.testdir())
  await writeFile(`${s.parquetDir}.hang`, 'start')
  const clock = new ManualClock()
  const opening = ThreadedSink.open(s, recordingLogger(), { workerUrl: HANGING, clock, writeDeadlineMs: 5_000 })
  let settled = false
  void opening.then(() => { settled = true }, () => { settled = true })
  await until('the thread started', () => existsSync(`${s.parquetDir}.hung`))
  await clock.until('the start\'s deadline', 5_000)
  clock.advance(4_999)
  await turns()
  t.notOk(settled)
  clock.advance(1)
  const err = await opening.then(() => null, (e: unknown) => e as Error)
  t.match(err?.message, /the audit ship thread did not start: no answer within 5000 ms, terminated/)
})

t.test('a deadline that is not a positive number is refused', async (t) => {
  for (const writeDeadlineMs of [0, -1, Number.NaN, Infinity]) {
    const err = await rejection(ThreadedSink.open(settings(t.testdir()), recordingLogger(), { workerUrl: HANGING, writeDeadlineMs }))
    t.equal(err.code, Errors.CONFIG_INVALID.code, String(writeDeadlineMs))
  }
})

t.test('through the pipeline: rows spooled while the thread hung ship once a new thread takes over, none lost', async (t) => {
  const s = settings(t.testdir())
  await writeFile(`${s.parquetDir}.hang`, 'silent')
  const clock = new ManualClock()
  const logger = recordingLogger()
  const spool = await AuditSpool.open({ dir: s.spoolDir, maxBytes: 64 * 1024 * 1024, groupCommitMs: 0, logger, clock })
  const sink = await ThreadedSink.open(s, logger, { workerUrl: HANGING, clock })
  // No jitter: the retry goes as soon as the failed call has returned.
  const pipe = AuditPipeline.start({ spool, sink, flushMs: 50, backoffBaseMs: 100, backoffCapMs: 100, random: () => 0, logger, clock })
  t.teardown(async () => {
    await pipe.close(0)
    await sink.close()
    await pipe.stopped()
    await spool.close()
  })
  const transact = async (id: string): Promise<void> => {
    await spool.begin(requestHalf(id))
    await spool.end(id, responseHalf(id))
  }
  const before = Array.from({ length: 5 }, (_v, i) => `before-${i}`)
  for (const id of before) await transact(id)
  await clock.until('the flush timer', 50)
  clock.advance(50)
  await until('the thread holding the batch', () => existsSync(`${s.parquetDir}.hung`))
  // The sink hangs; the proxy goes on auditing.
  const during = Array.from({ length: 5 }, (_v, i) => `during-${i}`)
  for (const id of during) await transact(id)
  t.equal(spool.stats().pendingRows, 10)
  t.match(pipe.stats(), { calls: 1, shippedRows: 0 })
  await clock.until('the write\'s deadline', 50 + SHIP_WRITE_DEADLINE_MS)
  clock.advance(SHIP_WRITE_DEADLINE_MS)
  await until('every row shipped', () => spool.stats().pendingRows === 0)
  t.same(acceptedIds(s).sort(), [...before, ...during].sort(), 'every row, once (the hung thread had stored none)')
  t.match(pipe.stats(), { calls: 2, failedCalls: 1, shippedRows: 10, retriedRows: 5, lastErrorCode: Errors.AUDIT_SINK_FAILED.code })
})

/**
 * The audit trail in its worker thread (src/audit/remote.ts + worker.ts): the same spool, pipeline and Parquet
 * sink as in-process, reached through the thread's port. What must hold across the thread boundary: durable
 * means durable, the spool's errors arrive as the same codes, a dead thread refuses everything (nothing
 * unaudited), and what it made durable is replayed by the next one.
 */
import t from 'tap'
import type { Test } from 'tap'
import { AuditWorker } from '../../src/audit/remote.ts'
import type { AuditSettings } from '../../src/audit/service.ts'
import type { AuditLogger } from '../../src/audit/spool.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { PixProxyError } from '../../core/errors.ts'
import { requestHalf, responseHalf } from './fixtures/rows.ts'
import { rejection } from '../helpers/rejection.ts'
import { auditSettings } from './fixtures/settings.ts'

const settings = auditSettings

interface Logged { level: string, obj: object, msg: string }
function recordingLogger (): AuditLogger & { lines: Logged[] } {
  const lines: Logged[] = []
  const at = (level: string) => (obj: object, msg: string): void => { lines.push({ level, obj, msg }) }
  return { lines, info: at('info'), warn: at('warn'), error: at('error') }
}

async function start (t: Test, s: AuditSettings, logger = recordingLogger()): Promise<AuditWorker> {
  const { worker } = await AuditWorker.start(s, logger)
  t.teardown(async () => { await worker.close(5_000).catch(() => {}) })
  return worker
}

async function ids (lake: string): Promise<string[]> {
  const out: string[] = []
  for await (const r of queryAudit(lake, 'SELECT id FROM audit ORDER BY id')) out.push(String(r.id))
  return out
}

t.test('rows begun and ended through the thread are durable, shipped and queryable; close reports them', async (t) => {
  const dir = t.testdir()
  const s = settings(dir)
  const logger = recordingLogger()
  const { worker, status } = await AuditWorker.start(s, logger)
  t.equal(status.sink, 'parquet')
  t.equal(status.spool.replay.rows, 0, 'a fresh spool replays nothing')
  const want = Array.from({ length: 30 }, (_v, i) => `w${String(i).padStart(2, '0')}`)
  // Concurrently, as requests do: the calls of one tick travel together, and so do their replies.
  await Promise.all(want.map(async (id) => {
    await worker.begin(requestHalf(id))
    await worker.end(id, responseHalf(id))
  }))
  const during = await worker.status()
  t.equal(during.spool.spooledRows, 30, 'the spool counted every row')
  t.ok(during.heap.usedBytes > 0 && during.heap.usedBytes <= during.heap.totalBytes, "the thread's own heap is reported")
  const closed = await worker.close(5_000)
  t.same(closed, { shipped: closed.shipped, left: 0 }, 'nothing left behind')
  t.same(await ids(s.parquetDir), want, 'every row is in the Parquet store, once')
  await rejection(worker.begin(requestHalf('late'))).then((e) => { t.equal(e.code, 'PIXPROXY_ERR_AUDIT_SPOOL_CLOSED', 'after close: refused') })
  t.same(logger.lines.filter((l) => l.level === 'error'), [], 'no errors logged')
})

t.test("the spool's errors cross the thread with their code and HTTP status", async (t) => {
  const dir = t.testdir()
  const worker = await start(t, settings(dir, { spoolMaxBytes: 1024 * 1024 }))
  const invalid = await rejection(worker.begin({ ...requestHalf('bad'), system: 'neither' } as unknown as ReturnType<typeof requestHalf>))
  t.equal(invalid.code, 'PIXPROXY_ERR_AUDIT_ROW_INVALID')
  t.match(invalid.message, /system must be spi, dict or gateway/)
  const unknown = await rejection(worker.end('never-begun', responseHalf('never-begun')))
  t.equal(unknown.code, 'PIXPROXY_ERR_AUDIT_UNKNOWN_TRANSACTION')
  // 300 KB bodies against a 1 MiB bound: refused before the bound is crossed, with 503 for the caller.
  let full: PixProxyError | null = null
  for (let i = 0; i < 10 && full === null; i++) {
    full = await worker.begin(requestHalf(`big${i}`, 300_000)).then(() => null, (err: unknown) => err as PixProxyError)
  }
  t.ok(full instanceof PixProxyError, 'a begin was refused')
  t.equal(full?.code, 'PIXPROXY_ERR_AUDIT_SPOOL_FULL')
  t.equal(full?.statusCode, 503)
  t.ok((await worker.status()).spool.rejectedFull >= 1, 'and counted')
})

t.test('a spool that cannot open fails start with its own error, and leaves no thread behind', async (t) => {
  const dir = t.testdir({ spool: 'a file where the spool directory should be' })
  const err = await rejection(AuditWorker.start(settings(dir), recordingLogger()))
  t.match(err.code, /^PIXPROXY_ERR_AUDIT_SPOOL_IO$|^PIXPROXY_ERR_AUDIT_STORE_OPEN$/)
  t.match(err.message, /spool/)
})

t.test('a thread that dies refuses everything, says so once, and its durable rows are replayed by the next', async (t) => {
  const dir = t.testdir()
  const s = settings(dir, { flushMs: 60_000 }) // nothing ships before the crash
  const logger = recordingLogger()
  const { worker } = await AuditWorker.start(s, logger)
  const failures: PixProxyError[] = []
  worker.onFailure((e) => { failures.push(e) })
  await worker.begin(requestHalf('done'))
  await worker.end('done', responseHalf('done'))
  await worker.begin(requestHalf('open')) // durable, its answer never comes
  const inFlight = worker.begin(requestHalf('in-flight')).then(() => null, (e: unknown) => e as PixProxyError)
  await worker.abort()
  const pending = await inFlight
  // Either it was durable before the thread died (then it resolved) or it failed with the worker's code.
  if (pending !== null) t.equal(pending.code, 'PIXPROXY_ERR_AUDIT_WORKER_FAILED', 'the call in flight failed')
  t.equal(failures.length, 1, 'onFailure was called once')
  t.equal(failures[0]?.code, 'PIXPROXY_ERR_AUDIT_WORKER_FAILED')
  t.equal(failures[0]?.statusCode, 503)
  t.equal(worker.failure?.code, 'PIXPROXY_ERR_AUDIT_WORKER_FAILED')
  t.equal((await rejection(worker.begin(requestHalf('after')))).code, 'PIXPROXY_ERR_AUDIT_WORKER_FAILED', 'later calls are refused')
  t.equal((await rejection(worker.status())).code, 'PIXPROXY_ERR_AUDIT_WORKER_FAILED', 'status says so too')
  const late: PixProxyError[] = []
  worker.onFailure((e) => { late.push(e) })
  t.equal(late.length, 1, 'a listener added afterwards hears at once')
  t.ok(logger.lines.some((l) => l.level === 'error' && /audit worker stopped/.test(l.msg)), 'logged')

  const nextLogger = recordingLogger()
  const next = await start(t, { ...s, flushMs: 50 }, nextLogger)
  const takeover = nextLogger.lines.find((l) => /took over the audit spool lock/.test(l.msg))
  t.equal(takeover?.level, 'warn', "the thread's log lines reach the main thread's logger")
  t.match(takeover?.obj, { dir: s.spoolDir, previous: { pid: process.pid } }, 'with their fields')
  const replay = (await next.status()).spool.replay
  t.ok(replay.rows >= 2, `the next thread replays what was durable (${replay.rows} rows)`)
  t.ok(replay.incomplete >= 1, 'the transaction without an answer comes back as incomplete')
  await next.close(5_000)
  const shipped = await ids(s.parquetDir)
  t.ok(shipped.includes('done') && shipped.includes('open'), 'both reach the store')
  t.notOk(shipped.includes('after'), 'a refused call never became a row')
})

t.test('a thread that stops answering: status and close give up with their own code instead of hanging', async (t) => {
  const { worker } = await AuditWorker.start(settings(t.testdir()), recordingLogger(), { workerUrl: new URL('./fixtures/silent-worker.ts', import.meta.url) })
  t.teardown(async () => { await worker.abort() })
  // The thread never answers, so only the timeouts can settle these calls: settling at all is "not never", and which
  // timeout gave up is in the message (the configured 200 ms, not the 2 s default). No wall-clock bound: how fast a
  // loaded machine fires a timer is not the behaviour under test.
  const status = await rejection(worker.status(200))
  t.equal(status.code, 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE')
  t.equal(status.statusCode, 503)
  t.match(status.message, /within 200 ms/, 'within its timeout, not never')
  const closing = await rejection(worker.close(100))
  t.equal(closing.code, 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE', 'close gives up a second after its deadline')
  t.match(closing.message, /within 1100 ms/, 'its deadline (100 ms) plus a second')
})

t.test('a thread that stops answering while calls wait on it is declared failed: those calls and every later one are refused, never left hanging', async (t) => {
  const logger = recordingLogger()
  const { worker } = await AuditWorker.start(settings(t.testdir()), logger, { workerUrl: new URL('./fixtures/silent-worker.ts', import.meta.url), stuckAfterMs: 200 })
  t.teardown(async () => { await worker.abort() })
  const failures: PixProxyError[] = []
  worker.onFailure((e) => { failures.push(e) })
  // Without the watchdog this begin would wait forever, and a request behind it would hold its slot (and be sent
  // late if the thread ever came back).
  const stuck = await rejection(worker.begin(requestHalf('stuck')))
  t.equal(stuck.code, 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE', 'the waiting begin is refused')
  t.equal(stuck.statusCode, 503)
  t.match(stuck.message, /within 200 ms/, 'by the configured watchdog')
  t.equal(failures.length, 1, 'the failure listeners (which stop the proxy) are told once')
  t.equal(worker.failure?.code, 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE')
  t.equal((await rejection(worker.begin(requestHalf('later')))).code, 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE', 'a later call is refused at once')
  t.ok(logger.lines.some((l) => l.level === 'error' && /audit worker stopped/.test(l.msg)), 'logged')
})

t.test('a quiet thread is not a stuck one: with nothing waiting, time without messages does not count', async (t) => {
  // A thread that never answers, and no call made to it: nothing is waiting, so nothing is stuck. (No real spool
  // either: a watchdog of 40 ms against a real fdatasync would be a race against the disk.)
  const { worker } = await AuditWorker.start(settings(t.testdir()), recordingLogger(), { workerUrl: new URL('./fixtures/silent-worker.ts', import.meta.url), stuckAfterMs: 40 })
  t.teardown(async () => { await worker.abort() })
  // Several watchdog periods with no call in flight (a slow machine only makes this weaker, never failing).
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.equal(worker.failure, null, 'not declared failed')
  // The same thread, once a call waits on it: declared failed (so the quiet spell was the only thing spared).
  t.equal((await rejection(worker.begin(requestHalf('after-quiet')))).code, 'PIXPROXY_ERR_AUDIT_WORKER_UNRESPONSIVE', 'a call that waits is not spared')
})

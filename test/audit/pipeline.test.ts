import t from 'tap'
import type { Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { AUDIT_BODY_GZIP_PREFIX, AuditPipeline, auditRowBytes, decodeAuditBody, encodeAuditBody } from '../../src/audit/pipeline.ts'
import type { AuditPipelineOptions } from '../../src/audit/pipeline.ts'
import { AuditSpool } from '../../src/audit/spool.ts'
import type { AuditLogger, AuditSpoolOptions } from '../../src/audit/spool.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { PixProxyError } from '../../core/errors.ts'
import { damage, MemorySink, requestHalf, responseHalf, segmentFiles } from './fixtures/rows.ts'
import { waitFor } from '../helpers/wait.ts'
import { ManualClock } from './fixtures/clock.ts'

interface Setup { dir: string, spool: AuditSpool, sink: MemorySink, pipe: AuditPipeline, logs: Array<{ level: string, code?: string, msg: string }> }

function captureLogger (logs: Setup['logs']): AuditLogger {
  const at = (level: string) => (o: object, msg: string): void => { logs.push({ level, code: (o as { code?: string }).code, msg }) }
  return { info: at('info'), warn: at('warn'), error: at('error') }
}

/** With `clock`, the spool, the pipeline and the sink's call stamps all run on it: time moves only when the test moves it. */
async function setup (t: Test, o: { dir?: string, sink?: MemorySink, spool?: Partial<AuditSpoolOptions>, pipe?: Partial<AuditPipelineOptions>, clock?: ManualClock } = {}): Promise<Setup> {
  const dir = o.dir ?? join(t.testdir(), 'spool')
  const logs: Setup['logs'] = []
  const logger = captureLogger(logs)
  const clock = o.clock === undefined ? {} : { clock: o.clock }
  const spool = await AuditSpool.open({ dir, maxBytes: 64 * 1024 * 1024, logger, ...clock, ...o.spool })
  const sink = o.sink ?? new MemorySink()
  if (o.clock !== undefined) sink.now = o.clock.now
  const pipe = AuditPipeline.start({ spool, sink, flushMs: 50, backoffBaseMs: 10, backoffCapMs: 100, logger, ...clock, ...o.pipe })
  t.teardown(async () => {
    await pipe.close(0)
    await spool.close()
  })
  return { dir, spool, sink, pipe, logs }
}

async function transact (spool: AuditSpool, id: string, req = requestHalf(id)): Promise<void> {
  await spool.begin(req)
  await spool.end(id, responseHalf(id))
}

/** Polls (real time) until `cond` holds; the bound only decides how long a failing test takes to say so. */
async function until (what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const end = performance.now() + ms
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/**
 * The spool has let go of every segment, and their files are gone: it forgets a segment before it unlinks the
 * file (and only then updates its level), so the count alone runs ahead of the disk.
 */
async function segmentsDeleted (spool: AuditSpool, dir: string): Promise<void> {
  await until('segments forgotten', () => spool.stats().segments === 0)
  if (!await waitFor(async () => (await segmentFiles(dir)).length === 0)) throw new Error(`segment files left: ${(await segmentFiles(dir)).join(', ')}`)
}

const ids = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}-${i}`)
const counts = (xs: string[]): Map<string, number> => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>())
/** Waits until a timer due at `at` is armed and moves time to it (to the timer's own due time: a pause computed as now + (until - now) may land a rounding error past `at`). */
async function reach (clock: ManualClock, what: string, at: number): Promise<void> {
  await clock.until(what, at)
  clock.advanceTo(Math.max(at, ...clock.armed().filter((x) => Math.abs(x - at) < 1e-6)))
}
/** A few turns of the event loop: a chance for something that must not happen (time stands still meanwhile). */
const turns = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }

t.test('batches by rows at once, and the rest after flushMs', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink({ maxBatchRows: 10 })
  const { spool } = await setup(t, { sink, clock, pipe: { flushMs: 2_000 } })
  const all = ids('b', 35)
  await Promise.all(all.map(async (id) => { await transact(spool, id) }))
  await until('30 rows shipped', () => sink.accepted.length === 30)
  t.same(sink.calls.map((c) => c.at), [0, 0, 0], 'full batches go without waiting for the flush timer (time stood still)')
  await clock.until('the flush timer of the partial batch', 2_000)
  clock.advance(1_999)
  await turns()
  t.equal(sink.calls.length, 3, 'the partial batch waits flushMs')
  clock.advance(1)
  await until('35 rows shipped', () => sink.accepted.length === 35)
  t.same(sink.calls.map((c) => c.ids.length), [10, 10, 10, 5])
  t.equal(sink.calls[3]?.at, 2_000, 'and goes when flushMs has passed')
  t.same([...sink.acceptedIds()].sort(), [...all].sort())
})

t.test('batches by bytes: no call exceeds the sink\'s maxBatchBytes', async (t) => {
  const sink = new MemorySink({ maxBatchBytes: 7000 })
  const { spool } = await setup(t, { sink })
  await Promise.all(ids('y', 12).map(async (id) => { await transact(spool, id, requestHalf(id, 2000)) }))
  await until('12 rows shipped', () => sink.accepted.length === 12)
  const rows = new Map(sink.accepted.map((r) => [r.id, r]))
  for (const c of sink.calls) {
    const bytes = c.ids.reduce((n, id) => n + auditRowBytes(rows.get(id) as AuditRow), 0)
    t.ok(bytes <= 7000, `call of ${c.ids.length} rows, ${bytes} bytes`)
  }
  t.ok(sink.calls.length >= 4)
})

t.test('a lone row ships after flushMs, not before', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink()
  const { spool } = await setup(t, { sink, clock, pipe: { flushMs: 1_500 } })
  await transact(spool, 'lone')
  await clock.until('the flush timer', 1_500)
  clock.advance(1_499)
  await turns()
  t.equal(sink.calls.length, 0)
  clock.advance(1)
  await until('the row shipped', () => sink.accepted.length === 1)
  t.equal(sink.calls[0]?.at, 1_500)
})

t.test('partial batch failure: only the failed rows are sent again; segments go when every row was accepted', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink({ maxBatchRows: 10 })
  // A full batch (10 rows) goes at once; nothing else would before flushMs. No jitter: the rows refused are due
  // again at once, and then wait for company like new rows, at most flushMs.
  const { spool, pipe, dir } = await setup(t, { sink, clock, spool: { segmentBytes: 4096 }, pipe: { flushMs: 1_000, random: () => 0 } })
  sink.policy = (rows, call) => {
    if (call === 0) return [1, 3, 7]
    if (call === 1) return [0]
    return []
  }
  const all = ids('p', 10)
  for (const id of all) await transact(spool, id)
  await reach(clock, 'the retry\'s flush timer', 1_000)
  await reach(clock, 'the second retry\'s flush timer', 2_000)
  await until('all shipped', () => sink.accepted.length === 10)
  t.same(sink.calls.map((c) => c.at), [0, 1_000, 2_000])
  t.same(sink.calls[0]?.ids, all)
  t.same(sink.calls[1]?.ids, ['p-1', 'p-3', 'p-7'], 'the retry carries only the failed rows')
  t.same(sink.calls[2]?.ids, ['p-1'], 'then only the one still failing')
  t.equal(sink.calls.length, 3)
  t.ok([...counts(sink.acceptedIds()).values()].every((n) => n === 1), 'no row accepted twice')
  t.same(sink.acceptedIds().sort(), [...all].sort())
  await segmentsDeleted(spool, dir)
  t.equal(spool.stats().bytes, 0)
  const s = pipe.stats()
  t.equal(s.shippedRows, 10)
  t.equal(s.retriedRows, 4)
  t.equal(s.partialFailures, 2)
  t.equal(s.consecutiveFailures, 0)
})

t.test('10 % of records refused in every call: the accepted ones ship without a pause, the refused go again on their own backoff', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink({ maxBatchRows: 50 })
  // Every tenth position of every call: a deterministic 10 %, which a row sent again at another position escapes.
  sink.policy = (rows) => rows.flatMap((_, i) => i % 10 === 9 ? [i] : [])
  const { spool, pipe } = await setup(t, { sink, clock, pipe: { flushMs: 1_000, backoffBaseMs: 100, backoffCapMs: 1_000, random: () => 0.5 } })
  const all = ids('f', 550)
  await Promise.all(all.map(async (id) => { await transact(spool, id) }))
  // Time stands still: every call below went without any pause, of the pipeline or otherwise.
  await until('ten calls', () => sink.calls.length === 10)
  await turns()
  t.equal(sink.accepted.length, 450)
  t.equal(pipe.stats().consecutiveFailures, 0, 'a call with rows accepted is progress, not a failure')
  t.equal(pipe.stats().retryingRows, 50)
  t.equal(sink.calls.length, 10, 'a batch\'s worth of refused rows waits in memory: no more rows are taken from the spool')
  t.equal(spool.readyInfo().rows, 50)
  // Each refused row's own pause: 0.5 x 100 ms after its first refusal, 0.5 x 200 ms after its second. At 50 the
  // 50 refused rows are due: a full batch, at once; then the 50 new rows. The 10 rows these two calls refuse are
  // due at 100 and 150, and wait for company until flushMs after the first of them (1,100); the one refused
  // again then is due at 1,200 and goes alone at 2,200.
  for (const [at, shipped] of [[50, 540], [100, 540], [150, 540], [1_100, 549], [1_200, 549], [2_200, 550]] as const) {
    await reach(clock, `time ${at}`, at)
    await until(`${shipped} rows shipped`, () => sink.accepted.length === shipped)
  }
  t.same(sink.calls.map((c) => c.at), [...Array<number>(10).fill(0), 50, 50, 1_100, 2_200])
  t.same(sink.calls.map((c) => c.ids.length), [...Array<number>(12).fill(50), 10, 1])
  t.same(sink.calls[10]?.ids, sink.calls.slice(0, 10).flatMap((c) => c.ids.filter((_, i) => i % 10 === 9)), 'the refused rows, at the head of the next call')
  // 550 rows in calls of 50 of which 90 % are taken: 550 / 45 = 12.2 calls at best; the last two are the tail.
  t.ok(sink.calls.length <= Math.ceil(550 / 45) + 1, `${sink.calls.length} calls`)
  t.same(sink.acceptedIds().sort(), [...all].sort())
  t.ok([...counts(sink.acceptedIds()).values()].every((n) => n === 1), 'no row accepted twice')
  const s = pipe.stats()
  t.equal(s.shippedRows, 550)
  t.equal(s.retriedRows, 61)
  t.equal(s.partialFailures, 13)
  t.equal(s.failedCalls, 0)
  t.equal(s.consecutiveFailures, 0)
  t.equal(s.retryingRows, 0)
  await until('spool drained', () => spool.stats().pendingRows === 0)
})

t.test('a row the sink always refuses delays no other: it backs off on its own, the pipeline does not', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink({ maxBatchRows: 10 })
  let poisoned = true
  sink.policy = (rows) => poisoned ? rows.flatMap((r, i) => r.id === 'bad' ? [i] : []) : []
  const { spool, pipe, dir } = await setup(t, {
    sink,
    clock,
    spool: { segmentBytes: 4096 },
    pipe: { flushMs: 1_000, backoffBaseMs: 100, backoffCapMs: 400, random: () => 0.999 }
  })
  await transact(spool, 'bad')
  for (const id of ids('a', 9)) await transact(spool, id)
  await until('the first call', () => sink.calls.length === 1)
  t.equal(sink.accepted.length, 9)
  let at = 0
  // Its own pauses double (100, 200, 400 ms bounds) up to the cap. Meanwhile full batches of new rows go at once
  // without it; once it is due, it rides at the head of the next batch, and the rest of that batch is taken.
  for (const [k, bound] of [100, 200, 400, 400].entries()) {
    for (const id of ids(`n${k}`, 10)) await transact(spool, id)
    await until(`new batch ${k}`, () => sink.calls.length === 2 + 2 * k)
    t.equal(sink.calls.at(-1)?.at, at, `new batch ${k} went at once`)
    t.notOk(sink.calls.at(-1)?.ids.includes('bad'), 'without the bad row, not due yet')
    await reach(clock, `the bad row due again (${k + 1})`, at + 0.999 * bound)
    at = clock.now()
    for (const id of ids(`m${k}`, 9)) await transact(spool, id)
    await until(`retry ${k + 1}`, () => sink.calls.length === 3 + 2 * k)
    t.same(sink.calls.at(-1)?.ids, ['bad', ...ids(`m${k}`, 9)], 'the bad row with new ones, at once')
    t.equal(sink.calls.at(-1)?.at, at)
    t.equal(pipe.stats().consecutiveFailures, 0)
  }
  t.same(sink.calls.filter((c) => c.ids.includes('bad')).map((c) => Math.round(c.at * 10) / 10), [0, 99.9, 299.7, 699.3, 1098.9])
  t.equal(sink.accepted.length, 9 + 4 * 19, 'every other row shipped')
  t.equal(pipe.stats().retryingRows, 1)
  t.equal(spool.stats().pendingRows, 1)
  t.ok((await segmentFiles(dir)).length >= 1, 'its segment stays')
  // Alone, due, and refused: a call that tells about the row, not the sink; the pipeline does not back off.
  await reach(clock, 'the bad row due again (5)', at + 0.999 * 400)
  await reach(clock, 'its flush timer', clock.now() + 1_000)
  await until('retry 5', () => sink.calls.length === 10)
  t.same(sink.calls.at(-1)?.ids, ['bad'])
  t.equal(pipe.stats().consecutiveFailures, 0, 'a call of rows already refused on their own does not back the pipeline off')
  for (const id of ids('z', 10)) await transact(spool, id)
  await until('new rows right after', () => sink.calls.length === 11)
  t.equal(sink.calls.at(-1)?.at, clock.now(), 'at once')
  poisoned = false
  await reach(clock, 'the bad row due again (6)', sink.calls[9]?.at as number + 0.999 * 400)
  await reach(clock, 'its flush timer', clock.now() + 1_000)
  await until('the bad row shipped', () => sink.accepted.length === 9 + 4 * 19 + 10 + 1)
  t.equal(pipe.stats().retryingRows, 0)
  await segmentsDeleted(spool, dir)
})

t.test('a call that takes no row (throttled record by record) backs the whole pipeline off, like one that throws', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink({ maxBatchRows: 10 })
  sink.policy = (rows, call) => call < 3 ? rows.map((_, i) => i) : []
  const { spool, pipe } = await setup(t, { sink, clock, pipe: { flushMs: 60_000, backoffBaseMs: 100, backoffCapMs: 400, random: () => 0.999 } })
  const first = ids('h', 10)
  for (const id of first) await transact(spool, id)
  await until('call 1', () => sink.calls.length === 1)
  // A full batch of new rows is ready: it waits for the pause too.
  for (const id of ids('i', 10)) await transact(spool, id)
  await turns()
  t.equal(sink.calls.length, 1, 'nothing goes during the pause')
  let at = 0
  for (const [k, bound] of [100, 200, 400].entries()) {
    t.equal(pipe.stats().consecutiveFailures, k + 1)
    await reach(clock, `pause ${k + 1}`, at + 0.999 * bound)
    at = clock.now()
    // (The new rows follow the last one at once.)
    await until(`call ${k + 2}`, () => sink.calls.length >= k + 2)
    t.same(sink.calls[k + 1]?.ids, first, 'the refused rows first (no pause of their own on top of the pipeline\'s)')
  }
  await until('all shipped', () => sink.accepted.length === 20)
  t.same(sink.calls.map((c) => Math.round(c.at * 10) / 10), [0, 99.9, 299.7, 699.3, 699.3], 'the new rows right after the first call that took rows')
  t.equal(pipe.stats().consecutiveFailures, 0)
  t.equal(pipe.stats().failedCalls, 0, 'no call threw')
  t.equal(pipe.stats().partialFailures, 3)
})

t.test('segments stay while a row keeps failing, and go once it is accepted', async (t) => {
  const sink = new MemorySink()
  let failing = true
  sink.policy = (rows) => failing ? rows.flatMap((r, i) => r.id === 'k-0' ? [i] : []) : []
  const { spool, dir } = await setup(t, { sink, spool: { segmentBytes: 4096 }, pipe: { flushMs: 10 } })
  for (const id of ids('k', 20)) await transact(spool, id)
  await until('the others shipped', () => sink.accepted.length === 19)
  await until('some retries of k-0', () => sink.calls.filter((c) => c.ids.includes('k-0')).length >= 3)
  const held = await segmentFiles(dir)
  t.ok(held.length >= 1, `${held.length} segments held by k-0`)
  t.equal(spool.stats().pendingRows, 1)
  failing = false
  await until('k-0 shipped', () => sink.accepted.length === 20)
  await segmentsDeleted(spool, dir)
})

t.test('sink outage: the spool grows to nearFull and refuses at its bound, then drains when the sink returns', async (t) => {
  const sink = new MemorySink({ maxBatchRows: 50 })
  let down = true
  sink.policy = () => down ? 'throw' : []
  const rowBytes = 1500
  const { spool, pipe, logs, dir } = await setup(t, {
    sink,
    spool: { maxBytes: 100 * (rowBytes + 600), segmentBytes: 16 * 1024 },
    pipe: { flushMs: 20, backoffBaseMs: 20, backoffCapMs: 200 }
  })
  const begun: string[] = []
  let full: PixProxyError | null = null
  let nearFullSeen = false
  const t0 = performance.now()
  // Bounded by rows, not time: far fewer than 1,000 rows of 1,500 bytes fit in maxBytes.
  for (let i = 0; full === null && i < 1_000; i++) {
    const id = `o-${i}`
    try {
      await spool.begin(requestHalf(id, rowBytes))
    } catch (err) {
      full = err as PixProxyError
      break
    }
    begun.push(id)
    await spool.end(id, responseHalf(id))
    nearFullSeen ||= spool.stats().nearFull
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
  const outage = performance.now() - t0
  t.ok(nearFullSeen, 'nearFull rose before the bound')
  t.equal(full?.code, 'PIXPROXY_ERR_AUDIT_SPOOL_FULL', `refused after ${begun.length} rows (${Math.round(outage)} ms of outage)`)
  t.equal(sink.accepted.length, 0)
  // The outage goes on: the pipeline keeps trying, with backoff (however fast the rows above were written).
  await until('a second failed call', () => pipe.stats().failedCalls >= 2)
  t.ok(pipe.stats().failedCalls >= 2, `${pipe.stats().failedCalls} failed calls, with backoff`)
  t.equal(sink.accepted.length, 0)
  t.equal(pipe.stats().lastErrorCode, 'PIXPROXY_ERR_AUDIT_SINK_FAILED')
  t.ok(logs.some((l) => l.level === 'warn' && l.msg.includes('above 80 %')), 'a warning when near the bound')
  down = false
  await until('drained', () => spool.stats().pendingRows === 0)
  t.same(sink.acceptedIds().sort(), [...begun].sort(), 'every row, once')
  await segmentsDeleted(spool, dir)
  t.equal(spool.stats().bytes, 0)
  t.equal(spool.stats().nearFull, false)
  t.ok(pipe.stats().retriedRows > 0)
  await spool.begin(requestHalf('after'))
  t.pass('begin accepted again')
})

t.test('oversized rows: bodies compressed in place to fit, a row that cannot fit is parked, nothing dropped', async (t) => {
  const base = t.testdir()
  const dir = join(base, 'spool')
  const small = new MemorySink({ maxRowBytes: 40_000 })
  const { spool, pipe, logs } = await setup(t, { dir, sink: small })
  const xml = '<Document>' + Array.from({ length: 3000 }, (_, i) => `<Tx><Id>${i}</Id><Amt Ccy="BRL">${i}.00</Amt></Tx>`).join('') + '</Document>'
  const noise = randomBytes(45_000).toString('base64')
  await transact(spool, 'big-xml', { ...requestHalf('big-xml'), request_body: xml })
  await transact(spool, 'big-noise', { ...requestHalf('big-noise'), request_body: noise })
  await spool.begin(requestHalf('marker'))
  await spool.end('marker', { ...responseHalf('marker'), response_body: `${AUDIT_BODY_GZIP_PREFIX}not really` })
  await transact(spool, 'plain')
  await until('three rows shipped', () => small.accepted.length === 3)
  const got = new Map(small.accepted.map((r) => [r.id, r]))

  const big = got.get('big-xml') as AuditRow
  t.ok(xml.length > 100_000 && auditRowBytes(big) <= 40_000, `a ${xml.length}-byte body fits in ${auditRowBytes(big)}`)
  t.ok(big.request_body?.startsWith(AUDIT_BODY_GZIP_PREFIX))
  t.equal(decodeAuditBody(big.request_body), xml, 'lossless')
  t.equal(big.response_body, '<Ack id="big-xml"/>', 'the other body is left alone when one is enough')
  const marker = got.get('marker') as AuditRow
  t.ok(marker.response_body?.startsWith(AUDIT_BODY_GZIP_PREFIX) && marker.response_body !== `${AUDIT_BODY_GZIP_PREFIX}not really`, 'a body that looks encoded is always encoded')
  t.equal(decodeAuditBody(marker.response_body), `${AUDIT_BODY_GZIP_PREFIX}not really`)
  t.equal(damage(got.get('plain') as AuditRow), null, 'rows that fit are untouched')
  t.notOk(got.has('big-noise'))

  t.equal(spool.stats().parkedRows, 1)
  t.equal(pipe.stats().parkedRows, 1)
  t.equal(pipe.stats().compressedRows, 2)
  t.ok(logs.some((l) => l.level === 'error' && l.code === 'PIXPROXY_ERR_AUDIT_ROW_TOO_LARGE'))
  const parked = JSON.parse(await readFile(join(dir, 'parked-big-noise.json'), 'utf8')) as { row: AuditRow }
  t.equal(parked.row.request_body, noise, 'parked whole, uncompressed')
  await segmentsDeleted(spool, dir)
  t.pass('a parked row does not hold the segments')
  t.equal(spool.stats().pendingRows, 0)
  t.ok(spool.stats().bytes > 45_000, 'the parked file counts against the bound')

  // After a restart with a sink that takes it, the parked row ships and its file goes.
  await pipe.close(1000)
  await spool.close()
  const roomy = new MemorySink()
  const again = await setup(t, { dir, sink: roomy })
  await until('parked row shipped', () => roomy.accepted.length === 1)
  t.equal(roomy.accepted[0]?.request_body, noise)
  await until('parked file deleted', () => again.spool.stats().bytes === 0)
  t.notOk((await readdir(dir)).some((n) => n.startsWith('parked-')))
})

t.test('encodeAuditBody and decodeAuditBody round-trip any text', async (t) => {
  for (const s of ['', 'é€😀', '<a/>'.repeat(1000), AUDIT_BODY_GZIP_PREFIX]) {
    const e = await encodeAuditBody(s)
    t.ok(e.startsWith(AUDIT_BODY_GZIP_PREFIX))
    t.equal(decodeAuditBody(e), s)
  }
  t.equal(decodeAuditBody(null), null)
  t.equal(decodeAuditBody('<a/>'), '<a/>')
})

t.test('backoff is exponential with full jitter, capped', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink()
  sink.policy = (_, call) => call < 6 ? 'throw' : []
  const { spool } = await setup(t, { sink, clock, pipe: { flushMs: 0, backoffBaseMs: 100, backoffCapMs: 400, random: () => 0.999 } })
  await transact(spool, 'j')
  // Doubling from the base, then held at the cap (a pause that ignored it, 800 ms, fails).
  const expected = [100, 200, 400, 400, 400, 400]
  for (const [i, bound] of expected.entries()) {
    await until(`call ${i + 1}`, () => sink.calls.length === i + 1)
    const due = clock.now() + bound * 0.999
    await reach(clock, `pause ${i + 1}`, due) // the pipeline waits exactly that long before the next call
  }
  await until('shipped', () => sink.accepted.length === 1)
  t.equal(sink.calls.length, 7)
  const gaps = sink.calls.slice(1).map((c, i) => c.at - (sink.calls[i]?.at ?? 0))
  gaps.forEach((g, i) => {
    const e = (expected[i] as number) * 0.999
    t.ok(Math.abs(g - e) < 1e-6, `pause ${i + 1}: ${g.toFixed(1)} ms, bound ${expected[i]}`)
  })
})

t.test('close ships what is ready without waiting for flushMs', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink()
  const { spool, pipe } = await setup(t, { sink, clock, pipe: { flushMs: 60_000 } })
  for (const id of ids('c', 3)) await transact(spool, id)
  await spool.begin(requestHalf('c-open')) // in flight to BACEN: cannot ship
  let r: { shipped: number, left: number } | null = null
  void pipe.close(5000).then((x) => { r = x })
  // Time stands still: returning at all shows it waited neither for flushMs nor for its deadline.
  await until('close returned', () => r !== null)
  t.pass('at once')
  t.equal(clock.now(), 0)
  t.same(r, { shipped: 3, left: 1 })
  t.equal(sink.accepted.length, 3)
})

t.test('close stops at its deadline; what is left stays in the spool for the next start', async (t) => {
  const base = t.testdir()
  const dir = join(base, 'spool')
  const clock = new ManualClock()
  const sink = new MemorySink({ maxBatchRows: 10 })
  sink.hold = true // each call takes as long as the test says
  const first = await setup(t, { dir, sink, clock, pipe: { flushMs: 60_000 } })
  const all = ids('d', 100)
  await Promise.all(all.map(async (id) => { await transact(first.spool, id) }))
  await until('the first call', () => sink.held.length === 1)
  let r: { shipped: number, left: number } | null = null
  void first.pipe.close(1_000).then((x) => { r = x })
  await clock.until('the close deadline', 1_000)
  // Two calls finish before the deadline; the third is still running at it.
  for (let call = 2; call <= 3; call++) {
    sink.held.shift()?.release()
    await until(`call ${call}`, () => sink.held.length === 1)
  }
  clock.advance(999)
  await turns()
  t.equal(r, null, 'still shipping before its deadline')
  clock.advance(1)
  await until('close returned', () => r !== null)
  t.equal(clock.now(), 1_000, 'returned at its deadline, not waiting for the call in flight')
  const res = r as unknown as { shipped: number, left: number }
  t.equal(res.shipped, 20, `${res.shipped} shipped`)
  t.equal(res.shipped + res.left, 100, 'shipped + left = all (a call in flight counts as left)')
  const inFlight = sink.calls.length * 10 - sink.accepted.length
  t.equal(inFlight, 10)
  sink.held.shift()?.release() // the call in flight at the deadline ends
  await first.pipe.stopped()
  await first.spool.close()
  const shipped = sink.acceptedIds()

  const second = new MemorySink()
  const next = await setup(t, { dir, sink: second, pipe: { flushMs: 10 } })
  await until('the rest shipped', () => next.spool.stats().pendingRows === 0)
  const union = new Set([...shipped, ...second.acceptedIds()])
  t.equal(union.size, 100, 'nothing lost')
  const dup = shipped.filter((id) => second.acceptedIds().includes(id)).length
  t.ok(dup <= inFlight, `${dup} shipped twice (at most the ${inFlight} rows of the call cut off by the deadline)`)
})

t.test('a deadline passing while a batch is assembled: no call starts after it, the rows stay in the spool', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink()
  sink.hold = true // a call started after the deadline would keep close() waiting: it must not start at all
  t.teardown(() => { for (const h of sink.held.splice(0)) h.release() })
  const { spool, pipe } = await setup(t, { sink, clock, pipe: { flushMs: 60_000 } })
  const all = ids('y', 10)
  for (const id of all) await transact(spool, id)
  // Assembling a batch yields (to the begin and end calls waiting); here the deadline passes during the fifth
  // row's load, as it can during any yield of a large batch.
  const load = spool.load.bind(spool)
  let loads = 0
  spool.load = async (ref) => {
    if (++loads === 5) clock.advance(1_000)
    return await load(ref)
  }
  let r: { shipped: number, left: number } | null = null
  void pipe.close(1_000).then((x) => { r = x })
  await until('close returned, or a call started', () => r !== null || sink.calls.length > 0)
  t.same(sink.calls, [], 'no call to the sink after the deadline')
  await until('close returned', () => r !== null)
  t.equal(clock.now(), 1_000)
  t.same(r, { shipped: 0, left: 10 })
  t.equal(spool.stats().readyRows, 10, 'every row handed back to the spool, none lost between shift and ship')
  spool.load = load
  const refs = []
  for (let ref = spool.shift(); ref !== undefined; ref = spool.shift()) refs.push(ref)
  t.same(refs.map((x) => x.id), all, 'in their order')
  spool.unshift(refs)
})

t.test('close with the sink down returns at the deadline with everything left', async (t) => {
  const clock = new ManualClock()
  const sink = new MemorySink()
  sink.policy = () => 'throw'
  const { spool, pipe } = await setup(t, { sink, clock, pipe: { flushMs: 10, backoffBaseMs: 10_000, backoffCapMs: 10_000, random: () => 0.999 } })
  for (const id of ids('e', 5)) await transact(spool, id)
  await clock.until('the flush timer', 10)
  clock.advance(10)
  await until('a failed call', () => sink.calls.length >= 1)
  await clock.until('the 10 s backoff', 10 + 9_990)
  const t0 = clock.now()
  let r: { shipped: number, left: number } | null = null
  void pipe.close(500).then((x) => { r = x })
  await clock.until('the backoff cut short by the deadline', t0 + 500)
  clock.advance(499)
  await turns()
  t.equal(r, null, 'not before its deadline')
  clock.advance(1)
  await until('close returned', () => r !== null)
  t.equal(clock.now() - t0, 500, 'returned at the deadline, not after the 10 s backoff')
  t.same(r, { shipped: 0, left: 5 })
  t.equal(spool.stats().readyRows, 5, 'rows handed back to the spool')
})

t.test('rows replayed at open ship first, incomplete ones with PIXPROXY_ERR_AUDIT_INCOMPLETE', async (t) => {
  const dir = join(t.testdir(), 'spool')
  const s = await AuditSpool.open({ dir, maxBytes: 1 << 26 })
  await transact(s, 'r-done')
  await s.begin(requestHalf('r-open'))
  await s.close()
  const sink = new MemorySink()
  const { spool } = await setup(t, { dir, sink, pipe: { flushMs: 10 } })
  await until('both shipped', () => sink.accepted.length === 2)
  const byId = new Map(sink.accepted.map((r) => [r.id, r]))
  t.equal(byId.get('r-done')?.error_code, null)
  t.equal(byId.get('r-open')?.error_code, 'PIXPROXY_ERR_AUDIT_INCOMPLETE')
  t.equal(damage(byId.get('r-open') as AuditRow), null)
  await until('spool empty', () => spool.stats().bytes === 0)
})

t.test('a sink reporting an index outside the batch is logged, not trusted', async (t) => {
  const sink = new MemorySink()
  sink.policy = (_, call) => call === 0 ? [7, -1] : []
  const { spool, logs } = await setup(t, { sink, pipe: { flushMs: 10 } })
  await transact(spool, 'x-0')
  await until('shipped', () => spool.stats().pendingRows === 0)
  t.equal(sink.calls.length, 1)
  t.equal(logs.filter((l) => l.level === 'error' && l.code === 'PIXPROXY_ERR_INTERNAL').length, 2)
})

/**
 * The schedule. The open model must count a stall (of the target or of the loader itself) in the latency of every
 * request that was due during it; a closed model with one worker sends a single request into the same stall and
 * reports one slow sample (coordinated omission), which is why the open model exists. Also: bounds (count,
 * duration, outstanding, drain deadline, per-request timeout) and that every arrival ends as exactly one of ok,
 * error or dropped.
 *
 * Every run here is on a VirtualClock (tools/load/clock.ts): the targets are simulated on the same clock, time moves
 * only when nothing else can run, so each due time, latency and deadline is exact and no assertion depends on how
 * fast or busy the machine is.
 */
import t from 'tap'
import { ABANDON_AFTER_ABORT_MS, runEngine, WeightedPicker } from '../../tools/load/engine.ts'
import type { EngineOptions, EngineResult, Outcome } from '../../tools/load/engine.ts'
import { realClock, VirtualClock } from '../../tools/load/clock.ts'

interface Sample { due: number, latency: number, outcome: Outcome }

/** Runs the engine on a fresh virtual clock; `setup` builds the options with that clock. */
async function simulate<Op extends string> (setup: (clock: VirtualClock) => Omit<EngineOptions<Op>, 'clock'>): Promise<{ r: EngineResult<Op>, clock: VirtualClock, started: number }> {
  const clock = new VirtualClock(1_000)
  const started = clock.now()
  const r = await clock.run(runEngine({ ...setup(clock), clock }))
  return { r, clock, started }
}

const SERVICE_MS = 2

/**
 * A target on the virtual clock: each request takes SERVICE_MS; `stallAfterMs` after its first request it freezes
 * for `stallMs` (a GC pause, a stuck CPU): whatever it would have answered meanwhile is answered when the stall ends.
 */
function stallingTarget (clock: VirtualClock, stallAfterMs: number, stallMs: number): { execute: (op: string, signal: AbortSignal) => Promise<Outcome>, stall: { start: number, end: number } } {
  const stall = { start: Number.NaN, end: Number.NaN }
  return {
    stall,
    execute: async (_op, signal) => {
      if (Number.isNaN(stall.start)) {
        stall.start = clock.now() + stallAfterMs
        stall.end = stall.start + stallMs
      }
      await clock.sleep(SERVICE_MS, signal)
      const now = clock.now()
      if (now >= stall.start && now < stall.end) await clock.sleep(stall.end - now, signal)
      signal.throwIfAborted()
      return { ok: true }
    }
  }
}

t.test('open model: every request due during a 200 ms target stall shows the wait; a closed model hides it', async (t) => {
  const open: Sample[] = []
  let target!: ReturnType<typeof stallingTarget>
  const { r } = await simulate((clock) => {
    target = stallingTarget(clock, 300, 200)
    return {
      model: { kind: 'open', ratePerSec: 200 },
      durationMs: 1000,
      mix: [['get', 1]],
      execute: target.execute,
      onResult: (_op, from, latency, outcome) => { open.push({ due: from, latency, outcome }) }
    }
  })
  const { start, end } = target.stall
  t.equal(r.totals.count, 200, 'the schedule sent all 200 arrivals')
  t.equal(r.totals.ok, 200, 'and all succeeded')
  const during = open.filter((s) => s.due >= start && s.due < end)
  t.equal(during.length, 40, 'requests were due during the stall: 200/s × 200 ms')
  for (const s of during) {
    const waited = Math.max(end - s.due, SERVICE_MS)
    if (s.latency !== waited) t.fail(`a request due ${(s.due - start).toFixed(1)} ms into the stall reports ${s.latency} ms, not the ${waited} ms it waited`)
  }
  t.pass('each of them reports the time from its scheduled send to the end of the stall')
  t.ok(open.filter((s) => s.due < start || s.due >= end).every((s) => s.latency === SERVICE_MS), 'the others report the service time')
  t.equal(r.totals.latency.max, 200, 'max = the stall')
  t.ok(r.totals.latency.p90 >= 50, `the stall reaches p90 (${r.totals.latency.p90.toFixed(1)} ms): 20% of the run waited behind it`)

  // The same stall under a closed model with one worker: one request waits, the loader waits with it, and only one
  // slow sample is recorded, although a real arrival process would have queued ~40 requests behind the stall.
  const closed: Sample[] = []
  const { r: c } = await simulate((clock) => {
    const target2 = stallingTarget(clock, 300, 200)
    return {
      model: { kind: 'closed', concurrency: 1 },
      durationMs: 1000,
      mix: [['get', 1]],
      execute: target2.execute,
      onResult: (_op, from, latency, outcome) => { closed.push({ due: from, latency, outcome }) }
    }
  })
  const slow = closed.filter((s) => s.latency > SERVICE_MS)
  t.equal(slow.length, 1, `closed model: a single slow sample out of ${c.totals.count}`)
  t.ok((slow[0]?.latency ?? 0) >= 200, `and it holds the whole stall (${slow[0]?.latency} ms)`)
  t.equal(c.totals.count, closed.length)
  t.ok(c.totals.latency.p90 < 50, `closed model p90 ${c.totals.latency.p90.toFixed(2)} ms does not show the stall`)
  t.equal(open.filter((s) => s.latency > 50).length, 30, 'while the open model shows it in dozens of requests (due in the first 150 ms of the stall)')
})

t.test('open model: a stall of the loader itself is charged to the requests it delayed', async (t) => {
  let calls = 0
  let blocked: [number, number] = [0, 0]
  const samples: Sample[] = []
  const { r } = await simulate((clock) => ({
    model: { kind: 'open', ratePerSec: 200 },
    durationMs: 1000,
    mix: [['op', 1]],
    execute: async () => {
      if (++calls === 60) {
        // The loader's event loop is stuck for 200 ms: time passes, nothing else runs.
        const start = clock.now()
        clock.advance(200)
        blocked = [start, clock.now()]
      }
      return { ok: true }
    },
    onResult: (_op, from, latency, outcome) => { samples.push({ due: from, latency, outcome }) }
  }))
  t.equal(r.totals.count, 200)
  const [start, end] = blocked
  const delayed = samples.filter((s) => s.due > start && s.due < end)
  t.equal(delayed.length, 39, 'arrivals due while the loader was stuck (200/s × 200 ms, after the one that stuck it)')
  t.ok(delayed.every((s) => s.latency === end - s.due), 'each latency runs from the scheduled time, not from the late send')
  t.equal(r.totals.latency.max, 200, 'max = the stall')
})

t.test('open model: outstanding requests are bounded; the excess is dropped and counted', async (t) => {
  const { r } = await simulate((clock) => ({
    model: { kind: 'open', ratePerSec: 100 },
    durationMs: 1000,
    mix: [['slow', 1]],
    maxOutstanding: 5,
    execute: async (_op, signal) => {
      await clock.sleep(300, signal)
      signal.throwIfAborted()
      return { ok: true }
    }
  }))
  t.equal(r.totals.count, 100)
  // Each 300 ms the 5 slots take the arrivals of the first 50 ms and free up together: 4 rounds of 5.
  t.equal(r.totals.ok, 20, 'the few admitted succeeded')
  t.equal(r.totals.dropped, 80, 'the rest were dropped')
  t.equal(r.totals.errors, 0)
  t.equal(r.totals.ok + r.totals.errors + r.totals.dropped, r.totals.count, 'ok + errors + dropped = count')
  t.equal(r.ops.slow?.dropped, r.totals.dropped)
  t.equal(r.totals.series.reduce((a, s) => a + s.dropped, 0), r.totals.dropped, 'drops are in the time series')
  t.same(r.totals.series.map((s) => s.dropped), [80, 0], 'all in the first second')
})

t.test('the drain has a deadline; requests still out then are aborted and counted as errors', async (t) => {
  const { r, clock, started } = await simulate((_clock) => ({
    model: { kind: 'open', ratePerSec: 20 },
    durationMs: 500,
    drainMs: 300,
    mix: [['hang', 1]],
    execute: async (_op, signal) => {
      await new Promise((resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }) })
      return { ok: true }
    }
  }))
  t.equal(r.totals.count, 10)
  t.equal(r.totals.errorsByCode.LOAD_DRAIN_DEADLINE, 10, 'every hanging request ended as LOAD_DRAIN_DEADLINE')
  t.equal(r.abortedAtDrain, 10)
  t.equal(r.scheduleMs, 450, 'the last arrival was due at 450 ms')
  t.equal(r.elapsedMs, 450 + 300, 'the run ended at the drain deadline, 300 ms after the last arrival')
  t.equal(clock.now() - started, 5 + 750, 'and the report came then (the schedule starts 5 ms after the call)')
})

t.test('an operation that ignores its abort signal is given up on, so the report still comes', async (t) => {
  for (const model of [{ kind: 'open', ratePerSec: 10 }, { kind: 'closed', concurrency: 3 }] as const) {
    const { r } = await simulate((clock) => ({
      model,
      durationMs: 300,
      drainMs: 200,
      mix: [['deaf', 1]],
      execute: async () => {
        await clock.sleep(30_000)
        return { ok: true }
      }
    }))
    t.equal(r.totals.count, 3, `${model.kind}: 3 arrivals`)
    t.equal(r.totals.errorsByCode.LOAD_DRAIN_DEADLINE, 3, `${model.kind}: all counted as LOAD_DRAIN_DEADLINE`)
    // Open: the drain runs from the last arrival (200 ms); closed: from the end of the duration (300 ms).
    const deadline = model.kind === 'open' ? 200 + 200 : 300 + 200
    t.equal(r.elapsedMs, deadline + ABANDON_AFTER_ABORT_MS, `${model.kind}: the report came ${ABANDON_AFTER_ABORT_MS} ms after the drain deadline, not after the 30 s the operations take`)
  }
})

t.test('a request slower than the timeout is LOAD_TIMEOUT', async (t) => {
  const { r } = await simulate((_clock) => ({
    model: { kind: 'closed', concurrency: 2 },
    durationMs: 300,
    requestTimeoutMs: 100,
    mix: [['hang', 1]],
    execute: async (_op, signal) => {
      await new Promise((resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }) })
      return { ok: true }
    }
  }))
  t.equal(r.totals.count, 6, 'two workers, each timed out at 100, 200 and 300 ms')
  t.equal(r.totals.errorsByCode.LOAD_TIMEOUT, r.totals.count)
  t.equal(r.elapsedMs, 300)
})

t.test('count bounds the run before the duration; closed model too', async (t) => {
  const { r: open } = await simulate((clock) => ({
    model: { kind: 'open', ratePerSec: 100 },
    durationMs: 60_000,
    count: 25,
    mix: [['a', 1]],
    execute: async () => {
      await clock.sleep(1)
      return { ok: true }
    }
  }))
  t.equal(open.totals.count, 25)
  t.equal(open.elapsedMs, 241, 'stopped at the count (the 25th arrival, due at 240 ms, answered 1 ms later), not after a minute')
  const { r: closed } = await simulate((clock) => ({
    model: { kind: 'closed', concurrency: 4 },
    durationMs: 60_000,
    count: 50,
    mix: [['a', 1]],
    execute: async () => {
      await clock.sleep(1)
      return { ok: true }
    }
  }))
  t.equal(closed.totals.count, 50)
  t.equal(closed.elapsedMs, 13, '4 workers × 1 ms: 50 requests in 13 rounds')
})

t.test('progress ticks once a second with the second just completed', async (t) => {
  const ticks: Array<{ elapsedMs: number, t: number, ok: number, totalOk: number }> = []
  const { r } = await simulate((clock) => ({
    model: { kind: 'open', ratePerSec: 10 },
    durationMs: 3000,
    mix: [['a', 1]],
    execute: async () => {
      await clock.sleep(1)
      return { ok: true }
    },
    onTick: (tick) => { ticks.push({ elapsedMs: tick.elapsedMs, t: tick.last.t, ok: tick.last.ok, totalOk: tick.totals.ok }) }
  }))
  t.equal(r.totals.ok, 30)
  t.same(ticks.map((k) => [k.t, k.ok]), [[0, 10], [1, 10]], 'seconds 0 and 1, ten successes each (the run ends during second 2)')
  // Ticks come every 250 ms; the first after a second boundary (1245 ms and 2245 ms into the run) reports it, with
  // the running totals of that moment: 13 and 23 answered (one arrival per 100 ms, each answered 1 ms later).
  t.same(ticks.map((k) => k.elapsedMs), [1245, 2245])
  t.same(ticks.map((k) => k.totalOk), [13, 23])
})

t.test('on the real clock the schedule is the same (counts only: real timing is the machine\'s)', async (t) => {
  const r = await runEngine({ model: { kind: 'open', ratePerSec: 1000 }, durationMs: 60_000, count: 20, mix: [['a', 1], ['b', 1]], clock: realClock, execute: async () => ({ ok: true }) })
  t.equal(r.totals.count, 20)
  t.equal(r.totals.ok, 20)
  t.equal(r.ops.a.count, 10)
  t.equal(r.ops.b.count, 10)
})

t.test('closed model: rates are over the scheduled window; the drain after it is reported apart', async (t) => {
  // 4 workers, 10 s: fast requests (10 ms) and now and then a long poll (2 s) that is still out when the time is up.
  const ends: Array<{ end: number, ok: boolean }> = []
  let first = Number.NaN
  const { r } = await simulate((clock) => ({
    model: { kind: 'closed', concurrency: 4 },
    durationMs: 10_000,
    mix: [['fast', 9], ['poll', 1]],
    execute: async (op) => {
      if (Number.isNaN(first)) first = clock.now()
      await clock.sleep(op === 'poll' ? 2_000 : 10)
      return { ok: true }
    },
    onResult: (_op, from, latency, outcome) => { ends.push({ end: from + latency, ok: outcome.ok }) }
  }))
  const windowEnd = first + 10_000
  t.equal(r.windowMs, 10_000, 'the window is the duration')
  t.equal(r.elapsedMs, 10_580, 'the last long poll, started 1.42 s before the end, held the run past it')
  t.equal(r.drainMs, r.elapsedMs - 10_000, 'the drain is what came after the window')
  const inWindow = ends.filter((e) => e.ok && e.end <= windowEnd).length
  t.equal(r.totals.okInWindow, inWindow, `${inWindow} successes answered within the window`)
  t.equal(r.totals.endedAfterWindow, ends.filter((e) => e.end > windowEnd).length)
  t.ok(r.totals.endedAfterWindow > 0 && r.totals.endedAfterWindow <= 4, 'at most one request per worker ends in the drain')
  t.equal(r.totals.ok, r.totals.okInWindow + r.totals.endedAfterWindow, 'every request counted once, in the window or the drain')
  t.equal(r.ops.fast?.okInWindow, ends.length - r.totals.endedAfterWindow - (r.ops.poll?.okInWindow ?? 0), 'per operation too')
})

t.test('open model: the same window (the duration, or count/rate), offered rate exact', async (t) => {
  for (const [serviceMs, inWindow, drainMs] of [[50, 100, 0], [150, 99, 50]] as const) {
    const { r } = await simulate((clock) => ({
      model: { kind: 'open', ratePerSec: 10 },
      durationMs: 10_000,
      mix: [['a', 1]],
      execute: async () => {
        await clock.sleep(serviceMs)
        return { ok: true }
      }
    }))
    t.equal(r.totals.count, 100)
    t.equal(r.scheduleMs, 9_900, 'the last arrival was due at 9.9 s')
    t.equal(r.windowMs, 10_000, 'the window is the duration, not the span of the due times')
    t.equal(r.totals.okInWindow, inWindow, `${serviceMs} ms answers: ${inWindow} within the window`)
    t.equal(r.drainMs, drainMs, `and a drain of ${drainMs} ms`)
  }
  const { r: counted } = await simulate((clock) => ({
    model: { kind: 'open', ratePerSec: 100 },
    durationMs: 60_000,
    count: 25,
    mix: [['a', 1]],
    execute: async () => {
      await clock.sleep(1)
      return { ok: true }
    }
  }))
  t.equal(counted.windowMs, 250, 'a count ends the window at count/rate')
  t.equal(counted.totals.okInWindow, 25)
  const { r: closed } = await simulate((clock) => ({
    model: { kind: 'closed', concurrency: 4 },
    durationMs: 60_000,
    count: 50,
    mix: [['a', 1]],
    execute: async () => {
      await clock.sleep(1)
      return { ok: true }
    }
  }))
  t.equal(closed.windowMs, 12, 'closed model with a count: the window ends when the last request starts')
  t.equal(closed.totals.okInWindow, 48, 'the two started then end in the drain')
  t.equal(closed.drainMs, 1)
})

t.test('errors are counted by code, with the first detail; exceptions get a code too', async (t) => {
  let n = 0
  const { r } = await simulate((_clock) => ({
    model: { kind: 'open', ratePerSec: 100 },
    durationMs: 100,
    mix: [['x', 1]],
    execute: async () => {
      n++
      if (n % 3 === 0) return { ok: false, code: '400 EntryInvalid', detail: 'first' }
      if (n % 3 === 1) {
        const err: NodeJS.ErrnoException = new Error('refused')
        err.code = 'ECONNREFUSED'
        throw err
      }
      return { ok: true, signatureFailure: false }
    }
  }))
  t.equal(r.totals.count, 10)
  t.same(r.totals.errorsByCode, { ECONNREFUSED: 4, '400 EntryInvalid': 3 })
  t.equal(r.totals.errorDetails['400 EntryInvalid'], 'first')
  t.equal(r.totals.ok, 3)
})

t.test('the weighted picker follows the weights exactly over each window', async (t) => {
  const p = new WeightedPicker([['a', 4], ['b', 2], ['c', 1], ['d', 0]])
  const counts: Record<string, number> = {}
  const firstWindow: string[] = []
  for (let i = 0; i < 70; i++) {
    const op = p.next()
    if (i < 7) firstWindow.push(op)
    counts[op] = (counts[op] ?? 0) + 1
  }
  t.same(counts, { a: 40, b: 20, c: 10 })
  t.same([...firstWindow].sort(), ['a', 'a', 'a', 'a', 'b', 'b', 'c'], 'every window of 7 has the exact mix')
  t.throws(() => new WeightedPicker([['a', 0]]), RangeError)
})

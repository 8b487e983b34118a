/**
 * The schedule. The open model must count a stall (of the target or of the loader itself) in the latency of every
 * request that was due during it; a closed model with one worker sends a single request into the same stall and
 * reports one slow sample (coordinated omission), which is why the open model exists. Also: bounds (count,
 * duration, outstanding, drain deadline, per-request timeout) and that every arrival ends as exactly one of ok,
 * error or dropped.
 */
import t from 'tap'
import type { Test } from 'tap'
import { performance } from 'node:perf_hooks'
import { Worker } from 'node:worker_threads'
import { Agent } from 'undici'
import { runEngine, WeightedPicker } from '../../src/load/engine.ts'
import type { Outcome } from '../../src/load/engine.ts'

/**
 * An HTTP server on its own thread that, when told, blocks its event loop for `ms` while handling the next
 * request (a GC pause, a stuck CPU): requests arriving meanwhile wait in the socket buffers. Reports the stall's
 * start and end in absolute milliseconds (timeOrigin + now, comparable across threads).
 */
const SERVER = `
const { parentPort } = require('node:worker_threads')
const http = require('node:http')
let stallMs = 0
const server = http.createServer((req, res) => {
  if (stallMs > 0) {
    const ms = stallMs
    stallMs = 0
    const start = performance.timeOrigin + performance.now()
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
    parentPort.postMessage({ stall: [start, performance.timeOrigin + performance.now()] })
  }
  res.end('ok')
})
server.keepAliveTimeout = 30000
parentPort.on('message', (m) => { stallMs = m.stallMs })
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }))
`

interface StallServer { url: string, stall (ms: number): Promise<[number, number]> }

async function stallServer (t: Test): Promise<StallServer> {
  const worker = new Worker(SERVER, { eval: true })
  t.teardown(async () => { await worker.terminate() })
  const port = await new Promise<number>((resolve) => {
    worker.once('message', (m: { port: number }) => { resolve(m.port) })
  })
  return {
    url: `http://127.0.0.1:${port}`,
    stall: async (ms) => {
      const done = new Promise<[number, number]>((resolve) => {
        const on = (m: { stall?: [number, number] }): void => {
          if (m.stall === undefined) return
          worker.off('message', on)
          resolve(m.stall)
        }
        worker.on('message', on)
      })
      worker.postMessage({ stallMs: ms })
      return await done
    }
  }
}

const abs = (perf: number): number => performance.timeOrigin + perf

interface Sample { due: number, latency: number, outcome: Outcome }

function httpExecute (agent: Agent, url: string): (op: 'get', signal: AbortSignal) => Promise<Outcome> {
  const origin = new URL(url).origin
  return async (_op, signal) => {
    const res = await agent.request({ origin, path: '/', method: 'GET', signal })
    await res.body.dump()
    return res.statusCode === 200 ? { ok: true } : { ok: false, code: String(res.statusCode) }
  }
}

t.test('open model: every request due during a 200 ms target stall shows the wait; a closed model hides it', async (t) => {
  const server = await stallServer(t)
  const agent = new Agent({ connections: 256 })
  t.teardown(async () => { await agent.close() })
  const execute = httpExecute(agent, server.url)
  // Warm the connections so the measurement is about the stall, not about TCP set-up.
  await runEngine({ model: { kind: 'open', ratePerSec: 200 }, durationMs: 300, mix: [['get', 1]], execute })

  const open: Sample[] = []
  const stall = new Promise<[number, number]>((resolve) => {
    setTimeout(() => { resolve(server.stall(200)) }, 300)
  })
  const r = await runEngine({
    model: { kind: 'open', ratePerSec: 200 },
    durationMs: 1000,
    mix: [['get', 1]],
    execute,
    onResult: (_op, from, latency, outcome) => { open.push({ due: abs(from), latency, outcome }) }
  })
  const [start, end] = await stall
  t.equal(r.totals.count, 200, 'the schedule sent all 200 arrivals')
  t.equal(r.totals.ok, 200, 'and all succeeded')
  const during = open.filter((s) => s.due > start + 5 && s.due < end - 5)
  t.ok(during.length >= 30, `requests were due during the stall (${during.length}; 200/s × 200 ms ≈ 40)`)
  for (const s of during) {
    if (s.latency < end - s.due - 5) t.fail(`a request due ${(s.due - start).toFixed(1)} ms into the stall reports ${s.latency.toFixed(1)} ms, less than the ${(end - s.due).toFixed(1)} ms it waited`)
  }
  t.pass('each of them reports at least the time from its scheduled send to the end of the stall')
  t.ok((r.totals.latency.max) >= 180, `max ≈ the stall (${r.totals.latency.max.toFixed(1)} ms)`)
  t.ok(r.totals.latency.p90 >= 50, `the stall reaches p90 (${r.totals.latency.p90.toFixed(1)} ms): ~20% of the run waited behind it`)

  // The same stall under a closed model with one worker: one request waits, the loader waits with it, and only one
  // slow sample is recorded, although a real arrival process would have queued ~40 requests behind the stall.
  const closed: Sample[] = []
  const stall2 = new Promise<[number, number]>((resolve) => {
    setTimeout(() => { resolve(server.stall(200)) }, 300)
  })
  const c = await runEngine({
    model: { kind: 'closed', concurrency: 1 },
    durationMs: 1000,
    mix: [['get', 1]],
    execute,
    onResult: (_op, from, latency, outcome) => { closed.push({ due: abs(from), latency, outcome }) }
  })
  await stall2
  // Slow = most of the 200 ms stall: a busy machine adds hiccups of tens of ms to other samples, not this.
  const slow = closed.filter((s) => s.latency > 150)
  t.equal(slow.length, 1, `closed model: a single slow sample out of ${c.totals.count}`)
  t.ok(c.totals.latency.p90 < 50, `closed model p90 ${c.totals.latency.p90.toFixed(2)} ms does not show the stall`)
  t.ok(open.filter((s) => s.latency > 50).length >= 25, 'while the open model shows it in dozens of requests')
})

t.test('open model: a stall of the loader itself is charged to the requests it delayed', async (t) => {
  let calls = 0
  let blocked: [number, number] = [0, 0]
  const samples: Sample[] = []
  const r = await runEngine({
    model: { kind: 'open', ratePerSec: 200 },
    durationMs: 1000,
    mix: [['op', 1]],
    execute: async () => {
      if (++calls === 60) {
        const start = performance.now()
        while (performance.now() - start < 200) { /* the loader's event loop is stuck */ }
        blocked = [abs(start), abs(performance.now())]
      }
      return { ok: true }
    },
    onResult: (_op, from, latency, outcome) => { samples.push({ due: abs(from), latency, outcome }) }
  })
  t.equal(r.totals.count, 200)
  const [start, end] = blocked
  const delayed = samples.filter((s) => s.due > start + 2 && s.due < end - 2)
  t.ok(delayed.length >= 35, `arrivals due while the loader was stuck (${delayed.length})`)
  t.ok(delayed.every((s) => s.latency >= end - s.due - 2), 'each latency runs from the scheduled time, not from the late send')
  t.ok(r.totals.latency.max >= 190, `max ${r.totals.latency.max.toFixed(1)} ms`)
})

t.test('open model: outstanding requests are bounded; the excess is dropped and counted', async (t) => {
  const r = await runEngine({
    model: { kind: 'open', ratePerSec: 100 },
    durationMs: 1000,
    mix: [['slow', 1]],
    maxOutstanding: 5,
    execute: async (_op, signal) => {
      await new Promise((resolve) => { setTimeout(resolve, 300).unref() })
      signal.throwIfAborted()
      return { ok: true }
    }
  })
  t.equal(r.totals.count, 100)
  t.ok(r.totals.dropped > 70, `most arrivals dropped (${r.totals.dropped})`)
  t.ok(r.totals.ok > 10 && r.totals.ok <= 25, `the few admitted succeeded (${r.totals.ok})`)
  t.equal(r.totals.ok + r.totals.errors + r.totals.dropped, r.totals.count, 'ok + errors + dropped = count')
  t.equal(r.ops.slow.dropped, r.totals.dropped)
  t.equal(r.totals.series.reduce((a, s) => a + s.dropped, 0), r.totals.dropped, 'drops are in the time series')
})

t.test('the drain has a deadline; requests still out then are aborted and counted as errors', async (t) => {
  const started = performance.now()
  const r = await runEngine({
    model: { kind: 'open', ratePerSec: 20 },
    durationMs: 500,
    drainMs: 300,
    mix: [['hang', 1]],
    execute: async (_op, signal) => {
      await new Promise((resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }) })
      return { ok: true }
    }
  })
  const took = performance.now() - started
  t.equal(r.totals.count, 10)
  t.equal(r.totals.errorsByCode.LOAD_DRAIN_DEADLINE, 10, 'every hanging request ended as LOAD_DRAIN_DEADLINE')
  t.equal(r.abortedAtDrain, 10)
  // The operations never end by themselves: any bound proves the point; this one leaves a busy machine 2 s.
  t.ok(took < 500 + 300 + 2_200, `the run ended at the drain deadline (${took.toFixed(0)} ms)`)
})

t.test('an operation that ignores its abort signal is given up on, so the report still comes', async (t) => {
  for (const model of [{ kind: 'open', ratePerSec: 10 }, { kind: 'closed', concurrency: 3 }] as const) {
    const started = performance.now()
    const r = await runEngine({
      model,
      durationMs: 300,
      drainMs: 200,
      mix: [['deaf', 1]],
      execute: async () => {
        await new Promise((resolve) => { setTimeout(resolve, 30_000).unref() })
        return { ok: true }
      }
    })
    const took = performance.now() - started
    t.equal(r.totals.count, 3, `${model.kind}: 3 arrivals`)
    t.equal(r.totals.errorsByCode.LOAD_DRAIN_DEADLINE, 3, `${model.kind}: all counted as LOAD_DRAIN_DEADLINE`)
    t.ok(took < 300 + 200 + 2000 + 3_500, `${model.kind}: the report came ~2 s after the drain deadline (${took.toFixed(0)} ms), not after the 30 s the operations take`)
  }
})

t.test('a request slower than the timeout is LOAD_TIMEOUT', async (t) => {
  const r = await runEngine({
    model: { kind: 'closed', concurrency: 2 },
    durationMs: 300,
    requestTimeoutMs: 100,
    mix: [['hang', 1]],
    execute: async (_op, signal) => {
      await new Promise((resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }) })
      return { ok: true }
    }
  })
  t.ok(r.totals.count >= 4, `${r.totals.count} requests`)
  t.equal(r.totals.errorsByCode.LOAD_TIMEOUT, r.totals.count)
})

t.test('count bounds the run before the duration; closed model too', async (t) => {
  let started = performance.now()
  const open = await runEngine({ model: { kind: 'open', ratePerSec: 100 }, durationMs: 60_000, count: 25, mix: [['a', 1]], execute: async () => ({ ok: true }) })
  t.equal(open.totals.count, 25)
  t.ok(performance.now() - started < 2000, 'stopped at the count, not after a minute')
  started = performance.now()
  const closed = await runEngine({ model: { kind: 'closed', concurrency: 4 }, durationMs: 60_000, count: 50, mix: [['a', 1]], execute: async () => ({ ok: true }) })
  t.equal(closed.totals.count, 50)
  t.ok(performance.now() - started < 2000)
})

t.test('errors are counted by code, with the first detail; exceptions get a code too', async (t) => {
  let n = 0
  const r = await runEngine({
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
  })
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

/**
 * runLoad's report over a target simulated on a VirtualClock (no network, no real time): the rates are over the
 * scheduled window and the drain is reported apart, in the JSON, the text and the chart.
 */
import t from 'tap'
import { VirtualClock } from '../../tools/load/clock.ts'
import { formatReport, runLoad } from '../../tools/load/run.ts'
import { renderHtmlReport } from '../../tools/load/chart.ts'
import type { LoadRequest, LoadResponse, LoadTransport } from '../../tools/load/transport.ts'

const VALID = Object.freeze({ valid: true, code: 'VALID' })

/**
 * A participant's view of DICT and ICOM on the virtual clock: CreateEntry answers 201 after `writeMs`; a stream
 * read is a long poll that ends empty (204) after `pollMs`.
 */
function simulatedTarget (clock: VirtualClock, o: { writeMs: number, pollMs: number }): LoadTransport & { ends: number[] } {
  const ends: number[] = []
  return {
    kind: 'simulated',
    ispb: '99999004',
    ends,
    async request (req: LoadRequest): Promise<LoadResponse> {
      const stream = req.path.includes('/stream/')
      if (req.method === 'DELETE') return { status: 200, headers: {}, body: Buffer.alloc(0), signature: VALID, parts: [] }
      await clock.sleep(stream ? o.pollMs : o.writeMs, req.signal)
      req.signal?.throwIfAborted()
      ends.push(clock.now())
      return stream
        ? { status: 204, headers: { 'pi-pull-next': '/api/v1/out/99999004/stream/next' }, body: Buffer.alloc(0), signature: VALID, parts: [] }
        : { status: 201, headers: { 'content-type': 'application/xml' }, body: Buffer.from('<CreateEntryResponse/>'), signature: VALID, parts: [] }
    },
    async close () {}
  }
}

t.test('closed model: throughput is the successes within the window over the window, not over the drain too', async (t) => {
  const clock = new VirtualClock()
  const target = simulatedTarget(clock, { writeMs: 20, pollMs: 2_000 })
  const r = await clock.run(runLoad({ target, clock, model: { kind: 'closed', concurrency: 4 }, durationMs: 10_000, mix: { 'create-entry': 5, 'spi-stream': 1 } }))
  t.equal(r.windowMs, 10_000)
  t.ok(r.elapsedMs > r.windowMs, `long polls held the run ${r.elapsedMs - r.windowMs} ms past the window`)
  t.equal(r.drain.ms, r.elapsedMs - r.windowMs, 'the drain is reported apart')
  t.ok(r.drain.ended > 0 && r.drain.ended <= 4, 'with the requests that ended in it')
  t.equal(r.totals.ok, r.totals.okInWindow + r.drain.ok)
  t.equal(r.totals.throughputPerSec, Math.round(r.totals.okInWindow / 10 * 100) / 100, 'ok/s = successes within the window / 10 s')
  t.ok(r.totals.throughputPerSec > r.totals.ok / (r.elapsedMs / 1000), 'higher than dividing by the elapsed time, which understated it')
  const entries = r.ops['create-entry']
  t.equal(entries?.throughputPerSec, Math.round((entries?.okInWindow ?? 0) / 10 * 100) / 100, 'per operation too')
  t.equal(entries?.offeredPerSec, Math.round((entries?.count ?? 0) / 10 * 100) / 100)
  const text = formatReport(r)
  t.match(text, /closed model, 4 workers, 10\.0 s window/)
  t.match(text, new RegExp(`drain: ${(r.drain.ms / 1000).toFixed(1)} s after the window, ${r.drain.ended} requests ended in it`))
  t.match(renderHtmlReport(r), /10\.0 s window \(the rates are over it\), then \d\.\d s of drain/)
  t.ok(r.notes.some((n) => /rates .* are over the scheduled window/.test(n)))
})

t.test('open model: offered is the rate exactly; throughput counts the window only', async (t) => {
  const clock = new VirtualClock()
  const target = simulatedTarget(clock, { writeMs: 150, pollMs: 2_000 })
  const r = await clock.run(runLoad({ target, clock, model: { kind: 'open', ratePerSec: 10 }, durationMs: 10_000, mix: { 'create-entry': 1 } }))
  t.equal(r.totals.count, 100)
  t.equal(r.totals.offeredPerSec, 10, 'offered = 100 arrivals / 10 s (not / the 9.9 s between the first and last due times)')
  t.equal(r.totals.okInWindow, 99, 'the last arrival, due at 9.9 s, was answered at 10.05 s: in the drain')
  t.equal(r.totals.throughputPerSec, 9.9)
  t.same(r.drain, { ms: 50, ended: 1, ok: 1 })
})

t.test('a preparation that makes nothing refuses to start: LOAD_PREPARE_FAILED, not a run of LOAD_NOT_PREPARED', async (t) => {
  const clock = new VirtualClock()
  const target = simulatedTarget(clock, { writeMs: 5, pollMs: 100 })
  const measured: string[] = []
  const seen: LoadTransport = {
    kind: target.kind,
    ispb: target.ispb,
    request: async (req) => {
      measured.push(`${req.method} ${req.path}`)
      return await target.request(req)
    },
    close: async () => {}
  }
  let counterpartyCalls = 0
  const refused: LoadTransport = {
    kind: 'direct',
    ispb: '99999010',
    request: async () => {
      counterpartyCalls++
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:16522'), { code: 'ECONNREFUSED' })
    },
    close: async () => {}
  }
  let prepared = false
  await t.rejects(clock.run(runLoad({
    target: seen,
    counterparty: refused,
    clock,
    model: { kind: 'open', ratePerSec: 50 },
    durationMs: 30_000,
    prepareHint: 'is the simulator there?',
    onPrepared: () => { prepared = true }
  })), {
    code: 'PIXPROXY_ERR_LOAD_PREPARE_FAILED',
    message: /preparation made nothing for get-entry, create-claim, confirm-claim \(48 of 64 preparation requests failed: ECONNREFUSED ×48; first: POST \/api\/v2\/entries\/ as 99999010: connect ECONNREFUSED 127\.0\.0\.1:16522; is the simulator there\?\)/
  })
  t.equal(counterpartyCalls, 48, 'each preparation step gave up after its first 16 attempts failed, not after the 1,500 planned')
  t.notOk(prepared, 'no "prepared" notice')
  t.same(measured.filter((m) => !m.startsWith('POST /api/v2/entries/')), [], 'nothing was measured: the target only saw the preparation\'s own key registrations')
})

t.test('a preparation that makes some items runs; what it could not make fails visibly as LOAD_NOT_PREPARED', async (t) => {
  const clock = new VirtualClock()
  const target = simulatedTarget(clock, { writeMs: 5, pollMs: 100 })
  let n = 0
  const flaky: LoadTransport = {
    kind: 'direct',
    ispb: '99999010',
    // Every other registration is refused: half the claimable keys are made.
    request: async (req) => {
      if (n++ % 2 === 1) throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })
      return await target.request(req)
    },
    close: async () => {}
  }
  const r = await clock.run(runLoad({ target, counterparty: flaky, clock, model: { kind: 'open', ratePerSec: 10 }, durationMs: 2_000, mix: { 'create-claim': 1 } }))
  t.equal(r.prepare.items['create-claim'], 11, 'half of the 21 prepared (20 planned + 1)')
  t.same(r.prepare.errorsByCode, { ECONNREFUSED: 10 })
  t.equal(r.ops['create-claim']?.count, 20)
  t.equal(r.ops['create-claim']?.errorsByCode.LOAD_NOT_PREPARED, 9, 'the 9 arrivals beyond the 11 items')
})

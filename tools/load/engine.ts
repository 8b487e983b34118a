/**
 * The load engine: when requests are sent and how their latency is counted. It knows nothing of PIX; `execute`
 * performs one operation and says how it went.
 *
 * Open model (`rate`): arrival i is due at start + i/rate whatever happened before, and its latency is measured
 * from that scheduled time, not from when it was actually sent. A stalled target (or a stalled loader) therefore
 * shows up in the latency of every request that should have gone out during the stall, instead of silently
 * lowering the request rate (coordinated omission). Outstanding requests are bounded: an arrival beyond the bound
 * is counted as dropped (overloaded) rather than queued without limit.
 * Closed model (`concurrency`): N workers, each sending its next request when the previous one ends; latency is
 * from the actual send, so it cannot show queueing in front of the loader (say so when reporting it).
 *
 * Both stop at the duration or the count, whichever comes first, then drain: requests still out after `drainMs`
 * are aborted and counted as errors (LOAD_DRAIN_DEADLINE). Every scheduled arrival ends as exactly one of ok,
 * error or dropped.
 *
 * The scheduled window is the time requests were being started: the duration, or less when the count (open:
 * count/rate; closed: when the last request was started) or the caller's signal ended it sooner. Rates are over the
 * window and count the answers that came within it; what was answered after it (the drain: a closed model's last
 * requests, long polls) is reported apart, so a drain does not dilute the rate.
 */
import { realClock } from './clock.ts'
import type { Clock } from './clock.ts'
import { LatencyHistogram } from './histogram.ts'
import type { LatencySummary } from './histogram.ts'

export type LoadModel =
  | { readonly kind: 'open', readonly ratePerSec: number }
  | { readonly kind: 'closed', readonly concurrency: number }

/** What one operation came to. */
export interface Outcome {
  readonly ok: boolean
  /** Why it failed: `<status> <problem code>`, a network error code, or a LOAD_* code of the loader. */
  readonly code?: string
  /** The answer's signature did not verify (reported by the proxy, or by our own verification in direct mode). */
  readonly signatureFailure?: boolean
  /** Succeeded but is no latency sample (an empty long-poll page: its duration is the poll's, not the target's). */
  readonly noLatency?: boolean
  /** A short description of the first failure of each code, for the report. */
  readonly detail?: string
}

export interface EngineOptions<Op extends string> {
  readonly model: LoadModel
  readonly durationMs: number
  /** Stop after this many arrivals (ok + errors + dropped). */
  readonly count?: number
  /** Operations and their relative weights (> 0). */
  readonly mix: ReadonlyArray<readonly [Op, number]>
  /** Performs one operation; must honour `signal` (aborted at the per-request timeout and at the drain deadline). */
  readonly execute: (op: Op, signal: AbortSignal) => Promise<Outcome>
  /** Open model: outstanding requests beyond this are dropped. Default 1000. */
  readonly maxOutstanding?: number
  /** Per-request timeout. Default 30000 ms. */
  readonly requestTimeoutMs?: number
  /** After the last arrival, how long outstanding requests may take. Default 10000 ms. */
  readonly drainMs?: number
  /**
   * Called for every arrival that ended (not for dropped ones) with its scheduled (open) or send (closed) time on
   * the engine's clock (`performance.now()` by default): raw samples for callers that keep them.
   */
  readonly onResult?: (op: Op, from: number, latencyMs: number, outcome: Outcome) => void
  /** Called once a second with the second just completed. */
  readonly onTick?: (tick: Tick) => void
  /** Stops scheduling early (then drains as usual). */
  readonly signal?: AbortSignal
  /**
   * Time: due times, latencies, timeouts, the drain deadline and the ticks. Default `realClock`; a `VirtualClock`
   * makes a run exact and independent of the machine's speed (tests).
   */
  readonly clock?: Clock
}

/** One second of one operation (or of all of them). */
export interface SecondStats {
  /** Seconds since the start. */
  readonly t: number
  readonly ok: number
  readonly errors: number
  readonly dropped: number
  readonly p50: number | null
  readonly p90: number | null
  readonly p99: number | null
  readonly max: number | null
}

export interface Tick {
  readonly elapsedMs: number
  readonly outstanding: number
  /** The last completed second over every operation. */
  readonly last: SecondStats
  readonly totals: { readonly ok: number, readonly errors: number, readonly dropped: number, readonly signatureFailures: number }
}

export interface OpResult {
  /** Arrivals of this operation: ok + errors + dropped. */
  readonly count: number
  readonly ok: number
  /** Successes answered within the scheduled window (the rest came during the drain). */
  readonly okInWindow: number
  /** Requests (ok or not) that ended after the scheduled window, during the drain. */
  readonly endedAfterWindow: number
  readonly errors: number
  /** Not sent: the outstanding bound was reached (the target could not keep up). */
  readonly dropped: number
  readonly signatureFailures: number
  /** Successes that are no latency sample (empty long-poll pages). */
  readonly withoutLatency: number
  readonly errorsByCode: Readonly<Record<string, number>>
  /** The first failure of each code, shortened. */
  readonly errorDetails: Readonly<Record<string, string>>
  /** Latency of the successful requests (ms). */
  readonly latency: LatencySummary
  readonly series: readonly SecondStats[]
}

export interface EngineResult<Op extends string> {
  readonly startedAt: string
  /** From the first due time to the last arrival's due time (open) or the last send (closed). */
  readonly scheduleMs: number
  /** From the first due time to the last completion (drain included). */
  readonly elapsedMs: number
  /** The scheduled window: from the first due time until requests stopped being started (see above). */
  readonly windowMs: number
  /** From the end of the window to the last completion: how long the drain took (0 when nothing was left). */
  readonly drainMs: number
  /** Requests aborted at the drain deadline. */
  readonly abortedAtDrain: number
  readonly ops: Readonly<Record<Op, OpResult>>
  readonly totals: OpResult
}

/** Smooth weighted round-robin (nginx's): every window of sum(weights) picks follows the weights exactly. */
export class WeightedPicker<Op extends string> {
  private readonly items: Array<{ op: Op, weight: number, current: number }>
  private readonly total: number

  constructor (mix: ReadonlyArray<readonly [Op, number]>) {
    this.items = mix.filter(([, w]) => w > 0).map(([op, weight]) => ({ op, weight, current: 0 }))
    this.total = this.items.reduce((a, i) => a + i.weight, 0)
    if (this.items.length === 0) throw new RangeError('the mix needs at least one operation with a positive weight')
  }

  next (): Op {
    let best = this.items[0] as { op: Op, weight: number, current: number }
    for (const i of this.items) {
      i.current += i.weight
      if (i.current > best.current) best = i
    }
    best.current -= this.total
    return best.op
  }
}

class OpStats {
  count = 0
  ok = 0
  okInWindow = 0
  endedAfterWindow = 0
  errors = 0
  dropped = 0
  signatureFailures = 0
  withoutLatency = 0
  readonly errorsByCode = new Map<string, number>()
  readonly errorDetails = new Map<string, string>()
  readonly all = new LatencyHistogram()
  readonly series: SecondStats[] = []
  private readonly second = new LatencyHistogram()
  private sec = 0
  private secOk = 0
  private secErrors = 0
  private secDropped = 0

  /** Closes the seconds before `t` (empty ones too, so the series has one entry per second). */
  roll (t: number): void {
    while (this.sec < t) {
      const s = this.second.summary()
      this.series.push({
        t: this.sec,
        ok: this.secOk,
        errors: this.secErrors,
        dropped: this.secDropped,
        p50: s.count === 0 ? null : s.p50,
        p90: s.count === 0 ? null : s.p90,
        p99: s.count === 0 ? null : s.p99,
        max: s.count === 0 ? null : s.max
      })
      this.second.reset()
      this.secOk = this.secErrors = this.secDropped = 0
      this.sec++
    }
  }

  drop (t: number): void {
    this.roll(t)
    this.count++
    this.dropped++
    this.secDropped++
  }

  record (t: number, latencyMs: number, o: Outcome, inWindow: boolean): void {
    this.roll(t)
    this.count++
    if (!inWindow) this.endedAfterWindow++
    if (o.signatureFailure === true) this.signatureFailures++
    if (o.ok) {
      this.ok++
      if (inWindow) this.okInWindow++
      this.secOk++
      if (o.noLatency === true) {
        this.withoutLatency++
      } else {
        this.all.record(latencyMs)
        this.second.record(latencyMs)
      }
      return
    }
    this.errors++
    this.secErrors++
    const code = o.code ?? 'LOAD_UNKNOWN_ERROR'
    this.errorsByCode.set(code, (this.errorsByCode.get(code) ?? 0) + 1)
    if (o.detail !== undefined && !this.errorDetails.has(code) && this.errorDetails.size < 50) this.errorDetails.set(code, o.detail.slice(0, 300))
  }

  result (): OpResult {
    return {
      count: this.count,
      ok: this.ok,
      okInWindow: this.okInWindow,
      endedAfterWindow: this.endedAfterWindow,
      errors: this.errors,
      dropped: this.dropped,
      signatureFailures: this.signatureFailures,
      withoutLatency: this.withoutLatency,
      errorsByCode: Object.fromEntries([...this.errorsByCode].sort((a, b) => b[1] - a[1])),
      errorDetails: Object.fromEntries(this.errorDetails),
      latency: this.all.summary(),
      series: this.series
    }
  }
}

/** A stable code for an exception thrown by `execute` (undici and Node codes, PixProxyError codes). */
export function errorCodeOf (err: unknown): string {
  const e = err as { code?: unknown, name?: unknown }
  if (typeof e?.code === 'string' && e.code !== '') return e.code
  if (e?.name === 'TimeoutError') return 'LOAD_TIMEOUT'
  if (e?.name === 'AbortError') return 'LOAD_ABORTED'
  return 'LOAD_CLIENT_ERROR'
}

/** How long requests get to stop once aborted at the drain deadline before they are given up on. */
export const ABANDON_AFTER_ABORT_MS = 2_000

/** Waits for `p` or `ms`, whichever comes first, without leaving the timer behind. */
async function raceTimer (clock: Clock, p: Promise<unknown>, ms: number): Promise<void> {
  const cancel = new AbortController()
  try {
    await Promise.race([p, clock.sleep(Math.max(0, ms), cancel.signal)])
  } finally {
    cancel.abort()
  }
}

/** Runs the schedule; resolves when every arrival has ended (after the drain). */
export async function runEngine<Op extends string> (o: EngineOptions<Op>): Promise<EngineResult<Op>> {
  const picker = new WeightedPicker(o.mix)
  const ops = new Map<Op, OpStats>(o.mix.filter(([, w]) => w > 0).map(([op]) => [op, new OpStats()]))
  const totals = new OpStats()
  const maxOutstanding = o.maxOutstanding ?? 1000
  const requestTimeoutMs = o.requestTimeoutMs ?? 30_000
  const drainMs = o.drainMs ?? 10_000
  const clock = o.clock ?? realClock
  const drain = new AbortController()
  const startedAt = new Date()
  const t0 = clock.now() + 5
  // The planned end of the window; lowered to the moment the schedule stops if that comes sooner.
  let windowEnd = t0 + (o.model.kind === 'open' && o.count !== undefined
    ? Math.min(o.durationMs, (o.count * 1000) / o.model.ratePerSec)
    : o.durationMs)
  const endWindow = (): void => { windowEnd = Math.min(windowEnd, Math.max(t0, clock.now())) }
  let outstanding = 0
  let lastEnd = t0
  let abortedAtDrain = 0
  let callbackError: unknown
  let idle: (() => void) | undefined
  // A function, not a property read: TypeScript would otherwise narrow `aborted` across the awaits below.
  const stopped = (): boolean => o.signal?.aborted === true
  const secondOf = (at: number): number => Math.max(0, Math.floor((at - t0) / 1000))

  const statsOf = (op: Op): OpStats => ops.get(op) as OpStats

  const finish = (op: Op, from: number, outcome: Outcome): void => {
    const now = clock.now()
    lastEnd = Math.max(lastEnd, now)
    const t = secondOf(now)
    const inWindow = now <= windowEnd
    statsOf(op).record(t, now - from, outcome, inWindow)
    totals.record(t, now - from, outcome, inWindow)
    o.onResult?.(op, from, now - from, outcome)
  }

  const inFlight = new Set<{ op: Op, from: number, timer: AbortController }>()

  const run = async (op: Op, from: number): Promise<void> => {
    // The per-request timeout on the engine's clock (AbortSignal.timeout would always be real time).
    const timeout = new AbortController()
    const timer = new AbortController()
    clock.sleep(requestTimeoutMs, timer.signal).then(() => {
      if (!timer.signal.aborted) timeout.abort(new DOMException(`no answer within ${requestTimeoutMs} ms`, 'TimeoutError'))
    }, () => {})
    const signal = AbortSignal.any([drain.signal, timeout.signal])
    const entry = { op, from, timer }
    inFlight.add(entry)
    outstanding++
    let outcome: Outcome
    try {
      outcome = await o.execute(op, signal)
    } catch (err) {
      if (drain.signal.aborted) {
        abortedAtDrain++
        outcome = { ok: false, code: 'LOAD_DRAIN_DEADLINE', detail: `still outstanding ${drainMs} ms after the last arrival` }
      } else if (timeout.signal.aborted) {
        outcome = { ok: false, code: 'LOAD_TIMEOUT', detail: `no answer within ${requestTimeoutMs} ms` }
      } else {
        outcome = { ok: false, code: errorCodeOf(err), detail: (err as Error)?.message ?? String(err) }
      }
    } finally {
      timer.abort()
    }
    // Abandoned at the end (it ignored the abort): already counted, and the report is out.
    if (!inFlight.delete(entry)) return
    try {
      finish(op, from, outcome)
    } catch (err) {
      // A throwing onResult callback must not stall the accounting; runEngine rethrows it at the end.
      callbackError ??= err
    } finally {
      outstanding--
      if (outstanding === 0) idle?.()
    }
  }

  let lastTickSecond = 0
  const tickerStop = new AbortController()
  const tick = (): void => {
    const now = clock.now()
    const t = secondOf(now)
    if (t <= lastTickSecond) return
    lastTickSecond = t
    totals.roll(t)
    for (const s of ops.values()) s.roll(t)
    const last = totals.series[totals.series.length - 1]
    if (last === undefined) return
    try {
      o.onTick?.({
        elapsedMs: now - t0,
        outstanding,
        last,
        totals: { ok: totals.ok, errors: totals.errors, dropped: totals.dropped, signatureFailures: totals.signatureFailures }
      })
    } catch (err) {
      callbackError ??= err
    }
  }
  if (o.onTick !== undefined) {
    void (async () => {
      while (!tickerStop.signal.aborted) {
        await clock.sleep(250, tickerStop.signal)
        if (!tickerStop.signal.aborted) tick()
      }
    })()
  }

  let lastDue = t0
  try {
    if (o.model.kind === 'open') {
      const rate = o.model.ratePerSec
      if (!(rate > 0)) throw new RangeError('the rate must be positive')
      // Arrivals at i/rate for every i with i/rate < duration, counted once rather than by adding up floats.
      const arrivals = Math.min(o.count ?? Infinity, Math.ceil(o.durationMs * rate / 1000 - 1e-9))
      for (let i = 0; i < arrivals; i++) {
        const due = t0 + (i * 1000) / rate
        if (stopped()) {
          endWindow()
          break
        }
        const wait = due - clock.now()
        if (wait > 0) await clock.sleep(wait, o.signal)
        else if (i % 32 === 0) await clock.yield() // far behind: let answers in rather than only send
        if (stopped()) {
          endWindow()
          break
        }
        lastDue = due
        const op = picker.next()
        if (outstanding >= maxOutstanding) {
          const t = secondOf(clock.now())
          statsOf(op).drop(t)
          totals.drop(t)
          continue
        }
        run(op, due).catch(() => {}) // run() records every failure itself
      }
    } else {
      const n = o.model.concurrency
      if (!(Number.isInteger(n) && n > 0)) throw new RangeError('the concurrency must be a positive integer')
      let issued = 0
      const worker = async (): Promise<void> => {
        for (;;) {
          const now = clock.now()
          if (now - t0 >= o.durationMs || drain.signal.aborted) return
          if ((o.count !== undefined && issued >= o.count) || stopped()) {
            endWindow()
            return
          }
          issued++
          // The last request of the count: the window ends as it starts.
          if (o.count !== undefined && issued >= o.count) endWindow()
          lastDue = Math.max(lastDue, now)
          await run(picker.next(), now)
        }
      }
      const wait = t0 - clock.now()
      if (wait > 0) await clock.sleep(wait, o.signal)
      const all = Promise.all(Array.from({ length: n }, async () => await worker()))
      // Workers stop starting requests at the duration; a request still running drainMs later is aborted.
      await raceTimer(clock, all, t0 + o.durationMs + drainMs - clock.now())
      if (outstanding > 0) {
        drain.abort()
        await raceTimer(clock, all, ABANDON_AFTER_ABORT_MS)
      }
    }
    if (o.model.kind === 'open' && outstanding > 0) {
      await raceTimer(clock, new Promise<void>((resolve) => { idle = resolve }), drainMs)
      if (outstanding > 0) {
        drain.abort()
        await raceTimer(clock, new Promise<void>((resolve) => { idle = resolve }), ABANDON_AFTER_ABORT_MS)
      }
    }
    // An execute() that ignores its abort signal must not hold the report forever.
    for (const e of inFlight) {
      inFlight.delete(e)
      e.timer.abort()
      abortedAtDrain++
      finish(e.op, e.from, { ok: false, code: 'LOAD_DRAIN_DEADLINE', detail: `still outstanding ${drainMs} ms after the last arrival, and did not stop when aborted` })
    }
  } finally {
    tickerStop.abort()
  }
  if (callbackError !== undefined) throw callbackError
  const end = secondOf(lastEnd) + 1
  totals.roll(end)
  for (const s of ops.values()) s.roll(end)
  return {
    startedAt: startedAt.toISOString(),
    scheduleMs: Math.max(0, lastDue - t0),
    elapsedMs: Math.max(0, lastEnd - t0),
    windowMs: windowEnd - t0,
    drainMs: Math.max(0, lastEnd - windowEnd),
    abortedAtDrain,
    ops: Object.fromEntries([...ops].map(([op, s]) => [op, s.result()])) as Record<Op, OpResult>,
    totals: totals.result()
  }
}

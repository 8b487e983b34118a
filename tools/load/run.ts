/**
 * `runLoad`: prepare, measure, report. The programmatic face of `pix-proxy load`, also driven by the end-to-end
 * benchmark (bench/) with its own transports (through pix-proxy, through a plain mTLS forwarding proxy, or straight
 * to the simulator), so the CLI is a thin layer over it.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { Clock } from './clock.ts'
import { runEngine } from './engine.ts'
import type { LoadModel, OpResult, SecondStats, Tick } from './engine.ts'
import { DEFAULT_MIX, Flows, NEEDS_COUNTERPARTY, OPERATIONS } from './flows.ts'
import type { Operation, PrepareReport, SpiStats } from './flows.ts'
import type { LatencySummary } from './histogram.ts'
import type { LoadTransport } from './transport.ts'

/** Upper bounds that keep a typo from becoming an attack on the target. */
export const LIMITS = Object.freeze({ maxRatePerSec: 20_000, maxConcurrency: 1_000, maxDurationMs: 24 * 3_600_000, maxPreparedPerOp: 20_000 })

export interface LoadOptions {
  /** Where the measured requests go, as the participant `target.ispb`. */
  readonly target: LoadTransport
  /**
   * Another participant (its own transport, usually straight to the simulator): creates the keys and claims that
   * get-entry, create-claim and confirm-claim need. Required when the mix has any of them.
   */
  readonly counterparty?: LoadTransport
  /** Open model (fixed arrival rate) or closed model (fixed concurrency). */
  readonly model: LoadModel
  /** Default 30000 ms. */
  readonly durationMs?: number
  /** Stop after this many arrivals, if sooner than the duration. */
  readonly count?: number
  /** Relative weights; operations left out are not sent. Default DEFAULT_MIX. */
  readonly mix?: Readonly<Partial<Record<Operation, number>>>
  /** Open model: outstanding requests beyond this are dropped (reported). Default 1000. */
  readonly maxOutstanding?: number
  /** Default 30000 ms. */
  readonly requestTimeoutMs?: number
  /** How long outstanding requests may take after the last arrival. Default 10000 ms. */
  readonly drainMs?: number
  /**
   * Items to prepare per operation (claims to create, claims to confirm, keys to read). Default: enough for the
   * planned arrivals (open model, or a count), else an estimate of 50 requests/s per closed-model worker.
   */
  readonly prepare?: Readonly<Partial<Record<Operation, number>>>
  /** ICOM stream readers. Default 2. */
  readonly streamReaders?: number
  /** Payee ISPB in pacs.008. Default: the counterparty's. */
  readonly payeeIspb?: string
  /** Called once a second while measuring. */
  readonly onProgress?: (tick: Tick) => void
  /** Called when the prepare phase ends, before measuring. */
  readonly onPrepared?: (prepare: PrepareReport) => void
  /** Appended to the LOAD_PREPARE_FAILED message (e.g. which option says where the counterparty goes). */
  readonly prepareHint?: string
  /** Stops early (e.g. Ctrl-C); the report covers what ran. */
  readonly signal?: AbortSignal
  /** The measured run's time (runEngine's `clock`). Default the real clock. */
  readonly clock?: Clock
}

/** A latency summary in ms; null where there were no samples. */
export type LatencyMs = { readonly count: number } & { readonly [K in Exclude<keyof LatencySummary, 'count'>]: number | null }

/** An operation's counters as the engine counted them (OpResult), with rates and latency in ms. */
export interface OpReport extends Omit<OpResult, 'latency' | 'series'> {
  /** Arrivals per second of the scheduled window (`count` / `windowMs`). */
  readonly offeredPerSec: number
  /** Successes answered within the scheduled window per second of it (`okInWindow` / `windowMs`): the drain is not in it. */
  readonly throughputPerSec: number
  /** Latency of the successful requests. */
  readonly latencyMs: LatencyMs
  /** Per second of the run (by completion time). */
  readonly series: readonly SecondStats[]
}

export interface LoadReport {
  readonly tool: 'pix-proxy load'
  /** The transport's kind: 'proxy', 'direct', or a caller's own. */
  readonly target: string
  readonly ispb: string
  readonly model: LoadModel
  /** Open model: from the scheduled send time (queueing included); closed: from the actual send. */
  readonly latencyFrom: 'scheduled' | 'sent'
  readonly startedAt: string
  readonly durationMs: number
  readonly count: number | null
  readonly mix: Readonly<Partial<Record<Operation, number>>>
  /** The prepare phase, before measuring; not part of the figures below. */
  readonly prepare: PrepareReport
  readonly scheduleMs: number
  /** First arrival to last answer, the drain included. */
  readonly elapsedMs: number
  /** The scheduled window the rates are over: the duration, or less when the count or a stop ended it sooner. */
  readonly windowMs: number
  /** After the window: how long the last answers took to come (`ms`), how many requests ended then, how many of them ok. */
  readonly drain: { readonly ms: number, readonly ended: number, readonly ok: number }
  readonly abortedAtDrain: number
  readonly totals: OpReport
  readonly ops: Readonly<Partial<Record<Operation, OpReport>>>
  readonly spi: SpiStats
  readonly notes: readonly string[]
}

function usage (message: string): PixProxyError {
  return new PixProxyError(Errors.USAGE, [message])
}

function checkOptions (o: LoadOptions, mix: ReadonlyArray<readonly [Operation, number]>, durationMs: number): void {
  if (o.model.kind === 'open') {
    const r = o.model.ratePerSec
    if (!(Number.isFinite(r) && r > 0 && r <= LIMITS.maxRatePerSec)) throw usage(`the rate must be above 0 and at most ${LIMITS.maxRatePerSec}/s, got ${r}`)
  } else {
    const c = o.model.concurrency
    if (!(Number.isInteger(c) && c > 0 && c <= LIMITS.maxConcurrency)) throw usage(`the concurrency must be an integer from 1 to ${LIMITS.maxConcurrency}, got ${c}`)
  }
  if (!(Number.isFinite(durationMs) && durationMs > 0 && durationMs <= LIMITS.maxDurationMs)) throw usage(`the duration must be above 0 and at most 24 h, got ${durationMs} ms`)
  if (o.count !== undefined && !(Number.isInteger(o.count) && o.count > 0)) throw usage(`the count must be a positive integer, got ${o.count}`)
  if (mix.length === 0) throw usage('the mix has no operation with a positive weight')
  const needing = mix.filter(([op]) => NEEDS_COUNTERPARTY.has(op)).map(([op]) => op)
  if (needing.length > 0 && o.counterparty === undefined) {
    throw usage(`${needing.join(', ')} need a counterparty participant to prepare keys and claims; give one, or leave them out of the mix`)
  }
  if (o.counterparty !== undefined && o.counterparty.ispb === o.target.ispb) throw usage('the counterparty must be another participant than the target\'s')
}

/** How many arrivals of each operation the run will have (at most), to prepare enough items. */
function plannedPerOp (o: LoadOptions, mix: ReadonlyArray<readonly [Operation, number]>, durationMs: number): Partial<Record<Operation, number>> {
  const total = o.model.kind === 'open'
    ? Math.min(o.count ?? Infinity, Math.ceil(o.model.ratePerSec * durationMs / 1000))
    : (o.count ?? Math.ceil(o.model.concurrency * 50 * durationMs / 1000))
  const weight = mix.reduce((a, [, w]) => a + w, 0)
  const out: Partial<Record<Operation, number>> = {}
  for (const [op, w] of mix) {
    const n = o.prepare?.[op] ?? Math.ceil(total * w / weight) + 1
    out[op] = Math.min(LIMITS.maxPreparedPerOp, Math.max(0, Math.floor(n)))
  }
  return out
}

function latencyMs (s: LatencySummary): LatencyMs {
  const r = (v: number): number | null => Number.isNaN(v) ? null : Math.round(v * 1000) / 1000
  return { count: s.count, min: r(s.min), mean: r(s.mean), p50: r(s.p50), p90: r(s.p90), p99: r(s.p99), max: r(s.max) }
}

function opReport (r: OpResult, windowMs: number): OpReport {
  const per = (n: number): number => windowMs <= 0 ? 0 : Math.round(n / (windowMs / 1000) * 100) / 100
  return {
    count: r.count,
    ok: r.ok,
    okInWindow: r.okInWindow,
    endedAfterWindow: r.endedAfterWindow,
    errors: r.errors,
    dropped: r.dropped,
    signatureFailures: r.signatureFailures,
    withoutLatency: r.withoutLatency,
    errorsByCode: r.errorsByCode,
    errorDetails: r.errorDetails,
    offeredPerSec: per(r.count),
    throughputPerSec: per(r.okInWindow),
    latencyMs: latencyMs(r.latency),
    series: r.series
  }
}

/**
 * Prepares the items the mix needs, runs the schedule, and reports. Transports stay open (the caller owns them).
 * @throws PixProxyError USAGE for options out of range, or a mix that needs a counterparty without one;
 *   LOAD_PREPARE_FAILED when the preparation made nothing for an operation of the mix (nothing is measured).
 */
export async function runLoad (o: LoadOptions): Promise<LoadReport> {
  const mixRecord = o.mix ?? DEFAULT_MIX
  for (const [op, w] of Object.entries(mixRecord)) {
    if (!(OPERATIONS as readonly string[]).includes(op)) throw usage(`unknown operation ${op} in the mix; known: ${OPERATIONS.join(', ')}`)
    if (!(Number.isFinite(w) && (w as number) >= 0)) throw usage(`the weight of ${op} must be a non-negative number, got ${String(w)}`)
  }
  const mix = OPERATIONS.map((op) => [op, mixRecord[op] ?? 0] as const).filter(([, w]) => Number.isFinite(w) && w > 0)
  const durationMs = o.durationMs ?? 30_000
  checkOptions(o, mix, durationMs)
  const flows = new Flows({
    target: o.target,
    ...(o.counterparty === undefined ? {} : { counterparty: o.counterparty }),
    ...(o.payeeIspb === undefined ? {} : { payeeIspb: o.payeeIspb }),
    ...(o.streamReaders === undefined ? {} : { streamReaders: o.streamReaders })
  })
  const planned = plannedPerOp(o, mix, durationMs)
  const prepare = await flows.prepare(planned, o.signal)
  // An operation the preparation made nothing for would only measure LOAD_NOT_PREPARED: refuse to start instead.
  const unprepared = mix.filter(([op]) => NEEDS_COUNTERPARTY.has(op) && (planned[op] ?? 0) > 0 && (prepare.items[op] ?? 0) === 0).map(([op]) => op)
  if (unprepared.length > 0 && o.signal?.aborted !== true) {
    const failures = Object.entries(prepare.errorsByCode).map(([code, n]) => `${code} ×${n}`).join(', ')
    const first = Object.values(prepare.errorDetails)[0]
    throw new PixProxyError(Errors.LOAD_PREPARE_FAILED, [
      unprepared.join(', '),
      `${prepare.requests - prepare.ok} of ${prepare.requests} preparation requests failed${failures === '' ? '' : `: ${failures}`}${first === undefined ? '' : `; first: ${first}`}${o.prepareHint === undefined ? '' : `; ${o.prepareHint}`}`
    ])
  }
  o.onPrepared?.(prepare)
  const result = await runEngine<Operation>({
    model: o.model,
    durationMs,
    mix,
    execute: async (op, signal) => await flows.execute(op, signal),
    ...(o.count === undefined ? {} : { count: o.count }),
    ...(o.maxOutstanding === undefined ? {} : { maxOutstanding: o.maxOutstanding }),
    ...(o.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: o.requestTimeoutMs }),
    ...(o.drainMs === undefined ? {} : { drainMs: o.drainMs }),
    ...(o.onProgress === undefined ? {} : { onTick: o.onProgress }),
    ...(o.signal === undefined ? {} : { signal: o.signal }),
    ...(o.clock === undefined ? {} : { clock: o.clock })
  })
  await flows.finish()
  const ops: Partial<Record<Operation, OpReport>> = {}
  for (const [op] of mix) ops[op] = opReport(result.ops[op], result.windowMs)
  const notes = [
    o.model.kind === 'open'
      ? 'latency is measured from each request\'s scheduled send time, so queueing in the loader or the target is included'
      : 'closed model: latency is measured from the actual send; queueing in front of the loader is not visible',
    o.target.kind === 'proxy'
      ? 'target pix-proxy: it signs requests and verifies BACEN\'s answers; signature failures are its verdicts'
      : 'direct: this process signs each request and verifies each signed answer; both are inside the measured latency',
    'latency percentiles cover successful requests; failures are counted by code',
    'rates (offered, ok/s) are over the scheduled window; requests answered after it, during the drain, are in the counts and latencies but not in the rates',
    'prepared items (keys of another participant, acknowledged claims) were created before measuring and are reported under prepare'
  ]
  if (mix.some(([op]) => op === 'spi-stream')) notes.push('spi-stream: empty long-poll pages (204) count as successes without a latency sample (their duration is the poll\'s)')
  return {
    tool: 'pix-proxy load',
    target: o.target.kind,
    ispb: o.target.ispb,
    model: o.model,
    latencyFrom: o.model.kind === 'open' ? 'scheduled' : 'sent',
    startedAt: result.startedAt,
    durationMs,
    count: o.count ?? null,
    mix: Object.fromEntries(mix),
    prepare,
    scheduleMs: Math.round(result.scheduleMs),
    elapsedMs: Math.round(result.elapsedMs),
    windowMs: Math.round(result.windowMs),
    drain: { ms: Math.round(result.drainMs), ended: result.totals.endedAfterWindow, ok: result.totals.ok - result.totals.okInWindow },
    abortedAtDrain: result.abortedAtDrain,
    totals: opReport(result.totals, result.windowMs),
    ops,
    spi: { ...flows.spi },
    notes
  }
}

const fmt = (v: number | null): string => v === null ? '-' : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)

/** A human-readable summary (the CLI prints it when --json is not given). */
export function formatReport (r: LoadReport): string {
  const model = r.model.kind === 'open' ? `open model, ${r.model.ratePerSec}/s` : `closed model, ${r.model.concurrency} workers`
  const lines = [
    `pix-proxy load: ${r.target} as ${r.ispb}, ${model}, ${(r.windowMs / 1000).toFixed(1)} s window (latency from the ${r.latencyFrom} time)`,
    `drain: ${(r.drain.ms / 1000).toFixed(1)} s after the window, ${r.drain.ended} requests ended in it (${r.drain.ok} ok), not in the rates${r.abortedAtDrain > 0 ? `; ${r.abortedAtDrain} aborted at the drain deadline` : ''}`,
    `prepare: ${r.prepare.requests} requests (${r.prepare.ok} ok) in ${(r.prepare.durationMs / 1000).toFixed(1)} s, items ${JSON.stringify(r.prepare.items)}${Object.keys(r.prepare.errorsByCode).length === 0 ? '' : `, errors ${JSON.stringify(r.prepare.errorsByCode)}`}`,
    '',
    'operation         count      ok  errors  dropped  sig.fail   ok/s    p50 ms   p90 ms   p99 ms   max ms'
  ]
  const row = (name: string, o: OpReport): string =>
    `${name.padEnd(15)} ${String(o.count).padStart(7)} ${String(o.ok).padStart(7)} ${String(o.errors).padStart(7)} ${String(o.dropped).padStart(8)} ${String(o.signatureFailures).padStart(9)} ${o.throughputPerSec.toFixed(1).padStart(7)} ${fmt(o.latencyMs.p50).padStart(9)} ${fmt(o.latencyMs.p90).padStart(8)} ${fmt(o.latencyMs.p99).padStart(8)} ${fmt(o.latencyMs.max).padStart(8)}`
  for (const [op, o] of Object.entries(r.ops)) lines.push(row(op, o))
  lines.push(row('total', r.totals))
  const errors = Object.entries(r.ops).flatMap(([op, o]) => Object.entries(o.errorsByCode).map(([code, n]) => `  ${op}: ${code} ×${n}${o.errorDetails[code] === undefined ? '' : ` (${o.errorDetails[code]?.replace(/\s+/g, ' ').slice(0, 120)})`}`))
  if (errors.length > 0) lines.push('', 'errors:', ...errors)
  if (r.ops['spi-send'] !== undefined || r.ops['spi-stream'] !== undefined) {
    const s = r.spi
    lines.push('', `spi: ${s.pages} stream pages (${s.emptyPages} empty), ${s.messages} messages; pacs.002 ACSC ${s.settled}, RJCT ${s.rejected}, admi.002 ${s.admi002}; payments without a report read yet ${s.unreported}`)
  }
  return lines.join('\n') + '\n'
}

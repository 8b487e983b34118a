/**
 * Audit shipping throughput when the sink refuses some records: does shipping keep pace with the spool?
 *
 *   node bench/audit-ship.ts [--json] [--rate 250] [--seconds 20] [--fail 0,0.1] [--repeat 1] [--latency-ms 50]
 *                            [--row-bytes 3000] [--flush-ms 1000] [--drain-seconds 15]
 *
 * In one process: a real spool on disk (the proxy's settings: groupCommitMs 0) and the real pipeline with
 * production's defaults (flushMs 1000, backoff 100 ms to 30 s, real clock), shipping to a simulated Firehose: the
 * FirehoseSink's limits (500 records, 256 KiB per call by default), each call taking `latency-ms` (a PutRecordBatch
 * round trip) and refusing each record with probability `fail` (a seeded generator: the same records fail in every
 * run of a mode), as Firehose does with FailedPutCount > 0. Rows arrive on a fixed schedule (open model) at `rate`
 * per second for `seconds`, each a begin() and an end() like a proxied request; then arrivals stop and the bench
 * waits up to `drain-seconds` for the spool to empty.
 * Each failure rate is a mode; modes run in ABBA order (`repeat` times), so the 0 % baseline and the failing runs
 * share the machine's load. The report gives, per mode, the median over runs of rows shipped per second while rows
 * arrived, the backlog (rows not yet shipped) when arrivals stopped and its peak, and the time to drain.
 * Issue 13 item 6: with 10 % of records failing, 250 rows/s went into the spool and ~3 rows/s shipped.
 * Target: at 10 % failure, shipping keeps pace with 250 rows/s (shipped/s within 5 % of the 0 % baseline, and the
 * backlog when arrivals stop no larger than the baseline's plus one second of arrivals).
 */
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { FIREHOSE_DEFAULT_BATCH_BYTES, FIREHOSE_MAX_RECORD_BYTES, FIREHOSE_MAX_RECORDS, encodeAuditRecord } from '../src/audit/firehose.ts'
import { AuditPipeline } from '../src/audit/pipeline.ts'
import type { AuditRow } from '../src/audit/schema.ts'
import type { AuditSink, SinkResult } from '../src/audit/sink.ts'
import { AuditSpool } from '../src/audit/spool.ts'
import type { AuditRequestHalf, AuditResponseHalf } from '../src/audit/spool.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    rate: { type: 'string', default: '250' },
    seconds: { type: 'string', default: '20' },
    fail: { type: 'string', default: '0,0.1' },
    repeat: { type: 'string', default: '1' },
    'latency-ms': { type: 'string', default: '50' },
    'row-bytes': { type: 'string', default: '3000' },
    'flush-ms': { type: 'string', default: '1000' },
    'drain-seconds': { type: 'string', default: '15' }
  }
})
const rate = Number(values.rate)
const seconds = Number(values.seconds)
const fails = values.fail.split(',').map(Number)
const repeat = Number(values.repeat)
const latencyMs = Number(values['latency-ms'])
const rowBytes = Number(values['row-bytes'])
const flushMs = Number(values['flush-ms'])
const drainSeconds = Number(values['drain-seconds'])
const log = (s: string): void => { if (!values.json) process.stderr.write(`[bench] ${s}\n`) }

/** mulberry32: a small seeded generator, so that a mode refuses the same records in every run. */
function seeded (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Firehose as the pipeline sees it: its limits, a round trip per call, and some records refused. */
class SimulatedFirehose implements AuditSink {
  readonly name = 'simulated-firehose'
  readonly maxBatchRows = FIREHOSE_MAX_RECORDS
  readonly maxBatchBytes = FIREHOSE_DEFAULT_BATCH_BYTES
  readonly maxRowBytes = FIREHOSE_MAX_RECORD_BYTES - 4_000
  readonly #random: () => number
  readonly #fail: number
  calls = 0
  refused = 0

  constructor (fail: number) {
    this.#fail = fail
    this.#random = seeded(0x5eed)
  }

  async write (rows: readonly AuditRow[]): Promise<SinkResult> {
    this.calls++
    for (const r of rows) encodeAuditRecord(r) // the sink's own per-record work
    await new Promise((resolve) => setTimeout(resolve, latencyMs))
    const failed: number[] = []
    rows.forEach((_, i) => { if (this.#random() < this.#fail) failed.push(i) })
    this.refused += failed.length
    return { failed }
  }

  async close (): Promise<void> {}
}

function requestHalf (id: string): AuditRequestHalf {
  return {
    id,
    request_date: new Date().toISOString(),
    system: 'spi',
    request_method: 'POST',
    request_path: '/api/v1/in/99999004/msgs',
    request_query: null,
    request_header: '{"content-type":"application/xml"}',
    request_body: `<Envelope id="${id}">${'x'.repeat(Math.max(0, rowBytes - 40))}</Envelope>`,
    message_type: 'pacs.008.spi.1.13',
    biz_msg_id: `M${id}`,
    correlation_id: `req-${id}`,
    instance_id: 'bench',
    trace_id: createHash('sha256').update(id).digest('hex').slice(0, 32)
  }
}

const responseHalf = (id: string): AuditResponseHalf => ({
  response_status_code: 201,
  response_header: '{}',
  response_body: `<Ack id="${id}"/>`,
  response_signature_valid: true,
  response_signature_code: 'VALID',
  error_code: null,
  upstream_latency_ms: 1.5,
  total_latency_ms: 2.25
})

interface Run {
  fail: number
  spooled: number
  refusedFull: number
  shippedPerSec: number
  backlogAtEnd: number
  peakBacklog: number
  drainMs: number | null
  calls: number
  refusedRecords: number
  retriedRows: number
  partialFailures: number
  peakConsecutiveFailures: number
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function run (fail: number, k: number): Promise<Run> {
  const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-ship-'))
  const spool = await AuditSpool.open({ dir, maxBytes: 2 * 1024 ** 3, groupCommitMs: 0 })
  const sink = new SimulatedFirehose(fail)
  const pipe = AuditPipeline.start({ spool, sink, flushMs })
  let peakBacklog = 0
  let peakConsecutive = 0
  const sampler = setInterval(() => {
    peakBacklog = Math.max(peakBacklog, spool.stats().pendingRows)
    peakConsecutive = Math.max(peakConsecutive, pipe.stats().consecutiveFailures)
  }, 50)
  let spooled = 0
  let refusedFull = 0
  const total = Math.round(rate * seconds)
  const inflight: Array<Promise<void>> = []
  const start = performance.now() + 20
  try {
    for (let i = 0; i < total; i++) {
      const due = start + i * 1000 / rate
      const wait = due - performance.now()
      if (wait > 1) await sleep(wait)
      const id = `r${k}-${i}`
      inflight.push((async () => {
        try {
          await spool.begin(requestHalf(id))
          await spool.end(id, responseHalf(id))
          spooled++
        } catch {
          refusedFull++
        }
      })())
    }
    await Promise.all(inflight)
    const arrivalMs = performance.now() - start
    const shipped = pipe.stats().shippedRows
    const backlogAtEnd = spool.stats().pendingRows
    const drainStart = performance.now()
    let drainMs: number | null = null
    while (performance.now() - drainStart < drainSeconds * 1000) {
      if (spool.stats().pendingRows === 0) {
        drainMs = Math.round(performance.now() - drainStart)
        break
      }
      await sleep(20)
    }
    const s = pipe.stats()
    return {
      fail,
      spooled,
      refusedFull,
      shippedPerSec: Math.round(shipped / (arrivalMs / 1000) * 10) / 10,
      backlogAtEnd,
      peakBacklog,
      drainMs,
      calls: sink.calls,
      refusedRecords: sink.refused,
      retriedRows: s.retriedRows,
      partialFailures: s.partialFailures,
      peakConsecutiveFailures: peakConsecutive
    }
  } finally {
    clearInterval(sampler)
    await pipe.close(0)
    await pipe.stopped()
    await spool.close()
    await rm(dir, { recursive: true, force: true })
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return Math.round((s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2) * 10) / 10
}

const runs: Run[] = []
const order = Array.from({ length: repeat }, () => [...fails, ...[...fails].reverse()]).flat()
for (const [k, fail] of order.entries()) {
  const r = await run(fail, k)
  runs.push(r)
  log(`fail ${fail * 100} %: shipped ${r.shippedPerSec}/s, backlog at end ${r.backlogAtEnd} (peak ${r.peakBacklog}), drained in ${r.drainMs ?? `> ${drainSeconds * 1000}`} ms, ${r.calls} calls, ${r.refusedRecords} records refused, peak consecutive failures ${r.peakConsecutiveFailures}`)
}

const byFail = fails.map((fail) => {
  const rs = runs.filter((r) => r.fail === fail)
  return {
    fail,
    runs: rs.length,
    shippedPerSec: median(rs.map((r) => r.shippedPerSec)),
    backlogAtEnd: median(rs.map((r) => r.backlogAtEnd)),
    peakBacklog: Math.max(...rs.map((r) => r.peakBacklog)),
    drainMs: rs.some((r) => r.drainMs === null) ? null : median(rs.map((r) => r.drainMs as number)),
    calls: median(rs.map((r) => r.calls)),
    refusedRecords: median(rs.map((r) => r.refusedRecords)),
    refusedFull: rs.reduce((n, r) => n + r.refusedFull, 0),
    peakConsecutiveFailures: Math.max(...rs.map((r) => r.peakConsecutiveFailures))
  }
})
const base = byFail.find((b) => b.fail === 0) ?? byFail[0]
const target = byFail.filter((b) => b !== base).map((b) => ({
  fail: b.fail,
  shippedVsBaseline: base === undefined || base.shippedPerSec === 0 ? null : Math.round(b.shippedPerSec / base.shippedPerSec * 100) / 100,
  keepsPace: base !== undefined && b.shippedPerSec >= 0.95 * base.shippedPerSec && b.backlogAtEnd <= base.backlogAtEnd + rate && b.drainMs !== null
}))
process.stdout.write(JSON.stringify({
  bench: 'audit-ship',
  rate,
  seconds,
  latencyMs,
  rowBytes,
  flushMs,
  byFail,
  target,
  loadavg1m: Math.round((loadavg()[0] as number) * 100) / 100,
  node: process.versions.node
}) + '\n')

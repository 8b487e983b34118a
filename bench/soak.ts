/**
 * Soak: the proxy under a moderate, steady load for minutes, its memory and event-loop delay sampled.
 *
 *   node bench/soak.ts [--json] [--minutes 5] [--rate 100] [--sample-seconds 5] [--sink firehose|parquet] [--pin 1:0]
 *
 * The proxy runs as a child process (production configuration, audit on) in front of the simulator; the load is
 * `pix-proxy load`'s engine (open model, the default DICT + SPI mix) in this process. The simulator (with the
 * token) and the local Firehose endpoint run in processes of their own (bench/lib/stack-process.ts), so that
 * neither shares an event loop with the load generator; each sample gives every process's CPU share over its
 * window. --pin SERVER:REST pins the proxy to the SERVER CPUs and everything else to the REST (taskset lists). Every `sample-seconds` the proxy's own
 * /metrics give its RSS, V8 heap in use (event loop, and the audit thread's own), event-loop delay p99 (since the
 * previous sample), audit spool size, and the window's mean request, upstream and audit-wait times from the
 * proxy's own histograms (to tell a slow proxy from a slow simulator or a slow load generator).
 * Verdict: no errors, no signature failures, and no growth trend: the least-squares slope of RSS and of heap over
 * the run after the first minute (warm-up: JIT, pools, caches) must stay under 1 MiB per minute, and the last
 * minute's median RSS within 10 % of the second minute's.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { request } from 'undici'
import { COUNTERPARTY_ISPB, PROXY_ISPB } from '../tools/demo/stack.ts'
import { createDirectTransport, createProxyTransport, runLoad } from '../tools/load/index.ts'
import { treeCpuSeconds } from './lib/proc.ts'
import { slopePerMinute } from './lib/stats.ts'
import { auditSinkSettings, startBenchProxy } from './lib/proxy.ts'
import { pinProcess, startAwsLocalProcess, startStackProcess } from './lib/stack-process.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    minutes: { type: 'string', default: '5' },
    rate: { type: 'string', default: '100' },
    'sample-seconds': { type: 'string', default: '5' },
    sink: { type: 'string', default: 'firehose' },
    pin: { type: 'string' }
  }
})
const minutes = Number(values.minutes)
const rate = Number(values.rate)
const sampleMs = Number(values['sample-seconds']) * 1000
const log = (s: string): void => { if (!values.json) process.stderr.write(`[soak] ${s}\n`) }

const [serverCpus, restCpus] = values.pin === undefined ? [undefined, undefined] : values.pin.split(':')
const pinned = restCpus === undefined ? {} : { cpus: restCpus }
if (restCpus !== undefined) await pinProcess(process.pid, restCpus)
const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-soak-'))
const stack = await startStackProcess(dir, { longPollMs: 300, ...pinned })
// The audit sink: production's Firehose (to the local AWS endpoint, rows kept in memory) or --sink parquet.
const aws = values.sink === 'firehose' ? await startAwsLocalProcess({ retain: 1_000, ...pinned }) : null
const proxy = await startBenchProxy(stack, join(dir, 'soak'), auditSinkSettings(aws))
if (serverCpus !== undefined) await pinProcess(proxy.pid, serverCpus)
const url = proxy.url

/** Means over the sample's window (ms), from the proxy's own histograms: where a slow stretch comes from. */
interface WindowMeans { requestMs: number | null, upstreamMs: number | null, auditWaitMs: number | null }
/** CPU use over the window, % of one core, per process: which one is busy when latency moves. */
interface CpuShares { proxy: number, simulator: number, aws: number | null, bench: number }
interface Sample extends WindowMeans { atS: number, rssMiB: number, heapUsedMiB: number, auditHeapUsedMiB: number, eventLoopP99Ms: number, spoolMiB: number, cpuPct: CpuShares }
/** Sum and count of a histogram over all its label sets. */
const totals = (text: string, name: string): { sum: number, count: number } => {
  let sum = 0
  let count = 0
  for (const m of text.matchAll(new RegExp(`^${name}_(sum|count)(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))) {
    if (m[1] === 'sum') sum += Number(m[2])
    else count += Number(m[2])
  }
  return { sum, count }
}
const WINDOW_HISTOGRAMS = { requestMs: 'pixproxy_request_duration_seconds', upstreamMs: 'pixproxy_upstream_duration_seconds', auditWaitMs: 'pixproxy_audit_wait_seconds' } as const
let previous: Record<string, { sum: number, count: number }> = {}
function windowMeans (text: string): WindowMeans {
  const now = Object.fromEntries(Object.entries(WINDOW_HISTOGRAMS).map(([k, name]) => [k, totals(text, name)]))
  const mean = (k: keyof WindowMeans): number | null => {
    const a = now[k] as { sum: number, count: number }
    const b = previous[k] ?? { sum: 0, count: 0 }
    return a.count > b.count ? Math.round((a.sum - b.sum) / (a.count - b.count) * 1e5) / 100 : null
  }
  const out = { requestMs: mean('requestMs'), upstreamMs: mean('upstreamMs'), auditWaitMs: mean('auditWaitMs') }
  previous = now
  return out
}
const metric = (text: string, name: string, labels = ''): number => {
  const m = new RegExp(`^${name}${labels === '' ? '' : `\\{${labels}\\}`} ([0-9.e+-]+)$`, 'm').exec(text)
  return m === null ? NaN : Number(m[1])
}
const cpuNow = async (): Promise<{ at: number, proxy: number, simulator: number, aws: number, bench: number }> => {
  const own = process.cpuUsage()
  return {
    at: performance.now(),
    proxy: await treeCpuSeconds(proxy.pid),
    simulator: await treeCpuSeconds(stack.simulatorPid),
    aws: aws === null ? 0 : await treeCpuSeconds(aws.pid),
    bench: (own.user + own.system) / 1e6
  }
}
let cpuBefore = await cpuNow()
async function cpuShares (): Promise<CpuShares> {
  const now = await cpuNow()
  const pct = (k: 'proxy' | 'simulator' | 'aws' | 'bench'): number => Math.round((now[k] - cpuBefore[k]) / ((now.at - cpuBefore.at) / 1000) * 100)
  const out = { proxy: pct('proxy'), simulator: pct('simulator'), aws: aws === null ? null : pct('aws'), bench: pct('bench') }
  cpuBefore = now
  return out
}
const samples: Sample[] = []
const t0 = performance.now()
const mib = (b: number): number => Math.round(b / 1048576 * 10) / 10
const sampler = setInterval(() => {
  request(url + '/metrics').then(async (r) => {
    const text = await r.body.text()
    samples.push({
      atS: Math.round((performance.now() - t0) / 100) / 10,
      rssMiB: mib(metric(text, 'process_resident_memory_bytes')),
      heapUsedMiB: mib(metric(text, 'nodejs_heap_size_used_bytes')),
      auditHeapUsedMiB: mib(metric(text, 'pixproxy_audit_worker_heap_bytes', 'measure="used"')),
      eventLoopP99Ms: Math.round(metric(text, 'nodejs_eventloop_lag_p99_seconds') * 1e5) / 100,
      spoolMiB: mib(metric(text, 'pixproxy_audit_spool_bytes')),
      ...windowMeans(text),
      cpuPct: await cpuShares()
    })
    const s = samples.at(-1) as Sample
    log(`${s.atS}s rss ${s.rssMiB} MiB heap ${s.heapUsedMiB} MiB audit heap ${s.auditHeapUsedMiB} MiB loop p99 ${s.eventLoopP99Ms} ms spool ${s.spoolMiB} MiB mean request ${s.requestMs} ms upstream ${s.upstreamMs} ms audit wait ${s.auditWaitMs} ms cpu % ${JSON.stringify(s.cpuPct)}`)
  }, () => {})
}, sampleMs)

let report
try {
  const target = await createProxyTransport({ url, ispb: PROXY_ISPB })
  const other = await createDirectTransport({
    url: `https://localhost:${new URL(stack.simulator.dictUrl).port}`,
    ispb: COUNTERPARTY_ISPB,
    xmlSigner: stack.counterparty.xmlSigner,
    bacenTrust: stack.bacenTrust,
    tls: { ca: stack.caPem, ...stack.counterparty.tls, servername: 'localhost' }
  })
  report = await runLoad({ target, counterparty: other, model: { kind: 'open', ratePerSec: rate }, durationMs: minutes * 60_000 })
  await target.close()
  await other.close()
} finally {
  clearInterval(sampler)
  await proxy.stop()
  await aws?.close()
  await stack.close()
  await rm(dir, { recursive: true, force: true })
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[s.length >> 1] as number
}
const steady = samples.filter((s) => s.atS >= 60)
const rssSlope = slopePerMinute(steady.map((s) => s.atS), steady.map((s) => s.rssMiB))
const heapSlope = slopePerMinute(steady.map((s) => s.atS), steady.map((s) => s.heapUsedMiB))
const auditHeapSlope = slopePerMinute(steady.map((s) => s.atS), steady.map((s) => s.auditHeapUsedMiB))
const endS = samples.at(-1)?.atS ?? 0
const secondMinute = median(samples.filter((s) => s.atS >= 60 && s.atS < 120).map((s) => s.rssMiB))
const lastMinute = median(samples.filter((s) => s.atS >= endS - 60).map((s) => s.rssMiB))
const t = report.totals
const verdict = {
  errors: t.errors,
  dropped: t.dropped,
  signatureFailures: t.signatureFailures,
  rssSlopeMiBPerMin: rssSlope,
  heapSlopeMiBPerMin: heapSlope,
  auditHeapSlopeMiBPerMin: auditHeapSlope,
  rssSecondMinuteMiB: secondMinute,
  rssLastMinuteMiB: lastMinute,
  eventLoopP99MaxMs: Math.max(...samples.map((s) => s.eventLoopP99Ms)),
  eventLoopP99MedianMs: median(samples.map((s) => s.eventLoopP99Ms)),
  pass: t.errors === 0 && t.dropped === 0 && t.signatureFailures === 0 && rssSlope !== null && rssSlope < 1 && heapSlope !== null && heapSlope < 1 && !(auditHeapSlope !== null && auditHeapSlope >= 1) && lastMinute <= secondMinute * 1.1
}
process.stdout.write(JSON.stringify({
  bench: 'soak',
  minutes,
  ratePerSec: rate,
  auditSink: values.sink,
  pin: values.pin ?? null,
  requests: t.count,
  ok: t.ok,
  latencyMs: t.latencyMs,
  verdict,
  samples,
  loadavg1m: Math.round((loadavg()[0] as number) * 100) / 100,
  node: process.versions.node
}) + '\n')
if (!verdict.pass) process.exitCode = 1

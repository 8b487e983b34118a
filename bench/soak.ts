/**
 * Soak: the proxy under a moderate, steady load for minutes, its memory and event-loop delay sampled.
 *
 *   node bench/soak.ts [--json] [--minutes 5] [--rate 100] [--sample-seconds 5] [--sink firehose|parquet]
 *
 * The proxy runs as a child process (production configuration, audit on) in front of the simulator; the load is
 * `pix-proxy load`'s engine (open model, the default DICT + SPI mix). Every `sample-seconds` the proxy's own
 * /metrics give its RSS, V8 heap in use, event-loop delay p99 (since the previous sample) and audit spool size.
 * Verdict: no errors, no signature failures, and no growth trend: the least-squares slope of RSS and of heap over
 * the run after the first minute (warm-up: JIT, pools, caches) must stay under 1 MiB per minute, and the last
 * minute's median RSS within 10 % of the second minute's.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { request } from 'undici'
import { COUNTERPARTY_ISPB, PROXY_ISPB, startLocalStack } from '../src/demo/stack.ts'
import { createDirectTransport, createProxyTransport, runLoad } from '../src/load/index.ts'
import { TrustStore } from '../src/xmldsig/truststore.ts'
import { startLocalAwsEndpoint } from '../src/aws/local-endpoint.ts'
import { auditSinkSettings, startBenchProxy } from './lib/proxy.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    minutes: { type: 'string', default: '5' },
    rate: { type: 'string', default: '100' },
    'sample-seconds': { type: 'string', default: '5' },
    sink: { type: 'string', default: 'firehose' }
  }
})
const minutes = Number(values.minutes)
const rate = Number(values.rate)
const sampleMs = Number(values['sample-seconds']) * 1000
const log = (s: string): void => { if (!values.json) process.stderr.write(`[soak] ${s}\n`) }


const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-soak-'))
const stack = await startLocalStack({ dir, longPollMs: 300 })
await stack.proxy.close()
// The audit sink: production's Firehose (to the local AWS endpoint here, rows kept in memory) or --sink parquet.
const aws = values.sink === 'firehose' ? await startLocalAwsEndpoint({ retain: 1_000 }) : null
const proxy = await startBenchProxy(stack, join(dir, 'soak'), auditSinkSettings(aws))
const url = proxy.url

interface Sample { atS: number, rssMiB: number, heapUsedMiB: number, eventLoopP99Ms: number, spoolMiB: number }
const metric = (text: string, name: string, labels = ''): number => {
  const m = new RegExp(`^${name}${labels === '' ? '' : `\\{${labels}\\}`} ([0-9.e+-]+)$`, 'm').exec(text)
  return m === null ? NaN : Number(m[1])
}
const samples: Sample[] = []
const t0 = performance.now()
const mib = (b: number): number => Math.round(b / 1048576 * 10) / 10
const sampler = setInterval(() => {
  request(url + '/metrics').then(async (r) => {
    const text = await r.body.text()
    samples.push({
      atS: Math.round((performance.now() - t0) / 100) / 10,
      rssMiB: mib(metric(text, 'pixproxy_process_resident_memory_bytes')),
      heapUsedMiB: mib(metric(text, 'pixproxy_nodejs_heap_size_used_bytes')),
      eventLoopP99Ms: Math.round(metric(text, 'pixproxy_nodejs_eventloop_lag_p99_seconds') * 1e5) / 100,
      spoolMiB: mib(metric(text, 'pixproxy_audit_spool', 'measure="bytes"'))
    })
    const s = samples.at(-1) as Sample
    log(`${s.atS}s rss ${s.rssMiB} MiB heap ${s.heapUsedMiB} MiB loop p99 ${s.eventLoopP99Ms} ms spool ${s.spoolMiB} MiB`)
  }, () => {})
}, sampleMs)

const sim = stack.simulatorPki
const cp = sim.participants.get(COUNTERPARTY_ISPB)
if (cp === undefined) throw new Error('no counterparty participant')
let report
try {
  const target = await createProxyTransport({ url, ispb: PROXY_ISPB })
  const other = await createDirectTransport({
    url: `https://localhost:${new URL(stack.simulator.dictUrl).port}`,
    ispb: COUNTERPARTY_ISPB,
    xmlSigner: cp.signing.xmlSigner,
    bacenTrust: new TrustStore([sim.bcbSigning.certificate]),
    tls: { ca: sim.ca.certPem, certPem: cp.tls.certPem, keyPem: cp.tls.keyPem, servername: 'localhost' }
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

/** Least-squares slope of y over x, per minute (x in seconds). */
function slopePerMinute (xs: number[], ys: number[]): number {
  const n = xs.length
  if (n < 2) return NaN
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my)
    den += ((xs[i] as number) - mx) ** 2
  }
  return Math.round(num / den * 60 * 100) / 100
}
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[s.length >> 1] as number
}
const steady = samples.filter((s) => s.atS >= 60)
const rssSlope = slopePerMinute(steady.map((s) => s.atS), steady.map((s) => s.rssMiB))
const heapSlope = slopePerMinute(steady.map((s) => s.atS), steady.map((s) => s.heapUsedMiB))
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
  rssSecondMinuteMiB: secondMinute,
  rssLastMinuteMiB: lastMinute,
  eventLoopP99MaxMs: Math.max(...samples.map((s) => s.eventLoopP99Ms)),
  eventLoopP99MedianMs: median(samples.map((s) => s.eventLoopP99Ms)),
  pass: t.errors === 0 && t.dropped === 0 && t.signatureFailures === 0 && rssSlope < 1 && heapSlope < 1 && lastMinute <= secondMinute * 1.1
}
process.stdout.write(JSON.stringify({
  bench: 'soak',
  minutes,
  ratePerSec: rate,
  auditSink: values.sink,
  requests: t.count,
  ok: t.ok,
  latencyMs: t.latencyMs,
  verdict,
  samples,
  loadavg1m: Math.round((loadavg()[0] as number) * 100) / 100,
  node: process.versions.node
}) + '\n')
if (!verdict.pass) process.exitCode = 1

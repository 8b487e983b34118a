/**
 * pix-proxy against the transport floor: the same flows, at the same fixed rates, in one run, through
 *   (a) pix-proxy (child process, production configuration: SoftHSM signing, engine mTLS, response verification,
 *       audit spool + Parquet),
 *   (b) nginx as a plain mutual-TLS forwarding proxy (bench/lib/nginx.ts: no signing, no verification, no audit),
 *   (c) the simulator directly (mTLS from the load tool itself),
 * to the same BACEN simulator. For (b) and (c) the load tool signs each request itself (software key) and verifies
 * each signed answer, as a bank core without a proxy must: that cost lands in this process, not in the target.
 *
 *   node bench/e2e.ts [--json] [--rates 100,200,300,400,600] [--seconds 10] [--sink firehose|parquet] [--targets proxy,nginx,direct] [--mix get-entry=2,create-entry=2,create-claim=1,spi-send=2] [--pin 1:0]
 *   node bench/e2e.ts --pinned [--quick] [--json] [--pin 0:1] [--rates …] [--seconds …] [--ops get-entry,…] [--contenders proxy,…] [--cpu-prof DIR] [--proxy-env K=V,…] [--audit-cpus 1] [--audit-nice 10] [--soak-minutes 30]
 *
 * --pinned (issue 15) is another comparison, bench/lib/pinned.ts: each server pinned to one core, a canned BACEN
 * (answers signed once with the BCB key) instead of the simulator, four contenders (nginx, a Fastify + undici
 * pass-through, pix-proxy with auditing off, pix-proxy as deployed) each warmed up until V8 has settled, DICT GetEntry, DICT
 * CreateEntry and ICOM pacs.008 measured apart; its JSON line carries `pinned`, `ratios` and `sustainedPerSec`.
 * --quick: a coarser rate grid, 2 s points and a 2 s warm-up (under three minutes; its figures include V8's JIT).
 *
 * Load: `pix-proxy load`'s engine (tools/load), open model (latency from the scheduled send time). Per target and
 * rate: p50/p99, errors, achieved rate, and for (a) and (b) the server's CPU time per request (/proc, process tree).
 * "Sustained" = the highest rate with p99 under 50 ms and no errors; rates above a target's first failure are not
 * run for it. Issue 6's targets: proxy p99 within 2x nginx's at 300 req/s; proxy sustained rate >= 60 % of nginx's.
 * The load runs in this process; the simulator (it verifies and signs every DICT call, with the token beside it),
 * the local Firehose endpoint and the proxy or nginx each in their own (bench/lib/stack-process.ts). Each point gives
 * the server's and the simulator's CPU per request. --pin SERVER:REST pins the proxy or nginx to the SERVER CPUs and
 * everything else to the REST (taskset lists): the same core budget for pix-proxy and nginx, and a load generator and
 * simulator that do not take it from them.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { COUNTERPARTY_ISPB, PROXY_ISPB } from '../tools/demo/stack.ts'
import { createDirectTransport, createProxyTransport, parseMix, runLoad } from '../tools/load/index.ts'
import type { LoadReport, LoadTransport } from '../tools/load/index.ts'
import { startNginx } from './lib/nginx.ts'
import { runPinned } from './lib/pinned.ts'
import { pinProcess, startAwsLocalProcess, startStackProcess } from './lib/stack-process.ts'
import { threadCpuSeconds, treeCpuSeconds, treeRssMiB } from './lib/proc.ts'
import { auditSinkSettings, cpuProfSettings, startBenchProxy } from './lib/proxy.ts'
import type { BenchProxy } from './lib/proxy.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    rates: { type: 'string' },
    seconds: { type: 'string' },
    pinned: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    mix: { type: 'string', default: 'get-entry=2,create-entry=2,create-claim=1,spi-send=2' },
    targets: { type: 'string', default: 'proxy,nginx,direct' },
    'cpu-prof': { type: 'string' },
    'node-options': { type: 'string', default: '' },
    sink: { type: 'string', default: 'firehose' },
    pin: { type: 'string' },
    ops: { type: 'string' },
    'proxy-env': { type: 'string' },
    contenders: { type: 'string' },
    'audit-cpus': { type: 'string' },
    'audit-nice': { type: 'string' },
    'soak-minutes': { type: 'string' }
  }
})
const log = (s: string): void => { if (!values.json) process.stderr.write(`[bench] ${s}\n`) }
if (values.pinned) {
  const [server = '0', rest = '1'] = (values.pin ?? '0:1').split(':')
  const result = await runPinned({
    quick: values.quick,
    serverCpus: server,
    restCpus: rest,
    ...(values.rates === undefined ? {} : { rates: values.rates.split(',').map(Number).sort((a, b) => a - b) }),
    ...(values.seconds === undefined ? {} : { seconds: Number(values.seconds) }),
    ...(values.ops === undefined ? {} : { ops: values.ops.split(',') }),
    ...(values.contenders === undefined ? {} : { contenders: values.contenders.split(',') }),
    ...(values['cpu-prof'] === undefined ? {} : { cpuProfDir: values['cpu-prof'] }),
    ...(values['audit-cpus'] === undefined ? {} : { auditCpus: values['audit-cpus'] }),
    ...(values['audit-nice'] === undefined ? {} : { auditNice: Number(values['audit-nice']) }),
    ...(values['soak-minutes'] === undefined ? {} : { soakMinutes: Number(values['soak-minutes']) }),
    ...(values['proxy-env'] === undefined ? {} : { proxyEnv: Object.fromEntries(values['proxy-env'].split(',').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) }),
    log
  })
  process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(0)
}
const rates = (values.rates ?? (values.quick ? '100,300,600' : '100,200,300,400,600')).split(',').map(Number).sort((a, b) => a - b)
const seconds = Number(values.seconds ?? (values.quick ? '3' : '10'))
const mix = parseMix(values.mix)
const targets = values.targets.split(',') as Array<'proxy' | 'nginx' | 'direct'>
const P99_LIMIT_MS = 50

const [serverCpus, restCpus] = values.pin === undefined ? [undefined, undefined] : values.pin.split(':')
const pinned = restCpus === undefined ? {} : { cpus: restCpus }
if (restCpus !== undefined) await pinProcess(process.pid, restCpus)
const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-e2e-'))
const stack = await startStackProcess(dir, { longPollMs: 300, ...pinned })
// The audit sink: production's Firehose (PutRecordBatch to the local AWS endpoint, rows kept in memory) by default,
// or the local Parquet store (--sink parquet).
const aws = values.sink === 'firehose' ? await startAwsLocalProcess({ retain: 1_000, ...pinned }) : null
const { bacenTrust, counterparty } = stack
const simulatorUrl = `https://localhost:${new URL(stack.simulator.dictUrl).port}`
const tls = { ca: stack.caPem, ...counterparty.tls, servername: 'localhost' }

/** The counterparty straight to the simulator: bank core 99999010 without a proxy. */
const direct = async (): Promise<LoadTransport> => await createDirectTransport({ url: simulatorUrl, ispb: COUNTERPARTY_ISPB, xmlSigner: counterparty.xmlSigner, bacenTrust, tls })

interface Point {
  target: string
  rate: number
  ok: number
  errors: number
  dropped: number
  signatureFailures: number
  errorsByCode: Record<string, number>
  achievedPerSec: number
  p50: number | null
  p99: number | null
  max: number | null
  serverCpuMsPerRequest: number | null
  serverRssMiB: number | null
  /** The main process's threads (pix-proxy: main, libuv pool, V8, DuckDB; nginx: the master only). */
  serverCpuMsPerRequestByThread: Record<string, number>
  /** The simulator's CPU per request (it verifies and signs DICT calls): what it costs the shared cores. */
  simulatorCpuMsPerRequest: number
  sustained: boolean
}

async function measure (target: 'proxy' | 'nginx' | 'direct', rate: number): Promise<Point> {
  let transport: LoadTransport
  let other: LoadTransport
  let pid: number | null = null
  let stop = async (): Promise<void> => {}
  if (target === 'proxy') {
    const p = await startBenchProxy(stack, join(dir, `proxy-${rate}`), {
      ...auditSinkSettings(aws),
      ...cpuProfSettings(values['cpu-prof'] === undefined ? undefined : `${values['cpu-prof']}/proxy-${rate}`, values['node-options'])
    })
    const url = p.url
    pid = p.pid
    stop = p.stop
    transport = await createProxyTransport({ url, ispb: PROXY_ISPB })
    other = await direct()
  } else if (target === 'nginx') {
    const n = await startNginx({ dir: join(dir, `nginx-${rate}`), upstreamUrl: simulatorUrl, caPem: tls.ca, certPem: tls.certPem, keyPem: tls.keyPem })
    pid = n.pid
    stop = async () => { await n.close() }
    transport = await createDirectTransport({ url: n.url, ispb: COUNTERPARTY_ISPB, xmlSigner: counterparty.xmlSigner, bacenTrust, host: 'localhost' })
    other = await createProxyTransport({ url: await proxyForPrepare(), ispb: PROXY_ISPB })
  } else {
    transport = await direct()
    other = await createProxyTransport({ url: await proxyForPrepare(), ispb: PROXY_ISPB })
  }
  if (pid !== null && serverCpus !== undefined) await pinProcess(pid, serverCpus)
  try {
    // Warm-up: connections, JIT, HSM sessions.
    const warm = await runLoad({ target: transport, counterparty: other, model: { kind: 'open', ratePerSec: Math.min(rate, 50) }, durationMs: 1_500, mix })
    // At 50/s every target keeps up: a failure here is a broken set-up, and its figures would be those of errors.
    if (warm.totals.errors > 0 || warm.totals.signatureFailures > 0) throw new Error(`warm-up of ${target}: ${warm.totals.errors} errors, ${warm.totals.signatureFailures} signature failures ${JSON.stringify(warm.totals.errorsByCode)}`)
    const cpu0 = pid === null ? 0 : await treeCpuSeconds(pid)
    const threads0 = pid === null ? {} : await threadCpuSeconds(pid)
    const sim0 = await treeCpuSeconds(stack.simulatorPid)
    const r: LoadReport = await runLoad({ target: transport, counterparty: other, model: { kind: 'open', ratePerSec: rate }, durationMs: seconds * 1000, mix })
    const cpu = pid === null ? 0 : await treeCpuSeconds(pid) - cpu0
    const threads1 = pid === null ? {} : await threadCpuSeconds(pid)
    const rss = pid === null ? null : await treeRssMiB(pid)
    const simCpu = await treeCpuSeconds(stack.simulatorPid) - sim0
    const t = r.totals
    const sent = t.ok + t.errors
    const point: Point = {
      target,
      rate,
      ok: t.ok,
      errors: t.errors,
      dropped: t.dropped,
      signatureFailures: t.signatureFailures,
      errorsByCode: { ...t.errorsByCode },
      achievedPerSec: Math.round(t.throughputPerSec),
      p50: t.latencyMs.p50,
      p99: t.latencyMs.p99,
      max: t.latencyMs.max,
      serverCpuMsPerRequest: pid === null ? null : Math.round(cpu * 1e6 / Math.max(1, sent)) / 1000,
      serverRssMiB: rss,
      serverCpuMsPerRequestByThread: Object.fromEntries(Object.entries(threads1)
        .map(([k, v]) => [k, Math.round((v - (threads0[k] ?? 0)) * 1e6 / Math.max(1, sent)) / 1000] as const)
        .filter(([, v]) => v > 0.005)),
      simulatorCpuMsPerRequest: Math.round(simCpu * 1e6 / Math.max(1, sent)) / 1000,
      sustained: t.errors === 0 && t.dropped === 0 && t.signatureFailures === 0 && t.latencyMs.p99 !== null && t.latencyMs.p99 < P99_LIMIT_MS
    }
    // A signature that is not VALID is never load: the bench stops rather than report it as a slow rate.
    if (t.signatureFailures > 0) throw new Error(`${target} @ ${rate}/s: ${t.signatureFailures} signature failures`)
    log(`${target} @ ${rate}/s: p50 ${point.p50} ms p99 ${point.p99} ms ok ${t.ok} errors ${t.errors} dropped ${t.dropped} cpu ${point.serverCpuMsPerRequest ?? '-'} ms/req (simulator ${point.simulatorCpuMsPerRequest}) ${JSON.stringify(point.serverCpuMsPerRequestByThread)} ${JSON.stringify(point.errorsByCode)}`)
    return point
  } finally {
    await transport.close()
    await other.close()
    await stop()
  }
}

// Keys and claims that (b) and (c) read and confirm are created by participant 99999004 through a proxy kept for
// that purpose (the prepare phase, not measured).
let prepareProxy = null as BenchProxy | null
async function proxyForPrepare (): Promise<string> {
  if (prepareProxy === null) {
    prepareProxy = await startBenchProxy(stack, join(dir, 'prepare'))
    if (restCpus !== undefined) await pinProcess(prepareProxy.pid, restCpus)
  }
  return prepareProxy.url
}

const points: Point[] = []
try {
  for (const target of targets) {
    for (const rate of rates) {
      const p = await measure(target, rate)
      points.push(p)
      if (!p.sustained) break // higher rates would only fail harder
    }
  }
} finally {
  await prepareProxy?.stop()
  await aws?.close()
  await stack.close()
  await rm(dir, { recursive: true, force: true })
}

const at = (target: string, rate: number): Point | undefined => points.find((p) => p.target === target && p.rate === rate)
const sustained = Object.fromEntries(targets.map((target) => [target, Math.max(0, ...points.filter((p) => p.target === target && p.sustained).map((p) => p.rate))]))
const proxy300 = at('proxy', 300)
const nginx300 = at('nginx', 300)
const r2 = (x: number): number => Math.round(x * 100) / 100
const result = {
  bench: 'e2e',
  flows: mix,
  auditSink: values.sink,
  pin: values.pin ?? null,
  seconds,
  p99LimitMs: P99_LIMIT_MS,
  points,
  sustainedPerSec: sustained,
  targets: {
    p99RatioAt300: proxy300?.p99 != null && nginx300?.p99 != null ? r2(proxy300.p99 / nginx300.p99) : null,
    p99RatioAt300Goal: 2,
    sustainedShareOfNginx: (sustained.nginx ?? 0) > 0 ? r2((sustained.proxy ?? 0) / (sustained.nginx as number)) : null,
    sustainedShareGoal: 0.6
  },
  loadavg1m: r2(loadavg()[0] as number),
  node: process.versions.node
}
process.stdout.write(JSON.stringify(result) + '\n')

/**
 * bench/e2e.ts --pinned: every contender's server on one core (taskset: the process and every thread it starts), the
 * load generator, a canned BACEN (bench/lib/canned-bacen.ts: mutual TLS, answers genuinely signed with the BCB key,
 * signed once and replayed), the token/simulator host and the local Firehose endpoint on the other cores.
 *
 * Contenders, all running the whole time; each is warmed up until V8 has settled (warmUp) and climbs its whole rate
 * grid right after, then the next (runPinned says why not in alternation):
 *   nginx            bench/lib/nginx.ts, one worker, mutual TLS out, nothing else
 *   passthrough      bench/lib/passthrough.ts, Fastify + undici mutual TLS, bytes relayed
 *   proxy-audit-off  pix-proxy, PIXPROXY_AUDIT_ENABLED=false (HSM signing, engine mTLS, answer verification)
 *   proxy            pix-proxy as deployed: audit on, Firehose sink to `pix-proxy aws-local` (its own process)
 * Operations, measured apart:
 *   get-entry     DICT GetEntry of KEY (the proxy verifies the answer and its binding: Entry/Key = KEY)
 *   create-entry  DICT CreateEntry of KEY (the proxy signs the request in the HSM and verifies the answer)
 *   spi-send      ICOM pacs.008 POST (the proxy signs; ICOM signs nothing in its answer)
 * nginx and the pass-through get bodies the load signed once at start (same bytes on the wire as a signing bank core
 * sends); the load does not verify their answers (that cost would fall on the load's core, not the measured one).
 * Per contender, operation and rate: p50/p99 from the scheduled send time (open model), errors, the server's CPU per
 * request by thread (schedstat, ns); "sustained" = the highest rate with p99 < 50 ms and no errors (every lower rate
 * of the grid too). A contender stops climbing at its first failed rate, but 200/s, where the ratios are taken, is
 * measured for every contender. CPU by thread: `main` the event loop (nginx: master + worker), `pix-audit` the audit
 * thread, `V8Worker` V8's platform threads (GC, compilation), `libuv-worker` the pool; the HSM's share of the pool
 * (`hsmMsPerRequestAt200`) is what a signing operation adds to it over GetEntry, which signs nothing.
 * Ratios (issue 15): `readCpuVsNginx`, `writeCpuVsNginx`, `icomCpuVsNginx` are pix-proxy's CPU per request WITHOUT the
 * HSM's share over nginx's (`…WithHsmVsNginx`: with it, SoftHSM's RSA included); `jsFloorCpuVsNginx` is the
 * pass-through's over nginx's, the JavaScript transport floor.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { loadavg, setPriority, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { COUNTERPARTY_ISPB, PROXY_ISPB } from '../../tools/demo/stack.ts'
import { randomCpf } from '../../tools/load/flows.ts'
import { createEntryRequest, pacs008, SAMPLE_PAYEE, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { newEndToEndId } from '../../core/pix/ids.ts'
import { startNginx } from './nginx.ts'
import { slopePerMinute } from './stats.ts'
import { threadCpuSecondsPrecise, threadIdsNamed, threadSysSeconds, threadWakeups } from './proc.ts'
import { auditSinkSettings, cpuProfSettings, startBenchProxy } from './proxy.ts'
import { pinProcess, pinThread, startAwsLocalProcess, startScriptProcess, startStackProcess } from './stack-process.ts'
import type { CannedBacenConfig } from './canned-bacen.ts'

export interface PinnedOptions {
  readonly quick: boolean
  /** taskset lists: the measured server's CPU(s), and everything else's. */
  readonly serverCpus: string
  readonly restCpus: string
  readonly rates?: readonly number[]
  readonly seconds?: number
  /** Only these operations / contenders (default: all); the ratios need nginx and the operation measured. */
  readonly ops?: readonly string[]
  readonly contenders?: readonly string[]
  /**
   * V8 CPU profiles of both pix-proxy contenders (every thread) into this directory, sampled every 100 µs; each
   * measured point then carries its window on the monotonic clock V8's profiles use (`profileWindowUs`), so
   * bench/cpu-profile.ts can take one operation's samples out of the whole run.
   */
  readonly cpuProfDir?: string
  /** Extra environment for both pix-proxy contenders (e.g. PIXPROXY_LOG_LEVEL=info, production's default). */
  readonly proxyEnv?: Readonly<Record<string, string>>
  /**
   * A probe: the deployed proxy's audit thread (`pix-audit`) moved to these CPUs after start, the rest of the proxy
   * staying on `serverCpus`. It tells the cost of sharing one core between the loop and the audit thread apart from
   * the cost of the audit's work. The CPU ratios of such a run are not the issue's (the server is no longer on one core).
   */
  readonly auditCpus?: string
  /** A probe: the deployed proxy's audit thread reniced to this nice value (e.g. 10: the loop wins the shared core). */
  readonly auditNice?: number
  /**
   * Instead of the grid: the deployed proxy alone at 200/s for this many minutes, its operations alternating in
   * 30-second points, its memory and event-loop delay read from its /metrics after each (issue 15's soak).
   */
  readonly soakMinutes?: number
  readonly log: (line: string) => void
}

const OPS = ['get-entry', 'create-entry', 'spi-send'] as const
type Op = typeof OPS[number]
const CONTENDERS = ['nginx', 'passthrough', 'proxy-audit-off', 'proxy'] as const
type Contender = typeof CONTENDERS[number]
const P99_LIMIT_MS = 50
const FIXED_RATE = 200
const KEY = 'bench.pinned@example.com.br'

interface Server { readonly url: string, readonly pid: number, close (): Promise<void> }

interface Point {
  contender: Contender
  op: Op
  rate: number
  sent: number
  ok: number
  errorsByCode: Record<string, number>
  p50: number | null
  p99: number | null
  max: number | null
  achievedPerSec: number
  cpuMsPerRequest: number
  /** By thread: main (the event loop; nginx: master + worker), libuv-worker (the pool: HSM signs, fs), V8 … (GC, compiler), the audit worker thread… */
  cpuMsPerRequestByThread: Record<string, number>
  /** Of cpuMsPerRequestByThread, what each thread spent in the kernel (stime: 10 ms ticks, so coarse on short points). */
  sysMsPerRequestByThread: Record<string, number>
  /** Voluntary context switches per request by thread: how often each thread went idle and was woken again. */
  wakeupsPerRequestByThread: Record<string, number>
  sustained: boolean
  /**
   * The deployed proxy's own histogram of its audit waits during the point (pixproxy_audit_wait_seconds, by half):
   * p50 and p99 as the upper bound of the bucket they fall in, ms. What auditing adds to a request, seen from inside.
   */
  auditWaitMs?: Record<string, { readonly count: number, readonly p50: number | null, readonly p99: number | null }>
  /** New TLS connections the upstream accepted per request during the point (keep-alive reuse: ~0 when reused). */
  upstreamHandshakesPerRequest?: number
  /** With cpuProfDir: the load's window, µs on CLOCK_MONOTONIC (what V8 profiles' timestamps count). */
  profileWindowUs?: { readonly from: number, readonly to: number }
}

interface Bodies { readonly createEntry: string, readonly pacs008: readonly string[] }

const r2 = (x: number): number => Math.round(x * 100) / 100
const r3 = (x: number): number => Math.round(x * 1000) / 1000
function pct (sorted: number[], p: number): number | null {
  return sorted.length === 0 ? null : r2(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number)
}

/** Open-model load of one operation at `rate` for `seconds`: latency from the scheduled time. */
async function load (url: string, c: Contender, op: Op, bodies: Bodies, rate: number, seconds: number): Promise<Omit<Point, 'contender' | 'op' | 'rate' | 'cpuMsPerRequest' | 'cpuMsPerRequestByThread' | 'sysMsPerRequestByThread' | 'wakeupsPerRequestByThread' | 'sustained'>> {
  const proxied = c === 'proxy' || c === 'proxy-audit-off'
  const ispb = proxied ? PROXY_ISPB : COUNTERPARTY_ISPB
  const dispatcher = new Agent({ connections: 256, pipelining: 1, headersTimeout: 5_000, bodyTimeout: 5_000 })
  const interval = 1000 / rate
  const total = Math.round(rate * seconds)
  const latencies: number[] = []
  const errorsByCode: Record<string, number> = {}
  const fail = (code: string): void => { errorsByCode[code] = (errorsByCode[code] ?? 0) + 1 }
  const start = performance.now() + 20
  const inflight: Array<Promise<void>> = []
  for (let i = 0; i < total; i++) {
    const due = start + i * interval
    const wait = due - performance.now()
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
    const req = op === 'get-entry'
      ? { method: 'GET' as const, path: `/api/v2/entries/${encodeURIComponent(KEY)}`, headers: { 'pi-requestingparticipant': ispb, 'pi-payerid': randomCpf(), 'pi-endtoendid': newEndToEndId(ispb) }, expect: 200 }
      : op === 'create-entry'
        ? { method: 'POST' as const, path: '/api/v2/entries/', headers: { 'content-type': 'application/xml' }, body: bodies.createEntry, expect: 201 }
        : { method: 'POST' as const, path: `/api/v1/in/${ispb}/msgs`, headers: { 'content-type': 'application/xml' }, body: bodies.pacs008[i % bodies.pacs008.length], expect: 201 }
    inflight.push(dispatcher.request({ origin: url, path: req.path, method: req.method, headers: req.headers, body: req.body }).then(async (r) => {
      await r.body.dump()
      const ms = performance.now() - due
      if (r.statusCode !== req.expect) return fail(String(r.statusCode))
      if (proxied && op !== 'spi-send' && r.headers['pix-proxy-signature-code'] !== 'VALID') return fail(`signature ${String(r.headers['pix-proxy-signature-code'])}`)
      latencies.push(ms)
    }, (err: { code?: string }) => { fail(err.code ?? 'error') }))
  }
  await Promise.all(inflight)
  const elapsed = (performance.now() - start) / 1000
  await dispatcher.close()
  latencies.sort((a, b) => a - b)
  return { sent: total, ok: latencies.length, errorsByCode, p50: pct(latencies, 0.5), p99: pct(latencies, 0.99), max: pct(latencies, 1), achievedPerSec: Math.round(latencies.length / elapsed) }
}

/**
 * Errors that load can cause (a refusal to queue more, a timeout, a reset) make a rate "not sustained"; any other
 * (a 4xx, a 500/502 such as an answer refused by the binding, a signature not VALID) means the set-up is wrong and
 * the figures would be those of errors: the bench stops with a non-zero exit instead of reporting them.
 */
function assertOnlyLoadErrors (p: Point): void {
  const wrong = Object.entries(p.errorsByCode).filter(([code]) => !/^(503|504|UND_ERR_\w+|E[A-Z]+)$/.test(code))
  if (wrong.length > 0) throw new Error(`${p.op} ${p.contender} @ ${p.rate}/s: requests failed, not from load: ${JSON.stringify(Object.fromEntries(wrong))}`)
}

/** Cumulative bucket counts of pixproxy_audit_wait_seconds by half and upper bound (s), from the proxy's /metrics. */
async function auditWaitBuckets (url: string): Promise<Map<string, Map<number, number>>> {
  const r = await request(`${url}/metrics`)
  const text = await r.body.text()
  const out = new Map<string, Map<number, number>>()
  for (const m of text.matchAll(/^pixproxy_audit_wait_seconds_bucket\{(?=[^}]*half="(\w+)")(?=[^}]*le="([^"]+)")[^}]*\} (\d+)/gm)) {
    const [, half = '', le = '', n = '0'] = m
    const byLe = out.get(half) ?? new Map<number, number>()
    byLe.set(le === '+Inf' ? Infinity : Number(le), Number(n))
    out.set(half, byLe)
  }
  return out
}

function auditWaitDelta (a: Map<string, Map<number, number>>, b: Map<string, Map<number, number>>): NonNullable<Point['auditWaitMs']> {
  const out: NonNullable<Point['auditWaitMs']> = {}
  for (const [half, after] of b) {
    const les = [...after.keys()].sort((x, y) => x - y)
    const cum = les.map((le) => (after.get(le) ?? 0) - (a.get(half)?.get(le) ?? 0))
    const count = cum[cum.length - 1] ?? 0
    const q = (f: number): number | null => {
      if (count === 0) return null
      const i = cum.findIndex((n) => n >= f * count)
      const le = les[i] as number
      return Number.isFinite(le) ? r3(le * 1000) : null
    }
    out[half] = { count, p50: q(0.5), p99: q(0.99) }
  }
  return out
}

/**
 * Warm-up until V8 has finished compiling the request path, so that points measure the steady state.
 *
 * Measured (bench/RESULTS.md, session 9): V8 tiers a function up to TurboFan only after thousands of calls, and for
 * the proxy's request path that wave came ~10,000 requests in: about a hundred functions (Fastify's and undici's
 * handlers, the XMLDSig verifier, the forwarding) compiled on V8's background thread, 1-78 ms each. Pinned to one
 * core, that thread takes the core from the event loop: the point that held the wave had a p99 of 25-73 ms, the
 * points before and after 5-9 ms, and the CPU per request at 200/s, measured before the wave, was ~2x the settled
 * figure. A fixed 300-request warm-up measured the JIT, not the proxy.
 *
 * So: 2 s chunks at `rate` until SETTLED_CHUNKS chunks in a row cost V8's background threads (compilation, GC
 * helpers) under SETTLED_V8_MS_PER_REQUEST each (settled: ~0.005-0.012; during the wave 0.06-0.16), or `maxSeconds`.
 * Two quiet chunks were not enough: the proxy had a lull of that length at ~7,000 requests, before the wave. nginx
 * has no JIT: its first chunks are quiet.
 */
const SETTLED_V8_MS_PER_REQUEST = 0.015
const SETTLED_CHUNKS = 5
async function warmUp (server: Server, c: Contender, op: Op, bodies: Bodies, rate: number, maxSeconds: number, chunkSeconds: number): Promise<WarmUp> {
  let quiet = 0
  let requests = 0
  let seconds = 0
  let v8MsPerRequest = 0
  const mainMsPerRequest: number[] = []
  while (seconds < maxSeconds) {
    const t0 = await threadCpuSecondsPrecise(server.pid)
    const w = await load(server.url, c, op, bodies, rate, chunkSeconds)
    const t1 = await threadCpuSecondsPrecise(server.pid)
    // The rate is far below what any contender sustains: a failure here is a broken set-up, not load.
    if (w.ok !== w.sent) throw new Error(`warm-up ${c} ${op}: ${w.ok}/${w.sent} ok ${JSON.stringify(w.errorsByCode)}`)
    requests += w.sent
    seconds += chunkSeconds
    v8MsPerRequest = r3(((t1.V8Worker ?? 0) - (t0.V8Worker ?? 0)) * 1000 / Math.max(1, w.sent))
    mainMsPerRequest.push(r3(((t1.main ?? 0) - (t0.main ?? 0)) * 1000 / Math.max(1, w.sent)))
    quiet = v8MsPerRequest < SETTLED_V8_MS_PER_REQUEST ? quiet + 1 : 0
    if (quiet >= SETTLED_CHUNKS) return { contender: c, op, requests, seconds, settled: true, v8MsPerRequest, mainMsPerRequest }
  }
  return { contender: c, op, requests, seconds, settled: false, v8MsPerRequest, mainMsPerRequest }
}

interface WarmUp {
  contender: Contender
  op: Op
  requests: number
  seconds: number
  settled: boolean
  /** V8's background threads' CPU per request in the last chunk. */
  v8MsPerRequest: number
  /** The event loop's CPU per request in each chunk, in order: how the JIT's tier-up brought it down. */
  mainMsPerRequest: number[]
}

async function measure (server: Server, c: Contender, op: Op, bodies: Bodies, rate: number, seconds: number): Promise<Point> {
  const a0 = c === 'proxy' ? await auditWaitBuckets(server.url) : null
  const w0 = await threadWakeups(server.pid)
  const s0 = await threadSysSeconds(server.pid)
  const t0 = await threadCpuSecondsPrecise(server.pid)
  const from = Number(process.hrtime.bigint() / 1000n)
  const r = await load(server.url, c, op, bodies, rate, seconds)
  const to = Number(process.hrtime.bigint() / 1000n)
  const t1 = await threadCpuSecondsPrecise(server.pid)
  const s1 = await threadSysSeconds(server.pid)
  const w1 = await threadWakeups(server.pid)
  const a1 = c === 'proxy' ? await auditWaitBuckets(server.url) : null
  const per = (s: number): number => r3(s * 1000 / Math.max(1, r.sent))
  const byThread = Object.fromEntries(Object.entries(t1).map(([k, v]) => [k, per(v - (t0[k] ?? 0))] as const).filter(([, v]) => v >= 0.001))
  const sys = Object.fromEntries(Object.entries(s1).map(([k, v]) => [k, per(v - (s0[k] ?? 0))] as const).filter(([, v]) => v >= 0.001))
  const wakeups = Object.fromEntries(Object.entries(w1).map(([k, v]) => [k, r2((v - (w0[k] ?? 0)) / Math.max(1, r.sent))] as const).filter(([, v]) => v >= 0.01))
  const cpu = Object.entries(t1).reduce((s, [k, v]) => s + v - (t0[k] ?? 0), 0)
  const sustained = r.ok === r.sent && r.p99 !== null && r.p99 < P99_LIMIT_MS
  return { contender: c, op, rate, ...r, cpuMsPerRequest: per(cpu), cpuMsPerRequestByThread: byThread, sysMsPerRequestByThread: sys, wakeupsPerRequestByThread: wakeups, ...(a0 !== null && a1 !== null ? { auditWaitMs: auditWaitDelta(a0, a1) } : {}), sustained, profileWindowUs: { from, to } }
}

export async function runPinned (o: PinnedOptions): Promise<Record<string, unknown>> {
  const rates = o.rates ?? (o.quick ? [50, 100, 200, 400, 800, 1600] : [50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1600, 2000, 2400])
  if (!rates.includes(FIXED_RATE)) throw new Error(`--rates must include ${FIXED_RATE} (the ratios are taken there)`)
  const seconds = o.seconds ?? (o.quick ? 2 : 10)
  const warmSeconds = o.quick ? 1 : 3
  // --quick cannot afford the JIT's settling (see warmUp): its figures are of a JIT still compiling.
  const warmMaxSeconds = o.quick ? 2 : 150
  const warmUps: WarmUp[] = []
  // --quick keeps to three minutes: past this per operation, contenders stop climbing (the fixed rate is still measured).
  const budgetMs = o.quick ? 40_000 : Infinity
  let truncated = false
  const { serverCpus, restCpus, log } = o
  const ops = OPS.filter((op) => o.ops === undefined || o.ops.includes(op))
  const contenders = CONTENDERS.filter((c) => o.contenders === undefined || o.contenders.includes(c))
  await pinProcess(process.pid, restCpus)
  const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-pinned-'))
  const closers: Array<() => Promise<void>> = []
  const points: Point[] = []
  const startedAt = performance.now()
  try {
    const stack = await startStackProcess(dir, { longPollMs: 300, cpus: restCpus })
    closers.push(stack.close)
    const aws = await startAwsLocalProcess({ retain: 1_000, cpus: restCpus })
    closers.push(aws.close)
    const hsmCa = await readFile(stack.hsmCaCertFile, 'utf8')
    const cannedConfig: CannedBacenConfig = { key: KEY, holder: COUNTERPARTY_ISPB, tls: { ...stack.bcbTls, clientCaPems: [stack.caPem, hsmCa] }, signing: stack.bcbSigning }
    const canned = await startScriptProcess<{ port: number }>(new URL('./canned-bacen.ts', import.meta.url).pathname, { BENCH_CANNED_BACEN: JSON.stringify(cannedConfig) }, restCpus)
    closers.push(canned.close)
    const upstreamUrl = `https://localhost:${canned.line.port}`
    const cp = stack.counterparty
    const upstreamSettings = { PIXPROXY_DICT_URL: upstreamUrl, PIXPROXY_SPI_URL: upstreamUrl }
    // The canned upstream's counters, read over one kept-alive connection of this process's own.
    const statsAgent = new Agent({ connections: 1, keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000, connect: { ca: stack.caPem, cert: cp.tls.certPem, key: cp.tls.keyPem, servername: 'localhost' } })
    closers.push(async () => { await statsAgent.close() })
    const upstreamStats = async (): Promise<{ handshakes: number, requests: number }> => {
      const r = await statsAgent.request({ origin: upstreamUrl, path: '/bench/stats', method: 'GET' })
      return await r.body.json() as { handshakes: number, requests: number }
    }

    const servers = {} as Record<Contender, Server>
    const n = await startNginx({ dir: join(dir, 'nginx'), upstreamUrl, caPem: stack.caPem, certPem: cp.tls.certPem, keyPem: cp.tls.keyPem })
    servers.nginx = { url: n.url, pid: n.pid, close: n.close }
    closers.push(n.close)
    const pt = await startScriptProcess<{ url: string }>(new URL('./passthrough.ts', import.meta.url).pathname, { BENCH_PASSTHROUGH: JSON.stringify({ upstreamUrl, caPem: stack.caPem, ...cp.tls }) })
    servers.passthrough = { url: pt.line.url, pid: pt.pid, close: pt.close }
    closers.push(pt.close)
    const prof = (name: string): Record<string, string> => o.cpuProfDir === undefined ? {} : cpuProfSettings(join(o.cpuProfDir, name), '--cpu-prof-interval=100')
    const off = await startBenchProxy(stack, join(dir, 'proxy-audit-off'), { PIXPROXY_AUDIT_ENABLED: 'false', ...upstreamSettings, ...prof('proxy-audit-off'), ...o.proxyEnv })
    servers['proxy-audit-off'] = { url: off.url, pid: off.pid, close: off.stop }
    closers.push(off.stop)
    const on = await startBenchProxy(stack, join(dir, 'proxy'), { ...auditSinkSettings(aws), ...upstreamSettings, ...prof('proxy'), ...o.proxyEnv })
    servers.proxy = { url: on.url, pid: on.pid, close: on.stop }
    closers.push(on.stop)
    for (const s of Object.values(servers)) await pinProcess(s.pid, serverCpus)
    if (o.auditCpus !== undefined || o.auditNice !== undefined) {
      const tids = await threadIdsNamed(on.pid, 'pix-audit')
      if (tids.length !== 1) throw new Error(`--audit-cpus/--audit-nice: expected one pix-audit thread in the proxy, found ${tids.length}`)
      for (const tid of tids) {
        if (o.auditCpus !== undefined) await pinThread(tid, o.auditCpus)
        if (o.auditNice !== undefined) setPriority(tid, o.auditNice) // Linux: a thread id sets that thread's nice value alone
      }
      log(`the deployed proxy's audit thread (${tids.join(',')}): CPU ${o.auditCpus ?? serverCpus}, nice ${o.auditNice ?? 0}`)
    }
    log(`set-up ${Math.round(performance.now() - startedAt)} ms; servers on CPU ${serverCpus}, the rest on ${restCpus}`)

    // Bodies: unsigned for pix-proxy (it signs), signed once by the counterparty for nginx and the pass-through.
    const entry = (ispb: string): string => createEntryRequest({ key: KEY, owner: { ...SAMPLE_PAYER, ispb } }).xml
    const payments = (ispb: string): string[] => Array.from({ length: 64 }, (_, i) => pacs008({ from: ispb, payer: { ...SAMPLE_PAYER, ispb }, payee: { ...SAMPLE_PAYEE, ispb: ispb === PROXY_ISPB ? COUNTERPARTY_ISPB : PROXY_ISPB }, amounts: [10 + i] }).xml)
    const proxyBodies: Bodies = { createEntry: entry(PROXY_ISPB), pacs008: payments(PROXY_ISPB) }
    const directBodies: Bodies = {
      createEntry: await cp.xmlSigner.sign(entry(COUNTERPARTY_ISPB), 'dict'),
      pacs008: await Promise.all(payments(COUNTERPARTY_ISPB).map(async (x) => await cp.xmlSigner.sign(x, 'spi')))
    }
    const bodiesOf = (c: Contender): Bodies => c === 'proxy' || c === 'proxy-audit-off' ? proxyBodies : directBodies

    if (o.soakMinutes !== undefined) {
      const soak = await runSoak(servers.proxy, bodiesOf('proxy'), ops, o.soakMinutes, warmSeconds, log)
      return { bench: 'e2e-soak', pinned: true, serverCpus, restCpus, rate: FIXED_RATE, ...soak, durationSeconds: Math.round((performance.now() - startedAt) / 1000), loadavg1m: r2(loadavg()[0] as number), node: process.versions.node }
    }
    // Each contender climbs its whole grid right after its own warm-up, and the next contender starts after. Runs
    // used to alternate contenders at every rate (to spread the machine's drift over all of them), but then each
    // contender sat idle for minutes between its points, and a Node server resuming after idle pays V8's
    // background work again (the 200/s point after such a gap cost the audit-off proxy 0.995 ms per request, with
    // 0.169 on V8's threads; without the gap 0.58-0.70, with 0.005-0.04: bench/RESULTS.md, session 9). That
    // artefact was bigger than the drift it spread.
    for (const op of ops) {
      for (const c of contenders) {
        const startedAt = performance.now()
        // Connections, HSM sessions and the JIT (warmUp says why until V8 settles).
        const w = await warmUp(servers[c], c, op, bodiesOf(c), FIXED_RATE, warmMaxSeconds, o.quick ? 1 : 2)
        warmUps.push(w)
        log(`${op} ${c} warm-up: ${w.requests} requests in ${w.seconds} s, ${w.settled ? 'settled' : 'NOT settled'} (V8 background ${w.v8MsPerRequest} ms/req; event loop by chunk ${w.mainMsPerRequest.join(' ')} ms/req)`)
        let failed = false
        for (const rate of rates) {
          if (failed && rate !== FIXED_RATE) continue // the fixed rate is measured for every contender: the ratios
          if (rate > FIXED_RATE && performance.now() - startedAt > budgetMs / contenders.length) {
            truncated = true
            break
          }
          const s0 = await upstreamStats()
          const p = await measure(servers[c], c, op, bodiesOf(c), rate, seconds)
          const s1 = await upstreamStats()
          p.upstreamHandshakesPerRequest = r3((s1.handshakes - s0.handshakes) / Math.max(1, s1.requests - s0.requests))
          assertOnlyLoadErrors(p)
          points.push(p)
          if (!p.sustained) failed = true
          log(`${op} ${c} @ ${rate}/s: p50 ${p.p50} p99 ${p.p99} ms ok ${p.ok}/${p.sent} cpu ${p.cpuMsPerRequest} ms/req ${JSON.stringify(p.cpuMsPerRequestByThread)} sys ${JSON.stringify(p.sysMsPerRequestByThread)} wakeups/req ${JSON.stringify(p.wakeupsPerRequestByThread)}${p.auditWaitMs === undefined ? '' : ` audit wait ms ${JSON.stringify(p.auditWaitMs)}`} handshakes/req ${p.upstreamHandshakesPerRequest} ${JSON.stringify(p.errorsByCode)}`)
          await new Promise((resolve) => setTimeout(resolve, 200))
          if (failed && rate >= FIXED_RATE) break
        }
      }
    }
  } finally {
    for (const close of closers.reverse()) await close().catch((err: unknown) => { log(`close: ${(err as Error).message}`) })
    await rm(dir, { recursive: true, force: true })
  }

  const at = (c: Contender, op: Op, rate = FIXED_RATE): Point | undefined => points.find((p) => p.contender === c && p.op === op && p.rate === rate)
  // The climb: the highest rate sustained with every lower rate of the grid sustained too.
  const sustainedOf = (c: Contender, op: Op): number => {
    let best = 0
    for (const rate of rates) {
      if (at(c, op, rate)?.sustained !== true) break
      best = rate
    }
    return best
  }
  const ratio = (a: number | null | undefined, b: number | null | undefined): number | null => a == null || b == null || b === 0 ? null : r2(a / b)
  const p99Ratio = (c: Contender, op: Op): number | null => ratio(at(c, op)?.p99, at('nginx', op)?.p99)
  const libuv = (c: Contender, op: Op): number => at(c, op)?.cpuMsPerRequestByThread['libuv-worker'] ?? 0
  /** SoftHSM's share of a pix-proxy contender's CPU per request (null for GetEntry, which signs nothing, and for nginx and the pass-through, which sign nothing either). */
  const hsmShare = (c: Contender, op: Op): number | null =>
    (c === 'proxy' || c === 'proxy-audit-off') && op !== 'get-entry' && at(c, op) !== undefined ? r3(Math.max(0, libuv(c, op) - libuv(c, 'get-entry'))) : null
  /**
   * Issue 15 defines the CPU ratios WITHOUT the HSM's share (CloudHSM and KMS sign off the task); the total including
   * SoftHSM's pool time is kept apart as the `…WithHsm…` ratios.
   */
  const cpuWithoutHsm = (c: Contender, op: Op): number | undefined => {
    const p = at(c, op)
    return p === undefined ? undefined : r3(p.cpuMsPerRequest - (hsmShare(c, op) ?? 0))
  }
  const cpuRatio = (c: Contender, op: Op): number | null => ratio(cpuWithoutHsm(c, op), cpuWithoutHsm('nginx', op))
  const cpuRatioWithHsm = (c: Contender, op: Op): number | null => ratio(at(c, op)?.cpuMsPerRequest, at('nginx', op)?.cpuMsPerRequest)
  const cpuRatios = (c: Contender): Record<string, number | null> => ({
    readCpuVsNginx: cpuRatio(c, 'get-entry'),
    writeCpuVsNginx: cpuRatio(c, 'create-entry'),
    icomCpuVsNginx: cpuRatio(c, 'spi-send'),
    // GetEntry signs nothing: its with-HSM ratio is the same figure, kept for symmetry.
    readCpuWithHsmVsNginx: cpuRatioWithHsm(c, 'get-entry'),
    writeCpuWithHsmVsNginx: cpuRatioWithHsm(c, 'create-entry'),
    icomCpuWithHsmVsNginx: cpuRatioWithHsm(c, 'spi-send')
  })
  const byContender = Object.fromEntries(CONTENDERS.map((c) => [c, Object.fromEntries(OPS.map((op) => {
    const p = at(c, op)
    return [op, {
      cpuMsPerRequestAt200: p?.cpuMsPerRequest ?? null,
      cpuMsPerRequestByThreadAt200: p?.cpuMsPerRequestByThread ?? null,
      sysMsPerRequestByThreadAt200: p?.sysMsPerRequestByThread ?? null,
      wakeupsPerRequestByThreadAt200: p?.wakeupsPerRequestByThread ?? null,
      auditWaitMsAt200: p?.auditWaitMs ?? null,
      cpuMsPerRequestWithoutHsmAt200: cpuWithoutHsm(c, op) ?? null,
      hsmMsPerRequestAt200: hsmShare(c, op),
      p50At200: p?.p50 ?? null,
      p99At200: p?.p99 ?? null,
      sustainedPerSec: sustainedOf(c, op)
    }]
  }))]))
  const p99ByOp = Object.fromEntries(OPS.map((op) => [op, p99Ratio('proxy', op)]))
  const p99s = Object.values(p99ByOp).filter((x) => x !== null)
  return {
    bench: 'e2e',
    pinned: true,
    quick: o.quick,
    /** The time budget stopped a climb: a sustained rate may be higher than reported. */
    truncated,
    /** Per contender and operation: how long the warm-up ran, and whether V8 had settled (see warmUp). */
    warmUps,
    serverCpus,
    restCpus,
    auditCpus: o.auditCpus ?? null,
    auditNice: o.auditNice ?? null,
    upstream: 'canned BACEN (answers signed once with the BCB key), mutual TLS',
    seconds,
    rates,
    p99LimitMs: P99_LIMIT_MS,
    ratios: {
      // pix-proxy as deployed, CPU per request without the HSM's share over nginx's (issue 15's definition).
      ...cpuRatios('proxy'),
      // The JavaScript transport floor: the Fastify + undici pass-through's CPU per request over nginx's (GetEntry).
      jsFloorCpuVsNginx: cpuRatio('passthrough', 'get-entry'),
      jsFloorCpuVsNginxByOperation: Object.fromEntries(OPS.map((op) => [op, cpuRatio('passthrough', op)])),
      p99VsNginxAt200: p99s.length === 0 ? null : Math.max(...p99s),
      p99VsNginxAt200ByOperation: p99ByOp,
      auditOff: cpuRatios('proxy-audit-off'),
      passthrough: cpuRatios('passthrough')
    },
    sustainedPerSec: {
      proxyRead: sustainedOf('proxy', 'get-entry'),
      proxyWrite: sustainedOf('proxy', 'create-entry'),
      proxyIcom: sustainedOf('proxy', 'spi-send'),
      nginx: sustainedOf('nginx', 'get-entry'),
      nginxWrite: sustainedOf('nginx', 'create-entry'),
      rateGridTop: Math.max(...rates)
    },
    byContender,
    points,
    durationSeconds: Math.round((performance.now() - startedAt) / 1000),
    loadavg1m: r2(loadavg()[0] as number),
    node: process.versions.node
  }
}

/** prom-client's default eventLoopMonitoringPrecision, which src/plugins/metrics.ts keeps. */
const LOOP_DELAY_RESOLUTION_MS = 10

/** The value of `name{labels}` in a Prometheus text exposition (the first match), or NaN. */
function metricValue (text: string, name: string, labels = ''): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const rest = line.slice(name.length)
    if (labels === '' ? !(rest.startsWith(' ') || rest.startsWith('{')) : !rest.includes(labels)) continue
    return Number(rest.slice(rest.lastIndexOf(' ') + 1))
  }
  return NaN
}

/**
 * The soak: the deployed proxy at FIXED_RATE for `minutes`, `ops` alternating in 30 s points. After each point its
 * RSS, V8 heaps (the loop's, the audit thread's) and event-loop delay p99 (prom-client's, over the point) from its
 * /metrics. Verdict as the issue states it: RSS slope under 1 MiB/min after warm-up (the first 5 minutes: JIT, pools,
 * the audit threads' heaps growing to their working size), event-loop delay p99 under 10 ms, no errors.
 */
async function runSoak (server: Server, bodies: Bodies, ops: readonly Op[], minutes: number, warmSeconds: number, log: (line: string) => void): Promise<Record<string, unknown>> {
  for (const op of ops) await load(server.url, 'proxy', op, bodies, 100, warmSeconds)
  const started = performance.now()
  const samples: Array<{ atS: number, op: Op, p50: number | null, p99: number | null, errors: number, cpuMsPerRequest: number, rssMiB: number, heapMiB: number, auditHeapMiB: number, loopDelayP99Ms: number }> = []
  const mib = (b: number): number => r2(b / 1048576)
  for (let i = 0; performance.now() - started < minutes * 60_000; i++) {
    const op = ops[i % ops.length] as Op
    await request(`${server.url}/metrics`).then(async (r) => { await r.body.dump() }) // prom-client's loop-delay window starts at a scrape
    const p = await measure(server, 'proxy', op, bodies, FIXED_RATE, 30)
    const text = await (await request(`${server.url}/metrics`)).body.text()
    const s = {
      atS: Math.round((performance.now() - started) / 1000),
      op,
      p50: p.p50,
      p99: p.p99,
      errors: p.sent - p.ok,
      cpuMsPerRequest: p.cpuMsPerRequest,
      rssMiB: mib(metricValue(text, 'process_resident_memory_bytes')),
      heapMiB: mib(metricValue(text, 'nodejs_heap_size_used_bytes')),
      auditHeapMiB: mib(metricValue(text, 'pixproxy_audit_worker_heap_bytes', 'measure="used"')),
      // prom-client's histogram (monitorEventLoopDelay, 10 ms resolution) holds the intervals between its timer's
      // runs, ~10 ms on an idle loop: the delay is what exceeds the resolution.
      loopDelayP99Ms: r2(Math.max(0, metricValue(text, 'nodejs_eventloop_lag_p99_seconds') * 1000 - LOOP_DELAY_RESOLUTION_MS))
    }
    samples.push(s)
    log(`soak ${s.atS}s ${op}: p50 ${s.p50} p99 ${s.p99} ms errors ${s.errors} cpu ${s.cpuMsPerRequest} ms/req rss ${s.rssMiB} MiB heap ${s.heapMiB} audit heap ${s.auditHeapMiB} MiB loop delay p99 ${s.loopDelayP99Ms} ms`)
  }
  const after = (fromS: number): typeof samples => samples.filter((s) => s.atS >= fromS)
  const slope = (fromS: number, k: 'rssMiB' | 'heapMiB' | 'auditHeapMiB'): number | null => slopePerMinute(after(fromS).map((s) => s.atS), after(fromS).map((s) => s[k]))
  const steady = after(300)
  const delays = steady.map((s) => s.loopDelayP99Ms).sort((a, b) => a - b)
  const rssSlope = slope(300, 'rssMiB')
  const verdict = {
    errors: samples.reduce((a, s) => a + s.errors, 0),
    rssSlopeMiBPerMinAfter5Min: rssSlope,
    rssSlopeMiBPerMinAfter10Min: slope(600, 'rssMiB'),
    heapSlopeMiBPerMinAfter5Min: slope(300, 'heapMiB'),
    auditHeapSlopeMiBPerMinAfter5Min: slope(300, 'auditHeapMiB'),
    rssMiBAt5MinAndEnd: [steady[0]?.rssMiB ?? null, samples.at(-1)?.rssMiB ?? null],
    loopDelayP99MsMedianAndMax: [delays[delays.length >> 1] ?? null, delays.at(-1) ?? null],
    pass: false
  }
  verdict.pass = verdict.errors === 0 && rssSlope !== null && rssSlope < 1 && (verdict.loopDelayP99MsMedianAndMax[1] ?? Infinity) < 10
  return { minutes, verdict, samples }
}

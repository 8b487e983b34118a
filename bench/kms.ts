/**
 * Signing in AWS KMS against signing in the HSM (PKCS#11, SoftHSM), through the proxy (issue 16): signatures per
 * second and p50/p99 of a signed DICT CreateEntry (or, with --op spi-send, an ICOM pacs.008 post), with the signing key
 *   hsm              in the SoftHSM token (the proxy signs through PKCS#11 on its own core)
 *   kms-0ms          in the local KMS (bench/lib/kms-host.ts), answered at once
 *   kms-10ms         the local KMS with 10 ms added to every Sign (an AWS Region's KMS, seen from a task in it)
 *   kms-30ms         30 ms added
 *   kms-30ms-raised  30 ms added, and the proxy's rate limit raised (PIXPROXY_KMS_MAX_SIGNS_PER_SEC=RAISED)
 * with KMS's default account quota for RSA signing emulated in every kms configuration: the local KMS throttles Sign
 * beyond 500/s (ThrottlingException, token bucket with a tenth of a second's burst: tools/aws-local/kms.ts; --quota
 * sets another rate, e.g. below what a loaded machine reaches, to show the guard's retries of throttles).
 *
 *   node bench/kms.ts [--json] [--quick] [--op create-entry|spi-send] [--rates 50,100,…] [--seconds N] [--pin 0:1] [--raised 2000] [--configurations hsm,kms-0ms,…] [--quota 500]
 *
 * Set-up as bench/e2e.ts --pinned (bench/lib/pinned.ts): every proxy on the first CPU list of --pin (taskset, every
 * thread), the load, the token host, a canned BACEN (bench/lib/canned-bacen.ts: mutual TLS, answers signed once with
 * the BCB key and replayed) and the local KMS on the second. Three proxies run the whole time (HSM; KMS with the
 * default rate limit; KMS with the raised one), audit off (what is compared is the signer), and the configurations
 * are measured in alternation at each offered rate, the order reversed at every rate, so drift in a shared machine's
 * load falls on all of them. The local KMS's latency is set before each kms point.
 *
 * Per configuration and rate: achieved rate (answers 201 a second), p50/p99 from the scheduled send time (open
 * model), errors by status and problem code, and the KMS Sign calls per signed request (retries of throttles; the local
 * KMS counts them). What bounds each: the HSM path by the proxy's core; the KMS path by the guard's rate limit
 * (default 150/s: beyond it 503 PIXPROXY_ERR_KMS_QUEUE_*, NOT SENT, an expected answer at overload), by the account
 * quota (500/s: throttles, retried by the guard, then 503 PIXPROXY_ERR_KMS_THROTTLED), and by the KMS client's
 * 64 sockets over the Sign latency (64 / 30 ms ≈ 2100/s).
 *
 * Errors that load can cause (those 503s, a 504, a timeout or a reset; KMS_UNAVAILABLE and KMS_CIRCUIT_OPEN only while
 * the local KMS answered nothing but signatures and throttles, i.e. the client timed out a starved local KMS) are
 * reported; any other (a 4xx, a 500/502, an answer whose signature is not VALID, a KMS 5xx) means the set-up is broken: the bench then
 * exits non-zero instead of reporting figures of errors. --quick: three rates, 3 s points (under three minutes on a
 * quiet machine).
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Interface } from 'node:readline'
import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import { COUNTERPARTY_ISPB, PROXY_ISPB } from '../tools/demo/stack.ts'
import { createEntryRequest, pacs008, SAMPLE_PAYEE, SAMPLE_PAYER } from '../tools/samples/messages.ts'
import type { CannedBacenConfig } from './lib/canned-bacen.ts'
import type { KmsHostCommand, KmsHostCounts } from './lib/kms-host.ts'
import { startBenchProxy } from './lib/proxy.ts'
import type { BenchProxy } from './lib/proxy.ts'
import { treeCpuSeconds } from './lib/proc.ts'
import { pinProcess, startScriptProcess, startStackProcess } from './lib/stack-process.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    op: { type: 'string', default: 'create-entry' },
    rates: { type: 'string' },
    seconds: { type: 'string' },
    pin: { type: 'string', default: '0:1' },
    raised: { type: 'string', default: '2000' },
    configurations: { type: 'string' },
    quota: { type: 'string', default: '500' }
  }
})
const log = (s: string): void => { if (!values.json) process.stderr.write(`[bench] ${s}\n`) }
const op = values.op
if (op !== 'create-entry' && op !== 'spi-send') throw new Error(`--op create-entry or spi-send, not ${op}`)
const rates = (values.rates ?? (values.quick ? '100,250,600' : '50,100,150,200,300,400,600,800')).split(',').map(Number).sort((a, b) => a - b)
const seconds = Number(values.seconds ?? (values.quick ? '3' : '10'))
const warmSeconds = values.quick ? 1 : 3
const [serverCpus = '0', restCpus = '1'] = values.pin.split(':')
const raised = Number(values.raised)
// KMS's default quota for RSA signing; --quota lowers it to show throttling where the machine cannot reach 500/s.
const QUOTA = { perSecond: Number(values.quota), burst: Math.max(1, Math.round(Number(values.quota) / 10)) }
const KEY = 'bench.kms@example.com.br'

interface Configuration {
  readonly name: string
  readonly proxy: 'hsm' | 'kms' | 'kms-raised'
  /** Latency added to each Sign by the local KMS; null: no KMS. */
  readonly latencyMs: number | null
}
const ALL_CONFIGURATIONS: readonly Configuration[] = [
  { name: 'hsm', proxy: 'hsm', latencyMs: null },
  { name: 'kms-0ms', proxy: 'kms', latencyMs: 0 },
  { name: 'kms-10ms', proxy: 'kms', latencyMs: 10 },
  { name: 'kms-30ms', proxy: 'kms', latencyMs: 30 },
  { name: 'kms-30ms-raised', proxy: 'kms-raised', latencyMs: 30 }
]
const CONFIGURATIONS = ALL_CONFIGURATIONS.filter((c) => values.configurations === undefined || values.configurations.split(',').includes(c.name))

interface Point {
  configuration: string
  rate: number
  sent: number
  ok: number
  achievedPerSec: number
  p50: number | null
  p99: number | null
  max: number | null
  /** "STATUS CODE" (problem code of a proxy's answer) or a transport error's code → count. */
  errorsByCode: Record<string, number>
  /** Sign calls the local KMS answered during the point, by outcome (ok, ThrottlingException…); kms only. */
  kmsSignCalls?: Record<string, number>
  /** Sign calls per signature KMS made (all calls / calls answered with a signature): 1 = no throttle retried. */
  kmsCallsPerSignature?: number | null
  /** CPU per request sent: the proxy's (process tree), and the local KMS's (its RSA signing, SigV4 checks, HTTP). */
  proxyCpuMsPerRequest: number
  kmsHostCpuMsPerRequest?: number
  /** The proxy's own view (its /metrics): mean duration of a Sign call to KMS, the guard's retries and throttles seen. */
  proxyKms?: { signCallMeanMs: number | null, signCalls: number, retries: number, throttles: number }
  loadavg1m: number
}

/** Sums of the KMS series of the proxy's /metrics (labels summed over). */
async function kmsMetrics (url: string): Promise<Record<string, number>> {
  const r = await request(url + '/metrics')
  const text = await r.body.text()
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    const m = /^(pixproxy_kms_sign_duration_seconds_(?:sum|count)|pixproxy_kms_retries_total|pixproxy_kms_throttles_total)(?:\{[^}]*\})? (\S+)$/.exec(line)
    if (m !== null) out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2])
  }
  return out
}

const r2 = (x: number): number => Math.round(x * 100) / 100
function pct (sorted: number[], p: number): number | null {
  return sorted.length === 0 ? null : r2(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number)
}

/** Open-model load of the signed operation at `rate` for `secs`: latency from the scheduled send time. */
async function load (url: string, bodies: readonly string[], rate: number, secs: number): Promise<Omit<Point, 'configuration' | 'rate' | 'proxyCpuMsPerRequest' | 'loadavg1m'>> {
  const dispatcher = new Agent({ connections: 256, pipelining: 1, headersTimeout: 5_000, bodyTimeout: 5_000 })
  const interval = 1000 / rate
  const total = Math.round(rate * secs)
  const latencies: number[] = []
  const errorsByCode: Record<string, number> = {}
  const fail = (code: string): void => { errorsByCode[code] = (errorsByCode[code] ?? 0) + 1 }
  const path = op === 'create-entry' ? '/api/v2/entries/' : `/api/v1/in/${PROXY_ISPB}/msgs`
  const start = performance.now() + 20
  const inflight: Array<Promise<void>> = []
  for (let i = 0; i < total; i++) {
    const due = start + i * interval
    const wait = due - performance.now()
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
    inflight.push(dispatcher.request({ origin: url, path, method: 'POST', headers: { 'content-type': 'application/xml' }, body: bodies[i % bodies.length] }).then(async (r) => {
      const text = await r.body.text()
      const ms = performance.now() - due
      if (r.statusCode !== 201) {
        let code = ''
        try { code = String((JSON.parse(text) as { code?: string }).code ?? '') } catch {}
        return fail(`${r.statusCode} ${code}`.trim())
      }
      // DICT answers are signed by BACEN: the proxy verified this one (ICOM's answers carry no signature).
      if (op === 'create-entry' && r.headers['pix-proxy-signature-code'] !== 'VALID') return fail(`signature ${String(r.headers['pix-proxy-signature-code'])}`)
      latencies.push(ms)
    }, (err: { code?: string }) => { fail(err.code ?? 'error') }))
  }
  await Promise.all(inflight)
  const elapsed = (performance.now() - start) / 1000
  await dispatcher.close()
  latencies.sort((a, b) => a - b)
  return { sent: total, ok: latencies.length, achievedPerSec: Math.round(latencies.length / elapsed), p50: pct(latencies, 0.5), p99: pct(latencies, 0.99), max: pct(latencies, 1), errorsByCode }
}

/**
 * What load causes, and is reported: the guard's refusals (queue full, turn too late, throttled past its retries), the
 * HSM pool's timeout, the proxy's memory budget, an upstream 504, the load's own timeouts and resets. A Sign that
 * found KMS unavailable (KMS_UNAVAILABLE), and the circuit that opens after five in a row (KMS_CIRCUIT_OPEN), are load
 * only when the local KMS answered no Sign with anything but a signature or a throttle during the point: then they
 * are the client's timeouts of a local KMS starved of CPU (it shares its core with the load), not a KMS failure.
 * Anything else stops the bench.
 */
const LOAD_ERROR = /^(503 PIXPROXY_ERR_(KMS_QUEUE_FULL|KMS_QUEUE_TIMEOUT|KMS_THROTTLED|HSM_POOL_TIMEOUT|MEMORY_BUDGET|SPI_QUEUE_FULL|SPI_QUEUE_TIMEOUT)|504( \w+)?|UND_ERR_\w+|E[A-Z]+)$/
const KMS_TIMEOUT_ERROR = /^503 PIXPROXY_ERR_KMS_(UNAVAILABLE|CIRCUIT_OPEN)$/
function assertOnlyLoadErrors (p: Point): void {
  const kmsAnsweredOnlySignaturesOrThrottles = Object.keys(p.kmsSignCalls ?? {}).every((k) => k === 'ok' || k === 'ThrottlingException')
  const wrong = Object.entries(p.errorsByCode).filter(([code]) => !LOAD_ERROR.test(code) && !(KMS_TIMEOUT_ERROR.test(code) && kmsAnsweredOnlySignaturesOrThrottles))
  if (wrong.length > 0) throw new Error(`${p.configuration} @ ${p.rate}/s: requests failed, not from load: ${JSON.stringify(Object.fromEntries(wrong))}`)
}

/** The local KMS process and its command channel (one answer line per command, in order). */
interface KmsHost { readonly line: { url: string, region: string, credentials: { accessKeyId: string, secretAccessKey: string }, settings: Record<string, string> }, readonly pid: number, command (c: KmsHostCommand): Promise<KmsHostCounts>, close (): Promise<void> }
async function startKmsHost (hsmJson: string): Promise<KmsHost> {
  const child: ChildProcess = spawn(process.execPath, [new URL('./lib/kms-host.ts', import.meta.url).pathname, hsmJson, PROXY_ISPB], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines: Interface = createInterface({ input: child.stdout as NodeJS.ReadableStream })
  const waiting: Array<{ resolve: (line: string) => void, reject: (err: Error) => void }> = []
  lines.on('line', (l) => { waiting.shift()?.resolve(l) })
  child.once('exit', (code, signal) => { for (const w of waiting.splice(0)) w.reject(new Error(`kms-host exited (${String(signal ?? code)})`)) })
  const next = async (): Promise<string> => await new Promise<string>((resolve, reject) => { waiting.push({ resolve, reject }) })
  const close = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    await exited
  }
  try {
    const line = JSON.parse(await next()) as KmsHost['line']
    return {
      line,
      pid: child.pid as number,
      command: async (c) => {
        const answer = next()
        child.stdin?.write(JSON.stringify(c) + '\n')
        return JSON.parse(await answer) as KmsHostCounts
      },
      close
    }
  } catch (err) {
    await close()
    throw err
  }
}

const diff = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v - (a[k] ?? 0)] as const).filter(([, v]) => v > 0))

const startedAt = performance.now()
await pinProcess(process.pid, restCpus)
const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-kms-'))
const closers: Array<() => Promise<void>> = []
const points: Point[] = []
let failure: unknown = null
try {
  const stack = await startStackProcess(dir, { longPollMs: 300, cpus: restCpus })
  closers.push(stack.close)
  const hsmCa = await readFile(stack.hsmCaCertFile, 'utf8')
  const cannedConfig: CannedBacenConfig = { key: KEY, holder: COUNTERPARTY_ISPB, tls: { ...stack.bcbTls, clientCaPems: [stack.caPem, hsmCa] }, signing: stack.bcbSigning }
  const canned = await startScriptProcess<{ port: number }>(new URL('./lib/canned-bacen.ts', import.meta.url).pathname, { BENCH_CANNED_BACEN: JSON.stringify(cannedConfig) }, restCpus)
  closers.push(canned.close)
  const upstreamUrl = `https://localhost:${canned.line.port}`
  // The token host keeps the token under DIR/hsm (tools/demo/stack.ts): the KMS key's certificate comes from its CA.
  const kms = await startKmsHost(join(dir, 'hsm', 'hsm.json'))
  closers.push(kms.close)
  await pinProcess(kms.pid, restCpus)
  await kms.command({ quota: QUOTA })

  const common = { PIXPROXY_AUDIT_ENABLED: 'false', PIXPROXY_DICT_URL: upstreamUrl, PIXPROXY_SPI_URL: upstreamUrl }
  const kmsSettings = {
    ...kms.line.settings,
    AWS_ENDPOINT_URL: kms.line.url,
    AWS_REGION: kms.line.region,
    AWS_ACCESS_KEY_ID: kms.line.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: kms.line.credentials.secretAccessKey
  }
  const proxies = {} as Record<Configuration['proxy'], BenchProxy>
  proxies.hsm = await startBenchProxy(stack, join(dir, 'proxy-hsm'), common)
  closers.push(proxies.hsm.stop)
  proxies.kms = await startBenchProxy(stack, join(dir, 'proxy-kms'), { ...common, ...kmsSettings })
  closers.push(proxies.kms.stop)
  proxies['kms-raised'] = await startBenchProxy(stack, join(dir, 'proxy-kms-raised'), { ...common, ...kmsSettings, PIXPROXY_KMS_MAX_SIGNS_PER_SEC: String(raised) })
  closers.push(proxies['kms-raised'].stop)
  for (const p of Object.values(proxies)) await pinProcess(p.pid, serverCpus)
  log(`set-up ${Math.round(performance.now() - startedAt)} ms; proxies on CPU ${serverCpus}, load, token, canned BACEN and local KMS on ${restCpus}; load average ${loadavg().map(r2).join(' ')}`)

  const bodies = op === 'create-entry'
    ? [createEntryRequest({ key: KEY, owner: { ...SAMPLE_PAYER, ispb: PROXY_ISPB } }).xml]
    : Array.from({ length: 64 }, (_, i) => pacs008({ from: PROXY_ISPB, payer: { ...SAMPLE_PAYER, ispb: PROXY_ISPB }, payee: { ...SAMPLE_PAYEE, ispb: COUNTERPARTY_ISPB }, amounts: [10 + i] }).xml)

  for (const c of CONFIGURATIONS) {
    if (c.latencyMs !== null) await kms.command({ latencyMs: c.latencyMs })
    // 50/s is below every configuration's bounds: a failure here is a broken set-up, not load.
    const w = await load(proxies[c.proxy].url, bodies, 50, warmSeconds)
    if (w.ok !== w.sent) throw new Error(`warm-up ${c.name}: ${w.ok}/${w.sent} ok ${JSON.stringify(w.errorsByCode)}`)
  }
  for (const [i, rate] of rates.entries()) {
    for (const c of i % 2 === 0 ? CONFIGURATIONS : [...CONFIGURATIONS].reverse()) {
      const before = c.latencyMs === null ? null : await kms.command({ latencyMs: c.latencyMs })
      const pid = proxies[c.proxy].pid
      const cpu0 = await treeCpuSeconds(pid)
      const kmsCpu0 = await treeCpuSeconds(kms.pid)
      const m0 = before === null ? null : await kmsMetrics(proxies[c.proxy].url)
      const r = await load(proxies[c.proxy].url, bodies, rate, seconds)
      const perRequest = (s: number): number => Math.round(s * 1e6 / Math.max(1, r.sent)) / 1000
      const p: Point = { configuration: c.name, rate, ...r, proxyCpuMsPerRequest: perRequest(await treeCpuSeconds(pid) - cpu0), loadavg1m: r2(loadavg()[0] as number) }
      if (before !== null && m0 !== null) {
        const m = diff(m0, await kmsMetrics(proxies[c.proxy].url))
        const n = m.pixproxy_kms_sign_duration_seconds_count ?? 0
        p.proxyKms = { signCallMeanMs: n === 0 ? null : r2((m.pixproxy_kms_sign_duration_seconds_sum ?? 0) * 1000 / n), signCalls: n, retries: m.pixproxy_kms_retries_total ?? 0, throttles: m.pixproxy_kms_throttles_total ?? 0 }
        p.kmsHostCpuMsPerRequest = perRequest(await treeCpuSeconds(kms.pid) - kmsCpu0)
        const calls = diff(before.sign, (await kms.command({})).sign)
        p.kmsSignCalls = calls
        const total = Object.values(calls).reduce((s, v) => s + v, 0)
        p.kmsCallsPerSignature = calls.ok === undefined ? null : Math.round(total * 1000 / calls.ok) / 1000
      }
      points.push(p)
      log(`${c.name} @ ${rate}/s: achieved ${p.achievedPerSec}/s p50 ${p.p50} p99 ${p.p99} ms ok ${p.ok}/${p.sent} cpu ${p.proxyCpuMsPerRequest} ms/req (local KMS ${p.kmsHostCpuMsPerRequest ?? '-'}) load ${p.loadavg1m}${p.proxyKms === undefined ? '' : ` proxy's KMS view ${JSON.stringify(p.proxyKms)}`} ${JSON.stringify(p.errorsByCode)}${p.kmsSignCalls === undefined ? '' : ` KMS Sign ${JSON.stringify(p.kmsSignCalls)} (${p.kmsCallsPerSignature}/signature)`}`)
      assertOnlyLoadErrors(p)
      // Let the queue and the sockets of the point drain before the next configuration's.
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
  }
} catch (err) {
  failure = err
} finally {
  for (const close of closers.reverse()) await close().catch((err: unknown) => { log(`close: ${(err as Error).message}`) })
  await rm(dir, { recursive: true, force: true })
}

const byConfiguration = Object.fromEntries(CONFIGURATIONS.map((c) => {
  const mine = points.filter((p) => p.configuration === c.name)
  const best = mine.reduce<Point | null>((b, p) => b === null || p.achievedPerSec > b.achievedPerSec ? p : b, null)
  const clean = mine.filter((p) => Object.keys(p.errorsByCode).length === 0 && p.p99 !== null && p.p99 < 50)
  return [c.name, {
    /** The highest achieved rate at any offered rate: the configuration's ceiling in this run. */
    maxAchievedPerSec: best?.achievedPerSec ?? 0,
    /** The highest offered rate answered without an error and with p99 under 50 ms. */
    cleanPerSec: Math.max(0, ...clean.map((p) => p.rate))
  }]
}))
const result = {
  bench: 'kms',
  quick: values.quick,
  op,
  upstream: 'canned BACEN (answers signed once with the BCB key), mutual TLS',
  serverCpus,
  restCpus,
  seconds,
  rates,
  kmsQuota: QUOTA,
  kmsMaxSignsPerSec: { default: 150, raised },
  bounds: {
    guardDefaultPerSec: 150,
    guardRaisedPerSec: raised,
    accountQuotaPerSec: QUOTA.perSecond,
    socketsOverLatencyPerSec: { 'kms-10ms': Math.round(64 / 0.010), 'kms-30ms': Math.round(64 / 0.030) }
  },
  byConfiguration,
  points,
  error: failure === null ? null : (failure as Error).message,
  durationSeconds: Math.round((performance.now() - startedAt) / 1000),
  loadavg1m: r2(loadavg()[0] as number),
  node: process.versions.node
}
process.stdout.write(JSON.stringify(result) + '\n')
if (failure !== null) {
  process.stderr.write(`[bench] ${(failure as Error).stack ?? String(failure)}\n`)
  process.exit(1)
}

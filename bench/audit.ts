/**
 * What the audit trail costs a caller: proxy latency with auditing on vs off, at fixed arrival rates.
 *
 *   node bench/audit.ts [--json] [--rates 100,200,400] [--seconds 8]
 *
 * The proxy runs as a child process (src/server.ts, production configuration: SoftHSM signing key, engine mTLS,
 * audit spool + Parquet sink); this process hosts the BACEN simulator and the load. Load is an open model: requests
 * are sent on a fixed schedule and latency is measured from the scheduled time, so a slow response cannot hide the
 * queueing behind it. The flow is DICT CreateEntry (signed in the HSM, verified by the simulator, its signed answer
 * verified by the proxy, one audit row). Each rate runs with auditing off then on, in separate proxy processes on
 * the same token, simulator and machine.
 * Issue 4's target: p99 added by auditing under 2 ms at 500 req/s.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import { spawnProxyProcess, startLocalStack } from '../src/demo/stack.ts'
import { createEntryRequest, SAMPLE_PAYER } from '../src/samples/messages.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    rates: { type: 'string', default: '100,200,400' },
    seconds: { type: 'string', default: '8' }
  }
})
const rates = values.rates.split(',').map(Number)
const seconds = Number(values.seconds)

const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-audit-'))
const stack = await startLocalStack({ dir, longPollMs: 300 })
await stack.proxy.close() // only the token and BACEN's side stay here

interface Run { mode: 'off' | 'on', rate: number, sent: number, ok: number, errors: Record<string, number>, p50: number, p90: number, p99: number, max: number, achievedPerSec: number }

async function startProxy (audit: boolean, run: string): Promise<{ url: string, stop: () => Promise<void> }> {
  const p = spawnProxyProcess(stack, {
    PIXPROXY_AUDIT_ENABLED: String(audit),
    PIXPROXY_AUDIT_SPOOL_DIR: join(dir, run, 'spool'),
    PIXPROXY_AUDIT_PARQUET_DIR: join(dir, run, 'lake')
  })
  const url = await p.url
  return {
    url,
    stop: async () => {
      p.child.kill('SIGTERM')
      await p.exited
    }
  }
}

function pct (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return Math.round((sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number) * 100) / 100
}

async function load (url: string, rate: number, secs: number): Promise<Omit<Run, 'mode' | 'rate'>> {
  const dispatcher = new Agent({ connections: 64, pipelining: 1 })
  const interval = 1000 / rate
  const total = Math.round(rate * secs)
  const latencies: number[] = []
  const errors: Record<string, number> = {}
  let ok = 0
  const start = performance.now() + 50
  const inflight: Array<Promise<void>> = []
  for (let i = 0; i < total; i++) {
    const due = start + i * interval
    const wait = due - performance.now()
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
    const e = createEntryRequest({ owner: { ...SAMPLE_PAYER, account: String(100_000_000 + Math.floor(Math.random() * 899_999_999)) } })
    inflight.push(request(`${url}/api/v2/entries/`, { dispatcher, method: 'POST', headers: { 'content-type': 'application/xml' }, body: e.xml })
      .then(async (r) => {
        await r.body.dump()
        const ms = performance.now() - due // from the scheduled time: no coordinated omission
        if (r.statusCode === 201) { ok++; latencies.push(ms) } else errors[String(r.statusCode)] = (errors[String(r.statusCode)] ?? 0) + 1
      }, (err: { code?: string }) => { errors[err.code ?? 'error'] = (errors[err.code ?? 'error'] ?? 0) + 1 }))
  }
  await Promise.all(inflight)
  const elapsed = (performance.now() - start) / 1000
  await dispatcher.close()
  latencies.sort((a, b) => a - b)
  return { sent: total, ok, errors, p50: pct(latencies, 0.5), p90: pct(latencies, 0.9), p99: pct(latencies, 0.99), max: pct(latencies, 1), achievedPerSec: Math.round(ok / elapsed) }
}

const runs: Run[] = []
try {
  for (const rate of rates) {
    for (const mode of ['off', 'on'] as const) {
      const proxy = await startProxy(mode === 'on', `${mode}-${rate}`)
      await load(proxy.url, Math.min(rate, 50), 1) // warm-up: connections, JIT, HSM sessions
      const r = await load(proxy.url, rate, seconds)
      await proxy.stop()
      runs.push({ mode, rate, ...r })
      if (!values.json) console.error(`[bench] rate ${rate}/s audit ${mode}: p50 ${r.p50} ms p99 ${r.p99} ms ok ${r.ok}/${r.sent} ${JSON.stringify(r.errors)}`)
    }
  }
} finally {
  await stack.close()
  await rm(dir, { recursive: true, force: true })
}

const byRate = rates.map((rate) => {
  const off = runs.find((r) => r.rate === rate && r.mode === 'off') as Run
  const on = runs.find((r) => r.rate === rate && r.mode === 'on') as Run
  return { rate, off, on, addedP50Ms: Math.round((on.p50 - off.p50) * 100) / 100, addedP99Ms: Math.round((on.p99 - off.p99) * 100) / 100 }
})
const result = { bench: 'audit', flow: 'DICT CreateEntry through the proxy (child process) to the simulator', seconds, byRate, loadavg1m: Math.round((loadavg()[0] as number) * 100) / 100, node: process.versions.node }
process.stdout.write(JSON.stringify(result) + '\n')

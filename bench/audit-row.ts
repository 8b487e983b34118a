/**
 * What one audit row costs, the audit threads alone: no HTTP, no TLS, no upstream. This process stands in for the
 * event loop and calls the audit worker (src/audit/remote.ts) as a request does: begin() (the request half,
 * durable before sending), a 1 ms pause (the upstream call), end() (the answer's half, a 1.9 KB body, durable
 * before answering). Rows come at a fixed rate (open model); the sink is the local Parquet store.
 *
 *   node bench/audit-row.ts [--json] [--rates 200,400] [--seconds 10] [--cpus 0] [--ship on|off]
 *
 * Per rate: CPU per row by thread (schedstat: `main` is this process's loop, `pix-audit` the spool and pipeline,
 * `pix-audit-ship` the sink), voluntary context switches per row by thread (each a sleep and a wake-up: an
 * fdatasync, an idle loop woken by a message), and the begin-to-end latency p50/p99 (the pause included).
 * `--ship off` keeps every row in the spool for the run (the flush interval and the batch far beyond it): the
 * durability path alone, for telling its cost from shipping's. The whole process runs on `--cpus` (taskset), one core
 * by default, as the proxy's threads share one core in bench/e2e.ts --pinned.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { AuditWorker } from '../src/audit/remote.ts'
import { uuidv7 } from '../src/audit/id.ts'
import type { AuditSettings } from '../src/audit/service.ts'
import { threadCpuSecondsPrecise, threadWakeups } from './lib/proc.ts'
import { pinProcess } from './lib/stack-process.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    rates: { type: 'string', default: '200,400' },
    seconds: { type: 'string', default: '10' },
    cpus: { type: 'string', default: '0' },
    ship: { type: 'string', default: 'on' }
  }
})
if (values.ship !== 'on' && values.ship !== 'off') throw new Error('--ship is on or off')
const seconds = Number(values.seconds)
const rates = values.rates.split(',').map(Number)
await pinProcess(process.pid, values.cpus)
const log = (s: string): void => { if (!values.json) process.stderr.write(`[audit-row] ${s}\n`) }

const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-audit-row-'))
const audit: AuditSettings = {
  enabled: true,
  spoolDir: join(dir, 'spool'),
  spoolShared: false,
  spoolMaxBytes: 4 * 1024 ** 3,
  sink: 'parquet',
  parquetDir: join(dir, 'lake'),
  firehoseStreams: { spi: 'spi', dict: 'dict' },
  // Off: no row ships during the run (the Parquet sink's batch, 5,000 rows, is not reached either).
  flushMs: values.ship === 'on' ? 1_000 : 600_000
}
const quiet = (): void => {}
const { worker } = await AuditWorker.start(audit, { info: quiet, warn: quiet, error: (o, m) => { process.stderr.write(`${m} ${JSON.stringify(o)}\n`) } })
const answer = `<GetEntryResponse>${'x'.repeat(1_900)}</GetEntryResponse>`

/** One row as a GetEntry makes it; resolves with its begin-to-end time in ms. */
async function row (): Promise<number> {
  const t0 = performance.now()
  const id = uuidv7(Date.now())
  await worker.begin({
    id,
    request_date: new Date().toISOString(),
    system: 'dict',
    request_method: 'GET',
    request_path: '/api/v2/entries/bench.pinned%40example.com.br',
    request_header: '{"pi-requestingparticipant":"99999004","pi-payerid":"12345678901","pi-endtoendid":"E9999900420261205000000000000001"}',
    request_body: null,
    correlation_id: 'bench',
    instance_id: 'bench'
  })
  await new Promise((resolve) => setTimeout(resolve, 1))
  await worker.end(id, {
    response_status_code: 200,
    response_header: '{"content-type":"application/xml"}',
    response_body: answer,
    response_signature_valid: true,
    response_signature_code: 'VALID',
    error_code: null,
    upstream_latency_ms: 1,
    total_latency_ms: 2
  })
  return performance.now() - t0
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000
const points: unknown[] = []
try {
  for (let i = 0; i < 300; i++) await row() // JIT, the spool's first segment
  for (const rate of rates) {
    const n = Math.round(rate * seconds)
    const [c0, w0] = [await threadCpuSecondsPrecise(process.pid), await threadWakeups(process.pid)]
    const latencies: number[] = []
    const start = performance.now()
    const all: Array<Promise<void>> = []
    for (let i = 0; i < n; i++) {
      const wait = start + i * 1000 / rate - performance.now()
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
      all.push(row().then((ms) => { latencies.push(ms) }))
    }
    await Promise.all(all)
    const [c1, w1] = [await threadCpuSecondsPrecise(process.pid), await threadWakeups(process.pid)]
    const per = (a: Record<string, number>, b: Record<string, number>, scale: number): Record<string, number> =>
      Object.fromEntries(Object.entries(b).map(([k, v]) => [k, r3((v - (a[k] ?? 0)) * scale / n)] as const).filter(([, v]) => v >= 0.001))
    latencies.sort((a, b) => a - b)
    const p = {
      rate,
      rows: n,
      cpuMsPerRowByThread: per(c0, c1, 1000),
      wakeupsPerRowByThread: per(w0, w1, 1),
      beginToEndMs: { p50: r3(latencies[Math.floor(n * 0.5)] as number), p99: r3(latencies[Math.floor(n * 0.99)] as number), max: r3(latencies[n - 1] as number) }
    }
    points.push(p)
    log(JSON.stringify(p))
  }
} finally {
  await worker.close(10_000)
  await rm(dir, { recursive: true, force: true })
}
const result = { bench: 'audit-row', ship: values.ship, cpus: values.cpus, seconds, points, node: process.versions.node }
if (values.json) process.stdout.write(JSON.stringify(result) + '\n')

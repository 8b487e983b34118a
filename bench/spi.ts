/**
 * SPI throughput under BACEN's limit of 6 in-flight requests per participant, with a simulated 20 ms ICOM.
 *
 *   node bench/spi.ts [--json] [--seconds 10] [--callers 6,24,64] [--latency-ms 20] [--parts 1,10]
 *
 * The proxy runs as a child process (production configuration: SoftHSM signing, engine mTLS, audit on) in front of
 * the BACEN simulator, which adds `latency-ms` to every POST /msgs. Bank-core callers post pacs.008 messages back
 * to back (closed model, `callers` at a time); the proxy lets 6 through to ICOM and queues the rest (bounded,
 * PIXPROXY_SPI_QUEUE_*). Reported per caller count: messages delivered per second (201 from ICOM), latency
 * p50/p99 as the caller saw it, refusals by status, and the ceiling 6 / latency (one message per request).
 * Each caller count runs twice: coalescing off (PIXPROXY_SPI_COALESCE_MAX_PARTS=1: one message per POST, ceiling
 * 6 / latency) and on (queued messages share multipart/mixed POSTs of up to 10: ceiling 60 / latency), each in its
 * own proxy process.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import { PROXY_ISPB, startLocalStack } from '../tools/demo/stack.ts'
import { pacs008 } from '../tools/samples/messages.ts'
import { startBenchProxy } from './lib/proxy.ts'
import type { BenchProxy } from './lib/proxy.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    seconds: { type: 'string', default: '10' },
    callers: { type: 'string', default: '6,24,64' },
    'latency-ms': { type: 'string', default: '20' },
    parts: { type: 'string', default: '1,10' }
  }
})
const seconds = Number(values.seconds)
const callerCounts = values.callers.split(',').map(Number)
const latencyMs = Number(values['latency-ms'])
const partsSettings = values.parts.split(',').map(Number)
const log = (s: string): void => { if (!values.json) process.stderr.write(`[bench] ${s}\n`) }

function pct (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return Math.round((sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number) * 100) / 100
}

const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-spi-'))
const stack = await startLocalStack({ dir, longPollMs: 300 })
await stack.proxy.close()
stack.simulator.app.simulator.setFaults({ latencyMs, routes: [`/api/v1/in/${PROXY_ISPB}/msgs`] })
async function startProxy (parts: number): Promise<BenchProxy> {
  return await startBenchProxy(stack, join(dir, `parts-${parts}`), { PIXPROXY_SPI_COALESCE_MAX_PARTS: String(parts) })
}

interface Point { coalesceMaxParts: number, callers: number, delivered: number, perSec: number, p50: number, p99: number, refused: Record<string, number> }

async function run (url: string, parts: number, callers: number, secs: number): Promise<Point> {
  const dispatcher = new Agent({ connections: callers, pipelining: 1 })
  const latencies: number[] = []
  const refused: Record<string, number> = {}
  let delivered = 0
  const end = performance.now() + secs * 1000
  const start = performance.now()
  await Promise.all(Array.from({ length: callers }, async () => {
    while (performance.now() < end) {
      const m = pacs008({ amounts: [10] })
      const t0 = performance.now()
      try {
        const r = await request(`${url}/api/v1/in/${PROXY_ISPB}/msgs`, { dispatcher, method: 'POST', headers: { 'content-type': 'application/xml' }, body: m.xml })
        await r.body.dump()
        if (r.statusCode === 201) {
          delivered++
          latencies.push(performance.now() - t0)
        } else {
          refused[String(r.statusCode)] = (refused[String(r.statusCode)] ?? 0) + 1
          if (r.statusCode === 429 || r.statusCode === 503) await new Promise((resolve) => setTimeout(resolve, 20))
        }
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'error'
        refused[code] = (refused[code] ?? 0) + 1
      }
    }
  }))
  const elapsed = (performance.now() - start) / 1000
  await dispatcher.close()
  latencies.sort((a, b) => a - b)
  return { coalesceMaxParts: parts, callers, delivered, perSec: Math.round(delivered / elapsed), p50: pct(latencies, 0.5), p99: pct(latencies, 0.99), refused }
}

const points: Point[] = []
try {
  for (const parts of partsSettings) {
    const proxy = await startProxy(parts)
    try {
      await run(proxy.url, parts, 6, 1) // warm-up
      for (const callers of callerCounts) {
        const p = await run(proxy.url, parts, callers, seconds)
        points.push(p)
        log(`coalesce ${parts}, ${callers} callers: ${p.perSec} msg/s delivered, p50 ${p.p50} ms p99 ${p.p99} ms, refused ${JSON.stringify(p.refused)}`)
      }
    } finally {
      await proxy.stop()
    }
  }
} finally {
  await stack.close()
  await rm(dir, { recursive: true, force: true })
}

process.stdout.write(JSON.stringify({
  bench: 'spi',
  flow: 'pacs.008 POST /api/v1/in/{ispb}/msgs through the proxy (child process, audit on), closed model',
  upstreamLatencyMs: latencyMs,
  maxInFlight: 6,
  ceilingOneMessagePerPost: Math.round(6 * 1000 / latencyMs),
  ceilingTenMessagesPerPost: Math.round(60 * 1000 / latencyMs),
  seconds,
  points,
  loadavg1m: Math.round((loadavg()[0] as number) * 100) / 100,
  node: process.versions.node
}) + '\n')

/**
 * The floor under the audit wait: what this machine's disk and threads cost before any pix-proxy code runs.
 *
 *   node bench/floor.ts [--json] [--dir .local] [--count 300]
 *
 * - append + fdatasync of a 12 KB frame (the size of a CreateEntry row half), file growing: what the spool does;
 * - the same into a preallocated, already-flushed file (overwrites: no size change to journal);
 * - a 10 KB message to a worker thread and back (the audit thread's hop, src/audit/remote.ts).
 * Each operation runs alone, 10 ms apart (an idle machine's latency, not throughput). A request waits for two
 * durable appends in sequence (before sending, before answering), each with a hop: about twice the sum of
 * the first and the last line is what auditing adds at the least.
 */
import { fdatasyncSync, openSync, closeSync, rmSync, writeSync } from 'node:fs'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    dir: { type: 'string', default: '.local' },
    count: { type: 'string', default: '300' }
  }
})
const count = Number(values.count)
mkdirSync(values.dir, { recursive: true })
const file = join(values.dir, `floor-probe-${process.pid}.bin`)
const pause = async (): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, 10)) }

function quantiles (xs: number[]): { p50: number, p99: number, max: number } {
  const s = [...xs].sort((a, b) => a - b)
  const at = (q: number): number => Math.round((s[Math.min(s.length - 1, Math.floor(q * s.length))] as number) * 1000) / 1000
  return { p50: at(0.5), p99: at(0.99), max: at(1) }
}

async function appends (preallocate: boolean): Promise<number[]> {
  const fd = openSync(file, 'w')
  try {
    const frame = Buffer.alloc(12_000, 7)
    if (preallocate) {
      const zeros = Buffer.alloc(frame.length * count)
      writeSync(fd, zeros, 0, zeros.length, 0)
      fdatasyncSync(fd)
    }
    const out: number[] = []
    for (let i = 0; i < count; i++) {
      const t0 = performance.now()
      writeSync(fd, frame, 0, frame.length, i * frame.length)
      fdatasyncSync(fd)
      out.push(performance.now() - t0)
      await pause()
    }
    return out
  } finally {
    closeSync(fd)
    rmSync(file, { force: true })
  }
}

async function hops (): Promise<number[]> {
  const w = new Worker('require("node:worker_threads").parentPort.on("message", (m) => require("node:worker_threads").parentPort.postMessage(m))', { eval: true })
  const out: number[] = []
  try {
    const row = { request_body: 'x'.repeat(10_000) }
    for (let i = 0; i < count; i++) {
      const t0 = performance.now()
      await new Promise((resolve) => { w.once('message', resolve); w.postMessage(row) })
      out.push(performance.now() - t0)
      await pause()
    }
    return out
  } finally {
    await w.terminate()
  }
}

const append = quantiles(await appends(false))
const overwrite = quantiles(await appends(true))
const hop = quantiles(await hops())
const result = {
  bench: 'floor',
  dir: values.dir,
  count,
  appendFdatasyncMs: append,
  overwriteFdatasyncMs: overwrite,
  workerRoundTripMs: hop,
  auditFloorP50Ms: Math.round(2 * (append.p50 + hop.p50) * 100) / 100,
  node: process.versions.node
}
if (values.json) process.stdout.write(JSON.stringify(result) + '\n')
else {
  process.stdout.write(`append + fdatasync (12 KB)    p50 ${append.p50} ms  p99 ${append.p99} ms  max ${append.max} ms\n`)
  process.stdout.write(`overwrite + fdatasync (12 KB) p50 ${overwrite.p50} ms  p99 ${overwrite.p99} ms  max ${overwrite.max} ms\n`)
  process.stdout.write(`worker thread round trip      p50 ${hop.p50} ms  p99 ${hop.p99} ms  max ${hop.max} ms\n`)
  process.stdout.write(`two durable appends with hops: at least ~${result.auditFloorP50Ms} ms per request at p50\n`)
}

/**
 * The audit ship thread: opens the sink the settings name and runs each batch ThreadedSink (ship.ts) posts to it,
 * one reply per call. The protocol is described in ship.ts.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { openSink, type FromShip, type ToShip } from './ship.ts'
import { toWire } from './thread.ts'
import type { AuditRow } from './schema.ts'
import type { AuditSettings } from './service.ts'

const port = parentPort
if (port === null) throw new Error('src/audit/ship-worker.ts runs as a worker thread (see ThreadedSink)')
const { audit } = workerData as { audit: AuditSettings }

try {
  const sink = await openSink(audit)
  const gathering = new Map<number, AuditRow[]>()
  port.on('message', (m: ToShip) => {
    if (m.t === 'rows') {
      const rows = gathering.get(m.k) ?? []
      for (const r of m.rows) rows.push(r)
      gathering.set(m.k, rows)
      return
    }
    const done = (p: Promise<unknown>): void => {
      p.then(
        (value) => { port.postMessage({ t: 'done', k: m.k, error: null, ...(m.t === 'write' ? { value: value as never } : {}) } satisfies FromShip) },
        (err: unknown) => { port.postMessage({ t: 'done', k: m.k, error: toWire(err) } satisfies FromShip) })
    }
    if (m.t === 'write') {
      const rows = gathering.get(m.k) ?? []
      gathering.delete(m.k)
      done(sink.write(rows))
    } else done(sink.close().finally(() => { setImmediate(() => { port.close() }) }))
  })
  port.postMessage({ t: 'ready', limits: { name: sink.name, maxBatchRows: sink.maxBatchRows, maxBatchBytes: sink.maxBatchBytes, maxRowBytes: sink.maxRowBytes } } satisfies FromShip)
} catch (err) {
  port.postMessage({ t: 'open-failed', error: toWire(err) } satisfies FromShip)
  port.close()
}

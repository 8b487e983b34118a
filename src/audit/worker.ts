/**
 * The audit worker thread: runs an AuditService (spool, pipeline, sink) so that framing rows, the spool's
 * bookkeeping, encoding PutRecordBatch bodies or Parquet, and the garbage those leave all happen off the event
 * loop that serves requests. Started by AuditWorker (remote.ts); the protocol is described there.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { AuditService } from './service.ts'
import type { AuditSettings } from './service.ts'
import type { AuditLogger } from './spool.ts'
import type { Reply, ToWorker, FromWorker } from './remote.ts'
import { toWire } from './thread.ts'

const port = parentPort
if (port === null) throw new Error('src/audit/worker.ts runs as a worker thread (see AuditWorker)')
const { audit, blockingIo } = workerData as { audit: AuditSettings, blockingIo: boolean }

// Replies are batched: the rows of one group commit resolve together and travel in one message.
let outbox: Reply[] = []
function reply (r: Reply): void {
  if (outbox.length === 0) queueMicrotask(flush)
  outbox.push(r)
}
function flush (): void {
  const replies = outbox
  outbox = []
  port?.postMessage({ t: 'replies', replies } satisfies FromWorker)
}

// Log lines go to the main thread's logger: one stream, one format, one redaction policy.
const log = (level: 'info' | 'warn' | 'error') => (obj: object, msg: string): void => {
  port.postMessage({ t: 'log', level, obj: JSON.parse(JSON.stringify(obj, (_k, v: unknown) => v instanceof Error ? v.message : v)) as object, msg } satisfies FromWorker)
}
const logger: AuditLogger = { info: log('info'), warn: log('warn'), error: log('error') }

let service: AuditService | null = null
try {
  service = await AuditService.open(audit, logger, { blockingIo, sinkThread: true })
  port.postMessage({ t: 'ready', status: service.status() } satisfies FromWorker)
} catch (err) {
  port.postMessage({ t: 'open-failed', error: toWire(err) } satisfies FromWorker)
  port.close() // nothing else keeps this thread alive: it ends
}
if (service !== null) serve(service)

function serve (service: AuditService): void {
  const settle = (k: number, p: Promise<unknown>): void => {
    p.then((value) => { reply({ k, error: null, value }) }, (err: unknown) => { reply({ k, error: toWire(err) }) })
  }
  port?.on('message', (m: ToWorker) => {
    for (const c of m.calls) {
      if (c.op === 'begin') settle(c.k, service.begin(c.row))
      else if (c.op === 'end') settle(c.k, service.end(c.id, c.half))
      else if (c.op === 'status') reply({ k: c.k, error: null, value: service.status() })
      else {
        // After close nothing more arrives: answer, then let the thread end.
        service.close(c.deadlineMs).then((value) => { reply({ k: c.k, error: null, value }) }, (err: unknown) => { reply({ k: c.k, error: toWire(err) }) })
          .finally(() => { flush(); port?.close() })
      }
    }
  })
}

/**
 * The audit trail: a write-ahead spool (rows durable before messages leave), a pipeline shipping completed rows
 * in batches, and the sink (local Parquet, or Kinesis Data Firehose in AWS), all in a worker thread
 * (audit/remote.ts says why). Registered before the routes so it closes after them: in-flight transactions end,
 * then the pipeline flushes within the shutdown deadline, and what it could not ship stays in the spool for the
 * next start (which replays it). If the worker dies, every request is refused (503, nothing unaudited is sent)
 * and `onFailure` listeners are told: the server shuts down so that the orchestrator starts a fresh task.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import { registerAuditMetrics } from '../audit/metrics.ts'
import { AuditRecorder } from '../audit/recorder.ts'
import { AuditWorker } from '../audit/remote.ts'
import type { AuditStatus } from '../audit/service.ts'
import type { PixProxyError } from '../../core/errors.ts'
import { tracingOf } from '../http/tracing.ts'

export interface AuditRuntime {
  readonly recorder: AuditRecorder
  /** The worker thread running the spool, pipeline and sink (null when auditing is off). */
  readonly worker: AuditWorker | null
  /** A fresh snapshot of the spool and the shipping (null when auditing is off). @throws AUDIT_WORKER_FAILED. */
  status (): Promise<AuditStatus> | null
  /** Called once if the audit worker stops while the proxy runs. */
  onFailure (listener: (err: PixProxyError) => void): void
}

declare module 'fastify' {
  interface FastifyInstance {
    audit: AuditRuntime
  }
}

export default fp(async function auditPlugin (app: FastifyInstance, opts: { config: Config }) {
  const { audit } = opts.config
  if (!audit.enabled) {
    app.log.warn('auditing is DISABLED (PIXPROXY_AUDIT_ENABLED=false): only for benchmarks, never in production')
    app.decorate('audit', { recorder: new AuditRecorder(null, app.instanceId), worker: null, status: () => null, onFailure: () => {} })
    return
  }
  const { worker, status: first } = await AuditWorker.start(audit, app.log)
  const replay = first.spool.replay
  app.log.info({ sink: first.sink, spool: first.spoolDir, replayedRows: replay.rows, incomplete: replay.incomplete, tornBytes: replay.tornBytes }, 'audit trail ready')
  const tracing = tracingOf(app)
  // The metrics are the gateway's too (audit/metrics.ts): one definition for both processes.
  const observeWait = registerAuditMetrics(app.metrics.registry, worker)
  app.decorate('audit', {
    recorder: new AuditRecorder(worker, app.instanceId, (half, ms) => {
      observeWait(half, ms)
      tracing.auditWait(half, ms)
    }),
    worker,
    status: async () => await worker.status(),
    onFailure: (listener: (err: PixProxyError) => void) => { worker.onFailure(listener) }
  })

  app.addHook('onClose', async () => {
    // Routes have drained (they close first): flush what is ready within the deadline, keep the rest spooled.
    const { shipped, left } = await worker.close(Math.max(1_000, opts.config.shutdownTimeoutMs - 5_000))
    app.log.info({ shipped, left }, 'audit pipeline closed; rows left stay in the spool for the next start')
  })
}, { name: 'pix-audit', fastify: '5.x', dependencies: ['pix-metrics'] })

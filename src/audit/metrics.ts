/**
 * The audit trail's Prometheus metrics (pixproxy_audit_*), one definition for both processes that run an audit worker
 * thread: the proxy (plugins/audit.ts, on its registry) and the inbound gateway (gateway/metrics.ts, on its own). The
 * same names in both, with no label saying which: each is a process of its own, scraped as a target of its own (as
 * Node's nodejs_* are), so its job and instance already say whose backlog a series is.
 *
 * Most values live in the worker thread (its own isolate: it cannot touch a registry of this thread) and reach this
 * one in a status snapshot, asked for at each scrape; the wait histogram is fed by this thread, which does the waiting.
 */
import { Counter, Gauge, Histogram } from 'prom-client'
import type { Registry } from 'prom-client'
import type { PixProxyError } from '../../core/errors.ts'
import type { AuditWaitObserver } from './recorder.ts'
import type { AuditStatus } from './service.ts'

/** What the metrics (and readiness, readiness.ts) read of the audit worker (remote.ts, AuditWorker). */
export interface AuditThread {
  /** A fresh snapshot; gives up after a timeout (AUDIT_WORKER_UNRESPONSIVE) so that a scrape never hangs on a stuck thread. */
  status (): Promise<AuditStatus>
  /** The error that stopped the thread, or null while it runs. */
  readonly failure: PixProxyError | null
}

/**
 * Registers the pixproxy_audit_* metrics of `thread` on `registry`, and returns what observes the wait histogram:
 * called with how long a call waited for one of its audit halves to be durable.
 */
export function registerAuditMetrics (registry: Registry, thread: AuditThread): AuditWaitObserver {
  const registers = [registry]
  const wait = new Histogram({
    name: 'pixproxy_audit_wait_seconds',
    help: 'Time a request waited for its audit half (begin before sending, end before answering) to be durable: the latency auditing adds',
    labelNames: ['half'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers
  })

  // One snapshot per scrape, shared by the metrics below (each collect() asks; the first asks the worker).
  let snapshot: Promise<AuditStatus | null> | null = null
  const current = async (): Promise<AuditStatus | null> => {
    snapshot ??= thread.status().catch(() => null).finally(() => { setImmediate(() => { snapshot = null }) })
    return await snapshot
  }
  /**
   * A gauge whose values come from the scrape's snapshot (none when the worker is gone): one value, or one per value
   * of `label`. For what goes up and down: bytes and rows held now, failures in a row.
   */
  const gaugeFromStatus = ({ name, help, label }: { name: string, help: string, label?: string }, pick: (s: AuditStatus) => number | Record<string, number>): void => {
    new Gauge({ // eslint-disable-line no-new
      name,
      help,
      labelNames: label === undefined ? [] : [label],
      registers,
      async collect () {
        const s = await current()
        if (s === null) return
        const v = pick(s)
        if (typeof v === 'number') this.set(v)
        else if (label !== undefined) for (const [value, n] of Object.entries(v)) this.set({ [label]: value }, n)
      }
    })
  }
  /**
   * A counter for a total the worker keeps since start (rows shipped, calls failed). The totals live in the worker
   * thread (its own isolate: it cannot inc() a counter of this registry), and reach this thread only in the status
   * snapshot. So collect() inc()s by the difference since the last scrape, rather than a message per row from the
   * worker: the counter only ever goes up, by exactly what the worker counted. Should a total ever go down (it does
   * not: the worker is never restarted in a process), the counter keeps its value and counts on from the new one.
   */
  const counterFromStatus = ({ name, help, label }: { name: string, help: string, label?: string }, pick: (s: AuditStatus) => number | Record<string, number>): void => {
    const last = new Map<string, number>()
    new Counter({ // eslint-disable-line no-new
      name,
      help,
      labelNames: label === undefined ? [] : [label],
      registers,
      async collect () {
        const s = await current()
        if (s === null) return
        const v = pick(s)
        for (const [value, n] of typeof v === 'number' ? [['', v] as const] : Object.entries(v)) {
          const delta = n - (last.get(value) ?? 0)
          last.set(value, n)
          if (delta <= 0) continue
          if (label === undefined) this.inc(delta)
          else this.inc({ [label]: value }, delta)
        }
      }
    })
  }
  gaugeFromStatus({ name: 'pixproxy_audit_spool_bytes', help: 'Audit spool: bytes of segment and parked files on disk (what PIXPROXY_AUDIT_SPOOL_MAX_BYTES bounds)' },
    ({ spool: s }) => s.bytes)
  gaugeFromStatus({ name: 'pixproxy_audit_spool_max_bytes', help: 'Audit spool: the bound on its bytes on disk (PIXPROXY_AUDIT_SPOOL_MAX_BYTES)' },
    ({ spool: s }) => s.maxBytes)
  gaugeFromStatus({ name: 'pixproxy_audit_spool_rows', help: 'Audit spool rows now: pending shipment, begun and not yet ended (open; 0 when traffic stops), parked (too large for the sink)', label: 'state' },
    ({ spool: s }) => ({ pending: s.pendingRows, open: s.openRows, parked: s.parkedRows }))
  counterFromStatus({ name: 'pixproxy_audit_rows_total', help: 'Audit rows: spooled, shipped, retried, refused because the spool was full, compressed, parked, adopted (shipped from the slot of a process that died)', label: 'state' },
    ({ spool: s, pipeline: p, adoptedRows }) => ({ spooled: s.spooledRows, shipped: p.shippedRows, retried: p.retriedRows, refused_full: s.rejectedFull, compressed: p.compressedRows, parked: p.parkedRows, adopted: adoptedRows }))
  gaugeFromStatus({ name: 'pixproxy_audit_sink_consecutive_failures', help: 'Audit sink: calls in a row that took nothing (the whole pipeline backs off; alert when it stays above 0)' },
    ({ pipeline: p }) => p.consecutiveFailures)
  counterFromStatus({ name: 'pixproxy_audit_sink_failed_calls_total', help: 'Audit sink: calls that threw (nothing accepted)' },
    ({ pipeline: p }) => p.failedCalls)
  counterFromStatus({ name: 'pixproxy_audit_sink_partial_failures_total', help: 'Audit sink: calls that reported some rows refused (did not throw)' },
    ({ pipeline: p }) => p.partialFailures)
  gaugeFromStatus({ name: 'pixproxy_audit_sink_retrying_rows', help: 'Audit sink: rows refused and waiting to be sent again now (a row refused for good shows here and in the backlog age, not in consecutive failures)' },
    ({ pipeline: p }) => p.retryingRows)
  gaugeFromStatus({ name: 'pixproxy_audit_worker_heap_bytes', help: "The audit worker thread's V8 heap (its own isolate; nodejs_heap_size_* are the event loop's)", label: 'measure' },
    ({ heap }) => ({ used: heap.usedBytes, total: heap.totalBytes }))
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_audit_oldest_unshipped_seconds',
    help: 'Age of the oldest audit row not yet accepted by the sink (the shipping backlog)',
    registers,
    async collect () {
      const s = (await current())?.spool
      if (s !== undefined) this.set(s.oldestUnshippedAgeMs / 1000)
    }
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_audit_worker_up',
    help: '1 while the audit worker thread runs; 0 once it has stopped (every request is then refused)',
    registers,
    collect () { this.set(thread.failure === null ? 1 : 0) }
  })
  return (half, ms) => { wait.observe({ half }, ms / 1000) }
}

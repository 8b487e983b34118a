/**
 * One audit row per call through the gateway: who (the client certificate's identity), what (route, method, path),
 * and how it ended (status, error code, latency, bytes).
 *
 * In production the rows go through the proxy's audit trail in its worker thread (src/audit/remote.ts: write-ahead
 * spool, pipeline, Parquet or Firehose, `system = 'gateway'`, src/audit/gateway.ts), with the proxy's begin/end
 * contract: a call the gateway forwards is durable in the spool BEFORE it reaches the backend (when it cannot be, the
 * call is refused with 503 PIXPROXY_ERR_AUDIT_SPOOL_FULL, the spool's error or the thread's, never forwarded
 * unaudited), and its outcome is appended before the answer's last byte is written. docs/gateway.md says why. Tests
 * may pass any GatewayAuditSink (a `write` alone keeps rows in memory).
 */
import { GATEWAY_COLUMNS, gatewayRequestHalf, gatewayResponseHalf } from '../audit/gateway.ts'
import type { GatewayCallRow, GatewayCallStart } from '../audit/gateway.ts'
import type { AuditThread } from '../audit/metrics.ts'
import type { AuditJournal } from '../audit/service.ts'

export type { GatewayCallStart } from '../audit/gateway.ts'

/**
 * One call through the gateway once it ended; its columns are the gateway table's (GATEWAY_COLUMNS in
 * src/audit/gateway.ts: the one definition, with each column's meaning). `id` is also the problem's instance and the
 * x-request-id sent to the backend.
 */
export type GatewayAuditRow = GatewayCallRow

/** The gateway table's column names, in order. */
export const GATEWAY_AUDIT_COLUMNS: ReadonlyArray<keyof GatewayAuditRow> = Object.freeze(GATEWAY_COLUMNS.map((c) => c.name as keyof GatewayAuditRow))

export interface GatewayAuditSink {
  /**
   * Makes the start of an admitted call durable before it is forwarded; the call is refused when it throws. Absent
   * in sinks that keep nothing (log lines, tests).
   */
  begin?: (start: GatewayCallStart) => Promise<void>
  /** The whole row once the call ended (for a call begun, its outcome). Durable when the promise resolves. */
  write (row: GatewayAuditRow): void | Promise<void>
  /** Called last when the gateway closes (ships what it can, closes the spool). */
  close?: () => Promise<void>
  /**
   * The audit worker thread behind the sink (openGatewayAudit's): its pixproxy_audit_* metrics are on the gateway's
   * /metrics and its health counts in /readyz, as in the proxy. Absent in sinks without one (log lines, tests).
   */
  readonly worker?: AuditThread
}

/**
 * Rows through the audit trail (`journal`: an AuditService, or the audit worker). A call refused before it was
 * forwarded (route not allowed, body too large…) was never begun: both halves are written when it ends.
 */
export function journalAuditSink (journal: AuditJournal, close?: () => Promise<void>): GatewayAuditSink {
  const begun = new Set<string>()
  return {
    begin: async (start) => {
      await journal.begin(gatewayRequestHalf(start))
      begun.add(start.id)
    },
    write: async (row) => {
      if (!begun.delete(row.id)) await journal.begin(gatewayRequestHalf(row))
      await journal.end(row.id, gatewayResponseHalf(row))
    },
    ...(close === undefined ? {} : { close })
  }
}

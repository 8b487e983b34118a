/**
 * One audit row per call through the gateway: who (the client certificate's identity), what (route, method, path),
 * and how it ended (status, error code, latency, bytes).
 *
 * Minimal for now: rows go to a `GatewayAuditSink`, by default one JSON log line each (msg "gateway audit") on
 * stdout, which the awslogs driver carries to CloudWatch Logs. They do not yet go through the proxy's spool ->
 * Parquet/Firehose pipeline (src/audit/), whose rows, partitions and Glue table are the PIX transaction's; a gateway
 * kind there (its own Parquet directory, PIXGW_AUDIT_FIREHOSE_STREAM and Glue table) is the next step, and
 * GATEWAY_AUDIT_COLUMNS is the column list it will take.
 */
import type { Logger } from 'pino'

export interface GatewayAuditRow {
  /** Unique id of the call (also the problem's instance and the x-request-id sent to the backend). */
  id: string
  request_date: string
  client_subject: string | null
  client_serial: string | null
  /** base64url SHA-256 of the client certificate's DER (RFC 8705 x5t#S256). */
  client_thumbprint: string | null
  client_cnpj: string | null
  client_organisation_id: string | null
  client_software_statement_id: string | null
  /** The allowlist pattern that matched, or null. */
  route: string | null
  method: string
  path: string
  status: number
  error_code: string | null
  latency_ms: number
  request_bytes: number
  response_bytes: number
  instance_id: string
}

export const GATEWAY_AUDIT_COLUMNS: ReadonlyArray<keyof GatewayAuditRow> = Object.freeze([
  'id', 'request_date', 'client_subject', 'client_serial', 'client_thumbprint', 'client_cnpj', 'client_organisation_id',
  'client_software_statement_id', 'route', 'method', 'path', 'status', 'error_code', 'latency_ms', 'request_bytes',
  'response_bytes', 'instance_id'
])

export interface GatewayAuditSink {
  write (row: GatewayAuditRow): void
}

/** Rows as JSON log lines (the default sink). */
export function logAuditSink (logger: Logger): GatewayAuditSink {
  const log = logger.child({ audit: 'gateway' })
  return { write: (row) => { log.info({ row }, 'gateway audit') } }
}

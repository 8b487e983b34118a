/**
 * The audit row: one per transaction (a request to BACEN and its response), the record BACEN requires
 * participants to keep. This list is the single definition: the Firehose JSON, the local Parquet files, the Glue
 * table columns in Terraform and docs/audit.md are derived from it or checked against it by tests.
 *
 * Types are the Glue/Athena (Hive) types; `parquet` is what the local DuckDB writer uses for the same column.
 */

export type AuditColumnType = 'string' | 'timestamp' | 'int' | 'bigint' | 'double' | 'boolean'

export interface AuditColumn {
  readonly name: string
  readonly type: AuditColumnType
  /** Always present (the rest may be null, e.g. the response of a call that failed before any answer). */
  readonly required: boolean
  readonly description: string
}

const col = (name: string, type: AuditColumnType, required: boolean, description: string): AuditColumn =>
  Object.freeze({ name, type, required, description })

export const AUDIT_COLUMNS: readonly AuditColumn[] = Object.freeze([
  col('id', 'string', true, 'Unique id of the transaction (UUID v7, time-ordered); delivery is at least once, so deduplicate on it'),
  col('request_date', 'timestamp', true, 'When the proxy received the request (UTC, millisecond precision); partitions derive from it'),
  col('system', 'string', true, 'spi or dict'),
  col('request_method', 'string', true, 'HTTP method sent to BACEN'),
  col('request_path', 'string', true, 'Path sent to BACEN, without the query string'),
  col('request_query', 'string', false, 'Query string sent to BACEN, without the leading ?'),
  col('request_header', 'string', true, 'JSON object of the request headers sent to BACEN (allowlisted; never credentials)'),
  col('request_body', 'string', false, 'The request body exactly as sent to BACEN (the signed XML; multipart bodies whole)'),
  col('message_type', 'string', false, 'SPI MsgDefIdr (e.g. pacs.008.spi.1.13) or DICT request root element (e.g. CreateEntryRequest); for an ICOM stream read, the types of the messages the page delivered (stream read, or stream end, when it delivered none); comma-separated when several'),
  col('biz_msg_id', 'string', false, 'SPI AppHdr/BizMsgIdr of the messages sent, or delivered by a stream read; comma-separated when several'),
  col('end_to_end_ids', 'string', false, 'SPI EndToEndIds and OrgnlEndToEndIds of the messages sent, or delivered by a stream read; comma-separated'),
  col('dict_request_id', 'string', false, 'DICT RequestId (idempotency key) when the body has one'),
  col('dict_key', 'string', false, 'DICT key the operation is about, when there is one'),
  col('response_status_code', 'int', false, 'HTTP status from BACEN; null when no response arrived'),
  col('response_header', 'string', false, 'JSON object of BACEN\'s response headers (allowlisted)'),
  col('response_body', 'string', false, 'BACEN\'s response body after decompression'),
  col('response_signature_valid', 'boolean', false, 'Whether BACEN\'s response signature verified; null when the body is unsigned'),
  col('response_signature_code', 'string', false, 'Verification code (VALID, DIGEST_MISMATCH, CERT_EXPIRED, NOT_APPLICABLE when BACEN signs nothing in the answer, …)'),
  col('error_code', 'string', false, 'PIXPROXY_ERR_* code when the call failed (timeout, unreachable, rejected signature); PIXPROXY_ERR_AUDIT_INCOMPLETE when the process died before the outcome was known'),
  col('upstream_latency_ms', 'double', false, 'Time from sending to BACEN to the last byte of its response'),
  col('total_latency_ms', 'double', false, 'Time from receiving the caller\'s request to answering it'),
  col('correlation_id', 'string', true, 'The proxy\'s request id (x-request-id), also in its logs'),
  col('instance_id', 'string', true, 'The proxy instance (ECS task) that handled the transaction'),
  col('trace_id', 'string', false, 'Trace id (32 hex digits) of the W3C traceparent the caller sent, or of the trace the proxy started when it sent none or an invalid one; also in the proxy\'s logs (traceId). Null in rows from before it was recorded')
])

/** A row as it travels (Firehose JSON) and lands (Parquet). Timestamps are ISO-8601 UTC strings. */
export interface AuditRow {
  id: string
  request_date: string
  system: 'spi' | 'dict' | 'gateway'
  request_method: string
  request_path: string
  request_query: string | null
  request_header: string
  request_body: string | null
  message_type: string | null
  biz_msg_id: string | null
  end_to_end_ids: string | null
  dict_request_id: string | null
  dict_key: string | null
  response_status_code: number | null
  response_header: string | null
  response_body: string | null
  response_signature_valid: boolean | null
  response_signature_code: string | null
  error_code: string | null
  upstream_latency_ms: number | null
  total_latency_ms: number | null
  correlation_id: string
  instance_id: string
  trace_id: string | null
}

/** Partition columns (Hive layout year=/month=/day=/hour=, zero-padded, UTC) derived from request_date. */
export const PARTITION_KEYS = Object.freeze(['year', 'month', 'day', 'hour'] as const)

export function partitionOf (requestDate: string): Record<(typeof PARTITION_KEYS)[number], string> {
  const d = new Date(requestDate)
  const p = (n: number): string => String(n).padStart(2, '0')
  return { year: String(d.getUTCFullYear()), month: p(d.getUTCMonth() + 1), day: p(d.getUTCDate()), hour: p(d.getUTCHours()) }
}

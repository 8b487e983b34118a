/**
 * The gateway's audit row (`pix-proxy gateway`: one row per inbound Open Finance call) and how it travels through
 * the same spool and pipeline as the PIX transaction's row.
 *
 * The spool, its replay and the pipeline know one row shape (AUDIT_COLUMNS: a request half made durable before the
 * call goes on, a response half appended when it ends). A gateway call has the same two halves, so it travels as
 * such a row with `system = 'gateway'` (`gatewayRequestHalf`, `gatewayResponseHalf`), and the sinks turn it into
 * the gateway's own columns (`gatewayRowOf`) just before it leaves: its own Parquet directory (`log/gateway/…`),
 * Firehose stream and Glue table. The carrier columns are an internal encoding of the spool, never a table.
 */
import { Errors } from '../../core/errors.ts'
import type { AuditColumn, AuditColumnType, AuditRow } from './schema.ts'

interface ColumnSpec { readonly type: AuditColumnType, readonly required: boolean, readonly description: string }
const c = <T extends AuditColumnType, R extends boolean>(type: T, required: R, description: string): { readonly type: T, readonly required: R, readonly description: string } =>
  ({ type, required, description })

/**
 * The one definition of the gateway's row: name, type, nullability and description of each column, in table order.
 * GATEWAY_COLUMNS and every row type below are derived from it, so the columns and the types cannot drift.
 */
const GATEWAY_COLUMN_SPEC = {
  id: c('string', true, 'Unique id of the call (x-request-id sent to the backend); deduplicate on it'),
  request_date: c('timestamp', true, 'When the gateway received the request (UTC, millisecond precision)'),
  client_subject: c('string', false, 'Subject DN of the client certificate'),
  client_serial: c('string', false, 'Serial number of the client certificate'),
  client_thumbprint: c('string', false, 'base64url SHA-256 of the client certificate\'s DER (RFC 8705 x5t#S256)'),
  client_cnpj: c('string', false, 'CNPJ from the ICP-Brasil certificate'),
  client_organisation_id: c('string', false, 'Open Finance organisation id from the certificate'),
  client_software_statement_id: c('string', false, 'Open Finance software statement id from the certificate'),
  route: c('string', false, 'The allowlist pattern that matched, or null'),
  method: c('string', true, 'HTTP method'),
  path: c('string', true, 'Request path'),
  status: c('int', false, 'HTTP status answered to the client'),
  error_code: c('string', false, 'Error code when the call was refused or failed'),
  latency_ms: c('double', false, 'Time from request to response'),
  request_bytes: c('bigint', false, 'Bytes of the request body'),
  response_bytes: c('bigint', false, 'Bytes of the response body'),
  instance_id: c('string', true, 'The gateway instance (ECS task)')
} as const satisfies Record<string, ColumnSpec>

type Spec = typeof GATEWAY_COLUMN_SPEC
type TsType<T extends AuditColumnType> = T extends 'int' | 'bigint' | 'double' ? number : T extends 'boolean' ? boolean : string

/** The gateway table's columns, in order (the Glue table `gateway` in infra/terraform/modules/data_lake). */
export const GATEWAY_COLUMNS: readonly AuditColumn[] = Object.freeze(Object.entries(GATEWAY_COLUMN_SPEC)
  .map(([name, { type, required, description }]): AuditColumn => Object.freeze({ name, type, required, description })))

/** One gateway call as stored (Parquet, Firehose JSON). Null status: the gateway died before the call ended. */
export type GatewayStoredRow = { [K in keyof Spec]: TsType<Spec[K]['type']> | (Spec[K]['required'] extends true ? never : null) }

/** Columns every call that ended has, though a stored row may lack them (a crash cut the call short). */
type EndedKeys = 'status' | 'latency_ms' | 'request_bytes' | 'response_bytes'

/** One gateway call once it ended, as the gateway writes it: the stored row, with what an ended call always has. */
export type GatewayCallRow = Omit<GatewayStoredRow, EndedKeys> & { [K in EndedKeys]: NonNullable<GatewayStoredRow[K]> }

type EndKeys = 'status' | 'error_code' | 'latency_ms' | 'response_bytes'

/** What is known when the call is admitted, before it goes to the backend. */
export type GatewayCallStart = Readonly<Omit<GatewayCallRow, EndKeys>>

/** What is known when it ended. */
export type GatewayCallEnd = Readonly<Pick<GatewayCallRow, EndKeys>>

const CLIENT_KEYS = ['client_subject', 'client_serial', 'client_thumbprint', 'client_cnpj', 'client_organisation_id',
  'client_software_statement_id', 'route', 'request_bytes'] as const

/** The request half of the carrier row (see the file header): client identity, route and size as JSON. */
export function gatewayRequestHalf (s: GatewayCallStart): Pick<AuditRow, 'id' | 'request_date' | 'system' | 'request_method' | 'request_path' | 'request_header' | 'correlation_id' | 'instance_id'> {
  const carried: Record<string, unknown> = {}
  for (const k of CLIENT_KEYS) carried[k] = s[k]
  return {
    id: s.id,
    request_date: s.request_date,
    system: 'gateway',
    request_method: s.method,
    request_path: s.path,
    request_header: JSON.stringify(carried),
    correlation_id: s.id,
    instance_id: s.instance_id
  }
}

/** The response half of the carrier row. */
export function gatewayResponseHalf (e: GatewayCallEnd): Pick<AuditRow, 'response_status_code' | 'response_header' | 'error_code' | 'total_latency_ms'> {
  return {
    response_status_code: e.status,
    response_header: JSON.stringify({ response_bytes: e.response_bytes }),
    error_code: e.error_code,
    total_latency_ms: Math.round(e.latency_ms * 1000) / 1000
  }
}

function parsed (json: string | null): Record<string, unknown> {
  if (json === null) return {}
  try {
    const v = JSON.parse(json) as unknown
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : {}
  } catch {
    return {}
  }
}

const str = (v: unknown): string | null => typeof v === 'string' ? v : null
const int = (v: unknown): number | null => Number.isSafeInteger(v) ? v as number : null

/**
 * The gateway row a carrier row stands for, columns in GATEWAY_COLUMNS order. A carrier whose response half never
 * came (the process died mid-call) has a null status and `PIXPROXY_ERR_AUDIT_INCOMPLETE`, as mergeRow gives it.
 */
function gatewayRowOf (row: AuditRow): GatewayStoredRow {
  const req = parsed(row.request_header)
  const res = parsed(row.response_header)
  return {
    id: row.id,
    request_date: row.request_date,
    client_subject: str(req.client_subject),
    client_serial: str(req.client_serial),
    client_thumbprint: str(req.client_thumbprint),
    client_cnpj: str(req.client_cnpj),
    client_organisation_id: str(req.client_organisation_id),
    client_software_statement_id: str(req.client_software_statement_id),
    route: str(req.route),
    method: row.request_method,
    path: row.request_path,
    status: row.response_status_code,
    error_code: row.error_code ?? (row.response_status_code === null ? Errors.AUDIT_INCOMPLETE.code : null),
    latency_ms: row.total_latency_ms,
    request_bytes: int(req.request_bytes),
    response_bytes: int(res.response_bytes),
    instance_id: row.instance_id
  }
}

/** The columns and values a sink stores for `row`: the gateway's for a gateway carrier, the row's own otherwise. */
export function storedColumns (row: AuditRow, audit: readonly AuditColumn[]): { columns: readonly AuditColumn[], values: Record<string, unknown> } {
  return row.system === 'gateway'
    ? { columns: GATEWAY_COLUMNS, values: gatewayRowOf(row) as unknown as Record<string, unknown> }
    : { columns: audit, values: row as unknown as Record<string, unknown> }
}

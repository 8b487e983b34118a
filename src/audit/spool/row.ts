/**
 * A row's two halves as the spool takes them: which columns each half holds, their validation against the schema
 * (before the request is sent), the row they make, in schema order, and the spool's record of a row (Tx).
 */
import { Errors, PixProxyError } from '../../../core/errors.ts'
import { AUDIT_COLUMNS } from '../schema.ts'
import type { AuditColumn, AuditRow } from '../schema.ts'
import type { Loc } from './files.ts'

/** Columns only known once the call ended; end() sets them. Every other column is the request half. */
export const RESPONSE_COLUMNS = Object.freeze([
  'response_status_code', 'response_header', 'response_body', 'response_signature_valid', 'response_signature_code',
  'error_code', 'upstream_latency_ms', 'total_latency_ms'
] as const)
type ResponseColumn = (typeof RESPONSE_COLUMNS)[number]
/**
 * Request columns the response half may also carry, when only the answer holds them: the messages an ICOM stream
 * page delivered (their types, BizMsgIdrs, EndToEndIds). Given in end(), they take the place of the request half's
 * values in the row; omitted, the request half's stand.
 */
export const RESPONSE_FACT_COLUMNS = Object.freeze(['message_type', 'biz_msg_id', 'end_to_end_ids'] as const)
type ResponseFactColumn = (typeof RESPONSE_FACT_COLUMNS)[number]
/** Request columns begin() requires (the rest of the request half may be omitted or null). */
export const REQUIRED_REQUEST_COLUMNS = Object.freeze([
  'id', 'request_date', 'system', 'request_method', 'request_path', 'request_header', 'correlation_id', 'instance_id'
] as const)
type RequiredRequestColumn = (typeof REQUIRED_REQUEST_COLUMNS)[number]
type OptionalRequestColumn = Exclude<keyof AuditRow, ResponseColumn | RequiredRequestColumn>

/** What is known before the message leaves: written by begin(). */
export type AuditRequestHalf = Pick<AuditRow, RequiredRequestColumn> & Partial<Pick<AuditRow, OptionalRequestColumn>>
/** What is known when the call ended (answer, failure or timeout): written by end(). */
export type AuditResponseHalf = Partial<Pick<AuditRow, ResponseColumn | ResponseFactColumn>>

const COLUMN_BY_NAME = new Map(AUDIT_COLUMNS.map((c) => [c.name, c]))
const RESPONSE_SET: ReadonlySet<string> = new Set(RESPONSE_COLUMNS)
export const REQUEST_NAMES = AUDIT_COLUMNS.map((c) => c.name).filter((n) => !RESPONSE_SET.has(n))
const RESPONSE_FACT_SET: ReadonlySet<string> = new Set(RESPONSE_FACT_COLUMNS)
export const RESPONSE_NAMES: readonly string[] = [...RESPONSE_COLUMNS, ...RESPONSE_FACT_COLUMNS]
const REQUIRED_SET: ReadonlySet<string> = new Set(REQUIRED_REQUEST_COLUMNS)
/** Ids name parked files, so they must be safe file names; UUIDs are. */
export const ID_RE = /^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$/
const TIMESTAMP_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/
const INT32 = 2 ** 31

function badValue (c: AuditColumn, v: unknown): string | null {
  switch (c.type) {
    case 'string': return typeof v === 'string' ? null : 'not a string'
    case 'timestamp': return typeof v === 'string' && TIMESTAMP_RE.test(v) && !Number.isNaN(Date.parse(v)) ? null : 'not an ISO-8601 UTC timestamp'
    case 'int': return Number.isInteger(v) && Math.abs(v as number) < INT32 ? null : 'not a 32-bit integer'
    case 'bigint': return Number.isSafeInteger(v) ? null : 'not an integer'
    case 'double': return typeof v === 'number' && Number.isFinite(v) ? null : 'not a finite number'
    case 'boolean': return typeof v === 'boolean' ? null : 'not a boolean'
  }
}

/**
 * Checks one half against the schema (types, required columns, no foreign keys) so that a row no sink could
 * take is refused before its request is sent, not discovered when shipping. Returns the half with every one of
 * its columns present (null when omitted).
 */
export function validateHalf (id: string, input: object, names: readonly string[], half: string): Record<string, unknown> {
  const given = input as Record<string, unknown>
  for (const k of Object.keys(given)) {
    if (!names.includes(k)) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, `${k} is not a column of the ${half} half`])
  }
  const out: Record<string, unknown> = {}
  for (const name of names) {
    const c = COLUMN_BY_NAME.get(name) as AuditColumn
    const v = given[name] ?? null
    if (v === null) {
      if (REQUIRED_SET.has(name)) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, `${name} is required`])
    } else {
      const bad = badValue(c, v)
      if (bad !== null) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, `${name} is ${bad}`])
    }
    out[name] = v
  }
  return out
}

/** The row in schema order with every column present; a row without its response half is INCOMPLETE. */
export function mergeRow (req: Record<string, unknown>, res: Record<string, unknown> | null): AuditRow {
  const out: Record<string, unknown> = {}
  for (const c of AUDIT_COLUMNS) {
    out[c.name] = (RESPONSE_SET.has(c.name)
      ? res?.[c.name]
      : (RESPONSE_FACT_SET.has(c.name) ? res?.[c.name] ?? req[c.name] : req[c.name])) ?? null
  }
  if (res === null) out['error_code'] = Errors.AUDIT_INCOMPLETE.code
  return out as unknown as AuditRow
}

/**
 * A parked row in schema order with every column present: one parked before a column was added (trace_id) has it
 * null, as a row replayed from older frames does (mergeRow).
 */
export function everyColumn (row: Record<string, unknown>): AuditRow {
  const out: Record<string, unknown> = {}
  for (const c of AUDIT_COLUMNS) out[c.name] = row[c.name] ?? null
  return out as unknown as AuditRow
}

export interface Tx {
  readonly id: string
  /** Wall-clock ms of begin(), for the shipping-lag metric (survives restarts: it is in the frame). */
  readonly t: number
  begin: Loc | null
  end: Loc | null
  ended: boolean
  state: 'open' | 'ready' | 'taken' | 'parked'
  bytes: number
  readyAt: number
  /** Segments holding this row's frames; each counts the row until it is acked or parked. */
  segs: number[]
  parkedPath: string | null
  parkedBytes: number
  /**
   * The validated halves, kept in memory until the row ships so the pipeline need not read and parse its frames
   * back (measured: about half the audit path's CPU per row). Null when the memory bound was reached, or after a
   * replay: load() then reads the disk, which stays the record either way.
   */
  mem: { readonly r: Record<string, unknown>, f: Record<string, unknown> | null, bytes: number } | null
}

/**
 * SQL over the local audit store: `queryAudit(dir, sql)` opens a throw-away in-memory DuckDB, defines the view
 * `audit` over the PIX rows under `<dir>/log/spi/` and `log/dict/` and the view `gateway` over the gateway's rows
 * (`log/gateway/`, its own columns: src/audit/gateway.ts), runs one read-only statement and yields its rows as plain JSON values.
 *
 * The view joins, by column name, the Parquet files ParquetSink writes and the JSON-lines objects the local AWS
 * endpoint writes for rows that went through Firehose (same `log/<system>/year=/month=/day=/hour=/` layout), both
 * read with the schema's column types (JSON timestamps with an offset become the UTC instant Parquet holds), so
 * the two are queried the same way. The session's time zone is UTC whatever the machine's. The partition columns year, month, day
 * and hour are zero-padded strings (`WHERE year = '2026' AND month = '05'`); a WHERE on them skips the other
 * partitions' files without opening them.
 *
 * Parquet files are read with the schema of the first file found and columns are picked by name: a store holding
 * files written before a column was added to AUDIT_COLUMNS needs `unionByName` (every file's footer is then read
 * up front, which costs partition pruning its benefit of not opening files).
 *
 * The statement is confined: it must be one statement that parses as a query (SELECT, WITH, FROM, VALUES,
 * DESCRIBE, SUMMARIZE, SHOW), and before it runs external access is switched off (only `<dir>/log/` stays
 * readable) and the configuration locked, so a query cannot read other files, reach the network, attach
 * databases, load extensions or write anything.
 *
 * JSON values: integers (BIGINT, HUGEINT, …) and DECIMALs are numbers when they fit a double's 53-bit integer range
 * exactly and decimal strings otherwise (`count(*)` is a number; a 20-digit sum is a string, never a rounded
 * number); non-finite doubles are the strings `NaN`, `Infinity`, `-Infinity`; timestamps are ISO-8601 UTC strings
 * (`2026-05-06T07:08:09.010Z`, more fraction digits only when the value has them); dates are `YYYY-MM-DD`; BLOBs
 * are base64; lists, structs and maps follow @duckdb/node-api's JSON conversion.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import {
  DuckDBInstance,
  DuckDBTypeId,
  JsonDuckDBValueConverter,
  StatementType
} from '@duckdb/node-api'
import type {
  DuckDBBlobValue,
  DuckDBConnection,
  DuckDBDecimalValue,
  DuckDBTimestampMillisecondsValue,
  DuckDBTimestampNanosecondsValue,
  DuckDBTimestampSecondsValue,
  DuckDBTimestampValue,
  DuckDBValueConverter,
  Json
} from '@duckdb/node-api'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { DUCKDB_TYPES, quoteLiteral } from '../../src/audit/parquet.ts'
import { AUDIT_COLUMNS, PARTITION_KEYS } from '../../src/audit/schema.ts'
import type { AuditColumn } from '../../src/audit/schema.ts'
import { GATEWAY_COLUMNS } from '../../src/audit/gateway.ts'

/** A row of a query result, as JSON.stringify prints it. */
export type AuditJson = Json

export interface AuditQueryOptions {
  /**
   * Read Parquet files by column name across differing schemas (files from before a column was added get NULL
   * in it). Reads every file's footer before the query runs. Default false.
   */
  readonly unionByName?: boolean
  /** DuckDB worker threads. Default: DuckDB's (one per core); a query is a foreground task. */
  readonly threads?: number
}

const ALLOWED = 'SELECT, WITH, FROM, VALUES, DESCRIBE, SUMMARIZE or SHOW'
const SAFE = BigInt(Number.MAX_SAFE_INTEGER)
/** Large enough for a row of two 16 MiB bodies with JSON escaping (read_json refuses larger objects). */
const MAX_JSON_OBJECT_BYTES = 128 * 1024 * 1024

/**
 * Runs `sql` against the view `audit` over the store at `dir` and yields each result row as an object of JSON
 * values (see the file header for the conversions). Columns with the same name get DuckDB's deduplicated names
 * (`a`, `a:1`). DuckDB and its temporary directory are closed and removed when the iteration ends, also early.
 * @throws PixProxyError AUDIT_QUERY_REFUSED for anything but one read-only statement; AUDIT_QUERY_FAILED for
 *   SQL DuckDB rejects or cannot run (syntax, unknown column, unreadable file); AUDIT_STORE_OPEN when `dir` is
 *   not a directory or DuckDB cannot start.
 */
export async function * queryAudit (dir: string, sql: string, opts: AuditQueryOptions = {}): AsyncGenerator<Record<string, AuditJson>> {
  const root = resolve(dir)
  const info = await stat(root).catch((err: NodeJS.ErrnoException) => {
    throw new PixProxyError(Errors.AUDIT_STORE_OPEN, [root, err.code ?? err.message], { cause: err })
  })
  if (!info.isDirectory()) throw new PixProxyError(Errors.AUDIT_STORE_OPEN, [root, 'not a directory'])

  // DuckDB may spill large sorts and joins to disk: into a private directory, not the working directory.
  const spill = await mkdtemp(join(tmpdir(), 'pix-proxy-audit-query-'))
  let instance: DuckDBInstance | undefined
  let connection: DuckDBConnection | undefined
  try {
    let conn: DuckDBConnection
    try {
      instance = await DuckDBInstance.create(':memory:', {
        temp_directory: spill,
        autoinstall_known_extensions: 'false',
        autoload_known_extensions: 'false',
        ...(opts.threads === undefined ? {} : { threads: String(opts.threads) })
      })
      conn = connection = await instance.connect()
    } catch (err) {
      throw new PixProxyError(Errors.AUDIT_STORE_OPEN, [root, (err as Error).message], { cause: err })
    }
    await assertReadOnlyQuery(conn, sql)
    const logDir = join(root, 'log')
    const result = await duck(async () => {
      await conn.run(`CREATE VIEW audit AS ${await auditViewSql(conn, logDir, opts.unionByName === true, AUDIT_COLUMNS, ['spi', 'dict'])}`)
      await conn.run(`CREATE VIEW gateway AS ${await auditViewSql(conn, logDir, opts.unionByName === true, GATEWAY_COLUMNS, ['gateway'])}`)
      // Results never depend on the machine's zone (the JSON timestamps above, TIMESTAMPTZ casts, now()).
      await conn.run('SET TimeZone = \'UTC\'')
      await conn.run(`SET allowed_directories = [${quoteLiteral(logDir + '/')}]`)
      await conn.run('SET enable_external_access = false')
      await conn.run('SET lock_configuration = true')
      const prepared = await (await conn.extractStatements(sql)).prepare(0)
      // The parser check (assertReadOnlyQuery) decides; this is the binder's view of the same statement.
      if (prepared.statementType !== StatementType.SELECT) throw refused(sql)
      return await prepared.stream()
    })
    const names = result.deduplicatedColumnNames()
    const rows = result.yieldConvertedRows(toJson)
    for (;;) {
      const next = await duck(async () => await rows.next())
      if (next.done === true) break
      for (const values of next.value) {
        // A null-prototype object: a column named __proto__ is data like any other.
        const row: Record<string, AuditJson> = Object.create(null) as Record<string, AuditJson>
        names.forEach((n, i) => { row[n] = values[i] ?? null })
        yield row
      }
    }
  } finally {
    // Also when the caller stops early: the result still streaming goes with its connection.
    connection?.closeSync()
    instance?.closeSync()
    await rm(spill, { recursive: true, force: true })
  }
}

/** DuckDB's errors (syntax, binding, I/O during the scan) as AUDIT_QUERY_FAILED; our own pass through. */
async function duck<T> (fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof PixProxyError) throw err
    throw new PixProxyError(Errors.AUDIT_QUERY_FAILED, [(err as Error).message], { cause: err })
  }
}

function refused (sql: string): PixProxyError {
  const head = /^\s*(?:(?:--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)\s*)*\(*\s*([A-Za-z_]+)/.exec(sql)?.[1]?.toUpperCase()
  return new PixProxyError(Errors.AUDIT_QUERY_REFUSED, [`only one read-only statement (${ALLOWED}) may run${head === undefined ? '' : `, not ${head}`}`])
}

/**
 * Refuses anything but exactly one statement that DuckDB's parser reads as a query, before any file is opened:
 * COPY, ATTACH, INSTALL, LOAD, PRAGMA, SET, CALL, EXPORT, CREATE, INSERT and the rest are not queries, and a second
 * statement is refused even when it is one. The parser, not a keyword list, decides, so comments, parentheses and
 * case cannot smuggle a statement past it.
 * @throws PixProxyError AUDIT_QUERY_REFUSED, or AUDIT_QUERY_FAILED for a syntax error.
 */
async function assertReadOnlyQuery (conn: DuckDBConnection, sql: string): Promise<void> {
  if (sql.trim() === '') throw new PixProxyError(Errors.AUDIT_QUERY_REFUSED, ['the query is empty'])
  const reader = await duck(async () => await conn.runAndReadAll('SELECT json_serialize_sql($1::VARCHAR)', [sql]))
  const parsed = JSON.parse(String(reader.getRows()[0]?.[0])) as { error: boolean, error_type?: string, error_message?: string, statements?: unknown[] }
  if (parsed.error && parsed.error_type === 'parser') throw new PixProxyError(Errors.AUDIT_QUERY_FAILED, [parsed.error_message ?? 'syntax error'])
  if (parsed.error) throw refused(sql)
  const count = parsed.statements?.length ?? 0
  if (count === 0) throw new PixProxyError(Errors.AUDIT_QUERY_REFUSED, ['the query is empty'])
  if (count !== 1) throw new PixProxyError(Errors.AUDIT_QUERY_REFUSED, [`one statement at a time, not ${count}`])
  // The statement splitter that prepares it must see the same single statement.
  if ((await duck(async () => await conn.extractStatements(sql))).count !== 1) throw refused(sql)
}

const HIVE_TYPES = `{${PARTITION_KEYS.map((k) => `'${k}': VARCHAR`).join(', ')}}`

/**
 * A view's query over the files of `systems` (each its own `log/<system>/` directory): Parquet and JSON lines where
 * there are files of each, an empty typed relation where none. The PIX systems and the gateway have different
 * columns, so each view globs only its own directories.
 */
async function auditViewSql (conn: DuckDBConnection, logDir: string, unionByName: boolean, columns: readonly AuditColumn[], systems: readonly string[]): Promise<string> {
  const present = async (p: string): Promise<boolean> =>
    Number((await conn.runAndReadAll(`SELECT count(*) FROM glob(${quoteLiteral(p)})`)).getRows()[0]?.[0]) > 0
  const patterns = async (ext: string): Promise<string> => {
    const found: string[] = []
    for (const s of systems) {
      const p = join(logDir, s, '*', '*', '*', '*', `*.${ext}`)
      if (await present(p)) found.push(quoteLiteral(p))
    }
    return found.length === 0 ? '' : `[${found.join(', ')}]`
  }
  const parts: string[] = []
  const parquet = await patterns('parquet')
  if (parquet !== '') {
    parts.push(`SELECT ${[...columns.map((c) => `"${c.name}"`), ...PARTITION_KEYS].join(', ')} FROM read_parquet(${parquet}, hive_partitioning = true, ` +
      `hive_types = ${HIVE_TYPES}, union_by_name = ${String(unionByName)})`)
  }
  const json = await patterns('json')
  if (json !== '') {
    // A JSON timestamp is text that may carry an offset (`…-03:00`): a cast to TIMESTAMP would drop the offset and
    // keep the local wall time, so it is read as TIMESTAMPTZ and turned into UTC wall time, as Parquet holds it.
    const types = `{${columns.map((c) => `'${c.name}': '${c.type === 'timestamp' ? 'TIMESTAMPTZ' : DUCKDB_TYPES[c.type]}'`).join(', ')}}`
    const projection = [...columns.map((c) => c.type === 'timestamp' ? `timezone('UTC', "${c.name}") AS "${c.name}"` : `"${c.name}"`), ...PARTITION_KEYS]
    parts.push(`SELECT ${projection.join(', ')} FROM read_json(${json}, format = 'newline_delimited', ` +
      `columns = ${types}, hive_partitioning = true, hive_types = ${HIVE_TYPES}, maximum_object_size = ${MAX_JSON_OBJECT_BYTES})`)
  }
  if (parts.length === 0) {
    const cols = [...columns.map((c) => `CAST(NULL AS ${DUCKDB_TYPES[c.type]}) AS "${c.name}"`), ...PARTITION_KEYS.map((k) => `CAST(NULL AS VARCHAR) AS ${k}`)]
    return `SELECT ${cols.join(', ')} WHERE false`
  }
  return parts.join(' UNION ALL BY NAME ')
}

function integerJson (v: bigint): number | string {
  return v <= SAFE && v >= -SAFE ? Number(v) : v.toString()
}

/** Microseconds since the epoch as ISO-8601 UTC: milliseconds always, sub-millisecond digits only when present. */
function isoFromMicros (micros: bigint): string {
  const rem = ((micros % 1000n) + 1000n) % 1000n
  const date = new Date(Number((micros - rem) / 1000n))
  if (Number.isNaN(date.getTime())) return micros > 0n ? 'infinity' : '-infinity'
  const iso = date.toISOString()
  return rem === 0n ? iso : iso.replace('Z', `${rem.toString().padStart(3, '0').replace(/0+$/, '')}Z`)
}

const toJson: DuckDBValueConverter<AuditJson> = (value, type, converter) => {
  if (value === null) return null
  switch (type.typeId) {
    case DuckDBTypeId.TINYINT: case DuckDBTypeId.SMALLINT: case DuckDBTypeId.INTEGER:
    case DuckDBTypeId.UTINYINT: case DuckDBTypeId.USMALLINT: case DuckDBTypeId.UINTEGER:
      return value as number
    case DuckDBTypeId.BIGINT: case DuckDBTypeId.UBIGINT: case DuckDBTypeId.HUGEINT:
    case DuckDBTypeId.UHUGEINT: case DuckDBTypeId.BIGNUM:
      return integerJson(value as bigint)
    case DuckDBTypeId.DECIMAL: {
      const d = value as DuckDBDecimalValue
      return d.value <= SAFE && d.value >= -SAFE ? Number(d.toString()) : d.toString()
    }
    case DuckDBTypeId.FLOAT: case DuckDBTypeId.DOUBLE: {
      const n = value as number
      return Number.isFinite(n) ? n : String(n)
    }
    case DuckDBTypeId.TIMESTAMP: case DuckDBTypeId.TIMESTAMP_TZ:
      return isoFromMicros((value as DuckDBTimestampValue).micros)
    case DuckDBTypeId.TIMESTAMP_MS:
      return isoFromMicros((value as DuckDBTimestampMillisecondsValue).millis * 1000n)
    case DuckDBTypeId.TIMESTAMP_S:
      return isoFromMicros((value as DuckDBTimestampSecondsValue).seconds * 1_000_000n)
    case DuckDBTypeId.TIMESTAMP_NS: {
      const nanos = (value as DuckDBTimestampNanosecondsValue).nanos
      return isoFromMicros((nanos - (((nanos % 1000n) + 1000n) % 1000n)) / 1000n)
    }
    case DuckDBTypeId.BLOB:
      return Buffer.from((value as DuckDBBlobValue).bytes).toString('base64')
    default:
      // Lists, structs, maps and unions recurse through this converter; the rest (VARCHAR, DATE, TIME, UUID,
      // INTERVAL, …) take node-api's JSON form.
      return JsonDuckDBValueConverter(value, type, converter)
  }
}

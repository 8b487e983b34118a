/**
 * The local audit sink: with no Firehose configured, rows land as Parquet files under
 * `<dir>/log/<system>/year=YYYY/month=MM/day=DD/hour=HH/<system>-<time>-<uuid>.parquet`, the layout of the S3
 * prefixes Firehose writes (`log/{spi,dict}/year=…/`), so `queryAudit` (query.ts) and Athena read both the same way.
 * Partitions come from each row's request_date in UTC (schema.ts `partitionOf`), not from when the row was written,
 * so a batch spanning an hour boundary becomes one file per partition.
 *
 * Batches should be large (5,000 rows by default): every write makes at least one file, and a store of many tiny
 * Parquet files is slow to query (each file costs a footer read and a scan set-up) and compresses worse.
 *
 * Durability: a file is written under a hidden temporary name in its partition directory, fsynced, renamed into
 * place and the directory fsynced, and only then does write() resolve. A crash therefore leaves either the whole
 * file or a `.…parquet.tmp` file that no query reads (the query glob matches `*.parquet` only); rows of an
 * unfinished write were not acknowledged, so the pipeline still holds them and writes them again.
 *
 * DuckDB encodes and compresses off the event loop (on one worker thread by default); what runs on the event
 * loop is checking rows and appending their values to DuckDB's in-memory table, done in slices of a few
 * milliseconds with a yield between them, so a large batch does not hold up the proxy's requests for its length.
 */
import { randomUUID } from 'node:crypto'
import { chmod, mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import { DuckDBInstance, DuckDBTimestampValue } from '@duckdb/node-api'
import type { DuckDBAppender, DuckDBConnection } from '@duckdb/node-api'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AUDIT_COLUMNS, partitionOf } from './schema.ts'
import { GATEWAY_COLUMNS, storedColumns } from './gateway.ts'
import type { AuditColumn, AuditColumnType, AuditRow } from './schema.ts'
import type { AuditSink, SinkResult } from './sink.ts'

/** DuckDB (and so Parquet) type of each schema type. TIMESTAMP holds UTC wall time, as Glue's `timestamp` does. */
export const DUCKDB_TYPES: Readonly<Record<AuditColumnType, string>> = Object.freeze({
  string: 'VARCHAR',
  timestamp: 'TIMESTAMP',
  int: 'INTEGER',
  bigint: 'BIGINT',
  double: 'DOUBLE',
  boolean: 'BOOLEAN'
})

/** The systems, which are also directory names: anything else is refused before it can name a path. */
const SYSTEMS: ReadonlySet<string> = new Set(['spi', 'dict', 'gateway'])

export const PARQUET_DEFAULT_BATCH_ROWS = 5_000
/** Rows are measured as their JSON (the pipeline's measure, sink.ts); this bounds one batch's memory. */
const PARQUET_DEFAULT_BATCH_BYTES = 128 * 1024 * 1024
/**
 * Parquet itself has no row limit; this only keeps a single row's memory bounded. It is far above two bodies of the
 * largest request the proxy accepts (PIXPROXY_MAX_BODY_BYTES, at most 16 MiB) with JSON escaping, so the pipeline
 * never has to shrink a row for this sink.
 */
const PARQUET_MAX_ROW_BYTES = 64 * 1024 * 1024
/** Most rows and bytes appended to DuckDB between two yields to the event loop (see ParquetSink#stage). */
const SLICE_ROWS = 100
const SLICE_BYTES = 512 * 1024

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/
const INT32_MIN = -(2 ** 31)
const INT32_MAX = 2 ** 31 - 1

export interface ParquetSinkOptions {
  /** Root of the audit store; files go under `<dir>/log/`. Created when missing. */
  readonly dir: string
  /** Default PARQUET_DEFAULT_BATCH_ROWS. */
  readonly maxBatchRows?: number
  /** Default PARQUET_DEFAULT_BATCH_BYTES. */
  readonly maxBatchBytes?: number
  /** Parquet compression codec. Default `zstd` (audit XML compresses far better with it than with snappy). */
  readonly compression?: 'zstd' | 'snappy' | 'gzip' | 'uncompressed'
  /** DuckDB worker threads. Default 1: encoding is background work and must not compete with the proxy. */
  readonly threads?: number
  /** DuckDB's memory_limit (default 64MB). */
  readonly memoryLimit?: string
}

const quoteIdent = (s: string): string => `"${s.replace(/"/g, '""')}"`

/**
 * Creates (or recreates, empty) the staging table each batch goes through. Recreated, not DELETEd: DuckDB keeps a
 * deleted in-memory table's blocks, so the process grew by ~10 KB per row written (measured: +145 MiB over 16,000
 * rows; flat with the table recreated).
 */
const stagingSql = (columns: readonly AuditColumn[]): string =>
  `CREATE OR REPLACE TABLE staging (${columns.map((c) => `${quoteIdent(c.name)} ${DUCKDB_TYPES[c.type]}${c.required ? ' NOT NULL' : ''}`).join(', ')})`
const CREATE_STAGING = stagingSql(AUDIT_COLUMNS)
/** The gateway's rows (system gateway, src/audit/gateway.ts) are stored with their own columns. */
const CREATE_GATEWAY_STAGING = stagingSql(GATEWAY_COLUMNS)
/** A SQL string literal; COPY's target cannot be a bound parameter. */
export const quoteLiteral = (s: string): string => `'${s.replace(/'/g, "''")}'`

/** fsync of a file or a directory (on Linux a read-only descriptor is enough for both). */
async function fsyncPath (path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

interface Group {
  readonly system: string
  readonly partition: Record<'year' | 'month' | 'day' | 'hour', string>
  readonly indexes: number[]
  readonly micros: bigint[]
  readonly sizes: number[]
}

/**
 * Why a row cannot be stored (null when it can). Only what Parquet cannot represent or the layout needs is
 * checked: a row refused here stays failed on every retry, so the check must never be stricter than necessary.
 */
export function invalidReason (row: AuditRow): string | null {
  const r = row as unknown as Record<string, unknown>
  if (!SYSTEMS.has(r.system as string)) return `system must be spi, dict or gateway, not ${show(r.system)}`
  const { columns, values } = storedColumns(row, AUDIT_COLUMNS)
  for (const c of columns) {
    const v = values[c.name]
    if (v === null || v === undefined) {
      if (c.required) return `${c.name} is required`
      continue
    }
    if (!valueFits(c.type, v)) {
      return c.type === 'timestamp'
        ? `${c.name} ${show(v)} is not an ISO-8601 timestamp with a zone`
        : `${c.name} must be ${c.type}, not ${typeof v} ${show(v)}`
    }
  }
  return null
}

/**
 * A row's size, near how the pipeline measures it (its JSON) but in O(1) per value: string lengths in UTF-16 units
 * plus an allowance per column, where building the JSON (or UTF-8 lengths) of a batch would cost the event loop
 * milliseconds. Non-ASCII text and JSON escaping make the real size larger; the limit it is checked against only
 * bounds memory, far above real rows.
 */
function rowSize (row: AuditRow): number {
  const r = row as unknown as Record<string, unknown>
  let n = 2
  for (const c of AUDIT_COLUMNS) {
    const v = r[c.name]
    n += c.name.length + 4 + (typeof v === 'string' ? v.length + 2 : 24)
  }
  return n
}

/** A value for a message: strings quoted and cut short (they may be whole bodies), objects only named. */
const show = (v: unknown): string =>
  typeof v === 'string' ? JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v) : v !== null && typeof v === 'object' ? 'object' : String(v)

function valueFits (type: AuditColumnType, v: unknown): boolean {
  switch (type) {
    case 'string': return typeof v === 'string'
    case 'timestamp': return typeof v === 'string' && ISO_UTC.test(v) && !Number.isNaN(Date.parse(v))
    case 'int': return Number.isInteger(v) && (v as number) >= INT32_MIN && (v as number) <= INT32_MAX
    case 'bigint': return typeof v === 'bigint' || Number.isSafeInteger(v)
    case 'double': return typeof v === 'number'
    case 'boolean': return typeof v === 'boolean'
  }
}

/** `micros` is request_date's, parsed once while grouping. */
function appendValue (a: DuckDBAppender, c: AuditColumn, v: unknown, micros: bigint): void {
  if (c.name === 'request_date') { a.appendTimestamp(new DuckDBTimestampValue(micros)); return }
  if (v === null || v === undefined) { a.appendNull(); return }
  switch (c.type) {
    case 'string': a.appendVarchar(v as string); return
    case 'timestamp': a.appendTimestamp(new DuckDBTimestampValue(BigInt(Date.parse(v as string)) * 1000n)); return
    case 'int': a.appendInteger(v as number); return
    case 'bigint': a.appendBigInt(BigInt(v as number | bigint)); return
    case 'double': a.appendDouble(v as number); return
    case 'boolean': a.appendBoolean(v as boolean)
  }
}

/** `20260506T070809Z`: file names sort by write time within a partition, as Firehose's do. */
const compactNow = (): string => new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')

/**
 * An AuditSink writing Parquet files through one embedded DuckDB instance (in memory; only the Parquet files
 * persist). Writes are serialised: one batch at a time goes through the instance's staging table.
 */
export class ParquetSink implements AuditSink {
  readonly name = 'parquet'
  readonly maxBatchRows: number
  readonly maxBatchBytes: number
  readonly maxRowBytes = PARQUET_MAX_ROW_BYTES
  /** Absolute root of the store. */
  readonly dir: string
  readonly #instance: DuckDBInstance
  readonly #conn: DuckDBConnection
  readonly #compression: string
  /** Partition directories made durable (fsynced up to the root) by this process. */
  readonly #durableDirs = new Set<string>()
  #queue: Promise<unknown> = Promise.resolve()
  #closed = false
  #closing: Promise<void> | null = null

  private constructor (dir: string, instance: DuckDBInstance, conn: DuckDBConnection, opts: ParquetSinkOptions) {
    this.dir = dir
    this.#instance = instance
    this.#conn = conn
    this.maxBatchRows = opts.maxBatchRows ?? PARQUET_DEFAULT_BATCH_ROWS
    this.maxBatchBytes = opts.maxBatchBytes ?? PARQUET_DEFAULT_BATCH_BYTES
    this.#compression = opts.compression ?? 'zstd'
  }

  /**
   * Creates `<dir>/log` when missing and starts the sink's DuckDB instance.
   * @throws PixProxyError AUDIT_STORE_OPEN when the directory cannot be created or DuckDB cannot start.
   */
  static async open (opts: ParquetSinkOptions): Promise<ParquetSink> {
    const dir = resolve(opts.dir)
    let instance: DuckDBInstance | undefined
    try {
      await mkdir(join(dir, 'log'), { recursive: true })
      // Audit rows hold names, tax ids and accounts: the files 0600 in 0700 directories, whatever the umask.
      await chmod(join(dir, 'log'), 0o700)
      await fsyncPath(join(dir, 'log'))
      await fsyncPath(dir)
      await fsyncPath(dirname(dir))
      instance = await DuckDBInstance.create(':memory:', {
        threads: String(opts.threads ?? 1),
        // DuckDB's default is 80 % of the machine's memory, which its buffer manager keeps once used; a batch of
        // rows needs a few MB (measured: RSS flat with 64 MB after the first batches).
        memory_limit: opts.memoryLimit ?? '64MB',
        // Everything needed (parquet) is built in; never reach for the network to fetch an extension.
        autoinstall_known_extensions: 'false',
        autoload_known_extensions: 'false'
      })
      const conn = await instance.connect()
      await conn.run(CREATE_STAGING)
      return new ParquetSink(dir, instance, conn, opts)
    } catch (err) {
      instance?.closeSync()
      throw new PixProxyError(Errors.AUDIT_STORE_OPEN, [dir, (err as Error).message], { cause: err })
    }
  }

  /**
   * Stores `rows` (any number) as one Parquet file per system and hour partition, durably (see the file header).
   * @returns indexes of rows not stored: rows the schema cannot hold (wrong type, missing required column, bad
   *   request_date or system) or larger than `maxRowBytes`, and rows of partitions whose file could not be written.
   * @throws PixProxyError AUDIT_PARQUET_WRITE when no row was stored because every file failed (disk full,
   *   permissions; the cause is the first failure); AUDIT_PARQUET_SINK_CLOSED after close.
   */
  async write (rows: readonly AuditRow[]): Promise<SinkResult> {
    if (this.#closed) throw new PixProxyError(Errors.AUDIT_PARQUET_SINK_CLOSED)
    const p = this.#queue.then(async () => await this.#write(rows))
    this.#queue = p.catch(() => {})
    return await p
  }

  /** Waits for the write in progress and queued ones, then closes DuckDB. Later writes throw. Idempotent. */
  async close (): Promise<void> {
    this.#closed = true
    this.#closing ??= this.#queue.then(() => {
      this.#conn.closeSync()
      this.#instance.closeSync()
    })
    await this.#closing
  }

  async #write (rows: readonly AuditRow[]): Promise<SinkResult> {
    const failed: number[] = []
    const groups = new Map<string, Group>()
    for (let i = 0; i < rows.length; i++) {
      // Checking and grouping 5,000 rows takes tens of milliseconds: in slices, like appending (#stage).
      if (i > 0 && i % SLICE_ROWS === 0) await yieldToEventLoop()
      const row = rows[i] as AuditRow
      const size = invalidReason(row) === null ? rowSize(row) : Infinity
      if (size > this.maxRowBytes) {
        failed.push(i)
        continue
      }
      const partition = partitionOf(row.request_date)
      const key = `${row.system}/${partition.year}/${partition.month}/${partition.day}/${partition.hour}`
      let g = groups.get(key)
      if (g === undefined) {
        g = { system: row.system, partition, indexes: [], micros: [], sizes: [] }
        groups.set(key, g)
      }
      g.indexes.push(i)
      g.micros.push(BigInt(Date.parse(row.request_date)) * 1000n)
      g.sizes.push(size)
    }
    let stored = 0
    let firstError: unknown = null
    for (const g of groups.values()) {
      try {
        await this.#writeGroup(rows, g)
        stored += g.indexes.length
      } catch (err) {
        firstError ??= err
        failed.push(...g.indexes)
      }
    }
    if (stored === 0 && firstError !== null) {
      throw new PixProxyError(Errors.AUDIT_PARQUET_WRITE, [this.dir, (firstError as Error).message], { cause: firstError })
    }
    return { failed: failed.sort((a, b) => a - b) }
  }

  async #writeGroup (rows: readonly AuditRow[], g: Group): Promise<void> {
    const p = g.partition
    const partDir = join(this.dir, 'log', g.system, `year=${p.year}`, `month=${p.month}`, `day=${p.day}`, `hour=${p.hour}`)
    const name = `${g.system}-${compactNow()}-${randomUUID()}`
    const tmp = join(partDir, `.${name}.parquet.tmp`)
    const final = join(partDir, `${name}.parquet`)
    try {
      // Leftovers of a write that failed half-way must never reach another file.
      await this.#conn.run(g.system === 'gateway' ? CREATE_GATEWAY_STAGING : CREATE_STAGING)
      await this.#stage(rows, g)
      await this.#ensureDurableDir(partDir)
      await this.#conn.run(`COPY staging TO ${quoteLiteral(tmp)} (FORMAT PARQUET, COMPRESSION ${this.#compression})`)
      await chmod(tmp, 0o600)
      await fsyncPath(tmp)
      await rename(tmp, final)
      await fsyncPath(partDir)
    } catch (err) {
      // The write failed and its rows are reported as failed; a temp file that cannot be removed is harmless
      // (queries never read it), so the original error is the one that matters.
      await rm(tmp, { force: true }).catch(() => {})
      throw err
    } finally {
      // Only frees memory early: the next write empties the table before using it anyway.
      await this.#conn.run(CREATE_STAGING).catch(() => {})
    }
  }

  /**
   * Appends the group's rows to the staging table. Appending and flushing run on the event loop, so they go in
   * slices (SLICE_ROWS rows or SLICE_BYTES bytes, whichever comes first), each flushed and followed by a yield:
   * measured, one slice of ~5 KB rows takes 1–4 ms here, where one flush of 5,000 rows took 18–35 ms.
   */
  async #stage (rows: readonly AuditRow[], g: Group): Promise<void> {
    const appender = await this.#conn.createAppender('staging')
    try {
      let sliceRows = 0
      let sliceBytes = 0
      for (let k = 0; k < g.indexes.length; k++) {
        const { columns, values } = storedColumns(rows[g.indexes[k] as number] as AuditRow, AUDIT_COLUMNS)
        for (const c of columns) appendValue(appender, c, values[c.name], g.micros[k] as bigint)
        appender.endRow()
        sliceBytes += g.sizes[k] as number
        if (++sliceRows >= SLICE_ROWS || sliceBytes >= SLICE_BYTES) {
          appender.flushSync()
          sliceRows = 0
          sliceBytes = 0
          await yieldToEventLoop()
        }
      }
      appender.flushSync()
    } finally {
      appender.closeSync()
    }
  }

  /**
   * Creates the partition directory and, the first time this process uses it, fsyncs it and every parent up to
   * the store's root, so that a file renamed into it cannot vanish with a directory entry lost in a crash.
   */
  async #ensureDurableDir (partDir: string): Promise<void> {
    if (this.#durableDirs.has(partDir)) return
    await mkdir(partDir, { recursive: true })
    for (let d = partDir; d.length >= this.dir.length; d = dirname(d)) {
      if (d !== this.dir) await chmod(d, 0o700)
      await fsyncPath(d)
      if (d === this.dir) break
    }
    this.#durableDirs.add(partDir)
  }
}

/**
 * The schema table of docs/audit.md, rendered from AUDIT_COLUMNS (test/audit/schema.test.ts keeps the two in step).
 */
export function renderAuditColumnsTable (): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|')
  const rows = AUDIT_COLUMNS.map((c) =>
    `| \`${c.name}\` | \`${c.type}\` | \`${DUCKDB_TYPES[c.type]}\` | ${c.required ? 'yes' : 'no'} | ${esc(c.description)} |`)
  return ['| column | Glue type | DuckDB / Parquet type | required | meaning |', '| --- | --- | --- | --- | --- |', ...rows].join('\n')
}

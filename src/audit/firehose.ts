/**
 * The audit sink for AWS: rows go to Firehose with PutRecordBatch, one delivery stream per system (spi, dict),
 * whence Firehose converts them to Parquet under `log/{spi,dict}/year=…/` in S3.
 *
 * The sink makes each call once and reports exactly which rows Firehose did not take; retrying, backoff and
 * keeping the rows meanwhile are the pipeline's (see createFirehoseClient for why the SDK must not retry).
 */
import { PutRecordBatchCommand } from '@aws-sdk/client-firehose'
import type { FirehoseClient, PutRecordBatchCommandOutput } from '@aws-sdk/client-firehose'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AUDIT_COLUMNS } from './schema.ts'
import { storedColumns } from './gateway.ts'
import type { AuditRow } from './schema.ts'
import type { AuditSink, SinkResult } from './sink.ts'

/**
 * PutRecordBatch limits: 500 records and 1,000 KiB per record (before base64) are documented exactly. The 4 MiB
 * per call is documented without saying whether base64 counts; a call AWS refuses as too large would fail
 * whole on every retry and block shipping, so the sink keeps each request body (base64 included) under 4 MiB.
 */
export const FIREHOSE_MAX_RECORDS = 500
export const FIREHOSE_MAX_RECORD_BYTES = 1_024_000
const FIREHOSE_MAX_REQUEST_BYTES = 4 * 1024 * 1024
/** Raw bytes that fit one call once base64-encoded and wrapped in JSON (4/3 growth plus `{"Data":""},`). */
const FIREHOSE_MAX_BATCH_BYTES = 3_000_000
/**
 * What the sink asks the pipeline for by default: far below what a call may carry, because the SDK builds a call's
 * body in one go (each record base64-encoded, the request JSON, the SigV4 SHA-256 of the payload), a stall of the
 * thread that ships; in the audit thread the spool's acknowledgements wait behind it (measured when that was the
 * event loop: with 1-3 MB calls the audit wait p99 was 25-65 ms at 200 req/s). Firehose charges by volume, not by
 * call; calls per second stay far under its quotas.
 */
export const FIREHOSE_DEFAULT_BATCH_BYTES = 256 * 1024

/**
 * The Firehose record of a row: its JSON, columns in schema order (a field outside the schema never reaches the
 * Glue table), and '\n', because Firehose concatenates records and the JSON reader downstream splits on lines.
 */
export function encodeAuditRecord (row: AuditRow): Buffer {
  const { columns, values } = storedColumns(row, AUDIT_COLUMNS)
  const ordered: Record<string, unknown> = {}
  for (const c of columns) ordered[c.name] = values[c.name] ?? null
  return Buffer.from(JSON.stringify(ordered) + '\n', 'utf8')
}

const encodedSize = (n: number): number => 4 * Math.ceil(n / 3) + 12

export interface FirehoseSinkOptions {
  /** From createFirehoseClient. The sink owns it and destroys it on close. */
  readonly client: FirehoseClient
  /** Delivery stream of each system; the gateway's only in the gateway's process (rows of a system without one fail). */
  readonly streams: { readonly spi: string, readonly dict: string, readonly gateway?: string }
  /** Bytes of records per call the pipeline is asked for (default FIREHOSE_DEFAULT_BATCH_BYTES). */
  readonly batchBytes?: number
}

interface Chunk {
  readonly stream: string
  readonly indexes: number[]
  readonly records: Buffer[]
}

function describe (err: unknown): string {
  const e = err as { name?: string, message?: string, $metadata?: { httpStatusCode?: number } }
  const status = e.$metadata?.httpStatusCode
  return `${e.name ?? 'Error'}${status === undefined ? '' : ` (HTTP ${status})`}: ${e.message ?? String(err)}`
}

export class FirehoseSink implements AuditSink {
  readonly name = 'firehose'
  readonly maxBatchRows = FIREHOSE_MAX_RECORDS
  /** A hint: a batch of this many bytes of records goes in one call per system. Larger batches are split. */
  readonly maxBatchBytes: number
  /**
   * For the row's JSON as the pipeline measures it: below the record limit by the '\n' and the nulls the sink
   * writes for absent columns, so a row the pipeline lets through always fits. Larger records are never sent.
   */
  readonly maxRowBytes = FIREHOSE_MAX_RECORD_BYTES - 4_000
  readonly #client: FirehoseClient
  readonly #streams: { readonly spi: string, readonly dict: string, readonly gateway?: string }
  readonly #inFlight = new Set<Promise<unknown>>()
  #closed = false

  constructor (opts: FirehoseSinkOptions) {
    const batch = opts.batchBytes ?? FIREHOSE_DEFAULT_BATCH_BYTES
    if (!(Number.isSafeInteger(batch) && batch >= 1_024 && batch <= FIREHOSE_MAX_BATCH_BYTES)) {
      throw new PixProxyError(Errors.CONFIG_INVALID, [`Firehose batchBytes must be an integer from 1024 to ${FIREHOSE_MAX_BATCH_BYTES}, not ${batch}`])
    }
    this.maxBatchBytes = batch
    this.#client = opts.client
    this.#streams = { spi: opts.streams.spi, dict: opts.streams.dict, gateway: opts.streams.gateway }
  }

  /**
   * Sends `rows` (any number: split into calls of at most 500 records and 4 MiB per stream, sent concurrently, so
   * rows of different calls may land in any order, as Firehose itself promises none; rows carry id and date).
   * @returns the indexes of rows Firehose did not accept: records it answered with an ErrorCode, rows of calls
   *   that failed whole while other calls succeeded, and rows too large for a record (`maxRowBytes`).
   * @throws PixProxyError AWS_FIREHOSE_PUT when no row was accepted because every call failed (network,
   *   throttling, outage, timeout: the SDK error is the cause); AWS_FIREHOSE_ROW_TOO_LARGE when every row was too
   *   large; AWS_FIREHOSE_SINK_CLOSED after close.
   */
  async write (rows: readonly AuditRow[]): Promise<SinkResult> {
    if (this.#closed) throw new PixProxyError(Errors.AWS_FIREHOSE_SINK_CLOSED)
    const p = this.#write(rows)
    this.#inFlight.add(p)
    try {
      return await p
    } finally {
      this.#inFlight.delete(p)
    }
  }

  /** Waits for calls in flight, then releases the client's sockets. Later writes throw. */
  async close (): Promise<void> {
    this.#closed = true
    await Promise.allSettled([...this.#inFlight])
    this.#client.destroy()
  }

  async #write (rows: readonly AuditRow[]): Promise<SinkResult> {
    if (rows.length === 0) return { failed: [] }
    const failed = new Set<number>()
    let tooLarge: { index: number, size: number } | null = null
    const chunks: Chunk[] = []
    const open = new Map<string, Chunk & { bytes: number }>()
    rows.forEach((row, index) => {
      const record = encodeAuditRecord(row)
      const stream = row.system === 'spi' ? this.#streams.spi : row.system === 'dict' ? this.#streams.dict : row.system === 'gateway' ? this.#streams.gateway : undefined
      if (record.length > FIREHOSE_MAX_RECORD_BYTES || stream === undefined) {
        // Never sendable as is: reported, never dropped, so the pipeline keeps the row and can alarm on it.
        failed.add(index)
        if (stream !== undefined) tooLarge ??= { index, size: record.length }
        return
      }
      const size = encodedSize(record.length)
      let c = open.get(stream)
      if (c === undefined || c.records.length >= FIREHOSE_MAX_RECORDS || c.bytes + size > FIREHOSE_MAX_REQUEST_BYTES - 1024) {
        c = { stream, indexes: [], records: [], bytes: 64 + stream.length }
        open.set(stream, c)
        chunks.push(c)
      }
      c.indexes.push(index)
      c.records.push(record)
      c.bytes += size
    })

    const results = await Promise.allSettled(chunks.map(async (c) => await this.#client.send(new PutRecordBatchCommand({
      DeliveryStreamName: c.stream,
      Records: c.records.map((Data) => ({ Data }))
    }))))

    let accepted = 0
    let firstError: { stream: string, err: unknown } | null = null
    results.forEach((r, i) => {
      const c = chunks[i] as Chunk
      if (r.status === 'rejected') {
        firstError ??= { stream: c.stream, err: r.reason }
        for (const idx of c.indexes) failed.add(idx)
        return
      }
      accepted += mapResponses(r.value, c, failed)
    })

    if (accepted === 0) {
      const e = firstError as { stream: string, err: unknown } | null
      if (e !== null) throw new PixProxyError(Errors.AWS_FIREHOSE_PUT, [e.stream, describe(e.err)], { cause: e.err })
      const big = tooLarge as { index: number, size: number } | null
      if (big !== null && chunks.length === 0) throw new PixProxyError(Errors.AWS_FIREHOSE_ROW_TOO_LARGE, [big.index, big.size, FIREHOSE_MAX_RECORD_BYTES])
    }
    return { failed: [...failed].sort((a, b) => a - b) }
  }
}

/** Adds the rows Firehose refused to `failed`; returns how many it accepted. */
function mapResponses (out: PutRecordBatchCommandOutput, c: Chunk, failed: Set<number>): number {
  const responses = out.RequestResponses ?? []
  if (responses.length !== c.records.length) {
    // One response per record, in order, is the API's contract; without it nothing can be trusted as delivered.
    for (const idx of c.indexes) failed.add(idx)
    return 0
  }
  let accepted = 0
  responses.forEach((resp, j) => {
    if (resp.ErrorCode !== undefined || resp.RecordId === undefined) failed.add(c.indexes[j] as number)
    else accepted++
  })
  return accepted
}

/**
 * Where shipped audit rows go (Firehose in AWS, local Parquet otherwise). The pipeline (pipeline.ts) owns
 * batching, retries, backoff and keeping rows in the spool until a sink has accepted them; a sink makes one
 * attempt per call and reports exactly which rows it did not take.
 */
import type { AuditRow } from './schema.ts'

export interface SinkResult {
  /** indexes (into the batch) of rows NOT durably accepted; retry only these */
  failed: number[]
}

export interface AuditSink {
  readonly name: string
  /** Limits the pipeline must respect when batching for this sink. */
  readonly maxBatchRows: number
  /** Upper bound on the sum of the serialised rows (JSON, UTF-8 bytes) of one write() call. */
  readonly maxBatchBytes: number
  /** Upper bound on one serialised row; the pipeline compresses oversized bodies to fit (see pipeline.ts). */
  readonly maxRowBytes: number
  /** Durably accept rows or report which failed. Throws only when nothing was accepted (outage). */
  write (rows: readonly AuditRow[]): Promise<SinkResult>
  close (): Promise<void>
}

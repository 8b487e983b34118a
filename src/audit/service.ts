/**
 * The audit trail's moving parts put together: the write-ahead spool (or this process's slot of a shared root),
 * the sink (Parquet or Firehose), the pipeline shipping completed rows to it, and on a shared root the sweeper
 * adopting dead processes' slots. The proxy runs one inside a worker thread (worker.ts), off the event loop that
 * serves requests; tests may run one in-process.
 */
import { resolve } from 'node:path'
import { getHeapStatistics } from 'node:v8'
import type { Config } from '../config.ts'
import { AuditSpool } from './spool.ts'
import type { AuditLogger, AuditRequestHalf, AuditResponseHalf, SpoolStats } from './spool.ts'
import { AuditPipeline } from './pipeline.ts'
import type { PipelineStats } from './pipeline.ts'
import type { AuditSink } from './sink.ts'
import { openSink, ThreadedSink } from './ship.ts'
import { claimSpoolSlot, serialSink, SlotSweeper } from './slots.ts'

/** The proxy's audit settings; the gateway's process adds its own Firehose stream (src/gateway/config.ts). */
export type AuditSettings = Omit<Config['audit'], 'firehoseStreams'> & {
  readonly firehoseStreams: Config['audit']['firehoseStreams'] & { readonly gateway?: string }
}

/** Everything the metrics and the readiness check show about the audit trail, at one moment. */
export interface AuditStatus {
  readonly sink: string
  readonly spoolDir: string
  readonly spool: SpoolStats
  readonly pipeline: PipelineStats
  readonly adoptedRows: number
  /** V8 heap of the thread the service runs in (the audit worker's own isolate). */
  readonly heap: { readonly usedBytes: number, readonly totalBytes: number }
}

/** Where a transaction's halves go: durable when the promise resolves. */
export interface AuditJournal {
  begin (row: AuditRequestHalf): Promise<void>
  end (id: string, half: AuditResponseHalf): Promise<void>
}

export class AuditService implements AuditJournal {
  readonly #spool: AuditSpool
  readonly #sink: AuditSink
  readonly #pipeline: AuditPipeline
  readonly #sweeper: SlotSweeper | null

  private constructor (spool: AuditSpool, sink: AuditSink, pipeline: AuditPipeline, sweeper: SlotSweeper | null) {
    this.#spool = spool
    this.#sink = sink
    this.#pipeline = pipeline
    this.#sweeper = sweeper
  }

  /**
   * Opens the spool (replaying what a previous process left), the sink, and starts shipping.
   * @throws PixProxyError AUDIT_SPOOL_LOCKED, AUDIT_SPOOL_IO, AUDIT_STORE_OPEN…: nothing is left open.
   */
  static async open (audit: AuditSettings, logger: AuditLogger, o: { blockingIo?: boolean, sinkThread?: boolean } = {}): Promise<AuditService> {
    // groupCommitMs 0: the fsync already in flight batches the appends queued behind it (measured: begin() p99
    // 1.6 ms at 500 rows/s, against 3.9 ms when each group also waits 2 ms), and it adapts to slower disks (EFS).
    // blockingIo in a thread of its own: see AuditSpoolOptions.
    const spoolOptions = { maxBytes: audit.spoolMaxBytes, groupCommitMs: 0, logger, blockingIo: o.blockingIo === true }
    const spool = audit.spoolShared
      ? await claimSpoolSlot(resolve(audit.spoolDir), spoolOptions)
      : await AuditSpool.open({ dir: resolve(audit.spoolDir), ...spoolOptions })
    let sink: AuditSink
    try {
      // sinkThread (the audit worker): the sink runs in a thread of its own, so that shipping never holds up the
      // spool's appends (ship.ts says what that was measured to cost).
      sink = o.sinkThread === true ? await ThreadedSink.open(audit, logger) : await openSink(audit)
    } catch (err) {
      await spool.close()
      throw err
    }
    // Shared: the sweeper ships dead processes' slots through the same sink, one call at a time.
    if (audit.spoolShared) sink = serialSink(sink)
    const pipeline = AuditPipeline.start({ spool, sink, flushMs: audit.flushMs, logger })
    const sweeper = audit.spoolShared
      ? SlotSweeper.start({ root: resolve(audit.spoolDir), own: spool, sink, spoolOptions, logger })
      : null
    return new AuditService(spool, sink, pipeline, sweeper)
  }

  /** @throws the spool's error (full, invalid row, I/O): the caller must not send the message. */
  async begin (row: AuditRequestHalf): Promise<void> {
    await this.#spool.begin(row)
  }

  async end (id: string, half: AuditResponseHalf): Promise<void> {
    await this.#spool.end(id, half)
  }

  status (): AuditStatus {
    const heap = getHeapStatistics()
    return {
      sink: this.#sink.name,
      spoolDir: this.#spool.dir,
      spool: this.#spool.stats(),
      pipeline: this.#pipeline.stats(),
      adoptedRows: this.#sweeper?.stats().adoptedRows ?? 0,
      heap: { usedBytes: heap.used_heap_size, totalBytes: heap.total_heap_size }
    }
  }

  /**
   * Stops adopting, ships what is ready within `deadlineMs`, closes the sink and the spool. What was not shipped
   * stays in the spool for the next start.
   */
  async close (deadlineMs: number): Promise<{ shipped: number, left: number }> {
    await this.#sweeper?.close()
    const result = await this.#pipeline.close(deadlineMs)
    await this.#sink.close()
    // A sink call that outlived the deadline has returned by now (closing the sink waits for it; the ship thread's,
    // at most until its write deadline, which fails it): let the loop acknowledge its rows or hand them back before
    // the spool closes under it.
    await this.#pipeline.stopped()
    await this.#spool.close()
    return result
  }
}

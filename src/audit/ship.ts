/**
 * The sink in a thread of its own ("pix-audit-ship"), so that shipping never holds up the spool's durable appends.
 *
 * Measured reason (bench/RESULTS.md, session 8): in the audit thread, each call to a sink is one stretch of
 * synchronous work (Firehose: every record encoded, the request's JSON built, its SigV4 SHA-256; Parquet: DuckDB's
 * appender flushed), and the begin() and end() calls that arrive meanwhile wait behind it. With the spool alone
 * the audit thread's begin-to-end cycle at 200 rows/s had a p99 of 6.5 ms; with the Parquet sink shipping every
 * second, 23 ms; in the deployed proxy the whole request's p99 was 35-75 ms against 8-16 ms with auditing off.
 * Here the audit thread only posts each batch's rows (a structured clone, ~10 µs a row) and reads back which rows
 * the sink refused; the pipeline's batching, retries, backoff and acknowledgements stay where they were.
 *
 * Protocol (structured clone over the thread's port):
 *   to the thread    { t: 'rows', k, rows } (a slice of write k's rows; as many as needed) | { t: 'write', k } | { t: 'close', k }
 *   from it          { t: 'ready', limits } | { t: 'open-failed', error } | { t: 'done', k, error, value? }
 * A thread that dies (an uncaught error, an out-of-memory) fails the writes waiting on it, which the pipeline
 * handles like any failing sink (the rows stay in the spool and go again after its backoff); the next write starts
 * a new thread. Nothing is lost: a row leaves the spool only once a sink has said it accepted it.
 *
 * A thread that hangs (a DuckDB call that never returns, a sink in a busy loop, a request without a timeout) would
 * leave the pipeline awaiting its write for ever: nothing would ship again, the spool would fill to its bound and
 * refuse every request, and closing would wait too. So every write has a deadline (`writeDeadlineMs`, from its
 * first posted slice to its answer), and so do the thread's start and its close: past it the thread is treated as
 * dead (terminated, its writes failed with AUDIT_SINK_FAILED, one error logged) and the next write starts a new one.
 * The pipeline keeps the failed write's rows and sends them again after its backoff. A terminated thread may have
 * shipped some of them already (a Firehose call that succeeded late, a Parquet file renamed into place): those are
 * stored twice, which the audit trail allows (at least once; readers deduplicate on `id`).
 */
import { resolve } from 'node:path'
import { Worker } from 'node:worker_threads'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { revive, whenReady } from './thread.ts'
import type { WireError } from './thread.ts'
import type { AuditRow } from './schema.ts'
import type { AuditSettings } from './service.ts'
import type { AuditSink, SinkResult } from './sink.ts'
import type { AuditLogger } from './logger.ts'
import { realClock } from './clock.ts'
import type { AuditClock } from './clock.ts'

/**
 * Opens the sink the settings name, in the calling thread. Its modules load here, on demand: a thread holds only the
 * sink it runs (the AWS SDK's clients, or DuckDB's bindings), and the audit thread, which only hands rows over, holds
 * neither. Loaded in every thread, they cost the process ~100 MiB of RSS more (bench/RESULTS.md, session 8).
 */
export async function openSink (audit: AuditSettings): Promise<AuditSink> {
  if (audit.sink === 'firehose') {
    const [{ FirehoseSink }, { createFirehoseClient }] = await Promise.all([import('./firehose.ts'), import('../aws/firehose-client.ts')])
    return new FirehoseSink({ client: createFirehoseClient(), streams: audit.firehoseStreams })
  }
  const { ParquetSink } = await import('./parquet.ts')
  return await ParquetSink.open({ dir: resolve(audit.parquetDir) })
}

export interface SinkLimits { readonly name: string, readonly maxBatchRows: number, readonly maxBatchBytes: number, readonly maxRowBytes: number }
export type ToShip =
  | { readonly t: 'rows', readonly k: number, readonly rows: readonly AuditRow[] }
  | { readonly t: 'write', readonly k: number }
  | { readonly t: 'close', readonly k: number }

/** Rows per message of a write (~1 ms of structured clone for GetEntry-sized rows). */
const POST_SLICE_ROWS = 64
export type FromShip =
  | { readonly t: 'ready', readonly limits: SinkLimits }
  | { readonly t: 'open-failed', readonly error: WireError }
  | { readonly t: 'done', readonly k: number, readonly error: WireError | null, readonly value?: SinkResult }

// Compiled to dist/, this module is ship.js and its thread ship-worker.js.
const SHIP_WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './ship-worker.ts' : './ship-worker.js', import.meta.url)

/**
 * How long a write (or the thread's start, or its close) may take before the thread is deemed hung. Far above
 * the sinks' own bounds, so that only a thread that will never answer reaches it: a Firehose write is a few
 * PutRecordBatch calls in parallel, each bounded by its client's 3 s connect and 10 s request timeouts
 * (src/aws/firehose-client.ts; the SDK does not retry); a Parquet write of a full batch (5,000 rows) takes under
 * half a second (12,000-28,000 rows/s, bench/RESULTS.md), some more on a slow disk. A minute also keeps a slow but
 * live sink from being cut off in the middle of its work again and again, each time shipping its rows twice.
 */
export const SHIP_WRITE_DEADLINE_MS = 60_000

export interface ThreadedSinkOptions {
  /** Replaces the thread's code (tests: a thread that dies, or hangs). */
  readonly workerUrl?: URL
  /** See SHIP_WRITE_DEADLINE_MS (the default). */
  readonly writeDeadlineMs?: number
  /** Time source of the deadlines (default realClock; tests move a manual one). */
  readonly clock?: AuditClock
}

interface Pending { resolve (v: SinkResult): void, reject (e: Error): void, readonly rows: number }

interface Running {
  readonly worker: Worker
  readonly pending: Map<number, Pending>
  readonly exited: Promise<void>
  /** Fails what waits on the thread and forgets it, once (set by #watch). `hung`: terminate it as well. */
  stop: (why: string, hung: boolean) => void
  /** It was stopped for not answering in time: terminated, not waited for. */
  hung: boolean
}

export class ThreadedSink implements AuditSink {
  readonly name: string
  readonly maxBatchRows: number
  readonly maxBatchBytes: number
  readonly maxRowBytes: number
  readonly #audit: AuditSettings
  readonly #logger: AuditLogger
  readonly #workerUrl: URL
  readonly #deadlineMs: number
  readonly #clock: AuditClock
  #running: Running | null
  #starting: Promise<Running> | null = null
  #next = 0
  #closing: Promise<void> | null = null
  /** Writes still posting their slices (a thread start included): close() lets them finish first (see close). */
  readonly #posting = new Set<Promise<void>>()

  private constructor (audit: AuditSettings, logger: AuditLogger, o: Required<ThreadedSinkOptions>, first: Running, limits: SinkLimits) {
    this.#audit = audit
    this.#logger = logger
    this.#workerUrl = o.workerUrl
    this.#deadlineMs = o.writeDeadlineMs
    this.#clock = o.clock
    this.#running = first
    this.name = limits.name
    this.maxBatchRows = limits.maxBatchRows
    this.maxBatchBytes = limits.maxBatchBytes
    this.maxRowBytes = limits.maxRowBytes
  }

  /**
   * Starts the thread, which opens the sink.
   * @throws the error opening the sink raised (AUDIT_STORE_OPEN…), or an error saying the thread died or did not
   *   start within the deadline; CONFIG_INVALID for a deadline that is not a positive number.
   */
  static async open (audit: AuditSettings, logger: AuditLogger, o: ThreadedSinkOptions = {}): Promise<ThreadedSink> {
    const opts = { workerUrl: o.workerUrl ?? SHIP_WORKER_URL, writeDeadlineMs: o.writeDeadlineMs ?? SHIP_WRITE_DEADLINE_MS, clock: o.clock ?? realClock }
    if (!(opts.writeDeadlineMs > 0 && Number.isFinite(opts.writeDeadlineMs))) {
      throw new PixProxyError(Errors.CONFIG_INVALID, [`audit ship thread writeDeadlineMs must be a positive number, not ${opts.writeDeadlineMs}`])
    }
    const { running, limits } = await start(audit, opts)
    const sink = new ThreadedSink(audit, logger, opts, running, limits)
    sink.#watch(running)
    return sink
  }

  /** Rows to the sink in its thread. @throws what the sink threw, or an error saying the thread stopped. */
  async write (rows: readonly AuditRow[]): Promise<SinkResult> {
    if (this.#closing !== null) throw new PixProxyError(Errors.AUDIT_SINK_FAILED, [this.name, rows.length, 'the sink is closed'])
    const posted = this.#post(rows)
    const posting = posted.then(() => {}, () => {})
    this.#posting.add(posting)
    void posting.then(() => { this.#posting.delete(posting) })
    const { result } = await posted
    return await result
  }

  /** Posts a write's rows and then the write itself; resolves once they are posted, with the write's outcome. */
  async #post (rows: readonly AuditRow[]): Promise<{ readonly result: Promise<SinkResult> }> {
    const running = this.#running ?? await this.#restart()
    const k = this.#next++
    const result = this.#expect(running, k, rows.length)
    // The outcome can come while slices are still to go (the thread stopped): handled from now on, or that
    // rejection, between two slices with nothing awaiting it yet, would be unhandled and end this thread with it.
    result.catch(() => {})
    try {
      // In slices, the calls waiting on this thread served between them: cloning a batch of thousands of rows
      // (the Parquet sink's) in one message held this thread for tens of milliseconds.
      for (let i = 0; i < rows.length; i += POST_SLICE_ROWS) {
        if (i > 0) await new Promise((resolve) => setImmediate(resolve))
        if (!running.pending.has(k)) return { result: this.#early(result, rows.length) }
        running.worker.postMessage({ t: 'rows', k, rows: rows.slice(i, i + POST_SLICE_ROWS) } satisfies ToShip)
      }
      if (!running.pending.has(k)) return { result: this.#early(result, rows.length) }
      running.worker.postMessage({ t: 'write', k } satisfies ToShip)
    } catch (err) {
      // A slice that cannot be posted: no 'write' follows, so the slices already posted are never written alone.
      running.pending.delete(k)
      throw err
    }
    return { result }
  }

  /**
   * The outcome of a write settled before its 'write' was posted: a thread that stopped (the write has already
   * failed), or one that answered before it had every row, whose success must not acknowledge rows the sink never saw.
   */
  async #early (result: Promise<SinkResult>, rows: number): Promise<SinkResult> {
    await result
    throw new PixProxyError(Errors.AUDIT_SINK_FAILED, [this.name, rows, 'the ship thread answered before the write was whole'])
  }

  /** Closes the sink (it waits for its calls in flight) and ends the thread. Idempotent. */
  async close (): Promise<void> {
    this.#closing ??= (async () => {
      // A write still posting its slices is in flight like any other: its 'write' must reach the thread before
      // 'close' does (the sink refuses writes once closed), so that close waits for it as the sink itself does.
      await Promise.all([...this.#posting])
      const running = this.#running ?? await this.#starting?.catch(() => null) ?? null
      if (running === null) return
      const k = this.#next++
      // Bounded like a write: a hung thread is terminated at the deadline (and a write still pending on it, whose
      // own deadline comes first, does the same).
      const closed = this.#expect(running, k, 0)
      running.worker.postMessage({ t: 'close', k } satisfies ToShip)
      await closed.catch(() => {}) // a thread that died while closing has nothing left to close
      // A terminated thread stuck in native code ends only when that call returns, maybe never: not waited for.
      if (!running.hung) await running.exited
    })()
    await this.#closing
  }

  /**
   * The answer to call `k`, posted (or about to be) to `running`; if none comes within the deadline, the thread is
   * stopped as hung, which fails this call and every other waiting on it.
   */
  #expect (running: Running, k: number, rows: number): Promise<SinkResult> {
    return new Promise<SinkResult>((resolve, reject) => {
      const cancel = this.#clock.timer(() => {
        if (running.pending.has(k)) running.stop(`it did not answer within ${this.#deadlineMs} ms and was terminated`, true)
      }, this.#deadlineMs, false)
      running.pending.set(k, {
        resolve: (v) => { cancel(); resolve(v) },
        reject: (e) => { cancel(); reject(e) },
        rows
      })
    })
  }

  async #restart (): Promise<Running> {
    this.#starting ??= (async () => {
      try {
        const { running } = await start(this.#audit, { workerUrl: this.#workerUrl, writeDeadlineMs: this.#deadlineMs, clock: this.#clock })
        this.#running = running
        this.#watch(running)
        this.#logger.info({ sink: this.name }, 'audit ship thread restarted')
        return running
      } finally {
        this.#starting = null
      }
    })()
    return await this.#starting
  }

  /**
   * Replies settle their writes; a thread that stops (dies, or is terminated for not answering) fails what waits on
   * it and is replaced at the next write.
   */
  #watch (running: Running): void {
    const { worker, pending } = running
    const threadId = worker.threadId // -1 once the thread has stopped
    worker.on('message', (m: FromShip) => {
      if (m.t !== 'done') return
      const p = pending.get(m.k)
      if (p === undefined) return
      pending.delete(m.k)
      if (m.error === null) p.resolve(m.value ?? { failed: [] })
      else p.reject(revive(m.error))
    })
    let gone = false
    running.stop = (why: string, hung: boolean): void => {
      if (gone) return // 'error' then 'exit', or a deadline then the 'exit' it causes: one stop
      gone = true
      if (this.#running === running) this.#running = null
      if (hung) {
        running.hung = true
        // Forgotten at once, not when its 'exit' comes: a thread stuck in native code (a DuckDB call) stops only
        // when that call returns. Meanwhile it must not keep the process alive, and a new thread may run beside it
        // (both can write: Parquet files have unique names, Firehose calls are independent).
        worker.unref()
        worker.terminate().catch(() => {})
        void running.exited.then(() => { this.#logger.info({ sink: this.name, threadId }, 'the audit ship thread that did not answer has ended') })
      }
      if (pending.size === 0 && this.#closing !== null && !hung) return
      const reason = `the audit ship thread stopped (${why}); its rows stay in the spool`
      if (this.#closing === null || hung) {
        const msg = hung ? 'audit ship thread did not answer in time and was terminated; the next batch starts a new one' : 'audit ship thread stopped; the next batch starts a new one'
        this.#logger.error({ code: Errors.AUDIT_SINK_FAILED.code, err: reason, pending: pending.size }, msg)
      }
      for (const p of pending.values()) p.reject(new PixProxyError(Errors.AUDIT_SINK_FAILED, [this.name, p.rows, reason]))
      pending.clear()
    }
    worker.on('error', (err) => { running.stop(err.message, false) })
    worker.on('exit', (code) => { running.stop(`exited with code ${code}`, false) })
  }
}

async function start (audit: AuditSettings, o: Required<ThreadedSinkOptions>): Promise<{ running: Running, limits: SinkLimits }> {
  const worker = new Worker(o.workerUrl, { workerData: { audit }, name: 'pix-audit-ship' })
  const exited = new Promise<void>((resolve) => worker.once('exit', () => { resolve() }))
  // whenReady keeps an 'error' of the thread from being thrown in this one (pix-audit), which would end the audit
  // trail: between its listeners and #watch's, and while a failed start is terminated, an error is only the thread
  // ending. Its deadline: opening a sink that never returns (a DuckDB open, a client's set-up) would hang the write
  // waiting for it.
  const ready = await whenReady<Extract<FromShip, { t: 'ready' }>>(worker, {
    failed: (why, cause) => new Error(`the audit ship thread did not start: ${why}`, { cause }),
    deadline: { ms: o.writeDeadlineMs, clock: o.clock }
  })
  return { running: { worker, pending: new Map(), exited, stop: () => {}, hung: false }, limits: ready.limits }
}

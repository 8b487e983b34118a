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

interface Running {
  readonly worker: Worker
  readonly pending: Map<number, { resolve (v: SinkResult): void, reject (e: Error): void, readonly rows: number }>
  readonly exited: Promise<void>
}

export class ThreadedSink implements AuditSink {
  readonly name: string
  readonly maxBatchRows: number
  readonly maxBatchBytes: number
  readonly maxRowBytes: number
  readonly #audit: AuditSettings
  readonly #logger: AuditLogger
  readonly #workerUrl: URL
  #running: Running | null
  #starting: Promise<Running> | null = null
  #next = 0
  #closing: Promise<void> | null = null
  /** Writes still posting their slices (a thread start included): close() lets them finish first (see close). */
  readonly #posting = new Set<Promise<void>>()

  private constructor (audit: AuditSettings, logger: AuditLogger, workerUrl: URL, first: Running, limits: SinkLimits) {
    this.#audit = audit
    this.#logger = logger
    this.#workerUrl = workerUrl
    this.#running = first
    this.name = limits.name
    this.maxBatchRows = limits.maxBatchRows
    this.maxBatchBytes = limits.maxBatchBytes
    this.maxRowBytes = limits.maxRowBytes
  }

  /**
   * Starts the thread, which opens the sink. `workerUrl` replaces the thread's code (tests: a thread that dies).
   * @throws the error opening the sink raised (AUDIT_STORE_OPEN…), or AUDIT_WORKER_FAILED if the thread died.
   */
  static async open (audit: AuditSettings, logger: AuditLogger, o: { workerUrl?: URL } = {}): Promise<ThreadedSink> {
    const url = o.workerUrl ?? SHIP_WORKER_URL
    const { running, limits } = await start(audit, url)
    const sink = new ThreadedSink(audit, logger, url, running, limits)
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
    const result = new Promise<SinkResult>((resolve, reject) => {
      running.pending.set(k, { resolve, reject, rows: rows.length })
    })
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
      const closed = new Promise<SinkResult>((resolve, reject) => { running.pending.set(k, { resolve, reject, rows: 0 }) })
      running.worker.postMessage({ t: 'close', k } satisfies ToShip)
      await closed.catch(() => {}) // a thread that died while closing has nothing left to close
      await running.exited
    })()
    await this.#closing
  }

  async #restart (): Promise<Running> {
    this.#starting ??= (async () => {
      try {
        const { running } = await start(this.#audit, this.#workerUrl)
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

  /** Replies settle their writes; a thread that stops fails what waits on it and is replaced at the next write. */
  #watch (running: Running): void {
    const { worker, pending } = running
    worker.on('message', (m: FromShip) => {
      if (m.t !== 'done') return
      const p = pending.get(m.k)
      if (p === undefined) return
      pending.delete(m.k)
      if (m.error === null) p.resolve(m.value ?? { failed: [] })
      else p.reject(revive(m.error))
    })
    let gone = false
    const stopped = (why: string): void => {
      if (gone) return // 'error' then 'exit': one stop
      gone = true
      if (this.#running === running) this.#running = null
      if (pending.size === 0 && this.#closing !== null) return
      const reason = `the audit ship thread stopped (${why}); its rows stay in the spool`
      if (this.#closing === null) this.#logger.error({ err: reason, pending: pending.size }, 'audit ship thread stopped; the next batch starts a new one')
      for (const p of pending.values()) p.reject(new PixProxyError(Errors.AUDIT_SINK_FAILED, [this.name, p.rows, reason]))
      pending.clear()
    }
    worker.on('error', (err) => { stopped(err.message) })
    worker.on('exit', (code) => { stopped(`exited with code ${code}`) })
  }
}

async function start (audit: AuditSettings, url: URL): Promise<{ running: Running, limits: SinkLimits }> {
  const worker = new Worker(url, { workerData: { audit }, name: 'pix-audit-ship' })
  const exited = new Promise<void>((resolve) => worker.once('exit', () => { resolve() }))
  // whenReady keeps an 'error' of the thread from being thrown in this one (pix-audit), which would end the audit
  // trail: between its listeners and #watch's, and while a failed start is terminated, an error is only the thread
  // ending.
  const ready = await whenReady<Extract<FromShip, { t: 'ready' }>>(worker, {
    failed: (why, cause) => new Error(`the audit ship thread did not start: ${why}`, { cause })
  })
  return { running: { worker, pending: new Map(), exited }, limits: ready.limits }
}

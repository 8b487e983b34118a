/**
 * The audit shipper: takes completed rows from the spool (spool.ts) in order, batches them for a sink (by rows,
 * bytes and time: a row waits at most `flushMs` for company), and tells the spool which rows the sink accepted,
 * so that it can delete what was shipped. One call to the sink at a time.
 *
 * Retries. Only rows the sink did not take are sent again (never the accepted ones), and how soon depends on what
 * failed. Backoff is exponential with full jitter: random in [0, min(cap, base * 2^(n-1))].
 * - Some rows refused, others accepted (e.g. Firehose's FailedPutCount): the call is progress. The accepted rows
 *   are acknowledged and shipping goes on at once; each refused row backs off on its own (n = times it was
 *   refused), then is ready again like a new row: it goes at the head of the next batch (full, or flushMs after
 *   its oldest row became ready), topped up with new rows, so retries do not multiply the calls. A few failed records per call
 *   used to back the whole pipeline off (n grew with every call that had any failure, and never fell back while
 *   some did): with 10 % of records failing, 3 rows/s shipped while 250/s were spooled.
 * - The call throws (outage), or refuses every row while some of them were not already known to be refused on
 *   their own (throttling, an outage answered record by record): the sink is failing, and the whole pipeline
 *   pauses before its next call (n = such calls in a row, back to 0 once a call has rows accepted).
 * - A call of rows all already refused on their own (a poisoned row alone) tells nothing about the sink: those
 *   rows back off further, the pipeline does not, so a row that keeps failing delays no other.
 * Refused rows wait in memory; while a batch's worth of them waits, no new rows are taken from the spool (they
 * are safe there), so memory stays bounded whatever the sink refuses. Meanwhile the proxy keeps spooling; the
 * spool's bound (and its nearFull flag) is the back-pressure.
 *
 * Oversized rows. The schema is fixed (one row per transaction, no extra columns), so a row larger than the
 * sink's `maxRowBytes` (as JSON) keeps every byte by compressing its bodies in place: the largest of request_body
 * and response_body first, then the other if still needed, each replaced by `gzip+base64:` + base64(gzip(UTF-8
 * body)). XML compresses 5 to 20 times, so Firehose's 1,000 KiB record holds bodies of several MiB. Readers undo
 * it with decodeAuditBody(); a body that itself starts with the marker is always encoded, so the marker is never
 * ambiguous. A row still too large is not dropped and does not block the spool: it is parked in the spool
 * directory (parked-<id>.json, durable, counted in spool bytes and `parkedRows`), logged as an error with
 * PIXPROXY_ERR_AUDIT_ROW_TOO_LARGE, and offered again to the sink after the next start.
 *
 * Shutdown. close(deadlineMs) stops waiting for batches to fill, ships what is ready until the deadline, and
 * returns; rows not shipped stay in the spool and ship after the next start. A call to the sink still running at
 * the deadline is not waited for (its rows ship again next time: at least once).
 */
import { gunzipSync, gzip } from 'node:zlib'
import { promisify } from 'node:util'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AUDIT_COLUMNS } from './schema.ts'
import type { AuditRow } from './schema.ts'
import type { AuditSink } from './sink.ts'
import type { AuditLogger, AuditSpool, SpoolRef } from './spool.ts'
import { realClock } from './clock.ts'
import type { AuditClock } from './clock.ts'

const gzipAsync = promisify(gzip)

/** Longest stretch of assembling a batch before the thread's other work (begin/end calls) gets a turn. */
const ASSEMBLE_SLICE_MS = 1

/** Marks a body column holding base64(gzip(body)) instead of the body. */
export const AUDIT_BODY_GZIP_PREFIX = 'gzip+base64:'
const BODY_COLUMNS = ['request_body', 'response_body'] as const

/** Size of a row as sinks measure it: its JSON, columns in schema order, plus the record's '\n'. */
export function auditRowBytes (row: AuditRow): number {
  const r = row as unknown as Record<string, unknown>
  const ordered: Record<string, unknown> = {}
  for (const c of AUDIT_COLUMNS) ordered[c.name] = r[c.name] ?? null
  return Buffer.byteLength(JSON.stringify(ordered), 'utf8') + 1
}

/** The stored form of a body that had to be compressed to fit the sink (see the header). */
export async function encodeAuditBody (body: string): Promise<string> {
  return AUDIT_BODY_GZIP_PREFIX + (await gzipAsync(Buffer.from(body, 'utf8'), { level: 9 })).toString('base64')
}

/** A body column as written by the pipeline, back to the body as sent or received. */
export function decodeAuditBody (value: string | null): string | null {
  if (value === null || !value.startsWith(AUDIT_BODY_GZIP_PREFIX)) return value
  return gunzipSync(Buffer.from(value.slice(AUDIT_BODY_GZIP_PREFIX.length), 'base64')).toString('utf8')
}

export interface AuditPipelineOptions {
  readonly spool: AuditSpool
  /** The pipeline does not close it: the owner closes it after the pipeline. */
  readonly sink: AuditSink
  /** A ready row waits at most this long for a batch to fill (default 1000). */
  readonly flushMs?: number
  /** First retry pause bound, of the pipeline and of each refused row (default 100). */
  readonly backoffBaseMs?: number
  /** Largest retry pause bound, of the pipeline and of each refused row (default 30000). */
  readonly backoffCapMs?: number
  readonly logger?: AuditLogger
  /** Jitter source in [0, 1) (default Math.random). */
  readonly random?: () => number
  /**
   * Time source of the flush timer, the backoff and the close deadline (default realClock). Must be the clock the
   * spool stamps `readyAt` with (AuditSpoolOptions.clock): a row's age is measured against it.
   */
  readonly clock?: AuditClock
}

export interface PipelineStats {
  /** Rows the sink accepted. */
  readonly shippedRows: number
  /** Rows sent again after a failed call or a failed index. */
  readonly retriedRows: number
  /** Calls to the sink. */
  readonly calls: number
  /** Calls that threw (nothing accepted). */
  readonly failedCalls: number
  /** Calls that reported some rows failed (did not throw). */
  readonly partialFailures: number
  /** Rows the sink did not take, waiting (in memory, on their own backoff or the pipeline's) to go again. */
  readonly retryingRows: number
  /** Rows shipped with a compressed body. */
  readonly compressedRows: number
  /** Rows too large for the sink even compressed, parked in the spool. */
  readonly parkedRows: number
  /**
   * Calls in a row in which the sink took nothing (threw, or refused every row, not only rows already refused on
   * their own): what backs the whole pipeline off. 0 once a call has rows accepted, even if it refused some
   * (those are in retryingRows).
   */
  readonly consecutiveFailures: number
  /** Code of the last failure (sink or spool), null when none yet. */
  readonly lastErrorCode: string | null
  /** Date.now() of the last accepted row, null when none yet. */
  readonly lastShippedAt: number | null
}

interface Item {
  readonly ref: SpoolRef
  readonly row: AuditRow
  readonly bytes: number
  /** Calls that carried it and did not get it accepted. */
  attempts: number
  /** Times the sink refused it on its own (see the header): the exponent of its own backoff. */
  refusals: number
  /** Clock time before which it does not go again. */
  due: number
}

const message = (err: unknown): string => err instanceof Error ? err.message : String(err)

export class AuditPipeline {
  readonly #spool: AuditSpool
  readonly #sink: AuditSink
  readonly #flushMs: number
  readonly #baseMs: number
  readonly #capMs: number
  readonly #logger: AuditLogger | undefined
  readonly #random: () => number
  readonly #clock: AuditClock

  /** Rows sent and not taken, in no particular order, and the sum of their bytes. */
  #retry: Item[] = []
  #retryBytes = 0
  #held: Item | null = null
  #attempt = 0
  #closing = false
  #deadline = Infinity
  #wakeUp: (() => void) | null = null
  #inSink = false
  #running: Promise<void> = Promise.resolve()
  #closed: Promise<{ shipped: number, left: number }> | null = null

  #shipped = 0
  #retried = 0
  #calls = 0
  #failedCalls = 0
  #partial = 0
  #compressed = 0
  #parked = 0
  #lastErrorCode: string | null = null
  #lastShippedAt: number | null = null

  private constructor (opts: AuditPipelineOptions) {
    this.#spool = opts.spool
    this.#sink = opts.sink
    this.#flushMs = opts.flushMs ?? 1000
    this.#baseMs = opts.backoffBaseMs ?? 100
    this.#capMs = opts.backoffCapMs ?? 30_000
    this.#logger = opts.logger
    this.#random = opts.random ?? Math.random
    this.#clock = opts.clock ?? realClock
    for (const [k, v] of [['flushMs', this.#flushMs], ['backoffBaseMs', this.#baseMs], ['backoffCapMs', this.#capMs]] as const) {
      if (!(v >= 0 && Number.isFinite(v))) throw new PixProxyError(Errors.CONFIG_INVALID, [`audit pipeline ${k} must be a non-negative number, not ${v}`])
    }
    for (const k of ['maxBatchRows', 'maxBatchBytes', 'maxRowBytes'] as const) {
      if (!(this.#sink[k] > 0)) throw new PixProxyError(Errors.CONFIG_INVALID, [`audit sink ${this.#sink.name} has ${k} ${this.#sink[k]}`])
    }
  }

  /** Starts shipping the spool's ready rows (rows replayed at open included) to the sink. */
  static start (opts: AuditPipelineOptions): AuditPipeline {
    const p = new AuditPipeline(opts)
    p.#spool.watchReady(() => { p.#onReady() })
    p.#running = p.#run()
    return p
  }

  stats (): PipelineStats {
    return {
      shippedRows: this.#shipped,
      retriedRows: this.#retried,
      calls: this.#calls,
      failedCalls: this.#failedCalls,
      partialFailures: this.#partial,
      retryingRows: this.#retry.length,
      compressedRows: this.#compressed,
      parkedRows: this.#parked,
      consecutiveFailures: this.#attempt,
      lastErrorCode: this.#lastErrorCode,
      lastShippedAt: this.#lastShippedAt
    }
  }

  /**
   * Ships what is ready, without waiting for batches to fill, until nothing is ready or `deadlineMs` passed.
   * Does not close the sink or the spool (close them after this, sink first).
   * @returns rows shipped during the close, and rows left in the spool (pending: also those still in flight to
   *   BACEN, whose end() never came).
   */
  async close (deadlineMs = 10_000): Promise<{ shipped: number, left: number }> {
    this.#closed ??= this.#close(deadlineMs)
    return await this.#closed
  }

  async #close (deadlineMs: number): Promise<{ shipped: number, left: number }> {
    const before = this.#shipped
    this.#closing = true
    this.#deadline = this.#clock.now() + deadlineMs
    this.#wake()
    let cancel = (): void => {}
    // Not unref'd: the caller awaits close, and the wait is bounded by the deadline.
    const expired = new Promise<void>((resolve) => { cancel = this.#clock.timer(resolve, deadlineMs, true) })
    await Promise.race([this.#running, expired])
    cancel()
    // Timers may fire a little before the clock reaches the deadline: make it so, or the loop could start
    // one more (unref'd) wait that nothing keeps alive.
    this.#deadline = -Infinity
    // Past the deadline the loop only has to notice and hand its rows back to the spool, unless it is stuck in a
    // sink call, which is not waited for.
    if (!this.#inSink) {
      this.#wake()
      await this.#running
    }
    return { shipped: this.#shipped - before, left: this.#spool.stats().pendingRows }
  }

  /**
   * Resolves once the shipping loop has ended after close(): also after a sink call that outlived the deadline
   * has returned and its rows were acknowledged or handed back to the spool. Await it before closing the spool
   * when that call must not find the spool closed (tests do).
   */
  async stopped (): Promise<void> {
    await this.#running
  }

  #expired (): boolean {
    return this.#closing && this.#clock.now() >= this.#deadline
  }

  #onReady (): void {
    if (this.#wakeUp === null) return
    const info = this.#spool.readyInfo()
    // The first ready row starts the flush timer; full batches go at once. Rows waiting to be sent again may fill
    // a batch with fewer new ones (whether they are due, the loop checks).
    if (this.#closing || info.rows === 1 || info.rows + this.#retry.length >= this.#sink.maxBatchRows || info.bytes + this.#retryBytes >= this.#sink.maxBatchBytes) this.#wake()
  }

  #wake (): void {
    const w = this.#wakeUp
    this.#wakeUp = null
    w?.()
  }

  /** Waits until woken, or `ms` (null: no time limit). */
  async #wait (ms: number | null): Promise<void> {
    let cancel = (): void => {}
    await new Promise<void>((resolve) => {
      this.#wakeUp = resolve
      if (ms !== null) cancel = this.#clock.timer(resolve, ms, false)
    })
    this.#wakeUp = null
    cancel()
  }

  async #run (): Promise<void> {
    while (!this.#expired()) {
      try {
        if (!await this.#waitForWork() || this.#expired()) break
        if (this.#attempt > 0) {
          await this.#backoff()
          if (this.#expired()) break
        }
        const batch = await this.#assemble()
        // Assembling yields (see #assemble), so the deadline may have passed meanwhile: a call started now would
        // outlive it and close() would wait for it. The rows go back to the spool with the others, below.
        if (this.#expired()) {
          this.#requeue(batch)
          break
        }
        if (batch.length > 0) await this.#ship(batch)
      } catch (err) {
        // Spool I/O (load, park): keep the rows, pause, try again. The loop must not die.
        this.#attempt++
        this.#lastErrorCode = (err as { code?: string }).code ?? Errors.INTERNAL.code
        this.#logger?.error({ code: this.#lastErrorCode, err, attempt: this.#attempt }, 'audit shipping paused after a spool error')
      }
    }
    const back = [...this.#retry, ...(this.#held === null ? [] : [this.#held])].map((i) => i.ref)
    this.#retry = []
    this.#retryBytes = 0
    this.#held = null
    if (back.length > 0) this.#spool.unshift(back)
    this.#spool.watchReady(null)
  }

  /**
   * True when there is something to send now; false when closing and nothing is left to send, or past the
   * deadline. A refused row is ready again once its backoff is over, and from then on it counts like a new row:
   * it goes in the next full batch, or when the oldest ready row has waited flushMs (a row refused in a call
   * that took nothing is due at once: the pipeline's pause was its wait).
   */
  async #waitForWork (): Promise<boolean> {
    for (;;) {
      if (this.#expired()) return false
      const info = this.#spool.readyInfo()
      const now = this.#clock.now()
      let dueRows = 0
      let dueBytes = 0
      let oldestDue = Infinity
      let nextDue = Infinity
      for (const i of this.#retry) {
        if (i.due <= now) {
          dueRows++
          dueBytes += i.bytes
          oldestDue = Math.min(oldestDue, i.due)
        } else nextDue = Math.min(nextDue, i.due)
      }
      // A batch's worth of refused rows waits in memory: new rows stay in the spool (safe there) until some have gone.
      const room = !this.#retryFull()
      const rows = dueRows + (room ? info.rows : 0)
      const bytes = dueBytes + (room ? info.bytes : 0)
      const oldest = Math.min(oldestDue, room && info.oldestReadyAt !== null ? info.oldestReadyAt : Infinity)
      if (this.#held !== null) return true
      if (this.#closing) {
        if (rows > 0) return true
        if (this.#retry.length === 0) return false
      } else if (rows >= this.#sink.maxBatchRows || bytes >= this.#sink.maxBatchBytes || now - oldest >= this.#flushMs) return true
      const until = Math.min(this.#closing ? Infinity : oldest + this.#flushMs, nextDue, this.#deadline)
      await this.#wait(until === Infinity ? null : until - now)
    }
  }

  #retryFull (): boolean {
    return this.#retry.length >= this.#sink.maxBatchRows || this.#retryBytes >= this.#sink.maxBatchBytes
  }

  #requeue (items: readonly Item[]): void {
    for (const i of items) {
      this.#retry.push(i)
      this.#retryBytes += i.bytes
    }
  }

  /** A pause of full jitter after `n` failures in a row. */
  #jitter (n: number): number {
    return this.#random() * Math.min(this.#capMs, this.#baseMs * 2 ** (n - 1))
  }

  async #backoff (): Promise<void> {
    const until = this.#clock.now() + this.#jitter(this.#attempt)
    while (this.#clock.now() < until && !this.#expired()) {
      await this.#wait(Math.min(until, this.#deadline) - this.#clock.now())
    }
  }

  async #assemble (): Promise<Item[]> {
    const now = this.#clock.now()
    const batch: Item[] = []
    let bytes = 0
    // Refused rows whose backoff is over first (they come from different calls: check the bytes too).
    const waiting: Item[] = []
    for (const i of this.#retry) {
      if (i.due <= now && batch.length < this.#sink.maxBatchRows && (batch.length === 0 || bytes + i.bytes <= this.#sink.maxBatchBytes)) {
        batch.push(i)
        bytes += i.bytes
      } else waiting.push(i)
    }
    this.#retry = waiting
    this.#retryBytes -= bytes
    if (this.#retryFull()) return batch
    let sliceStart = performance.now()
    while (batch.length < this.#sink.maxBatchRows) {
      let item = this.#held
      this.#held = null
      if (item === null) {
        // Loading and measuring rows is work in the thread that also makes begin() and end() durable: a batch of
        // thousands (the Parquet sink's) held them up for 150 ms (bench/audit-row.ts at 400 rows/s). Every
        // millisecond of it, the calls waiting go first.
        if (performance.now() - sliceStart >= ASSEMBLE_SLICE_MS) {
          await new Promise((resolve) => setImmediate(resolve))
          sliceStart = performance.now()
        }
        // Past the close deadline, take no more (what was taken goes back: #run).
        if (this.#expired()) break
        const ref = this.#spool.shift()
        if (ref === undefined) break
        try {
          item = await this.#prepare(ref)
        } catch (err) {
          this.#spool.unshift([ref])
          if (batch.length === 0) throw err
          this.#logger?.error({ code: (err as { code?: string }).code, err, id: ref.id }, 'cannot read an audit row from the spool; shipping the rest')
          break
        }
        if (item === null) continue
      }
      if (batch.length > 0 && bytes + item.bytes > this.#sink.maxBatchBytes) {
        this.#held = item
        break
      }
      batch.push(item)
      bytes += item.bytes
    }
    return batch
  }

  /** Loads a row and fits it to the sink; null when it had to be parked. */
  async #prepare (ref: SpoolRef): Promise<Item | null> {
    const row = await this.#spool.load(ref)
    const max = this.#sink.maxRowBytes
    let out = row
    let size = auditRowBytes(row)
    const done = new Set<string>()
    const encode = async (col: (typeof BODY_COLUMNS)[number]): Promise<void> => {
      out = { ...out, [col]: await encodeAuditBody(out[col] as string) }
      done.add(col)
    }
    for (const col of BODY_COLUMNS) {
      if (out[col]?.startsWith(AUDIT_BODY_GZIP_PREFIX) === true) await encode(col)
    }
    if (done.size > 0) size = auditRowBytes(out)
    if (size > max) {
      const largest = BODY_COLUMNS.filter((c) => out[c] !== null && !done.has(c)).sort((a, b) => (out[b] as string).length - (out[a] as string).length)
      for (const col of largest) {
        await encode(col)
        size = auditRowBytes(out)
        if (size <= max) break
      }
    }
    if (size > max) {
      const err = new PixProxyError(Errors.AUDIT_ROW_TOO_LARGE, [ref.id, size, this.#sink.name, max])
      this.#lastErrorCode = err.code
      this.#logger?.error({ code: err.code, id: ref.id, bytes: size, maxRowBytes: max }, err.message)
      await this.#spool.park(ref, row)
      this.#parked++
      return null
    }
    if (done.size > 0) this.#compressed++
    return { ref, row: out, bytes: size, attempts: 0, refusals: 0, due: -Infinity }
  }

  async #ship (batch: Item[]): Promise<void> {
    this.#calls++
    for (const i of batch) if (i.attempts > 0) this.#retried++
    let failed: Set<number>
    this.#inSink = true
    try {
      const res = await this.#sink.write(batch.map((i) => i.row))
      failed = this.#failedIndexes(res.failed, batch.length)
    } catch (err) {
      this.#failedCalls++
      this.#attempt++
      // Due as they are: they go again after the pipeline's pause, not after one of their own.
      for (const i of batch) i.attempts++
      this.#requeue(batch)
      const e = new PixProxyError(Errors.AUDIT_SINK_FAILED, [this.#sink.name, batch.length, message(err)], { cause: err })
      this.#lastErrorCode = (err as { code?: string }).code ?? e.code
      this.#logger?.warn({ code: this.#lastErrorCode, err, rows: batch.length, attempt: this.#attempt }, e.message)
      return
    } finally {
      this.#inSink = false
    }
    const accepted = batch.filter((_, i) => !failed.has(i))
    const again = batch.filter((_, i) => failed.has(i))
    // Nothing taken, and not only rows known to be refused on their own: the sink is failing (throttled, or an
    // outage answered record by record), not the rows.
    const sinkFailing = accepted.length === 0 && again.some((i) => i.refusals === 0)
    const now = this.#clock.now()
    for (const i of again) {
      i.attempts++
      if (sinkFailing && i.refusals === 0) continue
      i.refusals++
      i.due = now + this.#jitter(i.refusals)
    }
    // Queued before the acknowledgement below, which may throw: they must not be lost from the loop meanwhile.
    this.#requeue(again)
    // The sink took rows: it works, whatever the local acknowledgement below takes and whatever it refused.
    if (accepted.length > 0) this.#attempt = 0
    else if (sinkFailing) this.#attempt++
    if (again.length > 0) {
      this.#partial++
      this.#lastErrorCode = Errors.AUDIT_SINK_FAILED.code
      const most = again.reduce((m, i) => Math.max(m, i.refusals), 0)
      if (sinkFailing) this.#logger?.warn({ code: Errors.AUDIT_SINK_FAILED.code, sink: this.#sink.name, failed: again.length, rows: batch.length, attempt: this.#attempt }, 'audit sink refused every row; backing off')
      else this.#logger?.warn({ code: Errors.AUDIT_SINK_FAILED.code, sink: this.#sink.name, failed: again.length, rows: batch.length, refusals: most }, 'audit sink refused some rows; retrying those on their own backoff')
    }
    if (accepted.length > 0) {
      this.#shipped += accepted.length
      this.#lastShippedAt = Date.now()
      await this.#spool.ack(accepted.map((i) => i.ref))
    }
  }

  #failedIndexes (failed: readonly number[], n: number): Set<number> {
    const out = new Set<number>()
    for (const i of failed) {
      if (Number.isInteger(i) && i >= 0 && i < n) out.add(i)
      else this.#logger?.error({ code: Errors.INTERNAL.code, sink: this.#sink.name, index: i, rows: n }, 'audit sink reported a failed index outside the batch; ignored')
    }
    return out
  }
}

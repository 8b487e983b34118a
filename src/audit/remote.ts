/**
 * The audit trail as the request path sees it: an AuditJournal whose spool, pipeline and sink run in a worker
 * thread (worker.ts). Measured reason: in the event loop, auditing cost ~0.7-0.9 ms of main-thread CPU per request
 * (framing, spool bookkeeping, Firehose/Parquet encoding) and its rows, alive until shipped, were promoted and
 * died in the old generation: major GCs (10-40 ms pauses) appeared only with auditing on, and every request in
 * flight waited through them. In the worker that work and its garbage are on another thread; the event loop only
 * posts each half and waits for the reply saying it is durable.
 *
 * Protocol (structured clone over the worker's port; each direction batches what one tick produced):
 *   to the worker   { calls: [{ k, op: 'begin', row } | { k, op: 'end', id, half } | { k, op: 'status' } | { k, op: 'close', deadlineMs }] }
 *   from it         { t: 'ready', status } | { t: 'open-failed', error } | { t: 'replies', replies: [{ k, error, value? }] } | { t: 'log', level, obj, msg }
 * If the worker dies, every pending and later call fails with AUDIT_WORKER_FAILED (503): requests are refused,
 * never sent unaudited; what was durable stays in the spool for the next start. If it stops answering (stuck, e.g.
 * in an fdatasync on a file system that no longer answers) while calls wait on it, a watchdog declares it failed
 * after STUCK_AFTER_MS with AUDIT_WORKER_UNRESPONSIVE: the waiting calls and every later one are refused the same
 * way (a request whose begin never became durable is never sent, not even if the thread comes back later), and
 * the failure listeners stop the proxy so that the orchestrator replaces it, as for a dead thread.
 */
import { Worker } from 'node:worker_threads'
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { AuditJournal, AuditSettings, AuditStatus } from './service.ts'
import type { AuditLogger, AuditRequestHalf, AuditResponseHalf } from './spool.ts'
import { revive, whenReady } from './thread.ts'
import type { WireError } from './thread.ts'

export type Call =
  | { readonly k: number, readonly op: 'begin', readonly row: AuditRequestHalf }
  | { readonly k: number, readonly op: 'end', readonly id: string, readonly half: AuditResponseHalf }
  | { readonly k: number, readonly op: 'status' }
  | { readonly k: number, readonly op: 'close', readonly deadlineMs: number }
/** A call without its key (Omit over each member of the union). */
type CallBody<C = Call> = C extends Call ? Omit<C, 'k'> : never
export interface ToWorker { readonly calls: readonly Call[] }
export interface Reply { readonly k: number, readonly error: WireError | null, readonly value?: unknown }
export type FromWorker =
  | { readonly t: 'ready', readonly status: AuditStatus }
  | { readonly t: 'open-failed', readonly error: WireError }
  | { readonly t: 'replies', readonly replies: readonly Reply[] }
  | { readonly t: 'log', readonly level: 'info' | 'warn' | 'error', readonly obj: object, readonly msg: string }

/**
 * Calls waiting with nothing at all heard from the thread for this long mean it is stuck. A durable append takes
 * about a millisecond here and tens on EFS; the bound is far above a slow disk's worst flush and a loaded machine's
 * scheduling stalls, and below what a bank core waits for an answer.
 */
const STUCK_AFTER_MS = 30_000

// Compiled to dist/, this module is remote.js and its worker worker.js.
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url)

interface Pending { resolve (v: unknown): void, reject (e: Error): void }

export class AuditWorker implements AuditJournal {
  readonly #worker: Worker
  readonly #pending = new Map<number, Pending>()
  #next = 0
  #outbox: Call[] = []
  #failure: PixProxyError | null = null
  readonly #failureListeners: Array<(err: PixProxyError) => void> = []
  #closing: Promise<{ shipped: number, left: number }> | null = null
  readonly #exited: Promise<void>
  #ended = false
  /** performance.now() when the thread was last heard from, or when calls started waiting on a quiet thread. */
  #lastHeard = performance.now()
  readonly #watchdog: NodeJS.Timeout

  private constructor (worker: Worker, logger: AuditLogger, stuckAfterMs: number) {
    this.#worker = worker
    this.#exited = new Promise((resolve) => worker.once('exit', () => { this.#ended = true; resolve() }))
    const every = Math.max(10, Math.min(1_000, Math.floor(stuckAfterMs / 4)))
    let lastTick = performance.now()
    this.#watchdog = setInterval(() => {
      const now = performance.now()
      const late = now - lastTick > every * 2
      lastTick = now
      // Nothing waits (the quiet does not count), or this thread was itself held up (replies may sit unread in its
      // queue): start counting again from now.
      if (this.#pending.size === 0 || late) { this.#lastHeard = now; return }
      if (now - this.#lastHeard > stuckAfterMs) {
        this.#fail(new PixProxyError(Errors.AUDIT_WORKER_UNRESPONSIVE, [stuckAfterMs]), logger)
        // Ended as soon as it can be (a thread in a blocking syscall stops when it returns), so that a thread that
        // comes back writes nothing more; what it made durable stays in the spool.
        void this.#worker.terminate()
      }
    }, every)
    this.#watchdog.unref()
    worker.on('message', (m: FromWorker) => {
      this.#lastHeard = performance.now()
      if (m.t === 'replies') {
        for (const r of m.replies) {
          const p = this.#pending.get(r.k)
          if (p === undefined) continue
          this.#pending.delete(r.k)
          if (r.error === null) p.resolve(r.value)
          else p.reject(revive(r.error))
        }
      } else if (m.t === 'log') {
        logger[m.level](m.obj, m.msg)
      }
    })
    const died = (why: string): void => {
      if (this.#closing !== null && this.#pending.size === 0) return
      this.#fail(new PixProxyError(Errors.AUDIT_WORKER_FAILED, [why]), logger)
    }
    worker.on('error', (err) => { died(err.message) })
    worker.on('exit', (code) => { died(`exited with code ${code}`) })
  }

  /**
   * Starts the worker, which opens the spool (replaying it) and the sink. `workerUrl` replaces the thread's code
   * (tests: a thread that stops answering).
   * @throws the error opening them raised (AUDIT_SPOOL_LOCKED, AUDIT_STORE_OPEN…), or AUDIT_WORKER_FAILED.
   */
  static async start (audit: AuditSettings, logger: AuditLogger, o: { workerUrl?: URL, stuckAfterMs?: number } = {}): Promise<{ worker: AuditWorker, status: AuditStatus }> {
    const worker = new Worker(o.workerUrl ?? WORKER_URL, { workerData: { audit, blockingIo: true }, name: 'pix-audit' })
    const ready = await whenReady<Extract<FromWorker, { t: 'ready' }>>(worker, {
      failed: (why, cause) => new PixProxyError(Errors.AUDIT_WORKER_FAILED, [why], { cause }),
      // The thread's log lines while it opens (the spool's replay) go to this thread's logger, as later ones do.
      skip: (m) => {
        const log = m as FromWorker
        if (log.t !== 'log') return false
        logger[log.level](log.obj, log.msg)
        return true
      }
    })
    return { worker: new AuditWorker(worker, logger, o.stuckAfterMs ?? STUCK_AFTER_MS), status: ready.status }
  }

  /**
   * Whether the thread has ended. One that has not after terminate() is stuck in a system call (an fdatasync on a file
   * system that stopped answering): process.exit() would wait for it forever (see lifecycle.ts, exitOrKill).
   */
  get ended (): boolean {
    return this.#ended
  }

  /** Resolves once the thread has ended (never, for one stuck in a system call). */
  async whenEnded (): Promise<void> {
    await this.#exited
  }

  /** The error that stopped the worker, or null while it runs. */
  get failure (): PixProxyError | null {
    return this.#failure
  }

  /**
   * Ends the thread at once, flushing nothing: what a crash of the thread looks like (for drills and tests). What
   * was durable stays in the spool; pending calls fail with AUDIT_WORKER_FAILED.
   */
  async abort (): Promise<void> {
    await this.#worker.terminate()
    await this.#exited
  }

  /** `listener` is called once if the worker stops other than by close() (at once if it already has). */
  onFailure (listener: (err: PixProxyError) => void): void {
    if (this.#failure !== null) listener(this.#failure)
    else this.#failureListeners.push(listener)
  }

  #fail (err: PixProxyError, logger: AuditLogger): void {
    if (this.#failure !== null) return
    this.#failure = err
    clearInterval(this.#watchdog)
    logger.error({ err: err.message, pending: this.#pending.size }, 'the audit worker stopped: requests are refused')
    for (const p of this.#pending.values()) p.reject(err)
    this.#pending.clear()
    for (const listener of this.#failureListeners.splice(0)) listener(err)
  }

  #call<T> (call: CallBody): Promise<T> {
    if (this.#failure !== null) return Promise.reject(this.#failure)
    if (this.#closing !== null && call.op !== 'close') return Promise.reject(new PixProxyError(Errors.AUDIT_SPOOL_CLOSED))
    const k = this.#next++
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(k, { resolve: resolve as (v: unknown) => void, reject })
      if (this.#outbox.length === 0) queueMicrotask(() => { this.#flush() })
      this.#outbox.push({ ...call, k } as Call)
    })
  }

  #flush (): void {
    const calls = this.#outbox
    this.#outbox = []
    if (calls.length > 0 && this.#failure === null) this.#worker.postMessage({ calls } satisfies ToWorker)
  }

  /** Durable when it resolves. @throws the spool's error (AUDIT_SPOOL_FULL…) or AUDIT_WORKER_FAILED. */
  async begin (row: AuditRequestHalf): Promise<void> {
    await this.#call({ op: 'begin', row })
  }

  async end (id: string, half: AuditResponseHalf): Promise<void> {
    await this.#call({ op: 'end', id, half })
  }

  /**
   * A fresh snapshot from the worker, for readiness and metrics: they must answer even when the thread is stuck
   * (e.g. in an fdatasync on a file system that stopped answering).
   * @throws AUDIT_WORKER_FAILED when it is gone; AUDIT_WORKER_UNRESPONSIVE when it did not answer within timeoutMs.
   */
  async status (timeoutMs = 2_000): Promise<AuditStatus> {
    return await this.#callWithin<AuditStatus>({ op: 'status' }, timeoutMs)
  }

  /** #call, failing with AUDIT_WORKER_UNRESPONSIVE when no reply came within `ms` (a later reply is dropped). */
  async #callWithin<T> (call: CallBody, ms: number): Promise<T> {
    const k = this.#next
    const answer = this.#call<T>(call)
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        this.#pending.delete(k)
        reject(new PixProxyError(Errors.AUDIT_WORKER_UNRESPONSIVE, [ms]))
      }, ms)
    })
    try {
      return await Promise.race([answer, late])
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Ships what is ready within `deadlineMs`, closes sink and spool, ends the thread. Idempotent. A thread that has
   * not answered a second after the deadline is terminated (what it made durable stays in the spool).
   * @throws AUDIT_WORKER_UNRESPONSIVE in that case.
   */
  async close (deadlineMs: number): Promise<{ shipped: number, left: number }> {
    clearInterval(this.#watchdog) // close() has its own deadline
    this.#closing ??= (async () => {
      if (this.#failure !== null) {
        void this.#worker.terminate() // a thread declared stuck may still be alive: it must not outlive close()
        return { shipped: 0, left: 0 }
      }
      try {
        return await this.#callWithin<{ shipped: number, left: number }>({ op: 'close', deadlineMs }, deadlineMs + 1_000)
      } finally {
        // The worker ends by itself once its port is closed; terminate() is for one that does not.
        const t = setTimeout(() => { void this.#worker.terminate() }, 1_000)
        await this.#exited
        clearTimeout(t)
      }
    })()
    return await this.#closing
  }
}

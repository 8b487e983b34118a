/**
 * The process around a service, shared by the two entry points (src/server.ts: the proxy; src/gateway/server.ts: the
 * gateway): a configuration refused exits 78 (EX_CONFIG), a start-up that fails exits 1, each with one JSON line on
 * stderr; SIGTERM and SIGINT drain the service, then exit 0 (1 when the drain fails or the audit trail was lost);
 * a lost audit trail drains it too and exits 1; SIGHUP reloads. Only the entry points call these: with them, this is
 * the only place that exits the process.
 */
import { Errors } from '../core/errors.ts'

/** One JSON line on stderr: the error's code (`fallback` when it has none) and its message. */
function report (err: unknown, fallback: string): void {
  const e = err as { code?: string, message?: string }
  process.stderr.write(JSON.stringify({ error: e.code ?? fallback, message: e.message }) + '\n')
}

/**
 * Ends the process with `code`, unless a worker thread of it has not ended (`threadsEnded` false): process.exit() joins
 * every worker thread, and one stuck in a system call (the audit thread in an fdatasync on a file system that stopped
 * answering: what AUDIT_WORKER_UNRESPONSIVE declares) never returns to be ended, so the process would stay alive
 * forever, closed, deaf to SIGTERM (its JavaScript never runs again). That process kills itself instead (SIGKILL, exit
 * status 137 to its orchestrator), after one JSON line on stderr saying why; the stuck thread's durable rows stay in the
 * spool for the next start's replay, as after any crash.
 */
function exitOrKill (code: number, threadsEnded: boolean): void {
  if (threadsEnded) process.exit(code)
  process.stderr.write(JSON.stringify({ error: Errors.AUDIT_WORKER_UNRESPONSIVE.code, message: `a worker thread is stuck in a system call: process.exit(${code}) would wait for it forever; killing the process` }) + '\n')
  process.kill(process.pid, 'SIGKILL')
}

/** The configuration `load` builds; when it throws, the process exits 78 (EX_CONFIG) with the problem on stderr. */
export async function configOrExit<C> (load: () => C | Promise<C>): Promise<C> {
  try {
    return await load()
  } catch (err) {
    report(err, 'PIXPROXY_ERR_CONFIG_INVALID')
    process.exit(78) // EX_CONFIG
  }
}

/** The service `starting` resolves to; when it rejects, the process exits 1 with the error on stderr. */
export async function startOrExit<T> (starting: Promise<T>): Promise<T> {
  return await starting.catch((err: unknown) => {
    report(err, 'PIXPROXY_ERR_STARTUP')
    process.exit(1)
  })
}

/**
 * The worker threads of a service, as its shutdown sees them: its audit thread (src/audit/remote.ts, AuditWorker).
 */
export interface ServiceThreads {
  /** Whether the threads have ended. One that has not after it was told to is stuck in a system call (exitOrKill). */
  readonly ended: boolean
  /** The error that stopped them while the service ran (the audit trail lost), or null. */
  readonly failure: Error | null
  /** Resolves once the threads have ended (never, for one stuck in a system call). */
  whenEnded (): Promise<void>
  /**
   * Tells the threads to end, shipping what is ready within `deadlineMs` (what is left stays in the spool for the next
   * start). Idempotent: a close already under way (the service's own) is the one waited for.
   */
  close (deadlineMs: number): Promise<unknown>
}

/** What closeThenExit ends: the service, and how the entry point reports its shutdown. */
export interface Shutdown {
  /** Closes the service: requests in flight drain, then the audit trail closes (and with it its thread). */
  close (): Promise<void>
  /** The service's worker threads (null when it has none: the proxy with auditing off). */
  readonly threads: ServiceThreads | null
  /** The shutdown deadline (PIXPROXY_SHUTDOWN_TIMEOUT_MS, PIXGW_SHUTDOWN_TIMEOUT_MS), from the start of the close. */
  readonly deadlineMs: number
  /** Says why the close failed (its own error), before the exit 1. */
  failed (err: unknown): void
  /** Says that the deadline passed with the close or the threads not done, before the process exits 1 or kills itself. */
  late? (): void
}

let exiting: Promise<never> | null = null

/**
 * Past the deadline, how long a thread told to end has before it counts as stuck: AuditWorker.close(0) waits a second
 * for the thread's reply, then a second more before terminate(), which ends any thread that runs JavaScript at once.
 */
const THREAD_END_GRACE_MS = 3_000

/**
 * Closes the service within its deadline, then lets its threads end, then exits: the one shutdown of both entry
 * points, for a signal and for a lost audit trail alike. Once per process: a second call (the audit trail lost during
 * a signal's drain, or a signal during a lost trail's) waits for the first, whose exit status says what either knew.
 * - The close resolves: the process waits for the threads to end (process.exit joins every thread, and waits for
 *   them anyway: here the deadline still bounds it), then exits 0, or 1 when the threads stopped on a failure while
 *   the service ran or while it closed (the audit trail lost: the orchestrator is to start a fresh task).
 * - The close rejects: `failed` reports its error, and the process exits 1. It may have failed before it closed the
 *   audit trail, whose healthy thread would then never be told to end: it is closed here, shipping nothing more
 *   (the spool keeps what is left for the next start), so that the exit waits for that thread's end only, never for
 *   the deadline (whose line would then blame a stuck thread for the close's failure).
 * - The deadline passes first: `late`; the threads, if still running, are told to end (the drain may have overrun
 *   before it reached the audit trail); then exit 1, or SIGKILL (137) with its coded line on stderr when a thread has
 *   not ended THREAD_END_GRACE_MS later (stuck in a system call, it never will).
 */
export async function closeThenExit (s: Shutdown): Promise<never> {
  exiting ??= (async () => {
    const { threads } = s
    // Not unref'd: were nothing else to keep the event loop alive while a stuck thread is waited for, the process would
    // end by itself, and that end joins the thread too, forever.
    setTimeout(() => {
      try { s.late?.() } catch {}
      if (threads === null || threads.ended) exitOrKill(1, true)
      else {
        // A healthy thread that was never told to end (the drain itself overran: a slow backend call, a long ship)
        // ends once told, within the close's own bounds (a reply or terminate(), each within a second). Only a thread
        // still alive after THREAD_END_GRACE_MS is stuck in a system call: the SIGKILL and its line are for that one.
        threads.close(0).catch(() => {})
        const grace = setTimeout(() => { exitOrKill(1, threads.ended) }, THREAD_END_GRACE_MS)
        void threads.whenEnded().then(() => { clearTimeout(grace); exitOrKill(1, true) })
      }
    }, s.deadlineMs)
    let closed = true
    try {
      await s.close()
    } catch (err) {
      closed = false
      // A report that throws (an error without a message…) must not end this shutdown as an unhandled rejection.
      try { s.failed(err) } catch {}
      // Perhaps failed before it closed the audit trail: close it here, or the wait below lasts until the deadline.
      threads?.close(0).catch(() => {})
    }
    await threads?.whenEnded()
    // Read once the threads have ended: an audit trail lost during the close counts, though the call its listener made
    // came second (and only waits for this one).
    process.exit(closed && (threads === null || threads.failure === null) ? 0 : 1)
  })()
  return await exiting
}

/**
 * SIGTERM and SIGINT stop the service: the first one calls `stop` once (closeThenExit: the drain, then the exit).
 * Handled from before the service is up (an orchestrator may stop a task the moment it looks up): a signal during
 * start-up waits for it, then stops it. The drain deadline belongs in `stop` (it starts when the drain does: armed here
 * it would also count the rest of a start-up slowed by load). A start-up that never finishes is bounded as one without
 * a signal: by the orchestrator's stop timeout (its SIGKILL), or a second signal of the same kind (the default action,
 * these handlers being once-only).
 */
export function drainOnSignals<T> (running: Promise<T>, stop: (service: T, signal: NodeJS.Signals) => void): void {
  let stopping = false
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      if (stopping) return
      stopping = true
      void running.then((service) => { stop(service, signal) })
    })
  }
}

/**
 * SIGHUP runs `reload` on the service once it is up (certificate rotation: replace the files, then `kill -HUP`).
 * Handled from the start: SIGHUP's default action would end the process.
 */
export function reloadOnSighup<T> (running: Promise<T>, reload: (service: T) => Promise<unknown>): void {
  process.on('SIGHUP', () => { void running.then(reload) })
}

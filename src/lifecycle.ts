/**
 * The process around a service, shared by the two entry points (src/server.ts: the proxy; src/gateway/server.ts: the
 * gateway): a configuration refused exits 78 (EX_CONFIG), a start-up that fails exits 1, each with one JSON line on
 * stderr; SIGTERM and SIGINT drain the service, then exit 0 (1 when the drain fails); SIGHUP reloads. Only the entry
 * points call these: with them, this is the only place that exits the process.
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
export function exitOrKill (code: number, threadsEnded: boolean): void {
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
 * SIGTERM and SIGINT stop the service: the first one runs `drain` once, then the process exits 0, or 1 when `drain`
 * rejects (after `failed` says why). Handled from before the service is up (an orchestrator may stop a task the moment
 * it looks up): a signal during start-up waits for it, then drains. A drain deadline belongs in `drain` (it starts
 * when the drain does: armed here it would also count the rest of a start-up slowed by load). A start-up that never
 * finishes is bounded as one without a signal: by the orchestrator's stop timeout (its SIGKILL), or a second signal of
 * the same kind (the default action, these handlers being once-only).
 */
export function drainOnSignals<T> (running: Promise<T>, drain: (service: T, signal: NodeJS.Signals) => Promise<void>, failed: (service: T, err: unknown) => void): void {
  let stopping = false
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      if (stopping) return
      stopping = true
      void running.then(async (service) => {
        try {
          await drain(service, signal)
        } catch (err) {
          failed(service, err)
          process.exit(1)
        }
        process.exit(0)
      })
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

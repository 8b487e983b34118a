/**
 * What the audit trail's threads share (the audit worker: remote.ts and worker.ts; the ship thread: ship.ts and
 * ship-worker.ts): an error as it crosses a thread's port, and a thread's start, whose first message says whether
 * what it runs has opened ({ t: 'ready', … }) or why not ({ t: 'open-failed', error }).
 */
import type { Worker } from 'node:worker_threads'
import { errorSpec, PixProxyError } from '../../core/errors.ts'
import type { AuditClock } from './clock.ts'

export interface WireError { readonly code: string | null, readonly statusCode: number | null, readonly message: string }

/** An error as it crosses a thread's port: its code, HTTP status and message. */
export function toWire (err: unknown): WireError {
  const e = err as { code?: unknown, statusCode?: unknown, message?: unknown }
  return {
    code: typeof e.code === 'string' ? e.code : null,
    statusCode: typeof e.statusCode === 'number' ? e.statusCode : null,
    message: typeof e.message === 'string' ? e.message : String(err)
  }
}

/** The error raised in another thread, as the same PixProxyError (code, HTTP status, message). */
export function revive (e: WireError): Error {
  if (e.code === null) return new Error(e.message)
  return new PixProxyError({ code: e.code, statusCode: e.statusCode ?? 500, message: '%s', outcome: errorSpec(e.code)?.outcome ?? 'not-sent' }, [e.message])
}

/**
 * Waits, right after `new Worker(…)`, for the thread's first message, and resolves with it when it is `ready`.
 * Otherwise the thread is terminated, then: `open-failed` throws the error the thread sent (revived: same code and
 * status); a thread that errs or exits first, or whose first message is another, throws `failed(why, cause)`.
 * Messages `skip` takes (returns true for: the audit worker's log lines) do not count as the first. From here on an
 * 'error' of the thread is never thrown in this one (a Worker's 'error' with no listener is, and would end it): the
 * caller's own 'exit' and 'error' listeners see a thread that ends (one that ended before they could, right after its
 * `ready`, is a start that failed).
 */
export async function whenReady<R extends { readonly t: 'ready' }> (worker: Worker, o: {
  failed: (why: string, cause?: unknown) => Error
  skip?: (m: { readonly t: string }) => boolean
  /**
   * A bound on the start (the ship thread's: opening a sink that never returns would hang the write waiting on it).
   * Past it the thread is terminated and unref'd but not waited for (a thread stuck in native code ends only when
   * that call returns), and the start fails with `failed('no answer within N ms, terminated')`.
   */
  deadline?: { readonly ms: number, readonly clock: AuditClock }
}): Promise<R> {
  worker.on('error', () => {})
  let onMessage: (m: { readonly t: string }) => void = () => {}
  let onError: (err: Error) => void = () => {}
  let onExit: (code: number) => void = () => {}
  let cancel = (): void => {}
  let hung = false
  let exited: number | null = null
  const first = await new Promise<{ readonly t: string }>((resolve, reject) => {
    onMessage = (m) => { if (o.skip?.(m) !== true) resolve(m) }
    onError = reject
    onExit = (code) => {
      exited = code
      reject(new Error(`exited with code ${code} while starting`))
    }
    worker.on('message', onMessage).once('error', onError).once('exit', onExit)
    if (o.deadline !== undefined) {
      const { ms } = o.deadline
      cancel = o.deadline.clock.timer(() => {
        hung = true
        reject(new Error(`no answer within ${ms} ms, terminated`))
      }, ms, false)
    }
  }).catch(async (err: unknown) => {
    if (hung) {
      worker.unref()
      worker.terminate().catch(() => {})
    } else await worker.terminate()
    throw o.failed((err as Error).message, err)
  }).finally(() => {
    cancel()
    worker.off('message', onMessage).off('error', onError).off('exit', onExit)
  })
  // A thread that ended right after its `ready`, before this thread read it, has both delivered at once (Node drains
  // its port, then emits 'exit', with no microtask between): that 'exit' came before the caller could listen for it,
  // and its thread-ended handling would never run (calls waiting forever, close() waiting for an 'exit' already gone).
  if (first.t === 'ready' && exited === null) return first as R
  if (first.t === 'ready') throw o.failed(`exited with code ${String(exited)} right after it was ready`)
  await worker.terminate()
  if (first.t === 'open-failed') throw revive((first as { readonly t: string, readonly error: WireError }).error)
  throw o.failed(`its first message was ${first.t}`)
}

/**
 * The time source of the audit pipeline (pipeline.ts: flush timer, retry backoff, close deadline) and of the
 * spool's readiness stamps (spool.ts: `readyAt`, which the flush timer measures a row's age against).
 *
 * Production uses `realClock` (performance.now() and setTimeout). Tests give both the same manual clock so that
 * "waits flushMs", "backs off 100, 200, 400 ms" and "stops at its deadline" are checked by moving time
 * themselves, not by racing a loaded machine's timers (test/audit/fixtures/clock.ts).
 */
export interface AuditClock {
  /** Monotonic milliseconds. */
  now: () => number
  /**
   * Calls `fn` once, `ms` from now (at once for ms <= 0); returns a function that cancels it. `keepAlive` false:
   * the timer alone does not keep the process alive (unref'd).
   */
  timer: (fn: () => void, ms: number, keepAlive: boolean) => () => void
}

export const realClock: AuditClock = Object.freeze({
  now: () => performance.now(),
  timer: (fn: () => void, ms: number, keepAlive: boolean): () => void => {
    const t = setTimeout(fn, Math.max(0, ms))
    if (!keepAlive) t.unref()
    return () => { clearTimeout(t) }
  }
})

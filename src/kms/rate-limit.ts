/**
 * The client-side rate limit in front of KMS's Sign (kms/guard.ts): at most `perSecond` calls a second, bursts of
 * `burst`, the rest waiting in a bounded FIFO queue for their turn.
 *
 * It is a GCRA (the generic cell rate algorithm: a token bucket kept as one "theoretical arrival time"), so the
 * moment each waiter gets its turn is known when it arrives: a sign whose turn would come after its deadline, or
 * that finds the queue full, is refused at once (NOT SENT, with the wait as Retry-After) instead of waiting only to
 * be refused. Unlike ICOM's slots (icom/limiter.ts), whose release depends on BACEN, nothing here depends on KMS.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { AuditClock as Clock } from '../audit/clock.ts'

export interface SignRateLimitOptions {
  /** Turns per second (PIXPROXY_KMS_MAX_SIGNS_PER_SEC). */
  readonly perSecond: number
  /** Turns that may be taken at once after a quiet spell (at least 1). */
  readonly burst: number
  /** Waiters admitted (PIXPROXY_KMS_QUEUE_MAX); a turn beyond them is refused. */
  readonly queueMax: number
  /** Longest wait for a turn (PIXPROXY_KMS_QUEUE_TIMEOUT_MS). */
  readonly queueTimeoutMs: number
  readonly clock: Clock
}

interface Waiter {
  resolve (): void
  reject (err: Error): void
}

/** Clock jitter below this is "now" (a timer armed for t fires at t, which float arithmetic may put a hair before). */
const EPSILON_MS = 1e-6

/** Whole milliseconds of a wait, ignoring float noise (30000.000000004 ms is 30000 ms). */
export function wholeMs (ms: number): number {
  return Math.max(0, Math.ceil(ms - EPSILON_MS))
}

/** Seconds for Retry-After from a wait in ms: whole seconds, at least 1. */
export function retryAfterSeconds (ms: number): number {
  return Math.max(1, Math.ceil(wholeMs(ms) / 1000))
}

export class SignRateLimit {
  readonly #o: SignRateLimitOptions
  /** Milliseconds between two turns at the steady rate. */
  readonly #interval: number
  /** How far ahead of the steady schedule a burst may run. */
  readonly #tolerance: number
  /** Theoretical arrival time: when the next turn would be due at the steady rate. */
  #tat: number
  readonly #queue: Waiter[] = []
  #cancelTimer: (() => void) | null = null
  #closed = false

  constructor (o: SignRateLimitOptions) {
    this.#o = o
    this.#interval = 1000 / o.perSecond
    this.#tolerance = (Math.max(1, o.burst) - 1) * this.#interval
    this.#tat = o.clock.now()
  }

  /** Signs waiting for their turn. */
  get queued (): number { return this.#queue.length }

  /**
   * Resolves when the caller may call KMS. `latest`: clock time after which a turn is of no use (the sign's
   * deadline). `admission`: the first attempt of a sign, bounded by the queue size; a retry of a sign already
   * admitted is bounded only by time (it was counted once).
   * @throws PixProxyError KMS_QUEUE_FULL or KMS_QUEUE_TIMEOUT at once, with the wait as retryAfterSeconds;
   *   SHUTTING_DOWN once closed.
   */
  async take (o: { latest?: number, admission?: boolean } = {}): Promise<void> {
    if (this.#closed) throw new PixProxyError(Errors.SHUTTING_DOWN)
    const now = this.#o.clock.now()
    // The turn of the n-th waiter (the newcomer is the last): one interval after the one before it.
    const turn = Math.max(now, this.#tat + this.#queue.length * this.#interval - this.#tolerance)
    const wait = turn - now
    if (this.#queue.length === 0 && wait <= EPSILON_MS) {
      this.#grant(now)
      return
    }
    if ((o.admission ?? true) && this.#queue.length >= this.#o.queueMax) {
      throw new PixProxyError(Errors.KMS_QUEUE_FULL, [this.#queue.length], { retryAfterSeconds: retryAfterSeconds(wait) })
    }
    const limit = Math.min(now + this.#o.queueTimeoutMs, o.latest ?? Infinity)
    if (turn > limit + EPSILON_MS) {
      throw new PixProxyError(Errors.KMS_QUEUE_TIMEOUT, [wholeMs(wait), this.#o.perSecond, this.#o.queueTimeoutMs], { retryAfterSeconds: retryAfterSeconds(wait) })
    }
    await new Promise<void>((resolve, reject) => {
      this.#queue.push({ resolve, reject })
      this.#arm()
    })
  }

  /** Refuses every waiter (SHUTTING_DOWN) and every later take. */
  close (): void {
    this.#closed = true
    this.#cancelTimer?.()
    this.#cancelTimer = null
    for (const w of this.#queue.splice(0)) w.reject(new PixProxyError(Errors.SHUTTING_DOWN))
  }

  #grant (now: number): void {
    this.#tat = Math.max(this.#tat, now) + this.#interval
  }

  /** Grants the turns that are due, then waits (one timer) for the next. */
  #pump (): void {
    const now = this.#o.clock.now()
    while (this.#queue.length > 0 && now + EPSILON_MS >= this.#tat - this.#tolerance) {
      this.#grant(now)
      ;(this.#queue.shift() as Waiter).resolve()
    }
    this.#arm()
  }

  #arm (): void {
    if (this.#cancelTimer !== null || this.#queue.length === 0 || this.#closed) return
    // Whole milliseconds, at least 1: a real timer fires no earlier than that, and #pump re-arms if it was early.
    const ms = Math.max(1, Math.ceil(this.#tat - this.#tolerance - this.#o.clock.now()))
    this.#cancelTimer = this.#o.clock.timer(() => {
      this.#cancelTimer = null
      this.#pump()
    }, ms, false)
  }
}

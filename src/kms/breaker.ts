/**
 * The circuit breaker in front of KMS's Sign (kms/guard.ts). After `failures` calls in a row that found KMS
 * unavailable (KMS_UNAVAILABLE: a 5xx, KMSInternalException, KeyUnavailableException, a refused connection, a
 * timeout, the sign deadline), signing is paused for `cooldownMs`: callers get KMS_CIRCUIT_OPEN (NOT SENT) at once,
 * with the rest of the pause as Retry-After, instead of each waiting for its own timeout against a KMS that is down.
 * Then one call is let through as a probe (half-open): an answer from KMS closes the circuit, another failure opens
 * it for another cool-down.
 *
 * Only unavailability counts. A throttle, a disabled key or a refused permission is an answer: KMS is up, and the
 * breaker would only hide the real code from the caller; such an answer resets the count.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { AuditClock as Clock } from '../audit/clock.ts'
import { retryAfterSeconds, wholeMs } from './rate-limit.ts'

export type CircuitState = 'closed' | 'open' | 'half-open'

export interface CircuitBreakerOptions {
  /** Unavailable calls in a row that open the circuit (PIXPROXY_KMS_BREAKER_FAILURES). */
  readonly failures: number
  /** How long it stays open before a probe (PIXPROXY_KMS_BREAKER_COOLDOWN_MS). */
  readonly cooldownMs: number
  readonly clock: Clock
  /** Each change of state, with what caused it (for the log). */
  readonly onChange?: (state: CircuitState, detail: string) => void
}

/** What a call admitted by the breaker hands back when it ends. */
export interface Permit { readonly probe: boolean }

/** How a call ended, for the breaker: KMS answered (whatever it said), KMS was unavailable, or KMS was never called. */
export type CallVerdict = 'answered' | 'unavailable' | 'not-called'

export class CircuitBreaker {
  readonly #o: CircuitBreakerOptions
  #consecutive = 0
  #last = ''
  /** Clock time the open circuit lets a probe through; null while closed. */
  #openUntil: number | null = null
  #probing = false

  constructor (o: CircuitBreakerOptions) {
    this.#o = o
  }

  get state (): CircuitState {
    if (this.#openUntil === null) return 'closed'
    return this.#o.clock.now() >= this.#openUntil ? 'half-open' : 'open'
  }

  /** Unavailable calls in a row so far. */
  get consecutiveFailures (): number { return this.#consecutive }

  /**
   * Before a call to KMS. Closed: any call. Half-open: one probe at a time.
   * @throws PixProxyError KMS_CIRCUIT_OPEN while open, or while a probe is under way.
   */
  admit (): Permit {
    const state = this.state
    if (state === 'closed') return { probe: false }
    if (state === 'half-open' && !this.#probing) {
      this.#probing = true
      this.#o.onChange?.('half-open', 'cool-down over: one sign probes KMS')
      return { probe: true }
    }
    throw this.openError()
  }

  /** The refusal a caller gets while the circuit is open (also readiness's verdict). */
  openError (): PixProxyError {
    const now = this.#o.clock.now()
    const left = this.#openUntil === null ? 0 : wholeMs(this.#openUntil - now)
    const when = left > 0 ? `next attempt in ${left} ms` : 'a probe sign is under way'
    return new PixProxyError(Errors.KMS_CIRCUIT_OPEN, [this.#consecutive, this.#last, when], { retryAfterSeconds: retryAfterSeconds(left) })
  }

  /** After the call a permit was given for. */
  record (permit: Permit, verdict: CallVerdict, detail = ''): void {
    if (permit.probe) this.#probing = false
    if (verdict === 'not-called') return
    if (verdict === 'answered') {
      this.#consecutive = 0
      if (this.#openUntil !== null) {
        this.#openUntil = null
        this.#o.onChange?.('closed', permit.probe ? 'the probe sign got an answer from KMS' : 'a sign got an answer from KMS')
      }
      return
    }
    this.#consecutive++
    this.#last = detail
    // A failed probe opens it again; otherwise the threshold does, once (later failures of calls admitted before it
    // opened do not extend the pause).
    if (permit.probe || (this.#openUntil === null && this.#consecutive >= this.#o.failures)) {
      this.#openUntil = this.#o.clock.now() + this.#o.cooldownMs
      this.#o.onChange?.('open', `${this.#consecutive} failures in a row (last: ${detail}); paused for ${this.#o.cooldownMs} ms`)
    }
  }
}

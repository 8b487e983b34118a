/**
 * What stands between the request path and AWS KMS: a {@link Signer} decorator around the KMS signer
 * (kms/signer.ts), so the XMLDSig signer and the routes are unchanged. Per signature, in this order:
 *
 * 1. the circuit breaker (breaker.ts): while KMS has failed `breakerFailures` times in a row, KMS_CIRCUIT_OPEN at once;
 * 2. the rate limit (rate-limit.ts): at most `maxSignsPerSec` Sign calls a second from this task (KMS's quota for RSA
 *    signing is per account and region, 500/s by default, shared by every task), the excess waiting in a bounded
 *    queue; KMS_QUEUE_FULL or KMS_QUEUE_TIMEOUT at once when the turn would come too late;
 * 3. the bound on calls in flight (in-flight.ts): at most `maxInFlight` Sign calls at KMS at once, fewer than the KMS
 *    client's sockets, so that no call waits for a socket inside the SDK, where the wait would count against the
 *    connect timeout and look like an outage; a sign that finds no place free within PIXPROXY_KMS_QUEUE_TIMEOUT_MS of
 *    its arrival (its whole wait, turn included) is refused with KMS_CONNECTIONS_BUSY, which the breaker ignores;
 * 4. the Sign call, aborted at the sign's deadline (`signDeadlineMs` from arrival, queue included);
 * 5. on ThrottlingException (KMS_THROTTLED), another attempt after a pause of full jitter (random in
 *    [0, min(cap, base * 2^(n-1))]), each attempt taking its own turn from the rate limit, up to `maxAttempts` and only
 *    while the pause and the turn fit before the deadline; otherwise the throttle is the answer.
 *
 * Every refusal is a PixProxyError whose outcome is NOT SENT, with a Retry-After where the wait is known.
 *
 * INVARIANT (what makes retrying safe): a signature is an input of the message sent to BACEN, so every call of
 * `sign` ends before anything of that message leaves. The routes (routes/dict.ts, routes/spi.ts) sign the whole
 * document, then hand the signed text to the forwarding pipeline; the guard is reachable only through the XmlSigner
 * built in plugins/crypto.ts. A Sign attempted twice costs KMS quota, never a second payment. Anything that signed
 * after a send (signing while streaming a body upstream, say) would break this, and retries would then have to go.
 * test/e2e/kms-guard.test.ts checks it: every Sign of a retried request is answered before BACEN sees the message.
 */
import type { KeyObject } from 'node:crypto'
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { Signer } from '../../core/signer.ts'
import { realClock } from '../audit/clock.ts'
import type { AuditClock as Clock } from '../audit/clock.ts'
import { CircuitBreaker } from './breaker.ts'
import { InFlightLimit } from './in-flight.ts'
import type { CallVerdict, CircuitState, Permit } from './breaker.ts'
import { SignRateLimit } from './rate-limit.ts'

/** What the guard needs of the signer it fronts: kms/signer.ts's KmsSigner (tests: a fake). */
export interface GuardedSigner extends Signer {
  /** `signal` aborts the call (the sign's deadline); the rejection is then whatever the signer makes of the abort. */
  sign (data: Uint8Array, options?: { signal?: AbortSignal }): Promise<Buffer>
  /** Readiness of the key (kms/signer.ts: DescribeKey, cached). */
  check (): Promise<string>
  readonly keyArn: string
  close (): void
}

/** One call to KMS's Sign ended: with a signature, a throttle, or another error. */
export type AttemptResult = 'ok' | 'throttled' | 'error'

/** Hooks for metrics and logs (plugins/crypto.ts); all optional. */
export interface KmsGuardObserver {
  /** One Sign call to KMS ended after `seconds`. */
  attempt? (seconds: number, result: AttemptResult): void
  /** A throttled sign is about to be tried again. */
  retry? (): void
  /** The circuit changed state. */
  circuit? (state: CircuitState, detail: string): void
}

export interface KmsGuardOptions {
  /** PIXPROXY_KMS_MAX_SIGNS_PER_SEC. */
  readonly maxSignsPerSec: number
  /** PIXPROXY_KMS_QUEUE_MAX. */
  readonly queueMax: number
  /** PIXPROXY_KMS_QUEUE_TIMEOUT_MS. */
  readonly queueTimeoutMs: number
  /** PIXPROXY_KMS_SIGN_DEADLINE_MS: the whole of one signature, queue, attempts and pauses included. */
  readonly signDeadlineMs: number
  /** PIXPROXY_KMS_MAX_ATTEMPTS: Sign calls per signature (1 = no retry of a throttle). */
  readonly maxAttempts: number
  /** PIXPROXY_KMS_BREAKER_FAILURES. */
  readonly breakerFailures: number
  /** PIXPROXY_KMS_BREAKER_COOLDOWN_MS. */
  readonly breakerCooldownMs: number
  /**
   * Sign calls at KMS at once: fewer than the KMS client's sockets (kms/client.ts KMS_SIGNS_IN_FLIGHT), or calls
   * beyond them wait for a socket where the SDK's connect timeout runs.
   */
  readonly maxInFlight: number
  /** First retry pause bound. Default 25 ms. */
  readonly backoffBaseMs?: number
  /** Largest retry pause bound. Default 1000 ms. */
  readonly backoffCapMs?: number
  /** Time and timers (tests: a manual clock). Default the process's monotonic clock. */
  readonly clock?: Clock
  /** Jitter source in [0, 1). Default Math.random. */
  readonly random?: () => number
  readonly observer?: KmsGuardObserver
}

export interface KmsGuardStats {
  /** Signatures waiting for their turn under the rate limit. */
  readonly queued: number
  /** Sign calls to KMS under way. */
  readonly inFlight: number
  /** Signatures that have their turn and wait for a Sign call in flight to end (`maxInFlight`). */
  readonly waitingForCall: number
  readonly circuit: CircuitState
  /** Calls in a row that found KMS unavailable. */
  readonly consecutiveFailures: number
}

/** A tenth of a second's worth of signs may go at once: KMS's quota is per second, and a smooth rate stays under it. */
const BURST_SECONDS = 0.1

const isCode = (err: unknown, code: string): boolean => err instanceof PixProxyError && err.code === code

export class KmsGuard implements Signer {
  readonly #inner: GuardedSigner
  readonly #o: KmsGuardOptions
  readonly #clock: Clock
  readonly #random: () => number
  readonly #limit: SignRateLimit
  readonly #breaker: CircuitBreaker
  readonly #calls: InFlightLimit

  constructor (inner: GuardedSigner, o: KmsGuardOptions) {
    this.#inner = inner
    this.#o = o
    this.#clock = o.clock ?? realClock
    this.#random = o.random ?? Math.random
    this.#limit = new SignRateLimit({
      perSecond: o.maxSignsPerSec,
      burst: Math.max(1, Math.floor(o.maxSignsPerSec * BURST_SECONDS)),
      queueMax: o.queueMax,
      queueTimeoutMs: o.queueTimeoutMs,
      clock: this.#clock
    })
    this.#breaker = new CircuitBreaker({
      failures: o.breakerFailures,
      cooldownMs: o.breakerCooldownMs,
      clock: this.#clock,
      onChange: (state, detail) => o.observer?.circuit?.(state, detail)
    })
    this.#calls = new InFlightLimit(o.maxInFlight, this.#clock)
  }

  get publicKey (): KeyObject { return this.#inner.publicKey }
  get description (): string { return this.#inner.description }
  get keyArn (): string { return this.#inner.keyArn }

  stats (): KmsGuardStats {
    return { queued: this.#limit.queued, inFlight: this.#calls.inFlight, waitingForCall: this.#calls.waiting, circuit: this.#breaker.state, consecutiveFailures: this.#breaker.consecutiveFailures }
  }

  /**
   * Signs through KMS within the limits above.
   * @throws PixProxyError, outcome NOT SENT: KMS_CIRCUIT_OPEN, KMS_QUEUE_FULL, KMS_QUEUE_TIMEOUT, KMS_CONNECTIONS_BUSY, KMS_THROTTLED (after
   *   the attempts), KMS_UNAVAILABLE (the deadline included), the signer's other KMS_* codes, SHUTTING_DOWN.
   */
  async sign (data: Uint8Array): Promise<Buffer> {
    const arrival = this.#clock.now()
    const deadline = arrival + this.#o.signDeadlineMs
    // A first attempt waits (for its turn and a place in flight) no longer than the queue timeout, so the call keeps
    // the rest of the deadline, as a turn alone does (rate-limit.ts).
    const firstCallBy = Math.min(arrival + this.#o.queueTimeoutMs, deadline)
    let throttle: PixProxyError | null = null
    for (let attempt = 1; ; attempt++) {
      const permit = this.#breaker.admit()
      try {
        await this.#limit.take({ latest: deadline, admission: attempt === 1 })
        await this.#calls.acquire(attempt === 1 ? firstCallBy : deadline)
      } catch (err) {
        this.#breaker.record(permit, 'not-called')
        // A retry that cannot get a turn in time: the throttle is what the caller should hear.
        throw throttle ?? err
      }
      try {
        return await this.#attempt(data, permit, deadline)
      } catch (err) {
        if (!isCode(err, Errors.KMS_THROTTLED.code)) throw err
        throttle = err as PixProxyError
      } finally {
        this.#calls.release()
      }
      if (attempt >= this.#o.maxAttempts) throw throttle
      const bound = Math.min(this.#o.backoffCapMs ?? 1_000, (this.#o.backoffBaseMs ?? 25) * 2 ** (attempt - 1))
      const pause = this.#random() * bound
      if (this.#clock.now() + pause >= deadline) throw throttle
      this.#o.observer?.retry?.()
      await new Promise<void>((resolve) => { this.#clock.timer(resolve, pause, false) })
    }
  }

  /** One Sign call, aborted at the deadline; its verdict goes to the breaker and its time to the observer. */
  async #attempt (data: Uint8Array, permit: Permit, deadline: number): Promise<Buffer> {
    const abort = new AbortController()
    const cancel = this.#clock.timer(() => { abort.abort() }, deadline - this.#clock.now(), false)
    const started = this.#clock.now()
    let verdict: CallVerdict = 'not-called'
    let detail = ''
    let result: AttemptResult = 'error'
    try {
      const signature = await this.#inner.sign(data, { signal: abort.signal })
      verdict = 'answered'
      result = 'ok'
      return signature
    } catch (caught) {
      let err = caught
      if (abort.signal.aborted) {
        err = new PixProxyError(Errors.KMS_UNAVAILABLE, ['Sign', this.#inner.keyArn, `no answer within the sign deadline of ${this.#o.signDeadlineMs} ms (PIXPROXY_KMS_SIGN_DEADLINE_MS)`], { cause: caught })
      }
      if (isCode(err, Errors.KMS_UNAVAILABLE.code)) {
        verdict = 'unavailable'
        detail = (err as Error).message
      } else if (err instanceof PixProxyError && err.code.startsWith('PIXPROXY_ERR_KMS_')) {
        // A throttle, a disabled key, a refused permission, a signature that does not verify: KMS is up.
        verdict = 'answered'
        if (err.code === Errors.KMS_THROTTLED.code) result = 'throttled'
      }
      throw err
    } finally {
      cancel()
      this.#breaker.record(permit, verdict, detail)
      this.#o.observer?.attempt?.((this.#clock.now() - started) / 1000, result)
    }
  }

  /**
   * Readiness: not ready while the circuit is open (KMS_CIRCUIT_OPEN, no KMS call); otherwise the signer's own check.
   * Half-open counts as ready: a task drained of traffic would never send the probe that closes the circuit.
   */
  async check (): Promise<string> {
    const state = this.#breaker.state
    if (state === 'open') throw this.#breaker.openError()
    const detail = await this.#inner.check()
    return state === 'half-open' ? `${detail}; circuit half-open: the next sign probes KMS` : detail
  }

  /** Refuses the signs still waiting for a turn or a place in flight (SHUTTING_DOWN) and closes the signer. */
  close (): void {
    this.#limit.close()
    this.#calls.close()
    this.#inner.close()
  }
}

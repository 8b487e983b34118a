/**
 * The bound on Sign calls in flight at KMS (kms/guard.ts): at most `max` at once, the rest waiting in FIFO order for
 * one to end.
 *
 * Why it exists: the KMS client has a fixed number of sockets (kms/client.ts), and a call beyond them waits inside the
 * Node agent for a free one. The SDK's connect timeout runs from the moment the request is created, not from the
 * moment it gets a socket (@smithy/node-http-handler arms it at once and clears it on the request's 'socket' event),
 * so a call that waited there longer than the connect timeout failed as "did not establish a connection": read as KMS
 * unavailable, counted by the circuit breaker, and a KMS that was merely slow under load could open the circuit and
 * refuse every signed write (test/kms/sockets.test.ts). Waiting here instead, where the guard sees it, the wait is
 * the guard's own refusal (KMS_CONNECTIONS_BUSY, NOT SENT, never counted as an outage), and a call reaches the agent
 * only when a socket is free for it.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { AuditClock as Clock } from '../audit/clock.ts'
import { wholeMs } from './rate-limit.ts'

interface Waiter {
  resolve (): void
  reject (err: Error): void
  cancel (): void
}

export class InFlightLimit {
  readonly #max: number
  readonly #clock: Clock
  readonly #queue: Waiter[] = []
  #inFlight = 0
  #closed = false

  constructor (max: number, clock: Clock) {
    this.#max = max
    this.#clock = clock
  }

  /** Calls holding a place. */
  get inFlight (): number { return this.#inFlight }

  /** Calls waiting for one. */
  get waiting (): number { return this.#queue.length }

  /**
   * Resolves when the caller holds a place (give it back with `release`). `latest`: clock time after which the call
   * would be of no use.
   * @throws PixProxyError KMS_CONNECTIONS_BUSY when no place is free by `latest`; SHUTTING_DOWN once closed.
   */
  async acquire (latest: number): Promise<void> {
    if (this.#closed) throw new PixProxyError(Errors.SHUTTING_DOWN)
    if (this.#inFlight < this.#max && this.#queue.length === 0) {
      this.#inFlight++
      return
    }
    const since = this.#clock.now()
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        cancel: this.#clock.timer(() => {
          const i = this.#queue.indexOf(waiter)
          if (i >= 0) this.#queue.splice(i, 1)
          reject(new PixProxyError(Errors.KMS_CONNECTIONS_BUSY, [this.#max, wholeMs(this.#clock.now() - since)], { retryAfterSeconds: 1 }))
        }, latest - since, false)
      }
      this.#queue.push(waiter)
    })
  }

  /** Gives a place back: to the first waiter, or free. */
  release (): void {
    const next = this.#queue.shift()
    if (next === undefined) {
      this.#inFlight--
      return
    }
    next.cancel()
    next.resolve()
  }

  /** Refuses every waiter (SHUTTING_DOWN) and every later acquire. */
  close (): void {
    this.#closed = true
    for (const w of this.#queue.splice(0)) {
      w.cancel()
      w.reject(new PixProxyError(Errors.SHUTTING_DOWN))
    }
  }
}

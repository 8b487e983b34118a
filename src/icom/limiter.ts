/**
 * A counting semaphore with a bounded FIFO queue and a deadline per waiter: BACEN's ICOM accepts at most 6
 * concurrent requests per participant and answers 429 beyond that, so the proxy holds the excess itself and tells
 * the caller 503 + Retry-After when a request cannot get a slot in time, instead of burning BACEN's limit.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'

interface Waiter {
  resolve (release: () => void): void
  reject (err: Error): void
  timer: NodeJS.Timeout
}

export interface LimiterOptions {
  readonly maxInFlight: number
  readonly queueMax: number
  readonly queueTimeoutMs: number
  readonly onChange?: (inFlight: number, queued: number) => void
}

export class InFlightLimiter {
  private inFlight = 0
  private readonly queue: Waiter[] = []
  private readonly opts: LimiterOptions

  constructor (opts: LimiterOptions) {
    this.opts = opts
  }

  get active (): number { return this.inFlight }
  get waiting (): number { return this.queue.length }
  /** An acquire() now would get a slot without queueing. */
  get available (): boolean { return this.inFlight < this.opts.maxInFlight && this.queue.length === 0 }

  /**
   * Resolves to a release function once a slot is held. Call it exactly once (extra calls are ignored).
   * @throws PixProxyError SPI_QUEUE_FULL at once when the queue is full; SPI_QUEUE_TIMEOUT after the deadline.
   */
  async acquire (): Promise<() => void> {
    if (this.available) {
      this.inFlight++
      this.changed()
      return this.releaser()
    }
    if (this.queue.length >= this.opts.queueMax) {
      throw new PixProxyError(Errors.SPI_QUEUE_FULL, [this.opts.maxInFlight, this.queue.length])
    }
    return await new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.queue.indexOf(waiter)
          if (i >= 0) this.queue.splice(i, 1)
          this.changed()
          reject(new PixProxyError(Errors.SPI_QUEUE_TIMEOUT, [this.opts.queueTimeoutMs]))
        }, this.opts.queueTimeoutMs)
      }
      waiter.timer.unref()
      this.queue.push(waiter)
      this.changed()
    })
  }

  private releaser (): () => void {
    let done = false
    return () => {
      if (done) return
      done = true
      const next = this.queue.shift()
      if (next === undefined) {
        this.inFlight--
      } else {
        // The slot passes straight to the next waiter: inFlight is unchanged.
        clearTimeout(next.timer)
        next.resolve(this.releaser())
      }
      this.changed()
    }
  }

  private changed (): void {
    this.opts.onChange?.(this.inFlight, this.queue.length)
  }
}

/**
 * ICOM's limits, in one place (docs/bacen.md §2.2, §2.3): BACEN allows 6 concurrent POSTs and 6 stream readers per
 * participant and answers 429 beyond that. The proxy holds the excess itself (bounded queues with a deadline: 503
 * SPI_QUEUE_FULL / SPI_QUEUE_TIMEOUT, NOT SENT, with Retry-After), coalesces queued single messages into multipart
 * posts (batcher.ts), and sends a post again after a 429 (which means ICOM took nothing).
 *
 * The routes get policies for the forwarding pipeline from here; slots are taken before a call's audit row begins,
 * so a request refused for want of a slot leaves no row and nothing is sent.
 */
import type { Forwarding, Policy } from '../forwarding/pipeline.ts'
import { IcomBatcher, retryOn429 } from './batcher.ts'
import { InFlightLimiter } from './limiter.ts'

/** Messages in one multipart post (ICOM's limit). */
export const MAX_PARTS = 10

/** ICOM's answers to posts: BACEN signs nothing in them (an empty 201, or an unsigned problem). */
const POST = { label: 'ICOM', signed: 'none' } as const

export interface IcomOptions {
  readonly ispb: string
  /** Slots per kind (posts, readers): BACEN's 6. */
  readonly maxInFlight: number
  readonly queueMax: number
  readonly queueTimeoutMs: number
  /** Messages per coalesced post; 1 turns coalescing off. */
  readonly coalesceMaxParts: number
  /** Upper bound on one coalesced post's body. */
  readonly maxBodyBytes: number
  readonly forwarding: Forwarding
  readonly gauges?: IcomGauges
}

/** What ICOM's queues report, after each change (plugins/icom.ts binds them to Prometheus). */
export interface IcomGauges {
  posts (inFlight: number, queued: number): void
  readers (inFlight: number, queued: number): void
  postParts (parts: number): void
}

export class Icom {
  readonly #posts: InFlightLimiter
  readonly #readers: InFlightLimiter
  readonly #batcher: IcomBatcher | null
  // Requests waiting for a slot: whole posts at the limiter and messages in the batcher. The limiter's own queue is
  // not the count: the batcher asks it for a slot on behalf of messages it already counts.
  #postsQueued = 0
  #batcherQueued = 0
  readonly #gauges: IcomGauges | undefined

  constructor (o: IcomOptions) {
    this.#gauges = o.gauges
    this.#posts = new InFlightLimiter({
      maxInFlight: o.maxInFlight,
      queueMax: o.queueMax,
      queueTimeoutMs: o.queueTimeoutMs,
      onChange: () => { this.#postsChanged() }
    })
    this.#readers = new InFlightLimiter({
      maxInFlight: o.maxInFlight,
      queueMax: o.queueMax,
      queueTimeoutMs: o.queueTimeoutMs,
      onChange: (inFlight, queued) => { o.gauges?.readers(inFlight, queued) }
    })
    this.#batcher = o.coalesceMaxParts <= 1
      ? null
      : new IcomBatcher({
        limiter: this.#posts,
        maxParts: Math.min(MAX_PARTS, o.coalesceMaxParts),
        maxBytes: o.maxBodyBytes,
        queueMax: o.queueMax,
        queueTimeoutMs: o.queueTimeoutMs,
        send: async (post) => await retryOn429(async () => await o.forwarding.send({
          name: 'spi',
          method: 'POST',
          path: `/api/v1/in/${o.ispb}/msgs`,
          headers: { 'content-type': post.contentType, accept: 'application/xml' },
          body: post.body
        })),
        onBatch: (parts) => { o.gauges?.postParts(parts) },
        onQueue: (n) => {
          this.#batcherQueued = n
          this.#postsChanged()
        }
      })
  }

  #postsChanged (): void {
    this.#gauges?.posts(this.#posts.active, this.#postsQueued + this.#batcherQueued)
  }

  /** Whether single messages are coalesced (then `coalesced` is the policy for them). */
  get coalescing (): boolean {
    return this.#batcher !== null
  }

  /**
   * Runs `fn` holding one of ICOM's POST slots (a whole post from a caller), counted as queued while it waits.
   * @throws PixProxyError SPI_QUEUE_FULL / SPI_QUEUE_TIMEOUT (NOT SENT) when no slot came in time.
   */
  async withPostSlot<T> (fn: () => Promise<T>): Promise<T> {
    let release: () => void
    if (this.#posts.available) {
      release = await this.#posts.acquire()
    } else {
      this.#postsQueued++
      this.#postsChanged()
      try {
        release = await this.#posts.acquire()
      } finally {
        this.#postsQueued--
        this.#postsChanged()
      }
    }
    try {
      return await fn()
    } finally {
      release()
    }
  }

  /** Runs `fn` holding one of ICOM's stream-reader slots (counted apart from POSTs by BACEN). */
  async withReaderSlot<T> (fn: () => Promise<T>): Promise<T> {
    const release = await this.#readers.acquire()
    try {
      return await fn()
    } finally {
      release()
    }
  }

  /** A post the caller built (one message, or its own multipart): sent again after a 429, within its slot. */
  readonly post: Policy = {
    ...POST,
    send: async (call, pipeline) => await retryOn429(async () => await pipeline.send(call))
  }

  /**
   * One signed message through the batcher: alone when a slot is free, else coalesced with others that queue. Its
   * audit row is durable before it can join a post; `gone` says, when its slot comes, that its caller left.
   */
  coalesced (signed: string, gone: () => boolean): Policy {
    const batcher = this.#batcher
    if (batcher === null) throw new Error('unreachable: coalescing is off (check `coalescing` first)')
    return { ...POST, send: async () => (await batcher.submit(signed, gone)).answer }
  }
}

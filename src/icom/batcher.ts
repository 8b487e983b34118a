/**
 * Coalescing of SPI messages into multipart/mixed posts while ICOM's slots are busy.
 *
 * BACEN allows 6 concurrent POSTs per participant, and one POST may carry several messages as multipart/mixed
 * (docs/bacen.md §2.2; PI-ResourceId then lists one id per part, comma-separated). With one message per request
 * the proxy delivers at most 6 / ICOM latency messages per second (300/s at 20 ms). The batcher keeps each caller's
 * request as it is (one message, one answer with its own PI-ResourceId) but, when messages queue for a slot, the
 * slot that frees takes up to `maxParts` of them in one POST. With a free slot and nothing queued a message goes
 * alone, as application/xml, exactly as without the batcher: coalescing only happens under load.
 *
 * Outcomes (docs/outcomes.md): a 201 whose PI-ResourceId has one id per part gives each caller its own id (ICOM
 * accepted them all); any other answer goes to every caller of the batch, since ICOM takes a post as a whole. A post
 * that got no answer fails every caller with the same error, and the forwarding pipeline (forwarding/pipeline.ts) gives
 * each of them its class: NOT SENT only when the connection was never made, otherwise OUTCOME UNKNOWN for every
 * message of the post, since any of them may have reached ICOM. A 201 whose id count does not match is passed on as is
 * to every caller, all ids included: the messages were accepted and must not be resent.
 * Bounds as without it: at most `queueMax` messages wait, each at most `queueTimeoutMs` (503 with the same codes).
 */
import { Errors, PixProxyError } from '../../core/errors.ts'
import { buildMultipart } from '../http/multipart.ts'
import type { InFlightLimiter } from './limiter.ts'
import type { UpstreamAnswer } from '../forwarding/answer.ts'

export interface BatchBody {
  readonly body: Buffer | string
  readonly contentType: string
}

export interface BatcherOptions {
  /** ICOM's slots (shared with caller-built multipart posts). */
  readonly limiter: InFlightLimiter
  /** Messages per post (ICOM: 10). 1 turns coalescing off. */
  readonly maxParts: number
  /** Upper bound on one post's body. */
  readonly maxBytes: number
  readonly queueMax: number
  readonly queueTimeoutMs: number
  /** Sends one post; rejects when no answer came. */
  readonly send: (post: BatchBody) => Promise<UpstreamAnswer>
  /** Messages per post, for metrics. */
  readonly onBatch?: (parts: number) => void
  /** Messages waiting, after each change. */
  readonly onQueue?: (waiting: number) => void
}

export interface BatchResult {
  /** The answer as this caller should see it (its own PI-ResourceId when ICOM gave one per part). */
  readonly answer: UpstreamAnswer
  /** Messages in the post that carried this one. */
  readonly parts: number
}

interface Item {
  readonly xml: string
  readonly gone: (() => boolean) | undefined
  readonly bytes: number
  readonly resolve: (r: BatchResult) => void
  readonly reject: (err: unknown) => void
  readonly timer: NodeJS.Timeout
}

export class IcomBatcher {
  readonly #o: BatcherOptions
  readonly #pending: Item[] = []
  /** acquire() calls not yet resolved: each will carry up to maxParts pending messages. */
  #asking = 0

  constructor (o: BatcherOptions) {
    if (!(Number.isInteger(o.maxParts) && o.maxParts >= 1)) throw new PixProxyError(Errors.CONFIG_INVALID, [`maxParts must be a positive integer, not ${o.maxParts}`])
    this.#o = o
  }

  get waiting (): number {
    return this.#pending.length
  }

  /**
   * Sends one signed message (alone, or with others queued at the same time).
   * @throws PixProxyError SPI_QUEUE_FULL / SPI_QUEUE_TIMEOUT when it never got a slot; CLIENT_GONE when `gone()`
   *   said, as its slot came, that its caller had left (it is not sent); the send's error when the post carrying it
   *   got no answer.
   */
  async submit (xml: string, gone?: () => boolean): Promise<BatchResult> {
    if (this.#pending.length >= this.#o.queueMax) {
      throw new PixProxyError(Errors.SPI_QUEUE_FULL, [this.#o.limiter.active, this.#pending.length])
    }
    return await new Promise<BatchResult>((resolve, reject) => {
      const item: Item = {
        xml,
        gone,
        bytes: Buffer.byteLength(xml),
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.#pending.indexOf(item)
          if (i < 0) return // already on its way
          this.#pending.splice(i, 1)
          this.#o.onQueue?.(this.#pending.length)
          reject(new PixProxyError(Errors.SPI_QUEUE_TIMEOUT, [this.#o.queueTimeoutMs]))
        }, this.#o.queueTimeoutMs).unref()
      }
      this.#pending.push(item)
      this.#o.onQueue?.(this.#pending.length)
      this.#pump()
    })
  }

  /** Asks for as many slots as the pending messages need (one per maxParts), no more. */
  #pump (): void {
    while (this.#asking * this.#o.maxParts < this.#pending.length) {
      this.#asking++
      this.#o.limiter.acquire().then((release) => {
        this.#asking--
        const batch = this.#take()
        if (batch.length === 0) {
          release()
          return
        }
        this.#pump() // what is still pending may need another slot
        this.#post(batch).finally(release)
      }, () => {
        // The limiter's own queue bound or deadline: the messages keep their own deadlines; ask again if needed.
        this.#asking--
        if (this.#pending.length > 0) setTimeout(() => { this.#pump() }, 5).unref()
      })
    }
  }

  /** Up to maxParts pending messages (FIFO) within maxBytes; the first always goes, whatever its size. */
  #take (): Item[] {
    const batch: Item[] = []
    let bytes = 0
    while (batch.length < this.#o.maxParts && this.#pending.length > 0) {
      const next = this.#pending[0] as Item
      if (next.gone?.() === true) {
        // Its caller gave up while it queued: sending it now would be a message nobody waits for.
        this.#pending.shift()
        clearTimeout(next.timer)
        next.reject(new PixProxyError(Errors.CLIENT_GONE))
        continue
      }
      if (batch.length > 0 && bytes + next.bytes + 256 > this.#o.maxBytes) break
      this.#pending.shift()
      clearTimeout(next.timer)
      batch.push(next)
      bytes += next.bytes + 256
    }
    this.#o.onQueue?.(this.#pending.length)
    return batch
  }

  async #post (batch: Item[]): Promise<void> {
    this.#o.onBatch?.(batch.length)
    let answer: UpstreamAnswer
    try {
      answer = await this.#o.send(batch.length === 1
        ? { body: (batch[0] as Item).xml, contentType: 'application/xml; charset=utf-8' }
        : (() => {
            const mp = buildMultipart(batch.map((i) => ({ headers: { 'content-type': 'application/xml; charset=utf-8' }, body: Buffer.from(i.xml, 'utf8') })))
            return { body: mp.body, contentType: mp.contentType }
          })())
    } catch (err) {
      for (const i of batch) i.reject(err)
      return
    }
    const ids = (answer.headers['pi-resourceid'] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '')
    const split = batch.length > 1 && answer.status === 201 && ids.length === batch.length
    batch.forEach((item, n) => {
      item.resolve({
        answer: split ? { ...answer, headers: { ...answer.headers, 'pi-resourceid': ids[n] as string } } : answer,
        parts: batch.length
      })
    })
  }
}

/**
 * ICOM answers 429 when a participant has more than 6 requests in flight. The proxy never sends more, but ICOM may
 * still count a request whose answer the proxy has already read (the two ends see a request finish at slightly
 * different moments), and another proxy instance of the same participant may be sending too. A 429 means ICOM took
 * nothing, so the post is sent again after a short pause (holding its slot), up to `attempts` times in all; the
 * last answer is returned whatever it is.
 */
export async function retryOn429 (send: () => Promise<UpstreamAnswer>, o: { attempts?: number, pauseMs?: number, random?: () => number } = {}): Promise<UpstreamAnswer> {
  const attempts = o.attempts ?? 3
  const pause = o.pauseMs ?? 20
  const random = o.random ?? Math.random
  let answer = await send()
  let spent = answer.upstreamMs
  for (let n = 1; n < attempts && answer.status === 429; n++) {
    await new Promise((resolve) => setTimeout(resolve, pause * n * (0.5 + random())))
    answer = await send()
    spent += answer.upstreamMs
  }
  // The audit row's upstream latency covers every attempt.
  return { ...answer, upstreamMs: spent }
}

/**
 * A bound on the memory that requests in flight may hold, so that a hung BACEN cannot make the proxy grow without
 * limit: sixty 4 MiB messages queued behind a hung upstream grew the process by ~1 GB (about 4.2 times each body:
 * the bytes received, the parsed tree, the signed text, the multipart post). A request is admitted only if its cost
 * fits next to those already admitted; otherwise it gets 503 MEMORY_BUDGET (NOT SENT, Retry-After) before its body
 * is read. Its cost is returned when its response has been sent or the client went away.
 *
 * The cost is an estimate from the declared body size (Content-Length; without one, the largest body accepted),
 * times PER_BODY_BYTE, plus PER_REQUEST for what every request holds (headers, the audit row, the answer of a
 * bodiless read). BACEN's answers are not counted one by one: each is bounded (32 MiB, forwarding/pipeline.ts) and so is their
 * number (the ICOM slots and the DICT connections).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { Gauge } from 'prom-client'
import { Errors, PixProxyError } from '../../core/errors.ts'

/** Bytes held per byte of request body (measured ~4.2 with 4 MiB pacs.008 messages). */
export const PER_BODY_BYTE = 4
/** Bytes held by any request whatever its body. */
export const PER_REQUEST = 64 * 1024

export class MemoryBudget {
  readonly limit: number
  #used = 0

  constructor (limit: number) {
    this.limit = limit
  }

  get used (): number {
    return this.#used
  }

  /** Takes `bytes` if they fit; false when they do not (the caller refuses the request). */
  tryTake (bytes: number): boolean {
    if (this.#used + bytes > this.limit) return false
    this.#used += bytes
    return true
  }

  give (bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes)
  }
}

/** What admitting this request costs (see the module comment). */
function requestCost (req: FastifyRequest, maxBodyBytes: number): number {
  const method = req.method
  if (method === 'GET' || method === 'DELETE') return PER_REQUEST
  const declared = Number(req.headers['content-length'])
  const body = Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, maxBodyBytes) : maxBodyBytes
  return PER_REQUEST + body * PER_BODY_BYTE
}

/** The smallest budget that admits one request of the largest accepted body. */
export function minimumBudget (maxBodyBytes: number): number {
  return PER_REQUEST + maxBodyBytes * PER_BODY_BYTE
}

/**
 * Admits requests to BACEN's routes (`/api/...`) within the budget; health, metrics and unknown routes are free.
 * Exposes pixproxy_memory_budget_bytes{measure="used"|"limit"}.
 */
export function installMemoryBudget (app: FastifyInstance, limit: number, maxBodyBytes: number): MemoryBudget {
  const budget = new MemoryBudget(limit)
  const held = new WeakMap<FastifyRequest, number>()
  const release = (req: FastifyRequest): void => {
    const n = held.get(req)
    if (n === undefined) return
    held.delete(req)
    budget.give(n)
  }
  app.addHook('onRequest', async (req, reply) => {
    if (req.routeOptions.url?.startsWith('/api/') !== true) return
    const cost = requestCost(req, maxBodyBytes)
    if (!budget.tryTake(cost)) throw new PixProxyError(Errors.MEMORY_BUDGET, [cost, budget.used, budget.limit])
    held.set(req, cost)
    // The response's 'close' comes exactly once, whether it was sent or the client went away first (Fastify's
    // onResponse and onRequestAbort hooks both missed a client that left while its request waited for BACEN: the
    // share leaked). After an abort the handler may still hold its request for a while: the budget errs low then.
    reply.raw.once('close', () => { release(req) })
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_memory_budget_bytes',
    help: 'Memory the requests in flight may hold (PIXPROXY_MEMORY_BUDGET_BYTES): used, and the limit',
    labelNames: ['measure'],
    registers: [app.metrics.registry],
    collect () {
      this.set({ measure: 'used' }, budget.used)
      this.set({ measure: 'limit' }, budget.limit)
    }
  })
  return budget
}

// Coalescing SPI messages into multipart posts while ICOM's slots are busy (src/icom/batcher.ts).
import t from 'tap'
import { InFlightLimiter } from '../../src/icom/limiter.ts'
import { multipartBoundary, parseMultipart } from '../../src/http/multipart.ts'
import { IcomBatcher, retryOn429 } from '../../src/icom/batcher.ts'
import type { BatchBody, BatcherOptions } from '../../src/icom/batcher.ts'
import type { UpstreamAnswer } from '../../src/forwarding/answer.ts'

/** A fake ICOM: records each post's messages and answers 201 with one id per part ("id-<message>"). */
function icom (o: { delayMs?: number, answer?: (msgs: string[]) => Partial<UpstreamAnswer> | 'throw' } = {}): { posts: Array<{ contentType: string, msgs: string[] }>, send: (p: BatchBody) => Promise<UpstreamAnswer>, inFlight: () => number, most: () => number } {
  const posts: Array<{ contentType: string, msgs: string[] }> = []
  let inFlight = 0
  let most = 0
  return {
    posts,
    inFlight: () => inFlight,
    most: () => most,
    send: async (p) => {
      inFlight++
      most = Math.max(most, inFlight)
      try {
        const body = Buffer.isBuffer(p.body) ? p.body : Buffer.from(p.body)
        const boundary = multipartBoundary(p.contentType)
        const msgs = boundary === null ? [body.toString()] : parseMultipart(body, boundary).map((x) => x.body.toString())
        posts.push({ contentType: p.contentType, msgs })
        await new Promise((resolve) => setTimeout(resolve, o.delayMs ?? 20))
        const custom = o.answer?.(msgs)
        if (custom === 'throw') throw Object.assign(new Error('socket hang up'), { code: 'PIXPROXY_ERR_UPSTREAM_UNREACHABLE' })
        return { status: 201, headers: { 'pi-resourceid': msgs.map((m) => `id-${m}`).join(',') }, body: Buffer.alloc(0), upstreamMs: 20, ...custom }
      } finally {
        inFlight--
      }
    }
  }
}

function batcher (send: BatcherOptions['send'], o: Partial<BatcherOptions> = {}): IcomBatcher {
  const limiter = new InFlightLimiter({ maxInFlight: 2, queueMax: 1000, queueTimeoutMs: 5_000 })
  return new IcomBatcher({ limiter, maxParts: 10, maxBytes: 4 * 1024 * 1024, queueMax: 1000, queueTimeoutMs: 5_000, send, ...o })
}

const msg = (i: number): string => `<m n="${i}"/>`

t.test('a free slot and nothing queued: the message goes alone, as application/xml', async (t) => {
  const f = icom()
  const b = batcher(f.send)
  const r = await b.submit(msg(1))
  t.same(f.posts, [{ contentType: 'application/xml; charset=utf-8', msgs: [msg(1)] }])
  t.equal(r.parts, 1)
  t.equal(r.answer.headers['pi-resourceid'], `id-${msg(1)}`)
})

t.test('messages queued for busy slots share posts of up to 10; each caller gets its own PI-ResourceId', async (t) => {
  const f = icom({ delayMs: 30 })
  const b = batcher(f.send)
  const results = await Promise.all(Array.from({ length: 45 }, async (_v, i) => await b.submit(msg(i))))
  t.ok(f.most() <= 2, `never more than the limiter's 2 posts in flight (saw ${f.most()})`)
  t.ok(f.posts.every((p) => p.msgs.length <= 10), 'at most 10 parts per post')
  t.ok(f.posts.length <= 8, `45 messages in ${f.posts.length} posts (one per message would be 45)`)
  t.ok(f.posts.some((p) => p.msgs.length > 1 && p.contentType.startsWith('multipart/mixed; boundary=')), 'queued messages went as multipart/mixed')
  t.same(f.posts.flatMap((p) => p.msgs).sort(), Array.from({ length: 45 }, (_v, i) => msg(i)).sort(), 'every message sent exactly once')
  results.forEach((r, i) => { t.equal(r.answer.headers['pi-resourceid'], `id-${msg(i)}`, `caller ${i} got its own id`) })
  t.equal(b.waiting, 0)
})

t.test('the order of arrival is kept within and across posts (FIFO)', async (t) => {
  const f = icom({ delayMs: 10 })
  const b = batcher(f.send, { limiter: new InFlightLimiter({ maxInFlight: 1, queueMax: 100, queueTimeoutMs: 5_000 }) })
  await Promise.all(Array.from({ length: 25 }, async (_v, i) => await b.submit(msg(i))))
  t.same(f.posts.flatMap((p) => p.msgs), Array.from({ length: 25 }, (_v, i) => msg(i)))
})

t.test('an answer other than 201 with one id per part goes to every caller of the post as it is', async (t) => {
  for (const [name, answer] of [
    ['429', (): Partial<UpstreamAnswer> => ({ status: 429, headers: { 'content-type': 'application/problem+xml' }, body: Buffer.from('<problem/>') })],
    ['201 with fewer ids', (msgs: string[]): Partial<UpstreamAnswer> => ({ headers: { 'pi-resourceid': msgs.slice(1).map((m) => `id-${m}`).join(',') } })]
  ] as const) {
    const f = icom({ delayMs: 20, answer })
    const b = batcher(f.send, { limiter: new InFlightLimiter({ maxInFlight: 1, queueMax: 100, queueTimeoutMs: 5_000 }) })
    const results = await Promise.all(Array.from({ length: 6 }, async (_v, i) => await b.submit(msg(i))))
    const shared = f.posts.find((p) => p.msgs.length > 1)
    t.ok(shared, `${name}: some messages were coalesced`)
    for (const [i, r] of results.entries()) {
      const post = f.posts.find((p) => p.msgs.includes(msg(i)))
      if (post === undefined || post.msgs.length === 1) continue
      const full = answer(post.msgs)
      t.equal(r.answer.status, full.status ?? 201, `${name}: caller ${i} sees the post's status`)
      t.equal(r.answer.headers['pi-resourceid'], full.headers?.['pi-resourceid'], `${name}: and its headers untouched (no id is guessed)`)
    }
  }
})

t.test('no answer: every caller of the post gets the error', async (t) => {
  const f = icom({ delayMs: 10, answer: () => 'throw' })
  const b = batcher(f.send, { limiter: new InFlightLimiter({ maxInFlight: 1, queueMax: 100, queueTimeoutMs: 5_000 }) })
  const results = await Promise.allSettled(Array.from({ length: 5 }, async (_v, i) => await b.submit(msg(i))))
  t.ok(results.every((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'PIXPROXY_ERR_UPSTREAM_UNREACHABLE'))
})

t.test('bounds: a full queue refuses at once, a message that never gets a slot times out, posts stay under maxBytes', async (t) => {
  // The deadlines' timers are unref'd (a server's sockets keep it alive): keep this process alive meanwhile.
  const alive = setInterval(() => {}, 1_000)
  t.teardown(() => { clearInterval(alive) })
  const limiter = new InFlightLimiter({ maxInFlight: 1, queueMax: 100, queueTimeoutMs: 60_000 })
  const hold = await limiter.acquire() // ICOM busy
  const b = batcher(icom().send, { limiter, queueMax: 3, queueTimeoutMs: 150 })
  const queued = [1, 2, 3].map(async (i) => await b.submit(msg(i)).catch((err: { code?: string }) => err.code))
  await t.rejects(b.submit(msg(4)), { code: 'PIXPROXY_ERR_SPI_QUEUE_FULL' }, 'the fourth is refused at once')
  t.same(await Promise.all(queued), ['PIXPROXY_ERR_SPI_QUEUE_TIMEOUT', 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT', 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT'], 'the others time out')
  t.equal(b.waiting, 0)
  hold()

  const f = icom({ delayMs: 10 })
  const big = (i: number): string => `<m n="${i}">${'x'.repeat(3000)}</m>`
  const small = batcher(f.send, { limiter: new InFlightLimiter({ maxInFlight: 1, queueMax: 100, queueTimeoutMs: 5_000 }), maxBytes: 10_000 })
  await Promise.all(Array.from({ length: 9 }, async (_v, i) => await small.submit(big(i))))
  t.ok(f.posts.every((p) => p.msgs.length <= 3), `10 KB posts carry at most three 3 KB messages (${f.posts.map((p) => p.msgs.length).join(',')})`)
  t.throws(() => new IcomBatcher({ limiter, maxParts: 0, maxBytes: 1, queueMax: 1, queueTimeoutMs: 1, send: f.send }), { code: 'PIXPROXY_ERR_CONFIG_INVALID' })
})

t.test('retryOn429: ICOM took nothing, so the post goes again after a pause; other answers are final', async (t) => {
  const answers = (statuses: number[]): { send: () => Promise<UpstreamAnswer>, calls: () => number } => {
    let n = 0
    return {
      calls: () => n,
      send: async () => {
        const status = statuses[Math.min(n, statuses.length - 1)] as number
        n++
        return { status, headers: {}, body: Buffer.alloc(0), upstreamMs: 5 }
      }
    }
  }
  const ok = answers([429, 429, 201])
  const r = await retryOn429(ok.send, { pauseMs: 1 })
  t.equal(r.status, 201, 'the third attempt got through')
  t.equal(ok.calls(), 3)
  t.equal(r.upstreamMs, 15, 'the upstream latency covers every attempt')
  const stuck = answers([429])
  t.equal((await retryOn429(stuck.send, { pauseMs: 1, attempts: 3 })).status, 429, 'after the last attempt the 429 is the answer')
  t.equal(stuck.calls(), 3)
  for (const status of [201, 400, 503]) {
    const once = answers([status])
    t.equal((await retryOn429(once.send, { pauseMs: 1 })).status, status)
    t.equal(once.calls(), 1, `${status} is not retried (503: ICOM may have taken it; the caller decides)`)
  }
})

t.test('a message whose caller left while it queued is not sent: CLIENT_GONE when its slot comes', async (t) => {
  const { Errors } = await import('../../core/errors.ts')
  const posts: string[][] = []
  let open: () => void = () => {}
  const gate = new Promise<void>((resolve) => { open = resolve })
  const send = async (p: BatchBody): Promise<UpstreamAnswer> => {
    const body = Buffer.isBuffer(p.body) ? p.body : Buffer.from(p.body)
    const boundary = multipartBoundary(p.contentType)
    posts.push(boundary === null ? [body.toString()] : parseMultipart(body, boundary).map((x) => x.body.toString()))
    if (posts.length === 1) await gate // the only slot stays busy until the test opens it
    return { status: 201, headers: {}, body: Buffer.alloc(0), upstreamMs: 1 }
  }
  const limiter = new InFlightLimiter({ maxInFlight: 1, queueMax: 10, queueTimeoutMs: 60_000 })
  const b = new IcomBatcher({ limiter, maxParts: 10, maxBytes: 1024 * 1024, queueMax: 10, queueTimeoutMs: 60_000, send })
  const first = b.submit(msg(1))
  for (let i = 0; i < 20 && posts.length === 0; i++) await new Promise((resolve) => setImmediate(resolve))
  t.equal(posts.length, 1, 'msg 1 holds the only slot')
  let left = false
  const abandoned = b.submit(msg(2), () => left).then(() => 'sent', (err: unknown) => err)
  const kept = b.submit(msg(3), () => false)
  t.equal(b.waiting, 2, 'both queued behind the busy slot')
  left = true // the caller of msg 2 closes its connection
  open()
  await first
  await kept
  t.match(await abandoned, { code: Errors.CLIENT_GONE.code, outcome: 'not-sent' })
  t.same(posts, [[msg(1)], [msg(3)]], 'msg 2 never left; msg 3 went')
})

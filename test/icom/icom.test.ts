/**
 * icom/icom.ts: ICOM's limits in one object. POSTs and stream readers have separate slots (BACEN counts them apart);
 * a post waiting for a slot is counted as queued; a caller's own post is sent again after a 429; coalescing is a
 * policy of its own, only when it is on.
 */
import t from 'tap'
import { Icom } from '../../src/icom/icom.ts'
import type { Forwarding, UpstreamAnswer, UpstreamCall } from '../../src/forwarding/pipeline.ts'
import { Errors } from '../../core/errors.ts'

function icom (o: { coalesceMaxParts?: number, answers?: UpstreamAnswer[] } = {}): { icom: Icom, posts: Array<[number, number]>, readers: Array<[number, number]>, sent: UpstreamCall[] } {
  const posts: Array<[number, number]> = []
  const readers: Array<[number, number]> = []
  const sent: UpstreamCall[] = []
  const answers = [...(o.answers ?? [])]
  const forwarding = {
    send: async (call: UpstreamCall) => {
      sent.push(call)
      return answers.shift() ?? { status: 201, headers: {}, body: Buffer.alloc(0), upstreamMs: 1 }
    }
  } as unknown as Forwarding
  return {
    icom: new Icom({
      ispb: '99999004',
      maxInFlight: 1,
      queueMax: 2,
      queueTimeoutMs: 60_000,
      coalesceMaxParts: o.coalesceMaxParts ?? 1,
      maxBodyBytes: 1 << 20,
      forwarding,
      gauges: { posts: (a, q) => { posts.push([a, q]) }, readers: (a, q) => { readers.push([a, q]) }, postParts: () => {} }
    }),
    posts,
    readers,
    sent
  }
}

t.test('posts and stream readers have slots of their own; a post that waits is counted as queued, then refused past the queue bound', async (t) => {
  const f = icom()
  let release!: () => void
  const held = f.icom.withPostSlot(async () => await new Promise<void>((resolve) => { release = resolve }))
  // The one POST slot is taken: a reader still goes at once.
  t.equal(await f.icom.withReaderSlot(async () => 'read'), 'read', 'a reader is not held up by posts')
  const waiting = f.icom.withPostSlot(async () => 'second')
  const waiting2 = f.icom.withPostSlot(async () => 'third')
  t.same(f.posts.at(-1), [1, 2], 'one in flight, two queued')
  await t.rejects(f.icom.withPostSlot(async () => 'fourth'), { code: Errors.SPI_QUEUE_FULL.code, outcome: 'not-sent' }, 'the queue bound')
  release()
  await held
  t.equal(await waiting, 'second')
  t.equal(await waiting2, 'third')
  t.same(f.posts.at(-1), [0, 0], 'all slots free again')
  t.ok(f.readers.some(([a]) => a === 1), 'the reader was counted on its own gauge')
})

t.test('a caller\'s own post is sent again after a 429 (ICOM took nothing), the last answer returned', async (t) => {
  const tooMany: UpstreamAnswer = { status: 429, headers: {}, body: Buffer.alloc(0), upstreamMs: 2 }
  const sent: UpstreamCall[] = []
  const answers = [tooMany, { status: 201, headers: { 'pi-resourceid': 'R1' }, body: Buffer.alloc(0), upstreamMs: 3 }]
  const pipeline = { send: async (c: UpstreamCall) => { sent.push(c); return answers.shift() as UpstreamAnswer } } as unknown as Forwarding
  const call: UpstreamCall = { name: 'spi', method: 'POST', path: '/api/v1/in/99999004/msgs', headers: {}, body: '<x/>' }
  const { post } = icom().icom
  const answer = await post.send?.(call, pipeline)
  t.match(answer, { status: 201, headers: { 'pi-resourceid': 'R1' }, upstreamMs: 5 }, 'the 201, its latency covering both attempts')
  t.same(sent, [call, call], 'the same post twice')
  t.same({ label: post.label, signed: post.signed }, { label: 'ICOM', signed: 'none' }, 'BACEN signs nothing in answers to posts')
})

t.test('coalescing: a policy of its own when on; asking for it when off is a bug, not a silent direct send', async (t) => {
  const off = icom()
  t.equal(off.icom.coalescing, false)
  t.throws(() => off.icom.coalesced('<x/>', () => false), /coalescing is off/)
  const on = icom({ coalesceMaxParts: 10 })
  t.equal(on.icom.coalescing, true)
  const policy = on.icom.coalesced('<Document/>', () => false)
  const answer = await policy.send?.({ name: 'spi', method: 'POST', path: '/x', headers: {} }, {} as Forwarding)
  t.equal(answer?.status, 201)
  t.match(on.sent, [{ name: 'spi', method: 'POST', path: '/api/v1/in/99999004/msgs', headers: { 'content-type': 'application/xml; charset=utf-8' }, body: '<Document/>' }], 'the batcher sent it alone, on our ISPB\'s path')
})

import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { InFlightLimiter } from '../../src/icom/limiter.ts'
import { PixProxyError } from '../../core/errors.ts'

t.test('never more than maxInFlight at once, FIFO hand-over', async (t) => {
  const seen: number[] = []
  const l = new InFlightLimiter({ maxInFlight: 3, queueMax: 100, queueTimeoutMs: 5000, onChange: (a) => seen.push(a) })
  let running = 0
  let peak = 0
  const order: number[] = []
  await Promise.all(Array.from({ length: 20 }, async (_v, i) => {
    const release = await l.acquire()
    order.push(i)
    running++
    peak = Math.max(peak, running)
    await sleep(5)
    running--
    release()
    release() // a second call must not free a second slot
  }))
  t.equal(peak, 3)
  t.equal(Math.max(...seen), 3)
  t.same(order, [...order].sort((a, b) => a - b), 'served in arrival order')
  t.equal(l.active, 0)
  t.equal(l.waiting, 0)
})

t.test('a full queue is refused at once; a waiter past its deadline times out', async (t) => {
  // The limiter's timers are unref'd (a waiting HTTP request keeps the loop alive in the server): hold it here.
  const hold = setInterval(() => {}, 1000)
  t.teardown(() => clearInterval(hold))
  const l = new InFlightLimiter({ maxInFlight: 1, queueMax: 1, queueTimeoutMs: 50 })
  const release = await l.acquire()
  const waiting = l.acquire()
  await t.rejects(l.acquire(), { code: 'PIXPROXY_ERR_SPI_QUEUE_FULL' })
  const err = await waiting.then(() => null, (e: unknown) => e)
  t.ok(err instanceof PixProxyError)
  t.equal((err as PixProxyError).code, 'PIXPROXY_ERR_SPI_QUEUE_TIMEOUT')
  t.equal((err as PixProxyError).statusCode, 503)
  t.equal(l.waiting, 0, 'the timed-out waiter left the queue')
  release()
  t.equal(l.active, 0)
  const again = await l.acquire()
  t.equal(l.active, 1, 'the limiter still works after a timeout')
  again()
})

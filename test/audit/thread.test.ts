/**
 * Starting an audit trail's thread (src/audit/thread.ts, whenReady: used by the audit worker and the ship thread):
 * resolves on `ready` only, with the messages before it handed to `skip`; every other start throws (the thread's own
 * error for `open-failed`, the caller's for the rest) with the thread ended first; an error thrown in the thread is
 * never thrown in this one. Real threads (eval'd, a few lines each); each outcome is an event, nothing is timed.
 */
import { EventEmitter } from 'node:events'
import { Worker } from 'node:worker_threads'
import t from 'tap'
import type { Test } from 'tap'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { toWire, whenReady } from '../../src/audit/thread.ts'

/**
 * A thread running `body` (CommonJS, `port` is its parentPort), ended by the test's teardown if it is still running.
 * `ended()` says whether its 'exit' has been emitted (terminate() resolves only after it is).
 */
function thread (t: Test, body: string): Worker & { ended (): boolean } {
  const worker = new Worker(`const port = require('node:worker_threads').parentPort\n${body}`, { eval: true })
  let exited = false
  worker.once('exit', () => { exited = true })
  t.teardown(async () => { await worker.terminate() })
  return Object.assign(worker, { ended: () => exited })
}

/** The caller's error, with what whenReady gave it. */
class StartFailed extends Error {
  readonly why: string
  readonly origin: unknown
  constructor (why: string, origin: unknown) {
    super(`did not start: ${why}`)
    this.why = why
    this.origin = origin
  }
}
const failed = (why: string, cause?: unknown): Error => new StartFailed(why, cause)

async function thrown (p: Promise<unknown>): Promise<Error> {
  return await p.then(() => { throw new Error('expected a rejection') }, (err: unknown) => err as Error)
}

t.test('ready: resolves with it; the messages before it go to skip; the caller\'s listeners get the later ones', async (t) => {
  const worker = thread(t, `
port.postMessage({ t: 'log', msg: 'opening' })
port.postMessage({ t: 'log', msg: 'replayed' })
port.postMessage({ t: 'ready', limits: 7 })
port.on('message', (m) => { port.postMessage({ t: 'echo', m }) })`)
  const skipped: string[] = []
  const ready = await whenReady<{ t: 'ready', limits: number }>(worker, {
    failed,
    skip: (m) => {
      if (m.t !== 'log') return false
      skipped.push((m as { readonly t: string, readonly msg: string }).msg)
      return true
    }
  })
  t.same(ready, { t: 'ready', limits: 7 })
  t.same(skipped, ['opening', 'replayed'], 'in order, none taken for the first message')
  t.equal(worker.listenerCount('message'), 0, 'its message listener is gone')
  t.equal(worker.listenerCount('exit'), 1, 'its exit listener too (the one left is the test\'s)')
  const echo = new Promise((resolve) => worker.once('message', resolve))
  worker.postMessage('ping')
  t.same(await echo, { t: 'echo', m: 'ping' }, 'the thread runs on, for the caller')
})

t.test('open-failed: the thread\'s own error (same code and status), the thread ended', async (t) => {
  const wire = toWire(new PixProxyError(Errors.AUDIT_STORE_OPEN, ['/nowhere', 'not a directory']))
  const worker = thread(t, `
port.postMessage({ t: 'open-failed', error: ${JSON.stringify(wire)} })
port.on('message', () => {}) // stays alive: only whenReady's terminate ends it`)
  const err = await thrown(whenReady(worker, { failed }))
  t.ok(err instanceof PixProxyError, 'revived')
  t.equal((err as PixProxyError).code, Errors.AUDIT_STORE_OPEN.code)
  t.equal((err as PixProxyError).statusCode, Errors.AUDIT_STORE_OPEN.statusCode)
  t.equal(err.message, wire.message)
  t.ok(worker.ended(), 'the thread has ended')
})

t.test('a thread that exits before its first message: the caller\'s error, saying so', async (t) => {
  const worker = thread(t, 'process.exit(3)')
  const err = await thrown(whenReady(worker, { failed }))
  t.ok(err instanceof StartFailed)
  t.equal((err as StartFailed).why, 'exited with code 3 while starting')
  t.ok(worker.ended(), 'the thread has ended')
})

t.test('a thread that throws while starting: the caller\'s error with the thread\'s as its cause, never thrown here', async (t) => {
  const worker = thread(t, "throw new Error('the sink module failed to load')")
  const err = await thrown(whenReady(worker, { failed }))
  t.ok(err instanceof StartFailed)
  t.equal((err as StartFailed).why, 'the sink module failed to load')
  t.match((err as StartFailed).origin, { message: 'the sink module failed to load' })
  t.ok(worker.ended(), 'the thread has ended')
  // Had the thread's 'error' been thrown in this one, this test (and, for the ship thread, the audit thread) would
  // have ended with it instead of reaching here.
})

t.test('a first message that is neither: the caller\'s error, the thread ended', async (t) => {
  const worker = thread(t, "port.postMessage({ t: 'done', k: 0 })\nport.on('message', () => {})")
  const err = await thrown(whenReady(worker, { failed }))
  t.ok(err instanceof StartFailed)
  t.equal((err as StartFailed).why, 'its first message was done')
  t.ok(worker.ended(), 'the thread has ended')
})

t.test('regression: a thread that ends right after its ready (both delivered at once) is a start that failed', async (t) => {
  // A real thread cannot be made to do this on cue: it happens when this thread reads the port only after the other
  // ended (a busy event loop), and Node then drains the port and emits 'exit' in one go, with no microtask between.
  // Those two emits, in one synchronous block, on a stand-in for the Worker.
  const worker = Object.assign(new EventEmitter(), { terminated: 0, terminate: async function (this: { terminated: number }) { this.terminated++ } })
  const starting = whenReady(worker as unknown as Worker, { failed })
  worker.emit('message', { t: 'ready', limits: 7 })
  worker.emit('exit', 3)
  const err = await thrown(starting)
  t.ok(err instanceof StartFailed, 'not a ready thread: the caller\'s \'exit\' listener, added after, would never hear of it')
  t.equal((err as StartFailed).why, 'exited with code 3 right after it was ready')
  t.equal(worker.listenerCount('message') + worker.listenerCount('exit'), 0, 'its listeners are gone')
})

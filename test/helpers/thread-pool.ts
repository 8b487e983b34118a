/**
 * Holding libuv's thread pool, to prove that work runs on it (off the event loop) without timing anything.
 *
 * Asynchronous crypto (node:crypto's callback forms, pkcs11js's C_Sign with a callback) is queued on the libuv
 * thread pool. holdThreadPool() occupies every thread of that pool with an open(2) of a FIFO, which blocks until
 * release() opens the FIFO's other end. The pool takes work in FIFO order, so anything queued after the hold
 * cannot start until the test releases it: an operation that is still pending while the event loop runs other
 * callbacks is known to be in progress off the event loop, on any machine at any load. Work done on the event
 * loop itself would not wait for the release at all.
 */
import { execFileSync } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'

/** The number of threads libuv starts: UV_THREADPOOL_SIZE (clamped to 1..1024 as libuv does), 4 by default. */
function threadPoolSize (env: NodeJS.ProcessEnv = process.env): number {
  const value = env.UV_THREADPOOL_SIZE
  if (value === undefined) return 4
  const n = Number.parseInt(value, 10)
  return Number.isNaN(n) || n < 1 ? 1 : Math.min(n, 1024)
}

export interface ThreadPoolHold {
  /** Lets the held threads go and resolves once they are free again. Idempotent. */
  release (): Promise<void>
}

/** Blocks every libuv thread-pool thread until release(); `dir` is a scratch directory for the FIFO. */
export function holdThreadPool (dir: string): ThreadPoolHold {
  const fifo = join(dir, `thread-pool-hold-${process.pid}-${Math.random().toString(36).slice(2)}`)
  execFileSync('mkfifo', [fifo])
  // Each open for reading blocks its thread in the kernel until a writer opens the FIFO.
  const readers = Array.from({ length: threadPoolSize() }, async () => await open(fifo, 'r'))
  let released: Promise<void> | undefined
  return {
    release () {
      released ??= (async () => {
        // O_RDWR never blocks on Linux and counts as a writer: every blocked reader's open returns.
        const writer = openSync(fifo, 'r+')
        try {
          for (const handle of await Promise.all(readers)) await handle.close()
        } finally {
          closeSync(writer)
        }
      })()
      return released
    }
  }
}

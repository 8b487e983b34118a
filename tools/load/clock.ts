/**
 * Time for the load engine. `realClock` is the process's monotonic clock and timers; `VirtualClock` is simulated
 * time for tests and for replaying schedules: nothing waits for real, time moves only to the next timer once
 * everything that can run has run, so a run's timings (due times, latencies, drain deadlines) are exact and do not
 * depend on how fast or busy the machine is.
 */
import { performance } from 'node:perf_hooks'
import { setImmediate as setImmediateP } from 'node:timers/promises'

export interface Clock {
  /** Milliseconds on a monotonic clock. */
  now (): number
  /** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
  sleep (ms: number, signal?: AbortSignal): Promise<void>
  /** Lets pending I/O and callbacks run before continuing. */
  yield (): Promise<void>
}

export const realClock: Clock = Object.freeze({
  now: () => performance.now(),
  sleep: async (ms: number, signal?: AbortSignal): Promise<void> => {
    if (signal?.aborted === true) return
    // Not unref'd: while a run is on, its schedule is what keeps the process alive.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(0, ms))
      function done (): void {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      signal?.addEventListener('abort', done, { once: true })
    })
  },
  yield: async (): Promise<void> => { await setImmediateP() }
})

interface Timer { readonly at: number, readonly seq: number, readonly fire: () => void }

/**
 * Simulated time. Drive a run with `run(promise)`: whenever nothing else is left to run, the clock jumps to the
 * earliest pending timer and fires it (timers due at the same time fire in the order they were set). `advance(ms)`
 * moves time forward at once without firing anything, as a blocked event loop does. Code under a virtual clock
 * must not wait on real timers or real I/O: `run` would take that for a deadlock.
 */
export class VirtualClock implements Clock {
  private t: number
  private seq = 0
  private readonly timers: Timer[] = []

  constructor (start = 0) {
    this.t = start
  }

  now (): number {
    return this.t
  }

  advance (ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`cannot move time backwards (${ms} ms)`)
    this.t += ms
  }

  async sleep (ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) return
    await new Promise<void>((resolve) => {
      const onAbort = (): void => {
        const i = this.timers.indexOf(timer)
        if (i >= 0) this.timers.splice(i, 1)
        resolve()
      }
      const timer: Timer = {
        at: this.t + Math.max(0, ms),
        seq: this.seq++,
        fire: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        }
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.timers.push(timer)
    })
  }

  async yield (): Promise<void> {
    await this.sleep(0)
  }

  /** Timers not fired yet. */
  get pending (): number {
    return this.timers.length
  }

  /**
   * Runs the simulation until `p` settles and returns its outcome. Throws when `p` is still pending with no timer
   * left (it waits on something outside the simulation), or after `maxSteps` timers (a schedule that never ends).
   */
  async run<T> (p: Promise<T>, maxSteps = 10_000_000): Promise<T> {
    let settled = false
    p.then(() => { settled = true }, () => { settled = true })
    for (let step = 0; ; step++) {
      // Every promise chain that can advance without time passing does so before the next macrotask.
      await setImmediateP()
      if (settled) return await p
      if (step >= maxSteps) throw new Error(`VirtualClock.run: still pending after ${maxSteps} timers`)
      let index = -1
      for (let i = 0; i < this.timers.length; i++) {
        const tm = this.timers[i] as Timer
        const best = this.timers[index]
        if (best === undefined || tm.at < best.at || (tm.at === best.at && tm.seq < best.seq)) index = i
      }
      const next = this.timers[index]
      if (next === undefined) throw new Error('VirtualClock.run: the promise waits on something other than this clock (no timer pending)')
      this.timers.splice(index, 1)
      this.t = Math.max(this.t, next.at)
      next.fire()
    }
  }
}

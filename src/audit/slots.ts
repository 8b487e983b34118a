/**
 * A spool directory shared by several processes (ECS tasks on one EFS file system): each process claims a slot of
 * its own, `slot-000`, `slot-001`…, and adopts the slots of processes that died.
 *
 * Why slots: a spool belongs to one process (spool.ts: `spool.lock`), but tasks come and go, and the rows a
 * killed task left behind must ship without anyone naming its directory. A starting task takes the lowest slot
 * whose lock it can take, which after a crash is usually the dead task's own: it replays those rows and ships them
 * as its own. Slots above the live tasks' (left by a scale-in whose tasks died before shipping everything) are
 * found by the sweeper: every `intervalMs` each process tries to lock the other slots; a lock it gets belongs to a
 * process that is gone (spool.ts: same host and pid not running, or untouched for 30 s), so it replays that slot,
 * ships its rows through the same sink, and releases it, empty, for the next claim.
 *
 * Claims race safely: the lock file is created exclusively, so of two processes trying the same free slot one
 * gets it and the other moves on to the next; and of several taking over the same dead slot's lock, one (a
 * takeover marker is created exclusively too, spool/lock.ts), the others move on.
 */
import { mkdir, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AuditPipeline } from './pipeline.ts'
import type { AuditSink, SinkResult } from './sink.ts'
import { AuditSpool } from './spool.ts'
import type { AuditLogger, AuditSpoolOptions } from './spool.ts'
import type { AuditRow } from './schema.ts'
import type { AuditClock } from './clock.ts'

/** Far above any sane task count; a bound so a misconfigured root cannot make a start-up loop for ever. */
export const MAX_SPOOL_SLOTS = 1_000
const SLOT_RE = /^slot-(\d{3,})$/

export function slotName (n: number): string {
  return `slot-${String(n).padStart(3, '0')}`
}

async function slotNumbers (root: string): Promise<number[]> {
  const names = await readdir(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[]
    throw err
  })
  return names.flatMap((n) => {
    const m = SLOT_RE.exec(n)
    return m === null ? [] : [Number(m[1])]
  }).sort((a, b) => a - b)
}

const isLocked = (err: unknown): boolean => err instanceof PixProxyError && err.code === Errors.AUDIT_SPOOL_LOCKED.code

/**
 * Opens the lowest slot under `root` this process can lock (replaying what a previous owner left), creating a new
 * slot when every existing one is held by a live process.
 */
export async function claimSpoolSlot (root: string, options: Omit<AuditSpoolOptions, 'dir'>): Promise<AuditSpool> {
  try {
    await mkdir(root, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`create ${root}`, (err as Error).message], { cause: err })
  }
  for (let n = 0; n < MAX_SPOOL_SLOTS; n++) {
    try {
      return await AuditSpool.open({ ...options, dir: join(root, slotName(n)) })
    } catch (err) {
      if (!isLocked(err)) throw err
    }
  }
  throw new PixProxyError(Errors.AUDIT_SPOOL_LOCKED, [root, `all ${MAX_SPOOL_SLOTS} slots held by live processes`])
}

/** One sink shared by the live pipeline and adoptions: calls go one at a time (a sink need not be reentrant). */
export function serialSink (sink: AuditSink): AuditSink {
  let tail: Promise<unknown> = Promise.resolve()
  return {
    name: sink.name,
    maxBatchRows: sink.maxBatchRows,
    maxBatchBytes: sink.maxBatchBytes,
    maxRowBytes: sink.maxRowBytes,
    async write (rows: readonly AuditRow[]): Promise<SinkResult> {
      const run = tail.then(async () => await sink.write(rows))
      tail = run.catch(() => {})
      return await run
    },
    close: async () => { await sink.close() }
  }
}

export interface SlotSweeperOptions {
  readonly root: string
  /** The slot this process owns (never adopted). */
  readonly own: AuditSpool
  /** Where adopted rows ship; wrap a sink the live pipeline also uses with serialSink. */
  readonly sink: AuditSink
  readonly spoolOptions: Omit<AuditSpoolOptions, 'dir'>
  /** Between sweeps (default 60 s; the first sweep runs at once). */
  readonly intervalMs?: number
  /**
   * How long one adopted slot may take to ship before it is released with rows left for the next sweep (default
   * 10 s: bounds a shutdown waiting for it), plus what a sink call running at that moment still takes (the
   * ship thread's write deadline bounds it).
   */
  readonly shipDeadlineMs?: number
  readonly logger?: AuditLogger
  /**
   * Time source of the adoptions' pipelines (flush, deadline; default realClock): the clock `spoolOptions.clock`
   * stamps rows with (AuditPipelineOptions.clock).
   */
  readonly clock?: AuditClock
}

export interface AdoptionResult {
  readonly slot: string
  readonly replayedRows: number
  readonly shipped: number
  readonly left: number
}

/** Adopts and drains the slots of dead processes, now and every `intervalMs`. */
export class SlotSweeper {
  readonly #o: SlotSweeperOptions
  readonly #timer: NodeJS.Timeout
  #running: Promise<AdoptionResult[]> | null = null
  #closed = false
  #adopted = 0
  #adoptedRows = 0

  private constructor (o: SlotSweeperOptions) {
    this.#o = o
    this.#timer = setInterval(() => { void this.sweep() }, o.intervalMs ?? 60_000).unref()
  }

  static start (o: SlotSweeperOptions): SlotSweeper {
    const s = new SlotSweeper(o)
    void s.sweep()
    return s
  }

  stats (): { readonly adoptedSlots: number, readonly adoptedRows: number } {
    return { adoptedSlots: this.#adopted, adoptedRows: this.#adoptedRows }
  }

  /** One pass over the other slots (a pass already running is joined, not doubled). */
  async sweep (): Promise<AdoptionResult[]> {
    if (this.#closed) return []
    this.#running ??= this.#sweep().finally(() => { this.#running = null })
    return await this.#running
  }

  async #sweep (): Promise<AdoptionResult[]> {
    const { root, own, logger } = this.#o
    const results: AdoptionResult[] = []
    let numbers: number[]
    try {
      numbers = await slotNumbers(root)
    } catch (err) {
      logger?.warn({ code: Errors.AUDIT_SPOOL_IO.code, err, root }, 'cannot list the audit spool slots')
      return results
    }
    for (const n of numbers) {
      if (this.#closed) break
      const dir = join(root, slotName(n))
      if (dir === own.dir) continue
      let spool: AuditSpool
      try {
        spool = await AuditSpool.open({ ...this.#o.spoolOptions, dir })
      } catch (err) {
        if (!isLocked(err)) logger?.warn({ code: (err as PixProxyError).code, err, dir }, 'cannot adopt an audit spool slot')
        continue
      }
      const replayedRows = spool.stats().pendingRows
      let shipped = 0
      let left = replayedRows
      if (replayedRows > 0) {
        const { clock } = this.#o
        const pipeline = AuditPipeline.start({ spool, sink: this.#o.sink, flushMs: 10, ...(logger === undefined ? {} : { logger }), ...(clock === undefined ? {} : { clock }) })
        await pipeline.close(this.#o.shipDeadlineMs ?? 10_000)
        // A sink call still running at the deadline may yet acknowledge its rows: the spool stays open (and the slot
        // locked) until it has returned and the loop has acknowledged them or handed them back, as in
        // AuditService.close. Closed under it, the acknowledgement deleted the slot's segments after its lock was
        // released, when another sweep or process could already have claimed the slot and replayed them.
        await pipeline.stopped()
        shipped = pipeline.stats().shippedRows
        left = spool.stats().pendingRows
        this.#adopted++
        this.#adoptedRows += shipped
        logger?.warn({ dir, replayedRows, shipped, left }, 'adopted the audit spool slot of a process that is gone')
      }
      await spool.close()
      results.push({ slot: slotName(n), replayedRows, shipped, left })
    }
    return results
  }

  /** Stops sweeping; an adoption in progress finishes (bounded by shipDeadlineMs and a sink call's own deadline). */
  async close (): Promise<void> {
    this.#closed = true
    clearInterval(this.#timer)
    await this.#running
  }
}

/**
 * The audit write-ahead spool: the request half of a transaction's audit row is on disk, fsync'd, BEFORE the
 * message leaves for BACEN, and the response half is appended when it is known. The shipping pipeline
 * (pipeline.ts) reads completed rows from here and tells the spool which ones a sink accepted; only then can
 * their files go.
 *
 * On disk: `<dir>/spool-<seq>.log` segment files, append-only, each a sequence of frames
 *
 *     0xFF 0xA5 | u32 BE payload length | u32 BE CRC-32 of (length bytes, payload) | payload (UTF-8 JSON)
 *
 * with three kinds of payload: `{"k":"b","t":…,"r":{request half}}` (begin), `{"k":"e","id":…,"t":…,"f":{response
 * half}}` (end) and `{"k":"a","ids":[…]}` (ack marker: rows a sink already accepted, a hint that saves
 * re-shipping them after a restart). 0xFF never occurs in UTF-8, so a reader that lost its place can only
 * re-synchronise on a real frame start or a header field, never inside a JSON payload, and the CRC rejects the
 * rest: a damaged or torn frame is skipped, never misread.
 *
 * Durability. Appends are group-committed: the first append after a quiet moment waits `groupCommitMs` for
 * company, then one write and one fdatasync cover every append queued meanwhile (appends that arrive during that
 * fsync form the next group). begin() and end() resolve only after the fsync that covers their frame. A segment
 * is sealed (never written again) once it reaches `segmentBytes`, after its last fsync; a new segment's directory
 * entry is fsync'd before anything in it is acknowledged. A segment is deleted only when every row with a frame
 * in it, and in every older segment, was accepted by the sink (oldest first, so an end frame can outlive its begin
 * frame, never the other way round: an end without its begin on replay means "already shipped").
 *
 * What a crash (kill -9, power loss) can lose: nothing acknowledged. A begin() or end() that resolved was fsync'd,
 * so every request sent (the proxy sends only after begin() resolved) has at least its request half, and every
 * response the proxy passed on after end() resolved has its complete row. Appends whose promise had not resolved
 * may be lost or may survive; frames torn mid-write are detected by their CRC and ignored. On the next open every
 * segment is replayed: a begin with its end is a complete row; a begin without an end becomes a row with
 * error_code = PIXPROXY_ERR_AUDIT_INCOMPLETE (outcome unknown: the end was not durable, or the request was still
 * in flight, or, for a begin that reached the disk but never resolved, the request was never sent at all).
 * What it can duplicate: rows a sink accepted whose segment had not been deleted and whose ack marker was not on
 * disk yet ship again (at least once; deduplicate on `id`). Rows ship only once their end is durable and
 * segments go oldest first, so a duplicate is always the same row: never a complete row and an INCOMPLETE one
 * for the same id.
 *
 * Bounds. begin() rejects with PIXPROXY_ERR_AUDIT_SPOOL_FULL when its frame would take the spool past `maxBytes`
 * (the proxy answers 503 and does not send: an unauditable transaction must not happen); `nearFull` rises at 80 %.
 * end() is never refused for space: the request was sent, so its response must be kept; the spool can exceed
 * `maxBytes` by the responses of the transactions in flight. A write or fsync error stops the spool for good
 * (after a failed fsync Linux may have dropped the dirty pages, so nothing written since the last good fsync can
 * be trusted): every later begin()/end() rejects with PIXPROXY_ERR_AUDIT_SPOOL_IO and readiness should fail.
 *
 * One process owns a directory. `spool.lock` names its pid and host and the owner touches it every 5 s; a lock
 * is taken over when its process is gone (same host) or it went untouched for 30 s (another host: a shared
 * filesystem such as EFS, where pids say nothing). Of several processes taking over one stale lock exactly one
 * succeeds (a takeover marker created exclusively; spool/lock.ts); the others get AUDIT_SPOOL_LOCKED. Before each touch
 * the owner reads the lock: when it is no longer its own (it was presumed dead, e.g. paused past 30 s, and taken
 * over) the spool stops for good, every later begin()/end() rejecting with PIXPROXY_ERR_AUDIT_SPOOL_LOCKED, and it
 * deletes, parks and ships nothing more there (the new owner replayed those rows). Two live tasks must therefore
 * not share a directory (slots.ts gives each its own under a shared root). The directory must be on a disk that
 * outlives the process (not a container's ephemeral layer) for replay to help.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { fdatasyncSync } from 'node:fs'
import { join } from 'node:path'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { realClock } from './clock.ts'
import type { AuditClock } from './clock.ts'
import type { AuditLogger } from './logger.ts'
import type { AuditRow } from './schema.ts'
import { Deque } from './spool/deque.ts'
import { closeHandles, corruptName, DIR_MODE, FILE_MODE, segName, syncDir, writeAll, writeAllSync } from './spool/files.ts'
import type { Loc, Segment } from './spool/files.ts'
import { encodeFrame, frameAt, SPOOL_FRAME_HEADER_BYTES, SPOOL_MAX_FRAME_PAYLOAD } from './spool/frame.ts'
import { SpoolLock } from './spool/lock.ts'
import type { SpoolLockHooks } from './spool/lock.ts'
import { replayDir } from './spool/replay.ts'
import type { SpoolReplayReport } from './spool/replay.ts'
import { everyColumn, ID_RE, mergeRow, REQUEST_NAMES, RESPONSE_FACT_COLUMNS, RESPONSE_NAMES, validateHalf } from './spool/row.ts'
import type { AuditRequestHalf, AuditResponseHalf, Tx } from './spool/row.ts'

// What the rest of the proxy imports from here: the spool's halves and columns, its frame codec, its logger.
export type { AuditLogger } from './logger.ts'
export { encodeFrame, scanFrames, SPOOL_FRAME_HEADER_BYTES } from './spool/frame.ts'
export { REQUIRED_REQUEST_COLUMNS, RESPONSE_COLUMNS } from './spool/row.ts'
export type { AuditRequestHalf, AuditResponseHalf } from './spool/row.ts'

export interface AuditSpoolOptions {
  /** Created when missing. One process at a time. */
  readonly dir: string
  /** Bound on the spool's files; begin() refuses beyond it. */
  readonly maxBytes: number
  /** How long the first append of a group waits for others before the write and fsync (default 2; 0 = none). */
  readonly groupCommitMs?: number
  /** A segment is sealed and a new one started past this size (default maxBytes / 8, between 64 KiB and 8 MiB). */
  readonly segmentBytes?: number
  readonly logger?: AuditLogger
  /** Makes a segment's appended data durable (default `fh.datasync()`); tests wrap it to count fsyncs. */
  readonly sync?: (fh: FileHandle) => Promise<void>
  /**
   * Appends and their fdatasync block this thread instead of queueing on libuv's thread pool (default false). For
   * a thread of its own (the audit worker): the pool is shared with the HSM's signs (and on CloudHSM each holds a
   * pool thread for a network round trip), so a pooled fsync waits behind them.
   */
  readonly blockingIo?: boolean
  /** Rows waiting to ship are also kept in memory up to this many frame bytes (default 64 MiB; 0 = always read back). */
  readonly memoryBytes?: number
  /**
   * Stamps `readyAt` (default realClock); give the pipeline the same clock (AuditPipelineOptions.clock). Only
   * that: group commit and the lock heartbeat keep real time.
   */
  readonly clock?: Pick<AuditClock, 'now'>
  /** Seams for tests of the lock; production leaves them unset. */
  readonly lockHooks?: SpoolLockHooks
}

/** A completed row handed to the pipeline (shift), until it is acked, parked or given back (unshift). */
export interface SpoolRef {
  readonly id: string
  /** Size of the row's frames: an estimate of its JSON size, for batching. */
  readonly bytes: number
  /** The spool's clock (AuditSpoolOptions.clock, default performance.now()) when the row became ready to ship. */
  readonly readyAt: number
}

export interface SpoolStats {
  /** Bytes of segment and parked files on disk (what maxBytes bounds). */
  readonly bytes: number
  readonly maxBytes: number
  /** bytes (with appends queued) at or above 80 % of maxBytes: warn readiness, alert. */
  readonly nearFull: boolean
  readonly segments: number
  /** Rows begun and not yet accepted by a sink (in flight, ready, being shipped); parked rows excluded. */
  readonly pendingRows: number
  /** Rows begun whose end() has not been written yet. */
  readonly openRows: number
  readonly readyRows: number
  /** Rows no sink can take as they are (see pipeline.ts), kept as parked-<id>.json until a sink can. */
  readonly parkedRows: number
  /** Age of the oldest pending row (since its begin), 0 when none: the shipping lag. */
  readonly oldestUnshippedAgeMs: number
  /** Counters since open. */
  readonly spooledRows: number
  readonly shippedRows: number
  readonly rejectedFull: number
  readonly syncs: number
  readonly failed: boolean
  readonly replay: SpoolReplayReport
}

const MiB = 1024 * 1024
const NEAR_FULL = 0.8

interface Append {
  readonly frame: Buffer
  /** Ack markers are hints: they ride along with the next group instead of forcing an fsync. */
  readonly marker: boolean
  readonly apply: (loc: Loc) => void
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

const message = (err: unknown): string => err instanceof Error ? err.message : String(err)

export class AuditSpool {
  readonly dir: string
  readonly maxBytes: number
  readonly #groupCommitMs: number
  readonly #segmentBytes: number
  readonly #logger: AuditLogger | undefined
  readonly #sync: (fh: FileHandle) => Promise<void>
  readonly #write: (fh: FileHandle, buf: Buffer, position: number) => Promise<void>

  readonly #txs = new Map<string, Tx>()
  readonly #segments = new Map<number, Segment>()
  readonly #ready = new Deque<Tx>()
  #readyBytes = 0
  #readyListener: (() => void) | null = null
  #active: Segment | null = null
  /**
   * The next segment, created (and its name made durable) ahead of time, so that starting a segment never puts a
   * file creation and a directory fsync in front of a request (measured: the source of audit-wait spikes of
   * 10-25 ms). Empty until it becomes active; an empty segment left by a crash replays as nothing.
   */
  #spare: Promise<Segment> | null = null
  #lastSeq = 0
  #bytes = 0

  #queue: Append[] = []
  #queuedBytes = 0
  #queuedRows = 0
  #firstQueuedAt = 0
  /** Cancels the scheduled commit; null when none is scheduled. */
  #timer: (() => void) | null = null
  #committing = false
  #idleWaiters: Array<() => void> = []
  #collecting: Promise<void> = Promise.resolve()

  #openRows = 0
  #parkedRows = 0
  #spooled = 0
  #shipped = 0
  #rejectedFull = 0
  #syncs = 0
  #nearFull = false
  #failed: PixProxyError | null = null
  #closing = false
  #closed = false
  #replay: SpoolReplayReport = { rows: 0, incomplete: 0, alreadyShipped: 0, tornBytes: 0, corruptBytes: 0 }
  readonly #lock: SpoolLock
  readonly #memLimit: number
  #memBytes = 0
  readonly #now: () => number

  private constructor (opts: AuditSpoolOptions) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes <= 0) throw new PixProxyError(Errors.CONFIG_INVALID, [`audit spool maxBytes must be a positive integer, not ${opts.maxBytes}`])
    const gc = opts.groupCommitMs ?? 2
    if (!(gc >= 0 && gc <= 1000)) throw new PixProxyError(Errors.CONFIG_INVALID, [`audit spool groupCommitMs must be between 0 and 1000, not ${gc}`])
    const seg = opts.segmentBytes ?? Math.min(8 * MiB, Math.max(64 * 1024, Math.floor(opts.maxBytes / 8)))
    if (!Number.isSafeInteger(seg) || seg <= 0) throw new PixProxyError(Errors.CONFIG_INVALID, [`audit spool segmentBytes must be a positive integer, not ${seg}`])
    this.dir = opts.dir
    this.maxBytes = opts.maxBytes
    this.#now = opts.clock?.now ?? realClock.now
    this.#groupCommitMs = gc
    this.#segmentBytes = seg
    this.#logger = opts.logger
    this.#sync = opts.sync ?? (opts.blockingIo === true ? async (fh) => { fdatasyncSync(fh.fd) } : async (fh) => { await fh.datasync() })
    this.#write = opts.blockingIo === true ? async (fh, buf, position) => { writeAllSync(fh.fd, buf, position) } : writeAll
    const mem = opts.memoryBytes ?? 64 * MiB
    if (!Number.isSafeInteger(mem) || mem < 0) throw new PixProxyError(Errors.CONFIG_INVALID, [`audit spool memoryBytes must be a non-negative integer, not ${mem}`])
    this.#memLimit = mem
    this.#lock = new SpoolLock(opts.dir, opts.logger, opts.lockHooks, (err) => { this.#lockLost(err) })
  }

  /**
   * Opens (creating it when missing) and replays the spool in `opts.dir`: every row not yet shipped is ready for
   * the pipeline, begins without an end as INCOMPLETE rows, segments already fully shipped are deleted.
   * @throws PixProxyError AUDIT_SPOOL_LOCKED when another live process has it open; AUDIT_SPOOL_IO on I/O errors.
   */
  static async open (opts: AuditSpoolOptions): Promise<AuditSpool> {
    const s = new AuditSpool(opts)
    await s.#init()
    return s
  }

  /**
   * Writes the request half of a transaction. Resolves once it is durable (fsync'd): only then may the message
   * be sent. `req.id` must be unique (a UUID v7).
   * @throws PixProxyError AUDIT_SPOOL_FULL (do not send; answer 503), AUDIT_ROW_INVALID, AUDIT_SPOOL_IO,
   *   AUDIT_SPOOL_CLOSED.
   */
  async begin (req: AuditRequestHalf): Promise<void> {
    this.#assertWritable()
    const id = (req as { id?: unknown }).id
    if (typeof id !== 'string' || !ID_RE.test(id)) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [String(id), 'id must be 1 to 128 letters, digits, dot, dash or underscore'])
    const fields = validateHalf(id, req, REQUEST_NAMES, 'request')
    if (fields['system'] !== 'spi' && fields['system'] !== 'dict' && fields['system'] !== 'gateway') throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, 'system must be spi, dict or gateway'])
    if (this.#txs.has(id)) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, 'a transaction with this id is already spooled'])
    const t = Date.now()
    const frame = this.#frame({ k: 'b', t, r: fields }, id)
    const projected = this.#bytes + this.#queuedBytes + frame.length
    if (projected > this.maxBytes) {
      this.#rejectedFull++
      this.#checkLevel()
      throw new PixProxyError(Errors.AUDIT_SPOOL_FULL, [this.#bytes + this.#queuedBytes, this.maxBytes])
    }
    const tx: Tx = { id, t, begin: null, end: null, ended: false, state: 'open', bytes: frame.length, readyAt: 0, segs: [], parkedPath: null, parkedBytes: 0, mem: null }
    this.#txs.set(id, tx)
    this.#openRows++
    try {
      await this.#append(frame, false, (loc) => {
        tx.begin = loc
        this.#ref(tx, loc.seq)
      })
    } catch (err) {
      // Not durable, so the caller will not send: forget it. (Its frame may still reach the disk and come back
      // as an INCOMPLETE row after a restart; that over-reports, never under-reports.)
      this.#txs.delete(id)
      this.#openRows--
      throw err
    }
    if (this.#memBytes + frame.length <= this.#memLimit) {
      tx.mem = { r: fields, f: null, bytes: frame.length }
      this.#memBytes += frame.length
    }
    this.#spooled++
  }

  /**
   * Writes the response half (the outcome: answer, failure or timeout) of a transaction begun here, making the
   * row ready to ship. Resolves once durable. Never refused for space (the request was sent).
   * @throws PixProxyError AUDIT_UNKNOWN_TRANSACTION, AUDIT_ROW_INVALID, AUDIT_SPOOL_IO, AUDIT_SPOOL_CLOSED.
   */
  async end (id: string, res: AuditResponseHalf): Promise<void> {
    this.#assertWritable()
    const tx = this.#txs.get(id)
    if (tx === undefined || tx.ended || tx.state !== 'open') throw new PixProxyError(Errors.AUDIT_UNKNOWN_TRANSACTION, [id])
    const fields = validateHalf(id, res, RESPONSE_NAMES, 'response')
    // Facts not given stay out of the frame (most rows have none): the request half's values stand.
    for (const n of RESPONSE_FACT_COLUMNS) if (fields[n] === null) delete fields[n]
    const frame = this.#frame({ k: 'e', id, t: Date.now(), f: fields }, id)
    tx.ended = true
    await this.#append(frame, false, (loc) => {
      tx.end = loc
      tx.bytes += frame.length
      if (tx.mem !== null) {
        tx.mem.f = fields
        tx.mem.bytes += frame.length
        this.#memBytes += frame.length
      }
      this.#ref(tx, loc.seq)
      this.#openRows--
      this.#makeReady(tx)
    })
  }

  /** Counters and levels for metrics and readiness. */
  stats (): SpoolStats {
    let oldest = 0
    for (const tx of this.#txs.values()) {
      if (tx.state === 'parked') continue
      oldest = Math.max(0, Date.now() - tx.t)
      break
    }
    return {
      bytes: this.#bytes,
      maxBytes: this.maxBytes,
      nearFull: this.nearFull,
      segments: this.#segments.size,
      pendingRows: this.#txs.size - this.#parkedRows,
      openRows: this.#openRows,
      readyRows: this.#ready.length,
      parkedRows: this.#parkedRows,
      oldestUnshippedAgeMs: oldest,
      spooledRows: this.#spooled,
      shippedRows: this.#shipped,
      rejectedFull: this.#rejectedFull,
      syncs: this.#syncs,
      failed: this.#failed !== null,
      replay: this.#replay
    }
  }

  /** The spool is at or above 80 % of maxBytes: readiness should warn before begin() starts refusing. */
  get nearFull (): boolean {
    return this.#bytes + this.#queuedBytes >= NEAR_FULL * this.maxBytes
  }

  /** The error that stopped the spool (a write or fsync failed), or null. */
  get failure (): PixProxyError | null {
    return this.#failed
  }

  // The pipeline's side. One consumer at a time.

  /** Completed rows waiting to be taken, and their estimated bytes. */
  readyInfo (): { rows: number, bytes: number, oldestReadyAt: number | null } {
    // Lost: the new owner replayed these rows and ships them; shipping them here too would only duplicate them.
    if (this.#closed || this.#lock.lost) return { rows: 0, bytes: 0, oldestReadyAt: null }
    return { rows: this.#ready.length, bytes: this.#readyBytes, oldestReadyAt: this.#ready.peek()?.readyAt ?? null }
  }

  /** Called whenever a row becomes ready (and on close); the consumer checks readyInfo() itself. */
  watchReady (listener: (() => void) | null): void {
    this.#readyListener = listener
  }

  /** Takes the oldest ready row for shipping. */
  shift (): SpoolRef | undefined {
    if (this.#closed || this.#lock.lost) return undefined
    const tx = this.#ready.shift()
    if (tx === undefined) return undefined
    tx.state = 'taken'
    this.#readyBytes -= tx.bytes
    return tx
  }

  /** Gives taken rows back, at the head of the queue, in the given order (e.g. the pipeline stops). */
  unshift (refs: readonly SpoolRef[]): void {
    for (let i = refs.length - 1; i >= 0; i--) {
      const tx = this.#taken(refs[i] as SpoolRef)
      tx.state = 'ready'
      this.#ready.unshift(tx)
      this.#readyBytes += tx.bytes
    }
  }

  /**
   * Reads a taken row back from disk, columns in schema order.
   * @throws PixProxyError AUDIT_SPOOL_IO when its frames cannot be read or no longer check out.
   */
  async load (ref: SpoolRef): Promise<AuditRow> {
    const tx = this.#taken(ref)
    if (this.#closed) throw new PixProxyError(Errors.AUDIT_SPOOL_CLOSED)
    try {
      if (tx.parkedPath !== null) return everyColumn((JSON.parse(await readFile(tx.parkedPath, 'utf8')) as { row: Record<string, unknown> }).row)
      if (tx.mem !== null && tx.end !== null && tx.mem.f !== null) return mergeRow(tx.mem.r, tx.mem.f)
      const b = await this.#readFrame(tx.begin as Loc) as { r: Record<string, unknown> }
      const e = tx.end === null ? null : await this.#readFrame(tx.end) as { f: Record<string, unknown> }
      return mergeRow(b.r, e === null ? null : e.f)
    } catch (err) {
      if (err instanceof PixProxyError) throw err
      throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`read row ${ref.id}`, message(err)], { cause: err })
    }
  }

  /**
   * Records that a sink accepted these taken rows; resolves once the segments this freed are deleted.
   * @throws PixProxyError AUDIT_UNKNOWN_TRANSACTION for a ref that is not taken.
   */
  async ack (refs: readonly SpoolRef[]): Promise<void> {
    const txs = refs.map((r) => this.#taken(r))
    const unlinks: Array<Promise<void>> = []
    const hinted: string[] = []
    const oldestSegs: number[] = []
    for (const tx of txs) {
      this.#txs.delete(tx.id)
      this.#forget(tx)
      this.#shipped++
      if (tx.segs.length > 0) {
        hinted.push(tx.id)
        oldestSegs.push(Math.min(...tx.segs))
      }
      this.#release(tx)
      if (tx.parkedPath !== null) unlinks.push(this.#unlinkParked(tx))
    }
    await Promise.all([...unlinks, this.#collect()])
    // Rows whose frames outlive this ack (an older row still holds their segment): note them as shipped, so a
    // restart does not ship them again. Only a hint, so it waits for the next group's fsync.
    const ids = hinted.filter((_, i) => this.#segments.has(oldestSegs[i] as number))
    if (ids.length > 0 && this.#active !== null && !this.#closing && this.#failed === null) {
      const frame = encodeFrame(Buffer.from(JSON.stringify({ k: 'a', ids }), 'utf8'))
      this.#append(frame, true, () => {}).catch(() => {})
    }
  }

  /**
   * Keeps a taken row that no sink can take as it is in its own durable file (parked-<id>.json) and releases
   * its segments, so one such row cannot hold the whole spool; it is offered again after the next open (e.g. to
   * a sink with larger limits). Counted in `parkedRows` and in bytes.
   */
  async park (ref: SpoolRef, row: AuditRow): Promise<void> {
    const tx = this.#taken(ref)
    if (this.#lock.lost) throw this.#failed as PixProxyError // eslint-disable-line no-throw-literal -- a lost lock implies #failed is set
    if (tx.parkedPath === null) {
      const final = join(this.dir, `parked-${tx.id}.json`)
      const tmp = `${final}.tmp`
      const body = Buffer.from(JSON.stringify({ t: tx.t, row }), 'utf8')
      try {
        const fh = await open(tmp, 'w', FILE_MODE)
        try {
          await writeAll(fh, body, 0)
          await fh.datasync()
        } finally {
          await fh.close()
        }
        await rename(tmp, final)
        await syncDir(this.dir)
      } catch (err) {
        throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`park row ${tx.id}`, message(err)], { cause: err })
      }
      tx.parkedPath = final
      tx.parkedBytes = body.length
      this.#bytes += body.length
      this.#release(tx)
      await this.#collect()
    }
    tx.state = 'parked'
    this.#forget(tx)
    this.#parkedRows++
    this.#checkLevel()
  }

  /**
   * Writes what is queued, waits for deletions in progress and releases the files. Later begin()/end() reject
   * with AUDIT_SPOOL_CLOSED; rows not shipped stay on disk for the next open.
   */
  async close (): Promise<void> {
    if (this.#closing) {
      await this.#whenIdle()
      return
    }
    this.#closing = true
    await this.#whenIdle()
    await this.#collecting
    this.#closed = true
    await this.#dropSpare()
    const handles: Array<Promise<void>> = []
    for (const seg of this.#segments.values()) handles.push(closeHandles(seg))
    await Promise.allSettled(handles)
    await this.#lock.unlock()
    this.#readyListener?.()
  }

  #assertWritable (): void {
    if (this.#closing) throw new PixProxyError(Errors.AUDIT_SPOOL_CLOSED)
    if (this.#failed !== null) throw this.#failed
  }

  #frame (entry: object, id: string): Buffer {
    const payload = Buffer.from(JSON.stringify(entry), 'utf8')
    if (payload.length > SPOOL_MAX_FRAME_PAYLOAD) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, `its record is ${payload.length} bytes; the spool takes at most ${SPOOL_MAX_FRAME_PAYLOAD}`])
    return encodeFrame(payload)
  }

  /** Drops a row's in-memory halves (it shipped or was parked). */
  #forget (tx: Tx): void {
    if (tx.mem === null) return
    this.#memBytes -= tx.mem.bytes
    tx.mem = null
  }

  #taken (ref: SpoolRef): Tx {
    const tx = this.#txs.get(ref.id)
    if (tx === undefined || tx !== ref || tx.state !== 'taken') throw new PixProxyError(Errors.AUDIT_UNKNOWN_TRANSACTION, [ref.id])
    return tx
  }

  #ref (tx: Tx, seq: number): void {
    if (tx.segs.includes(seq)) return
    const seg = this.#segments.get(seq)
    if (seg === undefined) return
    tx.segs.push(seq)
    seg.refs++
  }

  #release (tx: Tx): void {
    for (const seq of tx.segs) {
      const seg = this.#segments.get(seq)
      if (seg !== undefined) seg.refs--
    }
    tx.segs = []
  }

  #makeReady (tx: Tx): void {
    tx.state = 'ready'
    tx.readyAt = this.#now()
    this.#ready.push(tx)
    this.#readyBytes += tx.bytes
    this.#readyListener?.()
  }

  #checkLevel (): void {
    const near = this.nearFull
    if (near === this.#nearFull) return
    this.#nearFull = near
    const info = { code: Errors.AUDIT_SPOOL_FULL.code, bytes: this.#bytes, maxBytes: this.maxBytes, dir: this.dir }
    if (near) this.#logger?.warn(info, 'audit spool above 80 % of its bound: is the audit sink shipping?')
    else this.#logger?.info(info, 'audit spool back under 80 % of its bound')
  }

  // Group commit.

  #append (frame: Buffer, marker: boolean, apply: (loc: Loc) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!marker && this.#queuedRows === 0) this.#firstQueuedAt = performance.now()
      this.#queue.push({ frame, marker, apply, resolve, reject })
      this.#queuedBytes += frame.length
      if (!marker) this.#queuedRows++
      this.#checkLevel()
      this.#schedule()
    })
  }

  #schedule (): void {
    if (this.#committing || this.#timer !== null || this.#queue.length === 0) return
    if (this.#queuedRows === 0 && !this.#closing) return
    const wait = this.#closing ? 0 : Math.max(0, this.#firstQueuedAt + this.#groupCommitMs - performance.now())
    const run = (): void => {
      this.#timer = null
      void this.#commit()
    }
    // Not unref'd: a pending commit is I/O that callers are awaiting, like the write itself; it ends within
    // groupCommitMs and must not be abandoned by an exiting process. setImmediate when there is nothing to wait
    // for: setTimeout(0) would cost a millisecond.
    if (wait > 0) {
      const t = setTimeout(run, wait)
      this.#timer = () => { clearTimeout(t) }
    } else {
      const i = setImmediate(run)
      this.#timer = () => { clearImmediate(i) }
    }
  }

  #cancelTimer (): void {
    this.#timer?.()
    this.#timer = null
  }

  async #commit (): Promise<void> {
    this.#committing = true
    let batch = this.#queue
    this.#queue = []
    this.#queuedBytes = 0
    this.#queuedRows = 0
    try {
      if (this.#failed !== null) throw this.#failed
      if (this.#active === null && batch.every((a) => a.marker)) {
        // Only hints, and the segments they were about are gone already.
        for (const a of batch) a.resolve()
        batch = []
      }
      if (batch.length > 0) {
        const seg = await this.#activeSegment()
        let off = seg.size
        const locs = batch.map((a) => {
          const loc = { seq: seg.seq, off, len: a.frame.length }
          off += a.frame.length
          return loc
        })
        const buf = batch.length === 1 ? (batch[0] as Append).frame : Buffer.concat(batch.map((a) => a.frame))
        await this.#write(seg.fh as FileHandle, buf, seg.size)
        seg.size += buf.length
        this.#bytes += buf.length
        await this.#sync(seg.fh as FileHandle)
        this.#syncs++
        batch.forEach((a, i) => a.apply(locs[i] as Loc))
        for (const a of batch) a.resolve()
        if (seg.size >= this.#segmentBytes) await this.#seal(seg)
      }
    } catch (err) {
      this.#fail(err, batch)
    } finally {
      this.#committing = false
      this.#checkLevel()
      this.#schedule()
      if (this.#queue.length === 0) {
        const waiters = this.#idleWaiters
        this.#idleWaiters = []
        for (const w of waiters) w()
      }
    }
  }

  #fail (err: unknown, batch: Append[]): void {
    if (this.#failed === null) {
      this.#failed = err instanceof PixProxyError ? err : new PixProxyError(Errors.AUDIT_SPOOL_IO, ['append', message(err)], { cause: err })
      this.#logger?.error({ code: this.#failed.code, err, dir: this.dir }, 'audit spool stopped: no transaction can be audited until the process restarts')
    }
    const pending = [...batch, ...this.#queue]
    this.#queue = []
    this.#queuedBytes = 0
    this.#queuedRows = 0
    for (const a of pending) a.reject(this.#failed)
  }

  /** Resolves when nothing is queued or being written. */
  #whenIdle (): Promise<void> {
    if (!this.#committing && this.#queue.length === 0) return Promise.resolve()
    return new Promise((resolve) => {
      this.#idleWaiters.push(resolve)
      this.#cancelTimer()
      this.#schedule()
    })
  }

  async #activeSegment (): Promise<Segment> {
    if (this.#active !== null) return this.#active
    const spare = this.#spare
    this.#spare = null
    let seg: Segment | null = null
    if (spare !== null) seg = await spare.catch(() => null) // a failed spare: create one now, reporting its error
    seg ??= await this.#createSegment()
    this.#segments.set(seg.seq, seg)
    this.#active = seg
    this.#prepareSpare()
    return seg
  }

  /** A new, empty segment whose name is durable: only then may anything written in it be acknowledged. */
  async #createSegment (): Promise<Segment> {
    const seq = ++this.#lastSeq
    const path = join(this.dir, segName(seq))
    let fh: FileHandle | undefined
    try {
      fh = await open(path, 'wx', FILE_MODE)
      await syncDir(this.dir)
      this.#syncs++
    } catch (err) {
      await fh?.close().catch(() => {})
      throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`create ${path}`, message(err)], { cause: err })
    }
    return { seq, path, size: 0, refs: 0, sealed: false, corrupt: false, fh, rfh: null }
  }

  #prepareSpare (): void {
    // Once stopped, no new files: after a lost lock a segment of ours could take a name the new owner is about to use.
    if (this.#spare !== null || this.#closing || this.#failed !== null) return
    const spare = this.#createSegment()
    spare.catch(() => {}) // reported when it is needed (#activeSegment creates one then)
    this.#spare = spare
  }

  /** Closes and removes the spare segment (empty by construction). */
  async #dropSpare (): Promise<void> {
    const spare = this.#spare
    this.#spare = null
    const seg = await spare?.catch(() => null)
    if (seg === null || seg === undefined) return
    await seg.fh?.close().catch(() => {})
    if (!this.#lock.lost) await unlink(seg.path).catch(() => {}) // else the new owner's (it may have replayed it)
  }

  async #seal (seg: Segment): Promise<void> {
    seg.sealed = true
    if (this.#active === seg) this.#active = null
    const fh = seg.fh
    seg.fh = null
    await fh?.close()
  }

  // Deletion: oldest first, only segments no pending row has a frame in.

  #collect (): Promise<void> {
    const run = this.#collecting.then(async () => { await this.#collectOnce() })
    this.#collecting = run.catch(() => {})
    return run
  }

  async #collectOnce (): Promise<void> {
    if (this.#lock.lost) return // the files are the new owner's, who replayed them
    const seqs = [...this.#segments.keys()].sort((a, b) => a - b)
    for (const seq of seqs) {
      const seg = this.#segments.get(seq)
      if (seg === undefined) continue
      if (seg.refs > 0) break
      if (!seg.sealed) {
        // The active segment is retired only when idle: nothing is being or waiting to be written to it.
        if (this.#committing || this.#queuedRows > 0 || this.#closed) break
        for (const a of this.#queue) a.resolve()
        this.#queue = []
        this.#queuedBytes = 0
        await this.#seal(seg)
        if (seg.refs > 0) break
      }
      this.#segments.delete(seq)
      this.#bytes -= seg.size
      try {
        await closeHandles(seg)
        if (seg.corrupt) await rename(seg.path, join(this.dir, corruptName(seq)))
        else await unlink(seg.path)
      } catch (err) {
        // The file stays; at worst its rows ship again after a restart. Never a reason to stop shipping.
        this.#logger?.warn({ code: Errors.AUDIT_SPOOL_IO.code, err, path: seg.path }, 'cannot delete a shipped audit spool segment')
      }
    }
    this.#checkLevel()
  }

  async #unlinkParked (tx: Tx): Promise<void> {
    try {
      await unlink(tx.parkedPath as string)
      this.#bytes -= tx.parkedBytes
    } catch (err) {
      this.#logger?.warn({ code: Errors.AUDIT_SPOOL_IO.code, err, path: tx.parkedPath }, 'cannot delete a shipped parked audit row')
    }
  }

  async #readFrame (loc: Loc): Promise<unknown> {
    const seg = this.#segments.get(loc.seq)
    if (seg === undefined) throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`read segment ${loc.seq}`, 'the segment is gone'])
    seg.rfh ??= open(seg.path, 'r')
    const fh = await seg.rfh
    const buf = Buffer.allocUnsafe(loc.len)
    const { bytesRead } = await fh.read(buf, 0, loc.len, loc.off)
    if (bytesRead !== loc.len || frameAt(buf, 0) !== loc.len - SPOOL_FRAME_HEADER_BYTES) {
      throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`read ${seg.path} at ${loc.off}`, 'the frame no longer checks out (disk corruption?)'])
    }
    return JSON.parse(buf.subarray(SPOOL_FRAME_HEADER_BYTES).toString('utf8'))
  }

  // Open and replay.

  async #init (): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true, mode: DIR_MODE })
      await this.#lock.lock()
      const replayed = await replayDir(this.dir, this.#logger, {
        txs: this.#txs,
        segments: this.#segments,
        ref: (tx, seq) => { this.#ref(tx, seq) },
        makeReady: (tx) => { this.#makeReady(tx) }
      })
      this.#lastSeq = replayed.lastSeq
      this.#bytes += replayed.bytes
      this.#replay = replayed.report
    } catch (err) {
      await this.#lock.unlock()
      if (err instanceof PixProxyError) throw err
      throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`open ${this.dir}`, message(err)], { cause: err })
    }
    await this.#collect()
    this.#checkLevel()
    this.#prepareSpare()
  }

  /** The lock was lost (SpoolLock stopped its heartbeat and logged): stop writing, deleting and shipping. */
  #lockLost (err: PixProxyError): void {
    this.#failed ??= err
    this.#fail(this.#failed, [])
    this.#readyListener?.()
  }
}

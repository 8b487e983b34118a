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
 * succeeds (a takeover marker created exclusively; see #lock); the others get AUDIT_SPOOL_LOCKED. Before each touch
 * the owner reads the lock: when it is no longer its own (it was presumed dead, e.g. paused past 30 s, and taken
 * over) the spool stops for good, every later begin()/end() rejecting with PIXPROXY_ERR_AUDIT_SPOOL_LOCKED, and it
 * deletes, parks and ships nothing more there (the new owner replayed those rows). Two live tasks must therefore
 * not share a directory (slots.ts gives each its own under a shared root). The directory must be on a disk that
 * outlives the process (not a container's ephemeral layer) for replay to help.
 */
import { createHash, randomUUID } from 'node:crypto'
import { link, mkdir, open, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { fdatasyncSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AUDIT_COLUMNS } from './schema.ts'
import { realClock } from './clock.ts'
import type { AuditClock } from './clock.ts'
import type { AuditColumn, AuditRow } from './schema.ts'

/** Columns only known once the call ended; end() sets them. Every other column is the request half. */

/**
 * Audit rows hold names, tax ids and accounts: what the spool creates is readable by its owner only. A mode given
 * at creation can only be narrowed by the umask, never widened, so these hold whatever the umask.
 */
const FILE_MODE = 0o600
const DIR_MODE = 0o700

export const RESPONSE_COLUMNS = Object.freeze([
  'response_status_code', 'response_header', 'response_body', 'response_signature_valid', 'response_signature_code',
  'error_code', 'upstream_latency_ms', 'total_latency_ms'
] as const)
type ResponseColumn = (typeof RESPONSE_COLUMNS)[number]
/**
 * Request columns the response half may also carry, when only the answer holds them: the messages an ICOM stream
 * page delivered (their types, BizMsgIdrs, EndToEndIds). Given in end(), they take the place of the request half's
 * values in the row; omitted, the request half's stand.
 */
const RESPONSE_FACT_COLUMNS = Object.freeze(['message_type', 'biz_msg_id', 'end_to_end_ids'] as const)
type ResponseFactColumn = (typeof RESPONSE_FACT_COLUMNS)[number]
/** Request columns begin() requires (the rest of the request half may be omitted or null). */
export const REQUIRED_REQUEST_COLUMNS = Object.freeze([
  'id', 'request_date', 'system', 'request_method', 'request_path', 'request_header', 'correlation_id', 'instance_id'
] as const)
type RequiredRequestColumn = (typeof REQUIRED_REQUEST_COLUMNS)[number]
type OptionalRequestColumn = Exclude<keyof AuditRow, ResponseColumn | RequiredRequestColumn>

/** What is known before the message leaves: written by begin(). */
export type AuditRequestHalf = Pick<AuditRow, RequiredRequestColumn> & Partial<Pick<AuditRow, OptionalRequestColumn>>
/** What is known when the call ended (answer, failure or timeout): written by end(). */
export type AuditResponseHalf = Partial<Pick<AuditRow, ResponseColumn | ResponseFactColumn>>

/** The subset of a pino logger the audit code logs through. */
export interface AuditLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

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

/**
 * Lets a test put the lock's steps in the order it wants instead of racing timers: hold claimers at a step, run
 * the heartbeat by hand.
 */
export interface SpoolLockHooks {
  /**
   * Schedules the heartbeat: `beat` (which never rejects) every `intervalMs` until the returned function is
   * called. Default: setInterval, unref'd.
   */
  readonly heartbeat?: (beat: () => Promise<void>, intervalMs: number) => () => void
  /** Awaited once a claimer judged the lock in place stale (its holder gone), before it starts taking it over. */
  readonly judgedStale?: () => Promise<void>
}

/** A completed row handed to the pipeline (shift), until it is acked, parked or given back (unshift). */
export interface SpoolRef {
  readonly id: string
  /** Size of the row's frames: an estimate of its JSON size, for batching. */
  readonly bytes: number
  /** The spool's clock (AuditSpoolOptions.clock, default performance.now()) when the row became ready to ship. */
  readonly readyAt: number
}

export interface SpoolReplayReport {
  /** Rows found waiting to be shipped (complete, incomplete and parked). */
  readonly rows: number
  /** Begins without an end: shipped with error_code PIXPROXY_ERR_AUDIT_INCOMPLETE. */
  readonly incomplete: number
  /** Rows an ack marker shows were already shipped (not shipped again). */
  readonly alreadyShipped: number
  /** Bytes after the last good frame of a segment: torn writes of a crash; nothing acknowledged. */
  readonly tornBytes: number
  /** Unreadable bytes followed by good frames: disk corruption; their records are lost, the file is kept. */
  readonly corruptBytes: number
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

/** Frame header: magic (2), payload length (4), CRC-32 (4). */
export const SPOOL_FRAME_HEADER_BYTES = 10
/** Larger payloads are refused on write and treated as damage on read. */
const SPOOL_MAX_FRAME_PAYLOAD = 64 * 1024 * 1024
const MAGIC = Buffer.from([0xff, 0xa5])
const MiB = 1024 * 1024
const NEAR_FULL = 0.8
const LOCK_HEARTBEAT_MS = 5_000
const LOCK_STALE_MS = 30_000

export function encodeFrame (payload: Buffer): Buffer {
  const f = Buffer.allocUnsafe(SPOOL_FRAME_HEADER_BYTES + payload.length)
  MAGIC.copy(f, 0)
  f.writeUInt32BE(payload.length, 2)
  f.writeUInt32BE(crc32(payload, crc32(f.subarray(2, 6))), 6)
  payload.copy(f, SPOOL_FRAME_HEADER_BYTES)
  return f
}

export interface ScannedFrame {
  /** Offset of the frame (its header) in the buffer. */
  readonly offset: number
  /** Whole frame, header included. */
  readonly length: number
  readonly payload: Buffer
}

export interface FrameScan {
  readonly frames: ScannedFrame[]
  /** Bytes after the last good frame (a torn tail). */
  readonly tailBytes: number
  /** Unreadable bytes with good frames after them. */
  readonly corruptBytes: number
}

function frameAt (buf: Buffer, pos: number): number {
  if (pos + SPOOL_FRAME_HEADER_BYTES > buf.length || buf[pos] !== 0xff || buf[pos + 1] !== 0xa5) return -1
  const len = buf.readUInt32BE(pos + 2)
  if (len > SPOOL_MAX_FRAME_PAYLOAD || pos + SPOOL_FRAME_HEADER_BYTES + len > buf.length) return -1
  const payload = buf.subarray(pos + SPOOL_FRAME_HEADER_BYTES, pos + SPOOL_FRAME_HEADER_BYTES + len)
  return crc32(payload, crc32(buf.subarray(pos + 2, pos + 6))) === buf.readUInt32BE(pos + 6) ? len : -1
}

/** Every intact frame of a segment's bytes, in order, skipping damaged regions. */
export function scanFrames (buf: Buffer): FrameScan {
  const frames: ScannedFrame[] = []
  let pos = 0
  let skipped = 0
  let corrupt = 0
  while (pos < buf.length) {
    const len = frameAt(buf, pos)
    if (len >= 0) {
      const length = SPOOL_FRAME_HEADER_BYTES + len
      frames.push({ offset: pos, length, payload: buf.subarray(pos + SPOOL_FRAME_HEADER_BYTES, pos + length) })
      corrupt += skipped
      skipped = 0
      pos += length
      continue
    }
    const next = buf.indexOf(MAGIC, pos + 1)
    const to = next < 0 ? buf.length : next
    skipped += to - pos
    pos = to
  }
  return { frames, tailBytes: skipped, corruptBytes: corrupt }
}

const COLUMN_BY_NAME = new Map(AUDIT_COLUMNS.map((c) => [c.name, c]))
const RESPONSE_SET: ReadonlySet<string> = new Set(RESPONSE_COLUMNS)
const REQUEST_NAMES = AUDIT_COLUMNS.map((c) => c.name).filter((n) => !RESPONSE_SET.has(n))
const RESPONSE_FACT_SET: ReadonlySet<string> = new Set(RESPONSE_FACT_COLUMNS)
const RESPONSE_NAMES: readonly string[] = [...RESPONSE_COLUMNS, ...RESPONSE_FACT_COLUMNS]
const REQUIRED_SET: ReadonlySet<string> = new Set(REQUIRED_REQUEST_COLUMNS)
/** Ids name parked files, so they must be safe file names; UUIDs are. */
const ID_RE = /^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$/
const TIMESTAMP_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/
const INT32 = 2 ** 31

function badValue (c: AuditColumn, v: unknown): string | null {
  switch (c.type) {
    case 'string': return typeof v === 'string' ? null : 'not a string'
    case 'timestamp': return typeof v === 'string' && TIMESTAMP_RE.test(v) && !Number.isNaN(Date.parse(v)) ? null : 'not an ISO-8601 UTC timestamp'
    case 'int': return Number.isInteger(v) && Math.abs(v as number) < INT32 ? null : 'not a 32-bit integer'
    case 'bigint': return Number.isSafeInteger(v) ? null : 'not an integer'
    case 'double': return typeof v === 'number' && Number.isFinite(v) ? null : 'not a finite number'
    case 'boolean': return typeof v === 'boolean' ? null : 'not a boolean'
  }
}

/**
 * Checks one half against the schema (types, required columns, no foreign keys) so that a row no sink could
 * take is refused before its request is sent, not discovered when shipping. Returns the half with every one of
 * its columns present (null when omitted).
 */
function validateHalf (id: string, input: object, names: readonly string[], half: string): Record<string, unknown> {
  const given = input as Record<string, unknown>
  for (const k of Object.keys(given)) {
    if (!names.includes(k)) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, `${k} is not a column of the ${half} half`])
  }
  const out: Record<string, unknown> = {}
  for (const name of names) {
    const c = COLUMN_BY_NAME.get(name) as AuditColumn
    const v = given[name] ?? null
    if (v === null) {
      if (REQUIRED_SET.has(name)) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, `${name} is required`])
    } else {
      const bad = badValue(c, v)
      if (bad !== null) throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, `${name} is ${bad}`])
    }
    out[name] = v
  }
  return out
}

/** The row in schema order with every column present; a row without its response half is INCOMPLETE. */
function mergeRow (req: Record<string, unknown>, res: Record<string, unknown> | null): AuditRow {
  const out: Record<string, unknown> = {}
  for (const c of AUDIT_COLUMNS) {
    out[c.name] = (RESPONSE_SET.has(c.name)
      ? res?.[c.name]
      : (RESPONSE_FACT_SET.has(c.name) ? res?.[c.name] ?? req[c.name] : req[c.name])) ?? null
  }
  if (res === null) out['error_code'] = Errors.AUDIT_INCOMPLETE.code
  return out as unknown as AuditRow
}

/**
 * A parked row in schema order with every column present: one parked before a column was added (trace_id) has it
 * null, as a row replayed from older frames does (mergeRow).
 */
function everyColumn (row: Record<string, unknown>): AuditRow {
  const out: Record<string, unknown> = {}
  for (const c of AUDIT_COLUMNS) out[c.name] = row[c.name] ?? null
  return out as unknown as AuditRow
}

interface Loc { seq: number, off: number, len: number }

interface Tx {
  readonly id: string
  /** Wall-clock ms of begin(), for the shipping-lag metric (survives restarts: it is in the frame). */
  readonly t: number
  begin: Loc | null
  end: Loc | null
  ended: boolean
  state: 'open' | 'ready' | 'taken' | 'parked'
  bytes: number
  readyAt: number
  /** Segments holding this row's frames; each counts the row until it is acked or parked. */
  segs: number[]
  parkedPath: string | null
  parkedBytes: number
  /**
   * The validated halves, kept in memory until the row ships so the pipeline need not read and parse its frames
   * back (measured: about half the audit path's CPU per row). Null when the memory bound was reached, or after a
   * replay: load() then reads the disk, which stays the record either way.
   */
  mem: { readonly r: Record<string, unknown>, f: Record<string, unknown> | null, bytes: number } | null
}

interface Segment {
  readonly seq: number
  readonly path: string
  size: number
  refs: number
  sealed: boolean
  corrupt: boolean
  fh: FileHandle | null
  rfh: Promise<FileHandle> | null
}

interface Append {
  readonly frame: Buffer
  /** Ack markers are hints: they ride along with the next group instead of forcing an fsync. */
  readonly marker: boolean
  readonly apply: (loc: Loc) => void
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

/** A FIFO with cheap shift and unshift. */
class Deque<T> {
  #items: T[] = []
  #head = 0
  get length (): number { return this.#items.length - this.#head }
  push (v: T): void { this.#items.push(v) }
  peek (): T | undefined { return this.#items[this.#head] }
  shift (): T | undefined {
    if (this.#head >= this.#items.length) return undefined
    const v = this.#items[this.#head] as T
    this.#items[this.#head++] = undefined as T
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return v
  }

  unshift (v: T): void {
    if (this.#head > 0) this.#items[--this.#head] = v
    else this.#items.unshift(v)
  }
}

const segName = (seq: number): string => `spool-${String(seq).padStart(12, '0')}.log`
const corruptName = (seq: number): string => `corrupt-${String(seq).padStart(12, '0')}.log`
const SEG_RE = /^spool-(\d{12})\.log$/
const CORRUPT_RE = /^corrupt-(\d{12})\.log$/
const PARKED_RE = /^parked-(.+)\.json$/
const PARKED_TMP_RE = /^parked-.+\.json\.tmp$/

async function syncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

async function writeAll (fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off)
    if (bytesWritten <= 0) throw new Error(`short write at ${position + off}`)
    off += bytesWritten
  }
}

function writeAllSync (fd: number, buf: Buffer, position: number): void {
  let off = 0
  while (off < buf.length) {
    const n = writeSync(fd, buf, off, buf.length - off, position + off)
    if (n <= 0) throw new Error(`short write at ${position + off}`)
    off += n
  }
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

const LOCK_NAME = 'spool.lock'
/**
 * Tokens of the spools of this thread that are claiming or holding a lock. A lock or takeover marker naming our
 * own pid is live only when its token is one of them; otherwise it is a previous container's (pid namespaces
 * restart at 1), not ours.
 */
const OWN_TOKENS = new Set<string>()
const TOKEN_RE = /^[0-9A-Za-z-]{1,64}$/

interface LockView {
  readonly holder: { readonly pid?: unknown, readonly host?: unknown, readonly token?: unknown }
  readonly mtimeMs: number
  /** Names this lock in takeover markers: its token, or for a lock without one a hash of its bytes. */
  readonly key: string
}

function parseLock (text: string, mtimeMs: number): LockView {
  let holder: LockView['holder'] = {}
  try {
    const v = JSON.parse(text) as unknown
    if (typeof v === 'object' && v !== null) holder = v as LockView['holder']
  } catch {
    // Torn by a crash while it was written (a lock of a version that wrote it in place): nobody holds it.
  }
  const key = typeof holder.token === 'string' && TOKEN_RE.test(holder.token)
    ? holder.token
    : `h${createHash('sha256').update(text).digest('hex').slice(0, 32)}`
  return { holder, mtimeMs, key }
}

/** A lock (or marker) as it is now, or null when there is none (ESTALE: replaced while we read it, on NFS). */
async function readLock (path: string): Promise<LockView | null> {
  let fh: FileHandle | undefined
  try {
    fh = await open(path, 'r')
    const text = await fh.readFile('utf8')
    const { mtimeMs } = await fh.stat()
    return parseLock(text, mtimeMs)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ESTALE') return null
    throw err
  } finally {
    await fh?.close().catch(() => {})
  }
}

/** Held by a process that is running (this host) or that touched it within LOCK_STALE_MS (another host). */
function isLive ({ holder, mtimeMs }: LockView): boolean {
  const pid = typeof holder.pid === 'number' ? holder.pid : 0
  if (holder.host !== hostname()) return typeof holder.host === 'string' && Date.now() - mtimeMs < LOCK_STALE_MS
  if (pid === process.pid) return typeof holder.token === 'string' && OWN_TOKENS.has(holder.token)
  return pid > 0 && alive(pid)
}

function everyInterval (beat: () => Promise<void>, intervalMs: number): () => void {
  const t = setInterval(() => { void beat() }, intervalMs).unref()
  return () => { clearInterval(t) }
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
  readonly #lockToken = randomUUID()
  /** Cancels the lock heartbeat; null when not holding the lock. */
  #heartbeat: (() => void) | null = null
  /** The lock was taken over (or removed) under us: the directory is someone else's now. */
  #lost = false
  readonly #hooks: SpoolLockHooks | undefined
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
    this.#hooks = opts.lockHooks
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
    if (fields['system'] !== 'spi' && fields['system'] !== 'dict') throw new PixProxyError(Errors.AUDIT_ROW_INVALID, [id, 'system must be spi or dict'])
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
    if (this.#closed || this.#lost) return { rows: 0, bytes: 0, oldestReadyAt: null }
    return { rows: this.#ready.length, bytes: this.#readyBytes, oldestReadyAt: this.#ready.peek()?.readyAt ?? null }
  }

  /** Called whenever a row becomes ready (and on close); the consumer checks readyInfo() itself. */
  watchReady (listener: (() => void) | null): void {
    this.#readyListener = listener
  }

  /** Takes the oldest ready row for shipping. */
  shift (): SpoolRef | undefined {
    if (this.#closed || this.#lost) return undefined
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
    if (this.#lost) throw this.#failed as PixProxyError // eslint-disable-line no-throw-literal -- #lost implies #failed is set
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
    for (const seg of this.#segments.values()) handles.push(this.#closeHandles(seg))
    await Promise.allSettled(handles)
    await this.#unlock()
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
    if (!this.#lost) await unlink(seg.path).catch(() => {}) // else the new owner's (it may have replayed it)
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
    if (this.#lost) return // the files are the new owner's, who replayed them
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
        await this.#closeHandles(seg)
        if (seg.corrupt) await rename(seg.path, join(this.dir, corruptName(seq)))
        else await unlink(seg.path)
      } catch (err) {
        // The file stays; at worst its rows ship again after a restart. Never a reason to stop shipping.
        this.#logger?.warn({ code: Errors.AUDIT_SPOOL_IO.code, err, path: seg.path }, 'cannot delete a shipped audit spool segment')
      }
    }
    this.#checkLevel()
  }

  async #closeHandles (seg: Segment): Promise<void> {
    const fh = seg.fh
    const rfh = seg.rfh
    seg.fh = null
    seg.rfh = null
    await fh?.close()
    if (rfh !== null) await (await rfh).close()
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
      await this.#lock()
      await this.#replayAll()
    } catch (err) {
      await this.#unlock()
      if (err instanceof PixProxyError) throw err
      throw new PixProxyError(Errors.AUDIT_SPOOL_IO, [`open ${this.dir}`, message(err)], { cause: err })
    }
    await this.#collect()
    this.#checkLevel()
    this.#prepareSpare()
  }

  /**
   * Takes `spool.lock`. Why it is done this way, on a local disk and on NFSv4 (EFS) alike:
   *
   * - The lock appears with its content already in it: written to a file of our own, then hard-linked into place
   *   (link fails with EEXIST if the lock exists, atomically). Creating spool.lock with O_EXCL and then writing it
   *   let a process claiming the same slot read it empty in between, take it for a torn (dead) lock and take it
   *   over, so two live processes shared one slot (test/audit/slots.test.ts "claims race across processes").
   * - A stale lock (its holder gone) is taken over by one claimer only. Judging it stale and replacing it are two
   *   steps, so claimers that judged it at the same time all replaced it, one after another, and all believed they
   *   owned the directory. Now a claimer must first create `spool.lock.takeover-<stale token>-1`, exclusively
   *   (link again): of the claimers acting on one judgment exactly one gets it, the others are told the spool is
   *   locked. The winner checks that the lock is still the one it judged (a claimer with an old judgment may
   *   arrive after the takeover, when the marker is gone again) and then renames its own over it: one atomic
   *   replace, so the lock is never absent and nobody can link a third one in meanwhile.
   * - Not "rename the stale lock aside, check it, link ours": rename cannot be made conditional, so a claimer with
   *   an old judgment moves the NEW owner's lock aside; putting it back leaves the name empty for a moment, a third
   *   claimer links its own in, and two processes own the directory again.
   * - A claimer that dies holding a marker must not wedge the slot for ever: a marker is judged like a lock (pid
   *   gone on this host, untouched for LOCK_STALE_MS elsewhere) and a stale one is passed by taking marker n+1,
   *   again exclusively. After a takeover the winner removes the markers of the lock it replaced.
   * - Why this holds on NFSv4: LINK and RENAME are single operations the server performs atomically in the
   *   directory, and NFSv4.1 sessions (EFS) give them exactly-once semantics, so a retransmitted LINK does not
   *   report EEXIST for its own success (the NFSv2/3 hazard that made O_EXCL and link locks unreliable there).
   *   Content and mtime are read through one open handle: opening revalidates the attributes (close-to-open
   *   consistency), where stat() of a name may answer from the client's attribute cache, and both come from the
   *   same file even if the name is replaced meanwhile.
   * - What no lock of this kind can prevent: a holder on another host that is paused for longer than
   *   LOCK_STALE_MS is presumed dead and taken over while it still believes it holds the lock. Its heartbeat
   *   checks the token and stops it (#beat); until then (at most LOCK_HEARTBEAT_MS after it resumes) it may
   *   still append.
   */
  async #lock (): Promise<void> {
    const path = join(this.dir, LOCK_NAME)
    const token = this.#lockToken
    const tmp = `${path}.${token}`
    OWN_TOKENS.add(token)
    try {
      await writeFile(tmp, JSON.stringify({ pid: process.pid, host: hostname(), token }), { mode: FILE_MODE })
      for (;;) {
        try {
          await link(tmp, path)
          break
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        }
        const held = await readLock(path)
        if (held === null) continue // released meanwhile: try again
        if (isLive(held)) throw this.#locked(held, '')
        await this.#hooks?.judgedStale?.()
        if (await this.#takeOver(path, tmp, held)) {
          this.#logger?.warn({ dir: this.dir, previous: held.holder }, 'took over the audit spool lock of a process that is gone')
          break
        }
        // The lock changed since we judged it (taken over by another claimer, or released): judge it again.
      }
    } catch (err) {
      OWN_TOKENS.delete(token)
      throw err
    } finally {
      await unlink(tmp).catch(() => {}) // gone already after a takeover (renamed into place)
    }
    this.#heartbeat = (this.#hooks?.heartbeat ?? everyInterval)(async () => { await this.#beat(path) }, LOCK_HEARTBEAT_MS)
  }

  /** True once our own lock (`tmp`) replaced the stale `held`; false when the lock is no longer `held`. */
  async #takeOver (path: string, tmp: string, held: LockView): Promise<boolean> {
    const prefix = `${LOCK_NAME}.takeover-${held.key}-`
    for (let n = 1; ; n++) {
      const marker = join(this.dir, `${prefix}${n}`)
      try {
        await link(tmp, marker)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        const m = await readLock(marker)
        if (m === null) n-- // its claimer finished (or gave up) meanwhile: try this one again
        else if (isLive(m)) throw this.#locked(m, ' (taking it over)')
        continue // its claimer died in the middle of the takeover: the next marker
      }
      try {
        const now = await readLock(path)
        if (now === null || now.key !== held.key) return false
        await rename(tmp, path)
      } finally {
        await unlink(marker).catch(() => {})
      }
      // Markers of claimers that died holding one, and that no live claimer can need any more (the lock is ours).
      const names = await readdir(this.dir).catch(() => [] as string[])
      for (const name of names) if (name.startsWith(prefix)) await unlink(join(this.dir, name)).catch(() => {})
      return true
    }
  }

  #locked (held: LockView, how: string): PixProxyError {
    return new PixProxyError(Errors.AUDIT_SPOOL_LOCKED, [this.dir, `${String(held.holder.pid)} on ${String(held.holder.host)}${how}`])
  }

  /**
   * The heartbeat: touches the lock so that other hosts see its holder alive, but first reads it. A lock that is
   * no longer ours (taken over while this process was presumed dead, e.g. paused past LOCK_STALE_MS), is gone, or
   * is being taken over stops the spool: the directory belongs to someone else, who replays and ships its rows.
   * The lock is refreshed in place (its mtime, through the handle it was read from), never rewritten or replaced,
   * so no one ever sees it absent or half-written because of a refresh.
   */
  async #beat (path: string): Promise<void> {
    if (this.#lost) return
    let fh: FileHandle | undefined
    try {
      fh = await open(path, 'r')
      const held = parseLock(await fh.readFile('utf8'), 0)
      if (held.holder.token !== this.#lockToken) {
        this.#lose(this.#locked(held, ''))
        return
      }
      // A claimer that judged us dead holds the marker for our token and will replace the lock: stop now rather
      // than at the next beat.
      const marker = join(this.dir, `${LOCK_NAME}.takeover-${held.key}-1`)
      if (await stat(marker).then(() => true, () => false)) {
        this.#lose(new PixProxyError(Errors.AUDIT_SPOOL_LOCKED, [this.dir, 'another process taking over its lock']))
        return
      }
      const now = new Date()
      await fh.utimes(now, now)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ESTALE') this.#lose(new PixProxyError(Errors.AUDIT_SPOOL_LOCKED, [this.dir, 'nobody: its lock was removed']))
      else this.#logger?.warn({ code: Errors.AUDIT_SPOOL_IO.code, err, path }, 'cannot refresh the audit spool lock')
    } finally {
      await fh?.close().catch(() => {})
    }
  }

  /** The directory is no longer ours: write, delete and ship nothing more from it. */
  #lose (err: PixProxyError): void {
    if (this.#lost) return
    this.#lost = true
    this.#heartbeat?.()
    this.#heartbeat = null
    OWN_TOKENS.delete(this.#lockToken)
    this.#logger?.error({ code: err.code, dir: this.dir, err }, 'audit spool lock lost to another process: this one stops writing to the directory')
    this.#failed ??= err
    this.#fail(this.#failed, [])
    this.#readyListener?.()
  }

  async #unlock (): Promise<void> {
    this.#heartbeat?.()
    this.#heartbeat = null
    const token = this.#lockToken
    if (!OWN_TOKENS.has(token)) return // never held, or lost
    try {
      await this.#releaseLock(token)
    } finally {
      OWN_TOKENS.delete(token) // only now: until the lock is gone, claimers in this thread must see it live
    }
  }

  async #releaseLock (token: string): Promise<void> {
    const path = join(this.dir, LOCK_NAME)
    // Only our own, and not while someone takes it over: we hold the takeover marker for our token while we check
    // and remove it, so a claimer that judged us dead (we may have been paused) cannot replace the lock between our
    // check and our unlink and then lose its lock to that unlink.
    const tmp = `${path}.${token}`
    const marker = join(this.dir, `${LOCK_NAME}.takeover-${token}-1`)
    try {
      await writeFile(tmp, JSON.stringify({ pid: process.pid, host: hostname(), token }), { mode: FILE_MODE })
      await link(tmp, marker)
    } catch {
      return // being taken over (or we cannot write): the lock is left to whoever replaces it
    } finally {
      await unlink(tmp).catch(() => {})
    }
    try {
      const held = await readLock(path)
      if (held?.holder.token === token) await unlink(path)
    } catch {
      // Left in place: it names this process, which is gone by then, so the next claimer takes it over.
    } finally {
      await unlink(marker).catch(() => {})
    }
  }

  async #replayAll (): Promise<void> {
    const names = await readdir(this.dir)
    const seqs: number[] = []
    const parked = new Map<string, string>()
    for (const name of names) {
      const m = SEG_RE.exec(name) ?? CORRUPT_RE.exec(name)
      if (m !== null) {
        const seq = Number(m[1])
        this.#lastSeq = Math.max(this.#lastSeq, seq)
        if (name.startsWith('spool-')) seqs.push(seq)
        continue
      }
      if (PARKED_TMP_RE.test(name)) {
        // A park interrupted before its rename: the row is still in its segments.
        await unlink(join(this.dir, name))
        continue
      }
      const p = PARKED_RE.exec(name)
      if (p !== null) parked.set(p[1] as string, join(this.dir, name))
    }
    seqs.sort((a, b) => a - b)

    let incomplete = 0
    let alreadyShipped = 0
    let torn = 0
    let corrupt = 0
    for (const [id, path] of parked) {
      const body = await readFile(path)
      let t: number
      try {
        t = (JSON.parse(body.toString('utf8')) as { t: number }).t
      } catch (err) {
        // Written in full and fsync'd before its rename, so this is damage: keep the file, say so, go on.
        this.#logger?.error({ code: Errors.AUDIT_SPOOL_CORRUPT.code, err, path }, 'unreadable parked audit row')
        continue
      }
      const tx: Tx = { id, t, begin: null, end: null, ended: true, state: 'open', bytes: body.length, readyAt: 0, segs: [], parkedPath: path, parkedBytes: body.length, mem: null }
      this.#txs.set(id, tx)
      this.#bytes += body.length
    }

    const acked = new Set<string>()
    for (const seq of seqs) {
      const path = join(this.dir, segName(seq))
      const buf = await readFile(path)
      const scan = scanFrames(buf)
      const seg: Segment = { seq, path, size: buf.length, refs: 0, sealed: true, corrupt: scan.corruptBytes > 0, fh: null, rfh: null }
      this.#segments.set(seq, seg)
      this.#bytes += buf.length
      torn += scan.tailBytes
      corrupt += scan.corruptBytes
      if (scan.corruptBytes > 0) {
        const err = new PixProxyError(Errors.AUDIT_SPOOL_CORRUPT, [path, scan.corruptBytes, corruptName(seq)])
        this.#logger?.error({ code: err.code, path, corruptBytes: scan.corruptBytes }, err.message)
      }
      for (const f of scan.frames) {
        const loc = { seq, off: f.offset, len: f.length }
        let e: { k?: unknown, t?: number, id?: unknown, ids?: unknown, r?: { id?: unknown } }
        try {
          e = JSON.parse(f.payload.toString('utf8')) as typeof e
        } catch {
          // A frame that passed its CRC but is not JSON was written that way: a bug, not a crash. Skip it, loudly.
          corrupt += f.length
          seg.corrupt = true
          this.#logger?.error({ code: Errors.AUDIT_SPOOL_CORRUPT.code, path, offset: f.offset }, 'audit spool frame is not JSON')
          continue
        }
        if (e.k === 'b' && typeof e.r?.id === 'string') {
          const id = e.r.id
          if (this.#txs.has(id)) continue
          this.#txs.set(id, { id, t: e.t ?? 0, begin: loc, end: null, ended: false, state: 'open', bytes: f.length, readyAt: 0, segs: [], parkedPath: null, parkedBytes: 0, mem: null })
        } else if (e.k === 'e' && typeof e.id === 'string') {
          const tx = this.#txs.get(e.id)
          // An end without its begin: the begin's segment was deleted, so the row was shipped.
          if (tx === undefined || tx.parkedPath !== null || tx.end !== null) continue
          tx.end = loc
          tx.ended = true
          tx.bytes += f.length
        } else if (e.k === 'a' && Array.isArray(e.ids)) {
          for (const id of e.ids) if (typeof id === 'string') acked.add(id)
        }
      }
    }

    for (const tx of this.#txs.values()) {
      if (acked.has(tx.id) && tx.parkedPath === null) {
        this.#txs.delete(tx.id)
        alreadyShipped++
        continue
      }
      if (tx.begin !== null) this.#ref(tx, tx.begin.seq)
      if (tx.end !== null) this.#ref(tx, tx.end.seq)
      if (tx.parkedPath === null && tx.end === null) incomplete++
      tx.ended = true
      this.#makeReady(tx)
    }
    this.#replay = { rows: this.#txs.size, incomplete, alreadyShipped, tornBytes: torn, corruptBytes: corrupt }
    if (seqs.length > 0 || parked.size > 0) {
      this.#logger?.info({ dir: this.dir, segments: seqs.length, ...this.#replay }, 'audit spool replayed')
    }
  }
}

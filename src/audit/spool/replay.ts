/**
 * Replay at open: reads every segment and parked row of a spool directory back into the spool's records, so that
 * every row not yet shipped is ready again (see ../spool.ts for what a crash leaves and how it reads).
 */
import { readdir, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { Errors, PixProxyError } from '../../../core/errors.ts'
import type { AuditLogger } from '../logger.ts'
import { CORRUPT_RE, corruptName, PARKED_RE, PARKED_TMP_RE, SEG_RE, segName } from './files.ts'
import type { Segment } from './files.ts'
import { scanFrames } from './frame.ts'
import type { Tx } from './row.ts'

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

/** The spool's records that replay fills in, and how it marks a row ready. */
export interface ReplayInto {
  readonly txs: Map<string, Tx>
  readonly segments: Map<number, Segment>
  readonly ref: (tx: Tx, seq: number) => void
  readonly makeReady: (tx: Tx) => void
}

/** What replay found: the highest segment number in use, the bytes of the files replayed, the report. */
export interface Replayed {
  readonly lastSeq: number
  readonly bytes: number
  readonly report: SpoolReplayReport
}

export async function replayDir (dir: string, logger: AuditLogger | undefined, into: ReplayInto): Promise<Replayed> {
  const names = await readdir(dir)
  let lastSeq = 0
  let bytes = 0
  const seqs: number[] = []
  const parked = new Map<string, string>()
  for (const name of names) {
    const m = SEG_RE.exec(name) ?? CORRUPT_RE.exec(name)
    if (m !== null) {
      const seq = Number(m[1])
      lastSeq = Math.max(lastSeq, seq)
      if (name.startsWith('spool-')) seqs.push(seq)
      continue
    }
    if (PARKED_TMP_RE.test(name)) {
      // A park interrupted before its rename: the row is still in its segments.
      await unlink(join(dir, name))
      continue
    }
    const p = PARKED_RE.exec(name)
    if (p !== null) parked.set(p[1] as string, join(dir, name))
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
      logger?.error({ code: Errors.AUDIT_SPOOL_CORRUPT.code, err, path }, 'unreadable parked audit row')
      continue
    }
    const tx: Tx = { id, t, begin: null, end: null, ended: true, state: 'open', bytes: body.length, readyAt: 0, segs: [], parkedPath: path, parkedBytes: body.length, mem: null }
    into.txs.set(id, tx)
    bytes += body.length
  }

  const acked = new Set<string>()
  for (const seq of seqs) {
    const path = join(dir, segName(seq))
    const buf = await readFile(path)
    const scan = scanFrames(buf)
    const seg: Segment = { seq, path, size: buf.length, refs: 0, sealed: true, corrupt: scan.corruptBytes > 0, fh: null, rfh: null }
    into.segments.set(seq, seg)
    bytes += buf.length
    torn += scan.tailBytes
    corrupt += scan.corruptBytes
    if (scan.corruptBytes > 0) {
      const err = new PixProxyError(Errors.AUDIT_SPOOL_CORRUPT, [path, scan.corruptBytes, corruptName(seq)])
      logger?.error({ code: err.code, path, corruptBytes: scan.corruptBytes }, err.message)
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
        logger?.error({ code: Errors.AUDIT_SPOOL_CORRUPT.code, path, offset: f.offset }, 'audit spool frame is not JSON')
        continue
      }
      if (e.k === 'b' && typeof e.r?.id === 'string') {
        const id = e.r.id
        if (into.txs.has(id)) continue
        into.txs.set(id, { id, t: e.t ?? 0, begin: loc, end: null, ended: false, state: 'open', bytes: f.length, readyAt: 0, segs: [], parkedPath: null, parkedBytes: 0, mem: null })
      } else if (e.k === 'e' && typeof e.id === 'string') {
        const tx = into.txs.get(e.id)
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

  for (const tx of into.txs.values()) {
    if (acked.has(tx.id) && tx.parkedPath === null) {
      into.txs.delete(tx.id)
      alreadyShipped++
      continue
    }
    if (tx.begin !== null) into.ref(tx, tx.begin.seq)
    if (tx.end !== null) into.ref(tx, tx.end.seq)
    if (tx.parkedPath === null && tx.end === null) incomplete++
    tx.ended = true
    into.makeReady(tx)
  }
  const report: SpoolReplayReport = { rows: into.txs.size, incomplete, alreadyShipped, tornBytes: torn, corruptBytes: corrupt }
  if (seqs.length > 0 || parked.size > 0) {
    logger?.info({ dir, segments: seqs.length, ...report }, 'audit spool replayed')
  }
  return { lastSeq, bytes, report }
}

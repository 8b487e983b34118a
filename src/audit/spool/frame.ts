/**
 * The spool's frame codec (the frame format is described in ../spool.ts): encoding a payload and finding the
 * intact frames of a segment's bytes.
 */
import { crc32 } from 'node:zlib'

/** Frame header: magic (2), payload length (4), CRC-32 (4). */
export const SPOOL_FRAME_HEADER_BYTES = 10
/** Larger payloads are refused on write and treated as damage on read. */
export const SPOOL_MAX_FRAME_PAYLOAD = 64 * 1024 * 1024
const MAGIC = Buffer.from([0xff, 0xa5])

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

export function frameAt (buf: Buffer, pos: number): number {
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

/**
 * The spool directory's files: their names and modes, durable writes, and the segments as the spool tracks them
 * (where a frame is: Loc).
 */
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { writeSync } from 'node:fs'

/**
 * Audit rows hold names, tax ids and accounts: what the spool creates is readable by its owner only. A mode given
 * at creation can only be narrowed by the umask, never widened, so these hold whatever the umask.
 */
export const FILE_MODE = 0o600
export const DIR_MODE = 0o700

export interface Loc { seq: number, off: number, len: number }

export interface Segment {
  readonly seq: number
  readonly path: string
  size: number
  refs: number
  sealed: boolean
  corrupt: boolean
  fh: FileHandle | null
  rfh: Promise<FileHandle> | null
}

export const segName = (seq: number): string => `spool-${String(seq).padStart(12, '0')}.log`
export const corruptName = (seq: number): string => `corrupt-${String(seq).padStart(12, '0')}.log`
export const SEG_RE = /^spool-(\d{12})\.log$/
export const CORRUPT_RE = /^corrupt-(\d{12})\.log$/
export const PARKED_RE = /^parked-(.+)\.json$/
export const PARKED_TMP_RE = /^parked-.+\.json\.tmp$/

export async function syncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

export async function writeAll (fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off)
    if (bytesWritten <= 0) throw new Error(`short write at ${position + off}`)
    off += bytesWritten
  }
}

export function writeAllSync (fd: number, buf: Buffer, position: number): void {
  let off = 0
  while (off < buf.length) {
    const n = writeSync(fd, buf, off, buf.length - off, position + off)
    if (n <= 0) throw new Error(`short write at ${position + off}`)
    off += n
  }
}

export async function closeHandles (seg: Segment): Promise<void> {
  const fh = seg.fh
  const rfh = seg.rfh
  seg.fh = null
  seg.rfh = null
  await fh?.close()
  if (rfh !== null) await (await rfh).close()
}

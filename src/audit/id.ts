import { randomBytes } from 'node:crypto'

// The random bits are cut from a pool of CSPRNG bytes refilled 4 KiB at a time (each byte used once): one
// randomBytes() call per id was ~0.02 ms of a request's event-loop time with auditing on, most of the row's
// own cost on the loop (bench/RESULTS.md "Session 7", issue 15). A refill serves ~400 ids.
const POOL_BYTES = 4096
const RANDOM_BYTES = 10
let pool = Buffer.alloc(0)
let poolAt = POOL_BYTES
const scratch = Buffer.alloc(16)

/**
 * UUID version 7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Time-ordered, so audit rows sort by
 * arrival and Parquet min/max statistics on `id` stay useful; unique enough to deduplicate at-least-once delivery.
 */
export function uuidv7 (now: number = Date.now()): string {
  if (poolAt + RANDOM_BYTES > pool.length) {
    pool = randomBytes(POOL_BYTES)
    poolAt = 0
  }
  const b = scratch
  // 48-bit big-endian milliseconds (beyond 32 bits: no bitwise operators).
  const high = Math.floor(now / 0x1_0000_0000)
  const low = now - high * 0x1_0000_0000
  b[0] = (high >>> 8) & 0xff
  b[1] = high & 0xff
  b.writeUInt32BE(low, 2)
  pool.copy(b, 6, poolAt, poolAt + RANDOM_BYTES)
  poolAt += RANDOM_BYTES
  b[6] = ((b[6] as number) & 0x0f) | 0x70 // version 7
  b[8] = ((b[8] as number) & 0x3f) | 0x80 // variant 10
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

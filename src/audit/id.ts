import { randomBytes } from 'node:crypto'

/**
 * UUID version 7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Time-ordered, so audit rows sort by
 * arrival and Parquet min/max statistics on `id` stay useful; unique enough to deduplicate at-least-once delivery.
 */
export function uuidv7 (now: number = Date.now()): string {
  const b = randomBytes(16)
  b.writeUIntBE(now, 0, 6)
  b[6] = ((b[6] as number) & 0x0f) | 0x70 // version 7
  b[8] = ((b[8] as number) & 0x3f) | 0x80 // variant 10
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

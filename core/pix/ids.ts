/**
 * PIX identifiers and the XML text they go in, as BACEN defines them (docs/bacen.md §2.7): BizMsgIdr, EndToEndId,
 * the SPI date-time form. Shared by the sample messages (tools/samples/) and the BACEN simulator, which makes its
 * own answers' identifiers.
 */
import { randomBytes } from 'node:crypto'

/** BACEN's ISPB as SPI/ICOM counterparty. */
export const BCB_ISPB = '00038166'

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** n random alphanumerics (identifiers that only need to be unique). */
export function alnum (n: number): string {
  const bytes = randomBytes(n)
  let s = ''
  // 62 symbols: the modulo bias (256 % 62) is irrelevant for identifiers that only need to be unique.
  for (const b of bytes) s += ALNUM[b % ALNUM.length]
  return s
}

/** `YYYY-MM-DDThh:mm:ss.sssZ`, the SPI date-time form (exactly three fraction digits). */
export function spiDateTime (d: Date = new Date()): string {
  return d.toISOString()
}

/** BizMsgIdr / MsgId: "M" + ISPB + 23 alphanumerics. */
export function newMessageId (ispb: string): string {
  return `M${ispb}${alnum(23)}`
}

/** EndToEndId: "E" + ISPB + yyyyMMddHHmm (UTC) + 11 alphanumerics. */
export function newEndToEndId (ispb: string, at: Date = new Date()): string {
  const ts = at.toISOString().replace(/[-T:]/g, '').slice(0, 12)
  return `E${ispb}${ts}${alnum(11)}`
}

export function escapeXml (v: string): string {
  return v.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\'': '&apos;' })[c] as string)
}

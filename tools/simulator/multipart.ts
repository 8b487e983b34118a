/**
 * multipart/mixed (RFC 2046 §5.1) for ICOM: several XML messages in one POST or one stream page, each part with
 * its own headers (PI-ResourceId on stream pages, BACEN staff in bacen/pix-perguntas-e-respostas#181). Part bodies
 * stay bytes: a signed message must reach its verifier unchanged.
 *
 * Deliberately not shared with the proxy's src/http/multipart.ts: the simulator stands in for BACEN, an independent
 * peer, and a bug common to both sides of a test would pass unseen.
 */
import { randomBytes } from 'node:crypto'

export interface MimePart {
  /** Header names lower-cased. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: Buffer
}

export class MultipartError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'MultipartError'
  }
}

/** The media type (lower-cased, without parameters) and the parameters of a Content-Type header. */
export function parseContentType (header: string | undefined): { type: string, params: Record<string, string> } {
  const [type = '', ...rest] = (header ?? '').split(';')
  const params: Record<string, string> = {}
  for (const p of rest) {
    const eq = p.indexOf('=')
    if (eq < 0) continue
    const name = p.slice(0, eq).trim().toLowerCase()
    let value = p.slice(eq + 1).trim()
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1)
    params[name] = value
  }
  return { type: type.trim().toLowerCase(), params }
}

function lineEnd (buf: Buffer, at: number): number {
  if (buf[at] === 0x0d && buf[at + 1] === 0x0a) return 2
  if (buf[at] === 0x0a) return 1
  return 0
}

/** Splits a multipart body into at most `maxParts` parts. Throws MultipartError when malformed or over the limit. */
export function parseMultipart (body: Buffer, boundary: string, maxParts: number): MimePart[] {
  if (boundary === '' || boundary.length > 70) throw new MultipartError('invalid boundary')
  const delim = Buffer.from('--' + boundary)
  const parts: MimePart[] = []
  let pos = body.indexOf(delim)
  if (pos < 0) throw new MultipartError('no boundary delimiter')
  for (;;) {
    pos += delim.length
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) break
    while (body[pos] === 0x20 || body[pos] === 0x09) pos++
    const eol = lineEnd(body, pos)
    if (eol === 0) throw new MultipartError('malformed delimiter line')
    pos += eol
    const next = body.indexOf(delim, pos)
    if (next < 0) throw new MultipartError('no close delimiter (truncated body?)')
    let end = next
    end -= body[end - 1] === 0x0a ? (body[end - 2] === 0x0d ? 2 : 1) : 0
    if (parts.length === maxParts) throw new MultipartError(`more than ${maxParts} parts`)
    parts.push(parsePart(body.subarray(pos, Math.max(pos, end))))
    pos = next
  }
  if (parts.length === 0) throw new MultipartError('no parts')
  return parts
}

function parsePart (raw: Buffer): MimePart {
  const headers: Record<string, string> = {}
  let pos = 0
  for (;;) {
    const eol = lineEnd(raw, pos)
    if (eol > 0) { pos += eol; break }
    const nl = raw.indexOf(0x0a, pos)
    if (nl < 0) throw new MultipartError('part headers without a blank line')
    const line = raw.subarray(pos, raw[nl - 1] === 0x0d ? nl - 1 : nl).toString('latin1')
    const colon = line.indexOf(':')
    if (colon <= 0) throw new MultipartError(`malformed part header ${JSON.stringify(line)}`)
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    pos = nl + 1
  }
  return { headers, body: raw.subarray(pos) }
}

/** Builds a multipart/mixed body; returns it with the Content-Type header value. */
export function buildMultipart (parts: ReadonlyArray<{ headers: Readonly<Record<string, string>>, body: string | Buffer }>): { contentType: string, body: Buffer } {
  const boundary = 'pix-sim-' + randomBytes(12).toString('hex')
  const chunks: Buffer[] = []
  for (const p of parts) {
    const head = Object.entries(p.headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')
    chunks.push(Buffer.from(`--${boundary}\r\n${head}\r\n`, 'latin1'), Buffer.isBuffer(p.body) ? p.body : Buffer.from(p.body, 'utf8'), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { contentType: `multipart/mixed; boundary=${boundary}`, body: Buffer.concat(chunks) }
}

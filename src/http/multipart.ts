/**
 * multipart/mixed (RFC 2046 §5.1) as ICOM uses it: up to 10 XML messages in one POST or one stream page.
 * Bodies are kept as bytes (a signed message must reach its verifier byte for byte).
 */
import { randomBytes } from 'node:crypto'

export interface Part {
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

/** The boundary parameter of a multipart Content-Type, or null when it is not multipart/mixed. */
export function multipartBoundary (contentType: string | undefined): string | null {
  if (contentType === undefined) return null
  const [type, ...params] = contentType.split(';')
  if (type?.trim().toLowerCase() !== 'multipart/mixed') return null
  for (const p of params) {
    const m = /^\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^\s";]{1,70}))\s*$/i.exec(p)
    if (m !== null) return (m[1] ?? m[2]) as string
  }
  throw new MultipartError('multipart/mixed without a boundary parameter')
}

const CRLF = Buffer.from('\r\n')

/**
 * Splits a multipart body. Tolerates LF-only line ends (seen from some clients) but not a missing close
 * delimiter: a truncated body must not pass as a shorter batch.
 */
export function parseMultipart (body: Buffer, boundary: string, maxParts = 10): Part[] {
  const delim = Buffer.from('--' + boundary)
  const parts: Part[] = []
  let pos = body.indexOf(delim)
  if (pos < 0) throw new MultipartError('no boundary delimiter in the body')
  while (true) {
    pos += delim.length
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts // close delimiter "--boundary--"
    // skip transport padding and the line end after the delimiter
    while (body[pos] === 0x20 || body[pos] === 0x09) pos++
    if (body[pos] === 0x0d && body[pos + 1] === 0x0a) pos += 2
    else if (body[pos] === 0x0a) pos += 1
    else throw new MultipartError('malformed boundary line')
    const next = body.indexOf(delim, pos)
    if (next < 0) throw new MultipartError('missing close delimiter (truncated body?)')
    // the CRLF before the next delimiter belongs to the delimiter
    let end = next
    if (end >= 2 && body[end - 2] === 0x0d && body[end - 1] === 0x0a) end -= 2
    else if (end >= 1 && body[end - 1] === 0x0a) end -= 1
    parts.push(parsePart(body.subarray(pos, end)))
    if (parts.length > maxParts) throw new MultipartError(`more than ${maxParts} parts`)
    pos = next
  }
}

function parsePart (raw: Buffer): Part {
  let sep = raw.indexOf('\r\n\r\n')
  let sepLen = 4
  const lf = raw.indexOf('\n\n')
  if (sep < 0 || (lf >= 0 && lf < sep)) { sep = lf; sepLen = 2 }
  // A part that starts with its blank line has no headers.
  if (raw[0] === 0x0d && raw[1] === 0x0a) { sep = 0; sepLen = 2 } else if (raw[0] === 0x0a) { sep = 0; sepLen = 1 }
  if (sep < 0) throw new MultipartError('a part has no blank line between headers and body')
  const headers: Record<string, string> = {}
  for (const line of raw.subarray(0, sep).toString('latin1').split(/\r?\n/)) {
    if (line === '') continue
    const colon = line.indexOf(':')
    if (colon <= 0) throw new MultipartError(`malformed part header ${JSON.stringify(line.slice(0, 60))}`)
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { headers, body: raw.subarray(sep + sepLen) }
}

function newBoundary (): string {
  return 'pixproxy-' + randomBytes(12).toString('hex')
}

/** Serialises parts with CRLF line ends; returns the body and the Content-Type to send with it. */
export function buildMultipart (parts: readonly Part[], boundary = newBoundary()): { body: Buffer, contentType: string } {
  const chunks: Buffer[] = []
  for (const p of parts) {
    if (p.body.includes('--' + boundary)) throw new MultipartError('a part contains the boundary')
    let head = `--${boundary}\r\n`
    for (const [k, v] of Object.entries(p.headers)) head += `${k}: ${v}\r\n`
    chunks.push(Buffer.from(head + '\r\n', 'latin1'), p.body, CRLF)
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`, 'latin1'))
  return { body: Buffer.concat(chunks), contentType: `multipart/mixed; boundary="${boundary}"` }
}

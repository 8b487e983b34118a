/**
 * The headers the gateway sends to its backend: what the client sent, minus hop-by-hop headers and minus every
 * header the gateway itself asserts (the client certificate, its thumbprint, the identity read from it, the
 * forwarding headers), plus those, computed from the verified certificate. Built from `rawHeaders`, so a forged
 * copy is dropped whatever its case and however many times it was sent.
 */
import { createHash } from 'node:crypto'
import type { X509Certificate } from 'node:crypto'

/** RFC 9110 §7.6.1 connection options, and the headers that travel only to the next hop. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authorization', 'proxy-authenticate', 'http2-settings'
])

/** Visible ASCII, no separators a backend might split on. */
const HEADER_SAFE = /^[A-Za-z0-9._:-]{1,128}$/

/** Names the gateway sets itself; the configured certificate header is added to these. */
const IDENTITY_HEADERS = Object.freeze({
  thumbprint: 'x-ssl-client-cert-sha256',
  subject: 'x-ssl-client-subject',
  serial: 'x-ssl-client-serial',
  cnpj: 'x-ofb-client-cnpj',
  organisationId: 'x-ofb-organisation-id',
  softwareStatementId: 'x-ofb-software-statement-id'
})

/**
 * A header a caller may never set: anything under the prefixes the gateway asserts (so that a new identity header
 * is protected before anyone remembers to list it), the configured certificate header, and the forwarding headers.
 */
function isReserved (name: string, certHeader: string): boolean {
  return name === certHeader || name.startsWith('x-ssl-client') || name.startsWith('x-ofb-') ||
    name.startsWith('x-forwarded-') || name === 'forwarded' || name === 'x-real-ip' || name === 'x-request-id' ||
    name === 'x-amzn-mtls-clientcert' || name.startsWith('x-amzn-mtls-')
}

/** The identity asserted to the backend, from the verified certificate. */
export interface AssertedIdentity {
  readonly cnpj: string | null
  readonly organisationId: string | null
  readonly softwareStatementId: string | null
}

/** base64url(SHA-256(DER)): the `x5t#S256` confirmation of RFC 8705 §3.1. */
export function thumbprintS256 (cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('base64url')
}

/** The certificate as PEM, URL-encoded (the form nginx's $ssl_client_escaped_cert and API Gateway take). */
function escapedPem (cert: X509Certificate): string {
  return encodeURIComponent(cert.toString())
}

export interface ForwardHeaderInput {
  readonly rawHeaders: readonly string[]
  readonly certHeader: string
  readonly certificate: X509Certificate
  readonly identity: AssertedIdentity
  readonly remoteAddress: string | undefined
  readonly host: string | undefined
  readonly requestId: string
  readonly bodyLength: number
}

/** Flat [name, value, name, value, …] for undici, names lower-case. */
export function forwardHeaders (input: ForwardHeaderInput): string[] {
  const connectionOptions = new Set<string>()
  for (let i = 0; i + 1 < input.rawHeaders.length; i += 2) {
    if ((input.rawHeaders[i] as string).toLowerCase() === 'connection') {
      for (const opt of (input.rawHeaders[i + 1] as string).split(',')) connectionOptions.add(opt.trim().toLowerCase())
    }
  }
  const out: string[] = []
  for (let i = 0; i + 1 < input.rawHeaders.length; i += 2) {
    const name = (input.rawHeaders[i] as string).toLowerCase()
    // host: undici sends the backend's; content-length: the gateway sends the body it buffered, with its own length.
    if (HOP_BY_HOP.has(name) || connectionOptions.has(name) || name === 'host' || name === 'content-length' || name === 'expect') continue
    if (isReserved(name, input.certHeader)) continue
    out.push(name, input.rawHeaders[i + 1] as string)
  }
  const cert = input.certificate
  out.push(input.certHeader, escapedPem(cert))
  out.push(IDENTITY_HEADERS.thumbprint, thumbprintS256(cert))
  // A subject may hold any Unicode (a company name), header values only visible ASCII: always percent-encoded.
  out.push(IDENTITY_HEADERS.subject, encodeURIComponent(cert.subject.replace(/\n/g, ', ')))
  out.push(IDENTITY_HEADERS.serial, cert.serialNumber)
  // The identifiers go as they are, or not at all: a value a header cannot carry verbatim is no identity.
  for (const [name, value] of [[IDENTITY_HEADERS.cnpj, input.identity.cnpj], [IDENTITY_HEADERS.organisationId, input.identity.organisationId], [IDENTITY_HEADERS.softwareStatementId, input.identity.softwareStatementId]] as const) {
    if (value !== null && HEADER_SAFE.test(value)) out.push(name, value)
  }
  if (input.remoteAddress !== undefined) out.push('x-forwarded-for', input.remoteAddress)
  out.push('x-forwarded-proto', 'https')
  if (input.host !== undefined) out.push('x-forwarded-host', input.host)
  out.push('x-request-id', input.requestId)
  if (input.bodyLength > 0) out.push('content-length', String(input.bodyLength))
  return out
}

/** The backend's response headers for the client: hop-by-hop ones (and those its Connection names) dropped. */
export function responseHeaders (headers: Record<string, string | string[] | undefined>): Array<[string, string | string[]]> {
  const connectionOptions = new Set<string>()
  const conn = headers.connection
  for (const v of Array.isArray(conn) ? conn : conn === undefined ? [] : [conn]) {
    for (const opt of v.split(',')) connectionOptions.add(opt.trim().toLowerCase())
  }
  const out: Array<[string, string | string[]]> = []
  for (const [name, value] of Object.entries(headers)) {
    const n = name.toLowerCase()
    if (value === undefined || HOP_BY_HOP.has(n) || connectionOptions.has(n)) continue
    out.push([n, value])
  }
  return out
}

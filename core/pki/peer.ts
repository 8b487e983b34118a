/**
 * A TLS connection's client certificate, read once per connection. getPeerCertificate() builds a fresh object
 * (subject, issuer, extensions, the DER) on every call; called per request it cost the BACEN simulator about a tenth
 * of its CPU under load, and the proxy pays it on every request when the inbound allow-list is on. Renegotiation
 * (TLS 1.2; TLS 1.3 has none) is refused on the connection from the first read, so the cached certificate is the
 * connection's certificate for as long as it lives.
 */
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'

export interface PeerCertificate {
  /** SHA-256 of the DER, upper-case hex with colons (Node's form). */
  readonly fingerprint256: string
  readonly subjectCN: string | undefined
}

const seen = new WeakMap<TLSSocket, PeerCertificate | null>()

/** The client certificate the connection authenticated with; null without TLS or without a client certificate. */
export function peerCertificate (socket: Socket | TLSSocket): PeerCertificate | null {
  if (!('getPeerCertificate' in socket)) return null
  const cached = seen.get(socket)
  if (cached !== undefined) return cached
  socket.disableRenegotiation()
  const cert = socket.getPeerCertificate()
  const cn = cert?.subject?.CN
  const peer = typeof cert?.fingerprint256 === 'string'
    ? { fingerprint256: cert.fingerprint256.toUpperCase(), subjectCN: Array.isArray(cn) ? cn.join(', ') : cn }
    : null
  seen.set(socket, peer)
  return peer
}

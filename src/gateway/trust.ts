/**
 * The gateway's TLS material: the server certificate and key (HSM through the libp11 engine, or a PEM file), the
 * truststore of client CAs and their CRLs, loaded into one set of `SecureContext` options, and the verdict on each
 * client after its handshake.
 *
 * Who checks what:
 * - OpenSSL (Node's TLS): the chain up to a truststore CA, signatures, validity dates, the certificate purpose
 *   (a server checks the client's as `sslclient`: an extendedKeyUsage without clientAuth, or a keyUsage without
 *   digitalSignature, fails with INVALID_PURPOSE), and revocation against every CRL given (Node turns on
 *   X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL as soon as one CRL is added: every certificate of the chain
 *   below the root must be covered by a CRL, or it fails with UNABLE_TO_GET_CRL). test/gateway/tls.test.ts pins these.
 * - Here: every CRL is handed to OpenSSL, stale or not, so a stale CRL makes OpenSSL fail the chains it covers with
 *   CRL_HAS_EXPIRED (fail-closed needs nothing more). Under fail-open, `clientVerdict` accepts exactly that failure
 *   after checking in JS everything it could have hidden (OpenSSL reports the last error only): the leaf's dates and
 *   purpose, the whole chain up to a truststore CA (dates, CA flags, signatures), and that no certificate of the
 *   chain is listed by the stale (or any) CRL.
 *
 * Node's own `rejectUnauthorized: true` destroys a failed client's socket after the handshake without any event
 * (the reason would be lost to logs and metrics); the gateway does the same destroy itself, in 'secureConnection',
 * with the reason counted. See gateway.ts.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto'
import type { PeerCertificate, SecureContextOptions } from 'node:tls'
import { createSecureContext } from 'node:tls'
import { readFile } from 'node:fs/promises'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { children, decode, expectTag, readBitString, readOid, Tag } from '../../core/pki/der.ts'
import { crlSignedBy } from '../../core/pki/crl.ts'
import { dnEquals } from '../../core/pki/dn.ts'
import { certificateMatchesKey, certificateParts, parseCertificate, parseCertificates } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { ofbTlsPolicy } from '../../core/pki/ofb-tls-policy.ts'
import { formatPkcs11Uri } from '../hsm/uri.ts'
import { describePemSetting, isInlinePem } from '../config.ts'
import { crlIsStale, readCrlFile } from './crl.ts'
import type { CrlInfo } from './crl.ts'
import type { GatewayConfig } from './config.ts'
import type { SourceReader } from './sources.ts'

/** The engine id; never a path (src/upstream/tls-key-agent.ts says why). */
const ENGINE_ID = 'pkcs11'

export interface TrustMaterial {
  /** Options for https.createServer / server.setSecureContext. */
  readonly options: SecureContextOptions
  readonly serverCertificate: Certificate
  readonly cas: readonly Certificate[]
  readonly crls: readonly CrlInfo[]
  /** SHA-256 of the truststore and CRL files as read: a reload with the same digest changes nothing. */
  readonly digest: string
}

function describe (err: unknown): string {
  const e = err as { code?: unknown, message?: unknown }
  return `${typeof e.code === 'string' ? e.code + ': ' : ''}${String(e.message ?? err)}`
}

async function read (what: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    throw new PixProxyError(Errors.FILE_READ, [`${what} ${path}`, describe(err)], { cause: err })
  }
}

/** Files only: for callers that never name an S3 object (the gateway passes its own reader). */
const fileSources: Pick<SourceReader, 'read'> = { read }

/**
 * A PEM setting (the server certificate, the PEM key): the text itself, as ECS gives an SSM parameter to the container
 * (src/config.ts readPemSetting), or the file's content.
 */
async function readPem (what: string, value: string): Promise<Buffer> {
  return isInlinePem(value) ? Buffer.from(value, 'utf8') : await read(what, value)
}

/** The PKCS#11 URI the engine loads the server key by (the PIN file is read by the engine, never by JS). */
function serverKeyUri (key: GatewayConfig['serverKey'] & { kind: 'hsm' }): string {
  // A secret PIN is copied to a file before the first load (pin.ts, runGateway); an unresolved one is a programming error.
  if (key.pinFile === null) throw new Error(`the HSM PIN of secret ${String(key.pinSecretId)} has not been written to a file`)
  return `${formatPkcs11Uri({ token: key.tokenLabel, object: key.label, type: 'private' })}?pin-source=file:${key.pinFile}`
}

/**
 * Reads and checks everything and builds a context from it once (so that a bad file fails here, not at the first
 * handshake). The truststore and CRLs come through `sources` (files, or S3 objects: sources.ts). Throws PixProxyError
 * GATEWAY_TRUSTSTORE_INVALID, GATEWAY_CRL_INVALID, TLS_PEM_INVALID, TLS_KEY_CERT_MISMATCH, TLS_KEY_PIN_INCORRECT,
 * TLS_KEY_NOT_FOUND, TLS_ENGINE_FAILED, FILE_READ, AWS_S3_READ, GATEWAY_SOURCE_INVALID.
 */
export async function loadTrustMaterial (config: Pick<GatewayConfig, 'serverCertFile' | 'serverKey' | 'truststoreFile' | 'crlFiles'>, sources: Pick<SourceReader, 'read'> = fileSources): Promise<TrustMaterial> {
  const certPem = (await readPem('server certificate', config.serverCertFile)).toString('utf8')
  let chain: Certificate[]
  try {
    chain = parseCertificates(certPem)
  } catch (err) {
    throw new PixProxyError(Errors.TLS_PEM_INVALID, [`server certificate ${describePemSetting(config.serverCertFile)}`, describe(err)], { cause: err })
  }
  const serverCertificate = chain[0] as Certificate

  const trustBytes = await sources.read('truststore', config.truststoreFile)
  let cas: Certificate[]
  try {
    cas = parseCertificates(trustBytes.toString('utf8'))
  } catch (err) {
    throw new PixProxyError(Errors.GATEWAY_TRUSTSTORE_INVALID, [config.truststoreFile, describe(err)], { cause: err })
  }
  for (const ca of cas) {
    if (ca.x509.ca !== true) throw new PixProxyError(Errors.GATEWAY_TRUSTSTORE_INVALID, [config.truststoreFile, `${ca.subjectString} is not a CA certificate`])
  }

  const digest = createHash('sha256').update(trustBytes)
  const crls: CrlInfo[] = []
  for (const file of config.crlFiles) {
    const bytes = await sources.read('CRL', file)
    digest.update(bytes)
    let found: CrlInfo[]
    try {
      found = readCrlFile(file, bytes)
    } catch (err) {
      throw new PixProxyError(Errors.GATEWAY_CRL_INVALID, [file, describe(err)], { cause: err })
    }
    for (const crl of found) {
      // A CRL is only as good as its signature: it must be signed by a CA of the truststore (OpenSSL checks it again).
      if (!cas.some((ca) => crlSignedBy(crl.pem, ca))) {
        throw new PixProxyError(Errors.GATEWAY_CRL_INVALID, [crl.source, `it is not signed by a truststore CA (its issuer: ${crl.issuer})`])
      }
      crls.push(crl)
    }
  }

  const policy = ofbTlsPolicy()
  const base: SecureContextOptions = {
    cert: chain.map((c) => c.pem).join(''),
    ca: cas.map((c) => c.pem),
    crl: crls.map((c) => c.pem),
    minVersion: policy.minVersion,
    maxVersion: policy.maxVersion,
    ciphers: policy.ciphers,
    honorCipherOrder: policy.honorCipherOrder,
    secureOptions: policy.secureOptions
  }
  let options: SecureContextOptions
  if (config.serverKey.kind === 'file') {
    const keyPem = (await readPem('server key', config.serverKey.file)).toString('utf8')
    let matches: boolean
    try {
      matches = certificateMatchesKey(serverCertificate, createPrivateKey(keyPem))
    } catch (err) {
      throw new PixProxyError(Errors.TLS_PEM_INVALID, ['server key', describe(err)], { cause: err })
    }
    if (!matches) throw new PixProxyError(Errors.TLS_KEY_CERT_MISMATCH, [serverCertificate.subjectString, 'the PEM server key'])
    options = { ...base, key: keyPem }
  } else {
    options = { ...base, privateKeyEngine: ENGINE_ID, privateKeyIdentifier: serverKeyUri(config.serverKey) }
  }
  try {
    // OpenSSL's own check of everything above, the CRLs' and CAs' DER included; with the engine, the key loads here.
    createSecureContext(options)
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH') throw new PixProxyError(Errors.TLS_KEY_CERT_MISMATCH, [serverCertificate.subjectString, describeKey(config.serverKey)], { cause: err })
    if (code === 'ERR_OSSL_PIN_INCORRECT') throw new PixProxyError(Errors.TLS_KEY_PIN_INCORRECT, [describeKey(config.serverKey)], { cause: err })
    if (code === 'ERR_OSSL_OBJECT_NOT_FOUND') throw new PixProxyError(Errors.TLS_KEY_NOT_FOUND, [describeKey(config.serverKey)], { cause: err })
    if (config.serverKey.kind === 'hsm') throw new PixProxyError(Errors.TLS_ENGINE_FAILED, [describeKey(config.serverKey), describe(err)], { cause: err })
    throw new PixProxyError(Errors.GATEWAY_TRUSTSTORE_INVALID, [config.truststoreFile, describe(err)], { cause: err })
  }
  return Object.freeze({ options, serverCertificate, cas: Object.freeze(cas), crls: Object.freeze(crls), digest: digest.digest('hex') })
}

function describeKey (key: GatewayConfig['serverKey']): string {
  return key.kind === 'file' ? 'the PEM server key' : formatPkcs11Uri({ token: key.tokenLabel, object: key.label, type: 'private' })
}

export type ClientVerdict =
  | { readonly accepted: true, readonly certificate: X509Certificate, readonly warning?: string }
  | { readonly accepted: false, readonly reason: string, readonly detail: string }

const OID_KEY_USAGE = '2.5.29.15'
const OID_EXT_KEY_USAGE = '2.5.29.37'
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2'
const OID_ANY_EKU = '2.5.29.37.0'

/** What OpenSSL's `sslclient` purpose asks of a leaf, for the one case OpenSSL's answer may be hidden. */
function purposeProblem (cert: X509Certificate): string | null {
  const parts = certificateParts(cert.raw)
  const eku = parts.extensions.get(OID_EXT_KEY_USAGE)
  if (eku !== undefined) {
    const oids = children(expectTag(decode(eku.value), Tag.SEQUENCE, 'extKeyUsage')).map(readOid)
    if (!oids.includes(OID_CLIENT_AUTH) && !oids.includes(OID_ANY_EKU)) return 'its extendedKeyUsage has no clientAuth'
  }
  const ku = parts.extensions.get(OID_KEY_USAGE)
  if (ku !== undefined) {
    const { bytes } = readBitString(decode(ku.value))
    // digitalSignature is bit 0, the first octet's most significant bit.
    if (((bytes[0] ?? 0) & 0x80) === 0) return 'its keyUsage has no digitalSignature'
  }
  return null
}

/**
 * The chain Node verified, leaf first (getPeerCertificate(true) links it through issuerCertificate, completed from the
 * truststore the handshake used). The gateway keeps it per connection to judge the client again after a reload.
 */
export function peerChain (peer: PeerCertificate & { issuerCertificate?: PeerCertificate }): X509Certificate[] {
  const out: X509Certificate[] = []
  let cur: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = peer
  while (cur?.raw !== undefined && out.length < 10) {
    out.push(new X509Certificate(cur.raw))
    const next = cur.issuerCertificate as (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined
    if (next === undefined || next === cur || next.raw.equals(cur.raw)) break
    cur = next
  }
  return out
}

/**
 * The chain checked again in JS, for fail-open: every certificate in its validity, each signed by the next (a CA),
 * up to a truststore CA. OpenSSL reports only its last verification error, and with the verify callback continuing
 * (rejectUnauthorized false) a chain that failed earlier (an issuer not in the truststore, a forged signature, an
 * issuer that is not a CA) can end with CRL_HAS_EXPIRED as its last error: accepting that error alone would accept
 * whatever it overwrote. So acceptance under fail-open never rests on OpenSSL's verdict.
 */
function chainProblem (chain: readonly X509Certificate[], cas: readonly Certificate[], now: Date): string | null {
  const anchors = cas.map((c) => c.x509)
  const name = (c: X509Certificate): string => c.subject.replace(/\n/g, ', ')
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i] as X509Certificate
    if (now < new Date(cert.validFrom) || now > new Date(cert.validTo)) return `${name(cert)}: outside its validity`
    if (anchors.some((a) => a.raw.equals(cert.raw))) return null
    const next = chain[i + 1]
    const issuer = next !== undefined && cert.checkIssued(next) ? next : anchors.find((a) => cert.checkIssued(a) && cert.verify(a.publicKey))
    if (issuer === undefined) return `${name(cert)}: its issuer is not in the truststore`
    if (!issuer.ca) return `${name(cert)}: its issuer ${name(issuer)} is not a CA`
    if (!cert.verify(issuer.publicKey)) return `${name(cert)}: its signature does not verify with ${name(issuer)}'s key`
    if (issuer !== next) {
      // Reached through a truststore CA: that CA's own dates still count.
      return now < new Date(issuer.validFrom) || now > new Date(issuer.validTo) ? `${name(issuer)}: outside its validity` : null
    }
  }
  return 'no truststore CA in the chain'
}

/**
 * The gateway's decision on a client, from what the handshake left on the socket: OpenSSL's verification result
 * (`authorizationError`) and the peer's chain. Under fail-open, CRL_HAS_EXPIRED is accepted when every CRL that
 * failed is known to be stale and the checks it may have hidden pass (see the module comment).
 */
export function clientVerdict (
  peer: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined,
  authorizationError: string | null | undefined,
  material: Pick<TrustMaterial, 'crls' | 'cas'>,
  policy: 'fail-closed' | 'fail-open',
  now: Date
): ClientVerdict {
  if (peer === undefined || peer.raw === undefined) return { accepted: false, reason: 'no_certificate', detail: 'the client sent no certificate' }
  const leaf = new X509Certificate(peer.raw)
  if (authorizationError === null || authorizationError === undefined) return { accepted: true, certificate: leaf }
  const code = String(authorizationError)
  if (code !== 'CRL_HAS_EXPIRED' || policy !== 'fail-open') {
    return { accepted: false, reason: code.toLowerCase(), detail: `${leaf.subject.replace(/\n/g, ', ')}: ${code}` }
  }
  const stale = material.crls.filter((c) => crlIsStale(c, now))
  if (stale.length === 0) return { accepted: false, reason: 'crl_has_expired', detail: 'OpenSSL found an expired CRL the gateway does not know as stale' }
  if (now < new Date(leaf.validFrom) || now > new Date(leaf.validTo)) return { accepted: false, reason: 'cert_has_expired', detail: `${leaf.subject}: outside its validity` }
  const purpose = purposeProblem(leaf)
  if (purpose !== null) return { accepted: false, reason: 'invalid_purpose', detail: purpose }
  const chain = peerChain(peer)
  const broken = chainProblem(chain, material.cas, now)
  if (broken !== null) return { accepted: false, reason: 'untrusted_chain', detail: broken }
  for (const cert of chain) {
    const { issuer, serial } = parseCertificate(cert.raw)
    for (const crl of material.crls) {
      if (dnEquals(crl.issuerDn, issuer) && crl.revokedSerials.has(serial)) {
        return { accepted: false, reason: 'cert_revoked', detail: `${cert.subject.replace(/\n/g, ', ')} is listed by ${crl.source}` }
      }
    }
  }
  return { accepted: true, certificate: leaf, warning: `accepted under PIXGW_CRL_STALE_POLICY=fail-open: stale CRL(s) ${stale.map((c) => c.source).join(', ')}` }
}

/** Why an open connection's client is no longer acceptable (the label of pixgw_connections_closed_total). */
export type ConnectionCloseReason = 'revoked' | 'untrusted' | 'expired' | 'no_crl' | 'crl_stale'

export type ConnectionVerdict =
  | { readonly keep: true }
  | { readonly keep: false, readonly reason: ConnectionCloseReason, readonly detail: string }

/**
 * The client of an open connection judged again against `material` (new truststore and CRLs after a reload), from the
 * chain its handshake verified: what a handshake now would refuse, the connection must not keep. OpenSSL cannot be
 * asked again about an established connection, so this is the JS side of what it checks, restricted to what can change
 * after the handshake (the purpose and signatures of a certificate cannot):
 * - every certificate of the chain still in its validity (`expired`);
 * - the chain still reaches a CA of the truststore, each signature verifying (`untrusted`);
 * - no certificate of the chain is listed by a CRL of its issuer (`revoked`);
 * - every certificate below a self-signed root is covered by a CRL of its issuer, as OpenSSL's CRL_CHECK_ALL asks
 *   (`no_crl`), and under fail-closed at least one of those CRLs is not past its nextUpdate (`crl_stale`).
 * Matching a CRL to a certificate by issuer name, as the fail-open path of `clientVerdict` does: a CRL that only shares
 * a name can close a connection, never keep one open.
 */
export function connectionVerdict (
  chain: readonly X509Certificate[],
  material: Pick<TrustMaterial, 'crls' | 'cas'>,
  policy: 'fail-closed' | 'fail-open',
  now: Date
): ConnectionVerdict {
  const name = (c: X509Certificate): string => c.subject.replace(/\n/g, ', ')
  if (chain.length === 0) return { keep: false, reason: 'untrusted', detail: 'no certificate chain was recorded for this connection' }
  for (const cert of chain) {
    if (now < new Date(cert.validFrom) || now > new Date(cert.validTo)) return { keep: false, reason: 'expired', detail: `${name(cert)}: outside its validity` }
  }
  const broken = chainProblem(chain, material.cas, now)
  if (broken !== null) return { keep: false, reason: 'untrusted', detail: broken }
  const covered: Array<{ cert: X509Certificate, crls: CrlInfo[] }> = []
  for (const cert of chain) {
    const { issuer, serial } = parseCertificate(cert.raw)
    const crls = material.crls.filter((crl) => dnEquals(crl.issuerDn, issuer))
    const listing = crls.find((crl) => crl.revokedSerials.has(serial))
    if (listing !== undefined) return { keep: false, reason: 'revoked', detail: `${name(cert)} is listed by ${listing.source}` }
    // A self-signed root is the anchor: no CRL has to cover it.
    if (!cert.checkIssued(cert)) covered.push({ cert, crls })
  }
  for (const { cert, crls } of covered) {
    if (crls.length === 0) return { keep: false, reason: 'no_crl', detail: `no CRL of ${cert.issuer.replace(/\n/g, ', ')} (the issuer of ${name(cert)}) is loaded` }
    if (policy === 'fail-closed' && crls.every((crl) => crlIsStale(crl, now))) {
      return { keep: false, reason: 'crl_stale', detail: `every CRL covering ${name(cert)} is past its nextUpdate (${crls.map((c) => c.source).join(', ')}; PIXGW_CRL_STALE_POLICY=fail-closed)` }
    }
  }
  return { keep: true }
}

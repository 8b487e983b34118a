/**
 * The client side of mutual TLS to BACEN: one `SecureContext` holding the participant's certificate, the pinned
 * BACEN CA(s) and the private key, which stays in the HSM and is used through the libp11 `pkcs11` OpenSSL engine
 * loaded into Node's own OpenSSL. See docs/hsm-and-tls.md "mTLS: the libp11 engine inside Node's TLS".
 *
 * Measured with libp11 0.4.12, SoftHSM 2.6.1, Node 24 (test/upstream/tls-key-agent.test.ts pins the behaviour):
 * - The engine is loaded by id (`pkcs11`, found through OPENSSL_ENGINES), never by path: loading it by path works
 *   once, then every later context in the process fails with `engine routines::init failed`, including contexts
 *   that name the engine by id. By id, any number of contexts (different certificates, different keys) can be
 *   built in one process and the older ones keep working, so rotation simply builds a new context.
 * - PKCS#11 state is process-wide. The engine shares the module with graphene (Pkcs11KeyStore): whoever calls
 *   C_Initialize first owns it, and a C_Finalize by a store that opened first kills the engine's key for good
 *   (CKR_CRYPTOKI_NOT_INITIALIZED on every later handshake; libp11 cannot initialise again). Close such a store
 *   only after the upstream connections.
 * - The PIN is checked only at the first login of the process: once the token is logged in (by an earlier
 *   context or by a Pkcs11KeyStore), the engine loads keys whatever the pin-source file holds.
 * - On failure libp11 prints diagnostics to stderr (e.g. "PKCS11_get_private_key returned NULL"); nothing in
 *   Node can silence them. The thrown error carries an OpenSSL code, which is what is mapped here.
 * - TLS 1.3 and TLS 1.2 by default sign with CKM_RSA_PKCS_PSS; TLS 1.2 with `sigalgs: 'RSA+SHA256'` with
 *   CKM_RSA_PKCS (for HSMs without PSS). TLS 1.3 forbids PKCS#1 v1.5 signatures in CertificateVerify, so such
 *   a sigalgs list caps the context at TLS 1.2.
 */
import { createPrivateKey } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { accessSync, constants as fsConstants } from 'node:fs'
import { createSecureContext } from 'node:tls'
import type { SecureContext, SecureContextOptions, SecureVersion } from 'node:tls'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { formatPkcs11Uri, parsePkcs11Uri, pinSourceFile } from '../hsm/uri.ts'
import { certificateMatchesKey, parseCertificates } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'

/** Where the TLS client private key comes from. */
export type TlsKeySource =
  /**
   * A key in the HSM, used through the OpenSSL `pkcs11` engine: an RFC 7512 URI such as
   * `pkcs11:token=pix-proxy;object=pix-tls;type=private?pin-source=file:/run/secrets/hsm-pin`. The engine reads
   * the PIN file itself, so the PIN never enters a JS string. No `module-path` (libp11 0.4.12 rejects it): the
   * engine takes the module from PKCS11_MODULE_PATH, and finds itself through OPENSSL_ENGINES; both must be in
   * the process environment before the first context is built.
   */
  | { kind: 'engine', uri: string }
  /** A software key (unencrypted PEM), for tests and for participants without an HSM for TLS. */
  | { kind: 'pem', keyPem: string }

export interface TlsClientIdentity {
  /** Client certificate, optionally followed by its intermediate CA certificates (leaf first). */
  certPem: string
  /** BACEN's CA(s) to trust for the server: pinned, the system roots are not trusted. */
  caPem: string
  key: TlsKeySource
  /** Default TLSv1.2. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3'
  /**
   * OpenSSL signature algorithm list, e.g. `RSA+SHA256` (TLS 1.2 with CKM_RSA_PKCS, for HSMs without PSS). With
   * an RSA key and no PSS algorithm in the list the context is capped at TLS 1.2 (TLS 1.3 cannot work).
   */
  sigalgs?: string
  /** OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are not affected). */
  ciphers?: string
  /**
   * The public half of the HSM key as read through PKCS#11: when given, a certificate for another key is refused
   * before the engine is touched.
   */
  expectedPublicKey?: KeyObject
}

interface AgentState {
  readonly context: SecureContext
  readonly certificate: Certificate
  readonly chain: readonly Certificate[]
  readonly cas: readonly Certificate[]
  readonly keyDescription: string
}

const VERSIONS: ReadonlySet<string> = new Set(['TLSv1.2', 'TLSv1.3'])
/** The engine id; never a path (see the module comment). */
const ENGINE_ID = 'pkcs11'

function describeError (err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const code = (err as { code?: unknown }).code
  const stack = (err as { opensslErrorStack?: unknown }).opensslErrorStack
  const extra = Array.isArray(stack) && stack.length > 0 ? ` (${stack.join('; ')})` : ''
  return `${typeof code === 'string' ? code + ': ' : ''}${err.message}${extra}`
}

function errorCode (err: unknown): string | undefined {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined
  return typeof code === 'string' ? code : undefined
}

function parsePem (what: string, pem: unknown): Certificate[] {
  if (typeof pem !== 'string' || pem.trim() === '') throw new PixProxyError(Errors.TLS_PEM_INVALID, [what, 'empty'])
  try {
    return parseCertificates(pem)
  } catch (err) {
    throw new PixProxyError(Errors.TLS_PEM_INVALID, [what, describeError(err)], { cause: err })
  }
}

/** Checks the engine URI and returns a description of the key that is safe to log (no pin-source). */
function checkEngineUri (uri: unknown): string {
  if (typeof uri !== 'string') throw new PixProxyError(Errors.TLS_CONTEXT_INVALID, ['key.uri must be a string'])
  const parts = parsePkcs11Uri(uri)
  const description = formatPkcs11Uri({ token: parts.token, object: parts.object, id: parts.id, type: parts.type })
  if (parts.pinValue !== undefined) {
    throw new PixProxyError(Errors.HSM_PIN_SOURCE, ['pin-value', 'a PIN inside the URI is refused; use pin-source=file:<path>'])
  }
  if (parts.modulePath !== undefined) {
    throw new PixProxyError(Errors.HSM_URI_INVALID, ['module-path is not accepted by the libp11 engine; set PKCS11_MODULE_PATH'])
  }
  if (parts.object === undefined && parts.id === undefined) {
    throw new PixProxyError(Errors.HSM_URI_INVALID, [`${description} names no key (give object= or id=)`])
  }
  if (parts.type !== undefined && parts.type !== 'private') {
    throw new PixProxyError(Errors.HSM_URI_INVALID, [`${description}: the TLS key must be type=private`])
  }
  // Without a pin-source libp11 would try to prompt for the PIN on the terminal.
  if (parts.pinSource === undefined) throw new PixProxyError(Errors.HSM_PIN_SOURCE, [description, 'no pin-source given'])
  const pinFile = pinSourceFile(parts.pinSource)
  // Only whether it can be read: the engine reads the PIN itself, it never passes through JS.
  try {
    accessSync(pinFile, fsConstants.R_OK)
  } catch (err) {
    throw new PixProxyError(Errors.HSM_PIN_SOURCE, [pinFile, errorCode(err) ?? describeError(err)], { cause: err })
  }
  return description
}

/** Maps an error from loading the key into a context, by OpenSSL/Node error code. */
function keyError (err: unknown, engine: boolean, certificate: Certificate, keyDescription: string): PixProxyError {
  switch (errorCode(err)) {
    case 'ERR_OSSL_PIN_INCORRECT':
      return new PixProxyError(Errors.TLS_KEY_PIN_INCORRECT, [keyDescription], { cause: err })
    case 'ERR_OSSL_OBJECT_NOT_FOUND':
      return new PixProxyError(Errors.TLS_KEY_NOT_FOUND, [keyDescription], { cause: err })
    case 'ERR_OSSL_X509_KEY_VALUES_MISMATCH':
      return new PixProxyError(Errors.TLS_KEY_CERT_MISMATCH, [certificate.subjectString, keyDescription], { cause: err })
  }
  // The same options built a context without the key a moment earlier, so what is left is the key's loading:
  // for the engine that includes a missing engine (no code: "DSO ... could not load the shared library"), a
  // module that cannot be loaded, or a module finalised under the engine.
  if (engine) return new PixProxyError(Errors.TLS_ENGINE_FAILED, [keyDescription, describeError(err)], { cause: err })
  return new PixProxyError(Errors.TLS_PEM_INVALID, ['private key', describeError(err)], { cause: err })
}

function checkValidity (certificate: Certificate, now: Date): void {
  if (now < certificate.notBefore) {
    throw new PixProxyError(Errors.CERT_UNSUITABLE, [certificate.subjectString, `it is not valid before ${certificate.notBefore.toISOString()}`])
  }
  if (now > certificate.notAfter) {
    throw new PixProxyError(Errors.CERT_UNSUITABLE, [certificate.subjectString, `it expired on ${certificate.notAfter.toISOString()}`])
  }
}

/** TLS 1.3 only accepts RSASSA-PSS for RSA keys (RFC 8446 §4.2.3). */
function sigalgsAllowTls13 (sigalgs: string, certificate: Certificate): boolean {
  if (certificate.publicKey.asymmetricKeyType !== 'rsa') return true
  return sigalgs.split(':').some((alg) => /pss/i.test(alg))
}

function buildState (identity: TlsClientIdentity): AgentState {
  if (identity === null || typeof identity !== 'object') throw new PixProxyError(Errors.TLS_CONTEXT_INVALID, ['no identity given'])
  const chain = parsePem('client certificate', identity.certPem)
  const certificate = chain[0] as Certificate
  const cas = parsePem('CA bundle', identity.caPem)
  checkValidity(certificate, new Date())

  const minVersion = identity.minVersion ?? 'TLSv1.2'
  if (!VERSIONS.has(minVersion)) {
    throw new PixProxyError(Errors.TLS_CONTEXT_INVALID, [`minVersion must be TLSv1.2 or TLSv1.3, got ${JSON.stringify(minVersion)}`])
  }
  let maxVersion: SecureVersion = 'TLSv1.3'
  if (identity.sigalgs !== undefined && !sigalgsAllowTls13(identity.sigalgs, certificate)) {
    if (minVersion === 'TLSv1.3') {
      throw new PixProxyError(Errors.TLS_CONTEXT_INVALID, [`sigalgs ${identity.sigalgs} has no RSA-PSS algorithm, which TLS 1.3 requires, but minVersion is TLSv1.3`])
    }
    maxVersion = 'TLSv1.2'
  }

  const key = identity.key
  let keyDescription: string
  if (key?.kind === 'engine') {
    keyDescription = checkEngineUri(key.uri)
  } else if (key?.kind === 'pem') {
    keyDescription = 'the PEM private key'
  } else {
    throw new PixProxyError(Errors.TLS_CONTEXT_INVALID, ['key.kind must be engine or pem'])
  }
  if (identity.expectedPublicKey !== undefined && !certificateMatchesKey(certificate, identity.expectedPublicKey)) {
    throw new PixProxyError(Errors.TLS_KEY_CERT_MISMATCH, [certificate.subjectString, keyDescription])
  }

  // What OpenSSL gets is what was parsed and checked above (Node silently ignores a `ca` that is not PEM).
  const base: SecureContextOptions = {
    cert: chain.map((c) => c.pem).join(''),
    ca: cas.map((c) => c.pem),
    minVersion,
    maxVersion,
    ...(identity.sigalgs === undefined ? {} : { sigalgs: identity.sigalgs }),
    ...(identity.ciphers === undefined ? {} : { ciphers: identity.ciphers })
  }
  // A first context without the key: a bad setting (an unknown sigalg throws without any code) is then told apart
  // from a key that cannot be loaded, without reading error messages.
  try {
    createSecureContext(base)
  } catch (err) {
    throw new PixProxyError(Errors.TLS_CONTEXT_INVALID, [describeError(err)], { cause: err })
  }

  let context: SecureContext
  if (key.kind === 'pem') {
    let privateKey: KeyObject
    try {
      privateKey = createPrivateKey(key.keyPem)
    } catch (err) {
      throw new PixProxyError(Errors.TLS_PEM_INVALID, ['private key', describeError(err)], { cause: err })
    }
    if (!certificateMatchesKey(certificate, privateKey)) {
      throw new PixProxyError(Errors.TLS_KEY_CERT_MISMATCH, [certificate.subjectString, keyDescription])
    }
    try {
      context = createSecureContext({ ...base, key: key.keyPem })
    } catch (err) {
      throw keyError(err, false, certificate, keyDescription)
    }
  } else {
    try {
      // Loads the key through the engine, synchronously: PIN and object errors surface here, not at handshake.
      context = createSecureContext({ ...base, privateKeyEngine: ENGINE_ID, privateKeyIdentifier: key.uri })
    } catch (err) {
      throw keyError(err, true, certificate, keyDescription)
    }
  }
  return Object.freeze({ context, certificate, chain: Object.freeze(chain), cas: Object.freeze(cas), keyDescription })
}

/**
 * Holds the TLS client identity as one `SecureContext`, built once at start-up and again on rotation. Every
 * connection to BACEN uses {@link TlsKeyAgent.secureContext}; per-connection key/cert/ca options would be
 * ignored next to it. Behind this small interface a sidecar (stunnel with the same engine) or an OpenSSL 3
 * provider could replace the engine without touching the proxy.
 */
export class TlsKeyAgent {
  #state: AgentState
  readonly #listeners = new Set<() => void>()

  private constructor (state: AgentState) {
    this.#state = state
  }

  /**
   * Validates the identity and builds its context. Throws PixProxyError: TLS_PEM_INVALID (certificate, CA bundle
   * or PEM key), CERT_UNSUITABLE (certificate expired or not yet valid), TLS_KEY_CERT_MISMATCH (certificate for
   * another key, by `expectedPublicKey` or by OpenSSL's own check), TLS_KEY_PIN_INCORRECT, TLS_KEY_NOT_FOUND,
   * TLS_ENGINE_FAILED (engine or PKCS#11 module unusable), HSM_URI_INVALID / HSM_PIN_SOURCE (engine URI),
   * TLS_CONTEXT_INVALID (versions, sigalgs, ciphers).
   */
  static create (identity: TlsClientIdentity): TlsKeyAgent {
    return new TlsKeyAgent(buildState(identity))
  }

  /** The context for new connections. */
  get secureContext (): SecureContext {
    return this.#state.context
  }

  /** The client (leaf) certificate presented to the server. */
  get certificate (): Certificate {
    return this.#state.certificate
  }

  /** Leaf first, then any intermediates sent with it. */
  get chain (): readonly Certificate[] {
    return this.#state.chain
  }

  /** The pinned CA certificates BACEN's servers are verified against (the CA bundle of the current identity). */
  get cas (): readonly Certificate[] {
    return this.#state.cas
  }

  /** Where the key lives, safe to log (a PKCS#11 URI without its pin-source, or "the PEM private key"). */
  get keyDescription (): string {
    return this.#state.keyDescription
  }

  /**
   * Builds a context for a new identity (new certificate, same or another key) and, only if that succeeds,
   * makes it current and notifies the listeners; on failure it throws what {@link TlsKeyAgent.create} throws
   * and the current context stays. Connections already open keep the context they were made with.
   * Every listener runs even if one throws; their errors are then rethrown together (AggregateError).
   */
  rotate (identity: TlsClientIdentity): void {
    this.#state = buildState(identity)
    const errors: unknown[] = []
    for (const fn of [...this.#listeners]) {
      try {
        fn()
      } catch (err) {
        errors.push(err)
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'a TLS rotation listener failed')
  }

  /** Calls `fn` after each successful rotation; returns the function that unsubscribes it. */
  onRotate (fn: () => void): () => void {
    this.#listeners.add(fn)
    return () => { this.#listeners.delete(fn) }
  }
}

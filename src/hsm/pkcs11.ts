import { createPublicKey } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { KeyType, ObjectClass, PrivateKey } from 'graphene-pk11'
import type { ITemplate, Key, Session, SessionObject } from 'graphene-pk11'
import pkcs11js from 'pkcs11js'
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { Signer } from '../../core/signer.ts'
import { ckrCode } from './errors.ts'
import { Pkcs11SessionPool } from './session-pool.ts'
import type { Pkcs11Options, Pkcs11PoolStats, Pkcs11TokenInfo } from './session-pool.ts'
import { formatPkcs11Uri } from './uri.ts'

export interface Pkcs11KeyInfo {
  label: string
  /** CKA_ID, hex. */
  id: string
  keyType: 'RSA'
  modulusBits: number
  sign: boolean
  sensitive: boolean
  extractable: boolean
  alwaysSensitive: boolean
  neverExtractable: boolean
  publicKey: KeyObject
}

const { CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID } = pkcs11js

function stripLeadingZeros (b: Buffer): Buffer {
  let i = 0
  while (i < b.length - 1 && b[i] === 0) i++
  return b.subarray(i)
}

function rsaPublicKey (modulus: Buffer, exponent: Buffer): KeyObject {
  return createPublicKey({
    key: { kty: 'RSA', n: stripLeadingZeros(modulus).toString('base64url'), e: stripLeadingZeros(exponent).toString('base64url') },
    format: 'jwk'
  })
}

/** CKA_MODULUS/CKA_PUBLIC_EXPONENT of a key object, or undefined when the token does not reveal them. */
export function readRsaPublic (obj: SessionObject): KeyObject | undefined {
  let attrs: ITemplate
  try {
    attrs = obj.getAttribute({ modulus: null, publicExponent: null })
  } catch (err) {
    const code = ckrCode(err)
    if (code === CKR_ATTRIBUTE_SENSITIVE || code === CKR_ATTRIBUTE_TYPE_INVALID) return undefined
    throw err
  }
  const { modulus, publicExponent } = attrs
  if (!Buffer.isBuffer(modulus) || !Buffer.isBuffer(publicExponent) || modulus.length === 0) return undefined
  return rsaPublicKey(modulus, publicExponent)
}

function sameKey (a: KeyObject, b: KeyObject): boolean {
  return a.equals(b)
}

interface KeyRef {
  readonly label: string
  key: Key | undefined
  /** The pool's generation the handle was found in. */
  generation: number
}

class Pkcs11Signer implements Signer {
  readonly publicKey: KeyObject
  readonly description: string
  readonly #sign: (data: Uint8Array) => Promise<Buffer>

  constructor (publicKey: KeyObject, description: string, sign: (data: Uint8Array) => Promise<Buffer>) {
    this.publicKey = publicKey
    this.description = description
    this.#sign = sign
  }

  sign (data: Uint8Array): Promise<Buffer> {
    return this.#sign(data)
  }
}

/**
 * RSA signing keys on a PKCS#11 token, used through a bounded pool of sessions (session-pool.ts: the module, the
 * login, the sessions, their queue, deadlines and replacement, and the close order).
 *
 * Keys are found by label and their handles kept until the pool's generation changes (a login, a stale handle).
 * Signs run through the asynchronous C_Sign, off the event loop.
 */
export class Pkcs11KeyStore {
  readonly #pool: Pkcs11SessionPool

  private constructor (pool: Pkcs11SessionPool) {
    this.#pool = pool
  }

  /**
   * Opens the session pool (Pkcs11SessionPool.open: loads the module, initialises it with CKF_OS_LOCKING_OK,
   * finds the token by label, opens the sessions and logs in). Fails with HSM_MODULE_LOAD, HSM_TOKEN_NOT_FOUND,
   * HSM_TOKEN_AMBIGUOUS, HSM_PIN_INCORRECT, HSM_PIN_LOCKED or HSM_OPERATION; nothing stays loaded after a failure.
   */
  static async open (opts: Pkcs11Options): Promise<Pkcs11KeyStore> {
    const pool = await Pkcs11SessionPool.open(opts)
    opts.log?.info({ token: opts.tokenLabel, module: opts.modulePath, poolSize: pool.stats().idle }, 'PKCS#11 key store open')
    return new Pkcs11KeyStore(pool)
  }

  /**
   * A signer for the RSA private key labelled `keyLabel` (CKO_PRIVATE_KEY, CKA_LABEL, CKA_SIGN). Its public key
   * comes from the public key object with the same CKA_ID (else the same label), cross-checked against the
   * private key's own CKA_MODULUS when the token reveals it, which also serves when there is no public object.
   */
  async signer (keyLabel: string): Promise<Signer> {
    const ref: KeyRef = { label: keyLabel, key: undefined, generation: -1 }
    const publicKey = await this.#pool.run('C_FindObjects', (session) => this.#publicKeyOf(session, this.#resolveKey(session, ref), keyLabel))
    const description = formatPkcs11Uri({ token: this.#pool.tokenLabel, object: keyLabel, type: 'private' })
    return new Pkcs11Signer(publicKey, description, (data) => this.#pool.run('C_Sign', (session) => this.#signWith(session, ref, data)))
  }

  /** Facts about a private key and its public half, for diagnostics (`pix-proxy hsm info`). */
  async keyInfo (keyLabel: string): Promise<Pkcs11KeyInfo> {
    const ref: KeyRef = { label: keyLabel, key: undefined, generation: -1 }
    return this.#pool.run('C_GetAttributeValue', (session) => {
      const key = this.#resolveKey(session, ref)
      const a = key.getAttribute({ id: null, sign: null, sensitive: null, extractable: null, alwaysSensitive: null, neverExtractable: null })
      const publicKey = this.#publicKeyOf(session, key, keyLabel)
      return {
        label: keyLabel,
        id: Buffer.isBuffer(a.id) ? a.id.toString('hex') : '',
        keyType: 'RSA' as const,
        modulusBits: publicKey.asymmetricKeyDetails?.modulusLength ?? 0,
        sign: a.sign === true,
        sensitive: a.sensitive === true,
        extractable: a.extractable === true,
        alwaysSensitive: a.alwaysSensitive === true,
        neverExtractable: a.neverExtractable === true,
        publicKey
      }
    })
  }

  /** CK_TOKEN_INFO of the token, as plain facts. */
  tokenInfo (): Pkcs11TokenInfo {
    return this.#pool.tokenInfo()
  }

  /**
   * Runs an administrative operation (key generation by `pix-proxy hsm init`, tests) on a read/write session of its
   * own, logged in, outside the signing pool; close() waits for it like for a sign. Not for the request path.
   */
  adminSession<T> (op: string, fn: (session: Session) => Promise<T>): Promise<T> {
    return this.#pool.adminSession(op, fn)
  }

  /** The token's label (errors, logs). */
  get tokenLabel (): string {
    return this.#pool.tokenLabel
  }

  /**
   * Readiness probe: a session can be taken, is logged in (logging in again if needed), the token answers, and
   * each private key in `keyLabels` is still on the token (a key deleted or hidden by a changed login makes every
   * sign fail while the token itself looks healthy).
   */
  async check (keyLabels: readonly string[] = []): Promise<void> {
    await this.#pool.check((session) => {
      for (const label of keyLabels) this.#resolveKey(session, { label, key: undefined, generation: -1 })
    })
  }

  stats (): Pkcs11PoolStats {
    return this.#pool.stats()
  }

  /**
   * Stops the pool (Pkcs11SessionPool.close): queued operations fail with HSM_POOL_CLOSED at once, running ones may
   * finish (up to closeTimeoutMs), then logout, close the sessions and finalize. Idempotent.
   */
  close (): Promise<void> {
    return this.#pool.close()
  }

  async #signWith (session: Session, ref: KeyRef, data: Uint8Array): Promise<Buffer> {
    const key = this.#resolveKey(session, ref)
    // C_SignInit is synchronous and cheap; C_Sign (the RSA operation) runs on the libuv thread pool.
    const operation = session.createSign('SHA256_RSA_PKCS', key)
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    return await new Promise<Buffer>((resolve, reject) => {
      // pkcs11js and graphene hand back a view into a 1 KiB scratch buffer: copy out exactly the signature.
      const done = (err: Error | null, signature: Buffer | null): void => {
        if (err) reject(err)
        else if (signature === null) reject(new Error('C_Sign returned no signature'))
        else resolve(Buffer.from(signature))
      }
      if (bytes.length === 0) {
        // An empty Buffer reaches the module as a NULL pointer, which SoftHSM refuses (CKR_ARGUMENTS_BAD);
        // a multi-part sign with no update signs the empty message.
        session.lib.C_SignFinal(session.handle, Buffer.alloc(1024), done)
      } else {
        operation.once(bytes, done)
      }
    })
  }

  #resolveKey (session: Session, ref: KeyRef): Key {
    const tokenLabel = this.#pool.tokenLabel
    if (ref.key !== undefined && ref.generation === this.#pool.generation) return ref.key
    const found = session.find({ class: ObjectClass.PRIVATE_KEY, label: ref.label })
    if (found.length === 0) throw new PixProxyError(Errors.HSM_KEY_NOT_FOUND, ['private', ref.label, tokenLabel])
    if (found.length > 1) throw new PixProxyError(Errors.HSM_KEY_AMBIGUOUS, [found.length, ref.label, tokenLabel])
    const key = new PrivateKey(found.items(0))
    const a = key.getAttribute({ keyType: null, sign: null })
    if (a.keyType !== KeyType.RSA) throw new PixProxyError(Errors.HSM_KEY_UNSUPPORTED, [ref.label, tokenLabel, `not an RSA key (CKA_KEY_TYPE ${String(a.keyType)})`])
    if (a.sign !== true) throw new PixProxyError(Errors.HSM_KEY_UNSUPPORTED, [ref.label, tokenLabel, 'CKA_SIGN is false'])
    ref.key = key
    ref.generation = this.#pool.generation
    return key
  }

  #publicKeyOf (session: Session, privateKey: Key, label: string): KeyObject {
    const own = readRsaPublic(privateKey)
    const id = privateKey.getAttribute({ id: null }).id
    let candidates = Buffer.isBuffer(id) && id.length > 0
      ? session.find({ class: ObjectClass.PUBLIC_KEY, keyType: KeyType.RSA, id })
      : undefined
    if (candidates === undefined || candidates.length === 0) candidates = session.find({ class: ObjectClass.PUBLIC_KEY, keyType: KeyType.RSA, label })
    const publics: KeyObject[] = []
    for (let i = 0; i < candidates.length; i++) {
      const k = readRsaPublic(candidates.items(i))
      if (k !== undefined) publics.push(k)
    }
    if (own !== undefined) {
      if (publics.length > 0 && !publics.some((k) => sameKey(k, own))) throw new PixProxyError(Errors.HSM_KEY_MISMATCH, [label, this.#pool.tokenLabel])
      return own
    }
    const only = publics[0]
    if (only === undefined) throw new PixProxyError(Errors.HSM_KEY_NOT_FOUND, ['public', label, this.#pool.tokenLabel])
    if (publics.length > 1) throw new PixProxyError(Errors.HSM_KEY_AMBIGUOUS, [publics.length, label, this.#pool.tokenLabel])
    return only
  }
}

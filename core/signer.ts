import { createHash, createPrivateKey, createPublicKey, sign as cryptoSign } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { Errors, PixProxyError } from './errors.ts'

/**
 * Produces RSASSA-PKCS1-v1_5 SHA-256 signatures; the private key may live anywhere (HSM, AWS KMS, file).
 *
 * Implementations hash `data` themselves, so callers hand over the exact bytes to sign (for XMLDSig, the
 * canonical SignedInfo), and never block the event loop while the RSA operation runs.
 */
export interface Signer {
  /** Signs SHA-256(`data`) with RSASSA-PKCS1-v1_5 and resolves to the raw signature (modulus-sized). */
  sign (data: Uint8Array): Promise<Buffer>
  /** The public half of the signing key, for verification and for matching certificates. */
  readonly publicKey: KeyObject
  /** Where the key lives, safe to log: never contains the PIN or key material. */
  readonly description: string
}

/**
 * A {@link Signer} over a private key held in process memory. Meant for tests, local tools and benchmarks:
 * production keys stay in the HSM behind `Pkcs11KeyStore`.
 */
export class SoftwareSigner implements Signer {
  readonly publicKey: KeyObject
  readonly description: string
  readonly #privateKey: KeyObject

  private constructor (privateKey: KeyObject) {
    if (privateKey.type !== 'private') {
      throw new PixProxyError(Errors.CONFIG_INVALID, [`a software signer needs a private key, got a ${privateKey.type} key`])
    }
    if (privateKey.asymmetricKeyType !== 'rsa') {
      throw new PixProxyError(Errors.CONFIG_INVALID, [`a software signer needs an RSA key, got ${String(privateKey.asymmetricKeyType)}`])
    }
    this.#privateKey = privateKey
    this.publicKey = createPublicKey(privateKey)
    const spki = this.publicKey.export({ type: 'spki', format: 'der' })
    const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0
    // The SPKI digest names the key without revealing anything about it.
    this.description = `software RSA-${bits} key spki-sha256:${createHash('sha256').update(spki).digest('hex').slice(0, 16)}`
  }

  /** Loads a PEM (PKCS#1 or PKCS#8, optionally encrypted) RSA private key. */
  static fromPem (pem: string | Buffer, passphrase?: string): SoftwareSigner {
    let key: KeyObject
    try {
      key = passphrase === undefined
        ? createPrivateKey({ key: pem, format: 'pem' })
        : createPrivateKey({ key: pem, format: 'pem', passphrase })
    } catch (err) {
      throw new PixProxyError(Errors.CONFIG_INVALID, [`cannot read the software signing key: ${(err as Error).message}`], { cause: err })
    }
    return new SoftwareSigner(key)
  }

  static fromKeyObject (key: KeyObject): SoftwareSigner {
    return new SoftwareSigner(key)
  }

  sign (data: Uint8Array): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      // The callback form runs the RSA operation on the libuv thread pool.
      cryptoSign('sha256', data, this.#privateKey, (err, signature) => {
        if (err !== null) reject(err)
        else resolve(signature)
      })
    })
  }
}

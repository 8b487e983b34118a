/**
 * The XMLDSig signing key in AWS KMS: a {@link Signer} whose private key never leaves KMS. `Signer.sign` receives
 * the bytes to sign (the canonical SignedInfo); the SHA-256 is computed here and KMS signs the digest
 * (MessageType DIGEST, RSASSA_PKCS1_V1_5_SHA_256), so the message itself never goes to KMS and its size does not
 * matter (KMS takes at most 4096 bytes of RAW message).
 *
 * `KmsSigner.open` refuses to start with a key that cannot sign for BACEN: not Enabled, not SIGN_VERIFY, not RSA_2048,
 * without RSASSA_PKCS1_V1_5_SHA_256, or whose public key is not the signing certificate's; it then signs once and
 * checks the signature, so a task role without kms:Sign fails at start, not on the first payment. Every sign
 * names the key by the ARN DescribeKey resolved at start, not by the configured alias: repointing the alias at
 * another key cannot make the proxy sign with a key its certificate does not name. Each signature is verified
 * against the public key before it is used (tens of microseconds).
 *
 * Every failure here happens before anything is sent to BACEN: each maps to a KMS_* code whose outcome is NOT SENT.
 */
import { createHash, createPublicKey, verify as cryptoVerify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { DescribeKeyCommand, GetPublicKeyCommand, SignCommand } from '@aws-sdk/client-kms'
import type { KMSClient } from '@aws-sdk/client-kms'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { certificateMatchesKey } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import type { Signer } from '../../core/signer.ts'

const ALGORITHM = 'RSASSA_PKCS1_V1_5_SHA_256'
const KEY_SPEC = 'RSA_2048'
/** What the start-up self-test signs: any bytes do; these say what they are. */
const SELF_TEST = Buffer.from('pix-proxy KMS signer self-test')
/** How long a readiness verdict on the key is reused: /readyz is polled every few seconds by every task. */
const CHECK_TTL_MS = 10_000

export interface KmsSignerOptions {
  /** Key id, key ARN, alias name (`alias/…`) or alias ARN. */
  readonly keyId: string
  /** The signing certificate: its public key must be the KMS key's. */
  readonly certificate: Certificate
  /** The signer owns it from here: `close()` destroys it. */
  readonly client: KMSClient
  /** Clock of the readiness cache (tests). */
  readonly now?: () => number
}

/** The SDK's error name (a modelled exception's, or the network error's code) and its message. */
function sdkError (err: unknown): { name: string, message: string } {
  const e = err as { name?: unknown, code?: unknown, message?: unknown }
  const name = typeof e.name === 'string' && e.name !== 'Error' ? e.name : typeof e.code === 'string' ? e.code : 'Error'
  return { name, message: typeof e.message === 'string' ? e.message : String(err) }
}

/**
 * A KMS call's failure as a PixProxyError. Throttling (KMS answers ThrottlingException when a request quota is
 * exceeded), a missing or disabled key, a refused permission and anything else (a 5xx, KMSInternalException,
 * KeyUnavailableException, a timeout, a refused connection) each have their code; all are NOT SENT.
 */
export function kmsError (operation: string, keyId: string, err: unknown): PixProxyError {
  const { name, message } = sdkError(err)
  const options = { cause: err }
  switch (name) {
    case 'ThrottlingException':
    case 'LimitExceededException':
      return new PixProxyError(Errors.KMS_THROTTLED, [operation, keyId], options)
    case 'NotFoundException':
      return new PixProxyError(Errors.KMS_KEY_NOT_FOUND, [keyId], options)
    case 'DisabledException':
    case 'KMSInvalidStateException':
      return new PixProxyError(Errors.KMS_KEY_DISABLED, [keyId, `${name}: ${message}`], options)
    case 'AccessDeniedException':
      return new PixProxyError(Errors.KMS_ACCESS_DENIED, [operation, keyId, message, operation], options)
    case 'InvalidKeyUsageException':
    case 'IncorrectKeyException':
      return new PixProxyError(Errors.KMS_KEY_UNSUITABLE, [keyId, `${name}: ${message}`], options)
    default:
      return new PixProxyError(Errors.KMS_UNAVAILABLE, [operation, keyId, `${name}: ${message}`], options)
  }
}

export class KmsSigner implements Signer {
  readonly publicKey: KeyObject
  readonly description: string
  /** The key's ARN, as DescribeKey resolved the configured id at start. */
  readonly keyArn: string
  readonly #client: KMSClient
  readonly #now: () => number
  #lastCheck: { at: number, result: Promise<string> } | null = null

  private constructor (client: KMSClient, keyArn: string, publicKey: KeyObject, now: () => number) {
    this.#client = client
    this.#now = now
    this.keyArn = keyArn
    this.publicKey = publicKey
    const spki = publicKey.export({ type: 'spki', format: 'der' })
    this.description = `aws-kms ${keyArn} spki-sha256:${createHash('sha256').update(spki).digest('hex').slice(0, 16)}`
  }

  /**
   * Resolves and checks the key (DescribeKey, GetPublicKey), compares it with the certificate and signs once.
   * @throws PixProxyError KMS_KEY_UNSUITABLE, KMS_KEY_MISMATCH, KMS_KEY_DISABLED, KMS_KEY_NOT_FOUND, KMS_ACCESS_DENIED,
   *   KMS_THROTTLED, KMS_UNAVAILABLE. The client is destroyed when it throws.
   */
  static async open (o: KmsSignerOptions): Promise<KmsSigner> {
    try {
      return await KmsSigner.#open(o)
    } catch (err) {
      o.client.destroy()
      throw err
    }
  }

  static async #open ({ keyId, certificate, client, now }: KmsSignerOptions): Promise<KmsSigner> {
    const call = async <T>(operation: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn()
      } catch (err) {
        throw kmsError(operation, keyId, err)
      }
    }
    const unsuitable = (why: string): PixProxyError => new PixProxyError(Errors.KMS_KEY_UNSUITABLE, [keyId, why])
    const described = await call('DescribeKey', async () => await client.send(new DescribeKeyCommand({ KeyId: keyId })))
    const meta = described.KeyMetadata
    if (meta?.Arn === undefined) throw new PixProxyError(Errors.KMS_UNAVAILABLE, ['DescribeKey', keyId, 'the answer has no KeyMetadata.Arn'])
    if (meta.KeyState !== 'Enabled') throw new PixProxyError(Errors.KMS_KEY_DISABLED, [keyId, `KeyState ${String(meta.KeyState)}`])
    if (meta.KeyUsage !== 'SIGN_VERIFY') throw unsuitable(`KeyUsage is ${String(meta.KeyUsage)}, not SIGN_VERIFY`)
    if (meta.KeySpec !== KEY_SPEC) throw unsuitable(`KeySpec is ${String(meta.KeySpec)}, not ${KEY_SPEC} (BACEN's signing profile)`)
    if (!(meta.SigningAlgorithms ?? []).includes(ALGORITHM)) throw unsuitable(`it does not offer ${ALGORITHM}`)
    const arn = meta.Arn

    const got = await call('GetPublicKey', async () => await client.send(new GetPublicKeyCommand({ KeyId: arn })))
    if (got.KeyId !== arn) throw unsuitable(`GetPublicKey answered for ${String(got.KeyId)}, DescribeKey for ${arn}`)
    if (got.KeySpec !== KEY_SPEC || got.KeyUsage !== 'SIGN_VERIFY') throw unsuitable(`GetPublicKey says ${String(got.KeySpec)} ${String(got.KeyUsage)}`)
    let publicKey: KeyObject
    try {
      publicKey = createPublicKey({ key: Buffer.from(got.PublicKey ?? new Uint8Array()), format: 'der', type: 'spki' })
    } catch (err) {
      throw new PixProxyError(Errors.KMS_KEY_UNSUITABLE, [keyId, `its public key is not a DER SubjectPublicKeyInfo: ${(err as Error).message}`], { cause: err })
    }
    if (publicKey.asymmetricKeyType !== 'rsa' || publicKey.asymmetricKeyDetails?.modulusLength !== 2048) {
      throw unsuitable(`its public key is ${String(publicKey.asymmetricKeyType)}-${String(publicKey.asymmetricKeyDetails?.modulusLength)}, not RSA-2048`)
    }
    if (!certificateMatchesKey(certificate, publicKey)) {
      throw new PixProxyError(Errors.KMS_KEY_MISMATCH, [arn, `${certificate.subjectString} (serial ${certificate.serialDecimal})`])
    }
    const signer = new KmsSigner(client, arn, publicKey, now ?? Date.now)
    // Proves kms:Sign (DescribeKey and GetPublicKey are separate permissions) and the whole signing path.
    await signer.sign(SELF_TEST)
    return signer
  }

  /**
   * Signs SHA-256(`data`) in KMS; the signature is checked against the public key before it is returned. `signal`
   * abandons the call (kms/guard.ts's deadline): KMS_UNAVAILABLE.
   */
  async sign (data: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const digest = createHash('sha256').update(data).digest()
    let signature: Buffer
    try {
      const command = new SignCommand({ KeyId: this.keyArn, Message: digest, MessageType: 'DIGEST', SigningAlgorithm: ALGORITHM })
      const out = await this.#client.send(command, options.signal === undefined ? {} : { abortSignal: options.signal })
      if (out.Signature === undefined) throw new Error('the answer has no Signature')
      signature = Buffer.from(out.Signature)
    } catch (err) {
      throw kmsError('Sign', this.keyArn, err)
    }
    if (!cryptoVerify('sha256', data, this.publicKey, signature)) {
      throw new PixProxyError(Errors.KMS_KEY_MISMATCH, [this.keyArn, '(the signature KMS returned does not verify with the key checked at start)'])
    }
    return signature
  }

  /**
   * For readiness: a signature still works (the key Enabled, kms:Sign still granted, KMS reachable), proven by
   * signing the self-test bytes and checking the signature, at most once per 10 s: /readyz is polled every few
   * seconds by every task, and a sign costs quota (one per task per 10 s). A throttled probe counts as ready: KMS
   * answered for the key, and its quota is per account and Region, the same for every task, so draining tasks
   * would not help. Resolves to a detail for /readyz.
   * @throws PixProxyError KMS_KEY_DISABLED, KMS_ACCESS_DENIED, KMS_KEY_MISMATCH, KMS_UNAVAILABLE…: the sign's failure.
   */
  async check (): Promise<string> {
    const now = this.#now()
    if (this.#lastCheck === null || now - this.#lastCheck.at >= CHECK_TTL_MS) {
      const result = this.#probe()
      this.#lastCheck = { at: now, result }
      // A failure is not cached: the next probe asks again.
      result.catch(() => { if (this.#lastCheck?.result === result) this.#lastCheck = null })
    }
    return await this.#lastCheck.result
  }

  async #probe (): Promise<string> {
    try {
      await this.sign(SELF_TEST)
    } catch (err) {
      if ((err as { code?: unknown }).code === Errors.KMS_THROTTLED.code) return `signing key ${this.keyArn} answered (throttled: the account's KMS quota is busy)`
      throw err
    }
    return `signing key ${this.keyArn} signs`
  }

  close (): void {
    this.#client.destroy()
  }
}

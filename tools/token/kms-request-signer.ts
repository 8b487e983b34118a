/**
 * A KMS key as a {@link Signer} before it has a certificate: what `pix-proxy csr` needs to have a certificate
 * issued for a key that lives in KMS. The proxy's KmsSigner (src/kms/signer.ts) refuses to open without the
 * certificate it will sign under; this one checks the key itself (Enabled, SIGN_VERIFY, RSA_2048,
 * RSASSA_PKCS1_V1_5_SHA_256) and signs with DIGEST over SHA-256 like the proxy does, so a key that can sign a
 * request here can sign BACEN's messages there. Failures map to the same KMS_* codes (kmsError).
 */
import { createHash, createPublicKey, verify as cryptoVerify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { DescribeKeyCommand, GetPublicKeyCommand, SignCommand } from '@aws-sdk/client-kms'
import type { KMSClient } from '@aws-sdk/client-kms'
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { Signer } from '../../core/signer.ts'
import { kmsError } from '../../src/kms/signer.ts'

const ALGORITHM = 'RSASSA_PKCS1_V1_5_SHA_256'
const KEY_SPEC = 'RSA_2048'

export class KmsRequestSigner implements Signer {
  readonly publicKey: KeyObject
  readonly description: string
  readonly keyArn: string
  readonly #client: KMSClient

  private constructor (client: KMSClient, keyArn: string, publicKey: KeyObject) {
    this.#client = client
    this.keyArn = keyArn
    this.publicKey = publicKey
    const spki = publicKey.export({ type: 'spki', format: 'der' })
    this.description = `aws-kms ${keyArn} spki-sha256:${createHash('sha256').update(spki).digest('hex').slice(0, 16)}`
  }

  /**
   * Resolves `keyId` (key id, key ARN, alias name or alias ARN) with DescribeKey, checks it and reads its public key.
   * @throws PixProxyError KMS_KEY_UNSUITABLE, KMS_KEY_DISABLED, KMS_KEY_NOT_FOUND, KMS_ACCESS_DENIED, KMS_THROTTLED,
   *   KMS_UNAVAILABLE. The client is destroyed when it throws; otherwise close() destroys it.
   */
  static async open (keyId: string, client: KMSClient): Promise<KmsRequestSigner> {
    try {
      const unsuitable = (why: string): PixProxyError => new PixProxyError(Errors.KMS_KEY_UNSUITABLE, [keyId, why])
      const meta = (await call('DescribeKey', keyId, async () => await client.send(new DescribeKeyCommand({ KeyId: keyId })))).KeyMetadata
      if (meta?.Arn === undefined) throw new PixProxyError(Errors.KMS_UNAVAILABLE, ['DescribeKey', keyId, 'the answer has no KeyMetadata.Arn'])
      if (meta.KeyState !== 'Enabled') throw new PixProxyError(Errors.KMS_KEY_DISABLED, [keyId, `KeyState ${String(meta.KeyState)}`])
      if (meta.KeyUsage !== 'SIGN_VERIFY') throw unsuitable(`KeyUsage is ${String(meta.KeyUsage)}, not SIGN_VERIFY`)
      if (meta.KeySpec !== KEY_SPEC) throw unsuitable(`KeySpec is ${String(meta.KeySpec)}, not ${KEY_SPEC} (BACEN's signing profile)`)
      if (!(meta.SigningAlgorithms ?? []).includes(ALGORITHM)) throw unsuitable(`it does not offer ${ALGORITHM}`)
      const arn = meta.Arn
      const got = await call('GetPublicKey', arn, async () => await client.send(new GetPublicKeyCommand({ KeyId: arn })))
      if (got.KeyId !== arn) throw unsuitable(`GetPublicKey answered for ${String(got.KeyId)}, DescribeKey for ${arn}`)
      let publicKey: KeyObject
      try {
        publicKey = createPublicKey({ key: Buffer.from(got.PublicKey ?? new Uint8Array()), format: 'der', type: 'spki' })
      } catch (err) {
        throw new PixProxyError(Errors.KMS_KEY_UNSUITABLE, [keyId, `its public key is not a DER SubjectPublicKeyInfo: ${(err as Error).message}`], { cause: err })
      }
      if (publicKey.asymmetricKeyType !== 'rsa') throw unsuitable(`its public key is ${String(publicKey.asymmetricKeyType)}, not RSA`)
      return new KmsRequestSigner(client, arn, publicKey)
    } catch (err) {
      client.destroy()
      throw err
    }
  }

  /** Signs SHA-256(`data`) in KMS (MessageType DIGEST, the key named by the ARN resolved at open). */
  async sign (data: Uint8Array): Promise<Buffer> {
    const digest = createHash('sha256').update(data).digest()
    const out = await call('Sign', this.keyArn, async () =>
      await this.#client.send(new SignCommand({ KeyId: this.keyArn, Message: digest, MessageType: 'DIGEST', SigningAlgorithm: ALGORITHM })))
    if (out.Signature === undefined) throw new PixProxyError(Errors.KMS_UNAVAILABLE, ['Sign', this.keyArn, 'the answer has no Signature'])
    const signature = Buffer.from(out.Signature)
    if (!cryptoVerify('sha256', data, this.publicKey, signature)) {
      throw new PixProxyError(Errors.KMS_KEY_MISMATCH, [this.keyArn, '(the signature KMS returned does not verify with the key GetPublicKey returned)'])
    }
    return signature
  }

  close (): void {
    this.#client.destroy()
  }
}

async function call<T> (operation: string, keyId: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof PixProxyError) throw err
    throw kmsError(operation, keyId, err)
  }
}

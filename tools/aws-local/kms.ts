/**
 * AWS KMS for the local AWS endpoint (endpoint.ts): the asymmetric signing calls over AWS JSON 1.1 (target prefix
 * `TrentService`, signing name `kms`): Sign, Verify, GetPublicKey and DescribeKey, on keys seeded at start (real
 * key pairs, generated or read from PEM; CreateKey is not implemented). A key is named as AWS names it: key id,
 * key ARN, alias name (`alias/…`) or alias ARN.
 *
 * Behaviour follows the KMS API reference: Message is at most 4096 bytes; with MessageType DIGEST it must be exactly
 * the digest length of the algorithm (ValidationException otherwise); a disabled key answers DisabledException; an
 * algorithm the key does not support, or a key whose KeyUsage is not SIGN_VERIFY, answers InvalidKeyUsageException;
 * Verify of a wrong signature answers KMSInvalidSignatureException (it never returns SignatureValid false).
 *
 * Differences from AWS: RSASSA-PSS and ECDSA are signed only over a RAW message (a DIGEST with them answers
 * UnsupportedOperationException, which AWS never does); key policies and grants are not modelled (AccessDenied is
 * a fault the endpoint injects); ENCRYPT_DECRYPT keys exist only to be refused.
 *
 * Request quota (setRequestQuota, off by default): KMS's per-account, per-Region quota on cryptographic operations
 * with RSA keys (500/s by default) is shared by Sign and Verify; beyond it KMS answers ThrottlingException (HTTP 400)
 * and the call does nothing. Here a token bucket: `perSecond` tokens a second, at most `burst` saved up (default one
 * second's worth, as "N per second" allows); a call that finds no whole token is throttled without consuming one.
 */
import { constants, createPrivateKey, createPublicKey, generateKeyPairSync, privateEncrypt, publicDecrypt, randomUUID, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AwsError, unknownOperation, validation } from './protocol.ts'
import type { ServiceHandler } from './protocol.ts'

export interface LocalKmsKey {
  /** The key id (a UUID); default a random one. */
  readonly keyId?: string
  /** Alias names, each `alias/…` (not `alias/aws/…`, which AWS reserves). */
  readonly aliases?: readonly string[]
  /** PEM private key (RSA or EC P-256/P-384/P-521); absent: a fresh RSA-2048 key. */
  readonly privateKeyPem?: string
  /** Default true; false is KeyState Disabled. */
  readonly enabled?: boolean
  /** Default SIGN_VERIFY. An ENCRYPT_DECRYPT key is refused by every signing call. */
  readonly keyUsage?: 'SIGN_VERIFY' | 'ENCRYPT_DECRYPT'
  readonly description?: string
}

interface Algorithm {
  readonly hash: 'sha256' | 'sha384' | 'sha512'
  readonly kind: 'pkcs1' | 'pss' | 'ecdsa'
}

const ALGORITHMS: Readonly<Record<string, Algorithm>> = {
  RSASSA_PSS_SHA_256: { hash: 'sha256', kind: 'pss' },
  RSASSA_PSS_SHA_384: { hash: 'sha384', kind: 'pss' },
  RSASSA_PSS_SHA_512: { hash: 'sha512', kind: 'pss' },
  RSASSA_PKCS1_V1_5_SHA_256: { hash: 'sha256', kind: 'pkcs1' },
  RSASSA_PKCS1_V1_5_SHA_384: { hash: 'sha384', kind: 'pkcs1' },
  RSASSA_PKCS1_V1_5_SHA_512: { hash: 'sha512', kind: 'pkcs1' },
  ECDSA_SHA_256: { hash: 'sha256', kind: 'ecdsa' },
  ECDSA_SHA_384: { hash: 'sha384', kind: 'ecdsa' },
  ECDSA_SHA_512: { hash: 'sha512', kind: 'ecdsa' }
}

/** A quota on Sign and Verify, as KMS's shared quota for cryptographic operations with RSA keys. */
export interface KmsRequestQuota {
  readonly perSecond: number
  /** Calls that may go at once after a quiet spell. Default perSecond (one second's worth). */
  readonly burst?: number
}

/** KMS's words for a throttled call (AWS KMS API reference, ThrottlingException). */
const THROTTLED_MESSAGE = 'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.'

const DIGEST_BYTES = { sha256: 32, sha384: 48, sha512: 64 } as const

/** The DER DigestInfo prefix of RFC 8017 §9.2 note 1: what EMSA-PKCS1-v1_5 puts before the digest. */
const DIGEST_INFO: Readonly<Record<Algorithm['hash'], Buffer>> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex')
}

const MAX_MESSAGE_BYTES = 4096
const ALIAS_RE = /^alias\/[a-zA-Z0-9/_-]{1,250}$/
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

interface StoredKey {
  readonly id: string
  readonly arn: string
  readonly privateKey: KeyObject
  readonly spki: Buffer
  readonly keySpec: string
  readonly keyUsage: 'SIGN_VERIFY' | 'ENCRYPT_DECRYPT'
  readonly signingAlgorithms: readonly string[]
  readonly description: string
  readonly created: Date
  enabled: boolean
}

function keySpecOf (key: KeyObject): { spec: string, algorithms: string[] } {
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits !== 2048 && bits !== 3072 && bits !== 4096) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`KMS has no RSA-${bits} keys (2048, 3072, 4096)`])
    return { spec: `RSA_${bits}`, algorithms: Object.keys(ALGORITHMS).filter((a) => a.startsWith('RSASSA_')) }
  }
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve
    const spec = { prime256v1: 'ECC_NIST_P256', secp384r1: 'ECC_NIST_P384', secp521r1: 'ECC_NIST_P521' }[curve ?? '']
    if (spec === undefined) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`KMS has no EC keys on curve ${String(curve)}`])
    return { spec, algorithms: [{ ECC_NIST_P256: 'ECDSA_SHA_256', ECC_NIST_P384: 'ECDSA_SHA_384', ECC_NIST_P521: 'ECDSA_SHA_512' }[spec] as string] }
  }
  throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`KMS has no ${String(key.asymmetricKeyType)} signing keys`])
}

/** A base64 blob member of a JSON request (the SDK sends blobs base64-encoded). */
function blob (input: Record<string, unknown>, member: string, min: number, max: number): Buffer {
  const v = input[member]
  if (typeof v !== 'string') throw validation('null', member, 'Member must not be null')
  const b = Buffer.from(v, 'base64')
  if (b.length < min || b.length > max) {
    throw validation('java.nio.HeapByteBuffer', member, `Member must have length between ${min} and ${max}`)
  }
  return b
}

export class KmsHandler implements ServiceHandler {
  readonly targetPrefix = 'TrentService'
  readonly signingName = 'kms'
  readonly #region: string
  readonly #accountId: string
  readonly #now: () => Date
  readonly #keys = new Map<string, StoredKey>()
  /** Alias name → key id. */
  readonly #aliases = new Map<string, string>()
  readonly #monotonicMs: () => number
  #quota: { perSecond: number, burst: number, tokens: number, at: number } | null = null

  constructor (opts: { readonly region: string, readonly accountId: string, readonly now: () => Date, readonly monotonicMs?: () => number }) {
    this.#region = opts.region
    this.#accountId = opts.accountId
    this.#now = opts.now
    this.#monotonicMs = opts.monotonicMs ?? (() => performance.now())
  }

  /** Throttles Sign and Verify beyond `quota` (null: no quota); the bucket starts full. */
  setRequestQuota (quota: KmsRequestQuota | null): void {
    if (quota === null) {
      this.#quota = null
      return
    }
    const burst = quota.burst ?? quota.perSecond
    if (!(quota.perSecond > 0) || !(burst >= 1)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`KMS request quota needs perSecond > 0 and burst >= 1, not ${JSON.stringify(quota)}`])
    this.#quota = { perSecond: quota.perSecond, burst, tokens: burst, at: this.#monotonicMs() }
  }

  /** One token of the quota, or ThrottlingException. */
  #admit (): void {
    const q = this.#quota
    if (q === null) return
    const now = this.#monotonicMs()
    q.tokens = Math.min(q.burst, q.tokens + (now - q.at) * q.perSecond / 1000)
    q.at = now
    if (q.tokens < 1) throw new AwsError('ThrottlingException', THROTTLED_MESSAGE)
    q.tokens -= 1
  }

  /** Seeds a key (generating an RSA-2048 pair when no PEM is given); returns its ARN. */
  putKey (k: LocalKmsKey = {}): string {
    const id = k.keyId ?? randomUUID()
    if (!UUID_RE.test(id)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`KMS key id ${JSON.stringify(id)} is not a UUID`])
    if (this.#keys.has(id)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`KMS key ${id} already exists`])
    for (const a of k.aliases ?? []) {
      if (!ALIAS_RE.test(a) || a.startsWith('alias/aws/')) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`invalid KMS alias ${JSON.stringify(a)}`])
      if (this.#aliases.has(a)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`KMS alias ${a} already exists`])
    }
    let privateKey: KeyObject
    try {
      privateKey = k.privateKeyPem === undefined
        ? generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
        : createPrivateKey(k.privateKeyPem)
    } catch (err) {
      throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`cannot read the KMS key ${id}: ${(err as Error).message}`], { cause: err })
    }
    const { spec, algorithms } = keySpecOf(privateKey)
    const arn = `arn:aws:kms:${this.#region}:${this.#accountId}:key/${id}`
    this.#keys.set(id, {
      id,
      arn,
      privateKey,
      spki: createPublicKey(privateKey).export({ type: 'spki', format: 'der' }),
      keySpec: spec,
      keyUsage: k.keyUsage ?? 'SIGN_VERIFY',
      signingAlgorithms: algorithms,
      description: k.description ?? '',
      created: this.#now(),
      enabled: k.enabled ?? true
    })
    for (const a of k.aliases ?? []) this.#aliases.set(a, id)
    return arn
  }

  /** EnableKey / DisableKey, as a control (the endpoint does not serve those calls). */
  setKeyEnabled (keyId: string, enabled: boolean): void {
    const key = this.#resolve(keyId)
    key.enabled = enabled
  }

  dispatch (target: string, input: Record<string, unknown>): unknown {
    switch (target) {
      case 'TrentService.Sign': this.#admit(); return this.#sign(input)
      case 'TrentService.Verify': this.#admit(); return this.#verify(input)
      case 'TrentService.GetPublicKey': return this.#getPublicKey(input)
      case 'TrentService.DescribeKey': return this.#describeKey(input)
      default: throw unknownOperation(target)
    }
  }

  /** Key id, key ARN, alias name or alias ARN → the key (NotFoundException as AWS words it). */
  #resolve (keyIdInput: unknown): StoredKey {
    if (typeof keyIdInput !== 'string' || keyIdInput.length < 1 || keyIdInput.length > 2048) {
      throw validation(JSON.stringify(keyIdInput ?? null), 'keyId', 'Member must have length between 1 and 2048')
    }
    const arnPrefix = `arn:aws:kms:${this.#region}:${this.#accountId}:`
    let name = keyIdInput
    if (name.startsWith('arn:')) {
      if (!name.startsWith(arnPrefix)) throw new AwsError('NotFoundException', `Invalid arn ${this.#region}`)
      name = name.slice(arnPrefix.length)
      if (name.startsWith('key/')) name = name.slice(4)
    }
    if (name.startsWith('alias/')) {
      const id = this.#aliases.get(name)
      if (id === undefined) throw new AwsError('NotFoundException', `Alias ${arnPrefix}${name} is not found.`)
      return this.#keys.get(id) as StoredKey
    }
    const key = this.#keys.get(name)
    if (key === undefined) {
      if (!UUID_RE.test(name)) throw new AwsError('NotFoundException', `Invalid keyId '${keyIdInput}'`)
      throw new AwsError('NotFoundException', `Key '${arnPrefix}key/${name}' does not exist`)
    }
    return key
  }

  /** The key and the algorithm of a Sign or Verify call, with every check AWS makes before the RSA operation. */
  #signingCall (input: Record<string, unknown>): { key: StoredKey, algorithmName: string, algorithm: Algorithm, message: Buffer, digest: boolean } {
    const algorithmName = input.SigningAlgorithm
    const algorithm = typeof algorithmName === 'string' ? ALGORITHMS[algorithmName] : undefined
    if (algorithm === undefined || typeof algorithmName !== 'string') {
      throw validation(JSON.stringify(algorithmName ?? null), 'signingAlgorithm', `Member must satisfy enum value set: [${Object.keys(ALGORITHMS).join(', ')}]`)
    }
    const messageType = input.MessageType ?? 'RAW'
    if (messageType !== 'RAW' && messageType !== 'DIGEST') {
      throw validation(JSON.stringify(messageType), 'messageType', 'Member must satisfy enum value set: [RAW, DIGEST, EXTERNAL_MU]')
    }
    const message = blob(input, 'Message', 1, MAX_MESSAGE_BYTES)
    const key = this.#resolve(input.KeyId)
    if (!key.enabled) throw new AwsError('DisabledException', `${key.arn} is disabled.`)
    if (key.keyUsage !== 'SIGN_VERIFY') throw new AwsError('InvalidKeyUsageException', `${key.arn} key usage is ${key.keyUsage} which is not valid for ${input.Signature === undefined ? 'Sign' : 'Verify'}.`)
    if (!key.signingAlgorithms.includes(algorithmName)) {
      throw new AwsError('InvalidKeyUsageException', `Algorithm ${algorithmName} is incompatible with key spec ${key.keySpec}.`)
    }
    const digest = messageType === 'DIGEST'
    if (digest && message.length !== DIGEST_BYTES[algorithm.hash]) {
      throw new AwsError('ValidationException', `Digest is invalid length for algorithm ${algorithmName}.`)
    }
    if (digest && algorithm.kind !== 'pkcs1') {
      throw new AwsError('UnsupportedOperationException', `the local endpoint signs ${algorithmName} only over a RAW message`)
    }
    return { key, algorithmName, algorithm, message, digest }
  }

  #sign (input: Record<string, unknown>): unknown {
    const { key, algorithmName, algorithm, message, digest } = this.#signingCall(input)
    return { KeyId: key.arn, Signature: signWith(key.privateKey, algorithm, message, digest).toString('base64'), SigningAlgorithm: algorithmName }
  }

  #verify (input: Record<string, unknown>): unknown {
    const { key, algorithmName, algorithm, message, digest } = this.#signingCall(input)
    const signature = blob(input, 'Signature', 1, 6144)
    if (!verifyWith(createPublicKey(key.privateKey), algorithm, message, digest, signature)) {
      throw new AwsError('KMSInvalidSignatureException', 'The signature is not valid.')
    }
    return { KeyId: key.arn, SignatureValid: true, SigningAlgorithm: algorithmName }
  }

  #getPublicKey (input: Record<string, unknown>): unknown {
    const key = this.#resolve(input.KeyId)
    if (!key.enabled) throw new AwsError('DisabledException', `${key.arn} is disabled.`)
    return {
      KeyId: key.arn,
      PublicKey: key.spki.toString('base64'),
      CustomerMasterKeySpec: key.keySpec,
      KeySpec: key.keySpec,
      KeyUsage: key.keyUsage,
      ...(key.keyUsage === 'SIGN_VERIFY' ? { SigningAlgorithms: [...key.signingAlgorithms] } : { EncryptionAlgorithms: ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'] })
    }
  }

  #describeKey (input: Record<string, unknown>): unknown {
    const key = this.#resolve(input.KeyId)
    return {
      KeyMetadata: {
        AWSAccountId: this.#accountId,
        KeyId: key.id,
        Arn: key.arn,
        CreationDate: key.created.getTime() / 1000,
        Enabled: key.enabled,
        Description: key.description,
        KeyUsage: key.keyUsage,
        KeyState: key.enabled ? 'Enabled' : 'Disabled',
        Origin: 'AWS_KMS',
        KeyManager: 'CUSTOMER',
        CustomerMasterKeySpec: key.keySpec,
        KeySpec: key.keySpec,
        ...(key.keyUsage === 'SIGN_VERIFY' ? { SigningAlgorithms: [...key.signingAlgorithms] } : { EncryptionAlgorithms: ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'] }),
        MultiRegion: false
      }
    }
  }
}

function signWith (privateKey: KeyObject, algorithm: Algorithm, message: Buffer, digest: boolean): Buffer {
  if (digest) {
    // EMSA-PKCS1-v1_5 over a digest the caller computed: DigestInfo || digest, padded with type-1 padding.
    return privateEncrypt({ key: privateKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([DIGEST_INFO[algorithm.hash], message]))
  }
  if (algorithm.kind === 'pss') return cryptoSign(algorithm.hash, message, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: DIGEST_BYTES[algorithm.hash] })
  return cryptoSign(algorithm.hash, message, privateKey)
}

function verifyWith (publicKey: KeyObject, algorithm: Algorithm, message: Buffer, digest: boolean, signature: Buffer): boolean {
  try {
    if (digest) {
      const expected = Buffer.concat([DIGEST_INFO[algorithm.hash], message])
      return publicDecrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature).equals(expected)
    }
    if (algorithm.kind === 'pss') return cryptoVerify(algorithm.hash, message, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: DIGEST_BYTES[algorithm.hash] }, signature)
    return cryptoVerify(algorithm.hash, message, publicKey, signature)
  } catch {
    return false
  }
}

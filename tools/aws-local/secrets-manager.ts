/**
 * Secrets Manager for the local AWS endpoint (endpoint.ts): GetSecretValue and PutSecretValue over AWS JSON 1.1
 * (target prefix `secretsmanager`), with the secrets and versions it holds. PutSecretValue is how a rotation is
 * played locally (the mTLS key secret, src/upstream/tls-key-secret.ts): the new version becomes AWSCURRENT, the
 * one before it AWSPREVIOUS, as when AWS's rotation or an operator's `aws secretsmanager put-secret-value` does it.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AwsError, unknownOperation, validation } from './protocol.ts'
import type { ServiceHandler } from './protocol.ts'

export interface LocalSecret {
  readonly name: string
  /** Exactly one of `string` (SecretString) and `binary` (SecretBinary). */
  readonly string?: string
  readonly binary?: Uint8Array
}

interface SecretVersion {
  /** The VersionId: the ClientRequestToken of the PutSecretValue that made it (the SDK sends a UUID). */
  id: string
  string: string | null
  binary: Buffer | null
  created: Date
}

interface StoredSecret {
  name: string
  arn: string
  versions: SecretVersion[]
}

export class SecretsManagerHandler implements ServiceHandler {
  readonly targetPrefix = 'secretsmanager'
  readonly signingName = 'secretsmanager'
  readonly #region: string
  readonly #accountId: string
  readonly #now: () => Date
  readonly #secrets = new Map<string, StoredSecret>()

  constructor (opts: { readonly region: string, readonly accountId: string, readonly now: () => Date }) {
    this.#region = opts.region
    this.#accountId = opts.accountId
    this.#now = opts.now
  }

  /** Creates a secret or adds a new AWSCURRENT version; returns its ARN. */
  putSecret (s: LocalSecret): string {
    if ((s.string === undefined) === (s.binary === undefined)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, ['a secret has exactly one of string and binary'])
    return this.#addVersion(s.name, randomUUID(), s.string ?? null, s.binary === undefined ? null : Buffer.from(s.binary)).arn
  }

  #addVersion (name: string, id: string, string: string | null, binary: Buffer | null): StoredSecret {
    let stored = this.#secrets.get(name)
    if (stored === undefined) {
      // AWS appends a dash and six random characters to the name in the ARN.
      const suffix = randomBytes(6).toString('base64').replace(/[^A-Za-z0-9]/g, 'x').slice(0, 6)
      stored = { name, arn: `arn:aws:secretsmanager:${this.#region}:${this.#accountId}:secret:${name}-${suffix}`, versions: [] }
      this.#secrets.set(name, stored)
    }
    stored.versions.push({ id, string, binary, created: this.#now() })
    return stored
  }

  dispatch (target: string, input: Record<string, unknown>): unknown {
    switch (target) {
      case 'secretsmanager.GetSecretValue': return this.#getSecretValue(input)
      case 'secretsmanager.PutSecretValue': return this.#putSecretValue(input)
      default: throw unknownOperation(target)
    }
  }

  /** The secret `SecretId` names (name, full ARN, or the partial ARN without the random suffix). */
  #find (input: Record<string, unknown>): StoredSecret {
    const id = input.SecretId
    if (typeof id !== 'string' || id.length < 1 || id.length > 2048) throw validation(JSON.stringify(id ?? null), 'secretId', 'Member must have length between 1 and 2048')
    let secret = this.#secrets.get(id)
    if (secret === undefined) {
      for (const s of this.#secrets.values()) {
        if (s.arn === id || s.arn.slice(0, -7) === id) secret = s
      }
    }
    if (secret === undefined) throw new AwsError('ResourceNotFoundException', "Secrets Manager can't find the specified secret.")
    return secret
  }

  /**
   * A new AWSCURRENT version of an existing secret (AWS's PutSecretValue does not create secrets). Idempotent by
   * ClientRequestToken as AWS documents it: the same token with the same value is the same version, with another
   * value ResourceExistsException. Custom VersionStages are not modelled: refused rather than ignored.
   */
  #putSecretValue (input: Record<string, unknown>): unknown {
    const secret = this.#find(input)
    const token = input.ClientRequestToken
    if (token !== undefined && (typeof token !== 'string' || token.length < 32 || token.length > 64)) {
      throw validation(JSON.stringify(token), 'clientRequestToken', 'Member must have length between 32 and 64')
    }
    const hasString = typeof input.SecretString === 'string'
    const hasBinary = typeof input.SecretBinary === 'string'
    if (hasString === hasBinary) throw new AwsError('InvalidParameterException', 'You must provide either SecretString or SecretBinary.')
    if (input.VersionStages !== undefined && JSON.stringify(input.VersionStages) !== '["AWSCURRENT"]') {
      throw new AwsError('InvalidParameterException', 'the local endpoint only adds AWSCURRENT versions')
    }
    const string = hasString ? input.SecretString as string : null
    const binary = hasBinary ? Buffer.from(input.SecretBinary as string, 'base64') : null
    if ((string !== null && string.length > 65_536) || (binary !== null && binary.length > 65_536)) {
      throw validation('(secret value)', 'secretString', 'Member must have length less than or equal to 65536')
    }
    const id = (token as string | undefined) ?? randomUUID()
    const existing = secret.versions.find((v) => v.id === id)
    if (existing !== undefined) {
      const same = existing.string === string && (existing.binary === null ? binary === null : binary !== null && existing.binary.equals(binary))
      if (!same) throw new AwsError('ResourceExistsException', `A resource with the ID you requested already exists: version ${id} has another value`)
    } else {
      this.#addVersion(secret.name, id, string, binary)
    }
    const current = secret.versions.length - 1
    const index = secret.versions.findIndex((v) => v.id === id)
    return { ARN: secret.arn, Name: secret.name, VersionId: id, VersionStages: stagesOf(index, current) }
  }

  #getSecretValue (input: Record<string, unknown>): unknown {
    const secret = this.#find(input)
    const current = secret.versions.length - 1
    let index = current
    if (typeof input.VersionId === 'string') {
      index = secret.versions.findIndex((v) => v.id === input.VersionId)
      if (index < 0) throw new AwsError('ResourceNotFoundException', "Secrets Manager can't find the specified secret value for VersionId: " + input.VersionId)
    } else if (typeof input.VersionStage === 'string' && input.VersionStage !== 'AWSCURRENT') {
      if (input.VersionStage !== 'AWSPREVIOUS' || current < 1) throw new AwsError('ResourceNotFoundException', "Secrets Manager can't find the specified secret value for staging label: " + input.VersionStage)
      index = current - 1
    }
    const v = secret.versions[index] as SecretVersion
    return {
      ARN: secret.arn,
      Name: secret.name,
      VersionId: v.id,
      ...(v.string !== null ? { SecretString: v.string } : {}),
      ...(v.binary !== null ? { SecretBinary: v.binary.toString('base64') } : {}),
      VersionStages: stagesOf(index, current),
      CreatedDate: v.created.getTime() / 1000
    }
  }
}

function stagesOf (index: number, current: number): string[] {
  return index === current ? ['AWSCURRENT'] : index === current - 1 ? ['AWSPREVIOUS'] : []
}

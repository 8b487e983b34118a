/**
 * Secrets Manager for the local AWS endpoint (endpoint.ts): GetSecretValue over AWS JSON 1.1 (target prefix
 * `secretsmanager`), with the secrets and versions it holds.
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
    let stored = this.#secrets.get(s.name)
    if (stored === undefined) {
      // AWS appends a dash and six random characters to the name in the ARN.
      const suffix = randomBytes(6).toString('base64').replace(/[^A-Za-z0-9]/g, 'x').slice(0, 6)
      stored = { name: s.name, arn: `arn:aws:secretsmanager:${this.#region}:${this.#accountId}:secret:${s.name}-${suffix}`, versions: [] }
      this.#secrets.set(s.name, stored)
    }
    stored.versions.push({ id: randomUUID(), string: s.string ?? null, binary: s.binary === undefined ? null : Buffer.from(s.binary), created: this.#now() })
    return stored.arn
  }

  dispatch (target: string, input: Record<string, unknown>): unknown {
    switch (target) {
      case 'secretsmanager.GetSecretValue': return this.#getSecretValue(input)
      default: throw unknownOperation(target)
    }
  }

  #getSecretValue (input: Record<string, unknown>): unknown {
    const id = input.SecretId
    if (typeof id !== 'string' || id.length < 1 || id.length > 2048) throw validation(JSON.stringify(id ?? null), 'secretId', 'Member must have length between 1 and 2048')
    let secret = this.#secrets.get(id)
    if (secret === undefined) {
      for (const s of this.#secrets.values()) {
        // Full ARN, or the partial ARN without the random suffix.
        if (s.arn === id || s.arn.slice(0, -7) === id) secret = s
      }
    }
    if (secret === undefined) throw new AwsError('ResourceNotFoundException', "Secrets Manager can't find the specified secret.")
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
      VersionStages: [index === current ? 'AWSCURRENT' : index === current - 1 ? 'AWSPREVIOUS' : ''].filter((s) => s !== ''),
      CreatedDate: v.created.getTime() / 1000
    }
  }
}

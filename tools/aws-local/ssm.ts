/**
 * SSM Parameter Store for the local AWS endpoint (endpoint.ts): GetParameter, GetParameters and
 * GetParametersByPath over AWS JSON 1.1 (target prefix `AmazonSSM`), with the parameters it holds.
 */
import { createHash } from 'node:crypto'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AwsError, unknownOperation, validation } from './protocol.ts'
import type { ServiceHandler } from './protocol.ts'

export type SsmParameterType = 'String' | 'StringList' | 'SecureString'

export interface LocalParameter {
  readonly name: string
  readonly value: string
  readonly type?: SsmParameterType
}

const PARAM_NAME_RE = /^(\/[a-zA-Z0-9_.-]+)+$|^[a-zA-Z0-9_.-]+$/

interface StoredParameter {
  name: string
  type: SsmParameterType
  value: string
  version: number
  modified: Date
}

export class SsmHandler implements ServiceHandler {
  readonly targetPrefix = 'AmazonSSM'
  readonly signingName = 'ssm'
  readonly #region: string
  readonly #accountId: string
  readonly #now: () => Date
  readonly #parameters = new Map<string, StoredParameter>()

  constructor (opts: { readonly region: string, readonly accountId: string, readonly now: () => Date }) {
    this.#region = opts.region
    this.#accountId = opts.accountId
    this.#now = opts.now
  }

  /** Sets (or overwrites, with a new version) a Parameter Store parameter. */
  putParameter (p: LocalParameter): void {
    if (!PARAM_NAME_RE.test(p.name) || /^\/?(aws|ssm)/i.test(p.name)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`invalid parameter name ${JSON.stringify(p.name)}`])
    const old = this.#parameters.get(p.name)
    this.#parameters.set(p.name, { name: p.name, type: p.type ?? 'String', value: p.value, version: (old?.version ?? 0) + 1, modified: this.#now() })
  }

  deleteParameter (name: string): void {
    this.#parameters.delete(name)
  }

  dispatch (target: string, input: Record<string, unknown>): unknown {
    switch (target) {
      case 'AmazonSSM.GetParameter': return this.#getParameter(input)
      case 'AmazonSSM.GetParameters': return this.#getParameters(input)
      case 'AmazonSSM.GetParametersByPath': return this.#getParametersByPath(input)
      default: throw unknownOperation(target)
    }
  }

  #parameterOut (p: StoredParameter, decrypt: boolean): unknown {
    // Without WithDecryption AWS returns the KMS ciphertext of a SecureString; an opaque base64 blob stands in for it.
    const value = p.type === 'SecureString' && !decrypt
      ? 'AQICAH' + createHash('sha256').update(p.name + '\0' + p.value).digest('base64')
      : p.value
    const arnPath = p.name.startsWith('/') ? p.name : '/' + p.name
    return {
      Name: p.name,
      Type: p.type,
      Value: value,
      Version: p.version,
      LastModifiedDate: p.modified.getTime() / 1000,
      ARN: `arn:aws:ssm:${this.#region}:${this.#accountId}:parameter${arnPath}`,
      DataType: 'text'
    }
  }

  #lookupParameter (name: string): StoredParameter | undefined {
    const arnPrefix = `arn:aws:ssm:${this.#region}:${this.#accountId}:parameter`
    let key = name
    if (name.startsWith(arnPrefix)) {
      key = name.slice(arnPrefix.length)
      if (!this.#parameters.has(key)) key = key.slice(1)
    } else if (name.includes(':')) {
      throw new AwsError('ValidationException', `parameter selectors (${name}) are not supported by the local endpoint`)
    }
    return this.#parameters.get(key)
  }

  #getParameter (input: Record<string, unknown>): unknown {
    if (typeof input.Name !== 'string' || input.Name === '') throw validation('null', 'name', 'Member must not be null')
    const p = this.#lookupParameter(input.Name)
    if (p === undefined) throw new AwsError('ParameterNotFound', '')
    return { Parameter: this.#parameterOut(p, input.WithDecryption === true) }
  }

  #getParameters (input: Record<string, unknown>): unknown {
    const names = input.Names
    if (!Array.isArray(names) || names.length < 1 || names.length > 10 || !names.every((n) => typeof n === 'string')) {
      throw validation(JSON.stringify(names ?? null), 'names', 'Member must have length less than or equal to 10 and greater than or equal to 1')
    }
    const found: unknown[] = []
    const invalid: string[] = []
    for (const n of new Set(names as string[])) {
      const p = this.#lookupParameter(n)
      if (p === undefined) invalid.push(n)
      else found.push(this.#parameterOut(p, input.WithDecryption === true))
    }
    return { Parameters: found, InvalidParameters: invalid }
  }

  #getParametersByPath (input: Record<string, unknown>): unknown {
    const path = input.Path
    if (typeof path !== 'string' || path.length > 2048 || !/^\/([a-zA-Z0-9_.-]+\/?)*$/.test(path) || /^\/(aws|ssm)/i.test(path)) {
      throw new AwsError('ValidationException', 'The parameter doesn\'t meet the parameter name requirements. The parameter name must begin with a forward slash "/".')
    }
    if (Array.isArray(input.ParameterFilters) && input.ParameterFilters.length > 0) {
      throw new AwsError('ValidationException', 'ParameterFilters are not supported by the local endpoint')
    }
    const max = input.MaxResults ?? 10
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 10) {
      throw validation(`'${String(max)}'`, 'maxResults', 'Member must have value less than or equal to 10')
    }
    const base = path === '/' ? '/' : path.replace(/\/$/, '') + '/'
    const recursive = input.Recursive === true
    const matches = [...this.#parameters.values()]
      .filter((p) => p.name.startsWith(base) && (recursive || !p.name.slice(base.length).includes('/')))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    let start = 0
    if (input.NextToken !== undefined) {
      // The token names the path and the last parameter returned, so pages stay right when parameters change.
      let tok: { path?: unknown, after?: unknown, recursive?: unknown }
      try {
        tok = JSON.parse(Buffer.from(String(input.NextToken), 'base64url').toString('utf8')) as typeof tok
      } catch {
        throw new AwsError('InvalidNextToken', 'The specified token is not valid.')
      }
      if (tok.path !== base || tok.recursive !== recursive || typeof tok.after !== 'string') throw new AwsError('InvalidNextToken', 'The specified token is not valid.')
      const after = tok.after
      start = matches.findIndex((p) => p.name > after)
      if (start < 0) start = matches.length
    }
    const page = matches.slice(start, start + max)
    const more = start + max < matches.length
    const last = page.at(-1)
    return {
      Parameters: page.map((p) => this.#parameterOut(p, input.WithDecryption === true)),
      ...(more && last !== undefined ? { NextToken: Buffer.from(JSON.stringify({ path: base, recursive, after: last.name })).toString('base64url') } : {})
    }
  }
}

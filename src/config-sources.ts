/**
 * Where configuration comes from in production: SSM Parameter Store (one parameter per setting, named by
 * `ssmParameterName`, e.g. `/pix/proxy/dict-url`) and Secrets Manager (the HSM PIN), merged with the environment
 * into the flat source `loadConfig` validates.
 *
 * Precedence, highest first:
 *   1. the environment: a `PIXPROXY_*` variable that is set wins, even when set to the empty string (leave it
 *      unset to let SSM decide). A task definition or a local run can then override one setting without touching
 *      the parameters shared by every task; `origins` tells the start-up log which source each setting came from,
 *      so an override left behind is visible;
 *   2. SSM parameters under the path;
 *   3. the schema defaults (applied by loadConfig).
 */
import { GetParametersByPathCommand } from '@aws-sdk/client-ssm'
import type { GetParametersByPathCommandOutput, SSMClient } from '@aws-sdk/client-ssm'
import { GetSecretValueCommand } from '@aws-sdk/client-secrets-manager'
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { CONFIG_KEYS, envNameFromParameter, ssmParameterName } from './config.ts'
import { Errors, PixProxyError } from '../core/errors.ts'

export interface ConfigSourcesOptions {
  /** The process environment (the entry point passes process.env). */
  readonly env: Readonly<Record<string, string | undefined>>
  /** Read every parameter under `path` (e.g. `/pix/proxy/`; must start and end with `/`). */
  readonly ssm?: { readonly client: SSMClient, readonly path: string }
  /** When given and the merged settings name PIXPROXY_HSM_PIN_SECRET_ID, the PIN is fetched (start-up fails fast). */
  readonly secrets?: { readonly client: SecretsManagerClient }
}

export type ConfigOrigin = 'env' | 'ssm'

export interface ConfigSources {
  /** The merged `PIXPROXY_*` settings, for loadConfig. */
  readonly source: Readonly<Record<string, string>>
  /** Where each setting in `source` came from (safe to log: names only). */
  readonly origins: Readonly<Record<string, ConfigOrigin>>
  /** The HSM PIN from Secrets Manager, or null when no secret was named or no secrets client given. Never log it. */
  readonly hsmPin: string | null
}

const PATH_RE = /^\/(?:[a-zA-Z0-9_.-]+\/)*$/
/** A bound on paging: 1,000 pages of 10 is far above the ~50 settings there are; a server looping tokens stops here. */
const MAX_PAGES = 1_000

function describe (err: unknown): string {
  const e = err as { name?: string, message?: string }
  return `${e.name ?? 'Error'}: ${e.message ?? String(err)}`
}

/** Every parameter (name → value) under `path`, all pages, SecureStrings decrypted. */
async function fetchParameters (client: SSMClient, path: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  let token: string | undefined
  for (let page = 0; ; page++) {
    if (page >= MAX_PAGES) throw new PixProxyError(Errors.AWS_SSM_READ, [path, `paging did not end after ${MAX_PAGES} pages`])
    let res: GetParametersByPathCommandOutput
    try {
      res = await client.send(new GetParametersByPathCommand({
        // Without the trailing slash: the form every SSM API version accepts for a hierarchy.
        Path: path === '/' ? '/' : path.slice(0, -1),
        Recursive: true,
        WithDecryption: true,
        MaxResults: 10,
        ...(token === undefined ? {} : { NextToken: token })
      }))
    } catch (err) {
      throw new PixProxyError(Errors.AWS_SSM_READ, [path, describe(err)], { cause: err })
    }
    for (const p of res.Parameters ?? []) {
      if (p.Name !== undefined && p.Value !== undefined) out.set(p.Name, p.Value)
    }
    // A page may be short or even empty while more follow: only a missing token ends the listing.
    if (res.NextToken === undefined || res.NextToken === '') return out
    token = res.NextToken
  }
}

/**
 * Merges the environment with the SSM parameters under `ssm.path` (see the precedence above) and, when asked,
 * fetches the HSM PIN. Recursive: a parameter in a sub-path is refused like any other unknown name, because
 * nothing reads it and an SRE who put it there expects it to matter.
 * @throws PixProxyError AWS_SSM_PATH_INVALID, AWS_SSM_READ (the SDK error as cause), AWS_SSM_UNKNOWN_PARAMETER
 *   listing every parameter that is not a setting (with the canonical name when it looks like a misspelling of
 *   one), and fetchPin's errors.
 */
export async function loadConfigSources (opts: ConfigSourcesOptions): Promise<ConfigSources> {
  const source: Record<string, string> = {}
  const origins: Record<string, ConfigOrigin> = {}
  for (const [k, v] of Object.entries(opts.env)) {
    if (k.startsWith('PIXPROXY_') && v !== undefined) {
      source[k] = v
      origins[k] = 'env'
    }
  }

  if (opts.ssm !== undefined) {
    const { client, path } = opts.ssm
    if (!PATH_RE.test(path)) throw new PixProxyError(Errors.AWS_SSM_PATH_INVALID, [JSON.stringify(path), 'it must start and end with / (e.g. /pix/proxy/)'])
    const params = await fetchParameters(client, path)
    const unknown: string[] = []
    for (const [name, value] of params) {
      const key = envNameFromParameter(name, path)
      // envNameFromParameter is lenient about case and _ versus -; only the canonical name is accepted, so that
      // two spellings of one setting cannot both exist with different values.
      if (key === undefined || ssmParameterName(key, path) !== name) {
        unknown.push(key === undefined ? name : `${name} (did you mean ${ssmParameterName(key, path)}?)`)
        continue
      }
      if (origins[key] === 'env') continue
      source[key] = value
      origins[key] = 'ssm'
    }
    if (unknown.length > 0) {
      const known = CONFIG_KEYS.slice(0, 3).map((k) => ssmParameterName(k, path)).join(', ')
      throw new PixProxyError(Errors.AWS_SSM_UNKNOWN_PARAMETER, [path, `${unknown.sort().join(', ')}; settings are named like ${known}, … (docs/configuration.md)`])
    }
  }

  let hsmPin: string | null = null
  const secretId = source.PIXPROXY_HSM_PIN_SECRET_ID
  if (opts.secrets !== undefined && secretId !== undefined && secretId !== '') hsmPin = await fetchPin(secretId, opts.secrets.client)
  return { source, origins, hsmPin }
}

/** A secret's current (AWSCURRENT) string value and the version it is. Never log `value`. */
export interface SecretString {
  readonly value: string
  readonly versionId: string
}

/**
 * Reads a secret's SecretString (AWSCURRENT) with its VersionId, for the HSM PIN and the mTLS key secret
 * (upstream/tls-key-secret.ts).
 * @throws PixProxyError AWS_SECRET_NOT_FOUND, AWS_SECRET_READ (access denied, throttled, unreachable: the SDK
 *   error as cause), AWS_SECRET_UNUSABLE when the secret is binary.
 */
export async function fetchSecretString (secretId: string, client: SecretsManagerClient, what: string): Promise<SecretString> {
  let res
  try {
    res = await client.send(new GetSecretValueCommand({ SecretId: secretId }))
  } catch (err) {
    if ((err as { name?: string }).name === 'ResourceNotFoundException') throw new PixProxyError(Errors.AWS_SECRET_NOT_FOUND, [secretId], { cause: err })
    throw new PixProxyError(Errors.AWS_SECRET_READ, [secretId, describe(err)], { cause: err })
  }
  if (res.SecretString === undefined) {
    const why = res.SecretBinary !== undefined ? `it is a binary secret (SecretBinary); store ${what} as a string` : 'it has no SecretString'
    throw new PixProxyError(Errors.AWS_SECRET_UNUSABLE, [secretId, why])
  }
  // Every version has an id in AWS; a missing one (a stand-in endpoint) still gives a stable value to compare.
  return { value: res.SecretString, versionId: res.VersionId ?? '' }
}

/**
 * Reads the HSM PIN from Secrets Manager: the secret's SecretString (AWSCURRENT), one trailing newline dropped as
 * for PIN files (`aws secretsmanager create-secret --secret-string file://pin` keeps the file's newline).
 * @throws PixProxyError AWS_SECRET_NOT_FOUND, AWS_SECRET_READ (access denied, throttled, unreachable: the SDK
 *   error as cause), AWS_SECRET_UNUSABLE when the secret is binary or empty.
 */
export async function fetchPin (secretId: string, client: SecretsManagerClient): Promise<string> {
  const pin = (await fetchSecretString(secretId, client, 'the PIN')).value.replace(/\r?\n$/, '')
  if (pin.trim() === '') throw new PixProxyError(Errors.AWS_SECRET_UNUSABLE, [secretId, 'it is empty'])
  return pin
}

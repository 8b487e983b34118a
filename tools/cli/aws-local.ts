/**
 * `pix-proxy aws-local`: the local stand-in for the AWS services pix-proxy calls (Firehose, Secrets Manager, KMS,
 * SSM Parameter Store; tools/aws-local/endpoint.ts) as a process of its own, for docker-compose.yml and manual runs.
 * Point the SDK at it with `AWS_ENDPOINT_URL=http://host:port` (and any AWS_REGION and credentials). It prints one
 * JSON line (its URL, data directory, streams, parameter and secret names; never their values) and serves until
 * SIGINT/SIGTERM.
 *
 * --dir DIR writes every delivered Firehose record under DIR in the delivery stream's S3 layout
 * (`log/<system>/year=/month=/day=/hour=/`, JSON lines), which `pix-proxy audit query --dir DIR` reads.
 *
 * --seed FILE sets parameters and secrets from a JSON file, so the proxy loads its configuration from the local SSM
 * as it does in AWS:
 *   { "parameters": [{ "name": "/pix/proxy/ispb", "value": "99999004" },
 *                    { "name": "/pix/proxy/tls-cert-file", "valueFile": "pki/pix-tls.crt", "type": "String" }],
 *     "secrets": [{ "name": "pix/proxy/hsm-pin", "stringFile": "pki/user.pin" }] }
 * `valueFile` / `stringFile` read the value from a file when the endpoint starts (relative paths from the seed
 * file's directory): certificates and a PIN generated at run time, never written into the seed. --parameter
 * NAME=VALUE (repeatable) adds or overrides one parameter.
 *
 * The seed's "kmsKeys" are KMS signing keys: { "keyId": "<uuid>", "aliases": ["alias/pix-proxy-signing"],
 * "privateKeyFile": "pki/kms-signing.key", "enabled": true }, every member optional; without privateKeyFile a fresh
 * RSA-2048 key is generated at each start (its public key through GetPublicKey). The JSON line lists their ARNs and
 * aliases.
 *
 * --credentials-from-env verifies every call's SigV4 signature against AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of
 * this process (give the clients the same pair); without it only the presence and shape of a signature are checked.
 */
import { dirname, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { DEFAULT_DELIVERY_STREAMS, startLocalAwsEndpoint } from '../aws-local/endpoint.ts'
import type { LocalKmsKey, LocalParameter, LocalSecret, SsmParameterType } from '../aws-local/endpoint.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { readInputFile, usageError } from '../../src/cli/io.ts'

export const AWS_LOCAL_USAGE = `usage: pix-proxy aws-local [--port 4566] [--host 127.0.0.1] [--region us-east-1] [--dir DIR] [--seed FILE]
                           [--parameter NAME=VALUE]... [--credentials-from-env] [--retain 10000]`

/** Records and calls kept in memory per stream: the process runs as long as the stack does, DIR keeps everything. */
const DEFAULT_RETAIN = 10_000
const PARAMETER_TYPES: readonly SsmParameterType[] = ['String', 'StringList', 'SecureString']

export interface AwsLocalSeed {
  readonly parameters: LocalParameter[]
  readonly secrets: LocalSecret[]
  readonly kmsKeys: LocalKmsKey[]
}

function seedError (file: string, why: string): PixProxyError {
  return new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`seed ${file}: ${why}`])
}

function entries (data: Record<string, unknown>, key: string, file: string): Array<Record<string, unknown>> {
  const list = data[key] ?? []
  if (!Array.isArray(list) || !list.every((e) => e !== null && typeof e === 'object' && !Array.isArray(e))) {
    throw seedError(file, `"${key}" must be an array of objects`)
  }
  return list as Array<Record<string, unknown>>
}

/** Exactly one of the inline value and the file holding it; a file is read now, relative to the seed's directory. */
async function valueOf (e: Record<string, unknown>, inline: string, fromFile: string, base: string, file: string): Promise<string> {
  const name = String(e.name)
  const v = e[inline]
  const f = e[fromFile]
  if ((v === undefined) === (f === undefined)) throw seedError(file, `${name} needs exactly one of "${inline}" and "${fromFile}"`)
  if (v !== undefined) {
    if (typeof v !== 'string') throw seedError(file, `${name}: "${inline}" must be a string`)
    return v
  }
  if (typeof f !== 'string' || f === '') throw seedError(file, `${name}: "${fromFile}" must be a path`)
  return (await readInputFile(resolve(base, f))).toString('utf8')
}

/**
 * Reads a seed file (the format above).
 * @throws PixProxyError FILE_READ for the seed or a file it names, AWS_LOCAL_ENDPOINT for a malformed seed.
 */
export async function readAwsLocalSeed (file: string): Promise<AwsLocalSeed> {
  const text = (await readInputFile(file)).toString('utf8')
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`seed ${file} is not JSON: ${(err as Error).message}`], { cause: err })
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw seedError(file, 'must be a JSON object')
  const unknown = Object.keys(data).filter((k) => k !== 'parameters' && k !== 'secrets' && k !== 'kmsKeys')
  if (unknown.length > 0) throw seedError(file, `unknown keys ${unknown.join(', ')} (parameters, secrets, kmsKeys)`)
  const base = dirname(resolve(file))
  const parameters: LocalParameter[] = []
  for (const e of entries(data as Record<string, unknown>, 'parameters', file)) {
    if (typeof e.name !== 'string') throw seedError(file, 'every parameter needs a "name"')
    const type = e.type ?? 'String'
    if (!PARAMETER_TYPES.includes(type as SsmParameterType)) throw seedError(file, `${e.name}: "type" must be one of ${PARAMETER_TYPES.join(', ')}`)
    parameters.push({ name: e.name, value: await valueOf(e, 'value', 'valueFile', base, file), type: type as SsmParameterType })
  }
  const secrets: LocalSecret[] = []
  for (const e of entries(data as Record<string, unknown>, 'secrets', file)) {
    if (typeof e.name !== 'string') throw seedError(file, 'every secret needs a "name"')
    secrets.push({ name: e.name, string: await valueOf(e, 'string', 'stringFile', base, file) })
  }
  const kmsKeys: LocalKmsKey[] = []
  for (const [i, e] of entries(data as Record<string, unknown>, 'kmsKeys', file).entries()) {
    const what = `kmsKeys[${i}]`
    const extra = Object.keys(e).filter((k) => !['keyId', 'aliases', 'privateKeyFile', 'enabled', 'description'].includes(k))
    if (extra.length > 0) throw seedError(file, `${what}: unknown keys ${extra.join(', ')} (keyId, aliases, privateKeyFile, enabled, description)`)
    if (e.keyId !== undefined && typeof e.keyId !== 'string') throw seedError(file, `${what}: "keyId" must be a string`)
    if (e.aliases !== undefined && !(Array.isArray(e.aliases) && e.aliases.every((a) => typeof a === 'string'))) throw seedError(file, `${what}: "aliases" must be an array of strings`)
    if (e.privateKeyFile !== undefined && (typeof e.privateKeyFile !== 'string' || e.privateKeyFile === '')) throw seedError(file, `${what}: "privateKeyFile" must be a path`)
    if (e.enabled !== undefined && typeof e.enabled !== 'boolean') throw seedError(file, `${what}: "enabled" must be true or false`)
    if (e.description !== undefined && typeof e.description !== 'string') throw seedError(file, `${what}: "description" must be a string`)
    kmsKeys.push({
      ...(e.keyId === undefined ? {} : { keyId: e.keyId }),
      ...(e.aliases === undefined ? {} : { aliases: e.aliases as string[] }),
      ...(e.privateKeyFile === undefined ? {} : { privateKeyPem: (await readInputFile(resolve(base, e.privateKeyFile))).toString('utf8') }),
      ...(e.enabled === undefined ? {} : { enabled: e.enabled }),
      ...(e.description === undefined ? {} : { description: e.description })
    })
  }
  return { parameters, secrets, kmsKeys }
}

function intOption (name: string, value: string | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n > max) throw usageError(`--${name} must be an integer from 0 to ${max}, got ${value}`)
  return n
}

/**
 * Runs until SIGINT/SIGTERM or until `opts.signal` aborts (tests). Exit code 0 after a clean shutdown.
 * @throws PixProxyError USAGE, FILE_READ, AWS_LOCAL_ENDPOINT (a bad seed, a port already in use).
 */
export async function awsLocalCommand (argv: string[], io: CliIo, opts: { signal?: AbortSignal } = {}): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      region: { type: 'string', default: 'us-east-1' },
      dir: { type: 'string' },
      seed: { type: 'string' },
      parameter: { type: 'string', multiple: true },
      'credentials-from-env': { type: 'boolean', default: false },
      retain: { type: 'string' }
    },
    strict: true
  })
  const port = intOption('port', values.port, 4566, 65535)
  const retain = intOption('retain', values.retain, DEFAULT_RETAIN, Number.MAX_SAFE_INTEGER)
  const seed: AwsLocalSeed = values.seed === undefined ? { parameters: [], secrets: [], kmsKeys: [] } : await readAwsLocalSeed(values.seed)
  const parameters = new Map(seed.parameters.map((p) => [p.name, p]))
  for (const kv of values.parameter ?? []) {
    const eq = kv.indexOf('=')
    if (eq < 1) throw usageError(`--parameter takes NAME=VALUE, got ${JSON.stringify(kv)}`)
    parameters.set(kv.slice(0, eq), { name: kv.slice(0, eq), value: kv.slice(eq + 1) })
  }
  let credentials: Record<string, string> | undefined
  if (values['credentials-from-env']) {
    const id = io.env.AWS_ACCESS_KEY_ID
    const secret = io.env.AWS_SECRET_ACCESS_KEY
    if (id === undefined || id === '' || secret === undefined || secret === '') {
      throw usageError('--credentials-from-env needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment')
    }
    credentials = { [id]: secret }
  }
  const dataDir = values.dir === undefined ? undefined : resolve(values.dir)

  const endpoint = await startLocalAwsEndpoint({
    host: values.host,
    port,
    region: values.region,
    retain,
    parameters: [...parameters.values()],
    secrets: seed.secrets,
    ...(dataDir === undefined ? {} : { dataDir }),
    ...(credentials === undefined ? {} : { credentials })
  })
  let kmsKeys: Array<{ arn: string, aliases: readonly string[] }>
  try {
    kmsKeys = seed.kmsKeys.map((k) => ({ arn: endpoint.putKmsKey(k), aliases: k.aliases ?? [] }))
  } catch (err) {
    await endpoint.close()
    throw err
  }
  io.stdout.write(JSON.stringify({
    url: endpoint.url,
    host: values.host,
    port: endpoint.port,
    region: endpoint.region,
    dataDir: dataDir ?? null,
    deliveryStreams: Object.keys(DEFAULT_DELIVERY_STREAMS),
    parameters: [...parameters.keys()].sort(),
    secrets: seed.secrets.map((s) => s.name).sort(),
    kmsKeys,
    signatures: credentials === undefined ? 'shape' : 'verified'
  }) + '\n')

  await new Promise<void>((resolveStop) => {
    const stop = (): void => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      opts.signal?.removeEventListener('abort', stop)
      resolveStop()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    if (opts.signal?.aborted === true) stop()
    else opts.signal?.addEventListener('abort', stop)
  })
  io.stderr.write('[aws-local] shutting down\n')
  await endpoint.close()
  return 0
}

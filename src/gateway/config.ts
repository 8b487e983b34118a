/**
 * The gateway's configuration (`pix-proxy gateway`): one schema, validated once at start-up, apart from the proxy's
 * (src/config.ts) because the gateway is another entry point with other duties. Nothing else in src/gateway reads
 * process.env. Settings are `PIXGW_*`; the HSM that holds the server key is named by the proxy's own
 * `PIXPROXY_HSM_MODULE_PATH`, `PIXPROXY_HSM_TOKEN_LABEL` and `PIXPROXY_HSM_PIN_FILE` or `PIXPROXY_HSM_PIN_SECRET_ID`,
 * so one task definition describes one HSM for both modes. The names are those the gateway's Terraform sets
 * (test/infra/terraform.test.ts runs this loader on the task definition's environment and secrets).
 */
import { Type } from '@sinclair/typebox'
import type { Static, TInteger, TString } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { integerSettingProblems } from '../config.ts'
import { parseRoutes } from './routes.ts'
import { parseSourceLocation } from './sources.ts'
import type { RoutePattern } from './routes.ts'

const Str = (description: string, extra: object = {}): TString => Type.String({ description, ...extra })
const Int = (description: string, min: number, max: number, def: number): TInteger =>
  Type.Integer({ description, minimum: min, maximum: max, default: def })

/** Flat, as the environment holds it (docs/gateway.md's settings table lists it; test/gateway/config.test.ts checks). */
export const GatewayConfigSchema = Type.Object({
  PIXGW_LISTEN_HOST: Str('Address the gateway listens on for Open Finance clients (mutual TLS); the image sets 0.0.0.0 behind the NLB', { default: '127.0.0.1' }),
  PIXGW_LISTEN_PORT: Int('Port of the mutual-TLS listener', 0, 65535, 8443),
  PIXGW_OPS_LISTEN_HOST: Str('Address of the plain-HTTP operations listener (GET /healthz, /readyz, /metrics only)', { default: '127.0.0.1' }),
  PIXGW_OPS_LISTEN_PORT: Int('Port of the operations listener (the NLB target group\'s HTTP health check)', 0, 65535, 8081),
  PIXGW_LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { description: 'pino log level', default: 'info' }),

  PIXGW_SERVER_CERT_FILE: Str('PEM server certificate presented to clients (chain allowed, leaf first): a path, or the PEM text itself (an ECS secret from SSM)'),
  PIXGW_SERVER_KEY_LABEL: Type.Optional(Str('CKA_LABEL of the server key in the HSM, used through the libp11 engine (module, token and PIN from PIXPROXY_HSM_MODULE_PATH, PIXPROXY_HSM_TOKEN_LABEL, PIXPROXY_HSM_PIN_FILE or PIXPROXY_HSM_PIN_SECRET_ID)')),
  PIXGW_SERVER_KEY_FILE: Type.Optional(Str('PEM server key instead of the HSM (tests, development): a path, or the PEM text itself')),
  PIXPROXY_HSM_MODULE_PATH: Type.Optional(Str('PKCS#11 module holding the server key (also the proxy\'s setting)')),
  PIXPROXY_HSM_TOKEN_LABEL: Type.Optional(Str('Label of the PKCS#11 token holding the server key')),
  PIXPROXY_HSM_PIN_FILE: Type.Optional(Str('File holding the HSM user PIN (the engine reads it itself: pin-source)')),
  PIXPROXY_HSM_PIN_SECRET_ID: Type.Optional(Str('Secrets Manager secret (name or ARN) holding the HSM user PIN instead of a file: read at start-up into a private 0600 file for the engine, removed at exit')),

  PIXGW_TRUSTSTORE: Str('PEM bundle of the client CAs trusted (ICP-Brasil roots and intermediates): a path, or an S3 object as s3://bucket/key (read with a conditional GET at every reload)'),
  PIXGW_CRLS: Str('Comma-separated CRLs (PEM or DER) of every CA in the truststore, each a path or s3://bucket/key; every client chain must be covered', { default: '' }),
  PIXGW_S3_FORCE_PATH_STYLE: Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'Address S3 path-style (bucket in the path): for a local S3 stand-in reached through AWS_ENDPOINT_URL; AWS itself is addressed virtual-hosted style', default: 'false' }),
  PIXGW_CRL_STALE_POLICY: Type.Union([Type.Literal('fail-closed'), Type.Literal('fail-open')], { description: 'What a CRL past its nextUpdate does: fail-closed refuses every client that CRL covers; fail-open accepts them with a warning (a certificate the stale CRL lists stays refused)', default: 'fail-closed' }),
  PIXGW_RELOAD_INTERVAL_MS: Int('How often the truststore and CRLs are re-read (also on SIGHUP, and when a CRL reaches its nextUpdate); 0 = only on SIGHUP and at nextUpdate', 0, 86_400_000, 300_000),

  PIXGW_MAX_CONNECTION_AGE_MS: Int('Longest life of a client connection: it is then closed after its request in flight (each connection at a random point of the last tenth, so that connections opened together do not all reconnect together); 0 = no limit', 0, 604_800_000, 3_600_000),

  PIXGW_BACKEND_URL: Str('Origin the accepted requests are forwarded to (a private API Gateway through its VPC endpoint)', { pattern: '^https?://[^/?#]+/?$' }),
  PIXGW_BACKEND_CA_FILE: Type.Optional(Str('PEM CA bundle trusted for the backend\'s TLS (unset: the system roots)')),
  PIXGW_BACKEND_CONNECTIONS: Int('Keep-alive connections to the backend', 1, 1024, 64),
  PIXGW_BACKEND_CONNECT_TIMEOUT_MS: Int('TCP + TLS connect timeout to the backend', 100, 60_000, 5_000),
  PIXGW_BACKEND_TIMEOUT_MS: Int('Time to the backend\'s response headers, and between body chunks', 100, 300_000, 30_000),
  PIXGW_CLIENT_CERT_HEADER: Str('Header carrying the client certificate (PEM, URL-encoded) to the backend', { default: 'x-ssl-client-cert', pattern: '^[a-z0-9-]+$' }),
  PIXGW_ROUTES: Str('Allowlist of METHOD /path patterns forwarded, comma-separated; * at the end of a path matches any rest (e.g. "GET /open-banking/*,POST /open-banking/payments/v4/*")'),
  PIXGW_MAX_BODY_BYTES: Int('Largest request body accepted', 0, 64 * 1024 * 1024, 1024 * 1024),
  PIXGW_SHUTDOWN_TIMEOUT_MS: Int('Graceful shutdown deadline after SIGTERM', 0, 300_000, 25_000),
  PIXGW_AUDIT_FIREHOSE_STREAM: Str('Firehose delivery stream of the gateway\'s audit rows (PIXGW_AUDIT_SINK=firehose)', { default: 'pix-proxy-audit-gateway' }),
  // The audit trail's settings, as the proxy's PIXPROXY_AUDIT_* ones (docs/audit.md), for the gateway's own spool.
  PIXGW_AUDIT_SINK: Type.Union([Type.Literal('parquet'), Type.Literal('firehose')], { description: 'Where the gateway\'s audit rows are shipped: local Parquet (log/gateway/ under PIXGW_AUDIT_PARQUET_DIR, queried with pix-proxy audit) or Firehose (PIXGW_AUDIT_FIREHOSE_STREAM)', default: 'parquet' }),
  PIXGW_AUDIT_SPOOL_DIR: Str('Write-ahead spool of the gateway\'s audit rows (its own directory: never the proxy\'s PIXPROXY_AUDIT_SPOOL_DIR; an EFS mount in ECS)', { default: '.local/audit/gateway-spool' }),
  PIXGW_AUDIT_SPOOL_SHARED: Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'The spool directory is shared by several gateway processes (one EFS file system for every ECS task): each claims a slot-NNN subdirectory of its own and adopts the slots of processes that died, so rows a dead task made durable are shipped by another', default: 'false' }),
  PIXGW_AUDIT_SPOOL_MAX_BYTES: Int('Spool size at which new calls are refused (503 PIXPROXY_ERR_AUDIT_SPOOL_FULL) rather than forwarded unaudited', 1_048_576, 1_099_511_627_776, 1024 * 1024 * 1024),
  PIXGW_AUDIT_PARQUET_DIR: Str('Root of the local Parquet audit store (the proxy\'s PIXPROXY_AUDIT_PARQUET_DIR may be the same: the gateway writes log/gateway/)', { default: '.local/audit/lake' }),
  PIXGW_AUDIT_FLUSH_MS: Int('Longest time a completed audit row waits in the spool before it is shipped', 10, 600_000, 1_000)
}, { additionalProperties: false })

type FlatGatewayConfig = Static<typeof GatewayConfigSchema>

/** The validated configuration the gateway uses. */
export interface GatewayConfig {
  readonly listen: { readonly host: string, readonly port: number }
  readonly ops: { readonly host: string, readonly port: number }
  readonly logLevel: string
  readonly serverCertFile: string
  /**
   * Exactly one of the two: the HSM (label, module, token, and the PIN as a file or a Secrets Manager secret: exactly
   * one of pinFile and pinSecretId) or a PEM key (a path or the PEM text).
   */
  readonly serverKey: GatewayHsmKey | { readonly kind: 'file', readonly file: string }
  /** A path or an s3:// URI (sources.ts). */
  readonly truststoreFile: string
  /** Paths or s3:// URIs. */
  readonly crlFiles: readonly string[]
  readonly s3ForcePathStyle: boolean
  readonly crlStalePolicy: 'fail-closed' | 'fail-open'
  readonly reloadIntervalMs: number
  /** 0 = no limit. */
  readonly maxConnectionAgeMs: number
  readonly backend: { readonly url: string, readonly caFile: string | null, readonly connections: number, readonly connectTimeoutMs: number, readonly timeoutMs: number }
  readonly clientCertHeader: string
  readonly routes: readonly RoutePattern[]
  readonly maxBodyBytes: number
  readonly shutdownTimeoutMs: number
  readonly auditFirehoseStream: string
  /** The gateway's audit trail (src/audit/ with system gateway); the stream above is its Firehose stream. */
  readonly audit: { readonly sink: 'parquet' | 'firehose', readonly spoolDir: string, readonly spoolShared: boolean, readonly spoolMaxBytes: number, readonly parquetDir: string, readonly flushMs: number }
}

/** The server key in the HSM. The engine reads the PIN from a file only: a secret is copied to one at start (pin.ts). */
export interface GatewayHsmKey {
  readonly kind: 'hsm'
  readonly label: string
  readonly modulePath: string
  readonly tokenLabel: string
  readonly pinFile: string | null
  readonly pinSecretId: string | null
}

const KEYS: ReadonlySet<string> = new Set(Object.keys(GatewayConfigSchema.properties))

/**
 * Validates `source` (the environment) and builds the typed config. Unknown `PIXGW_*` names are errors; other
 * variables (the proxy's `PIXPROXY_*` ones included) are ignored unless the schema names them.
 * @throws PixProxyError CONFIG_INVALID listing every problem at once.
 */
export function loadGatewayConfig (source: Readonly<Record<string, string | undefined>>): GatewayConfig {
  const problems: string[] = []
  const raw: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(source)) {
    if (v === undefined) continue
    if (KEYS.has(k)) raw[k] = v
    else if (k.startsWith('PIXGW_')) problems.push(`${k} is not a gateway setting`)
  }
  // Before Convert, which would truncate them: such a setting is reported once, with these words, not the schema's.
  const notIntegers = integerSettingProblems(GatewayConfigSchema, raw)
  problems.push(...notIntegers.values())
  const converted = Value.Convert(GatewayConfigSchema, Value.Default(GatewayConfigSchema, raw))
  const reported = new Set<string>(notIntegers.keys())
  for (const e of Value.Errors(GatewayConfigSchema, converted)) {
    const key = e.path.replace(/^\//, '')
    if (reported.has(key)) continue
    reported.add(key)
    problems.push(`${key === '' ? 'configuration' : key}: ${e.message}${key !== '' && raw[key] !== undefined ? ` (got ${JSON.stringify(raw[key])})` : ''}`)
  }
  if (problems.length > 0) throw new PixProxyError(Errors.CONFIG_INVALID, [problems.join('; ')])
  const f = converted as FlatGatewayConfig
  const set = (v: string | undefined): string | null => (v === undefined || v.trim() === '' ? null : v)

  const label = set(f.PIXGW_SERVER_KEY_LABEL)
  const keyFile = set(f.PIXGW_SERVER_KEY_FILE)
  let serverKey: GatewayConfig['serverKey'] | null = null
  if ((label === null) === (keyFile === null)) {
    problems.push('set exactly one of PIXGW_SERVER_KEY_LABEL (HSM) and PIXGW_SERVER_KEY_FILE (PEM file)')
  } else if (label !== null) {
    const modulePath = set(f.PIXPROXY_HSM_MODULE_PATH)
    const tokenLabel = set(f.PIXPROXY_HSM_TOKEN_LABEL)
    const pinFile = set(f.PIXPROXY_HSM_PIN_FILE)
    const pinSecretId = set(f.PIXPROXY_HSM_PIN_SECRET_ID)
    for (const [k, v] of [['PIXPROXY_HSM_MODULE_PATH', modulePath], ['PIXPROXY_HSM_TOKEN_LABEL', tokenLabel]] as const) {
      if (v === null) problems.push(`${k} is required with PIXGW_SERVER_KEY_LABEL`)
    }
    const pinOk = (pinFile === null) !== (pinSecretId === null)
    if (!pinOk) problems.push('set exactly one of PIXPROXY_HSM_PIN_FILE and PIXPROXY_HSM_PIN_SECRET_ID with PIXGW_SERVER_KEY_LABEL')
    if (modulePath !== null && tokenLabel !== null && pinOk) serverKey = { kind: 'hsm', label, modulePath, tokenLabel, pinFile, pinSecretId }
  } else if (keyFile !== null) {
    serverKey = { kind: 'file', file: keyFile }
  }

  let routes: RoutePattern[] = []
  try {
    routes = parseRoutes(f.PIXGW_ROUTES)
  } catch (err) {
    problems.push(`PIXGW_ROUTES: ${(err as Error).message}`)
  }
  if (f.PIXGW_OPS_LISTEN_PORT !== 0 && f.PIXGW_OPS_LISTEN_PORT === f.PIXGW_LISTEN_PORT) {
    problems.push(`PIXGW_OPS_LISTEN_PORT: ${f.PIXGW_OPS_LISTEN_PORT} is the mutual-TLS port; the operations listener needs its own`)
  }
  const crlFiles = f.PIXGW_CRLS.split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (crlFiles.length === 0) {
    // Without a CRL OpenSSL checks no revocation at all: a revoked ICP-Brasil certificate would be accepted.
    problems.push('PIXGW_CRLS: at least one CRL is required (revocation is checked for every client chain)')
  }
  for (const [k, v] of [['PIXGW_TRUSTSTORE', f.PIXGW_TRUSTSTORE], ...crlFiles.map((c) => ['PIXGW_CRLS', c] as const)] as const) {
    try {
      parseSourceLocation(v)
    } catch (err) {
      problems.push(`${k}: ${(err as Error).message}`)
    }
  }
  if (problems.length > 0 || serverKey === null) throw new PixProxyError(Errors.CONFIG_INVALID, [problems.join('; ')])

  return Object.freeze({
    listen: { host: f.PIXGW_LISTEN_HOST, port: f.PIXGW_LISTEN_PORT },
    ops: { host: f.PIXGW_OPS_LISTEN_HOST, port: f.PIXGW_OPS_LISTEN_PORT },
    logLevel: f.PIXGW_LOG_LEVEL,
    serverCertFile: f.PIXGW_SERVER_CERT_FILE,
    serverKey,
    truststoreFile: f.PIXGW_TRUSTSTORE,
    crlFiles: Object.freeze(crlFiles),
    s3ForcePathStyle: f.PIXGW_S3_FORCE_PATH_STYLE === 'true',
    crlStalePolicy: f.PIXGW_CRL_STALE_POLICY,
    reloadIntervalMs: f.PIXGW_RELOAD_INTERVAL_MS,
    maxConnectionAgeMs: f.PIXGW_MAX_CONNECTION_AGE_MS,
    backend: {
      url: f.PIXGW_BACKEND_URL.replace(/\/$/, ''),
      caFile: set(f.PIXGW_BACKEND_CA_FILE),
      connections: f.PIXGW_BACKEND_CONNECTIONS,
      connectTimeoutMs: f.PIXGW_BACKEND_CONNECT_TIMEOUT_MS,
      timeoutMs: f.PIXGW_BACKEND_TIMEOUT_MS
    },
    clientCertHeader: f.PIXGW_CLIENT_CERT_HEADER,
    routes: Object.freeze(routes),
    maxBodyBytes: f.PIXGW_MAX_BODY_BYTES,
    shutdownTimeoutMs: f.PIXGW_SHUTDOWN_TIMEOUT_MS,
    auditFirehoseStream: f.PIXGW_AUDIT_FIREHOSE_STREAM,
    audit: {
      sink: f.PIXGW_AUDIT_SINK,
      spoolDir: f.PIXGW_AUDIT_SPOOL_DIR,
      spoolShared: f.PIXGW_AUDIT_SPOOL_SHARED === 'true',
      spoolMaxBytes: f.PIXGW_AUDIT_SPOOL_MAX_BYTES,
      parquetDir: f.PIXGW_AUDIT_PARQUET_DIR,
      flushMs: f.PIXGW_AUDIT_FLUSH_MS
    }
  })
}

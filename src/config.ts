/**
 * The proxy's configuration: one schema, validated once at start-up. Nothing else in src/ reads process.env.
 *
 * Every setting has an environment variable name (`PIXPROXY_DICT_URL`) and the matching SSM parameter name an SRE
 * sets in production (`/pix/proxy/dict-url`): the rule is mechanical (see `ssmParameterName`), so Terraform, the
 * ECS task definition and docs/configuration.md can be checked against this file. Secrets (the HSM PIN) never sit
 * in the environment in production: `PIXPROXY_HSM_PIN_FILE` points at a file (a mounted secret) or
 * `PIXPROXY_HSM_PIN_SECRET_ID` names a Secrets Manager secret; with the KMS signer, `PIXPROXY_TLS_KEY_SECRET_ID` names
 * the secret holding the mTLS key.
 */
import { Type } from '@sinclair/typebox'
import type { Static, TInteger, TString } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { isIPv4 } from 'node:net'
import { minimumBudget } from './http/budget.ts'
import { Errors, PixProxyError } from '../core/errors.ts'

const Str = (description: string, extra: object = {}): TString => Type.String({ description, ...extra })
const Int = (description: string, min: number, max: number, def: number): TInteger =>
  Type.Integer({ description, minimum: min, maximum: max, default: def })
const Url = (description: string, def: string): TString => Type.String({ description, pattern: '^https://[^/?#]+$', default: def })

/** A KMS key id (a UUID, or mrk-… for a multi-Region key), key ARN, alias name or alias ARN. */
const KMS_KEY_ID_RE = /^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$|^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:)?alias\/[a-zA-Z0-9/_-]{1,250}$/

/** A bind address only this host can reach: 127.0.0.0/8, ::1 (also as ::ffff:127.x) or the name localhost. */
export function isLoopbackHost (host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '')
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h
  return isIPv4(v4) && v4.startsWith('127.')
}

/** Flat, as the environment and SSM hold it. Optional settings have no default. */
export const ConfigSchema = Type.Object({
  PIXPROXY_CONFIG_SSM_PATH: Type.Optional(Str('SSM Parameter Store path the other settings are read from at start-up (e.g. /pix/proxy/); environment variables win over parameters', { pattern: '^/([^/]+/)*$' })),
  PIXPROXY_LISTEN_HOST: Str('Address the proxy listens on for bank core systems', { default: '127.0.0.1' }),
  PIXPROXY_LISTEN_PORT: Int('Port the proxy listens on', 0, 65535, 8080),
  PIXPROXY_OPS_LISTEN_HOST: Str('Address of the operations listener (keep it on loopback: it has no TLS and no client check)', { default: '127.0.0.1' }),
  PIXPROXY_OPS_LISTEN_PORT: Type.Optional(Type.Integer({ description: 'Port of a plain-HTTP operations listener serving only GET /healthz, /readyz and /metrics, for a metrics sidecar or health check that holds no client certificate; unset = none', minimum: 0, maximum: 65535 })),
  PIXPROXY_LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { description: 'pino log level', default: 'info' }),
  PIXPROXY_INSTANCE_ID: Type.Optional(Str('Identifies this instance in logs, metrics and audit rows (default: host name + pid)')),
  PIXPROXY_METRICS_EMF: Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'Write one CloudWatch embedded metric format (EMF) record per completed forwarding request to stdout, as its own JSON line (the awslogs driver carries it to CloudWatch Logs, which extracts the metrics); with the signing key in KMS also the time of every Sign call (KmsSignLatency, up to 100 samples a record, at least every 10 s). Off outside ECS; the Terraform task definition turns it on', default: 'false' }),
  PIXPROXY_METRICS_EMF_NAMESPACE: Str('CloudWatch namespace of the EMF request metrics', { default: 'PixProxy', minLength: 1, maxLength: 255 }),
  PIXPROXY_METRICS_EMF_SERVICE: Str('Value of the service dimension of the EMF request metrics (the ECS service name in Terraform)', { default: 'pix-proxy', minLength: 1, maxLength: 255 }),
  PIXPROXY_ISPB: Str('ISPB of the participant this proxy signs for (AppHdr/Fr, DICT Participant)', { pattern: '^[0-9A-Z]{8}$' }),
  PIXPROXY_INDIRECT_PARTICIPANTS: Str('Comma-separated ISPBs of the indirect participants this proxy also acts for in DICT (PI-RequestingParticipant, the Participant of a request); SPI messages always carry PIXPROXY_ISPB in AppHdr/Fr', { default: '' }),

  PIXPROXY_INBOUND_TLS_CERT_FILE: Type.Optional(Str('PEM certificate for inbound TLS; unset = plain HTTP (local use only); a path, or the PEM text itself')),
  PIXPROXY_INBOUND_TLS_KEY_FILE: Type.Optional(Str('PEM private key for inbound TLS; a path, or the PEM text itself')),
  PIXPROXY_INBOUND_CLIENT_CA_FILE: Type.Optional(Str('PEM CA bundle; when set, callers must present a client certificate it issued; a path, or the PEM text itself')),
  PIXPROXY_INBOUND_CLIENT_ALLOWLIST: Type.Optional(Str('Comma-separated SHA-256 fingerprints (AA:BB:…) of the client certificates allowed to call')),
  PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS: Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'Listen on an address other than loopback without inbound mutual TLS, a client CA and an allowlist: anyone who reaches the port can have messages signed with the participant\'s key. Only where another layer authenticates every caller; logged as a warning at every start', default: 'false' }),

  PIXPROXY_HSM_MODULE_PATH: Type.Optional(Str('PKCS#11 module (SoftHSM: /usr/lib/softhsm/libsofthsm2.so; CloudHSM: /opt/cloudhsm/lib/libcloudhsm_pkcs11.so)')),
  PIXPROXY_HSM_TOKEN_LABEL: Type.Optional(Str('Label of the PKCS#11 token holding the keys')),
  PIXPROXY_HSM_PIN_FILE: Type.Optional(Str('File holding the HSM user PIN (a mounted secret)')),
  PIXPROXY_HSM_PIN_SECRET_ID: Type.Optional(Str('Secrets Manager secret id or ARN holding the HSM user PIN')),
  PIXPROXY_HSM_POOL_SIZE: Int('PKCS#11 sessions in the signing pool (concurrency of HSM signs)', 1, 256, 4),
  PIXPROXY_HSM_ACQUIRE_TIMEOUT_MS: Int('How long a sign waits for a free HSM session', 1, 60_000, 2_000),

  PIXPROXY_SIGNING_KEY_LABEL: Type.Optional(Str('CKA_LABEL of the XMLDSig signing key in the HSM')),
  PIXPROXY_SIGNING_KMS_KEY_ID: Type.Optional(Str('AWS KMS key of the XMLDSig signing key instead of the HSM: key id, key ARN, alias name (alias/…) or alias ARN. An asymmetric RSA_2048 SIGN_VERIFY key whose public key is the signing certificate\'s (checked at start); the task role needs kms:DescribeKey, kms:GetPublicKey and kms:Sign on it. Region and credentials as for the other AWS clients')),
  PIXPROXY_KMS_MAX_SIGNS_PER_SEC: Int('With the signing key in KMS: Sign calls per second this task makes at most, retries included (a tenth of a second\'s worth may go at once). KMS\'s quota for RSA signing is per account and region (500/s by default) and shared by every task: set it to the quota, less what else signs in the account, divided by the most tasks that run (the default suits three tasks under the default quota)', 1, 10_000, 150),
  PIXPROXY_KMS_QUEUE_MAX: Int('With the signing key in KMS: signatures that may wait for their turn under PIXPROXY_KMS_MAX_SIGNS_PER_SEC; beyond them a request gets 503 PIXPROXY_ERR_KMS_QUEUE_FULL (NOT SENT, Retry-After)', 0, 100_000, 300),
  PIXPROXY_KMS_QUEUE_TIMEOUT_MS: Int('With the signing key in KMS: longest wait for a turn under PIXPROXY_KMS_MAX_SIGNS_PER_SEC; a signature whose turn would come later is refused at once with 503 PIXPROXY_ERR_KMS_QUEUE_TIMEOUT (NOT SENT, Retry-After). Also the longest a signature waits in all before its Sign call is made, when every Sign call the task may have in flight (one fewer than the KMS client\'s 64 sockets) is under way: then 503 PIXPROXY_ERR_KMS_CONNECTIONS_BUSY (NOT SENT)', 1, 60_000, 1_000),
  PIXPROXY_KMS_SIGN_DEADLINE_MS: Int('With the signing key in KMS: the whole of one signature (its wait for a turn, every Sign attempt and the pauses between throttled attempts); a Sign still unanswered then is abandoned (503 PIXPROXY_ERR_KMS_UNAVAILABLE, NOT SENT). Each attempt is also bounded by the KMS client\'s 2 s request timeout', 100, 60_000, 3_000),
  PIXPROXY_KMS_MAX_ATTEMPTS: Int('With the signing key in KMS: Sign calls per signature when KMS throttles (ThrottlingException), with exponential backoff and full jitter between them (25 ms doubling, at most 1 s) and only within PIXPROXY_KMS_SIGN_DEADLINE_MS; 1 = no retry. Retrying is safe: nothing has been sent to BACEN before its signature exists', 1, 10, 4),
  PIXPROXY_KMS_BREAKER_FAILURES: Int('With the signing key in KMS: Sign calls in a row that find KMS unavailable (5xx, timeouts, refused connections; not throttles or refusals) before signing is paused for PIXPROXY_KMS_BREAKER_COOLDOWN_MS: meanwhile requests get 503 PIXPROXY_ERR_KMS_CIRCUIT_OPEN at once and /readyz is not ready', 1, 1_000, 5),
  PIXPROXY_KMS_BREAKER_COOLDOWN_MS: Int('With the signing key in KMS: how long signing stays paused after PIXPROXY_KMS_BREAKER_FAILURES; then one request probes KMS, and its answer resumes signing (another failure pauses again)', 100, 600_000, 10_000),
  PIXPROXY_SIGNING_KEY_FILE: Type.Optional(Str('PEM signing key instead of the HSM (tests, tools; never production); a path, or the PEM text itself')),
  PIXPROXY_SIGNING_CERT_FILE: Str('PEM certificate of the signing key (its issuer and serial go into KeyInfo); a path, or the PEM text itself'),

  PIXPROXY_TLS_KEY_LABEL: Type.Optional(Str('CKA_LABEL of the mTLS client key in the HSM (used through the libp11 engine)')),
  PIXPROXY_TLS_KEY_FILE: Type.Optional(Str('PEM mTLS client key instead of the HSM; a path, or the PEM text itself')),
  PIXPROXY_TLS_KEY_SECRET_ID: Type.Optional(Str('AWS Secrets Manager secret (name or ARN) holding the mTLS client key instead of the HSM, as with a KMS signing key: its SecretString is the PEM private key, or JSON {"key": PEM key, "certificate": PEM chain, leaf first} (then leave PIXPROXY_TLS_CERT_FILE unset). Held in memory only, never written to disk; re-read on SIGHUP and every PIXPROXY_TLS_SECRET_REFRESH_MS. The task role needs secretsmanager:GetSecretValue on it (and kms:Decrypt on its KMS key when that is not the AWS managed one)')),
  PIXPROXY_TLS_SECRET_REFRESH_MS: Int('How often the mTLS key secret (PIXPROXY_TLS_KEY_SECRET_ID) is read again; a new VersionId is rotated to (new connections use it, requests in flight finish on theirs), a key that does not match its certificate is refused and the current one kept. 0 = only on SIGHUP; otherwise at least 10000', 0, 86_400_000, 300_000),
  PIXPROXY_TLS_CERT_FILE: Type.Optional(Str('PEM mTLS client certificate (chain allowed); a path, or the PEM text itself. Required unless the key secret (PIXPROXY_TLS_KEY_SECRET_ID) carries the certificate')),
  PIXPROXY_TLS_CA_FILE: Str('PEM CA bundle trusted for BACEN\'s TLS servers (nothing else is trusted); a path, or the PEM text itself'),
  PIXPROXY_TLS_MIN_VERSION: Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], { description: 'Lowest TLS version offered upstream', default: 'TLSv1.2' }),
  PIXPROXY_TLS_SIGALGS: Type.Optional(Str('OpenSSL sigalgs list for the client signature, e.g. RSA+SHA256 for HSMs without PSS')),

  PIXPROXY_DICT_URL: Url('DICT origin', 'https://dict-h.pi.rsfn.net.br:16522'),
  PIXPROXY_SPI_URL: Url('SPI/ICOM origin', 'https://icom-h.pi.rsfn.net.br:16522'),
  PIXPROXY_BACEN_SIGNING_CERTS_FILE: Str('PEM bundle of BACEN signing certificates that responses are verified against; a path, or the PEM text itself'),
  PIXPROXY_INVALID_SIGNATURE_POLICY: Type.Union([Type.Literal('reject'), Type.Literal('flag')], {
    description: 'What an invalid BACEN response signature does: reject (502 to the caller) or flag (pass through with headers)',
    default: 'reject'
  }),

  PIXPROXY_UPSTREAM_CONNECTIONS: Int('Keep-alive connections per upstream origin', 1, 1024, 16),
  PIXPROXY_UPSTREAM_CONNECT_TIMEOUT_MS: Int('TCP + TLS connect timeout to BACEN', 100, 60_000, 5_000),
  PIXPROXY_UPSTREAM_HEADERS_TIMEOUT_MS: Int('Time to the response headers from BACEN (undici keeps timeouts above 1 s on a 0.5 s tick: they fire up to 0.5 s early)', 100, 120_000, 10_000),
  PIXPROXY_UPSTREAM_BODY_TIMEOUT_MS: Int('Time between response body chunks from BACEN (0.5 s granularity above 1 s, as the headers timeout)', 100, 120_000, 10_000),
  PIXPROXY_UPSTREAM_DEADLINE_MS: Int('The whole of one call to BACEN, from dispatch to the last byte of its answer: a call still unanswered then is abandoned (its outcome unknown to the caller) and its ICOM slot freed, however slowly BACEN dribbles its answer', 1_000, 300_000, 20_000),

  PIXPROXY_SPI_MAX_IN_FLIGHT: Int('Concurrent requests per participant to ICOM (BACEN allows 6)', 1, 64, 6),
  PIXPROXY_SPI_QUEUE_MAX: Int('Requests waiting for an ICOM slot before new ones get 503', 0, 100_000, 1_000),
  PIXPROXY_SPI_COALESCE_MAX_PARTS: Int('Messages queued for an ICOM slot are sent together as one multipart/mixed POST of up to this many (1 = never coalesce; ICOM takes 10)', 1, 10, 10),
  PIXPROXY_SPI_QUEUE_TIMEOUT_MS: Int('How long a request may wait for an ICOM slot', 1, 120_000, 5_000),

  PIXPROXY_AUDIT_ENABLED: Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'Record an audit row per transaction (BACEN requires it; false only for benchmarks)', default: 'true' }),
  PIXPROXY_AUDIT_SPOOL_DIR: Str('Write-ahead spool directory for audit rows (an EFS mount in ECS, so rows survive task replacement)', { default: '.local/audit/spool' }),
  PIXPROXY_AUDIT_SPOOL_SHARED: Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'The spool directory is shared by several processes (one EFS file system for every ECS task): each claims a slot-NNN subdirectory of its own and adopts the slots of processes that died', default: 'false' }),
  PIXPROXY_AUDIT_SPOOL_MAX_BYTES: Int('Spool size at which new transactions are refused (503) rather than left unaudited', 1_048_576, 1_099_511_627_776, 2 * 1024 * 1024 * 1024),
  PIXPROXY_AUDIT_SINK: Type.Union([Type.Literal('parquet'), Type.Literal('firehose')], { description: 'Where shipped rows go: local Parquet (queried with DuckDB) or Kinesis Data Firehose', default: 'parquet' }),
  PIXPROXY_AUDIT_PARQUET_DIR: Str('Root of the local Parquet audit store (log/{spi,dict}/year=/month=/day=/hour=)', { default: '.local/audit/lake' }),
  PIXPROXY_AUDIT_FIREHOSE_SPI_STREAM: Str('Firehose delivery stream for SPI rows', { default: 'pix-proxy-audit-spi' }),
  PIXPROXY_AUDIT_FIREHOSE_DICT_STREAM: Str('Firehose delivery stream for DICT rows', { default: 'pix-proxy-audit-dict' }),
  PIXPROXY_AUDIT_FLUSH_MS: Int('Longest time a completed row waits in the spool before it is shipped', 10, 600_000, 1_000),

  PIXPROXY_MAX_BODY_BYTES: Int('Largest request body accepted from callers', 1_024, 16 * 1024 * 1024, 4 * 1024 * 1024),
  PIXPROXY_MEMORY_BUDGET_BYTES: Int('Memory the requests in flight may hold, estimated from their bodies (4 bytes per body byte plus 64 KiB each); a request that would exceed it gets 503 before its body is read. At least 4 x PIXPROXY_MAX_BODY_BYTES + 64 KiB', 65_536, 68_719_476_736, 256 * 1024 * 1024),
  PIXPROXY_SHUTDOWN_TIMEOUT_MS: Int('Graceful shutdown deadline after SIGTERM', 0, 300_000, 25_000),

  PIXPROXY_OTLP_ENDPOINT: Type.Optional(Str('Base URL of an OTLP/HTTP collector (e.g. http://127.0.0.1:4318): spans of every request (the caller\'s traceparent continued) and of its HSM sign, BACEN call, signature check and audit writes are posted (OTLP JSON) to ENDPOINT/v1/traces. Unset = no tracing (nothing loaded). Like OTEL_EXPORTER_OTLP_ENDPOINT, which the proxy does not read', { pattern: '^(https?://[^?#]+)?$' }))
}, { additionalProperties: false })

export type FlatConfig = Static<typeof ConfigSchema>
export type ConfigKey = keyof FlatConfig

/** Settings that are numbers and may be left unset. */
const OPTIONAL_NUMBERS: ReadonlySet<string> = new Set(Object.entries(ConfigSchema.properties)
  .filter(([k, p]) => !(ConfigSchema.required as readonly string[] | undefined ?? []).includes(k) && (p as { type?: string }).type === 'integer')
  .map(([k]) => k))

/** `/pix/proxy/dict-url` for `PIXPROXY_DICT_URL`: the parameter an SRE sets in SSM Parameter Store. */
export function ssmParameterName (key: string, prefix = '/pix/proxy/'): string {
  return prefix + key.replace(/^PIXPROXY_/, '').toLowerCase().replace(/_/g, '-')
}

export function envNameFromParameter (name: string, prefix = '/pix/proxy/'): string | undefined {
  if (!name.startsWith(prefix)) return undefined
  const key = 'PIXPROXY_' + name.slice(prefix.length).toUpperCase().replace(/-/g, '_')
  return key in ConfigSchema.properties ? key : undefined
}

export const CONFIG_KEYS = Object.keys(ConfigSchema.properties) as ConfigKey[]

/**
 * Settings named `*_FILE` that hold PEM (certificates, CA bundles, the inbound TLS key) take either a path or the
 * PEM text itself: in ECS they are SSM parameters (the key a SecureString) read with the rest of the
 * configuration, and nothing has to write them to a file first. A value is PEM text when it starts with
 * `-----BEGIN ` (after leading white space); anything else is a path.
 */
export const PEM_SETTINGS = Object.freeze([
  'PIXPROXY_INBOUND_TLS_CERT_FILE', 'PIXPROXY_INBOUND_TLS_KEY_FILE', 'PIXPROXY_INBOUND_CLIENT_CA_FILE',
  'PIXPROXY_SIGNING_KEY_FILE', 'PIXPROXY_SIGNING_CERT_FILE', 'PIXPROXY_TLS_KEY_FILE', 'PIXPROXY_TLS_CERT_FILE',
  'PIXPROXY_TLS_CA_FILE', 'PIXPROXY_BACEN_SIGNING_CERTS_FILE'
] as const satisfies readonly ConfigKey[])

/** True when a PEM setting holds the PEM itself rather than a path. */
export function isInlinePem (value: string): boolean {
  return /^\s*-----BEGIN /.test(value)
}

/** The PEM a setting names: the text itself, or the file's content. */
export async function readPemSetting (value: string): Promise<string> {
  return isInlinePem(value) ? value : await readFile(value, 'utf8')
}

/** readPemSetting for the synchronous server options Fastify takes at construction. */
export function readPemSettingSync (value: string): string {
  return isInlinePem(value) ? value : readFileSync(value, 'utf8')
}

/** What a PEM setting is, for messages and logs: the path, or "(inline PEM)" — never the content (a key may be). */
export function describePemSetting (value: string): string {
  return isInlinePem(value) ? '(inline PEM)' : value
}

/** The validated, typed configuration the app uses. */
export interface Config {
  readonly listen: { readonly host: string, readonly port: number }
  /** Off loopback without inbound mutual TLS and an allowlist: allowed only by PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS. */
  readonly unauthenticatedCallers: boolean
  /** The plain-HTTP operations listener (/healthz, /readyz, /metrics), or null for none. */
  readonly ops: { readonly host: string, readonly port: number } | null
  readonly logLevel: string
  readonly instanceId: string | undefined
  /** CloudWatch EMF request metrics on stdout (plugins/emf.ts), or null when off. */
  readonly emf: { readonly namespace: string, readonly service: string } | null
  readonly ispb: string
  /**
   * ISPBs of indirect participants this proxy acts for in DICT: BACEN takes the ISPB of a direct or indirect
   * participant in PI-RequestingParticipant (docs/bacen.md §1.8). SPI messages always name `ispb` (§2.2).
   */
  readonly indirectParticipants: readonly string[]
  readonly inbound: {
    readonly tls: { readonly certFile: string, readonly keyFile: string } | null
    readonly clientCaFile: string | null
    readonly clientAllowlist: readonly string[]
  }
  readonly hsm: {
    readonly modulePath: string
    readonly tokenLabel: string
    readonly pinFile: string | null
    readonly pinSecretId: string | null
    readonly poolSize: number
    readonly acquireTimeoutMs: number
  } | null
  /** The limits in front of KMS when the signing key is there (kms/guard.ts); unused otherwise. */
  readonly kms: {
    readonly maxSignsPerSec: number
    readonly queueMax: number
    readonly queueTimeoutMs: number
    readonly signDeadlineMs: number
    readonly maxAttempts: number
    readonly breakerFailures: number
    readonly breakerCooldownMs: number
  }
  /** Exactly one of keyLabel (HSM), kmsKeyId (AWS KMS, kms/signer.ts) and keyFile. */
  readonly signing: { readonly keyLabel: string | null, readonly kmsKeyId: string | null, readonly keyFile: string | null, readonly certFile: string }
  readonly tls: {
    /** Exactly one of keyLabel (HSM, through the libp11 engine), keyFile and keySecret (Secrets Manager). */
    readonly keyLabel: string | null
    readonly keyFile: string | null
    /** The Secrets Manager secret holding the key (and maybe the certificate): upstream/tls-key-secret.ts. */
    readonly keySecret: { readonly secretId: string, readonly refreshMs: number } | null
    /** Null only with keySecret, whose secret then carries the certificate. */
    readonly certFile: string | null
    readonly caFile: string
    readonly minVersion: 'TLSv1.2' | 'TLSv1.3'
    readonly sigalgs: string | null
  }
  readonly dict: { readonly url: string }
  readonly spi: { readonly url: string, readonly maxInFlight: number, readonly queueMax: number, readonly queueTimeoutMs: number, readonly coalesceMaxParts: number }
  readonly bacenSigningCertsFile: string
  readonly invalidSignaturePolicy: 'reject' | 'flag'
  readonly upstream: { readonly connections: number, readonly connectTimeoutMs: number, readonly headersTimeoutMs: number, readonly bodyTimeoutMs: number, readonly deadlineMs: number }
  readonly maxBodyBytes: number
  readonly memoryBudgetBytes: number
  readonly shutdownTimeoutMs: number
  /** Span export (http/tracing.ts), or null: no tracing, and no OpenTelemetry module loaded. */
  readonly otlp: { readonly tracesUrl: string } | null
  readonly audit: {
    readonly enabled: boolean
    readonly spoolDir: string
    /** spoolDir is a root of per-process slots (audit/slots.ts). */
    readonly spoolShared: boolean
    readonly spoolMaxBytes: number
    readonly sink: 'parquet' | 'firehose'
    readonly parquetDir: string
    readonly firehoseStreams: { readonly spi: string, readonly dict: string }
    readonly flushMs: number
  }
}

/**
 * Each integer setting of `schema` in `raw` not written as decimal digits, with its message. TypeBox's Convert would
 * turn "1.5" into 1, "1e3" into 1 and "0x10" into 16 without a word; a setting that is not what its operator meant
 * must stop the start instead. A leading minus is let through: the schema's range refuses it with its own words.
 * Shared by the proxy's and the gateway's loaders.
 */
export function integerSettingProblems (schema: { readonly properties: Readonly<Record<string, unknown>> }, raw: Readonly<Record<string, unknown>>): Map<string, string> {
  const problems = new Map<string, string>()
  for (const [k, v] of Object.entries(raw)) {
    if ((schema.properties[k] as { type?: string } | undefined)?.type === 'integer' && !(typeof v === 'string' && /^-?[0-9]+$/.test(v))) {
      problems.set(k, `${k}: must be a whole number written in decimal digits (got ${JSON.stringify(v)})`)
    }
  }
  return problems
}

/**
 * Validates `source` (the environment, or parameters fetched from SSM merged over it) and builds the typed config.
 * Unknown `PIXPROXY_*` names are errors (a typo must not silently fall back to a default).
 * @throws PixProxyError CONFIG_INVALID listing every problem at once.
 */
export function loadConfig (source: Readonly<Record<string, string | undefined>>): Config {
  const problems: string[] = []
  const raw: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(source)) {
    if (!k.startsWith('PIXPROXY_') || v === undefined) continue
    if (!(k in ConfigSchema.properties)) {
      problems.push(`${k} is not a pix-proxy setting`)
      continue
    }
    // An optional number set to '' is unset (`docker run -e PIXPROXY_OPS_LISTEN_PORT=` turns the image's default off),
    // as an optional text set to '' already is.
    if (v === '' && OPTIONAL_NUMBERS.has(k)) continue
    raw[k] = v
  }
  // Before Convert, which would truncate them: such a setting is reported once, with these words.
  const notIntegers = integerSettingProblems(ConfigSchema, raw)
  problems.push(...notIntegers.values())
  const converted = Value.Convert(ConfigSchema, Value.Default(ConfigSchema, raw))
  const reported = new Set<string>(notIntegers.keys())
  for (const e of Value.Errors(ConfigSchema, converted)) {
    const key = e.path.replace(/^\//, '')
    if (reported.has(key)) continue
    reported.add(key)
    problems.push(`${key === '' ? 'configuration' : key}: ${e.message}${key !== '' && raw[key] !== undefined ? ` (got ${JSON.stringify(raw[key])})` : ''}`)
  }
  if (problems.length > 0) throw new PixProxyError(Errors.CONFIG_INVALID, [problems.join('; ')])
  const f = converted as FlatConfig
  const set = (v: string | undefined): string | null => (v === undefined || v === '' ? null : v)

  const usesHsm = set(f.PIXPROXY_SIGNING_KEY_LABEL) !== null || set(f.PIXPROXY_TLS_KEY_LABEL) !== null
  const needOne = (...keys: Array<[ConfigKey, string]>): void => {
    const n = keys.filter(([k]) => set(f[k] as string | undefined) !== null).length
    if (n !== 1) problems.push(`set exactly one of ${keys.map(([k, what]) => `${k} (${what})`).join(', ').replace(/, ([^,]*)$/, ' and $1')}`)
  }
  needOne(['PIXPROXY_SIGNING_KEY_LABEL', 'HSM'], ['PIXPROXY_SIGNING_KMS_KEY_ID', 'AWS KMS'], ['PIXPROXY_SIGNING_KEY_FILE', 'PEM file'])
  needOne(['PIXPROXY_TLS_KEY_LABEL', 'HSM'], ['PIXPROXY_TLS_KEY_FILE', 'PEM file'], ['PIXPROXY_TLS_KEY_SECRET_ID', 'AWS Secrets Manager'])
  const tlsKeySecretId = set(f.PIXPROXY_TLS_KEY_SECRET_ID)
  if (set(f.PIXPROXY_TLS_CERT_FILE) === null && tlsKeySecretId === null) {
    problems.push('PIXPROXY_TLS_CERT_FILE is required unless the mTLS key secret (PIXPROXY_TLS_KEY_SECRET_ID) carries the certificate')
  }
  const refreshMs = f.PIXPROXY_TLS_SECRET_REFRESH_MS as number
  // Every read is a GetSecretValue call (billed, and rate-limited per account): more often than every 10 s buys nothing.
  if (refreshMs > 0 && refreshMs < 10_000) problems.push(`PIXPROXY_TLS_SECRET_REFRESH_MS: ${refreshMs} is too often; 0 (only on SIGHUP) or at least 10000`)
  const kmsKeyId = set(f.PIXPROXY_SIGNING_KMS_KEY_ID)
  if (kmsKeyId !== null && !KMS_KEY_ID_RE.test(kmsKeyId)) {
    problems.push(`PIXPROXY_SIGNING_KMS_KEY_ID: ${JSON.stringify(kmsKeyId.slice(0, 120))} is not a KMS key id, key ARN, alias name (alias/…) or alias ARN`)
  }
  if (usesHsm) {
    if (set(f.PIXPROXY_HSM_MODULE_PATH) === null) problems.push('PIXPROXY_HSM_MODULE_PATH is required when a key lives in the HSM')
    if (set(f.PIXPROXY_HSM_TOKEN_LABEL) === null) problems.push('PIXPROXY_HSM_TOKEN_LABEL is required when a key lives in the HSM')
    if ((set(f.PIXPROXY_HSM_PIN_FILE) === null) === (set(f.PIXPROXY_HSM_PIN_SECRET_ID) === null)) {
      problems.push('set exactly one of PIXPROXY_HSM_PIN_FILE and PIXPROXY_HSM_PIN_SECRET_ID')
    }
  }
  const inboundCert = set(f.PIXPROXY_INBOUND_TLS_CERT_FILE)
  const inboundKey = set(f.PIXPROXY_INBOUND_TLS_KEY_FILE)
  if ((inboundCert === null) !== (inboundKey === null)) problems.push('PIXPROXY_INBOUND_TLS_CERT_FILE and PIXPROXY_INBOUND_TLS_KEY_FILE go together')
  const clientCa = set(f.PIXPROXY_INBOUND_CLIENT_CA_FILE)
  if (clientCa !== null && inboundCert === null) problems.push('PIXPROXY_INBOUND_CLIENT_CA_FILE needs inbound TLS (PIXPROXY_INBOUND_TLS_CERT_FILE)')
  const allowlist = (f.PIXPROXY_INBOUND_CLIENT_ALLOWLIST ?? '').split(',').map((s) => s.trim().toUpperCase()).filter((s) => s !== '')
  for (const fp of allowlist) {
    if (!/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/.test(fp)) problems.push(`PIXPROXY_INBOUND_CLIENT_ALLOWLIST: ${fp} is not a SHA-256 fingerprint (AA:BB:…, 32 bytes)`)
  }
  const indirect = (f.PIXPROXY_INDIRECT_PARTICIPANTS ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const ispb of indirect) {
    if (!/^[0-9A-Z]{8}$/.test(ispb)) problems.push(`PIXPROXY_INDIRECT_PARTICIPANTS: ${JSON.stringify(ispb.slice(0, 20))} is not an ISPB (8 digits or upper-case letters)`)
    else if (ispb === f.PIXPROXY_ISPB) problems.push(`PIXPROXY_INDIRECT_PARTICIPANTS: ${ispb} is PIXPROXY_ISPB itself`)
  }
  if (allowlist.length > 0 && clientCa === null) problems.push('PIXPROXY_INBOUND_CLIENT_ALLOWLIST needs PIXPROXY_INBOUND_CLIENT_CA_FILE')
  const opsPort = f.PIXPROXY_OPS_LISTEN_PORT as number | undefined
  if (opsPort !== undefined && opsPort !== 0 && opsPort === f.PIXPROXY_LISTEN_PORT) {
    problems.push(`PIXPROXY_OPS_LISTEN_PORT: ${opsPort} is the callers' port (PIXPROXY_LISTEN_PORT); the operations listener needs its own`)
  }
  // Nothing signs for a caller nobody authenticated: off loopback, callers must present a certificate from the client
  // CA that is on the allowlist (the image listens on 0.0.0.0, so an image run without them would be an open signing
  // service).
  const openToNetwork = !isLoopbackHost(f.PIXPROXY_LISTEN_HOST as string)
  if (openToNetwork && f.PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS !== 'true' && (inboundCert === null || clientCa === null || allowlist.length === 0)) {
    const missing = [inboundCert === null ? 'PIXPROXY_INBOUND_TLS_CERT_FILE and PIXPROXY_INBOUND_TLS_KEY_FILE' : null, clientCa === null ? 'PIXPROXY_INBOUND_CLIENT_CA_FILE' : null, allowlist.length === 0 ? 'PIXPROXY_INBOUND_CLIENT_ALLOWLIST' : null].filter((m) => m !== null)
    problems.push(`PIXPROXY_LISTEN_HOST ${String(f.PIXPROXY_LISTEN_HOST)} is not loopback: callers must be authenticated by inbound mutual TLS; set ${missing.join(', ')} (or, only where another layer authenticates every caller, PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS=true)`)
  }
  const budget = f.PIXPROXY_MEMORY_BUDGET_BYTES as number
  if (budget < minimumBudget(f.PIXPROXY_MAX_BODY_BYTES as number)) {
    problems.push(`PIXPROXY_MEMORY_BUDGET_BYTES: ${budget} cannot admit one request of PIXPROXY_MAX_BODY_BYTES (${String(f.PIXPROXY_MAX_BODY_BYTES)}); it needs at least ${minimumBudget(f.PIXPROXY_MAX_BODY_BYTES as number)}`)
  }
  const otlpEndpoint = set(f.PIXPROXY_OTLP_ENDPOINT)
  let tracesUrl: string | null = null
  if (otlpEndpoint !== null) {
    try {
      const u = new URL(otlpEndpoint)
      if (u.username !== '' || u.password !== '') problems.push('PIXPROXY_OTLP_ENDPOINT: credentials in the URL would be logged; a collector that needs them takes OTEL_EXPORTER_OTLP_HEADERS')
      tracesUrl = `${u.origin}${u.pathname.replace(/\/+$/, '')}/v1/traces`
    } catch {
      problems.push(`PIXPROXY_OTLP_ENDPOINT: not a URL (got ${JSON.stringify(otlpEndpoint.slice(0, 80))})`)
    }
  }
  if (problems.length > 0) throw new PixProxyError(Errors.CONFIG_INVALID, [problems.join('; ')])

  return {
    listen: { host: f.PIXPROXY_LISTEN_HOST as string, port: f.PIXPROXY_LISTEN_PORT as number },
    unauthenticatedCallers: openToNetwork && (inboundCert === null || clientCa === null || allowlist.length === 0),
    ops: opsPort === undefined ? null : { host: f.PIXPROXY_OPS_LISTEN_HOST as string, port: opsPort },
    logLevel: f.PIXPROXY_LOG_LEVEL as string,
    instanceId: f.PIXPROXY_INSTANCE_ID as string | undefined,
    emf: f.PIXPROXY_METRICS_EMF === 'true' ? { namespace: f.PIXPROXY_METRICS_EMF_NAMESPACE as string, service: f.PIXPROXY_METRICS_EMF_SERVICE as string } : null,
    ispb: f.PIXPROXY_ISPB as string,
    indirectParticipants: [...new Set(indirect)],
    inbound: {
      tls: inboundCert === null || inboundKey === null ? null : { certFile: inboundCert, keyFile: inboundKey },
      clientCaFile: clientCa,
      clientAllowlist: allowlist
    },
    hsm: usesHsm
      ? {
          modulePath: f.PIXPROXY_HSM_MODULE_PATH as string,
          tokenLabel: f.PIXPROXY_HSM_TOKEN_LABEL as string,
          pinFile: set(f.PIXPROXY_HSM_PIN_FILE),
          pinSecretId: set(f.PIXPROXY_HSM_PIN_SECRET_ID),
          poolSize: f.PIXPROXY_HSM_POOL_SIZE as number,
          acquireTimeoutMs: f.PIXPROXY_HSM_ACQUIRE_TIMEOUT_MS as number
        }
      : null,
    kms: {
      maxSignsPerSec: f.PIXPROXY_KMS_MAX_SIGNS_PER_SEC as number,
      queueMax: f.PIXPROXY_KMS_QUEUE_MAX as number,
      queueTimeoutMs: f.PIXPROXY_KMS_QUEUE_TIMEOUT_MS as number,
      signDeadlineMs: f.PIXPROXY_KMS_SIGN_DEADLINE_MS as number,
      maxAttempts: f.PIXPROXY_KMS_MAX_ATTEMPTS as number,
      breakerFailures: f.PIXPROXY_KMS_BREAKER_FAILURES as number,
      breakerCooldownMs: f.PIXPROXY_KMS_BREAKER_COOLDOWN_MS as number
    },
    signing: { keyLabel: set(f.PIXPROXY_SIGNING_KEY_LABEL), kmsKeyId, keyFile: set(f.PIXPROXY_SIGNING_KEY_FILE), certFile: f.PIXPROXY_SIGNING_CERT_FILE as string },
    tls: {
      keyLabel: set(f.PIXPROXY_TLS_KEY_LABEL),
      keyFile: set(f.PIXPROXY_TLS_KEY_FILE),
      keySecret: tlsKeySecretId === null ? null : { secretId: tlsKeySecretId, refreshMs },
      certFile: set(f.PIXPROXY_TLS_CERT_FILE),
      caFile: f.PIXPROXY_TLS_CA_FILE as string,
      minVersion: f.PIXPROXY_TLS_MIN_VERSION as 'TLSv1.2' | 'TLSv1.3',
      sigalgs: set(f.PIXPROXY_TLS_SIGALGS)
    },
    dict: { url: f.PIXPROXY_DICT_URL as string },
    spi: {
      url: f.PIXPROXY_SPI_URL as string,
      maxInFlight: f.PIXPROXY_SPI_MAX_IN_FLIGHT as number,
      queueMax: f.PIXPROXY_SPI_QUEUE_MAX as number,
      queueTimeoutMs: f.PIXPROXY_SPI_QUEUE_TIMEOUT_MS as number,
      coalesceMaxParts: f.PIXPROXY_SPI_COALESCE_MAX_PARTS as number
    },
    bacenSigningCertsFile: f.PIXPROXY_BACEN_SIGNING_CERTS_FILE as string,
    invalidSignaturePolicy: f.PIXPROXY_INVALID_SIGNATURE_POLICY as 'reject' | 'flag',
    upstream: {
      connections: f.PIXPROXY_UPSTREAM_CONNECTIONS as number,
      connectTimeoutMs: f.PIXPROXY_UPSTREAM_CONNECT_TIMEOUT_MS as number,
      headersTimeoutMs: f.PIXPROXY_UPSTREAM_HEADERS_TIMEOUT_MS as number,
      bodyTimeoutMs: f.PIXPROXY_UPSTREAM_BODY_TIMEOUT_MS as number,
      deadlineMs: f.PIXPROXY_UPSTREAM_DEADLINE_MS as number
    },
    maxBodyBytes: f.PIXPROXY_MAX_BODY_BYTES as number,
    memoryBudgetBytes: f.PIXPROXY_MEMORY_BUDGET_BYTES as number,
    shutdownTimeoutMs: f.PIXPROXY_SHUTDOWN_TIMEOUT_MS as number,
    otlp: tracesUrl === null ? null : { tracesUrl },
    audit: {
      enabled: f.PIXPROXY_AUDIT_ENABLED === 'true',
      spoolDir: f.PIXPROXY_AUDIT_SPOOL_DIR as string,
      spoolShared: f.PIXPROXY_AUDIT_SPOOL_SHARED === 'true',
      spoolMaxBytes: f.PIXPROXY_AUDIT_SPOOL_MAX_BYTES as number,
      sink: f.PIXPROXY_AUDIT_SINK as 'parquet' | 'firehose',
      parquetDir: f.PIXPROXY_AUDIT_PARQUET_DIR as string,
      firehoseStreams: { spi: f.PIXPROXY_AUDIT_FIREHOSE_SPI_STREAM as string, dict: f.PIXPROXY_AUDIT_FIREHOSE_DICT_STREAM as string },
      flushMs: f.PIXPROXY_AUDIT_FLUSH_MS as number
    }
  }
}

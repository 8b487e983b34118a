/**
 * A small local stand-in for the three AWS services pix-proxy calls: Firehose (PutRecordBatch, PutRecord), Secrets
 * Manager (GetSecretValue) and SSM Parameter Store (GetParameter, GetParameters, GetParametersByPath). It speaks
 * the AWS JSON 1.1 protocol the SDK v3 clients use, so the real clients reach it through `endpoint` with static
 * fake credentials, and it can fail on command (throttling, partial batch failures, outages, latency) so the audit
 * pipeline and configuration loading are tested against the failures they must survive.
 *
 * No emulator for these services exists in the npm registry or Debian. Behaviour follows the AWS API references;
 * where AWS does not document a detail (the error for a too-large PutRecordBatch, the HTTP status of Firehose's
 * ServiceUnavailableException) the choice is noted where it is made.
 *
 * Differences from AWS that matter: delivered Firehose records are written at once (no buffering interval), as
 * JSON lines even when the real stream would convert them to Parquet; one object per accepted call.
 */
import { randomBytes, randomUUID, createHash } from 'node:crypto'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { dirname, join, resolve, sep } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { checkSigV4 } from './sigv4.ts'

/** The S3 prefix Terraform gives the delivery stream of `system` (issue 5): Firehose expands it at arrival time. */
function auditPrefixTemplate (system: 'spi' | 'dict'): string {
  return `log/${system}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/`
}

/** Delivery streams a fresh endpoint has, named as in the Terraform data_lake module and the proxy's defaults. */
export const DEFAULT_DELIVERY_STREAMS: Readonly<Record<string, string>> = Object.freeze({
  'pix-proxy-audit-spi': auditPrefixTemplate('spi'),
  'pix-proxy-audit-dict': auditPrefixTemplate('dict')
})

/** Per-record and per-call limits of PutRecordBatch (Firehose API reference; they cannot be raised). */
const FIREHOSE_LIMITS = Object.freeze({
  maxRecords: 500,
  /** Per record, before base64 (1,000 KiB). */
  maxRecordBytes: 1_024_000,
  /** Per call, summed over the records' data before base64 (4 MiB). */
  maxCallBytes: 4 * 1024 * 1024
})

export type SsmParameterType = 'String' | 'StringList' | 'SecureString'

export interface LocalParameter {
  readonly name: string
  readonly value: string
  readonly type?: SsmParameterType
}

export interface LocalSecret {
  readonly name: string
  /** Exactly one of `string` (SecretString) and `binary` (SecretBinary). */
  readonly string?: string
  readonly binary?: Uint8Array
}

export interface LocalAwsEndpointOptions {
  /** Default 127.0.0.1; 0.0.0.0 in a container. */
  readonly host?: string
  /** Default 0 (any free port). */
  readonly port?: number
  /** When set, delivered Firehose records are also written under it, laid out like the stream's S3 prefix. */
  readonly dataDir?: string
  readonly region?: string
  readonly accountId?: string
  /**
   * Access key id → secret access key. When set, SigV4 signatures are verified against them; otherwise only the
   * presence and shape of the signature are checked (enough to catch an unsigned call).
   */
  readonly credentials?: Readonly<Record<string, string>>
  /** Delivery stream name → S3 prefix template (`!{timestamp:yyyy}` … expanded at arrival). Default DEFAULT_DELIVERY_STREAMS. */
  readonly deliveryStreams?: Readonly<Record<string, string>>
  /** Extension of the objects written under dataDir (Firehose's FileExtension setting). Default `.json`. */
  readonly fileExtension?: string
  readonly parameters?: readonly LocalParameter[]
  readonly secrets?: readonly LocalSecret[]
  /** Seed of the generator behind random partial failures, so a failing run can be replayed. */
  readonly seed?: number
  /**
   * How many delivered records per stream, and calls in the call log, are kept in memory (the oldest go first).
   * Default: all, for tests; a long-running endpoint (docker-compose under load) sets a bound and reads dataDir.
   */
  readonly retain?: number
  /** Clock for arrival times and partitions (the signature's skew is checked against the real clock the SDK signs with). */
  readonly now?: () => Date
}

/** A Firehose record the endpoint accepted. */
export interface DeliveredRecord {
  readonly recordId: string
  readonly data: Buffer
  readonly arrivedAt: Date
  /** The object it was written to, relative to dataDir (null without dataDir). */
  readonly key: string | null
}

/** One call the endpoint answered, for assertions (how many attempts a client made, what it was told). */
export interface CallLogEntry {
  readonly target: string
  readonly status: number
  readonly errorType: string | null
  readonly at: Date
}

/**
 * `target` in the fault rules below matches an X-Amz-Target exactly (`Firehose_20150804.PutRecordBatch`) or by
 * service prefix (`Firehose_20150804`, `AmazonSSM`, `secretsmanager`); absent, every call matches. `times` is how
 * many calls the rule affects before it expires (default: until cleared).
 */
export interface CallFault {
  readonly target?: string
  /** Only Firehose calls to this delivery stream. */
  readonly stream?: string
  /** `__type` of the error, e.g. ThrottlingException, ServiceUnavailableException, InternalFailure. */
  readonly errorType: string
  /** Default 400 for ThrottlingException and other client errors, 503 for ServiceUnavailableException, 500 otherwise. */
  readonly status?: number
  readonly message?: string
  readonly times?: number
}

export interface RecordFault {
  /** Delivery stream; absent = every stream. */
  readonly stream?: string
  /** Record indexes (0-based, in the call) that fail. */
  readonly indexes?: readonly number[]
  /** Probability that each record fails, drawn from the seeded generator. */
  readonly probability?: number
  /** Default ServiceUnavailableException (AWS also uses InternalFailure). */
  readonly errorCode?: string
  readonly times?: number
}

export interface LatencyFault {
  readonly target?: string
  readonly ms: number
  readonly times?: number
}

/**
 * `refuse`: stop listening (connection refused, as when the service or the VPC endpoint is unreachable);
 * `503`: answer every call ServiceUnavailableException; `hang`: accept and never answer (client timeouts).
 */
export type OutageMode = 'refuse' | '503' | 'hang'

const JSON_11 = 'application/x-amz-json-1.1'
const MAX_BODY_BYTES = 16 * 1024 * 1024

const SERVICES: Readonly<Record<string, string>> = Object.freeze({
  Firehose_20150804: 'firehose',
  secretsmanager: 'secretsmanager',
  AmazonSSM: 'ssm'
})

class AwsError extends Error {
  readonly errorType: string
  readonly status: number
  constructor (errorType: string, message: string, status = 400) {
    super(message)
    this.errorType = errorType
    this.status = status
  }
}

const validation = (value: string, at: string, constraint: string): AwsError =>
  new AwsError('ValidationException', `1 validation error detected: Value ${value} at '${at}' failed to satisfy constraint: ${constraint}`)

function defaultStatus (errorType: string): number {
  if (errorType === 'ServiceUnavailableException') return 503
  if (errorType === 'InternalFailure' || errorType === 'InternalServerError' || errorType === 'InternalServiceError') return 500
  return 400
}

const matchesTarget = (rule: string | undefined, target: string): boolean =>
  rule === undefined || rule === target || target.startsWith(rule + '.')

/** mulberry32: tiny, seedable, good enough to pick failing records reproducibly. */
function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const TIMESTAMP_TOKENS: Readonly<Record<string, (d: Date) => string>> = Object.freeze({
  yyyy: (d: Date) => String(d.getUTCFullYear()),
  MM: (d: Date) => String(d.getUTCMonth() + 1).padStart(2, '0'),
  dd: (d: Date) => String(d.getUTCDate()).padStart(2, '0'),
  HH: (d: Date) => String(d.getUTCHours()).padStart(2, '0'),
  mm: (d: Date) => String(d.getUTCMinutes()).padStart(2, '0'),
  ss: (d: Date) => String(d.getUTCSeconds()).padStart(2, '0')
})

/** Expands Firehose's `!{timestamp:…}` namespace (UTC, as Firehose does); other namespaces are refused. */
export function expandPrefix (template: string, at: Date): string {
  return template.replace(/!\{([^}]*)\}/g, (_all, expr: string) => {
    const m = /^timestamp:(.+)$/.exec(expr)
    if (m === null || m[1] === undefined) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`unsupported prefix expression !{${expr}} (only !{timestamp:…})`])
    return m[1].replace(/yyyy|MM|dd|HH|mm|ss/g, (tok) => (TIMESTAMP_TOKENS[tok] as (d: Date) => string)(at))
  })
}

const STREAM_NAME_RE = /^[a-zA-Z0-9_.-]{1,64}$/
const PARAM_NAME_RE = /^(\/[a-zA-Z0-9_.-]+)+$|^[a-zA-Z0-9_.-]+$/
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

interface StoredParameter {
  name: string
  type: SsmParameterType
  value: string
  version: number
  modified: Date
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

interface Stream {
  prefix: string
  records: DeliveredRecord[]
}

interface Counted<T> {
  rule: T
  left: number
}

/**
 * The endpoint. Create with `startLocalAwsEndpoint` (or `new` + `start()`); point SDK clients at `url`.
 * The control methods (`putParameter`, `failCalls`, `outage`, …) are plain code, not AWS APIs.
 */
export class LocalAwsEndpoint {
  readonly region: string
  readonly accountId: string
  readonly #opts: LocalAwsEndpointOptions
  readonly #now: () => Date
  readonly #random: () => number
  readonly #streams = new Map<string, Stream>()
  readonly #parameters = new Map<string, StoredParameter>()
  readonly #secrets = new Map<string, StoredSecret>()
  readonly #calls: CallLogEntry[] = []
  #callFaults: Array<Counted<CallFault>> = []
  #recordFaults: Array<Counted<RecordFault>> = []
  #latencyFaults: Array<Counted<LatencyFault>> = []
  #outage: OutageMode | null = null
  readonly #hanging = new Set<ServerResponse>()
  readonly #sockets = new Set<Socket>()
  #server: Server | null = null
  #port: number
  #closed = false

  constructor (opts: LocalAwsEndpointOptions = {}) {
    this.#opts = opts
    this.region = opts.region ?? 'us-east-1'
    this.accountId = opts.accountId ?? '000000000000'
    this.#now = opts.now ?? (() => new Date())
    this.#random = rng(opts.seed ?? 1)
    this.#port = opts.port ?? 0
    for (const [name, prefix] of Object.entries(opts.deliveryStreams ?? DEFAULT_DELIVERY_STREAMS)) this.createDeliveryStream(name, prefix)
    for (const p of opts.parameters ?? []) this.putParameter(p)
    for (const s of opts.secrets ?? []) this.putSecret(s)
  }

  /** `http://host:port`, for the SDK clients' `endpoint`. */
  get url (): string {
    const host = this.#opts.host ?? '127.0.0.1'
    return `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${this.#port}`
  }

  get port (): number {
    return this.#port
  }

  /** Every call answered so far (oldest first). */
  get calls (): readonly CallLogEntry[] {
    return this.#calls
  }

  async start (): Promise<this> {
    if (this.#closed) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, ['the endpoint is closed'])
    await this.#listen()
    return this
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#releaseHanging()
    await this.#stopListening()
  }

  // ---- control: state --------------------------------------------------------------------------------------------

  createDeliveryStream (name: string, prefixTemplate: string): void {
    if (!STREAM_NAME_RE.test(name)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`invalid delivery stream name ${JSON.stringify(name)}`])
    expandPrefix(prefixTemplate, new Date(0))
    if (prefixTemplate.startsWith('/') || prefixTemplate.split('/').includes('..')) {
      throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`prefix ${JSON.stringify(prefixTemplate)} must be relative and stay inside dataDir`])
    }
    this.#streams.set(name, { prefix: prefixTemplate, records: [] })
  }

  /** Records accepted on `stream`, in arrival order. */
  delivered (stream: string): readonly DeliveredRecord[] {
    const s = this.#streams.get(stream)
    if (s === undefined) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`no delivery stream ${stream}`])
    return s.records
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

  /** Creates a secret or adds a new AWSCURRENT version; returns its ARN. */
  putSecret (s: LocalSecret): string {
    if ((s.string === undefined) === (s.binary === undefined)) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, ['a secret has exactly one of string and binary'])
    let stored = this.#secrets.get(s.name)
    if (stored === undefined) {
      // AWS appends a dash and six random characters to the name in the ARN.
      const suffix = randomBytes(6).toString('base64').replace(/[^A-Za-z0-9]/g, 'x').slice(0, 6)
      stored = { name: s.name, arn: `arn:aws:secretsmanager:${this.region}:${this.accountId}:secret:${s.name}-${suffix}`, versions: [] }
      this.#secrets.set(s.name, stored)
    }
    stored.versions.push({ id: randomUUID(), string: s.string ?? null, binary: s.binary === undefined ? null : Buffer.from(s.binary), created: this.#now() })
    return stored.arn
  }

  // ---- control: failures -----------------------------------------------------------------------------------------

  /** Whole calls fail with `errorType` (throttling, a 5xx). */
  failCalls (fault: CallFault): void {
    this.#callFaults.push({ rule: fault, left: fault.times ?? Infinity })
  }

  /** Records of PutRecordBatch calls fail individually (the call itself succeeds with FailedPutCount > 0). */
  failRecords (fault: RecordFault): void {
    if (fault.indexes === undefined && fault.probability === undefined) throw new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, ['failRecords needs indexes or probability'])
    this.#recordFaults.push({ rule: fault, left: fault.times ?? Infinity })
  }

  addLatency (fault: LatencyFault): void {
    this.#latencyFaults.push({ rule: fault, left: fault.times ?? Infinity })
  }

  async outage (mode: OutageMode): Promise<void> {
    this.#outage = mode
    if (mode === 'refuse') await this.#stopListening()
  }

  /** Ends an outage (listening again on the same port after `refuse`; hung calls are cut). */
  async restore (): Promise<void> {
    const was = this.#outage
    this.#outage = null
    this.#releaseHanging()
    if (was === 'refuse' && !this.#closed) await this.#listen()
  }

  clearFaults (): void {
    this.#callFaults = []
    this.#recordFaults = []
    this.#latencyFaults = []
  }

  // ---- HTTP ------------------------------------------------------------------------------------------------------

  async #listen (): Promise<void> {
    if (this.#server !== null) return
    const server = createServer({ maxHeaderSize: 16 * 1024 }, (req, res) => { void this.#handle(req, res) })
    server.on('connection', (socket) => {
      this.#sockets.add(socket)
      socket.once('close', () => this.#sockets.delete(socket))
    })
    await new Promise<void>((resolvePromise, reject) => {
      server.once('error', (err) => reject(new PixProxyError(Errors.AWS_LOCAL_ENDPOINT, [`cannot listen on ${this.#opts.host ?? '127.0.0.1'}:${this.#port}: ${err.message}`], { cause: err })))
      server.listen(this.#port, this.#opts.host ?? '127.0.0.1', () => resolvePromise())
    })
    this.#port = (server.address() as AddressInfo).port
    this.#server = server
  }

  async #stopListening (): Promise<void> {
    const server = this.#server
    if (server === null) return
    this.#server = null
    const closed = new Promise<void>((resolvePromise) => server.close(() => resolvePromise()))
    // Keep-alive sockets from SDK agents would otherwise keep being served: an outage must refuse them too.
    for (const s of this.#sockets) s.destroy()
    await closed
  }

  #releaseHanging (): void {
    for (const res of this.#hanging) res.destroy()
    this.#hanging.clear()
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = String(req.headers['x-amz-target'] ?? '')
    const send = (status: number, body: unknown, errorType: string | null = null): void => {
      const text = JSON.stringify(body)
      this.#calls.push({ target, status, errorType, at: this.#now() })
      this.#trim(this.#calls)
      if (res.destroyed) return
      res.writeHead(status, {
        'content-type': JSON_11,
        'content-length': Buffer.byteLength(text),
        'x-amzn-requestid': randomUUID()
      })
      res.end(text)
    }
    const sendError = (e: AwsError): void => send(e.status, { __type: e.errorType, message: e.message }, e.errorType)
    try {
      const body = await readBody(req)
      if (this.#outage === 'hang') {
        this.#hanging.add(res)
        res.once('close', () => this.#hanging.delete(res))
        return
      }
      if (this.#outage === '503') throw new AwsError('ServiceUnavailableException', 'Service Unavailable', 503)
      if (req.method !== 'POST') throw new AwsError('UnknownOperationException', `${req.method ?? '?'} is not an AWS JSON 1.1 call`, 404)
      const dot = target.indexOf('.')
      const service = SERVICES[target.slice(0, dot)]
      if (dot < 0 || service === undefined) throw new AwsError('UnknownOperationException', `unknown X-Amz-Target ${JSON.stringify(target)}`)
      const auth = checkSigV4({ method: req.method, url: req.url ?? '/', headers: req.headers, body }, {
        service,
        now: new Date(),
        ...(this.#opts.credentials === undefined ? {} : { secrets: this.#opts.credentials })
      })
      if (!auth.ok) throw new AwsError(auth.errorType, auth.message, 400)
      const contentType = String(req.headers['content-type'] ?? '').split(';')[0]?.trim()
      if (contentType !== JSON_11) throw new AwsError('SerializationException', `Content-Type must be ${JSON_11}, not ${contentType ?? ''}`)
      let input: Record<string, unknown>
      try {
        const parsed: unknown = JSON.parse(body.toString('utf8') || '{}')
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object')
        input = parsed as Record<string, unknown>
      } catch {
        throw new AwsError('SerializationException', 'the request body is not a JSON object')
      }
      for (const f of this.#take(this.#latencyFaults, (r) => matchesTarget(r.target, target))) await sleep(f.ms, undefined, { ref: false })
      const stream = typeof input.DeliveryStreamName === 'string' ? input.DeliveryStreamName : undefined
      const [fault] = this.#take(this.#callFaults, (r) => matchesTarget(r.target, target) && (r.stream === undefined || r.stream === stream), 1)
      if (fault !== undefined) {
        throw new AwsError(fault.errorType, fault.message ?? (fault.errorType === 'ThrottlingException' ? 'Rate exceeded' : 'Slow down.'), fault.status ?? defaultStatus(fault.errorType))
      }
      send(200, await this.#dispatch(target, input))
    } catch (err) {
      if (err instanceof AwsError) sendError(err)
      else sendError(new AwsError('InternalFailure', `local endpoint: ${(err as Error).message}`, 500))
    }
  }

  #trim (list: unknown[]): void {
    const max = this.#opts.retain ?? Infinity
    if (list.length > max) list.splice(0, list.length - max)
  }

  /** The rules matching, consuming one use of each (at most `limit`); expired rules are dropped. */
  #take<T> (rules: Array<Counted<T>>, match: (r: T) => boolean, limit = Infinity): T[] {
    const out: T[] = []
    for (const c of rules) {
      if (out.length >= limit) break
      if (c.left > 0 && match(c.rule)) {
        c.left--
        out.push(c.rule)
      }
    }
    for (let i = rules.length - 1; i >= 0; i--) if ((rules[i] as Counted<T>).left <= 0) rules.splice(i, 1)
    return out
  }

  async #dispatch (target: string, input: Record<string, unknown>): Promise<unknown> {
    switch (target) {
      case 'Firehose_20150804.PutRecordBatch': return await this.#putRecordBatch(input)
      case 'Firehose_20150804.PutRecord': return await this.#putRecord(input)
      case 'secretsmanager.GetSecretValue': return this.#getSecretValue(input)
      case 'AmazonSSM.GetParameter': return this.#getParameter(input)
      case 'AmazonSSM.GetParameters': return this.#getParameters(input)
      case 'AmazonSSM.GetParametersByPath': return this.#getParametersByPath(input)
      default: throw new AwsError('UnknownOperationException', `the local endpoint does not implement ${target}`)
    }
  }

  // ---- Firehose --------------------------------------------------------------------------------------------------

  #stream (input: Record<string, unknown>): [string, Stream] {
    const name = input.DeliveryStreamName
    if (typeof name !== 'string' || !STREAM_NAME_RE.test(name)) {
      throw validation(JSON.stringify(name), 'deliveryStreamName', 'Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+')
    }
    const s = this.#streams.get(name)
    if (s === undefined) throw new AwsError('ResourceNotFoundException', `Firehose ${name} under account ${this.accountId} not found.`)
    return [name, s]
  }

  #decodeRecord (record: unknown, at: string): Buffer {
    const data = (record as { Data?: unknown } | null)?.Data
    if (typeof data !== 'string' || !BASE64_RE.test(data)) throw new AwsError('SerializationException', `${at}.data is not base64`)
    const buf = Buffer.from(data, 'base64')
    if (buf.length > FIREHOSE_LIMITS.maxRecordBytes) {
      throw validation('', at + '.data', `Member must have length less than or equal to ${FIREHOSE_LIMITS.maxRecordBytes}`)
    }
    return buf
  }

  async #putRecordBatch (input: Record<string, unknown>): Promise<unknown> {
    const [name, stream] = this.#stream(input)
    const records = input.Records
    if (!Array.isArray(records) || records.length < 1) throw validation('null', 'records', 'Member must have length greater than or equal to 1')
    if (records.length > FIREHOSE_LIMITS.maxRecords) {
      throw validation(`'[${records.length} records]'`, 'records', `Member must have length less than or equal to ${FIREHOSE_LIMITS.maxRecords}`)
    }
    const data = records.map((r, i) => this.#decodeRecord(r, `records.${i + 1}.member`))
    const total = data.reduce((n, b) => n + b.length, 0)
    // AWS documents the 4 MiB call limit but not the error it answers; InvalidArgumentException is Firehose's error
    // for a request it cannot accept.
    if (total > FIREHOSE_LIMITS.maxCallBytes) throw new AwsError('InvalidArgumentException', `Records size ${total} exceeds the ${FIREHOSE_LIMITS.maxCallBytes} bytes limit of a PutRecordBatch call`)
    const failed = new Map<number, string>()
    for (const f of this.#take(this.#recordFaults, (r) => r.stream === undefined || r.stream === name)) {
      const code = f.errorCode ?? 'ServiceUnavailableException'
      for (const i of f.indexes ?? []) if (i >= 0 && i < data.length) failed.set(i, code)
      if (f.probability !== undefined) for (let i = 0; i < data.length; i++) if (this.#random() < f.probability) failed.set(i, code)
    }
    const accepted = data.flatMap((d, i) => (failed.has(i) ? [] : [d]))
    const ids = await this.#deliver(name, stream, accepted)
    let next = 0
    const responses = data.map((_d, i) => {
      const code = failed.get(i)
      if (code !== undefined) return { ErrorCode: code, ErrorMessage: code === 'ServiceUnavailableException' ? 'Slow down.' : 'Internal failure.' }
      return { RecordId: ids[next++] }
    })
    return { FailedPutCount: failed.size, Encrypted: false, RequestResponses: responses }
  }

  async #putRecord (input: Record<string, unknown>): Promise<unknown> {
    const [name, stream] = this.#stream(input)
    const data = this.#decodeRecord(input.Record, 'record')
    const [f] = this.#take(this.#recordFaults, (r) => (r.stream === undefined || r.stream === name) &&
      ((r.indexes ?? []).includes(0) || (r.probability !== undefined && this.#random() < r.probability)), 1)
    if (f !== undefined) throw new AwsError(f.errorCode ?? 'ServiceUnavailableException', 'Slow down.', defaultStatus(f.errorCode ?? 'ServiceUnavailableException'))
    const [id] = await this.#deliver(name, stream, [data])
    return { RecordId: id, Encrypted: false }
  }

  /** Keeps accepted records and, with dataDir, writes them as one object (as Firehose concatenates them). */
  async #deliver (name: string, stream: Stream, data: readonly Buffer[]): Promise<string[]> {
    if (data.length === 0) return []
    const arrivedAt = this.#now()
    let key: string | null = null
    if (this.#opts.dataDir !== undefined) {
      const p = (n: number): string => String(n).padStart(2, '0')
      const d = arrivedAt
      const stamp = `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}-${p(d.getUTCHours())}-${p(d.getUTCMinutes())}-${p(d.getUTCSeconds())}`
      // Firehose names objects <stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid> under the expanded prefix.
      key = `${expandPrefix(stream.prefix, arrivedAt)}${name}-1-${stamp}-${randomUUID()}${this.#opts.fileExtension ?? '.json'}`
      const root = resolve(this.#opts.dataDir)
      const file = resolve(root, key)
      if (!file.startsWith(root + sep)) throw new AwsError('InternalFailure', 'object key escapes dataDir', 500)
      await mkdir(dirname(file), { recursive: true })
      // Written aside and renamed: a reader globbing the layout never sees half an object.
      const tmp = join(dirname(file), `.${randomUUID()}.tmp`)
      await writeFile(tmp, Buffer.concat(data))
      await rename(tmp, file)
    }
    const ids = data.map((d) => {
      const recordId = randomBytes(42).toString('base64')
      stream.records.push({ recordId, data: d, arrivedAt, key })
      return recordId
    })
    this.#trim(stream.records)
    return ids
  }

  // ---- Secrets Manager -------------------------------------------------------------------------------------------

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

  // ---- SSM -------------------------------------------------------------------------------------------------------

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
      ARN: `arn:aws:ssm:${this.region}:${this.accountId}:parameter${arnPath}`,
      DataType: 'text'
    }
  }

  #lookupParameter (name: string): StoredParameter | undefined {
    const arnPrefix = `arn:aws:ssm:${this.region}:${this.accountId}:parameter`
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

async function readBody (req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY_BYTES) throw new AwsError('RequestEntityTooLargeException', `request body exceeds ${MAX_BODY_BYTES} bytes`, 413)
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

/**
 * Starts an endpoint: what a test, `pix-proxy` command or docker-compose service calls.
 * @throws PixProxyError AWS_LOCAL_ENDPOINT when the port cannot be bound or an option is invalid.
 */
export async function startLocalAwsEndpoint (opts: LocalAwsEndpointOptions = {}): Promise<LocalAwsEndpoint> {
  return await new LocalAwsEndpoint(opts).start()
}

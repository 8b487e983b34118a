/**
 * A small local stand-in for the AWS services pix-proxy calls: Firehose (PutRecordBatch, PutRecord), Secrets
 * Manager (GetSecretValue), SSM Parameter Store (GetParameter, GetParameters, GetParametersByPath), KMS (Sign,
 * Verify, GetPublicKey, DescribeKey on seeded asymmetric keys) and S3 (GetObject: the gateway's
 * truststore and CRLs; s3.ts). It speaks the AWS JSON 1.1 protocol the SDK v3 clients use (S3: REST, path-style), so the real clients reach it through `endpoint` with static
 * fake credentials, and it can fail on command (throttling, partial batch failures, outages, latency) so the audit
 * pipeline and configuration loading are tested against the failures they must survive.
 *
 * No emulator for these services exists in the npm registry or Debian. Behaviour follows the AWS API references;
 * where AWS does not document a detail (the error for a too-large PutRecordBatch, the HTTP status of Firehose's
 * ServiceUnavailableException) the choice is noted where it is made.
 *
 * Differences from AWS that matter: delivered Firehose records are written at once (no buffering interval), as
 * JSON lines even when the real stream would convert them to Parquet; one object per accepted call.
 *
 * This file is the server: routing by X-Amz-Target (S3: a GET without one), SigV4 (sigv4.ts), the call log
 * and fault injection. Each service is a handler with its own state and protocol errors: firehose.ts, kms.ts,
 * secrets-manager.ts, ssm.ts, s3.ts.
 */
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { DEFAULT_DELIVERY_STREAMS, FirehoseHandler } from './firehose.ts'
import type { DeliveredRecord, RecordFault } from './firehose.ts'
import { KmsHandler } from './kms.ts'
import type { KmsRequestQuota, LocalKmsKey } from './kms.ts'
import { AwsError, defaultStatus } from './protocol.ts'
import type { ServiceHandler } from './protocol.ts'
import { SecretsManagerHandler } from './secrets-manager.ts'
import type { LocalSecret } from './secrets-manager.ts'
import { checkSigV4 } from './sigv4.ts'
import { S3Handler, s3ErrorXml } from './s3.ts'
import { SsmHandler } from './ssm.ts'
import type { LocalParameter } from './ssm.ts'

export { DEFAULT_DELIVERY_STREAMS, expandPrefix } from './firehose.ts'
export type { LocalParameter, SsmParameterType } from './ssm.ts'
export type { LocalSecret } from './secrets-manager.ts'
export type { KmsRequestQuota, LocalKmsKey } from './kms.ts'

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
  /** KMS keys to seed (a fresh RSA-2048 pair for each entry without a PEM). */
  readonly kmsKeys?: readonly LocalKmsKey[]
  /** Seed of the generator behind random partial failures, so a failing run can be replayed. */
  readonly seed?: number
  /**
   * How many delivered records per stream, and calls in the call log, are kept in memory (the oldest go first).
   * Default: all, for tests; a long-running endpoint (docker-compose under load) sets a bound and reads dataDir.
   */
  readonly retain?: number
  /** Milliseconds on a monotonic clock, for the KMS request quota's token bucket. Default performance.now. */
  readonly monotonicMs?: () => number
  /** Clock for arrival times and partitions (the signature's skew is checked against the real clock the SDK signs with). */
  readonly now?: () => Date
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
 * service prefix (`Firehose_20150804`, `AmazonSSM`, `secretsmanager`, `TrentService`, `S3` for S3's `S3.GetObject`); absent, every call matches. `times` is how
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

/**
 * Calls matching `target` are answered late: after `ms`, or held until `until` settles (tests: latency released on a
 * barrier, so what happens while a call is held does not depend on how fast the machine is). `onHeld` is told of
 * each call as it starts waiting (tests count the calls the endpoint holds).
 */
export interface LatencyFault {
  readonly target?: string
  readonly ms?: number
  readonly until?: Promise<unknown>
  readonly onHeld?: () => void
  readonly times?: number
}

async function delay (f: LatencyFault): Promise<void> {
  f.onHeld?.()
  if (f.ms !== undefined) await sleep(f.ms, undefined, { ref: false })
  if (f.until !== undefined) await f.until.then(() => {}, () => {})
}

/**
 * `refuse`: stop listening (connection refused, as when the service or the VPC endpoint is unreachable);
 * `503`: answer every call ServiceUnavailableException; `hang`: accept and never answer (client timeouts).
 */
export type OutageMode = 'refuse' | '503' | 'hang'

const JSON_11 = 'application/x-amz-json-1.1'
const MAX_BODY_BYTES = 16 * 1024 * 1024

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
  readonly #firehose: FirehoseHandler
  readonly #ssm: SsmHandler
  readonly #secretsManager: SecretsManagerHandler
  readonly #kms: KmsHandler
  readonly #s3: S3Handler
  /** X-Amz-Target prefix → the service's handler. */
  readonly #services: ReadonlyMap<string, ServiceHandler>
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
    this.#firehose = new FirehoseHandler({
      accountId: this.accountId,
      now: this.#now,
      dataDir: opts.dataDir,
      fileExtension: opts.fileExtension,
      retain: opts.retain,
      takeRecordFaults: (match, limit) => this.#take(this.#recordFaults, match, limit),
      random: this.#random
    })
    this.#ssm = new SsmHandler({ region: this.region, accountId: this.accountId, now: this.#now })
    this.#secretsManager = new SecretsManagerHandler({ region: this.region, accountId: this.accountId, now: this.#now })
    this.#kms = new KmsHandler({ region: this.region, accountId: this.accountId, now: this.#now, ...(opts.monotonicMs === undefined ? {} : { monotonicMs: opts.monotonicMs }) })
    this.#s3 = new S3Handler({ now: this.#now })
    this.#services = new Map([this.#firehose, this.#secretsManager, this.#ssm, this.#kms].map((h) => [h.targetPrefix, h]))
    for (const [name, prefix] of Object.entries(opts.deliveryStreams ?? DEFAULT_DELIVERY_STREAMS)) this.createDeliveryStream(name, prefix)
    for (const p of opts.parameters ?? []) this.putParameter(p)
    for (const s of opts.secrets ?? []) this.putSecret(s)
    for (const k of opts.kmsKeys ?? []) this.putKmsKey(k)
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
    this.#firehose.createDeliveryStream(name, prefixTemplate)
  }

  /** Records accepted on `stream`, in arrival order. */
  delivered (stream: string): readonly DeliveredRecord[] {
    return this.#firehose.delivered(stream)
  }

  /** Sets (or overwrites, with a new version) a Parameter Store parameter. */
  putParameter (p: LocalParameter): void {
    this.#ssm.putParameter(p)
  }

  deleteParameter (name: string): void {
    this.#ssm.deleteParameter(name)
  }

  /** Creates a secret or adds a new AWSCURRENT version; returns its ARN. */
  putSecret (s: LocalSecret): string {
    return this.#secretsManager.putSecret(s)
  }

  /** Seeds a KMS key (a fresh RSA-2048 pair when `privateKeyPem` is absent); returns its ARN. */
  putKmsKey (k: LocalKmsKey = {}): string {
    return this.#kms.putKey(k)
  }

  /** Enables or disables a KMS key (key id, ARN or alias), as EnableKey and DisableKey would. */
  setKmsKeyEnabled (keyId: string, enabled: boolean): void {
    this.#kms.setKeyEnabled(keyId, enabled)
  }

  /** A new version of an S3 object (the bucket is made when missing), as `aws s3 cp` would put it. */
  putObject (bucket: string, key: string, body: string | Uint8Array, contentType?: string): { etag: string, versionId: string } {
    return this.#s3.putObject(bucket, key, body, contentType)
  }

  deleteObject (bucket: string, key: string): void {
    this.#s3.deleteObject(bucket, key)
  }

  // ---- control: failures -----------------------------------------------------------------------------------------

  /** KMS's request quota on Sign and Verify (ThrottlingException beyond it); null lifts it. See kms.ts. */
  setKmsRequestQuota (quota: KmsRequestQuota | null): void {
    this.#kms.setRequestQuota(quota)
  }

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

  /** In a `hang` outage: keeps the call unanswered (until restore or close) and says so. */
  #hangIfOutage (res: ServerResponse): boolean {
    if (this.#outage !== 'hang') return false
    this.#hanging.add(res)
    res.once('close', () => this.#hanging.delete(res))
    return true
  }

  #releaseHanging (): void {
    for (const res of this.#hanging) res.destroy()
    this.#hanging.clear()
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.headers['x-amz-target'] === undefined && req.method !== 'POST') {
      await this.#handleS3(req, res)
      return
    }
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
      if (this.#hangIfOutage(res)) return
      if (this.#outage === '503') throw new AwsError('ServiceUnavailableException', 'Service Unavailable', 503)
      if (req.method !== 'POST') throw new AwsError('UnknownOperationException', `${req.method ?? '?'} is not an AWS JSON 1.1 call`, 404)
      const dot = target.indexOf('.')
      const service = this.#services.get(target.slice(0, dot))
      if (dot < 0 || service === undefined) throw new AwsError('UnknownOperationException', `unknown X-Amz-Target ${JSON.stringify(target)}`)
      const auth = checkSigV4({ method: req.method, url: req.url ?? '/', headers: req.headers, body }, {
        service: service.signingName,
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
      for (const f of this.#take(this.#latencyFaults, (r) => matchesTarget(r.target, target))) await delay(f)
      const stream = typeof input.DeliveryStreamName === 'string' ? input.DeliveryStreamName : undefined
      const [fault] = this.#take(this.#callFaults, (r) => matchesTarget(r.target, target) && (r.stream === undefined || r.stream === stream), 1)
      if (fault !== undefined) {
        throw new AwsError(fault.errorType, fault.message ?? (fault.errorType === 'ThrottlingException' ? 'Rate exceeded' : 'Slow down.'), fault.status ?? defaultStatus(fault.errorType))
      }
      send(200, await service.dispatch(target, input))
    } catch (err) {
      if (err instanceof AwsError) sendError(err)
      else sendError(new AwsError('InternalFailure', `local endpoint: ${(err as Error).message}`, 500))
    }
  }

  /** S3's REST calls: the same outages, faults, latency and call log as the JSON services, errors as S3 XML. */
  async #handleS3 (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET'
    const target = this.#s3.target(method)
    const requestId = randomUUID()
    const write = (status: number, headers: Record<string, string | number>, body: Buffer | string, errorType: string | null = null): void => {
      this.#calls.push({ target, status, errorType, at: this.#now() })
      this.#trim(this.#calls)
      if (res.destroyed) return
      res.writeHead(status, { ...headers, 'x-amz-request-id': requestId })
      res.end(body)
    }
    try {
      const body = await readBody(req)
      if (this.#hangIfOutage(res)) return
      if (this.#outage === '503') throw new AwsError('ServiceUnavailable', 'Please reduce your request rate.', 503)
      const auth = checkSigV4({ method, url: req.url ?? '/', headers: req.headers, body }, {
        service: this.#s3.signingName,
        s3: true,
        now: new Date(),
        ...(this.#opts.credentials === undefined ? {} : { secrets: this.#opts.credentials })
      })
      // S3's names for these: a missing or malformed signature is AccessDenied, a wrong one SignatureDoesNotMatch.
      if (!auth.ok) throw new AwsError(auth.errorType === 'InvalidSignatureException' ? 'SignatureDoesNotMatch' : auth.errorType === 'UnrecognizedClientException' ? 'InvalidAccessKeyId' : 'AccessDenied', auth.message, 403)
      for (const f of this.#take(this.#latencyFaults, (r) => matchesTarget(r.target, target))) await delay(f)
      const [fault] = this.#take(this.#callFaults, (r) => matchesTarget(r.target, target), 1)
      if (fault !== undefined) throw new AwsError(fault.errorType, fault.message ?? 'Please reduce your request rate.', fault.status ?? defaultStatus(fault.errorType))
      const answer = this.#s3.handle(method, req.url ?? '/', req.headers)
      write(answer.status, answer.headers, answer.body)
    } catch (err) {
      const e = err instanceof AwsError ? err : new AwsError('InternalError', `local endpoint: ${(err as Error).message}`, 500)
      const xml = s3ErrorXml(e.errorType, e.message, requestId)
      write(e.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) }, xml, e.errorType)
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

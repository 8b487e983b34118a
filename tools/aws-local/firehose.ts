/**
 * Firehose for the local AWS endpoint (endpoint.ts): PutRecordBatch and PutRecord over AWS JSON 1.1 (target prefix
 * `Firehose_20150804`), with the delivery streams and the records they accepted, written under dataDir as Firehose
 * lays them out in S3.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { dirname, join, resolve, sep } from 'node:path'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { AwsError, defaultStatus, unknownOperation, validation } from './protocol.ts'
import type { ServiceHandler } from './protocol.ts'

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

/** A Firehose record the endpoint accepted. */
export interface DeliveredRecord {
  readonly recordId: string
  readonly data: Buffer
  readonly arrivedAt: Date
  /** The object it was written to, relative to dataDir (null without dataDir). */
  readonly key: string | null
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
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

interface Stream {
  prefix: string
  records: DeliveredRecord[]
}

export interface FirehoseOptions {
  readonly accountId: string
  readonly now: () => Date
  /** When set, delivered records are also written under it, laid out like the stream's S3 prefix. */
  readonly dataDir?: string | undefined
  /** Extension of the objects written under dataDir. Default `.json`. */
  readonly fileExtension?: string | undefined
  /** How many delivered records per stream are kept in memory (the oldest go first). Default: all. */
  readonly retain?: number | undefined
  /** The record faults (endpoint.ts's failRecords) matching, consuming one use of each (at most `limit`). */
  readonly takeRecordFaults: (match: (r: RecordFault) => boolean, limit?: number) => RecordFault[]
  /** The seeded generator behind random partial failures. */
  readonly random: () => number
}

export class FirehoseHandler implements ServiceHandler {
  readonly targetPrefix = 'Firehose_20150804'
  readonly signingName = 'firehose'
  readonly #opts: FirehoseOptions
  readonly #streams = new Map<string, Stream>()

  constructor (opts: FirehoseOptions) {
    this.#opts = opts
  }

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

  dispatch (target: string, input: Record<string, unknown>): unknown {
    switch (target) {
      case 'Firehose_20150804.PutRecordBatch': return this.#putRecordBatch(input)
      case 'Firehose_20150804.PutRecord': return this.#putRecord(input)
      default: throw unknownOperation(target)
    }
  }

  #stream (input: Record<string, unknown>): [string, Stream] {
    const name = input.DeliveryStreamName
    if (typeof name !== 'string' || !STREAM_NAME_RE.test(name)) {
      throw validation(JSON.stringify(name), 'deliveryStreamName', 'Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+')
    }
    const s = this.#streams.get(name)
    if (s === undefined) throw new AwsError('ResourceNotFoundException', `Firehose ${name} under account ${this.#opts.accountId} not found.`)
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
    for (const f of this.#opts.takeRecordFaults((r) => r.stream === undefined || r.stream === name)) {
      const code = f.errorCode ?? 'ServiceUnavailableException'
      for (const i of f.indexes ?? []) if (i >= 0 && i < data.length) failed.set(i, code)
      if (f.probability !== undefined) for (let i = 0; i < data.length; i++) if (this.#opts.random() < f.probability) failed.set(i, code)
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
    const [f] = this.#opts.takeRecordFaults((r) => (r.stream === undefined || r.stream === name) &&
      ((r.indexes ?? []).includes(0) || (r.probability !== undefined && this.#opts.random() < r.probability)), 1)
    if (f !== undefined) throw new AwsError(f.errorCode ?? 'ServiceUnavailableException', 'Slow down.', defaultStatus(f.errorCode ?? 'ServiceUnavailableException'))
    const [id] = await this.#deliver(name, stream, [data])
    return { RecordId: id, Encrypted: false }
  }

  /** Keeps accepted records and, with dataDir, writes them as one object (as Firehose concatenates them). */
  async #deliver (name: string, stream: Stream, data: readonly Buffer[]): Promise<string[]> {
    if (data.length === 0) return []
    const arrivedAt = this.#opts.now()
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

  #trim (list: unknown[]): void {
    const max = this.#opts.retain ?? Infinity
    if (list.length > max) list.splice(0, list.length - max)
  }
}

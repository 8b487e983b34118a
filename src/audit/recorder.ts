/**
 * What the routes call to audit a transaction: `begin()` makes the request half durable in the spool BEFORE the
 * message leaves for BACEN (if it cannot, the request is refused and nothing is sent: an unaudited transaction
 * must not happen); the returned transaction's `end()` or `fail()` appends the outcome. Disabled auditing (for
 * benchmarks only) hands out transactions that do nothing.
 */
import type { AuditRequestHalf, AuditResponseHalf } from './spool.ts'
import type { AuditJournal } from './service.ts'
import { factColumns } from '../../core/pix/facts.ts'
import type { FactColumns, MessageFacts } from '../../core/pix/facts.ts'
import { uuidv7 } from './id.ts'

export interface BeginInput {
  readonly system: 'spi' | 'dict'
  /** When the proxy received the caller's request (epoch ms) and the performance.now() of that moment. */
  readonly receivedAt: number
  readonly receivedPerf: number
  readonly method: string
  /** Path and query as sent upstream. */
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  readonly body: string | Buffer | null
  readonly facts: MessageFacts
  readonly correlationId: string
  /** The request's W3C trace id (app.ts, http/trace.ts); omitted or null, the row's trace_id is null. */
  readonly traceId?: string | null
}

export interface EndInput {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: Buffer
  readonly signatureValid: boolean | null
  readonly signatureCode: string | null
  readonly upstreamMs: number
  /** Set when the proxy refused the answer (e.g. the reject policy for an invalid signature). */
  readonly errorCode?: string | null
  /**
   * Facts only the answer holds: the SPI messages an ICOM stream page delivered. Those known replace the request
   * half's message_type, biz_msg_id and end_to_end_ids in the row; unknown ones (null, empty) leave them as begun.
   */
  readonly facts?: MessageFacts | null
}

export interface AuditTx {
  readonly id: string | null
  end (res: EndInput): Promise<void>
  fail (errorCode: string, upstreamMs?: number | null): Promise<void>
}

const NOOP_TX: AuditTx = Object.freeze({ id: null, end: async () => {}, fail: async () => {} })

/** Told how long each request waited for its audit half to be durable: the latency auditing adds to a call. */
export type AuditWaitObserver = (half: 'begin' | 'end', ms: number) => void

export class AuditRecorder {
  private readonly spool: AuditJournal | null
  private readonly instanceId: string
  private readonly onWait: AuditWaitObserver | null

  constructor (spool: AuditJournal | null, instanceId: string, onWait: AuditWaitObserver | null = null) {
    this.spool = spool
    this.instanceId = instanceId
    this.onWait = onWait
  }

  private async timed (half: 'begin' | 'end', p: Promise<void>, t0: number): Promise<void> {
    await p
    this.onWait?.(half, performance.now() - t0)
  }

  get enabled (): boolean {
    return this.spool !== null
  }

  /** @throws the spool's error (e.g. full): the caller must not send the message. */
  async begin (input: BeginInput): Promise<AuditTx> {
    const spool = this.spool
    if (spool === null) return NOOP_TX
    const t0 = performance.now()
    const q = input.path.indexOf('?')
    const body = input.body === null ? null : (typeof input.body === 'string' ? input.body : input.body.toString('utf8'))
    const row: AuditRequestHalf = {
      id: uuidv7(input.receivedAt),
      request_date: new Date(input.receivedAt).toISOString(),
      system: input.system,
      request_method: input.method,
      request_path: q < 0 ? input.path : input.path.slice(0, q),
      request_query: q < 0 ? null : input.path.slice(q + 1),
      request_header: JSON.stringify(input.headers),
      request_body: body,
      ...factColumns(input.facts),
      dict_request_id: input.facts.dictRequestId,
      dict_key: input.facts.dictKey,
      correlation_id: input.correlationId,
      instance_id: this.instanceId,
      trace_id: input.traceId ?? null
    }
    await this.timed('begin', spool.begin(row), t0)
    const id = row.id
    const total = (): number => Math.round((performance.now() - input.receivedPerf) * 1000) / 1000
    return {
      id,
      end: async (res: EndInput) => {
        const t1 = performance.now()
        const half: AuditResponseHalf = {
          response_status_code: res.status,
          response_header: JSON.stringify(res.headers),
          response_body: res.body.length === 0 ? null : res.body.toString('utf8'),
          response_signature_valid: res.signatureValid,
          response_signature_code: res.signatureCode,
          error_code: res.errorCode ?? null,
          upstream_latency_ms: Math.round(res.upstreamMs * 1000) / 1000,
          total_latency_ms: total()
        }
        if (res.facts != null) {
          for (const [k, v] of Object.entries(factColumns(res.facts)) as Array<[keyof FactColumns, string | null]>) {
            if (v !== null) half[k] = v
          }
        }
        await this.timed('end', spool.end(id, half), t1)
      },
      fail: async (errorCode: string, upstreamMs: number | null = null) => {
        const t1 = performance.now()
        await this.timed('end', spool.end(id, {
          response_status_code: null,
          error_code: errorCode,
          upstream_latency_ms: upstreamMs === null ? null : Math.round(upstreamMs * 1000) / 1000,
          total_latency_ms: total()
        }), t1)
      }
    }
  }
}

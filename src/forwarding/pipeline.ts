/**
 * The forwarding pipeline: the life of every call to BACEN, in one place. audit begin → send → read → verify →
 * audit end → answer, with a per-system policy (which answers BACEN signs, what an answer must be about, how the
 * message is sent), and the outcome class every failure gets (docs/outcomes.md).
 *
 * A plain object with explicit dependencies (the upstream pools, the audit journal, BACEN's trust store, metrics,
 * the policy on invalid signatures, the call deadline): routes parse, sign and pick the policy; plugins/forwarding.ts
 * builds it for the app; unit tests drive it without Fastify (test/forwarding/pipeline.test.ts).
 *
 * Only headers BACEN documents go upstream (ICOM answers 400 to anything else, tracing headers included), Host
 * carries no port (BACEN closes the connection otherwise), requests are never compressed, responses are requested
 * with gzip and decompressed (with a bound) before their signature is checked.
 */
import { gunzip } from 'node:zlib'
import { promisify } from 'node:util'
import type { AuditTx, BeginInput } from '../audit/recorder.ts'
import { emptyFacts } from '../../core/pix/facts.ts'
import type { MessageFacts } from '../../core/pix/facts.ts'
import { MAX_RESPONSE_BYTES } from '../upstream/client.ts'
import type { Upstream, UpstreamResponse } from '../upstream/client.ts'
import type { TrustStore } from '../../core/xmldsig/truststore.ts'
import type { VerifyResult } from '../../core/xmldsig/verify.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { answeredError, OUTCOME_HEADER, outcomeOf, outcomeUnknown } from './outcome.ts'
import { checkResponse, NOT_APPLICABLE, relayedHeaders, SIGNATURE_CODE_HEADER, SIGNATURE_VALID_HEADER } from './answer.ts'
import type { Binding, CheckedBody, SignedAnswers, UpstreamAnswer } from './answer.ts'

export type { Binding, CheckedBody, SignedAnswers, UpstreamAnswer }

const gunzipAsync = promisify(gunzip)

/** A request for BACEN, as the routes build it: the system, and exactly what goes on the wire. */
export interface UpstreamCall {
  readonly name: 'dict' | 'spi'
  readonly method: string
  readonly path: string
  readonly headers: Record<string, string>
  readonly body?: Buffer | string
}

/** The caller's request, as far as the pipeline needs it (plugins/forwarding.ts makes one from a Fastify request). */
export interface CallContext {
  /** When the proxy received the request (epoch ms), and the performance.now() of that moment. */
  readonly receivedAt: number
  readonly receivedPerf: number
  /** The request id (x-request-id), the audit row's correlation id. */
  readonly id: string
  readonly traceId: string | null
  readonly log: PipelineLog
  /** True once the caller's connection is gone: nothing is sent for it then. */
  gone (): boolean
}

export interface PipelineLog {
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

/** How the pipeline reports what it sees (plugins/forwarding.ts binds them to Prometheus). */
export interface PipelineMetrics {
  /** An answer from BACEN (its status) or none ('error'). */
  upstream (name: 'dict' | 'spi', status: number | 'error', ms?: number): void
  verdict (name: 'dict' | 'spi', r: VerifyResult): void
  /** A failure the caller does not hear about (an audit end that failed after BACEN answered). */
  error (code: string): void
}

/** Where a call's audit row begins (audit/recorder.ts AuditRecorder). */
export interface Journal {
  begin (input: BeginInput): Promise<AuditTx>
}

/** Spans around the stages (http/tracing.ts); without it, none. */
export interface PipelineTracing {
  bacenCall: <T extends { readonly status: number }>(call: { readonly name: string, readonly method: string }, send: () => Promise<T>) => Promise<T>
  verify: <T extends { readonly code: string, readonly valid: boolean, readonly results: readonly unknown[] }>(check: () => T) => T
}

const UNTRACED: PipelineTracing = {
  bacenCall: async (_call, send) => await send(),
  verify: (check) => check()
}

export interface ForwardingDeps {
  readonly upstreams: Readonly<Record<'dict' | 'spi', Upstream>>
  readonly journal: Journal
  /** BACEN's signing certificates, read at each verification (a reload takes effect at once). */
  readonly trust: () => TrustStore
  readonly metrics: PipelineMetrics
  /** PIXPROXY_INVALID_SIGNATURE_POLICY: refuse an answer whose BACEN signature is not VALID, or relay it flagged. */
  readonly invalidSignaturePolicy: 'reject' | 'flag'
  /** PIXPROXY_UPSTREAM_DEADLINE_MS: the whole call, answer included. */
  readonly deadlineMs: number
  readonly tracing?: PipelineTracing
}

/** What a route's calls are, for the pipeline. */
export interface Policy {
  /** The system's name in messages: 'DICT', 'ICOM', 'ICOM stream'. */
  readonly label: string
  readonly signed: SignedAnswers
  /** What a 2xx answer must be about (answer.ts Binding); refused whatever its signature otherwise. */
  readonly bind?: Binding
  /** An ICOM stream page: the row records the messages the page delivered instead of the request's. */
  readonly delivers?: boolean
  /**
   * How the message goes (ICOM's 429 retry, the batcher); by default one `send`. Its errors get their outcome class
   * here like the default's.
   */
  readonly send?: (call: UpstreamCall, pipeline: Forwarding) => Promise<UpstreamAnswer>
}

/** The answer for the caller: BACEN's, with the headers the caller may see and the verdict on its signature. */
export interface Relayed {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Buffer
}

function hostWithoutPort (origin: string): string {
  return new URL(origin).hostname
}

function errorCodeOf (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code !== '' ? code : Errors.INTERNAL.code
}

export function signatureRejection (name: string, checked: CheckedBody, status: number): PixProxyError {
  const first = checked.results.find((r) => r.code !== 'VALID')
  return answeredError(new PixProxyError(Errors.UPSTREAM_SIGNATURE_INVALID, [name, checked.code, first?.message ?? ''], { extensions: { signatureCode: checked.code } }), status)
}

export class Forwarding {
  readonly #d: ForwardingDeps
  readonly #tracing: PipelineTracing

  constructor (deps: ForwardingDeps) {
    this.#d = deps
    this.#tracing = deps.tracing ?? UNTRACED
  }

  /** Exactly the headers sent to BACEN for a call (also what the audit row records). */
  headersFor (call: UpstreamCall): Record<string, string> {
    return { host: hostWithoutPort(this.#d.upstreams[call.name].origin), 'accept-encoding': 'gzip', 'user-agent': 'pix-proxy', ...call.headers }
  }

  /**
   * Sends one request to BACEN and returns its whole, decompressed answer; the upstream client (upstream/client.ts) maps
   * every transport failure to its stable code. The whole call, answer included, has one deadline
   * (PIXPROXY_UPSTREAM_DEADLINE_MS): undici's timeouts bound the wait for headers and between two body chunks, so an
   * answer dribbled a byte at a time would hold its ICOM slot for as long as BACEN kept dribbling. Not audited:
   * `forward` is; a policy's `send` uses this.
   */
  async send (call: UpstreamCall): Promise<UpstreamAnswer> {
    const started = performance.now()
    const { metrics } = this.#d
    let res: UpstreamResponse
    try {
      res = await this.#d.upstreams[call.name].request({
        method: call.method,
        path: call.path,
        headers: this.headersFor(call),
        ...(call.body === undefined ? {} : { body: call.body }),
        deadlineMs: this.#d.deadlineMs
      })
    } catch (err) {
      metrics.upstream(call.name, 'error')
      throw err
    }
    const upstreamMs = performance.now() - started
    metrics.upstream(call.name, res.statusCode, upstreamMs)
    const { headers } = res
    const raw = res.body
    let body = raw
    const encoding = headers['content-encoding']?.toLowerCase()
    if (encoding === 'gzip' && raw.length > 0) {
      try {
        body = await gunzipAsync(raw, { maxOutputLength: MAX_RESPONSE_BYTES })
      } catch (err) {
        throw answeredError(new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [call.name, `gzip body: ${(err as Error).message}`], { cause: err }), res.statusCode)
      }
    } else if (encoding !== undefined && encoding !== 'identity' && raw.length > 0) {
      throw answeredError(new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, [call.name, `unsupported Content-Encoding ${encoding}`]), res.statusCode)
    }
    delete headers['content-encoding']
    return { status: res.statusCode, headers, body, upstreamMs }
  }

  /**
   * One audited round trip, and the outcome class the caller hears.
   *
   * The request half of the row is durable in the spool before the message leaves (a spool that cannot take it
   * refuses the request: nothing is sent). Whatever throws after begin (the call, an answer that cannot be read or
   * verified), the `finally` below ends a row not yet ended, with the caller's error code and, when BACEN answered,
   * its answer: no row stays open, so the spool's oldest segment can always be shipped and deleted.
   *
   * Nothing is sent for a caller whose connection closed while the request waited: CLIENT_GONE, NOT SENT.
   *
   * Outcome classes (docs/outcomes.md), decided here and nowhere else:
   * - an error of the send whose class is `not-sent` (a connection never made, no ICOM slot) passes through unchanged;
   * - any other error of the send, and any error after BACEN answered that is not an `answered` refusal, may follow a
   *   message that BACEN received: it becomes UPSTREAM_OUTCOME_UNKNOWN, with the message's identifiers and advice;
   * - a failure to record BACEN's answer in the row (the spool's disk full, a stuck audit thread) does not hide that
   *   answer from the core: the answer is relayed and the failure logged. The row's request half is durable; the
   *   spool, failed, refuses every later request, and its replay at the next start closes the row AUDIT_INCOMPLETE.
   *
   * After BACEN answered: its signature checked, the row finished with the verdict (and the refusal code when the
   * reject policy applies), then the answer returned for relaying or the refusal thrown (ANSWERED, with BACEN's
   * status). A stream page refused under `reject` is withheld and not acknowledged: the refusal carries no
   * PI-Pull-Next, so the core reads the same path again and ICOM serves the same page again (docs/bacen.md §2.3).
   * Under `flag` it is delivered, each message flagged with its own verdict. With `bind`, a 2xx answer about another
   * request (another key, claim; a stream message to another participant) is refused whatever the policy and however
   * valid its signature: UPSTREAM_ANSWER_MISMATCH, ANSWERED, withheld like an invalid page.
   */
  async forward (ctx: CallContext, call: UpstreamCall, facts: MessageFacts, policy: Policy): Promise<Relayed> {
    const tx = await this.#d.journal.begin({
      system: call.name,
      receivedAt: ctx.receivedAt,
      receivedPerf: ctx.receivedPerf,
      method: call.method,
      path: call.path,
      headers: this.headersFor(call),
      body: call.body ?? null,
      facts,
      correlationId: ctx.id,
      traceId: ctx.traceId
    })
    let answer: UpstreamAnswer | undefined
    let ended = false
    let failure: { err: unknown } | null = null
    try {
      // A caller that gave up while its request waited (an audit write that stalled, a queue) has already decided
      // what to do without an answer, perhaps to send again: a message sent now would be a second one nobody expects.
      if (ctx.gone()) throw new PixProxyError(Errors.CLIENT_GONE)
      try {
        const send = policy.send
        answer = await this.#tracing.bacenCall(call, async () => send === undefined ? await this.send(call) : await send(call, this))
      } catch (err) {
        if (outcomeOf(err) === 'not-sent') throw err
        ctx.log.warn({ err, auditId: tx.id }, 'the request may have reached BACEN: its outcome is unknown')
        throw outcomeUnknown(call, facts, err, err instanceof PixProxyError ? err.extensions.upstreamStatus : undefined)
      }
      let checked: CheckedBody
      const delivered = policy.delivers === true ? emptyFacts() : undefined
      try {
        const a = answer
        checked = this.#tracing.verify(() => checkResponse(call.name, call.name, a, {
          trust: this.#d.trust(),
          signed: policy.signed,
          onVerdict: (r) => { this.#d.metrics.verdict(call.name, r) },
          ...(delivered === undefined ? {} : { delivered }),
          ...(policy.bind === undefined ? {} : { bind: policy.bind })
        }))
      } catch (err) {
        if (outcomeOf(err) === 'answered') throw answeredError(err as PixProxyError, answer.status)
        ctx.log.warn({ err, auditId: tx.id }, 'BACEN answered but the answer could not be handled: its outcome is unknown to the caller')
        throw outcomeUnknown(call, facts, err, answer.status)
      }
      // Nothing to verify is not a failure; anything else short of VALID is.
      const reject = checked.code !== 'VALID' && checked.code !== NOT_APPLICABLE && this.#d.invalidSignaturePolicy === 'reject'
      const mismatch = reject ? null : checked.mismatch ?? null
      const refusal = reject ? Errors.UPSTREAM_SIGNATURE_INVALID.code : mismatch !== null ? Errors.UPSTREAM_ANSWER_MISMATCH.code : null
      ended = true
      try {
        await tx.end({
          status: answer.status,
          headers: relayedHeaders(answer),
          body: answer.body,
          signatureValid: checked.code === NOT_APPLICABLE ? null : checked.valid,
          signatureCode: checked.code,
          upstreamMs: answer.upstreamMs,
          errorCode: refusal,
          facts: delivered ?? null
        })
      } catch (err) {
        this.#d.metrics.error(errorCodeOf(err))
        ctx.log.error({ err, auditId: tx.id, code: errorCodeOf(err) }, 'cannot record BACEN\'s answer in the audit row: the answer is relayed; the row is closed when the spool is replayed')
      }
      if (reject) throw signatureRejection(policy.label, checked, answer.status)
      if (mismatch !== null && policy.bind !== undefined) {
        const got = mismatch.got === null ? '(none)' : JSON.stringify(mismatch.got.slice(0, 80))
        throw answeredError(new PixProxyError(Errors.UPSTREAM_ANSWER_MISMATCH, [policy.label, policy.bind.what, got, policy.bind.what, policy.bind.expected.join(' or ')], { extensions: { signatureCode: checked.code } }), answer.status)
      }
      const headers: Record<string, string> = {
        ...relayedHeaders(answer),
        [OUTCOME_HEADER]: 'answered',
        [SIGNATURE_VALID_HEADER]: String(checked.valid),
        [SIGNATURE_CODE_HEADER]: checked.code
      }
      if (checked.contentType !== undefined) headers['content-type'] = checked.contentType
      return { status: answer.status, headers, body: checked.body }
    } catch (err) {
      failure = { err }
      throw err
    } finally {
      if (!ended) {
        ended = true
        const code = failure === null ? Errors.INTERNAL.code : errorCodeOf(failure.err)
        try {
          if (answer === undefined) {
            await tx.fail(code)
          } else {
            await tx.end({ status: answer.status, headers: relayedHeaders(answer), body: answer.body, signatureValid: null, signatureCode: null, upstreamMs: answer.upstreamMs, errorCode: code })
          }
        } catch (endErr) {
          // The spool failed under us: the caller's answer is the original failure, the log says why the row is open.
          ctx.log.error({ err: endErr, auditId: tx.id, code }, 'cannot end the audit row')
        }
      }
    }
  }
}

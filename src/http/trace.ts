/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) for the callers' requests: a valid `traceparent` from
 * the core gives the request its trace id; an absent or invalid one is never refused, the proxy starts a trace of
 * its own. The trace id is in every log line of the request (app.ts binds it into the request's logger), in the
 * audit row (`trace_id`) and in the `traceparent` answered to the caller, whose parent-id is the proxy's own span
 * id for this request, so the core can correlate.
 *
 * Nothing of it goes to BACEN: only headers BACEN documents are sent upstream (forwarding/pipeline.ts), and ICOM answers
 * 400 to tracing headers (docs/bacen.md §2.5).
 *
 * Why no library: parsing is one regular expression and ids are random bytes. OpenTelemetry's
 * W3CTraceContextPropagator needs @opentelemetry/api and @opentelemetry/core and a context/carrier model the proxy
 * has no use for; and this must work, and cost nothing, with span export off. When PIXPROXY_OTLP_ENDPOINT is set,
 * http/tracing-otel.ts exports spans that continue this context (the server span has this trace id and span id).
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

export interface TraceContext {
  /** 32 lowercase hex digits, not all zeros: the caller's, or a fresh one. */
  readonly traceId: string
  /** The proxy's span for this request: 16 lowercase hex digits, not all zeros. */
  readonly spanId: string
  /** The caller's parent-id when its traceparent was valid, else null. */
  readonly parentId: string | null
  /** Trace flags as received (only the sampled bit, the one version 00 defines), 0 for a trace the proxy started. */
  readonly flags: number
}

export interface ParsedTraceparent {
  readonly version: string
  readonly traceId: string
  readonly parentId: string
  readonly flags: number
}

/**
 * Version, trace-id, parent-id, flags: lowercase hex only (the spec forbids upper case). A version after 00 may
 * append fields after a '-' (§ "Versioning of traceparent"); version 00 is exactly 55 characters.
 */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/
const ZERO_TRACE = '0'.repeat(32)
const ZERO_SPAN = '0'.repeat(16)

/**
 * The fields of a valid `traceparent` header, or null. Refused: anything that is not one string (Node joins
 * repeated headers with ", ", which no longer parses: the spec says to discard several traceparent headers),
 * upper-case hex, version ff, an all-zero trace-id or parent-id, and version 00 with anything after the flags.
 */
export function parseTraceparent (value: string | string[] | undefined): ParsedTraceparent | null {
  if (typeof value !== 'string' || value.length > 512) return null
  const m = TRACEPARENT.exec(value)
  if (m === null) return null
  const [, version, traceId, parentId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined]
  if (version === 'ff') return null
  if (version === '00' && rest !== undefined) return null
  if (traceId === ZERO_TRACE || parentId === ZERO_SPAN) return null
  return { version, traceId, parentId, flags: Number.parseInt(flags, 16) }
}

// Ids are cut from a pool of random bytes refilled 4 KiB at a time: one randomBytes() call per id cost ~2 % of
// a GetEntry's event-loop time (bench/RESULTS.md, issue 15); a refill serves ~170 requests. The bytes are the same
// CSPRNG's, each used once.
const POOL_BYTES = 4096
let pool = Buffer.alloc(0)
let poolAt = POOL_BYTES

function randomHex (bytes: number, zero: string): string {
  for (;;) {
    if (poolAt + bytes > pool.length) {
      pool = randomBytes(POOL_BYTES)
      poolAt = 0
    }
    const s = pool.toString('hex', poolAt, poolAt + bytes)
    poolAt += bytes
    if (s !== zero) return s
  }
}

/** The trace context of a caller's request: continued from a valid traceparent, else a new trace. */
export function traceFrom (value: string | string[] | undefined): TraceContext {
  const parsed = parseTraceparent(value)
  const spanId = randomHex(8, ZERO_SPAN)
  return parsed === null
    ? { traceId: randomHex(16, ZERO_TRACE), spanId, parentId: null, flags: 0 }
    : { traceId: parsed.traceId, spanId, parentId: parsed.parentId, flags: parsed.flags & 0x01 }
}

const contexts = new WeakMap<IncomingMessage, TraceContext>()

/**
 * The trace context of a raw request, made once: Fastify's child logger factory (which runs before any hook, so
 * even the "incoming request" line has the trace id) and the request's `trace` decorator share it.
 */
export function traceOf (raw: IncomingMessage): TraceContext {
  let ctx = contexts.get(raw)
  if (ctx === undefined) {
    ctx = traceFrom(raw.headers.traceparent)
    contexts.set(raw, ctx)
  }
  return ctx
}

/** The `traceparent` the proxy answers: the trace id, the proxy's span as parent-id, the flags as received. */
export function formatTraceparent (ctx: TraceContext): string {
  return `00-${ctx.traceId}-${ctx.spanId}-${ctx.flags.toString(16).padStart(2, '0')}`
}

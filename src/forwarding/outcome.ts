/**
 * The outcome class of every answer to a bank core (docs/outcomes.md): NOT SENT, SENT / OUTCOME UNKNOWN, ANSWERED.
 * A core that obeys it never sends a payment twice: only `not-sent` invites a retry, `unknown` names the message and
 * how to learn its fate, `answered` carries BACEN's status and the verdict on its signature.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { MessageIdentifiers, Outcome } from '../../core/errors.ts'
import type { MessageFacts } from '../../core/pix/facts.ts'

export type { Outcome }

/** On every answer of a forwarding route (and every problem): `not-sent`, `unknown` or `answered`. */
export const OUTCOME_HEADER = 'pix-proxy-outcome'

/** The request, as far as the outcome's advice needs it. */
export interface OutcomeCall {
  readonly name: 'dict' | 'spi'
  readonly method: string
}

/**
 * What a core should do to learn what became of a request whose outcome is unknown. Grounded in BACEN's rules
 * (docs/bacen.md): a DICT write is idempotent on its RequestId (the same request again returns the first result; the
 * same RequestId with other data is refused), claim actions are idempotent; an ICOM post that ICOM accepted is
 * answered on the stream by a pacs.002 or admi.002; a stream page is acknowledged only by reading the path it names.
 */
function adviceFor (call: OutcomeCall): string {
  if (call.name === 'dict') {
    return call.method === 'GET'
      ? 'a DICT read changes nothing at BACEN: repeat it'
      : 'DICT writes are idempotent: send the identical request again (the same signed content and RequestId) to ' +
        'learn its result, or read the entry or claim; never send it with a new RequestId'
  }
  if (call.method === 'POST') {
    return 'if ICOM accepted the message, the SPI answers it on the stream with a pacs.002 or admi.002 naming its ' +
      'BizMsgIdr and EndToEndIds: reconcile through the stream before any new attempt'
  }
  return call.method === 'DELETE'
    ? 'the stream may have ended and its last page been acknowledged: start a new stream'
    : 'read the same stream path again: a page is acknowledged only when the path it names next is read'
}

function identifiersOf (facts: MessageFacts): MessageIdentifiers {
  const out: { -readonly [K in keyof MessageIdentifiers]: MessageIdentifiers[K] } = {}
  if (facts.bizMsgId !== null) out.bizMsgIdr = facts.bizMsgId.split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (facts.endToEndIds.length > 0) out.endToEndIds = [...facts.endToEndIds]
  if (facts.dictRequestId !== null) out.dictRequestId = facts.dictRequestId
  if (facts.dictKey !== null) out.dictKey = facts.dictKey
  return out
}

/** An error's class: its catalogue entry's, or (anything without one: a bug) `unknown`, the only safe guess. */
export function outcomeOf (err: unknown): Outcome {
  return err instanceof PixProxyError ? err.outcome : 'unknown'
}

/**
 * The answer to a core when its request may have reached BACEN and no usable answer came back: one code whatever the
 * cause (the cause's code is `reason`), never Retry-After, the message's identifiers and how to learn its fate.
 * `upstreamStatus` when BACEN's status line arrived but what followed could not be used.
 */
export function outcomeUnknown (call: OutcomeCall, facts: MessageFacts, cause: unknown, upstreamStatus?: number): PixProxyError {
  const reason = cause instanceof PixProxyError ? cause.code : Errors.INTERNAL.code
  const advice = adviceFor(call)
  return new PixProxyError(Errors.UPSTREAM_OUTCOME_UNKNOWN, [call.name === 'dict' ? 'DICT' : 'ICOM', reason, advice], {
    cause,
    extensions: {
      outcome: 'unknown',
      reason,
      identifiers: identifiersOf(facts),
      advice,
      ...(upstreamStatus === undefined ? {} : { upstreamStatus })
    }
  })
}

/** Marks an error that ends a request after BACEN answered: the class `answered`, and BACEN's status. */
export function answeredError (err: PixProxyError, upstreamStatus: number): PixProxyError {
  err.extensions = { ...err.extensions, outcome: 'answered', upstreamStatus }
  return err
}

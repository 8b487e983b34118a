/**
 * forward.ts `audited`: the one owner of a call's audit row ends every row it begins, exactly once, whatever throws;
 * and the one place that decides each failure's outcome class (docs/outcomes.md).
 */
import t from 'tap'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { audited } from '../../src/routes/forward.ts'
import type { CheckedBody, UpstreamAnswer, UpstreamCall } from '../../src/routes/forward.ts'
import type { AuditTx, EndInput } from '../../src/audit/recorder.ts'
import { emptyFacts } from '../../src/audit/facts.ts'
import { traceFrom } from '../../src/http/trace.ts'
import { Errors, PixProxyError } from '../../src/errors.ts'

interface Ended { kind: 'end' | 'fail', input: EndInput | string }

function fixture (o: { endFails?: unknown } = {}): { app: FastifyInstance, req: FastifyRequest, ends: Ended[], begun: () => number, logged: string[] } {
  const ends: Ended[] = []
  const logged: string[] = []
  let begun = 0
  const tx: AuditTx = {
    id: 'row-1',
    end: async (input) => {
      if (o.endFails !== undefined) throw o.endFails
      ends.push({ kind: 'end', input })
    },
    fail: async (code) => { ends.push({ kind: 'fail', input: code }) }
  }
  const app = {
    audit: { recorder: { begin: async () => { begun++; return tx } } },
    metrics: { errors: { inc: () => {} } }
  } as unknown as FastifyInstance
  const log = (_o: unknown, msg: string): void => { logged.push(msg) }
  const req = { receivedAt: Date.now(), receivedPerf: performance.now(), id: 'req-1', trace: traceFrom(undefined), log: { error: log, warn: log } } as unknown as FastifyRequest
  return { app, req, ends, begun: () => begun, logged }
}

const call = { upstream: {}, name: 'dict', method: 'GET', path: '/api/v2/policies/', headers: {} } as unknown as UpstreamCall
const answer: UpstreamAnswer = { status: 200, headers: { 'content-type': 'multipart/mixed' }, body: Buffer.from('<x/>'), upstreamMs: 1 }
const checked: CheckedBody = { body: answer.body, contentType: 'application/xml', valid: true, code: 'VALID', results: [] }

t.test('a send that failed before anything left (no connection) ends the row with its code, NOT SENT', async (t) => {
  const f = fixture()
  await t.rejects(audited(f.app, f.req, call, 'https://x', emptyFacts(),
    async () => { throw new PixProxyError(Errors.UPSTREAM_UNAVAILABLE, ['dict', 'refused']) },
    async () => 'never'), { code: Errors.UPSTREAM_UNAVAILABLE.code })
  t.same(f.ends, [{ kind: 'fail', input: Errors.UPSTREAM_UNAVAILABLE.code }])
})

t.test('an answer that cannot be verified ends the row with BACEN\'s answer and the refusal code, ANSWERED', async (t) => {
  const f = fixture()
  await t.rejects(audited(f.app, f.req, call, 'https://x', emptyFacts(), async () => answer,
    async () => { throw new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, ['dict', 'no boundary']) }),
  { code: Errors.UPSTREAM_BAD_RESPONSE.code, extensions: { outcome: 'answered', upstreamStatus: 200 } })
  t.equal(f.ends.length, 1)
  const end = f.ends[0]?.input as EndInput
  t.equal(end.status, 200)
  t.equal(end.errorCode, Errors.UPSTREAM_BAD_RESPONSE.code)
  t.equal(end.body.toString(), '<x/>')
  t.equal(end.signatureValid, null, 'no verdict')
})

t.test('a failure without a code (a bug, a TypeError) after BACEN answered: OUTCOME UNKNOWN, reason INTERNAL', async (t) => {
  const f = fixture()
  await t.rejects(audited(f.app, f.req, call, 'https://x', emptyFacts(), async () => answer,
    async () => { throw new TypeError('boom') }),
  { code: Errors.UPSTREAM_OUTCOME_UNKNOWN.code, extensions: { outcome: 'unknown', reason: Errors.INTERNAL.code, upstreamStatus: 200 } })
  t.equal((f.ends[0]?.input as EndInput).errorCode, Errors.UPSTREAM_OUTCOME_UNKNOWN.code)
  t.equal((f.ends[0]?.input as EndInput).status, 200, 'BACEN\'s answer is in the row')
})

t.test('a row ended by finish is not ended again when something throws after it (the relay)', async (t) => {
  const f = fixture()
  await t.rejects(audited(f.app, f.req, call, 'https://x', emptyFacts(), async () => answer,
    async (a, row) => { await row.end(checked); throw new Error('relay failed') }))
  t.equal(f.ends.length, 1)
  t.equal((f.ends[0]?.input as EndInput).signatureCode, 'VALID')
  t.equal((f.ends[0]?.input as EndInput).errorCode, null)
})

t.test('a finish that returns without ending its row still has it ended (INTERNAL), and a second end is refused', async (t) => {
  const f = fixture()
  t.equal(await audited(f.app, f.req, call, 'https://x', emptyFacts(), async () => answer, async () => 'ok'), 'ok')
  t.equal((f.ends[0]?.input as EndInput).errorCode, Errors.INTERNAL.code)
  const g = fixture()
  await t.rejects(audited(g.app, g.req, call, 'https://x', emptyFacts(), async () => answer,
    async (a, row) => { await row.end(checked); await row.end(checked) }),
  { code: Errors.UPSTREAM_OUTCOME_UNKNOWN.code, extensions: { reason: Errors.AUDIT_UNKNOWN_TRANSACTION.code } })
  t.equal(g.ends.length, 1)
})

t.test('nothing is sent when the row cannot be begun', async (t) => {
  const f = fixture()
  let sent = 0
  const app = { audit: { recorder: { begin: async () => { throw new PixProxyError(Errors.AUDIT_SPOOL_FULL, [1, 1]) } } } } as unknown as FastifyInstance
  await t.rejects(audited(app, f.req, call, 'https://x', emptyFacts(), async () => { sent++; return answer }, async () => 'x'), { code: Errors.AUDIT_SPOOL_FULL.code })
  t.equal(sent, 0)
})

const post = { upstream: {}, name: 'spi', method: 'POST', path: '/api/v1/in/99999004/msgs', headers: {} } as unknown as UpstreamCall
const dictWrite = { upstream: {}, name: 'dict', method: 'POST', path: '/api/v2/entries/', headers: {} } as unknown as UpstreamCall

function paymentFacts (): ReturnType<typeof emptyFacts> {
  const facts = emptyFacts()
  facts.messageType = 'pacs.008.spi.1.4'
  facts.bizMsgId = 'M9999900400000000000000000000001'
  facts.endToEndIds = ['E9999900420261205080000000000001']
  return facts
}

t.test('a send that failed after the request may have left: OUTCOME UNKNOWN with the message\'s identifiers and advice, never a retry', async (t) => {
  for (const cause of [
    new PixProxyError(Errors.UPSTREAM_CONNECTION_LOST, ['spi', 'UND_ERR_SOCKET: other side closed']),
    new PixProxyError(Errors.UPSTREAM_HEADERS_TIMEOUT, ['spi', 30_000]),
    new PixProxyError(Errors.UPSTREAM_TIMEOUT, ['spi', 'UND_ERR_BODY_TIMEOUT']),
    new TypeError('a bug in the send path')
  ]) {
    const f = fixture()
    const err = await audited(f.app, f.req, post, 'https://x', paymentFacts(), async () => { throw cause }, async () => 'never').then(() => null, (e: unknown) => e)
    const reason = cause instanceof PixProxyError ? cause.code : Errors.INTERNAL.code
    t.match(err, {
      code: Errors.UPSTREAM_OUTCOME_UNKNOWN.code,
      statusCode: 502,
      outcome: 'unknown',
      extensions: {
        outcome: 'unknown',
        reason,
        identifiers: { bizMsgIdr: ['M9999900400000000000000000000001'], endToEndIds: ['E9999900420261205080000000000001'] },
        advice: /pacs\.002 or admi\.002/
      }
    }, reason)
    t.notOk('upstreamStatus' in ((err as { extensions: object }).extensions), 'no status: no answer came')
    t.same(f.ends, [{ kind: 'fail', input: Errors.UPSTREAM_OUTCOME_UNKNOWN.code }], 'the row is ended with the code the caller got')
  }
})

t.test('a body cut after BACEN\'s status line: OUTCOME UNKNOWN with that status', async (t) => {
  const f = fixture()
  const cause = new PixProxyError(Errors.UPSTREAM_CONNECTION_LOST, ['dict', 'terminated'], { extensions: { upstreamStatus: 201 } })
  await t.rejects(audited(f.app, f.req, dictWrite, 'https://x', emptyFacts(), async () => { throw cause }, async () => 'never'),
    { code: Errors.UPSTREAM_OUTCOME_UNKNOWN.code, extensions: { upstreamStatus: 201, advice: /RequestId/ } })
})

t.test('the ways a request is refused before it leaves keep their codes: NOT SENT', async (t) => {
  for (const cause of [
    new PixProxyError(Errors.UPSTREAM_CONNECT_TIMEOUT, ['spi', 10_000]),
    new PixProxyError(Errors.UPSTREAM_TLS_HANDSHAKE, ['spi', 'alert']),
    new PixProxyError(Errors.UPSTREAM_CLOSED, ['spi']),
    new PixProxyError(Errors.SPI_QUEUE_TIMEOUT, [5000])
  ]) {
    const f = fixture()
    await t.rejects(audited(f.app, f.req, post, 'https://x', paymentFacts(), async () => { throw cause }, async () => 'never'), { code: cause.code, outcome: 'not-sent' })
    t.same(f.ends, [{ kind: 'fail', input: cause.code }])
  }
})

t.test('BACEN\'s answer reaches the caller when the audit cannot record it (the spool\'s disk is full)', async (t) => {
  // Before: 503 AUDIT_SPOOL_IO with Retry-After for a pacs.008 that ICOM had accepted, and the core sent it again.
  const f = fixture({ endFails: new PixProxyError(Errors.AUDIT_SPOOL_IO, ['append', 'ENOSPC']) })
  const relayed = await audited(f.app, f.req, post, 'https://x', paymentFacts(), async () => answer, async (a, row) => {
    await row.end(checked)
    return `relayed ${a.status}`
  })
  t.equal(relayed, 'relayed 200', 'the answer is relayed')
  t.match(f.logged, [/cannot record BACEN's answer/], 'and the failure is logged')
})

t.test('a caller that went away while its request waited is not sent for: CLIENT_GONE, NOT SENT', async (t) => {
  const f = fixture()
  Object.assign(f.req, { raw: { socket: { destroyed: true } } })
  let sent = 0
  await t.rejects(audited(f.app, f.req, post, 'https://x', paymentFacts(), async () => { sent++; return answer }, async () => 'never'),
    { code: Errors.CLIENT_GONE.code, outcome: 'not-sent' })
  t.equal(sent, 0, 'nothing left')
  t.same(f.ends, [{ kind: 'fail', input: Errors.CLIENT_GONE.code }], 'the row says why')
})

/**
 * forward.ts `audited`: the one owner of a call's audit row ends every row it begins, exactly once, whatever throws.
 */
import t from 'tap'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { audited } from '../../src/routes/forward.ts'
import type { CheckedBody, UpstreamAnswer, UpstreamCall } from '../../src/routes/forward.ts'
import type { AuditTx, EndInput } from '../../src/audit/recorder.ts'
import { emptyFacts } from '../../src/audit/facts.ts'
import { Errors, PixProxyError } from '../../src/errors.ts'

interface Ended { kind: 'end' | 'fail', input: EndInput | string }

function fixture (): { app: FastifyInstance, req: FastifyRequest, ends: Ended[], begun: () => number } {
  const ends: Ended[] = []
  let begun = 0
  const tx: AuditTx = {
    id: 'row-1',
    end: async (input) => { ends.push({ kind: 'end', input }) },
    fail: async (code) => { ends.push({ kind: 'fail', input: code }) }
  }
  const app = { audit: { recorder: { begin: async () => { begun++; return tx } } } } as unknown as FastifyInstance
  const req = { receivedAt: Date.now(), receivedPerf: performance.now(), id: 'req-1', log: { error: () => {} } } as unknown as FastifyRequest
  return { app, req, ends, begun: () => begun }
}

const call = { upstream: {}, name: 'dict', method: 'GET', path: '/api/v2/policies/', headers: {} } as unknown as UpstreamCall
const answer: UpstreamAnswer = { status: 200, headers: { 'content-type': 'multipart/mixed' }, body: Buffer.from('<x/>'), upstreamMs: 1 }
const checked: CheckedBody = { body: answer.body, contentType: 'application/xml', valid: true, code: 'VALID', results: [] }

t.test('a failed send ends the row with the error code', async (t) => {
  const f = fixture()
  await t.rejects(audited(f.app, f.req, call, 'https://x', emptyFacts(),
    async () => { throw new PixProxyError(Errors.UPSTREAM_UNAVAILABLE, ['dict', 'refused']) },
    async () => 'never'), { code: Errors.UPSTREAM_UNAVAILABLE.code })
  t.same(f.ends, [{ kind: 'fail', input: Errors.UPSTREAM_UNAVAILABLE.code }])
})

t.test('an answer that cannot be verified ends the row with BACEN\'s answer and the refusal code', async (t) => {
  const f = fixture()
  await t.rejects(audited(f.app, f.req, call, 'https://x', emptyFacts(), async () => answer,
    async () => { throw new PixProxyError(Errors.UPSTREAM_BAD_RESPONSE, ['dict', 'no boundary']) }), { code: Errors.UPSTREAM_BAD_RESPONSE.code })
  t.equal(f.ends.length, 1)
  const end = f.ends[0]?.input as EndInput
  t.equal(end.status, 200)
  t.equal(end.errorCode, Errors.UPSTREAM_BAD_RESPONSE.code)
  t.equal(end.body.toString(), '<x/>')
  t.equal(end.signatureValid, null, 'no verdict')
})

t.test('a failure without a code (a bug, a TypeError) ends the row as INTERNAL', async (t) => {
  const f = fixture()
  await t.rejects(audited(f.app, f.req, call, 'https://x', emptyFacts(), async () => answer,
    async () => { throw new TypeError('boom') }))
  t.equal((f.ends[0]?.input as EndInput).errorCode, Errors.INTERNAL.code)
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
    async (a, row) => { await row.end(checked); await row.end(checked) }), { code: Errors.AUDIT_UNKNOWN_TRANSACTION.code })
  t.equal(g.ends.length, 1)
})

t.test('nothing is sent when the row cannot be begun', async (t) => {
  const f = fixture()
  let sent = 0
  const app = { audit: { recorder: { begin: async () => { throw new PixProxyError(Errors.AUDIT_SPOOL_FULL, [1, 1]) } } } } as unknown as FastifyInstance
  await t.rejects(audited(app, f.req, call, 'https://x', emptyFacts(), async () => { sent++; return answer }, async () => 'x'), { code: Errors.AUDIT_SPOOL_FULL.code })
  t.equal(sent, 0)
})

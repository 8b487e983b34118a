/**
 * forwarding/pipeline.ts, driven without Fastify: the one owner of a call's audit row ends every row it begins,
 * exactly once, whatever throws; it is the one place that decides each failure's outcome class (docs/outcomes.md);
 * and it applies a route's policy to BACEN's answer (signature verdict, invalid-signature policy, binding).
 * Answers are genuinely signed with a BCB-like test key; verification is the real verifier.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { Forwarding } from '../../src/forwarding/pipeline.ts'
import type { CallContext, ForwardingDeps, Policy, UpstreamAnswer, UpstreamCall } from '../../src/forwarding/pipeline.ts'
import type { AuditTx, EndInput } from '../../src/audit/recorder.ts'
import { emptyFacts } from '../../core/pix/facts.ts'
import type { Upstream } from '../../src/upstream/client.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { createXmldsigPki } from '../helpers/pki.ts'

const pki = createXmldsigPki()
const trust = pki.trustStore(pki.bcb)
const entryResponse = await readFile(join(import.meta.dirname, '../fixtures/dict/CreateEntryResponse.xml'), 'utf8')
const signedEntry = Buffer.from(await pki.bcb.xmlSigner.sign(entryResponse, 'dict'), 'utf8')

interface Ended { kind: 'end' | 'fail', input: EndInput | string }

interface Fixture {
  readonly pipeline: Forwarding
  readonly ctx: CallContext
  readonly ends: Ended[]
  readonly logged: string[]
  readonly begun: () => number
  gone: boolean
}

function fixture (o: { endFails?: unknown, beginFails?: unknown, policy?: 'reject' | 'flag', trust?: ForwardingDeps['trust'] } = {}): Fixture {
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
  const origin = (name: string): Upstream => ({ origin: `https://${name}-h.pi.rsfn.net.br:16522` }) as unknown as Upstream
  const pipeline = new Forwarding({
    upstreams: { dict: origin('dict'), spi: origin('icom') },
    journal: {
      begin: async () => {
        if (o.beginFails !== undefined) throw o.beginFails
        begun++
        return tx
      }
    },
    trust: o.trust ?? (() => trust),
    metrics: { upstream: () => {}, verdict: () => {}, error: () => {} },
    invalidSignaturePolicy: o.policy ?? 'reject',
    deadlineMs: 20_000
  })
  const log = (_o: unknown, msg: string): void => { logged.push(msg) }
  const f: Fixture = {
    pipeline,
    ends,
    logged,
    begun: () => begun,
    gone: false,
    ctx: { receivedAt: Date.now(), receivedPerf: performance.now(), id: 'req-1', traceId: null, log: { warn: log, error: log }, gone: () => f.gone }
  }
  return f
}

const read: UpstreamCall = { name: 'dict', method: 'GET', path: '/api/v2/entries/%2B5561988872301', headers: {} }
const post: UpstreamCall = { name: 'spi', method: 'POST', path: '/api/v1/in/99999004/msgs', headers: {} }
const dictWrite: UpstreamCall = { name: 'dict', method: 'POST', path: '/api/v2/entries/', headers: {} }

function answer (body: Buffer | string, status = 200, headers: Record<string, string> = { 'content-type': 'application/xml' }): UpstreamAnswer {
  return { status, headers, body: Buffer.isBuffer(body) ? body : Buffer.from(body), upstreamMs: 1 }
}
/** A policy whose send answers (or fails) as given. */
function answering (base: Omit<Policy, 'send'>, result: UpstreamAnswer | Error): Policy & { sent: () => number } {
  let sent = 0
  return {
    ...base,
    send: async () => {
      sent++
      if (result instanceof Error) throw result
      return result
    },
    sent: () => sent
  }
}
const DICT = { label: 'DICT', signed: 'every-body' } as const
const ICOM = { label: 'ICOM', signed: 'none' } as const

function paymentFacts (): ReturnType<typeof emptyFacts> {
  const facts = emptyFacts()
  facts.messageType = 'pacs.008.spi.1.4'
  facts.bizMsgId = 'M9999900400000000000000000000001'
  facts.endToEndIds = ['E9999900420261205080000000000001']
  return facts
}

t.test('a BACEN-signed answer is relayed with its verdict, and the row ends once with it', async (t) => {
  const f = fixture()
  const r = await f.pipeline.forward(f.ctx, read, emptyFacts(), answering({ ...DICT, bind: { what: 'key', expected: ['+5561988872301'], paths: [['Entry', 'Key']] } },
    answer(signedEntry, 200, { 'content-type': 'application/xml', 'set-cookie': 'x=y', 'cache-control': 'max-age=5' })))
  t.equal(r.status, 200)
  t.same(r.headers, { 'content-type': 'application/xml', 'cache-control': 'max-age=5', 'pix-proxy-outcome': 'answered', 'pix-proxy-signature-valid': 'true', 'pix-proxy-signature-code': 'VALID' })
  t.equal(r.body.toString(), signedEntry.toString())
  t.equal(f.ends.length, 1)
  t.match(f.ends[0]?.input, { status: 200, signatureValid: true, signatureCode: 'VALID', errorCode: null })
})

t.test('an answer whose BACEN signature does not verify: refused under reject (ANSWERED), flagged under flag', async (t) => {
  const tampered = Buffer.from(signedEntry.toString().replace('0012345678', '0099999999'))
  const f = fixture()
  await t.rejects(f.pipeline.forward(f.ctx, read, emptyFacts(), answering(DICT, answer(tampered))),
    { code: Errors.UPSTREAM_SIGNATURE_INVALID.code, extensions: { outcome: 'answered', upstreamStatus: 200, signatureCode: 'DIGEST_MISMATCH' } })
  t.match(f.ends, [{ kind: 'end', input: { status: 200, signatureValid: false, signatureCode: 'DIGEST_MISMATCH', errorCode: Errors.UPSTREAM_SIGNATURE_INVALID.code } }], 'the row holds the answer and the refusal')
  const g = fixture({ policy: 'flag' })
  const r = await g.pipeline.forward(g.ctx, read, emptyFacts(), answering(DICT, answer(tampered)))
  t.match(r.headers, { 'pix-proxy-signature-valid': 'false', 'pix-proxy-signature-code': 'DIGEST_MISMATCH' }, 'flag: relayed, marked invalid')
  t.match(g.ends, [{ kind: 'end', input: { signatureValid: false, errorCode: null } }])
  const h = fixture()
  await t.rejects(h.pipeline.forward(h.ctx, read, emptyFacts(), answering(DICT, answer(entryResponse))), { code: Errors.UPSTREAM_SIGNATURE_INVALID.code }, 'an unsigned DICT answer is not "unsigned": it is refused')
})

t.test('a validly signed answer about another key is refused whatever the policy: ANSWER_MISMATCH, ANSWERED', async (t) => {
  for (const policy of ['reject', 'flag'] as const) {
    const f = fixture({ policy })
    await t.rejects(f.pipeline.forward(f.ctx, read, emptyFacts(), answering({ ...DICT, bind: { what: 'key', expected: ['other@example.com'], paths: [['Entry', 'Key']] } }, answer(signedEntry))),
      { code: Errors.UPSTREAM_ANSWER_MISMATCH.code, extensions: { outcome: 'answered', upstreamStatus: 200, signatureCode: 'VALID' } }, policy)
    t.match(f.ends, [{ kind: 'end', input: { signatureCode: 'VALID', errorCode: Errors.UPSTREAM_ANSWER_MISMATCH.code } }])
  }
})

t.test('ICOM posts: nothing to verify is not a failure (NOT_APPLICABLE), the row has no verdict', async (t) => {
  const f = fixture()
  const r = await f.pipeline.forward(f.ctx, post, paymentFacts(), answering(ICOM, answer('', 201, { 'pi-resourceid': 'R1' })))
  t.equal(r.status, 201)
  t.match(r.headers, { 'pi-resourceid': 'R1', 'pix-proxy-signature-valid': 'false', 'pix-proxy-signature-code': 'NOT_APPLICABLE', 'pix-proxy-outcome': 'answered' })
  t.match(f.ends, [{ kind: 'end', input: { status: 201, signatureValid: null, signatureCode: 'NOT_APPLICABLE', errorCode: null } }])
})

t.test('a send that failed before anything left (no connection) ends the row with its code, NOT SENT', async (t) => {
  const f = fixture()
  await t.rejects(f.pipeline.forward(f.ctx, read, emptyFacts(), answering(DICT, new PixProxyError(Errors.UPSTREAM_UNAVAILABLE, ['dict', 'refused']))),
    { code: Errors.UPSTREAM_UNAVAILABLE.code, outcome: 'not-sent' })
  t.same(f.ends, [{ kind: 'fail', input: Errors.UPSTREAM_UNAVAILABLE.code }])
})

t.test('an answer that cannot be read ends the row with BACEN\'s answer and the refusal code, ANSWERED', async (t) => {
  const f = fixture()
  await t.rejects(f.pipeline.forward(f.ctx, read, emptyFacts(), answering(DICT, answer('<x/>', 200, { 'content-type': 'multipart/mixed' }))),
    { code: Errors.UPSTREAM_BAD_RESPONSE.code, extensions: { outcome: 'answered', upstreamStatus: 200 } })
  t.equal(f.ends.length, 1)
  const end = f.ends[0]?.input as EndInput
  t.equal(end.status, 200)
  t.equal(end.errorCode, Errors.UPSTREAM_BAD_RESPONSE.code)
  t.equal(end.body.toString(), '<x/>')
  t.equal(end.signatureValid, null, 'no verdict')
})

t.test('a failure without a code (a bug, a TypeError) after BACEN answered: OUTCOME UNKNOWN, reason INTERNAL', async (t) => {
  const f = fixture({ trust: () => { throw new TypeError('boom') } })
  await t.rejects(f.pipeline.forward(f.ctx, read, emptyFacts(), answering(DICT, answer(signedEntry))),
    { code: Errors.UPSTREAM_OUTCOME_UNKNOWN.code, extensions: { outcome: 'unknown', reason: Errors.INTERNAL.code, upstreamStatus: 200 } })
  t.equal((f.ends[0]?.input as EndInput).errorCode, Errors.UPSTREAM_OUTCOME_UNKNOWN.code)
  t.equal((f.ends[0]?.input as EndInput).status, 200, 'BACEN\'s answer is in the row')
  t.equal(f.ends.length, 1)
})

t.test('nothing is sent when the row cannot be begun', async (t) => {
  const f = fixture({ beginFails: new PixProxyError(Errors.AUDIT_SPOOL_FULL, [1, 1]) })
  const policy = answering(ICOM, answer('', 201))
  await t.rejects(f.pipeline.forward(f.ctx, post, paymentFacts(), policy), { code: Errors.AUDIT_SPOOL_FULL.code })
  t.equal(policy.sent(), 0)
})

t.test('a send that failed after the request may have left: OUTCOME UNKNOWN with the message\'s identifiers and advice, never a retry', async (t) => {
  for (const cause of [
    new PixProxyError(Errors.UPSTREAM_CONNECTION_LOST, ['spi', 'UND_ERR_SOCKET: other side closed']),
    new PixProxyError(Errors.UPSTREAM_HEADERS_TIMEOUT, ['spi', 30_000]),
    new PixProxyError(Errors.UPSTREAM_TIMEOUT, ['spi', 'UND_ERR_BODY_TIMEOUT']),
    new TypeError('a bug in the send path')
  ]) {
    const f = fixture()
    const err = await f.pipeline.forward(f.ctx, post, paymentFacts(), answering(ICOM, cause)).then(() => null, (e: unknown) => e)
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
    t.notOk('upstreamStatus' in (err as PixProxyError).extensions, 'no status: no answer came')
    t.same(f.ends, [{ kind: 'fail', input: Errors.UPSTREAM_OUTCOME_UNKNOWN.code }], 'the row is ended with the code the caller got')
  }
})

t.test('a body cut after BACEN\'s status line: OUTCOME UNKNOWN with that status', async (t) => {
  const f = fixture()
  const cause = new PixProxyError(Errors.UPSTREAM_CONNECTION_LOST, ['dict', 'terminated'], { extensions: { upstreamStatus: 201 } })
  await t.rejects(f.pipeline.forward(f.ctx, dictWrite, emptyFacts(), answering(DICT, cause)),
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
    await t.rejects(f.pipeline.forward(f.ctx, post, paymentFacts(), answering(ICOM, cause)), { code: cause.code, outcome: 'not-sent' })
    t.same(f.ends, [{ kind: 'fail', input: cause.code }])
  }
})

t.test('BACEN\'s answer reaches the caller when the audit cannot record it (the spool\'s disk is full)', async (t) => {
  // Before: 503 AUDIT_SPOOL_IO with Retry-After for a pacs.008 that ICOM had accepted, and the core sent it again.
  const f = fixture({ endFails: new PixProxyError(Errors.AUDIT_SPOOL_IO, ['append', 'ENOSPC']) })
  const r = await f.pipeline.forward(f.ctx, post, paymentFacts(), answering(ICOM, answer('', 201, { 'pi-resourceid': 'R1' })))
  t.equal(r.status, 201, 'the answer is relayed')
  t.match(f.logged, [/cannot record BACEN's answer/], 'and the failure is logged')
})

t.test('a caller that went away while its request waited is not sent for: CLIENT_GONE, NOT SENT', async (t) => {
  const f = fixture()
  f.gone = true
  const policy = answering(ICOM, answer('', 201))
  await t.rejects(f.pipeline.forward(f.ctx, post, paymentFacts(), policy), { code: Errors.CLIENT_GONE.code, outcome: 'not-sent' })
  t.equal(policy.sent(), 0, 'nothing left')
  t.same(f.ends, [{ kind: 'fail', input: Errors.CLIENT_GONE.code }], 'the row says why')
})

t.test('headers sent to BACEN: Host without its port, gzip asked for, the route\'s own headers', async (t) => {
  const f = fixture()
  t.same(f.pipeline.headersFor({ ...read, headers: { accept: 'application/xml' } }),
    { host: 'dict-h.pi.rsfn.net.br', 'accept-encoding': 'gzip', 'user-agent': 'pix-proxy', accept: 'application/xml' })
})

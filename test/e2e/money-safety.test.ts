/**
 * The money-safety contract (issue 13), over real sockets against the simulator with its faults:
 * no failure leaves an audit row open (the spool could then never free its oldest segment and would fill), no HEAD
 * or unlisted method reaches BACEN, nothing unverified is called valid, and every answer says its outcome class.
 */
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { queryAudit } from '../../tools/audit/query.ts'
import { createEntryRequest, pacs008, SAMPLE_PAYEE } from '../../tools/samples/messages.ts'
import { assertVerified, header, metricSamples, PROXY_ISPB, problemOf, readHeaders, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'
import { holdRequests } from '../helpers/gate.ts'

let e2e: E2e
// With an operations listener (any free port), whose GET-only routes are checked too.
t.before(async () => { e2e = await startE2e(t, { settings: { PIXPROXY_OPS_LISTEN_PORT: '0' } }) })
t.afterEach(() => { e2e.setFaults({}) })

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`
const POLICY = '/api/v2/policies/ENTRIES_WRITE'
const START = `/api/v1/out/${PROXY_ISPB}/stream/start`
const asProxy = { 'pi-requestingparticipant': PROXY_ISPB }

async function auditRows (sql: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(join(e2e.dir, 'audit', 'lake'), sql)) out.push(r)
  return out
}

async function spoolRows (state: string): Promise<number | undefined> {
  return metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_audit_spool_rows', { state })[0]
}

/**
 * Every row begun has been ended (the answer is sent only after its row's end is durable, so this holds as soon as
 * the answer is in), and the rows then ship: pending rows return to zero.
 */
async function assertNoRowLeftOpen (t: Test, what: string): Promise<void> {
  const status = await e2e.stack.proxy.audit.status()
  t.equal(status?.spool.openRows, 0, `${what}: no audit row left open`)
  t.equal(await spoolRows('open'), 0, `${what}: pixproxy_audit_spool_rows{state="open"} is 0`)
  t.ok(await waitFor(async () => await spoolRows('pending') === 0), `${what}: pixproxy_audit_spool_rows{state="pending"} returns to 0`)
}

/** A stream page that delivers messages under the current faults (empty long polls answer 204 and are skipped). */
async function pageWithMessages (accept: string): Promise<ProxyResponse> {
  let path = START
  for (let i = 0; i < 200; i++) {
    const res = await e2e.proxy('GET', path, { headers: { accept } })
    if (res.status !== 204) return res
    const next = res.headers['pi-pull-next']
    if (typeof next !== 'string') throw new Error(`204 without PI-Pull-Next on ${path}`)
    path = next
  }
  throw new Error('no stream page delivered a message in 200 pulls')
}

/** Reads the stream through without faults until it is empty, so the next test starts on a clean stream. */
async function drainStream (): Promise<void> {
  e2e.setFaults({})
  await e2e.readStream({ multipart: true, until: (ms) => ms.length === 0 })
}

t.test('no failure leaves an audit row open', async (t) => {
  await assertNoRowLeftOpen(t, 'at start')

  await t.test('a stream page whose multipart body has no close delimiter: 502 UPSTREAM_BAD_RESPONSE, row ended', async (t) => {
    t.equal((await e2e.proxyXml(MSGS, pacs008().xml)).status, 201)
    e2e.setFaults({ responseMultipart: 'truncated', routes: ['/api/v1/out/'] })
    const res = await pageWithMessages('multipart/mixed')
    t.equal(res.status, 502, res.text.slice(0, 300))
    t.equal(problemOf(res).code, 'PIXPROXY_ERR_UPSTREAM_BAD_RESPONSE')
    t.match(problemOf(res).detail, /close delimiter/)
    await assertNoRowLeftOpen(t, 'truncated multipart page')
    await drainStream()
  })

  await t.test('a stream page sent as multipart/mixed with no boundary: 502 UPSTREAM_BAD_RESPONSE, row ended', async (t) => {
    t.equal((await e2e.proxyXml(MSGS, pacs008().xml)).status, 201)
    e2e.setFaults({ responseMultipart: 'no-boundary', routes: ['/api/v1/out/'] })
    const res = await pageWithMessages('multipart/mixed')
    t.equal(res.status, 502, res.text.slice(0, 300))
    t.equal(problemOf(res).code, 'PIXPROXY_ERR_UPSTREAM_BAD_RESPONSE')
    t.match(problemOf(res).detail, /boundary/)
    await assertNoRowLeftOpen(t, 'boundary-less multipart page')
    await drainStream()
  })

  await t.test('a DICT answer sent as multipart/mixed with no boundary: 502 UPSTREAM_BAD_RESPONSE, row ended', async (t) => {
    e2e.setFaults({ responseContentType: 'multipart/mixed', routes: ['/api/v2/policies/'] })
    const res = await e2e.proxy('GET', POLICY, { headers: asProxy })
    t.equal(res.status, 502, res.text.slice(0, 300))
    t.equal(problemOf(res).code, 'PIXPROXY_ERR_UPSTREAM_BAD_RESPONSE')
    await assertNoRowLeftOpen(t, 'boundary-less DICT answer')
  })

  await t.test('a DICT answer whose multipart body has no close delimiter: 502 UPSTREAM_BAD_RESPONSE, row ended', async (t) => {
    e2e.setFaults({ responseContentType: 'multipart/mixed; boundary=cut', routes: ['/api/v2/policies/'] })
    const res = await e2e.proxy('GET', POLICY, { headers: asProxy })
    t.equal(res.status, 502, res.text.slice(0, 300))
    t.equal(problemOf(res).code, 'PIXPROXY_ERR_UPSTREAM_BAD_RESPONSE')
    await assertNoRowLeftOpen(t, 'DICT answer with no multipart delimiter')
  })

  await t.test('the row of an unreadable answer is ended with BACEN\'s status and the refusal code', async (t) => {
    e2e.setFaults({ responseContentType: 'multipart/mixed', routes: ['/api/v2/policies/'] })
    const res = await e2e.proxy('GET', POLICY, { headers: asProxy })
    t.equal(res.status, 502)
    const id = problemOf(res).instance.replace(/^urn:uuid:/, '')
    let row: Record<string, unknown> | undefined
    t.ok(await waitFor(async () => (row = (await auditRows(`SELECT * FROM audit WHERE correlation_id = '${id}'`))[0]) !== undefined), 'the row shipped')
    t.equal(row?.response_status_code, 200, 'BACEN\'s status')
    t.equal(row?.error_code, 'PIXPROXY_ERR_UPSTREAM_BAD_RESPONSE', 'the refusal code')
    t.match(String(row?.response_body), /GetPolicyResponse/, 'what BACEN sent')
  })
})

t.test('HEAD and methods BACEN does not list reach no route: 404 ROUTE_NOT_ALLOWED, nothing sent upstream', async (t) => {
  // A message waits on the stream: a HEAD that pulled (and so, with the next pull, acknowledged) its page would lose it.
  const p = pacs008()
  t.equal((await e2e.proxyXml(MSGS, p.xml)).status, 201)
  const refusedBefore = metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_errors_total', { code: 'PIXPROXY_ERR_ROUTE_NOT_ALLOWED' })[0] ?? 0
  const openBefore = (await e2e.stack.proxy.audit.status())?.spool.spooledRows
  const cases: Array<[string, string]> = [
    ['HEAD', START],
    ['HEAD', `/api/v1/out/${PROXY_ISPB}/stream/0123456789abcdef`],
    ['HEAD', POLICY],
    ['HEAD', `/api/v2/entries/${encodeURIComponent('+5511999990000')}`],
    ['HEAD', '/api/v2/claims/'],
    ['HEAD', '/readyz'],
    ['HEAD', '/healthz'],
    ['OPTIONS', START],
    ['PATCH', `/api/v1/out/${PROXY_ISPB}/stream/0123456789abcdef`],
    ['PUT', MSGS],
    ['OPTIONS', POLICY]
  ]
  const mark = e2e.seen.length
  for (const [method, path] of cases) {
    const res = await e2e.proxy(method as 'HEAD', path, { headers: asProxy })
    t.equal(res.status, 404, `${method} ${path}: 404`)
    t.match(res.headers['content-type'], /^application\/problem\+json/, `${method} ${path}: a problem`)
    if (method !== 'HEAD') t.equal(problemOf(res).code, 'PIXPROXY_ERR_ROUTE_NOT_ALLOWED', `${method} ${path}: code`)
  }
  t.same(e2e.seenSince(mark).map((r) => `${r.method} ${r.url}`), [], 'BACEN saw nothing')
  t.equal((await e2e.stack.proxy.audit.status())?.spool.spooledRows, openBefore, 'nothing was audited: no call was made')
  const refused = metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_errors_total', { code: 'PIXPROXY_ERR_ROUTE_NOT_ALLOWED' })[0] ?? 0
  t.equal(refused - refusedBefore, cases.length, 'each was refused as ROUTE_NOT_ALLOWED (HEAD answers carry no body)')

  // The message the HEADs did not touch is still delivered.
  const e2eId = p.endToEndIds[0] as string
  const read = await e2e.readStream({ multipart: true, until: (ms) => ms.some((m) => m.xml.includes(e2eId)) })
  t.ok(read.messages.some((m) => m.xml.includes(e2eId)), 'the pacs.002 reached the core')
})

t.test('the operations listener serves GET only: a HEAD /readyz does not probe BACEN', async (t) => {
  const ops = e2e.stack.proxy.opsUrl
  t.ok(ops, 'the operations listener runs')
  const mark = e2e.seen.length
  for (const path of ['/readyz', '/healthz', '/metrics']) {
    const res = await fetch(`${ops ?? ''}${path}`, { method: 'HEAD' })
    t.equal(res.status, 404, `HEAD ${path}: 404`)
    t.match(res.headers.get('content-type'), /^application\/problem\+json/)
  }
  t.equal((await fetch(`${ops ?? ''}/readyz`)).status, 200, 'GET /readyz still answers')
  t.same(e2e.seenSince(mark).filter((r) => r.method === 'HEAD'), [], 'no HEAD reached BACEN')
})

t.test('nothing unverified is called valid: where BACEN signs, the media type does not exempt an answer', async (t) => {
  // A key the counterparty holds (a participant's own key cannot be queried: BACEN answers 400).
  const entry = createEntryRequest({ owner: SAMPLE_PAYEE, keyType: 'EMAIL' })
  const created = await e2e.counterpartyWrite('POST', '/api/v2/entries/', entry.xml)
  t.equal(created.status, 201, created.text.slice(0, 200))
  const getEntry = `/api/v2/entries/${encodeURIComponent(entry.key)}`

  for (const contentType of ['text/plain', null, 'application/octet-stream', 'application/json']) {
    const what = `unsigned GetEntry answer as ${contentType ?? 'no Content-Type'}`
    e2e.setFaults({ responseSignature: 'missing', responseContentType: contentType, routes: ['/api/v2/entries/'] })
    const mark = e2e.seen.length
    const res = await e2e.proxy('GET', getEntry, { headers: readHeaders() })
    t.equal(e2e.seenSince(mark).length, 1, `${what}: BACEN answered`)
    t.equal(res.status, 502, `${what}: refused under reject (${res.text.slice(0, 200)})`)
    const p = problemOf(res)
    t.equal(p.code, 'PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID', `${what}: code`)
    t.equal(p.signatureCode, 'SIGNATURE_MISSING', `${what}: signatureCode`)
    t.equal(p.upstreamStatus, 200, `${what}: BACEN's status`)
    t.notMatch(res.text, /GetEntryResponse/, `${what}: the unverified answer does not reach the caller`)
  }

  // A body that is not XML at all, where BACEN signs: not "unsigned", a failure.
  e2e.setFaults({ responseSignature: 'missing', responseContentType: 'text/plain', routes: ['/api/v2/policies/'] })
  const ok = await e2e.proxy('GET', POLICY, { headers: asProxy })
  t.equal(problemOf(ok).signatureCode, 'SIGNATURE_MISSING')

  // The signature decides, not the label: a BACEN-signed answer under another media type still verifies.
  e2e.setFaults({ responseContentType: 'text/plain', routes: ['/api/v2/entries/'] })
  const signed = await e2e.proxy('GET', getEntry, { headers: readHeaders() })
  t.equal(signed.status, 200)
  assertVerified(t, e2e, signed, 'dict', 'BACEN-signed GetEntry sent as text/plain')
})

t.test('an unsigned stream page under another media type is never valid: under reject it is withheld', async (t) => {
  const p = pacs008()
  t.equal((await e2e.proxyXml(MSGS, p.xml)).status, 201)
  e2e.setFaults({ responseSignature: 'missing', responseContentType: 'text/plain', routes: ['/api/v1/out/'] })
  const page = await pageWithMessages('application/xml')
  t.equal(page.status, 502, page.text.slice(0, 300))
  t.match(problemOf(page), { code: 'PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID', signatureCode: 'SIGNATURE_MISSING', outcome: 'answered' })
  t.equal(header(page, 'pi-pull-next'), undefined, 'not acknowledged by a next read')
  await assertNoRowLeftOpen(t, 'withheld page')
  await drainStream()
})

t.test('an answer BACEN signs nothing in reads NOT_APPLICABLE, never valid', async (t) => {
  const res = await e2e.proxyXml(MSGS, pacs008().xml)
  t.equal(res.status, 201)
  t.equal(header(res, 'pix-proxy-signature-valid'), 'false')
  t.equal(header(res, 'pix-proxy-signature-code'), 'NOT_APPLICABLE')
  // Even an ICOM post answered with an XML body under 201: BACEN signs nothing on posts.
  e2e.setFaults({ responseContentType: 'application/xml', routes: ['/api/v1/in/'] })
  const typed = await e2e.proxyXml(MSGS, pacs008().xml)
  t.equal(typed.status, 201)
  t.equal(header(typed, 'pix-proxy-signature-valid'), 'false')
  t.equal(header(typed, 'pix-proxy-signature-code'), 'NOT_APPLICABLE')
})

t.test('every answer says its outcome class: ANSWERED, NOT SENT or OUTCOME UNKNOWN', async (t) => {
  await t.test('answers BACEN gave read ANSWERED, success or refusal', async (t) => {
    const ok = await e2e.proxyXml(MSGS, pacs008().xml)
    t.equal(ok.status, 201)
    t.equal(header(ok, 'pix-proxy-outcome'), 'answered')
    e2e.setFaults({ errorRate: 1, errorStatus: 500, routes: ['/api/v1/in/'] })
    const refused = await e2e.proxyXml(MSGS, pacs008().xml)
    t.equal(refused.status, 500, 'BACEN\'s own 500 is relayed')
    t.equal(header(refused, 'pix-proxy-outcome'), 'answered')
  })

  await t.test('input refused by the proxy reads NOT SENT', async (t) => {
    const bad = await e2e.proxyXml(MSGS, '<not-xml')
    t.equal(bad.status, 400)
    t.equal(header(bad, 'pix-proxy-outcome'), 'not-sent')
    t.equal(problemOf(bad).outcome, 'not-sent')
  })

  await t.test('a DICT write BACEN performed whose answer fails verification: ANSWERED with BACEN\'s status, not a bare 502', async (t) => {
    // Before: 502 like any gateway failure, though the entry existed at BACEN.
    const entry = createEntryRequest({ keyType: 'EMAIL' })
    e2e.setFaults({ responseSignature: 'invalid', routes: ['/api/v2/entries/'] })
    const mark = e2e.seen.length
    const res = await e2e.proxyXml('/api/v2/entries/', entry.xml)
    t.equal(res.status, 502, res.text.slice(0, 300))
    t.match(problemOf(res), { code: 'PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID', outcome: 'answered', upstreamStatus: 201, signatureCode: 'SIGNATURE_INVALID' })
    t.equal(header(res, 'pix-proxy-outcome'), 'answered')
    t.equal(header(res, 'retry-after'), undefined)
    t.equal(e2e.seenSince(mark).length, 1, 'BACEN saw the write once')
    t.match(e2e.log.filter((m) => m.system === 'dict' && m.requestId === entry.requestId), [{ key: entry.key, status: 201 }], 'BACEN performed the write')
  })

  await t.test('a DICT write BACEN read and dropped: OUTCOME UNKNOWN naming its RequestId, with the idempotent resend as advice', async (t) => {
    const entry = createEntryRequest({ keyType: 'EMAIL' })
    e2e.setFaults({ dropRate: 1, routes: ['/api/v2/entries/'] })
    const mark = e2e.seen.length
    const res = await e2e.proxyXml('/api/v2/entries/', entry.xml)
    t.equal(res.status, 502)
    t.match(problemOf(res), {
      code: 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN',
      outcome: 'unknown',
      identifiers: { dictRequestId: entry.requestId },
      advice: /same signed content and RequestId/
    })
    t.equal(header(res, 'retry-after'), undefined)
    t.equal(e2e.seenSince(mark).length, 1, 'it reached BACEN: "unreachable" would have been a lie')
    await assertNoRowLeftOpen(t, 'dropped DICT write')
  })

  await t.test('a coalesced post BACEN read and dropped: every caller in it hears OUTCOME UNKNOWN, none "retry"', async (t) => {
    // ICOM holds the posts until every message is in one or queued, then drops every connection it reads.
    const icom = holdRequests(e2e.stack.simulator.app.server, [MSGS])
    t.teardown(() => { icom.restore() })
    const before = metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_spi_post_parts_sum')[0] ?? 0
    const sent = Array.from({ length: 20 }, () => pacs008({ amounts: [1.25] }))
    const answering = Promise.all(sent.map(async (m) => await e2e.proxyXml(MSGS, m.xml)))
    t.ok(await waitFor(async () => {
      const text = (await e2e.proxy('GET', '/metrics')).text
      const posted = (metricSamples(text, 'pixproxy_spi_post_parts_sum')[0] ?? 0) - before
      const queued = metricSamples(text, 'pixproxy_spi_queued')[0] ?? 0
      return posted + queued === 20
    }, 60_000), 'every message is at ICOM or queued for a slot')
    e2e.setFaults({ dropRate: 1, routes: ['/api/v1/in/'] })
    icom.release()
    const answers = await answering
    t.same(answers.map((a) => a.status), sent.map(() => 502))
    answers.forEach((a, i) => {
      const p = problemOf(a)
      t.match(p, { code: 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', outcome: 'unknown', identifiers: { bizMsgIdr: [sent[i]?.msgId] } }, `caller ${i}`)
      t.equal(header(a, 'retry-after'), undefined, `caller ${i}: no Retry-After`)
    })
    t.same(e2e.log.filter((m) => sent.some((s) => s.msgId === m.bizMsgIdr)), [], 'the simulator dropped them unprocessed (what a real link may not do)')
    await assertNoRowLeftOpen(t, 'dropped coalesced posts')
  })
})

t.test('answers are bound to their requests: a genuinely signed answer about something else is refused', async (t) => {
  await t.test('a GetEntry answer about another key than the one asked: 502 UPSTREAM_ANSWER_MISMATCH, though VALID', async (t) => {
    const entry = createEntryRequest({ owner: SAMPLE_PAYEE, keyType: 'EMAIL' })
    t.equal((await e2e.counterpartyWrite('POST', '/api/v2/entries/', entry.xml)).status, 201)
    const getEntry = `/api/v2/entries/${encodeURIComponent(entry.key)}`
    const honest = await e2e.proxy('GET', getEntry, { headers: readHeaders() })
    t.equal(honest.status, 200, 'the same read, answered about its own key, passes')
    // BCB signs an answer that names another key (and, with it, another account holder's account).
    e2e.setFaults({ responseRewrite: { find: `<Key>${entry.key}</Key>`, replace: '<Key>attacker@example.com</Key>' }, routes: ['/api/v2/entries/'] })
    const res = await e2e.proxy('GET', getEntry, { headers: readHeaders() })
    t.equal(res.status, 502, res.text.slice(0, 300))
    t.match(problemOf(res), { code: 'PIXPROXY_ERR_UPSTREAM_ANSWER_MISMATCH', outcome: 'answered', upstreamStatus: 200, signatureCode: 'VALID' })
    t.match(problemOf(res).detail, /attacker@example\.com/)
    t.notMatch(res.text, /GetEntryResponse/, 'the answer does not reach the core')
    await assertNoRowLeftOpen(t, 'mismatched GetEntry')
    const [row] = await auditRowsEventually("SELECT error_code, response_signature_code FROM audit WHERE error_code = 'PIXPROXY_ERR_UPSTREAM_ANSWER_MISMATCH'")
    t.match(row, { error_code: 'PIXPROXY_ERR_UPSTREAM_ANSWER_MISMATCH', response_signature_code: 'VALID' }, 'the audit row says why')
  })

  await t.test('a stream message addressed to another participant: the page is withheld, not acknowledged', async (t) => {
    const p = pacs008()
    t.equal((await e2e.proxyXml(MSGS, p.xml)).status, 201)
    e2e.setFaults({ responseRewrite: { find: `<To><FIId><FinInstnId><Othr><Id>${PROXY_ISPB}</Id>`, replace: '<To><FIId><FinInstnId><Othr><Id>12345678</Id>' }, routes: ['/api/v1/out/'] })
    const page = await pageWithMessages('multipart/mixed')
    t.equal(page.status, 502, page.text.slice(0, 300))
    t.match(problemOf(page), { code: 'PIXPROXY_ERR_UPSTREAM_ANSWER_MISMATCH', outcome: 'answered' })
    t.match(problemOf(page).detail, /recipient "12345678"/)
    t.equal(header(page, 'pi-pull-next'), undefined)
    await assertNoRowLeftOpen(t, 'page for another participant')
    await drainStream()
  })
})

async function auditRowsEventually (sql: string): Promise<Array<Record<string, unknown>>> {
  let rows: Array<Record<string, unknown>> = []
  await waitFor(async () => {
    rows = await auditRows(sql)
    return rows.length > 0
  })
  return rows
}

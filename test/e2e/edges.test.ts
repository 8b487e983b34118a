/**
 * Edges that reach further than they should (issue 13, item 5), over real sockets against the simulator: path
 * parameters and query strings outside BACEN's forms, DICT headers and bodies naming another participant, an SPI
 * AppHdr/Fr that is missing or names the sender elsewhere, an empty multipart post, unsafe x-request-ids. Each refusal
 * has its status and stable code, nothing of it reaches the simulator, and the valid forms next to it still pass.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { buildMultipart } from '../../src/http/multipart.ts'
import { createClaimRequest, createEntryRequest, pacs008, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { checkQuery, keyType, PATH_PARAMETERS, templateParameters } from '../../src/routes/params.ts'
import { DICT_ROUTES } from '../../src/routes/dict.ts'
import {
  claimActionXml, COUNTERPARTY_ISPB, header, PROXY_ISPB, problemOf, readHeaders, startE2e, waitFor
} from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'

/** An indirect participant the proxy is configured for (BACEN's form: alphanumeric ISPBs exist, docs/bacen.md §2.7). */
const INDIRECT = '99999A03'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t, { settings: { PIXPROXY_INDIRECT_PARTICIPANTS: ` ${INDIRECT} ,` } }) })

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`
const asProxy = { 'pi-requestingparticipant': PROXY_ISPB }

function refusedLocally (t: Test, res: ProxyResponse, status: number, code: string, mark: number, what: string): void {
  t.equal(res.status, status, `${what}: status (${res.text.slice(0, 300)})`)
  const p = problemOf(res)
  t.equal(p.code, code, `${what}: code`)
  t.equal(p.outcome, 'not-sent', `${what}: outcome`)
  t.equal(header(res, 'pix-proxy-outcome'), 'not-sent', `${what}: outcome header`)
  t.ok(p.detail.length < 600, `${what}: the detail is bounded (${p.detail.length})`)
  t.same(e2e.seenSince(mark), [], `${what}: nothing reached the simulator`)
}

t.test('every route parameter has a rule, and the rules accept BACEN\'s forms only', async (t) => {
  for (const [, url] of DICT_ROUTES) for (const n of templateParameters(url)) t.ok(PATH_PARAMETERS[n], `${url}: :${n} has a rule`)
  const good: Record<string, string[]> = {
    Key: ['52998224725', '11222333000181', '12ABC34501DE35', '+5511987654321', 'cliente.x@example.com.br', 'a/b+c@sub.example.com', randomUUID()],
    ClaimId: [randomUUID(), randomUUID().toUpperCase()],
    Id: [randomUUID(), '1234'],
    Cid: ['28c06eb41c4dc9c3ae114831efcac7446c8747777fca8b145ecd31ff8480ae88'],
    TaxIdNumber: ['52998224725', '11222333000181'],
    Policy: ['ENTRIES_WRITE', 'ENTRIES_READ_PARTICIPANT_ANTISCAN'],
    ispb: [PROXY_ISPB, INDIRECT],
    streamId: ['6f28fd7c-181c-4f91-86dc-e26b1d46f057', '8e20a682c86f', randomBytes(16).toString('hex')]
  }
  const bad: Record<string, string[]> = {
    Key: ['', '.', '..', '../policies/', 'Cliente@example.com', 'cliente@EXAMPLE.com', '５２９９８２２４７２５', 'cliente@exаmple.com', '+0511987654321', '+55 11 98765-4321',
      '5299822472', 'a\r\nb@example.com', 'a'.repeat(70) + '@ex.com.br', randomUUID().toUpperCase(), 'x'.repeat(5000)],
    ClaimId: ['', '..', 'not-a-uuid', randomUUID() + '/cancel', `${randomUUID()}%2e`],
    Id: ['', '..', '-1', '1.5', 'abc'],
    Cid: ['..', '28c06eb41c4dc9c3ae114831efcac7446c8747777fca8b145ecd31ff8480ae8', '28c06eb41c4dc9c3ae114831efcac7446c8747777fca8b145ecd31ff8480ae8g'],
    TaxIdNumber: ['..', '123', '5299822472a', '529.982.247-25'],
    Policy: ['..', 'entries_write', 'ENTRIES WRITE', 'ENTRIES/WRITE', ''],
    ispb: ['..', '9999900', '99999a03', '999990044'],
    streamId: ['.', '..', 'a.b', 'a/b', 'x'.repeat(129), '']
  }
  for (const [name, values] of Object.entries(good)) for (const v of values) t.ok(PATH_PARAMETERS[name]?.test(v), `${name} ${JSON.stringify(v)} passes`)
  for (const [name, values] of Object.entries(bad)) for (const v of values) t.notOk(PATH_PARAMETERS[name]?.test(v), `${name} ${JSON.stringify(v.slice(0, 40))} is refused`)
  t.equal(keyType('52998224725'), 'CPF')
  t.equal(keyType('+5511987654321'), 'PHONE')
  t.equal(keyType(`${'a'.repeat(62)}@example.com.br`), 'EMAIL', 'an e-mail of 77 characters')
  t.equal(keyType(`${'a'.repeat(63)}@example.com.br`), undefined, 'an e-mail of 78 characters')
})

t.test('query strings: control characters, non-ASCII, odd names and another participant are refused', async (t) => {
  const us = new Set([PROXY_ISPB, INDIRECT])
  const ok = ['', `Participant=${PROXY_ISPB}&IsDonor=true&Status=OPEN&Status=WAITING_RESOLUTION&Limit=10`, 'ModifiedAfter=2020-01-10T10:00:00Z', `Participant=${INDIRECT}`, 'ModifiedAfter=2020-01-10T10%3A00%3A00.000Z&']
  for (const q of ok) t.doesNotThrow(() => { checkQuery(q, us, PROXY_ISPB) }, q)
  const refused: Array<[string, string]> = [
    ['Participant=99999004%0D%0AX-Injected:%201', 'PIXPROXY_ERR_QUERY_INVALID'],
    ['Type=%C3%A9', 'PIXPROXY_ERR_QUERY_INVALID'],
    ['Type=é', 'PIXPROXY_ERR_QUERY_INVALID'],
    ['Type=a b', 'PIXPROXY_ERR_QUERY_INVALID'],
    ['Par%74icipant=99999010', 'PIXPROXY_ERR_QUERY_INVALID'],
    ['Limit=%ZZ', 'PIXPROXY_ERR_QUERY_INVALID'],
    ['Limit=%00', 'PIXPROXY_ERR_QUERY_INVALID'],
    ['a'.repeat(3000) + '=1', 'PIXPROXY_ERR_QUERY_INVALID'],
    [`Participant=${COUNTERPARTY_ISPB}`, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH'],
    [`Participant=${PROXY_ISPB}&Participant=${COUNTERPARTY_ISPB}`, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH'],
    [`Participant=${PROXY_ISPB.toLowerCase()}x`, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH']
  ]
  for (const [q, code] of refused) t.throws(() => { checkQuery(q, us, PROXY_ISPB) }, { code }, q.slice(0, 60))
})

t.test('path parameters outside BACEN\'s forms: 400 PATH_PARAMETER_INVALID, nothing sent', async (t) => {
  const claim = randomUUID()
  const cases: Array<[string, string, string?]> = [
    ['GET', '/api/v2/persons/%2e%2e/statistics'],
    ['GET', '/api/v2/persons/%2E%2E/statistics'],
    ['GET', '/api/v2/entries/%2e'],
    ['GET', '/api/v2/entries/%2e%2e'],
    ['GET', '/api/v2/entries/%2e%2e/statistics'],
    ['GET', '/api/v2/entries/..%2Fpolicies%2F'],
    ['GET', '/api/v2/entries/a%2F..%2F..%2Fpolicies'],
    ['GET', `/api/v2/entries/${encodeURIComponent('Cliente@Example.com')}`],
    ['GET', `/api/v2/entries/${encodeURIComponent('５２９９８２２４７２５')}`],
    ['GET', `/api/v2/entries/${encodeURIComponent('cliente@exаmple.com')}`],
    ['GET', '/api/v2/entries/a%0D%0AX-Injected%3A%201%40example.com'],
    ['GET', '/api/v2/entries/%00'],
    ['GET', `/api/v2/entries/${'9'.repeat(90)}`],
    ['GET', `/api/v2/claims/${claim.slice(0, -1)}`],
    ['GET', '/api/v2/claims/%2e%2e'],
    ['POST', `/api/v2/claims/${claim}%2Fcancel/confirm`, claimActionXml('ConfirmClaimRequest', claim, PROXY_ISPB, '  <Reason>USER_REQUESTED</Reason>\n')],
    ['POST', '/api/v2/claims/..%2F/acknowledge', claimActionXml('AcknowledgeClaimRequest', claim, PROXY_ISPB)],
    ['GET', '/api/v2/cids/entries/%2e%2e'],
    ['GET', `/api/v2/cids/entries/${'a'.repeat(63)}`],
    ['GET', '/api/v2/refunds/%2e%2e'],
    ['GET', '/api/v2/cids/files/1.5'],
    ['GET', '/api/v2/policies/%2e%2e'],
    ['GET', '/api/v2/policies/entries_write'],
    ['GET', '/api/v1/out/%2e%2e/stream/start'],
    ['GET', `/api/v1/out/${PROXY_ISPB}/stream/%2e%2e`],
    ['GET', `/api/v1/out/${PROXY_ISPB}/stream/a.b`],
    ['DELETE', `/api/v1/out/${PROXY_ISPB}/stream/%2e`],
    ['POST', '/api/v1/in/%2e%2e/msgs', pacs008().xml]
  ]
  for (const [method, path, body] of cases) {
    const mark = e2e.seen.length
    const res = await e2e.proxy(method as 'GET', path, {
      headers: { ...(method === 'GET' && path.startsWith('/api/v2/') ? readHeaders() : {}), ...(body === undefined ? {} : { 'content-type': 'application/xml' }) },
      ...(body === undefined ? {} : { body })
    })
    refusedLocally(t, res, 400, 'PIXPROXY_ERR_PATH_PARAMETER_INVALID', mark, `${method} ${path.slice(0, 60)}`)
  }
  // The problem names the parameter and its form, and never echoes a huge value back.
  // (Fastify's maxParamLength, 100, already answers 404 to longer values.)
  const res = await e2e.proxy('GET', `/api/v2/entries/${'9'.repeat(99)}`, { headers: readHeaders() })
  const p = problemOf(res)
  t.match(p.detail, /^path parameter Key is "9{80}… \(99 characters\)": expected a DICT key/)
  // An empty value never becomes another operation: GET /entries/ is not a forwarded operation.
  const mark = e2e.seen.length
  const empty = await e2e.proxy('GET', '/api/v2/entries/', { headers: readHeaders() })
  t.ok(empty.status === 400 || empty.status === 404, `GET /api/v2/entries/: ${empty.status}`)
  t.match(problemOf(empty).code, /^PIXPROXY_ERR_(PATH_PARAMETER_INVALID|ROUTE_NOT_ALLOWED)$/)
  t.same(e2e.seenSince(mark), [], 'GET /api/v2/entries/: nothing reached the simulator')
})

t.test('query strings with CR/LF, non-ASCII or another Participant: refused, nothing sent', async (t) => {
  const cases: Array<[string, number, string]> = [
    [`/api/v2/claims/?Participant=${PROXY_ISPB}%0D%0AX-Injected:%201`, 400, 'PIXPROXY_ERR_QUERY_INVALID'],
    [`/api/v2/claims/?Participant=${PROXY_ISPB}&Type=%C3%A9`, 400, 'PIXPROXY_ERR_QUERY_INVALID'],
    [`/api/v2/claims/?Participant=${PROXY_ISPB}&%3Cscript%3E=1`, 400, 'PIXPROXY_ERR_QUERY_INVALID'],
    [`/api/v2/entries/${encodeURIComponent('+5511987654321')}?IncludeStatistics=%0A`, 400, 'PIXPROXY_ERR_QUERY_INVALID'],
    [`/api/v2/claims/?Participant=${COUNTERPARTY_ISPB}`, 403, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH'],
    [`/api/v2/cids/events?Participant=${COUNTERPARTY_ISPB}&KeyType=PHONE`, 403, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH'],
    [`/api/v1/out/${PROXY_ISPB}/stream/start?x=%0D%0A`, 400, 'PIXPROXY_ERR_QUERY_INVALID']
  ]
  for (const [path, status, code] of cases) {
    const mark = e2e.seen.length
    const res = await e2e.proxy('GET', path, { headers: readHeaders() })
    refusedLocally(t, res, status, code, mark, path.slice(0, 80))
  }
  // A listing with the documented filters passes.
  const mark = e2e.seen.length
  const list = await e2e.proxy('GET', `/api/v2/claims/?Participant=${PROXY_ISPB}&IsClaimer=true&Status=OPEN&Status=WAITING_RESOLUTION&Limit=10`, { headers: asProxy })
  t.equal(list.status, 200, list.text.slice(0, 200))
  t.equal(e2e.seenSince(mark).length, 1)
})

t.test('DICT headers: PI-RequestingParticipant ours or an indirect participant\'s; PI-PayerId and PI-EndToEndId of their forms', async (t) => {
  const path = `/api/v2/entries/${encodeURIComponent('+5511987654321')}`
  const cases: Array<[Record<string, string>, number, string]> = [
    [readHeaders(COUNTERPARTY_ISPB), 403, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH'],
    [{ ...readHeaders(), 'pi-requestingparticipant': '9999900' }, 400, 'PIXPROXY_ERR_HEADER_INVALID'],
    [{ ...readHeaders(), 'pi-requestingparticipant': INDIRECT.toLowerCase() }, 400, 'PIXPROXY_ERR_HEADER_INVALID'],
    [{ ...readHeaders(), 'pi-payerid': '529.982.247-25' }, 400, 'PIXPROXY_ERR_HEADER_INVALID'],
    [{ ...readHeaders(), 'pi-payerid': '5299822472' }, 400, 'PIXPROXY_ERR_HEADER_INVALID'],
    [{ ...readHeaders(), 'pi-endtoendid': 'E99999004' }, 400, 'PIXPROXY_ERR_HEADER_INVALID'],
    [{ ...readHeaders(), 'pi-endtoendid': 'x'.repeat(3000) }, 400, 'PIXPROXY_ERR_HEADER_INVALID']
  ]
  for (const [headers, status, code] of cases) {
    const mark = e2e.seen.length
    const res = await e2e.proxy('GET', path, { headers })
    refusedLocally(t, res, status, code, mark, JSON.stringify(headers).slice(0, 120))
  }
  const policy = await e2e.proxy('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: { 'pi-requestingparticipant': COUNTERPARTY_ISPB } })
  t.equal(problemOf(policy).code, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH', 'on every DICT read')

  // An indirect participant configured for this proxy is forwarded as it is; BACEN decides (the simulator knows
  // nothing of 99999A03 and answers 403, signed).
  const mark = e2e.seen.length
  const res = await e2e.proxy('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: { 'pi-requestingparticipant': INDIRECT } })
  t.equal(res.status, 403, res.text.slice(0, 200))
  t.equal(header(res, 'pix-proxy-signature-code'), 'VALID', 'BACEN\'s answer, not the proxy\'s')
  const seen = e2e.seenSince(mark)
  t.equal(seen.length, 1)
  t.equal(seen[0]?.headers['pi-requestingparticipant'], INDIRECT)
})

t.test('DICT writes naming another participant in the body: 403 PARTICIPANT_MISMATCH before signing', async (t) => {
  const other = { ...SAMPLE_PAYER, ispb: COUNTERPARTY_ISPB }
  const claimId = randomUUID()
  const cases: Array<[string, string, string]> = [
    ['POST', '/api/v2/entries/', createEntryRequest({ owner: other }).xml],
    ['POST', '/api/v2/claims/', createClaimRequest({ owner: other }).xml],
    ['POST', `/api/v2/claims/${claimId}/confirm`, claimActionXml('ConfirmClaimRequest', claimId, COUNTERPARTY_ISPB, '  <Reason>USER_REQUESTED</Reason>\n')],
    ['POST', `/api/v2/claims/${claimId}/acknowledge`, claimActionXml('AcknowledgeClaimRequest', claimId, ` ${PROXY_ISPB}x`)],
    ['POST', '/api/v2/entries/', createEntryRequest().xml.replace('</Account>', `</Account><Participant>${COUNTERPARTY_ISPB}</Participant>`)]
  ]
  for (const [method, path, body] of cases) {
    const mark = e2e.seen.length
    const logged = e2e.log.length
    const res = await e2e.proxy(method as 'POST', path, { headers: { 'content-type': 'application/xml' }, body })
    refusedLocally(t, res, 403, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH', mark, `${method} ${path}`)
    t.match(problemOf(res).detail, /Participant in the body is/)
    t.equal(e2e.log.length, logged, 'BACEN accepted nothing')
  }
  // Our own participant, and a configured indirect one, are signed and sent (the simulator refuses the indirect
  // participant's entry: it is not the authenticated participant, as BACEN would unless it knew the relation).
  const own = createEntryRequest()
  const created = await e2e.proxyXml('/api/v2/entries/', own.xml)
  t.equal(created.status, 201, created.text.slice(0, 200))
  const mark = e2e.seen.length
  const indirect = await e2e.proxyXml('/api/v2/entries/', createEntryRequest({ owner: { ...SAMPLE_PAYER, ispb: INDIRECT } }).xml)
  t.equal(indirect.status, 403, indirect.text.slice(0, 200))
  t.equal(header(indirect, 'pix-proxy-signature-code'), 'VALID', 'BACEN\'s 403, not the proxy\'s')
  t.equal(e2e.seenSince(mark).length, 1, 'the indirect participant\'s write was sent')
})

/** pacs.008 with its AppHdr/Fr replaced. */
function withFr (fr: string): string {
  return pacs008().xml.replace(/<Fr>[\s\S]*?<\/Fr>/, fr)
}

t.test('AppHdr/Fr: exactly Fr/FIId/FinInstnId/Othr/Id naming our ISPB, in every part, or refused before signing', async (t) => {
  const othr = (id: string): string => `<FIId><FinInstnId><Othr><Id>${id}</Id></Othr></FinInstnId></FIId>`
  const cases: Array<[string, string, number, string]> = [
    ['no Fr', withFr(''), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['Fr via ClrSysMmbId/MmbId', withFr(`<Fr><FIId><FinInstnId><ClrSysMmbId><MmbId>${PROXY_ISPB}</MmbId></ClrSysMmbId></FinInstnId></FIId></Fr>`), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['Fr via BICFI', withFr('<Fr><FIId><FinInstnId><BICFI>BANKBRSPXXX</BICFI></FinInstnId></FIId></Fr>'), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['Fr via OrgId', withFr(`<Fr><OrgId><Id><OrgId><Othr><Id>${PROXY_ISPB}</Id></Othr></OrgId></Id></OrgId></Fr>`), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['two Fr', withFr(`<Fr>${othr(PROXY_ISPB)}</Fr><Fr>${othr(COUNTERPARTY_ISPB)}</Fr>`), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['two Id', withFr(`<Fr><FIId><FinInstnId><Othr><Id>${PROXY_ISPB}</Id><Id>${COUNTERPARTY_ISPB}</Id></Othr></FinInstnId></FIId></Fr>`), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['ClrSysMmbId beside Othr', withFr(`<Fr><FIId><FinInstnId><ClrSysMmbId><MmbId>${COUNTERPARTY_ISPB}</MmbId></ClrSysMmbId><Othr><Id>${PROXY_ISPB}</Id></Othr></FinInstnId></FIId></Fr>`), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['Fr in another namespace', withFr(`<h:Fr xmlns:h="urn:iso:std:iso:20022:tech:xsd:head.001.001.01"><h:FIId><h:FinInstnId><h:Othr><h:Id>${PROXY_ISPB}</h:Id></h:Othr></h:FinInstnId></h:FIId></h:Fr>`), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['text beside the path', withFr(`<Fr>${COUNTERPARTY_ISPB}${othr(PROXY_ISPB)}</Fr>`), 400, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    ['Fr of an indirect participant (SPI takes only the direct one)', withFr(`<Fr>${othr(INDIRECT)}</Fr>`), 403, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH'],
    ['Fr padded with spaces', withFr(`<Fr>${othr(` ${PROXY_ISPB} `)}</Fr>`), 403, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH'],
    ['Fr with a look-alike digit', withFr(`<Fr>${othr(PROXY_ISPB.replace(/4$/, '４'))}</Fr>`), 403, 'PIXPROXY_ERR_PARTICIPANT_MISMATCH']
  ]
  for (const [what, xml, status, code] of cases) {
    const mark = e2e.seen.length
    const res = await e2e.proxyXml(MSGS, xml)
    refusedLocally(t, res, status, code, mark, what)
    const mp = buildMultipart([pacs008().xml, xml].map((x) => ({ headers: { 'content-type': 'application/xml' }, body: Buffer.from(x) })))
    const mark2 = e2e.seen.length
    const batch = await e2e.proxy('POST', MSGS, { headers: { 'content-type': mp.contentType }, body: mp.body })
    refusedLocally(t, batch, status, code, mark2, `${what}, as the second part of a multipart post`)
  }
  const ok = await e2e.proxyXml(MSGS, withFr(`<Fr>\n      ${othr(PROXY_ISPB)}\n    </Fr>`))
  t.equal(ok.status, 201, `white space between the elements is fine: ${ok.text.slice(0, 200)}`)
})

t.test('an empty multipart post: 400 BODY_REQUIRED, nothing sent', async (t) => {
  const cases: Array<[string, string]> = [
    ['--b--\r\n', 'PIXPROXY_ERR_BODY_REQUIRED'],
    ['preamble only\r\n--b--', 'PIXPROXY_ERR_BODY_REQUIRED'],
    ['--b\r\n--b--\r\n', 'PIXPROXY_ERR_XML_MALFORMED'] // one part that is not a part
  ]
  for (const [body, code] of cases) {
    const mark = e2e.seen.length
    const res = await e2e.proxy('POST', MSGS, { headers: { 'content-type': 'multipart/mixed; boundary=b' }, body })
    refusedLocally(t, res, 400, code, mark, JSON.stringify(body))
  }
})

t.test('the simulator rejects what BACEN rejects: a foreign or missing Fr gets an admi.002', async (t) => {
  const signer = e2e.stack.counterparty.identity.signing.xmlSigner
  const client = e2e.stack.counterparty.client
  const post = async (xml: string): Promise<string | undefined> => {
    const signed = await signer.sign(xml, 'spi')
    const res = await client.request('POST', `/api/v1/in/${COUNTERPARTY_ISPB}/msgs`, { headers: { 'content-type': 'application/xml' }, body: signed })
    t.equal(res.status, 201, 'ICOM takes the post; the rejection comes on the stream')
    const id = String(res.headers['pi-resourceid'])
    await waitFor(() => e2e.log.some((m) => m.resourceId === id))
    return e2e.log.find((m) => m.resourceId === id)?.rejection
  }
  const othr = `<FIId><FinInstnId><Othr><Id>${COUNTERPARTY_ISPB}</Id></Othr></FinInstnId></FIId>`
  t.match(await post(withFr('')), /remetente/, 'no Fr')
  t.match(await post(withFr(`<Fr>${othr}</Fr>`.replace(COUNTERPARTY_ISPB, PROXY_ISPB))), /remetente/, 'another participant\'s Fr')
  t.match(await post(withFr(`<Fr><FIId><FinInstnId><ClrSysMmbId><MmbId>${COUNTERPARTY_ISPB}</MmbId></ClrSysMmbId></FinInstnId></FIId></Fr>`)), /remetente/, 'Fr via ClrSysMmbId')
  t.match(await post(withFr(`<Fr>${othr}</Fr><Fr>${othr}</Fr>`)), /remetente/, 'two Fr')
  t.equal(await post(withFr(`<Fr>${othr}</Fr>`)), undefined, 'its own Fr is processed')
})

t.test('x-request-id: a safe caller id is kept, anything else replaced by a UUID', async (t) => {
  const path = '/api/v2/policies/%2e%2e' // refused locally: the answer's instance is the request id
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
  for (const id of ['core-123.abc:7_x', randomUUID(), 'a'.repeat(64)]) {
    const res = await e2e.proxy('GET', path, { headers: { 'x-request-id': id } })
    t.equal(header(res, 'x-request-id'), id, `${id}: kept`)
    t.equal(problemOf(res).instance, `urn:uuid:${id}`)
  }
  for (const id of ['a'.repeat(65), 'a b', '<script>', '../../etc', '']) {
    const res = await e2e.proxy('GET', path, { headers: { 'x-request-id': id } })
    t.match(header(res, 'x-request-id'), uuid, `${JSON.stringify(id)}: replaced`)
  }
  const res = await e2e.proxy('GET', path, { headers: { 'x-request-id': 'x' } })
  t.equal(header(res, 'x-request-id'), 'x')
})

t.test('valid inputs still pass: every key type, a claim id, a CID, a tax id, a policy, a stream', async (t) => {
  const keys = ['52998224725', '11222333000181', '+5511987654321', 'cliente.valido@example.com.br', randomUUID()]
  let n = 0
  for (const key of keys) {
    const mark = e2e.seen.length
    // A distinct payer per lookup: a 404 costs 20 of a person's 100 tokens (docs/bacen.md §1.7).
    const res = await e2e.proxy('GET', `/api/v2/entries/${encodeURIComponent(key)}`, { headers: { ...readHeaders(), 'pi-payerid': `${10_000_000_000 + n++}` } })
    t.equal(res.status, 404, `${key}: BACEN answered (${res.text.slice(0, 150)})`)
    t.same(e2e.seenSince(mark).map((r) => r.url), [`/api/v2/entries/${encodeURIComponent(key)}`], `${key}: forwarded as it is`)
  }
  for (const path of [`/api/v2/claims/${randomUUID()}`, `/api/v2/cids/entries/${'ab'.repeat(32)}`, '/api/v2/persons/52998224725/statistics', '/api/v2/cids/files/1234', `/api/v2/refunds/${randomUUID()}`]) {
    const mark = e2e.seen.length
    const res = await e2e.proxy('GET', path, { headers: asProxy })
    t.not(res.status, 400, `${path}: not refused (${res.status})`)
    t.same(e2e.seenSince(mark).map((r) => r.url), [path], `${path}: forwarded`)
  }
  t.equal((await e2e.proxy('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: asProxy })).status, 200)
  const read = await e2e.readStream({ multipart: true, until: () => true })
  t.ok(read.pages.every((p) => p.status === 200 || p.status === 204), 'a stream start, its next position and its end')
  t.equal(read.deleteStatus, 204)
})

/**
 * The money-safety contract as a matrix (docs/outcomes.md "Route × fault"): every forwarding route × every fault the
 * simulator can produce quickly, over real sockets. For each cell: the status, the code and the outcome class the
 * core is told; that the audit row was ended; that BACEN saw a write at most once; and that nothing BACEN did not
 * validly sign is called valid. (The slow faults, a BACEN that never answers and one that dribbles past the deadline,
 * are in limits.test.ts; a coalesced post that is dropped is in money-safety.test.ts.)
 */
import t from 'tap'
import type { Test } from 'tap'
import { createEntryRequest, pacs008, SAMPLE_PAYEE } from '../../tools/samples/messages.ts'
import type { FaultConfig } from '../../tools/simulator/app.ts'
import { header, metricSamples, PROXY_ISPB, problemOf, readHeaders, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })
t.afterEach(() => { e2e.setFaults({}) })

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`
const OUT = `/api/v1/out/${PROXY_ISPB}/stream/`

type Route = 'DICT read' | 'DICT write' | 'ICOM post' | 'stream read' | 'stream end'
type Fault = 'none' | 'BACEN refuses (500)' | 'reset after reading' | 'signature invalid' | 'unsigned, as text/plain' |
  'multipart without close delimiter' | 'about another key or recipient'
type Outcome = 'not-sent' | 'unknown' | 'answered'

interface Expected { status: number, code?: string, outcome: Outcome, valid?: boolean }

const ROUTES: readonly Route[] = ['DICT read', 'DICT write', 'ICOM post', 'stream read', 'stream end']
const FAULTS: readonly Fault[] = ['none', 'BACEN refuses (500)', 'reset after reading', 'signature invalid', 'unsigned, as text/plain',
  'multipart without close delimiter', 'about another key or recipient']

const ANSWERED_INVALID = { status: 502, code: 'PIXPROXY_ERR_UPSTREAM_SIGNATURE_INVALID', outcome: 'answered' } as const
const UNKNOWN = { status: 502, code: 'PIXPROXY_ERR_UPSTREAM_OUTCOME_UNKNOWN', outcome: 'unknown' } as const
const MISMATCH = { status: 502, code: 'PIXPROXY_ERR_UPSTREAM_ANSWER_MISMATCH', outcome: 'answered' } as const

/** The contract, cell by cell (the reject policy, the default). */
function expected (route: Route, fault: Fault): Expected {
  const dict = route === 'DICT read' || route === 'DICT write'
  const ok: Expected = route === 'DICT write'
    ? { status: 201, outcome: 'answered', valid: true }
    : route === 'ICOM post'
      ? { status: 201, outcome: 'answered', valid: false } // NOT_APPLICABLE: BACEN signs nothing on posts
      : route === 'stream end'
        ? { status: 204, outcome: 'answered', valid: false }
        : { status: 200, outcome: 'answered', valid: true }
  switch (fault) {
    case 'none': return ok
    // DICT's problems are BACEN-signed (valid); ICOM's are not signed at all (NOT_APPLICABLE, never valid).
    case 'BACEN refuses (500)': return { status: 500, outcome: 'answered', valid: dict }
    case 'reset after reading': return UNKNOWN
    case 'signature invalid':
    case 'unsigned, as text/plain':
      return dict || route === 'stream read' ? ANSWERED_INVALID : ok
    case 'multipart without close delimiter':
      return route === 'stream read' ? { status: 502, code: 'PIXPROXY_ERR_UPSTREAM_BAD_RESPONSE', outcome: 'answered' } : ok
    case 'about another key or recipient':
      return route === 'DICT read' || route === 'DICT write' || route === 'stream read' ? MISMATCH : ok
  }
}

/** A key the counterparty holds, for reads (a participant cannot read its own keys: BACEN answers 400). */
let readKey = ''

function faultConfig (fault: Fault, route: Route, key: string): FaultConfig {
  const routes = route.startsWith('DICT') ? ['/api/v2/'] : route === 'ICOM post' ? ['/api/v1/in/'] : ['/api/v1/out/']
  switch (fault) {
    case 'none': return {}
    case 'BACEN refuses (500)': return { errorRate: 1, errorStatus: 500, routes }
    case 'reset after reading': return { dropRate: 1, routes }
    case 'signature invalid': return { responseSignature: 'invalid', routes }
    case 'unsigned, as text/plain': return { responseSignature: 'missing', responseContentType: 'text/plain', routes }
    case 'multipart without close delimiter': return { responseMultipart: 'truncated', routes }
    case 'about another key or recipient':
      return route === 'stream read'
        ? { responseRewrite: { find: `<To><FIId><FinInstnId><Othr><Id>${PROXY_ISPB}</Id>`, replace: '<To><FIId><FinInstnId><Othr><Id>12345678</Id>' }, routes }
        : { responseRewrite: { find: `<Key>${key}</Key>`, replace: '<Key>someone.else@example.com</Key>' }, routes }
  }
}

/** Reads the stream empty (without faults) and returns the next path to read, at which nothing is waiting. */
async function emptyStreamPosition (): Promise<string> {
  e2e.setFaults({})
  let path = `${OUT}start`
  for (let i = 0; i < 500; i++) {
    const res = await e2e.proxy('GET', path, { headers: { accept: 'multipart/mixed' } })
    path = String(res.headers['pi-pull-next'])
    if (res.status === 204) return path
  }
  throw new Error('the stream never ran empty')
}

/** Runs one cell: sets up what the route needs, applies the fault, makes the call. */
async function call (route: Route, fault: Fault): Promise<{ res: ProxyResponse, write?: { requestId?: string, msgId?: string } }> {
  switch (route) {
    case 'DICT read': {
      e2e.setFaults(faultConfig(fault, route, readKey))
      return { res: await e2e.proxy('GET', `/api/v2/entries/${encodeURIComponent(readKey)}`, { headers: readHeaders() }) }
    }
    case 'DICT write': {
      const entry = createEntryRequest({ keyType: 'EMAIL' })
      e2e.setFaults(faultConfig(fault, route, entry.key))
      return { res: await e2e.proxyXml('/api/v2/entries/', entry.xml), write: { requestId: entry.requestId } }
    }
    case 'ICOM post': {
      const m = pacs008()
      e2e.setFaults(faultConfig(fault, route, ''))
      return { res: await e2e.proxyXml(MSGS, m.xml), write: { msgId: m.msgId } }
    }
    case 'stream read': {
      // A page that carries a message: a pacs.008 posted to ourselves comes back as its pacs.002.
      const at = await emptyStreamPosition()
      t.equal((await e2e.proxyXml(MSGS, pacs008().xml)).status, 201)
      e2e.setFaults(faultConfig(fault, route, ''))
      let res = await e2e.proxy('GET', at, { headers: { accept: 'multipart/mixed' } })
      for (let i = 0; res.status === 204 && i < 200; i++) res = await e2e.proxy('GET', String(res.headers['pi-pull-next']), { headers: { accept: 'multipart/mixed' } })
      return { res }
    }
    case 'stream end': {
      const at = await emptyStreamPosition()
      e2e.setFaults(faultConfig(fault, route, ''))
      return { res: await e2e.proxy('DELETE', at) }
    }
  }
}

async function assertRowsEnded (t: Test, what: string): Promise<void> {
  const status = await e2e.stack.proxy.audit.status()
  t.equal(status?.spool.openRows, 0, `${what}: the audit row was ended`)
  t.ok(await waitFor(async () => metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_audit_spool_rows', { state: 'pending' })[0] === 0), `${what}: and shipped`)
}

t.test('route × fault: outcome class, code, audit row, at most once, nothing unverified called valid', async (t) => {
  const entry = createEntryRequest({ owner: SAMPLE_PAYEE, keyType: 'EMAIL' })
  t.equal((await e2e.counterpartyWrite('POST', '/api/v2/entries/', entry.xml)).status, 201)
  readKey = entry.key

  for (const route of ROUTES) {
    for (const fault of FAULTS) {
      const cell = `${route} × ${fault}`
      const want = expected(route, fault)
      const { res, write } = await call(route, fault)
      e2e.setFaults({})
      t.equal(res.status, want.status, `${cell}: status (${res.text.slice(0, 160)})`)
      t.equal(header(res, 'pix-proxy-outcome'), want.outcome, `${cell}: outcome ${want.outcome}`)
      if (want.code !== undefined) {
        t.match(problemOf(res), { code: want.code, outcome: want.outcome }, `${cell}: ${want.code}`)
      }
      if (want.outcome !== 'not-sent' || res.status !== 503) t.equal(header(res, 'retry-after'), undefined, `${cell}: no Retry-After`)
      // Nothing BACEN did not validly sign is called valid: only the cells whose answer is genuinely signed say true.
      const verdict = header(res, 'pix-proxy-signature-valid')
      if (verdict !== undefined) t.equal(verdict, String(want.valid === true), `${cell}: pix-proxy-signature-valid`)
      else t.not(want.valid, true, `${cell}: a valid answer carries its verdict`)
      if (write?.requestId !== undefined) {
        t.ok(e2e.log.filter((m) => m.requestId === write.requestId).length <= 1, `${cell}: BACEN performed the write at most once`)
      }
      if (write?.msgId !== undefined) {
        t.ok(e2e.log.filter((m) => m.bizMsgIdr === write.msgId).length <= 1, `${cell}: ICOM accepted the message at most once`)
      }
      await assertRowsEnded(t, cell)
    }
  }
})

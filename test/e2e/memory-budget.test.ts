/**
 * PIXPROXY_MEMORY_BUDGET_BYTES over real sockets: requests held behind a hung BACEN cannot grow the proxy without
 * bound. Past the budget a request is refused before its body is read (NOT SENT, Retry-After), and the budget comes
 * back as the held requests finish.
 */
import t from 'tap'
import { pacs008 } from '../../tools/samples/messages.ts'
import { PER_BODY_BYTE, PER_REQUEST } from '../../src/http/budget.ts'
import { header, metricSamples, PROXY_ISPB, problemOf, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'
import { holdRequests } from '../helpers/gate.ts'

const BUDGET = 1024 * 1024
let e2e: E2e
t.before(async () => {
  e2e = await startE2e(t, { settings: { PIXPROXY_MAX_BODY_BYTES: String(200 * 1024), PIXPROXY_MEMORY_BUDGET_BYTES: String(BUDGET) } })
})

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`

async function used (): Promise<number | undefined> {
  return metricSamples((await e2e.proxy('GET', '/metrics')).text, 'pixproxy_memory_budget_bytes', { measure: 'used' })[0]
}

t.test('past the budget a request is NOT SENT (503 + Retry-After); the budget returns when the held ones finish', async (t) => {
  // ~95 KB each: two fit in 1 MiB at 4 bytes per body byte plus 64 KiB, a third does not.
  const big = (): ReturnType<typeof pacs008> => pacs008({ amounts: Array.from({ length: 85 }, (_, i) => i + 1) })
  const [a, b, c] = [big(), big(), big()]
  const cost = (m: { xml: string }): number => PER_REQUEST + Buffer.byteLength(m.xml) * PER_BODY_BYTE
  t.ok(cost(a) + cost(b) <= BUDGET && cost(a) + cost(b) + cost(c) > BUDGET, `two fit, three do not (${cost(a)} each)`)

  t.equal(await used(), 0, 'nothing held at rest')
  const icom = holdRequests(e2e.stack.simulator.app.server, [MSGS])
  t.teardown(() => { icom.restore() })
  const held = Promise.all([e2e.proxyXml(MSGS, a.xml), e2e.proxyXml(MSGS, b.xml)])
  t.ok(await waitFor(async () => await used() === cost(a) + cost(b)), 'both held requests count against the budget')

  const refused = await e2e.proxyXml(MSGS, c.xml)
  t.equal(refused.status, 503, refused.text.slice(0, 300))
  t.match(problemOf(refused), { code: 'PIXPROXY_ERR_MEMORY_BUDGET', outcome: 'not-sent' })
  t.equal(header(refused, 'retry-after'), '1')
  t.equal(header(refused, 'pix-proxy-outcome'), 'not-sent')
  t.equal(await used(), cost(a) + cost(b), 'a refused request holds nothing')

  icom.release()
  t.same((await held).map((r) => r.status), [201, 201])
  t.ok(await waitFor(async () => await used() === 0), 'the budget is returned')
  t.equal((await e2e.proxyXml(MSGS, c.xml)).status, 201, 'the refused message goes once sent again')
  t.notOk(e2e.log.filter((m) => m.bizMsgIdr === c.msgId).length > 1, 'and reached BACEN once')
})

t.test('a client that goes away returns its share', async (t) => {
  const icom = holdRequests(e2e.stack.simulator.app.server, [MSGS])
  t.teardown(() => { icom.restore() })
  const controller = new AbortController()
  const m = pacs008()
  const pending = e2e.proxy('POST', MSGS, { headers: { 'content-type': 'application/xml' }, body: m.xml, signal: controller.signal }).catch((err: unknown) => err)
  t.ok(await waitFor(async () => (await used() ?? 0) > 0), 'held')
  controller.abort()
  await pending
  icom.release()
  t.ok(await waitFor(async () => await used() === 0), 'returned after the abort')
})

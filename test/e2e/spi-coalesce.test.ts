/**
 * SPI messages coalesced while ICOM's 6 slots are busy: callers still post one message each and each gets its own
 * PI-ResourceId, the one ICOM gave its part; BACEN sees multipart posts of up to 10; every message has its own
 * audit row. ICOM holds the posts until every message is either in one of them or queued for a slot (a gate on the
 * simulator, released by the test), so that messages queue whatever the machine's speed.
 */
import t from 'tap'
import { request } from 'undici'
import { queryAudit } from '../../tools/audit/query.ts'
import { pacs008 } from '../../tools/samples/messages.ts'
import { metricSamples, PROXY_ISPB, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e } from '../helpers/e2e.ts'
import { holdRequests } from '../helpers/gate.ts'

let e2e: E2e
t.before(async () => {
  e2e = await startE2e(t)
})

t.test('40 concurrent pacs.008: fewer posts than messages, each caller its own id, each message its audit row', async (t) => {
  const icom = holdRequests(e2e.stack.simulator.app.server, [`/api/v1/in/${PROXY_ISPB}/msgs`])
  t.teardown(() => { icom.restore() })
  const sent = Array.from({ length: 40 }, () => pacs008({ amounts: [3.5] }))
  const answering = Promise.all(sent.map(async (m) => await e2e.proxyXml(`/api/v1/in/${PROXY_ISPB}/msgs`, m.xml)))
  // ICOM answers nothing until all 40 are in the batcher: in posts it holds (parts counted as each post is sent)
  // or queued for one of the 6 busy slots.
  const inBatcher = async (): Promise<boolean> => {
    const text = (await e2e.proxy('GET', '/metrics')).text
    const posted = metricSamples(text, 'pixproxy_spi_post_parts_sum')[0] ?? 0
    const queued = metricSamples(text, 'pixproxy_spi_queued')[0] ?? 0
    return posted + queued === 40
  }
  t.ok(await waitFor(inBatcher, 60_000), 'every message is at ICOM or queued for a slot')
  t.ok(icom.held() <= 6, `ICOM holds ${icom.held()} posts, no more than its 6 slots`)
  icom.release()
  const answers = await answering
  t.same(answers.map((a) => a.status), sent.map(() => 201), 'every caller got 201')
  const ids = answers.map((a) => String(a.headers['pi-resourceid']))
  t.ok(ids.every((id) => /^[A-Za-z0-9]+$/.test(id)), 'each a single PI-ResourceId, not a list')
  t.equal(new Set(ids).size, 40, 'all distinct')
  sent.forEach((m, i) => {
    const logged = e2e.log.find((x) => x.system === 'spi' && x.bizMsgIdr === m.msgId)
    t.equal(logged?.resourceId, ids[i], `caller ${i} got the id ICOM gave its message`)
    t.equal(logged?.signature, 'VALID')
  })

  const metrics = await (await request(e2e.stack.proxyUrl + '/metrics')).body.text()
  const posts = Number(/^pixproxy_spi_post_parts_count (\d+)$/m.exec(metrics)?.[1])
  const parts = Number(/^pixproxy_spi_post_parts_sum (\d+)$/m.exec(metrics)?.[1])
  t.equal(parts, 40, 'the posts carried the 40 messages')
  t.ok(posts < 40 && posts >= 4, `in ${posts} posts (6 slots, up to 10 parts each)`)

  const dir = e2e.stack.config.audit.parquetDir
  let rows: Array<Record<string, unknown>> = []
  await waitFor(async () => {
    rows = []
    for await (const r of queryAudit(dir, "SELECT biz_msg_id, request_body, response_status_code, response_header FROM audit WHERE system = 'spi'")) rows.push(r)
    return sent.every((m) => rows.some((r) => r.biz_msg_id === m.msgId))
  }, 60_000, 200)
  sent.forEach((m, i) => {
    const r = rows.filter((x) => x.biz_msg_id === m.msgId)
    t.equal(r.length, 1, `one audit row for ${m.msgId}`)
    t.equal(r[0]?.response_status_code, 201)
    t.match(String(r[0]?.response_header), `"pi-resourceid":"${ids[i] as string}"`, 'its own id in the row')
    t.match(String(r[0]?.request_body), /^<\?xml|^<Envelope|<AppHdr/, 'the message itself, not the multipart post')
    t.notMatch(String(r[0]?.request_body), /--[A-Za-z0-9'()+_,./:=?-]+\r\n/, 'no multipart framing in the row')
  })
})

t.test('with coalescing off (PIXPROXY_SPI_COALESCE_MAX_PARTS=1) every message is its own post', async (t) => {
  const { loadConfig } = await import('../../src/config.ts')
  t.equal(loadConfig({ ...e2e.stack.settings, PIXPROXY_SPI_COALESCE_MAX_PARTS: '1' }).spi.coalesceMaxParts, 1)
  t.throws(() => loadConfig({ ...e2e.stack.settings, PIXPROXY_SPI_COALESCE_MAX_PARTS: '11' }), { code: 'PIXPROXY_ERR_CONFIG_INVALID' }, 'ICOM takes at most 10 parts')
})

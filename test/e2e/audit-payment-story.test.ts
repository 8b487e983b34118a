// An auditor's question, answered from the local Parquet store with one query: every call about this EndToEndId.
// The pacs.008 went out in a POST; its pacs.002 came back in a stream read. Both rows must be found by the
// EndToEndId, for single-message pages (application/xml) and multipart pages alike (docs/audit.md, "Auditor's
// queries").
import t from 'tap'
import { join } from 'node:path'
import { queryAudit } from '../../tools/audit/query.ts'
import { pacs008 } from '../../tools/samples/messages.ts'
import { allText, PROXY_ISPB, startE2e, waitFor } from '../helpers/e2e.ts'
import type { E2e, StreamMessage } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`

/** The query docs/audit.md gives for a payment's whole story (EndToEndIds are [A-Za-z0-9]: safe to inline). */
const storyOf = (endToEndId: string): string => `
  SELECT request_date, request_method, request_path, message_type, biz_msg_id, end_to_end_ids,
         response_status_code, response_signature_code, response_body
  FROM (SELECT DISTINCT ON (id) * FROM audit)
  WHERE list_contains(string_split(end_to_end_ids, ','), '${endToEndId}')
  ORDER BY request_date`

async function rows (sql: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(join(e2e.dir, 'audit', 'lake'), sql)) out.push(r)
  return out
}

const reportFor = (endToEndId: string) => (ms: readonly StreamMessage[]): boolean =>
  ms.some((m) => m.msgDefIdr?.startsWith('pacs.002') === true && allText(m.xml, 'OrgnlEndToEndId').includes(endToEndId))

for (const multipart of [false, true]) {
  t.test(`one query by EndToEndId finds the pacs.008 post and the ${multipart ? 'multipart' : 'single-message'} stream page that delivered its pacs.002`, async (t) => {
    const p = pacs008()
    const e2eId = p.endToEndIds[0] as string
    const posted = await e2e.proxyXml(MSGS, p.xml)
    t.equal(posted.status, 201, posted.text.slice(0, 300))
    const read = await e2e.readStream({ multipart, until: reportFor(e2eId) })
    t.ok(reportFor(e2eId)(read.messages), 'the pacs.002 was read through the proxy')

    // Rows ship in batches: poll the store (bounded) until both halves of the story are there.
    let story: Array<Record<string, unknown>> = []
    const found = await waitFor(async () => {
      story = await rows(storyOf(e2eId))
      return story.some((r) => r.request_method === 'POST') && story.some((r) => r.request_method === 'GET')
    }, 60_000, 100)
    t.ok(found, `both rows found: ${JSON.stringify(story.map((r) => [r.request_method, r.message_type]))}`)

    const post = story.filter((r) => r.request_method === 'POST')
    t.equal(post.length, 1, 'one post row')
    t.equal(post[0]?.request_path, MSGS)
    t.match(post[0]?.message_type, /^pacs\.008\.spi\./)
    t.equal(post[0]?.biz_msg_id, p.msgId)
    t.equal(post[0]?.response_status_code, 201)

    const reads = story.filter((r) => r.request_method === 'GET')
    t.ok(reads.length >= 1, 'the stream read that delivered the pacs.002 (a page may be delivered again: at least once)')
    for (const r of reads) {
      t.match(r.request_path, new RegExp(`^/api/v1/out/${PROXY_ISPB}/stream/`))
      t.match(r.message_type, /(^|,)pacs\.002\.spi\./, 'the delivered message type, not "stream read"')
      t.match(r.biz_msg_id, /^M00038166/, 'BizMsgIdr of what BCB sent')
      t.equal(r.response_status_code, 200)
      t.equal(r.response_signature_code, 'VALID')
      t.ok(String(r.response_body).includes(e2eId), 'the page as delivered holds the pacs.002 about the payment')
    }
    t.ok((story[0]?.request_method) === 'POST', 'in time order: the post, then the read')
  })
}

t.test('a page that delivered nothing still says what the call was', async (t) => {
  // The tests above drained the stream: a read long-polls and answers 204 (followed for a few pages in case).
  let path = `/api/v1/out/${PROXY_ISPB}/stream/start`
  let status = 0
  for (let i = 0; i < 10 && status !== 204; i++) {
    const res = await e2e.proxy('GET', path, { headers: { accept: 'application/xml' } })
    status = res.status
    path = String(res.headers['pi-pull-next'])
  }
  t.equal(status, 204)
  await e2e.proxy('DELETE', path)
  let empty: Array<Record<string, unknown>> = []
  t.ok(await waitFor(async () => {
    empty = await rows("SELECT message_type, end_to_end_ids FROM audit WHERE request_method = 'GET' AND response_status_code = 204")
    return empty.length > 0
  }, 60_000, 100), '204 row shipped')
  for (const r of empty) t.same(r, { message_type: 'stream read', end_to_end_ids: null })
})

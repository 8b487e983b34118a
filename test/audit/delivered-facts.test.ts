// The facts only an answer holds (the messages an ICOM stream page delivered) travel in the response half of an
// audit row and take the place of the request half's: in memory, from disk and after a replay.
import t from 'tap'
import { AuditSpool } from '../../src/audit/spool.ts'
import type { AuditRequestHalf, AuditResponseHalf } from '../../src/audit/spool.ts'
import type { AuditRow } from '../../src/audit/schema.ts'
import { AuditRecorder } from '../../src/audit/recorder.ts'
import type { AuditJournal } from '../../src/audit/service.ts'
import { emptyFacts } from '../../core/pix/facts.ts'

const E2E = 'E9999900420260506070800000000001'

function streamRead (id: string): AuditRequestHalf {
  return {
    id,
    request_date: '2026-05-06T07:08:09.010Z',
    system: 'spi',
    request_method: 'GET',
    request_path: '/api/v1/out/99999004/stream/start',
    request_header: '{"accept":"multipart/mixed"}',
    message_type: 'stream read',
    correlation_id: `req-${id}`,
    instance_id: 'task-1'
  }
}

const answer = (facts: Partial<AuditResponseHalf> = {}): AuditResponseHalf => ({
  response_status_code: 200,
  response_body: '<Envelope/>',
  response_signature_valid: true,
  response_signature_code: 'VALID',
  upstream_latency_ms: 1,
  total_latency_ms: 2,
  ...facts
})

async function rowsOf (s: AuditSpool): Promise<AuditRow[]> {
  const out: AuditRow[] = []
  for (let ref = s.shift(); ref !== undefined; ref = s.shift()) out.push(await s.load(ref))
  return out.sort((a, b) => a.id.localeCompare(b.id))
}

for (const memoryBytes of [undefined, 0]) {
  t.test(`response facts replace the request half's (${memoryBytes === 0 ? 'rows read back from disk' : 'rows kept in memory'}), and survive a replay`, async (t) => {
    const dir = t.testdir()
    const s = await AuditSpool.open({ dir, maxBytes: 1 << 24, ...(memoryBytes === undefined ? {} : { memoryBytes }) })
    await s.begin(streamRead('a1'))
    await s.end('a1', answer({ message_type: 'pacs.002.spi.1.17,pibr.002.spi.1.3', biz_msg_id: 'M00038166x,M00038166y', end_to_end_ids: E2E }))
    await s.begin(streamRead('a2'))
    await s.end('a2', { ...answer(), response_status_code: 204, response_body: null })
    const [delivered, empty] = await rowsOf(s)
    t.equal(delivered?.message_type, 'pacs.002.spi.1.17,pibr.002.spi.1.3')
    t.equal(delivered?.biz_msg_id, 'M00038166x,M00038166y')
    t.equal(delivered?.end_to_end_ids, E2E)
    t.equal(empty?.message_type, 'stream read', 'a page that delivered nothing keeps what the call was')
    t.equal(empty?.end_to_end_ids, null)
    await s.close()

    // Not acknowledged: a new process replays both rows from the frames.
    const replayed = await AuditSpool.open({ dir, maxBytes: 1 << 24 })
    t.teardown(async () => { await replayed.close() })
    const again = await rowsOf(replayed)
    t.same(again.map((r) => [r.message_type, r.end_to_end_ids]), [['pacs.002.spi.1.17,pibr.002.spi.1.3', E2E], ['stream read', null]])
  })
}

t.test('response facts are checked against the schema like every column', async (t) => {
  const s = await AuditSpool.open({ dir: t.testdir(), maxBytes: 1 << 24 })
  t.teardown(async () => { await s.close() })
  await s.begin(streamRead('b1'))
  await t.rejects(s.end('b1', answer({ end_to_end_ids: 42 as unknown as string })), { code: 'PIXPROXY_ERR_AUDIT_ROW_INVALID' })
  await t.rejects(s.end('b1', { ...answer(), dict_key: 'x' } as unknown as AuditResponseHalf), { code: 'PIXPROXY_ERR_AUDIT_ROW_INVALID' }, 'other request columns stay in the request half')
})

t.test('the recorder puts known delivered facts in the response half, and nothing when there are none', async (t) => {
  const ends: AuditResponseHalf[] = []
  const journal: AuditJournal = { begin: async () => {}, end: async (_id, half) => { ends.push(half) } }
  const rec = new AuditRecorder(journal, 'task-1')
  const begun = emptyFacts()
  begun.messageType = 'stream read'
  const input = { system: 'spi' as const, receivedAt: Date.now(), receivedPerf: performance.now(), method: 'GET', path: '/api/v1/out/99999004/stream/start', headers: {}, body: null, facts: begun, correlationId: 'r1' }
  const end = { status: 200, headers: {}, body: Buffer.from('<x/>'), signatureValid: true, signatureCode: 'VALID', upstreamMs: 1 }
  const delivered = emptyFacts()
  delivered.messageType = 'pacs.002.spi.1.17'
  delivered.bizMsgId = 'M00038166x'
  delivered.endToEndIds.push(E2E, 'E9999900420260506070800000000002')
  await (await rec.begin(input)).end({ ...end, facts: delivered })
  await (await rec.begin(input)).end({ ...end, facts: emptyFacts() })
  await (await rec.begin(input)).end(end)
  t.match(ends[0], { message_type: 'pacs.002.spi.1.17', biz_msg_id: 'M00038166x', end_to_end_ids: `${E2E},E9999900420260506070800000000002` })
  for (const half of ends.slice(1)) {
    t.notOk('message_type' in half || 'biz_msg_id' in half || 'end_to_end_ids' in half, 'no facts: the request half stands')
  }
})

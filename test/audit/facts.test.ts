import t from 'tap'
import { parseXml } from '../../core/xmldsig/xml.ts'
import { dictFacts, emptyFacts, spiFacts } from '../../core/pix/facts.ts'
import { createClaimRequest, createEntryRequest, pacs008, pibr001 } from '../../tools/samples/messages.ts'

t.test('SPI: message type, BizMsgIdr and every EndToEndId', async (t) => {
  const p = pacs008({ amounts: [1, 2, 3] })
  const f = spiFacts(parseXml(p.xml))
  t.equal(f.messageType, 'pacs.008.spi.1.13')
  t.equal(f.bizMsgId, p.msgId)
  t.same(f.endToEndIds, p.endToEndIds)
})

t.test('SPI: a multipart batch accumulates distinct values', async (t) => {
  const a = pacs008()
  const b = pibr001()
  const f = spiFacts(parseXml(b.xml), spiFacts(parseXml(a.xml)))
  t.equal(f.messageType, 'pacs.008.spi.1.13,pibr.001.spi.1.3')
  t.equal(f.bizMsgId, `${a.msgId},${b.msgId}`)
  t.same(f.endToEndIds, a.endToEndIds)
})

t.test('SPI: pacs.002 original EndToEndIds are found too', async (t) => {
  const xml = '<Envelope xmlns="urn:x"><AppHdr><MsgDefIdr>pacs.002.spi.1.17</MsgDefIdr><BizMsgIdr>M1</BizMsgIdr></AppHdr><Document><FIToFIPmtStsRpt><TxInfAndSts><OrgnlEndToEndId>E1</OrgnlEndToEndId></TxInfAndSts></FIToFIPmtStsRpt></Document></Envelope>'
  t.same(spiFacts(parseXml(xml)).endToEndIds, ['E1'])
})

t.test('DICT: root name, RequestId and Key', async (t) => {
  const e = createEntryRequest()
  t.same(dictFacts(parseXml(e.xml)), { ...emptyFacts(), messageType: 'CreateEntryRequest', dictRequestId: e.requestId, dictKey: e.key })
  const c = createClaimRequest()
  const f = dictFacts(parseXml(c.xml))
  t.equal(f.messageType, 'CreateClaimRequest')
  t.equal(f.dictKey, c.key)
  t.same(dictFacts(parseXml('<DeleteEntryRequest><Key>k@x.br</Key><Participant>1</Participant></DeleteEntryRequest>')).dictKey, 'k@x.br')
})

t.test('uuidv7: version, variant, time order', async (t) => {
  const { uuidv7 } = await import('../../src/audit/id.ts')
  const a = uuidv7(1_700_000_000_000)
  const b = uuidv7(1_700_000_000_001)
  t.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  t.ok(a < b, 'later ids sort after earlier ones')
  t.equal(a.slice(0, 13).replace('-', ''), (1_700_000_000_000).toString(16).padStart(12, '0'))
  t.not(uuidv7(1), uuidv7(1), 'random part differs')
  // The 48-bit time at its edges (32-bit boundary included), against an independent encoding.
  for (const ms of [0, 0xffff_ffff, 0x1_0000_0000, 0x1234_5678_9abc, 0xffff_ffff_ffff]) {
    t.equal(uuidv7(ms).slice(0, 13).replace('-', ''), ms.toString(16).padStart(12, '0'), `time ${ms}`)
  }
  // Across several refills of the random pool: every id well-formed, no random part repeated.
  const ids = Array.from({ length: 2_000 }, () => uuidv7(1_700_000_000_000))
  t.ok(ids.every((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id)), 'all well-formed')
  t.equal(new Set(ids.map((id) => id.slice(14))).size, ids.length, 'no random part repeated')
})

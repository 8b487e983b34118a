/**
 * SPI/ICOM through pix-proxy over real sockets: messages POSTed by the bank are signed with the HSM key in the SPI
 * profile and reach the simulator over mutual TLS; what the SPI sends back is read from the stream through the
 * proxy, following PI-Pull-Next, every message flagged with its verified BCB signature.
 */
import t from 'tap'
import type { Test } from 'tap'
import { buildMultipart } from '../../src/http/multipart.ts'
import { pacs008, pibr001 } from '../../tools/samples/messages.ts'
import type { BuiltSpiMessage } from '../../tools/samples/messages.ts'
import { allText, COUNTERPARTY_ISPB, fieldAt, header, PROXY_ISPB, startE2e, streamMessages, waitFor } from '../helpers/e2e.ts'
import type { E2e, StreamMessage } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })

const MSGS = `/api/v1/in/${PROXY_ISPB}/msgs`

/** The pacs.002 on the stream that reports on this EndToEndId, if read. */
function statusReport (messages: readonly StreamMessage[], endToEndId: string): StreamMessage | undefined {
  return messages.find((m) => m.msgDefIdr?.startsWith('pacs.002') === true && allText(m.xml, 'OrgnlEndToEndId').includes(endToEndId))
}

/** The simulator accepted these messages under these PI-ResourceIds, signed by the HSM key, and processed them. */
function assertAccepted (t: Test, ids: readonly string[], sent: readonly BuiltSpiMessage[], msgDef: RegExp): void {
  t.equal(ids.length, sent.length, 'one PI-ResourceId per message')
  ids.forEach((id, i) => {
    const m = e2e.log.find((x) => x.system === 'spi' && x.resourceId === id)
    t.ok(m, `simulator logged resource ${id}`)
    t.equal(m?.ispb, PROXY_ISPB)
    t.equal(m?.signature, 'VALID', 'SPI-profile signature by the HSM key verified by BACEN')
    t.equal(m?.rejection, undefined, 'not rejected (no admi.002)')
    t.equal(m?.bizMsgIdr, sent[i]?.msgId)
    t.match(m?.msgDefIdr, msgDef)
    t.same(m?.endToEndIds, sent[i]?.endToEndIds)
  })
}

t.test('pacs.008 through the proxy: 201 with PI-ResourceId, accepted by the SPI signed by the HSM key', async (t) => {
  const p = pacs008()
  const res = await e2e.proxyXml(MSGS, p.xml)
  t.equal(res.status, 201, res.text.slice(0, 300))
  const id = header(res, 'pi-resourceid') ?? ''
  t.match(id, /^[A-Za-z0-9]{32}$/)
  t.equal(header(res, 'pix-proxy-signature-code'), 'NOT_APPLICABLE', 'an empty 201 carries no signature to check')
  t.equal(header(res, 'pix-proxy-signature-valid'), 'false', 'nothing verified is never called valid')
  assertAccepted(t, [id], [p], /^pacs\.008\.spi\./)

  // The payer reads its settlement report (single application/xml pages), following PI-Pull-Next.
  const e2eId = p.endToEndIds[0] as string
  const read = await e2e.readStream({ multipart: false, until: (ms) => statusReport(ms, e2eId) !== undefined })
  const report = statusReport(read.messages, e2eId)
  t.ok(report, 'pacs.002 for the EndToEndId arrived on the stream')
  t.equal(fieldAt(report?.xml ?? '', 'Document', 'FIToFIPmtStsRpt', 'TxInfAndSts', 'TxSts'), 'ACSC')
  t.equal(fieldAt(report?.xml ?? '', 'Document', 'FIToFIPmtStsRpt', 'OrgnlGrpInfAndSts', 'OrgnlMsgId'), p.msgId)
  t.equal(report?.signatureValid, 'true')
  t.equal(report?.signatureCode, 'VALID')
  t.equal(e2e.bcbVerdict(report?.xml ?? '', 'spi'), 'VALID', 'the relayed message verifies independently')
  t.match(report?.resourceId, /^[A-Za-z0-9]{32}$/, 'PI-ResourceId of the message relayed as a response header')
  for (const page of read.pages) {
    t.match(header(page, 'pi-pull-next'), new RegExp(`^/api/v1/out/${PROXY_ISPB}/stream/[0-9a-f]+$`), 'PI-Pull-Next relayed')
    if (page.status === 200) t.match(header(page, 'content-type'), /^application\/xml/)
    t.ok(page.messages.length <= 1, 'application/xml pages carry one message')
  }
  t.equal(read.deleteStatus, 204, 'DELETE on the next position ends the stream')

  // The payee got the forwarded pacs.008 and an ACCC for it: what the proxy signed reached the counterparty.
  let forwarded = false
  let credited = false
  let path = `/api/v1/out/${COUNTERPARTY_ISPB}/stream/start`
  // Until both arrived; the bound (not a count of 300 ms long polls) only ends a test that is failing anyway.
  const deadline = Date.now() + 60_000
  while (!(forwarded && credited) && Date.now() < deadline) {
    const page = await e2e.stack.counterparty.client.request('GET', path, { headers: { accept: 'multipart/mixed' } })
    if (page.status === 200) {
      for (const m of streamMessages({ status: page.status, headers: page.headers, body: page.body, text: page.text })) {
        if (m.msgDefIdr?.startsWith('pacs.008') === true && allText(m.xml, 'EndToEndId').includes(e2eId)) forwarded = true
        if (m.msgDefIdr?.startsWith('pacs.002') === true && allText(m.xml, 'OrgnlEndToEndId').includes(e2eId) && allText(m.xml, 'TxSts').includes('ACCC')) credited = true
      }
    }
    path = page.headers['pi-pull-next'] as string
  }
  await e2e.stack.counterparty.client.request('DELETE', path)
  t.ok(forwarded, 'the payee received the pacs.008')
  t.ok(credited, 'the payee received pacs.002 ACCC')
})

t.test('multipart/mixed POST of several messages, read back as multipart pages with each part flagged', async (t) => {
  const sent = [pacs008({ amounts: [10] }), pacs008({ amounts: [20.5, 30] }), pacs008({ amounts: [40] })]
  const mp = buildMultipart(sent.map((m) => ({ headers: { 'content-type': 'application/xml; charset=utf-8' }, body: Buffer.from(m.xml) })))
  const res = await e2e.proxy('POST', MSGS, { headers: { 'content-type': mp.contentType }, body: mp.body })
  t.equal(res.status, 201, res.text.slice(0, 300))
  const ids = (header(res, 'pi-resourceid') ?? '').split(',').map((s) => s.trim())
  assertAccepted(t, ids, sent, /^pacs\.008\.spi\./)

  const e2eIds = sent.flatMap((m) => m.endToEndIds)
  t.equal(e2eIds.length, 4)
  // Let every report be queued first, so that one page carries several parts.
  t.ok(await waitFor(() => e2e.sim.spi.pending(PROXY_ISPB) >= e2eIds.length), 'the SPI queued the reports')
  const read = await e2e.readStream({ multipart: true, until: (ms) => e2eIds.every((id) => statusReport(ms, id) !== undefined) })
  for (const id of e2eIds) {
    const report = statusReport(read.messages, id)
    t.ok(report, `pacs.002 for ${id}`)
    t.equal(allText(report?.xml ?? '', 'TxSts')[0], 'ACSC')
  }
  const first = read.pages[0]
  t.equal(first?.status, 200)
  t.match(header(first ?? { headers: {} }, 'content-type'), /^multipart\/mixed; boundary=/)
  t.ok((first?.messages.length ?? 0) >= e2eIds.length, `one page carried ${first?.messages.length ?? 0} parts`)
  for (const m of read.messages) {
    t.equal(m.signatureValid, 'true', 'part flagged valid')
    t.equal(m.signatureCode, 'VALID', 'part code')
    t.match(m.resourceId, /^[A-Za-z0-9]{32}$/, 'part keeps its PI-ResourceId')
    t.equal(e2e.bcbVerdict(m.xml, 'spi'), 'VALID', 'part verifies independently')
  }
  t.equal(header(first ?? { headers: {} }, 'pix-proxy-signature-code'), 'VALID', 'page verdict')
  t.equal(read.deleteStatus, 204)
})

t.test('204 on an empty long-poll; DELETE ends the stream', async (t) => {
  t.ok(await waitFor(() => e2e.sim.spi.pending(PROXY_ISPB) === 0), 'nothing queued for the proxy participant')
  const started = Date.now()
  const empty = await e2e.proxy('GET', `/api/v1/out/${PROXY_ISPB}/stream/start`, { headers: { accept: 'multipart/mixed' } })
  const waited = Date.now() - started
  t.equal(empty.status, 204)
  t.equal(empty.body.length, 0)
  t.ok(waited >= 250, `the proxy held the long-poll (${waited} ms; simulator long-poll 300 ms)`)
  const next = header(empty, 'pi-pull-next') ?? ''
  t.match(next, new RegExp(`^/api/v1/out/${PROXY_ISPB}/stream/[0-9a-f]+$`))

  const del = await e2e.proxy('DELETE', next)
  t.equal(del.status, 204)
  const gone = await e2e.proxy('GET', next)
  t.equal(gone.status, 404, 'the ended stream position no longer exists at the SPI')
  t.match(header(gone, 'content-type'), /^application\/problem\+xml/)
  t.equal(header(gone, 'pix-proxy-signature-code'), 'NOT_APPLICABLE', 'ICOM problems are not signed')
  t.equal(header(gone, 'pix-proxy-signature-valid'), 'false', 'nothing verified is never called valid')
})

t.test('pibr.001 echo request answered by pibr.002 on the stream', async (t) => {
  const data = `e2e-echo-${Date.now()}`
  const ping = pibr001({ data })
  const res = await e2e.proxyXml(MSGS, ping.xml)
  t.equal(res.status, 201, res.text.slice(0, 300))
  assertAccepted(t, [header(res, 'pi-resourceid') ?? ''], [ping], /^pibr\.001\.spi\./)
  const isReply = (m: StreamMessage): boolean => m.msgDefIdr?.startsWith('pibr.002') === true && allText(m.xml, 'OrgnlMsgId').includes(ping.msgId)
  const read = await e2e.readStream({ multipart: false, until: (ms) => ms.some(isReply) })
  const reply = read.messages.find(isReply)
  t.ok(reply, 'pibr.002 arrived')
  t.equal(allText(reply?.xml ?? '', 'OrgnlData')[0], data)
  t.equal(reply?.signatureCode, 'VALID')
  t.equal(e2e.bcbVerdict(reply?.xml ?? '', 'spi'), 'VALID')
  t.equal(read.deleteStatus, 204)
})

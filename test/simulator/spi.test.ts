import { join } from 'node:path'
import { connect } from 'node:tls'
import { gzipSync } from 'node:zlib'
import t from 'tap'
import { startSimulator } from '../../tools/simulator/server.ts'
import { createSimulatorPki } from '../../tools/simulator/pki.ts'
import type { ParticipantIdentity } from '../../tools/simulator/pki.ts'
import { ParticipantClient } from '../../tools/simulator/client.ts'
import type { SimpleResponse } from '../../tools/simulator/client.ts'
import { buildMultipart, parseContentType, parseMultipart } from '../../tools/simulator/multipart.ts'
import { pacs008, pibr001, SAMPLE_PAYEE, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { BCB_ISPB } from '../../core/pix/ids.ts'
import { parseXml, TrustStore, verifyXml } from '../../core/xmldsig/index.ts'
import type { XmlElement } from '../../core/xmldsig/xml.ts'
import { childElements, textContent } from '../../core/xmldsig/xml.ts'
import { waitFor } from '../helpers/wait.ts'

const A = SAMPLE_PAYER.ispb // 99999004
const B = SAMPLE_PAYEE.ispb // 99999010
const pki = createSimulatorPki({ participants: [A, B] })
const bcbTrust = new TrustStore([pki.bcbSigning.certificate])
const LONG_POLL_MS = 1_000

function clientFor (url: string, p: ParticipantIdentity): ParticipantClient {
  return new ParticipantClient({ url, ca: pki.ca.certPem, certPem: p.tls.certPem, keyPem: p.tls.keyPem, servername: 'icom-h.pi.rsfn.net.br' })
}

/** Text of the first element with this local name, anywhere. */
function find (xml: string, local: string): string | undefined {
  const walk = (el: XmlElement): XmlElement | undefined => {
    if (el.local === local) return el
    for (const c of childElements(el)) {
      const hit = walk(c)
      if (hit !== undefined) return hit
    }
    return undefined
  }
  const el = walk(parseXml(xml).root)
  return el === undefined ? undefined : textContent(el).trim()
}

/** AppHdr Fr or To: the ISPB in FIId/FinInstnId/Othr/Id. */
function party (xml: string, which: 'Fr' | 'To'): string | undefined {
  const hdr = childElements(parseXml(xml).root).find((e) => e.local === 'AppHdr')
  let el = hdr === undefined ? undefined : childElements(hdr).find((e) => e.local === which)
  for (const step of ['FIId', 'FinInstnId', 'Othr', 'Id']) el = el === undefined ? undefined : childElements(el).find((e) => e.local === step)
  return el === undefined ? undefined : textContent(el).trim()
}

function messagesOf (res: SimpleResponse): Array<{ resourceId: string | undefined, xml: string }> {
  if (res.status !== 200) return []
  const ct = parseContentType(res.headers['content-type'] as string)
  if (ct.type === 'multipart/mixed') {
    return parseMultipart(res.body, ct.params.boundary ?? '', 10).map((p) => ({ resourceId: p.headers['pi-resourceid'], xml: p.body.toString('utf8') }))
  }
  return [{ resourceId: res.headers['pi-resourceid'] as string | undefined, xml: res.text }]
}

/** Reads A's or B's stream until `count` messages arrived or a 204; returns them and the next path. */
async function drain (client: ParticipantClient, ispb: string, count: number, accept = 'application/xml'): Promise<{ messages: string[], next: string, statuses: number[] }> {
  const messages: string[] = []
  const statuses: number[] = []
  let path = `/api/v1/out/${ispb}/stream/start`
  for (let i = 0; i < 20 && messages.length < count; i++) {
    const res = await client.request('GET', path, { headers: { accept } })
    statuses.push(res.status)
    path = res.headers['pi-pull-next'] as string
    messages.push(...messagesOf(res).map((m) => m.xml))
    if (res.status === 204 && messages.length >= count) break
  }
  return { messages, next: path, statuses }
}

/** Sends `request` as written over a TLS connection with the participant's certificate; resolves with all bytes read. */
async function rawExchange (url: string, p: ParticipantIdentity, request: string): Promise<string> {
  const { hostname, port } = new URL(url)
  return await new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), servername: 'icom-h.pi.rsfn.net.br', ca: pki.ca.certPem, cert: p.tls.certPem, key: p.tls.keyPem }, () => {
      socket.end(Buffer.from(request, 'latin1'))
    })
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', reject)
    socket.on('close', () => { resolve(Buffer.concat(chunks).toString('utf8')) })
  })
}

t.test('SPI over ICOM', async (t) => {
  const dir = t.testdir()
  const sim = await startSimulator({
    ...pki.simulatorOptions({ fingerprints: true }),
    spi: { longPollMs: LONG_POLL_MS },
    logFile: join(dir, 'accepted.jsonl')
  })
  t.teardown(async () => { await sim.close() })
  const pa = pki.participant(A)
  const pb = pki.participant(B)
  const a = clientFor(sim.spiUrl, pa)
  const b = clientFor(sim.spiUrl, pb)
  t.teardown(async () => { await a.close(); await b.close() })
  const post = async (client: ParticipantClient, ispb: string, body: string | Buffer, headers: Record<string, string> = { 'content-type': 'application/xml; charset=utf-8' }): Promise<SimpleResponse> =>
    await client.request('POST', `/api/v1/in/${ispb}/msgs`, { body, headers })
  const bcbValid = (xml: string): string => verifyXml(xml, { profile: 'spi', trustStore: bcbTrust }).code

  await t.test('pacs.008 → 201; pacs.002 ACSC per transaction on the payer\'s stream, one message per page', async (t) => {
    const msg = pacs008({ from: A, amounts: [10, 20.5] })
    const res = await post(a, A, await pa.signing.xmlSigner.sign(msg.xml, 'spi'))
    t.equal(res.status, 201)
    t.match(res.headers['pi-resourceid'], /^[A-Za-z0-9]{32}$/)
    t.equal(res.text, '')
    // Settlement is queued after the 201 (a timer, then BCB's signature): wait until both reports are queued, or a
    // slow machine could see the long poll end first.
    t.ok(await waitFor(() => sim.app.simulator.spi.pending(A) === 2), 'both pacs.002 queued for A')

    const first = await a.request('GET', `/api/v1/out/${A}/stream/start`, { headers: { accept: 'application/xml' } })
    t.equal(first.status, 200)
    t.match(first.headers['pi-pull-next'], new RegExp(`^/api/v1/out/${A}/stream/[0-9a-f]{32}$`))
    t.match(first.headers['pi-resourceid'], /^[A-Za-z0-9]{32}$/)
    t.equal(first.headers['content-type'], 'application/xml; charset=utf-8')
    t.equal(bcbValid(first.text), 'VALID', 'signed by BCB in the SPI profile')
    t.equal(find(first.text, 'MsgDefIdr'), 'pacs.002.spi.1.17')
    t.equal(party(first.text, 'Fr'), BCB_ISPB)
    t.equal(party(first.text, 'To'), A)
    t.equal(find(first.text, 'TxSts'), 'ACSC')
    t.equal(find(first.text, 'OrgnlEndToEndId'), msg.endToEndIds[0])
    t.equal(find(first.text, 'OrgnlMsgId'), msg.msgId)

    const retry = await a.request('GET', `/api/v1/out/${A}/stream/start`, { headers: { accept: 'application/xml' } })
    t.equal(retry.status, 200, 'a second stream/start is another reader')
    t.equal(find(retry.text, 'OrgnlEndToEndId'), msg.endToEndIds[1], 'and gets the next message')

    const t0 = Date.now()
    const empty = await a.request('GET', first.headers['pi-pull-next'] as string)
    t.equal(empty.status, 204, 'nothing more: 204 after the long poll')
    t.ok(Date.now() - t0 >= LONG_POLL_MS - 30, `waited ${Date.now() - t0} ms`)
    t.match(empty.headers['pi-pull-next'], /^\/api\/v1\/out\//)

    // the page read at the second reader's start was never acknowledged: DELETE on its next path confirms it
    const del = await a.request('DELETE', retry.headers['pi-pull-next'] as string)
    t.equal(del.status, 204)
    const afterDelete = await a.request('GET', retry.headers['pi-pull-next'] as string)
    t.equal(afterDelete.status, 404)
  })

  await t.test('the payee gets the forwarded pacs.008 and ACCC, as multipart/mixed', async (t) => {
    t.ok(await waitFor(() => sim.app.simulator.spi.pending(B) === 3), 'the forwarded pacs.008 and both ACCC queued for B')
    const res = await b.request('GET', `/api/v1/out/${B}/stream/start`, { headers: { accept: 'multipart/mixed' } })
    t.equal(res.status, 200)
    t.match(res.headers['content-type'], /^multipart\/mixed; boundary=/)
    const parts = messagesOf(res)
    t.equal(parts.length, 3)
    for (const p of parts) {
      t.match(p.resourceId, /^[A-Za-z0-9]{32}$/, 'each part has its PI-ResourceId')
      t.equal(bcbValid(p.xml), 'VALID')
      t.equal(party(p.xml, 'Fr'), BCB_ISPB)
      t.equal(party(p.xml, 'To'), B)
    }
    t.equal(find(parts[0]?.xml ?? '', 'MsgDefIdr'), 'pacs.008.spi.1.13')
    t.equal(find(parts[0]?.xml ?? '', 'Nm'), SAMPLE_PAYER.name, 'the payer\'s Document, unchanged')
    t.same(parts.slice(1).map((p) => find(p.xml, 'TxSts')), ['ACCC', 'ACCC'])

    const again = await b.request('GET', `/api/v1/out/${B}/stream/start`, { headers: { accept: 'multipart/mixed' } })
    t.equal(again.status, 204, 'nothing left for B')
    const sameAgain = await b.request('GET', res.headers['pi-pull-next'] as string, { headers: { accept: 'multipart/mixed' } })
    t.equal(sameAgain.status, 204)
    const retried = await b.request('GET', res.headers['pi-pull-next'] as string, { headers: { accept: 'multipart/mixed' } })
    t.equal(retried.status, 204, 'a retry of a position gets that position\'s page again')
    t.equal(retried.headers['pi-pull-next'], sameAgain.headers['pi-pull-next'])
  })

  await t.test('invalid signature and foreign Fr: 201, then admi.002 on the sender\'s stream', async (t) => {
    const msg = pacs008({ from: A, amounts: [99] })
    const tampered = (await pa.signing.xmlSigner.sign(msg.xml, 'spi')).replace('>99.00<', '>9999.00<')
    t.equal((await post(a, A, tampered)).status, 201)
    const foreign = pacs008({ from: B, amounts: [1] })
    t.equal((await post(a, A, await pa.signing.xmlSigner.sign(foreign.xml, 'spi'))).status, 201)
    const { messages } = await drain(a, A, 2)
    t.equal(messages.length, 2)
    t.equal(find(messages[0] ?? '', 'MsgDefIdr'), 'admi.002.spi.1.5')
    t.equal(find(messages[0] ?? '', 'RjctgPtyRsn'), 'Assinatura XML inválida')
    t.equal(find(messages[0] ?? '', 'ErrLctn'), 'SignatureValue')
    t.equal(find(messages[0] ?? '', 'RsnDesc'), 'Assinatura não confere com digests ou certificado')
    t.equal(find(messages[0] ?? '', 'Ref'), msg.msgId)
    t.equal(bcbValid(messages[0] ?? ''), 'VALID')
    t.equal(find(messages[1] ?? '', 'RjctgPtyRsn'), 'O ISPB do remetente não é o mesmo da Assinatura XML')
    const log = sim.app.simulator.log
    t.match(log.find((l) => l.bizMsgIdr === msg.msgId), { system: 'spi', ispb: A, signature: 'DIGEST_MISMATCH', status: 201, rejection: 'Assinatura XML inválida' })
    t.equal(sim.app.simulator.spi.pending(B), 0, 'rejected messages are not forwarded')
  })

  await t.test('pibr.001 → pibr.002; multipart and gzip POSTs; repeated EndToEndId → RJCT AM05', async (t) => {
    const echo = pibr001({ from: A, data: 'olá' })
    const one = pacs008({ from: A, amounts: [1] })
    const { body, contentType } = buildMultipart([
      { headers: { 'Content-Type': 'application/xml' }, body: await pa.signing.xmlSigner.sign(echo.xml, 'spi') },
      { headers: { 'Content-Type': 'application/xml' }, body: await pa.signing.xmlSigner.sign(one.xml, 'spi') }
    ])
    const res = await post(a, A, body, { 'content-type': contentType })
    t.equal(res.status, 201)
    t.match(res.headers['pi-resourceid'], /^[A-Za-z0-9]{32},[A-Za-z0-9]{32}$/, 'one resource id per part')
    const zipped = await post(a, A, gzipSync(await pa.signing.xmlSigner.sign(one.xml, 'spi')), { 'content-type': 'application/xml', 'content-encoding': 'gzip' })
    t.equal(zipped.status, 201, 'gzip request bodies are accepted')

    const { messages } = await drain(a, A, 3, 'multipart/mixed')
    const kinds = messages.map((m) => `${find(m, 'MsgDefIdr') ?? ''}:${find(m, 'TxSts') ?? find(m, 'OrgnlData') ?? ''}`)
    t.same(kinds.sort(), ['pacs.002.spi.1.17:ACSC', 'pacs.002.spi.1.17:RJCT', 'pibr.002.spi.1.3:olá'])
    const rjct = messages.find((m) => find(m, 'TxSts') === 'RJCT') ?? ''
    t.equal(find(rjct, 'Cd'), 'AM05')
    t.equal(find(rjct, 'OrgnlEndToEndId'), one.endToEndIds[0])
    const { messages: forB } = await drain(b, B, 2, 'multipart/mixed')
    t.equal(forB.length, 2, 'the payee got the first pacs.008 and its ACCC, nothing for the duplicate')
  })

  await t.test('ICOM limits: 7th concurrent POST and 7th concurrent reader → 429', async (t) => {
    // Six held at the simulator until the seventh has been answered (observed and released, not a latency a slow
    // machine could outlast), then the seventh.
    const seventhPost = async (client: ParticipantClient, ispb: string): Promise<{ statuses: number[], seventh: SimpleResponse }> => {
      const bodies = await Promise.all(Array.from({ length: 7 }, async () => await (ispb === A ? pa : pb).signing.xmlSigner.sign(pibr001({ from: ispb }).xml, 'spi')))
      const hold = sim.app.simulator.hold(`/api/v1/in/${ispb}/`)
      t.teardown(() => { hold.release() })
      const six = bodies.slice(0, 6).map(async (body) => (await post(client, ispb, body)).status)
      t.ok(await waitFor(() => hold.waiting === 6 && sim.app.simulator.spi.active(ispb).posts === 6), `${ispb}: six POSTs in flight`)
      const seventh = await post(client, ispb, bodies[6] as string)
      hold.release()
      return { statuses: await Promise.all(six), seventh }
    }
    const fromA = await seventhPost(a, A)
    t.same([fromA.statuses, fromA.seventh.status], [[201, 201, 201, 201, 201, 201], 429])
    const fromB = await seventhPost(b, B)
    t.equal(fromB.seventh.status, 429, 'the limit is per participant: B had its own six')
    t.match(fromB.seventh.text, /tooManyRequests/)
    t.equal(fromB.seventh.headers['content-type'], 'application/problem+xml')
    await drain(a, A, 6)
    await drain(b, B, 6)

    // The readers are held too: a long poll ends on its own after LONG_POLL_MS, before a slow machine's sixth arrives.
    const readHold = sim.app.simulator.hold(`/api/v1/out/${A}/stream/`)
    t.teardown(() => { readHold.release() })
    const readers = Array.from({ length: 6 }, async () => await a.request('GET', `/api/v1/out/${A}/stream/start`))
    t.ok(await waitFor(() => readHold.waiting === 6 && sim.app.simulator.spi.active(A).readers === 6), 'six readers waiting')
    const seventh = await a.request('GET', `/api/v1/out/${A}/stream/start`)
    t.equal(seventh.status, 429)
    readHold.release()
    t.same((await Promise.all(readers)).map((r) => r.status), [204, 204, 204, 204, 204, 204])
  })

  await t.test('header and identity rules', async (t) => {
    const body = await pa.signing.xmlSigner.sign(pibr001({ from: A }).xml, 'spi')
    const traced = await post(a, A, body, { 'content-type': 'application/xml', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' })
    t.equal(traced.status, 400)
    t.equal(find(traced.text, 'type'), 'https://icom.pi.rsfn.net.br/api/v1/error/invalidHeader')
    t.match(find(traced.text, 'detail'), /traceparent/)
    // undici refuses to send a Transfer-Encoding header, so this one goes over a raw TLS socket
    const zipped = gzipSync(body)
    const raw = await rawExchange(sim.spiUrl, pa, `POST /api/v1/in/${A}/msgs HTTP/1.1\r\nHost: icom-h.pi.rsfn.net.br\r\n` +
      'Content-Type: application/xml\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n' +
      `${zipped.length.toString(16)}\r\n${zipped.toString('latin1')}\r\n0\r\n\r\n`)
    t.match(raw, /^HTTP\/1\.1 400 /, 'Transfer-Encoding: gzip, chunked is refused as BACEN does')
    t.match(raw, /invalidHeader/)
    const readOther = await a.request('GET', `/api/v1/out/${B}/stream/start`)
    t.equal(readOther.status, 403, 'a participant reads only its own stream')
    const postOther = await post(a, B, body)
    t.equal(postOther.status, 403)
    const wrongType = await post(a, A, body, { 'content-type': 'text/plain' })
    t.equal(wrongType.status, 415)
    const unknown = await a.request('GET', `/api/v1/out/${A}/stream/ffffffffffffffffffffffffffffffff`)
    t.equal(unknown.status, 404)
    t.equal(sim.app.simulator.spi.pending(A), 0, 'nothing refused at the HTTP level was accepted')
  })

  await t.test('the log holds every SPI message answered 201', async (t) => {
    const spi = sim.app.simulator.log.filter((l) => l.system === 'spi')
    // 1 + 2 + 2 (multipart) + 1 (gzip) + 12 accepted in the limits test (6 per participant)
    t.equal(spi.length, 18)
    t.ok(spi.every((l) => l.status === 201 && typeof l.resourceId === 'string'))
    t.equal(spi.filter((l) => l.signature === 'VALID').length, 17)
    const first = spi[0]
    t.equal(first?.msgDefIdr, 'pacs.008.spi.1.13')
    t.equal(first?.endToEndIds?.length, 2)
  })
})

import { randomUUID } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import t from 'tap'
import type { Test } from 'tap'
import { startSimulator } from '../../tools/simulator/server.ts'
import { createSimulatorPki } from '../../tools/simulator/pki.ts'
import type { ParticipantIdentity } from '../../tools/simulator/pki.ts'
import { ParticipantClient } from '../../tools/simulator/client.ts'
import type { SimpleResponse } from '../../tools/simulator/client.ts'
import { createClaimRequest, createEntryRequest, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import { parseXml, TrustStore, verifyXml } from '../../core/xmldsig/index.ts'
import { childElements, textContent } from '../../core/xmldsig/xml.ts'
import type { XmlElement } from '../../core/xmldsig/xml.ts'
import { waitFor } from '../helpers/wait.ts'

const A = '99999004' // SAMPLE_PAYER's ISPB
const B = '99999010' // SAMPLE_PAYEE's ISPB
const pki = createSimulatorPki({ participants: [A, B] })
const bcbTrust = new TrustStore([pki.bcbSigning.certificate])

function clientFor (url: string, p: ParticipantIdentity): ParticipantClient {
  return new ParticipantClient({ url, ca: pki.ca.certPem, certPem: p.tls.certPem, keyPem: p.tls.keyPem })
}

/** Text at a path of local names below the root of an XML answer. */
function field (xml: string, ...path: string[]): string | undefined {
  let el: XmlElement | undefined = parseXml(xml).root
  for (const p of path) el = el === undefined ? undefined : childElements(el).find((c) => c.local === p)
  return el === undefined ? undefined : textContent(el)
}

function problemType (res: SimpleResponse): string | undefined {
  return field(res.text, 'type')?.replace('https://dict.pi.rsfn.net.br/api/v2/error/', '')
}

const entryOwner = { ...SAMPLE_PAYER, ispb: A }

async function signed (p: ParticipantIdentity, xml: string): Promise<string> {
  return await p.signing.xmlSigner.sign(xml, 'dict')
}

function claimAction (root: string, claimId: string, participant: string, extra = ''): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root}><ClaimId>${claimId}</ClaimId><Participant>${participant}</Participant>${extra}</${root}>`
}

t.test('DICT over mutual TLS', async (t) => {
  const dir = t.testdir()
  const logFile = join(dir, 'accepted.jsonl')
  const sim = await startSimulator({ ...pki.simulatorOptions({ fingerprints: true }), logFile })
  t.teardown(async () => { await sim.close() })
  const a = clientFor(sim.dictUrl, pki.participant(A))
  const b = clientFor(sim.dictUrl, pki.participant(B))
  t.teardown(async () => { await a.close(); await b.close() })
  const pa = pki.participant(A)
  const pb = pki.participant(B)
  const readHeaders = (ispb: string): Record<string, string> => ({ 'PI-RequestingParticipant': ispb, 'PI-PayerId': SAMPLE_PAYER.taxId, 'PI-EndToEndId': `E${ispb}202501011200abcdefghijk` })

  /** Every answer, problems included, is signed by BCB in the DICT profile and carries the correlation fields. */
  const checkSigned = (t: Test, res: SimpleResponse): void => {
    const v = verifyXml(res.text, { profile: 'dict', trustStore: bcbTrust })
    t.equal(v.code, 'VALID', `response ${res.status} is signed by BCB`)
    if (res.status < 400) {
      t.match(field(res.text, 'CorrelationId'), /^[0-9a-f]{32}$/)
      t.ok(Number.isFinite(Date.parse(field(res.text, 'ResponseTime') ?? '')), 'ResponseTime')
    } else {
      t.equal(res.headers['content-type'], 'application/problem+xml')
      t.match(field(res.text, 'correlationId'), /^[0-9a-f]{32}$/)
    }
  }

  const entry = createEntryRequest({ owner: entryOwner })
  let createdBody = ''

  await t.test('createEntry → 201, replay → same answer, same RequestId with other data → RequestIdAlreadyUsed', async (t) => {
    const body = await signed(pa, entry.xml)
    const res = await a.request('POST', '/api/v2/entries/', { body, headers: { 'content-type': 'application/xml' } })
    t.equal(res.status, 201)
    checkSigned(t, res)
    t.equal(parseXml(res.text).root.local, 'CreateEntryResponse')
    t.equal(field(res.text, 'Entry', 'Key'), entry.key)
    t.equal(field(res.text, 'Entry', 'Account', 'Participant'), A)
    t.ok(field(res.text, 'Entry', 'CreationDate'))
    createdBody = res.text

    const again = await a.request('POST', '/api/v2/entries/', { body: await signed(pa, entry.xml), headers: { 'content-type': 'application/xml' } })
    t.equal(again.status, 201)
    t.equal(field(again.text, 'CorrelationId'), field(createdBody, 'CorrelationId'), 'the stored answer is replayed')

    const other = createEntryRequest({ owner: entryOwner, requestId: entry.requestId })
    const clash = await a.request('POST', '/api/v2/entries/', { body: await signed(pa, other.xml) })
    t.equal(clash.status, 400)
    t.equal(problemType(clash), 'RequestIdAlreadyUsed')
    checkSigned(t, clash)

    const dup = await a.request('POST', '/api/v2/entries/', { body: await signed(pa, createEntryRequest({ owner: entryOwner, key: entry.key }).xml) })
    t.equal(problemType(dup), 'EntryAlreadyExists')
  })

  await t.test('getEntry needs its headers; 404 for an unknown key; not for a book transfer', async (t) => {
    const path = `/api/v2/entries/${encodeURIComponent(entry.key)}`
    const ok = await b.request('GET', path, { headers: readHeaders(B) })
    t.equal(ok.status, 200)
    checkSigned(t, ok)
    t.equal(parseXml(ok.text).root.local, 'GetEntryResponse')
    t.equal(field(ok.text, 'Entry', 'Owner', 'TaxIdNumber'), SAMPLE_PAYER.taxId)
    t.equal(field(ok.text, 'Entry', 'Account', 'AccountNumber'), SAMPLE_PAYER.account)

    const missing = await b.request('GET', '/api/v2/entries/nobody%40example.com', { headers: readHeaders(B) })
    t.equal(missing.status, 404)
    t.equal(problemType(missing), 'NotFound')
    checkSigned(t, missing)

    const noHeaders = await b.request('GET', path, { headers: { 'PI-RequestingParticipant': B } })
    t.equal(noHeaders.status, 400)
    t.equal(problemType(noHeaders), 'BadRequest')

    const spoofed = await b.request('GET', path, { headers: readHeaders(A) })
    t.equal(spoofed.status, 403, 'PI-RequestingParticipant must be the TLS identity')

    const own = await a.request('GET', path, { headers: readHeaders(A) })
    t.equal(problemType(own), 'EntryCannotBeQueriedForBookTransfer')
  })

  await t.test('request signatures are verified with BACEN\'s wording', async (t) => {
    const fresh = createEntryRequest({ owner: entryOwner })
    const tampered = (await signed(pa, fresh.xml)).replace(SAMPLE_PAYER.account, '000111222')
    const res = await a.request('POST', '/api/v2/entries/', { body: tampered })
    t.equal(res.status, 400)
    t.equal(problemType(res), 'RequestSignatureInvalid')
    t.equal(field(res.text, 'detail'), 'XML signature does not match digests or certificate')
    t.match(res.text, /DIGEST_MISMATCH/)
    checkSigned(t, res)

    const foreign = await a.request('POST', '/api/v2/entries/', { body: await signed(pb, fresh.xml) })
    t.equal(problemType(foreign), 'RequestSignatureInvalid', 'another participant\'s key is not A\'s')
    t.match(foreign.text, /CERT_UNKNOWN/)

    const unsigned = await a.request('POST', '/api/v2/entries/', { body: fresh.xml })
    t.equal(problemType(unsigned), 'RequestSignatureInvalid')
    t.match(unsigned.text, /SIGNATURE_MISSING/)

    const forOther = createEntryRequest({ owner: { ...SAMPLE_PAYER, ispb: B } })
    const forbidden = await a.request('POST', '/api/v2/entries/', { body: await signed(pa, forOther.xml) })
    t.equal(forbidden.status, 403, 'an entry at another participant')
  })

  await t.test('portability claim lifecycle, illegal transitions, idempotent operations', async (t) => {
    const claimReq = createClaimRequest({ key: entry.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...SAMPLE_PAYER, ispb: B, branch: '0777', account: '55554444' } })
    const created = await b.request('POST', '/api/v2/claims/', { body: await signed(pb, claimReq.xml) })
    t.equal(created.status, 201)
    checkSigned(t, created)
    const id = field(created.text, 'Claim', 'Id') as string
    t.match(id, /^[0-9a-f-]{36}$/)
    t.equal(field(created.text, 'Claim', 'Status'), 'OPEN')
    t.equal(field(created.text, 'Claim', 'DonorParticipant'), A)

    const second = await b.request('POST', '/api/v2/claims/', { body: await signed(pb, createClaimRequest({ key: entry.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...SAMPLE_PAYER, ispb: B } }).xml) })
    t.equal(problemType(second), 'ClaimAlreadyExistsForKey')

    const list = await a.request('GET', `/api/v2/claims/?Participant=${A}&IsDonor=true&Status=OPEN&Status=WAITING_RESOLUTION&Limit=10`)
    t.equal(list.status, 200)
    checkSigned(t, list)
    t.equal(field(list.text, 'HasMoreElements'), 'false')
    t.equal(field(list.text, 'Claims', 'Claim', 'Id'), id)
    const asClaimerOnly = await a.request('GET', `/api/v2/claims/?Participant=${A}&IsClaimer=true`)
    t.equal(field(asClaimerOnly.text, 'Claims'), undefined, 'A is not the claimer')
    const tooMany = await a.request('GET', `/api/v2/claims/?Participant=${A}&Limit=201`)
    t.equal(tooMany.status, 400)
    const otherList = await a.request('GET', `/api/v2/claims/?Participant=${B}`)
    t.equal(otherList.status, 403)

    const op = async (who: ParticipantIdentity, client: ParticipantClient, action: string, root: string, extra = ''): Promise<SimpleResponse> =>
      await client.request('POST', `/api/v2/claims/${id}/${action}`, { body: await signed(who, claimAction(root, id, who.ispb, extra)) })

    const early = await op(pa, a, 'confirm', 'ConfirmClaimRequest', '<Reason>USER_REQUESTED</Reason>')
    t.equal(early.status, 400)
    t.equal(problemType(early), 'ClaimOperationInvalid', 'an OPEN claim cannot be confirmed')
    checkSigned(t, early)
    const notDonor = await op(pb, b, 'acknowledge', 'AcknowledgeClaimRequest')
    t.equal(notDonor.status, 403, 'only the donor acknowledges')

    const ack = await op(pa, a, 'acknowledge', 'AcknowledgeClaimRequest')
    t.equal(ack.status, 200)
    t.equal(field(ack.text, 'Claim', 'Status'), 'WAITING_RESOLUTION')
    const ackAgain = await op(pa, a, 'acknowledge', 'AcknowledgeClaimRequest')
    t.equal(ackAgain.status, 200, 'acknowledge is idempotent')
    t.equal(field(ackAgain.text, 'Claim', 'Status'), 'WAITING_RESOLUTION')

    const tooSoon = await op(pb, b, 'complete', 'CompleteClaimRequest', `<RequestId>${randomUUID()}</RequestId>`)
    t.equal(problemType(tooSoon), 'ClaimOperationInvalid', 'cannot complete before confirmation')

    const confirm = await op(pa, a, 'confirm', 'ConfirmClaimRequest', '<Reason>USER_REQUESTED</Reason>')
    t.equal(field(confirm.text, 'Claim', 'Status'), 'CONFIRMED')
    t.equal(field(confirm.text, 'Claim', 'ConfirmReason'), 'USER_REQUESTED')
    const confirmAgain = await op(pa, a, 'confirm', 'ConfirmClaimRequest', '<Reason>USER_REQUESTED</Reason>')
    t.equal(confirmAgain.status, 200, 'confirm with the same reason is idempotent')
    const gone = await b.request('GET', `/api/v2/entries/${encodeURIComponent(entry.key)}`, { headers: readHeaders(B) })
    t.equal(gone.status, 404, 'confirming removes the donor\'s entry')

    const completeId = randomUUID()
    const complete = await op(pb, b, 'complete', 'CompleteClaimRequest', `<RequestId>${completeId}</RequestId>`)
    t.equal(complete.status, 200)
    t.equal(field(complete.text, 'Claim', 'Status'), 'COMPLETED')
    t.ok(field(complete.text, 'EntryCreationDate'))
    const completeAgain = await op(pb, b, 'complete', 'CompleteClaimRequest', `<RequestId>${completeId}</RequestId>`)
    t.equal(completeAgain.status, 200, 'complete with the same RequestId is idempotent')
    t.equal(field(completeAgain.text, 'CorrelationId'), field(complete.text, 'CorrelationId'))

    const cancel = await op(pb, b, 'cancel', 'CancelClaimRequest', '<Reason>USER_REQUESTED</Reason>')
    t.equal(problemType(cancel), 'ClaimOperationInvalid', 'a completed claim cannot be cancelled')

    const moved = await a.request('GET', `/api/v2/entries/${encodeURIComponent(entry.key)}`, { headers: readHeaders(A) })
    t.equal(moved.status, 200)
    t.equal(field(moved.text, 'Entry', 'Account', 'Participant'), B, 'the key now points at the claimer')
    t.equal(field(moved.text, 'Entry', 'Account', 'Branch'), '0777')

    const got = await a.request('GET', `/api/v2/claims/${id}`, { headers: { 'PI-RequestingParticipant': A } })
    t.equal(got.status, 200)
    t.equal(field(got.text, 'Claim', 'Status'), 'COMPLETED')
    const unknown = await a.request('GET', `/api/v2/claims/${randomUUID()}`, { headers: { 'PI-RequestingParticipant': A } })
    t.equal(unknown.status, 404)
  })

  await t.test('the accepted-message log, in memory and on disk', async (t) => {
    const mem = sim.app.simulator.log
    // The file is written through a stream: its last lines may still be on their way (the thread pool is shared).
    const read = async (): Promise<string[]> => (await readFile(logFile, 'utf8')).trim().split('\n')
    await waitFor(async () => (await read()).length >= mem.length)
    const lines = (await read()).map((l) => JSON.parse(l) as Record<string, unknown>)
    t.equal(lines.length, mem.length, 'one line per accepted message')
    t.same(lines, JSON.parse(JSON.stringify(mem)))
    const creates = lines.filter((l) => l.operation === 'createEntry' && l.status === 201)
    t.equal(creates.length, 2, 'the create and its replay')
    t.match(creates[0], { system: 'dict', ispb: A, key: entry.key, requestId: entry.requestId, signature: 'VALID' })
    t.notOk(lines.some((l) => l.signature === 'DIGEST_MISMATCH'), 'requests refused for their signature are not accepted messages')
    t.ok(lines.some((l) => l.operation === 'getEntry' && l.status === 404 && l.signature === 'UNSIGNED'))
    t.ok(lines.some((l) => l.operation === 'completeClaim' && l.status === 200))
  })
})

t.test('keys per account and owner are limited; deletes, updates and claims keep the count and the claim lock right', async (t) => {
  const sim = await startSimulator({ ...pki.simulatorOptions({ fingerprints: true }), dict: { entryLimits: { naturalPerson: 2, legalPerson: 2 } } })
  t.teardown(async () => { await sim.close() })
  const a = clientFor(sim.dictUrl, pki.participant(A))
  const b = clientFor(sim.dictUrl, pki.participant(B))
  t.teardown(async () => { await a.close(); await b.close() })
  const pa = pki.participant(A)
  const pb = pki.participant(B)
  const create = async (owner = entryOwner): Promise<{ key: string, res: SimpleResponse }> => {
    const req = createEntryRequest({ owner })
    return { key: req.key, res: await a.request('POST', '/api/v2/entries/', { body: await signed(pa, req.xml) }) }
  }
  const remove = async (key: string): Promise<SimpleResponse> => await a.request('POST', `/api/v2/entries/${encodeURIComponent(key)}/delete`, {
    body: await signed(pa, `<DeleteEntryRequest><Key>${key}</Key><Participant>${A}</Participant><Reason>USER_REQUESTED</Reason></DeleteEntryRequest>`)
  })

  const first = await create()
  const second = await create()
  t.same([first.res.status, second.res.status], [201, 201])
  const third = await create()
  t.equal(problemType(third.res), 'EntryLimitExceeded', 'a third key on the same account and owner')
  t.equal((await create({ ...entryOwner, account: '99990001' })).res.status, 201, 'another account of the same owner has its own count')

  t.equal((await remove(first.key)).status, 200)
  const afterDelete = await create()
  t.equal(afterDelete.res.status, 201, 'a delete frees a place')
  t.equal(problemType((await create()).res), 'EntryLimitExceeded', 'and only one')

  const update = `<UpdateEntryRequest><Key>${second.key}</Key><Account><Participant>${A}</Participant><Branch>${entryOwner.branch}</Branch>` +
    '<AccountNumber>77776666</AccountNumber><AccountType>CACC</AccountType><OpeningDate>2020-11-03T03:00:00.000Z</OpeningDate></Account>' +
    '<Reason>BRANCH_TRANSFER</Reason></UpdateEntryRequest>'
  const moved = await a.request('PUT', `/api/v2/entries/${encodeURIComponent(second.key)}`, { body: await signed(pa, update) })
  t.equal(moved.status, 200, moved.text)
  t.equal((await create()).res.status, 201, 'moving a key to another account frees a place on the old one')

  // A portability claim by B locks the key against deletion until it is cancelled.
  const claim = await b.request('POST', '/api/v2/claims/', {
    body: await signed(pb, createClaimRequest({ key: afterDelete.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...SAMPLE_PAYER, ispb: B } }).xml)
  })
  t.equal(claim.status, 201)
  t.equal(problemType(await remove(afterDelete.key)), 'EntryLockedByClaim')
  const id = field(claim.text, 'Claim', 'Id') as string
  const cancel = await b.request('POST', `/api/v2/claims/${id}/cancel`, { body: await signed(pb, claimAction('CancelClaimRequest', id, B, '<Reason>USER_REQUESTED</Reason>')) })
  t.equal(field(cancel.text, 'Claim', 'Status'), 'CANCELLED')
  t.equal((await remove(afterDelete.key)).status, 200, 'a cancelled claim no longer locks the key')
  const again = await b.request('POST', '/api/v2/claims/', {
    body: await signed(pb, createClaimRequest({ key: second.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...SAMPLE_PAYER, ispb: B } }).xml)
  })
  t.equal(again.status, 201, 'another key can be claimed')
})

t.test('answered RequestIds are remembered up to rememberedRequests, oldest forgotten first', async (t) => {
  const sim = await startSimulator({ ...pki.simulatorOptions({ fingerprints: true }), dict: { rememberedRequests: 2 } })
  t.teardown(async () => { await sim.close() })
  const a = clientFor(sim.dictUrl, pki.participant(A))
  t.teardown(async () => { await a.close() })
  const post = async (xml: string): Promise<SimpleResponse> => await a.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(A), xml) })
  const [r1, r2, r3] = [0, 1, 2].map(() => createEntryRequest({ owner: { ...entryOwner, account: '12340000' } }))
  for (const r of [r1, r2, r3]) t.equal((await post(r?.xml as string)).status, 201)
  t.equal(sim.app.simulator.dict.store.rememberedAnswers, 2)
  const replay = await post(r3?.xml as string)
  t.equal(replay.status, 201, 'a remembered RequestId replays its answer')
  t.equal(field(replay.text, 'Entry', 'Key'), r3?.key)
  const reused = createEntryRequest({ owner: { ...entryOwner, account: '12340001' }, requestId: r2?.requestId })
  t.equal(problemType(await post(reused.xml)), 'RequestIdAlreadyUsed', 'and refuses other data under it')
  t.equal(problemType(await post(r1?.xml as string)), 'EntryAlreadyExists', 'the oldest was forgotten: its replay is a new request')
})

t.test('rate limits: 429 RateLimited when a bucket is empty; /policies reports it', async (t) => {
  const sim = await startSimulator({
    ...pki.simulatorOptions({ fingerprints: true }),
    dict: { policies: { ENTRIES_WRITE: { capacity: 2, refillPerMinute: 0 }, ENTRIES_READ_USER_ANTISCAN: { capacity: 20, refillPerMinute: 0 } } }
  })
  t.teardown(async () => { await sim.close() })
  const a = clientFor(sim.dictUrl, pki.participant(A))
  const b = clientFor(sim.dictUrl, pki.participant(B))
  t.teardown(async () => { await a.close(); await b.close() })
  const pa = pki.participant(A)
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) {
    const res = await a.request('POST', '/api/v2/entries/', { body: await signed(pa, createEntryRequest({ owner: entryOwner }).xml) })
    statuses.push(res.status)
    if (res.status === 429) {
      t.equal(problemType(res), 'RateLimited')
      t.equal(verifyXml(res.text, { profile: 'dict', trustStore: bcbTrust }).code, 'VALID')
    }
  }
  t.same(statuses, [201, 201, 429])

  const policy = await a.request('GET', '/api/v2/policies/ENTRIES_WRITE', { headers: { 'PI-RequestingParticipant': A } })
  t.equal(policy.status, 200)
  t.equal(field(policy.text, 'Policy', 'Name'), 'ENTRIES_WRITE')
  t.equal(field(policy.text, 'Policy', 'AvailableTokens'), '0')
  t.equal(field(policy.text, 'Policy', 'Capacity'), '2')
  t.equal(field(policy.text, 'Category'), 'A')
  const list = await b.request('GET', '/api/v2/policies/', { headers: { 'PI-RequestingParticipant': B } })
  t.equal(list.status, 200)
  t.match(list.text, /<Name>ENTRIES_WRITE<\/Name>/)
  t.match(list.text, /<Name>ENTRIES_READ_PARTICIPANT_ANTISCAN<\/Name>/)
  const unknown = await b.request('GET', '/api/v2/policies/NO_SUCH_POLICY', { headers: { 'PI-RequestingParticipant': B } })
  t.equal(unknown.status, 404)
  const noHeader = await b.request('GET', '/api/v2/policies/')
  t.equal(noHeader.status, 400, 'reads require PI-RequestingParticipant')

  // user-scope anti-scan: a 404 costs 20 tokens of the payer's bucket (capacity 20 here), so the next read is refused
  const headers = { 'PI-RequestingParticipant': B, 'PI-PayerId': '12345678909', 'PI-EndToEndId': 'E99999010202501011200abcdefghijk' }
  const first = await b.request('GET', '/api/v2/entries/nobody%40example.com', { headers })
  t.equal(first.status, 404)
  const second = await b.request('GET', '/api/v2/entries/nobody%40example.com', { headers })
  t.equal(second.status, 429)
  const otherPayer = await b.request('GET', '/api/v2/entries/nobody%40example.com', { headers: { ...headers, 'PI-PayerId': '98765432100' } })
  t.equal(otherPayer.status, 404, 'buckets are per payer')
})

t.test('callers identified by their request signature when no TLS fingerprints are configured', async (t) => {
  const sim = await startSimulator({ ...pki.simulatorOptions() })
  t.teardown(async () => { await sim.close() })
  const a = clientFor(sim.dictUrl, pki.participant(A))
  t.teardown(async () => { await a.close() })
  const res = await a.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(A), createEntryRequest({ owner: entryOwner }).xml) })
  t.equal(res.status, 201)
  // B's signature over an entry at A: signed by a known participant, but not the entry's
  const other = await a.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(B), createEntryRequest({ owner: entryOwner }).xml) })
  t.equal(other.status, 403)
})

t.test('state persists across restarts with dict.stateFile; compressed requests are refused', async (t) => {
  const stateFile = join(t.testdir(), 'dict-state.json')
  const options = { ...pki.simulatorOptions({ fingerprints: true }), dict: { stateFile } }
  const entry = createEntryRequest({ owner: entryOwner })
  const first = await startSimulator(options)
  const a1 = clientFor(first.dictUrl, pki.participant(A))
  const zipped = await a1.request('POST', '/api/v2/entries/', { body: gzipSync(await signed(pki.participant(A), entry.xml)), headers: { 'content-encoding': 'gzip' } })
  t.equal(zipped.status, 400)
  t.equal(field(zipped.text, 'detail'), 'Compressed requests are not supported')
  t.equal((await a1.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(A), entry.xml) })).status, 201)
  await a1.close()
  await first.close()
  t.match(JSON.parse(await readFile(stateFile, 'utf8')), { version: 1, entries: [{ key: entry.key }] })

  const second = await startSimulator(options)
  const b = clientFor(second.dictUrl, pki.participant(B))
  const a2 = clientFor(second.dictUrl, pki.participant(A))
  const res = await b.request('GET', `/api/v2/entries/${encodeURIComponent(entry.key)}`, { headers: { 'PI-RequestingParticipant': B, 'PI-PayerId': SAMPLE_PAYER.taxId, 'PI-EndToEndId': 'E9999901020250101120000000000001' } })
  t.equal(res.status, 200, 'the entry survived the restart')
  const replay = await a2.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(A), entry.xml) })
  t.equal(replay.status, 201, 'and so did the RequestId\'s stored answer')
  // closed here, not in a teardown: t.testdir() is removed before teardowns registered after it run
  await a2.close()
  await b.close()
  await second.close()
})

t.test('a state file from before base64 fingerprints (hex) still replays its RequestIds', async (t) => {
  const stateFile = join(t.testdir(), 'dict-state.json')
  const options = { ...pki.simulatorOptions({ fingerprints: true }), dict: { stateFile } }
  const entry = createEntryRequest({ owner: { ...entryOwner, account: '24680000' } })
  const first = await startSimulator(options)
  const a1 = clientFor(first.dictUrl, pki.participant(A))
  t.equal((await a1.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(A), entry.xml) })).status, 201)
  await a1.close()
  await first.close()
  const state = JSON.parse(await readFile(stateFile, 'utf8')) as { answers: Array<[string, { fingerprint: string }]> }
  for (const [, a] of state.answers) a.fingerprint = Buffer.from(a.fingerprint, 'base64').toString('hex')
  await writeFile(stateFile, JSON.stringify(state))

  const second = await startSimulator(options)
  const a2 = clientFor(second.dictUrl, pki.participant(A))
  const replay = await a2.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(A), entry.xml) })
  t.equal(replay.status, 201, 'the replay gets the stored answer, not RequestIdAlreadyUsed')
  await a2.close()
  await second.close()
})

t.test('logInMemory: false keeps the accepted messages in the log file only', async (t) => {
  const logFile = join(t.testdir(), 'accepted.jsonl')
  const sim = await startSimulator({ ...pki.simulatorOptions({ fingerprints: true }), logFile, logInMemory: false })
  const a = clientFor(sim.dictUrl, pki.participant(A))
  const entry = createEntryRequest({ owner: { ...entryOwner, account: '13570000' } })
  t.equal((await a.request('POST', '/api/v2/entries/', { body: await signed(pki.participant(A), entry.xml) })).status, 201)
  await a.close()
  await sim.close() // flushes the file
  t.equal(sim.app.simulator.log.length, 0, 'nothing kept in memory')
  const lines = (await readFile(logFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { operation: string, requestId: string })
  t.match(lines, [{ operation: 'createEntry', requestId: entry.requestId }], 'the file has the message')
})

/**
 * DICT through pix-proxy over real sockets: the proxy signs writes with the participant's key in SoftHSM, sends
 * them over mutual TLS (client key in the HSM too) to the BACEN simulator, and verifies BCB's signed answers.
 * The counterparty participant talks to the simulator directly; the simulator's accepted-message log is the
 * ground truth for what arrived and who signed it.
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { createClaimRequest, createEntryRequest, SAMPLE_PAYEE, SAMPLE_PAYER } from '../../tools/samples/messages.ts'
import type { AcceptedMessage } from '../../tools/simulator/app.ts'
import {
  allText, assertVerified, childText, claimActionXml, COUNTERPARTY_ISPB, elementsAt, fieldAt, PROXY_ISPB, readHeaders,
  startE2e
} from '../helpers/e2e.ts'
import type { E2e, ProxyResponse } from '../helpers/e2e.ts'

let e2e: E2e
t.before(async () => { e2e = await startE2e(t) })

/** A phone number no other test uses. */
let phoneSeq = 0
function newPhone (): string {
  return `+55119${String(Date.now() % 1_000_000).padStart(6, '0')}${String(phoneSeq++).padStart(2, '0')}`
}

/** The last accepted DICT message for this operation (and key/claim), or undefined. */
function lastLogged (operation: string, match: Partial<AcceptedMessage> = {}): AcceptedMessage | undefined {
  return e2e.log.filter((m) => m.system === 'dict' && m.operation === operation &&
    Object.entries(match).every(([k, v]) => (m as unknown as Record<string, unknown>)[k] === v)).at(-1)
}

/** The write reached the simulator from the proxy's participant, signed by the HSM key (the only signing cert the
 * simulator holds for 99999004), and was accepted with this status. */
function assertSignedByHsm (t: Test, operation: string, match: Partial<AcceptedMessage>, status: number): void {
  const m = lastLogged(operation, match)
  t.ok(m, `simulator accepted ${operation}`)
  t.equal(m?.ispb, PROXY_ISPB, `${operation}: caller identified from the request signature`)
  t.equal(m?.signature, 'VALID', `${operation}: the request signature verified with the HSM key's certificate`)
  t.equal(m?.status, status, `${operation}: status`)
}

async function counterpartyEntry (t: Test, key: string, keyType: 'PHONE' | 'EMAIL'): Promise<void> {
  const created = await e2e.counterpartyWrite('POST', '/api/v2/entries/', createEntryRequest({ key, keyType, owner: SAMPLE_PAYEE }).xml)
  t.equal(created.status, 201, `the counterparty registered ${key} directly: ${created.text.slice(0, 200)}`)
}

async function listClaims (query: string): Promise<{ res: ProxyResponse, ids: string[] }> {
  const res = await e2e.proxy('GET', `/api/v2/claims/?${query}`, { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  const ids = res.status === 200 ? elementsAt(res.text, ['Claims'], 'Claim').map((c) => childText(c, 'Id') ?? '') : []
  return { res, ids }
}

t.test('create entry through the proxy: HSM-signed request, BCB-signed answer verified', async (t) => {
  const entry = createEntryRequest()
  const res = await e2e.proxyXml('/api/v2/entries/', entry.xml)
  t.equal(res.status, 201, res.text.slice(0, 300))
  assertVerified(t, e2e, res, 'dict', 'CreateEntryResponse')
  t.equal(fieldAt(res.text, 'Entry', 'Key'), entry.key)
  t.equal(fieldAt(res.text, 'Entry', 'Account', 'Participant'), PROXY_ISPB)
  assertSignedByHsm(t, 'createEntry', { key: entry.key, requestId: entry.requestId }, 201)

  // The same request again is idempotent at BACEN: same answer, no second entry.
  const again = await e2e.proxyXml('/api/v2/entries/', entry.xml)
  t.equal(again.status, 201)
  assertVerified(t, e2e, again, 'dict', 'idempotent replay')
  t.equal(fieldAt(again.text, 'Entry', 'CreationDate'), fieldAt(res.text, 'Entry', 'CreationDate'), 'same entry')

  // A DICT problem is signed by BCB too, and verified like any answer.
  const own = await e2e.proxy('GET', `/api/v2/entries/${encodeURIComponent(entry.key)}`, { headers: readHeaders() })
  t.equal(own.status, 400)
  t.match(own.headers['content-type'], /^application\/problem\+xml/)
  t.match(fieldAt(own.text, 'type'), /\/EntryCannotBeQueriedForBookTransfer$/)
  assertVerified(t, e2e, own, 'dict', 'problem answer')
})

t.test('get entry of a key held by the counterparty', async (t) => {
  const key = newPhone()
  await counterpartyEntry(t, key, 'PHONE')
  const res = await e2e.proxy('GET', `/api/v2/entries/${encodeURIComponent(key)}`, { headers: readHeaders() })
  t.equal(res.status, 200, res.text.slice(0, 300))
  assertVerified(t, e2e, res, 'dict', 'GetEntryResponse')
  t.equal(fieldAt(res.text, 'Entry', 'Key'), key)
  t.equal(fieldAt(res.text, 'Entry', 'Account', 'Participant'), COUNTERPARTY_ISPB)
  t.equal(fieldAt(res.text, 'Entry', 'Owner', 'TaxIdNumber'), SAMPLE_PAYEE.taxId)
  const logged = lastLogged('getEntry', { key })
  t.equal(logged?.ispb, PROXY_ISPB, 'read as the proxy participant (PI-RequestingParticipant)')
  t.equal(logged?.signature, 'UNSIGNED', 'reads are not signed')

  const missing = await e2e.proxy('GET', `/api/v2/entries/${encodeURIComponent(newPhone())}`, { headers: readHeaders() })
  t.equal(missing.status, 404)
  t.match(fieldAt(missing.text, 'type'), /\/NotFound$/)
  assertVerified(t, e2e, missing, 'dict', 'NotFound problem')
})

t.test('claim as claimer: created through the proxy, acknowledged and confirmed by the donor, listed and completed through the proxy', async (t) => {
  const key = newPhone()
  await counterpartyEntry(t, key, 'PHONE')
  // Portability: the same person moves the key to an account at the proxy's participant.
  const claimer = { ...SAMPLE_PAYEE, ispb: PROXY_ISPB, branch: '0001', account: '555000111' }
  const created = await e2e.proxyXml('/api/v2/claims/', createClaimRequest({ key, keyType: 'PHONE', type: 'PORTABILITY', owner: claimer }).xml)
  t.equal(created.status, 201, created.text.slice(0, 300))
  assertVerified(t, e2e, created, 'dict', 'CreateClaimResponse')
  const claimId = fieldAt(created.text, 'Claim', 'Id') as string
  t.match(claimId, /^[0-9a-f-]{36}$/)
  t.equal(fieldAt(created.text, 'Claim', 'Status'), 'OPEN')
  t.equal(fieldAt(created.text, 'Claim', 'DonorParticipant'), COUNTERPARTY_ISPB)
  t.equal(fieldAt(created.text, 'Claim', 'ClaimerAccount', 'Participant'), PROXY_ISPB)
  assertSignedByHsm(t, 'createClaim', { claimId }, 201)

  const ack = await e2e.counterpartyWrite('POST', `/api/v2/claims/${claimId}/acknowledge`, claimActionXml('AcknowledgeClaimRequest', claimId, COUNTERPARTY_ISPB))
  t.equal(ack.status, 200, ack.text.slice(0, 300))
  const confirm = await e2e.counterpartyWrite('POST', `/api/v2/claims/${claimId}/confirm`, claimActionXml('ConfirmClaimRequest', claimId, COUNTERPARTY_ISPB, '  <Reason>USER_REQUESTED</Reason>\n'))
  t.equal(confirm.status, 200, confirm.text.slice(0, 300))
  t.equal(fieldAt(confirm.text, 'Claim', 'Status'), 'CONFIRMED')

  const confirmed = await listClaims(`Participant=${PROXY_ISPB}&IsClaimer=true&Status=CONFIRMED&Limit=50`)
  t.equal(confirmed.res.status, 200, confirmed.res.text.slice(0, 300))
  assertVerified(t, e2e, confirmed.res, 'dict', 'ListClaimsResponse')
  t.ok(confirmed.ids.includes(claimId), 'listed as a CONFIRMED claim of the claimer')
  const open = await listClaims(`Participant=${PROXY_ISPB}&Status=OPEN&Status=WAITING_RESOLUTION`)
  t.equal(open.res.status, 200)
  t.notOk(open.ids.includes(claimId), 'the Status filter reached BACEN (repeated parameter kept)')
  const asDonor = await listClaims(`Participant=${PROXY_ISPB}&IsDonor=true&IsClaimer=false`)
  t.equal(asDonor.res.status, 200)
  t.notOk(asDonor.ids.includes(claimId), 'the role filter reached BACEN')

  const got = await e2e.proxy('GET', `/api/v2/claims/${claimId}`, { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  t.equal(got.status, 200)
  assertVerified(t, e2e, got, 'dict', 'GetClaimResponse')
  t.equal(fieldAt(got.text, 'Claim', 'Status'), 'CONFIRMED')

  const requestId = randomUUID()
  const completed = await e2e.proxyXml(`/api/v2/claims/${claimId}/complete`, claimActionXml('CompleteClaimRequest', claimId, PROXY_ISPB, `  <RequestId>${requestId}</RequestId>\n`))
  t.equal(completed.status, 200, completed.text.slice(0, 300))
  assertVerified(t, e2e, completed, 'dict', 'CompleteClaimResponse')
  t.equal(fieldAt(completed.text, 'Claim', 'Status'), 'COMPLETED')
  assertSignedByHsm(t, 'completeClaim', { claimId, requestId }, 200)

  // The key now belongs to the proxy's participant, as the counterparty sees it.
  const after = await e2e.counterpartyRead(`/api/v2/entries/${encodeURIComponent(key)}`)
  t.equal(after.status, 200)
  t.equal(fieldAt(after.text, 'Entry', 'Account', 'Participant'), PROXY_ISPB)
  t.equal(fieldAt(after.text, 'Entry', 'Account', 'AccountNumber'), claimer.account)
})

t.test('claim as donor: the counterparty claims a key held by 99999004, which acknowledges and confirms through the proxy', async (t) => {
  const entry = createEntryRequest()
  const created = await e2e.proxyXml('/api/v2/entries/', entry.xml)
  t.equal(created.status, 201, created.text.slice(0, 300))

  const claimer = { ...SAMPLE_PAYER, ispb: COUNTERPARTY_ISPB, branch: '0042', account: '777000222' }
  const claim = await e2e.counterpartyWrite('POST', '/api/v2/claims/', createClaimRequest({ key: entry.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: claimer }).xml)
  t.equal(claim.status, 201, claim.text.slice(0, 300))
  const claimId = fieldAt(claim.text, 'Claim', 'Id') as string
  t.equal(fieldAt(claim.text, 'Claim', 'DonorParticipant'), PROXY_ISPB)

  const pending = await listClaims(`Participant=${PROXY_ISPB}&IsDonor=true&Status=OPEN`)
  t.equal(pending.res.status, 200)
  assertVerified(t, e2e, pending.res, 'dict', 'donor ListClaimsResponse')
  t.ok(pending.ids.includes(claimId), 'the donor finds the new claim by polling through the proxy')

  const ack = await e2e.proxyXml(`/api/v2/claims/${claimId}/acknowledge`, claimActionXml('AcknowledgeClaimRequest', claimId, PROXY_ISPB))
  t.equal(ack.status, 200, ack.text.slice(0, 300))
  assertVerified(t, e2e, ack, 'dict', 'AcknowledgeClaimResponse')
  t.equal(fieldAt(ack.text, 'Claim', 'Status'), 'WAITING_RESOLUTION')
  assertSignedByHsm(t, 'acknowledgeClaim', { claimId }, 200)

  const confirm = await e2e.proxyXml(`/api/v2/claims/${claimId}/confirm`, claimActionXml('ConfirmClaimRequest', claimId, PROXY_ISPB, '  <Reason>USER_REQUESTED</Reason>\n'))
  t.equal(confirm.status, 200, confirm.text.slice(0, 300))
  assertVerified(t, e2e, confirm, 'dict', 'ConfirmClaimResponse')
  t.equal(fieldAt(confirm.text, 'Claim', 'Status'), 'CONFIRMED')
  assertSignedByHsm(t, 'confirmClaim', { claimId }, 200)

  const complete = await e2e.counterpartyWrite('POST', `/api/v2/claims/${claimId}/complete`, claimActionXml('CompleteClaimRequest', claimId, COUNTERPARTY_ISPB, `  <RequestId>${randomUUID()}</RequestId>\n`))
  t.equal(complete.status, 200, complete.text.slice(0, 300))

  // No longer a book transfer: the proxy participant can look the key up at the counterparty now.
  const lookup = await e2e.proxy('GET', `/api/v2/entries/${encodeURIComponent(entry.key)}`, { headers: readHeaders() })
  t.equal(lookup.status, 200, lookup.text.slice(0, 300))
  assertVerified(t, e2e, lookup, 'dict', 'GetEntryResponse after portability')
  t.equal(fieldAt(lookup.text, 'Entry', 'Account', 'Participant'), COUNTERPARTY_ISPB)
})

t.test('policies through the proxy', async (t) => {
  const res = await e2e.proxy('GET', '/api/v2/policies/', { headers: { 'pi-requestingparticipant': PROXY_ISPB } })
  t.equal(res.status, 200)
  assertVerified(t, e2e, res, 'dict', 'ListPoliciesResponse')
  t.ok(allText(res.text, 'Name').includes('ENTRIES_WRITE'))
})

t.test('ground truth: every write from 99999004 that BACEN accepted carried a valid HSM signature', async (t) => {
  const writes = e2e.log.filter((m) => m.system === 'dict' && m.ispb === PROXY_ISPB && m.signature !== 'UNSIGNED')
  t.ok(writes.length >= 5, `${writes.length} signed writes from the proxy`)
  t.same(writes.filter((m) => m.signature !== 'VALID'), [], 'no write with another verdict')
})

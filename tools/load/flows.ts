/**
 * The PIX operations the load tool sends, as a bank core sends them, with fresh identifiers on every request:
 *   get-entry      DICT GetEntry of a key held by another participant (a payment lookup; reading one's own key is a
 *                  book transfer, which DICT refuses), a different payer (PI-PayerId) each time, as end users are
 *   create-entry   DICT CreateEntry of a new e-mail key on a random account (DICT allows 5 keys per account)
 *   create-claim   DICT CreateClaim: portability of a key another participant holds for the same person
 *   confirm-claim  DICT ConfirmClaim, as donor, of a claim another participant opened on one of our keys
 *   spi-send       SPI pacs.008 POST /api/v1/in/{ispb}/msgs
 *   spi-stream     one read of our ICOM stream (the pacs.002 reports the sends produce), following PI-Pull-Next
 *
 * Some operations need data that exists before they run: keys of another participant (get-entry, create-claim)
 * and open claims on our keys that we acknowledged (confirm-claim). `prepare` creates them before measuring,
 * through a counterparty (another participant's transport) and, for our own keys and acknowledgements, through the
 * target itself; what it sent is reported apart from the measured run.
 */
import { randomInt } from 'node:crypto'
import { createClaimRequest, createEntryRequest, pacs008, SAMPLE_PAYEE, SAMPLE_PAYER } from '../samples/messages.ts'
import { escapeXml, newEndToEndId } from '../../core/pix/ids.ts'
import type { Party } from '../samples/messages.ts'
import { errorCodeOf } from './engine.ts'
import type { Outcome } from './engine.ts'
import type { LoadRequest, LoadResponse, LoadTransport } from './transport.ts'

export const OPERATIONS = ['get-entry', 'create-entry', 'create-claim', 'confirm-claim', 'spi-send', 'spi-stream'] as const
export type Operation = typeof OPERATIONS[number]

/** The mix of the issue: reads dominate, as in a bank's traffic. */
export const DEFAULT_MIX: Readonly<Record<Operation, number>> = Object.freeze({
  'get-entry': 4, 'create-entry': 2, 'create-claim': 1, 'confirm-claim': 1, 'spi-send': 2, 'spi-stream': 1
})

/** Operations that need a counterparty participant to prepare their data. */
export const NEEDS_COUNTERPARTY: ReadonlySet<Operation> = new Set(['get-entry', 'create-claim', 'confirm-claim'])

function isOperation (s: string): s is Operation {
  return (OPERATIONS as readonly string[]).includes(s)
}

/**
 * Parses `get-entry=4,spi-send=2` (weights are non-negative numbers; operations left out get 0).
 * @throws RangeError with a message naming the bad item.
 */
export function parseMix (text: string): Record<Operation, number> {
  const mix = Object.fromEntries(OPERATIONS.map((o) => [o, 0])) as Record<Operation, number>
  for (const item of text.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const m = /^([a-z-]+)\s*=\s*(\d+(?:\.\d+)?)$/.exec(item)
    if (m === null) throw new RangeError(`mix item ${JSON.stringify(item)} is not op=weight`)
    const op = m[1] as string
    if (!isOperation(op)) throw new RangeError(`unknown operation ${op}; known: ${OPERATIONS.join(', ')}`)
    mix[op] = Number(m[2])
  }
  if (Object.values(mix).every((w) => w === 0)) throw new RangeError('the mix has no operation with a positive weight')
  return mix
}

/** A valid CPF (check digits computed): DICT and payer ids look like real ones. */
export function randomCpf (): string {
  const d = Array.from({ length: 9 }, () => randomInt(10))
  if (d.every((x) => x === d[0])) d[8] = ((d[8] as number) + 1) % 10
  for (const len of [9, 10]) {
    let sum = 0
    for (let i = 0; i < len; i++) sum += (d[i] as number) * (len + 1 - i)
    const r = (sum * 10) % 11
    d.push(r === 10 ? 0 : r)
  }
  return d.join('')
}

function randomAccount (): string {
  return String(randomInt(100_000_000, 1_000_000_000))
}

function person (ispb: string, base: Party): Party {
  return { ...base, ispb, taxId: randomCpf(), account: randomAccount() }
}

/** DICT claim actions (acknowledge, confirm): ClaimId and Participant, plus a Reason for confirm. */
export function claimActionRequest (root: 'AcknowledgeClaimRequest' | 'ConfirmClaimRequest', claimId: string, participant: string, reason?: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<${root}>
  <ClaimId>${escapeXml(claimId)}</ClaimId>
  <Participant>${escapeXml(participant)}</Participant>
${reason === undefined ? '' : `  <Reason>${escapeXml(reason)}</Reason>\n`}</${root}>
`
}

/** `<status> <code>` of an unexpected answer: the problem's code (pix-proxy problem+json) or type (BACEN XML). */
function answerCode (res: LoadResponse): string {
  const ct = (res.headers['content-type'] ?? '').toLowerCase()
  const text = res.body.toString('utf8')
  if (ct.startsWith('application/problem+json')) {
    try {
      const code = (JSON.parse(text) as { code?: unknown }).code
      if (typeof code === 'string') return `${res.status} ${code}`
    } catch {}
  }
  if (ct.includes('xml')) {
    const type = /<type>([^<]*)<\/type>/.exec(text)?.[1]
    if (type !== undefined) return `${res.status} ${type.slice(type.lastIndexOf('/') + 1)}`
  }
  return String(res.status)
}

function expect (res: LoadResponse, status: number): Outcome {
  const sigBad = !res.signature.valid
  if (res.status === status && !sigBad) return { ok: true }
  if (res.status === status) return { ok: false, signatureFailure: true, code: `${res.status} signature ${res.signature.code}`, detail: 'the answer arrived but its signature did not verify' }
  return { ok: false, signatureFailure: sigBad, code: answerCode(res), detail: res.body.toString('utf8').slice(0, 300) }
}

/** Stream positions: a bank core runs a few stream readers, each following its own PI-Pull-Next chain. */
class StreamCursors {
  private readonly free: string[] = []
  private readonly waiters: Array<(path: string) => void> = []
  private readonly start: string
  private readonly max: number
  private open = 0

  constructor (start: string, max: number) {
    this.start = start
    this.max = max
  }

  async take (signal: AbortSignal): Promise<string> {
    const f = this.free.pop()
    if (f !== undefined) return f
    if (this.open < this.max) {
      this.open++
      return this.start
    }
    signal.throwIfAborted()
    return await new Promise((resolve, reject) => {
      const waiter = (path: string): void => {
        signal.removeEventListener('abort', onAbort)
        resolve(path)
      }
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
        reject(signal.reason)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  give (path: string): void {
    const w = this.waiters.shift()
    if (w !== undefined) w(path)
    else this.free.push(path)
  }

  /** The position is lost (an error): the next reader starts a new chain. */
  lose (): void {
    const w = this.waiters.shift()
    if (w !== undefined) w(this.start)
    else this.open--
  }

  /** Positions held at the end: ending them acknowledges the last pages read. */
  held (): string[] {
    return this.free.splice(0)
  }
}

export interface SpiStats {
  /** Pages read that held messages, and empty pages (the long poll ended without a message). */
  pages: number
  emptyPages: number
  messages: number
  /** pacs.002 reports on our stream for payments sent in this run: settled (ACSC) or rejected (RJCT). */
  settled: number
  rejected: number
  /** admi.002: a message the SPI refused after accepting it (e.g. a signature it could not verify). */
  admi002: number
  /** Payments sent in this run whose report was not read before the end. */
  unreported: number
  /** Stream messages whose signature did not verify. */
  messagesSignatureInvalid: number
}

export interface PrepareReport {
  readonly durationMs: number
  readonly requests: number
  readonly ok: number
  readonly errorsByCode: Readonly<Record<string, number>>
  /** The first failure of each code, shortened. */
  readonly errorDetails: Readonly<Record<string, string>>
  /** Items ready for the run, per operation that needs them. */
  readonly items: Readonly<Partial<Record<Operation, number>>>
}

export interface FlowOptions {
  readonly target: LoadTransport
  /** Another participant, to create the keys and claims some operations need. */
  readonly counterparty?: LoadTransport
  /** ISPB of the payee of pacs.008 (default: the counterparty's, else the sample payee's). */
  readonly payeeIspb?: string
  /** Stream readers (PI-Pull-Next chains). Default 2; ICOM allows 6 per participant. */
  readonly streamReaders?: number
  /** Concurrent requests while preparing. Default 8. */
  readonly prepareConcurrency?: number
}

const MAX_PENDING_PAYMENTS = 100_000

/** A preparation step whose first this-many attempts all failed is given up (the run is then refused). */
const PREPARE_GIVE_UP_AFTER = 16

/** The operations' state for one run: prepared items, stream positions, payments awaiting their report. */
export class Flows {
  readonly spi: SpiStats = { pages: 0, emptyPages: 0, messages: 0, settled: 0, rejected: 0, admi002: 0, unreported: 0, messagesSignatureInvalid: 0 }
  private readonly target: LoadTransport
  private readonly counterparty: LoadTransport | undefined
  private readonly ispb: string
  private readonly payeeIspb: string
  private readonly cursors: StreamCursors
  private readonly prepareConcurrency: number
  private readonly keysToRead: string[] = []
  private readIndex = 0
  private readonly claimable: Array<{ key: string, owner: Party }> = []
  private readonly confirmable: string[] = []
  private readonly pending = new Map<string, true>()

  constructor (o: FlowOptions) {
    this.target = o.target
    this.counterparty = o.counterparty
    this.ispb = o.target.ispb
    this.payeeIspb = o.payeeIspb ?? o.counterparty?.ispb ?? (this.ispb === SAMPLE_PAYEE.ispb ? SAMPLE_PAYER.ispb : SAMPLE_PAYEE.ispb)
    this.cursors = new StreamCursors(`/api/v1/out/${this.ispb}/stream/start`, Math.min(6, Math.max(1, o.streamReaders ?? 2)))
    this.prepareConcurrency = o.prepareConcurrency ?? 8
  }

  /**
   * Creates what the operations need: `needs[op]` items for create-claim and confirm-claim (each is used once),
   * up to 32 keys for get-entry (read round-robin). Failures are counted, not thrown: an operation left with fewer
   * items than it needs fails with LOAD_NOT_PREPARED during the run, visibly. A step whose first
   * PREPARE_GIVE_UP_AFTER attempts all failed stops there (nothing is listening, or every request is refused):
   * runLoad then refuses to measure (LOAD_PREPARE_FAILED).
   */
  async prepare (needs: Partial<Record<Operation, number>>, signal?: AbortSignal): Promise<PrepareReport> {
    const started = performance.now()
    let requests = 0
    let ok = 0
    const errors = new Map<string, number>()
    const details = new Map<string, string>()
    const fail = (code: string, detail: string): void => {
      errors.set(code, (errors.get(code) ?? 0) + 1)
      if (!details.has(code) && details.size < 50) details.set(code, detail.slice(0, 300))
    }
    const send = async (via: LoadTransport, req: LoadRequest, status: number): Promise<LoadResponse | undefined> => {
      requests++
      try {
        const res = await via.request({ ...req, ...(signal === undefined ? {} : { signal }) })
        const o = expect(res, status)
        if (o.ok) {
          ok++
          return res
        }
        fail(o.code as string, `${req.method} ${req.path} as ${via.ispb}: ${o.detail ?? ''}`)
      } catch (err) {
        fail(errorCodeOf(err), `${req.method} ${req.path} as ${via.ispb}: ${(err as Error)?.message ?? String(err)}`)
      }
      return undefined
    }
    /** Runs `fn` n times (it says whether it made an item), giving up when the first attempts all made nothing. */
    const each = async (n: number, fn: () => Promise<boolean>): Promise<void> => {
      let next = 0
      let made = 0
      const hopeless = (): boolean => made === 0 && next >= PREPARE_GIVE_UP_AFTER
      await Promise.all(Array.from({ length: Math.min(n, this.prepareConcurrency) }, async () => {
        while (next < n && signal?.aborted !== true && !hopeless()) {
          next++
          if (await fn()) made++
        }
      }))
    }
    const cp = this.counterparty
    if (cp !== undefined) {
      const reads = Math.min(32, needs['get-entry'] ?? 0)
      await each(reads, async () => {
        const e = createEntryRequest({ owner: person(cp.ispb, SAMPLE_PAYEE) })
        if (await send(cp, { method: 'POST', path: '/api/v2/entries/', body: e.xml, sign: 'dict', answerProfile: 'dict' }, 201) === undefined) return false
        this.keysToRead.push(e.key)
        return true
      })
      await each(needs['create-claim'] ?? 0, async () => {
        const owner = person(cp.ispb, SAMPLE_PAYEE)
        const e = createEntryRequest({ owner })
        if (await send(cp, { method: 'POST', path: '/api/v2/entries/', body: e.xml, sign: 'dict', answerProfile: 'dict' }, 201) === undefined) return false
        this.claimable.push({ key: e.key, owner })
        return true
      })
      // A claim we can confirm: our key, claimed by the counterparty for the same person, acknowledged by us.
      await each(needs['confirm-claim'] ?? 0, async () => {
        const owner = person(this.ispb, SAMPLE_PAYER)
        const e = createEntryRequest({ owner })
        if (await send(this.target, { method: 'POST', path: '/api/v2/entries/', body: e.xml, sign: 'dict', answerProfile: 'dict' }, 201) === undefined) return false
        const claim = createClaimRequest({ key: e.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...owner, ispb: cp.ispb, account: randomAccount() } })
        const created = await send(cp, { method: 'POST', path: '/api/v2/claims/', body: claim.xml, sign: 'dict', answerProfile: 'dict' }, 201)
        const id = created === undefined ? undefined : /<Claim>[\s\S]*?<Id>([^<]+)<\/Id>/.exec(created.body.toString('utf8'))?.[1]
        if (id === undefined) return false
        const ack = claimActionRequest('AcknowledgeClaimRequest', id, this.ispb)
        if (await send(this.target, { method: 'POST', path: `/api/v2/claims/${encodeURIComponent(id)}/acknowledge`, body: ack, sign: 'dict', answerProfile: 'dict' }, 200) === undefined) return false
        this.confirmable.push(id)
        return true
      })
    }
    const items: Partial<Record<Operation, number>> = {}
    if ((needs['get-entry'] ?? 0) > 0) items['get-entry'] = this.keysToRead.length
    if ((needs['create-claim'] ?? 0) > 0) items['create-claim'] = this.claimable.length
    if ((needs['confirm-claim'] ?? 0) > 0) items['confirm-claim'] = this.confirmable.length
    return { durationMs: performance.now() - started, requests, ok, errorsByCode: Object.fromEntries([...errors].sort((a, b) => b[1] - a[1])), errorDetails: Object.fromEntries(details), items }
  }

  /** Performs one operation through the target. */
  async execute (op: Operation, signal: AbortSignal): Promise<Outcome> {
    const t = this.target
    switch (op) {
      case 'get-entry': {
        if (this.keysToRead.length === 0) return notPrepared(op)
        const key = this.keysToRead[this.readIndex++ % this.keysToRead.length] as string
        const res = await t.request({
          method: 'GET',
          path: `/api/v2/entries/${encodeURIComponent(key)}`,
          headers: { 'pi-requestingparticipant': this.ispb, 'pi-payerid': randomCpf(), 'pi-endtoendid': newEndToEndId(this.ispb) },
          answerProfile: 'dict',
          signal
        })
        return expect(res, 200)
      }
      case 'create-entry': {
        const e = createEntryRequest({ owner: person(this.ispb, SAMPLE_PAYER) })
        return expect(await t.request({ method: 'POST', path: '/api/v2/entries/', body: e.xml, sign: 'dict', answerProfile: 'dict', signal }), 201)
      }
      case 'create-claim': {
        const item = this.claimable.pop()
        if (item === undefined) return notPrepared(op)
        const claim = createClaimRequest({ key: item.key, keyType: 'EMAIL', type: 'PORTABILITY', owner: { ...item.owner, ispb: this.ispb, account: randomAccount() } })
        return expect(await t.request({ method: 'POST', path: '/api/v2/claims/', body: claim.xml, sign: 'dict', answerProfile: 'dict', signal }), 201)
      }
      case 'confirm-claim': {
        const id = this.confirmable.pop()
        if (id === undefined) return notPrepared(op)
        const body = claimActionRequest('ConfirmClaimRequest', id, this.ispb, 'USER_REQUESTED')
        return expect(await t.request({ method: 'POST', path: `/api/v2/claims/${encodeURIComponent(id)}/confirm`, body, sign: 'dict', answerProfile: 'dict', signal }), 200)
      }
      case 'spi-send': {
        const amount = randomInt(1, 500_000) / 100
        const m = pacs008({ from: this.ispb, payer: person(this.ispb, SAMPLE_PAYER), payee: person(this.payeeIspb, SAMPLE_PAYEE), amounts: [amount] })
        const res = await t.request({ method: 'POST', path: `/api/v1/in/${this.ispb}/msgs`, body: m.xml, sign: 'spi', answerProfile: 'spi', signal })
        const o = expect(res, 201)
        if (o.ok) {
          if (res.headers['pi-resourceid'] === undefined) return { ok: false, code: '201 no PI-ResourceId', detail: 'ICOM accepted the message without naming it' }
          for (const e2e of m.endToEndIds) this.pending.set(e2e, true)
          if (this.pending.size > MAX_PENDING_PAYMENTS) this.pending.delete(this.pending.keys().next().value as string)
        }
        return o
      }
      case 'spi-stream':
        return await this.readStream(signal)
    }
  }

  private async readStream (signal: AbortSignal): Promise<Outcome> {
    const path = await this.cursors.take(signal)
    let res: LoadResponse
    try {
      res = await this.target.request({ method: 'GET', path, headers: { accept: 'multipart/mixed' }, answerProfile: 'spi', signal })
    } catch (err) {
      this.cursors.lose()
      throw err
    }
    const next = res.headers['pi-pull-next']
    if ((res.status === 200 || res.status === 204) && next !== undefined && next !== '') this.cursors.give(next)
    else this.cursors.lose()
    if (res.status === 204) {
      this.spi.emptyPages++
      return { ok: true, noLatency: true }
    }
    if (res.status !== 200) return expect(res, 200)
    this.spi.pages++
    for (const part of res.parts) {
      this.spi.messages++
      if (!part.signature.valid) this.spi.messagesSignatureInvalid++
      const xml = part.body.toString('utf8')
      const kind = /<MsgDefIdr>([a-z]+\.\d{3})/.exec(xml)?.[1]
      if (kind === 'pacs.002') {
        const e2e = /<OrgnlEndToEndId>([^<]+)<\/OrgnlEndToEndId>/.exec(xml)?.[1]
        const sts = /<TxSts>([^<]+)<\/TxSts>/.exec(xml)?.[1]
        if (e2e !== undefined && this.pending.delete(e2e)) {
          if (sts === 'ACSC') this.spi.settled++
          else if (sts === 'RJCT') this.spi.rejected++
        }
      } else if (kind === 'admi.002') {
        this.spi.admi002++
      }
    }
    return expect(res, 200)
  }

  /** Ends the stream positions still held (acknowledging the last pages read); not measured. */
  async finish (): Promise<void> {
    this.spi.unreported = this.pending.size
    await Promise.all(this.cursors.held().map(async (path) => {
      try {
        await this.target.request({ method: 'DELETE', path, answerProfile: 'spi', signal: AbortSignal.timeout(5_000) })
      } catch {
        // An unacknowledged page is delivered again later: nothing is lost by giving up here.
      }
    }))
  }
}

function notPrepared (op: Operation): Outcome {
  return { ok: false, code: 'LOAD_NOT_PREPARED', detail: `no prepared item left for ${op}: the prepare phase made fewer than the run used` }
}

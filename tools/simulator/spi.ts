/**
 * SPI over ICOM (docs/bacen.md §2): participants POST messages to `/api/v1/in/{ispb}/msgs` and read what the
 * SPI sends them from `/api/v1/out/{ispb}/stream/…`, following the PI-Pull-Next chain.
 *
 * Each POSTed message is checked (SPI-profile signature by one of the sender's certificates, AppHdr/Fr, exactly
 * Fr/FIId/FinInstnId/Othr/Id, equal to the ISPB in the path) before the 201 is sent, so the accepted-message log is complete when the client sees the
 * answer; refusals become an admi.002 on the sender's stream, as BACEN does. A valid pacs.008 is forwarded to a
 * payee that is a participant, and after `settleDelayMs` settles: pacs.002 ACSC to the payer and ACCC to the
 * payee per transaction (a repeated EndToEndId gets RJCT AM05 instead). pibr.001 gets a pibr.002.
 *
 * Streams: each GET on a stream path delivers one page (1 message, or up to 10 as multipart/mixed) and names the
 * next path; GETting the next path (or DELETE on it) acknowledges the page. A page retried at the same path is
 * delivered again, identically. Pages never acknowledged return to the queue after `redeliverAfterMs`
 * (at-least-once, like any queue whose consumer may die).
 */
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import { childElements, parseXml, textContent, XmlError } from '../../core/xmldsig/xml.ts'
import type { XmlDocument, XmlElement } from '../../core/xmldsig/xml.ts'
import { verifyDocument } from '../../core/xmldsig/verify.ts'
import type { VerifyCode } from '../../core/xmldsig/verify.ts'
import { corruptSignatureValue, faultsFor, sendBody, sendIcomProblem, signAsBcb, XML_CONTENT_TYPE } from './context.ts'
import { rewritten } from './faults.ts'
import type { SimulatorContext } from './context.ts'
import { buildMultipart, MultipartError, parseContentType, parseMultipart } from './multipart.ts'
import { admi002, forwardedPacs008, pacs002, pibr002, REJECTIONS } from './spi-messages.ts'
import type { BuiltBcbMessage, Rejection } from './spi-messages.ts'
import { child, descendants, text } from './xml.ts'

const gunzipAsync = promisify(gunzip)

export interface SpiOptions {
  /** Concurrent POSTs per ISPB before 429 (BACEN: 6). */
  maxInFlight?: number
  /** How long a stream GET waits for a message before 204 (BACEN: 5000). */
  longPollMs?: number
  /** Concurrent stream GETs per ISPB before 429 (BACEN: 6). */
  maxStreamReaders?: number
  /** Delay between accepting a pacs.008 and its settlement reports. Default 0. */
  settleDelayMs?: number
  /** Delivered pages not acknowledged within this time are queued again. Default 60000. */
  redeliverAfterMs?: number
  /** Largest POST body after decompression. Default 4 MiB. */
  maxBodyBytes?: number
}

/** Messages per multipart page or POST (docs/bacen.md §2.2: 10, unverified). */
const MAX_PARTS = 10

interface OutMessage {
  readonly resourceId: string
  readonly unsigned: string
  readonly signed: string
  readonly msgDefIdr: string
}

interface Page {
  readonly id: string
  /** The page this one's GET acknowledges. */
  readonly prev: Page | undefined
  batch: OutMessage[] | undefined
  next: string | undefined
  busy: boolean
  /** Acknowledged, or expired and queued again. */
  settled: boolean
  deliveredAt: number
}

class Outbox {
  readonly queue: OutMessage[] = []
  readonly waiters = new Set<() => void>()
  readonly pages = new Map<string, Page>()
  readonly outstanding = new Set<Page>()
  inFlight = 0
  readers = 0
  tail: Promise<void> = Promise.resolve()
}

/** 32 alphanumerics, the form of BACEN's PI-ResourceId (e.g. UEkBc8SHlbqa1VUfHRBEFKczf6ftGqED). */
function newResourceId (): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  let s = ''
  for (const b of randomBytes(32)) s += alphabet[b % alphabet.length]
  return s
}

function spiParts (doc: XmlDocument): { appHdr?: XmlElement, document?: XmlElement } {
  const root = doc.root
  if (root.local !== 'Envelope') return {}
  return { appHdr: child(root, 'AppHdr'), document: child(root, 'Document') }
}

/**
 * The ISPB in AppHdr/Fr/FIId/FinInstnId/Othr/Id, or undefined unless Fr is there exactly once and holds nothing else
 * (no ClrSysMmbId, BICFI or OrgId beside or instead of it, no second Id): BACEN compares that one Id with the owner of
 * the signing certificate and refuses the message otherwise (docs/bacen.md §2.6), as an admi.002 on the stream.
 */
function sender (appHdr: XmlElement | undefined): string | undefined {
  if (appHdr === undefined) return undefined
  const frs = childElements(appHdr).filter((c) => c.local === 'Fr')
  if (frs.length !== 1) return undefined
  let el = frs[0] as XmlElement
  for (const step of ['FIId', 'FinInstnId', 'Othr', 'Id']) {
    const kids = childElements(el)
    if (kids.length !== 1 || kids[0]?.local !== step || kids[0].ns !== appHdr.ns) return undefined
    el = kids[0]
  }
  return textContent(el).trim()
}

export class SpiService {
  private readonly ctx: SimulatorContext
  private readonly maxInFlight: number
  private readonly longPollMs: number
  private readonly maxReaders: number
  private readonly settleDelayMs: number
  private readonly redeliverAfterMs: number
  private readonly maxBodyBytes: number
  private readonly outboxes = new Map<string, Outbox>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly seenEndToEnd = new Set<string>()
  private logger: FastifyBaseLogger | undefined

  constructor (ctx: SimulatorContext, opts: SpiOptions = {}) {
    this.ctx = ctx
    this.maxInFlight = opts.maxInFlight ?? 6
    this.longPollMs = opts.longPollMs ?? 5000
    this.maxReaders = opts.maxStreamReaders ?? 6
    this.settleDelayMs = opts.settleDelayMs ?? 0
    this.redeliverAfterMs = opts.redeliverAfterMs ?? 60_000
    this.maxBodyBytes = opts.maxBodyBytes ?? 4 * 1024 * 1024
    for (const ispb of ctx.participants.keys()) this.outboxes.set(ispb, new Outbox())
  }

  private outbox (ispb: string): Outbox {
    const o = this.outboxes.get(ispb)
    // The transport hook admits only configured participants' ISPBs to ICOM paths.
    if (o === undefined) throw new Error(`no outbox for ISPB ${ispb}`)
    return o
  }

  /** POSTs and stream readers being served now, per ISPB (for tests and tools: the 429 limits count these). */
  active (ispb: string): { readonly posts: number, readonly readers: number } {
    const o = this.outboxes.get(ispb)
    return { posts: o?.inFlight ?? 0, readers: o?.readers ?? 0 }
  }

  /** Messages queued and not yet delivered, per ISPB (for tests and tools). */
  pending (ispb: string): number {
    return this.outboxes.get(ispb)?.queue.length ?? 0
  }

  register (app: FastifyInstance): void {
    this.logger = app.log
    const limitPosts: onRequestHookHandler = (request, reply, done) => {
      const o = this.outbox((request.params as { ispb: string }).ispb)
      if (o.inFlight >= this.maxInFlight) {
        sendIcomProblem(request, reply, 429, 'tooManyRequests', 'Too Many Requests', `At most ${this.maxInFlight} simultaneous requests per participant`).then(() => {}, done)
        return
      }
      o.inFlight++
      reply.raw.once('close', () => { o.inFlight-- })
      done()
    }
    const limitReaders: onRequestHookHandler = (request, reply, done) => {
      const o = this.outbox((request.params as { ispb: string }).ispb)
      if (o.readers >= this.maxReaders) {
        sendIcomProblem(request, reply, 429, 'tooManyRequests', 'Too Many Requests', `At most ${this.maxReaders} simultaneous stream readers per participant`).then(() => {}, done)
        return
      }
      o.readers++
      reply.raw.once('close', () => { o.readers-- })
      done()
    }
    app.post('/api/v1/in/:ispb/msgs', { onRequest: limitPosts }, async (request, reply) => await this.receive(request, reply))
    app.get('/api/v1/out/:ispb/stream/start', { onRequest: limitReaders }, async (request, reply) => {
      const o = this.outbox((request.params as { ispb: string }).ispb)
      const page = this.newPage(o, undefined)
      return await this.serve(request, reply, o, page)
    })
    app.get('/api/v1/out/:ispb/stream/:id', { onRequest: limitReaders }, async (request, reply) => {
      const { ispb, id } = request.params as { ispb: string, id: string }
      const o = this.outbox(ispb)
      const page = o.pages.get(id)
      if (page === undefined) return await sendIcomProblem(request, reply, 404, 'notFound', 'Not Found', `Stream position ${id} does not exist or was already consumed`)
      if (page.busy) return await sendIcomProblem(request, reply, 409, 'conflict', 'Conflict', `Stream position ${id} is being read by another request`)
      if (page.batch !== undefined) return await this.respond(request, reply, ispb, page) // a retry: same page again
      this.acknowledge(o, page.prev)
      return await this.serve(request, reply, o, page)
    })
    app.delete('/api/v1/out/:ispb/stream/:id', async (request, reply) => {
      const { ispb, id } = request.params as { ispb: string, id: string }
      const o = this.outbox(ispb)
      const page = o.pages.get(id)
      if (page === undefined) return await sendIcomProblem(request, reply, 404, 'notFound', 'Not Found', `Stream position ${id} does not exist or was already consumed`)
      this.acknowledge(o, page.prev)
      if (page.batch !== undefined) this.acknowledge(o, page)
      o.pages.delete(id)
      return await reply.code(204).send()
    })
  }

  /** Stops timers and wakes every long-poll so that the server closes promptly. */
  close (): void {
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    for (const o of this.outboxes.values()) for (const w of o.waiters) w()
  }

  // ----- receiving ---------------------------------------------------------------------------------------------

  private async receive (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const ispb = (request.params as { ispb: string }).ispb
    const raw = request.body
    if (!Buffer.isBuffer(raw) || raw.length === 0) return await sendIcomProblem(request, reply, 400, 'invalidBody', 'Bad Request', 'The request has no body')
    let body: Buffer = raw
    const encoding = (request.headers['content-encoding'] ?? 'identity').toLowerCase().trim()
    if (encoding === 'gzip') {
      try {
        body = await gunzipAsync(body, { maxOutputLength: this.maxBodyBytes })
      } catch (err) {
        return await sendIcomProblem(request, reply, 400, 'invalidBody', 'Bad Request', `The gzip body cannot be decompressed: ${(err as Error).message}`)
      }
    } else if (encoding !== 'identity') {
      return await sendIcomProblem(request, reply, 415, 'unsupportedMediaType', 'Unsupported Media Type', `Content-Encoding ${encoding} is not supported; use gzip`)
    }
    const ct = parseContentType(request.headers['content-type'])
    let messages: Buffer[]
    if (ct.type === 'application/xml') {
      messages = [body]
    } else if (ct.type === 'multipart/mixed') {
      try {
        messages = parseMultipart(body, ct.params.boundary ?? '', MAX_PARTS).map((p) => p.body)
      } catch (err) {
        if (err instanceof MultipartError) return await sendIcomProblem(request, reply, 400, 'invalidBody', 'Bad Request', `Invalid multipart/mixed body: ${err.message}`)
        throw err
      }
    } else {
      return await sendIcomProblem(request, reply, 415, 'unsupportedMediaType', 'Unsupported Media Type', 'Send application/xml or multipart/mixed')
    }
    const ids = messages.map((m) => {
      const id = newResourceId()
      this.accept(ispb, m, id)
      return id
    })
    return await reply.code(201).header('pi-resourceid', ids.join(',')).send()
  }

  /** Verifies, logs and acts on one message; refusals are answered with an admi.002 on the sender's stream. */
  private accept (ispb: string, bytes: Buffer, resourceId: string): void {
    const participant = this.ctx.participants.get(ispb)
    let doc: XmlDocument | undefined
    let signature: VerifyCode
    let rejection: Rejection | undefined
    try {
      doc = parseXml(bytes)
      const r = verifyDocument(doc, { profile: 'spi', ...(participant === undefined ? {} : { trustStore: participant.trust }) })
      signature = r.code
      if (!r.valid) rejection = REJECTIONS.signature
    } catch (err) {
      if (!(err instanceof XmlError)) throw err
      signature = err.code
      rejection = REJECTIONS.malformed
    }
    const { appHdr, document } = doc === undefined ? {} : spiParts(doc)
    const from = sender(appHdr)
    const bizMsgIdr = text(appHdr, 'BizMsgIdr')
    const msgDefIdr = text(appHdr, 'MsgDefIdr')
    if (rejection === undefined && from !== ispb) rejection = REJECTIONS.senderMismatch
    const endToEndIds = document === undefined ? [] : descendants(document, 'EndToEndId').map((e) => text(e) ?? '')
    this.ctx.log.add({
      ts: new Date().toISOString(),
      system: 'spi',
      ispb,
      ...(msgDefIdr === undefined ? {} : { msgDefIdr }),
      ...(bizMsgIdr === undefined ? {} : { bizMsgIdr }),
      endToEndIds,
      resourceId,
      signature,
      status: 201,
      ...(rejection === undefined ? {} : { rejection: rejection.reason })
    })
    if (rejection !== undefined) {
      this.enqueue(ispb, () => admi002({ to: ispb, reference: bizMsgIdr ?? resourceId, rejection }))
      return
    }
    const kind = (msgDefIdr ?? '').split('.').slice(0, 2).join('.')
    if (kind === 'pacs.008' && doc !== undefined && document !== undefined) this.pacs008(ispb, doc, document, bizMsgIdr ?? '', msgDefIdr ?? '')
    else if (kind === 'pibr.001' && document !== undefined) {
      const data = text(document, 'EchoReq', 'EchoTxInf', 'Data') ?? ''
      this.enqueue(ispb, () => pibr002({ to: ispb, originalMsgId: bizMsgIdr ?? '', data }))
    }
    // Anything else (pacs.002 from a payee, pibr.002, camt.*) is accepted and logged: nothing to answer.
  }

  private pacs008 (payer: string, doc: XmlDocument, document: XmlElement, msgId: string, msgDefIdr: string): void {
    const txs = descendants(document, 'CdtTrfTxInf').map((tx) => {
      const endToEndId = text(tx, 'PmtId', 'EndToEndId') ?? ''
      const duplicate = this.seenEndToEnd.has(endToEndId)
      this.seenEndToEnd.add(endToEndId)
      return { endToEndId, duplicate, payee: text(tx, 'CdtrAgt', 'FinInstnId', 'ClrSysMmbId', 'MmbId') ?? '' }
    })
    const payees = new Set(txs.filter((t) => !t.duplicate && this.outboxes.has(t.payee)).map((t) => t.payee))
    // A Document whose elements use a prefix declared on the Envelope cannot be lifted out as text; the SPI
    // profile and every BCB example use the default namespace.
    const liftable = document.prefix === ''
    if (liftable) {
      const documentXml = doc.source.slice(document.start, document.end)
      for (const payee of payees) this.enqueue(payee, () => forwardedPacs008({ to: payee, namespace: document.ns, msgDefIdr, documentXml }))
    }
    const settle = (): void => {
      for (const t of txs) {
        this.enqueue(payer, () => pacs002({ to: payer, originalMsgId: msgId, originalMsgDefIdr: msgDefIdr, tx: t.duplicate ? { endToEndId: t.endToEndId, status: 'RJCT', reason: 'AM05' } : { endToEndId: t.endToEndId, status: 'ACSC' } }))
        if (!t.duplicate && liftable && payees.has(t.payee)) {
          this.enqueue(t.payee, () => pacs002({ to: t.payee, originalMsgId: msgId, originalMsgDefIdr: msgDefIdr, tx: { endToEndId: t.endToEndId, status: 'ACCC' } }))
        }
      }
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      settle()
    }, this.settleDelayMs)
    timer.unref()
    this.timers.add(timer)
  }

  /** Builds, signs and queues a message for `ispb`; per-destination order is the order of the calls. */
  private enqueue (ispb: string, build: () => BuiltBcbMessage): void {
    const o = this.outboxes.get(ispb)
    if (o === undefined) return
    const built = build()
    const signing = this.ctx.bcbSigner.sign(built.xml, 'spi')
    o.tail = o.tail.then(async () => {
      const signed = await signing
      o.queue.push({ resourceId: newResourceId(), unsigned: built.xml, signed, msgDefIdr: built.msgDefIdr })
      for (const w of o.waiters) w()
    }).catch((err: unknown) => {
      // Signing with the simulator's own in-memory key does not fail in practice; never break the chain.
      this.logger?.error({ err, ispb }, 'cannot queue an SPI message')
    })
  }

  // ----- streams -----------------------------------------------------------------------------------------------

  private newPage (o: Outbox, prev: Page | undefined): Page {
    const page: Page = { id: randomBytes(16).toString('hex'), prev, batch: undefined, next: undefined, busy: false, settled: false, deliveredAt: 0 }
    o.pages.set(page.id, page)
    return page
  }

  private acknowledge (o: Outbox, page: Page | undefined): void {
    if (page === undefined) return
    page.settled = true
    o.outstanding.delete(page)
    o.pages.delete(page.id)
  }

  private requeueExpired (o: Outbox): void {
    const now = Date.now()
    for (const p of o.outstanding) {
      if (now - p.deliveredAt < this.redeliverAfterMs) continue
      o.outstanding.delete(p)
      p.settled = true
      o.queue.unshift(...(p.batch ?? []))
    }
  }

  private async waitForMessage (o: Outbox, ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        o.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      timer.unref()
      o.waiters.add(done)
    })
  }

  private async serve (request: FastifyRequest, reply: FastifyReply, o: Outbox, page: Page): Promise<FastifyReply> {
    const ispb = (request.params as { ispb: string }).ispb
    const max = parseContentType(request.headers.accept).type === 'multipart/mixed' ? MAX_PARTS : 1
    page.busy = true
    try {
      const deadline = Date.now() + this.longPollMs
      this.requeueExpired(o)
      while (o.queue.length === 0 && !this.ctx.closing && !request.raw.destroyed) {
        const left = deadline - Date.now()
        if (left <= 0) break
        await this.waitForMessage(o, left)
        this.requeueExpired(o)
      }
      // A reader that went away takes nothing: its messages stay queued for the next one.
      const batch = request.raw.destroyed ? [] : o.queue.splice(0, max)
      page.batch = batch
      page.deliveredAt = Date.now()
      page.next = this.newPage(o, page).id
      if (batch.length > 0) o.outstanding.add(page)
    } finally {
      page.busy = false
    }
    return await this.respond(request, reply, ispb, page)
  }

  private async respond (request: FastifyRequest, reply: FastifyReply, ispb: string, page: Page): Promise<FastifyReply> {
    reply.header('pi-pull-next', `/api/v1/out/${ispb}/stream/${page.next ?? ''}`)
    const batch = page.batch ?? []
    if (batch.length === 0) return await reply.code(204).send()
    const f = faultsFor(this.ctx, request)
    const mode = f.responseSignature
    const bodies = await Promise.all(batch.map(async (m) => {
      if (f.responseRewrite !== null) return await signAsBcb(this.ctx, rewritten(m.unsigned, f), 'spi', mode)
      switch (mode) {
        case 'valid': return m.signed
        case 'invalid': return corruptSignatureValue(m.signed)
        default: return await signAsBcb(this.ctx, m.unsigned, 'spi', mode)
      }
    }))
    const multipart = parseContentType(request.headers.accept).type === 'multipart/mixed'
    let contentType: string
    let body: Buffer
    if (multipart) {
      const built = buildMultipart(batch.map((m, i) => ({ headers: { 'Content-Type': XML_CONTENT_TYPE, 'PI-ResourceId': m.resourceId }, body: bodies[i] as string })))
      contentType = built.contentType
      body = built.body
    } else {
      const m = batch[0] as OutMessage
      reply.header('pi-resourceid', m.resourceId)
      contentType = XML_CONTENT_TYPE
      body = Buffer.from(bodies[0] as string, 'utf8')
    }
    return await sendBody(request, reply, 200, contentType, body)
  }
}

/**
 * SPI/ICOM through the proxy, on ICOM's own paths:
 *   POST   /api/v1/in/{ispb}/msgs            one message (application/xml) or up to 10 (multipart/mixed), signed here
 *   GET    /api/v1/out/{ispb}/stream/start   long-poll read; PI-Pull-Next names the next path
 *   GET    /api/v1/out/{ispb}/stream/{id}    the PI-Pull-Next chain
 *   DELETE /api/v1/out/{ispb}/stream/{id}    end the stream
 * BACEN allows 6 concurrent POSTs and 6 stream readers per participant: the proxy queues the excess (bounded, with a
 * deadline) rather than spend BACEN's limit, and answers 503 + Retry-After when it cannot serve in time.
 *
 * Stream pages follow the invalid-signature policy like every answer (forwarding/pipeline.ts): under `reject` a page
 * that does not verify is withheld as a 502 without PI-Pull-Next, so that the core reads the same path again and the
 * page is not acknowledged; under `flag` it is delivered with each message flagged.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Binding, UpstreamCall } from '../forwarding/pipeline.ts'
import { callContext } from '../plugins/forwarding.ts'
import { MAX_PARTS } from '../icom/icom.ts'
import { emptyFacts, spiFacts, spiSender } from '../../core/pix/facts.ts'
import type { MessageFacts } from '../../core/pix/facts.ts'
import { requireXmlBody, sendRelayed, upstreamPath } from './exchange.ts'
import { ISPB_RE, shown } from './params.ts'
import { buildMultipart, MultipartError, multipartBoundary, parseMultipart } from '../http/multipart.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'

export default async function spiRoutes (app: FastifyInstance): Promise<void> {
  const { config, metrics, icom } = app

  const recipient: Binding = { what: 'recipient', expected: [config.ispb], paths: [['AppHdr', 'To', 'FIId', 'FinInstnId', 'Othr', 'Id']] }

  const checkIspb = (req: FastifyRequest): void => {
    const { ispb } = req.params as { ispb: string }
    if (ispb !== config.ispb) throw new PixProxyError(Errors.PARTICIPANT_MISMATCH, ['the ISPB in the path', ispb, config.ispb])
  }

  const signOne = async (xml: Buffer, facts: MessageFacts): Promise<string> => {
    const signer = app.crypto.xmlSigner
    const doc = signer.parse(xml, 'spi')
    spiFacts(doc, facts)
    const sender = spiSender(doc)
    // Only our own ISPB: indirect participants' messages travel under the direct participant's (docs/bacen.md §2.2).
    if (sender !== undefined && sender !== config.ispb) {
      // BACEN would reject it asynchronously ("O ISPB do remetente não é o mesmo da Assinatura XML").
      throw new PixProxyError(Errors.PARTICIPANT_MISMATCH, ['AppHdr/Fr', ISPB_RE.test(sender) ? sender : shown(sender, 20), config.ispb])
    }
    const started = performance.now()
    const signed = await signer.signDocument(doc, 'spi')
    metrics.signSeconds.observe({ profile: 'spi' }, (performance.now() - started) / 1000)
    return signed
  }

  app.post('/api/v1/in/:ispb/msgs', async (req: FastifyRequest, reply: FastifyReply) => {
    checkIspb(req)
    const raw = requireXmlBody(req)
    const ct = req.headers['content-type']
    let body: Buffer | string
    let contentType: string
    let boundary: string | null
    try {
      boundary = multipartBoundary(ct)
    } catch (err) {
      throw new PixProxyError(Errors.MEDIA_TYPE, [ct, 'multipart/mixed with a boundary'], { cause: err })
    }
    const facts = emptyFacts()
    if (boundary === null) {
      body = await signOne(raw, facts)
      contentType = 'application/xml; charset=utf-8'
    } else {
      let parts
      try {
        parts = parseMultipart(raw, boundary, MAX_PARTS)
      } catch (err) {
        if (err instanceof MultipartError) throw new PixProxyError(Errors.XML_MALFORMED, [`multipart body: ${err.message}`], { cause: err })
        throw err
      }
      // A post with no message would reach ICOM as an empty batch: nothing to sign, nothing to send.
      if (parts.length === 0) throw new PixProxyError(Errors.BODY_REQUIRED, [req.method, req.routeOptions.url ?? req.url])
      // Every part is signed before anything leaves: one bad part refuses the whole batch.
      const signed = await Promise.all(parts.map(async (p) => ({
        headers: { 'content-type': 'application/xml; charset=utf-8' },
        body: Buffer.from(await signOne(p.body, facts), 'utf8')
      })))
      const mp = buildMultipart(signed)
      body = mp.body
      contentType = mp.contentType
    }
    const call: UpstreamCall = {
      name: 'spi',
      method: 'POST',
      path: upstreamPath('/api/v1/in/:ispb/msgs', req),
      headers: { 'content-type': contentType, accept: 'application/xml' },
      body
    }
    const ctx = callContext(req)
    // One message, coalesced with others when they queue (icom/batcher.ts); a caller's own multipart post as it is.
    if (icom.coalescing && boundary === null) return sendRelayed(reply, await app.forwarding.forward(ctx, call, facts, icom.coalesced(body as string, ctx.gone)))
    return sendRelayed(reply, await icom.withPostSlot(async () => await app.forwarding.forward(ctx, call, facts, icom.post)))
  })

  const read = (template: string, method: 'GET' | 'DELETE') => async (req: FastifyRequest, reply: FastifyReply) => {
    checkIspb(req)
    const accept = req.headers.accept?.toLowerCase().includes('multipart/mixed') === true ? 'multipart/mixed' : 'application/xml'
    return await icom.withReaderSlot(async () => {
      // Until the answer is in (and in the row of a page that delivered nothing) the row says what the call was.
      const facts = emptyFacts()
      facts.messageType = method === 'DELETE' ? 'stream end' : 'stream read'
      const call: UpstreamCall = {
        name: 'spi',
        method,
        path: upstreamPath(template, req),
        headers: { accept }
      }
      // The row of a page carries what it delivered (types, BizMsgIdrs, EndToEndIds and OrgnlEndToEndIds), so that
      // a payment's story is found by its EndToEndId: the pacs.008 post and the read that brought its pacs.002.
      // Every page with messages is BACEN-signed, whatever its media type; ICOM's error documents are not.
      // Every message on our stream is addressed to us: one for another participant is not ours to deliver.
      return sendRelayed(reply, await app.forwarding.forward(callContext(req), call, facts, { label: 'ICOM stream', signed: '2xx-bodies', delivers: true, bind: recipient }))
    })
  }
  app.get('/api/v1/out/:ispb/stream/start', read('/api/v1/out/:ispb/stream/start', 'GET'))
  app.get('/api/v1/out/:ispb/stream/:streamId', read('/api/v1/out/:ispb/stream/:streamId', 'GET'))
  app.delete('/api/v1/out/:ispb/stream/:streamId', read('/api/v1/out/:ispb/stream/:streamId', 'DELETE'))
}

/**
 * DICT v2 through the proxy: the caller uses BACEN's own paths (`/api/v2/...`). Writes are signed in the DICT
 * profile; every response is verified. Only the operations listed here are forwarded (docs/bacen.md §1.3), and
 * the upstream path is rebuilt from the route template with encoded parameters, so the proxy cannot be used to
 * reach anything else on BACEN's hosts, nor any other host.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Binding, UpstreamCall } from '../forwarding/pipeline.ts'
import { callContext } from '../plugins/forwarding.ts'
import { dictFacts, emptyFacts } from '../../core/pix/facts.ts'
import type { MessageFacts } from '../../core/pix/facts.ts'
import { requireXmlBody, sendRelayed, upstreamPath } from './exchange.ts'
import { checkDictParticipants, dictHeaders } from './participants.ts'

/** [method, route template, signed write?] */
export const DICT_ROUTES: ReadonlyArray<readonly ['GET' | 'POST' | 'PUT', string, boolean]> = [
  ['POST', '/api/v2/entries/', true],
  ['GET', '/api/v2/entries/:Key', false],
  ['PUT', '/api/v2/entries/:Key', true],
  ['POST', '/api/v2/entries/:Key/delete', true],
  ['GET', '/api/v2/entries/:Key/statistics', false],
  ['POST', '/api/v2/claims/', true],
  ['GET', '/api/v2/claims/', false],
  ['GET', '/api/v2/claims/:ClaimId', false],
  ['POST', '/api/v2/claims/:ClaimId/acknowledge', true],
  ['POST', '/api/v2/claims/:ClaimId/confirm', true],
  ['POST', '/api/v2/claims/:ClaimId/cancel', true],
  ['POST', '/api/v2/claims/:ClaimId/complete', true],
  ['POST', '/api/v2/sync-verifications/', true],
  ['POST', '/api/v2/cids/files/', true],
  ['GET', '/api/v2/cids/files/:Id', false],
  ['GET', '/api/v2/cids/events', false],
  ['GET', '/api/v2/cids/entries/:Cid', false],
  ['GET', '/api/v2/infraction-reports/', false],
  ['GET', '/api/v2/infraction-reports/:Id', false],
  ['POST', '/api/v2/infraction-reports/:Id/acknowledge', true],
  ['POST', '/api/v2/infraction-reports/:Id/cancel', true],
  ['POST', '/api/v2/infraction-reports/:Id/close', true],
  ['POST', '/api/v2/refunds/', true],
  ['GET', '/api/v2/refunds/', false],
  ['GET', '/api/v2/refunds/:Id', false],
  ['POST', '/api/v2/refunds/:Id/cancel', true],
  ['POST', '/api/v2/refunds/:Id/close', true],
  ['POST', '/api/v2/fraud-markers/', true],
  ['GET', '/api/v2/fraud-markers/', false],
  ['GET', '/api/v2/fraud-markers/:Id', false],
  ['POST', '/api/v2/fraud-markers/:Id/cancel', true],
  ['POST', '/api/v2/funds-recoveries/', true],
  ['GET', '/api/v2/funds-recoveries/:Id', false],
  ['POST', '/api/v2/funds-recoveries/:Id/cancel', true],
  ['GET', '/api/v2/event-notifications', false],
  ['GET', '/api/v2/persons/:TaxIdNumber/statistics', false],
  ['GET', '/api/v2/policies/', false],
  ['GET', '/api/v2/policies/:Policy', false]
]

/**
 * What a successful answer to this route must name: the key or claim the request is about (forwarding/answer.ts Binding). A
 * BACEN-signed answer about another key (a GetEntry naming another account holder, say) is refused. Shapes from BCB's
 * specification (docs/bacen.md §1.4): entries answer Entry/Key (DeleteEntryResponse: Key), claims Claim/Id and
 * Claim/Key. A CreateEntry for an EVP key names none (DICT makes it up), so nothing binds it.
 */
function dictBinding (method: string, url: string, params: Record<string, string | undefined>, facts: MessageFacts): Binding | undefined {
  if (params.Key !== undefined && !url.endsWith('/statistics')) return { what: 'key', expected: [params.Key], paths: [['Entry', 'Key'], ['Key']] }
  if (params.ClaimId !== undefined) return { what: 'claim', expected: [params.ClaimId], paths: [['Claim', 'Id']] }
  if (method === 'POST' && url === '/api/v2/entries/' && facts.dictKey !== null) return { what: 'key', expected: [facts.dictKey], paths: [['Entry', 'Key']] }
  if (method === 'POST' && url === '/api/v2/claims/' && facts.dictKey !== null) return { what: 'key', expected: [facts.dictKey], paths: [['Claim', 'Key']] }
  return undefined
}

export default async function dictRoutes (app: FastifyInstance): Promise<void> {
  const { config } = app
  // The participants this proxy speaks for in DICT: ours and the indirect ones configured (docs/bacen.md §1.8).
  const participants: ReadonlySet<string> = new Set([config.ispb, ...config.indirectParticipants])
  for (const [method, url, signed] of DICT_ROUTES) {
    app.route({
      method,
      url,
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        // Only the request headers DICT documents go upstream, each checked (routes/participants.ts).
        const headers: Record<string, string> = { accept: 'application/xml', ...dictHeaders(req, participants, config.ispb) }
        let body: string | undefined
        const facts = emptyFacts()
        facts.messageType = `${method} ${url}`
        const params = req.params as Record<string, string | undefined>
        facts.dictKey = params.Key ?? null
        if (signed) {
          const signer = app.crypto.xmlSigner
          const doc = signer.parse(requireXmlBody(req), 'dict')
          dictFacts(doc, facts)
          // A body naming another participant would be signed with our key and refused by BACEN (403) after the fact.
          checkDictParticipants(doc, participants, config.ispb)
          const started = performance.now()
          body = await signer.signDocument(doc, 'dict')
          app.metrics.signSeconds.observe({ profile: 'dict' }, (performance.now() - started) / 1000)
          headers['content-type'] = 'application/xml; charset=utf-8'
        }
        const call: UpstreamCall = {
          name: 'dict',
          method,
          path: upstreamPath(url, req),
          headers,
          ...(body === undefined ? {} : { body })
        }
        // Every DICT response with a body is signed by BACEN, problems included (docs/bacen.md §1.6), whatever its
        // media type says.
        const bind = dictBinding(method, url, params, facts)
        return sendRelayed(reply, await app.forwarding.forward(callContext(req), call, facts, { label: 'DICT', signed: 'every-body', ...(bind === undefined ? {} : { bind }) }))
      }
    })
  }
}

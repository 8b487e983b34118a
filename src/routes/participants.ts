/**
 * Who a request speaks for. The proxy signs with one participant's key and holds its TLS identity, so everything it
 * forwards must name that participant (or, in DICT, an indirect participant it is configured for): a request naming
 * another would be signed and sent, and refused by BACEN after the fact (403), or worse, accepted on our signature.
 * All refusals here happen before signing: NOT SENT.
 */
import type { FastifyRequest } from 'fastify'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { childElements, textContent } from '../../core/xmldsig/xml.ts'
import type { XmlDocument, XmlElement } from '../../core/xmldsig/xml.ts'
import { ISPB_RE, shown } from './params.ts'

/**
 * DICT request headers and their forms (docs/bacen.md §1.8): PI-RequestingParticipant is the ISPB of the direct or
 * indirect participant making the request; PI-PayerId a CPF (11 digits) or CNPJ (14); PI-EndToEndId the EndToEndId of
 * the pacs.008 being prepared (§2.7: `E`, the ISPB, yyyyMMddHHmm, 11 letters or digits).
 */
const DICT_HEADER_FORMS: Readonly<Record<string, { re: RegExp, form: string }>> = Object.freeze({
  'pi-requestingparticipant': { re: ISPB_RE, form: 'an ISPB: 8 digits or upper-case letters' },
  'pi-payerid': { re: /^([0-9]{11}|[0-9]{14})$/, form: 'a CPF (11 digits) or CNPJ (14 digits)' },
  'pi-endtoendid': { re: /^E[0-9A-Z]{8}[0-9]{12}[A-Za-z0-9]{11}$/, form: 'an EndToEndId: E, an ISPB, yyyyMMddHHmm and 11 letters or digits' }
})

/**
 * The DICT headers to forward, each checked: of its form (400 HEADER_INVALID), and PI-RequestingParticipant one of
 * `participants` (403 PARTICIPANT_MISMATCH). A header sent twice is refused rather than joined or picked from.
 */
export function dictHeaders (req: FastifyRequest, participants: ReadonlySet<string>, ispb: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [h, { re, form }] of Object.entries(DICT_HEADER_FORMS)) {
    const v = req.headers[h]
    if (v === undefined) continue
    if (typeof v !== 'string') throw new PixProxyError(Errors.HEADER_INVALID, [h, 'sent more than once', form])
    if (!re.test(v)) throw new PixProxyError(Errors.HEADER_INVALID, [h, shown(v), form])
    if (h === 'pi-requestingparticipant' && !participants.has(v)) throw new PixProxyError(Errors.PARTICIPANT_MISMATCH, ['PI-RequestingParticipant', v, ispb])
    out[h] = v
  }
  return out
}

/**
 * Every `Participant` element of a DICT request body names the participant acting (Entry/Account/Participant,
 * Claim/ClaimerAccount/Participant, the Participant of claim actions, deletions, reconciliation, refunds…);
 * counterparties have other names (DonorParticipant, …). DICT bodies have no namespace (docs/bacen.md §1.4).
 */
export function checkDictParticipants (doc: XmlDocument, participants: ReadonlySet<string>, ispb: string): void {
  const stack: XmlElement[] = [doc.root]
  while (stack.length > 0) {
    const e = stack.pop() as XmlElement
    if (e.local === 'Participant') {
      const v = textContent(e).trim()
      if (!participants.has(v)) throw new PixProxyError(Errors.PARTICIPANT_MISMATCH, [`${path(e)} in the body`, shown(v, 20), ispb])
    }
    stack.push(...childElements(e))
  }
}

function path (e: XmlElement): string {
  const names: string[] = []
  for (let c: XmlElement | null = e; c !== null; c = c.parent) names.unshift(c.local)
  return names.join('/')
}

/**
 * Reading PIX messages, in one place: the searchable facts of a message for its audit row (message type, BizMsgIdr,
 * EndToEndIds, DICT RequestId and Key) and the sender of an SPI envelope, read from the tree the proxy already
 * parsed for signing (or, for what an ICOM stream page delivers, for verifying BACEN's signature): no second parse
 * on the hot path.
 */
import { Errors, PixProxyError } from '../errors.ts'
import { childElements, textContent } from '../xmldsig/xml.ts'
import type { XmlDocument, XmlElement } from '../xmldsig/xml.ts'
import { locateSpi, ProfileError } from '../xmldsig/profile.ts'

export interface MessageFacts {
  messageType: string | null
  bizMsgId: string | null
  endToEndIds: string[]
  dictRequestId: string | null
  dictKey: string | null
}

export function emptyFacts (): MessageFacts {
  return { messageType: null, bizMsgId: null, endToEndIds: [], dictRequestId: null, dictKey: null }
}

function child (el: XmlElement | undefined, local: string): XmlElement | undefined {
  return el === undefined ? undefined : childElements(el).find((c) => c.local === local)
}

function text (el: XmlElement | undefined): string | null {
  if (el === undefined) return null
  const v = textContent(el).trim()
  return v === '' ? null : v
}

/** Every element with this local name below `el`, in document order (iterative: depth is already bounded). */
function collect (el: XmlElement, local: string, out: XmlElement[]): void {
  const stack: XmlElement[] = [el]
  while (stack.length > 0) {
    const e = stack.pop() as XmlElement
    if (e.local === local) out.push(e)
    const kids = childElements(e)
    for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i] as XmlElement)
  }
}

/** SPI envelope: AppHdr/MsgDefIdr, AppHdr/BizMsgIdr, every Document//EndToEndId (and OrgnlEndToEndId). */
export function spiFacts (doc: XmlDocument, into: MessageFacts = emptyFacts()): MessageFacts {
  const root = doc.root
  const appHdr = child(root, 'AppHdr')
  const type = text(child(appHdr, 'MsgDefIdr'))
  const biz = text(child(appHdr, 'BizMsgIdr'))
  into.messageType = join(into.messageType, type)
  into.bizMsgId = join(into.bizMsgId, biz)
  const document = child(root, 'Document')
  if (document !== undefined) {
    const found: XmlElement[] = []
    collect(document, 'EndToEndId', found)
    collect(document, 'OrgnlEndToEndId', found)
    for (const e of found) {
      const v = text(e)
      if (v !== null && !into.endToEndIds.includes(v)) into.endToEndIds.push(v)
    }
  }
  return into
}

/** DICT request body: the root element's name, RequestId, and Key (Entry/Key, Claim/Key or Key). */
export function dictFacts (doc: XmlDocument, into: MessageFacts = emptyFacts()): MessageFacts {
  const root = doc.root
  into.messageType = root.local
  into.dictRequestId = text(child(root, 'RequestId'))
  into.dictKey = text(child(child(root, 'Entry'), 'Key')) ?? text(child(child(root, 'Claim'), 'Key')) ?? text(child(root, 'Key'))
  return into
}

/** The SPI facts as audit columns: what a stream page delivered, carried by the response half of its row. */
export interface FactColumns {
  message_type: string | null
  biz_msg_id: string | null
  end_to_end_ids: string | null
}

export function factColumns (f: MessageFacts): FactColumns {
  return {
    message_type: f.messageType,
    biz_msg_id: f.bizMsgId,
    end_to_end_ids: f.endToEndIds.length === 0 ? null : f.endToEndIds.join(',')
  }
}

/** Distinct values of a multipart batch, comma-separated. */
function join (prev: string | null, next: string | null): string | null {
  if (next === null) return prev
  if (prev === null) return next
  return prev.split(',').includes(next) ? prev : `${prev},${next}`
}

/**
 * AppHdr/Fr of an SPI message, strictly: exactly one Fr in the AppHdr, holding nothing but FIId/FinInstnId/Othr/Id,
 * each exactly once, in the AppHdr's namespace (AppHdr inherits the Envelope's; there is no separate head.001
 * namespace, docs/bacen.md §2.7), and no text outside Id. BACEN compares that Id with the owner of the signing
 * certificate (§2.6); a Fr that names us elsewhere (ClrSysMmbId/MmbId, BICFI, an OrgId) or twice could be read
 * differently by another consumer. Returns the Id's text (exact, not trimmed), or throws XML_NOT_SIGNABLE.
 */
function strictSender (appHdr: XmlElement): string {
  const fail = (why: string): never => { throw new PixProxyError(Errors.XML_NOT_SIGNABLE, ['spi', `AppHdr/Fr ${why}; it must be exactly Fr/FIId/FinInstnId/Othr/Id naming the sender's ISPB`]) }
  const frs = childElements(appHdr).filter((c) => c.local === 'Fr')
  if (frs.length === 0) fail('is missing')
  if (frs.length > 1) fail('appears more than once')
  let el = frs[0] as XmlElement
  if (el.ns !== appHdr.ns) fail('is not in the AppHdr\'s namespace')
  for (const step of ['FIId', 'FinInstnId', 'Othr', 'Id']) {
    if (!el.children.every((c) => c.type !== 'text' || /^[ \t\r\n]*$/.test(c.value))) fail(`has text in ${el.local}`)
    const kids = childElements(el)
    if (kids.length !== 1 || kids[0]?.local !== step || kids[0].ns !== appHdr.ns) {
      fail(`${el.local} holds ${kids.map((k) => `<${k.name}>`).join(', ') || 'nothing'} instead of exactly <${step}>`)
    }
    el = kids[0] as XmlElement
  }
  if (childElements(el).length > 0) fail('Id holds elements')
  return textContent(el)
}

/**
 * AppHdr/Fr/FIId/FinInstnId/Othr/Id: the sender BACEN will compare with the signing certificate's owner (docs/bacen.md
 * §2.6), read strictly (strictSender below: a missing Fr, a second one, or anything else inside it
 * is refused as XML_NOT_SIGNABLE). Undefined when the document is not an SPI envelope at all: signing refuses it.
 */
export function spiSender (doc: XmlDocument): string | undefined {
  let appHdr: XmlElement
  try {
    appHdr = locateSpi(doc).appHdr
  } catch (err) {
    if (err instanceof ProfileError) return undefined
    throw err
  }
  return strictSender(appHdr)
}

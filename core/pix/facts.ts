/**
 * The searchable facts of a message for its audit row (message type, BizMsgIdr, EndToEndIds, DICT RequestId and
 * Key), read from the tree the proxy already parsed for signing (or, for what an ICOM stream page delivers, for
 * verifying BACEN's signature): no second parse on the hot path.
 */
import { childElements, textContent } from '../xmldsig/xml.ts'
import type { XmlDocument, XmlElement } from '../xmldsig/xml.ts'

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

/** XMLDSig in BACEN's SPI and DICT profiles: sign, verify, canonicalise. See docs/xmldsig.md. */
import { canonicalizeDocument, canonicalizeElement } from './c14n.ts'
import { parseXml } from './xml.ts'
import type { XmlElement } from './xml.ts'

export { XmlSigner, signXml } from './sign.ts'
export type { XmlSignerOptions } from './sign.ts'
export { verifyXml, verifyDocument, VerifyCodes } from './verify.ts'
export type { VerifyCode, VerifyOptions, VerifyResult, ReferenceResult, SignerInfo } from './verify.ts'
export { TrustStore } from './truststore.ts'
export { detectProfile, PROFILE_REFERENCES } from './profile.ts'
export type { Profile } from './profile.ts'
export { parseXml, XmlError, DEFAULT_XML_LIMITS } from './xml.ts'
export type { XmlDocument, XmlElement, XmlLimits } from './xml.ts'
export { canonicalizeDocument, canonicalizeElement } from './c14n.ts'

/**
 * Exclusive c14n (without comments) of a whole document, or of the first element (document order) whose local
 * name is `localName`. A convenience for tools and tests; the signer and verifier work on the parse tree.
 */
export function canonicalize (xml: string | Uint8Array, options: { localName?: string } = {}): string {
  const doc = parseXml(xml)
  if (options.localName === undefined) return canonicalizeDocument(doc)
  const find = (el: XmlElement): XmlElement | undefined => {
    if (el.local === options.localName) return el
    for (const c of el.children) {
      if (c.type === 'element') {
        const hit = find(c)
        if (hit !== undefined) return hit
      }
    }
    return undefined
  }
  const el = find(doc.root)
  if (el === undefined) throw new Error(`no element with local name ${options.localName}`)
  return canonicalizeElement(el)
}

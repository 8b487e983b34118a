/**
 * BACEN's two XMLDSig profiles and where each puts the signature (docs/xmldsig.md; docs/bacen.md §3):
 *
 * - SPI (ISO 20022 messages to and from SPI/ICOM): `Envelope/AppHdr/Sgntr/ds:Signature`, three References:
 *   `#<KeyInfo Id>` (the KeyInfo), `URI=""` meaning the AppHdr element with the signature removed (not the whole
 *   document: BACEN's non-standard dereferencing), and one without URI meaning the Document element.
 * - DICT: `ds:Signature` as the first child of the root, two References: `#<KeyInfo Id>` and `URI=""` (the whole
 *   document, enveloped).
 */
import { childElements, onlyWhitespaceText } from './xml.ts'
import type { XmlDocument, XmlElement } from './xml.ts'

export type Profile = 'spi' | 'dict'

export const DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#'
export const ALG_EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#'
export const ALG_ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature'
export const ALG_RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256'
export const ALG_SHA256 = 'http://www.w3.org/2001/04/xmlenc#sha256'
/** The KeyInfo Id BACEN itself writes; verifiers accept any Id that resolves to the signature's own KeyInfo. */
export const KEY_INFO_ID = 'key-info-id'

/** What a Reference points at, by profile. */
export type ReferenceTarget = 'KeyInfo' | 'AppHdr' | 'Document' | 'document'

export interface ReferenceRule {
  /** `null` = the Reference has no URI attribute; `'#'` = a fragment naming the KeyInfo's Id. */
  readonly uri: '#' | '' | null
  readonly target: ReferenceTarget
  readonly transforms: readonly string[]
}

export const PROFILE_REFERENCES: Readonly<Record<Profile, readonly ReferenceRule[]>> = Object.freeze({
  spi: Object.freeze([
    { uri: '#', target: 'KeyInfo', transforms: [ALG_EXC_C14N] },
    { uri: '', target: 'AppHdr', transforms: [ALG_ENVELOPED, ALG_EXC_C14N] },
    { uri: null, target: 'Document', transforms: [ALG_EXC_C14N] }
  ] as const),
  dict: Object.freeze([
    { uri: '#', target: 'KeyInfo', transforms: [ALG_EXC_C14N] },
    { uri: '', target: 'document', transforms: [ALG_ENVELOPED, ALG_EXC_C14N] }
  ] as const)
})

export interface SpiParts {
  readonly envelope: XmlElement
  readonly appHdr: XmlElement
  readonly document: XmlElement
  readonly sgntr: XmlElement
}

/** A structural problem with a message under a profile: signing refuses it, verification calls it a violation. */
export class ProfileError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ProfileError'
  }
}

/**
 * Finds Envelope/AppHdr, Envelope/Document and AppHdr/Sgntr. Strict on purpose: exactly one of each, in the
 * Envelope's namespace, and nothing else in the Envelope, so that no second AppHdr or Document can sit beside the
 * signed ones (signature wrapping) for a later consumer to pick up.
 */
export function locateSpi (doc: XmlDocument): SpiParts {
  const envelope = doc.root
  if (envelope.local !== 'Envelope') throw new ProfileError(`the root element is <${envelope.name}>, the SPI profile needs <Envelope>`)
  if (!onlyWhitespaceText(envelope)) throw new ProfileError('text directly inside <Envelope>')
  let appHdr: XmlElement | undefined
  let document: XmlElement | undefined
  for (const c of childElements(envelope)) {
    if (c.ns !== envelope.ns) throw new ProfileError(`<${c.name}> in Envelope is not in the Envelope's namespace`)
    if (c.local === 'AppHdr') {
      if (appHdr !== undefined) throw new ProfileError('more than one AppHdr in Envelope')
      appHdr = c
    } else if (c.local === 'Document') {
      if (document !== undefined) throw new ProfileError('more than one Document in Envelope')
      if (appHdr === undefined) throw new ProfileError('Document comes before AppHdr in Envelope')
      document = c
    } else {
      throw new ProfileError(`unexpected element <${c.name}> in Envelope`)
    }
  }
  if (appHdr === undefined) throw new ProfileError('Envelope has no AppHdr')
  if (document === undefined) throw new ProfileError('Envelope has no Document')
  let sgntr: XmlElement | undefined
  for (const c of childElements(appHdr)) {
    if (c.local === 'Sgntr' && c.ns === appHdr.ns) {
      if (sgntr !== undefined) throw new ProfileError('more than one Sgntr in AppHdr')
      sgntr = c
    }
  }
  if (sgntr === undefined) throw new ProfileError('AppHdr has no Sgntr element for the signature')
  return { envelope, appHdr, document, sgntr }
}

/**
 * True when every text node of `root` before its first element child is white space. DICT roots hold no text;
 * the signer refuses, and the verifier rejects, anything else in front of the ds:Signature.
 */
export function onlyWhitespaceBeforeFirstElement (root: XmlElement): boolean {
  for (const c of root.children) {
    if (c.type === 'element') return true
    if (c.type === 'text' && !/^[ \t\r\n]*$/.test(c.value)) return false
  }
  return true
}

/** The profile a signed document's signature placement implies, or null when it fits neither. */
export function detectProfile (doc: XmlDocument, signature: XmlElement): Profile | null {
  const parent = signature.parent
  if (parent === null) return null
  if (parent === doc.root) return 'dict'
  if (parent.local === 'Sgntr' && parent.parent?.local === 'AppHdr' && parent.parent.parent === doc.root) return 'spi'
  return null
}

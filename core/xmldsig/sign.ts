/**
 * Signs PIX messages in BACEN's profiles (./profile.ts).
 *
 * The message is parsed once; the digests are the exclusive canonical forms of the referenced subtrees, computed
 * straight from the parse tree; the signature is built as text already in canonical form and spliced into the
 * caller's original text at the offset the parser recorded, so the caller's bytes (declaration, formatting,
 * prefixes) reach BACEN unchanged apart from the inserted ds:Signature. The enveloped-signature transform makes
 * the digests of the unsigned and signed forms equal: the signature goes where that transform will remove it.
 */
import { createHash } from 'node:crypto'
import { canonicalizeDocument, canonicalizeElement, escapeText } from './c14n.ts'
import { childElements, onlyWhitespaceText, parseXml, XmlError, DEFAULT_XML_LIMITS } from './xml.ts'
import type { XmlDocument, XmlLimits } from './xml.ts'
import {
  ALG_ENVELOPED, ALG_EXC_C14N, ALG_RSA_SHA256, ALG_SHA256, DSIG_NS, KEY_INFO_ID, locateSpi, onlyWhitespaceBeforeFirstElement, ProfileError
} from './profile.ts'
import type { Profile } from './profile.ts'
import type { Signer } from '../signer.ts'
import type { Certificate } from '../pki/x509.ts'
import { certificateMatchesKey } from '../pki/x509.ts'
import { Errors, PixProxyError } from '../errors.ts'

export interface XmlSignerOptions {
  readonly signer: Signer
  /** The signing certificate: its issuer DN and serial go into KeyInfo. Must match the signer's key. */
  readonly certificate: Certificate
  readonly limits?: XmlLimits
  /** Clock for the certificate validity check (default: the system clock). */
  readonly clock?: () => Date
}

const TRANSFORM_EXC = `<ds:Transform Algorithm="${ALG_EXC_C14N}"></ds:Transform>`
const TRANSFORM_ENV = `<ds:Transform Algorithm="${ALG_ENVELOPED}"></ds:Transform>`
const DIGEST_METHOD = `<ds:DigestMethod Algorithm="${ALG_SHA256}"></ds:DigestMethod>`
const SIGNED_INFO_HEAD = `<ds:SignedInfo><ds:CanonicalizationMethod Algorithm="${ALG_EXC_C14N}"></ds:CanonicalizationMethod>` +
  `<ds:SignatureMethod Algorithm="${ALG_RSA_SHA256}"></ds:SignatureMethod>`
const XMLNS_DS = ` xmlns:ds="${DSIG_NS}"`

function reference (uriAttr: string, transforms: string, digest: string): string {
  return `<ds:Reference${uriAttr}><ds:Transforms>${transforms}</ds:Transforms>${DIGEST_METHOD}` +
    `<ds:DigestValue>${digest}</ds:DigestValue></ds:Reference>`
}

function sha256b64 (text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64')
}

/**
 * A signer bound to one key and certificate. Construction checks that they belong together (a mismatch would
 * otherwise surface only as BACEN rejecting every message) and precomputes the KeyInfo and its digest.
 */
export class XmlSigner {
  private readonly signer: Signer
  private readonly limits: XmlLimits
  private readonly keyInfo: string
  private readonly keyInfoDigest: string
  private readonly certificate: Certificate
  private readonly clock: () => Date

  constructor (options: XmlSignerOptions) {
    const { signer, certificate } = options
    if (!certificateMatchesKey(certificate, signer.publicKey)) {
      throw new PixProxyError(Errors.KEY_CERT_MISMATCH, [`${certificate.subjectString} (serial ${certificate.serialDecimal})`])
    }
    this.signer = signer
    this.certificate = certificate
    this.clock = options.clock ?? (() => new Date())
    this.limits = options.limits ?? DEFAULT_XML_LIMITS
    this.keyInfo = `<ds:KeyInfo Id="${KEY_INFO_ID}"><ds:X509Data><ds:X509IssuerSerial>` +
      `<ds:X509IssuerName>${escapeText(certificate.issuerString)}</ds:X509IssuerName>` +
      `<ds:X509SerialNumber>${certificate.serialDecimal}</ds:X509SerialNumber>` +
      '</ds:X509IssuerSerial></ds:X509Data></ds:KeyInfo>'
    // In canonical form the apex renders the ds namespace it uses; everything else is already canonical.
    this.keyInfoDigest = sha256b64('<ds:KeyInfo' + XMLNS_DS + this.keyInfo.slice('<ds:KeyInfo'.length))
  }

  /**
   * Returns `xml` with a ds:Signature in the given profile.
   * @throws PixProxyError XML_MALFORMED | XML_DTD_FORBIDDEN | XML_LIMIT_EXCEEDED | XML_DUPLICATE_ID |
   *   XML_ALREADY_SIGNED | XML_NOT_SIGNABLE, or the Signer's error (e.g. HSM_*).
   */
  async sign (xml: string | Uint8Array, profile: Profile): Promise<string> {
    return await this.signDocument(this.parse(xml, profile), profile)
  }

  /** Parses and checks a message for signing (the proxy inspects the tree, e.g. AppHdr/Fr, before signing it). */
  parse (xml: string | Uint8Array, profile: Profile): XmlDocument {
    return parseForSigning(xml, this.limits, profile)
  }

  /** Signs a document from `parse()`; the result is the document's source with the signature inserted. */
  async signDocument (doc: XmlDocument, profile: Profile): Promise<string> {
    this.assertCertificateValid()
    return profile === 'spi' ? await this.signSpi(doc) : await this.signDict(doc)
  }

  /**
   * Refuses to sign outside the certificate's validity: BACEN would reject every such message, and saying so here
   * (503, its own code, also in readiness) beats a stream of asynchronous rejections.
   */
  assertCertificateValid (): void {
    const now = this.clock()
    const c = this.certificate
    if (!(now.getTime() >= c.notBefore.getTime() && now.getTime() <= c.notAfter.getTime())) {
      throw new PixProxyError(Errors.SIGNING_CERT_NOT_VALID, [`${c.subjectString} (serial ${c.serialDecimal})`, c.notBefore.toISOString(), c.notAfter.toISOString(), Number.isNaN(now.getTime()) ? 'an invalid date' : now.toISOString()])
    }
  }

  private async signSpi (doc: XmlDocument): Promise<string> {
    let parts
    try {
      parts = locateSpi(doc)
    } catch (err) {
      if (err instanceof ProfileError) throw new PixProxyError(Errors.XML_NOT_SIGNABLE, ['spi', err.message])
      throw err
    }
    const { appHdr, document, sgntr } = parts
    if (childElements(sgntr).length > 0 || !onlyWhitespaceText(sgntr)) {
      throw new PixProxyError(Errors.XML_NOT_SIGNABLE, ['spi', 'AppHdr/Sgntr must be empty'])
    }
    const signedInfo = SIGNED_INFO_HEAD +
      reference(` URI="#${KEY_INFO_ID}"`, TRANSFORM_EXC, this.keyInfoDigest) +
      reference(' URI=""', TRANSFORM_ENV + TRANSFORM_EXC, sha256b64(canonicalizeElement(appHdr))) +
      reference('', TRANSFORM_EXC, sha256b64(canonicalizeElement(document))) +
      '</ds:SignedInfo>'
    const signature = await this.signatureElement(signedInfo)
    const src = doc.source
    if (sgntr.selfClosing) {
      // `<Sgntr a="1"/>` becomes `<Sgntr a="1">SIG</Sgntr>`: the start tag (attributes, declarations) is kept.
      return src.slice(0, sgntr.startTagEnd - 2) + '>' + signature + `</${sgntr.name}>` + src.slice(sgntr.end)
    }
    return src.slice(0, sgntr.startTagEnd) + signature + src.slice(sgntr.startTagEnd)
  }

  private async signDict (doc: XmlDocument): Promise<string> {
    const root = doc.root
    if (!onlyWhitespaceBeforeFirstElement(root)) {
      throw new PixProxyError(Errors.XML_NOT_SIGNABLE, ['dict', `text before the first element inside <${root.name}>`])
    }
    // BACEN's examples carry an empty <Signature></Signature> placeholder as the first child: it is replaced.
    const first = childElements(root)[0]
    const placeholder = first !== undefined && first.local === 'Signature' && first.ns === root.ns && first.ns !== DSIG_NS &&
      first.children.length === 0
      ? first
      : null
    const signedInfo = SIGNED_INFO_HEAD +
      reference(` URI="#${KEY_INFO_ID}"`, TRANSFORM_EXC, this.keyInfoDigest) +
      reference(' URI=""', TRANSFORM_ENV + TRANSFORM_EXC, sha256b64(canonicalizeDocument(doc, { exclude: placeholder }))) +
      '</ds:SignedInfo>'
    const signature = await this.signatureElement(signedInfo)
    const src = doc.source
    if (placeholder !== null) {
      return src.slice(0, placeholder.start) + signature + src.slice(placeholder.end)
    }
    if (root.selfClosing) {
      // `<Root a="1"/>` becomes `<Root a="1">SIG</Root>`: drop the '/' of the empty-element tag.
      const tagEnd = root.startTagEnd - 2
      return src.slice(0, tagEnd) + '>' + signature + `</${root.name}>` + src.slice(root.end)
    }
    return src.slice(0, root.startTagEnd) + signature + src.slice(root.startTagEnd)
  }

  private async signatureElement (signedInfo: string): Promise<string> {
    const canonical = '<ds:SignedInfo' + XMLNS_DS + signedInfo.slice('<ds:SignedInfo'.length)
    const value = await this.signer.sign(Buffer.from(canonical, 'utf8'))
    return `<ds:Signature${XMLNS_DS}>${signedInfo}<ds:SignatureValue>${value.toString('base64')}</ds:SignatureValue>` +
      `${this.keyInfo}</ds:Signature>`
  }
}

function parseForSigning (xml: string | Uint8Array, limits: XmlLimits, profile: Profile): XmlDocument {
  let doc: XmlDocument
  try {
    doc = parseXml(xml, limits)
  } catch (err) {
    if (err instanceof XmlError) {
      const spec = err.code === 'XML_DTD_FORBIDDEN'
        ? Errors.XML_DTD_FORBIDDEN
        : err.code === 'XML_LIMIT_EXCEEDED' ? Errors.XML_LIMIT_EXCEEDED : Errors.XML_MALFORMED
      throw new PixProxyError(spec, [err.message], { cause: err })
    }
    throw err
  }
  if (doc.signatures.length > 0) throw new PixProxyError(Errors.XML_ALREADY_SIGNED)
  const seen = new Set<string>([KEY_INFO_ID])
  for (const { value } of doc.ids) {
    if (seen.has(value)) {
      throw value === KEY_INFO_ID
        ? new PixProxyError(Errors.XML_NOT_SIGNABLE, [profile, `Id "${KEY_INFO_ID}" is reserved for the signature's KeyInfo`])
        : new PixProxyError(Errors.XML_DUPLICATE_ID, [JSON.stringify(value)])
    }
    seen.add(value)
  }
  return doc
}

/** One-shot convenience: sign `xml` in `profile` with a signer and its certificate. */
export async function signXml (xml: string | Uint8Array, options: XmlSignerOptions & { profile: Profile }): Promise<string> {
  return await new XmlSigner(options).sign(xml, options.profile)
}

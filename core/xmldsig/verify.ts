/**
 * Verifies PIX messages signed in BACEN's profiles and says precisely what is wrong when they are not valid.
 *
 * Nothing here is resolved the generic XMLDSig way (no XPath, no "find the element with this Id anywhere"):
 * every Reference must be one the profile defines and points at the one element the profile names, found by
 * structure. That, the single-signature rule, the strict Envelope layout and the document-wide duplicate-Id check
 * are what close the signature-wrapping family of attacks. Checks run in a fixed order and every result carries
 * the outcome of each digest and of the signature value, so a caller can tell content altered in transit
 * (DIGEST_MISMATCH) from a forged or foreign signature (SIGNATURE_INVALID) from an expired certificate.
 */
import { createHash, timingSafeEqual, verify as rsaVerify } from 'node:crypto'
import { canonicalizeDocument, canonicalizeElement } from './c14n.ts'
import { childElements, DEFAULT_XML_LIMITS, getAttribute, onlyWhitespaceText, parseXml, textContent, XmlError } from './xml.ts'
import type { XmlDocument, XmlElement, XmlLimits } from './xml.ts'
import {
  ALG_EXC_C14N, ALG_RSA_SHA256, ALG_SHA256, detectProfile, DSIG_NS, locateSpi, onlyWhitespaceBeforeFirstElement, PROFILE_REFERENCES, ProfileError
} from './profile.ts'
import type { Profile, ReferenceRule, ReferenceTarget } from './profile.ts'
import type { TrustStore } from './truststore.ts'
import type { Certificate } from '../pki/x509.ts'
import { Errors, PixProxyError } from '../errors.ts'

/** Outcome codes, stable for callers and documented in docs/xmldsig.md. */
export const VerifyCodes = Object.freeze({
  VALID: 'VALID',
  /** Every digest matched; the signature value was not checked (digests-only mode). */
  DIGESTS_VALID: 'DIGESTS_VALID',
  XML_MALFORMED: 'XML_MALFORMED',
  XML_DTD_FORBIDDEN: 'XML_DTD_FORBIDDEN',
  XML_LIMIT_EXCEEDED: 'XML_LIMIT_EXCEEDED',
  XML_DUPLICATE_ID: 'XML_DUPLICATE_ID',
  SIGNATURE_MISSING: 'SIGNATURE_MISSING',
  PROFILE_VIOLATION: 'PROFILE_VIOLATION',
  DIGEST_MISMATCH: 'DIGEST_MISMATCH',
  CERT_UNKNOWN: 'CERT_UNKNOWN',
  SIGNATURE_INVALID: 'SIGNATURE_INVALID',
  CERT_EXPIRED: 'CERT_EXPIRED',
  CERT_NOT_YET_VALID: 'CERT_NOT_YET_VALID'
} as const)

export type VerifyCode = typeof VerifyCodes[keyof typeof VerifyCodes]

export interface ReferenceResult {
  /** The URI attribute as written, or null when the Reference has none. */
  readonly uri: string | null
  readonly target: ReferenceTarget
  readonly digestValid: boolean
  /**
   * SHA-256 of the reference's canonical target as computed here (base64, the form of DigestValue). When the
   * signature is valid this identifies the signed content: equal digests, equal canonical content.
   */
  readonly digest: string
}

export interface SignerInfo {
  readonly issuer: string
  readonly serial: string
  /** Present when the certificate was found in the trust store. */
  readonly subject?: string
  readonly notBefore?: string
  readonly notAfter?: string
  readonly fingerprint256?: string
}

export interface VerifyResult {
  readonly valid: boolean
  readonly code: VerifyCode
  readonly message: string
  readonly profile: Profile | null
  readonly references: readonly ReferenceResult[]
  /** null when the signature value was not checked (an earlier failure, no certificate, digests-only mode). */
  readonly signatureValid: boolean | null
  readonly signer: SignerInfo | null
}

export interface VerifyOptions {
  /** Expected profile; 'auto' (default) takes the one the signature's placement implies. */
  readonly profile?: Profile | 'auto'
  /** Where the signing certificate is looked up by issuer and serial. Required unless `digestsOnly`. */
  readonly trustStore?: TrustStore
  /** Check the references only (for messages signed by a certificate you do not hold). */
  readonly digestsOnly?: boolean
  /** Clock for the certificate validity check. */
  readonly now?: Date
  readonly limits?: XmlLimits
}

function failure (code: VerifyCode, message: string, profile: Profile | null = null): VerifyResult {
  return { valid: false, code, message, profile, references: [], signatureValid: null, signer: null }
}

/** Parses and verifies; never throws for anything about the input. */
export function verifyXml (xml: string | Uint8Array, options: VerifyOptions = {}): VerifyResult {
  let doc: XmlDocument
  try {
    doc = parseXml(xml, options.limits ?? DEFAULT_XML_LIMITS)
  } catch (err) {
    if (err instanceof XmlError) return failure(err.code, err.message)
    throw err
  }
  return verifyDocument(doc, options)
}

interface ParsedReference {
  readonly uri: string | null
  readonly transforms: string[]
  readonly digest: Buffer
  readonly rule: ReferenceRule
}

interface ParsedSignature {
  readonly signedInfo: XmlElement
  readonly signatureValue: Buffer
  readonly keyInfo: XmlElement
  readonly references: ParsedReference[]
  readonly issuer: string
  readonly serial: string
}

class Violation extends Error {}

function violation (message: string): never {
  throw new Violation(message)
}

/** Verifies an already parsed document (the proxy parses once for routing and verification). */
export function verifyDocument (doc: XmlDocument, options: VerifyOptions = {}): VerifyResult {
  const seenIds = new Set<string>()
  for (const { value } of doc.ids) {
    if (seenIds.has(value)) return failure('XML_DUPLICATE_ID', `Id ${JSON.stringify(value)} appears more than once`)
    seenIds.add(value)
  }
  if (doc.signatures.length === 0) {
    const placeholder = childElements(doc.root).find((e) => e.local === 'Signature')
    return failure('SIGNATURE_MISSING', placeholder === undefined
      ? 'the message has no ds:Signature'
      : `the message has a <${placeholder.name}> that is not an XMLDSig signature (namespace ${DSIG_NS})`)
  }
  if (doc.signatures.length > 1) return failure('PROFILE_VIOLATION', `the message has ${doc.signatures.length} ds:Signature elements; the profiles allow one`)
  const sig = doc.signatures[0] as XmlElement

  const placed = detectProfile(doc, sig)
  const wanted = options.profile === undefined || options.profile === 'auto' ? placed : options.profile
  if (wanted === null) return failure('PROFILE_VIOLATION', `ds:Signature under <${sig.parent?.name ?? ''}> is where neither the SPI nor the DICT profile puts it`)
  if (placed !== wanted) {
    return failure('PROFILE_VIOLATION', wanted === 'spi'
      ? 'the SPI profile puts ds:Signature in Envelope/AppHdr/Sgntr'
      : 'the DICT profile puts ds:Signature as the first child of the root element', wanted)
  }
  const profile: Profile = wanted

  let targets: Record<ReferenceTarget, () => string>
  let parsed: ParsedSignature
  try {
    targets = locateTargets(doc, sig, profile)
    parsed = parseSignature(doc, sig, profile)
  } catch (err) {
    if (err instanceof Violation || err instanceof ProfileError) return failure('PROFILE_VIOLATION', err.message, profile)
    throw err
  }

  const references: ReferenceResult[] = parsed.references.map((r) => {
    const actual = createHash('sha256').update(targets[r.rule.target](), 'utf8').digest()
    return { uri: r.uri, target: r.rule.target, digestValid: actual.length === r.digest.length && timingSafeEqual(actual, r.digest), digest: actual.toString('base64') }
  })
  const badRefs = references.filter((r) => !r.digestValid)
  const digestsOk = badRefs.length === 0
  const describeBad = (): string => badRefs.map((r) => `${r.target} (URI ${r.uri === null ? 'absent' : JSON.stringify(r.uri)})`).join(', ')

  const base = { profile, references }
  const signerInfo: SignerInfo = { issuer: parsed.issuer, serial: parsed.serial }

  if (options.digestsOnly === true) {
    return digestsOk
      ? { ...base, valid: true, code: 'DIGESTS_VALID', message: 'every reference digest matches; the signature value was not checked', signatureValid: null, signer: signerInfo }
      : { ...base, valid: false, code: 'DIGEST_MISMATCH', message: `digest mismatch for ${describeBad()}`, signatureValid: null, signer: signerInfo }
  }

  let cert: Certificate | undefined
  try {
    cert = options.trustStore?.find(parsed.issuer, parsed.serial)
  } catch (err) {
    if (!(err instanceof PixProxyError && err.code === Errors.DN_PARSE.code)) throw err
    return { ...base, valid: false, code: 'PROFILE_VIOLATION', message: `X509IssuerName ${JSON.stringify(parsed.issuer)} is not a distinguished name`, signatureValid: null, signer: signerInfo }
  }
  if (cert === undefined) {
    const unknown = `no trusted certificate with issuer ${JSON.stringify(parsed.issuer)} and serial ${parsed.serial}`
    return digestsOk
      ? { ...base, valid: false, code: 'CERT_UNKNOWN', message: unknown, signatureValid: null, signer: signerInfo }
      : { ...base, valid: false, code: 'DIGEST_MISMATCH', message: `digest mismatch for ${describeBad()}; also ${unknown}`, signatureValid: null, signer: signerInfo }
  }
  const fullSigner: SignerInfo = {
    ...signerInfo,
    subject: cert.subjectString,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    fingerprint256: cert.fingerprint256
  }
  const signedInfoC14n = canonicalizeElement(parsed.signedInfo)
  const signatureValid = rsaVerify('sha256', Buffer.from(signedInfoC14n, 'utf8'), cert.publicKey, parsed.signatureValue)
  const withSig = { ...base, signatureValid, signer: fullSigner }

  if (!digestsOk) {
    return { ...withSig, valid: false, code: 'DIGEST_MISMATCH', message: `digest mismatch for ${describeBad()}: the signed content was altered` + (signatureValid ? ' after signing' : '') }
  }
  if (!signatureValid) {
    return { ...withSig, valid: false, code: 'SIGNATURE_INVALID', message: `the signature value does not verify with certificate ${cert.subjectString} (serial ${cert.serialDecimal})` }
  }
  const now = options.now ?? new Date()
  // An Invalid Date compares false both ways and would pass any validity window: a caller bug, so throw.
  if (Number.isNaN(now.getTime())) throw new RangeError('verifyXml: options.now is an invalid Date')
  if (now.getTime() > cert.notAfter.getTime()) {
    return { ...withSig, valid: false, code: 'CERT_EXPIRED', message: `the signature is intact but certificate ${cert.subjectString} (serial ${cert.serialDecimal}) expired at ${cert.notAfter.toISOString()}` }
  }
  if (now.getTime() < cert.notBefore.getTime()) {
    return { ...withSig, valid: false, code: 'CERT_NOT_YET_VALID', message: `the signature is intact but certificate ${cert.subjectString} (serial ${cert.serialDecimal}) is valid only from ${cert.notBefore.toISOString()}` }
  }
  return { ...withSig, valid: true, code: 'VALID', message: 'signature valid' }
}

/** The canonical bytes each profile target denotes, computed lazily (only for References that exist). */
function locateTargets (doc: XmlDocument, sig: XmlElement, profile: Profile): Record<ReferenceTarget, () => string> {
  const keyInfo = (): string => {
    const k = childElements(sig).find((e) => e.local === 'KeyInfo' && e.ns === DSIG_NS)
    return k === undefined ? '' : canonicalizeElement(k)
  }
  if (profile === 'spi') {
    const parts = locateSpi(doc)
    if (sig.parent !== parts.sgntr) violation('ds:Signature is not in the message\'s AppHdr/Sgntr')
    if (childElements(parts.sgntr).length !== 1 || !onlyWhitespaceText(parts.sgntr)) violation('AppHdr/Sgntr must hold the ds:Signature and nothing else')
    const unsupported = (): string => violation('reference target not in the SPI profile')
    return {
      KeyInfo: keyInfo,
      AppHdr: () => canonicalizeElement(parts.appHdr, { exclude: sig }),
      Document: () => canonicalizeElement(parts.document),
      document: unsupported
    }
  }
  const root = doc.root
  if (sig.parent !== root || childElements(root)[0] !== sig) violation('the DICT profile puts ds:Signature as the first child of the root element')
  if (!onlyWhitespaceBeforeFirstElement(root)) violation('text before ds:Signature in the root element')
  const unsupported = (): string => violation('reference target not in the DICT profile')
  return { KeyInfo: keyInfo, AppHdr: unsupported, Document: unsupported, document: () => canonicalizeDocument(doc, { exclude: sig }) }
}

/** Expects `el`'s element children to be exactly `names` in the ds namespace, and no text but white space. */
function dsChildren (el: XmlElement, names: readonly string[], allowMoreOfLast = false): XmlElement[] {
  if (!onlyWhitespaceText(el)) violation(`text inside ds:${el.local}`)
  for (const c of el.children) if (c.type === 'pi') violation(`processing instruction inside ds:${el.local}`)
  const kids = childElements(el)
  const ok = allowMoreOfLast
    ? kids.length >= names.length && kids.every((k, i) => k.ns === DSIG_NS && k.local === names[Math.min(i, names.length - 1)])
    : kids.length === names.length && kids.every((k, i) => k.ns === DSIG_NS && k.local === names[i])
  if (!ok) {
    violation(`ds:${el.local} must contain ${names.map((n) => 'ds:' + n).join(', ')}${allowMoreOfLast ? '…' : ''}; found ${kids.map((k) => k.name).join(', ') || 'nothing'}`)
  }
  return kids
}

function onlyAttributes (el: XmlElement, allowed: readonly string[]): void {
  for (const a of el.attributes) {
    if (a.ns !== '' || !allowed.includes(a.local)) violation(`attribute ${a.name} is not allowed on ds:${el.local}`)
  }
}

function algorithm (el: XmlElement, expected: string): void {
  onlyAttributes(el, ['Algorithm'])
  const alg = getAttribute(el, 'Algorithm')
  if (alg !== expected) violation(`ds:${el.local} Algorithm is ${JSON.stringify(alg ?? null)}; the profile requires ${expected}`)
  // An exc-c14n Transform with an InclusiveNamespaces PrefixList (or anything else) inside is not the profile.
  if (el.children.some((c) => c.type === 'element' || c.type === 'pi') || !onlyWhitespaceText(el)) violation(`ds:${el.local} must be empty`)
}

const MAX_ISSUER_NAME = 2048

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

function base64 (el: XmlElement, what: string): Buffer {
  if (childElements(el).length > 0) violation(`${what} must contain only base64 text`)
  const text = textContent(el).replace(/[ \t\r\n]+/g, '')
  if (text === '' || !B64_RE.test(text)) violation(`${what} is not valid base64`)
  return Buffer.from(text, 'base64')
}

function parseSignature (doc: XmlDocument, sig: XmlElement, profile: Profile): ParsedSignature {
  onlyAttributes(sig, ['Id'])
  const [signedInfo, signatureValue, keyInfo] = dsChildren(sig, ['SignedInfo', 'SignatureValue', 'KeyInfo']) as [XmlElement, XmlElement, XmlElement]
  onlyAttributes(signedInfo, ['Id'])
  const siKids = dsChildren(signedInfo, ['CanonicalizationMethod', 'SignatureMethod', 'Reference'], true)
  algorithm(siKids[0] as XmlElement, ALG_EXC_C14N)
  algorithm(siKids[1] as XmlElement, ALG_RSA_SHA256)
  onlyAttributes(signatureValue, ['Id'])

  // KeyInfo: Id + X509Data/X509IssuerSerial{X509IssuerName, X509SerialNumber}, nothing else.
  onlyAttributes(keyInfo, ['Id'])
  const keyInfoId = getAttribute(keyInfo, 'Id')
  if (keyInfoId === undefined || keyInfoId === '') violation('ds:KeyInfo has no Id for the first Reference to name')
  const [x509Data] = dsChildren(keyInfo, ['X509Data']) as [XmlElement]
  const [issuerSerial] = dsChildren(x509Data, ['X509IssuerSerial']) as [XmlElement]
  const [issuerEl, serialEl] = dsChildren(issuerSerial, ['X509IssuerName', 'X509SerialNumber']) as [XmlElement, XmlElement]
  if (childElements(issuerEl).length > 0 || childElements(serialEl).length > 0) violation('X509IssuerSerial values must be text')
  const issuer = textContent(issuerEl).trim()
  const serial = textContent(serialEl).trim()
  if (issuer === '') violation('X509IssuerName is empty')
  // Real issuer DNs are a few hundred characters; bounding the length bounds the DN parser's work per message.
  if (issuer.length > MAX_ISSUER_NAME) violation(`X509IssuerName is ${issuer.length} characters; at most ${MAX_ISSUER_NAME} are accepted`)
  if (!/^[0-9]{1,200}$/.test(serial)) violation(`X509SerialNumber ${JSON.stringify(serial)} is not a decimal integer`)

  const rules = PROFILE_REFERENCES[profile]
  const refEls = siKids.slice(2)
  if (refEls.length !== rules.length) violation(`the ${profile.toUpperCase()} profile has ${rules.length} References; found ${refEls.length}`)
  const used = new Set<ReferenceRule>()
  const references = refEls.map((ref): ParsedReference => {
    onlyAttributes(ref, ['URI'])
    const uri = getAttribute(ref, 'URI') ?? null
    const rule = rules.find((r) => (r.uri === '#' ? uri !== null && uri.startsWith('#') : r.uri === uri))
    if (rule === undefined) violation(`Reference URI ${uri === null ? '(absent)' : JSON.stringify(uri)} is not in the ${profile.toUpperCase()} profile`)
    if (used.has(rule)) violation(`two References point at the ${rule.target}`)
    used.add(rule)
    if (rule.uri === '#') {
      const id = (uri as string).slice(1)
      const hit = doc.ids.find((e) => e.value === id)
      if (hit === undefined || hit.element !== keyInfo) violation(`Reference ${JSON.stringify(uri)} does not name this signature's ds:KeyInfo`)
    }
    const [transformsEl, digestMethod, digestValue] = dsChildren(ref, ['Transforms', 'DigestMethod', 'DigestValue']) as [XmlElement, XmlElement, XmlElement]
    onlyAttributes(transformsEl, [])
    const transformEls = dsChildren(transformsEl, ['Transform'], true)
    const transforms = transformEls.map((t) => {
      onlyAttributes(t, ['Algorithm'])
      return getAttribute(t, 'Algorithm') ?? ''
    })
    if (transforms.length !== rule.transforms.length || transforms.some((t, i) => t !== rule.transforms[i])) {
      violation(`Reference to the ${rule.target} must have Transforms [${rule.transforms.join(', ')}]; found [${transforms.join(', ')}]`)
    }
    transformEls.forEach((t, i) => algorithm(t, rule.transforms[i] as string))
    algorithm(digestMethod, ALG_SHA256)
    onlyAttributes(digestValue, [])
    const digest = base64(digestValue, `DigestValue of the Reference to the ${rule.target}`)
    if (digest.length !== 32) violation(`DigestValue of the Reference to the ${rule.target} is ${digest.length} bytes; SHA-256 has 32`)
    return { uri, transforms, digest, rule }
  })
  return { signedInfo, signatureValue: base64(signatureValue, 'SignatureValue'), keyInfo, references, issuer, serial }
}

/**
 * A small, strict, non-validating XML 1.0 + Namespaces parser for signed PIX messages.
 *
 * Why not @xmldom/xmldom: profiling showed DOM construction and XPath dominating XMLDSig cost, and a general DOM
 * accepts things a signature verifier must refuse. This parser builds only what exclusive canonicalisation and the
 * BACEN profiles need (elements with resolved namespaces, attributes, text, processing instructions), keeps source
 * offsets so the signer can insert a signature without re-serialising the caller's bytes, and refuses by design:
 * DOCTYPE (hence every entity but the five predefined ones), encodings other than UTF-8, undeclared prefixes,
 * duplicate attributes, and input beyond configured size, depth and attribute limits.
 */

const XML_NS = 'http://www.w3.org/XML/1998/namespace'
const XMLNS_NS = 'http://www.w3.org/2000/xmlns/'

export interface XmlAttribute {
  /** Qualified name as written. */
  readonly name: string
  readonly prefix: string
  readonly local: string
  /** Namespace URI ('' for unprefixed attributes, which are in no namespace). */
  readonly ns: string
  /** Value after entity expansion and attribute-value normalisation. */
  readonly value: string
}

export interface XmlNamespaceDecl {
  /** '' for the default namespace. */
  readonly prefix: string
  readonly uri: string
}

export interface XmlElement {
  readonly type: 'element'
  readonly name: string
  readonly prefix: string
  readonly local: string
  readonly ns: string
  readonly attributes: XmlAttribute[]
  readonly nsDecls: XmlNamespaceDecl[]
  readonly children: XmlNode[]
  readonly parent: XmlElement | null
  readonly depth: number
  /** Offset of '<' of the start tag in the source string. */
  readonly start: number
  /** Offset just after the '>' of the start tag (for `<a/>`, just after '/>'). */
  startTagEnd: number
  /** Offset just after the end tag (equals startTagEnd for an empty-element tag). */
  end: number
  readonly selfClosing: boolean
  /**
   * True when the source text of this element, from `start` to `end`, already is its exclusive canonical form
   * inside an output ancestor that rendered this element's namespace: no attributes or namespace declarations,
   * plain `<name>`/`</name>` tags, text without references other than &amp; and &lt; and without '>' or CR, no
   * comments, PIs or CDATA, and only descendants that are themselves clean and in the same prefix and namespace.
   * The canonicaliser copies such subtrees verbatim; most of a PIX message qualifies.
   */
  clean: boolean
  /** The document's source text (offsets above index into it). */
  readonly src: string
}

export interface XmlText {
  readonly type: 'text'
  readonly value: string
  readonly parent: XmlElement
}

export interface XmlComment {
  readonly type: 'comment'
  readonly value: string
  readonly parent: XmlElement | null
}

export interface XmlProcessingInstruction {
  readonly type: 'pi'
  readonly target: string
  readonly data: string
  readonly parent: XmlElement | null
}

export type XmlNode = XmlElement | XmlText | XmlComment | XmlProcessingInstruction

export interface XmlDocument {
  readonly source: string
  readonly root: XmlElement
  /** Comments and processing instructions before the root element. */
  readonly prolog: Array<XmlComment | XmlProcessingInstruction>
  /** Comments and processing instructions after the root element. */
  readonly epilog: Array<XmlComment | XmlProcessingInstruction>
  /** Every attribute named Id, ID, id (no namespace) or xml:id, in document order. */
  readonly ids: Array<{ value: string, element: XmlElement, attribute: XmlAttribute }>
  /** Every element in the XMLDSig namespace whose local name is Signature, in document order. */
  readonly signatures: XmlElement[]
}

export interface XmlLimits {
  /** Maximum input size in bytes (UTF-8). */
  readonly maxBytes: number
  /** Maximum element nesting depth (the root is depth 1). */
  readonly maxDepth: number
  /** Maximum attributes (including namespace declarations) on one element. */
  readonly maxAttributes: number
  /** Maximum number of elements. */
  readonly maxElements: number
}

export const DEFAULT_XML_LIMITS: XmlLimits = Object.freeze({
  maxBytes: 4 * 1024 * 1024,
  maxDepth: 64,
  maxAttributes: 64,
  maxElements: 100_000
})

export type XmlErrorCode = 'XML_MALFORMED' | 'XML_DTD_FORBIDDEN' | 'XML_LIMIT_EXCEEDED'

/** Thrown for input that is not acceptable XML; `code` says which rule it broke, `offset` where. */
export class XmlError extends Error {
  readonly code: XmlErrorCode
  readonly offset: number

  constructor (code: XmlErrorCode, message: string, offset: number) {
    super(offset >= 0 ? `${message} (at offset ${offset})` : message)
    this.name = 'XmlError'
    this.code = code
    this.offset = offset
  }
}

const DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#'

// XML 1.0 (5th ed.) NameStartChar / NameChar, without ':' (namespace-aware names are split on it). The classes hold
// ranges of combining marks (\u0300-\u036F) on purpose: no-misleading-character-class is disabled on them below.
const NCNAME_START = 'A-Z_a-z\\u00C0-\\u00D6\\u00D8-\\u00F6\\u00F8-\\u02FF\\u0370-\\u037D\\u037F-\\u1FFF\\u200C-\\u200D' +
  '\\u2070-\\u218F\\u2C00-\\u2FEF\\u3001-\\uD7FF\\uF900-\\uFDCF\\uFDF0-\\uFFFD\\u{10000}-\\u{EFFFF}'
const NCNAME_CHAR = NCNAME_START + '\\-.0-9\\u00B7\\u0300-\\u036F\\u203F-\\u2040'
/** A QName at the current position: prefix and local part as groups. Sticky: matches only at lastIndex. */
// eslint-disable-next-line no-misleading-character-class -- NameChar's combining-mark ranges, as the spec lists them
const QNAME_RE = new RegExp(`([${NCNAME_START}][${NCNAME_CHAR}]*)(?::([${NCNAME_START}][${NCNAME_CHAR}]*))?`, 'uy')
// eslint-disable-next-line no-misleading-character-class -- NameChar's combining-mark ranges, as the spec lists them
const PI_TARGET_RE = new RegExp(`[${NCNAME_START}][${NCNAME_CHAR}]*`, 'uy')
// Characters XML 1.0 forbids anywhere in a document (lone surrogates are caught by isWellFormed()).
const FORBIDDEN_CHARS_RE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/ // eslint-disable-line no-control-regex
const WS_RE = /^[ \t\r\n]*$/

const ASCII_NAME_START = new Uint8Array(128)
const ASCII_NAME_CHAR = new Uint8Array(128)
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c)
  ASCII_NAME_START[c] = /[A-Za-z_]/.test(ch) ? 1 : 0
  ASCII_NAME_CHAR[c] = /[A-Za-z_0-9.-]/.test(ch) ? 1 : 0
}

/** Shared by every element that declares no namespace (never mutated: declarations are collected before). */
const NO_DECLS: XmlNamespaceDecl[] = Object.freeze([]) as unknown as XmlNamespaceDecl[]

/** A reference whose canonical form differs from its source form (c14n writes only &amp; &lt; &gt; &#xD;). */
const NOT_CANONICAL_REF_RE = /&(?!amp;|lt;)/

const PREDEFINED_ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', apos: '\'', quot: '"' }

function isWs (c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d
}

function isXmlChar (cp: number): boolean {
  return cp === 0x9 || cp === 0xa || cp === 0xd || (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff)
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false })

/** Decodes bytes as UTF-8 (a BOM is dropped); invalid UTF-8 is an XmlError, never a replacement character. */
function decodeUtf8 (input: Uint8Array, limits: XmlLimits = DEFAULT_XML_LIMITS): string {
  if (input.byteLength > limits.maxBytes) {
    throw new XmlError('XML_LIMIT_EXCEEDED', `document is ${input.byteLength} bytes, the limit is ${limits.maxBytes}`, -1)
  }
  try {
    return utf8.decode(input)
  } catch {
    throw new XmlError('XML_MALFORMED', 'document is not valid UTF-8', -1)
  }
}

/**
 * Parses a complete XML document.
 * @throws XmlError on anything that is not well-formed, namespace-well-formed, DTD-free UTF-8 within `limits`.
 */
export function parseXml (input: string | Uint8Array, limits: XmlLimits = DEFAULT_XML_LIMITS): XmlDocument {
  let src: string
  if (typeof input === 'string') {
    // Length in UTF-16 units is at most the UTF-8 byte count, so this is a cheap pre-check; the exact one follows.
    if (input.length > limits.maxBytes || (input.length * 3 > limits.maxBytes && Buffer.byteLength(input) > limits.maxBytes)) {
      throw new XmlError('XML_LIMIT_EXCEEDED', `document exceeds ${limits.maxBytes} bytes`, -1)
    }
    src = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input
  } else {
    src = decodeUtf8(input, limits)
  }
  return new Parser(src, limits).parse()
}

class Parser {
  private readonly s: string
  private readonly limits: XmlLimits
  private pos = 0
  private elementCount = 0
  private readonly ids: Array<{ value: string, element: XmlElement, attribute: XmlAttribute }> = []
  private readonly signatures: XmlElement[] = []

  constructor (s: string, limits: XmlLimits) {
    this.s = s
    this.limits = limits
  }

  private fail (message: string, at = this.pos, code: XmlErrorCode = 'XML_MALFORMED'): never {
    throw new XmlError(code, message, at)
  }

  parse (): XmlDocument {
    const s = this.s
    if (!s.isWellFormed()) this.fail('document contains an unpaired surrogate', -1)
    const bad = FORBIDDEN_CHARS_RE.exec(s)
    if (bad !== null) this.fail(`character U+${bad[0].charCodeAt(0).toString(16).padStart(4, '0')} is not allowed in XML`, bad.index)

    if (s.startsWith('<?xml') && (s.length === 5 || isWs(s.charCodeAt(5)) || s.charCodeAt(5) === 0x3f)) this.xmlDecl()

    const prolog: Array<XmlComment | XmlProcessingInstruction> = []
    const epilog: Array<XmlComment | XmlProcessingInstruction> = []
    let root: XmlElement | null = null
    while (true) {
      this.skipWs()
      if (this.pos >= s.length) break
      if (s.charCodeAt(this.pos) !== 0x3c) this.fail(root === null ? 'text before the root element' : 'text after the root element')
      const next = s.charCodeAt(this.pos + 1)
      if (next === 0x3f) {
        (root === null ? prolog : epilog).push(this.pi(null))
      } else if (next === 0x21) {
        if (s.startsWith('<!--', this.pos)) {
          (root === null ? prolog : epilog).push(this.comment(null))
        } else if (s.startsWith('<!DOCTYPE', this.pos) || s.startsWith('<!ENTITY', this.pos)) {
          this.fail('DOCTYPE and entity declarations are not accepted', this.pos, 'XML_DTD_FORBIDDEN')
        } else {
          this.fail('unexpected markup outside the root element')
        }
      } else {
        if (root !== null) this.fail('a second root element')
        root = this.element(null)
      }
    }
    if (root === null) this.fail('no root element', -1)
    return { source: s, root, prolog, epilog, ids: this.ids, signatures: this.signatures }
  }

  private xmlDecl (): void {
    const s = this.s
    const end = s.indexOf('?>', 5)
    if (end < 0) this.fail('unterminated XML declaration', 0)
    const body = s.slice(5, end)
    const m = /^\s+version\s*=\s*(["'])1\.0\1(?:\s+encoding\s*=\s*(["'])([A-Za-z][A-Za-z0-9._-]*)\2)?(?:\s+standalone\s*=\s*(["'])(?:yes|no)\4)?\s*$/.exec(body)
    if (m === null) this.fail('malformed XML declaration (only version 1.0 is accepted)', 0)
    const enc = m[3]
    if (enc !== undefined && enc.toLowerCase() !== 'utf-8') this.fail(`encoding ${enc} is not accepted: send UTF-8`, 0)
    this.pos = end + 2
  }

  private skipWs (): void {
    const s = this.s
    while (this.pos < s.length && isWs(s.charCodeAt(this.pos))) this.pos++
  }

  private comment (parent: XmlElement | null): XmlComment {
    const start = this.pos
    const end = this.s.indexOf('-->', start + 4)
    if (end < 0) this.fail('unterminated comment', start)
    const value = this.s.slice(start + 4, end)
    if (value.includes('--') || value.endsWith('-')) this.fail('"--" is not allowed inside a comment', start)
    this.pos = end + 3
    return { type: 'comment', value: normaliseNewlines(value), parent }
  }

  private pi (parent: XmlElement | null): XmlProcessingInstruction {
    const start = this.pos
    PI_TARGET_RE.lastIndex = start + 2
    const m = PI_TARGET_RE.exec(this.s)
    if (m === null) this.fail('malformed processing instruction', start)
    const target = m[0]
    if (target.toLowerCase() === 'xml') this.fail('an XML declaration is only allowed at the very start', start)
    const end = this.s.indexOf('?>', start + 2 + target.length)
    if (end < 0) this.fail('unterminated processing instruction', start)
    let dataStart = start + 2 + target.length
    if (dataStart < end && !isWs(this.s.charCodeAt(dataStart))) this.fail('malformed processing instruction target', start)
    while (dataStart < end && isWs(this.s.charCodeAt(dataStart))) dataStart++
    this.pos = end + 2
    return { type: 'pi', target, data: normaliseNewlines(this.s.slice(dataStart, end)), parent }
  }

  private qname (what: string): { name: string, prefix: string, local: string } {
    // ASCII fast path (every name in PIX messages); anything else goes through the full Unicode grammar.
    const s = this.s
    const start = this.pos
    let i = start
    let colon = -1
    let c = s.charCodeAt(i)
    if (c < 0x80 && ASCII_NAME_START[c] === 1) {
      i++
      while (true) {
        c = s.charCodeAt(i)
        if (c < 0x80 && ASCII_NAME_CHAR[c] === 1) { i++; continue }
        if (c === 0x3a && colon < 0) {
          const n = s.charCodeAt(i + 1)
          if (n < 0x80 && ASCII_NAME_START[n] === 1) { colon = i; i += 2; continue }
        }
        break
      }
      // Stopped on ASCII that cannot continue a name: the fast path decided. Otherwise fall through.
      if (!(c >= 0x80) && c !== 0x3a) {
        this.pos = i
        const name = s.slice(start, i)
        return colon < 0
          ? { name, prefix: '', local: name }
          : { name, prefix: s.slice(start, colon), local: s.slice(colon + 1, i) }
      }
    }
    QNAME_RE.lastIndex = start
    const m = QNAME_RE.exec(s)
    if (m === null) this.fail(`expected ${what} name`)
    this.pos = start + m[0].length
    // A second ':' would make the QName invalid under Namespaces in XML.
    if (s.charCodeAt(this.pos) === 0x3a) this.fail(`${what} name ${m[0]}: has more than one colon`)
    return m[2] === undefined
      ? { name: m[0], prefix: '', local: m[1] as string }
      : { name: m[0], prefix: m[1] as string, local: m[2] }
  }

  /** Parses an element and its content; `this.pos` is at '<'. Iterative, so depth costs no stack. */
  private element (parentOfRoot: null): XmlElement {
    const s = this.s
    const stack: XmlElement[] = []
    let current: XmlElement | null = null
    const root = this.startTag(parentOfRoot)
    if (root.selfClosing) return root
    current = root
    stack.push(root)
    while (current !== null) {
      const lt = s.indexOf('<', this.pos)
      if (lt < 0) this.fail(`element <${current.name}> is not closed`, current.start)
      if (lt > this.pos) this.text(current, this.pos, lt)
      this.pos = lt
      const c1 = s.charCodeAt(lt + 1)
      if (c1 === 0x2f) { // '</'
        // The end tag must repeat the start tag's name exactly: compare in place instead of re-scanning a name.
        const name = current.name
        const after = s.charCodeAt(lt + 2 + name.length)
        if (!s.startsWith(name, lt + 2) || !(after === 0x3e || isWs(after))) {
          this.pos = lt + 2
          const q = this.qname('end tag')
          this.fail(`end tag </${q.name}> does not match <${name}>`, lt)
        }
        this.pos = lt + 2 + name.length
        if (after !== 0x3e) {
          current.clean = false
          this.skipWs()
          if (s.charCodeAt(this.pos) !== 0x3e) this.fail('malformed end tag', lt)
        }
        this.pos++
        current.end = this.pos
        stack.pop()
        const closed: XmlElement = current
        current = stack.length > 0 ? stack[stack.length - 1] as XmlElement : null
        if (current !== null && current.clean && (!closed.clean || closed.prefix !== current.prefix || closed.ns !== current.ns)) {
          current.clean = false
        }
      } else if (c1 === 0x21) { // '<!'
        current.clean = false
        if (s.startsWith('<!--', lt)) {
          current.children.push(this.comment(current))
        } else if (s.startsWith('<![CDATA[', lt)) {
          const end = s.indexOf(']]>', lt + 9)
          if (end < 0) this.fail('unterminated CDATA section', lt)
          this.pushText(current, normaliseNewlines(s.slice(lt + 9, end)))
          this.pos = end + 3
        } else if (s.startsWith('<!DOCTYPE', lt) || s.startsWith('<!ENTITY', lt)) {
          this.fail('DOCTYPE and entity declarations are not accepted', lt, 'XML_DTD_FORBIDDEN')
        } else {
          this.fail('unexpected markup', lt)
        }
      } else if (c1 === 0x3f) { // '<?'
        current.clean = false
        current.children.push(this.pi(current))
      } else {
        const child = this.startTag(current)
        current.children.push(child)
        if (child.selfClosing) {
          current.clean = false
        } else {
          stack.push(child)
          current = child
        }
      }
    }
    return root
  }

  private startTag (parent: XmlElement | null): XmlElement {
    const s = this.s
    const start = this.pos
    const depth = parent === null ? 1 : parent.depth + 1
    if (depth > this.limits.maxDepth) this.fail(`elements nested deeper than ${this.limits.maxDepth}`, start, 'XML_LIMIT_EXCEEDED')
    if (++this.elementCount > this.limits.maxElements) this.fail(`more than ${this.limits.maxElements} elements`, start, 'XML_LIMIT_EXCEEDED')
    this.pos++
    const q = this.qname('element')
    // Fast path: `<name>` with nothing else, the shape of nearly every element in a PIX message.
    if (s.charCodeAt(this.pos) === 0x3e && q.prefix === '' && parent !== null) {
      this.pos++
      return {
        type: 'element',
        name: q.name,
        prefix: '',
        local: q.local,
        ns: parent.prefix === '' ? parent.ns : (lookupNs(parent, '') ?? ''),
        attributes: [],
        nsDecls: NO_DECLS,
        children: [],
        parent,
        depth,
        start,
        startTagEnd: this.pos,
        end: this.pos,
        selfClosing: false,
        clean: true,
        src: s
      }
    }
    const rawAttrs: Array<{ name: string, prefix: string, local: string, value: string, at: number }> = []
    const nsDecls: XmlNamespaceDecl[] = []
    let selfClosing = false
    while (true) {
      const hadWs = this.pos < s.length && isWs(s.charCodeAt(this.pos))
      this.skipWs()
      const c = s.charCodeAt(this.pos)
      if (c === 0x3e) { this.pos++; break }
      if (c === 0x2f) {
        if (s.charCodeAt(this.pos + 1) !== 0x3e) this.fail('malformed empty-element tag')
        this.pos += 2
        selfClosing = true
        break
      }
      if (Number.isNaN(c)) this.fail(`start tag <${q.name}> is not closed`, start)
      if (!hadWs) this.fail('attributes must be separated by white space')
      const at = this.pos
      const a = this.qname('attribute')
      this.skipWs()
      if (s.charCodeAt(this.pos) !== 0x3d) this.fail(`attribute ${a.name} has no value`)
      this.pos++
      this.skipWs()
      const value = this.attrValue()
      if (nsDecls.length + rawAttrs.length >= this.limits.maxAttributes) {
        this.fail(`more than ${this.limits.maxAttributes} attributes on <${q.name}>`, at, 'XML_LIMIT_EXCEEDED')
      }
      if (a.prefix === 'xmlns' || (a.prefix === '' && a.local === 'xmlns')) {
        const prefix = a.prefix === '' ? '' : a.local
        if (nsDecls.some((d) => d.prefix === prefix)) this.fail(`namespace ${prefix === '' ? 'xmlns' : 'xmlns:' + prefix} declared twice`, at)
        this.checkNsDecl(prefix, value, at)
        nsDecls.push({ prefix, uri: value })
      } else {
        if (rawAttrs.some((r) => r.name === a.name)) this.fail(`attribute ${a.name} appears twice`, at)
        rawAttrs.push({ ...a, value, at })
      }
    }
    let ns: string
    if (q.prefix === '') {
      ns = lookupIn(nsDecls, parent, '') ?? ''
    } else if (q.prefix === 'xml') {
      ns = XML_NS
    } else if (q.prefix === 'xmlns') {
      this.fail('the xmlns prefix cannot name an element', start)
    } else {
      const u = lookupIn(nsDecls, parent, q.prefix)
      if (u === undefined) this.fail(`prefix ${q.prefix} of <${q.name}> is not declared`, start)
      ns = u
    }
    const el: XmlElement = {
      type: 'element',
      name: q.name,
      prefix: q.prefix,
      local: q.local,
      ns,
      attributes: [],
      nsDecls,
      children: [],
      parent,
      depth,
      start,
      startTagEnd: this.pos,
      end: this.pos,
      selfClosing,
      // `<name>` exactly: nothing between the name and '>'.
      clean: !selfClosing && rawAttrs.length === 0 && nsDecls.length === 0 && this.pos === start + q.name.length + 2,
      src: s
    }
    for (const r of rawAttrs) {
      let ans = ''
      if (r.prefix === 'xml') {
        ans = XML_NS
      } else if (r.prefix !== '') {
        const u = lookupIn(nsDecls, parent, r.prefix)
        if (u === undefined) this.fail(`prefix ${r.prefix} of attribute ${r.name} is not declared`, r.at)
        ans = u
      }
      if (ans !== '' && el.attributes.some((x) => x.ns === ans && x.local === r.local)) {
        this.fail(`attribute {${ans}}${r.local} appears twice`, r.at)
      }
      const attr: XmlAttribute = { name: r.name, prefix: r.prefix, local: r.local, ns: ans, value: r.value }
      el.attributes.push(attr)
      if ((ans === '' && (r.local === 'Id' || r.local === 'ID' || r.local === 'id')) || (ans === XML_NS && r.local === 'id')) {
        this.ids.push({ value: r.value, element: el, attribute: attr })
      }
    }
    if (ns === DSIG_NS && q.local === 'Signature') this.signatures.push(el)
    return el
  }

  private checkNsDecl (prefix: string, uri: string, at: number): void {
    if (prefix === 'xml') {
      if (uri !== XML_NS) this.fail('the xml prefix cannot be rebound', at)
      return
    }
    if (prefix === 'xmlns') this.fail('the xmlns prefix cannot be declared', at)
    if (uri === XML_NS || uri === XMLNS_NS) this.fail(`namespace ${uri} cannot be bound to another prefix`, at)
    // Namespaces in XML 1.0 has no prefix undeclaration (xmlns:p=""); only the default may be reset.
    if (prefix !== '' && uri === '') this.fail(`prefix ${prefix} cannot be undeclared in XML 1.0`, at)
  }

  private attrValue (): string {
    const s = this.s
    const q = s.charCodeAt(this.pos)
    if (q !== 0x22 && q !== 0x27) this.fail('attribute value must be quoted')
    const start = this.pos + 1
    const end = s.indexOf(q === 0x22 ? '"' : '\'', start)
    if (end < 0) this.fail('unterminated attribute value')
    const raw = s.slice(start, end)
    this.pos = end + 1
    if (raw.includes('<')) this.fail('"<" is not allowed in an attribute value', start)
    // Attribute-value normalisation (XML 1.0 §3.3.3, CDATA type): literal white space becomes a space, CRLF first
    // collapses to one; characters from references are kept as they are.
    let v = raw.includes('\r') ? raw.replace(/\r\n?/g, ' ') : raw
    if (/[\t\n]/.test(v)) v = v.replace(/[\t\n]/g, ' ')
    return v.includes('&') ? this.expandRefs(v, start) : v
  }

  private text (parent: XmlElement, from: number, to: number): void {
    let raw = this.s.slice(from, to)
    if (raw.includes('>')) {
      if (raw.includes(']]>')) this.fail('"]]>" is not allowed in text', from + raw.indexOf(']]>'))
      parent.clean = false
    }
    if (raw.includes('\r')) {
      raw = normaliseNewlines(raw)
      parent.clean = false
    }
    if (raw.includes('&')) {
      if (parent.clean && NOT_CANONICAL_REF_RE.test(raw)) parent.clean = false
      raw = this.expandRefs(raw, from)
    }
    this.pushText(parent, raw)
  }

  /** Adjacent text (including CDATA) is one node, as in the XPath data model c14n is defined on. */
  private pushText (parent: XmlElement, value: string): void {
    if (value === '') return
    const last = parent.children[parent.children.length - 1]
    if (last !== undefined && last.type === 'text') {
      parent.children[parent.children.length - 1] = { type: 'text', value: last.value + value, parent }
    } else {
      parent.children.push({ type: 'text', value, parent })
    }
  }

  private expandRefs (v: string, at: number): string {
    return v.replace(/&(?:(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z_][A-Za-z0-9._-]*);)?/g, (_all, ref: string | undefined) => {
      if (ref === undefined) this.fail('"&" must start a character or entity reference', at)
      if (ref.charCodeAt(0) === 0x23) {
        const cp = ref.charCodeAt(1) === 0x78 ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10)
        if (!isXmlChar(cp)) this.fail(`&${ref}; is not a valid character reference`, at)
        return String.fromCodePoint(cp)
      }
      const e = PREDEFINED_ENTITIES[ref]
      if (e === undefined) this.fail(`entity &${ref}; is not defined (DTDs are not accepted)`, at, 'XML_DTD_FORBIDDEN')
      return e
    })
  }
}

function lookupIn (decls: readonly XmlNamespaceDecl[], parent: XmlElement | null, prefix: string): string | undefined {
  for (let i = 0; i < decls.length; i++) {
    const d = decls[i] as XmlNamespaceDecl
    if (d.prefix === prefix) return d.uri
  }
  return parent === null ? undefined : lookupNs(parent, prefix)
}

function normaliseNewlines (v: string): string {
  return v.includes('\r') ? v.replace(/\r\n?/g, '\n') : v
}

/** The namespace URI bound to `prefix` ('' = default) in scope at `el`, or undefined. */
export function lookupNs (el: XmlElement, prefix: string): string | undefined {
  if (prefix === 'xml') return XML_NS
  for (let e: XmlElement | null = el; e !== null; e = e.parent) {
    for (const d of e.nsDecls) if (d.prefix === prefix) return d.uri
  }
  return undefined
}

/** Element children of `el`, in order. */
export function childElements (el: XmlElement): XmlElement[] {
  const out: XmlElement[] = []
  for (const c of el.children) if (c.type === 'element') out.push(c)
  return out
}

/** True when `el` has no text content other than white space among its direct children. */
export function onlyWhitespaceText (el: XmlElement): boolean {
  for (const c of el.children) if (c.type === 'text' && !WS_RE.test(c.value)) return false
  return true
}

/** Concatenated text of the direct text children of `el`. */
export function textContent (el: XmlElement): string {
  let t = ''
  for (const c of el.children) if (c.type === 'text') t += c.value
  return t
}

export function getAttribute (el: XmlElement, local: string, ns = ''): string | undefined {
  for (const a of el.attributes) if (a.local === local && a.ns === ns) return a.value
  return undefined
}

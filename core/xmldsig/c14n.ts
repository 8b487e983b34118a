/**
 * Exclusive XML Canonicalization 1.0 without comments (http://www.w3.org/2001/10/xml-exc-c14n#), the only
 * canonicalisation BACEN's profiles use, over the tree from ./xml.ts.
 *
 * Exclusive c14n renders on each output element only the namespace declarations that element or its attributes
 * visibly use and that its nearest output ancestor has not already rendered with the same URI, so the canonical
 * bytes of a subtree do not depend on where it sits. Since the parser has already resolved the namespace of every
 * element and attribute, "visibly utilised" needs no scope lookups here: the element's own prefix and its
 * attributes' prefixes are the whole set. No InclusiveNamespaces PrefixList is supported (BACEN does not use one and
 * the verifier refuses it as a profile violation).
 */
import type { XmlDocument, XmlElement } from './xml.ts'

export interface C14nOptions {
  /** A subtree left out of the output, as the enveloped-signature transform does with the ds:Signature. */
  readonly exclude?: XmlElement | null
}

/** Canonical form of the subtree rooted at `apex` (the apex has no output ancestors). */
export function canonicalizeElement (apex: XmlElement, options: C14nOptions = {}): string {
  const out: string[] = []
  writeElement(apex, new Map(), options.exclude ?? null, out)
  return out.join('')
}

/**
 * Canonical form of a whole document: processing instructions before the root each followed by a newline, the
 * root, then those after it each preceded by one. Comments are dropped, as for a same-document `URI=""` reference.
 */
export function canonicalizeDocument (doc: XmlDocument, options: C14nOptions = {}): string {
  const out: string[] = []
  for (const n of doc.prolog) {
    if (n.type === 'pi') out.push(pi(n.target, n.data), '\n')
  }
  writeElement(doc.root, new Map(), options.exclude ?? null, out)
  for (const n of doc.epilog) {
    if (n.type === 'pi') out.push('\n', pi(n.target, n.data))
  }
  return out.join('')
}

function pi (target: string, data: string): string {
  return data === '' ? `<?${target}?>` : `<?${target} ${data}?>`
}

/**
 * `rendered` maps prefix ('' = default) to the URI the nearest output ancestor rendered for it. It is restored on
 * the way out so siblings see their parent's view; recursion depth is bounded by the parser's depth limit.
 */
function writeElement (el: XmlElement, rendered: Map<string, string>, exclude: XmlElement | null, out: string[]): void {
  let tag = '<' + el.name
  let saved: Array<[string, string | undefined]> | null = null

  // Namespace axis: the element's prefix, then its attributes' prefixes (xml is never declared).
  const needed: Array<[string, string]> = []
  const elUri = el.ns
  if ((rendered.get(el.prefix) ?? '') !== elUri || (el.prefix !== '' && !rendered.has(el.prefix))) {
    needed.push([el.prefix, elUri])
  }
  const attrs = el.attributes
  for (let i = 0; i < attrs.length; i++) {
    const a = attrs[i] as (typeof attrs)[number]
    if (a.prefix === '' || a.prefix === 'xml') continue
    if (rendered.get(a.prefix) === a.ns) continue
    if (a.prefix === el.prefix && a.ns === elUri) continue
    if (needed.some((n) => n[0] === a.prefix)) continue
    needed.push([a.prefix, a.ns])
  }
  if (needed.length > 0) {
    if (needed.length > 1) needed.sort((x, y) => compareCodePoints(x[0], y[0]))
    saved = []
    for (const [prefix, uri] of needed) {
      tag += prefix === '' ? ` xmlns="${escapeAttr(uri)}"` : ` xmlns:${prefix}="${escapeAttr(uri)}"`
      saved.push([prefix, rendered.get(prefix)])
      rendered.set(prefix, uri)
    }
  }

  // Attribute axis: by namespace URI, then local name ('' sorts first, so unqualified attributes lead).
  if (attrs.length > 0) {
    const sorted = attrs.length === 1 ? attrs : [...attrs].sort(compareAttrs)
    for (let i = 0; i < sorted.length; i++) {
      const a = sorted[i] as (typeof sorted)[number]
      tag += ` ${a.name}="${escapeAttr(a.value)}"`
    }
  }
  out.push(tag + '>')

  const children = el.children
  for (let i = 0; i < children.length; i++) {
    const c = children[i] as (typeof children)[number]
    switch (c.type) {
      case 'text': out.push(escapeText(c.value)); break
      case 'element':
        if (c === exclude) break
        // A clean subtree (see XmlElement.clean) whose namespace the output ancestors already rendered is its
        // own canonical form: copy the source instead of walking it, unless the excluded node is inside.
        if (c.clean && (c.prefix === '' ? (rendered.get('') ?? '') : rendered.get(c.prefix)) === c.ns && (exclude === null || exclude.start < c.start || exclude.start >= c.end)) {
          out.push(c.src.slice(c.start, c.end))
        } else {
          writeElement(c, rendered, exclude, out)
        }
        break
      case 'pi': out.push(pi(c.target, c.data)); break
      case 'comment': break
    }
  }
  out.push('</' + el.name + '>')

  if (saved !== null) {
    for (const [prefix, prev] of saved) {
      if (prev === undefined) rendered.delete(prefix)
      else rendered.set(prefix, prev)
    }
  }
}

function compareAttrs (x: { ns: string, local: string }, y: { ns: string, local: string }): number {
  return x.ns !== y.ns ? compareCodePoints(x.ns, y.ns) : compareCodePoints(x.local, y.local)
}

/**
 * c14n orders by Unicode code point; JS compares UTF-16 code units, which disagree only where a surrogate
 * (an astral character) meets U+E000–U+FFFF. At the first differing unit, shift both into code point order.
 */
function compareCodePoints (a: string, b: string): number {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000
    }
    return x - y
  }
  return a.length - b.length
}

const TEXT_RE = /[&<>\r]/
const ATTR_RE = /[&<"\t\n\r]/

/** c14n text escaping: & < > and carriage return (which can only come from a character reference). */
export function escapeText (v: string): string {
  if (!TEXT_RE.test(v)) return v
  return v.replace(/[&<>\r]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&#xD;'))
}

/** c14n attribute escaping: & < " and the three white-space characters a normalised value can still hold. */
function escapeAttr (v: string): string {
  if (!ATTR_RE.test(v)) return v
  return v.replace(/[&<"\t\n\r]/g, (c) => {
    switch (c) {
      case '&': return '&amp;'
      case '<': return '&lt;'
      case '"': return '&quot;'
      case '\t': return '&#x9;'
      case '\n': return '&#xA;'
      default: return '&#xD;'
    }
  })
}

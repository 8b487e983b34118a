/**
 * Small helpers to read the simulator's XML input (parsed with the project's strict parser, so DOCTYPEs, entities
 * and oversize input are refused exactly as the proxy refuses them) and to write its XML output.
 */
import { childElements, textContent } from '../../core/xmldsig/xml.ts'
import type { XmlElement } from '../../core/xmldsig/xml.ts'
import { escapeXml } from '../../core/pix/ids.ts'

/** The first child element with this local name, or undefined. */
export function child (el: XmlElement | undefined, local: string): XmlElement | undefined {
  if (el === undefined) return undefined
  return childElements(el).find((c) => c.local === local)
}

/** Text of the element at `path` (local names) below `el`, trimmed; undefined when any step is missing. */
export function text (el: XmlElement | undefined, ...path: string[]): string | undefined {
  let cur = el
  for (const p of path) cur = child(cur, p)
  return cur === undefined ? undefined : textContent(cur).trim()
}

/** Every descendant element with this local name, in document order. */
export function descendants (el: XmlElement, local: string): XmlElement[] {
  const out: XmlElement[] = []
  const walk = (e: XmlElement): void => {
    for (const c of childElements(e)) {
      if (c.local === local) out.push(c)
      walk(c)
    }
  }
  walk(el)
  return out
}

/** A value for {@link xml}: text, a nested element list, or nothing (element omitted). */
export type XmlValue = string | number | boolean | XmlTree | undefined | null
export type XmlTree = ReadonlyArray<readonly [string, XmlValue]>

/**
 * Serialises an element list as XML without indentation. Undefined/null values are omitted, which is how
 * optional DICT fields disappear from responses.
 */
function xml (tree: XmlTree): string {
  let out = ''
  for (const [name, value] of tree) {
    if (value === undefined || value === null) continue
    out += typeof value === 'object'
      ? `<${name}>${xml(value)}</${name}>`
      : `<${name}>${escapeXml(String(value))}</${name}>`
  }
  return out
}

export function xmlDocument (root: string, tree: XmlTree, attrs = ''): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root}${attrs}>${xml(tree)}</${root}>\n`
}

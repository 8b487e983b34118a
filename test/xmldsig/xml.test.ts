import t from 'tap'
import type { Test } from 'tap'
import { parseXml, XmlError, DEFAULT_XML_LIMITS, lookupNs, childElements } from '../../core/xmldsig/xml.ts'
import type { XmlErrorCode } from '../../core/xmldsig/xml.ts'

function rejects (t: Test, xml: string | Uint8Array, code: XmlErrorCode, pattern?: RegExp, limits = DEFAULT_XML_LIMITS): void {
  try {
    parseXml(xml, limits)
    t.fail(`accepted: ${typeof xml === 'string' ? xml.slice(0, 80) : '<bytes>'}`)
  } catch (err) {
    t.ok(err instanceof XmlError, 'an XmlError')
    t.equal((err as XmlError).code, code, (err as Error).message)
    if (pattern !== undefined) t.match((err as Error).message, pattern)
  }
}

t.test('DOCTYPE, entity declarations and undefined entities are refused', async (t) => {
  rejects(t, '<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', 'XML_DTD_FORBIDDEN')
  rejects(t, '<?xml version="1.0"?>\n<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>', 'XML_DTD_FORBIDDEN')
  // billion laughs needs a DTD; without one the reference is simply undefined
  rejects(t, '<a>&lol9;</a>', 'XML_DTD_FORBIDDEN', /not defined/)
  rejects(t, '<a b="&ext;"/>', 'XML_DTD_FORBIDDEN')
  rejects(t, '<a><!DOCTYPE b></a>', 'XML_DTD_FORBIDDEN')
  rejects(t, '<a><!ENTITY b "c"></a>', 'XML_DTD_FORBIDDEN')
})

t.test('predefined entities and character references expand', async (t) => {
  const doc = parseXml('<a b="&lt;&gt;&amp;&apos;&quot;&#65;&#x42;">&lt;x&gt;&#x1F600;&#233;</a>')
  t.equal(doc.root.attributes[0]?.value, '<>&\'"AB')
  t.same(doc.root.children.map((c) => c.type === 'text' && c.value), ['<x>😀é'])
  rejects(t, '<a>&#0;</a>', 'XML_MALFORMED', /character reference/)
  rejects(t, '<a>&#xD800;</a>', 'XML_MALFORMED', /character reference/)
  rejects(t, '<a>&#x110000;</a>', 'XML_MALFORMED')
  rejects(t, '<a>a & b</a>', 'XML_MALFORMED', /reference/)
  rejects(t, '<a>&#xZZ;</a>', 'XML_MALFORMED')
})

t.test('size, depth, attribute and element limits', async (t) => {
  const limits = { ...DEFAULT_XML_LIMITS, maxBytes: 100, maxDepth: 5, maxAttributes: 3, maxElements: 10 }
  rejects(t, `<a>${'x'.repeat(200)}</a>`, 'XML_LIMIT_EXCEEDED', /bytes/, limits)
  rejects(t, Buffer.from(`<a>${'x'.repeat(200)}</a>`), 'XML_LIMIT_EXCEEDED', /bytes/, limits)
  // multi-byte characters count as bytes, not UTF-16 units
  rejects(t, `<a>${'é'.repeat(60)}</a>`, 'XML_LIMIT_EXCEEDED', /bytes/, limits)
  rejects(t, '<a><b><c><d><e><f/></e></d></c></b></a>', 'XML_LIMIT_EXCEEDED', /deeper than 5/, limits)
  t.doesNotThrow(() => parseXml('<a><b><c><d><e/></d></c></b></a>', limits))
  rejects(t, '<a w="1" x="1" y="1" z="1"/>', 'XML_LIMIT_EXCEEDED', /attributes/, limits)
  rejects(t, '<a xmlns:p="u" w="1" x="1" y="1"/>', 'XML_LIMIT_EXCEEDED', /attributes/, limits)
  rejects(t, `<a>${'<b/>'.repeat(10)}</a>`, 'XML_LIMIT_EXCEEDED', /elements/, limits)
})

t.test('deep nesting beyond the default limit is refused without exhausting the stack', async (t) => {
  const depth = 100_000
  rejects(t, '<a>'.repeat(depth) + '</a>'.repeat(depth), 'XML_LIMIT_EXCEEDED', /deeper than 64/)
})

t.test('encodings other than UTF-8 and invalid UTF-8 are refused', async (t) => {
  rejects(t, '<?xml version="1.0" encoding="ISO-8859-1"?><a/>', 'XML_MALFORMED', /UTF-8/)
  rejects(t, '<?xml version="1.1"?><a/>', 'XML_MALFORMED', /version 1.0/)
  rejects(t, Buffer.from([0x3c, 0x61, 0x3e, 0xc3, 0x28, 0x3c, 0x2f, 0x61, 0x3e]), 'XML_MALFORMED', /UTF-8/)
  t.equal(parseXml('<?xml version="1.0" encoding="utf-8" standalone="yes"?><a/>').root.name, 'a')
  const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('<a>ã</a>')])
  t.equal(parseXml(bom).source, '<a>ã</a>', 'BOM dropped, UTF-8 decoded')
})

t.test('characters XML forbids are refused, also as lone surrogates', async (t) => {
  rejects(t, '<a>\u0001</a>', 'XML_MALFORMED', /U\+0001/)
  rejects(t, '<a>\uFFFE</a>', 'XML_MALFORMED')
  rejects(t, '<a>\uD800</a>', 'XML_MALFORMED', /surrogate/)
})

t.test('well-formedness errors', async (t) => {
  rejects(t, '', 'XML_MALFORMED', /no root/)
  rejects(t, '<a>', 'XML_MALFORMED', /not closed/)
  rejects(t, '<a></b>', 'XML_MALFORMED', /does not match/)
  rejects(t, '<a/><b/>', 'XML_MALFORMED', /second root/)
  rejects(t, 'x<a/>', 'XML_MALFORMED', /text before/)
  rejects(t, '<a/>x', 'XML_MALFORMED', /text after/)
  rejects(t, '<a>]]></a>', 'XML_MALFORMED', /]]>/)
  rejects(t, '<a><!-- a -- b --></a>', 'XML_MALFORMED', /--/)
  rejects(t, '<a><!-- x ---></a>', 'XML_MALFORMED')
  rejects(t, '<a b="1" b="2"/>', 'XML_MALFORMED', /twice/)
  rejects(t, '<a b="1"c="2"/>', 'XML_MALFORMED', /white space/)
  rejects(t, '<a b=1/>', 'XML_MALFORMED', /quoted/)
  rejects(t, '<a b="<"/>', 'XML_MALFORMED')
  rejects(t, '<a><?xml version="1.0"?></a>', 'XML_MALFORMED', /declaration/)
  rejects(t, ' <?xml version="1.0"?><a/>', 'XML_MALFORMED', /declaration/)
  rejects(t, '<a:b:c/>', 'XML_MALFORMED', /colon/)
  rejects(t, '<1a/>', 'XML_MALFORMED')
  rejects(t, '<a><![CDATA[x</a>', 'XML_MALFORMED', /CDATA/)
  rejects(t, '<a><!foo></a>', 'XML_MALFORMED')
})

t.test('namespace well-formedness', async (t) => {
  rejects(t, '<p:a/>', 'XML_MALFORMED', /not declared/)
  rejects(t, '<a p:b="1"/>', 'XML_MALFORMED', /not declared/)
  rejects(t, '<a xmlns:p="urn:x"><b xmlns:p=""/></a>', 'XML_MALFORMED', /undeclared/)
  rejects(t, '<a xmlns:xml="urn:x"/>', 'XML_MALFORMED', /xml prefix/)
  rejects(t, '<a xmlns:xmlns="urn:x"/>', 'XML_MALFORMED')
  rejects(t, '<a xmlns:p="http://www.w3.org/XML/1998/namespace"/>', 'XML_MALFORMED')
  rejects(t, '<xmlns:a/>', 'XML_MALFORMED')
  rejects(t, '<a xmlns:p="urn:x" xmlns:q="urn:x" p:b="1" q:b="2"/>', 'XML_MALFORMED', /twice/)
  rejects(t, '<a xmlns="urn:x" xmlns="urn:y"/>', 'XML_MALFORMED', /declared twice/)
})

t.test('namespaces resolve through scope, with default undeclaration', async (t) => {
  const doc = parseXml('<r xmlns="urn:d" xmlns:p="urn:p"><p:a p:x="1" y="2"><b xmlns=""><c/></b></p:a></r>')
  const a = childElements(doc.root)[0]!
  t.equal(doc.root.ns, 'urn:d')
  t.equal(a.ns, 'urn:p')
  t.same(a.attributes.map((x) => [x.local, x.ns]), [['x', 'urn:p'], ['y', '']])
  const b = childElements(a)[0]!
  t.equal(b.ns, '')
  t.equal(childElements(b)[0]!.ns, '')
  t.equal(lookupNs(b, 'p'), 'urn:p')
  t.equal(lookupNs(b, 'xml'), 'http://www.w3.org/XML/1998/namespace')
})

t.test('line ends and attribute values are normalised as XML 1.0 requires', async (t) => {
  const doc = parseXml('<a b="x\r\ny\tz\nw" c="&#13;&#10;&#9;">1\r\n2\r3</a>')
  t.equal(doc.root.attributes[0]?.value, 'x y z w')
  t.equal(doc.root.attributes[1]?.value, '\r\n\t', 'references survive normalisation')
  t.same(doc.root.children.map((c) => c.type === 'text' && c.value), ['1\n2\n3'])
})

t.test('Ids, signatures and source offsets are recorded', async (t) => {
  const src = '<?xml version="1.0"?><a Id="1"><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xml:id="2"/><b id="3" ID="4"/><c Id="1"></c></a>'
  const doc = parseXml(src)
  t.same(doc.ids.map((i) => i.value), ['1', '2', '3', '4', '1'])
  t.equal(doc.signatures.length, 1)
  const c = childElements(doc.root)[2]!
  t.equal(src.slice(c.start, c.startTagEnd), '<c Id="1">')
  t.equal(src.slice(c.start, c.end), '<c Id="1"></c>')
  const sig = doc.signatures[0]!
  t.ok(sig.selfClosing)
  t.equal(src.slice(sig.start, sig.end), '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xml:id="2"/>')
  // an element named Signature in another namespace is not a signature
  t.equal(parseXml('<a><Signature/></a>').signatures.length, 0)
})

t.test('comments, PIs and CDATA are kept in the tree; adjacent text is one node', async (t) => {
  const doc = parseXml('<!--pre--><?p d?><a>x<![CDATA[<y>]]>z<!--c--><?q?></a><!--post-->')
  t.same(doc.prolog.map((n) => n.type), ['comment', 'pi'])
  t.same(doc.epilog.map((n) => n.type), ['comment'])
  t.same(doc.root.children.map((c) => c.type), ['text', 'comment', 'pi'])
  t.same(doc.root.children[0]?.type === 'text' && doc.root.children[0].value, 'x<y>z')
})

t.test('large flat documents parse in linear time', async (t) => {
  // 100k sibling elements with text, CDATA and references: a quadratic step would time the test out
  const body = '<i a="&amp;">x<![CDATA[y]]>&lt;</i>'.repeat(90_000)
  const doc = parseXml(`<r>${body}</r>`, { ...DEFAULT_XML_LIMITS, maxElements: 100_000 })
  t.equal(doc.root.children.length, 90_000)
})

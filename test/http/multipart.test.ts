import t from 'tap'
import { buildMultipart, MultipartError, multipartBoundary, parseMultipart } from '../../src/http/multipart.ts'
import type { Part } from '../../src/http/multipart.ts'

t.test('round trip keeps bodies byte for byte', async (t) => {
  const parts: Part[] = [
    { headers: { 'content-type': 'application/xml' }, body: Buffer.from('<a>\r\n1 — ç</a>') },
    { headers: { 'content-type': 'application/xml', 'x-n': '2' }, body: Buffer.from('<b/>') }
  ]
  const { body, contentType } = buildMultipart(parts)
  const boundary = multipartBoundary(contentType)
  t.ok(boundary)
  const back = parseMultipart(body, boundary as string)
  t.equal(back.length, 2)
  t.same(back.map((p) => p.body.toString()), ['<a>\r\n1 — ç</a>', '<b/>'])
  t.same(back[1]?.headers, { 'content-type': 'application/xml', 'x-n': '2' })
})

t.test('boundary parameter parsing', async (t) => {
  t.equal(multipartBoundary('application/xml'), null)
  t.equal(multipartBoundary(undefined), null)
  t.equal(multipartBoundary('multipart/mixed; boundary=abc'), 'abc')
  t.equal(multipartBoundary('Multipart/Mixed; charset=x; boundary="a b"'), 'a b')
  t.throws(() => multipartBoundary('multipart/mixed'), MultipartError)
})

t.test('LF-only line ends are tolerated; truncation and too many parts are not', async (t) => {
  const lf = Buffer.from('--b\ncontent-type: application/xml\n\n<a/>\n--b\n\n<c/>\n--b--\n')
  t.same(parseMultipart(lf, 'b').map((p) => p.body.toString()), ['<a/>', '<c/>'])
  t.throws(() => parseMultipart(Buffer.from('--b\r\n\r\n<a/>\r\n'), 'b'), /close delimiter/)
  t.throws(() => parseMultipart(Buffer.from('nothing'), 'b'), /no boundary/)
  const many = buildMultipart(Array.from({ length: 11 }, () => ({ headers: {}, body: Buffer.from('<x/>') })))
  t.throws(() => parseMultipart(many.body, multipartBoundary(many.contentType) as string, 10), /more than 10/)
  t.throws(() => buildMultipart([{ headers: {}, body: Buffer.from('--zz') }], 'zz'), /contains the boundary/)
})

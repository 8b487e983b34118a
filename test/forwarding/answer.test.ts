/**
 * forwarding/answer.ts: what of BACEN's answer reaches the caller. Only the headers BACEN documents, and none whose value
 * carries a control character; in a multipart answer, only each part's Content-Type and PI-ResourceId (plus the
 * verdict headers the proxy adds), none with a bare CR or LF that could split a header where the core parses it.
 */
import t from 'tap'
import { checkResponse, relayedHeaders } from '../../src/forwarding/answer.ts'
import type { UpstreamAnswer } from '../../src/forwarding/answer.ts'
import { parseMultipart } from '../../src/http/multipart.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'

function answer (headers: Record<string, string>, body: string): UpstreamAnswer {
  return { status: 200, headers, body: Buffer.from(body, 'latin1'), upstreamMs: 1 }
}

t.test('response headers: the documented ones, never one with a control character', async (t) => {
  const relayed = relayedHeaders(answer({
    'content-type': 'application/xml',
    'cache-control': 'max-age=60',
    'pi-resourceid': 'UEkBc8SHlbqa1VUfHRBEFKczf6ftGqED',
    'pi-pull-next': '/api/v1/out/99999004/stream/abc',
    'retry-after': '1',
    location: 'https://internal.rsfn.example/elsewhere',
    'set-cookie': 'a=b',
    server: 'bacen',
    'keep-alive': 'timeout=5'
  }, ''))
  t.same(Object.keys(relayed).sort(), ['cache-control', 'content-type', 'pi-pull-next', 'pi-resourceid', 'retry-after'])
  t.same(relayedHeaders(answer({ 'pi-resourceid': 'a\rb', 'retry-after': '1\n', 'cache-control': 'x\u0000' }, '')), {}, 'CR, LF and NUL never pass')
  t.same(relayedHeaders(answer({ 'content-type': 'application/xml;\tcharset=utf-8' }, '')), { 'content-type': 'application/xml;\tcharset=utf-8' }, 'a tab is a legal header character')
})

t.test('multipart parts: Content-Type and PI-ResourceId only, none with a bare CR', async (t) => {
  const b = 'sep'
  const body = [
    `--${b}\r\ncontent-type: application/xml\r\npi-resourceid: R1\r\nx-injected: a\rset-cookie: evil\r\nset-cookie: b=c\r\n\r\n<a/>`,
    `--${b}\r\ncontent-type: application/xml\r\npi-resourceid: R2\rx-forged: 1\r\n\r\n<b/>`,
    `--${b}--\r\n`
  ].join('\r\n')
  const checked = checkResponse('spi', 'spi', answer({ 'content-type': `multipart/mixed; boundary=${b}` }, body), { trust: new TrustStore(), signed: '2xx-bodies' })
  const parts = parseMultipart(checked.body, b)
  t.equal(parts.length, 2)
  t.same(Object.keys(parts[0]?.headers ?? {}).sort(), ['content-type', 'pi-resourceid', 'pix-proxy-signature-code', 'pix-proxy-signature-valid'])
  t.equal(parts[0]?.headers['pi-resourceid'], 'R1')
  t.notOk('pi-resourceid' in (parts[1]?.headers ?? {}), 'a PI-ResourceId carrying a bare CR is dropped, not relayed')
  t.notMatch(checked.body.toString('latin1'), /\r(?!\n)/, 'no bare CR anywhere in what the caller gets')
  t.equal(parts[0]?.headers['pix-proxy-signature-valid'], 'false', 'and each part still carries its verdict')
})

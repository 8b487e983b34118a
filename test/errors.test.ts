import t from 'tap'
import { Errors, PixProxyError } from '../src/errors.ts'

t.test('error codes are unique and prefixed', async (t) => {
  const codes = Object.values(Errors).map((e) => e.code)
  t.equal(new Set(codes).size, codes.length)
  for (const c of codes) t.match(c, /^PIXPROXY_ERR_[A-Z0-9_]+$/)
})

t.test('message placeholders are filled in order', async (t) => {
  const e = new PixProxyError(Errors.HSM_KEY_NOT_FOUND, ['private', 'sig', 'tok'])
  t.equal(e.message, 'no private key labelled sig on token tok')
  t.equal(e.code, 'PIXPROXY_ERR_HSM_KEY_NOT_FOUND')
  t.equal(e.statusCode, 503)
})

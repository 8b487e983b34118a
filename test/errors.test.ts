import t from 'tap'
import { Errors, PixProxyError } from '../core/errors.ts'

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

t.test('docs/errors.md is the rendering of the catalogue (run npm run docs:errors after adding a code)', async (t) => {
  const { readFile } = await import('node:fs/promises')
  const { renderErrorsDoc } = await import('../tools/docs/errors-doc.ts')
  const doc = await readFile(new URL('../docs/errors.md', import.meta.url), 'utf8')
  t.equal(doc, renderErrorsDoc())
  for (const e of Object.values(Errors)) t.match(doc, `\`${e.code}\``)
})

t.test('docs/xmldsig.md explains every verification code', async (t) => {
  const { readFile } = await import('node:fs/promises')
  const { VerifyCodes } = await import('../core/xmldsig/verify.ts')
  const doc = await readFile(new URL('../docs/xmldsig.md', import.meta.url), 'utf8')
  for (const c of Object.values(VerifyCodes)) t.match(doc, new RegExp(`^\\| \`${c}\` \\|`, 'm'), c)
})

import t from 'tap'
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Errors } from '../../core/errors.ts'
import { formatPkcs11Uri, parsePkcs11Uri, readPin } from '../../src/hsm/uri.ts'

const invalid = { code: Errors.HSM_URI_INVALID.code }
const pinSource = { code: Errors.HSM_PIN_SOURCE.code }

t.test('parses the CLI form: path attributes, pin-source and module-path', async (t) => {
  t.same(parsePkcs11Uri('pkcs11:token=pix-proxy;object=pix-sign;type=private?pin-source=file:/run/secrets/pin&module-path=/usr/lib/softhsm/libsofthsm2.so'), {
    token: 'pix-proxy',
    object: 'pix-sign',
    type: 'private',
    pinSource: 'file:/run/secrets/pin',
    modulePath: '/usr/lib/softhsm/libsofthsm2.so'
  })
  t.same(parsePkcs11Uri('pkcs11:'), {})
  t.same(parsePkcs11Uri('PKCS11:token=a'), { token: 'a' }, 'the scheme is case-insensitive')
})

t.test('percent-decoding: text as UTF-8, id as raw bytes', async (t) => {
  const u = parsePkcs11Uri('pkcs11:token=Banco%20Exemplo%20S.A.;object=chave%3Bassinatura%C3%A7;id=%00%ff%10')
  t.equal(u.token, 'Banco Exemplo S.A.')
  t.equal(u.object, 'chave;assinaturaç')
  t.same(u.id, Buffer.from([0x00, 0xff, 0x10]))
})

t.test('rejects what it cannot honour instead of ignoring it', async (t) => {
  t.throws(() => parsePkcs11Uri('token=x'), invalid, 'no scheme')
  t.throws(() => parsePkcs11Uri('pkcs11:token=a;token=b'), invalid, 'repeated attribute')
  t.throws(() => parsePkcs11Uri('pkcs11:token=a;serial=123'), invalid, 'serial would be ignored: refused')
  t.throws(() => parsePkcs11Uri('pkcs11:x-vendor=1'), invalid, 'vendor attribute')
  t.throws(() => parsePkcs11Uri('pkcs11:token=a?module-name=softhsm2'), invalid, 'module-name')
  t.throws(() => parsePkcs11Uri('pkcs11:type=secret'), invalid, 'unknown type')
  t.throws(() => parsePkcs11Uri('pkcs11:token=a%2'), invalid, 'truncated percent-encoding')
  t.throws(() => parsePkcs11Uri('pkcs11:token=a%zz'), invalid, 'bad percent-encoding')
  t.throws(() => parsePkcs11Uri('pkcs11:token=my token'), invalid, 'raw space')
  t.throws(() => parsePkcs11Uri('pkcs11:token=%ff%fe'), invalid, 'text that is not UTF-8')
  t.throws(() => parsePkcs11Uri('pkcs11:token'), invalid, 'attribute without value')
  t.throws(() => parsePkcs11Uri('pkcs11:token=a;'), invalid, 'empty attribute')
  t.throws(() => parsePkcs11Uri('pkcs11:token=a?pin-source=file:/p&pin-value=1234'), invalid, 'both PIN forms')
})

t.test('format round-trips and escapes what must be escaped', async (t) => {
  const parts = {
    token: 'Banco; Exemplo/100%',
    object: 'pix-sign',
    id: Buffer.from([1, 2, 0xab]),
    type: 'private',
    pinSource: 'file:/tmp/dir with space/pin',
    modulePath: '/usr/lib/softhsm/libsofthsm2.so'
  }
  const uri = formatPkcs11Uri(parts)
  t.equal(uri, 'pkcs11:token=Banco%3B%20Exemplo%2F100%25;object=pix-sign;id=%01%02%AB;type=private?pin-source=file:/tmp/dir%20with%20space/pin&module-path=/usr/lib/softhsm/libsofthsm2.so')
  t.same(parsePkcs11Uri(uri), parts)
  t.equal(formatPkcs11Uri({ token: 'pix-proxy', object: 'pix-sign', type: 'private' }), 'pkcs11:token=pix-proxy;object=pix-sign;type=private')
  t.throws(() => formatPkcs11Uri({ type: 'bogus' }), invalid)
})

t.test('readPin: file sources, one trailing newline dropped', async (t) => {
  const dir = t.testdir()
  const write = async (name: string, text: string): Promise<string> => {
    const file = join(dir, name)
    await writeFile(file, text, { mode: 0o600 })
    return file
  }
  t.equal(await readPin({ pinSource: `file:${await write('lf', '1234\n')}` }), '1234')
  t.equal(await readPin({ pinSource: `file:${await write('crlf', '1234\r\n')}` }), '1234')
  t.equal(await readPin({ pinSource: `file:${await write('two', '1234\n\n')}` }), '1234\n', 'only one newline is dropped')
  t.equal(await readPin({ pinSource: `file:${await write('bare', ' 12 34 ')}` }), ' 12 34 ', 'spaces are part of the PIN')
  t.equal(await readPin({ pinSource: pathToFileURL(await write('url', 'abcd\n')).href }), 'abcd', 'file:// URL form')
  const viaUri = parsePkcs11Uri(formatPkcs11Uri({ token: 't', pinSource: `file:${await write('p in', 'xyz\n')}` }))
  t.equal(await readPin(viaUri), 'xyz', 'a percent-encoded path from a URI')

  await t.rejects(readPin({ pinSource: `file:${await write('empty', '\n')}` }), pinSource, 'empty PIN')
  await t.rejects(readPin({ pinSource: `file:${join(dir, 'missing')}` }), { code: Errors.HSM_PIN_SOURCE.code, message: /ENOENT/ })
  await t.rejects(readPin({ pinSource: 'env:PIN' }), pinSource, 'only file:')
  await t.rejects(readPin({ pinSource: 'file:' }), pinSource, 'empty path')
  await t.rejects(readPin({}), pinSource, 'no source')
  await t.rejects(readPin({ pinValue: '1234' }), { code: Errors.HSM_PIN_SOURCE.code, message: /refused/ }, 'a literal PIN is refused')
  if (process.getuid?.() !== 0) {
    const locked = await write('locked', '1234')
    await chmod(locked, 0o000)
    await t.rejects(readPin({ pinSource: `file:${locked}` }), { code: Errors.HSM_PIN_SOURCE.code, message: /EACCES/ })
  }
})

import t from 'tap'
import { execFile } from 'node:child_process'
import { createPrivateKey, verify } from 'node:crypto'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Errors } from '../../core/errors.ts'
import { initSoftHsm } from '../../tools/token/hsm-init.ts'
import type { HsmInitResult } from '../../tools/token/hsm-init.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { parsePkcs11Uri, readPin } from '../../src/hsm/uri.ts'
import { certificateMatchesKey, parseCertificate } from '../../core/pki/x509.ts'

const MODULE = process.env.PKCS11_MODULE_PATH ?? '/usr/lib/softhsm/libsofthsm2.so'

function run (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number, out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, out: stdout + stderr })
    })
  })
}

async function mode (file: string): Promise<number> {
  return (await stat(file)).mode & 0o777
}

// The token of this file: created once; SoftHSM reads SOFTHSM2_CONF once per process, so every store this file
// opens uses this directory's configuration (set below, as a CLI would, before the first store opens).
const dir = join(t.testdir(), 'hsm')
let first: HsmInitResult

t.test('init creates the token, keys, CA and certificates, and writes hsm.json', async (t) => {
  first = await initSoftHsm({ dir, modulePath: MODULE })
  process.env.SOFTHSM2_CONF = first.softhsmConf
  t.match(first, {
    tokenLabel: 'pix-proxy',
    softhsmConf: join(dir, 'softhsm2.conf'),
    tokenDir: join(dir, 'tokens'),
    modulePath: MODULE,
    signing: { keyLabel: 'pix-sign', certFile: join(dir, 'pix-sign.crt') },
    tls: { keyLabel: 'pix-tls', certFile: join(dir, 'pix-tls.crt') },
    tokenSerial: /^[0-9a-f]{16}$/
  })
  t.same(JSON.parse(await readFile(join(dir, 'hsm.json'), 'utf8')), first, 'hsm.json is the result')
  t.match(await readFile(first.softhsmConf, 'utf8'), `directories.tokendir = ${first.tokenDir}`)

  t.equal(await mode(dir), 0o700, 'directory 0700')
  for (const secret of [first.pinFile, first.soPinFile, first.caKeyFile]) t.equal(await mode(secret), 0o600, `${secret} is 0600`)
  const pin = await readFile(first.pinFile, 'utf8')
  const soPin = await readFile(first.soPinFile, 'utf8')
  t.match(pin, /^[A-Za-z0-9_-]{24}$/, 'random user PIN, no trailing newline')
  t.not(pin, soPin)
  const printed = JSON.stringify(first)
  t.notOk(printed.includes(pin) || printed.includes(soPin), 'the result never carries a PIN')

  const uri = parsePkcs11Uri(first.signing.uri)
  t.same(uri, { token: 'pix-proxy', object: 'pix-sign', type: 'private', pinSource: `file:${first.pinFile}` })
  t.equal(await readPin(uri), pin)
})

t.test('certificates: subjects, usages, issued by the local CA, for the HSM public keys', async (t) => {
  const ca = parseCertificate(await readFile(first.caCertFile))
  const caKey = createPrivateKey(await readFile(first.caKeyFile))
  t.equal(caKey.asymmetricKeyDetails?.modulusLength, 2048, 'CA key is software RSA-2048')
  t.ok(certificateMatchesKey(ca, caKey))
  const sign = parseCertificate(await readFile(first.signing.certFile))
  const tls = parseCertificate(await readFile(first.tls.certFile))
  t.equal(sign.subjectString, 'CN=pix-proxy 99999004 assinatura, OU=PIX, O=Banco Exemplo S.A., C=BR')
  t.equal(tls.subjectString, 'CN=pix-proxy 99999004 mtls, OU=PIX, O=Banco Exemplo S.A., C=BR')
  t.equal(sign.issuerString, ca.subjectString)

  const verified = await run('openssl', ['verify', '-CAfile', first.caCertFile, first.signing.certFile, first.tls.certFile])
  t.equal(verified.code, 0, verified.out)
  const signText = (await run('openssl', ['x509', '-in', first.signing.certFile, '-noout', '-text'])).out
  t.match(signText, /X509v3 Key Usage: critical\s+Digital Signature, Non Repudiation\n/)
  t.notMatch(signText, /Extended Key Usage/)
  const tlsText = (await run('openssl', ['x509', '-in', first.tls.certFile, '-noout', '-text'])).out
  t.match(tlsText, /X509v3 Extended Key Usage:\s+TLS Web Client Authentication\n/)

  const store = await Pkcs11KeyStore.open({ modulePath: first.modulePath, tokenLabel: first.tokenLabel, pin: await readPin({ pinSource: `file:${first.pinFile}` }), poolSize: 1 })
  t.teardown(() => store.close())
  for (const [key, cert] of [[first.signing, sign], [first.tls, tls]] as const) {
    const info = await store.keyInfo(key.keyLabel)
    t.match(info, { keyType: 'RSA', modulusBits: 2048, sensitive: true, extractable: false, neverExtractable: true, sign: true })
    t.ok(certificateMatchesKey(cert, info.publicKey), `${key.keyLabel}: the certificate is for the HSM key`)
    const signer = await store.signer(key.keyLabel)
    const data = Buffer.from(`probe ${key.keyLabel}`)
    t.ok(verify('sha256', data, cert.publicKey, await signer.sign(data)), `${key.keyLabel}: HSM signature verifies with the certificate`)
  }
  t.equal(store.tokenInfo().serial, first.tokenSerial)
})

t.test('the URIs and PIN file work with the OpenSSL pkcs11 engine (libp11), as mTLS will use them', async (t) => {
  const work = t.testdir()
  const dataFile = join(work, 'data')
  const sigFile = join(work, 'sig')
  await writeFile(dataFile, 'engine check')
  const env = { ...process.env, SOFTHSM2_CONF: first.softhsmConf, PKCS11_MODULE_PATH: first.modulePath }
  for (const key of [first.signing, first.tls]) {
    const signed = await run('openssl', ['dgst', '-sha256', '-engine', 'pkcs11', '-keyform', 'engine', '-sign', key.uri, '-out', sigFile, dataFile], env)
    t.equal(signed.code, 0, signed.out)
    const cert = parseCertificate(await readFile(key.certFile))
    t.ok(verify('sha256', Buffer.from('engine check'), cert.publicKey, await readFile(sigFile)), `${key.keyLabel} signed through the engine`)
  }
})

t.test('refuses a directory that already holds a token; --force replaces it', async (t) => {
  const before = await readFile(first.signing.certFile, 'utf8')
  await t.rejects(initSoftHsm({ dir, modulePath: MODULE }), { code: Errors.HSM_INIT_EXISTS.code })
  t.equal(await readFile(first.signing.certFile, 'utf8'), before, 'nothing was touched')
  t.equal(JSON.parse(await readFile(join(dir, 'hsm.json'), 'utf8')).tokenSerial, first.tokenSerial)

  const again = await initSoftHsm({ dir, modulePath: MODULE, force: true, ispb: '12345678', tokenLabel: 'other-label' })
  t.not(again.tokenSerial, first.tokenSerial, 'a new token')
  const sign = parseCertificate(await readFile(again.signing.certFile))
  t.equal(sign.subjectString, 'CN=pix-proxy 12345678 assinatura, OU=PIX, O=Banco Exemplo S.A., C=BR')
  t.not(await readFile(again.signing.certFile, 'utf8'), before)

  const store = await Pkcs11KeyStore.open({ modulePath: again.modulePath, tokenLabel: 'other-label', pin: await readPin({ pinSource: `file:${again.pinFile}` }), poolSize: 1 })
  t.teardown(() => store.close())
  t.ok(certificateMatchesKey(sign, (await store.signer('pix-sign')).publicKey), 'the new certificate is for the new key')
  await t.rejects(Pkcs11KeyStore.open({ modulePath: again.modulePath, tokenLabel: 'pix-proxy', pin: 'whatever', poolSize: 1 }), { code: Errors.HSM_TOKEN_NOT_FOUND.code }, 'the old token is gone')
})

t.test('bad options fail clearly and early', async (t) => {
  const work = t.testdir()
  await t.rejects(initSoftHsm({ dir: join(work, 'a'), ispb: '1234' }), { code: Errors.CONFIG_INVALID.code })
  await t.rejects(initSoftHsm({ dir: join(work, 'b'), tokenLabel: 'x'.repeat(33) }), { code: Errors.CONFIG_INVALID.code })
  await t.rejects(initSoftHsm({ dir: join(work, 'c'), modulePath: '/nonexistent/libsofthsm2.so' }), { code: Errors.HSM_MODULE_LOAD.code, message: /nonexistent/ })
  t.same(await readdir(join(work, 'c')), [], 'a failed init leaves no token, PIN or configuration behind')
})

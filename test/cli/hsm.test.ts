import t from 'tap'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Errors } from '../../core/errors.ts'
import { hsmCommand } from '../../tools/cli/hsm.ts'
import { main } from '../../tools/cli/main.ts'
import type { HsmInitResult } from '../../tools/token/hsm-init.ts'
import { issueCertificate } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { captureIo } from '../helpers/cli-io.ts'

// One token per test file: `hsm info` points SOFTHSM2_CONF at it, and SoftHSM reads that once per process.
const dir = join(t.testdir(), 'hsm')

t.test('usage', async (t) => {
  let c = captureIo(process.env)
  t.equal(await hsmCommand([], c.io), 2)
  t.match(c.text().stdout, /pix-proxy hsm init --dir DIR/)
  c = captureIo(process.env)
  t.equal(await hsmCommand(['--help'], c.io), 0)
  await t.rejects(hsmCommand(['frobnicate'], captureIo(process.env).io), { code: Errors.USAGE.code })
  await t.rejects(hsmCommand(['init'], captureIo(process.env).io), { code: Errors.USAGE.code, message: /--dir/ })
  await t.rejects(hsmCommand(['info'], captureIo(process.env).io), { code: Errors.USAGE.code, message: /--dir/ })
  await t.rejects(hsmCommand(['init', '--dir', dir, '--pin', '1234'], captureIo(process.env).io), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' })
  c = captureIo(process.env)
  t.equal(await main(['hsm', 'init'], c.io), 2, 'through main: usage errors exit 2')
  t.match(JSON.parse(c.text().stderr), { error: Errors.USAGE.code })
})

t.test('hsm init prints hsm.json as one JSON line and never a PIN', async (t) => {
  const c = captureIo({ ...process.env, PKCS11_MODULE_PATH: process.env.PKCS11_MODULE_PATH ?? '/usr/lib/softhsm/libsofthsm2.so' })
  t.equal(await hsmCommand(['init', '--dir', dir, '--ispb', '12345678', '--label', 'cli-token'], c.io), 0)
  const { stdout } = c.text()
  t.equal(stdout.split('\n').filter((l) => l !== '').length, 1, 'one line')
  const result = JSON.parse(stdout) as HsmInitResult
  t.same(result, JSON.parse(await readFile(join(dir, 'hsm.json'), 'utf8')))
  t.equal(result.tokenLabel, 'cli-token')
  t.equal(parseCertificate(await readFile(result.signing.certFile)).subjectString, 'CN=pix-proxy 12345678 assinatura, OU=PIX, O=Banco Exemplo S.A., C=BR')
  t.notOk(stdout.includes(await readFile(result.pinFile, 'utf8')))
  t.notOk(stdout.includes(await readFile(result.soPinFile, 'utf8')))

  const again = captureIo(process.env)
  t.equal(await main(['hsm', 'init', '--dir', dir], again.io), 1, 'a second init is refused')
  t.match(JSON.parse(again.text().stderr), { error: Errors.HSM_INIT_EXISTS.code, message: /--force/ })
})

t.test('hsm info describes the token, checks certificates against keys', async (t) => {
  const c = captureIo(process.env)
  t.equal(await hsmCommand(['info', '--dir', dir], c.io), 0)
  const report = JSON.parse(c.text().stdout)
  t.match(report, {
    ok: true,
    token: { label: 'cli-token', manufacturer: 'SoftHSM project', userPinLocked: false },
    signing: { label: 'pix-sign', id: '01', modulusBits: 2048, sensitive: true, extractable: false, signatureVerifies: true, certificate: { matchesKey: true, issuedByCa: true } },
    tls: { label: 'pix-tls', id: '02', modulusBits: 2048, certificate: { matchesKey: true, issuedByCa: true } }
  })
  const pin = await readFile(join(dir, 'user.pin'), 'utf8')
  t.notOk(c.text().stdout.includes(pin), 'no PIN in the report')
})

t.test('hsm info exits 1 when a certificate is not for its HSM key', async (t) => {
  const result = JSON.parse(await readFile(join(dir, 'hsm.json'), 'utf8')) as HsmInitResult
  const original = await readFile(result.signing.certFile, 'utf8')
  t.teardown(() => writeFile(result.signing.certFile, original))
  const ca = { certificate: parseCertificate(await readFile(result.caCertFile)), key: createPrivateKey(await readFile(result.caKeyFile)) }
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const wrong = issueCertificate({ subject: 'CN=impostor, O=Banco Exemplo S.A., C=BR', publicKey: stranger.publicKey, issuer: ca, keyUsage: ['digitalSignature', 'nonRepudiation'] })
  await writeFile(result.signing.certFile, wrong.pem)

  const c = captureIo(process.env)
  t.equal(await hsmCommand(['info', '--dir', dir], c.io), 1)
  t.match(JSON.parse(c.text().stdout), { ok: false, signing: { ok: false, signatureVerifies: false, certificate: { matchesKey: false, issuedByCa: true } }, tls: { ok: true } })
})

t.test('hsm info without hsm.json', async (t) => {
  await t.rejects(hsmCommand(['info', '--dir', join(t.testdir(), 'empty')], captureIo(process.env).io), { code: Errors.CONFIG_INVALID.code, message: /hsm init/ })
})

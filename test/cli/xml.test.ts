// `pix-proxy xml sign|verify`, driven in-process through main() with captured stdio.
import t from 'tap'
import { PassThrough } from 'node:stream'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { main } from '../../tools/cli/main.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { initSoftHsm } from '../../tools/token/hsm-init.ts'
import { pacs008, createEntryRequest } from '../../tools/samples/messages.ts'
import { lxmlSpiDigests, xmlsec1Verify } from '../helpers/independent.ts'

interface Run { code: number, stdout: string, stderr: string }

async function run (args: string[], stdin = ''): Promise<Run> {
  const out = new PassThrough()
  const err = new PassThrough()
  const input = new PassThrough()
  input.end(stdin)
  const chunks: Buffer[] = []
  const errChunks: Buffer[] = []
  out.on('data', (c: Buffer) => chunks.push(c))
  err.on('data', (c: Buffer) => errChunks.push(c))
  const code = await main(args, { stdin: input, stdout: out, stderr: err, env: process.env })
  return { code, stdout: Buffer.concat(chunks).toString(), stderr: Buffer.concat(errChunks).toString() }
}

const pki = createTestPki()
const id = pki.issue('CN=pix-proxy 99999004 assinatura, OU=PIX, O=Banco Exemplo S.A., C=BR')
const other = pki.issue('CN=someone else, O=Outro Banco, C=BR')
const dir = t.testdir()
const keyFile = join(dir, 'sign.key')
const certFile = join(dir, 'sign.crt')
const otherCert = join(dir, 'other.crt')

t.before(async () => {
  await writeFile(keyFile, id.key!.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  await writeFile(certFile, id.certificate.pem)
  await writeFile(otherCert, other.certificate.pem)
  await writeFile(join(dir, 'pacs.008.xml'), pacs008({ amounts: [10, 20] }).xml)
  await writeFile(join(dir, 'entry.xml'), createEntryRequest().xml)
})

t.test('sign (SPI, PEM key, files) then verify: JSON with valid first, exit 0; digests equal libxml2\'s', async (t) => {
  const signedFile = join(dir, 'signed.xml')
  const s = await run(['xml', 'sign', '--profile', 'spi', '--key', keyFile, '--cert', certFile, '--in', join(dir, 'pacs.008.xml'), '--out', signedFile])
  t.equal(s.code, 0, s.stderr)
  const signed = await readFile(signedFile, 'utf8')
  const lx = await lxmlSpiDigests(signed)
  const ours = [...signed.matchAll(/<ds:DigestValue>([^<]+)</g)].map((m) => m[1])
  t.same(ours, [lx.keyInfo, lx.appHdr, lx.document])
  const v = await run(['xml', 'verify', '--cert', certFile, signedFile])
  t.equal(v.code, 0)
  const result = JSON.parse(v.stdout)
  t.same(Object.keys(result).slice(0, 2), ['valid', 'code'])
  t.equal(result.valid, true)
  t.equal(result.code, 'VALID')
  t.equal(result.references.length, 3)
  t.equal(result.signatureValid, true)
})

t.test('sign (DICT, stdin to stdout) verifies with xmlsec1', async (t) => {
  const s = await run(['xml', 'sign', '--profile', 'dict', '--key', keyFile, '--cert', certFile], await readFile(join(dir, 'entry.xml'), 'utf8'))
  t.equal(s.code, 0, s.stderr)
  t.ok((await xmlsec1Verify(s.stdout, id.certificate.pem)).ok)
  const v = await run(['xml', 'verify', '--profile', 'dict', '--cert', certFile, '-'], s.stdout)
  t.equal(JSON.parse(v.stdout).code, 'VALID')
})

t.test('verify reports failures with their code and exits 1', async (t) => {
  const signed = (await run(['xml', 'sign', '--profile', 'spi', '--key', keyFile, '--cert', certFile, '--in', join(dir, 'pacs.008.xml')])).stdout
  const tampered = signed.replace('>10.00<', '>99.00<')
  const bad = await run(['xml', 'verify', '--cert', certFile, '-'], tampered)
  t.equal(bad.code, 1)
  const r = JSON.parse(bad.stdout)
  t.equal(r.code, 'DIGEST_MISMATCH')
  t.same(r.references.map((x: { digestValid: boolean }) => x.digestValid), [true, true, false])
  const unknown = await run(['xml', 'verify', '--cert', otherCert, '-'], signed)
  t.equal(JSON.parse(unknown.stdout).code, 'CERT_UNKNOWN')
  const digestsOnly = await run(['xml', 'verify', '--digests-only', '-'], signed)
  t.equal(digestsOnly.code, 0)
  t.equal(JSON.parse(digestsOnly.stdout).code, 'DIGESTS_VALID')
  const later = await run(['xml', 'verify', '--cert', certFile, '--now', '2099-01-01T00:00:00Z', '-'], signed)
  t.equal(JSON.parse(later.stdout).code, 'CERT_EXPIRED')
  const malformed = await run(['xml', 'verify', '--digests-only', '-'], '<a>')
  t.equal(JSON.parse(malformed.stdout).code, 'XML_MALFORMED')
})

t.test('xml sample prints unsigned messages with fresh ids that sign and verify in their profile', async (t) => {
  for (const [name, profile, id] of [['pacs.008', 'spi', 'BizMsgIdr'], ['pibr.001', 'spi', 'BizMsgIdr'], ['CreateEntryRequest', 'dict', 'RequestId']] as const) {
    const a = await run(['xml', 'sample', name])
    const b = await run(['xml', 'sample', name, '--out', join(dir, `${name}.xml`)])
    t.same([a.code, a.stderr, b.code, b.stdout], [0, '', 0, ''], name)
    const second = await readFile(join(dir, `${name}.xml`), 'utf8')
    const idOf = (xml: string): string | undefined => new RegExp(`<${id}>([^<]+)<`).exec(xml)?.[1]
    t.ok(idOf(a.stdout) !== undefined && idOf(a.stdout) !== idOf(second), `${name}: a fresh ${id} each time`)
    t.notOk(a.stdout.includes('Signature>'), `${name}: unsigned`)
    const signed = await run(['xml', 'sign', '--profile', profile, '--key', keyFile, '--cert', certFile, '--in', join(dir, `${name}.xml`)])
    t.equal(signed.code, 0, signed.stderr)
    t.equal(JSON.parse((await run(['xml', 'verify', '--cert', certFile, '-'], signed.stdout)).stdout).code, 'VALID', name)
  }
  for (const args of [[], ['pacs.009'], ['toString'], ['pacs.008', 'pibr.001']]) {
    const r = await run(['xml', 'sample', ...args])
    t.equal(r.code, 2, args.join(' '))
    t.match(JSON.parse(r.stderr), { error: 'PIXPROXY_ERR_USAGE', message: /pix-proxy xml sample pacs\.008\|pibr\.001\|CreateEntryRequest/ })
  }
})

t.test('usage and input errors are one JSON line on stderr with a stable code', async (t) => {
  const cases: Array<[string[], number, string]> = [
    [['xml', 'sign', '--profile', 'xades', '--key', keyFile, '--cert', certFile], 2, 'PIXPROXY_ERR_USAGE'],
    [['xml', 'verify', join(dir, 'entry.xml')], 2, 'PIXPROXY_ERR_USAGE'],
    [['xml', 'verify', '--bogus', 'x'], 2, 'PIXPROXY_ERR_USAGE'],
    [['xml', 'verify', '--cert', certFile, '--now', 'yesterday', 'x'], 2, 'PIXPROXY_ERR_USAGE'],
    [['xml', 'verify', '--cert', join(dir, 'missing.crt'), 'x'], 1, 'PIXPROXY_ERR_FILE_READ'],
    [['xml', 'sign', '--profile', 'spi', '--key', keyFile, '--cert', certFile, '--in', join(dir, 'entry.xml')], 1, 'PIXPROXY_ERR_XML_NOT_SIGNABLE'],
    [['xml', 'sign', '--profile', 'spi', '--key', keyFile, '--cert', otherCert, '--in', join(dir, 'pacs.008.xml')], 1, 'PIXPROXY_ERR_KEY_CERT_MISMATCH'],
    [['frobnicate'], 2, 'PIXPROXY_ERR_USAGE']
  ]
  for (const [args, code, err] of cases) {
    const r = await run(args)
    t.equal(r.code, code, args.join(' '))
    t.equal(JSON.parse(r.stderr.split('\n')[0] as string).error, err, args.join(' '))
  }
})

t.test('sign with a pkcs11: URI (SoftHSM key that never leaves the token)', async (t) => {
  const hsm = await initSoftHsm({ dir: join(dir, 'hsm') })
  // SoftHSM reads its configuration when the module initialises; this test process owns its environment.
  process.env.SOFTHSM2_CONF = hsm.softhsmConf
  const s = await run(['xml', 'sign', '--profile', 'dict', '--key', hsm.signing.uri, '--cert', hsm.signing.certFile, '--in', join(dir, 'entry.xml')])
  t.equal(s.code, 0, s.stderr)
  t.ok((await xmlsec1Verify(s.stdout, await readFile(hsm.signing.certFile, 'utf8'))).ok, 'xmlsec1 verifies the HSM signature')
  const noObject = await run(['xml', 'sign', '--profile', 'dict', '--key', hsm.signing.uri.replace('object=pix-sign', 'object=nope'), '--cert', hsm.signing.certFile, '--in', join(dir, 'entry.xml')])
  t.equal(noObject.code, 1)
  t.equal(JSON.parse(noObject.stderr.split('\n')[0] as string).error, 'PIXPROXY_ERR_HSM_KEY_NOT_FOUND')
})

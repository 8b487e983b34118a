// `pix-proxy csr` and `pix-proxy pki issue` in-process: a key in SoftHSM (pkcs11: URI, PIN from --pin-file or the
// URI), in the local KMS (AWS_* from the command's environment) and in a PEM file → request → certificate, with
// openssl checking the request and the certificate; bad input ends with one JSON line and a stable code.
import t from 'tap'
import { execFile } from 'node:child_process'
import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Errors } from '../../core/errors.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { parseCsr, verifyCsr } from '../../core/pki/csr.ts'
import { certificateMatchesKey, parseCertificate } from '../../core/pki/x509.ts'
import { formatPkcs11Uri } from '../../src/hsm/uri.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { main } from '../../tools/cli/main.ts'
import { captureIo } from '../helpers/cli-io.ts'
import { setupSoftHsm } from '../helpers/softhsm.ts'

const SUBJECT = '/C=BR/O=ICP-Brasil/OU=SPB/CN=pix-proxy Banco Exemplo'
const ICP = ['--cnpj', '00038166000105', '--company-name', 'BANCO EXEMPLO S.A.', '--responsible-name', 'FULANO DE TAL',
  '--responsible-data', '01011980' + '12345678909' + '00000000000' + '000000012345678' + 'SSPSP']

const hsm = await setupSoftHsm(t, { keyLabels: ['pix-sign'] })
const dir = t.testdir()
const pinFile = join(dir, 'pin')
await writeFile(pinFile, hsm.pin + '\n', { mode: 0o600 })
const pki = createTestPki()
await writeFile(join(dir, 'ca.pem'), pki.ca.certificate.pem)
await writeFile(join(dir, 'ca.key'), pki.ca.key.export({ type: 'pkcs8', format: 'pem' }))
const baseEnv = { PKCS11_MODULE_PATH: hsm.modulePath }

async function run (argv: string[], env: NodeJS.ProcessEnv = baseEnv): Promise<{ code: number, stdout: string, stderr: string }> {
  const c = captureIo(env)
  const code = await main(argv, c.io)
  return { code, ...c.text() }
}

function opensslVerifiesRequest (file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', ['req', '-in', file, '-verify', '-noout'], { timeout: 60_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') reject(err)
      else resolve(stdout + stderr)
    })
  })
}

t.test('a key in SoftHSM: csr writes a request openssl verifies, pki issue certifies the HSM key', async (t) => {
  const uri = formatPkcs11Uri({ token: hsm.tokenLabel, object: 'pix-sign', type: 'private' })
  const out = join(dir, 'hsm.csr')
  const r = await run(['csr', '--key', uri, '--pin-file', pinFile, '--subject', SUBJECT, ...ICP, '--out', out])
  t.equal(r.code, 0, r.stderr)
  const summary = JSON.parse(r.stdout) as { out: string, subject: string, key: string, publicKeySha256: string }
  t.equal(summary.subject, 'CN=pix-proxy Banco Exemplo, OU=SPB, O=ICP-Brasil, C=BR')
  t.match(summary.key, /^pkcs11:token=pix-proxy-test;object=pix-sign/)
  t.notOk(r.stdout.includes(hsm.pin), 'never the PIN')
  t.match(await opensslVerifiesRequest(out), /self-signature verify OK/)
  const csr = parseCsr(await readFile(out))
  const hsmKey = hsm.keys.get('pix-sign')?.publicKey
  t.ok(hsmKey?.export({ type: 'spki', format: 'der' }).equals(csr.publicKey.export({ type: 'spki', format: 'der' })), 'the HSM key is the one requested')

  const certFile = join(dir, 'hsm.pem')
  const issued = await run(['pki', 'issue', '--csr', out, '--ca-cert', join(dir, 'ca.pem'), '--ca-key', join(dir, 'ca.key'), '--days', '30', '--out', certFile])
  t.equal(issued.code, 0, issued.stderr)
  const cert = parseCertificate(await readFile(certFile))
  t.ok(hsmKey !== undefined && certificateMatchesKey(cert, hsmKey), 'the certificate is for the HSM key')
  t.ok(cert.x509.verify(pki.ca.certificate.publicKey), 'signed by the test CA')
  t.equal(Math.round((cert.notAfter.getTime() - cert.notBefore.getTime()) / 86_400_000), 30)

  // The PIN named in the URI instead, and from PIXPROXY_HSM_PIN_FILE; stdout gets the PEM without --out.
  const inUri = await run(['csr', '--key', formatPkcs11Uri({ token: hsm.tokenLabel, object: 'pix-sign', pinSource: `file:${pinFile}` }), '--subject', SUBJECT, '--purpose', 'tls'])
  t.equal(inUri.code, 0, inUri.stderr)
  t.match(inUri.stdout, /^-----BEGIN CERTIFICATE REQUEST-----\n/)
  const fromEnv = await run(['csr', '--key', 'pkcs11:object=pix-sign', '--subject', SUBJECT],
    { PIXPROXY_HSM_MODULE_PATH: hsm.modulePath, PIXPROXY_HSM_TOKEN_LABEL: hsm.tokenLabel, PIXPROXY_HSM_PIN_FILE: pinFile })
  t.equal(fromEnv.code, 0, fromEnv.stderr)
  t.doesNotThrow(() => verifyCsr(parseCsr(fromEnv.stdout)))

  const both = await run(['csr', '--key', formatPkcs11Uri({ token: hsm.tokenLabel, object: 'pix-sign', pinSource: `file:${pinFile}` }), '--pin-file', pinFile, '--subject', SUBJECT])
  t.equal(both.code, 2, 'a PIN in the URI and --pin-file: a usage error')
  const missing = await run(['csr', '--key', formatPkcs11Uri({ token: hsm.tokenLabel, object: 'nope' }), '--pin-file', pinFile, '--subject', SUBJECT])
  t.match(JSON.parse(missing.stderr), { error: Errors.HSM_KEY_NOT_FOUND.code })
})

t.test('a key in the local KMS, named by alias and by ARN, with the AWS settings of the command\'s environment', async (t) => {
  const kmsKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const ep = await startLocalAwsEndpoint({
    region: 'sa-east-1',
    credentials: { AKIDCLI: 'cli-secret' },
    kmsKeys: [{ keyId: '1234abcd-12ab-34cd-56ef-1234567890ab', aliases: ['alias/pix-signing'], privateKeyPem: kmsKey.export({ type: 'pkcs8', format: 'pem' }).toString() }]
  })
  t.teardown(() => ep.close())
  const env = { AWS_REGION: 'sa-east-1', AWS_ENDPOINT_URL: ep.url, AWS_ACCESS_KEY_ID: 'AKIDCLI', AWS_SECRET_ACCESS_KEY: 'cli-secret' }
  for (const key of ['alias/pix-signing', 'arn:aws:kms:sa-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab', 'kms:1234abcd-12ab-34cd-56ef-1234567890ab']) {
    const out = join(dir, 'kms.csr')
    const r = await run(['csr', '--key', key, '--subject', SUBJECT, '--dns', 'pix.banco-exemplo.com.br', '--out', out], env)
    t.equal(r.code, 0, `${key}: ${r.stderr}`)
    t.match(await opensslVerifiesRequest(out), /self-signature verify OK/, `${key}: openssl verifies the request`)
    const csr = parseCsr(await readFile(out))
    t.ok(createPublicKey(kmsKey).export({ type: 'spki', format: 'der' }).equals(csr.publicKey.export({ type: 'spki', format: 'der' })), `${key}: the KMS key`)
  }
  const wrongSecret = await run(['csr', '--key', 'alias/pix-signing', '--subject', SUBJECT], { ...env, AWS_SECRET_ACCESS_KEY: 'wrong' })
  t.equal(wrongSecret.code, 1)
  t.match(JSON.parse(wrongSecret.stderr).error, /^PIXPROXY_ERR_KMS_/, 'a refused signature is a KMS_* code')
})

t.test('a PEM key, and bad input: one JSON line with a stable code, before any key is opened', async (t) => {
  const keyFile = join(dir, 'dev.key')
  await writeFile(keyFile, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }))
  const ok = await run(['csr', '--key', keyFile, '--subject', SUBJECT, ...ICP])
  t.equal(ok.code, 0, ok.stderr)
  const csrFile = join(dir, 'dev.csr')
  await writeFile(csrFile, ok.stdout)
  const cert = await run(['pki', 'issue', '--csr', csrFile, '--ca-cert', join(dir, 'ca.pem'), '--ca-key', join(dir, 'ca.key')])
  t.equal(cert.code, 0, cert.stderr)
  t.match(parseCertificate(cert.stdout).subjectString, /^CN=pix-proxy Banco Exemplo/)

  // A tampered request: pki issue refuses it.
  const tampered = Buffer.from(parseCsr(ok.stdout).der)
  tampered.write('X', tampered.indexOf(Buffer.from('pix-proxy Banco')), 'latin1')
  await writeFile(csrFile, tampered)
  const refused = await run(['pki', 'issue', '--csr', csrFile, '--ca-cert', join(dir, 'ca.pem'), '--ca-key', join(dir, 'ca.key')])
  t.equal(refused.code, 1)
  t.match(JSON.parse(refused.stderr), { error: Errors.CSR_SIGNATURE.code })

  const cases: Array<[string[], string, number]> = [
    [['csr', '--subject', SUBJECT], Errors.USAGE.code, 2],
    [['csr', '--key', keyFile], Errors.USAGE.code, 2],
    [['csr', '--key', keyFile, '--subject', 'CN=x, C=BR'], Errors.DN_PARSE.code, 1],
    [['csr', '--key', keyFile, '--subject', '/C=BR/CN='], Errors.DN_PARSE.code, 1],
    [['csr', '--key', keyFile, '--subject', '/C=BR/FOO=x'], Errors.DN_PARSE.code, 1],
    [['csr', '--key', keyFile, '--subject', '/CN=x'], Errors.CSR_FIELD_INVALID.code, 1],
    [['csr', '--key', keyFile, '--subject', '/C=BR/CN=Conexão'], Errors.CSR_FIELD_INVALID.code, 1],
    [['csr', '--key', keyFile, '--subject', SUBJECT, '--cnpj', '00038166000105'], Errors.USAGE.code, 2],
    [['csr', '--key', keyFile, '--subject', SUBJECT, ...ICP.slice(0, 1), '00038166000199', ...ICP.slice(2)], Errors.CSR_FIELD_INVALID.code, 1],
    [['csr', '--key', keyFile, '--subject', SUBJECT, '--purpose', 'toString'], Errors.USAGE.code, 2],
    [['csr', '--key', keyFile, '--subject', SUBJECT, '--key-usage', 'keyCertSign'], Errors.USAGE.code, 2],
    [['csr', '--key', keyFile, '--subject', SUBJECT, '--pin-file', pinFile], Errors.USAGE.code, 2],
    [['csr', '--key', join(dir, 'absent.key'), '--subject', SUBJECT], Errors.FILE_READ.code, 1],
    [['csr', '--key', 'pkcs11:token=x;object=y?pin-value=1234', '--subject', SUBJECT], Errors.HSM_PIN_SOURCE.code, 1],
    [['pki', 'issue', '--csr', keyFile, '--ca-cert', join(dir, 'ca.pem'), '--ca-key', join(dir, 'ca.key')], Errors.CSR_PARSE.code, 1],
    [['pki', 'issue', '--csr', csrFile], Errors.USAGE.code, 2],
    [['pki', 'issue', '--csr', csrFile, '--hsm-dir', dir, '--ca-cert', 'x'], Errors.USAGE.code, 2]
  ]
  for (const [argv, code, exit] of cases) {
    const r = await run(argv)
    t.equal(r.code, exit, `${argv.join(' ')}: exit ${exit}`)
    t.equal(JSON.parse(r.stderr.split('\n')[0] as string).error, code, `${argv.join(' ')}: ${code}`)
    t.equal(r.stdout, '', 'nothing on stdout')
  }
})

import { execFileSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createTestPki } from '../../core/pki/ca.ts'
import { dnEquals, parseDn } from '../../core/pki/dn.ts'
import { certificateMatchesKey, parseCertificate, parseCertificates, type Certificate } from '../../core/pki/x509.ts'

const CERT_PARSE = { code: 'PIXPROXY_ERR_CERT_PARSE' }

function openssl (args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })
}

/** What openssl says about a certificate: RFC 2253 names, hex serial, dates, SHA-256 fingerprint. */
function opensslView (pem: string): { subject: string, issuer: string, serial: bigint, notBefore: Date, notAfter: Date, fingerprint: string } {
  const out = openssl(['x509', '-noout', '-subject', '-issuer', '-serial', '-startdate', '-enddate', '-fingerprint', '-sha256',
    '-nameopt', 'RFC2253'], pem)
  const field = (name: string): string => {
    const m = new RegExp(`^${name}=(.*)$`, 'm').exec(out)
    if (m === null) throw new Error(`openssl printed no ${name}: ${out}`)
    return m[1] as string
  }
  const serialHex = field('serial')
  return {
    subject: field('subject'),
    issuer: field('issuer'),
    serial: serialHex.startsWith('-') ? -BigInt('0x' + serialHex.slice(1)) : BigInt('0x' + serialHex),
    notBefore: new Date(field('notBefore')),
    notAfter: new Date(field('notAfter')),
    fingerprint: field('sha256 Fingerprint')
  }
}

function assertLikeOpenssl (t: Test, cert: Certificate, label: string): void {
  const o = opensslView(cert.pem)
  t.ok(dnEquals(parseDn(o.subject), cert.subject), `${label}: subject ${o.subject}`)
  t.ok(dnEquals(parseDn(o.issuer), cert.issuer), `${label}: issuer ${o.issuer}`)
  t.equal(cert.serial, o.serial, `${label}: serial`)
  t.equal(cert.serialDecimal, o.serial.toString(10), `${label}: serial in decimal`)
  t.equal(cert.notBefore.getTime(), o.notBefore.getTime(), `${label}: notBefore`)
  t.equal(cert.notAfter.getTime(), o.notAfter.getTime(), `${label}: notAfter`)
  t.equal(cert.fingerprint256, o.fingerprint, `${label}: fingerprint`)
}

t.test('PEM string, PEM buffer and DER give the same certificate', async (t) => {
  const { certificate } = createTestPki().issue('CN=leaf, O=pix-proxy, C=BR')
  const fromPem = parseCertificate(certificate.pem)
  const fromPemBuffer = parseCertificate(Buffer.from('subject=junk before the block\n' + certificate.pem + '\nafter'))
  const fromDer = parseCertificate(certificate.der)
  for (const c of [fromPem, fromPemBuffer, fromDer]) {
    t.same(c.der, certificate.der)
    t.equal(c.pem, certificate.pem)
    t.equal(c.issuerString, 'CN=pix-proxy Test CA, O=pix-proxy, C=BR')
    t.equal(c.subjectString, 'CN=leaf, O=pix-proxy, C=BR')
    t.equal(c.serial, certificate.serial)
    t.ok(Object.isFrozen(c))
  }
  t.match(certificate.pem, /^-----BEGIN CERTIFICATE-----\n([A-Za-z0-9+/=]{64}\n)+[A-Za-z0-9+/=]{1,64}\n-----END CERTIFICATE-----\n$/)
  t.equal(certificate.x509.fingerprint256, certificate.fingerprint256)
  // A key block next to the certificate (a common "cert + key" file) is not a second certificate.
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' })
  t.equal(parseCertificate(certificate.pem + key).serial, certificate.serial)
})

t.test('parse errors are CERT_PARSE with the cause attached', async (t) => {
  const pki = createTestPki()
  const a = pki.issue('CN=a').certificate
  const b = pki.issue('CN=b').certificate
  t.throws(() => parseCertificate(a.pem + b.pem), CERT_PARSE, 'two certificates where one is expected')
  t.throws(() => parseCertificate('no pem here'), CERT_PARSE, 'no certificate')
  t.throws(() => parseCertificate('-----BEGIN CERTIFICATE-----\nMII*x\n-----END CERTIFICATE-----\n'), CERT_PARSE, 'bad base64')
  t.throws(() => parseCertificate(Buffer.concat([a.der, Buffer.from([0])])), CERT_PARSE, 'trailing byte after the DER')
  t.throws(() => parseCertificate(a.der.subarray(0, a.der.length - 1)), CERT_PARSE, 'truncated DER')
  const err = (() => { try { parseCertificate(a.der.subarray(0, 100)) } catch (e) { return e as Error } })()
  t.equal((err?.cause as { code?: string } | undefined)?.code, 'PIXPROXY_ERR_DER_INVALID', 'DER error kept as cause')
  t.throws(() => parseCertificates('nothing'), CERT_PARSE, 'empty bundle')
  const bundle = parseCertificates(`# comment\n${a.pem}\nsubject=CN=b\n${b.pem}${pki.ca.certificate.pem}`)
  t.same(bundle.map((c) => c.subjectString), ['CN=a', 'CN=b', 'CN=pix-proxy Test CA, O=pix-proxy, C=BR'])
})

t.test('names, serial, dates and fingerprint agree with openssl, including a serial above 2^64', async (t) => {
  const pki = createTestPki({ caSubject: 'CN=SERASA Autoridade Certificadora v5, OU=CSPB-4, O=ICP-Brasil, C=BR' })
  const huge = 2n ** 150n + 987654321n
  const { certificate } = pki.issue('CN=João Ação, O=Banco Exemplo S.A., C=BR', { serial: huge })
  assertLikeOpenssl(t, certificate, 'issued')
  t.equal(certificate.serialDecimal, '1427247692705959881058285969449495137370400945', 'decimal of 2^150 + 987654321 (computed by Python)')
  t.equal(BigInt('0x' + certificate.x509.serialNumber), huge, 'node:crypto agrees')
  t.equal(certificate.issuerString, 'CN=SERASA Autoridade Certificadora v5, OU=CSPB-4, O=ICP-Brasil, C=BR')
  assertLikeOpenssl(t, pki.ca.certificate, 'CA')
})

t.test('certificates made by openssl parse the same way (UTF-8, multi-valued RDN, email, v1)', async (t) => {
  const dir = t.testdir()
  const key = join(dir, 'k.pem')
  const v3 = join(dir, 'v3.pem')
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', v3, '-utf8', '-days', '2',
    '-subj', '/C=BR/O=Org+UID=u1/CN=João Ação/emailAddress=a@b.c', '-set_serial', '0x0123456789abcdef0123456789abcdef01'])
  const c = parseCertificate(readFileSync(v3, 'utf8'))
  assertLikeOpenssl(t, c, 'openssl req -x509')
  t.equal(c.serial, 0x0123456789abcdef0123456789abcdef01n)
  t.equal(c.subjectString, 'EMAILADDRESS=a@b.c, CN=João Ação, O=Org+UID=u1, C=BR')
  // a v1 certificate: no version field, no extensions
  const csr = join(dir, 'r.csr')
  const v1 = join(dir, 'v1.pem')
  openssl(['req', '-new', '-key', key, '-out', csr, '-subj', '/CN=v1'])
  openssl(['x509', '-req', '-in', csr, '-key', key, '-out', v1, '-days', '1', '-set_serial', '7'])
  t.match(openssl(['x509', '-in', v1, '-noout', '-text']), /Version: 1 \(0x0\)/)
  const one = parseCertificate(readFileSync(v1, 'utf8'))
  t.equal(one.serialDecimal, '7')
  assertLikeOpenssl(t, one, 'openssl x509 -req')
})

t.test('every certificate of the system trust bundle parses like OpenSSL says', async (t) => {
  const bundlePath = '/etc/ssl/certs/ca-certificates.crt' // Debian's ca-certificates, installed by scripts/setup.sh
  const certs = parseCertificates(readFileSync(bundlePath, 'utf8'))
  t.ok(certs.length > 50, `${certs.length} certificates`)
  // One openssl run for all of them, in its default "oneline" format: ASN.1 order, ' = ', quoted values.
  const p7 = execFileSync('openssl', ['crl2pkcs7', '-nocrl', '-certfile', bundlePath])
  const lines = openssl(['pkcs7', '-print_certs', '-noout'], p7.toString('latin1')).split('\n')
  const subjects = lines.filter((l) => l.startsWith('subject=')).map((l) => l.slice('subject='.length))
  const issuers = lines.filter((l) => l.startsWith('issuer=')).map((l) => l.slice('issuer='.length))
  t.equal(subjects.length, certs.length)
  let mismatches = 0
  certs.forEach((c, i) => {
    const subject = [...parseDn(subjects[i] ?? '')].reverse()
    const issuer = [...parseDn(issuers[i] ?? '')].reverse()
    // serial and notAfter from OpenSSL through node:crypto, independently of our DER reader
    if (!dnEquals(subject, c.subject) || !dnEquals(issuer, c.issuer) || BigInt('0x' + c.x509.serialNumber) !== c.serial ||
      new Date(c.x509.validTo).getTime() !== c.notAfter.getTime()) {
      mismatches++
      t.fail(`${c.subjectString}: openssl says ${subjects[i] ?? ''}`)
    }
  })
  t.equal(mismatches, 0)
})

t.test('certificateMatchesKey compares SubjectPublicKeyInfo', async (t) => {
  const { certificate, key } = createTestPki().issue('CN=leaf')
  if (key === undefined) throw new Error('issue() returned no key')
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  t.ok(certificateMatchesKey(certificate, certificate.publicKey))
  t.ok(certificateMatchesKey(certificate, key), 'the private key is reduced to its public half')
  t.notOk(certificateMatchesKey(certificate, other.publicKey))
  t.notOk(certificateMatchesKey(certificate, ec.publicKey))
})

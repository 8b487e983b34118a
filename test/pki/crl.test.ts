import { spawnSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createTestPki } from '../../core/pki/ca.ts'
import { crlSignedBy, issueCrl, parseCrl, splitCrlPem } from '../../core/pki/crl.ts'

const pki = createTestPki()

function opensslCrl (pem: string, args: string[]): { status: number | null, out: string } {
  const dir = mkdtempSync(join(tmpdir(), 'crl-'))
  try {
    writeFileSync(join(dir, 'crl.pem'), pem)
    writeFileSync(join(dir, 'ca.pem'), pki.ca.certificate.pem)
    const r = spawnSync('openssl', ['crl', '-in', join(dir, 'crl.pem'), '-noout', ...args.map((a) => a === 'CA' ? join(dir, 'ca.pem') : a)], { encoding: 'utf8' })
    return { status: r.status, out: r.stdout + r.stderr }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

t.test('an empty CRL omits revokedCertificates and verifies', async (t) => {
  const crl = issueCrl({ issuer: pki.ca, thisUpdate: new Date('2026-01-01T00:00:00Z'), nextUpdate: new Date('2026-01-08T00:00:00Z'), crlNumber: 42n })
  t.same(crl.revoked, [])
  t.equal(crl.crlNumber, 42n)
  const v = opensslCrl(crl.pem, ['-verify', '-CAfile', 'CA', '-text'])
  t.match(v.out, /verify OK/)
  t.match(v.out, /No Revoked Certificates/)
  t.match(v.out, /Last Update: Jan {2}1 00:00:00 2026 GMT/)
  t.match(v.out, /Next Update: Jan {2}8 00:00:00 2026 GMT/)
  t.match(v.out, /CRL Number:\s*\n\s*42/)
})

t.test('entries, reasons and a nextUpdate after 2049 (GeneralizedTime)', async (t) => {
  const crl = issueCrl({
    issuer: pki.ca,
    thisUpdate: new Date('2049-12-31T00:00:00Z'),
    nextUpdate: new Date('2050-01-02T00:00:00Z'),
    revoked: [
      { serial: 0x1234n, revocationDate: new Date('2049-12-30T00:00:00Z'), reason: 'keyCompromise' },
      { serial: (1n << 150n) + 5n, revocationDate: new Date('2049-12-30T00:00:00Z') }
    ]
  })
  t.same(crl.revoked.map((r) => r.serial), [0x1234n, (1n << 150n) + 5n])
  t.equal(crl.nextUpdate?.toISOString(), '2050-01-02T00:00:00.000Z')
  const v = opensslCrl(crl.pem, ['-verify', '-CAfile', 'CA', '-text'])
  t.match(v.out, /verify OK/)
  t.match(v.out, /Next Update: Jan {2}2 00:00:00 2050 GMT/)
  t.match(v.out, /Serial Number: 1234/)
  t.match(v.out, /Key Compromise/)
})

t.test('bad options are refused with stable codes', async (t) => {
  t.throws(() => issueCrl({ issuer: pki.ca, thisUpdate: new Date(2000), nextUpdate: new Date(1000) }), { code: 'PIXPROXY_ERR_CERT_ISSUE' })
  t.throws(() => issueCrl({ issuer: pki.ca, revoked: [{ serial: 0n, revocationDate: new Date() }] }), { code: 'PIXPROXY_ERR_CERT_ISSUE' })
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  t.throws(() => issueCrl({ issuer: { certificate: pki.ca.certificate, key: other } }), { code: 'PIXPROXY_ERR_KEY_CERT_MISMATCH' })
})

t.test('signature check: a flipped bit in the list is caught', async (t) => {
  const crl = issueCrl({ issuer: pki.ca, revoked: [{ serial: 77n, revocationDate: new Date() }] })
  t.equal(crlSignedBy(crl.der, pki.ca.certificate), true)
  const tampered = Buffer.from(crl.der)
  const at = tampered.indexOf(Buffer.from([0x02, 0x01, 77]))
  t.ok(at > 0, 'found the serial')
  tampered[at + 2] = 78
  t.same(parseCrl(tampered).revoked.map((r) => r.serial), [78n])
  t.equal(crlSignedBy(tampered, pki.ca.certificate), false)
  t.not(opensslCrl(parseCrl(tampered).pem, ['-verify', '-CAfile', 'CA']).out.includes('verify OK'), true, 'openssl agrees')
})

t.test('splitCrlPem: every block, in order', async (t) => {
  const a = issueCrl({ issuer: pki.ca, crlNumber: 1n })
  const b = issueCrl({ issuer: pki.ca, crlNumber: 2n })
  const parts = splitCrlPem('junk\n' + a.pem + 'between\n' + b.pem)
  t.same(parts.map((p) => parseCrl(p).crlNumber), [1n, 2n])
  t.same(splitCrlPem('no blocks'), [])
})

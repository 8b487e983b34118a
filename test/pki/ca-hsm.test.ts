// The test CA certifies a key that never leaves a real SoftHSM2 token: no CSR, only the public key read from the HSM.
import { execFileSync, spawnSync } from 'node:child_process'
import { createPublicKey, verify } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import graphene from 'graphene-pk11'
import t from 'tap'
import { createTestPki } from '../../core/pki/ca.ts'
import { certificateMatchesKey } from '../../core/pki/x509.ts'

const MODULE_PATH = '/usr/lib/softhsm/libsofthsm2.so'
const LABEL = 'pki-test'
const PIN = '123456'
const CKF_OS_LOCKING_OK = 0x2 // PKCS#11 C_INITIALIZE_ARGS flag; required for concurrent sessions (see docs)

t.test('a certificate for a non-extractable SoftHSM2 key: the HSM signs, the certificate verifies', async (t) => {
  const dir = t.testdir({ tokens: {} })
  const conf = join(dir, 'softhsm2.conf')
  writeFileSync(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`)
  // SoftHSM reads its configuration at C_Initialize: the child tool and this process must both see it.
  process.env.SOFTHSM2_CONF = conf
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', LABEL, '--so-pin', '12345678', '--pin', PIN], { stdio: 'pipe' })

  const mod = graphene.Module.load(MODULE_PATH, 'SoftHSM')
  mod.initialize({ flags: CKF_OS_LOCKING_OK })
  // eslint-disable-next-line prefer-const -- the teardown above the assignment closes it (if it was opened)
  let session: graphene.Session | undefined
  t.teardown(() => {
    session?.close()
    mod.finalize()
  })
  const slots = mod.getSlots(true)
  const slot = Array.from({ length: slots.length }, (_, i) => slots.items(i)).find((s) => s.getToken().label.trim() === LABEL)
  if (slot === undefined) throw new Error(`token ${LABEL} not found`)
  session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION)
  session.login(PIN)

  const keys = session.generateKeyPair(graphene.KeyGenMechanism.RSA,
    { keyType: graphene.KeyType.RSA, token: true, label: 'sig', modulusBits: 2048, publicExponent: Buffer.from([1, 0, 1]), verify: true },
    { keyType: graphene.KeyType.RSA, token: true, label: 'sig', private: true, sensitive: true, extractable: false, sign: true })
  const priv = keys.privateKey.getAttribute({ extractable: null, sensitive: null })
  t.same(priv, { extractable: false, sensitive: true }, 'the private key cannot leave the token')
  t.throws(() => keys.privateKey.getAttribute({ privateExponent: null }), /CKR_ATTRIBUTE_SENSITIVE/)

  const { modulus, publicExponent } = keys.publicKey.getAttribute({ modulus: null, publicExponent: null }) as { modulus: Buffer, publicExponent: Buffer }
  const hsmPublicKey = createPublicKey({ key: { kty: 'RSA', n: modulus.toString('base64url'), e: publicExponent.toString('base64url') }, format: 'jwk' })

  const pki = createTestPki({ caSubject: 'CN=SERASA Autoridade Certificadora v5, OU=CSPB-4, O=ICP-Brasil, C=BR' })
  const issued = pki.issue('CN=Banco Exemplo SPI 99999004, O=ICP-Brasil, C=BR', { publicKey: hsmPublicKey, keyUsage: ['digitalSignature', 'nonRepudiation'] })
  t.equal(issued.key, undefined, 'no software key was made')
  const cert = issued.certificate
  t.ok(certificateMatchesKey(cert, hsmPublicKey))

  const data = Buffer.from('<AppHdr>…</AppHdr>')
  const signature = session.createSign('SHA256_RSA_PKCS', keys.privateKey).once(data)
  t.ok(verify('sha256', data, cert.publicKey, signature), 'an HSM signature verifies with the certificate key')
  t.notOk(verify('sha256', Buffer.from('tampered'), cert.publicKey, signature))

  writeFileSync(join(dir, 'ca.pem'), pki.ca.certificate.pem)
  writeFileSync(join(dir, 'leaf.pem'), cert.pem)
  const r = spawnSync('openssl', ['verify', '-x509_strict', '-CAfile', join(dir, 'ca.pem'), join(dir, 'leaf.pem')], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stdout + r.stderr)
  // and openssl checks the HSM signature against the certificate on its own
  const pub = execFileSync('openssl', ['x509', '-noout', '-pubkey', '-in', join(dir, 'leaf.pem')], { encoding: 'utf8' })
  writeFileSync(join(dir, 'pub.pem'), pub)
  writeFileSync(join(dir, 'data'), data)
  writeFileSync(join(dir, 'sig'), signature)
  const v = spawnSync('openssl', ['dgst', '-sha256', '-verify', join(dir, 'pub.pem'), '-signature', join(dir, 'sig'), join(dir, 'data')], { encoding: 'utf8' })
  t.match(v.stdout, /Verified OK/)
})

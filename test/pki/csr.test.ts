// PKCS#10 requests (core/pki/csr.ts) signed by a key in SoftHSM and by a key in the local KMS, read back by openssl
// (an independent implementation), issued by the test CA and by `openssl x509 -req`, and attacked: a tampered subject,
// a swapped key, a request asking to be a CA, bad subjects and bad ICP-Brasil fields each fail with a stable code.
import t from 'tap'
import type { Test } from 'tap'
import { execFile } from 'node:child_process'
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Errors } from '../../core/errors.ts'
import { createTestPki, issueFromCsr } from '../../core/pki/ca.ts'
import { createCsr, IcpBrasilOid, isValidCnpj, parseCsr, parseOpenSslSubject, verifyCsr } from '../../core/pki/csr.ts'
import type { CertificationRequest, CsrOptions, IcpBrasilIdentity } from '../../core/pki/csr.ts'
import { Oid } from '../../core/pki/dn.ts'
import { certificateMatchesKey } from '../../core/pki/x509.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import type { Signer } from '../../core/signer.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import { createKmsClient } from '../../src/kms/client.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { KmsRequestSigner } from '../../tools/token/kms-request-signer.ts'
import { setupSoftHsm } from '../helpers/softhsm.ts'

const SUBJECT = '/C=BR/O=ICP-Brasil/OU=SPB/CN=spi.banco-exemplo.com.br'
const IDENTITY: IcpBrasilIdentity = {
  companyName: 'BANCO EXEMPLO S.A. & CIA', // '&' does not fit a PrintableString: an OCTET STRING then
  cnpj: '00038166000105',
  responsibleName: 'FULANO DE TAL',
  responsibleData: '01011980' + '12345678909' + '00000000000' + '000001234567890' + 'SSPSP'
}
const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
const REGION = 'sa-east-1'

const hsm = await setupSoftHsm(t, { keyLabels: ['pix-sign'] })
const dir = t.testdir()
const pki = createTestPki({ caSubject: 'CN=Test AC SPB, OU=Test, O=ICP-Brasil, C=BR' })
writeFileSync(join(dir, 'ca.pem'), pki.ca.certificate.pem)
writeFileSync(join(dir, 'ca.key'), pki.ca.key.export({ type: 'pkcs8', format: 'pem' }))

let files = 0
/** Runs openssl; resolves to its exit code and output (a tool that cannot start rejects). */
function openssl (args: string[], input?: { name: string, data: string | Buffer }): Promise<{ code: number, out: string }> {
  const argv = args.map((a) => a === '@IN' && input !== undefined ? join(dir, input.name) : a)
  if (input !== undefined) writeFileSync(join(dir, input.name), input.data)
  return new Promise((resolve, reject) => {
    execFile('openssl', argv, { timeout: 60_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') reject(err)
      else resolve({ code: err === null ? 0 : err.code as number, out: stdout + stderr })
    })
  })
}
const file = (ext: string): string => `f${++files}.${ext}`
const spkiPem = (k: KeyObject): string => (k.type === 'private' ? createPublicKey(k) : k).export({ type: 'spki', format: 'pem' }).toString()

/** `openssl req -verify`: OpenSSL 3.0 exits 0 even when the signature fails, so its verdict is read from the text. */
async function opensslVerifies (csr: CertificationRequest | string): Promise<{ ok: boolean, out: string }> {
  const r = await openssl(['req', '-in', '@IN', '-verify', '-noout'], { name: file('csr'), data: typeof csr === 'string' ? csr : csr.pem })
  return { ok: r.code === 0 && /self-signature verify OK/.test(r.out) && !/failure/.test(r.out), out: r.out }
}

/** What openssl reads in a request, independently of the parser under test. */
async function opensslFacts (t: Test, csr: CertificationRequest, key: KeyObject): Promise<void> {
  const v = await opensslVerifies(csr)
  t.ok(v.ok, `openssl req -verify accepts it (${v.out.trim()})`)
  const name = file('csr')
  const pub = await openssl(['req', '-in', '@IN', '-noout', '-pubkey'], { name, data: csr.pem })
  t.equal(pub.out, spkiPem(key), 'the public key in the request is the key\'s')
  const text = (await openssl(['req', '-in', join(dir, name), '-noout', '-text'])).out
  t.match(text, /Subject: C = BR, O = ICP-Brasil, OU = SPB, CN = spi.banco-exemplo.com.br/, 'subject in ASN.1 order, C first')
  t.match(text, /X509v3 Key Usage: critical\s+Digital Signature, Non Repudiation/, 'keyUsage, critical')
  t.match(text, /othername: 2\.16\.76\.1\.3\.8::.*othername: 2\.16\.76\.1\.3\.3::.*othername: 2\.16\.76\.1\.3\.2::.*othername: 2\.16\.76\.1\.3\.4::.*DNS:spi\.banco-exemplo\.com\.br/,
    'the four ICP-Brasil otherNames in DOC-ICP-04 order, then the DNS name')
  t.match(text, /Signature Algorithm: sha256WithRSAEncryption/)
  // The otherName values as openssl's ASN.1 parser decodes them (the SAN's OCTET STRING parsed on its own).
  const asn1 = (await openssl(['asn1parse', '-in', join(dir, name), '-i'])).out
  const sanOffset = /^\s*(\d+):.*OBJECT\s+:X509v3 Subject Alternative Name\n\s*(\d+):/m.exec(asn1)?.[2]
  t.ok(sanOffset, 'asn1parse finds the requested subjectAltName')
  const san = (await openssl(['asn1parse', '-in', join(dir, name), '-strparse', sanOffset as string, '-i'])).out
  t.match(san, /PRINTABLESTRING\s+:00038166000105/, 'CNPJ as PrintableString')
  t.match(san, /PRINTABLESTRING\s+:FULANO DE TAL/)
  t.match(san, /PRINTABLESTRING\s+:010119801234567890900000000000000001234567890SSPSP/)
  t.match(san, /OCTET STRING\s+:BANCO EXEMPLO S\.A\. & CIA/, 'a company name with "&" as OCTET STRING')
}

/** The request certified by the test CA and by openssl x509 -req; both chains verify with openssl. */
async function issuedBoth (t: Test, csr: CertificationRequest, key: KeyObject, signer: Signer): Promise<void> {
  const cert = issueFromCsr(csr.pem, { issuer: pki.ca })
  t.ok(certificateMatchesKey(cert, key), 'the test CA certified the requested key')
  t.equal(cert.subjectString, 'CN=spi.banco-exemplo.com.br, OU=SPB, O=ICP-Brasil, C=BR')
  const v = await openssl(['verify', '-x509_strict', '-CAfile', join(dir, 'ca.pem'), '@IN'], { name: file('pem'), data: cert.pem })
  t.equal(v.code, 0, `openssl verifies the test CA's certificate (${v.out.trim()})`)
  const certText = (await openssl(['x509', '-in', join(dir, `f${files}.pem`), '-noout', '-ext', 'subjectAltName,keyUsage'])).out
  t.match(certText, /othername: 2\.16\.76\.1\.3\.3::/, 'the requested subjectAltName is in the certificate')
  const data = Buffer.from('<AppHdr>…</AppHdr>')
  t.ok(verify('sha256', data, cert.publicKey, await signer.sign(data)), 'a signature of the key verifies with the certificate')

  const csrName = file('csr')
  writeFileSync(join(dir, csrName), csr.pem)
  const out = join(dir, file('pem'))
  const x = await openssl(['x509', '-req', '-in', join(dir, csrName), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca.key'),
    '-copy_extensions', 'copy', '-days', '1', '-out', out])
  t.equal(x.code, 0, `openssl x509 -req accepts the request (${x.out.trim()})`)
  t.equal((await openssl(['verify', '-CAfile', join(dir, 'ca.pem'), out])).code, 0, 'and its certificate verifies')
}

const options = (signer: Signer, more: Partial<CsrOptions> = {}): CsrOptions => ({
  subject: parseOpenSslSubject(SUBJECT),
  signer,
  dnsNames: ['spi.banco-exemplo.com.br'],
  icpBrasil: IDENTITY,
  ...more
})

t.test('a request signed in SoftHSM: openssl verifies it and reads every field; the test CA and openssl issue it', async (t) => {
  const store = await Pkcs11KeyStore.open({ modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.pin, poolSize: 1 })
  t.teardown(() => store.close())
  const signer = await store.signer('pix-sign')
  const key = (hsm.keys.get('pix-sign') as { publicKey: KeyObject }).publicKey
  const csr = await createCsr(options(signer))
  t.equal(csr.signatureAlgorithm, '1.2.840.113549.1.1.11')
  t.same([...csr.extensions.keys()], ['2.5.29.15', '2.5.29.17'], 'keyUsage and subjectAltName; no extKeyUsage for a signing key by default')
  t.doesNotThrow(() => verifyCsr(csr))
  await opensslFacts(t, csr, key)
  await issuedBoth(t, csr, key, signer)
})

t.test('a request signed in the local KMS (DIGEST over SHA-256): openssl verifies it; the test CA issues it', async (t) => {
  const kmsKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const ep = await startLocalAwsEndpoint({
    region: REGION,
    credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey },
    kmsKeys: [
      { keyId: '1234abcd-12ab-34cd-56ef-1234567890ab', aliases: ['alias/pix-signing'], privateKeyPem: kmsKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
      { keyId: '22222222-2222-2222-2222-222222222222', aliases: ['alias/off'], enabled: false },
      { keyId: '33333333-3333-3333-3333-333333333333', aliases: ['alias/enc'], keyUsage: 'ENCRYPT_DECRYPT' }
    ]
  })
  t.teardown(() => ep.close())
  const client = (): ReturnType<typeof createKmsClient> => createKmsClient({ endpoint: ep.url, region: REGION, credentials: CREDS, maxAttempts: 1, requestTimeoutMs: 60_000 }) // a hang guard, not a bound
  const signer = await KmsRequestSigner.open('alias/pix-signing', client())
  t.teardown(() => signer.close())
  t.match(signer.keyArn, /key\/1234abcd-12ab-34cd-56ef-1234567890ab$/, 'the alias resolved to the key ARN')
  const csr = await createCsr(options(signer))
  await opensslFacts(t, csr, kmsKey)
  await issuedBoth(t, csr, kmsKey, signer)
  const signs = ep.calls.filter((c) => c.target === 'TrentService.Sign')
  t.ok(signs.length >= 1, 'KMS made the signature')

  await t.rejects(KmsRequestSigner.open('alias/off', client()), { code: Errors.KMS_KEY_DISABLED.code }, 'a disabled key')
  await t.rejects(KmsRequestSigner.open('alias/enc', client()), { code: Errors.KMS_KEY_UNSUITABLE.code, message: /ENCRYPT_DECRYPT/ }, 'an encryption key')
  await t.rejects(KmsRequestSigner.open('alias/nope', client()), { code: Errors.KMS_KEY_NOT_FOUND.code }, 'an unknown alias')
})

t.test('attacks: a tampered subject, a swapped key, a forged signature and CA extensions are refused', async (t) => {
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const csr = await createCsr(options(SoftwareSigner.fromKeyObject(key)))

  const tampered = Buffer.from(csr.der)
  const at = tampered.indexOf(Buffer.from('spi.banco-exemplo'))
  tampered.write('evil', at, 'latin1') // CN=evilbanco-exemplo.com.br: same length, the DER stays well-formed
  const forgedSubject = parseCsr(tampered)
  t.match(forgedSubject.subjectString, /^CN=evil/, 'the tampered request parses')
  t.throws(() => verifyCsr(forgedSubject), { code: Errors.CSR_SIGNATURE.code }, 'its signature no longer verifies')
  t.notOk((await opensslVerifies(forgedSubject)).ok, 'openssl refuses it too')
  t.throws(() => issueFromCsr(tampered, { issuer: pki.ca }), { code: Errors.CSR_SIGNATURE.code }, 'the CA refuses it')

  // The same request with another public key (an attacker asking a certificate for their key under this subject).
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' })
  const swapped = Buffer.from(csr.der.toString('hex').replace(createPublicKey(key).export({ type: 'spki', format: 'der' }).toString('hex'), other.toString('hex')), 'hex')
  t.throws(() => issueFromCsr(swapped, { issuer: pki.ca }), { code: Errors.CSR_SIGNATURE.code }, 'a swapped key')

  // A signer whose signatures are made by another key than the one it reports.
  const liar: Signer = { publicKey: SoftwareSigner.fromKeyObject(key).publicKey, description: 'liar', sign: async (d) => await SoftwareSigner.fromKeyObject(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey).sign(d) }
  await t.rejects(createCsr(options(liar)), { code: Errors.CSR_SIGNATURE.code }, 'createCsr checks the signature before returning')

  // Requests made by openssl: one asking to be a CA, one asking keyCertSign, one signed with SHA-1.
  const keyFile = file('key')
  writeFileSync(join(dir, keyFile), key.export({ type: 'pkcs8', format: 'pem' }))
  const opensslCsr = async (extra: string[]): Promise<string> => {
    const out = join(dir, file('csr'))
    const r = await openssl(['req', '-new', '-key', join(dir, keyFile), '-subj', SUBJECT, '-out', out, ...extra])
    t.equal(r.code, 0, r.out)
    return (await openssl(['req', '-in', out])).out
  }
  const asCa = await opensslCsr(['-addext', 'basicConstraints=critical,CA:TRUE'])
  t.throws(() => issueFromCsr(asCa, { issuer: pki.ca }), { code: Errors.CERT_ISSUE.code, message: /2\.5\.29\.19/ }, 'basicConstraints CA:TRUE is not granted')
  const certSign = await opensslCsr(['-addext', 'keyUsage=critical,digitalSignature,keyCertSign'])
  t.throws(() => issueFromCsr(certSign, { issuer: pki.ca }), { code: Errors.CERT_ISSUE.code, message: /keyCertSign/ }, 'keyCertSign is not granted')
  const sha1 = await opensslCsr(['-sha1'])
  t.throws(() => issueFromCsr(sha1, { issuer: pki.ca }), { code: Errors.CSR_SIGNATURE.code, message: /not sha256WithRSAEncryption/ }, 'SHA-1')
  // And a plain openssl request (an independent producer) is read and issued.
  const plain = parseCsr(await opensslCsr(['-addext', 'subjectAltName=DNS:a.example', '-addext', 'extendedKeyUsage=clientAuth']))
  t.equal(plain.subjectString, 'CN=spi.banco-exemplo.com.br, OU=SPB, O=ICP-Brasil, C=BR')
  t.ok(certificateMatchesKey(issueFromCsr(plain, { issuer: pki.ca }), key), 'an openssl request is issued')

  t.throws(() => parseCsr('not a request'), { code: Errors.CSR_PARSE.code })
  t.throws(() => parseCsr(Buffer.concat([csr.der, Buffer.from([0])])), { code: Errors.CSR_PARSE.code }, 'trailing bytes')
  t.throws(() => parseCsr(pki.ca.certificate.der), { code: Errors.CSR_PARSE.code }, 'a certificate is not a request')
})

t.test('subjects in OpenSSL form: order, escapes, and bad strings with stable codes', async (t) => {
  const dn = parseOpenSslSubject('/C=BR/O=ICP-Brasil/OU=Conta\\/SPB/2.5.4.5=00038166000105/CN=a, b + c')
  t.same(dn.map((rdn) => rdn.map((a) => [a.oid, a.value])).flat(), [[Oid.C, 'BR'], [Oid.O, 'ICP-Brasil'], [Oid.OU, 'Conta/SPB'], [Oid.SERIALNUMBER, '00038166000105'], [Oid.CN, 'a, b + c']],
    'ASN.1 order as written, \\/ inside a value, an OID type, commas and plus signs literal')
  const dnParse = Errors.DN_PARSE.code
  for (const bad of ['C=BR, CN=x', '', '/', '/C=BR//CN=x', '/CN', '/CN=', '/XX=1', '/C=BR/CN=x\\', '/1.2.=x', '/CN=a\u0001b']) {
    t.throws(() => parseOpenSslSubject(bad), { code: dnParse }, `${JSON.stringify(bad)}: DN_PARSE`)
  }
  const signer = SoftwareSigner.fromKeyObject(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey)
  const field = Errors.CSR_FIELD_INVALID.code
  for (const [subject, why] of [['/O=ICP-Brasil/CN=x', /C=BR/], ['/C=US/CN=x', /C=BR/], ['/C=BR/C=BR/CN=x', /C=BR/], ['/C=BR/O=x', /one CN/],
    ['/C=BR/CN=a/CN=b', /one CN/], ['/C=BR/CN=São Paulo', /outside ICP-Brasil's set/]] as const) {
    await t.rejects(createCsr({ subject: parseOpenSslSubject(subject), signer }), { code: field, message: why }, subject)
  }
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  const ecSigner: Signer = { publicKey: ec, description: 'ec', sign: async () => Buffer.alloc(0) }
  await t.rejects(createCsr({ subject: parseOpenSslSubject(SUBJECT), signer: ecSigner }), { code: field, message: /RSA/ }, 'an EC key')
})

t.test('ICP-Brasil fields: CNPJ check digits (numeric and alphanumeric), the responsible person\'s data', async (t) => {
  t.ok(isValidCnpj('00038166000105'), 'BCB\'s CNPJ')
  t.ok(isValidCnpj('12ABC34501DE35'), 'the Receita Federal\'s alphanumeric example 12.ABC.345/01DE-35')
  for (const bad of ['00038166000106', '00.038.166/0001-05', '0003816600010', '11111111111111', '12abc34501de35']) t.notOk(isValidCnpj(bad), bad)
  const signer = SoftwareSigner.fromKeyObject(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey)
  const field = Errors.CSR_FIELD_INVALID.code
  const withId = (id: Partial<IcpBrasilIdentity>): Promise<CertificationRequest> => createCsr(options(signer, { icpBrasil: { ...IDENTITY, ...id } }))
  await t.rejects(withId({ cnpj: '00038166000106' }), { code: field, message: /CNPJ/ })
  await t.rejects(withId({ companyName: 'Banco São João' }), { code: field, message: /company name/ })
  await t.rejects(withId({ responsibleName: ' ' }), { code: field, message: /responsible name/ })
  await t.rejects(withId({ responsibleData: '3102198012345678909' }), { code: field, message: /2\.16\.76\.1\.3\.4/ }, 'too short')
  await t.rejects(withId({ responsibleData: IDENTITY.responsibleData.replace('01011980', '31021980') }), { code: field, message: /not a date/ }, '31 February')
  await t.rejects(withId({ responsibleData: '01011980' + '12345678909' + '0'.repeat(26) + 'SSPSP' }), { code: field, message: /without an RG/ })
  const noRg = await withId({ responsibleData: '01011980' + '12345678909' + '0'.repeat(26) })
  t.ok(noRg.extensions.has('2.5.29.17'), 'without an RG the field is 45 positions')
  t.equal(IcpBrasilOid.CNPJ, '2.16.76.1.3.3')
  const tls = await createCsr({ subject: parseOpenSslSubject(SUBJECT), signer, keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['clientAuth'] })
  t.same([...tls.extensions.keys()], ['2.5.29.15', '2.5.29.37'], 'no subjectAltName without names')
  await t.rejects(createCsr(options(signer, { dnsNames: ['bad name'] })), { code: field, message: /DNS name/ })
})

// The local KMS (tools/aws-local/kms.ts) against the real SDK client: what the KMS signer relies on, and every error
// shape it maps.
import t from 'tap'
import type { Test } from 'tap'
import { constants, createHash, createPublicKey, generateKeyPairSync, publicDecrypt, verify as cryptoVerify } from 'node:crypto'
import { DescribeKeyCommand, GetPublicKeyCommand, SignCommand, VerifyCommand } from '@aws-sdk/client-kms'
import type { KMSClient } from '@aws-sdk/client-kms'
import { createKmsClient } from '../../src/kms/client.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import type { LocalAwsEndpoint, LocalKmsKey } from '../../tools/aws-local/endpoint.ts'

const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
const REGION = 'sa-east-1'
const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab'
const ALIAS = 'alias/pix-proxy-signing'

async function setup (t: Test, keys: LocalKmsKey[] = [{ keyId: KEY_ID, aliases: [ALIAS] }], client: { secretAccessKey?: string } = {}): Promise<{ ep: LocalAwsEndpoint, kms: KMSClient }> {
  const ep = await startLocalAwsEndpoint({ region: REGION, accountId: '111122223333', credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey }, kmsKeys: keys })
  t.teardown(() => ep.close())
  const kms = createKmsClient({ endpoint: ep.url, region: REGION, credentials: { ...CREDS, ...client }, maxAttempts: 1 })
  t.teardown(() => kms.destroy())
  return { ep, kms }
}

async function rejection (p: Promise<unknown>): Promise<Error & { $metadata?: { httpStatusCode?: number } }> {
  try {
    await p
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a rejection')
}

const ARN = `arn:aws:kms:${REGION}:111122223333:key/${KEY_ID}`
const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest()

t.test('Sign DIGEST and RAW: RSASSA-PKCS1-v1_5 signatures that verify with the public key GetPublicKey returns', async (t) => {
  const { kms } = await setup(t)
  const pub = await kms.send(new GetPublicKeyCommand({ KeyId: ALIAS }))
  t.equal(pub.KeyId, ARN, 'GetPublicKey names the key by its ARN')
  t.equal(pub.KeySpec, 'RSA_2048')
  t.equal(pub.KeyUsage, 'SIGN_VERIFY')
  t.ok(pub.SigningAlgorithms?.includes('RSASSA_PKCS1_V1_5_SHA_256'))
  const publicKey = createPublicKey({ key: Buffer.from(pub.PublicKey as Uint8Array), format: 'der', type: 'spki' })
  t.equal(publicKey.asymmetricKeyDetails?.modulusLength, 2048)

  const message = Buffer.from('<SignedInfo>canonical bytes</SignedInfo>')
  const byDigest = await kms.send(new SignCommand({ KeyId: ALIAS, Message: sha256(message), MessageType: 'DIGEST', SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' }))
  t.equal(byDigest.KeyId, ARN)
  t.equal(byDigest.SigningAlgorithm, 'RSASSA_PKCS1_V1_5_SHA_256')
  const sig = Buffer.from(byDigest.Signature as Uint8Array)
  t.equal(sig.length, 256, 'modulus-sized')
  t.ok(cryptoVerify('sha256', message, publicKey, sig), 'the DIGEST signature is RSASSA-PKCS1-v1_5 SHA-256 of the message')
  const raw = await kms.send(new SignCommand({ KeyId: KEY_ID, Message: message, MessageType: 'RAW', SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' }))
  t.ok(Buffer.from(raw.Signature as Uint8Array).equals(sig), 'RAW over the message = DIGEST over its SHA-256 (PKCS#1 v1.5 is deterministic)')
  const emsa = publicDecrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, sig)
  t.equal(emsa.subarray(0, 19).toString('hex'), '3031300d060960864801650304020105000420', 'the SHA-256 DigestInfo prefix')

  const verified = await kms.send(new VerifyCommand({ KeyId: ARN, Message: sha256(message), MessageType: 'DIGEST', Signature: sig, SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' }))
  t.equal(verified.SignatureValid, true)
  const pss = await kms.send(new SignCommand({ KeyId: KEY_ID, Message: message, SigningAlgorithm: 'RSASSA_PSS_SHA_256' }))
  t.ok(cryptoVerify('sha256', message, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, Buffer.from(pss.Signature as Uint8Array)), 'PSS, salt of the hash length')

  for (const id of [KEY_ID, ARN, ALIAS, `arn:aws:kms:${REGION}:111122223333:${ALIAS}`]) {
    const d = await kms.send(new DescribeKeyCommand({ KeyId: id }))
    t.equal(d.KeyMetadata?.Arn, ARN, `${id} names the key`)
  }
  const d = await kms.send(new DescribeKeyCommand({ KeyId: ALIAS }))
  t.match(d.KeyMetadata, { KeyId: KEY_ID, KeyState: 'Enabled', Enabled: true, KeyUsage: 'SIGN_VERIFY', KeySpec: 'RSA_2048', Origin: 'AWS_KMS', KeyManager: 'CUSTOMER', AWSAccountId: '111122223333' })
  t.ok(d.KeyMetadata?.CreationDate instanceof Date, 'CreationDate is an epoch-seconds timestamp the SDK parses')
})

t.test('a seeded PEM key is the key KMS signs with', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const { kms } = await setup(t, [{ keyId: KEY_ID, privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }])
  const pub = await kms.send(new GetPublicKeyCommand({ KeyId: KEY_ID }))
  t.ok(Buffer.from(pub.PublicKey as Uint8Array).equals(publicKey.export({ type: 'spki', format: 'der' })), 'DER SubjectPublicKeyInfo of the seeded key')
})

t.test('errors have the shapes and codes KMS answers', async (t) => {
  const { privateKey: rsa3072 } = generateKeyPairSync('rsa', { modulusLength: 3072 })
  const { privateKey: ec } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = (k: typeof rsa3072): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()
  const ENC = '22222222-2222-2222-2222-222222222222'
  const EC = '33333333-3333-3333-3333-333333333333'
  const BIG = '44444444-4444-4444-4444-444444444444'
  const { ep, kms } = await setup(t, [
    { keyId: KEY_ID, aliases: [ALIAS] },
    { keyId: ENC, keyUsage: 'ENCRYPT_DECRYPT' },
    { keyId: EC, privateKeyPem: pem(ec) },
    { keyId: BIG, privateKeyPem: pem(rsa3072) }
  ])
  const digest = sha256(Buffer.from('x'))
  const sign = (o: Partial<ConstructorParameters<typeof SignCommand>[0]> = {}): Promise<unknown> =>
    kms.send(new SignCommand({ KeyId: KEY_ID, Message: digest, MessageType: 'DIGEST', SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256', ...o }))
  const expect = async (p: Promise<unknown>, name: string, message: RegExp, what: string): Promise<void> => {
    const err = await rejection(p)
    t.equal(err.name, name, what)
    t.match(err.message, message, `${what}: message`)
    t.equal(err.$metadata?.httpStatusCode, 400, `${what}: HTTP 400`)
  }
  await expect(sign({ KeyId: '99999999-9999-9999-9999-999999999999' }), 'NotFoundException', /does not exist/, 'an unknown key id')
  await expect(sign({ KeyId: 'alias/nope' }), 'NotFoundException', /alias\/nope is not found/, 'an unknown alias')
  await expect(kms.send(new DescribeKeyCommand({ KeyId: 'arn:aws:kms:us-east-1:111122223333:key/' + KEY_ID })), 'NotFoundException', /Invalid arn/, 'another region\'s ARN')
  await expect(sign({ Message: digest.subarray(0, 31) }), 'ValidationException', /Digest is invalid length/, 'a DIGEST of the wrong length')
  await expect(sign({ MessageType: 'RAW', Message: Buffer.alloc(4097) }), 'ValidationException', /length between 1 and 4096/, 'a RAW message over 4096 bytes')
  await expect(sign({ SigningAlgorithm: 'ECDSA_SHA_256' }), 'InvalidKeyUsageException', /incompatible with key spec RSA_2048/, 'ECDSA with an RSA key')
  await expect(sign({ KeyId: ENC }), 'InvalidKeyUsageException', /ENCRYPT_DECRYPT/, 'an ENCRYPT_DECRYPT key')
  await expect(kms.send(new VerifyCommand({ KeyId: KEY_ID, Message: digest, MessageType: 'DIGEST', Signature: Buffer.alloc(256, 1), SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' })), 'KMSInvalidSignatureException', /not valid/, 'a wrong signature')
  t.equal((await kms.send(new DescribeKeyCommand({ KeyId: EC }))).KeyMetadata?.KeySpec, 'ECC_NIST_P256')
  t.equal((await kms.send(new GetPublicKeyCommand({ KeyId: BIG }))).KeySpec, 'RSA_3072')

  ep.setKmsKeyEnabled(ALIAS, false)
  await expect(sign(), 'DisabledException', /is disabled/, 'a disabled key')
  const d = await kms.send(new DescribeKeyCommand({ KeyId: KEY_ID }))
  t.match(d.KeyMetadata, { KeyState: 'Disabled', Enabled: false }, 'DescribeKey still answers, with KeyState Disabled')
  ep.setKmsKeyEnabled(KEY_ID, true)

  ep.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', message: 'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.', times: 1 })
  await expect(sign(), 'ThrottlingException', /exceeded the rate/, 'an injected throttle')
  ep.failCalls({ target: 'TrentService', errorType: 'AccessDeniedException', message: 'User is not authorized to perform: kms:Sign', times: 1 })
  await expect(sign(), 'AccessDeniedException', /not authorized/, 'an injected access denial')
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'KMSInternalException', status: 500, times: 1 })
  const internal = await rejection(sign())
  t.equal(internal.name, 'KMSInternalException')
  t.equal(internal.$metadata?.httpStatusCode, 500)
  t.ok(await sign(), 'faults expire after `times`')

  ep.addLatency({ target: 'TrentService.Sign', ms: 300, times: 1 })
  const started = Date.now()
  await sign()
  t.ok(Date.now() - started >= 290, 'injected latency delays the call')
  t.same(ep.calls.filter((c) => c.target.startsWith('TrentService')).map((c) => c.errorType).filter((e) => e !== null).slice(-4), ['DisabledException', 'ThrottlingException', 'AccessDeniedException', 'KMSInternalException'], 'the call log records KMS calls')
})

t.test('SigV4: a wrong secret and an unsigned call are refused as AWS refuses them', async (t) => {
  const { ep } = await setup(t)
  const kms = createKmsClient({ endpoint: ep.url, region: REGION, credentials: { ...CREDS, secretAccessKey: 'wrong' }, maxAttempts: 1 })
  t.teardown(() => kms.destroy())
  const err = await rejection(kms.send(new DescribeKeyCommand({ KeyId: KEY_ID })))
  t.equal(err.name, 'InvalidSignatureException')
  const res = await fetch(ep.url, { method: 'POST', headers: { 'x-amz-target': 'TrentService.Sign', 'content-type': 'application/x-amz-json-1.1' }, body: JSON.stringify({ KeyId: KEY_ID }) })
  t.equal(res.status, 400)
  t.match(await res.json(), { __type: 'MissingAuthenticationTokenException' })
})

t.test('request quota: a token bucket on Sign and Verify, ThrottlingException (400) beyond it, refilled by the clock', async (t) => {
  let nowMs = 1_000
  const ep = await startLocalAwsEndpoint({ region: REGION, accountId: '111122223333', credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey }, kmsKeys: [{ keyId: KEY_ID }], monotonicMs: () => nowMs })
  t.teardown(() => ep.close())
  const kms = createKmsClient({ endpoint: ep.url, region: REGION, credentials: CREDS, maxAttempts: 1 })
  t.teardown(() => kms.destroy())
  const digest = sha256(Buffer.from('x'))
  const sign = async (): Promise<Uint8Array | undefined> => (await kms.send(new SignCommand({ KeyId: KEY_ID, Message: digest, MessageType: 'DIGEST', SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' }))).Signature

  t.throws(() => { ep.setKmsRequestQuota({ perSecond: 0 }) }, { code: 'PIXPROXY_ERR_AWS_LOCAL_ENDPOINT' }, 'a quota of nothing is refused')
  ep.setKmsRequestQuota({ perSecond: 500, burst: 2 })
  t.ok(await sign())
  const signature = await sign()
  t.ok(signature, 'the burst: two calls at the same instant')
  const err = await rejection(sign())
  t.equal(err.name, 'ThrottlingException', 'the third at that instant is throttled')
  t.equal(err.$metadata?.httpStatusCode, 400)
  t.equal(err.message, 'You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.')
  const verify = async (): Promise<unknown> => await kms.send(new VerifyCommand({ KeyId: KEY_ID, Message: digest, MessageType: 'DIGEST', Signature: signature, SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' }))
  t.equal((await rejection(verify())).name, 'ThrottlingException', 'Verify shares the quota')
  t.ok(await kms.send(new DescribeKeyCommand({ KeyId: KEY_ID })), 'DescribeKey is not under it')

  nowMs += 1 // 0.5 token: still nothing whole, and a throttled call does not spend it
  t.equal((await rejection(sign())).name, 'ThrottlingException')
  nowMs += 1 // 1 token
  t.ok(await sign(), 'one call per 2 ms at 500/s')
  t.equal((await rejection(sign())).name, 'ThrottlingException')
  nowMs += 60_000
  t.ok(await sign())
  t.ok(await sign())
  t.equal((await rejection(sign())).name, 'ThrottlingException', 'a quiet spell saves at most the burst')

  ep.setKmsRequestQuota(null)
  for (let i = 0; i < 5; i++) t.ok(await sign(), 'no quota: no throttle')
  const throttled = ep.calls.filter((c) => c.target === 'TrentService.Sign' && c.errorType === 'ThrottlingException')
  t.equal(throttled.length, 4, 'the call log records each throttle')
})

import t from 'tap'
import { generateKeyPairSync, sign, verify } from 'node:crypto'
import { Errors } from '../../core/errors.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { holdThreadPool } from '../helpers/thread-pool.ts'

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })

t.test('signs RSASSA-PKCS1-v1_5 SHA-256 over the data it is given', async (t) => {
  const signer = SoftwareSigner.fromKeyObject(privateKey)
  t.ok(signer.publicKey.equals(publicKey))
  for (const data of [Buffer.alloc(0), Buffer.from('<SignedInfo/>'), new Uint8Array([1, 2, 3])]) {
    const sig = await signer.sign(data)
    t.equal(sig.length, 256)
    t.same(sig, sign('sha256', data, privateKey), 'same bytes as a direct PKCS#1 v1.5 sign')
    t.ok(verify('sha256', data, publicKey, sig))
  }
})

t.test('loads PEM keys, PKCS#1, PKCS#8 and encrypted', async (t) => {
  const data = Buffer.from('pem')
  const expected = sign('sha256', data, privateKey)
  const pkcs1 = privateKey.export({ type: 'pkcs1', format: 'pem' })
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'pem' })
  const encrypted = privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'correct horse' })
  t.same(await SoftwareSigner.fromPem(pkcs1).sign(data), expected)
  t.same(await SoftwareSigner.fromPem(Buffer.from(pkcs8)).sign(data), expected)
  t.same(await SoftwareSigner.fromPem(encrypted, 'correct horse').sign(data), expected)
  t.throws(() => SoftwareSigner.fromPem(encrypted, 'wrong'), { code: Errors.CONFIG_INVALID.code })
  t.throws(() => SoftwareSigner.fromPem('not a key'), { code: Errors.CONFIG_INVALID.code })
})

t.test('refuses keys it cannot use for RSASSA-PKCS1-v1_5', async (t) => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  t.throws(() => SoftwareSigner.fromKeyObject(ec.privateKey), { code: Errors.CONFIG_INVALID.code, message: /RSA/ })
  t.throws(() => SoftwareSigner.fromKeyObject(publicKey), { code: Errors.CONFIG_INVALID.code, message: /private key/ })
  const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })
  t.throws(() => SoftwareSigner.fromKeyObject(pss.privateKey), { code: Errors.CONFIG_INVALID.code })
})

t.test('the description names the key without revealing it', async (t) => {
  const signer = SoftwareSigner.fromKeyObject(privateKey)
  t.match(signer.description, /^software RSA-2048 key spki-sha256:[0-9a-f]{16}$/)
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const body = pem.split('\n')[1] as string
  t.notOk(signer.description.includes(body.slice(0, 16)))
  t.equal(SoftwareSigner.fromKeyObject(privateKey).description, signer.description, 'stable for the same key')
})

t.test('signing runs off the event loop', async (t) => {
  const signer = SoftwareSigner.fromKeyObject(privateKey)
  await signer.sign(Buffer.from('warm-up'))
  // Every thread of libuv's pool is held: a sign queued there cannot start until the test releases it, while a
  // sign on the event loop would not wait for that at all.
  const pool = holdThreadPool(t.testdir())
  t.teardown(() => pool.release())
  const data = Array.from({ length: 100 }, (_, i) => Buffer.from(`m${i}`))
  let settled = 0
  const pending = data.map((d) => signer.sign(d).finally(() => { settled++ }))
  let turns = 0
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setTimeout(resolve, 1))
    turns++
  }
  t.equal(turns, 5, 'the event loop ran timers and immediates while the signs were pending')
  t.equal(settled, 0, 'no sign completed while the thread pool was held: they run off the event loop')
  await pool.release()
  const sigs = await Promise.all(pending)
  t.ok(sigs.every((s, i) => verify('sha256', data[i] as Buffer, publicKey, s)), 'once released, every signature verifies')
})

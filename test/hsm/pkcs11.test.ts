import t from 'tap'
import { execFile } from 'node:child_process'
import { generateKeyPairSync, randomBytes, verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { KeyGenMechanism, KeyType, Module, ObjectClass, SessionFlag } from 'graphene-pk11'
import type { Session } from 'graphene-pk11'
import pkcs11js from 'pkcs11js'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { Pkcs11KeyStore } from '../../src/hsm/pkcs11.ts'
import type { Pkcs11Options, Pkcs11Schedule } from '../../src/hsm/session-pool.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { openRawModule, setupSoftHsm } from '../helpers/softhsm.ts'
import { holdThreadPool } from '../helpers/thread-pool.ts'
import { generateRsaKeyPair } from '../../tools/token/keygen.ts'

const hsm = await setupSoftHsm(t, { keyLabels: ['pix-sign', 'pix-other'] })
const signKey = hsm.keys.get('pix-sign')
if (signKey === undefined) throw new Error('fixture key missing')

function options (extra: Partial<Pkcs11Options> = {}): Pkcs11Options {
  return { modulePath: hsm.modulePath, tokenLabel: hsm.tokenLabel, pin: hsm.pin, ...extra }
}

async function openStore (tt: { teardown (fn: () => unknown): void }, extra: Partial<Pkcs11Options> = {}): Promise<Pkcs11KeyStore> {
  const store = await Pkcs11KeyStore.open(options(extra))
  tt.teardown(() => store.close())
  return store
}

function rsaVerify (publicKey: KeyObject, data: Uint8Array, signature: Buffer): boolean {
  return verify('sha256', data, publicKey, signature)
}

function openssl (args: string[]): Promise<{ code: number, out: string }> {
  return new Promise((resolve) => {
    execFile('openssl', args, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, out: stdout + stderr })
    })
  })
}

/** Runs `fn` with a graphene session of its own on the module a store already initialised (no finalize). */
async function withGrapheneSession<T> (fn: (session: Session) => T | Promise<T>, rw = false): Promise<T> {
  const mod = Module.load(hsm.modulePath)
  const slots = mod.getSlots(true)
  let session: Session | undefined
  try {
    for (let i = 0; i < slots.length; i++) {
      const slot = slots.items(i)
      if (slot.getToken().label === hsm.tokenLabel) session = slot.open(rw ? SessionFlag.RW_SESSION | SessionFlag.SERIAL_SESSION : SessionFlag.SERIAL_SESSION)
    }
    if (session === undefined) throw new Error('token not found')
    return await fn(session)
  } finally {
    session?.close()
    mod.close()
  }
}

/** A manual clock for the store's deadlines (Pkcs11Options.schedule): nothing fires until the test advances it. */
function manualClock (): { schedule: Pkcs11Schedule, advance (ms: number): void, armed (): number } {
  let now = 0
  const timers: Array<{ at: number, fn: () => void, live: boolean }> = []
  return {
    schedule (fn, ms) {
      const timer = { at: now + ms, fn, live: true }
      timers.push(timer)
      return () => { timer.live = false }
    },
    advance (ms) {
      now += ms
      // Due timers fire in deadline order, ties in the order they were armed (Array#sort is stable).
      for (const timer of timers.filter((x) => x.live && x.at <= now).sort((a, b) => a.at - b.at)) {
        if (!timer.live) continue
        timer.live = false
        timer.fn()
      }
    },
    armed: () => timers.filter((x) => x.live).length
  }
}

function isCode (err: unknown, code: string): boolean {
  return err instanceof PixProxyError && err.code === code
}

t.test('signatures verify with node:crypto and openssl against the public key', async (t) => {
  const store = await openStore(t, { poolSize: 2 })
  const signer = await store.signer('pix-sign')
  t.ok(signer.publicKey.equals(signKey.publicKey), 'public key is the generated one')
  t.equal(signer.publicKey.asymmetricKeyDetails?.modulusLength, 2048)
  t.equal(signer.description, `pkcs11:token=${hsm.tokenLabel};object=pix-sign;type=private`)

  const data = Buffer.from('<SignedInfo>pix-proxy</SignedInfo>')
  const sig = await signer.sign(data)
  t.equal(sig.length, 256)
  t.ok(rsaVerify(signer.publicKey, data, sig), 'node:crypto verifies')
  t.notOk(rsaVerify(signer.publicKey, Buffer.from('<SignedInfo>pix-proxY</SignedInfo>'), sig), 'other data does not verify')
  t.notOk(rsaVerify((await store.signer('pix-other')).publicKey, data, sig), 'another key does not verify')
  t.same(await signer.sign(data), sig, 'RSASSA-PKCS1-v1_5 is deterministic')

  // A Uint8Array view into a larger buffer signs exactly the viewed bytes.
  const backing = Buffer.concat([Buffer.from('xxxx'), data, Buffer.from('yyyy')])
  const view = new Uint8Array(backing.buffer, backing.byteOffset + 4, data.length)
  t.same(await signer.sign(view), sig)

  const dir = t.testdir()
  await writeFile(join(dir, 'data'), data)
  await writeFile(join(dir, 'sig'), sig)
  await writeFile(join(dir, 'pub.pem'), signer.publicKey.export({ type: 'spki', format: 'pem' }))
  const ok = await openssl(['dgst', '-sha256', '-verify', join(dir, 'pub.pem'), '-signature', join(dir, 'sig'), join(dir, 'data')])
  t.equal(ok.code, 0, ok.out)
  t.match(ok.out, /Verified OK/)
})

t.test('the HSM signer computes exactly RSASSA-PKCS1-v1_5 SHA-256 (same bytes as node:crypto for an imported key)', async (t) => {
  const store = await openStore(t, { poolSize: 1 })
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const jwk = privateKey.export({ format: 'jwk' })
  const b = (v: string | undefined): Buffer => Buffer.from(v ?? '', 'base64url')
  await withGrapheneSession((session) => {
    session.create({
      class: ObjectClass.PRIVATE_KEY,
      keyType: KeyType.RSA,
      token: false,
      private: true,
      label: 'imported',
      id: Buffer.from([0x77]),
      sign: true,
      sensitive: true,
      extractable: false,
      modulus: b(jwk.n),
      publicExponent: b(jwk.e),
      privateExponent: b(jwk.d),
      prime1: b(jwk.p),
      prime2: b(jwk.q),
      exp1: b(jwk.dp),
      exp2: b(jwk.dq),
      coefficient: b(jwk.qi)
    })
    // A session object lives as long as its session: sign while it is open, through the store's pool.
    return (async () => {
      const hsmSigner = await store.signer('imported')
      const software = SoftwareSigner.fromKeyObject(privateKey)
      for (const data of [Buffer.alloc(0), Buffer.from('a'), randomBytes(10_000)]) {
        t.same(await hsmSigner.sign(data), await software.sign(data), `${data.length} bytes`)
      }
    })()
  }, true)
})

t.test('the private key is sensitive and cannot be extracted', async (t) => {
  const store = await openStore(t, { poolSize: 1 })
  const info = await store.keyInfo('pix-sign')
  t.match(info, { label: 'pix-sign', keyType: 'RSA', modulusBits: 2048, sign: true, sensitive: true, extractable: false, alwaysSensitive: true, neverExtractable: true })
  t.equal(info.id, signKey.id.toString('hex'))

  await withGrapheneSession((session) => {
    const found = session.find({ class: ObjectClass.PRIVATE_KEY, label: 'pix-sign' })
    t.equal(found.length, 1)
    const key = found.items(0)
    for (const attr of ['privateExponent', 'prime1', 'prime2', 'exp1', 'exp2', 'coefficient']) {
      t.throws(() => key.getAttribute({ [attr]: null }), { code: pkcs11js.CKR_ATTRIBUTE_SENSITIVE }, `${attr} is sensitive`)
    }
    t.throws(() => key.getAttribute(pkcs11js.CKA_VALUE), pkcs11js.Pkcs11Error, 'CKA_VALUE cannot be read')
    // pkcs11js 2.1.7 throws a plain Error (message `CKR_NAME:code`) from C_SetAttributeValue, not a Pkcs11Error.
    t.throws(() => key.setAttribute({ extractable: true }), { message: /^CKR_ATTRIBUTE_READ_ONLY:/ }, 'CKA_EXTRACTABLE cannot be turned on')
    t.throws(() => key.setAttribute({ sensitive: false }), { message: /^CKR_ATTRIBUTE_READ_ONLY:/ }, 'CKA_SENSITIVE cannot be turned off')
    const wrapping = session.generateKey(KeyGenMechanism.AES, { keyType: KeyType.AES, token: false, valueLen: 32, wrap: true, encrypt: true })
    t.throws(() => session.wrapKey({ name: 'AES_KEY_WRAP_PAD', params: null }, wrapping, key.toType()),
      { code: pkcs11js.CKR_KEY_UNEXTRACTABLE }, 'wrapping it out fails with CKR_KEY_UNEXTRACTABLE')
  }, true)
})

t.test('1,000 concurrent signs on a pool of 4: all verify, the pool stays bounded and the event loop responsive', async (t) => {
  const SIGNS = 1_000
  // No deadline ever passes (the clock is never advanced): the batch may take as long as a loaded machine needs.
  const clock = manualClock()
  const store = await openStore(t, { poolSize: 4, acquireTimeoutMs: 30_000, schedule: clock.schedule })
  const signer = await store.signer('pix-sign')
  await signer.sign(Buffer.from('warm-up'))
  const inputs = Array.from({ length: SIGNS }, (_, i) => Buffer.from(`message ${i} ${randomBytes(8).toString('hex')}`))

  // Every thread of libuv's pool is held: an asynchronous C_Sign is queued there and cannot start until release.
  const pool = holdThreadPool(t.testdir())
  t.teardown(() => pool.release())
  let maxBusy = 0
  let settled = 0
  const pending = inputs.map((d) => signer.sign(d).then((sig) => {
    maxBusy = Math.max(maxBusy, store.stats().busy)
    return sig
  }).finally(() => { settled++ }))
  t.same(store.stats(), { size: 4, idle: 0, busy: 4, waiting: SIGNS - 4, replaced: 0 }, 'four signs hold the four sessions, the others queue for them')

  // Signing on the event loop would have finished the first four signs before any timer could run. Instead the
  // event loop runs timers and immediates while the four are known to be in progress (held on the thread pool).
  let turns = 0
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setTimeout(resolve, 1))
    turns++
  }
  t.equal(turns, 5, 'the event loop ran timers and immediates while four signs were in progress')
  t.equal(settled, 0, 'no sign completed while the thread pool was held: C_Sign runs off the event loop')
  t.same(store.stats(), { size: 4, idle: 0, busy: 4, waiting: SIGNS - 4, replaced: 0 }, 'still four in progress, the rest queued')

  await pool.release()
  const signatures = await Promise.all(pending)
  t.equal(signatures.length, SIGNS)
  t.ok(signatures.every((sig, i) => rsaVerify(signer.publicKey, inputs[i] as Buffer, sig)), 'every signature verifies against its own message')
  t.equal(new Set(signatures.map((s) => s.toString('hex'))).size, SIGNS, 'distinct messages, distinct signatures')
  t.ok(maxBusy <= 4, `never more than 4 sessions busy (saw at most ${maxBusy} at any completion)`)
  t.equal(clock.armed(), 0, 'every waiter was served and its deadline disarmed')
  t.same(store.stats(), { size: 4, idle: 4, busy: 0, waiting: 0, replaced: 0 })
})

t.test('wrong PIN, unknown token, unloadable module: clear errors, nothing left loaded', async (t) => {
  await t.rejects(Pkcs11KeyStore.open(options({ pin: 'not-the-pin' })), { code: Errors.HSM_PIN_INCORRECT.code })
  const raw = openRawModule(hsm.modulePath)
  t.teardown(() => raw.close())
  t.throws(() => raw.lib.C_GetInfo(), { code: pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED }, 'a failed open finalizes the module')

  await t.rejects(Pkcs11KeyStore.open(options({ tokenLabel: 'no-such-token' })), { code: Errors.HSM_TOKEN_NOT_FOUND.code })
  await t.rejects(Pkcs11KeyStore.open(options({ modulePath: join(hsm.dir, 'missing.so') })), { code: Errors.HSM_MODULE_LOAD.code })
  await t.rejects(Pkcs11KeyStore.open(options({ poolSize: 0 })), { code: Errors.CONFIG_INVALID.code })
  await t.rejects(Pkcs11KeyStore.open(options({ pin: '' })), { code: Errors.CONFIG_INVALID.code })

  // And after all of that, the right PIN still works.
  const store = await openStore(t)
  await store.check()
})

t.test('missing, ambiguous and unusable keys', async (t) => {
  const store = await openStore(t, { poolSize: 1 })
  await t.rejects(store.signer('no-such-key'), { code: Errors.HSM_KEY_NOT_FOUND.code })
  await withGrapheneSession(async (session) => {
    const pub = { keyType: KeyType.RSA, token: false, verify: true, modulusBits: 2048, publicExponent: Buffer.from([1, 0, 1]) }
    const prv = { keyType: KeyType.RSA, token: false, sensitive: true, extractable: false }
    session.generateKeyPair(KeyGenMechanism.RSA, { ...pub, label: 'twice' }, { ...prv, label: 'twice', sign: true })
    session.generateKeyPair(KeyGenMechanism.RSA, { ...pub, label: 'twice' }, { ...prv, label: 'twice', sign: true })
    session.generateKeyPair(KeyGenMechanism.RSA, { ...pub, label: 'no-sign' }, { ...prv, label: 'no-sign', sign: false, decrypt: true })
    await t.rejects(store.signer('twice'), { code: Errors.HSM_KEY_AMBIGUOUS.code })
    await t.rejects(store.signer('no-sign'), { code: Errors.HSM_KEY_UNSUPPORTED.code })
  }, true)
  await t.rejects(generateRsaKeyPair(store, 'pix-sign'), { code: Errors.HSM_KEY_EXISTS.code })
})

t.test('pool timeout: FIFO waiters fail with HSM_POOL_TIMEOUT after their deadline', async (t) => {
  // The deadlines run on a manual clock: which waiters time out is decided by the test, not by how fast the
  // machine signs. sign() takes its place in the pool synchronously, so nothing is signed until the first await.
  const clock = manualClock()
  const store = await openStore(t, { poolSize: 1, acquireTimeoutMs: 40, schedule: clock.schedule })
  const signer = await store.signer('pix-sign')
  const data = Buffer.from('queued')
  const served: number[] = []
  let settled = 0
  const sign = (i: number): Promise<Buffer> => signer.sign(data).then((sig) => { served.push(i); return sig }).finally(() => { settled++ })
  // Sign 0 takes the only session; signs 1..99 queue at t=0 ms, signs 100..199 at t=20 ms.
  const early = Array.from({ length: 100 }, (_, i) => sign(i))
  t.same(store.stats(), { size: 1, idle: 0, busy: 1, waiting: 99, replaced: 0 })
  clock.advance(20)
  const late = Array.from({ length: 100 }, (_, i) => sign(100 + i))
  t.equal(store.stats().waiting, 199)
  clock.advance(19)
  t.equal(store.stats().waiting, 199, 'at t=39 ms nobody has given up yet')
  clock.advance(1)
  t.equal(store.stats().waiting, 100, 'at t=40 ms the 99 waiters queued at t=0 left the queue')
  t.equal(settled, 0, 'nothing settled synchronously')

  const results = await Promise.allSettled([...early, ...late])
  const completed = results.filter((r) => r.status === 'fulfilled').length
  t.equal(completed, 101, 'the running sign and the 100 waiters still within their deadline completed, the others timed out')
  t.same(served, [0, ...Array.from({ length: 100 }, (_, i) => 100 + i)], 'served strictly in arrival order')
  results.forEach((r, i) => {
    if (i >= 1 && i < 100) t.ok(r.status === 'rejected' && isCode(r.reason, Errors.HSM_POOL_TIMEOUT.code), `waiter ${i} rejected with HSM_POOL_TIMEOUT`)
    else t.ok(r.status === 'fulfilled' && rsaVerify(signer.publicKey, data, r.value), `sign ${i} verifies`)
  })
  t.equal(clock.armed(), 0, 'the deadlines of the served waiters were disarmed')
  t.same(store.stats(), { size: 1, idle: 1, busy: 0, waiting: 0, replaced: 0 })
  t.ok(rsaVerify(signer.publicKey, data, await signer.sign(data)), 'the pool serves again afterwards')
})

t.test('a session closed underneath the pool is replaced and the sign retried', async (t) => {
  const store = await openStore(t, { poolSize: 2 })
  const signer = await store.signer('pix-sign')
  const raw = openRawModule(hsm.modulePath)
  t.teardown(() => raw.close())
  const sessions = raw.sessions()
  t.equal(sessions.length, 2, 'the pool holds two sessions')
  raw.lib.C_CloseSession(sessions[0] as Buffer)

  for (let i = 0; i < 4; i++) {
    const data = Buffer.from(`after close ${i}`)
    t.ok(rsaVerify(signer.publicKey, data, await signer.sign(data)), `sign ${i} succeeds`)
  }
  t.same(store.stats(), { size: 2, idle: 2, busy: 0, waiting: 0, replaced: 1 })
  t.equal(raw.sessions().length, 2)
})

t.test('all sessions closed underneath (login lost): replaced, logged in again, signs succeed', async (t) => {
  const store = await openStore(t, { poolSize: 2 })
  const signer = await store.signer('pix-sign')
  const raw = openRawModule(hsm.modulePath)
  t.teardown(() => raw.close())
  raw.lib.C_CloseAllSessions(raw.slotOf(hsm.tokenLabel))
  t.equal(raw.sessions().length, 0)

  const inputs = Array.from({ length: 8 }, (_, i) => Buffer.from(`after close-all ${i}`))
  const sigs = await Promise.all(inputs.map((d) => signer.sign(d)))
  t.ok(sigs.every((s, i) => rsaVerify(signer.publicKey, inputs[i] as Buffer, s)))
  t.equal(store.stats().replaced, 2)
  t.equal(store.stats().size, 2)
  await store.check()
})

t.test('logged out underneath (object handles invalidated): logs in again and signs', async (t) => {
  const store = await openStore(t, { poolSize: 2 })
  const signer = await store.signer('pix-sign')
  const raw = openRawModule(hsm.modulePath)
  t.teardown(() => raw.close())
  const [first] = raw.sessions()
  raw.lib.C_Logout(first as Buffer)

  const data = Buffer.from('after logout')
  t.ok(rsaVerify(signer.publicKey, data, await signer.sign(data)))
  t.equal(store.stats().replaced, 0, 'the sessions themselves were fine')
})

t.test('close: in-flight signs finish, queued ones fail with HSM_POOL_CLOSED, idempotent, module finalized', async (t) => {
  const lines: string[] = []
  const log = { warn: (o: object, m: string) => { lines.push(JSON.stringify(o) + m) }, info: (o: object, m: string) => { lines.push(JSON.stringify(o) + m) } }
  const store = await Pkcs11KeyStore.open(options({ poolSize: 1, log }))
  const signer = await store.signer('pix-sign')
  const data = Buffer.from('closing')
  const pending = Array.from({ length: 10 }, () => signer.sign(data))
  const closing = store.close()
  t.equal(store.close(), closing, 'a second close returns the same promise')
  const results = await Promise.allSettled(pending)
  await closing
  const first = results[0]
  t.equal(first?.status, 'fulfilled', 'the sign already running completed')
  if (first?.status === 'fulfilled') t.ok(rsaVerify(signer.publicKey, data, first.value))
  t.ok(results.slice(1).every((r) => r.status === 'rejected' && isCode(r.reason, Errors.HSM_POOL_CLOSED.code)), 'queued signs fail with HSM_POOL_CLOSED')
  await t.rejects(signer.sign(data), { code: Errors.HSM_POOL_CLOSED.code })
  await t.rejects(store.check(), { code: Errors.HSM_POOL_CLOSED.code })
  await t.rejects(store.signer('pix-sign'), { code: Errors.HSM_POOL_CLOSED.code })
  await store.close()
  t.same(store.stats(), { size: 0, idle: 0, busy: 0, waiting: 0, replaced: 0 })

  const raw = openRawModule(hsm.modulePath)
  t.teardown(() => raw.close())
  t.throws(() => raw.lib.C_GetInfo(), { code: pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED }, 'C_Finalize ran')
  t.notOk(lines.some((l) => l.includes(hsm.pin)), 'the PIN never reaches the log')
})

t.test('two stores on one module: the second shares it and leaves finalize and logout to the first', async (t) => {
  const warnings: string[] = []
  const first = await openStore(t, { poolSize: 1 })
  const second = await Pkcs11KeyStore.open(options({ poolSize: 1, log: { warn: (_o, m) => { warnings.push(m) }, info: () => {} } }))
  t.match(warnings.join('\n'), /already initialised/)
  const data = Buffer.from('shared')
  const s2 = await second.signer('pix-sign')
  t.ok(rsaVerify(s2.publicKey, data, await s2.sign(data)))
  await second.close()
  const s1 = await first.signer('pix-sign')
  t.ok(rsaVerify(s1.publicKey, data, await s1.sign(data)), 'the first store still signs after the second closed')
})

t.test('the PIN does not leak through inspection or stats', async (t) => {
  const store = await openStore(t, { poolSize: 1 })
  const signer = await store.signer('pix-sign')
  for (const text of [inspect(store, { depth: 5, showHidden: true }), inspect(signer, { depth: 5, showHidden: true }), JSON.stringify(store.stats()), signer.description]) {
    t.notOk(text.includes(hsm.pin))
  }
})

t.test('sign on a key whose private object went away fails with HSM_KEY_NOT_FOUND after one retry', async (t) => {
  const store = await openStore(t, { poolSize: 1 })
  const victim = await generateRsaKeyPair(store, 'to-delete')
  const signer = await store.signer('to-delete')
  t.ok(signer.publicKey.equals(victim.publicKey))
  await withGrapheneSession((session) => {
    t.equal(session.destroy({ label: 'to-delete' }), 2, 'both halves destroyed')
  }, true)
  await t.rejects(signer.sign(Buffer.from('x')), { code: Errors.HSM_KEY_NOT_FOUND.code })
  t.equal(store.stats().busy, 0, 'the session went back to the pool')
})

t.test('close with operations still running at its deadline: rejects, then finishes the shutdown when they end', async (t) => {
  const warnings: string[] = []
  // The close deadline runs on a manual clock, passed by the test while the sign holds the session (a real 1 ms
  // timer raced SoftHSM's C_Sign and sometimes lost, whatever the message size).
  const clock = manualClock()
  const store = await Pkcs11KeyStore.open(options({ poolSize: 1, closeTimeoutMs: 1, schedule: clock.schedule, log: { warn: (_o, m) => { warnings.push(m) }, info: () => {} } }))
  const signer = await store.signer('pix-sign')
  const data = Buffer.from('running at the close deadline')
  let ended = false
  const running = signer.sign(data).finally(() => { ended = true })
  const queued = t.rejects(signer.sign(data), { code: Errors.HSM_POOL_CLOSED.code }, 'a queued sign fails at once')
  const closing = store.close()
  t.equal(clock.armed(), 1, 'close() armed its deadline')
  t.same(store.stats(), { size: 1, idle: 0, busy: 1, waiting: 0, replaced: 0 }, 'the sign is running')
  clock.advance(1)
  t.notOk(ended, 'the deadline passed before the sign ended')
  await t.rejects(closing, { code: Errors.HSM_OPERATION.code, message: /1 operations still running after 1 ms/ })
  t.match(warnings.join('\n'), /finishes when they end/)
  await queued
  t.ok(rsaVerify(signer.publicKey, data, await running), 'the running sign completed')
  t.same(store.stats(), { size: 0, idle: 0, busy: 0, waiting: 0, replaced: 0 }, 'sessions closed once it ended')
  const raw = openRawModule(hsm.modulePath)
  t.teardown(() => raw.close())
  t.throws(() => raw.lib.C_GetInfo(), { code: pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED }, 'and the module finalized')
})

t.test('a session left with an operation active underneath (CKR_OPERATION_ACTIVE) is replaced and the sign retried', async (t) => {
  const store = await openStore(t, { poolSize: 1 })
  const signer = await store.signer('pix-sign')
  const raw = openRawModule(hsm.modulePath)
  t.teardown(() => raw.close())
  const [only] = raw.sessions()
  raw.lib.C_DigestInit(only as Buffer, { mechanism: pkcs11js.CKM_SHA256 })
  const data = Buffer.from('after an operation was left active')
  t.ok(rsaVerify(signer.publicKey, data, await signer.sign(data)))
  t.same(store.stats(), { size: 1, idle: 1, busy: 0, waiting: 0, replaced: 1 })
})

t.test('a failure that persists is retried once only, then reported; the pool recovers', async (t) => {
  const store = await openStore(t, { poolSize: 2 })
  await withGrapheneSession(async (session) => {
    // CKA_ALWAYS_AUTHENTICATE wants a context-specific login before every sign: C_Sign answers
    // CKR_USER_NOT_LOGGED_IN on any session, so the retry on a fresh session fails the same way.
    session.generateKeyPair(KeyGenMechanism.RSA,
      { keyType: KeyType.RSA, token: false, label: 'always-auth', verify: true, modulusBits: 2048, publicExponent: Buffer.from([1, 0, 1]) },
      { keyType: KeyType.RSA, token: false, label: 'always-auth', sign: true, sensitive: true, extractable: false, alwaysAuth: true })
    const signer = await store.signer('always-auth')
    await t.rejects(signer.sign(Buffer.from('x')), { code: Errors.HSM_OPERATION.code, message: 'HSM operation C_Sign failed: CKR_USER_NOT_LOGGED_IN' })
    t.same(store.stats(), { size: 2, idle: 2, busy: 0, waiting: 0, replaced: 2 }, 'both attempts discarded their session, both were replaced')
  }, true)
  const signer = await store.signer('pix-sign')
  const data = Buffer.from('still fine')
  t.ok(rsaVerify(signer.publicKey, data, await signer.sign(data)), 'other keys still sign')
})

// Sign calls beyond the KMS client's sockets (issue 16): the real SDK client on real sockets against the local KMS,
// whose Sign answers are held on a barrier (latency injected by the endpoint, released by the test), so every step
// is decided by counts of calls, not by how fast the machine is.
//
// Why a call waiting for a socket fails: @smithy/node-http-handler's setConnectionTimeout arms its timer when the
// request is created (at once when connectionTimeout < 2 s; 1 s later for longer timeouts, with 1 s taken off) and
// clears it only on the request's 'socket' event (or on 'connect' when that socket is still connecting). The Node
// agent emits 'socket' only when it hands the request a socket; a request queued behind maxSockets busy sockets gets
// none, so after connectionTimeout the handler destroys it and rejects with a TimeoutError ("the request socket did
// not establish a connection with the server within the configured timeout"), though KMS was never asked. The
// signer maps that to KMS_UNAVAILABLE like any timeout, and the breaker counts it as an outage.
import t from 'tap'
import type { Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { DescribeKeyCommand, SignCommand } from '@aws-sdk/client-kms'
import type { KMSClient } from '@aws-sdk/client-kms'
import { createKmsClient, KMS_SIGNS_IN_FLIGHT, KMS_SOCKETS } from '../../src/kms/client.ts'
import { KmsGuard } from '../../src/kms/guard.ts'
import { KmsSigner, kmsError } from '../../src/kms/signer.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { ManualClock } from '../audit/fixtures/clock.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import type { LocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { Errors } from '../../core/errors.ts'

const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
const REGION = 'sa-east-1'
const KEY_ID = '1234abcd-12ab-34cd-56ef-1234567890ab'
/** The client's connect timeout, as in production (kms/client.ts): a real connect on loopback never comes near it. */
const CONNECT_TIMEOUT_MS = 1_000

const pem = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()
const kmsKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
const certificate = createTestPki().issue('CN=99999004 Assinatura SPI, O=Banco Exemplo S.A., C=BR', { publicKey: kmsKey }).certificate

/** A promise resolved from outside. */
function deferred (): { promise: Promise<void>, resolve: () => void } {
  let resolve = (): void => {}
  const promise = new Promise<void>((_resolve) => { resolve = _resolve })
  return { promise, resolve }
}

interface Held {
  /** Sign calls the endpoint holds now. */
  held: () => number
  /** Resolves once the endpoint holds `n` Sign calls. */
  holding: (n: number) => Promise<void>
  /** Lets every held (and later) Sign be answered. */
  release: () => void
}

async function endpoint (t: Test): Promise<LocalAwsEndpoint> {
  const ep = await startLocalAwsEndpoint({ region: REGION, credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey }, kmsKeys: [{ keyId: KEY_ID, privateKeyPem: pem(kmsKey) }] })
  t.teardown(() => ep.close())
  return ep
}

/** From now on the endpoint holds every Sign until `release`. */
function holdSigns (t: Test, ep: LocalAwsEndpoint): Held {
  const gate = deferred()
  t.teardown(gate.resolve)
  let held = 0
  const waiters: Array<{ n: number, resolve: () => void }> = []
  ep.addLatency({
    target: 'TrentService.Sign',
    until: gate.promise,
    onHeld: () => {
      held++
      for (const w of waiters.filter((x) => held >= x.n)) w.resolve()
    }
  })
  return {
    held: () => held,
    holding: async (n) => { if (held < n) await new Promise<void>((resolve) => { waiters.push({ n, resolve }) }) },
    release: gate.resolve
  }
}

/** Resolves once `n` of `promises` have rejected. */
async function rejections (promises: Array<Promise<unknown>>, n: number): Promise<unknown[]> {
  const errors: unknown[] = []
  return await new Promise((resolve) => {
    for (const p of promises) {
      p.catch((err: unknown) => {
        errors.push(err)
        if (errors.length === n) resolve([...errors])
      })
    }
  })
}

/** A KMS client with `sockets` keep-alive sockets, all connected before the test starts (so no real connect can be slow). */
async function warmClient (t: Test, ep: LocalAwsEndpoint, sockets: number): Promise<KMSClient> {
  const kms = createKmsClient({ endpoint: ep.url, region: REGION, credentials: CREDS, maxAttempts: 1, maxSockets: sockets, connectTimeoutMs: CONNECT_TIMEOUT_MS, requestTimeoutMs: 600_000 })
  t.teardown(() => kms.destroy())
  await Promise.all(Array.from({ length: sockets }, async () => await kms.send(new DescribeKeyCommand({ KeyId: KEY_ID }))))
  return kms
}

const signCommand = (): SignCommand => new SignCommand({ KeyId: KEY_ID, Message: Buffer.alloc(32, 7), MessageType: 'DIGEST', SigningAlgorithm: 'RSASSA_PKCS1_V1_5_SHA_256' })

t.test('the SDK client: Sign calls waiting for a socket fail with a connection timeout, though KMS never saw them', async (t) => {
  const ep = await endpoint(t)
  const kms = await warmClient(t, ep, 2)
  const h = holdSigns(t, ep)
  const calls = Array.from({ length: 5 }, async () => await kms.send(signCommand()))
  const settled = Promise.allSettled(calls)
  await h.holding(2)
  // Both sockets are busy with held calls and nothing frees them until release: the other three can only wait in the
  // agent, where the connect timeout is already running.
  const failed = await rejections(calls, 3)
  t.equal(h.held(), 2, 'the endpoint received only the two calls that had a socket')
  h.release()
  t.equal((await settled).filter((s) => s.status === 'fulfilled').length, 2, 'the two calls on a socket are answered')
  for (const err of failed) {
    t.match(err, { name: 'TimeoutError', message: new RegExp(`did not establish a connection with the server within the configured timeout of ${CONNECT_TIMEOUT_MS} ms`) })
    t.equal(kmsError('Sign', KEY_ID, err).code, Errors.KMS_UNAVAILABLE.code, 'the signer reads it as KMS unavailable')
  }
  t.equal(ep.calls.filter((c) => c.target === 'TrentService.Sign').length, 2, 'KMS was asked twice in all')
})

/**
 * The KMS guard around the real signer and client (3 warmed sockets), on a manual clock that stands still, so that the
 * guard's own deadline and queue timeout never fire and only the SDK's timers run; then every Sign held.
 */
async function guarded (t: Test, maxInFlight: number): Promise<{ ep: LocalAwsEndpoint, guard: KmsGuard, h: Held, circuit: string[] }> {
  const ep = await endpoint(t)
  const client = await warmClient(t, ep, 3)
  const signer = await KmsSigner.open({ keyId: KEY_ID, certificate, client })
  const circuit: string[] = []
  const guard = new KmsGuard(signer, {
    maxSignsPerSec: 1_000, // a burst of 100: every sign here has its turn at once
    queueMax: 100,
    queueTimeoutMs: 1_000,
    signDeadlineMs: 3_000,
    maxAttempts: 1,
    breakerFailures: 3,
    breakerCooldownMs: 10_000,
    maxInFlight,
    clock: new ManualClock(),
    observer: { circuit: (state) => { circuit.push(state) } }
  })
  t.teardown(() => guard.close())
  return { ep, guard, h: holdSigns(t, ep), circuit }
}

const DATA = Buffer.from('<SignedInfo/>')
const signsAt = (ep: LocalAwsEndpoint): number => ep.calls.filter((c) => c.target === 'TrentService.Sign').length

t.test('regression: a guard that lets more Sign calls in flight than the client has sockets opens its circuit on a KMS that is only slow', async (t) => {
  const { ep, guard, h, circuit } = await guarded(t, 6)
  const before = signsAt(ep)
  const signs = Array.from({ length: 6 }, async () => await guard.sign(DATA))
  const settled = Promise.allSettled(signs)
  await h.holding(3)
  const failed = await rejections(signs, 3)
  for (const err of failed) t.match(err, { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE', message: /did not establish a connection/ })
  t.equal(guard.stats().circuit, 'open', 'three "unavailable" calls in a row: the circuit is open, for every signed write')
  t.same(circuit, ['open'])
  t.equal(h.held(), 3, 'though KMS only ever saw the three calls it was slow to answer')
  h.release()
  await settled
  t.equal(signsAt(ep) - before, 3)
})

t.test('the guard keeps Sign calls in flight below the sockets: N > sockets signs under a slow KMS all succeed, the breaker stays closed', async (t) => {
  t.equal(KMS_SIGNS_IN_FLIGHT, KMS_SOCKETS - 1, 'production: one Sign fewer in flight than the client has sockets')
  const { ep, guard, h, circuit } = await guarded(t, 2)
  const before = signsAt(ep)
  const ended: string[] = []
  const signs = Array.from({ length: 6 }, async (_, i) => {
    const sig = await guard.sign(DATA)
    ended.push(`sign ${i}`)
    return sig
  })
  // The readiness probe signs outside the guard, on the spare socket.
  const check = guard.check().then((detail) => { ended.push('check'); return detail })
  const settled = Promise.allSettled([...signs, check])
  await h.holding(3)
  // Every call the guard let go is at the endpoint: none waits for a socket in the agent.
  t.same({ inFlight: guard.stats().inFlight, waitingForCall: guard.stats().waitingForCall }, { inFlight: 2, waitingForCall: 4 })
  t.equal(h.held(), 3, 'two signs and the probe, one per socket')
  // Held past the SDK's connect timeout: a call waiting in the agent would have failed by now (its timer was armed
  // before this one and is shorter, and timers fire in order).
  await new Promise((resolve) => setTimeout(resolve, 2 * CONNECT_TIMEOUT_MS))
  t.same(ended, [], 'nothing failed while KMS was slow')
  t.equal(guard.stats().circuit, 'closed')
  h.release()
  const results = await settled
  t.ok(results.every((r) => r.status === 'fulfilled'), 'all six signs and the probe succeed')
  for (const r of results.slice(0, 6)) if (r.status === 'fulfilled') t.equal((r.value as Buffer).length, 256)
  t.same(guard.stats(), { queued: 0, inFlight: 0, waitingForCall: 0, circuit: 'closed', consecutiveFailures: 0 })
  t.same(circuit, [], 'the circuit never changed state')
  t.equal(signsAt(ep) - before, 7, 'KMS signed each once, and the probe')
})

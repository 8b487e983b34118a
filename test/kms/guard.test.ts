// The KMS guard (src/kms/guard.ts, rate-limit.ts, breaker.ts) on a manual clock: the rate limit and its queue, the
// throttle retries and their bounds, the sign deadline, the circuit breaker; first around a scripted signer, then
// around the real KMS signer against the local KMS's fault injection. Time moves only when a test moves it.
import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { PixProxyError } from '../../core/errors.ts'
import { KmsGuard } from '../../src/kms/guard.ts'
import type { AttemptResult, GuardedSigner, KmsGuardOptions } from '../../src/kms/guard.ts'
import { createKmsClient } from '../../src/kms/client.ts'
import { KmsSigner } from '../../src/kms/signer.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { ManualClock } from '../audit/fixtures/clock.ts'
import { waitFor } from '../helpers/wait.ts'

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
const ARN = 'arn:aws:kms:sa-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab'

type Step = 'ok' | 'throttle' | 'unavailable' | 'disabled' | 'hang' | 'held'

/** A signer that answers as scripted, one step per call ('ok' when the script is empty). */
class ScriptedSigner implements GuardedSigner {
  readonly publicKey: KeyObject = publicKey
  readonly description = 'scripted'
  readonly keyArn = ARN
  readonly script: Step[] = []
  calls = 0
  closed = false
  /** Resolves the call of a 'held' step (the latest). */
  releaseHeld: ((ok: boolean) => void) | null = null
  /** Every held call still unanswered, oldest first. */
  readonly held: Array<(ok: boolean) => void> = []

  async sign (_data: Uint8Array, o: { signal?: AbortSignal } = {}): Promise<Buffer> {
    this.calls++
    const step = this.script.shift() ?? 'ok'
    const sig = Buffer.from('signature')
    switch (step) {
      case 'ok': return sig
      case 'throttle': throw new PixProxyError({ code: 'PIXPROXY_ERR_KMS_THROTTLED', message: 'throttled', statusCode: 503, outcome: 'not-sent' })
      case 'unavailable': throw new PixProxyError({ code: 'PIXPROXY_ERR_KMS_UNAVAILABLE', message: 'KMS Sign failed (KMSInternalException)', statusCode: 503, outcome: 'not-sent' })
      case 'disabled': throw new PixProxyError({ code: 'PIXPROXY_ERR_KMS_KEY_DISABLED', message: 'disabled', statusCode: 503, outcome: 'not-sent' })
      case 'hang': return await new Promise((_resolve, reject) => {
        o.signal?.addEventListener('abort', () => reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' })))
      })
      case 'held': return await new Promise((resolve, reject) => {
        const release = (ok: boolean): void => {
          this.held.splice(this.held.indexOf(release), 1)
          if (ok) resolve(sig); else reject(new PixProxyError({ code: 'PIXPROXY_ERR_KMS_UNAVAILABLE', message: 'down', statusCode: 503, outcome: 'not-sent' }))
        }
        this.releaseHeld = release
        this.held.push(release)
      })
    }
  }

  async check (): Promise<string> { return 'signing key Enabled' }
  close (): void { this.closed = true }
}

interface Harness {
  guard: KmsGuard
  inner: ScriptedSigner
  clock: ManualClock
  attempts: AttemptResult[]
  retries: number
  circuit: string[]
}

function harness (o: Partial<KmsGuardOptions> = {}): Harness {
  const clock = new ManualClock()
  const inner = new ScriptedSigner()
  const h: Harness = { guard: undefined as unknown as KmsGuard, inner, clock, attempts: [], retries: 0, circuit: [] }
  h.guard = new KmsGuard(inner, {
    maxSignsPerSec: 1_000,
    queueMax: 100,
    queueTimeoutMs: 1_000,
    signDeadlineMs: 5_000,
    maxAttempts: 4,
    breakerFailures: 3,
    breakerCooldownMs: 10_000,
    maxInFlight: 100,
    clock,
    random: () => 0.5,
    observer: {
      attempt: (_s, r) => { h.attempts.push(r) },
      retry: () => { h.retries++ },
      circuit: (state) => { h.circuit.push(state) }
    },
    ...o
  })
  return h
}

const DATA = Buffer.from('<SignedInfo/>')
/** Lets promise callbacks run (no timer involved: the manual clock stands still). */
const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }
/** The settled state of a promise, without waiting for it. */
function track<T> (p: Promise<T>): { done: boolean, value?: T, error?: PixProxyError } {
  const s: { done: boolean, value?: T, error?: PixProxyError } = { done: false }
  p.then((v) => { s.done = true; s.value = v }, (e: unknown) => { s.done = true; s.error = e as PixProxyError })
  return s
}

t.test('rate limit: a burst of a tenth of a second, then one turn per interval; a full queue is refused at once', async (t) => {
  // 10/s: bursts of 1, a turn every 100 ms; one waiter at most.
  const { guard, inner, clock } = harness({ maxSignsPerSec: 10, queueMax: 1 })
  const a = track(guard.sign(DATA))
  const b = track(guard.sign(DATA))
  const c = track(guard.sign(DATA))
  await settle()
  t.ok(a.done && a.value !== undefined, 'the first signs at once')
  t.equal(inner.calls, 1, 'the second waits for its turn')
  t.equal(guard.stats().queued, 1)
  t.ok(c.done, 'the third is refused without waiting')
  t.match(c.error, { code: 'PIXPROXY_ERR_KMS_QUEUE_FULL', outcome: 'not-sent', statusCode: 503, retryAfterSeconds: 1 })
  clock.advance(99)
  await settle()
  t.equal(inner.calls, 1, 'not before its turn')
  clock.advance(1)
  await settle()
  t.ok(b.done && b.value !== undefined, 'its turn came 100 ms after the first')
  t.equal(guard.stats().queued, 0)

  const burst = harness({ maxSignsPerSec: 50 })
  const five = Array.from({ length: 6 }, () => track(burst.guard.sign(DATA)))
  await settle()
  t.equal(burst.inner.calls, 5, '50/s: five at once')
  burst.clock.advance(20)
  await settle()
  t.ok(five.every((s) => s.done && s.error === undefined), 'the sixth 20 ms later')
})

t.test('rate limit: a turn that would come after PIXPROXY_KMS_QUEUE_TIMEOUT_MS is refused at once, with the wait as Retry-After', async (t) => {
  const { guard, inner, clock } = harness({ maxSignsPerSec: 1, queueTimeoutMs: 1_500 })
  const a = track(guard.sign(DATA))
  const b = track(guard.sign(DATA))
  const c = track(guard.sign(DATA))
  await settle()
  t.ok(a.done && !b.done, 'one now, one waits (its turn at 1 s)')
  t.match(c.error, { code: 'PIXPROXY_ERR_KMS_QUEUE_TIMEOUT', outcome: 'not-sent', retryAfterSeconds: 2, message: /wait 2000 ms for its turn at 1 KMS signs per second, longer than 1500 ms/ })
  clock.advance(1_000)
  await settle()
  t.ok(b.done && b.error === undefined)
  t.equal(inner.calls, 2)
})

t.test('throttles are retried with full-jitter backoff, each attempt under the rate limit', async (t) => {
  const { guard, inner, clock, attempts } = harness()
  inner.script.push('throttle', 'throttle')
  const s = track(guard.sign(DATA))
  await settle()
  t.equal(inner.calls, 1)
  t.same(clock.armed().filter((at) => at < 5_000), [12.5], 'first pause: random 0.5 × 25 ms')
  clock.advance(12.5)
  await settle()
  t.equal(inner.calls, 2)
  t.same(clock.armed().filter((at) => at < 5_000), [12.5 + 25], 'second: 0.5 × 50 ms')
  clock.advance(25)
  await settle()
  t.ok(s.done && s.error === undefined, 'the third attempt signs')
  t.same(attempts, ['throttled', 'throttled', 'ok'])
})

t.test('throttle retries stop at PIXPROXY_KMS_MAX_ATTEMPTS, and sooner when the pause would pass the deadline', async (t) => {
  const a = harness({ maxAttempts: 3 })
  a.inner.script.push('throttle', 'throttle', 'throttle', 'throttle')
  const s = track(a.guard.sign(DATA))
  for (let i = 0; i < 5; i++) { await settle(); a.clock.advance(100) }
  await settle()
  t.match(s.error, { code: 'PIXPROXY_ERR_KMS_THROTTLED', outcome: 'not-sent' })
  t.equal(a.inner.calls, 3, 'three calls')
  t.equal(a.retries, 2, 'two retries counted')
  t.same(a.circuit, [], 'throttles never open the circuit')

  // Deadline 30 ms: the first pause (0.99 × 25) fits, the second (0.99 × 50) would end after it.
  const b = harness({ signDeadlineMs: 30, random: () => 0.99 })
  b.inner.script.push('throttle', 'throttle', 'throttle')
  const late = track(b.guard.sign(DATA))
  await settle()
  b.clock.advance(24.75)
  await settle()
  t.match(late.error, { code: 'PIXPROXY_ERR_KMS_THROTTLED' }, 'the throttle is the answer')
  t.equal(b.inner.calls, 2, 'no attempt that could not finish in time')
})

t.test('a Sign still unanswered at the sign deadline is abandoned: KMS_UNAVAILABLE, counted by the breaker', async (t) => {
  const { guard, inner, clock, attempts } = harness({ signDeadlineMs: 3_000 })
  inner.script.push('hang')
  const s = track(guard.sign(DATA))
  await settle()
  t.equal(guard.stats().inFlight, 1)
  clock.advance(2_999)
  await settle()
  t.notOk(s.done, 'not before the deadline')
  clock.advance(1)
  await settle()
  t.match(s.error, { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE', outcome: 'not-sent', message: /no answer within the sign deadline of 3000 ms/ })
  t.same(guard.stats(), { queued: 0, inFlight: 0, waitingForCall: 0, circuit: 'closed', consecutiveFailures: 1 })
  t.same(attempts, ['error'])
})

t.test('in flight: at most maxInFlight Sign calls at once, the rest waiting in order for one to end', async (t) => {
  const { guard, inner } = harness({ maxInFlight: 2 })
  inner.script.push('held', 'held')
  const signs = Array.from({ length: 4 }, () => track(guard.sign(DATA)))
  await settle()
  t.equal(inner.calls, 2, 'two calls made')
  t.same(guard.stats(), { queued: 0, inFlight: 2, waitingForCall: 2, circuit: 'closed', consecutiveFailures: 0 })
  ;(inner.held[0] as (ok: boolean) => void)(true)
  await settle()
  t.ok(signs[0]?.done)
  t.equal(inner.calls, 4, 'the place freed went to the third, whose quick answer freed one for the fourth')
  t.ok(signs[2]?.done && signs[3]?.done)
  t.notOk(signs[1]?.done, 'the second is still held')
  t.same(guard.stats(), { queued: 0, inFlight: 1, waitingForCall: 0, circuit: 'closed', consecutiveFailures: 0 })
  ;(inner.held[0] as (ok: boolean) => void)(true)
  await settle()
  t.ok(signs.every((s) => s.value?.toString() === 'signature'), 'all four signed')
})

t.test('in flight: a sign with no place free within PIXPROXY_KMS_QUEUE_TIMEOUT_MS of its arrival gets KMS_CONNECTIONS_BUSY, which the breaker ignores', async (t) => {
  const { guard, inner, clock, attempts } = harness({ maxInFlight: 2, queueTimeoutMs: 1_000, signDeadlineMs: 5_000, breakerFailures: 1 })
  inner.script.push('held', 'held')
  const held = [track(guard.sign(DATA)), track(guard.sign(DATA))]
  const waiting = Array.from({ length: 3 }, () => track(guard.sign(DATA)))
  await settle()
  clock.advance(999)
  await settle()
  t.notOk(waiting.some((s) => s.done), 'not before the queue timeout')
  clock.advance(1)
  await settle()
  for (const w of waiting) t.match(w.error, { code: 'PIXPROXY_ERR_KMS_CONNECTIONS_BUSY', outcome: 'not-sent', statusCode: 503, retryAfterSeconds: 1, message: /all 2 Sign calls this task may have in flight at KMS were still unanswered after 1000 ms/ })
  t.equal(inner.calls, 2, 'KMS was not asked for them')
  t.same(guard.stats(), { queued: 0, inFlight: 2, waitingForCall: 0, circuit: 'closed', consecutiveFailures: 0 }, 'the breaker (open at 1 failure) did not count them')
  t.same(attempts, [], 'no Sign call ended')
  for (const release of [...inner.held]) release(true)
  await settle()
  t.ok(held.every((s) => s.value !== undefined), 'the calls under way still end with their signature')
  guard.close()
})

t.test('in flight: close refuses the signs waiting for a place (SHUTTING_DOWN)', async (t) => {
  const { guard, inner } = harness({ maxInFlight: 1 })
  inner.script.push('held')
  const first = track(guard.sign(DATA))
  const second = track(guard.sign(DATA))
  await settle()
  guard.close()
  await settle()
  t.match(second.error, { code: 'PIXPROXY_ERR_SHUTTING_DOWN' })
  inner.releaseHeld?.(true)
  await settle()
  t.ok(first.value !== undefined, 'the call under way still ends')
  t.equal(inner.calls, 1)
})

t.test('circuit breaker: open after N unavailable calls in a row, Retry-After the rest of the cool-down, one probe when half-open', async (t) => {
  const { guard, inner, clock, circuit } = harness({ breakerFailures: 3, breakerCooldownMs: 10_000 })
  inner.script.push('unavailable', 'unavailable', 'unavailable')
  for (let i = 0; i < 3; i++) await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE' })
  t.same(circuit, ['open'])
  t.equal(guard.stats().circuit, 'open')
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN', outcome: 'not-sent', statusCode: 503, retryAfterSeconds: 10, message: /after 3 failures in a row \(last: KMS Sign failed \(KMSInternalException\)\); next attempt in 10000 ms/ })
  t.equal(inner.calls, 3, 'no call to KMS while open')
  await t.rejects(guard.check(), { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN' }, 'readiness: not ready')
  clock.advance(4_000)
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN', retryAfterSeconds: 6 })

  clock.advance(6_000)
  t.equal(guard.stats().circuit, 'half-open')
  t.match(await guard.check(), /half-open/, 'half-open is ready: the probe needs traffic')
  inner.script.push('held')
  const probe = track(guard.sign(DATA))
  await settle()
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN', retryAfterSeconds: 1, message: /a probe sign is under way/ }, 'one probe at a time')
  inner.releaseHeld?.(false)
  await settle()
  t.match(probe.error, { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE' })
  t.equal(guard.stats().circuit, 'open', 'a failed probe opens it again')
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN', retryAfterSeconds: 10 }, 'for a whole cool-down')

  clock.advance(10_000)
  t.ok(await guard.sign(DATA), 'the next probe signs')
  t.same(circuit, ['open', 'half-open', 'open', 'half-open', 'closed'])
  t.same(guard.stats(), { queued: 0, inFlight: 0, waitingForCall: 0, circuit: 'closed', consecutiveFailures: 0 })
  t.equal(inner.calls, 5)
})

t.test('circuit breaker: Retry-After and the wait in the message are whole, whatever float noise the clock carries', async (t) => {
  const { guard, inner, clock } = harness({ breakerFailures: 1, breakerCooldownMs: 30_000 })
  // (3103.475797275668 + 30000) - 3103.475797275668 is 30000.000000000004 in binary floating point.
  clock.advanceTo(3103.475797275668)
  inner.script.push('unavailable')
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE' })
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN', retryAfterSeconds: 30, message: /next attempt in 30000 ms/ })
})

t.test('circuit breaker: throttles and refusals are answers; they never open it and they reset the count', async (t) => {
  const { guard, inner, circuit } = harness({ breakerFailures: 3, maxAttempts: 1 })
  inner.script.push('disabled', 'disabled', 'disabled', 'throttle', 'throttle', 'throttle')
  for (let i = 0; i < 6; i++) await t.rejects(guard.sign(DATA))
  inner.script.push('unavailable', 'unavailable', 'disabled', 'unavailable', 'unavailable')
  for (let i = 0; i < 5; i++) await t.rejects(guard.sign(DATA), { code: /^PIXPROXY_ERR_KMS_(UNAVAILABLE|KEY_DISABLED)$/ })
  t.same(circuit, [], 'never opened')
  t.equal(guard.stats().consecutiveFailures, 2)
})

t.test('close refuses the signs waiting for a turn', async (t) => {
  const { guard, inner } = harness({ maxSignsPerSec: 1 })
  await guard.sign(DATA)
  const waiting = track(guard.sign(DATA))
  await settle()
  guard.close()
  await settle()
  t.match(waiting.error, { code: 'PIXPROXY_ERR_SHUTTING_DOWN', outcome: 'not-sent' })
  t.ok(inner.closed)
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_SHUTTING_DOWN' })
})

// ---- around the real KMS signer, against the local KMS ---------------------------------------------------------

const CREDS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-key' }
const REGION = 'sa-east-1'
const pki = createTestPki()
const certificate = pki.issue('CN=99999004 Assinatura SPI, O=Banco Exemplo S.A., C=BR', { publicKey: privateKey }).certificate

/** Advances the clock to each timer due within `horizonMs` (backoff, turns) until `p` settles; never to a deadline. */
async function drive<T> (clock: ManualClock, p: Promise<T>, horizonMs = 1_000): Promise<T> {
  const s = track(p)
  while (!s.done) {
    const next = clock.armed()[0]
    if (next !== undefined && next - clock.now() <= horizonMs) clock.advanceTo(next)
    else await new Promise((resolve) => setTimeout(resolve, 2))
  }
  return await p
}

t.test('against the local KMS: a throttle burst, KMS down, a slow KMS', async (t) => {
  const ep = await startLocalAwsEndpoint({ region: REGION, credentials: { [CREDS.accessKeyId]: CREDS.secretAccessKey }, kmsKeys: [{ aliases: ['alias/pix'], privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }] })
  t.teardown(() => ep.close())
  // The client's own timeout far away: the guard's deadline is what ends a slow call here.
  const signer = await KmsSigner.open({ keyId: 'alias/pix', certificate, client: createKmsClient({ endpoint: ep.url, region: REGION, credentials: CREDS, maxAttempts: 1, requestTimeoutMs: 120_000 }) })
  const clock = new ManualClock()
  // Math.random's pauses put the clock at fractional times: the Retry-After below must not depend on float noise.
  const guard = new KmsGuard(signer, { maxSignsPerSec: 100, queueMax: 10, queueTimeoutMs: 1_000, signDeadlineMs: 60_000, maxAttempts: 4, breakerFailures: 2, breakerCooldownMs: 30_000, maxInFlight: 10, clock })
  t.teardown(() => guard.close())
  const signs = (): Array<{ status: number, errorType: string | null }> => ep.calls.filter((c) => c.target === 'TrentService.Sign')

  const before = signs().length
  ep.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', times: 3 })
  const sig = await drive(clock, guard.sign(DATA))
  t.equal(sig.length, 256, 'signed after three throttles')
  t.same(signs().slice(before).map((c) => c.errorType), ['ThrottlingException', 'ThrottlingException', 'ThrottlingException', null])

  ep.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', times: 10 })
  clock.advance(1_000)
  await t.rejects(drive(clock, guard.sign(DATA)), { code: 'PIXPROXY_ERR_KMS_THROTTLED', outcome: 'not-sent' })
  t.equal(signs().length, before + 8, 'four attempts, no more')
  ep.clearFaults()

  // Slow: KMS accepts the call and never answers; the deadline abandons it through the SDK's abort signal.
  await ep.outage('hang')
  clock.advance(1_000)
  const slow = track(guard.sign(DATA))
  t.ok(await waitFor(() => guard.stats().inFlight === 1), 'the call is under way')
  clock.advance(60_000)
  t.ok(await waitFor(() => slow.done), 'and ends at the deadline')
  t.match(slow.error, { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE', outcome: 'not-sent', message: /sign deadline of 60000 ms/ })
  await ep.restore()

  // Down: 503s; two in a row open the circuit, and the next sign does not reach KMS.
  await ep.outage('503')
  clock.advance(1_000)
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_UNAVAILABLE' })
  t.equal(guard.stats().circuit, 'open', 'the slow call and this one: two in a row')
  const calls = ep.calls.length
  await t.rejects(guard.sign(DATA), { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN', retryAfterSeconds: 30 })
  t.equal(ep.calls.length, calls, 'nothing sent to KMS while open')
  await ep.restore()
  clock.advance(30_000)
  t.equal((await guard.sign(DATA)).length, 256, 'after the cool-down the probe signs')
  t.equal(guard.stats().circuit, 'closed')
})

/**
 * The KMS guard (src/kms/guard.ts) through the whole proxy: signing key in the local KMS, mTLS key in the HSM, the
 * BACEN simulator upstream, and the guard's time on a manual clock (the rate limit, backoff, sign deadline and
 * cool-down move only when the test moves them). Throttle bursts, a full queue, a slow KMS and KMS down each answer
 * the caller NOT SENT (problem code, `outcome`, the pix-proxy-outcome header, Retry-After) and nothing reaches the
 * simulator; a throttled request that is retried reaches BACEN only once every Sign attempt has been answered.
 */
import t from 'tap'
import type { Test } from 'tap'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { issueCertificate } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { startLocalAwsEndpoint } from '../../tools/aws-local/endpoint.ts'
import { PROXY_ISPB, startLocalStack } from '../../tools/demo/stack.ts'
import { createEntryRequest } from '../../tools/samples/messages.ts'
import { initSoftHsm } from '../../tools/token/hsm-init.ts'
import { ManualClock } from '../audit/fixtures/clock.ts'
import { E2e, header, metricSamples, problemOf, waitFor } from '../helpers/e2e.ts'
import type { ProxyResponse } from '../helpers/e2e.ts'

const ALIAS = 'alias/pix-proxy-signing'
const COOLDOWN_MS = 30_000

t.test('the KMS guard through the proxy: every refusal NOT SENT, nothing reaches BACEN unsigned', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-e2e-kms-guard-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const hsm = await initSoftHsm({ dir: join(dir, 'hsm'), ispb: PROXY_ISPB, ...(process.env.PKCS11_MODULE_PATH === undefined ? {} : { modulePath: process.env.PKCS11_MODULE_PATH }) })
  const kmsKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const hsmCert = parseCertificate(await readFile(hsm.signing.certFile))
  const ca = { certificate: parseCertificate(await readFile(hsm.caCertFile)), key: createPrivateKey(await readFile(hsm.caKeyFile)) }
  await writeFile(hsm.signing.certFile, issueCertificate({ subject: hsmCert.subjectString, publicKey: kmsKey, issuer: ca, keyUsage: ['digitalSignature', 'nonRepudiation'], extKeyUsage: [] }).pem)

  const aws = await startLocalAwsEndpoint({ kmsKeys: [{ aliases: [ALIAS], privateKeyPem: kmsKey.export({ type: 'pkcs8', format: 'pem' }).toString() }] })
  t.teardown(() => aws.close())
  Object.assign(process.env, { AWS_ENDPOINT_URL: aws.url, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: 'AKIDLOCAL', AWS_SECRET_ACCESS_KEY: 'local' })

  const clock = new ManualClock()
  const stack = await startLocalStack({
    dir,
    longPollMs: 300,
    kmsClock: clock,
    settings: {
      PIXPROXY_SIGNING_KEY_LABEL: '',
      PIXPROXY_SIGNING_KMS_KEY_ID: ALIAS,
      // A turn every 100 ms, bursts of one, one waiter: the queue fills with two requests while the clock stands.
      PIXPROXY_KMS_MAX_SIGNS_PER_SEC: '10',
      PIXPROXY_KMS_QUEUE_MAX: '1',
      PIXPROXY_KMS_QUEUE_TIMEOUT_MS: '1000',
      PIXPROXY_KMS_SIGN_DEADLINE_MS: '60000',
      PIXPROXY_KMS_MAX_ATTEMPTS: '3',
      PIXPROXY_KMS_BREAKER_FAILURES: '2',
      PIXPROXY_KMS_BREAKER_COOLDOWN_MS: String(COOLDOWN_MS)
    }
  })
  const e2e = new E2e(stack, dir)
  t.teardown(() => e2e.close())
  const guard = stack.proxy.crypto.kmsGuard
  if (guard === null) throw new Error('the proxy does not sign through the KMS guard')

  const signCalls = (): Array<{ errorType: string | null }> => aws.calls.filter((c) => c.target === 'TrentService.Sign')
  // How many Sign calls KMS had answered when each request reached BACEN's simulator.
  const signsAtArrival: number[] = []
  stack.simulator.app.server.on('request', () => { signsAtArrival.push(signCalls().length) })

  const create = async (): Promise<ProxyResponse> => await e2e.proxyXml('/api/v2/entries/', createEntryRequest().xml)
  /** Moves the clock to each guard timer due within a second (backoff, turns; never the 60 s deadline) until `p` settles. */
  const drive = async <T>(p: Promise<T>): Promise<T> => {
    const state = { done: false }
    p.then(() => { state.done = true }, () => { state.done = true })
    while (!state.done) {
      const next = clock.armed()[0]
      if (next !== undefined && next - clock.now() <= 1_000) clock.advanceTo(next)
      else await new Promise((resolve) => setTimeout(resolve, 2))
    }
    return await p
  }
  const notSent = (t: Test, res: ProxyResponse, code: string, retryAfter: string, what: string): void => {
    t.equal(res.status, 503, `${what}: 503`)
    const problem = problemOf(res)
    t.equal(problem.code, code, `${what}: ${code}`)
    t.equal(problem.outcome, 'not-sent', `${what}: outcome not-sent in the problem`)
    t.equal(header(res, 'pix-proxy-outcome'), 'not-sent', `${what}: and in the header`)
    t.equal(header(res, 'retry-after'), retryAfter, `${what}: Retry-After ${retryAfter}`)
  }
  const bacenSaw = (): number => e2e.seen.length

  await t.test('a throttle burst KMS recovers from: retried, and BACEN gets the message only after every Sign was answered', async (t) => {
    clock.advance(1_000)
    const before = signCalls().length
    const arrivals = signsAtArrival.length
    aws.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', times: 2 })
    const res = await drive(create())
    t.equal(res.status, 201, res.text.slice(0, 300))
    t.same(signCalls().slice(before).map((c) => c.errorType), ['ThrottlingException', 'ThrottlingException', null], 'two throttles, then the signature')
    t.same(signsAtArrival.slice(arrivals), [before + 3], 'one request reached BACEN, after all three Sign calls')
    t.equal(signCalls().length, before + 3, 'and no Sign after it')
    const m = (await e2e.proxy('GET', '/metrics')).text
    t.same(metricSamples(m, 'pixproxy_kms_throttles_total'), [2])
    t.same(metricSamples(m, 'pixproxy_kms_retries_total'), [2])
    t.ok((metricSamples(m, 'pixproxy_kms_sign_duration_seconds_count', { result: 'throttled' })[0] ?? 0) === 2, 'each call timed, by result')
  })

  await t.test('a throttle burst that outlasts PIXPROXY_KMS_MAX_ATTEMPTS: NOT SENT, nothing reaches BACEN', async (t) => {
    clock.advance(1_000)
    const before = signCalls().length
    const saw = bacenSaw()
    aws.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', times: 10 })
    notSent(t, await drive(create()), 'PIXPROXY_ERR_KMS_THROTTLED', '1', 'throttled three times')
    t.equal(signCalls().length, before + 3, 'three attempts')
    t.equal(bacenSaw(), saw, 'nothing reached the simulator')
    aws.clearFaults()
  })

  await t.test('the rate limit: with the queue full, the next request is refused at once; the queued one signs at its turn', async (t) => {
    clock.advance(1_000)
    const saw = bacenSaw()
    t.equal((await create()).status, 201, 'takes the turn')
    const queued = create()
    t.ok(await waitFor(() => guard.stats().queued === 1), 'the next waits for its turn (the clock stands)')
    const m = (await e2e.proxy('GET', '/metrics')).text
    t.same(metricSamples(m, 'pixproxy_kms_queued'), [1], 'pixproxy_kms_queued')
    notSent(t, await create(), 'PIXPROXY_ERR_KMS_QUEUE_FULL', '1', 'a third')
    clock.advance(100)
    t.equal((await queued).status, 201, 'the queued one signs 100 ms later')
    t.equal(bacenSaw(), saw + 2, 'two reached BACEN, the refused one did not')
  })

  await t.test('a slow KMS: a Sign unanswered at PIXPROXY_KMS_SIGN_DEADLINE_MS is abandoned, NOT SENT', async (t) => {
    await aws.outage('hang')
    clock.advance(1_000)
    const saw = bacenSaw()
    let settled = false
    const slow = create().finally(() => { settled = true })
    t.ok(await waitFor(() => guard.stats().inFlight === 1 || settled), 'the Sign is under way')
    clock.advance(60_000)
    // The KMS client's own 2 s request timeout may end it first on a slow machine: the same code either way.
    notSent(t, await slow, 'PIXPROXY_ERR_KMS_UNAVAILABLE', '1', 'a Sign KMS never answers')
    t.equal(bacenSaw(), saw, 'nothing reached the simulator')
    await aws.restore()
    clock.advance(1_000)
    t.equal((await create()).status, 201, 'KMS answering again: signed (and the failure count reset)')
    t.equal(guard.stats().consecutiveFailures, 0)
  })

  await t.test('KMS down: the circuit opens, requests are refused at once with the cool-down as Retry-After, /readyz is not ready', async (t) => {
    await aws.outage('503')
    const saw = bacenSaw()
    for (let i = 0; i < 2; i++) {
      clock.advance(1_000)
      notSent(t, await create(), 'PIXPROXY_ERR_KMS_UNAVAILABLE', '1', `KMS 503, ${i + 1}`)
    }
    clock.advance(1_000)
    const calls = aws.calls.length
    notSent(t, await create(), 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN', String((COOLDOWN_MS - 1_000) / 1000), 'with the circuit open')
    t.equal(aws.calls.length, calls, 'no call to KMS while open')
    t.equal(bacenSaw(), saw, 'nothing reached the simulator')

    stack.proxy.health.forget()
    const ready = await e2e.proxy('GET', '/readyz')
    t.equal(ready.status, 503, '/readyz: not ready')
    t.match(JSON.parse(ready.text), { status: 'not ready', checks: { kms: { ok: false, detail: /PIXPROXY_ERR_KMS_CIRCUIT_OPEN/ } } })
    const m = (await e2e.proxy('GET', '/metrics')).text
    t.same(metricSamples(m, 'pixproxy_kms_circuit_state', { state: 'open' }), [1], 'pixproxy_kms_circuit_state{state="open"} 1')
    t.same(metricSamples(m, 'pixproxy_kms_circuit_state', { state: 'closed' }), [0])
    t.same(metricSamples(m, 'pixproxy_kms_consecutive_failures'), [2])
    t.same(metricSamples(m, 'pixproxy_errors_total', { code: 'PIXPROXY_ERR_KMS_CIRCUIT_OPEN' }), [1])

    await aws.restore()
    clock.advance(COOLDOWN_MS)
    stack.proxy.health.forget()
    const half = await e2e.proxy('GET', '/readyz')
    t.equal(half.status, 200, `half-open is ready: traffic brings the probe (${half.text.slice(0, 300)})`)
    t.equal((await create()).status, 201, 'the probe signs and BACEN gets it')
    t.equal(guard.stats().circuit, 'closed')
    t.equal(bacenSaw(), saw + 1)
  })

  await t.test('every Sign call\'s time goes to the EMF recorder too (what the CloudWatch alarm reads)', async (t) => {
    clock.advance(1_000)
    const samples: number[] = []
    // EMF is off in this stack (its records would go to the test's stdout): a recorder in its place, as the EMF plugin
    // decorates one when on.
    const was = stack.proxy.emf
    stack.proxy.emf = { kmsSignLatency: (ms) => { samples.push(ms) } }
    t.teardown(() => { stack.proxy.emf = was })
    const before = signCalls().length
    const saw = bacenSaw()
    aws.failCalls({ target: 'TrentService.Sign', errorType: 'ThrottlingException', times: 1 })
    await drive(create())
    t.equal(bacenSaw(), saw + 1, 'signed and sent (whatever the simulator makes of a repeated entry)')
    t.equal(signCalls().length, before + 2, 'a throttle, then the signature')
    t.equal(samples.length, 2, 'one sample per Sign call, whatever its result')
    t.ok(samples.every((ms) => Number.isFinite(ms) && ms >= 0), 'in milliseconds')
  })

  await t.test('KMS metric families follow the naming conventions', async (t) => {
    const m = (await e2e.proxy('GET', '/metrics')).text
    const types = new Map([...m.matchAll(/^# TYPE (pixproxy_kms_\S+) (\S+)$/gm)].map((g) => [g[1] as string, g[2] as string]))
    t.same(Object.fromEntries(types), {
      pixproxy_kms_sign_duration_seconds: 'histogram',
      pixproxy_kms_throttles_total: 'counter',
      pixproxy_kms_retries_total: 'counter',
      pixproxy_kms_queued: 'gauge',
      pixproxy_kms_in_flight: 'gauge',
      pixproxy_kms_waiting_for_call: 'gauge',
      pixproxy_kms_consecutive_failures: 'gauge',
      pixproxy_kms_circuit_state: 'gauge'
    })
  })
})

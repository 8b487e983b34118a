/**
 * The signing and verification resources: the PKCS#11 key store (when keys live in the HSM), the XMLDSig signer
 * bound to the signing key (in the HSM, in AWS KMS or, outside production, a PEM file) and certificate, and the trust
 * store of BACEN's signing certificates.
 */
import fp from 'fastify-plugin'
import { Counter, Gauge, Histogram } from 'prom-client'
import { readFile, rm } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { KeyObject } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { describePemSetting, readPemSetting } from '../config.ts'
import type { Config } from '../config.ts'
import { Pkcs11KeyStore } from '../hsm/pkcs11.ts'
import { createPinFile, sweepStalePinDirs } from '../hsm/pin-file.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import type { Signer } from '../../core/signer.ts'
import { parseCertificate, parseCertificates } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { createSecretsManagerClient } from '../aws/clients.ts'
import type { KmsSigner } from '../kms/signer.ts'
import type { KmsGuard, KmsGuardObserver } from '../kms/guard.ts'
import type { AuditClock } from '../audit/clock.ts'
import { fetchPin } from '../config-sources.ts'
import { tracingOf } from '../http/tracing.ts'

export interface CryptoRuntime {
  readonly xmlSigner: XmlSigner
  readonly signer: Signer
  readonly signingCertificate: Certificate
  readonly bacenTrust: TrustStore
  readonly keyStore: Pkcs11KeyStore | null
  /** The KMS signer when the signing key is in AWS KMS (PIXPROXY_SIGNING_KMS_KEY_ID). */
  readonly kmsSigner: KmsSigner | null
  /** Its rate limit, retries and circuit breaker (kms/guard.ts): what signs, what readiness asks, closed with the app. */
  readonly kmsGuard: KmsGuard | null
  /** Public half of the HSM mTLS key, so the TLS agent can refuse a certificate that does not match it. */
  readonly tlsPublicKey: KeyObject | null
  /**
   * The file holding the HSM PIN, for the TLS engine's pin-source: the configured file, or a private (0600)
   * temporary copy of the Secrets Manager value, removed when the app closes.
   */
  readonly pinFile: string | null
}

declare module 'fastify' {
  interface FastifyInstance {
    crypto: CryptoRuntime
  }
}

/** Reads the HSM PIN from its file; one trailing newline is not part of the PIN. */
async function readPinFile (file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).replace(/\r?\n$/, '')
  } catch (err) {
    throw new PixProxyError(Errors.HSM_PIN_SOURCE, [file, (err as Error).message], { cause: err })
  }
}

/** Test seams of the crypto plugin. */
export interface CryptoPluginOptions {
  readonly config: Config
  /** Time and timers of the KMS guard (tests drive its rate limit, backoff, deadline and cool-down). */
  readonly kmsClock?: AuditClock
}

async function openCrypto (config: Config, log: FastifyInstance['log'], traced: (signer: Signer, kind: 'hsm' | 'kms' | 'software') => Signer = (s) => s, kms: { clock?: AuditClock, observer?: KmsGuardObserver } = {}): Promise<CryptoRuntime & { tempPinDir: string | null }> {
  const signingCertificate = parseCertificate(await readPemSetting(config.signing.certFile))
  const bacenTrust = new TrustStore(parseCertificates(await readPemSetting(config.bacenSigningCertsFile)))
  if (bacenTrust.size === 0) {
    throw new PixProxyError(Errors.CONFIG_INVALID, [`${describePemSetting(config.bacenSigningCertsFile)} holds no certificate`])
  }
  let keyStore: Pkcs11KeyStore | null = null
  let kmsSigner: KmsSigner | null = null
  let kmsGuard: KmsGuard | null = null
  let pinFile: string | null = null
  let tempPinDir: string | null = null
  try {
    if (config.hsm !== null) {
      let pin: string
      if (config.hsm.pinFile !== null) {
        pinFile = config.hsm.pinFile
        pin = await readPinFile(pinFile)
      } else {
        // Secrets Manager (the SDK takes region, credentials and endpoint from its usual sources: the task role).
        const client = createSecretsManagerClient()
        try {
          pin = await fetchPin(config.hsm.pinSecretId as string, client)
        } finally {
          client.destroy()
        }
        // The libp11 engine reads the PIN only from a file (pin-source): a private directory, mode 0600 (hsm/pin-file.ts).
        // The directories a killed process left behind go first.
        const swept = await sweepStalePinDirs()
        if (swept.length > 0) log.warn({ removed: swept.length }, 'removed the HSM PIN files of processes that were killed')
        const created = await createPinFile(pin)
        tempPinDir = created.dir
        pinFile = created.file
      }
      keyStore = await Pkcs11KeyStore.open({
        modulePath: config.hsm.modulePath,
        tokenLabel: config.hsm.tokenLabel,
        pin,
        poolSize: config.hsm.poolSize,
        acquireTimeoutMs: config.hsm.acquireTimeoutMs,
        log
      })
    }
    let signer: Signer
    let kind: 'hsm' | 'kms' | 'software'
    if (config.signing.keyLabel !== null && keyStore !== null) {
      signer = await keyStore.signer(config.signing.keyLabel)
      kind = 'hsm'
    } else if (config.signing.kmsKeyId !== null) {
      // The SDK takes region, credentials and endpoint from its usual sources (the task role; AWS_ENDPOINT_URL locally).
      // Loaded only here: the KMS SDK costs nothing (memory, start-up) where the key is in an HSM.
      const [{ KmsSigner }, { createKmsClient, KMS_SIGNS_IN_FLIGHT }, { KmsGuard }] = await Promise.all([import('../kms/signer.ts'), import('../kms/client.ts'), import('../kms/guard.ts')])
      const keyId = config.signing.kmsKeyId
      // One SDK attempt per call: the guard owns the retries of Sign (each attempt under the rate limit and the sign's
      // deadline). Start-up, where nothing retries above, tries the whole open again instead (openKmsSigner).
      kmsSigner = await openKmsSigner(async () => await KmsSigner.open({ keyId, certificate: signingCertificate, client: createKmsClient({ maxAttempts: 1 }) }), log)
      kmsGuard = new KmsGuard(kmsSigner, { ...config.kms, maxInFlight: KMS_SIGNS_IN_FLIGHT, ...kms })
      signer = kmsGuard
      kind = 'kms'
    } else {
      signer = SoftwareSigner.fromPem(await readPemSetting(config.signing.keyFile as string))
      kind = 'software'
    }
    // Every sign of a request is a span of it when tracing is on (http/tracing.ts).
    const xmlSigner = new XmlSigner({ signer: traced(signer, kind), certificate: signingCertificate })
    const tlsPublicKey = config.tls.keyLabel !== null && keyStore !== null
      ? (await keyStore.signer(config.tls.keyLabel)).publicKey
      : null
    return { xmlSigner, signer, signingCertificate, bacenTrust, keyStore, kmsSigner, kmsGuard, tlsPublicKey, pinFile, tempPinDir }
  } catch (err) {
    kmsSigner?.close()
    await keyStore?.close()
    if (tempPinDir !== null) await rm(tempPinDir, { recursive: true, force: true })
    throw err
  }
}

/** How many times start-up opens the KMS signer when KMS throttles or is unavailable, and the pause bound before each. */
const KMS_OPEN_ATTEMPTS = 3
const KMS_OPEN_BACKOFF_MS = 200

/**
 * KmsSigner.open, tried again (with a fresh client: a failed open destroys its own) when KMS throttles or is
 * unavailable: tasks starting together share the account's quota, and the SDK makes one attempt per call here.
 */
async function openKmsSigner (open: () => Promise<KmsSigner>, log: FastifyInstance['log']): Promise<KmsSigner> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await open()
    } catch (err) {
      const code = (err as { code?: string }).code
      const transient = code === Errors.KMS_THROTTLED.code || code === Errors.KMS_UNAVAILABLE.code
      if (!transient || attempt >= KMS_OPEN_ATTEMPTS) throw err
      log.warn({ code, attempt }, 'KMS signer not opened yet; trying again')
      // Ref'd: start-up is waiting on it.
      await sleep(Math.random() * KMS_OPEN_BACKOFF_MS * 2 ** (attempt - 1))
    }
  }
}

export default fp(async function cryptoPlugin (app: FastifyInstance, opts: CryptoPluginOptions) {
  const kmsMetrics = opts.config.signing.kmsKeyId === null ? null : createKmsMetrics(app)
  const runtime = await openCrypto(opts.config, app.log, tracingOf(app).signer, {
    ...(opts.kmsClock === undefined ? {} : { clock: opts.kmsClock }),
    ...(kmsMetrics === null ? {} : { observer: kmsMetrics })
  })
  app.decorate('crypto', runtime)
  app.log.info({
    signer: runtime.signer.description,
    certificate: runtime.signingCertificate.subjectString,
    serial: runtime.signingCertificate.serialDecimal,
    bacenCertificates: runtime.bacenTrust.size
  }, 'signing key ready')
  registerHsmGauges(app, runtime.keyStore)
  registerKmsGauges(app, runtime.kmsGuard)
  app.addHook('onClose', async () => {
    // Last in the shutdown order: in-flight requests have drained and the upstream agents are closed.
    runtime.kmsGuard?.close()
    await runtime.keyStore?.close()
    if (runtime.tempPinDir !== null) await rm(runtime.tempPinDir, { recursive: true, force: true })
  })
}, { name: 'pix-crypto', fastify: '5.x', dependencies: ['pix-metrics', 'pix-emf'] })

/** The signing pool's sessions and the operations waiting for one, read at each scrape. */
function registerHsmGauges (app: FastifyInstance, keyStore: Pkcs11KeyStore | null): void {
  if (keyStore === null) return
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_hsm_sessions',
    help: 'PKCS#11 sessions in the signing pool by state (idle, busy)',
    labelNames: ['state'],
    registers: [app.metrics.registry],
    collect () {
      const s = keyStore.stats()
      this.set({ state: 'idle' }, s.idle)
      this.set({ state: 'busy' }, s.busy)
    }
  })
  // Operations, not sessions: a metric of their own (one unit per metric; idle + busy is the pool size).
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_hsm_queued',
    help: 'HSM operations waiting for a PKCS#11 session of the pool (above 0: raise PIXPROXY_HSM_POOL_SIZE)',
    registers: [app.metrics.registry],
    collect () { this.set(keyStore.stats().waiting) }
  })
}

/** KMS Sign round trips are tens of milliseconds inside the region; the buckets resolve that range and a stall. */
const KMS_LATENCY_BUCKETS = [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2, 5]

/**
 * The KMS guard's counters and latency (kms/guard.ts), registered only when the signing key is in KMS. Errors that
 * end a request (KMS_QUEUE_FULL, KMS_CIRCUIT_OPEN, …) are in pixproxy_errors_total by code, as every other.
 */
function createKmsMetrics (app: FastifyInstance): KmsGuardObserver {
  const registers = [app.metrics.registry]
  const seconds = new Histogram({ name: 'pixproxy_kms_sign_duration_seconds', help: 'One Sign call to AWS KMS, by result (ok, throttled, error); retries are calls of their own', labelNames: ['result'], buckets: KMS_LATENCY_BUCKETS, registers })
  const throttles = new Counter({ name: 'pixproxy_kms_throttles_total', help: 'Sign calls KMS answered with ThrottlingException (raise the account quota, or lower PIXPROXY_KMS_MAX_SIGNS_PER_SEC across tasks)', registers })
  const retries = new Counter({ name: 'pixproxy_kms_retries_total', help: 'Sign calls made again after a throttle (PIXPROXY_KMS_MAX_ATTEMPTS)', registers })
  return {
    attempt (s, result) {
      seconds.observe({ result }, s)
      // What CloudWatch alarms on (plugins/emf.ts): the histogram above is not shipped in ECS.
      app.emf?.kmsSignLatency(s * 1000)
      if (result === 'throttled') throttles.inc()
    },
    retry () { retries.inc() },
    circuit (state, detail) {
      if (state === 'open') app.log.warn({ circuit: state }, `KMS circuit open: ${detail}`)
      else app.log.info({ circuit: state }, `KMS circuit ${state}: ${detail}`)
    }
  }
}

/** The guard's queue, calls in flight and circuit, read at each scrape. */
function registerKmsGauges (app: FastifyInstance, guard: KmsGuard | null): void {
  if (guard === null) return
  const registers = [app.metrics.registry]
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_kms_queued',
    help: 'Signatures waiting for their turn under PIXPROXY_KMS_MAX_SIGNS_PER_SEC',
    registers,
    collect () { this.set(guard.stats().queued) }
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_kms_in_flight',
    help: 'Sign calls to AWS KMS under way',
    registers,
    collect () { this.set(guard.stats().inFlight) }
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_kms_waiting_for_call',
    help: 'Signatures that have their turn and wait for one of the Sign calls in flight to end (KMS answering slowly: every call the client\'s sockets allow is under way)',
    registers,
    collect () { this.set(guard.stats().waitingForCall) }
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_kms_consecutive_failures',
    help: 'Sign calls in a row that found KMS unavailable (the circuit opens at PIXPROXY_KMS_BREAKER_FAILURES)',
    registers,
    collect () { this.set(guard.stats().consecutiveFailures) }
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'pixproxy_kms_circuit_state',
    help: 'The KMS circuit breaker: 1 for its current state (closed, open, half-open), 0 for the others',
    labelNames: ['state'],
    registers,
    collect () {
      const current = guard.stats().circuit
      for (const state of ['closed', 'open', 'half-open'] as const) this.set({ state }, state === current ? 1 : 0)
    }
  })
}

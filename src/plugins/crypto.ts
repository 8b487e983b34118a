/**
 * The signing and verification resources: the PKCS#11 key store (when keys live in the HSM), the XMLDSig signer
 * bound to the signing key (in the HSM, in AWS KMS or, outside production, a PEM file) and certificate, and the trust
 * store of BACEN's signing certificates.
 */
import fp from 'fastify-plugin'
import { Gauge } from 'prom-client'
import { readFile, rm } from 'node:fs/promises'
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
import { fetchPin } from '../config-sources.ts'
import { tracingOf } from '../http/tracing.ts'

export interface CryptoRuntime {
  readonly xmlSigner: XmlSigner
  readonly signer: Signer
  readonly signingCertificate: Certificate
  readonly bacenTrust: TrustStore
  readonly keyStore: Pkcs11KeyStore | null
  /** The KMS signer when the signing key is in AWS KMS (PIXPROXY_SIGNING_KMS_KEY_ID), to close with the app. */
  readonly kmsSigner: KmsSigner | null
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

async function openCrypto (config: Config, log: FastifyInstance['log'], traced: (signer: Signer, kind: 'hsm' | 'kms' | 'software') => Signer = (s) => s): Promise<CryptoRuntime & { tempPinDir: string | null }> {
  const signingCertificate = parseCertificate(await readPemSetting(config.signing.certFile))
  const bacenTrust = new TrustStore(parseCertificates(await readPemSetting(config.bacenSigningCertsFile)))
  if (bacenTrust.size === 0) {
    throw new PixProxyError(Errors.CONFIG_INVALID, [`${describePemSetting(config.bacenSigningCertsFile)} holds no certificate`])
  }
  let keyStore: Pkcs11KeyStore | null = null
  let kmsSigner: KmsSigner | null = null
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
      const [{ KmsSigner }, { createKmsClient }] = await Promise.all([import('../kms/signer.ts'), import('../kms/client.ts')])
      kmsSigner = await KmsSigner.open({ keyId: config.signing.kmsKeyId, certificate: signingCertificate, client: createKmsClient() })
      signer = kmsSigner
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
    return { xmlSigner, signer, signingCertificate, bacenTrust, keyStore, kmsSigner, tlsPublicKey, pinFile, tempPinDir }
  } catch (err) {
    kmsSigner?.close()
    await keyStore?.close()
    if (tempPinDir !== null) await rm(tempPinDir, { recursive: true, force: true })
    throw err
  }
}

export default fp(async function cryptoPlugin (app: FastifyInstance, opts: { config: Config }) {
  const runtime = await openCrypto(opts.config, app.log, tracingOf(app).signer)
  app.decorate('crypto', runtime)
  app.log.info({
    signer: runtime.signer.description,
    certificate: runtime.signingCertificate.subjectString,
    serial: runtime.signingCertificate.serialDecimal,
    bacenCertificates: runtime.bacenTrust.size
  }, 'signing key ready')
  registerHsmGauges(app, runtime.keyStore)
  app.addHook('onClose', async () => {
    // Last in the shutdown order: in-flight requests have drained and the upstream agents are closed.
    runtime.kmsSigner?.close()
    await runtime.keyStore?.close()
    if (runtime.tempPinDir !== null) await rm(runtime.tempPinDir, { recursive: true, force: true })
  })
}, { name: 'pix-crypto', fastify: '5.x', dependencies: ['pix-metrics'] })

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

/**
 * The two BACEN upstreams (DICT, SPI/ICOM) behind one TLS key agent: the mTLS client key stays in the HSM and is
 * used through the libp11 engine inside Node's TLS (src/upstream/), or, with the KMS signer, is read from a Secrets
 * Manager secret into memory (upstream/tls-key-secret.ts). One keep-alive pool per origin.
 */
import fp from 'fastify-plugin'
import { Counter } from 'prom-client'
import type { FastifyInstance } from 'fastify'
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { readPemSetting } from '../config.ts'
import type { Config } from '../config.ts'
import { TlsKeyAgent } from '../upstream/tls-key-agent.ts'
import type { TlsClientIdentity, TlsKeySource } from '../upstream/tls-key-agent.ts'
import { readTlsKeySecret } from '../upstream/tls-key-secret.ts'
import type { TlsKeySecretValue } from '../upstream/tls-key-secret.ts'
import { createSecretsManagerClient } from '../aws/clients.ts'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { Upstream } from '../upstream/client.ts'
import type { UpstreamOptions } from '../upstream/client.ts'

export interface Upstreams {
  readonly agent: TlsKeyAgent
  readonly dict: Upstream
  readonly spi: Upstream
  /**
   * Re-reads the mTLS certificate and CA files and rotates the agent: new connections present the new
   * certificate, requests in flight finish on their connections. Throws (and changes nothing) when the new files
   * are unusable, e.g. a certificate that does not match the HSM key. With the key in Secrets Manager
   * (PIXPROXY_TLS_KEY_SECRET_ID) the secret is read again too (what SIGHUP does).
   */
  reloadCertificates (): Promise<void>
  /**
   * Reads the key secret again and rotates only when its VersionId changed (what the PIXPROXY_TLS_SECRET_REFRESH_MS
   * timer does): 'rotated', 'unchanged', or 'none' without a key secret. Throws (and changes nothing) when the
   * secret cannot be read or its key is unusable or does not match the certificate.
   */
  refreshKeySecret (): Promise<'rotated' | 'unchanged' | 'none'>
}

/** Runs `refresh` every `everyMs`; returns what stops it. The default is an unref'd setInterval. */
export type SecretRefreshScheduler = (refresh: () => Promise<void>, everyMs: number) => () => void

const intervalScheduler: SecretRefreshScheduler = (refresh, everyMs) => {
  // A refresh never keeps the process alive, and a slow one never overlaps the next (they are chained below).
  const timer = setInterval(() => { void refresh() }, everyMs)
  timer.unref()
  return () => { clearInterval(timer) }
}

declare module 'fastify' {
  interface FastifyInstance {
    upstreams: Upstreams
  }
}

export interface UpstreamsPluginOptions {
  readonly config: Config
  /** Tests resolve BACEN host names to loopback. */
  readonly lookup?: UpstreamOptions['lookup']
  /** Tests trigger the key secret's periodic refresh themselves instead of waiting for a timer. */
  readonly scheduleSecretRefresh?: SecretRefreshScheduler
}

/** The engine URI: the PIN stays in its file (pin-source), never in a JS string. */
function engineKeyUri (tokenLabel: string, keyLabel: string, pinFile: string): string {
  const enc = (v: string): string => encodeURIComponent(v).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
  return `pkcs11:token=${enc(tokenLabel)};object=${enc(keyLabel)};type=private?pin-source=file:${encodeURI(pinFile)}`
}

export default fp(async function upstreamsPlugin (app: FastifyInstance, opts: UpstreamsPluginOptions) {
  const { config } = opts
  const keySecret = config.tls.keySecret
  // The key secret's client lives as long as the app: it is read again on SIGHUP and on the refresh timer. The SDK
  // takes region, credentials and endpoint from its usual sources (the task role; AWS_ENDPOINT_URL locally).
  const secrets = keySecret === null ? null : createSecretsManagerClient()
  let secretValue: TlsKeySecretValue | null = null
  const readSecret = async (): Promise<TlsKeySecretValue> => await readTlsKeySecret((keySecret as { secretId: string }).secretId, secrets as SecretsManagerClient)
  let fixedKey: TlsKeySource | null = null
  if (config.tls.keyLabel !== null) {
    if (config.hsm === null || app.crypto.pinFile === null) throw new Error('unreachable: config validation requires the HSM settings with a TLS key label')
    fixedKey = { kind: 'engine', uri: engineKeyUri(config.hsm.tokenLabel, config.tls.keyLabel, app.crypto.pinFile) }
  } else if (config.tls.keyFile !== null) {
    fixedKey = { kind: 'pem', keyPem: await readPemSetting(config.tls.keyFile) }
  }
  /** The identity with the certificate and CA files as they are now, and the key of `fromSecret` when in Secrets Manager. */
  const identity = async (fromSecret: TlsKeySecretValue | null): Promise<TlsClientIdentity> => {
    let certPem: string
    if (fromSecret?.certPem != null) {
      if (config.tls.certFile !== null) {
        throw new PixProxyError(Errors.AWS_SECRET_UNUSABLE, [keySecret?.secretId ?? '', 'it holds a certificate and PIXPROXY_TLS_CERT_FILE is set too: keep the certificate in one place (unset the setting, or store only the key)'])
      }
      certPem = fromSecret.certPem
    } else if (config.tls.certFile !== null) {
      certPem = await readPemSetting(config.tls.certFile)
    } else {
      throw new PixProxyError(Errors.AWS_SECRET_UNUSABLE, [keySecret?.secretId ?? '', 'it holds no certificate and PIXPROXY_TLS_CERT_FILE is unset: store JSON {"key": …, "certificate": …} or set the setting'])
    }
    return {
      certPem,
      caPem: await readPemSetting(config.tls.caFile),
      key: fromSecret === null ? fixedKey as TlsKeySource : { kind: 'pem', keyPem: fromSecret.keyPem },
      minVersion: config.tls.minVersion,
      ...(config.tls.sigalgs === null ? {} : { sigalgs: config.tls.sigalgs }),
      ...(app.crypto.tlsPublicKey === null ? {} : { expectedPublicKey: app.crypto.tlsPublicKey })
    }
  }
  let agent: TlsKeyAgent
  try {
    if (keySecret !== null) secretValue = await readSecret()
    agent = TlsKeyAgent.create(await identity(secretValue))
  } catch (err) {
    secrets?.destroy()
    throw err
  }
  const refreshes = new Counter({
    name: 'pixproxy_tls_key_secret_reads_total',
    help: 'Reads of the mTLS key secret (PIXPROXY_TLS_KEY_SECRET_ID) on SIGHUP or the refresh timer, by outcome: rotated (a new key and certificate in use), unchanged (same VersionId), refused (unusable, or the key does not match its certificate: the current key stays), failed (Secrets Manager could not be read: the current key stays)',
    labelNames: ['outcome'],
    registers: [app.metrics.registry]
  })
  if (keySecret !== null) for (const outcome of ['rotated', 'unchanged', 'refused', 'failed']) refreshes.inc({ outcome }, 0)

  const rotated = (): void => {
    app.log.info({ certificate: agent.certificate.subjectString, serial: agent.certificate.serialDecimal, notAfter: agent.certificate.notAfter, ...(secretValue === null ? {} : { secretVersionId: secretValue.versionId }) }, 'mTLS certificate rotated')
  }
  /**
   * One read of the key secret and, when `force` or its VersionId changed, a rotation to it. On any failure the
   * current key and certificate stay in use; the error is counted, logged by the caller and rethrown.
   */
  const fromSecret = async (force: boolean): Promise<'rotated' | 'unchanged'> => {
    let next: TlsKeySecretValue
    try {
      next = await readSecret()
    } catch (err) {
      refreshes.inc({ outcome: (err as PixProxyError).code === Errors.AWS_SECRET_UNUSABLE.code ? 'refused' : 'failed' })
      throw err
    }
    if (!force && next.versionId === secretValue?.versionId) {
      refreshes.inc({ outcome: 'unchanged' })
      return 'unchanged'
    }
    try {
      agent.rotate(await identity(next))
    } catch (err) {
      refreshes.inc({ outcome: 'refused' })
      throw err
    }
    secretValue = next
    refreshes.inc({ outcome: 'rotated' })
    rotated()
    return 'rotated'
  }
  // SIGHUP and the timer never rotate at the same time: each waits for the one before (a slow read cannot let an
  // older version overwrite a newer one).
  let queue: Promise<unknown> = Promise.resolve()
  const serialised = async <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn)
    queue = run.catch(() => {})
    return await run
  }

  const common = {
    agent,
    connections: config.upstream.connections,
    connectTimeoutMs: config.upstream.connectTimeoutMs,
    headersTimeoutMs: config.upstream.headersTimeoutMs,
    bodyTimeoutMs: config.upstream.bodyTimeoutMs,
    ...(opts.lookup === undefined ? {} : { lookup: opts.lookup })
  }
  const upstreams: Upstreams = {
    agent,
    dict: new Upstream({ name: 'dict', origin: config.dict.url, ...common }),
    spi: new Upstream({ name: 'spi', origin: config.spi.url, ...common }),
    reloadCertificates: async () => {
      await serialised(async () => {
        if (keySecret !== null) {
          await fromSecret(true)
          return
        }
        agent.rotate(await identity(null))
        rotated()
      })
    },
    refreshKeySecret: async () => keySecret === null ? 'none' : await serialised(async () => await fromSecret(false))
  }
  app.decorate('upstreams', upstreams)

  let stopRefresh: (() => void) | null = null
  if (keySecret !== null && keySecret.refreshMs > 0) {
    stopRefresh = (opts.scheduleSecretRefresh ?? intervalScheduler)(async () => {
      try {
        await upstreams.refreshKeySecret()
      } catch (err) {
        app.log.error({ err, secretId: keySecret.secretId }, 'mTLS key secret refresh refused; the current key and certificate stay in use')
      }
    }, keySecret.refreshMs)
  }
  app.addHook('onClose', async () => {
    stopRefresh?.()
    await Promise.all([upstreams.dict.close(), upstreams.spi.close()])
    // After the last rotation that may be under way (it would otherwise send on a destroyed client).
    await queue
    secrets?.destroy()
  })
}, { name: 'pix-upstreams', fastify: '5.x', dependencies: ['pix-crypto', 'pix-metrics'] })

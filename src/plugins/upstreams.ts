/**
 * The two BACEN upstreams (DICT, SPI/ICOM) behind one TLS key agent: the mTLS client key stays in the HSM and is
 * used through the libp11 engine inside Node's TLS (src/tls/). One keep-alive pool per origin.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { readPemSetting } from '../config.ts'
import type { Config } from '../config.ts'
import { TlsKeyAgent } from '../upstream/tls-key-agent.ts'
import type { TlsClientIdentity, TlsKeySource } from '../upstream/tls-key-agent.ts'
import { Upstream } from '../upstream/client.ts'
import type { UpstreamOptions } from '../upstream/client.ts'

export interface Upstreams {
  readonly agent: TlsKeyAgent
  readonly dict: Upstream
  readonly spi: Upstream
  /**
   * Re-reads the mTLS certificate and CA files and rotates the agent: new connections present the new
   * certificate, requests in flight finish on their connections. Throws (and changes nothing) when the new files
   * are unusable, e.g. a certificate that does not match the HSM key.
   */
  reloadCertificates (): Promise<void>
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
}

/** The engine URI: the PIN stays in its file (pin-source), never in a JS string. */
function engineKeyUri (tokenLabel: string, keyLabel: string, pinFile: string): string {
  const enc = (v: string): string => encodeURIComponent(v).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
  return `pkcs11:token=${enc(tokenLabel)};object=${enc(keyLabel)};type=private?pin-source=file:${encodeURI(pinFile)}`
}

export default fp(async function upstreamsPlugin (app: FastifyInstance, opts: UpstreamsPluginOptions) {
  const { config } = opts
  let key: TlsKeySource
  if (config.tls.keyLabel !== null) {
    if (config.hsm === null || app.crypto.pinFile === null) throw new Error('unreachable: config validation requires the HSM settings with a TLS key label')
    key = { kind: 'engine', uri: engineKeyUri(config.hsm.tokenLabel, config.tls.keyLabel, app.crypto.pinFile) }
  } else {
    key = { kind: 'pem', keyPem: await readPemSetting(config.tls.keyFile as string) }
  }
  const identity = async (): Promise<TlsClientIdentity> => ({
    certPem: await readPemSetting(config.tls.certFile),
    caPem: await readPemSetting(config.tls.caFile),
    key,
    minVersion: config.tls.minVersion,
    ...(config.tls.sigalgs === null ? {} : { sigalgs: config.tls.sigalgs }),
    ...(app.crypto.tlsPublicKey === null ? {} : { expectedPublicKey: app.crypto.tlsPublicKey })
  })
  const agent = TlsKeyAgent.create(await identity())
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
      agent.rotate(await identity())
      app.log.info({ certificate: agent.certificate.subjectString, serial: agent.certificate.serialDecimal, notAfter: agent.certificate.notAfter }, 'mTLS certificate rotated')
    }
  }
  app.decorate('upstreams', upstreams)
  app.addHook('onClose', async () => {
    await Promise.all([upstreams.dict.close(), upstreams.spi.close()])
  })
}, { name: 'pix-upstreams', fastify: '5.x', dependencies: ['pix-crypto'] })

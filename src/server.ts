/**
 * The proxy's entry point: configuration from the environment, the app, listen, and graceful shutdown.
 * The process is exited only by the process handling both entry points share (lifecycle.ts), which this calls.
 */
import { buildApp } from './app.ts'
import { loadConfig } from './config.ts'
import type { Config } from './config.ts'
import { loadConfigSources } from './config-sources.ts'
import { createSsmClient } from './aws/clients.ts'
import { closeThenExit, configOrExit, drainOnSignals, reloadOnSighup, startOrExit } from './lifecycle.ts'
import type { FastifyInstance } from 'fastify'

export interface RunningProxy {
  readonly app: FastifyInstance
  readonly url: string
  /** Closes the app: requests in flight drain, then the audit trail closes (plugins/audit.ts). No deadline of its own. */
  close (): Promise<void>
}

/**
 * Starts the proxy. The libp11 engine picks its PKCS#11 module from PKCS11_MODULE_PATH, which must therefore name
 * the same module as the configuration: set it from the config when absent, refuse a contradiction.
 */
export async function startProxy (config: Config, env: NodeJS.ProcessEnv = process.env): Promise<RunningProxy> {
  if (config.hsm !== null && config.tls.keyLabel !== null) {
    if (env.PKCS11_MODULE_PATH === undefined) env.PKCS11_MODULE_PATH = config.hsm.modulePath
    else if (env.PKCS11_MODULE_PATH !== config.hsm.modulePath) {
      throw new Error(`PKCS11_MODULE_PATH (${env.PKCS11_MODULE_PATH}) and PIXPROXY_HSM_MODULE_PATH (${config.hsm.modulePath}) differ: the TLS engine and the signer would use different HSM modules`)
    }
  }
  const app = await buildApp({ config })
  const address = await app.listen({ host: config.listen.host, port: config.listen.port })
  // The entry point's shutdown (closeThenExit) bounds the close, and the wait for the audit thread's end after it.
  return { app, url: address, close: async () => { await app.close() } }
}

/**
 * The settings: the environment, plus the parameters under PIXPROXY_CONFIG_SSM_PATH when set (the environment
 * wins, so an operator can override one parameter for one task). The AWS SDK finds region and credentials itself
 * (the ECS task role).
 */
async function configSource (env: NodeJS.ProcessEnv): Promise<Record<string, string | undefined>> {
  const path = env.PIXPROXY_CONFIG_SSM_PATH
  if (path === undefined || path === '') return env
  const client = createSsmClient()
  try {
    const { source, origins } = await loadConfigSources({ env, ssm: { client, path } })
    const fromSsm = Object.entries(origins).filter(([, o]) => o === 'ssm').map(([k]) => k)
    process.stderr.write(JSON.stringify({ msg: 'settings loaded', ssmPath: path, fromSsm }) + '\n')
    return source
  } finally {
    client.destroy()
  }
}

/** `pix-proxy serve` and `node dist/src/server.js`: configuration from the environment, run until SIGTERM. */
export async function main (): Promise<void> {
  const config = await configOrExit(async () => loadConfig(await configSource(process.env)))
  const running = startOrExit(startProxy(config))
  // The drain deadline (PIXPROXY_SHUTDOWN_TIMEOUT_MS) starts when the drain does, in closeThenExit (see
  // drainOnSignals: a deadline armed at the signal also counted the rest of the start-up, and a start-up slowed by
  // load (the audit thread, the spool's replay) then ended a clean stop with exit 1). An audit thread stuck in a system
  // call (an fdatasync on a file system that stopped answering) never ends: the deadline then kills the process.
  const stop = (proxy: RunningProxy): void => {
    void closeThenExit({
      close: async () => { await proxy.close() },
      threads: proxy.app.audit.worker,
      deadlineMs: config.shutdownTimeoutMs,
      failed: (err) => { proxy.app.log.error({ err }, 'shutdown failed') },
      late: () => { proxy.app.log.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown deadline passed; exiting with work in flight') }
    })
  }
  drainOnSignals(running, (proxy, signal) => {
    proxy.app.log.info({ signal }, 'shutting down: draining in-flight requests')
    stop(proxy)
  })
  // Certificate rotation: replace the PEM files, then `kill -HUP <pid>`; no request is dropped.
  reloadOnSighup(running, async (proxy) => {
    await proxy.app.upstreams.reloadCertificates().catch((err: unknown) => {
      proxy.app.log.error({ err }, 'certificate rotation refused; the previous certificate stays in use')
    })
  })
  const proxy = await running
  // The audit worker stopped: every request is now refused (never sent unaudited). Close as for SIGTERM, then exit 1
  // so that the orchestrator starts a fresh task, whose spool replay ships what this one made durable.
  proxy.app.audit.onFailure((err) => {
    proxy.app.log.fatal({ err: err.message, code: err.code }, 'audit trail lost: shutting down')
    stop(proxy)
  })
}

if (import.meta.main) await main()

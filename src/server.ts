/**
 * The proxy's entry point: configuration from the environment, the app, listen, and graceful shutdown.
 * `process.exit` is used only here and in the process handling both entry points share (lifecycle.ts).
 */
import { buildApp } from './app.ts'
import { loadConfig } from './config.ts'
import type { Config } from './config.ts'
import { loadConfigSources } from './config-sources.ts'
import { createSsmClient } from './aws/clients.ts'
import { configOrExit, drainOnSignals, exitOrKill, reloadOnSighup, startOrExit } from './lifecycle.ts'
import type { FastifyInstance } from 'fastify'

export interface RunningProxy {
  readonly app: FastifyInstance
  readonly url: string
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
  let closing: Promise<void> | null = null
  const close = async (): Promise<void> => {
    closing ??= (async () => {
      // An audit thread stuck in a system call (an fdatasync on a file system that stopped answering) never ends, and
      // process.exit joins every thread: past the deadline the process then kills itself (exitOrKill), as the gateway.
      const deadline = setTimeout(() => {
        app.log.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown deadline passed; exiting with work in flight')
        exitOrKill(1, app.audit.worker?.ended ?? true)
      }, config.shutdownTimeoutMs)
      deadline.unref()
      try {
        await app.close()
      } finally {
        // A thread declared failed is only told to end by close(): wait for it here, under the deadline, so that the
        // process.exit after a failure (main) does not wait for it past the deadline.
        await app.audit.worker?.whenEnded()
      }
      clearTimeout(deadline)
    })()
    await closing
  }
  return { app, url: address, close }
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
  // The drain deadline (PIXPROXY_SHUTDOWN_TIMEOUT_MS) starts when the drain does, in RunningProxy.close() (see
  // drainOnSignals: a deadline armed at the signal also counted the rest of the start-up, and a start-up slowed by
  // load (the audit thread, the spool's replay) then ended a clean stop with exit 1).
  drainOnSignals(running, async (proxy, signal) => {
    proxy.app.log.info({ signal }, 'shutting down: draining in-flight requests')
    await proxy.close()
  }, (proxy, err) => { proxy.app.log.error({ err }, 'shutdown failed') })
  // Certificate rotation: replace the PEM files, then `kill -HUP <pid>`; no request is dropped.
  reloadOnSighup(running, async (proxy) => {
    await proxy.app.upstreams.reloadCertificates().catch((err: unknown) => {
      proxy.app.log.error({ err }, 'certificate rotation refused; the previous certificate stays in use')
    })
  })
  const proxy = await running
  // The audit worker stopped: every request is now refused (never sent unaudited). Exit so that the orchestrator
  // starts a fresh task, whose spool replay ships what this one made durable.
  proxy.app.audit.onFailure((err) => {
    proxy.app.log.fatal({ err: err.message, code: err.code }, 'audit trail lost: shutting down')
    proxy.close().finally(() => process.exit(1))
  })
}

if (import.meta.main) await main()

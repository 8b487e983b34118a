/**
 * The gateway's entry point (`pix-proxy gateway`, or `node dist/src/gateway/server.js`): configuration from the
 * environment (src/gateway/config.ts), run until SIGTERM/SIGINT (requests in flight drain), SIGHUP re-reads the
 * server certificate, truststore and CRLs. The only place of the gateway that exits the process (with lifecycle.ts,
 * the process handling it shares with the proxy's entry point).
 */
import pino from 'pino'
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { AuditService } from '../audit/service.ts'
import { configOrExit, drainOnSignals, reloadOnSighup, startOrExit } from '../lifecycle.ts'
import { journalAuditSink } from './audit.ts'
import type { GatewayAuditSink } from './audit.ts'
import { loadGatewayConfig } from './config.ts'
import type { GatewayConfig } from './config.ts'
import { startGateway } from './gateway.ts'
import type { Gateway } from './gateway.ts'
import { resolveServerKeyPin } from './pin.ts'

/**
 * Starts the gateway. The libp11 engine takes its PKCS#11 module from PKCS11_MODULE_PATH (never from the URI), so it
 * must name the configured module: set from the config when absent, a contradiction refused. A PIN in Secrets
 * Manager is written to a private file first (pin.ts), removed when the gateway closes or fails to start.
 * `secrets` is for tests (the local Secrets Manager); by default the SDK's usual sources.
 */
export async function runGateway (config: GatewayConfig, env: NodeJS.ProcessEnv = process.env, secrets?: SecretsManagerClient): Promise<Gateway> {
  if (config.serverKey.kind === 'hsm') {
    if (env.PKCS11_MODULE_PATH === undefined) env.PKCS11_MODULE_PATH = config.serverKey.modulePath
    else if (env.PKCS11_MODULE_PATH !== config.serverKey.modulePath) {
      throw new Error(`PKCS11_MODULE_PATH (${env.PKCS11_MODULE_PATH}) and PIXPROXY_HSM_MODULE_PATH (${config.serverKey.modulePath}) differ: the TLS engine would use another HSM module`)
    }
  }
  const logger = pino({ level: config.logLevel, base: { service: 'pix-proxy-gateway' }, redact: ['pin', '*.pin', 'key', '*.privateKey'] })
  const pin = await resolveServerKeyPin(config, logger, secrets)
  let gw: Gateway
  try {
    const audit = await openGatewayAudit(config, logger.child({ audit: 'gateway' }))
    try {
      gw = await startGateway({ config: pin.config, logger, identify: icpBrasilIdentity, audit })
    } catch (err) {
      await audit.close?.()
      throw err
    }
  } catch (err) {
    await pin.remove()
    throw err
  }
  // The engine reads the PIN file at every context build (reloads too): it stays until the gateway closes.
  const close = gw.close.bind(gw)
  return Object.assign(gw, {
    close: async () => {
      try {
        await close()
      } finally {
        await pin.remove()
      }
    }
  })
}

/**
 * The gateway's audit trail: the proxy's spool, pipeline and sinks (src/audit/service.ts) in this process, rows of
 * system gateway. Closing ships what it can within the shutdown deadline; the rest stays in the spool for the next
 * start, whose replay ships it.
 */
export async function openGatewayAudit (config: GatewayConfig, logger: pino.Logger): Promise<GatewayAuditSink> {
  const a = config.audit
  const service = await AuditService.open({
    enabled: true,
    spoolDir: a.spoolDir,
    spoolShared: false,
    spoolMaxBytes: a.spoolMaxBytes,
    sink: a.sink,
    parquetDir: a.parquetDir,
    // Only the gateway stream receives rows here (every row is system gateway); spi/dict are never written.
    firehoseStreams: { spi: config.auditFirehoseStream, dict: config.auditFirehoseStream, gateway: config.auditFirehoseStream },
    flushMs: a.flushMs
  }, logger)
  return journalAuditSink(service, async () => {
    const { left } = await service.close(Math.max(1_000, Math.floor(config.shutdownTimeoutMs / 2)))
    if (left > 0) logger.warn({ left }, 'gateway audit rows left in the spool for the next start')
  })
}

export async function main (): Promise<void> {
  const config = await configOrExit(() => loadGatewayConfig(process.env))
  const running = startOrExit(runGateway(config))
  drainOnSignals(running, async (gw) => {
    // The deadline starts with the drain (see drainOnSignals).
    const deadline = setTimeout(() => process.exit(1), config.shutdownTimeoutMs)
    deadline.unref()
    await gw.close()
  }, (_gw, err) => {
    const e = err as { code?: string, message?: string }
    process.stderr.write(JSON.stringify({ msg: 'shutdown failed', error: e.code ?? null, message: e.message }) + '\n')
  })
  // Rotation: replace the files, then `kill -HUP <pid>`; open client connections are judged again (docs/gateway.md).
  reloadOnSighup(running, async (gw) => await gw.reload({ force: true }))
  await running
}

if (import.meta.main) await main()

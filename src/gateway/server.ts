/**
 * The gateway's entry point (`pix-proxy gateway`, or `node dist/src/gateway/server.js`): configuration from the
 * environment (src/gateway/config.ts), run until SIGTERM/SIGINT (requests in flight drain), SIGHUP re-reads the
 * server certificate, truststore and CRLs, and a lost audit trail (its worker thread stopped) closes the gateway and
 * exits 1. The process is exited only by the process handling this shares with the proxy's entry point (lifecycle.ts),
 * which only the two entry points call.
 */
import pino from 'pino'
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { icpBrasilIdentity } from '../../core/pki/icp-brasil.ts'
import { AuditWorker } from '../audit/remote.ts'
import { closeThenExit, configOrExit, drainOnSignals, reloadOnSighup, startOrExit } from '../lifecycle.ts'
import { journalAuditSink } from './audit.ts'
import type { GatewayAuditSink } from './audit.ts'
import { loadGatewayConfig } from './config.ts'
import type { GatewayConfig } from './config.ts'
import { startGateway } from './gateway.ts'
import type { Gateway } from './gateway.ts'
import { resolveServerKeyPin } from './pin.ts'

/** The gateway as its entry point runs it: with its audit trail in a worker thread, which may stop. */
export interface RunningGateway extends Gateway {
  /**
   * The audit worker thread. Its onFailure listeners are told if it stops while the gateway runs: every call is
   * refused from then on (503, never forwarded unaudited), so the entry point closes the gateway and exits 1 for the
   * orchestrator to start a fresh task, whose spool replay ships what this one made durable. Drills and tests: its
   * abort() is what a crash of the thread looks like.
   */
  readonly auditWorker: AuditWorker
}

/**
 * Starts the gateway. The libp11 engine takes its PKCS#11 module from PKCS11_MODULE_PATH (never from the URI), so it
 * must name the configured module: set from the config when absent, a contradiction refused. A PIN in Secrets
 * Manager is written to a private file first (pin.ts), removed when the gateway closes or fails to start.
 * For tests: `secrets` (the local Secrets Manager; by default the SDK's usual sources), `logger` (by default pino on
 * stdout at the configured level).
 */
export async function runGateway (config: GatewayConfig, env: NodeJS.ProcessEnv = process.env, o: { secrets?: SecretsManagerClient, logger?: pino.Logger } = {}): Promise<RunningGateway> {
  if (config.serverKey.kind === 'hsm') {
    if (env.PKCS11_MODULE_PATH === undefined) env.PKCS11_MODULE_PATH = config.serverKey.modulePath
    else if (env.PKCS11_MODULE_PATH !== config.serverKey.modulePath) {
      throw new Error(`PKCS11_MODULE_PATH (${env.PKCS11_MODULE_PATH}) and PIXPROXY_HSM_MODULE_PATH (${config.serverKey.modulePath}) differ: the TLS engine would use another HSM module`)
    }
  }
  const logger = o.logger ?? pino({ level: config.logLevel, base: { service: 'pix-proxy-gateway' }, redact: ['pin', '*.pin', 'key', '*.privateKey'] })
  const pin = await resolveServerKeyPin(config, logger, o.secrets)
  let gw: Gateway
  let audit: GatewayAuditTrail
  try {
    audit = await openGatewayAudit(config, logger.child({ audit: 'gateway' }))
    try {
      gw = await startGateway({ config: pin.config, logger, identify: icpBrasilIdentity, audit })
    } catch (err) {
      // The start's own error is the one to report: a close that fails too is logged, never put in its place.
      await audit.close().catch((closeErr: unknown) => { logger.error({ err: closeErr }, 'gateway audit trail not closed after a failed start') })
      throw err
    }
  } catch (err) {
    await pin.remove()
    throw err
  }
  const { worker } = audit
  worker.onFailure((err) => {
    // The stable code first: what an operator's alarm (and docs/operations.md) keys on.
    logger.fatal({ code: err.code, err: err.message }, 'gateway audit trail lost: every call is refused; shutting down')
  })
  // The engine reads the PIN file at every context build (reloads too): it stays until the gateway closes.
  const close = gw.close.bind(gw)
  return Object.assign(gw, {
    close: async () => {
      try {
        await close()
      } finally {
        await pin.remove()
      }
    },
    auditWorker: worker
  })
}

/** The gateway's audit trail: the rows' sink, and the worker thread that runs it. */
export interface GatewayAuditTrail extends GatewayAuditSink {
  readonly worker: AuditWorker
  close (): Promise<void>
}

/**
 * The gateway's audit trail, rows of system gateway: the proxy's spool, pipeline and sink in the proxy's audit worker
 * thread (src/audit/remote.ts; the sink in a further thread of its own), so that none of their work runs on the event
 * loop that serves the TLS clients (docs/gateway.md, "Audit", says what it cost there). Closing ships what it can
 * within half the shutdown deadline; the rest stays in the spool for the next start, whose replay ships it.
 * @throws what opening the spool or the sink raised (AUDIT_SPOOL_LOCKED, AUDIT_STORE_OPEN…), or AUDIT_WORKER_FAILED.
 */
export async function openGatewayAudit (config: GatewayConfig, logger: pino.Logger): Promise<GatewayAuditTrail> {
  const a = config.audit
  const { worker, status } = await AuditWorker.start({
    enabled: true,
    spoolDir: a.spoolDir,
    spoolShared: a.spoolShared,
    spoolMaxBytes: a.spoolMaxBytes,
    sink: a.sink,
    parquetDir: a.parquetDir,
    // Only the gateway stream receives rows here (every row is system gateway); spi/dict are never written.
    firehoseStreams: { spi: config.auditFirehoseStream, dict: config.auditFirehoseStream, gateway: config.auditFirehoseStream },
    flushMs: a.flushMs
  }, logger)
  const replay = status.spool.replay
  logger.info({ sink: status.sink, spool: status.spoolDir, replayedRows: replay.rows, incomplete: replay.incomplete, tornBytes: replay.tornBytes }, 'gateway audit trail ready')
  const close = async (): Promise<void> => {
    // A worker that stopped ships nothing here (close() only ends it): its durable rows wait for the next start.
    const { shipped, left } = await worker.close(Math.max(1_000, Math.floor(config.shutdownTimeoutMs / 2)))
    if (left > 0) logger.warn({ shipped, left }, 'gateway audit rows left in the spool for the next start')
  }
  return { ...journalAuditSink(worker, close), worker, close }
}

export async function main (): Promise<void> {
  const config = await configOrExit(() => loadGatewayConfig(process.env))
  const running = startOrExit(runGateway(config))
  // The deadline starts with the drain (see drainOnSignals). An audit thread stuck in a system call holds both the
  // close (which waits for it to end) and process.exit: the deadline kills the process then (closeThenExit). A drain
  // that finds the audit trail lost (before or during it) exits 1, as the failure path does.
  const stop = (gw: RunningGateway): void => {
    void closeThenExit({
      close: async () => { await gw.close() },
      threads: gw.auditWorker,
      deadlineMs: config.shutdownTimeoutMs,
      failed: (err) => {
        const e = err as { code?: string, message?: string }
        process.stderr.write(JSON.stringify({ msg: 'shutdown failed', error: e.code ?? null, message: e.message }) + '\n')
      }
    })
  }
  drainOnSignals(running, stop)
  // Rotation: replace the files, then `kill -HUP <pid>`; open client connections are judged again (docs/gateway.md).
  reloadOnSighup(running, async (gw) => await gw.reload({ force: true }))
  const gw = await running
  // The audit worker stopped (runGateway logged why): every call is now refused, never forwarded unaudited. Close as
  // for SIGTERM (requests in flight end, the deadline bounds it), then exit 1 so that the orchestrator replaces the
  // task; the next one's spool replay ships what this one made durable.
  gw.auditWorker.onFailure(() => { stop(gw) })
}

if (import.meta.main) await main()

/**
 * The `audit` readiness check, one definition for both processes that run an audit worker thread: the proxy's
 * /readyz (routes/health.ts) and the inbound gateway's (gateway/gateway.ts). A task is not ready when its audit thread
 * has stopped or does not answer in time (every call would be refused: another task should take them), or when its
 * spool is near its bound (calls are about to be refused with AUDIT_SPOOL_FULL).
 */
import type { PixProxyError } from '../../core/errors.ts'
import type { AuditStatus } from './service.ts'
import type { SpoolStats } from './spool.ts'

export interface Check { readonly ok: boolean, readonly detail: string }

/** Above this share of the spool's bound (PIXPROXY_AUDIT_SPOOL_MAX_BYTES, PIXGW_AUDIT_SPOOL_MAX_BYTES) the task is
 * not ready: new traffic should go elsewhere before begin() starts refusing every request with AUDIT_SPOOL_FULL at
 * 100 %. */
export const SPOOL_HIGH_WATER = 0.9

/** The `audit` check from a spool snapshot. */
export function spoolCheck (s: SpoolStats): Check {
  const used = `${s.bytes} of ${s.maxBytes} spool bytes`
  if (s.failed) return { ok: false, detail: 'the audit spool failed: requests are refused' }
  if (s.bytes >= SPOOL_HIGH_WATER * s.maxBytes) {
    return { ok: false, detail: `${used}, above the ${SPOOL_HIGH_WATER * 100} % high-water mark: new requests are about to be refused (AUDIT_SPOOL_FULL); is the sink down?` }
  }
  return { ok: true, detail: `${s.pendingRows} rows pending, ${used}${s.nearFull ? ' (WARNING: spool near full; is the sink down?)' : ''}` }
}

/**
 * The `audit` check of a running audit thread: its failure when it has stopped (the code says whether it died or was
 * declared stuck), else a fresh status. The status call gives up with AUDIT_WORKER_UNRESPONSIVE when the thread does
 * not answer within its timeout (AuditWorker.status: 2 s), so that a thread stuck in a system call makes the task
 * not ready instead of hanging the probe. Null when there is no audit thread (`status` answers null: auditing off).
 */
export async function auditCheck (audit: { readonly failure: PixProxyError | null, status (): Promise<AuditStatus> | null }): Promise<Check | null> {
  if (audit.failure !== null) return { ok: false, detail: describe(audit.failure) }
  const status = audit.status()
  if (status === null) return null
  return await status.then(({ spool }) => spoolCheck(spool), (err: unknown) => ({ ok: false, detail: describe(err) }))
}

function describe (err: unknown): string {
  return `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`
}

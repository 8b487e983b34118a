/**
 * The gateway's Prometheus metrics, on a registry of its own (served on the ops port). Names follow the proxy's
 * conventions (src/plugins/metrics.ts): pixgw_* for the gateway's own, Node's defaults unprefixed, and its audit
 * trail's the proxy's pixproxy_audit_* (src/audit/metrics.ts, one definition for both): the same thread, spool and
 * sink, read by the same dashboards and alarms.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { registerAuditMetrics } from '../audit/metrics.ts'
import type { AuditThread } from '../audit/metrics.ts'
import type { AuditWaitObserver } from '../audit/recorder.ts'

export interface GatewayMetrics {
  readonly registry: Registry
  /** By allowlist route (the pattern as configured, or "none"), method and status. */
  readonly requests: Counter<'route' | 'method' | 'status'>
  readonly requestSeconds: Histogram<'route'>
  /** Clients refused during or right after the handshake, by reason (OpenSSL's verification code, lower-cased). */
  readonly handshakeFailures: Counter<'reason'>
  /** Seconds since each CRL's thisUpdate, and whether it is past its nextUpdate. */
  readonly crlAgeSeconds: Gauge<'crl'>
  readonly crlStale: Gauge<'crl'>
  /** Truststore/CRL reloads: applied, unchanged, refused. */
  readonly reloads: Counter<'result'>
  /**
   * Client connections the gateway closed on its own: revoked, untrusted, expired, no_crl, crl_stale (the client judged
   * again after a reload) or max_age (PIXGW_MAX_CONNECTION_AGE_MS).
   */
  readonly connectionsClosed: Counter<'reason'>
  /** Client connections open now (verified clients only). */
  readonly openConnections: Gauge
  /** Reads of the truststore and CRLs: file, fetched (S3 sent the object), not-modified (S3 answered 304), failed. */
  readonly sourceReads: Counter<'result'>
  /**
   * How long a call waited for one of its audit halves to be durable (pixproxy_audit_wait_seconds): begin before it
   * is forwarded, end before its answer's last byte. Does nothing without an audit thread.
   */
  readonly auditWait: AuditWaitObserver
}

/** The gateway's metrics; with `audit` (the audit worker thread), its pixproxy_audit_* metrics too. */
export function createGatewayMetrics (audit?: AuditThread): GatewayMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  return Object.freeze({
    registry,
    requests: new Counter({ name: 'pixgw_requests_total', help: 'Requests answered, by allowlist route, method and status', labelNames: ['route', 'method', 'status'] as const, registers: [registry] }),
    requestSeconds: new Histogram({ name: 'pixgw_request_duration_seconds', help: 'Time from the request to the end of its answer', labelNames: ['route'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry] }),
    handshakeFailures: new Counter({ name: 'pixgw_handshake_failures_total', help: 'Clients refused at or right after the TLS handshake, by reason', labelNames: ['reason'] as const, registers: [registry] }),
    crlAgeSeconds: new Gauge({ name: 'pixgw_crl_age_seconds', help: 'Seconds since the thisUpdate of each loaded CRL', labelNames: ['crl'] as const, registers: [registry] }),
    crlStale: new Gauge({ name: 'pixgw_crl_stale', help: '1 when a loaded CRL is past its nextUpdate', labelNames: ['crl'] as const, registers: [registry] }),
    reloads: new Counter({ name: 'pixgw_trust_reloads_total', help: 'Truststore and CRL reloads, by result (applied, unchanged, refused)', labelNames: ['result'] as const, registers: [registry] }),
    connectionsClosed: new Counter({ name: 'pixgw_connections_closed_total', help: 'Client connections closed by the gateway, by reason (revoked, untrusted, expired, no_crl, crl_stale after a reload; max_age)', labelNames: ['reason'] as const, registers: [registry] }),
    openConnections: new Gauge({ name: 'pixgw_client_connections', help: 'Verified client connections open', registers: [registry] }),
    sourceReads: new Counter({ name: 'pixgw_trust_source_reads_total', help: 'Reads of the truststore and CRLs, by result (file, fetched, not-modified, failed)', labelNames: ['result'] as const, registers: [registry] }),
    auditWait: audit === undefined ? () => {} : registerAuditMetrics(registry, audit)
  })
}

/**
 * The readiness rule of src/routes/health.ts as pure decisions: which probe endings blame our identity, when
 * BACEN's verdict counts, and the audit spool's high-water mark.
 */
import t from 'tap'
import type { SpoolStats } from '../../src/audit/spool.ts'
import { spoolCheck, SPOOL_HIGH_WATER } from '../../src/audit/readiness.ts'
import { identityCheck, probeVerdict } from '../../src/routes/health.ts'
import type { UpstreamProbe } from '../../src/routes/health.ts'

t.test('a probe blames our identity only when BACEN judged it', async (t) => {
  // Before our certificate went out: BACEN or the link is down, whatever the error.
  for (const error of ['ECONNREFUSED', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ECONNRESET', undefined]) {
    t.equal(probeVerdict({ identitySent: false, ...(error === undefined ? {} : { error }) }), 'unreachable', `${String(error)} before our certificate`)
  }
  // After it: a connection ended by BACEN (TLS 1.2 reset after our flight; TLS 1.3 close before any ticket).
  for (const error of ['ECONNRESET', 'EPIPE', undefined, 'ERR_SSL_TLSV1_ALERT_INTERNAL_ERROR']) {
    t.equal(probeVerdict({ identitySent: true, ...(error === undefined ? {} : { error }) }), 'refused', `${String(error)} after our certificate`)
  }
  // An alert about the client certificate or its signature, whenever it comes.
  for (const error of ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED', 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR']) {
    t.equal(probeVerdict({ identitySent: false, error }), 'refused', error)
  }
  // Our own verdict on BACEN's certificate: not about our identity.
  for (const error of ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'ERROR']) {
    t.equal(probeVerdict({ identitySent: true, error }), 'unreachable', error)
  }
})

t.test('BACEN\'s refusal counts only when no upstream accepted the same certificate', async (t) => {
  const local = { ok: true, detail: 'TLSv1.3 handshake signed by pkcs11:token=t;object=k;type=private' }
  const p = (verdict: UpstreamProbe['verdict']): UpstreamProbe => ({ verdict, detail: verdict })
  t.equal(identityCheck(local, { dict: p('refused'), spi: p('refused') }).ok, false, 'both refuse')
  t.match(identityCheck(local, { dict: p('refused'), spi: p('refused') }).detail, /BACEN refused our client certificate \(dict, spi\)/)
  t.equal(identityCheck(local, { dict: p('refused'), spi: p('unreachable') }).ok, false, 'one refuses, the other cannot be asked')
  t.equal(identityCheck(local, { dict: p('refused'), spi: p('accepted') }).ok, true, 'the other accepts the same certificate: that server\'s problem')
  t.equal(identityCheck(local, { dict: p('unreachable'), spi: p('unreachable') }).ok, true, 'BACEN down')
  t.same(identityCheck({ ok: false, detail: 'engine' }, { dict: p('accepted'), spi: p('accepted') }), { ok: false, detail: 'engine' }, 'our own handshake failing counts whatever BACEN says')
})

t.test(`the audit spool: not ready from ${SPOOL_HIGH_WATER * 100} % of its bound, failed, ready below`, async (t) => {
  const maxBytes = 1_000_000
  const stats = (bytes: number, more: Partial<SpoolStats> = {}): SpoolStats => ({
    bytes,
    maxBytes,
    nearFull: bytes >= 0.8 * maxBytes,
    segments: 1,
    pendingRows: 3,
    openRows: 0,
    readyRows: 3,
    parkedRows: 0,
    oldestUnshippedAgeMs: 0,
    spooledRows: 3,
    shippedRows: 0,
    rejectedFull: 0,
    syncs: 1,
    failed: false,
    replay: { rows: 0, incomplete: 0, alreadyShipped: 0, tornBytes: 0, corruptBytes: 0 },
    ...more
  })
  t.same(spoolCheck(stats(0)), { ok: true, detail: `3 rows pending, 0 of ${maxBytes} spool bytes` })
  t.equal(spoolCheck(stats(899_999)).ok, true)
  t.match(spoolCheck(stats(899_999)).detail, /WARNING: spool near full/)
  t.equal(spoolCheck(stats(900_000)).ok, false)
  t.match(spoolCheck(stats(900_000)).detail, /high-water mark.*AUDIT_SPOOL_FULL/)
  t.equal(spoolCheck(stats(maxBytes)).ok, false)
  t.same(spoolCheck(stats(0, { failed: true })), { ok: false, detail: 'the audit spool failed: requests are refused' })
})

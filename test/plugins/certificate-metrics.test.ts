/**
 * pixproxy_certificate_expiry_seconds to the second (X.509 validity has no finer grain) with an injected clock, and following a TLS key agent
 * through a rotation.
 */
import t from 'tap'
import { Registry } from 'prom-client'
import { registerCertificateExpiry } from '../../src/plugins/certificate-metrics.ts'
import type { HeldCertificate } from '../../src/plugins/certificate-metrics.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import { TlsKeyAgent } from '../../src/upstream/tls-key-agent.ts'

const DAY_MS = 86_400_000
const now = Date.UTC(2030, 0, 1) // everything below is valid then (issued now, for 10 years)
const pki = createTestPki()

async function samples (registry: Registry): Promise<Array<{ labels: Record<string, string | number>, value: number }>> {
  const metric = registry.getSingleMetric('pixproxy_certificate_expiry_seconds')
  if (metric === undefined) throw new Error('not registered')
  return (await metric.get()).values.map(({ labels, value }) => ({ labels: labels as Record<string, string | number>, value }))
}

t.test('each held certificate: seconds to notAfter at the scrape, by role, subject and serial; negative once expired', async (t) => {
  const signing = pki.issue('CN=signing', { notAfter: new Date(now + 30 * DAY_MS) }).certificate
  const bacen = pki.issue('CN=bacen', { notAfter: new Date(now + 7 * DAY_MS + 1_000) }).certificate
  const expired = pki.issue('CN=old', { notBefore: new Date(now - 400 * DAY_MS), notAfter: new Date(now - 1_000) }).certificate
  const registry = new Registry()
  let clock = now
  const held: HeldCertificate[] = [{ role: 'signing', certificate: signing }, { role: 'bacen-signing', certificate: bacen }, { role: 'bacen-signing', certificate: expired }]
  registerCertificateExpiry(registry, () => held, () => clock)
  t.same(await samples(registry), [
    { labels: { role: 'signing', subject: 'CN=signing', serial: signing.serialDecimal }, value: 30 * 86_400 },
    { labels: { role: 'bacen-signing', subject: 'CN=bacen', serial: bacen.serialDecimal }, value: 7 * 86_400 + 1 },
    { labels: { role: 'bacen-signing', subject: 'CN=old', serial: expired.serialDecimal }, value: -1 }
  ])
  clock += 10_000
  t.same((await samples(registry)).map((s) => s.value), [30 * 86_400 - 10, 7 * 86_400 - 9, -11], 'computed at each scrape')
})

t.test('a rotated TLS identity: the new certificate and CA bundle at the next scrape, the old ones gone', async (t) => {
  const ca2 = createTestPki({ caSubject: 'CN=Other CA' })
  const first = pki.issue('CN=client', { notAfter: new Date(now + 20 * DAY_MS) })
  const second = pki.issue('CN=client', { notAfter: new Date(now + 365 * DAY_MS) })
  const pem = (k: unknown): string => (k as { export: (o: object) => string }).export({ type: 'pkcs8', format: 'pem' })
  const agent = TlsKeyAgent.create({ certPem: first.certificate.pem, caPem: pki.ca.certificate.pem, key: { kind: 'pem', keyPem: pem(first.key) } })
  const registry = new Registry()
  registerCertificateExpiry(registry, function * () {
    yield { role: 'tls-client', certificate: agent.certificate }
    for (const certificate of agent.cas) yield { role: 'bacen-ca', certificate }
  }, () => now)
  const byRole = async (): Promise<Array<[string | number | undefined, string | number | undefined, number]>> =>
    (await samples(registry)).map((s) => [s.labels.role, s.labels.serial, s.value])
  t.same(await byRole(), [
    ['tls-client', first.certificate.serialDecimal, 20 * 86_400],
    ['bacen-ca', pki.ca.certificate.serialDecimal, (pki.ca.certificate.notAfter.getTime() - now) / 1000]
  ])
  agent.rotate({ certPem: second.certificate.pem, caPem: ca2.ca.certificate.pem, key: { kind: 'pem', keyPem: pem(second.key) } })
  t.same(await byRole(), [
    ['tls-client', second.certificate.serialDecimal, 365 * 86_400],
    ['bacen-ca', ca2.ca.certificate.serialDecimal, (ca2.ca.certificate.notAfter.getTime() - now) / 1000]
  ])
})

/**
 * pixproxy_certificate_expiry_seconds: seconds until notAfter of every certificate the proxy holds, computed at
 * scrape time from what is in use then (a certificate rotated on SIGHUP shows its new value at the next scrape;
 * the one it replaced disappears). Negative once expired. Alarms take the minimum per role.
 */
import { Gauge } from 'prom-client'
import type { Registry } from 'prom-client'
import type { Certificate } from '../../core/pki/x509.ts'

/**
 * signing: our XMLDSig certificate. tls-client: our mTLS certificate (leaf). bacen-signing: the BACEN signing
 * certificates responses are verified against. bacen-ca: the CAs pinned for BACEN's TLS servers.
 */
export type CertificateRole = 'signing' | 'tls-client' | 'bacen-signing' | 'bacen-ca'

export interface HeldCertificate { readonly role: CertificateRole, readonly certificate: Certificate }

/** `held` is asked at each scrape; `now` (epoch ms) is a seam for tests. */
export function registerCertificateExpiry (registry: Registry, held: () => Iterable<HeldCertificate>, now: () => number = Date.now): Gauge<'role' | 'subject' | 'serial'> {
  return new Gauge({
    name: 'pixproxy_certificate_expiry_seconds',
    help: 'Seconds until the certificate\'s notAfter (negative once expired), by role (signing, tls-client, bacen-signing, bacen-ca), subject DN and decimal serial',
    labelNames: ['role', 'subject', 'serial'],
    registers: [registry],
    collect () {
      // A rotated-out certificate must not linger with a value frozen at its last scrape.
      this.reset()
      const at = now()
      for (const { role, certificate: c } of held()) {
        this.set({ role, subject: c.subjectString, serial: c.serialDecimal }, (c.notAfter.getTime() - at) / 1000)
      }
    }
  })
}

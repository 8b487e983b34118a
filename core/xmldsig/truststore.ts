import { dnKey, parseDn } from '../pki/dn.ts'
import type { Certificate } from '../pki/x509.ts'
import { Errors, PixProxyError } from '../errors.ts'

const MIN_RSA_BITS = 2048
const ISSUER_CACHE_MAX = 256
const ISSUER_CACHE_MAX_LENGTH = 512

/**
 * Signing certificates trusted to sign messages, found the way BACEN's KeyInfo names them: issuer DN + serial.
 * The issuer is compared as a distinguished name (types by OID, values prepared), not as a string, because other
 * implementations spell the same DN differently (spaces after commas, `E=` vs `EMAILADDRESS=`, quoting).
 */
export class TrustStore {
  private readonly byIssuerSerial = new Map<string, Certificate>()
  private readonly issuerKeys = new Map<string, string | null>()

  constructor (certificates: Iterable<Certificate> = []) {
    for (const c of certificates) this.add(c)
  }

  /** Adds a certificate; refuses keys the verifier would never accept (non-RSA, or RSA below 2048 bits). */
  add (certificate: Certificate): void {
    const key = certificate.publicKey
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    if (key.asymmetricKeyType !== 'rsa' || bits < MIN_RSA_BITS) {
      throw new PixProxyError(Errors.CERT_UNSUITABLE, [certificate.subjectString, `${key.asymmetricKeyType ?? 'unknown'} ${bits}-bit key; RSA of at least ${MIN_RSA_BITS} bits is required`])
    }
    this.byIssuerSerial.set(`${dnKey(certificate.issuer)}#${certificate.serial.toString(10)}`, certificate)
  }

  get size (): number {
    return this.byIssuerSerial.size
  }

  certificates (): Certificate[] {
    return [...this.byIssuerSerial.values()]
  }

  /**
   * The certificate with this issuer DN string and decimal serial, or undefined.
   * @throws PixProxyError DN_PARSE when `issuer` is not a distinguished name.
   */
  find (issuer: string, serialDecimal: string): Certificate | undefined {
    let key = this.issuerKeys.get(issuer)
    if (key === undefined) {
      key = dnKey(parseDn(issuer))
      // Only names of plausible size are remembered: the cache must not become a way to pin attacker memory.
      if (issuer.length <= ISSUER_CACHE_MAX_LENGTH) {
        if (this.issuerKeys.size >= ISSUER_CACHE_MAX) this.issuerKeys.clear()
        this.issuerKeys.set(issuer, key)
      }
    }
    return this.byIssuerSerial.get(`${key}#${BigInt(serialDecimal).toString(10)}`)
  }
}

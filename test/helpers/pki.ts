/**
 * A test PKI for the XMLDSig tests, generated fresh in memory by every test process (nothing is written to disk
 * unless a test asks for a PEM file): a CA whose DN looks like an ICP-Brasil SPB CA, and signing identities it
 * issued, each with a SoftwareSigner and an XmlSigner.
 *
 * The participant's subject deliberately differs from its issuer so that a signer writing the subject DN into
 * X509IssuerName (aws-samples/pix-proxy-samples#15) is caught, and the "twin" shares the participant's issuer and
 * serial with another key, which is what a forged KeyInfo pointing at a real certificate looks like to a verifier.
 */
import type { KeyObject } from 'node:crypto'
import { createTestPki } from '../../core/pki/ca.ts'
import type { TestPki } from '../../core/pki/ca.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { TrustStore, XmlSigner } from '../../core/xmldsig/index.ts'

const DAY_MS = 86_400_000
const YEAR_MS = 365 * DAY_MS

const CA_SUBJECT = 'CN=Test AC SPB v5, OU=CSPB-4, O=ICP-Brasil, C=BR'
const PARTICIPANT_SUBJECT = 'CN=99999004 Assinatura SPI, OU=SPB, O=Banco Exemplo S.A., L=Sao Paulo, ST=SP, C=BR'
const BCB_SUBJECT = 'CN=00038166 Assinatura SPI, OU=DEINF, O=Banco Central do Brasil, L=Brasilia, ST=DF, C=BR'

export interface TestIdentity {
  readonly certificate: Certificate
  readonly key: KeyObject
  readonly signer: SoftwareSigner
  readonly xmlSigner: XmlSigner
}

export interface XmldsigTestPki {
  readonly ca: TestPki['ca']
  /** A participant's signing certificate, issued by the CA, subject distinct from the issuer. */
  readonly participant: TestIdentity
  /** BCB's signing certificate, issued by the same CA. */
  readonly bcb: TestIdentity
  /** Valid from two years ago until one year ago. */
  readonly expired: TestIdentity
  /** Valid from one year from now for a year. */
  readonly notYetValid: TestIdentity
  /** Same issuer and serial as `participant`, another key: never in the same trust store as `participant`. */
  readonly participantTwin: TestIdentity
  /** Issues another identity from the CA (a fresh RSA-2048 key). */
  issue (subject: string, opts?: { serial?: bigint, notBefore?: Date, notAfter?: Date }): TestIdentity
  /** A trust store holding exactly these identities' certificates. */
  trustStore (...identities: TestIdentity[]): TrustStore
}

function identity (certificate: Certificate, key: KeyObject): TestIdentity {
  const signer = SoftwareSigner.fromKeyObject(key)
  return Object.freeze({
    certificate,
    key,
    signer,
    xmlSigner: new XmlSigner({
      signer,
      certificate,
      // Sign as of a moment inside the certificate's validity, so expired and not-yet-valid identities can still
      // produce the messages the verifier tests need (the signer refuses outside the window).
      clock: () => new Date((certificate.notBefore.getTime() + certificate.notAfter.getTime()) / 2)
    })
  })
}

/** Creates the CA and the identities (six RSA-2048 keys: call once per test file). */
export function createXmldsigPki (): XmldsigTestPki {
  const pki = createTestPki({ caSubject: CA_SUBJECT })
  const issue = (subject: string, opts: { serial?: bigint, notBefore?: Date, notAfter?: Date } = {}): TestIdentity => {
    const { certificate, key } = pki.issue(subject, opts)
    if (key === undefined) throw new Error('the test CA returned no private key')
    return identity(certificate, key)
  }
  const now = Date.now()
  const participant = issue(PARTICIPANT_SUBJECT)
  return Object.freeze({
    ca: pki.ca,
    participant,
    bcb: issue(BCB_SUBJECT),
    expired: issue('CN=99999004 Assinatura SPI expirada, O=Banco Exemplo S.A., C=BR',
      { notBefore: new Date(now - 2 * YEAR_MS), notAfter: new Date(now - YEAR_MS) }),
    notYetValid: issue('CN=99999004 Assinatura SPI futura, O=Banco Exemplo S.A., C=BR',
      { notBefore: new Date(now + YEAR_MS), notAfter: new Date(now + 2 * YEAR_MS) }),
    participantTwin: issue(PARTICIPANT_SUBJECT, { serial: participant.certificate.serial }),
    issue,
    trustStore: (...identities: TestIdentity[]) => new TrustStore(identities.map((i) => i.certificate))
  })
}

/**
 * The simulator's test PKI: one CA that issues BCB's TLS server certificate (dict-h/icom-h host names, localhost,
 * 127.0.0.1), BCB's signing certificate (and an expired one, for the expired-cert fault), and each participant's
 * TLS client and signing certificates. In memory for tests (`createSimulatorPki`), or kept in a directory and
 * reused (`loadOrCreateSimulatorPki`, the CLI). Keys are generated here, never committed; RSA-2048.
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { SoftwareSigner } from '../../core/signer.ts'
import { createTestPki, issueCertificate } from '../../core/pki/ca.ts'
import type { IssueOptions, TestPki } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import type { Certificate } from '../../core/pki/x509.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'
import type { SimulatorOptions, SimulatorParticipant } from './app.ts'

export const BCB_HOSTS = Object.freeze(['dict-h.pi.rsfn.net.br', 'icom-h.pi.rsfn.net.br', 'dict.pi.rsfn.net.br', 'icom.pi.rsfn.net.br', 'localhost'])
const CA_SUBJECT = 'CN=pix-proxy Simulator CA, OU=Simulador, O=pix-proxy, C=BR'

const DAY_MS = 86_400_000

export interface PemIdentity {
  readonly certificate: Certificate
  readonly key: KeyObject
  readonly certPem: string
  readonly keyPem: string
}

export interface SigningIdentity extends PemIdentity {
  readonly signer: SoftwareSigner
  readonly xmlSigner: XmlSigner
}

export interface ParticipantIdentity {
  readonly ispb: string
  readonly tls: PemIdentity
  readonly signing: SigningIdentity
}

export interface SimulatorPki {
  readonly ca: { readonly certificate: Certificate, readonly key: KeyObject, readonly certPem: string }
  readonly bcbTls: PemIdentity
  readonly bcbSigning: SigningIdentity
  /** Valid from two years ago until one year ago. */
  readonly bcbExpired: SigningIdentity
  readonly participants: ReadonlyMap<string, ParticipantIdentity>
  /** The participant's identity; issues one (TLS + signing) the first time an ISPB is asked for. */
  participant (ispb: string): ParticipantIdentity
  /**
   * The tls, bcb and participants options of buildSimulator/startSimulator for these identities.
   * `fingerprints: true` registers each participant's TLS certificate fingerprint (callers identified by TLS).
   */
  simulatorOptions (opts?: { fingerprints?: boolean }): Pick<SimulatorOptions, 'tls' | 'bcb' | 'participants'>
}

function pemIdentity (certificate: Certificate, key: KeyObject): PemIdentity {
  return { certificate, key, certPem: certificate.pem, keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string }
}

function signingIdentity (id: PemIdentity): SigningIdentity {
  const signer = SoftwareSigner.fromKeyObject(id.key)
  return { ...id, signer, xmlSigner: new XmlSigner({ signer, certificate: id.certificate }) }
}

function issueWithKey (pki: TestPki, subject: string, opts: Partial<IssueOptions>): PemIdentity {
  const { certificate, key } = pki.issue(subject, opts)
  if (key === undefined) throw new Error('the test CA returned no key')
  return pemIdentity(certificate, key)
}

function issueParticipant (pki: TestPki, ispb: string): ParticipantIdentity {
  return {
    ispb,
    tls: issueWithKey(pki, `CN=${ispb} TLS, OU=SPB, O=Participante ${ispb}, C=BR`, { extKeyUsage: ['clientAuth'] }),
    signing: signingIdentity(issueWithKey(pki, `CN=${ispb} Assinatura SPI, OU=SPB, O=Participante ${ispb}, C=BR`, { extKeyUsage: [] }))
  }
}

class Pki implements SimulatorPki {
  readonly ca: SimulatorPki['ca']
  readonly bcbTls: PemIdentity
  readonly bcbSigning: SigningIdentity
  readonly bcbExpired: SigningIdentity
  readonly participants = new Map<string, ParticipantIdentity>()
  private readonly issuer: TestPki

  constructor (issuer: TestPki, bcbTls: PemIdentity, bcbSigning: PemIdentity, bcbExpired: PemIdentity) {
    this.issuer = issuer
    this.ca = { certificate: issuer.ca.certificate, key: issuer.ca.key, certPem: issuer.ca.certificate.pem }
    this.bcbTls = bcbTls
    this.bcbSigning = signingIdentity(bcbSigning)
    this.bcbExpired = signingIdentity(bcbExpired)
  }

  participant (ispb: string): ParticipantIdentity {
    let p = this.participants.get(ispb)
    if (p === undefined) {
      p = issueParticipant(this.issuer, ispb)
      this.participants.set(ispb, p)
    }
    return p
  }

  simulatorOptions (opts: { fingerprints?: boolean } = {}): Pick<SimulatorOptions, 'tls' | 'bcb' | 'participants'> {
    const participants: SimulatorParticipant[] = [...this.participants.values()].map((p) => ({
      ispb: p.ispb,
      signingCerts: [p.signing.certificate],
      ...(opts.fingerprints === true ? { tlsCertFingerprints256: [p.tls.certificate.fingerprint256] } : {})
    }))
    return {
      tls: { certPem: this.bcbTls.certPem, keyPem: this.bcbTls.keyPem, clientCaPem: this.ca.certPem },
      bcb: {
        signer: this.bcbSigning.signer,
        certificate: this.bcbSigning.certificate,
        expired: { signer: this.bcbExpired.signer, certificate: this.bcbExpired.certificate }
      },
      participants
    }
  }
}

function issueBcb (pki: TestPki): { tls: PemIdentity, signing: PemIdentity, expired: PemIdentity } {
  const now = Date.now()
  return {
    tls: issueWithKey(pki, 'CN=dict-h.pi.rsfn.net.br, OU=DEINF, O=Banco Central do Brasil, C=BR', {
      dnsNames: [...BCB_HOSTS], ipAddresses: ['127.0.0.1', '::1'], extKeyUsage: ['serverAuth']
    }),
    signing: issueWithKey(pki, 'CN=00038166 Assinatura SPI, OU=DEINF, O=Banco Central do Brasil, C=BR', { extKeyUsage: [] }),
    expired: issueWithKey(pki, 'CN=00038166 Assinatura SPI expirada, OU=DEINF, O=Banco Central do Brasil, C=BR', {
      extKeyUsage: [], notBefore: new Date(now - 730 * DAY_MS), notAfter: new Date(now - 365 * DAY_MS)
    })
  }
}

/** A fresh in-memory PKI with these participants (two RSA keys each, plus five for the CA and BCB). */
export function createSimulatorPki (opts: { participants?: readonly string[] } = {}): SimulatorPki {
  const issuer = createTestPki({ caSubject: CA_SUBJECT })
  const bcb = issueBcb(issuer)
  const pki = new Pki(issuer, bcb.tls, bcb.signing, bcb.expired)
  for (const ispb of opts.participants ?? []) pki.participant(ispb)
  return pki
}

// ---------------------------------------------------------------------------------------------------------------
// On disk (the CLI)

export interface PkiFiles {
  readonly caCert: string
  readonly bcbTlsCert: string
  readonly bcbSigningCert: string
  readonly bcbExpiredSigningCert: string
  readonly participants: Readonly<Record<string, { tlsCert: string, tlsKey: string, signingCert: string, signingKey: string }>>
}

async function writePair (dir: string, name: string, id: PemIdentity): Promise<void> {
  await writeFile(join(dir, `${name}.pem`), id.certPem)
  await writeFile(join(dir, `${name}.key`), id.keyPem, { mode: 0o600 })
  await chmod(join(dir, `${name}.key`), 0o600)
}

async function readPair (dir: string, name: string): Promise<PemIdentity | undefined> {
  const certFile = join(dir, `${name}.pem`)
  const keyFile = join(dir, `${name}.key`)
  if (!existsSync(certFile) || !existsSync(keyFile)) return undefined
  const certificate = parseCertificate(await readFile(certFile))
  const key = createPrivateKey(await readFile(keyFile))
  return { certificate, key, certPem: certificate.pem, keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string }
}

/**
 * Loads the PKI kept in `dir`, or creates it; issues identities for participants not there yet. Returns the PKI
 * and the paths of the files a proxy or client needs.
 */
export async function loadOrCreateSimulatorPki (dir: string, ispbs: readonly string[]): Promise<{ pki: SimulatorPki, files: PkiFiles }> {
  try {
    await mkdir(join(dir, 'participants'), { recursive: true })
    const caPair = await readPair(dir, 'ca')
    let issuer: TestPki
    let bcb: { tls: PemIdentity, signing: PemIdentity, expired: PemIdentity }
    if (caPair === undefined) {
      issuer = createTestPki({ caSubject: CA_SUBJECT })
      bcb = issueBcb(issuer)
      await writePair(dir, 'ca', pemIdentity(issuer.ca.certificate, issuer.ca.key))
      await writePair(dir, 'bcb-tls', bcb.tls)
      await writePair(dir, 'bcb-signing', bcb.signing)
      await writePair(dir, 'bcb-signing-expired', bcb.expired)
    } else {
      issuer = reissuer({ certificate: caPair.certificate, key: caPair.key })
      const tls = await readPair(dir, 'bcb-tls')
      const signing = await readPair(dir, 'bcb-signing')
      const expired = await readPair(dir, 'bcb-signing-expired')
      if (tls === undefined || signing === undefined || expired === undefined) throw new Error('the directory has ca.pem but not every bcb-*.pem/.key; delete it to start over')
      bcb = { tls, signing, expired }
    }
    const pki = new Pki(issuer, bcb.tls, bcb.signing, bcb.expired)
    const participants: Record<string, { tlsCert: string, tlsKey: string, signingCert: string, signingKey: string }> = {}
    for (const ispb of ispbs) {
      const pdir = join(dir, 'participants', ispb)
      await mkdir(pdir, { recursive: true })
      const tls = await readPair(pdir, 'tls')
      const signing = await readPair(pdir, 'signing')
      if (tls !== undefined && signing !== undefined) {
        pki.participants.set(ispb, { ispb, tls, signing: signingIdentity(signing) })
      } else {
        const p = pki.participant(ispb)
        await writePair(pdir, 'tls', p.tls)
        await writePair(pdir, 'signing', p.signing)
      }
      participants[ispb] = { tlsCert: join(pdir, 'tls.pem'), tlsKey: join(pdir, 'tls.key'), signingCert: join(pdir, 'signing.pem'), signingKey: join(pdir, 'signing.key') }
    }
    return {
      pki,
      files: {
        caCert: join(dir, 'ca.pem'),
        bcbTlsCert: join(dir, 'bcb-tls.pem'),
        bcbSigningCert: join(dir, 'bcb-signing.pem'),
        bcbExpiredSigningCert: join(dir, 'bcb-signing-expired.pem'),
        participants
      }
    }
  } catch (err) {
    if (err instanceof PixProxyError) throw err
    throw new PixProxyError(Errors.SIMULATOR_PKI, [dir, (err as Error).message], { cause: err })
  }
}

/** A TestPki-shaped issuer over an existing CA certificate and key (createTestPki always makes a new CA). */
function reissuer (ca: { certificate: Certificate, key: KeyObject }): TestPki {
  const fresh = (subject: string, o: Partial<IssueOptions> & { publicKey?: KeyObject }): { certificate: Certificate, key?: KeyObject } => {
    if (o.publicKey !== undefined) return { certificate: issueCertificate({ ...o, subject, publicKey: o.publicKey, issuer: ca }) }
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 })
    return { certificate: issueCertificate({ ...o, subject, publicKey: pair.publicKey, issuer: ca }), key: pair.privateKey }
  }
  return Object.freeze({ ca: Object.freeze({ ...ca }), issue: (subject: string, o: Partial<IssueOptions> & { publicKey?: KeyObject } = {}) => fresh(subject, o) })
}

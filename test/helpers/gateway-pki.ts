/**
 * The PKI the gateway tests need, generated per test process: a root and an intermediate CA, client certificates
 * (valid, revoked, expired, from a foreign CA, without clientAuth), a server certificate, and CRLs signed by the
 * CAs (fresh, or past their nextUpdate). Files are written into a scratch directory the caller removes.
 */
import { generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { issueCertificate } from '../../core/pki/ca.ts'
import type { IssueOptions } from '../../core/pki/ca.ts'
import { issueCrl as issueCoreCrl } from '../../core/pki/crl.ts'
import type { Certificate } from '../../core/pki/x509.ts'

const HOUR = 3_600_000
const DAY = 24 * HOUR

export interface Issued {
  readonly certificate: Certificate
  readonly key: KeyObject
  readonly certPem: string
  readonly keyPem: string
}

function issue (subject: string, issuer: Issued | null, o: Partial<IssueOptions> = {}): Issued {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const certificate = issueCertificate({
    subject,
    publicKey,
    ...(issuer === null ? { selfSignKey: privateKey } : { issuer: { certificate: issuer.certificate, key: issuer.key } }),
    ...o
  })
  return { certificate, key: privateKey, certPem: certificate.pem, keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
}

/**
 * A v2 CRL (RFC 5280 §5.1) signed by `ca`, with a cRLNumber, listing `serials` (PEM): core/pki/crl.ts's issueCrl,
 * with the defaults these tests share (thisUpdate an hour ago, nextUpdate in a week).
 */
export function issueCrl (ca: Issued, opts: { serials?: bigint[], thisUpdate?: Date, nextUpdate?: Date, number?: number } = {}): string {
  const thisUpdate = opts.thisUpdate ?? new Date(Date.now() - HOUR)
  return issueCoreCrl({
    issuer: { certificate: ca.certificate, key: ca.key },
    revoked: (opts.serials ?? []).map((serial) => ({ serial, revocationDate: new Date(thisUpdate.getTime() - HOUR) })),
    thisUpdate,
    nextUpdate: opts.nextUpdate ?? new Date(Date.now() + 7 * DAY),
    crlNumber: BigInt(opts.number ?? 1)
  }).pem
}

export interface GatewayPki {
  readonly root: Issued
  readonly intermediate: Issued
  readonly foreignRoot: Issued
  readonly server: Issued
  readonly clients: {
    readonly valid: Issued
    readonly revoked: Issued
    readonly expired: Issued
    readonly foreign: Issued
    readonly noClientAuth: Issued
  }
  /** Paths written under `dir`. */
  readonly files: {
    readonly truststore: string
    readonly rootCrl: string
    readonly intermediateCrl: string
    readonly serverCert: string
    readonly serverKey: string
    /** What a client trusts for the server. */
    readonly serverCa: string
  }
  /** A client's PEM chain (leaf + intermediate) as a TLS client sends it. */
  chainOf (client: Issued): string
}

const CLIENT_SUBJECT = (cn: string): string =>
  `CN=${cn}, OU=OFBBR, O=Banco Exemplo S.A., serialNumber=11222333000181, C=BR`

export async function createGatewayPki (dir: string): Promise<GatewayPki> {
  const now = Date.now()
  const root = issue('CN=Test AC Raiz v10, OU=Instituto Nacional de Tecnologia da Informacao - ITI, O=ICP-Brasil, C=BR', null, { isCa: true, notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY) })
  const intermediate = issue('CN=Test AC Open Finance v1, O=ICP-Brasil, C=BR', root, { isCa: true, pathLength: 0, notBefore: new Date(now - DAY), notAfter: new Date(now + 1825 * DAY) })
  const foreignRoot = issue('CN=Foreign Root CA, O=Elsewhere, C=US', null, { isCa: true })
  const client = (cn: string, o: Partial<IssueOptions> = {}, by: Issued = intermediate): Issued =>
    issue(CLIENT_SUBJECT(cn), by, { keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['clientAuth'], dnsNames: [cn], ...o })
  const clients = {
    valid: client('tpp.example.com.br'),
    revoked: client('revoked.example.com.br'),
    expired: client('expired.example.com.br', { notBefore: new Date(now - 400 * DAY), notAfter: new Date(now - 30 * DAY) }),
    foreign: client('foreign.example.com', {}, foreignRoot),
    noClientAuth: client('server-only.example.com.br', { extKeyUsage: ['serverAuth'] })
  }
  const server = issue('CN=localhost, O=Banco Exemplo S.A., C=BR', intermediate, { keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['serverAuth'], dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] })

  const files = {
    truststore: join(dir, 'truststore.pem'),
    rootCrl: join(dir, 'root.crl'),
    intermediateCrl: join(dir, 'intermediate.crl'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    serverCa: join(dir, 'server-ca.pem')
  }
  await writeFile(files.truststore, root.certPem + intermediate.certPem)
  await writeFile(files.rootCrl, issueCrl(root))
  await writeFile(files.intermediateCrl, issueCrl(intermediate, { serials: [clients.revoked.certificate.serial] }))
  await writeFile(files.serverCert, server.certPem + intermediate.certPem)
  await writeFile(files.serverKey, server.keyPem, { mode: 0o600 })
  await writeFile(files.serverCa, root.certPem)
  return {
    root,
    intermediate,
    foreignRoot,
    server,
    clients,
    files,
    chainOf: (c) => c.certPem + (c === clients.foreign ? '' : intermediate.certPem)
  }
}

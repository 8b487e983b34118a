/**
 * A test PKI shaped like ICP-Brasil's, for the inbound gateway (issue 17): what Open Finance Brasil participants
 * present to it, generated at run time into a directory and never committed.
 *
 *   - a root ("... Raiz Brasileira v10 TESTE") and an intermediate under it, both with O=ICP-Brasil, C=BR;
 *   - client certificates with the Open Finance subject (businessCategory, jurisdictionCountryName, serialNumber =
 *     CNPJ, organizationIdentifier = OFBBR-<uuid>, UID = software statement ID, CN = FQDN; string types as the Open
 *     Finance certificate standard's table) and ICP-Brasil SAN otherNames (2.16.76.1.3.2/.3/.4/.7) plus a dNSName:
 *     `valid`, `revoked` (listed in the intermediate's CRL), `expired`, `foreign` (from a CA outside the truststore
 *     that copies the intermediate's name: only the signature tells them apart) and `noClientAuth` (EKU serverAuth);
 *   - a server certificate for the gateway, issued by the intermediate (localhost and 127.0.0.1 by default);
 *   - CRLs: the intermediate's (listing `revoked`) and the root's (empty; OpenSSL's crl_check_all, which Node turns
 *     on with its `crl` option, wants one per CA of the chain), with thisUpdate / nextUpdate configurable so a test
 *     can make a stale one.
 * Private keys are written 0600, the rest 0644; icp-pki.json (the result) is written last, so its presence means the
 * set is complete. RSA-2048 everywhere (real ICP-Brasil v10 roots are RSA-4096; the size only costs test time).
 */
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto'
import { isIP } from 'node:net'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { issueCertificate, type ExtKeyUsage } from '../../core/pki/ca.ts'
import { issueCrl } from '../../core/pki/crl.ts'
import { encodeOctetString, encodeString, Tag } from '../../core/pki/der.ts'
import { Oid, type Ava, type Dn } from '../../core/pki/dn.ts'
import { cnpjCheckDigits, IcpOid } from '../../core/pki/icp-brasil.ts'
import type { Certificate } from '../../core/pki/x509.ts'

export type IcpClientKind = 'valid' | 'revoked' | 'expired' | 'foreign' | 'noClientAuth'
export const ICP_CLIENT_KINDS: readonly IcpClientKind[] = Object.freeze(['valid', 'revoked', 'expired', 'foreign', 'noClientAuth'])

export interface IcpPkiOptions {
  /** The clock the validity periods are computed from (default: now). */
  readonly now?: Date
  /** The CRLs' thisUpdate (default: now - 1 hour). */
  readonly crlThisUpdate?: Date
  /** The CRLs' nextUpdate (default: now + 7 days); before `now` makes stale CRLs. */
  readonly crlNextUpdate?: Date
  /** DNS names and IP addresses of the gateway's server certificate (default: localhost, 127.0.0.1). */
  readonly serverNames?: readonly string[]
}

/** One client: its files and the identity its certificate carries. */
export interface IcpPkiClient {
  readonly certFile: string
  readonly keyFile: string
  /** The client certificate followed by its issuing intermediate, as a client sends it (Open Finance requires so). */
  readonly chainFile: string
  readonly subject: string
  readonly serial: string
  readonly fingerprint256: string
  readonly cnpj: string
  readonly organisationId: string
  readonly softwareStatementId: string
  readonly fqdn: string
}

/** What generateIcpPki wrote (absolute paths). */
export interface IcpPkiPaths {
  readonly dir: string
  /** The trusted roots bundle (the ICP-Brasil-shaped root). */
  readonly rootsFile: string
  /** The intermediates (one): what a truststore adds to the roots, and `-untrusted` for openssl verify. */
  readonly intermediatesFile: string
  /** Roots then intermediates in one PEM: the gateway's truststore bundle. */
  readonly trustBundleFile: string
  /** Both CRLs (intermediate's, then root's) in one PEM file. */
  readonly crlFile: string
  readonly intermediateCrlFile: string
  readonly rootCrlFile: string
  /** The foreign CA (not in the truststore), for tests that want to trust it deliberately. */
  readonly foreignCaFile: string
  readonly server: { readonly certFile: string, readonly keyFile: string, readonly chainFile: string, readonly names: readonly string[] }
  readonly clients: Readonly<Record<IcpClientKind, IcpPkiClient>>
  /** The serial (decimal) of `revoked`, as listed in the intermediate's CRL. */
  readonly revokedSerial: string
}

const DAY_MS = 86_400_000
const ROOT_SUBJECT = 'CN=Autoridade Certificadora Raiz Brasileira v10 TESTE, OU=Instituto Nacional de Tecnologia da Informacao - ITI, O=ICP-Brasil, C=BR'
const INTERMEDIATE_SUBJECT = 'CN=AC TESTE SSL ICP-Brasil v10, OU=Autoridade Certificadora Raiz Brasileira v10 TESTE, O=ICP-Brasil, C=BR'

/** Per client: the CNPJ base (12 digits, check digits computed) and the FQDN. */
const CLIENTS: Readonly<Record<IcpClientKind, { cnpjBase: string, fqdn: string, company: string }>> = {
  valid: { cnpjBase: '112223330001', fqdn: 'tpp-valid.example.com.br', company: 'Instituicao Valida S.A.' },
  revoked: { cnpjBase: '223334440001', fqdn: 'tpp-revoked.example.com.br', company: 'Instituicao Revogada S.A.' },
  expired: { cnpjBase: '334445550001', fqdn: 'tpp-expired.example.com.br', company: 'Instituicao Expirada S.A.' },
  foreign: { cnpjBase: '445556660001', fqdn: 'tpp-foreign.example.com.br', company: 'Instituicao Estrangeira S.A.' },
  noClientAuth: { cnpjBase: '556667770001', fqdn: 'tpp-noclientauth.example.com.br', company: 'Instituicao Sem ClientAuth S.A.' }
}

interface Ca { readonly certificate: Certificate, readonly key: KeyObject }

function rsa (): { publicKey: KeyObject, privateKey: KeyObject } {
  return generateKeyPairSync('rsa', { modulusLength: 2048 })
}

/**
 * The subject of an Open Finance client certificate, in ASN.1 order, one attribute per RDN with the string types
 * of the certificate standard's table (CN, UID, organizationIdentifier, L, ST, O UTF8String; C, serialNumber,
 * jurisdictionCountryName PrintableString; businessCategory UTF8String).
 */
function ofbClientSubject (f: { cnpj: string, organisationId: string, softwareStatementId: string, fqdn: string, company: string }): Dn {
  const rdn = (oid: string, value: string, tag: number): Ava[] => [{ oid, value, tag }]
  return [
    rdn(Oid.BUSINESS_CATEGORY, 'Private Organization', Tag.UTF8_STRING),
    rdn(IcpOid.JURISDICTION_COUNTRY, 'BR', Tag.PRINTABLE_STRING),
    rdn(Oid.SERIALNUMBER, f.cnpj, Tag.PRINTABLE_STRING),
    rdn(Oid.C, 'BR', Tag.PRINTABLE_STRING),
    rdn(Oid.O, f.company, Tag.UTF8_STRING),
    rdn(Oid.ST, 'SP', Tag.UTF8_STRING),
    rdn(Oid.L, 'Sao Paulo', Tag.UTF8_STRING),
    rdn(Oid.ORGANIZATION_IDENTIFIER, f.organisationId, Tag.UTF8_STRING),
    rdn(Oid.UID, f.softwareStatementId, Tag.UTF8_STRING),
    rdn(Oid.CN, f.fqdn, Tag.UTF8_STRING)
  ]
}

/** DOC-ICP-04's otherNames for a legal entity: responsible person, CNPJ, their birth date/CPF/..., CEI. */
function icpOtherNames (cnpj: string): Array<{ oid: string, value: Buffer }> {
  const octets = (s: string): Buffer => encodeOctetString(Buffer.from(s, 'latin1'))
  return [
    { oid: '2.16.76.1.3.2', value: encodeString(Tag.PRINTABLE_STRING, 'RESPONSAVEL DE TESTE') },
    { oid: IcpOid.OTHERNAME_CNPJ, value: octets(cnpj) },
    // birth date (8), CPF (11), PIS/PASEP (11), RG (15), issuer and state (6)
    { oid: '2.16.76.1.3.4', value: octets('01011980' + '52998224725' + '00000000000' + '000000000000000' + 'SSPSP ') },
    { oid: '2.16.76.1.3.7', value: octets('000000000000') }
  ]
}

const keyPem = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()

/** Writes a file that did not exist before (an existing one is removed first, never written through). */
async function writeNew (file: string, data: string, mode: number): Promise<void> {
  await rm(file, { force: true })
  await writeFile(file, data, { mode, flag: 'wx' })
}

/**
 * Generates the ICP-Brasil-shaped test PKI into `dir` (created 0700 if missing; files of a previous run replaced)
 * and returns the paths. Validity: CAs from now - 3 years for 10 years; clients and server from now - 1 day for a
 * year, except `expired` (now - 400 days to now - 30 days).
 */
export async function generateIcpPki (dir: string, opts: IcpPkiOptions = {}): Promise<IcpPkiPaths> {
  const out = resolve(dir)
  const now = opts.now ?? new Date()
  const at = (days: number): Date => new Date(now.getTime() + days * DAY_MS)
  const names = opts.serverNames ?? ['localhost', '127.0.0.1']
  await mkdir(out, { recursive: true, mode: 0o700 })
  const file = (name: string): string => join(out, name)
  await rm(file('icp-pki.json'), { force: true })

  const caValidity = { notBefore: at(-3 * 365), notAfter: at(7 * 365) }
  const rootPair = rsa()
  const root: Ca = {
    certificate: issueCertificate({ subject: ROOT_SUBJECT, publicKey: rootPair.publicKey, selfSignKey: rootPair.privateKey, isCa: true, pathLength: 1, ...caValidity }),
    key: rootPair.privateKey
  }
  const intermediatePair = rsa()
  const intermediate: Ca = {
    certificate: issueCertificate({ subject: INTERMEDIATE_SUBJECT, publicKey: intermediatePair.publicKey, issuer: root, isCa: true, pathLength: 0, ...caValidity }),
    key: intermediatePair.privateKey
  }
  // Same name as the trusted intermediate, its own key, self-signed: a chain builder that matched by name alone would
  // take its clients for ICP-Brasil's.
  const foreignPair = rsa()
  const foreign: Ca = {
    certificate: issueCertificate({ subject: INTERMEDIATE_SUBJECT, publicKey: foreignPair.publicKey, selfSignKey: foreignPair.privateKey, isCa: true, ...caValidity }),
    key: foreignPair.privateKey
  }

  const clients = {} as Record<IcpClientKind, IcpPkiClient>
  let revokedSerial = 0n
  for (const kind of ICP_CLIENT_KINDS) {
    const c = CLIENTS[kind]
    const cnpj = c.cnpjBase + (cnpjCheckDigits(c.cnpjBase) as string)
    const organisationId = 'OFBBR-' + randomUUID()
    const softwareStatementId = randomUUID()
    const pair = rsa()
    const extKeyUsage: ExtKeyUsage[] = kind === 'noClientAuth' ? ['serverAuth'] : ['clientAuth']
    const cert = issueCertificate({
      subject: ofbClientSubject({ cnpj, organisationId, softwareStatementId, fqdn: c.fqdn, company: c.company }),
      publicKey: pair.publicKey,
      issuer: kind === 'foreign' ? foreign : intermediate,
      notBefore: kind === 'expired' ? at(-400) : at(-1),
      notAfter: kind === 'expired' ? at(-30) : at(365),
      keyUsage: ['digitalSignature', 'keyEncipherment'],
      extKeyUsage,
      dnsNames: [c.fqdn],
      otherNames: icpOtherNames(cnpj)
    })
    if (kind === 'revoked') revokedSerial = cert.serial
    const issuerPem = (kind === 'foreign' ? foreign : intermediate).certificate.pem
    const base = `client-${kind}`
    await writeNew(file(`${base}.key`), keyPem(pair.privateKey), 0o600)
    await writeNew(file(`${base}.pem`), cert.pem, 0o644)
    await writeNew(file(`${base}-chain.pem`), cert.pem + issuerPem, 0o644)
    clients[kind] = {
      certFile: file(`${base}.pem`),
      keyFile: file(`${base}.key`),
      chainFile: file(`${base}-chain.pem`),
      subject: cert.subjectString,
      serial: cert.serialDecimal,
      fingerprint256: cert.fingerprint256,
      cnpj,
      organisationId,
      softwareStatementId,
      fqdn: c.fqdn
    }
  }

  const serverPair = rsa()
  const server = issueCertificate({
    subject: 'CN=' + (names[0] ?? 'localhost') + ', O=Banco Exemplo S.A., C=BR',
    publicKey: serverPair.publicKey,
    issuer: intermediate,
    notBefore: at(-1),
    notAfter: at(365),
    keyUsage: ['digitalSignature', 'keyEncipherment'],
    extKeyUsage: ['serverAuth'],
    dnsNames: names.filter((n) => isIP(n) === 0),
    ipAddresses: names.filter((n) => isIP(n) !== 0)
  })

  const crlTimes = { thisUpdate: opts.crlThisUpdate ?? new Date(now.getTime() - 3_600_000), nextUpdate: opts.crlNextUpdate ?? at(7) }
  const intermediateCrl = issueCrl({
    issuer: intermediate,
    revoked: [{ serial: revokedSerial, revocationDate: new Date(crlTimes.thisUpdate.getTime() - 60_000), reason: 'keyCompromise' }],
    ...crlTimes
  })
  const rootCrl = issueCrl({ issuer: root, ...crlTimes })

  await writeNew(file('root.pem'), root.certificate.pem, 0o644)
  await writeNew(file('root.key'), keyPem(root.key), 0o600)
  await writeNew(file('intermediate.pem'), intermediate.certificate.pem, 0o644)
  await writeNew(file('intermediate.key'), keyPem(intermediate.key), 0o600)
  await writeNew(file('trust-bundle.pem'), root.certificate.pem + intermediate.certificate.pem, 0o644)
  await writeNew(file('foreign-ca.pem'), foreign.certificate.pem, 0o644)
  await writeNew(file('intermediate.crl.pem'), intermediateCrl.pem, 0o644)
  await writeNew(file('root.crl.pem'), rootCrl.pem, 0o644)
  await writeNew(file('crls.pem'), intermediateCrl.pem + rootCrl.pem, 0o644)
  await writeNew(file('server.key'), keyPem(serverPair.privateKey), 0o600)
  await writeNew(file('server.pem'), server.pem, 0o644)
  await writeNew(file('server-chain.pem'), server.pem + intermediate.certificate.pem, 0o644)

  const result: IcpPkiPaths = {
    dir: out,
    rootsFile: file('root.pem'),
    intermediatesFile: file('intermediate.pem'),
    trustBundleFile: file('trust-bundle.pem'),
    crlFile: file('crls.pem'),
    intermediateCrlFile: file('intermediate.crl.pem'),
    rootCrlFile: file('root.crl.pem'),
    foreignCaFile: file('foreign-ca.pem'),
    server: { certFile: file('server.pem'), keyFile: file('server.key'), chainFile: file('server-chain.pem'), names: [...names] },
    clients,
    revokedSerial: revokedSerial.toString(10)
  }
  await writeNew(file('icp-pki.json'), JSON.stringify(result, null, 2) + '\n', 0o644)
  return result
}

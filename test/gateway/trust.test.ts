/**
 * clientVerdict's fail-open path, driven directly with what a handshake leaves on a socket. OpenSSL reports only its
 * last verification error, and with the verify callback continuing, a chain that failed earlier can end on
 * CRL_HAS_EXPIRED: the verdict under fail-open must then rest on the gateway's own check of the chain, never on
 * OpenSSL's last word. Regression: a client of a CA outside the truststore was accepted when OpenSSL's last error
 * was CRL_HAS_EXPIRED.
 */
import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { PeerCertificate } from 'node:tls'
import t from 'tap'
import { issueCertificate } from '../../core/pki/ca.ts'
import { clientVerdict } from '../../src/gateway/trust.ts'
import { readCrlFile } from '../../src/gateway/crl.ts'
import { createGatewayPki, issueCrl } from '../helpers/gateway-pki.ts'
import type { Issued } from '../helpers/gateway-pki.ts'

type Peer = PeerCertificate & { issuerCertificate?: Peer }

/** The chain as getPeerCertificate(true) links it: leaf first, each issuerCertificate the next; the top points at itself. */
function peerOf (...certs: Array<Issued | Buffer>): Peer {
  const peers = certs.map((c) => ({ raw: Buffer.isBuffer(c) ? c : c.certificate.der }) as unknown as Peer)
  peers.forEach((p, i) => { p.issuerCertificate = peers[i + 1] ?? p })
  return peers[0] as Peer
}

const dir = await mkdtemp(join(tmpdir(), 'pix-gw-trust-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
const pki = await createGatewayPki(dir)
const now = new Date()
const stale = readCrlFile('intermediate-stale.crl', Buffer.from(issueCrl(pki.intermediate, {
  serials: [pki.clients.revoked.certificate.serial],
  thisUpdate: new Date(now.getTime() - 10 * 86_400_000),
  nextUpdate: new Date(now.getTime() - 86_400_000)
})))
const fresh = readCrlFile('root.crl', Buffer.from(issueCrl(pki.root)))
const issuedBy = (issuer: Issued, cn: string): Buffer => {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  return issueCertificate({ subject: `CN=${cn}, C=BR`, publicKey, issuer: { certificate: issuer.certificate, key: issuer.key }, keyUsage: ['digitalSignature'], extKeyUsage: ['clientAuth'] }).der
}
/** Issued by the intermediate, then one bit of its signature flipped: the intermediate's name and key id, a forged signature. */
const forged = Buffer.from(issuedBy(pki.intermediate, 'forged.example.com.br'))
forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1
const byLeaf = issuedBy(pki.clients.valid, 'by-a-leaf.example.com.br')
const material = { crls: [...fresh, ...stale], cas: [pki.root.certificate, pki.intermediate.certificate] }

t.test('fail-open accepts CRL_HAS_EXPIRED for a sound chain up to a truststore CA', async (t) => {
  const v = clientVerdict(peerOf(pki.clients.valid, pki.intermediate, pki.root), 'CRL_HAS_EXPIRED', material, 'fail-open', now)
  t.equal(v.accepted, true)
  t.match(v, { warning: /fail-open/ })
  const closed = clientVerdict(peerOf(pki.clients.valid, pki.intermediate, pki.root), 'CRL_HAS_EXPIRED', material, 'fail-closed', now)
  t.match(closed, { accepted: false, reason: 'crl_has_expired' }, 'fail-closed refuses the same client')
})

t.test('fail-open never accepts what CRL_HAS_EXPIRED may have overwritten', async (t) => {
  const cases: Array<[string, Peer, string]> = [
    ['a client of a CA outside the truststore', peerOf(pki.clients.foreign, pki.foreignRoot), 'untrusted_chain'],
    ['a client whose chain stops below the truststore', peerOf(pki.clients.foreign), 'untrusted_chain'],
    ['a client certified by another client (not a CA)', peerOf(byLeaf, pki.clients.valid, pki.intermediate, pki.root), 'untrusted_chain'],
    ['a revoked client (listed by the stale CRL)', peerOf(pki.clients.revoked, pki.intermediate, pki.root), 'cert_revoked'],
    ['an expired client', peerOf(pki.clients.expired, pki.intermediate, pki.root), 'cert_has_expired'],
    ['a client without clientAuth', peerOf(pki.clients.noClientAuth, pki.intermediate, pki.root), 'invalid_purpose']
  ]
  for (const [name, peer, reason] of cases) {
    const v = clientVerdict(peer, 'CRL_HAS_EXPIRED', material, 'fail-open', now)
    t.match(v, { accepted: false, reason }, name)
  }
})

t.test('a forged signature in the chain is refused under fail-open', async (t) => {
  // Names the intermediate as its issuer (and its key identifier), signed by another key.
  for (const [name, peer] of [['with the intermediate sent', peerOf(forged, pki.intermediate, pki.root)], ['alone', peerOf(forged)]] as const) {
    t.match(clientVerdict(peer, 'CRL_HAS_EXPIRED', material, 'fail-open', now), { accepted: false, reason: 'untrusted_chain' }, name)
  }
  // A junk chain after a sound leaf: the leaf's issuer is found in the truststore, as OpenSSL finds it.
  t.match(clientVerdict(peerOf(pki.clients.valid, pki.foreignRoot), 'CRL_HAS_EXPIRED', material, 'fail-open', now), { accepted: true })
  // The right chain but with the truststore emptied of the issuing CAs.
  const none = clientVerdict(peerOf(pki.clients.valid, pki.intermediate, pki.root), 'CRL_HAS_EXPIRED', { ...material, cas: [pki.foreignRoot.certificate] }, 'fail-open', now)
  t.match(none, { accepted: false, reason: 'untrusted_chain' })
})

t.test('any other OpenSSL error is refused whatever the policy, with its code as the reason', async (t) => {
  for (const policy of ['fail-open', 'fail-closed'] as const) {
    const v = clientVerdict(peerOf(pki.clients.valid, pki.intermediate, pki.root), 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', material, policy, now)
    t.match(v, { accepted: false, reason: 'unable_to_get_issuer_cert_locally' }, policy)
  }
  t.match(clientVerdict(undefined, null, material, 'fail-open', now), { accepted: false, reason: 'no_certificate' })
})

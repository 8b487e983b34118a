/**
 * Who may call the proxy. Inbound mutual TLS (src/app.ts's server options: a client CA, certificates required) proves
 * that a caller holds a certificate the bank's CA issued; this allowlist narrows that to the bank core systems named
 * by their certificates' SHA-256 fingerprints (PIXPROXY_INBOUND_CLIENT_ALLOWLIST), so that no other holder of a
 * certificate from the same CA can have messages signed with the participant's key. Anything else: 403
 * CLIENT_NOT_ALLOWED, before routing, nothing signed or sent. Off loopback, configuration refuses to start without
 * both unless the deliberate opt-out is set (config.ts), and src/app.ts logs that opt-out at every start.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { peerCertificate } from '../../core/pki/peer.ts'

export default fp(async function callersPlugin (app: FastifyInstance) {
  const list = app.config.inbound.clientAllowlist
  if (list.length === 0) return
  const allowed = new Set(list)
  app.addHook('onRequest', async (req) => {
    const peer = peerCertificate(req.raw.socket)
    if (peer === null || !allowed.has(peer.fingerprint256)) throw new PixProxyError(Errors.CLIENT_NOT_ALLOWED, [peer?.subjectCN ?? peer?.fingerprint256 ?? '(none)'])
  })
}, { name: 'pix-callers', fastify: '5.x' })

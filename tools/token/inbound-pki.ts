/**
 * A local inbound PKI: what the proxy's callers' side needs for mutual TLS, generated for a development stack
 * (docker-compose.yml's `init` service, `pix-proxy pki inbound`). Two test CAs, kept apart so that neither can
 * stand in for the other:
 *   - the server CA issues the proxy's TLS server certificate (the names callers use: `proxy`, localhost,
 *     127.0.0.1); callers trust it (server-ca.pem);
 *   - the client CA (the bank's core systems) issues the callers' client certificates; the proxy requires one
 *     (PIXPROXY_INBOUND_CLIENT_CA_FILE) and lets through only the fingerprints of allowlist.txt
 *     (PIXPROXY_INBOUND_CLIENT_ALLOWLIST).
 * Private keys are written 0600, everything else 0644; inbound.json (the result) is written last, so its presence
 * means the set is complete.
 *
 * Not for production: the bank's own PKI issues these there (docs/first-deployment.md).
 */
import type { KeyObject } from 'node:crypto'
import { isIP } from 'node:net'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { createTestPki } from '../../core/pki/ca.ts'

export interface InboundPkiOptions {
  readonly dir: string
  /** DNS names and IP addresses of the proxy's server certificate (default: proxy, localhost, 127.0.0.1). */
  readonly serverNames?: readonly string[]
  /** Subject of the caller's client certificate. */
  readonly clientSubject?: string
  /** Replace a set already in `dir`. */
  readonly force?: boolean
}

/** What `initInboundPki` wrote (paths), and the client certificate's SHA-256 fingerprint. */
export interface InboundPkiResult {
  readonly dir: string
  readonly serverCaCertFile: string
  readonly serverCaKeyFile: string
  readonly serverCertFile: string
  readonly serverKeyFile: string
  readonly serverNames: readonly string[]
  readonly clientCaCertFile: string
  readonly clientCaKeyFile: string
  readonly clientCertFile: string
  readonly clientKeyFile: string
  readonly clientSubject: string
  readonly clientFingerprint256: string
  /** The allowlist (the client certificate's fingerprint, one line): PIXPROXY_INBOUND_CLIENT_ALLOWLIST's value. */
  readonly allowlistFile: string
}

export const INBOUND_DEFAULT_SERVER_NAMES: readonly string[] = Object.freeze(['proxy', 'localhost', '127.0.0.1'])
export const INBOUND_DEFAULT_CLIENT_SUBJECT = 'CN=core-banking traffic, OU=PIX, O=Banco Exemplo S.A., C=BR'

const FILES = {
  serverCaCert: 'server-ca.pem',
  serverCaKey: 'server-ca.key',
  serverCert: 'server.pem',
  serverKey: 'server.key',
  clientCaCert: 'client-ca.pem',
  clientCaKey: 'client-ca.key',
  clientCert: 'client.pem',
  clientKey: 'client.key',
  allowlist: 'allowlist.txt',
  result: 'inbound.json'
} as const

const keyPem = (k: KeyObject | undefined): string => {
  if (k === undefined) throw new PixProxyError(Errors.CERT_ISSUE, ['no private key was generated'])
  return k.export({ type: 'pkcs8', format: 'pem' }).toString()
}

/** Writes a file that did not exist before (an existing one is removed first, never written through). */
async function writeNew (file: string, data: string, mode: number): Promise<void> {
  await rm(file, { force: true })
  await writeFile(file, data, { mode, flag: 'wx' })
}

/**
 * Generates the two CAs, the proxy's server certificate and one caller's client certificate into `dir`.
 * Refuses (CERT_ISSUE) a directory that already holds one of these files unless `force`.
 */
export async function initInboundPki (opts: InboundPkiOptions): Promise<InboundPkiResult> {
  const dir = resolve(opts.dir)
  const names = opts.serverNames ?? INBOUND_DEFAULT_SERVER_NAMES
  if (names.length === 0) throw new PixProxyError(Errors.CERT_ISSUE, ['the server certificate needs at least one name'])
  const clientSubject = opts.clientSubject ?? INBOUND_DEFAULT_CLIENT_SUBJECT
  const path = (f: keyof typeof FILES): string => join(dir, FILES[f])

  await mkdir(dir, { recursive: true, mode: 0o700 })
  const present = (await readdir(dir)).filter((f) => (Object.values(FILES) as string[]).includes(f))
  if (present.length > 0 && opts.force !== true) {
    throw new PixProxyError(Errors.CERT_ISSUE, [`${dir} already holds an inbound PKI (${present.sort().join(', ')}); pass --force to replace it`])
  }
  await rm(path('result'), { force: true })

  const serverPki = createTestPki({ caSubject: 'CN=pix-proxy Local Inbound Server CA, O=pix-proxy, C=BR' })
  const clientPki = createTestPki({ caSubject: 'CN=Banco Exemplo Core Systems Test CA, O=Banco Exemplo S.A., C=BR' })
  const server = serverPki.issue('CN=pix-proxy, O=Banco Exemplo S.A., C=BR', {
    dnsNames: names.filter((n) => isIP(n) === 0),
    ipAddresses: names.filter((n) => isIP(n) !== 0),
    keyUsage: ['digitalSignature', 'keyEncipherment'],
    extKeyUsage: ['serverAuth']
  })
  const client = clientPki.issue(clientSubject, { keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['clientAuth'] })

  await writeNew(path('serverCaKey'), keyPem(serverPki.ca.key), 0o600)
  await writeNew(path('serverCaCert'), serverPki.ca.certificate.pem, 0o644)
  await writeNew(path('serverKey'), keyPem(server.key), 0o600)
  await writeNew(path('serverCert'), server.certificate.pem, 0o644)
  await writeNew(path('clientCaKey'), keyPem(clientPki.ca.key), 0o600)
  await writeNew(path('clientCaCert'), clientPki.ca.certificate.pem, 0o644)
  await writeNew(path('clientKey'), keyPem(client.key), 0o600)
  await writeNew(path('clientCert'), client.certificate.pem, 0o644)
  await writeNew(path('allowlist'), client.certificate.fingerprint256 + '\n', 0o644)

  const result: InboundPkiResult = {
    dir,
    serverCaCertFile: path('serverCaCert'),
    serverCaKeyFile: path('serverCaKey'),
    serverCertFile: path('serverCert'),
    serverKeyFile: path('serverKey'),
    serverNames: [...names],
    clientCaCertFile: path('clientCaCert'),
    clientCaKeyFile: path('clientCaKey'),
    clientCertFile: path('clientCert'),
    clientKeyFile: path('clientKey'),
    clientSubject: client.certificate.subjectString,
    clientFingerprint256: client.certificate.fingerprint256,
    allowlistFile: path('allowlist')
  }
  await writeNew(path('result'), JSON.stringify(result, null, 2) + '\n', 0o644)
  return result
}

/**
 * `pix-proxy pki inbound --dir DIR [--server-name NAME]… [--client-subject DN] [--force]`: the local inbound
 * mutual-TLS set-up (tools/token/inbound-pki.ts) — the proxy's server certificate, a core-systems client CA, one caller's
 * client certificate and the allowlist with its fingerprint. docker/local-init.sh runs it for docker-compose.yml.
 *
 * `pix-proxy pki issue --csr FILE (--hsm-dir DIR | --ca-cert F --ca-key F)`: the local test CA certifies a key from
 * its PKCS#10 request (`pix-proxy csr`), the way an ICP-Brasil CA would, so that key in the HSM or KMS → request →
 * certificate can be exercised end to end without a real CA.
 */
import { createPrivateKey } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Errors, PixProxyError } from '../../core/errors.ts'
import { issueFromCsr } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { initInboundPki, INBOUND_DEFAULT_CLIENT_SUBJECT, INBOUND_DEFAULT_SERVER_NAMES } from '../token/inbound-pki.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { readInputFile, usageError } from '../../src/cli/io.ts'

export const INBOUND_USAGE = `usage: pix-proxy pki inbound --dir DIR [--server-name NAME]... [--client-subject DN] [--force]
  create a local test PKI for the proxy's inbound mutual TLS in DIR: server-ca.pem and the proxy's server.pem/.key
  (the names of --server-name, DNS names or IP addresses; default ${INBOUND_DEFAULT_SERVER_NAMES.join(', ')}),
  client-ca.pem (the core systems' CA, PIXPROXY_INBOUND_CLIENT_CA_FILE), one caller's client.pem/.key and
  allowlist.txt with its SHA-256 fingerprint (PIXPROXY_INBOUND_CLIENT_ALLOWLIST); keys 0600. Prints inbound.json
  as one JSON line (paths and the fingerprint, never a key)
  --client-subject DN   the caller's certificate subject (default: ${INBOUND_DEFAULT_CLIENT_SUBJECT})
  --force               replace a set already in DIR`

export const ISSUE_USAGE = `usage: pix-proxy pki issue --csr FILE (--hsm-dir DIR | --ca-cert PEM --ca-key PEM) [--days 365] [--out FILE]
  issue a certificate from a PKCS#10 request with a local test CA: the one \`pix-proxy hsm init\` made in DIR, or the
  given CA certificate and key. The request's signature must verify with its key; its subject, keyUsage,
  extKeyUsage and subjectAltName are copied; any other requested extension is refused. PEM on stdout unless --out`

const USAGE = `${INBOUND_USAGE}\n${ISSUE_USAGE}`

/** Runs `pix-proxy pki <sub>`; resolves to the exit code. */
export async function pkiCommand (argv: string[], io: Pick<CliIo, 'stdout'>): Promise<number> {
  const [sub, ...rest] = argv
  switch (sub) {
    case 'inbound': return await inbound(rest, io)
    case 'issue': return await issue(rest, io)
    case undefined: case 'help': case '--help': case '-h':
      io.stdout.write(USAGE + '\n')
      return sub === undefined ? 2 : 0
    default:
      throw usageError(`unknown pki command ${sub}\n${USAGE}`)
  }
}

async function inbound (argv: string[], io: Pick<CliIo, 'stdout'>): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      'server-name': { type: 'string', multiple: true },
      'client-subject': { type: 'string' },
      force: { type: 'boolean', default: false }
    },
    strict: true,
    allowPositionals: false
  })
  if (values.dir === undefined) throw usageError(`pki inbound needs --dir\n${USAGE}`)
  const names = values['server-name']
  if (names?.some((n) => n.trim() === '') === true) throw usageError(`--server-name must not be empty\n${USAGE}`)
  const result = await initInboundPki({
    dir: values.dir,
    force: values.force,
    ...(names === undefined ? {} : { serverNames: names }),
    ...(values['client-subject'] === undefined ? {} : { clientSubject: values['client-subject'] })
  })
  io.stdout.write(JSON.stringify(result) + '\n')
  return 0
}

const DAY_MS = 86_400_000

async function issue (argv: string[], io: Pick<CliIo, 'stdout'>): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      csr: { type: 'string' },
      'hsm-dir': { type: 'string' },
      'ca-cert': { type: 'string' },
      'ca-key': { type: 'string' },
      days: { type: 'string', default: '365' },
      out: { type: 'string' }
    },
    strict: true,
    allowPositionals: false
  })
  if (values.csr === undefined) throw usageError(`pki issue needs --csr\n${ISSUE_USAGE}`)
  let caCertFile = values['ca-cert']
  let caKeyFile = values['ca-key']
  if (values['hsm-dir'] !== undefined) {
    if (caCertFile !== undefined || caKeyFile !== undefined) throw usageError(`give --hsm-dir or --ca-cert and --ca-key, not both\n${ISSUE_USAGE}`)
    const file = join(values['hsm-dir'], 'hsm.json')
    let init: { caCertFile?: unknown, caKeyFile?: unknown }
    try {
      init = JSON.parse(await readFile(file, 'utf8')) as typeof init
    } catch (err) {
      throw new PixProxyError(Errors.CONFIG_INVALID, [`cannot read ${file} (run \`pix-proxy hsm init --dir ${values['hsm-dir']}\` first): ${(err as Error).message}`], { cause: err })
    }
    if (typeof init.caCertFile !== 'string' || typeof init.caKeyFile !== 'string') throw new PixProxyError(Errors.CONFIG_INVALID, [`${file} names no test CA`])
    caCertFile = init.caCertFile
    caKeyFile = init.caKeyFile
  }
  if (caCertFile === undefined || caKeyFile === undefined) throw usageError(`pki issue needs --hsm-dir, or --ca-cert and --ca-key\n${ISSUE_USAGE}`)
  const days = Number(values.days)
  if (!Number.isInteger(days) || days < 1 || days > 3650) throw usageError(`--days must be a whole number of days from 1 to 3650\n${ISSUE_USAGE}`)
  const certificate = parseCertificate(await readInputFile(caCertFile))
  let key
  try {
    key = createPrivateKey(await readInputFile(caKeyFile))
  } catch (err) {
    if (err instanceof PixProxyError) throw err
    throw new PixProxyError(Errors.CONFIG_INVALID, [`cannot read the CA key ${caKeyFile}: ${(err as Error).message}`], { cause: err })
  }
  const notBefore = new Date(Date.now() - 5 * 60_000)
  const issued = issueFromCsr(await readInputFile(values.csr), {
    issuer: { certificate, key },
    notBefore,
    notAfter: new Date(notBefore.getTime() + days * DAY_MS)
  })
  if (values.out === undefined || values.out === '-') io.stdout.write(issued.pem)
  else await writeFile(values.out, issued.pem)
  return 0
}

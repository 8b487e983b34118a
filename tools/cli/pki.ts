/**
 * `pix-proxy pki inbound --dir DIR [--server-name NAME]… [--client-subject DN] [--force]`: the local inbound
 * mutual-TLS set-up (tools/token/inbound-pki.ts) — the proxy's server certificate, a core-systems client CA, one caller's
 * client certificate and the allowlist with its fingerprint. docker/local-init.sh runs it for docker-compose.yml.
 */
import { parseArgs } from 'node:util'
import { initInboundPki, INBOUND_DEFAULT_CLIENT_SUBJECT, INBOUND_DEFAULT_SERVER_NAMES } from '../token/inbound-pki.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { usageError } from '../../src/cli/io.ts'

export const INBOUND_USAGE = `usage: pix-proxy pki inbound --dir DIR [--server-name NAME]... [--client-subject DN] [--force]
  create a local test PKI for the proxy's inbound mutual TLS in DIR: server-ca.pem and the proxy's server.pem/.key
  (the names of --server-name, DNS names or IP addresses; default ${INBOUND_DEFAULT_SERVER_NAMES.join(', ')}),
  client-ca.pem (the core systems' CA, PIXPROXY_INBOUND_CLIENT_CA_FILE), one caller's client.pem/.key and
  allowlist.txt with its SHA-256 fingerprint (PIXPROXY_INBOUND_CLIENT_ALLOWLIST); keys 0600. Prints inbound.json
  as one JSON line (paths and the fingerprint, never a key)
  --client-subject DN   the caller's certificate subject (default: ${INBOUND_DEFAULT_CLIENT_SUBJECT})
  --force               replace a set already in DIR`

const USAGE = INBOUND_USAGE

/** Runs `pix-proxy pki <sub>`; resolves to the exit code. */
export async function pkiCommand (argv: string[], io: Pick<CliIo, 'stdout'>): Promise<number> {
  const [sub, ...rest] = argv
  switch (sub) {
    case 'inbound': return await inbound(rest, io)
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

#!/usr/bin/env node
/**
 * The `pix-proxy` command. The only place that touches process-wide state (argv, env, exit code); every
 * subcommand receives its I/O explicitly so that tests drive them in-process.
 */
import { Errors, PixProxyError } from '../errors.ts'
import type { CliIo } from './io.ts'
import { usageError } from './io.ts'

const USAGE = `usage: pix-proxy <command> [options]

commands:
  xml sign      sign a PIX message in BACEN's SPI or DICT XMLDSig profile (PEM key or pkcs11: URI)
  xml verify    verify a signed PIX message; prints one JSON object, exit 0 only when valid
  hsm init      create a SoftHSM2 token with non-extractable signing and TLS keys and a local test CA
  hsm info      describe a token created by hsm init and check its certificates against its keys
  serve         run the proxy (configuration from PIXPROXY_* environment variables, docs/configuration.md)
  simulator     run the BACEN simulator (mTLS, DICT v2, SPI/ICOM) with a local test PKI
  aws-local     run the local stand-in for Firehose, Secrets Manager and SSM (docker-compose, manual runs)
  audit query   run SQL over the local audit rows (Parquet, DuckDB); prints JSON lines
  demo          start token, simulator and proxy and send sample traffic (--once: exit with a JSON summary);
                with --proxy-url, send it to services already running (docker-compose)
  load          drive PIX traffic at the proxy or the simulator; latency percentiles, errors, --json, --chart
  version       print the version`

export async function main (argv: string[], io: CliIo): Promise<number> {
  const [cmd, ...rest] = argv
  try {
    switch (cmd) {
      case 'xml': return await (await import('./xml.ts')).xmlCommand(rest, io)
      case 'hsm': return await (await import('./hsm.ts')).hsmCommand(rest, io)
      case 'demo': return await (await import('./demo.ts')).demoCommand(rest, io)
      case 'serve':
        // Runs until SIGTERM; configuration comes from the environment (docs/configuration.md).
        await (await import('../server.ts')).main()
        return await new Promise<number>(() => {})
      case 'simulator': return await (await import('./simulator.ts')).simulatorCommand(rest, io)
      case 'aws-local': return await (await import('./aws-local.ts')).awsLocalCommand(rest, io)
      case 'audit': return await (await import('./audit.ts')).auditCommand(rest, io)
      case 'load': return await (await import('./load.ts')).loadCommand(rest, io)
      case 'version': case '--version':
        io.stdout.write(`pix-proxy ${await version()} (node ${process.versions.node})\n`)
        return 0
      case undefined: case 'help': case '--help': case '-h':
        io.stdout.write(USAGE + '\n')
        return cmd === undefined ? 2 : 0
      default:
        throw usageError(`unknown command ${cmd}\n${USAGE}`)
    }
  } catch (err) {
    return reportError(err, io)
  }
}

/** Errors become one JSON line on stderr with the stable code; exit 2 for usage errors, 1 otherwise. */
function reportError (err: unknown, io: CliIo): number {
  const e = err as { code?: unknown, message?: unknown }
  if (typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) {
    io.stderr.write(JSON.stringify({ error: Errors.USAGE.code, message: String(e.message) }) + '\n')
    return 2
  }
  if (err instanceof PixProxyError) {
    io.stderr.write(JSON.stringify({ error: err.code, message: err.message }) + '\n')
    return err.code === Errors.USAGE.code ? 2 : 1
  }
  io.stderr.write(JSON.stringify({ error: 'PIXPROXY_ERR_INTERNAL', message: String(e.message ?? err) }) + '\n')
  if (err instanceof Error && err.stack !== undefined) io.stderr.write(err.stack + '\n')
  return 1
}

async function version (): Promise<string> {
  const { readFile } = await import('node:fs/promises')
  // src/cli/main.ts when run from source, dist/src/cli/main.js when built.
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(rel, import.meta.url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'pix-proxy' && pkg.version !== undefined) return pkg.version
    } catch {}
  }
  return 'unknown'
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env })
}

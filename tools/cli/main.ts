#!/usr/bin/env node
/**
 * The `pix-proxy` command. The only place that touches process-wide state (argv, env, exit code); every
 * subcommand receives its I/O explicitly so that tests drive them in-process.
 *
 * What every command shares is handled here, once: `--help`/`-h` anywhere before a `--` prints that command's usage
 * on stdout and exits 0 (nothing starts); `--version`/`-V`; errors become one JSON line on stderr with a stable
 * code; a reader that closes stdout (`| head`) ends the command quietly with exit 0.
 */
import { Errors, PixProxyError } from '../../core/errors.ts'
import type { CliIo } from '../../src/cli/io.ts'
import { usageError } from '../../src/cli/io.ts'

interface Command {
  /** One word, or a group and a subcommand ("xml sign"). */
  readonly name: string
  readonly summary: string
  /** The command's usage text (its module is loaded only when asked). */
  usage (): Promise<string>
  /** Runs it with the arguments after its name. */
  run (argv: string[], io: CliIo): Promise<number>
}

const xml = async (): Promise<typeof import('./xml.ts')> => await import('./xml.ts')
const hsm = async (): Promise<typeof import('./hsm.ts')> => await import('./hsm.ts')
const audit = async (): Promise<typeof import('./audit.ts')> => await import('./audit.ts')

const VERSION_USAGE = 'usage: pix-proxy version | --version | -V\n  print the version of pix-proxy and of Node.js'
const HELP_USAGE = 'usage: pix-proxy help [COMMAND]   (or: pix-proxy COMMAND --help)\n  print the usage of pix-proxy or of one command'

/** Every command, in the order the usage lists them. */
const COMMANDS: readonly Command[] = [
  {
    name: 'xml sign',
    summary: 'sign a PIX message in BACEN\'s SPI or DICT XMLDSig profile (PEM key or pkcs11: URI)',
    usage: async () => (await xml()).SIGN_USAGE,
    run: async (argv, io) => await (await xml()).xmlCommand(['sign', ...argv], io)
  },
  {
    name: 'xml verify',
    summary: 'verify a signed PIX message; prints one JSON object, exit 0 only when valid',
    usage: async () => (await xml()).VERIFY_USAGE,
    run: async (argv, io) => await (await xml()).xmlCommand(['verify', ...argv], io)
  },
  {
    name: 'xml sample',
    summary: 'print a realistic unsigned sample message with fresh ids (pacs.008, pibr.001, CreateEntryRequest)',
    usage: async () => (await xml()).SAMPLE_USAGE,
    run: async (argv, io) => await (await xml()).xmlCommand(['sample', ...argv], io)
  },
  {
    name: 'hsm init',
    summary: 'create a SoftHSM2 token with non-extractable signing and TLS keys and a local test CA',
    usage: async () => (await hsm()).INIT_USAGE,
    run: async (argv, io) => await (await hsm()).hsmCommand(['init', ...argv], io)
  },
  {
    name: 'hsm info',
    summary: 'describe a token created by hsm init and check its certificates against its keys',
    usage: async () => (await hsm()).INFO_USAGE,
    run: async (argv, io) => await (await hsm()).hsmCommand(['info', ...argv], io)
  },
  {
    name: 'csr',
    summary: 'write a PKCS#10 request signed by a key in the HSM, in KMS or in a PEM file, for an ICP-Brasil CA',
    usage: async () => (await import('./csr.ts')).CSR_USAGE,
    run: async (argv, io) => await (await import('./csr.ts')).csrCommand(argv, io)
  },
  {
    name: 'pki issue',
    summary: 'issue a certificate from a PKCS#10 request with a local test CA (hsm init\'s, or --ca-cert/--ca-key)',
    usage: async () => (await import('./pki.ts')).ISSUE_USAGE,
    run: async (argv, io) => await (await import('./pki.ts')).pkiCommand(['issue', ...argv], io)
  },
  {
    name: 'pki inbound',
    summary: 'create a local test PKI for inbound mutual TLS: server certificate, client CA, a client, the allowlist',
    usage: async () => (await import('./pki.ts')).INBOUND_USAGE,
    run: async (argv, io) => await (await import('./pki.ts')).pkiCommand(['inbound', ...argv], io)
  },
  {
    name: 'serve',
    summary: 'run the proxy (configuration from PIXPROXY_* environment variables, docs/configuration.md)',
    usage: async () => (await import('../../src/cli/serve.ts')).SERVE_USAGE,
    run: async (argv, io) => await (await import('../../src/cli/serve.ts')).serveCommand(argv, io)
  },
  {
    name: 'gateway',
    summary: 'run the inbound mutual-TLS gateway for Open Finance Brasil (PIXGW_* settings, docs/gateway.md)',
    usage: async () => (await import('../../src/cli/gateway.ts')).GATEWAY_USAGE,
    run: async (argv, io) => await (await import('../../src/cli/gateway.ts')).gatewayCommand(argv, io)
  },
  {
    name: 'simulator',
    summary: 'run the BACEN simulator (mTLS, DICT v2, SPI/ICOM) with a local test PKI',
    usage: async () => (await import('./simulator.ts')).SIMULATOR_USAGE,
    run: async (argv, io) => await (await import('./simulator.ts')).simulatorCommand(argv, io)
  },
  {
    name: 'aws-local',
    summary: 'run the local stand-in for Firehose, Secrets Manager and SSM (docker-compose, manual runs)',
    usage: async () => (await import('./aws-local.ts')).AWS_LOCAL_USAGE,
    run: async (argv, io) => await (await import('./aws-local.ts')).awsLocalCommand(argv, io)
  },
  {
    name: 'audit query',
    summary: 'run SQL over the local audit rows (Parquet, DuckDB); prints JSON lines',
    usage: async () => (await audit()).QUERY_USAGE,
    run: async (argv, io) => await (await audit()).auditCommand(['query', ...argv], io)
  },
  {
    name: 'demo',
    summary: 'start token, simulator and proxy and send sample traffic (--once: exit with a JSON summary);\n' +
      'with --proxy-url, send it to services already running (docker-compose)',
    usage: async () => (await import('./demo.ts')).DEMO_USAGE,
    run: async (argv, io) => await (await import('./demo.ts')).demoCommand(argv, io)
  },
  {
    name: 'load',
    summary: 'drive PIX traffic at the proxy or the simulator; latency percentiles, errors, --json, --chart',
    usage: async () => (await import('./load.ts')).LOAD_USAGE,
    run: async (argv, io) => await (await import('./load.ts')).loadCommand(argv, io)
  },
  {
    name: 'version',
    summary: 'print the version (also --version, -V)',
    usage: async () => VERSION_USAGE,
    run: async (argv, io) => {
      if (argv.length > 0) throw usageError(VERSION_USAGE)
      io.stdout.write(`pix-proxy ${await version()} (node ${process.versions.node})\n`)
      return 0
    }
  },
  {
    name: 'help',
    summary: 'print this, or the usage of one command (as COMMAND --help does)',
    usage: async () => HELP_USAGE,
    run: async (argv, io) => {
      if (argv.length === 0) {
        io.stdout.write(USAGE + '\n')
        return 0
      }
      return await printHelp(argv, io)
    }
  }
]

const COLUMN = 14
export const USAGE = `usage: pix-proxy <command> [options]      (pix-proxy <command> --help: its options)

commands:
${COMMANDS.map((c) => '  ' + c.name.padEnd(COLUMN) + c.summary.replaceAll('\n', '\n' + ' '.repeat(COLUMN + 2))).join('\n')}`

/** The arguments before a `--` terminator (what follows it is data, never an option). */
function optionPart (argv: readonly string[]): readonly string[] {
  const end = argv.indexOf('--')
  return end < 0 ? argv : argv.slice(0, end)
}

/** The command named by the first one or two words of argv, and the arguments after its name. */
function findCommand (argv: readonly string[]): { command: Command, rest: string[] } | undefined {
  const [first, second] = argv
  const two = COMMANDS.find((c) => c.name === `${first} ${second}`)
  if (two !== undefined) return { command: two, rest: argv.slice(2) }
  const one = COMMANDS.find((c) => c.name === first)
  return one === undefined ? undefined : { command: one, rest: argv.slice(1) }
}

/** The subcommands of a group ("xml": xml sign, xml verify, …). */
function group (word: string | undefined): Command[] {
  return COMMANDS.filter((c) => c.name.startsWith(`${word} `))
}

/** `pix-proxy [help] COMMAND… --help`: the most specific usage the words name. */
async function printHelp (words: readonly string[], io: CliIo): Promise<number> {
  const found = findCommand(words.filter((w) => !w.startsWith('-')))
  if (found !== undefined) {
    io.stdout.write((await found.command.usage()) + '\n')
    return 0
  }
  const members = group(words[0])
  if (members.length > 0) {
    io.stdout.write((await Promise.all(members.map(async (c) => await c.usage()))).join('\n') + '\n')
    return 0
  }
  if (words[0] === undefined || words[0].startsWith('-')) {
    io.stdout.write(USAGE + '\n')
    return 0
  }
  throw usageError(`unknown command ${words[0]}\n${USAGE}`)
}

export async function main (argv: string[], io: CliIo): Promise<number> {
  const closed = outputClosed(io)
  try {
    return await Promise.race([closed, dispatch(argv, io)])
  } catch (err) {
    // The reader went away while the command was writing: the end it asked for, not a failure.
    if (isClosedPipe(err)) return 0
    return reportError(err, io)
  }
}

async function dispatch (args: string[], io: CliIo): Promise<number> {
  const cmd = args[0]
  if (cmd === undefined) {
    io.stdout.write(USAGE + '\n')
    return 2
  }
  const argv = cmd === '--version' || cmd === '-V' ? ['version', ...args.slice(1)] : args
  const options = optionPart(argv)
  if (options.includes('--help') || options.includes('-h')) return await printHelp(options.filter((a) => a !== '--help' && a !== '-h'), io)
  const found = findCommand(argv)
  if (found !== undefined) return await found.command.run(found.rest, io)
  const members = group(cmd)
  if (members.length > 0) {
    const usages = (await Promise.all(members.map(async (c) => await c.usage()))).join('\n')
    const sub = argv[1]
    if (sub === undefined) {
      io.stdout.write(usages + '\n')
      return 2
    }
    throw usageError(`unknown ${cmd} command ${sub}\n${usages}`)
  }
  throw usageError(`unknown command ${cmd}\n${USAGE}`)
}

function isClosedPipe (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED'
}

/**
 * Resolves with 0 when the reader of stdout closes it (EPIPE): `pix-proxy audit query … | head -3` has what it
 * wanted. Every error of both output streams is handled from here on (an unhandled stream 'error' would crash the
 * process with a stack); a failing stderr is ignored, there is nowhere left to report to.
 */
async function outputClosed (io: CliIo): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    io.stdout.on('error', (err: Error) => {
      if (isClosedPipe(err)) resolve(0)
      else reject(err)
    })
    io.stderr.on('error', () => {})
  })
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
  // tools/cli/main.ts when run from source, dist/tools/cli/main.js when built.
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(rel, import.meta.url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'pix-proxy' && pkg.version !== undefined) return pkg.version
    } catch {}
  }
  return 'unknown'
}

if (import.meta.main) {
  let stdoutClosed = false
  process.stdout.on('error', (err) => { stdoutClosed ||= isClosedPipe(err) })
  const code = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env })
  // The reader closed stdout under a command, a long-running one included (a server's listener would keep the
  // process alive): end now, as SIGPIPE would, but quietly.
  if (stdoutClosed) process.exit(code)
  process.exitCode = code
}

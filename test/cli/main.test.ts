// What every `pix-proxy` command shares, handled once in tools/cli/main.ts: --help/-h prints the command's usage on
// stdout and exits 0 (nothing starts), --version/-V, and a reader closing stdout (`| head`) ends any command
// quietly. Run as real processes where the difference shows only there (serve, pipes).
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { ParquetSink } from '../../src/audit/parquet.ts'
import { main, USAGE } from '../../tools/cli/main.ts'
import { sampleRow } from '../audit/fixtures/rows.ts'
import { captureIo } from '../helpers/cli-io.ts'
import { at, MAIN_TS, run } from '../helpers/processes.ts'

/** The commands the top-level usage lists ("xml sign", "serve", …), as a user reads them. */
function listedCommands (usage: string): string[] {
  return [...(usage.split('commands:')[1] ?? '').matchAll(/^ {2}([a-z-]+(?: [a-z]+)?)(?= {2,})/gm)].map((m) => m[1] as string)
}

const cli = async (args: readonly string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof run> =>
  // A minimal environment: `serve --help` must not depend on a configuration it would otherwise refuse (exit 78).
  await run(process.execPath, [MAIN_TS, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeoutMs: 60_000 })

t.test('the top-level usage lists every command, on stdout, exit 0 for --help, -h and help; 2 with no command', async (t) => {
  const commands = listedCommands(USAGE)
  for (const c of ['xml sign', 'xml verify', 'xml sample', 'hsm init', 'hsm info', 'serve', 'gateway', 'simulator', 'aws-local', 'audit query', 'demo', 'load', 'version', 'help']) {
    t.ok(commands.includes(c), `lists ${c}`)
  }
  for (const args of [['--help'], ['-h'], ['help']]) {
    const c = captureIo()
    t.equal(await main(args, c.io), 0, args.join(' '))
    t.same(c.text(), { stdout: USAGE + '\n', stderr: '' })
  }
  const c = captureIo()
  t.equal(await main([], c.io), 2)
  t.equal(c.text().stdout, USAGE + '\n')
})

t.test('every listed command answers --help as a process: its own usage on stdout, exit 0, nothing started', async (t) => {
  const commands = listedCommands(USAGE)
  const results = await Promise.all(commands.map(async (name) => ({ name, r: await cli([...name.split(' '), '--help']) })))
  for (const { name, r } of results) {
    t.equal(r.code, 0, `${name} --help: exit 0 (${r.stderr})`)
    t.equal(r.stderr, '', `${name} --help: nothing on stderr`)
    t.match(r.stdout, /^usage: /, `${name} --help: a usage`)
    t.ok(r.stdout.includes(`pix-proxy ${name}`), `${name} --help: the usage of ${name}`)
    t.not(r.stdout, USAGE + '\n', `${name} --help: not the top-level usage`)
  }
})

t.test('-h, --help after other options, help COMMAND and a group name print the same usage, exit 0', async (t) => {
  const usage = async (args: string[]): Promise<string> => {
    const c = captureIo()
    t.equal(await main(args, c.io), 0, args.join(' '))
    t.equal(c.text().stderr, '', args.join(' '))
    return c.text().stdout
  }
  for (const name of listedCommands(USAGE).filter((n) => n !== 'serve')) {
    const words = name.split(' ')
    const expected = await usage([...words, '--help'])
    t.equal(await usage([...words, '-h']), expected, `${name} -h`)
    t.equal(await usage(['help', ...words]), expected, `help ${name}`)
    t.equal(await usage([...words, '--dir', 'x', '--bogus', '--help']), expected, `${name} … --help`)
  }
  t.equal(await usage(['serve', '-h']), await usage(['help', 'serve']))
  // A group: every subcommand's usage.
  const xml = await usage(['xml', '--help'])
  for (const sub of ['sign', 'verify', 'sample']) t.ok(xml.includes(`usage: pix-proxy xml ${sub}`), `xml --help shows xml ${sub}`)
  t.match(await usage(['hsm', '-h']), /pix-proxy hsm init[^]*pix-proxy hsm info/)
  // After `--`, --help is data, not a request for help.
  const c = captureIo()
  t.equal(await main(['xml', 'verify', '--digests-only', '--', '--help'], c.io), 1, 'verifies a file named --help')
  t.match(JSON.parse(c.text().stderr), { error: 'PIXPROXY_ERR_FILE_READ' })
  // An unknown command stays a usage error.
  const u = captureIo()
  t.equal(await main(['frobnicate', '--help'], u.io), 2)
  t.match(JSON.parse(u.text().stderr), { error: 'PIXPROXY_ERR_USAGE', message: /unknown command frobnicate/ })
})

t.test('--version, -V and version print the package version', async (t) => {
  const { version } = JSON.parse(await readFile(at('package.json'), 'utf8')) as { version: string }
  for (const args of [['--version'], ['-V'], ['version']]) {
    const r = await cli(args)
    t.equal(r.code, 0, args.join(' '))
    t.equal(r.stdout, `pix-proxy ${version} (node ${process.versions.node})\n`, args.join(' '))
  }
})

// ---- a closed stdout ---------------------------------------------------------------------------------------------

/** A stdout whose reader has gone: every write fails as a pipe's does (EPIPE), after `accept` successful writes. */
function closedPipe (accept = 0): Writable {
  let n = 0
  return new Writable({
    highWaterMark: 64,
    write (_chunk, _enc, cb) {
      if (n++ < accept) cb()
      else cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' }))
    }
  })
}

t.test('in-process: a closed stdout ends the command with exit 0 and nothing on stderr', async (t) => {
  const dir = t.testdir()
  const sink = await ParquetSink.open({ dir })
  await sink.write(Array.from({ length: 50 }, (_, i) => sampleRow(i)))
  await sink.close()
  for (const [args, accept] of [
    [['audit', 'query', 'SELECT * FROM audit', '--dir', dir], 3],
    [['audit', 'query', 'SELECT * FROM audit', '--dir', dir], 0],
    [['xml', 'sample', 'pacs.008'], 0],
    [['help'], 0]
  ] as const) {
    const c = captureIo()
    const io = { ...c.io, stdout: closedPipe(accept) }
    t.equal(await main([...args], io as unknown as typeof c.io), 0, `${args.join(' ')} after ${accept} writes`)
    t.equal(c.text().stderr, '', 'quietly')
  }
})

t.test('as a process: `audit query … | head -3` prints three rows and exits 0 without a word on stderr', async (t) => {
  const dir = t.testdir()
  const sink = await ParquetSink.open({ dir })
  await sink.write([sampleRow(0)])
  await sink.close()
  const errFile = join(t.testdir(), 'stderr')
  // Ten million rows cannot fit a pipe's buffer: the command is still writing when head exits.
  const script = `"${process.execPath}" "${MAIN_TS}" audit query --dir "${dir}" "SELECT * FROM range(10000000)" 2>"${errFile}" | head -3; echo "exit=\${PIPESTATUS[0]}"`
  const r = await run('bash', ['-c', script])
  t.equal(r.stdout, '{"range":0}\n{"range":1}\n{"range":2}\nexit=0\n')
  t.equal(await readFile(errFile, 'utf8'), '', 'no PIXPROXY_ERR_INTERNAL, no stack')
})

t.test('as a process: a long-running command whose stdout is already closed ends quietly, exit 0', async (t) => {
  // stdout is a pipe whose read end is closed before the command starts: its first line meets EPIPE for certain.
  const py = [
    'import os, subprocess, sys',
    'r, w = os.pipe()',
    'os.close(r)',
    'p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.PIPE, timeout=60)',
    'sys.stdout.write(str(p.returncode) + "\\n" + p.stderr.decode())'
  ].join('\n')
  const r = await run('python3', ['-c', py, process.execPath, MAIN_TS, 'aws-local', '--port', '0'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, '0\n', 'aws-local exited 0 with nothing on stderr (it would otherwise serve until signalled)')
})

// The gateway's entry point as operators run it (src/gateway/server.ts): a child process configured from PIXGW_*
// settings; exit 78 for a refused configuration, 1 for a failed start-up, SIGHUP reloads, SIGTERM drains and exits 0.
// The process handling is the proxy's (src/lifecycle.ts); test/server.test.ts holds the proxy's side (and a signal
// during start-up, which the gateway has no log line to time).
import t from 'tap'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Errors } from '../../core/errors.ts'
import { createGatewayPki } from '../helpers/gateway-pki.ts'

const serverTs = new URL('../../src/gateway/server.ts', import.meta.url).pathname
const dir = t.testdir()
const pki = await createGatewayPki(dir)

const env: Record<string, string> = {
  PATH: process.env.PATH ?? '',
  PIXGW_LISTEN_PORT: '0',
  PIXGW_OPS_LISTEN_PORT: '0',
  PIXGW_SERVER_CERT_FILE: pki.files.serverCert,
  PIXGW_SERVER_KEY_FILE: pki.files.serverKey,
  PIXGW_TRUSTSTORE: pki.files.truststore,
  PIXGW_CRLS: `${pki.files.rootCrl},${pki.files.intermediateCrl}`,
  // Never called: these tests make no request.
  PIXGW_BACKEND_URL: 'https://127.0.0.1:9',
  PIXGW_ROUTES: 'GET /open-banking/*',
  PIXGW_RELOAD_INTERVAL_MS: '0',
  // Far above what a drain takes on a loaded machine: these tests assert clean stops (exit 0), not the deadline.
  PIXGW_SHUTDOWN_TIMEOUT_MS: '240000',
  PIXGW_AUDIT_SPOOL_DIR: join(dir, 'spool'),
  PIXGW_AUDIT_PARQUET_DIR: join(dir, 'lake')
}

interface Started {
  readonly child: ReturnType<typeof spawn>
  readonly lines: string[]
  readonly exit: Promise<number | null>
  /** Resolves with the first line matching `re` (or a line already seen). */
  line (re: RegExp): Promise<string>
}

function start (t: Test, extra: Record<string, string | undefined> = {}): Started {
  const child = spawn(process.execPath, [serverTs], { env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const waiting: Array<{ re: RegExp, resolve: (l: string) => void }> = []
  const onLine = (line: string): void => {
    if (line === '') return
    lines.push(line)
    for (const w of waiting.filter((w) => w.re.test(line))) {
      waiting.splice(waiting.indexOf(w), 1)
      w.resolve(line)
    }
  }
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', onLine)
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', onLine)
  const exit = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const line = async (re: RegExp): Promise<string> => {
    const seen = lines.find((l) => re.test(l))
    if (seen !== undefined) return seen
    // A hang guard, not an assertion: the process ending first fails the wait with what it printed.
    return await Promise.race([
      new Promise<string>((resolve) => waiting.push({ re, resolve })),
      exit.then((code) => { throw new Error(`exited ${String(code)} before a line matching ${String(re)}: ${lines.join('\n')}`) })
    ])
  }
  return { child, lines, exit, line }
}

t.test('a refused configuration: exit 78, every problem in one JSON line on stderr', async (t) => {
  const p = start(t, { PIXGW_ROUTES: undefined, PIXGW_LISTEN_PORT: 'x', PIXGW_MAX_CONNECTION_AGE_MS: '1.5' })
  t.equal(await p.exit, 78)
  t.equal(p.lines.length, 1, p.lines.join('\n'))
  const out = JSON.parse(p.lines[0] as string) as { error: string, message: string }
  t.equal(out.error, Errors.CONFIG_INVALID.code)
  t.match(out.message, /PIXGW_LISTEN_PORT/)
  t.match(out.message, 'PIXGW_MAX_CONNECTION_AGE_MS: must be a whole number written in decimal digits (got "1.5")', 'a fraction is refused, not truncated')
  t.match(out.message, /PIXGW_ROUTES/)
})

t.test('a start-up that fails: exit 1, its coded error in one JSON line', async (t) => {
  const p = start(t, { PIXGW_SERVER_CERT_FILE: join(dir, 'missing.pem') })
  t.equal(await p.exit, 1)
  const last = JSON.parse(p.lines.at(-1) as string) as { error: string, message: string }
  t.match(last.error, /^PIXPROXY_ERR_/)
  t.match(last.message, /missing\.pem/)
})

t.test('starts, SIGHUP reloads the truststore and CRLs, SIGTERM drains and exits 0', async (t) => {
  const p = start(t)
  t.match(JSON.parse(await p.line(/"gateway listening"/)), { url: /^https:\/\/127\.0\.0\.1:\d+$/ })
  p.child.kill('SIGHUP')
  t.match(JSON.parse(await p.line(/"truststore and CRLs reloaded"/)), { crls: [pki.files.rootCrl, pki.files.intermediateCrl] }, 'SIGHUP forces a reload')
  p.child.kill('SIGTERM')
  t.equal(await p.exit, 0, p.lines.join('\n'))
})

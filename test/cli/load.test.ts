/**
 * `pix-proxy load` in-process: argument checking (usage errors exit 2 with a coded JSON line), and a real run
 * straight at a simulator started from a PKI directory as `pix-proxy simulator --dir` writes it, with the full mix
 * (two participants from that directory), writing the JSON report and the HTML chart.
 */
import t from 'tap'
import type { Test } from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { main } from '../../tools/cli/main.ts'
import { loadCommand, parseDuration } from '../../tools/cli/load.ts'
import { OPERATIONS } from '../../tools/load/flows.ts'
import type { LoadReport } from '../../tools/load/run.ts'
import { loadOrCreateSimulatorPki } from '../../tools/simulator/pki.ts'
import { startSimulator } from '../../tools/simulator/server.ts'
import { captureIo } from '../helpers/cli-io.ts'

async function usageExit (t: Test, args: string[], message: RegExp): Promise<void> {
  const c = captureIo()
  const code = await main(['load', ...args], c.io)
  t.equal(code, 2, `${args.join(' ')}: exit 2`)
  const line = JSON.parse(c.text().stderr.trim().split('\n').at(-1) as string) as { error: string, message: string }
  t.equal(line.error, 'PIXPROXY_ERR_USAGE', `${args.join(' ')}: coded error`)
  t.match(line.message, message)
}

t.test('durations', async (t) => {
  t.equal(parseDuration('30s', 'd'), 30_000)
  t.equal(parseDuration('500ms', 'd'), 500)
  t.equal(parseDuration('2m', 'd'), 120_000)
  t.equal(parseDuration('1h', 'd'), 3_600_000)
  t.equal(parseDuration('1.5', 'd'), 1500, 'a bare number is seconds')
  t.throws(() => parseDuration('abc', 'd'), { code: 'PIXPROXY_ERR_USAGE' })
  t.throws(() => parseDuration('0s', 'd'), { code: 'PIXPROXY_ERR_USAGE' })
  t.throws(() => parseDuration('-1s', 'd'), { code: 'PIXPROXY_ERR_USAGE' })
})

t.test('usage errors exit 2 with a coded JSON line on stderr', async (t) => {
  const pki = t.testdir({ 'ca.pem': 'x' })
  await usageExit(t, ['--target', 'nginx'], /--target must be proxy or simulator/)
  await usageExit(t, ['--rate', '10', '--concurrency', '2'], /not both/)
  await usageExit(t, ['--rate=-5'], /--rate must be a positive number/)
  await usageExit(t, ['--concurrency', '2.5'], /--concurrency must be a positive integer/)
  await usageExit(t, ['--rate', '1000000', '--duration', '1s'], /rate must be above 0 and at most 20000/)
  await usageExit(t, ['--duration', 'soon'], /--duration must be a duration/)
  await usageExit(t, ['--duration', '25h'], /at most 24 h/)
  await usageExit(t, ['--count', '0'], /--count must be a positive integer/)
  await usageExit(t, ['--mix', 'transfer=1'], /unknown operation transfer/)
  await usageExit(t, ['--mix', 'get-entry'], /not op=weight/)
  await usageExit(t, ['--mix', 'get-entry=0'], /no operation with a positive weight/)
  await usageExit(t, ['--mix', 'get-entry=1,spi-send=1'], /get-entry need a counterparty participant: give --pki/)
  await usageExit(t, ['--ispb', '123'], /--ispb must be an ISPB/)
  await usageExit(t, ['--stream-readers', '7'], /at most 6/)
  await usageExit(t, ['--pki', join(pki, 'nope')], /not a simulator PKI directory/)
  await usageExit(t, ['--chart', '/nonexistent-dir/x.html'], /does not exist/)
  await usageExit(t, ['--target', 'simulator', '--mix', 'spi-send=1'], /--target simulator signs and does mTLS itself: give --pki DIR, or --key, --cert, --ca, --bacen-certs/)
  // Only loopback unless --allow-remote: checked before anything is sent.
  await usageExit(t, ['--url', 'http://192.0.2.10:8080', '--mix', 'spi-send=1', '--duration', '1s'], /192\.0\.2\.10.*not a loopback address.*--allow-remote/)
  const c = captureIo()
  t.equal(await main(['load', '--bogus'], c.io), 2, 'unknown flags are usage errors')
  t.match(c.text().stderr, /PIXPROXY_ERR_USAGE/)
  const h = captureIo()
  t.equal(await loadCommand(['--help'], h.io), 0)
  t.match(h.text().stdout, /--target proxy\|simulator/)
  const u = captureIo()
  t.equal(await main(['help'], u.io), 0)
  t.match(u.text().stdout, /load\s+drive PIX traffic/, 'listed in pix-proxy help')
})

t.test('an unreachable proxy: every request is an error by code, exit 1', async (t) => {
  const c = captureIo()
  // Port 9 (discard) on loopback: nothing listens there in a test environment.
  const code = await loadCommand(['--url', 'http://127.0.0.1:9', '--rate', '20', '--duration', '500ms', '--json'], c.io)
  t.equal(code, 1)
  const { stdout, stderr } = c.text()
  t.match(stderr, /no counterparty \(--pki\): get-entry, create-claim, confirm-claim left out of the mix/)
  const r = JSON.parse(stdout) as LoadReport
  t.same(Object.keys(r.ops).sort(), ['create-entry', 'spi-send', 'spi-stream'])
  t.equal(r.totals.count, 10)
  t.equal(r.totals.errors, 10)
  t.same(Object.keys(r.totals.errorsByCode), ['ECONNREFUSED'])
})

t.test('a preparation that fails outright (no simulator at --simulator-url) aborts with a coded error, exit 1', async (t) => {
  const pkiDir = join(t.testdir(), 'pki')
  await loadOrCreateSimulatorPki(pkiDir, ['99999010'])
  const c = captureIo()
  // Port 9 (discard) on loopback: nothing listens there, so every preparation request is refused.
  const code = await main(['load', '--url', 'http://127.0.0.1:9', '--pki', pkiDir, '--simulator-url', 'https://127.0.0.1:9', '--rate', '50', '--duration', '30s', '--json'], c.io)
  const { stdout, stderr } = c.text()
  t.equal(code, 1)
  t.equal(stdout, '', 'no report: nothing was measured')
  const line = JSON.parse(stderr.trim().split('\n').at(-1) as string) as { error: string, message: string }
  t.equal(line.error, 'PIXPROXY_ERR_LOAD_PREPARE_FAILED')
  t.match(line.message, /preparation made nothing for get-entry, create-claim, confirm-claim/)
  t.match(line.message, /ECONNREFUSED ×\d+/)
  t.match(line.message, /prepares over https:\/\/127\.0\.0\.1:9: is the simulator there \(--simulator-url\)/)
  t.notMatch(stderr, /\[load\] prepared/)
})

t.test('--target simulator with a PKI directory: the full mix, --json and --chart', async (t) => {
  const dir = t.testdir()
  const pkiDir = join(dir, 'pki')
  const { pki } = await loadOrCreateSimulatorPki(pkiDir, ['99999004', '99999010'])
  const sim = await startSimulator({ ...pki.simulatorOptions({ fingerprints: true }), spi: { longPollMs: 300 } })
  t.teardown(async () => { await sim.close() })
  const chart = join(dir, 'latency.html')
  const c = captureIo()
  const code = await loadCommand(['--target', 'simulator', '--url', sim.dictUrl, '--pki', pkiDir, '--rate', '25', '--duration', '2s', '--json', '--chart', chart], c.io)
  const { stdout, stderr } = c.text()
  t.equal(code, 0, stderr)
  const r = JSON.parse(stdout) as LoadReport
  t.equal(r.target, 'direct')
  t.equal(r.ispb, '99999004')
  t.same(r.model, { kind: 'open', ratePerSec: 25 })
  t.equal(r.totals.count, 50)
  t.equal(r.totals.ok, 50, JSON.stringify(r.totals.errorsByCode))
  for (const op of OPERATIONS) t.equal(r.ops[op]?.ok, r.ops[op]?.count, `${op} all ok`)
  t.ok(r.prepare.requests > 0 && r.prepare.ok === r.prepare.requests, 'the counterparty from the PKI directory prepared keys and claims')
  t.match(stderr, /\[load\] prepared/)
  t.match(stderr, /chart written to/)
  // The simulator saw both participants, each identified by its TLS certificate.
  const ispbs = new Set(sim.app.simulator.log.map((m) => m.ispb))
  t.same([...ispbs].sort(), ['99999004', '99999010'])

  const html = await readFile(chart, 'utf8')
  t.match(html, /^<!doctype html>/)
  t.notMatch(html, /<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'self-contained: no script, nothing fetched')
  const p99 = html.slice(html.indexOf('p99 latency per operation'))
  const svg = p99.slice(p99.indexOf('<svg'), p99.indexOf('</svg>'))
  t.ok(svg.length > 0, 'an inline <svg>')
  for (const op of OPERATIONS) t.match(svg, new RegExp(`<path class="p99" data-op="${op}" d="M[0-9.]+,[0-9.]+`), `a p99 path for ${op}`)
  t.equal((svg.match(/<path /g) ?? []).length, OPERATIONS.length, 'one path per operation')
  t.match(html, /successes per second per operation/)

  // Text output (no --json): the table.
  const c2 = captureIo()
  t.equal(await loadCommand(['--target', 'simulator', '--url', sim.dictUrl, '--pki', pkiDir, '--rate', '10', '--duration', '1s', '--mix', 'create-entry=1,spi-send=1'], c2.io), 0, c2.text().stderr)
  t.match(c2.text().stdout, /operation\s+count\s+ok\s+errors\s+dropped/)
  t.match(c2.text().stdout, /create-entry\s+5\s+5\s+0\s+0/)
})

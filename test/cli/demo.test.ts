// `pix-proxy demo --once`: the README's main job must exit 0 only when every flow succeeded, JSON summary last.
// `pix-proxy demo --proxy-url …`: the same flows as docker-compose's `traffic` service runs them, against the other
// compose services started from their own command lines as local processes.
import t from 'tap'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { Agent, request } from 'undici'
import { parse as parseYaml } from 'yaml'
import { main } from '../../tools/cli/main.ts'
import { queryAudit } from '../../tools/audit/query.ts'
import { Errors } from '../../core/errors.ts'
import { createTestPki } from '../../core/pki/ca.ts'
import type { KeyObject } from 'node:crypto'
import { scratchDir } from '../helpers/scratch.ts'
import { at, MAIN_TS, run, sourceAppDir, spawnService } from '../helpers/processes.ts'
import { waitFor } from '../helpers/wait.ts'
import { pacs008 } from '../../tools/samples/messages.ts'
import type { Ran, Service } from '../helpers/processes.ts'

interface Summary {
  ok: boolean
  proxy: string
  ispb: string
  signingKey: string
  simulatorAccepted: number
  flows: Array<{ name: string, ok: boolean, status?: number, signature?: string, detail?: string }>
}

const lastJson = (stdout: string): Summary => JSON.parse(stdout.trim().split('\n').at(-1) as string) as Summary

t.test('demo --once runs every flow through token, proxy and simulator and ends with a JSON summary', async (t) => {
  const dir = t.testdir()
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (c: Buffer) => { stdout += c.toString() })
  err.on('data', (c: Buffer) => { stderr += c.toString() })
  const code = await main(['demo', '--once', '--dir', dir], { stdin: new PassThrough(), stdout: out, stderr: err, env: process.env })
  t.equal(code, 0, stderr)
  const lines = stdout.trim().split('\n')
  const summary = JSON.parse(lines[lines.length - 1] as string) as { ok: boolean, flows: Array<{ name: string, ok: boolean, status?: number, signature?: string, detail?: string }>, simulatorAccepted: number }
  t.equal(summary.ok, true)
  t.ok(summary.flows.length >= 8, 'every sample flow ran')
  for (const f of summary.flows) t.ok(f.ok, f.name)
  t.ok(summary.flows.filter((f) => f.signature === 'VALID').length >= 5, 'BACEN\'s answers were verified')
  // The inbound gateway's flows (issue 17), by name: each bad certificate, TLS 1.1 and a non-permitted suite refused.
  const gateway = summary.flows.filter((f) => f.name.startsWith('gateway: ')).map((f) => f.name)
  for (const name of ['valid client reaches the backend with its identity', 'forged identity headers are replaced, never passed', 'path off the allowlist refused, never forwarded', 'revoked certificate refused', 'expired certificate refused', 'foreign CA refused', 'certificate without clientAuth refused', 'TLS 1.1 refused', 'TLS 1.2 suite not permitted by Open Finance refused']) {
    t.ok(gateway.includes(`gateway: ${name}`), `gateway flow: ${name}`)
  }
  // The gateway's audit: a row per request that reached its HTTP layer (the flows with a status: the valid call and
  // the path off the allowlist), none for the handshakes it refused; counted by the demo, then by us in the lake.
  const httpCalls = summary.flows.filter((f) => f.name.startsWith('gateway: ') && f.status !== undefined)
  t.same(httpCalls.map((f) => f.status), [200, 404], 'two gateway requests reached HTTP')
  const lake = join(dir, 'audit', 'lake')
  t.match(summary.flows.find((f) => f.name.startsWith('gateway: audit rows')), { ok: true, detail: `${httpCalls.length} of ${httpCalls.length} gateway calls audited in ${lake}` })
  const rows: Array<Record<string, unknown>> = []
  for await (const r of queryAudit(lake, 'SELECT status, error_code, client_cnpj, path FROM gateway ORDER BY status')) rows.push(r)
  t.match(rows, [
    { status: 200, error_code: null, client_cnpj: /^\d{14}$/, path: '/open-banking/accounts/v2/accounts' },
    { status: 404, error_code: Errors.GATEWAY_ROUTE_NOT_ALLOWED.code, path: '/admin/accounts' }
  ], 'the lake holds exactly those rows')
  t.equal(rows.length, httpCalls.length)
  // The simulator's accepted-message log is the ground truth: the proxy's signed messages arrived.
  const log = (await readFile(join(dir, 'simulator-accepted.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { ispb: string, signature: string })
  t.equal(log.length, summary.simulatorAccepted)
  t.ok(log.filter((l) => l.ispb === '99999004').every((l) => l.signature === 'VALID' || l.signature === 'UNSIGNED'), 'every signed message from the proxy verified at the simulator')
})

// ---- traffic-only mode -----------------------------------------------------------------------------------------

async function runMain (argv: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (c: Buffer) => { stdout += c.toString() })
  err.on('data', (c: Buffer) => { stderr += c.toString() })
  const code = await main(argv, { stdin: new PassThrough(), stdout: out, stderr: err, env: process.env })
  return { code, stdout, stderr }
}

t.test('demo usage: --help names both modes; traffic flags are checked before anything starts', async (t) => {
  const help = await runMain(['demo', '--help'])
  t.equal(help.code, 0)
  for (const f of ['--dir', '--once', '--proxy-url', '--simulator-url', '--pki-dir', '--lake', '--client-cert', '--client-key', '--proxy-ca']) t.match(help.stdout, f, `--help documents ${f}`)

  const dir = t.testdir({ pki: { hsm: {} }, lake: {} })
  const full = ['--proxy-url', 'http://127.0.0.1:1', '--simulator-url', 'https://localhost:1', '--pki-dir', join(dir, 'pki'), '--lake', join(dir, 'lake')]
  const without = (flag: string): string[] => { const i = full.indexOf(flag); return [...full.slice(0, i), ...full.slice(i + 2)] }
  const usage = async (argv: string[], message: RegExp): Promise<void> => {
    const r = await runMain(['demo', '--once', ...argv])
    t.equal(r.code, 2, `exit 2: demo ${argv.join(' ')}`)
    const line = JSON.parse(r.stderr.trim().split('\n')[0] as string) as { error: string, message: string }
    t.equal(line.error, Errors.USAGE.code)
    t.match(line.message, message)
    t.equal(r.stdout, '', 'no summary')
  }
  await usage(without('--pki-dir'), /--proxy-url needs --pki-dir/)
  await usage(without('--simulator-url'), /--proxy-url needs --simulator-url/)
  await usage(without('--lake'), /--proxy-url needs --lake/)
  await usage(without('--proxy-url'), /--simulator-url, --pki-dir, --lake only go with --proxy-url/)
  await usage([...full, '--dir', dir], /not both/)
  await usage([...full, '--port', '8080'], /--port is for a local stack/)
  await usage([...full, '--simulator-port', '16522'], /--simulator-port is for a local stack/)
  await usage(['--port', 'http'], /--port must be a port/)
  await usage(['--simulator-port', '70000'], /--simulator-port must be a port/)
  await usage(['--proxy-url', 'http//proxy', ...full.slice(2)], /--proxy-url must be a URL, got http\/\/proxy/)
  await usage(['--proxy-url', 'proxy:8080', ...full.slice(2)], /--proxy-url must be a http: or https: URL/)
  await usage([...full.slice(0, 2), '--simulator-url', 'http://localhost:1', ...full.slice(4)], /--simulator-url must be a https: URL/)
  // The proxy's TLS: a client certificate and its key together, only towards an https:// proxy started elsewhere.
  const https = ['--proxy-url', 'https://127.0.0.1:1', ...full.slice(2)]
  await usage([...https, '--client-cert', join(dir, 'c.pem')], /--client-cert and --client-key go together/)
  await usage([...https, '--client-key', join(dir, 'c.key')], /--client-cert and --client-key go together/)
  await usage([...full, '--client-cert', join(dir, 'c.pem'), '--client-key', join(dir, 'c.key')], /--client-cert, --client-key need an https:\/\/ --proxy-url, got http:\/\/127\.0\.0\.1:1/)
  await usage([...full, '--proxy-ca', join(dir, 'ca.pem')], /--proxy-ca needs an https:\/\/ --proxy-url/)
  await usage(['--client-cert', join(dir, 'c.pem'), '--client-key', join(dir, 'c.key')], /--client-cert, --client-key only go with --proxy-url/)
  await usage(['--proxy-ca', join(dir, 'ca.pem')], /--proxy-ca only go with --proxy-url/)
  const unknown = await runMain(['demo', '--proxy', 'http://x'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /"error":"PIXPROXY_ERR_USAGE"/)

  // Every flag right, but no token in --pki-dir (init has not run): a coded error, nothing sent, nothing created.
  const noToken = await runMain(['demo', '--once', ...full])
  t.equal(noToken.code, 1)
  t.match(JSON.parse(noToken.stderr.trim()), { error: Errors.FILE_READ.code, message: /hsm\.json: ENOENT/ })
  t.same(await readdir(join(dir, 'pki'), { recursive: true }), ['hsm'])

  // The TLS files are read and checked before anything else: a missing one, or a key that is not the certificate's.
  const pki = createTestPki()
  const client = pki.issue('CN=core, C=BR', { extKeyUsage: ['clientAuth'] })
  const otherKey = pki.issue('CN=other, C=BR').key as KeyObject
  const pemKey = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()
  await writeFile(join(dir, 'client.pem'), client.certificate.pem)
  await writeFile(join(dir, 'client.key'), pemKey(client.key as KeyObject))
  await writeFile(join(dir, 'other.key'), pemKey(otherKey))
  await writeFile(join(dir, 'ca.pem'), pki.ca.certificate.pem)
  const tlsRun = async (extra: string[]): Promise<{ code: number, stderr: string, stdout: string }> => await runMain(['demo', '--once', ...https, ...extra])
  const noCa = await tlsRun(['--client-cert', join(dir, 'client.pem'), '--client-key', join(dir, 'client.key'), '--proxy-ca', join(dir, 'absent.pem')])
  t.match({ code: noCa.code, err: JSON.parse(noCa.stderr.trim()) }, { code: 1, err: { error: Errors.FILE_READ.code, message: /absent\.pem: ENOENT/ } }, 'a missing --proxy-ca')
  const mismatch = await tlsRun(['--client-cert', join(dir, 'client.pem'), '--client-key', join(dir, 'other.key'), '--proxy-ca', join(dir, 'ca.pem')])
  t.match({ code: mismatch.code, err: JSON.parse(mismatch.stderr.trim()) }, { code: 1, err: { error: Errors.KEY_CERT_MISMATCH.code, message: /client\.pem \(--client-key .*other\.key\)/ } }, 'a key that is not the certificate\'s')
  const notKey = await tlsRun(['--client-cert', join(dir, 'client.pem'), '--client-key', join(dir, 'ca.pem')])
  t.match({ code: notKey.code, err: JSON.parse(notKey.stderr.trim()) }, { code: 1, err: { error: Errors.CONFIG_INVALID.code, message: /--client-key .*ca\.pem is not a PEM private key/ } })
  // Right files: on to the token (still missing here), the same FILE_READ as without TLS.
  const good = await tlsRun(['--client-cert', join(dir, 'client.pem'), '--client-key', join(dir, 'client.key'), '--proxy-ca', join(dir, 'ca.pem')])
  t.match({ code: good.code, err: JSON.parse(good.stderr.trim()) }, { code: 1, err: { error: Errors.FILE_READ.code, message: /hsm\.json: ENOENT/ } }, 'valid TLS files are accepted')
  t.equal(good.stdout, '')
})

/** A loopback port free right now. */
async function freePort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as AddressInfo).port
  await new Promise((resolve) => srv.close(resolve))
  return port
}

t.test('demo without --once, as a process: --port and --simulator-port bind those ports; SIGHUP reloads the mTLS certificate and it keeps serving; SIGTERM stops it, exit 0', async (t) => {
  const dir = t.testdir()
  const [port, simulatorPort] = [await freePort(), await freePort()]
  const demo = spawnService(process.execPath, [MAIN_TS, 'demo', '--dir', dir, '--port', String(port), '--simulator-port', String(simulatorPort)], process.env)
  t.teardown(async () => { await demo.kill() })
  // The handler is there from the start: a SIGHUP while the stack starts is logged and ignored.
  t.ok(await waitFor(() => demo.stderr().includes('[demo] starting'), 60_000), demo.stderr())
  demo.child.kill('SIGHUP')
  t.ok(await waitFor(() => demo.stderr().includes('SIGHUP while starting: ignored'), 60_000), demo.stderr())

  const summary = await demo.waitFor(/^\{"ok":true,"proxy":"([^"]+)".*\n/m, 180_000)
  t.equal(summary[1], `http://127.0.0.1:${port}`, 'the proxy listens on --port')
  t.match(demo.stderr(), `simulator on https://127.0.0.1:${simulatorPort}`, 'the simulator on --simulator-port')
  t.ok(await waitFor(() => demo.stderr().includes('stack is up'), 60_000))

  demo.child.kill('SIGHUP')
  t.ok(await waitFor(() => demo.stderr().includes('mTLS certificate reloaded'), 60_000), demo.stderr())
  t.equal(demo.child.exitCode, null, 'still running')
  t.equal(demo.child.signalCode, null)
  // And still a working proxy: a message signed in the HSM and forwarded over (reloaded) mutual TLS.
  const r = await request(`http://127.0.0.1:${port}/api/v1/in/99999004/msgs`, { method: 'POST', headers: { 'content-type': 'application/xml' }, body: pacs008({ amounts: [1] }).xml })
  t.equal(r.statusCode, 201, await r.body.text())

  t.same(await demo.stop(), { code: 0, signal: null }, 'SIGTERM: the stack closes, exit 0')
  t.match(demo.stderr(), '[demo] SIGTERM: stopping')
})

// What a container gives for free, translated as test/infra/container.test.ts's rehearsal translates it: volume
// paths become a scratch directory, ports any free one, the in-network host names loopback (the BACEN names
// become localhost, which the simulator's certificate also names).

interface ComposeService { command?: string[], environment?: Record<string, string> }
/** This checkout's CLI as a separate process, killed by the test's teardown. */
function startService (services: Service[], args: readonly string[], env: NodeJS.ProcessEnv): Service {
  const service = spawnService(process.execPath, [MAIN_TS, ...args], env)
  services.push(service)
  return service
}

const logLines = async (file: string): Promise<string[]> => (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '')

t.test('demo --proxy-url (compose\'s traffic service) drives running init/aws-local/simulator/serve processes and finds its audit rows', async (t) => {
  const scratch = scratchDir('pix-proxy-traffic-')
  const services: Service[] = []
  t.teardown(async () => {
    for (const s of services) await s.kill()
    await scratch.remove() // only once nothing writes there any more
  })
  const state = join(scratch.dir, 'var/lib/pix-proxy')
  const spool = join(scratch.dir, 'var/spool/pix-proxy')
  await mkdir(join(state, 'lake'), { recursive: true })
  await mkdir(spool, { recursive: true })
  const remap = (v: string): string => v.replaceAll('/var/lib/pix-proxy', state).replaceAll('/var/spool/pix-proxy', spool)
  const compose = parseYaml(await readFile(at('docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService> }
  const svc = (name: string): ComposeService => compose.services[name] ?? {}
  const copies = join(scratch.dir, 'app/docker')
  await mkdir(copies, { recursive: true })
  const remapArgs = async (args: readonly string[]): Promise<string[]> => await Promise.all(args.map(async (a, i) => {
    if (args[i - 1] === '--port') return '0'
    if (args[i - 1] === '--host') return '127.0.0.1'
    if (a.startsWith('/app/docker/')) {
      const copy = join(copies, a.slice('/app/docker/'.length))
      await writeFile(copy, remap(await readFile(at(a.slice('/app/'.length)), 'utf8')))
      return copy
    }
    return remap(a)
  }))
  // The `local` image's environment (Dockerfile ENV), then the service's own.
  const engines = (await run('bash', [at('scripts/install-runtime.sh'), '--engines-dir'], { env: process.env })).stdout.trim()
  const imageEnv = (s: ComposeService): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'production',
    OPENSSL_ENGINES: engines,
    PKCS11_MODULE_PATH: process.env.PKCS11_MODULE_PATH ?? '/usr/lib/softhsm/libsofthsm2.so',
    PIXPROXY_AUDIT_SPOOL_DIR: spool,
    PIXPROXY_AUDIT_PARQUET_DIR: join(state, 'lake'),
    ...Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, remap(v)]))
  })

  // init, aws, simulator, proxy: as in compose, in dependency order.
  const app = await sourceAppDir(join(scratch.dir, 'app'))
  const init = await run(at('docker/local-init.sh'), [], { env: { ...imageEnv(svc('init')), APP_DIR: app, LOCAL_STATE_DIR: state } })
  t.equal(init.code, 0, `init: ${init.stderr}`)
  const aws = startService(services, await remapArgs(svc('aws').command ?? []), imageEnv(svc('aws')))
  const awsUrl = (JSON.parse((await aws.waitFor(/^(\{.*\})\n/))[1] as string) as { url: string }).url
  const sim = startService(services, await remapArgs(svc('simulator').command ?? []), imageEnv(svc('simulator')))
  const simPort = new URL((JSON.parse((await sim.waitFor(/^(\{.*\})\n/))[1] as string) as { dictUrl: string }).dictUrl).port
  const proxy = startService(services, svc('proxy').command ?? [], {
    ...imageEnv(svc('proxy')),
    AWS_ENDPOINT_URL: awsUrl,
    PIXPROXY_LISTEN_HOST: '127.0.0.1',
    PIXPROXY_LISTEN_PORT: '0',
    PIXPROXY_DICT_URL: `https://localhost:${simPort}`,
    PIXPROXY_SPI_URL: `https://localhost:${simPort}`
  })
  // Inbound mutual TLS as compose configures it (from the local SSM): HTTPS, and only the traffic's certificate.
  const proxyUrl = (await proxy.waitFor(/Server listening at (https:\/\/127\.0\.0\.1:\d+)/))[1] as string
  const trafficFile = (flag: string): string => remap((svc('traffic').command ?? [])[(svc('traffic').command ?? []).indexOf(flag) + 1] ?? '')
  const asTraffic = new Agent({ connect: { cert: await readFile(trafficFile('--client-cert'), 'utf8'), key: await readFile(trafficFile('--client-key'), 'utf8'), ca: await readFile(trafficFile('--proxy-ca'), 'utf8') } })
  t.teardown(async () => { await asTraffic.close() })
  // traffic starts once the proxy is healthy: /readyz, its compose health check.
  const readyBy = Date.now() + 30_000
  for (;;) {
    const r = await request(`${proxyUrl}/readyz`, { dispatcher: asTraffic })
    await r.body.dump()
    if (r.statusCode === 200) break
    if (Date.now() > readyBy) throw new Error(`proxy not ready: ${proxy.stderr()}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }

  // traffic: its compose command line, addresses translated.
  const trafficArgs = async (lake?: string): Promise<string[]> => {
    const args = await remapArgs(svc('traffic').command ?? [])
    const set = (flag: string, value: string): void => { args[args.indexOf(flag) + 1] = value }
    set('--proxy-url', proxyUrl)
    set('--simulator-url', `https://localhost:${simPort}`)
    if (lake !== undefined) set('--lake', lake)
    return args
  }
  const lake = remap(svc('traffic').command?.[(svc('traffic').command ?? []).indexOf('--lake') + 1] ?? '')
  t.equal(lake, join(state, 'lake'), 'traffic reads the lake aws-local writes')
  const acceptedLog = join(state, 'pki/bacen/accepted.jsonl')
  const bacenFiles = async (): Promise<string[]> => (await readdir(join(state, 'pki/bacen'), { recursive: true })).sort()

  const traffic = async (label: string, lakeDir?: string): Promise<{ ran: Ran, summary: Summary, audited: number, added: string[] }> => {
    const before = await logLines(acceptedLog)
    const ran = await run(process.execPath, [MAIN_TS, ...await trafficArgs(lakeDir)], { env: imageEnv(svc('traffic')) })
    const summary = lastJson(ran.stdout)
    const audit = summary.flows.find((f) => f.name.startsWith('audit rows'))
    const m = /^(\d+) of (\d+) calls audited/.exec(audit?.detail ?? '')
    t.ok(m, `${label}: the audit check reports what it found: ${audit?.detail ?? ''}`)
    return { ran, summary, audited: Number(m?.[1]), added: (await logLines(acceptedLog)).slice(before.length) }
  }
  const filesBefore = await bacenFiles()

  const first = await traffic('first run')
  t.equal(first.ran.code, 0, first.ran.stderr)
  t.equal(first.summary.ok, true)
  t.equal(first.summary.proxy, proxyUrl)
  t.equal(first.summary.ispb, '99999004')
  t.match(first.summary.signingKey, /^pkcs11:token=pix-proxy;object=pix-sign;type=private/)
  t.ok(first.summary.flows.length >= 9, 'every sample flow ran, the audit check included')
  for (const f of first.summary.flows) t.ok(f.ok, `${f.name}: ${f.detail ?? ''}`)
  t.ok(first.summary.flows.filter((f) => f.signature === 'VALID').length >= 5, 'BACEN\'s answers were verified by the proxy')
  t.match(first.summary.flows.find((f) => f.name.startsWith('tampered')), { ok: true, detail: /DIGEST_MISMATCH, failed reference: Document/ }, 'signed in the token the proxy uses')
  t.ok(first.audited > 0)
  t.match(first.summary.flows.find((f) => f.name.startsWith('audit rows'))?.detail, `${first.audited} of ${first.audited} calls audited in ${lake}`)
  // The simulator's log is the ground truth: this run's lines, the proxy's messages verified there, the counterparty's too.
  t.equal(first.summary.simulatorAccepted, first.added.length, 'simulatorAccepted: the lines this run added to bacen/accepted.jsonl')
  const added = first.added.map((l) => JSON.parse(l) as { ispb: string, signature: string })
  t.ok(added.some((l) => l.ispb === '99999010'), 'the counterparty called the simulator directly')
  t.ok(added.filter((l) => l.ispb === '99999004').length >= 4, 'the proxy\'s messages arrived')
  t.ok(added.every((l) => l.signature === 'VALID' || l.signature === 'UNSIGNED'), 'every signed message verified at the simulator')
  t.same(await bacenFiles(), filesBefore, 'traffic created no file in the shared PKI')

  // The lake volume persists: a second run's check counts its own rows, not the first run's too.
  const second = await traffic('second run')
  t.equal(second.ran.code, 0, second.ran.stderr)
  t.equal(second.summary.ok, true)
  // (The stream flow may read one more page when the stream also returns the first run's leftovers.)
  t.ok(second.audited >= first.audited, 'this run\'s calls')
  t.match(second.summary.flows.find((f) => f.name.startsWith('audit rows'))?.detail, `${second.audited} of ${second.audited} calls audited`)
  let distinct = 0
  for await (const r of queryAudit(lake, 'SELECT count(DISTINCT id) AS n FROM audit')) distinct = Number(r.n)
  t.ok(distinct >= first.audited + second.audited, `the lake holds both runs' rows (${distinct})`)

  // A lake the proxy's rows never reach: the flows still pass, the audit check does not, and the exit code says so.
  const elsewhere = join(scratch.dir, 'other-lake')
  await mkdir(elsewhere)
  const blind = await traffic('wrong lake', elsewhere)
  t.equal(blind.ran.code, 1)
  t.equal(blind.summary.ok, false)
  t.same(blind.summary.flows.filter((f) => !f.ok).map((f) => f.name), ['audit rows for every call, queried with DuckDB'])
  t.equal(blind.audited, 0)

  // A --pki-dir without BACEN's side (simulator --pki-only has not run): a coded error, no key generated in its place.
  const partial = join(scratch.dir, 'partial-pki')
  await mkdir(join(partial, 'hsm'), { recursive: true })
  await writeFile(join(partial, 'hsm/hsm.json'), await readFile(join(state, 'pki/hsm/hsm.json')))
  const args = await trafficArgs()
  args[args.indexOf('--pki-dir') + 1] = partial
  const noBacen = await run(process.execPath, [MAIN_TS, ...args], { env: imageEnv(svc('traffic')) })
  t.equal(noBacen.code, 1)
  t.match(JSON.parse(noBacen.stderr.trim().split('\n').at(-1) as string), { error: Errors.FILE_READ.code, message: /participants\/99999010\/signing\.key: ENOENT/ })
  t.same((await readdir(partial, { recursive: true })).sort(), ['hsm', 'hsm/hsm.json'], 'nothing written')
})

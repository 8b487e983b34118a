/**
 * The inbound gateway's TLS cost (issue 17): full mutual-TLS handshakes per second and requests per second on
 * keep-alive connections, for
 *   gateway-softhsm   `pix-proxy gateway` with its server key in SoftHSM, used through the libp11 engine (production's
 *                     shape: CloudHSM in its place)
 *   gateway-software  the same gateway with a PEM server key
 *   nginx             nginx terminating the same mutual TLS (file key, the same truststore and CRLs, client
 *                     certificate required, the gateway's Open Finance cipher suites, no session resumption), passing
 *                     the client certificate to the same backend in a header: the C floor
 * each pinned to one core with taskset (every thread), the load generator (this process) and the backend
 * (bench/lib/gateway-backend.ts, HTTPS keep-alive) on the other. All three run the whole time and are measured in
 * alternation, the order reversed every round, so drift in the machine's load falls on all of them.
 *
 *   node bench/gateway.ts [--json] [--quick] [--seconds 4] [--rounds 3] [--concurrency 16] [--pin 0:1]
 *
 * Modes, each over TLS 1.3 and over TLS 1.2 (ECDHE-RSA-AES128-GCM-SHA256):
 *   handshake   a closed loop of `concurrency` clients, each opening a new connection (full handshake: no session
 *               resumption, which Open Finance's profile forbids and the gateway disables), sending one GET and
 *               closing; what is counted is connections completed per second
 *   keepalive   the same clients on `concurrency` kept-alive connections, one request after another
 * Reported per contender, mode and version: the rate (median over rounds), the server's CPU per operation from
 * /proc/<pid>/task/*\/schedstat (all its threads), and errors. The server's CPU per operation is the figure to compare:
 * the rate is also bounded by the load generator, whose side of a handshake (an RSA-2048 client signature, the server
 * chain's verification) costs about as much as the server's, on one core.
 *
 * The gateway writes its audit rows as deployed (its spool, then local Parquet); nginx audits nothing, so the
 * keep-alive comparison includes the gateway's audit (one durable row per request). --quick: 2 s points, 1 round.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:https'
import type { RequestOptions } from 'node:https'
import { connect } from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SecureVersion } from 'node:tls'
import { parseArgs } from 'node:util'
import { createPublicKey, createPrivateKey } from 'node:crypto'
import { issueCertificate } from '../core/pki/ca.ts'
import { parseCertificate } from '../core/pki/x509.ts'
import { ofbTlsPolicy } from '../core/pki/ofb-tls-policy.ts'
import { generateIcpPki } from '../tools/token/icp-pki.ts'
import { initSoftHsm } from '../tools/token/hsm-init.ts'
import { nginxPreamble } from './lib/nginx.ts'
import { freePort } from './lib/proxy.ts'
import { threadCpuSecondsPrecise } from './lib/proc.ts'
import { pinProcess, startScriptProcess } from './lib/stack-process.ts'

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    rounds: { type: 'string' },
    concurrency: { type: 'string', default: '16' },
    pin: { type: 'string', default: '0:1' }
  }
})
const seconds = Number(values.seconds ?? (values.quick ? '2' : '4'))
const rounds = Number(values.rounds ?? (values.quick ? '1' : '3'))
const concurrency = Number(values.concurrency)
const [serverCpus = '0', restCpus = '1'] = (values.pin ?? '0:1').split(':')
const log = (s: string): void => { process.stderr.write(`[bench/gateway] ${s}\n`) }

type Contender = 'gateway-softhsm' | 'gateway-software' | 'nginx'
type Mode = 'handshake' | 'keepalive'
const CONTENDERS: readonly Contender[] = ['gateway-softhsm', 'gateway-software', 'nginx']
const VERSIONS: ReadonlyArray<{ name: string, version: SecureVersion, ciphers?: string }> = [
  { name: 'tls1.3', version: 'TLSv1.3' },
  { name: 'tls1.2', version: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' }
]

interface Server { readonly url: string, readonly pid: number, close: () => Promise<void> }

const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-bench-gateway-'))
const cleanups: Array<() => Promise<void>> = []
process.once('SIGINT', () => { void shutdown().then(() => process.exit(130)) })
async function shutdown (): Promise<void> {
  for (const c of cleanups.reverse()) await c().catch(() => {})
  await rm(dir, { recursive: true, force: true })
}

async function waitReady (url: string, child: ChildProcess, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`)
    const ok = await fetch(url).then((r) => r.ok, () => false)
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`${what} was not ready at ${url}`)
}

async function stop (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  await exited
  clearTimeout(timer)
}

async function startGatewayProcess (name: string, env: Record<string, string>): Promise<Server> {
  const port = await freePort()
  const opsPort = await freePort()
  const main = new URL('../tools/cli/main.ts', import.meta.url).pathname
  const child = spawn(process.execPath, [main, 'gateway'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      PIXGW_LISTEN_PORT: String(port),
      PIXGW_OPS_LISTEN_PORT: String(opsPort),
      PIXGW_LOG_LEVEL: 'warn',
      PIXGW_RELOAD_INTERVAL_MS: '0',
      PIXGW_AUDIT_SPOOL_DIR: join(dir, name, 'spool'),
      PIXGW_AUDIT_PARQUET_DIR: join(dir, name, 'lake'),
      ...env
    }
  })
  await waitReady(`http://127.0.0.1:${opsPort}/readyz`, child, name)
  await pinProcess(child.pid as number, serverCpus)
  return { url: `https://127.0.0.1:${port}`, pid: child.pid as number, close: async () => { await stop(child) } }
}

function nginxConfig (o: { dir: string, port: number, backendPort: number, certFile: string, keyFile: string, truststore: string, crls: string, backendCa: string, ciphers: string }): string {
  return `${nginxPreamble(o.dir)}
  upstream backend {
    server 127.0.0.1:${o.backendPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${o.port} ssl;
    ssl_certificate ${o.certFile};
    ssl_certificate_key ${o.keyFile};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ${o.ciphers};
    ssl_prefer_server_ciphers on;
    ssl_session_tickets off;
    ssl_session_cache off;
    ssl_verify_client on;
    ssl_verify_depth 3;
    ssl_client_certificate ${o.truststore};
    ssl_crl ${o.crls};
    keepalive_requests 100000;
    location / {
      proxy_pass https://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
      proxy_ssl_trusted_certificate ${o.backendCa};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }
  }
}
`
}

async function startNginxTerminator (o: { certFile: string, keyFile: string, truststore: string, crls: string, backendUrl: string, backendCa: string }): Promise<Server> {
  const ndir = join(dir, 'nginx')
  await mkdir(join(ndir, 'tmp'), { recursive: true })
  const port = await freePort()
  const conf = join(ndir, 'nginx.conf')
  await writeFile(conf, nginxConfig({ ...o, dir: ndir, port, backendPort: Number(new URL(o.backendUrl).port), ciphers: ofbTlsPolicy().ciphers }))
  const child = spawn('/usr/sbin/nginx', ['-p', ndir, '-c', conf, '-e', join(ndir, 'error.log')], { stdio: ['ignore', 'ignore', 'inherit'] })
  const url = `https://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    if (child.exitCode !== null || i > 200) throw new Error(`nginx did not start (see ${join(ndir, 'error.log')})`)
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (up) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  await pinProcess(child.pid as number, serverCpus)
  return { url, pid: child.pid as number, close: async () => { await stop(child, 'SIGQUIT') } }
}

/** The last failure seen, for a warm-up that fails. */
let lastFailure = ''

interface ClientMaterial { readonly cert: string, readonly key: string, readonly ca: string[] }

/** One request; on a new connection (agent false: the connection closes after it) or the agent's kept-alive one. */
async function once1 (url: URL, m: ClientMaterial, v: (typeof VERSIONS)[number], agent: Agent | false): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const req = request({
      host: url.hostname,
      port: url.port,
      path: '/open-banking/products-services/v1/personal-accounts',
      method: 'GET',
      servername: 'localhost',
      cert: m.cert,
      key: m.key,
      ca: m.ca,
      minVersion: v.version,
      maxVersion: v.version,
      ...(v.ciphers === undefined ? {} : { ciphers: v.ciphers }),
      agent
    } as RequestOptions, (res) => {
      if (res.statusCode !== 200) lastFailure = `HTTP ${String(res.statusCode)}`
      res.resume()
      res.once('end', () => resolve(res.statusCode === 200))
      res.once('error', (err) => { lastFailure = err.message; resolve(false) })
    })
    req.once('error', (err) => { lastFailure = err.message; resolve(false) })
    req.end()
  })
}

interface Point { readonly ok: number, readonly errors: number, readonly perSec: number, readonly serverCpuMsPerOp: number | null }

async function measure (server: Server, mode: Mode, v: (typeof VERSIONS)[number], m: ClientMaterial, secs: number): Promise<Point> {
  const url = new URL(server.url)
  const agent = mode === 'keepalive' ? new Agent({ keepAlive: true, maxSockets: concurrency }) : false
  try {
    // Keep-alive: open the connections first, so the point measures requests, not their handshakes.
    if (agent !== false) await Promise.all(Array.from({ length: concurrency }, async () => await once1(url, m, v, agent)))
    const cpu0 = await threadCpuSecondsPrecise(server.pid)
    const started = performance.now()
    const deadline = started + secs * 1000
    let ok = 0
    let errors = 0
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        if (await once1(url, m, v, agent)) ok++
        else errors++
      }
    }))
    const elapsed = (performance.now() - started) / 1000
    const cpu1 = await threadCpuSecondsPrecise(server.pid)
    const sum = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0)
    const total = ok + errors
    return { ok, errors, perSec: Math.round(ok / elapsed), serverCpuMsPerOp: total === 0 ? null : Number(((sum(cpu1) - sum(cpu0)) * 1000 / total).toFixed(3)) }
  } finally {
    if (agent !== false) agent.destroy()
  }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] as number }

try {
  log(`set-up in ${dir}`)
  const pki = await generateIcpPki(join(dir, 'pki'))
  const hsm = await initSoftHsm({ dir: join(dir, 'hsm'), tokenLabel: 'pix-gw-bench' })
  // A server certificate for the token's TLS key (no PEM of that key exists), issued by the token's test CA.
  const hsmKeyCert = parseCertificate(await readFile(hsm.tls.certFile, 'utf8'))
  const caCert = parseCertificate(await readFile(hsm.caCertFile, 'utf8'))
  const caKey = createPrivateKey(await readFile(hsm.caKeyFile, 'utf8'))
  const hsmServerCert = issueCertificate({
    subject: 'CN=localhost, O=Banco Exemplo S.A., C=BR',
    publicKey: createPublicKey(hsmKeyCert.x509.publicKey.export({ type: 'spki', format: 'pem' })),
    issuer: { certificate: caCert, key: caKey },
    keyUsage: ['digitalSignature', 'keyEncipherment'],
    extKeyUsage: ['serverAuth'],
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1']
  })
  const hsmServerCertFile = join(dir, 'hsm-server.pem')
  await writeFile(hsmServerCertFile, hsmServerCert.pem)

  const serverKeyPem = await readFile(pki.server.keyFile, 'utf8')
  const backend = await startScriptProcess<{ url: string }>(new URL('./lib/gateway-backend.ts', import.meta.url).pathname, {
    BENCH_GATEWAY_BACKEND: JSON.stringify({ certPem: await readFile(pki.server.chainFile, 'utf8'), keyPem: serverKeyPem })
  }, restCpus)
  cleanups.push(backend.close)

  const common = {
    PIXGW_TRUSTSTORE: pki.trustBundleFile,
    PIXGW_CRLS: pki.crlFile,
    PIXGW_BACKEND_URL: backend.line.url,
    PIXGW_BACKEND_CA_FILE: pki.rootsFile,
    PIXGW_ROUTES: 'GET /open-banking/*'
  }
  const engines = process.env.OPENSSL_ENGINES ?? ['/usr/lib/x86_64-linux-gnu/engines-3', '/usr/lib/aarch64-linux-gnu/engines-3'].find((d) => existsSync(d)) ?? ''
  const servers: Record<Contender, Server> = {
    'gateway-softhsm': await startGatewayProcess('gateway-softhsm', {
      ...common,
      PIXGW_SERVER_CERT_FILE: hsmServerCertFile,
      PIXGW_SERVER_KEY_LABEL: hsm.tls.keyLabel,
      PIXPROXY_HSM_MODULE_PATH: hsm.modulePath,
      PIXPROXY_HSM_TOKEN_LABEL: hsm.tokenLabel,
      PIXPROXY_HSM_PIN_FILE: hsm.pinFile,
      SOFTHSM2_CONF: hsm.softhsmConf,
      OPENSSL_ENGINES: engines,
      PKCS11_MODULE_PATH: hsm.modulePath
    }),
    'gateway-software': await startGatewayProcess('gateway-software', { ...common, PIXGW_SERVER_CERT_FILE: pki.server.chainFile, PIXGW_SERVER_KEY_FILE: pki.server.keyFile }),
    nginx: await startNginxTerminator({ certFile: pki.server.chainFile, keyFile: pki.server.keyFile, truststore: pki.trustBundleFile, crls: pki.crlFile, backendUrl: backend.line.url, backendCa: pki.rootsFile })
  }
  for (const s of Object.values(servers)) cleanups.push(s.close)

  const m: ClientMaterial = {
    cert: await readFile(pki.clients.valid.chainFile, 'utf8'),
    key: await readFile(pki.clients.valid.keyFile, 'utf8'),
    ca: [await readFile(pki.rootsFile, 'utf8'), await readFile(hsm.caCertFile, 'utf8')]
  }
  await pinProcess(process.pid, restCpus)

  // Warm-up: JIT, the backend pools, the token's sessions.
  for (const c of CONTENDERS) {
    for (const v of VERSIONS) {
      const w = await measure(servers[c], 'handshake', v, m, 1)
      if (w.ok === 0 || w.errors > 0) throw new Error(`warm-up ${c} ${v.name}: ${w.ok} ok, ${w.errors} errors (last: ${lastFailure})`)
    }
  }

  const results: Record<string, Record<string, Record<string, { perSec: number, serverCpuMsPerOp: number | null, errors: number, rounds: number[] }>>> = {}
  let order = [...CONTENDERS]
  for (const mode of ['handshake', 'keepalive'] as const) {
    for (const v of VERSIONS) {
      const points: Record<string, Point[]> = {}
      for (let r = 0; r < rounds; r++) {
        for (const c of order) {
          const p = await measure(servers[c], mode, v, m, seconds)
          ;(points[c] ??= []).push(p)
          log(`${mode} ${v.name} ${c}: ${p.perSec}/s, server ${String(p.serverCpuMsPerOp)} ms/op, ${p.errors} errors`)
        }
        order = order.reverse()
      }
      for (const c of CONTENDERS) {
        const ps = points[c] ?? []
        ;((results[c] ??= {})[mode] ??= {})[v.name] = {
          perSec: median(ps.map((p) => p.perSec)),
          serverCpuMsPerOp: median(ps.map((p) => p.serverCpuMsPerOp ?? Number.NaN)),
          errors: ps.reduce((a, p) => a + p.errors, 0),
          rounds: ps.map((p) => p.perSec)
        }
      }
    }
  }
  const ratio = (a: number | null | undefined, b: number | null | undefined): number | null => (a == null || b == null || b === 0 ? null : Number((a / b).toFixed(2)))
  const r = (c: Contender, mode: Mode, v: string): { perSec: number, serverCpuMsPerOp: number | null } | undefined => results[c]?.[mode]?.[v]
  const out = {
    bench: 'gateway',
    pinned: { server: serverCpus, rest: restCpus },
    seconds,
    rounds,
    concurrency,
    results,
    ratios: Object.fromEntries(VERSIONS.map((v) => [v.name, {
      handshakeCpuSoftHsmVsSoftware: ratio(r('gateway-softhsm', 'handshake', v.name)?.serverCpuMsPerOp, r('gateway-software', 'handshake', v.name)?.serverCpuMsPerOp),
      handshakeCpuSoftwareVsNginx: ratio(r('gateway-software', 'handshake', v.name)?.serverCpuMsPerOp, r('nginx', 'handshake', v.name)?.serverCpuMsPerOp),
      keepaliveCpuGatewayVsNginx: ratio(r('gateway-software', 'keepalive', v.name)?.serverCpuMsPerOp, r('nginx', 'keepalive', v.name)?.serverCpuMsPerOp)
    }])),
    loadavg1m: Number(loadavg()[0]?.toFixed(2)),
    node: process.versions.node
  }
  if (values.json) process.stdout.write(JSON.stringify(out) + '\n')
  else process.stdout.write(JSON.stringify(out, null, 2) + '\n')
} finally {
  await shutdown()
}

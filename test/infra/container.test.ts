// The container image and docker-compose.yml, proven without a Docker engine: the linters (dclint validates the
// compose file against the Compose schema; dockerfile-utils lints the Dockerfile), the issue's requirements checked
// one by one on the parsed files, the image's scripts (install-runtime.sh, entrypoint.sh, healthcheck.mjs,
// local-init.sh) run for real, and a rehearsal that starts the compose services' own command lines as local
// processes, in dependency order, and sends a request through the proxy they form.
import t from 'tap'
import type { Test } from 'tap'
import { createHash, createPrivateKey, generateKeyPairSync } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { existsSync, lstatSync, readFileSync, readlinkSync } from 'node:fs'
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { Agent, request } from 'undici'
import { parse as parseYaml } from 'yaml'
import { main } from '../../tools/cli/main.ts'
import { CONFIG_KEYS, envNameFromParameter, loadConfig, ssmParameterName } from '../../src/config.ts'
import { createTestPki, issueCertificate } from '../../core/pki/ca.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { createEntryRequest } from '../../tools/samples/messages.ts'
import { BCB_HOSTS } from '../../tools/simulator/pki.ts'
import { scratchDir } from '../helpers/scratch.ts'
import { waitFor } from '../helpers/wait.ts'
import { at, MAIN_TS, run, sourceAppDir, spawnService } from '../helpers/processes.ts'
import type { Ran, Service } from '../helpers/processes.ts'

const UID = '10001'

// ---- running things --------------------------------------------------------------------------------------------

/** A long-running process; the test's teardown kills it if the test did not stop it. */
function startService (t: Test, cmd: string, args: readonly string[], env: NodeJS.ProcessEnv): Service {
  const service = spawnService(cmd, args, env)
  t.teardown(service.kill)
  return service
}

/** An executable shell script. */
async function script (file: string, body: string): Promise<void> {
  await writeFile(file, `#!/usr/bin/env bash\nset -euo pipefail\n${body}\n`)
  await chmod(file, 0o755)
}

// ---- the Dockerfile --------------------------------------------------------------------------------------------

interface Instruction { readonly op: string, readonly args: string }
interface Stage { readonly name: string, readonly from: string, readonly instructions: readonly Instruction[] }

/** Instructions grouped by stage; continuation lines joined, comments dropped. */
function parseDockerfile (text: string): Stage[] {
  const logical: string[] = []
  let acc = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line.startsWith('#') || (line === '' && acc === '')) continue
    if (line.endsWith('\\')) { acc += line.slice(0, -1) + ' '; continue }
    logical.push((acc + line).trim())
    acc = ''
  }
  const stages: Array<{ name: string, from: string, instructions: Instruction[] }> = []
  for (const l of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(l)
    if (m === null) continue
    const op = (m[1] as string).toUpperCase()
    const args = m[2] as string
    if (op === 'FROM') {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)
      stages.push({ from: f?.[1] ?? '', name: f?.[2] ?? String(stages.length), instructions: [] })
    } else {
      stages.at(-1)?.instructions.push({ op, args })
    }
  }
  return stages
}

function execForm (args: string): string[] | null {
  try {
    const v: unknown = JSON.parse(args)
    return Array.isArray(v) && v.every((s) => typeof s === 'string') ? v as string[] : null
  } catch {
    return null
  }
}

/** The stage and its ancestors, oldest first. */
function chain (stages: readonly Stage[], name: string): Stage[] {
  const s = stages.find((x) => x.name === name)
  if (s === undefined) return []
  return [...chain(stages, s.from), s]
}

/** ENV and ARG-free view of a stage's environment, as `docker inspect` would show it. */
function stageEnv (stages: readonly Stage[], name: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const s of chain(stages, name)) {
    for (const i of s.instructions) {
      if (i.op !== 'ENV') continue
      for (const m of i.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)) env[m[1] as string] = (m[2] as string).replace(/^"|"$/g, '')
    }
  }
  return env
}

/** The install-runtime.sh flags of every RUN in a stage. */
function installRuns (stage: Stage): string[][] {
  return stage.instructions.filter((i) => i.op === 'RUN').flatMap((i) =>
    [...i.args.matchAll(/install-runtime\.sh((?:\s+(?:--[a-z0-9-]+|"[^"]*"))*)/g)].map((m) => (m[1] ?? '').trim().split(/\s+/).filter((x) => x !== '')))
}

const last = <T>(xs: readonly T[]): T | undefined => xs[xs.length - 1]

/** .dockerignore as Docker reads it: patterns in order, the last that matches a path or one of its parents wins. */
function dockerIgnored (patterns: readonly string[], path: string): boolean {
  const parts = path.split('/')
  const prefixes = parts.map((_p, i) => parts.slice(0, i + 1).join('/'))
  let ignored = false
  for (const raw of patterns) {
    const negate = raw.startsWith('!')
    const pattern = negate ? raw.slice(1) : raw
    const re = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]') + '$')
    if (prefixes.some((p) => re.test(p))) ignored = !negate
  }
  return ignored
}

// ---- the compose file ------------------------------------------------------------------------------------------

interface ComposeService {
  build?: { context: string, target: string }
  image?: string
  command?: string[]
  entrypoint?: string[]
  environment?: Record<string, string>
  volumes?: string[]
  depends_on?: Record<string, { condition: string }>
  ports?: string[]
  networks?: Record<string, { aliases?: string[] }>
  healthcheck?: { test?: string[], disable?: boolean }
  read_only?: boolean
  tmpfs?: string[]
  cap_drop?: string[]
  security_opt?: string[]
  privileged?: boolean
  user?: string
  stop_grace_period?: string
}
interface Compose { name: string, services: Record<string, ComposeService>, volumes: Record<string, unknown> }

const compose = parseYaml(await readFile(at('docker-compose.yml'), 'utf8'), { merge: true }) as Compose
const dockerfile = parseDockerfile(await readFile(at('Dockerfile'), 'utf8'))
const svc = (name: string): ComposeService => {
  const s = compose.services[name]
  if (s === undefined) throw new Error(`no service ${name}`)
  return s
}
const argAfter = (args: readonly string[] | undefined, flag: string): string | undefined => {
  const i = (args ?? []).indexOf(flag)
  return i < 0 ? undefined : args?.[i + 1]
}
interface Mount { volume: string, target: string, readOnly: boolean }
const mounts = (s: ComposeService): Mount[] => (s.volumes ?? []).map((v) => {
  const [volume, target, mode] = v.split(':')
  return { volume: volume as string, target: target as string, readOnly: mode === 'ro' }
})
const mountFor = (s: ComposeService, path: string): Mount | undefined => mounts(s).find((m) => path === m.target || path.startsWith(m.target + '/'))

const SEED = JSON.parse(await readFile(at('docker/local-aws.json'), 'utf8')) as {
  parameters: Array<{ name: string, value?: string, valueFile?: string }>
  secrets: Array<{ name: string, stringFile?: string }>
}
const seedValue = (name: string): string | undefined => SEED.parameters.find((p) => p.name === ssmParameterName(name))?.value

/** The pix-proxy commands the CLI dispatches, from its own usage text (`xml sign`, `serve`, …). */
async function cliCommands (): Promise<Set<string>> {
  const stdout = new PassThrough()
  let text = ''
  stdout.on('data', (c: Buffer) => { text += c.toString() })
  const code = await main(['help'], { stdin: new PassThrough(), stdout, stderr: new PassThrough(), env: {} })
  if (code !== 0) throw new Error('pix-proxy help failed')
  const commands = new Set<string>()
  for (const m of text.split('commands:')[1]?.matchAll(/^ {2}([a-z-]+)(?: ([a-z]+))?(?= {2,})/gm) ?? []) {
    commands.add(m[1] as string)
    if (m[2] !== undefined) commands.add(`${m[1] as string} ${m[2]}`)
  }
  return commands
}

/** What `pix-proxy <cmd> --help` prints (the flags a command accepts). */
async function helpOf (cmd: readonly string[]): Promise<string> {
  const r = await run(process.execPath, [MAIN_TS, ...cmd, '--help'])
  return r.stdout
}

/** The `--flags` of a command line. */
const flags = (args: readonly string[]): string[] => args.filter((a) => a.startsWith('--'))

// ================================================================================================================

t.test('linters: dclint validates docker-compose.yml (Compose schema + rules), dockerfile-utils lints the Dockerfile', async (t) => {
  const dclint = async (file: string): Promise<{ errorCount: number, warningCount: number, messages: Array<{ rule: string, message: string }> }> => {
    const r = await run(process.execPath, [at('node_modules/dclint/bin/dclint.cjs'), '-f', 'json', file])
    const [report] = JSON.parse(r.stdout) as Array<{ errorCount: number, warningCount: number, messages: Array<{ rule: string, message: string }> }>
    if (report === undefined) throw new Error(`no dclint report: ${r.stderr}`)
    return report
  }
  const report = await dclint(at('docker-compose.yml'))
  t.same(report.messages.map((m) => `${m.rule}: ${m.message}`), [], 'no dclint finding')
  t.equal(report.errorCount, 0)
  t.equal(report.warningCount, 0)
  // The validator validates: the same file with an impossible dependency condition is rejected by the schema.
  const dir = t.testdir()
  const broken = join(dir, 'docker-compose.yml')
  await writeFile(broken, (await readFile(at('docker-compose.yml'), 'utf8')).replace('condition: service_healthy', 'condition: service_ready'))
  const bad = await dclint(broken)
  t.ok(bad.errorCount > 0, 'a schema violation is an error')
  t.match(bad.messages, [{ rule: 'invalid-schema' }])

  const lint = async (file: string): Promise<unknown[]> => {
    const r = await run(process.execPath, [at('node_modules/dockerfile-utils/bin/dockerfile-utils'), 'lint', '--json', file])
    return JSON.parse(r.stdout) as unknown[]
  }
  t.same(await lint(at('Dockerfile')), [], 'dockerfile-utils: no problem')
  const badDockerfile = join(dir, 'Dockerfile')
  await writeFile(badDockerfile, (await readFile(at('Dockerfile'), 'utf8')).replace('--interval=10s', '--interval=10'))
  t.ok((await lint(badDockerfile)).length > 0, 'the linter reports a malformed HEALTHCHECK duration')

  for (const f of ['scripts/install-runtime.sh', 'scripts/setup.sh', 'docker/entrypoint.sh', 'docker/local-init.sh']) {
    const r = await run('bash', ['-n', at(f)])
    t.equal(r.code, 0, `bash -n ${f} ${r.stderr}`)
  }
  for (const f of ['docker/entrypoint.sh', 'docker/local-init.sh', 'docker/healthcheck.mjs', 'scripts/install-runtime.sh']) {
    t.ok((lstatSync(at(f)).mode & 0o111) !== 0, `${f} is executable (COPY keeps the mode; the entry point is exec'd)`)
  }
})

t.test('Dockerfile: multi-stage, Node 24 LTS slim base pinned by exact version (the version setup.sh installs)', async (t) => {
  t.ok(dockerfile.length >= 4, 'several stages')
  const external = dockerfile.filter((s) => !dockerfile.some((o) => o.name === s.from))
  t.ok(external.length >= 1)
  const setupNode = /NODE_VERSION="(\d+\.\d+\.\d+)"/.exec(await readFile(at('scripts/setup.sh'), 'utf8'))?.[1]
  for (const s of external) {
    const m = /^node:(\d+)\.(\d+)\.(\d+)-bookworm-slim(@sha256:[0-9a-f]{64})?$/.exec(s.from)
    t.ok(m, `${s.name} FROM ${s.from}: node:<x.y.z>-bookworm-slim`)
    t.equal(m?.[1], '24', 'Node 24 LTS')
    t.equal(`${m?.[1] ?? ''}.${m?.[2] ?? ''}.${m?.[3] ?? ''}`, setupNode, 'the image runs the Node version the local set-up installs')
  }
  t.equal(last(dockerfile)?.name, 'runtime', 'the default target (the last stage) is production')
  t.ok(dockerfile.some((s) => s.name === 'local'), 'a local target for docker-compose')
})

t.test('Dockerfile: both targets run as uid 10001 with an exec-form entry point and a HEALTHCHECK on /healthz', async (t) => {
  for (const target of ['runtime', 'local']) {
    const stages = chain(dockerfile, target)
    const all = stages.flatMap((s) => s.instructions)
    const user = last(all.filter((i) => i.op === 'USER'))?.args
    t.equal(user, `${UID}:${UID}`, `${target}: numeric non-root USER (runAsNonRoot can verify it)`)
    t.equal(last(stages)?.instructions.filter((i) => i.op === 'USER').length, 1, `${target}: the target's own stage sets USER (not inherited)`)
    const entry = last(all.filter((i) => i.op === 'ENTRYPOINT'))
    t.same(execForm(entry?.args ?? ''), ['/app/docker/entrypoint.sh'], `${target}: exec-form ENTRYPOINT`)
    t.same(execForm(last(all.filter((i) => i.op === 'CMD'))?.args ?? ''), ['serve'], `${target}: exec-form CMD, pix-proxy serve`)
    const hc = last(all.filter((i) => i.op === 'HEALTHCHECK'))?.args ?? ''
    const hcCmd = execForm(hc.replace(/^.*?\bCMD\s+/, ''))
    t.same(hcCmd, ['node', '/app/docker/healthcheck.mjs', '/healthz'], `${target}: exec-form HEALTHCHECK on /healthz`)
    // A path goes to the operations listener when the image sets its port: a real HTTP verdict with inbound mTLS on.
    t.equal(stageEnv(dockerfile, target).PIXPROXY_OPS_LISTEN_PORT, '9464', `${target}: the HEALTHCHECK asks the operations listener`)
    t.match(hc, /--interval=\d+s .*--timeout=\d+s/)
    t.equal(last(all.filter((i) => i.op === 'STOPSIGNAL'))?.args, 'SIGTERM')
  }
  const entrypoint = await readFile(at('docker/entrypoint.sh'), 'utf8')
  const lines = entrypoint.trim().split('\n')
  t.equal(last(lines), 'exec node "$app_dir/dist/tools/cli/main.js" "$@"', 'the entry point ends by exec-ing node (PID 1 gets SIGTERM)')
})

t.test('Dockerfile: the image gets production dependencies only; build tools stay in the build stages', async (t) => {
  const app = dockerfile.find((s) => s.name === 'app')
  t.ok(app)
  const copies = (app?.instructions ?? []).filter((i) => i.op === 'COPY' && i.args.startsWith('--from='))
  const nodeModules = copies.find((c) => c.args.includes('/app/node_modules'))
  const depsStage = /--from=(\S+)/.exec(nodeModules?.args ?? '')?.[1] ?? ''
  const deps = dockerfile.find((s) => s.name === depsStage)
  t.ok(deps, `node_modules comes from stage ${depsStage}`)
  t.same(installRuns(deps as Stage).find((f) => f.includes('--node-modules')), ['--node-modules', '--omit-dev'], 'that stage installs with --omit-dev')
  const printed = await run('bash', [at('scripts/install-runtime.sh'), '--print', '--node-modules', '--omit-dev'])
  t.match(printed.stdout, /^npm: npm ci .*--omit=dev$/m, 'which is `npm ci --omit=dev`')
  const fromBuild = copies.filter((c) => !c.args.includes(`--from=${depsStage}`))
  t.same(fromBuild.map((c) => c.args), ['--from=build /app/dist /app/dist'], 'only dist/ comes from the stage with dev dependencies')
  for (const target of ['runtime', 'local']) {
    for (const s of chain(dockerfile, target)) {
      for (const f of installRuns(s)) {
        t.notOk(f.includes('--build') || f.includes('--dev'), `${target}/${s.name}: no compiler in the image (install-runtime.sh ${f.join(' ')})`)
      }
    }
  }
  const buildPackages = (await run('bash', [at('scripts/install-runtime.sh'), '--print', '--build'])).stdout
  t.match(buildPackages, /g\+\+/, 'the build stages get the native tool chain pkcs11js needs')
  t.ok(existsSync(at('node_modules/pkcs11js/binding.gyp')), 'pkcs11js is built by node-gyp (hence the build stages)')
})

t.test('Dockerfile: the local set-up\'s environment variables (scripts/env.sh), with the same values', async (t) => {
  const envSh = await readFile(at('scripts/env.sh'), 'utf8')
  const exported = new Set([...envSh.matchAll(/export ([A-Z0-9_]+)/g)].map((m) => m[1]))
  for (const name of ['OPENSSL_ENGINES', 'PKCS11_MODULE_PATH']) {
    t.ok(exported.has(name), `scripts/env.sh exports ${name}`)
    for (const target of ['runtime', 'local']) t.ok(stageEnv(dockerfile, target)[name] !== undefined, `${target} sets ${name}`)
  }
  // The values the local set-up computes on this machine…
  const local = await run('bash', ['-c', 'unset OPENSSL_ENGINES PKCS11_MODULE_PATH; . scripts/env.sh; printf "%s\\n%s\\n" "$OPENSSL_ENGINES" "$PKCS11_MODULE_PATH"'])
  const [engines, module] = local.stdout.trim().split('\n')
  t.ok(existsSync(join(engines as string, 'pkcs11.so')), 'env.sh finds the libp11 engine')
  // …and the image: OPENSSL_ENGINES is a link made at build time to what install-runtime.sh --engines-dir prints.
  const linkRun = dockerfile.find((s) => s.name === 'app')?.instructions.find((i) => i.op === 'RUN' && i.args.includes('--engines-dir'))
  const link = /ln -s "\$\(\/app\/scripts\/install-runtime\.sh --engines-dir\)" (\S+)/.exec(linkRun?.args ?? '')?.[1]
  t.equal(stageEnv(dockerfile, 'runtime').OPENSSL_ENGINES, link, 'OPENSSL_ENGINES names the link')
  t.equal((await run('bash', [at('scripts/install-runtime.sh'), '--engines-dir'])).stdout.trim(), engines, 'whose target is the directory env.sh picks')
  t.equal(stageEnv(dockerfile, 'local').PKCS11_MODULE_PATH, module, 'local target: SoftHSM, as env.sh')
  t.equal(stageEnv(dockerfile, 'runtime').PKCS11_MODULE_PATH, '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', 'production: the CloudHSM PKCS#11 library')
})

t.test('Dockerfile: PIXPROXY_* settings it sets are valid, the spool is a volume owned by the runtime user', async (t) => {
  const env = stageEnv(dockerfile, 'runtime')
  const settings = Object.keys(env).filter((k) => k.startsWith('PIXPROXY_'))
  t.ok(settings.length > 0)
  for (const k of settings) t.ok((CONFIG_KEYS as string[]).includes(k), `${k} is a setting (src/config.ts)`)
  const cert = createTestPki().ca.certificate.pem
  const required = {
    ...env,
    PIXPROXY_ISPB: '99999004',
    PIXPROXY_SIGNING_KEY_FILE: cert,
    PIXPROXY_SIGNING_CERT_FILE: cert,
    PIXPROXY_TLS_KEY_FILE: cert,
    PIXPROXY_TLS_CERT_FILE: cert,
    PIXPROXY_TLS_CA_FILE: cert,
    PIXPROXY_BACEN_SIGNING_CERTS_FILE: cert
  }
  // Reachable from outside the container, so the image starts only with callers authenticated by mutual TLS.
  t.throws(() => loadConfig(required), { code: 'PIXPROXY_ERR_CONFIG_INVALID', message: /is not loopback/ }, 'the image alone is not an open signing service')
  const config = loadConfig({
    ...required,
    PIXPROXY_INBOUND_TLS_CERT_FILE: cert,
    PIXPROXY_INBOUND_TLS_KEY_FILE: cert,
    PIXPROXY_INBOUND_CLIENT_CA_FILE: cert,
    PIXPROXY_INBOUND_CLIENT_ALLOWLIST: 'AB:'.repeat(31) + 'AB'
  })
  t.same(config.listen, { host: '0.0.0.0', port: 8080 }, 'reachable from outside the container')
  t.same(config.ops, { host: '127.0.0.1', port: 9464 }, 'the operations listener on by default, on the container\'s loopback only')
  t.equal(env.PIXPROXY_OPS_LISTEN_HOST, undefined, 'its host is the loopback default, not an image setting')
  const spool = config.audit.spoolDir
  t.equal(spool, '/var/spool/pix-proxy', 'an absolute spool path (the default is relative to a read-only /app)')
  const app = dockerfile.find((s) => s.name === 'app')
  t.same(execForm(app?.instructions.find((i) => i.op === 'VOLUME')?.args ?? ''), [spool, '/tmp', '/run/cloudhsm'], 'the writable paths are VOLUMEs (ECS task volumes inherit their ownership)')
  t.match(app?.instructions.find((i) => i.op === 'RUN' && i.args.includes('install -d'))?.args, /install -d -o 10001 -g 10001 -m 0750 .*\/run\/cloudhsm[\s\S]*chmod 1777 \/tmp/, '/run/cloudhsm owned by 10001, /tmp sticky and world-writable')
  t.match(app?.instructions.find((i) => i.op === 'RUN' && i.args.includes('install -d'))?.args, new RegExp(`install -d -o ${UID} -g ${UID} -m 0750 ${spool} `), 'created owned by 10001 (a named volume inherits it)')
  t.match(app?.instructions.find((i) => i.op === 'RUN' && i.args.includes('useradd'))?.args, new RegExp(`useradd --uid ${UID} --gid ${UID} .*--shell /usr/sbin/nologin`))
  t.same(app?.instructions.filter((i) => i.op === 'EXPOSE').map((i) => i.args), [String(config.listen.port)], 'the callers\' port only: the operations port is not EXPOSEd')
})

t.test('Dockerfile: CloudHSM build arguments, and a build context with nothing but what COPY needs', async (t) => {
  const runtime = dockerfile.find((s) => s.name === 'runtime') as Stage
  const args = runtime.instructions.filter((i) => i.op === 'ARG').map((i) => i.args.split('=')[0])
  t.same(args, ['CLOUDHSM_PKCS11_DEB_URL', 'CLOUDHSM_PKCS11_DEB_SHA256'])
  // eslint-disable-next-line no-template-curly-in-string -- a shell's ${...}, not JavaScript's
  t.same(installRuns(runtime), [['--cloudhsm-deb', '"${CLOUDHSM_PKCS11_DEB_URL}"', '--cloudhsm-sha256', '"${CLOUDHSM_PKCS11_DEB_SHA256}"', '--clean']])
  const noop = await run('bash', [at('scripts/install-runtime.sh'), '--check', '--cloudhsm-deb', '', '--cloudhsm-sha256', ''])
  t.equal(noop.code, 0, 'without the build argument the step is a no-op')

  const ignore = (await readFile(at('.dockerignore'), 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  const sources = dockerfile.flatMap((s) => s.instructions).filter((i) => i.op === 'COPY' && !i.args.startsWith('--from='))
    .flatMap((i) => i.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1))
  t.ok(sources.length >= 6)
  for (const src of new Set(sources)) {
    t.ok(existsSync(at(src)), `COPY ${src} exists`)
    t.notOk(dockerIgnored(ignore, src), `${src} is in the build context`)
  }
  for (const p of ['.local/demo/hsm/user.pin', 'node_modules/x', 'dist/tools/cli/main.js', '.tools/node/bin/node', '.git/config', 'scripts/setup.sh', 'test/cli/demo.test.ts', 'infra/terraform/main.tf']) {
    t.ok(dockerIgnored(ignore, p), `${p} stays out of the build context`)
  }
})

t.test('install-runtime.sh: setup.sh and the Dockerfile install through it; --check passes here and fails on a missing package', async (t) => {
  const setup = await readFile(at('scripts/setup.sh'), 'utf8')
  t.match(setup, /^bash scripts\/install-runtime\.sh --dev$/m, 'setup.sh: the system packages')
  t.match(setup, /^bash scripts\/install-runtime\.sh --node-modules$/m, 'setup.sh: npm ci')
  t.notMatch(setup, /apt-get install[^\n]*"\$\{missing/, 'setup.sh keeps no package list of its own')
  const dockerRuns = dockerfile.flatMap(installRuns)
  for (const f of ['--build', '--node-modules', '--clean', '--softhsm', '--cloudhsm-deb']) t.ok(dockerRuns.some((r) => r.includes(f)), `the Dockerfile runs install-runtime.sh ${f}`)

  const check = await run('bash', [at('scripts/install-runtime.sh'), '--check', '--dev', '--node-modules'])
  t.equal(check.code, 0, `--check --dev --node-modules: ${check.stderr}`)
  const dev = (await run('bash', [at('scripts/install-runtime.sh'), '--print', '--dev'])).stdout
  for (const p of ['libengine-pkcs11-openssl', 'softhsm2', 'opensc', 'xmlsec1', 'python3-lxml', 'openssl', 'ca-certificates']) {
    t.match(dev, new RegExp(`\\b${p.replace('+', '\\+')}\\b`), `--dev includes ${p}, as setup.sh always installed`)
  }
  t.match((await run('bash', [at('scripts/install-runtime.sh'), '--print'])).stdout, /^apt: libengine-pkcs11-openssl ca-certificates$/m, 'the runtime set alone')

  // The check can fail: a dpkg-query that does not know softhsm2.
  const bin = t.testdir()
  // eslint-disable-next-line no-template-curly-in-string -- a shell's ${...}, not JavaScript's
  await script(join(bin, 'dpkg-query'), '[ "${@: -1}" = softhsm2 ] && exit 1; printf "install ok installed"')
  const missing = await run('bash', [at('scripts/install-runtime.sh'), '--check', '--softhsm'], { env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` } })
  t.equal(missing.code, 1)
  t.match(missing.stderr, /missing apt packages: softhsm2$/m)
  const usage = await run('bash', [at('scripts/install-runtime.sh'), '--omit-dev'])
  t.equal(usage.code, 2, '--omit-dev alone is a usage error')
})

t.test('install-runtime.sh --cloudhsm-deb then entrypoint.sh: checksum enforced, read-only-friendly layout, configure-pkcs11 run', async (t) => {
  const dir = t.testdir()
  const home = join(dir, 'opt/cloudhsm')
  const runDir = join(dir, 'run/cloudhsm')
  const bin = join(dir, 'bin')
  await mkdir(bin)
  // apt-get (and sudo, when the tests do not run as root) stand-ins: "installing" the .deb lays out what the Client
  // SDK 5 package ships — the library, configure-pkcs11 (recording how it is called) and its default etc/.
  await script(join(bin, 'sudo'), 'exec "$@"')
  await script(join(bin, 'apt-get'), [
    'printf "%s\\n" "$*" >> "$FAKE_LOG"',
    '[ "$1" = install ] || exit 0',
    'mkdir -p "$CLOUDHSM_HOME/lib" "$CLOUDHSM_HOME/bin" "$CLOUDHSM_HOME/etc"',
    ': > "$CLOUDHSM_HOME/lib/libcloudhsm_pkcs11.so"',
    'printf "shipped\\n" > "$CLOUDHSM_HOME/etc/cloudhsm-pkcs11.cfg"',
    'cat > "$CLOUDHSM_HOME/bin/configure-pkcs11" <<\'EOS\'',
    '#!/usr/bin/env bash',
    'printf "%s\\n" "$@" > "$FAKE_CONFIGURE_ARGS"',
    'cp "$CLOUDHSM_HOME/etc/customerCA.crt" "$FAKE_CONFIGURE_ARGS.ca"',
    'cp "$CLOUDHSM_HOME/etc/cloudhsm-pkcs11.cfg" "$FAKE_CONFIGURE_ARGS.cfg"',
    // eslint-disable-next-line no-template-curly-in-string -- a shell's ${...}, not JavaScript's
    'exit "${FAKE_CONFIGURE_EXIT:-0}"',
    'EOS',
    'chmod +x "$CLOUDHSM_HOME/bin/configure-pkcs11"'
  ].join('\n'))
  const deb = join(dir, 'cloudhsm-pkcs11.deb')
  await writeFile(deb, 'not really a deb')
  const sha = createHash('sha256').update('not really a deb').digest('hex')
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, CLOUDHSM_HOME: home, CLOUDHSM_RUN_DIR: runDir, FAKE_LOG: join(dir, 'apt.log'), FAKE_CONFIGURE_ARGS: join(dir, 'configure.args') }
  const install = async (...args: string[]): Promise<Ran> => await run('bash', [at('scripts/install-runtime.sh'), ...args], { env })

  const wrong = await install('--cloudhsm-deb', deb, '--cloudhsm-sha256', 'a'.repeat(64))
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, new RegExp(`the SHA-256 of .* is ${sha}, not a{64}`))
  t.notOk(existsSync(join(dir, 'apt.log')), 'nothing was installed')
  t.match((await install('--cloudhsm-deb', deb)).stderr, /needs --cloudhsm-sha256/)
  t.match((await install('--cloudhsm-deb', 'http://example.invalid/x.deb', '--cloudhsm-sha256', sha)).stderr, /a file path or an https URL/)

  const ok = await install('--cloudhsm-deb', deb, '--cloudhsm-sha256', sha.toUpperCase())
  t.equal(ok.code, 0, ok.stderr)
  t.match(await readFile(join(dir, 'apt.log'), 'utf8'), /^install -y -qq --no-install-recommends \/.*\/cloudhsm-pkcs11\.deb$/m, 'apt-get installs the verified copy')
  t.ok(lstatSync(join(home, 'etc')).isSymbolicLink(), 'etc/ is a symlink…')
  t.equal(readlinkSync(join(home, 'etc')), join(runDir, 'etc'), '…into the writable run directory')
  t.equal(await readFile(join(home, 'etc.dist/cloudhsm-pkcs11.cfg'), 'utf8'), 'shipped\n', 'the shipped files are kept aside')
  t.equal((await install('--check', '--cloudhsm-deb', deb)).code, 0, '--check sees the library')

  // The entry point on that layout, as ECS starts the task.
  const app = await sourceAppDir(join(dir, 'app'))
  await writeFile(join(app, 'dist/tools/cli/main.js'), 'process.stdout.write(JSON.stringify(process.argv.slice(2)) + "\\n")\n')
  const ca = createTestPki({ caSubject: 'CN=CloudHSM customer CA, O=Banco Exemplo, C=BR' }).ca.certificate
  const entry = async (extra: NodeJS.ProcessEnv): Promise<Ran> => await run(at('docker/entrypoint.sh'), ['serve'], { env: { ...env, APP_DIR: app, ...extra } })
  const started = await entry({ CLOUDHSM_HSM_IPS: '10.0.1.10, 10.0.2.20,', CLOUDHSM_CUSTOMER_CA: ca.pem })
  t.equal(started.code, 0, started.stderr)
  t.same(JSON.parse(started.stdout), ['serve'], 'then pix-proxy serve')
  t.same((await readFile(join(dir, 'configure.args'), 'utf8')).trim().split('\n'), [
    '-a', '10.0.1.10', '10.0.2.20', '--hsm-ca-cert', join(home, 'etc/customerCA.crt'), '--log-type', 'term'
  ], 'configure-pkcs11 -a <every HSM IP> with the customer CA, logging to the terminal')
  t.equal(parseCertificate(await readFile(join(runDir, 'etc/customerCA.crt'))).fingerprint256, ca.fingerprint256, 'customerCA.crt holds CLOUDHSM_CUSTOMER_CA, under the run directory')
  t.equal(await readFile(join(dir, 'configure.args.ca'), 'utf8'), ca.pem.trimEnd() + '\n', 'written before configure-pkcs11 runs')
  t.equal(await readFile(join(dir, 'configure.args.cfg'), 'utf8'), 'shipped\n', 'the shipped configuration restored first')

  const refused = async (extra: NodeJS.ProcessEnv, why: RegExp, what: string): Promise<void> => {
    const r = await entry(extra)
    t.equal(r.code, 78, `${what}: EX_CONFIG`)
    t.match(r.stderr, why, what)
    t.equal(r.stdout, '', `${what}: the proxy never starts`)
  }
  await refused({ CLOUDHSM_HSM_IPS: '10.0.1.10' }, /CLOUDHSM_CUSTOMER_CA is empty/, 'no customer CA')
  await refused({ CLOUDHSM_HSM_IPS: '10.0.1.10', CLOUDHSM_CUSTOMER_CA: 'customerCA.crt' }, /not a PEM certificate/, 'a CA that is not PEM')
  await refused({ CLOUDHSM_HSM_IPS: '10.0.1.10;reboot', CLOUDHSM_CUSTOMER_CA: ca.pem }, /"10\.0\.1\.10;reboot" is not an IP address/, 'an address with shell characters')
  await refused({ CLOUDHSM_HSM_IPS: ' , ', CLOUDHSM_CUSTOMER_CA: ca.pem }, /holds no IP address/, 'no address')
  await refused({ CLOUDHSM_HSM_IPS: '10.0.1.10', CLOUDHSM_CUSTOMER_CA: ca.pem, FAKE_CONFIGURE_EXIT: '3' }, /configure-pkcs11 -a 10\.0\.1\.10 failed \(exit 3\)/, 'configure-pkcs11 failing')
  await refused({ CLOUDHSM_HSM_IPS: '10.0.1.10', CLOUDHSM_CUSTOMER_CA: ca.pem, CLOUDHSM_HOME: join(dir, 'nowhere') }, /configure-pkcs11 is missing: build the image with --build-arg CLOUDHSM_PKCS11_DEB_URL/, 'an image without the client')
  const plain = await entry({ CLOUDHSM_HOME: join(dir, 'nowhere') })
  t.equal(plain.code, 0, 'without CLOUDHSM_HSM_IPS nothing CloudHSM is needed')
})

t.test('entrypoint.sh: serve with a PKCS#11 library the image does not have stops at once (78), naming the build args', async (t) => {
  const app = await sourceAppDir(t.testdir())
  await writeFile(join(app, 'dist/tools/cli/main.js'), 'process.stdout.write("node ran\\n")\n')
  const env = { PATH: process.env.PATH ?? '', APP_DIR: app }
  const missing = await run(at('docker/entrypoint.sh'), ['serve'], { env: { ...env, PIXPROXY_HSM_MODULE_PATH: '/opt/cloudhsm/lib/nonexistent.so' } })
  t.equal(missing.code, 78)
  t.match(missing.stderr, /PIXPROXY_HSM_MODULE_PATH is \/opt\/cloudhsm\/lib\/nonexistent\.so, which this image does not have: build it with --build-arg CLOUDHSM_PKCS11_DEB_URL/)
  t.notMatch(missing.stdout, /node ran/, 'the proxy never started')
  t.match((await run(at('docker/entrypoint.sh'), ['serve'], { env: { ...env, PIXPROXY_HSM_MODULE_PATH: process.execPath } })).stdout, /node ran/, 'a library that is there: the proxy starts')
  t.match((await run(at('docker/entrypoint.sh'), ['hsm', 'info'], { env: { ...env, PIXPROXY_HSM_MODULE_PATH: '/nonexistent.so' } })).stdout, /node ran/, 'other commands are not checked')
})

t.test('entrypoint.sh: exec-s node with the command line (same PID), so SIGTERM reaches the Node process', async (t) => {
  const app = await sourceAppDir(t.testdir())
  await writeFile(join(app, 'dist/tools/cli/main.js'), [
    // The handler is in place before the line that tells the test to send SIGTERM (the other order is a race).
    'process.once("SIGTERM", () => { process.stdout.write("SIGTERM received\\n"); process.exit(0) })',
    'process.stdout.write(JSON.stringify({ pid: process.pid, argv: process.argv.slice(2), engines: process.env.OPENSSL_ENGINES }) + "\\n")',
    'setInterval(() => {}, 1000)',
    ''
  ].join('\n'))
  const entry = startService(t, at('docker/entrypoint.sh'), ['simulator', '--dir', '/x'], { PATH: process.env.PATH ?? '', APP_DIR: app, OPENSSL_ENGINES: '/e' })
  const m = await entry.waitFor(/^(\{.*\})\n/)
  const seen = JSON.parse(m[1] as string) as { pid: number, argv: string[], engines: string }
  t.equal(seen.pid, entry.child.pid, 'node replaced the shell: the container\'s PID 1 is node')
  t.same(seen.argv, ['simulator', '--dir', '/x'], 'the arguments are a pix-proxy command line')
  t.equal(seen.engines, '/e', 'the environment passes through')
  t.same(await entry.stop(), { code: 0, signal: null })
  t.match(entry.stdout(), /SIGTERM received/)
})

t.test('healthcheck.mjs: 2xx is healthy, anything else (or nothing) is not; tcp:// and the inbound-TLS fallback', async (t) => {
  const server = createServer((req, res) => {
    if (req.url === '/hang') return
    res.writeHead(req.url === '/healthz' ? 200 : 503).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const port = String((server.address() as AddressInfo).port)
  const check = async (arg: string, env: NodeJS.ProcessEnv = {}): Promise<Ran> =>
    await run(process.execPath, [at('docker/healthcheck.mjs'), arg], { env: { PATH: process.env.PATH ?? '', PIXPROXY_LISTEN_PORT: port, ...env } })
  t.match(await check('/healthz'), { code: 0, stdout: /healthy: GET http:\/\/127\.0\.0\.1:\d+\/healthz → 200/ }, 'a path: the proxy\'s own port')
  t.match(await check('/readyz'), { code: 1, stdout: /unhealthy: .* → 503/ })
  t.match(await check(`http://127.0.0.1:${port}/healthz`), { code: 0 })
  t.match(await check(`tcp://127.0.0.1:${port}`), { code: 0, stdout: /accepts connections/ })
  t.match(await check('tcp://127.0.0.1:1'), { code: 1, stdout: /ECONNREFUSED/ })
  t.match(await check('/healthz', { PIXPROXY_LISTEN_PORT: '1' }), { code: 1, stdout: /ECONNREFUSED/ })
  // In time: the check's own 300 ms timer ended it (exit 1 and that timer's message), not `run`, which kills a check
  // that hangs (a signal, no exit code). Wall time would also count how long a loaded machine takes to start node.
  t.match(await check('/hang', { HEALTHCHECK_TIMEOUT_MS: '300' }), { code: 1, signal: null, stdout: /no answer within 300 ms|no verdict within 300 ms/ },
    'a server that never answers fails the check in time')
  t.match(await check('/readyz', { PIXPROXY_INBOUND_TLS_CERT_FILE: '/x.pem' }), { code: 0, stdout: /accepts connections/ }, 'inbound TLS: only the port is checked')
  t.match(await check('ftp://x'), { code: 1, stdout: /unsupported scheme/ })
})

t.test('healthcheck.mjs: with PIXPROXY_OPS_LISTEN_PORT a path is a real GET on the operations listener, inbound TLS or not', async (t) => {
  const server = createServer((req, res) => { res.writeHead(req.url === '/healthz' ? 200 : 503).end() })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const ops = String((server.address() as AddressInfo).port)
  // The callers' port (1) is closed: a verdict can only come from the operations port.
  const check = async (arg: string, env: NodeJS.ProcessEnv = {}): Promise<Ran> =>
    await run(process.execPath, [at('docker/healthcheck.mjs'), arg], { env: { PATH: process.env.PATH ?? '', PIXPROXY_LISTEN_PORT: '1', PIXPROXY_OPS_LISTEN_PORT: ops, ...env } })
  t.match(await check('/healthz'), { code: 0, stdout: `healthy: GET http://127.0.0.1:${ops}/healthz → 200` }, 'a path: GET on 127.0.0.1:<ops port>')
  t.match(await check('/readyz'), { code: 1, stdout: `unhealthy: GET http://127.0.0.1:${ops}/readyz → 503` })
  const tls = { PIXPROXY_INBOUND_TLS_CERT_FILE: '/x.pem' }
  t.match(await check('/healthz', tls), { code: 0, stdout: /^healthy: GET http:\/\/127\.0\.0\.1:\d+\/healthz → 200/ }, 'inbound TLS on: still an HTTP verdict, not a TCP connect')
  t.match(await check('/readyz', tls), { code: 1, stdout: /→ 503/ }, 'so a failing endpoint fails the check')
  t.match(await check('/healthz', { PIXPROXY_OPS_LISTEN_PORT: '1' }), { code: 1, stdout: /127\.0\.0\.1:1\/healthz: ECONNREFUSED/ }, 'no operations listener there: unhealthy')
  t.match(await check('/healthz', { PIXPROXY_OPS_LISTEN_PORT: '', PIXPROXY_LISTEN_PORT: ops }), { code: 0, stdout: `healthy: GET http://127.0.0.1:${ops}/healthz → 200` }, 'empty = unset: the proxy\'s own port')
  t.match(await check('/healthz', { PIXPROXY_OPS_LISTEN_PORT: '', ...tls }), { code: 1, stdout: /127\.0\.0\.1:1: ECONNREFUSED/ }, 'and with inbound TLS, the TCP check of that port')
  t.match(await check('/healthz', { PIXPROXY_OPS_LISTEN_PORT: 'metrics' }), { code: 1, stdout: /PIXPROXY_OPS_LISTEN_PORT "metrics" is not a port/ })
  t.match(await check(`tcp://127.0.0.1:${ops}`), { code: 0, stdout: /accepts connections/ }, 'URLs are checked as given')
  t.match(await check(`http://127.0.0.1:${ops}/healthz`, { PIXPROXY_OPS_LISTEN_PORT: '1' }), { code: 0 })
})

t.test('docker-compose.yml: the five services, each command a real pix-proxy command line', async (t) => {
  t.equal(compose.name, 'pix-proxy')
  t.same(Object.keys(compose.services).sort(), ['aws', 'init', 'proxy', 'simulator', 'traffic'])
  const commands = await cliCommands()
  t.ok(commands.has('aws-local') && commands.has('serve') && commands.has('hsm init'), 'the CLI usage lists its commands')
  for (const [name, s] of Object.entries(compose.services)) {
    if (s.entrypoint !== undefined) continue
    const cmd = s.command ?? []
    t.ok(commands.has(cmd[0] ?? ''), `${name}: pix-proxy ${cmd[0] ?? '(none)'} is a command`)
  }
  for (const name of ['aws', 'simulator']) {
    const cmd = svc(name).command ?? []
    const help = await helpOf([cmd[0] as string])
    for (const f of flags(cmd)) t.match(help, f, `${name}: pix-proxy ${cmd[0] as string} takes ${f}`)
  }
  t.same(svc('proxy').command, ['serve'])

  // init runs a script (idempotent across `docker compose up` runs) whose steps are pix-proxy commands too.
  t.same(svc('init').entrypoint, ['/app/docker/local-init.sh'])
  const initScript = await readFile(at('docker/local-init.sh'), 'utf8')
  const steps = [...initScript.matchAll(/^\s*"\$\{pix_proxy\[@\]\}" (.+)$/gm)].map((m) => (m[1] as string).split(/\s+/))
  t.equal(steps.length, 3, 'hsm init, simulator --pki-only, pki inbound')
  for (const step of steps) {
    const cmd = commands.has(`${step[0] as string} ${step[1] as string}`) ? [step[0] as string, step[1] as string] : [step[0] as string]
    t.ok(commands.has(cmd.join(' ')), `init: pix-proxy ${cmd.join(' ')}`)
    // `hsm init` documents its flags in `hsm --help`.
    const help = await helpOf(cmd.slice(0, 1))
    for (const f of flags(step)) t.match(help, f, `init: pix-proxy ${cmd.join(' ')} takes ${f}`)
  }
})

t.test('simulator --client-ca (how compose makes BACEN trust the token\'s CA) refuses a file without certificates', async (t) => {
  const dir = t.testdir({ 'not-a-ca.pem': 'hello' })
  const run1 = async (argv: string[]): Promise<{ code: number, err: string }> => {
    const stderr = new PassThrough()
    let err = ''
    stderr.on('data', (c: Buffer) => { err += c.toString() })
    const code = await main(['simulator', '--dir', join(dir, 'sim'), '--port', '0', ...argv], { stdin: new PassThrough(), stdout: new PassThrough(), stderr, env: {} })
    return { code, err }
  }
  t.match(await run1(['--client-ca', join(dir, 'not-a-ca.pem')]), { code: 1, err: /"error":"PIXPROXY_ERR_SIMULATOR_CONFIG".*--client-ca .*not-a-ca\.pem: cannot parse certificate/ })
  t.match(await run1(['--client-ca', join(dir, 'absent.pem')]), { code: 1, err: /"error":"PIXPROXY_ERR_FILE_READ"/ })
})

t.test('docker-compose.yml: traffic runs the demo against the running services', async (t) => {
  const cmd = svc('traffic').command ?? []
  t.equal(cmd[0], 'demo')
  const help = await helpOf(['demo'])
  for (const f of flags(cmd)) t.match(help, f, `pix-proxy demo takes ${f}`)
})

t.test('docker-compose.yml: settings, volumes, dependencies, one published port, hardened containers', async (t) => {
  const settings = Object.values(compose.services).flatMap((s) => Object.keys(s.environment ?? {})).filter((k) => k.startsWith('PIXPROXY_'))
  t.ok(settings.length > 0)
  for (const k of settings) t.ok((CONFIG_KEYS as string[]).includes(k), `${k} is a setting`)
  for (const p of SEED.parameters) {
    const key = envNameFromParameter(p.name)
    t.ok(key !== undefined && ssmParameterName(key) === p.name, `SSM parameter ${p.name} is the canonical name of a setting`)
  }
  const proxyEnv = svc('proxy').environment ?? {}
  t.equal(proxyEnv.PIXPROXY_CONFIG_SSM_PATH, '/pix/proxy/', 'the proxy reads its settings from the local SSM')
  const secretId = seedValue('PIXPROXY_HSM_PIN_SECRET_ID')
  t.ok(SEED.secrets.some((s) => s.name === secretId), 'and its HSM PIN from the local Secrets Manager')
  t.equal(seedValue('PIXPROXY_AUDIT_SINK'), 'firehose', 'audit rows go through (local) Firehose')
  t.equal(seedValue('PIXPROXY_HSM_MODULE_PATH'), stageEnv(dockerfile, 'local').PKCS11_MODULE_PATH, 'the signer\'s module is the TLS engine\'s (startProxy refuses two)')

  // Wiring: every address a service uses points at the service that serves it.
  const awsCmd = svc('aws').command ?? []
  t.equal(proxyEnv.AWS_ENDPOINT_URL, `http://aws:${argAfter(awsCmd, '--port') ?? ''}`)
  t.equal(proxyEnv.AWS_ACCESS_KEY_ID, svc('aws').environment?.AWS_ACCESS_KEY_ID, 'the proxy signs with the credentials aws-local verifies')
  t.equal(proxyEnv.AWS_SECRET_ACCESS_KEY, svc('aws').environment?.AWS_SECRET_ACCESS_KEY)
  t.ok(awsCmd.includes('--credentials-from-env'))
  const simCmd = svc('simulator').command ?? []
  const aliases = svc('simulator').networks?.default?.aliases ?? []
  for (const key of ['PIXPROXY_DICT_URL', 'PIXPROXY_SPI_URL']) {
    const url = new URL(seedValue(key) ?? '')
    t.ok(aliases.includes(url.hostname), `${key}: ${url.hostname} is the simulator's network alias`)
    t.ok(BCB_HOSTS.includes(url.hostname), `${key}: and a name in the simulator's TLS certificate`)
    t.equal(url.port, argAfter(simCmd, '--port'), `${key}: the simulator's port`)
  }
  const listenPort = stageEnv(dockerfile, 'local').PIXPROXY_LISTEN_PORT
  t.equal(new URL(argAfter(svc('traffic').command, '--proxy-url') ?? '').port, listenPort, 'traffic calls the proxy on its port')

  // Secure defaults: callers authenticated by inbound mutual TLS, as in production; no opt-out anywhere.
  for (const [name, s] of Object.entries(compose.services)) {
    t.notOk('PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS' in (s.environment ?? {}), `${name}: no unauthenticated-callers opt-out`)
  }
  t.notOk(SEED.parameters.some((p) => p.name === ssmParameterName('PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS')), 'nor in the local SSM')
  const inboundDir = '/var/lib/pix-proxy/pki/inbound'
  const seedFile = (key: string): string | undefined => SEED.parameters.find((p) => p.name === ssmParameterName(key))?.valueFile
  t.same({
    cert: seedFile('PIXPROXY_INBOUND_TLS_CERT_FILE'),
    key: seedFile('PIXPROXY_INBOUND_TLS_KEY_FILE'),
    ca: seedFile('PIXPROXY_INBOUND_CLIENT_CA_FILE'),
    allowlist: seedFile('PIXPROXY_INBOUND_CLIENT_ALLOWLIST')
  }, {
    cert: `${inboundDir}/server.pem`, key: `${inboundDir}/server.key`, ca: `${inboundDir}/client-ca.pem`, allowlist: `${inboundDir}/allowlist.txt`
  }, 'the proxy\'s inbound TLS, client CA and allowlist come from the local SSM, read from what init wrote')
  t.equal((SEED.parameters as Array<{ name: string, type?: string }>).find((p) => p.name === ssmParameterName('PIXPROXY_INBOUND_TLS_KEY_FILE'))?.type, 'SecureString', 'the server key a SecureString, as in production')
  const trafficCmd = svc('traffic').command ?? []
  const trafficProxy = new URL(argAfter(trafficCmd, '--proxy-url') ?? '')
  t.equal(trafficProxy.protocol, 'https:', 'traffic calls the proxy over TLS')
  t.same([argAfter(trafficCmd, '--client-cert'), argAfter(trafficCmd, '--client-key'), argAfter(trafficCmd, '--proxy-ca')],
    [`${inboundDir}/client.pem`, `${inboundDir}/client.key`, `${inboundDir}/server-ca.pem`], 'with its client certificate, trusting the proxy\'s server CA')
  const initLine = /^\s*"\$\{pix_proxy\[@\]\}" pki inbound (.+)$/m.exec(await readFile(at('docker/local-init.sh'), 'utf8'))?.[1]?.split(/\s+/) ?? []
  const serverNames = initLine.flatMap((a, i) => initLine[i - 1] === '--server-name' ? [a] : [])
  t.ok(serverNames.includes(trafficProxy.hostname), `the proxy's server certificate names ${trafficProxy.hostname}, the host name traffic calls`)
  t.ok(serverNames.includes('localhost') && serverNames.includes('127.0.0.1'), 'and the published port\'s names')
  t.equal(new URL(argAfter(svc('traffic').command, '--simulator-url') ?? '').hostname, new URL(seedValue('PIXPROXY_DICT_URL') ?? '').hostname)
  t.equal(argAfter(awsCmd, '--host'), '0.0.0.0')
  t.equal(argAfter(simCmd, '--host'), '0.0.0.0')

  // Volumes: declared, mounted where each service reads and writes, read-only where it only reads.
  const used = new Set(Object.values(compose.services).flatMap((s) => mounts(s).map((m) => m.volume)))
  t.same([...used].sort(), Object.keys(compose.volumes).sort(), 'every named volume declared and used')
  const state = '/var/lib/pix-proxy'
  const paths = (name: string): string[] => {
    const s = svc(name)
    const files = [...(s.command ?? []), ...Object.values(s.environment ?? {})].filter((v) => v.startsWith(state) || v.startsWith('/var/spool'))
    if (name === 'aws') files.push(...SEED.parameters.flatMap((p) => p.valueFile ?? []), ...SEED.secrets.flatMap((x) => x.stringFile ?? []))
    if (name === 'simulator') files.push(...(JSON.parse(readFileSync(at('docker/simulator-participants.json'), 'utf8')) as Array<string | { signingCertFiles?: string[], tlsCertFiles?: string[] }>).flatMap((p) => typeof p === 'string' ? [] : [...(p.signingCertFiles ?? []), ...(p.tlsCertFiles ?? [])]))
    if (name === 'init') files.push(`${state}/pki/hsm`, `${state}/pki/bacen`, `${state}/pki/inbound`)
    if (name === 'proxy') files.push(stageEnv(dockerfile, 'local').PIXPROXY_AUDIT_SPOOL_DIR as string)
    return files
  }
  for (const name of Object.keys(compose.services)) {
    for (const p of paths(name)) t.ok(mountFor(svc(name), p) !== undefined, `${name}: ${p} is on a volume`)
  }
  const writes: Array<[string, string]> = [
    ['init', `${state}/pki/hsm`], ['aws', `${state}/lake`], ['simulator', `${state}/pki/bacen`], ['proxy', '/var/spool/pix-proxy'],
    ['proxy', `${state}/pki/hsm/tokens`], ['traffic', `${state}/pki/hsm/tokens`]
  ]
  for (const [name, p] of writes) t.equal(mountFor(svc(name), p)?.readOnly, false, `${name} writes ${p}`)
  t.equal(mountFor(svc('aws'), `${state}/pki`)?.readOnly, true, 'aws only reads the PKI')
  t.equal(mountFor(svc('traffic'), `${state}/lake`)?.readOnly, true, 'traffic only reads the lake')
  for (const name of Object.keys(compose.services)) {
    for (const f of (svc(name).command ?? []).filter((a) => a.startsWith('/app/docker/'))) t.ok(existsSync(at(f.slice('/app/'.length))), `${name}: ${f} is in docker/`)
  }

  // Start order: PKI first, then the services that read it, the proxy once they are healthy, traffic once it is.
  const dep = (name: string): Record<string, string> => Object.fromEntries(Object.entries(svc(name).depends_on ?? {}).map(([k, v]) => [k, v.condition]))
  t.same(dep('init'), {})
  t.same(dep('aws'), { init: 'service_completed_successfully' })
  t.same(dep('simulator'), { init: 'service_completed_successfully' })
  t.same(dep('proxy'), { aws: 'service_healthy', init: 'service_completed_successfully', simulator: 'service_healthy' })
  t.same(dep('traffic'), { proxy: 'service_healthy' })
  for (const name of ['aws', 'simulator', 'proxy']) {
    const test = svc(name).healthcheck?.test ?? []
    t.same(test.slice(0, 3), ['CMD', 'node', '/app/docker/healthcheck.mjs'], `${name}: a health check`)
  }
  t.equal(svc('proxy').healthcheck?.test?.[3], '/readyz', 'the proxy is healthy when the HSM and BACEN answer')
  // …as the operations listener says: the image sets its port and the service leaves it (healthcheck.mjs reads it).
  const opsPort = stageEnv(dockerfile, 'local').PIXPROXY_OPS_LISTEN_PORT
  t.equal(opsPort, '9464', 'the local image runs the operations listener')
  t.notOk(['PIXPROXY_OPS_LISTEN_PORT', 'PIXPROXY_OPS_LISTEN_HOST'].some((k) => k in (svc('proxy').environment ?? {})), 'the proxy keeps the image\'s operations listener, on its loopback')
  t.notOk(SEED.parameters.some((p) => /ops-listen/.test(p.name)), 'which no SSM parameter moves (the health check reads the environment)')
  for (const [name, s] of Object.entries(compose.services)) t.notOk((s.ports ?? []).some((p) => p.split(':').includes(opsPort ?? '')), `${name}: the operations port is not published`)
  t.equal(svc('aws').healthcheck?.test?.[3], `tcp://127.0.0.1:${argAfter(awsCmd, '--port') ?? ''}`)
  t.equal(svc('simulator').healthcheck?.test?.[3], `tcp://127.0.0.1:${argAfter(simCmd, '--port') ?? ''}`)
  for (const name of ['init', 'traffic']) t.equal(svc(name).healthcheck?.disable, true, `${name}: one-shot, the image's proxy health check does not apply`)

  // Exposure and hardening.
  for (const [name, s] of Object.entries(compose.services)) {
    if (name === 'proxy') t.same(s.ports, [`127.0.0.1:${listenPort ?? ''}:${listenPort ?? ''}`], 'the proxy: on the host\'s loopback only, the operations port not published')
    else t.equal(s.ports, undefined, `${name}: no host port`)
    t.same(s.build, { context: '.', target: 'local' }, `${name}: the local image`)
    t.equal(s.read_only, true, `${name}: read-only root file system`)
    t.ok(s.tmpfs?.includes('/tmp'), `${name}: /tmp is a tmpfs`)
    t.same(s.cap_drop, ['ALL'], `${name}: no capabilities`)
    t.ok(s.security_opt?.includes('no-new-privileges:true'), `${name}: no-new-privileges`)
    t.notOk(s.privileged === true || s.user === 'root' || s.user === '0', `${name}: not privileged, not root`)
  }
  t.ok(Number.parseInt(svc('proxy').stop_grace_period ?? '0', 10) * 1000 > (loadConfigDefaults().shutdownTimeoutMs), 'docker waits longer than the proxy\'s own shutdown deadline')
})

function loadConfigDefaults (): { shutdownTimeoutMs: number } {
  const pem = createTestPki().ca.certificate.pem
  return loadConfig({ PIXPROXY_ISPB: '99999004', PIXPROXY_SIGNING_KEY_FILE: pem, PIXPROXY_SIGNING_CERT_FILE: pem, PIXPROXY_TLS_KEY_FILE: pem, PIXPROXY_TLS_CERT_FILE: pem, PIXPROXY_TLS_CA_FILE: pem, PIXPROXY_BACEN_SIGNING_CERTS_FILE: pem })
}

// ================================================================================================================
// The rehearsal: docker-compose.yml's command lines, environment and files, run as local processes in dependency
// order. Only what a container gives for free is translated: the volume paths (a scratch directory), the published
// ports (any free one), the in-network host names (loopback; the BACEN names become localhost, which the simulator's
// certificate also names) and OPENSSL_ENGINES (the image's link → the directory it links to).

t.test('compose rehearsal: init (twice), aws, simulator, proxy come up as wired; a request goes through and is audited', async (t) => {
  const scratch = scratchDir('pix-proxy-compose-')
  t.teardown(() => scratch.remove())
  const state = join(scratch.dir, 'var/lib/pix-proxy')
  const spool = join(scratch.dir, 'var/spool/pix-proxy')
  await mkdir(join(state, 'lake'), { recursive: true })
  await mkdir(spool, { recursive: true })
  const remap = (v: string): string => v.replaceAll('/var/lib/pix-proxy', state).replaceAll('/var/spool/pix-proxy', spool)
  const copies = join(scratch.dir, 'app/docker')
  await mkdir(copies, { recursive: true })
  const remapArgs = async (args: readonly string[]): Promise<string[]> => await Promise.all(args.map(async (a, i) => {
    if (args[i - 1] === '--port') return '0'
    if (args[i - 1] === '--host') return '127.0.0.1'
    if (a.startsWith('/app/docker/')) {
      // A file of docker/ that names volume paths: the same file, paths translated.
      const copy = join(copies, a.slice('/app/docker/'.length))
      await writeFile(copy, remap(await readFile(at(a.slice('/app/'.length)), 'utf8')))
      return copy
    }
    return remap(a)
  }))
  const localEnv = stageEnv(dockerfile, 'local')
  const engines = (await run('bash', [at('scripts/install-runtime.sh'), '--engines-dir'])).stdout.trim()
  const imageEnv = (s: ComposeService): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH ?? '',
    ...Object.fromEntries(Object.entries(localEnv).map(([k, v]) => [k, remap(v)])),
    OPENSSL_ENGINES: engines,
    ...Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, remap(v)]))
  })

  // init: the script itself, with this checkout's CLI as /app; a second `up` reuses what the first made.
  const app = await sourceAppDir(join(scratch.dir, 'app'))
  const initEnv = { ...imageEnv(svc('init')), APP_DIR: app, LOCAL_STATE_DIR: state }
  const first = await run(at('docker/local-init.sh'), [], { env: initEnv })
  t.equal(first.code, 0, `init: ${first.stderr}`)
  const hsm = JSON.parse(await readFile(join(state, 'pki/hsm/hsm.json'), 'utf8')) as { tokenSerial: string, pinFile: string, softhsmConf: string }
  t.equal(hsm.softhsmConf, remap(svc('proxy').environment?.SOFTHSM2_CONF ?? ''), 'the token\'s softhsm2.conf is where the services look')
  const caBefore = await readFile(join(state, 'pki/bacen/ca.pem'), 'utf8')
  const allowlistBefore = await readFile(join(state, 'pki/inbound/allowlist.txt'), 'utf8')
  const again = await run(at('docker/local-init.sh'), [], { env: initEnv })
  t.equal(again.code, 0, `init again: ${again.stderr}`)
  t.match(again.stderr, /reusing the token/)
  t.equal((JSON.parse(await readFile(join(state, 'pki/hsm/hsm.json'), 'utf8')) as { tokenSerial: string }).tokenSerial, hsm.tokenSerial, 'same token')
  t.match(again.stderr, /reusing the inbound PKI/)
  t.equal(await readFile(join(state, 'pki/bacen/ca.pem'), 'utf8'), caBefore, 'same BACEN CA')
  t.equal(await readFile(join(state, 'pki/inbound/allowlist.txt'), 'utf8'), allowlistBefore, 'same client certificate on the allowlist')
  // The inbound PKI: keys only for their owner, the allowlist the traffic certificate's fingerprint.
  for (const f of ['server.key', 'client.key', 'client-ca.key', 'server-ca.key']) {
    t.equal(lstatSync(join(state, 'pki/inbound', f)).mode & 0o777, 0o600, `pki/inbound/${f} is 0600`)
  }
  const trafficArg = (flag: string): string => remap(argAfter(svc('traffic').command, flag) ?? '')
  const trafficIdentity = { cert: await readFile(trafficArg('--client-cert'), 'utf8'), key: await readFile(trafficArg('--client-key'), 'utf8'), ca: await readFile(trafficArg('--proxy-ca'), 'utf8') }
  t.equal(allowlistBefore.trim(), parseCertificate(trafficIdentity.cert).fingerprint256, 'the allowlist holds the traffic service\'s certificate')
  // As the image runs it (0.0.0.0) with the settings the local SSM serves, and no opt-out: accepted, callers authenticated.
  const seeded = Object.fromEntries(await Promise.all(SEED.parameters.map(async (p) =>
    [envNameFromParameter(p.name) as string, p.value ?? await readFile(remap(p.valueFile ?? ''), 'utf8')] as const)))
  const asImage = loadConfig({ ...localEnv, ...svc('proxy').environment, ...seeded, PIXPROXY_HSM_PIN_SECRET_ID: undefined, PIXPROXY_HSM_PIN_FILE: '/pin' })
  t.equal(asImage.listen.host, '0.0.0.0')
  t.equal(asImage.unauthenticatedCallers, false, 'on 0.0.0.0 with inbound mutual TLS and an allowlist: no opt-out needed')
  for (const f of [...SEED.parameters.flatMap((p) => p.valueFile ?? []), ...SEED.secrets.flatMap((s) => s.stringFile ?? [])]) {
    t.ok(existsSync(remap(f)), `init made ${f}, which the aws service reads`)
  }

  // aws and simulator: their compose command lines.
  const aws = startService(t, process.execPath, [MAIN_TS, ...await remapArgs(svc('aws').command ?? [])], imageEnv(svc('aws')))
  const awsLine = JSON.parse((await aws.waitFor(/^(\{.*\})\n/))[1] as string) as { url: string, signatures: string }
  t.equal(awsLine.signatures, 'verified')
  const sim = startService(t, process.execPath, [MAIN_TS, ...await remapArgs(svc('simulator').command ?? [])], imageEnv(svc('simulator')))
  const simLine = JSON.parse((await sim.waitFor(/^(\{.*\})\n/))[1] as string) as { dictUrl: string, identifiedBy: string, participants: Record<string, unknown> }
  t.equal(simLine.identifiedBy, 'tls-fingerprint')
  t.same(Object.keys(simLine.participants).sort(), ['99999004', '99999010'])
  const simPort = new URL(simLine.dictUrl).port
  const health = async (target: string, port: string): Promise<number | null> =>
    (await run(process.execPath, [at('docker/healthcheck.mjs'), target], { env: { PATH: process.env.PATH ?? '', PIXPROXY_LISTEN_PORT: port } })).code
  t.equal(await health(`tcp://127.0.0.1:${new URL(awsLine.url).port}`, '0'), 0, 'aws: its compose health check passes')
  t.equal(await health(`tcp://127.0.0.1:${simPort}`, '0'), 0, 'simulator: its compose health check passes')

  // proxy: `serve` with the image's and the service's environment; everything else comes from the local SSM.
  const proxyEnv = {
    ...imageEnv(svc('proxy')),
    AWS_ENDPOINT_URL: awsLine.url,
    PIXPROXY_LISTEN_HOST: '127.0.0.1',
    PIXPROXY_LISTEN_PORT: '0',
    PIXPROXY_OPS_LISTEN_PORT: '0',
    PIXPROXY_DICT_URL: (seedValue('PIXPROXY_DICT_URL') ?? '').replace(/\/\/[^/]+$/, `//localhost:${simPort}`),
    PIXPROXY_SPI_URL: (seedValue('PIXPROXY_SPI_URL') ?? '').replace(/\/\/[^/]+$/, `//localhost:${simPort}`)
  }
  const proxy = startService(t, process.execPath, [MAIN_TS, ...(svc('proxy').command ?? [])], proxyEnv)
  const proxyUrl = (await proxy.waitFor(/Server listening at (https:\/\/127\.0\.0\.1:\d+)/))[1] as string
  const opsUrl = (await proxy.waitFor(/operations listener at (http:\/\/127\.0\.0\.1:\d+)/))[1] as string
  const loaded = JSON.parse(/^(\{"msg":"settings loaded".*\})$/m.exec(proxy.stderr())?.[1] ?? '{}') as { fromSsm?: string[] }
  for (const k of ['PIXPROXY_ISPB', 'PIXPROXY_HSM_PIN_SECRET_ID', 'PIXPROXY_SIGNING_CERT_FILE', 'PIXPROXY_TLS_CA_FILE', 'PIXPROXY_AUDIT_SINK',
    'PIXPROXY_INBOUND_TLS_CERT_FILE', 'PIXPROXY_INBOUND_TLS_KEY_FILE', 'PIXPROXY_INBOUND_CLIENT_CA_FILE', 'PIXPROXY_INBOUND_CLIENT_ALLOWLIST']) {
    t.ok(loaded.fromSsm?.includes(k), `${k} came from the local SSM`)
  }
  // The health checks run in the container with its environment: the callers' and the operations ports, translated.
  const opsPort = new URL(opsUrl).port
  t.not(opsPort, new URL(proxyUrl).port)
  const proxyHealth = async (target: string): Promise<Ran> => await run(process.execPath, [at('docker/healthcheck.mjs'), target], {
    env: { ...proxyEnv, PIXPROXY_LISTEN_PORT: new URL(proxyUrl).port, PIXPROXY_OPS_LISTEN_PORT: opsPort }
  })
  t.match(await proxyHealth(svc('proxy').healthcheck?.test?.[3] ?? ''), { code: 0, stdout: `healthy: GET ${opsUrl}/readyz → 200` },
    'proxy: /readyz (HSM up, BACEN accepts the HSM-held client key) through the operations listener — its compose health check')
  t.match(await proxyHealth('/healthz'), { code: 0, stdout: `healthy: GET ${opsUrl}/healthz → 200` }, 'and the image\'s HEALTHCHECK')

  t.notMatch(proxy.stdout() + proxy.stderr(), /callers are not authenticated/, 'no unauthenticated-callers warning')

  // Callers: HTTPS with a client certificate, as traffic (its compose flags) presents it, trusting the proxy's CA.
  const as = (identity: { cert?: string, key?: string }): Agent => {
    const agent = new Agent({ connect: { ca: trafficIdentity.ca, ...identity } })
    t.teardown(async () => { await agent.close() })
    return agent
  }
  const traffic = as({ cert: trafficIdentity.cert, key: trafficIdentity.key })
  // Without a client certificate the handshake fails: no HTTP answer at all.
  await t.rejects(request(`${proxyUrl}/healthz`, { dispatcher: as({}) }), 'no client certificate: refused at the handshake')
  // A certificate from another CA: the same.
  const stranger = createTestPki().issue('CN=stranger, C=BR', { extKeyUsage: ['clientAuth'] })
  const pemKey = (k: KeyObject | undefined): string => (k as KeyObject).export({ type: 'pkcs8', format: 'pem' }).toString()
  await t.rejects(request(`${proxyUrl}/healthz`, { dispatcher: as({ cert: stranger.certificate.pem, key: pemKey(stranger.key) }) }), 'a client certificate from another CA: refused at the handshake')
  // A certificate from the core systems' CA that is not on the allowlist: 403, with the stable code.
  const clientCa = { certificate: parseCertificate(await readFile(join(state, 'pki/inbound/client-ca.pem'))), key: createPrivateKey(await readFile(join(state, 'pki/inbound/client-ca.key'))) }
  const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const other = issueCertificate({ subject: 'CN=another core system, O=Banco Exemplo S.A., C=BR', publicKey: otherKey.publicKey, issuer: clientCa, extKeyUsage: ['clientAuth'] })
  const refused = await request(`${proxyUrl}/api/v2/entries/`, { method: 'POST', dispatcher: as({ cert: other.pem, key: pemKey(otherKey.privateKey) }), headers: { 'content-type': 'application/xml' }, body: createEntryRequest().xml })
  t.equal(refused.statusCode, 403, 'a client certificate from the client CA, not on the allowlist: 403')
  t.equal((await refused.body.json() as { code: string }).code, 'PIXPROXY_ERR_CLIENT_NOT_ALLOWED')

  // What traffic does first: a DICT entry through the proxy, signed in the HSM, BACEN's answer verified…
  const entry = createEntryRequest()
  const r = await request(`${proxyUrl}/api/v2/entries/`, { method: 'POST', dispatcher: traffic, headers: { 'content-type': 'application/xml' }, body: entry.xml })
  const body = await r.body.text()
  t.equal(r.statusCode, 201, body.slice(0, 300))
  t.equal(r.headers['pix-proxy-signature-code'], 'VALID')
  // …audited through Firehose into the lake, and found there by the audit query traffic runs.
  const lake = remap(argAfter(svc('aws').command, '--dir') ?? '')
  let rows: Array<{ n: number, request_id: string }> = []
  // Polled until the row is there (each query is a node process of its own); the bound only ends a failing test.
  await waitFor(async () => {
    if (!existsSync(join(lake, 'log'))) return false
    const q = await run(process.execPath, [MAIN_TS, 'audit', 'query', '--dir', lake, "SELECT count(*) AS n, any_value(dict_request_id) AS request_id FROM audit WHERE system = 'dict'"])
    if (q.code === 0) rows = q.stdout.trim().split('\n').map((l) => JSON.parse(l) as { n: number, request_id: string })
    return (rows[0]?.n ?? 0) > 0
  }, 90_000, 250)
  t.same(rows, [{ n: 1, request_id: entry.requestId }], 'one audit row, delivered by aws-local into the lake volume')
  t.ok((await readdir(join(lake, 'log/dict'))).length > 0, 'in the S3 layout')

  t.same(await proxy.stop(), { code: 0, signal: null }, 'proxy: SIGTERM, drained, exit 0')
  t.same(await sim.stop(), { code: 0, signal: null }, 'simulator: SIGTERM, exit 0')
  t.same(await aws.stop(), { code: 0, signal: null }, 'aws: SIGTERM, exit 0')
  t.notMatch(proxy.stdout() + proxy.stderr(), new RegExp((await readFile(hsm.pinFile, 'utf8')).trim()), 'the PIN never reaches a log')
})

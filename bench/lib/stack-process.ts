/**
 * The processes around the one being measured: the local stack's token and BACEN simulator (bench/lib/stack-host.ts)
 * and the local AWS endpoint (`pix-proxy aws-local`), each in a process of its own. In the bench's process they
 * shared one event loop with the load generator: a slow stretch of the simulator (it verifies and signs every DICT
 * call) or of the Firehose stand-in (it turns rows into Parquet-ready JSON) then showed up as the proxy's latency.
 * Here each has its own loop, its own CPU accounting (pid) and, with `pin`, its own cores.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createPrivateKey } from 'node:crypto'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { SoftwareSigner } from '../../core/signer.ts'
import { children } from './proc.ts'
import { parseCertificate } from '../../core/pki/x509.ts'
import { TrustStore } from '../../core/xmldsig/truststore.ts'
import { XmlSigner } from '../../core/xmldsig/sign.ts'

export interface BenchStack {
  /** The proxy's settings for this stack (token, keys, trust, simulator URLs). */
  readonly settings: Readonly<Record<string, string>>
  readonly simulator: { readonly dictUrl: string }
  readonly simulatorPid: number
  readonly hsmCaCertFile: string
  /** The simulator CA (TLS server certificates) and BACEN's TLS server identity (for canned upstreams). */
  readonly caPem: string
  readonly bcbTls: { readonly certPem: string, readonly keyPem: string }
  /** The simulator's BCB signing identity (a canned upstream signs its answers with it, as BACEN would). */
  readonly bcbSigning: { readonly certPem: string, readonly keyPem: string }
  readonly bacenTrust: TrustStore
  /** Participant 99999010, calling the simulator directly. */
  readonly counterparty: { readonly xmlSigner: XmlSigner, readonly tls: { readonly certPem: string, readonly keyPem: string } }
  close (): Promise<void>
}

interface HostLine {
  settings: Record<string, string>
  dictUrl: string
  softhsmConf: string
  hsmCaCertFile: string
  caPem: string
  bcbSigningCertPem: string
  bcbSigningKeyPem: string
  bcbTls: { certPem: string, keyPem: string }
  counterparty: { tls: { certPem: string, keyPem: string }, signing: { certPem: string, keyPem: string } }
}

/**
 * Pins a running process and its descendants (nginx's workers), every thread they have and will have, to `cpus`
 * (taskset's list syntax, e.g. "0" or "0,1").
 */
export async function pinProcess (pid: number, cpus: string): Promise<void> {
  await taskset(['-a', '-p', '-c', cpus, String(pid)])
  for (const c of await children(pid)) await pinProcess(c, cpus)
}

/** One thread (by its id) onto `cpus`, its process's other threads left where they are. */
export async function pinThread (tid: number, cpus: string): Promise<void> {
  await taskset(['-p', '-c', cpus, String(tid)])
}

async function taskset (args: string[]): Promise<void> {
  const p = spawn('taskset', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  p.stderr.on('data', (b: Buffer) => { err += b.toString() })
  const [code] = await once(p, 'exit') as [number | null]
  if (code !== 0) throw new Error(`taskset ${args.join(' ')} failed: ${err.trim()}`)
}

/** The first JSON line a child prints to announce itself; rejects if it exits first. Later output is read and dropped. */
async function firstJsonLine<T> (child: ChildProcess, what: string): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    let settled = false
    child.once('exit', (code, signal) => {
      if (!settled) reject(new Error(`${what} exited (${String(signal ?? code)}) before it was ready`))
      settled = true
    })
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      if (settled || !line.startsWith('{')) return
      settled = true
      try {
        resolve(JSON.parse(line) as T)
      } catch (err) {
        reject(err)
      }
    })
  })
}

async function stopChild (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 10_000)
  await exited
  clearTimeout(timer)
}

/**
 * Starts the token and simulator under `dir`. Sets SOFTHSM2_CONF in this process's environment: the proxies the
 * bench spawns inherit it (tools/demo/stack.ts spawnProxyProcess).
 */
export async function startStackProcess (dir: string, opts: { longPollMs?: number, cpus?: string } = {}): Promise<BenchStack> {
  const host = new URL('./stack-host.ts', import.meta.url).pathname
  const child = spawn(process.execPath, [host, dir, String(opts.longPollMs ?? 300)], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const line = await firstJsonLine<HostLine>(child, 'the stack host')
    if (opts.cpus !== undefined) await pinProcess(child.pid as number, opts.cpus)
    process.env.SOFTHSM2_CONF = line.softhsmConf
    const signer = SoftwareSigner.fromKeyObject(createPrivateKey(line.counterparty.signing.keyPem))
    return {
      settings: line.settings,
      simulator: { dictUrl: line.dictUrl },
      simulatorPid: child.pid as number,
      hsmCaCertFile: line.hsmCaCertFile,
      caPem: line.caPem,
      bcbTls: line.bcbTls,
      bcbSigning: { certPem: line.bcbSigningCertPem, keyPem: line.bcbSigningKeyPem },
      bacenTrust: new TrustStore([parseCertificate(line.bcbSigningCertPem)]),
      counterparty: {
        xmlSigner: new XmlSigner({ signer, certificate: parseCertificate(line.counterparty.signing.certPem) }),
        tls: line.counterparty.tls
      },
      close: async () => { await stopChild(child) }
    }
  } catch (err) {
    await stopChild(child)
    throw err
  }
}

export interface AwsLocalProcess {
  readonly url: string
  readonly pid: number
  close (): Promise<void>
}

/** `pix-proxy aws-local` on a free port, keeping `retain` records per stream in memory (nothing on disk). */
export async function startAwsLocalProcess (opts: { retain?: number, cpus?: string } = {}): Promise<AwsLocalProcess> {
  const main = new URL('../../tools/cli/main.ts', import.meta.url).pathname
  const child = spawn(process.execPath, [main, 'aws-local', '--port', '0', '--retain', String(opts.retain ?? 1_000)], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const line = await firstJsonLine<{ url: string }>(child, 'pix-proxy aws-local')
    if (opts.cpus !== undefined) await pinProcess(child.pid as number, opts.cpus)
    return { url: line.url, pid: child.pid as number, close: async () => { await stopChild(child) } }
  } catch (err) {
    await stopChild(child)
    throw err
  }
}

export interface ScriptProcess<T> {
  /** The JSON line the script printed when ready. */
  readonly line: T
  readonly pid: number
  close (): Promise<void>
}

/**
 * A bench script (bench/lib/canned-bacen.ts, bench/lib/passthrough.ts) as a process of its own, configured through
 * `env`, ready once it prints its JSON line; pinned to `cpus` when given.
 */
export async function startScriptProcess<T> (script: string, env: Readonly<Record<string, string>>, cpus?: string): Promise<ScriptProcess<T>> {
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } })
  try {
    const line = await firstJsonLine<T>(child, script)
    if (cpus !== undefined) await pinProcess(child.pid as number, cpus)
    return { line, pid: child.pid as number, close: async () => { await stopChild(child) } }
  } catch (err) {
    await stopChild(child)
    throw err
  }
}

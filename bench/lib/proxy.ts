/**
 * The proxy under measurement, as its own process (src/server.ts configured from the environment, as in production)
 * in front of a local stack's token and simulator; shared by the benches.
 */
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { request } from 'undici'
import { spawnProxyProcess } from '../../tools/demo/stack.ts'
import type { ProxyStackSettings } from '../../tools/demo/stack.ts'

export interface BenchProxy {
  readonly url: string
  readonly pid: number
  stop (): Promise<void>
}

/** A loopback port free right now. */
export async function freePort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as AddressInfo).port
  await new Promise((resolve) => srv.close(resolve))
  return port
}

/**
 * Starts the proxy with its audit spool and Parquet store under `dir`, logging at warn (no per-request access log,
 * whose cost would blur what is measured), and waits until /healthz answers. The proxy's "listening at" line is an
 * info line, so the port is chosen here. `settings` (PIXPROXY_*, AWS_*, NODE_OPTIONS…) go on top.
 */
export async function startBenchProxy (stack: ProxyStackSettings, dir: string, settings: Readonly<Record<string, string>> = {}): Promise<BenchProxy> {
  const port = await freePort()
  const p = spawnProxyProcess(stack, {
    PIXPROXY_LOG_LEVEL: 'warn',
    PIXPROXY_LISTEN_PORT: String(port),
    PIXPROXY_AUDIT_SPOOL_DIR: join(dir, 'spool'),
    PIXPROXY_AUDIT_PARQUET_DIR: join(dir, 'lake'),
    ...settings
  })
  const url = `http://127.0.0.1:${port}`
  const stop = async (): Promise<void> => {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM')
    await p.exited
  }
  for (let i = 0; ; i++) {
    if (p.child.exitCode !== null || i > 300) {
      await stop()
      throw new Error('the proxy did not start')
    }
    const up = await request(url + '/healthz').then(async (r) => { await r.body.dump(); return r.statusCode === 200 }, () => false)
    if (up) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { url, pid: p.child.pid as number, stop }
}

/**
 * Audit settings for production's sink, Firehose, pointed at a local endpoint (null: the local Parquet store), with
 * production's flush interval.
 */
export function auditSinkSettings (aws: { readonly url: string } | null, flushMs = 1_000): Record<string, string> {
  return aws === null
    ? { PIXPROXY_AUDIT_FLUSH_MS: String(flushMs) }
    : { PIXPROXY_AUDIT_FLUSH_MS: String(flushMs), PIXPROXY_AUDIT_SINK: 'firehose', AWS_ENDPOINT_URL: aws.url, AWS_REGION: 'sa-east-1', AWS_ACCESS_KEY_ID: 'AKIDLOCAL', AWS_SECRET_ACCESS_KEY: 'local' }
}

/**
 * NODE_OPTIONS for the proxy: a V8 CPU profile into `dir` (none when dir is undefined) and any `extra` flags, e.g.
 * `--perf-basic-prof --interpreted-frames-native-stack` to read its JavaScript frames in `perf record`.
 */
export function cpuProfSettings (dir: string | undefined, extra = ''): Record<string, string> {
  const options = [dir === undefined ? '' : `--cpu-prof --cpu-prof-dir=${dir}`, extra].filter((o) => o !== '').join(' ')
  return options === '' ? {} : { NODE_OPTIONS: options }
}

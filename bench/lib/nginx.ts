/**
 * nginx as a plain mutual-TLS forwarding proxy: the transport floor pix-proxy is measured against (bench/e2e.ts).
 * Plain HTTP in, HTTPS with a client certificate out (TLS 1.2+, the server verified against BACEN's CA, keep-alive
 * connections to the upstream), no signing, no verification, no audit: what any proxy in that position costs.
 * One worker process, as pix-proxy has one JavaScript thread.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { freePort } from './proxy.ts'

export interface NginxOptions {
  /** Working directory (config, pid, logs, temp files). */
  readonly dir: string
  /** The upstream, e.g. https://localhost:16522 (its certificate must name the host). */
  readonly upstreamUrl: string
  /** PEM: the CA that issued the upstream's certificate; the client certificate and its key. */
  readonly caPem: string
  readonly certPem: string
  readonly keyPem: string
  /** Keep-alive connections nginx keeps to the upstream (default 64). */
  readonly keepalive?: number
  /** Worker processes (default 1). */
  readonly workers?: number
  /** The nginx binary (default /usr/sbin/nginx). */
  readonly binary?: string
}

export interface RunningNginx {
  readonly url: string
  readonly pid: number
  readonly child: ChildProcess
  close (): Promise<void>
}

/**
 * What every bench nginx starts with: the process settings, files under `dir` (pid, error log, temp paths) and the
 * opening of the http block, access log off. The caller writes the rest of the http block and closes it.
 */
export function nginxPreamble (dir: string, workers = 1): string {
  return `worker_processes ${workers};
daemon off;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'tmp', 'body')};
  proxy_temp_path ${join(dir, 'tmp', 'proxy')};
  fastcgi_temp_path ${join(dir, 'tmp', 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'tmp', 'uwsgi')};
  scgi_temp_path ${join(dir, 'tmp', 'scgi')};`
}

/** The configuration: exported so a test can check what is measured. */
function nginxConfig (o: { dir: string, port: number, upstream: URL, keepalive: number, workers: number }): string {
  const host = o.upstream.hostname
  const upstreamPort = o.upstream.port === '' ? '443' : o.upstream.port
  return `${nginxPreamble(o.dir, o.workers)}
  upstream bacen {
    server 127.0.0.1:${upstreamPort};
    keepalive ${o.keepalive};
  }
  server {
    listen 127.0.0.1:${o.port};
    client_max_body_size 4m;
    keepalive_requests 100000;
    location / {
      proxy_pass https://bacen;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host ${host};
      proxy_buffering off;
      proxy_request_buffering on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_certificate ${join(o.dir, 'client.crt')};
      proxy_ssl_certificate_key ${join(o.dir, 'client.key')};
      proxy_ssl_trusted_certificate ${join(o.dir, 'ca.crt')};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 3;
      proxy_ssl_name ${host};
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_read_timeout 30s;
    }
  }
}
`
}

/** Starts nginx and waits until it accepts connections. */
export async function startNginx (o: NginxOptions): Promise<RunningNginx> {
  await mkdir(join(o.dir, 'tmp'), { recursive: true })
  await writeFile(join(o.dir, 'ca.crt'), o.caPem)
  await writeFile(join(o.dir, 'client.crt'), o.certPem)
  await writeFile(join(o.dir, 'client.key'), o.keyPem, { mode: 0o600 })
  const port = await freePort()
  const conf = join(o.dir, 'nginx.conf')
  await writeFile(conf, nginxConfig({ dir: o.dir, port, upstream: new URL(o.upstreamUrl), keepalive: o.keepalive ?? 64, workers: o.workers ?? 1 }))
  const child = spawn(o.binary ?? '/usr/sbin/nginx', ['-p', o.dir, '-c', conf, '-e', join(o.dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (b: Buffer) => { stderr += b.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    if (child.exitCode !== null || i > 100) throw new Error(`nginx did not start: ${stderr}`)
    const up = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => { c.destroy(); resolve(true) })
      c.once('error', () => resolve(false))
    })
    if (up) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return {
    url,
    pid: child.pid as number,
    child,
    close: async () => {
      if (child.exitCode === null) child.kill('SIGQUIT') // graceful: finish requests in flight
      await exited
    }
  }
}

#!/usr/bin/env node
// Container health check, for the Dockerfile's HEALTHCHECK, docker-compose.yml and the ECS task definition (the image
// has no curl): exit 0 when healthy, 1 when not, with one line saying why (Docker keeps it in the health log).
//
//   node healthcheck.mjs /healthz                 GET on the proxy's operations listener when PIXPROXY_OPS_LISTEN_PORT
//                                                 is set (http://127.0.0.1:<that port>/healthz), else on its own port
//                                                 (PIXPROXY_LISTEN_PORT, default 8080): 2xx
//   node healthcheck.mjs http://host:port/path    GET: 2xx
//   node healthcheck.mjs tcp://host:port          the port accepts a TCP connection (services with no plain GET)
//
// The operations listener (src/plugins/ops.ts) is plain HTTP on loopback whatever the callers' listener does, so a
// path gets a real HTTP verdict through it even with inbound TLS on. The check reads the port from its own
// environment, which Docker and ECS give it from the container's: set PIXPROXY_OPS_LISTEN_PORT in the environment
// (the image's ENV, the task definition), not only in SSM, and keep PIXPROXY_OPS_LISTEN_HOST on 127.0.0.1 (the
// default) or 0.0.0.0. Without an operations listener and with inbound TLS (PIXPROXY_INBOUND_TLS_CERT_FILE set), the
// proxy's port speaks HTTPS and may demand a client certificate this check does not hold; the check then only
// proves that the port accepts connections, rather than trusting a certificate it cannot verify.
// HEALTHCHECK_TIMEOUT_MS (default 2500) bounds the whole check.
import { request } from 'node:http'
import { connect } from 'node:net'

const timeoutMs = Number(process.env.HEALTHCHECK_TIMEOUT_MS ?? 2500)
const target = process.argv[2] ?? '/healthz'

function fail (why) {
  process.stdout.write(`unhealthy: ${why}\n`)
  process.exit(1)
}

function pass (what) {
  process.stdout.write(`healthy: ${what}\n`)
  process.exit(0)
}

function tcp (host, port) {
  const socket = connect({ host, port })
  socket.setTimeout(timeoutMs, () => { socket.destroy(); fail(`no TCP connection to ${host}:${port} within ${timeoutMs} ms`) })
  socket.once('connect', () => { socket.destroy(); pass(`${host}:${port} accepts connections`) })
  socket.once('error', (err) => fail(`${host}:${port}: ${err.code ?? err.message}`))
}

function get (url) {
  const req = request(url, { method: 'GET', timeout: timeoutMs }, (res) => {
    res.resume()
    const ok = res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300
    if (ok) pass(`GET ${url.href} → ${res.statusCode}`)
    else fail(`GET ${url.href} → ${res.statusCode}`)
  })
  req.once('timeout', () => { req.destroy(); fail(`GET ${url.href}: no answer within ${timeoutMs} ms`) })
  req.once('error', (err) => fail(`GET ${url.href}: ${err.code ?? err.message}`))
  req.end()
}

// A backstop over the per-socket timeouts (a server that trickles bytes keeps resetting those).
setTimeout(() => fail(`no verdict within ${timeoutMs} ms`), timeoutMs).unref()

const isPath = target.startsWith('/')
const opsPort = process.env.PIXPROXY_OPS_LISTEN_PORT ?? ''
const viaOps = isPath && opsPort !== ''
if (viaOps && !/^[0-9]{1,5}$/.test(opsPort)) fail(`PIXPROXY_OPS_LISTEN_PORT ${JSON.stringify(opsPort)} is not a port`)
let url
try {
  url = isPath
    ? new URL(target, `http://127.0.0.1:${viaOps ? opsPort : (process.env.PIXPROXY_LISTEN_PORT || '8080')}`)
    : new URL(target)
} catch {
  fail(viaOps ? `PIXPROXY_OPS_LISTEN_PORT ${JSON.stringify(opsPort)} is not a port` : `not a path or URL: ${target}`)
}
const inboundTls = (process.env.PIXPROXY_INBOUND_TLS_CERT_FILE ?? '') !== ''
if (url.protocol === 'tcp:' || (isPath && !viaOps && inboundTls)) {
  tcp(url.hostname, Number(url.port))
} else if (url.protocol === 'http:') {
  get(url)
} else {
  fail(`unsupported scheme ${url.protocol} (http: or tcp:)`)
}

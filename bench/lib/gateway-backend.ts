/**
 * The backend behind the gateway in bench/gateway.ts (a private API Gateway in AWS): HTTPS with keep-alive, answering
 * every request 200 with a small JSON body, as cheaply as Node can. Bench-only.
 *
 * Configured by BENCH_GATEWAY_BACKEND ({ certPem, keyPem }); prints {"url":…} and serves until SIGTERM.
 */
import { once } from 'node:events'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'

const config = JSON.parse(process.env.BENCH_GATEWAY_BACKEND ?? 'null') as { certPem: string, keyPem: string } | null
if (config === null) throw new Error('BENCH_GATEWAY_BACKEND is not set')
const body = Buffer.from('{"data":{"brandName":"Banco Exemplo"},"links":{"self":"/open-banking/x"},"meta":{}}')
const server = createServer({ cert: config.certPem, key: config.keyPem, keepAliveTimeout: 60_000 }, (req, res) => {
  req.resume()
  req.once('end', () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length }).end(body))
})
server.listen(0, '127.0.0.1')
await once(server, 'listening')
process.stdout.write(JSON.stringify({ url: `https://127.0.0.1:${(server.address() as AddressInfo).port}` }) + '\n')
process.once('SIGTERM', () => { server.closeAllConnections(); server.close(() => process.exit(0)) })

/**
 * The smallest Node proxy in pix-proxy's position: Fastify in (plain HTTP), undici out over mutual TLS with keep-alive,
 * bodies relayed as bytes; no signing, no verification, no audit. It is what pix-proxy's stack (Node, Fastify,
 * undici, one JavaScript thread) costs before any PIX work: the floor between nginx and pix-proxy (bench/e2e.ts
 * --pinned). Bench-only.
 *
 * Configured by one JSON object in BENCH_PASSTHROUGH ({ upstreamUrl, caPem, certPem, keyPem }); prints {"url":…}
 * and serves until SIGTERM.
 */
import Fastify from 'fastify'
import { Agent } from 'undici'

interface PassthroughConfig {
  readonly upstreamUrl: string
  readonly caPem: string
  readonly certPem: string
  readonly keyPem: string
}

const config = JSON.parse(process.env.BENCH_PASSTHROUGH ?? 'null') as PassthroughConfig | null
if (config === null) throw new Error('BENCH_PASSTHROUGH is not set')
const upstream = new URL(config.upstreamUrl)
const dispatcher = new Agent({
  connections: 64,
  keepAliveTimeout: 60_000,
  connect: { ca: config.caPem, cert: config.certPem, key: config.keyPem, servername: upstream.hostname, minVersion: 'TLSv1.2' }
})
const FORWARDED = ['content-type', 'content-encoding', 'accept', 'accept-encoding'] as const
const RELAYED = ['content-type', 'content-encoding', 'pi-resourceid', 'pi-pull-next', 'retry-after'] as const

const app = Fastify({ logger: false, bodyLimit: 4 * 1024 * 1024 })
app.removeAllContentTypeParsers()
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => { done(null, body) })
app.all('/*', async (request, reply) => {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(request.headers)) {
    if (typeof value === 'string' && (name.startsWith('pi-') || (FORWARDED as readonly string[]).includes(name))) headers[name] = value
  }
  const body = Buffer.isBuffer(request.body) ? request.body : undefined
  const r = await dispatcher.request({ origin: upstream.origin, path: request.url, method: request.method as 'GET' | 'POST' | 'DELETE', headers, body })
  const bytes = Buffer.from(await r.body.arrayBuffer())
  for (const name of RELAYED) {
    const v = r.headers[name]
    if (typeof v === 'string') void reply.header(name, v)
  }
  return await reply.code(r.statusCode).send(bytes)
})
const url = await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(JSON.stringify({ url }) + '\n')
process.once('SIGTERM', () => {
  app.close().then(async () => { await dispatcher.close() }).then(() => process.exit(0), () => process.exit(1))
})

/**
 * Shared by the gateway tests: a backend stub (an HTTPS server recording what reaches it), a gateway config over a
 * test PKI, a client that reports either the answer or how the connection failed, and an S3 stand-in whose reads a
 * test can hold.
 */
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:https'
import type { IncomingHttpHeaders } from 'node:http'
import { request } from 'node:https'
import type { Agent, RequestOptions } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { dirname, join } from 'node:path'
import type { SecureVersion } from 'node:tls'
import type { S3Client } from '@aws-sdk/client-s3'
import pino from 'pino'
import type { Logger } from 'pino'
import { loadGatewayConfig } from '../../src/gateway/config.ts'
import type { GatewayConfig } from '../../src/gateway/config.ts'
import type { GatewayPki, Issued } from '../helpers/gateway-pki.ts'

export interface BackendCall {
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly rawHeaders: string[]
  readonly body: string
}

export interface Backend {
  readonly url: string
  readonly calls: BackendCall[]
  close (): Promise<void>
}

/** An HTTPS backend (server certificate from the test PKI) answering 200 with a JSON echo of the path. */
export async function startBackend (pki: GatewayPki): Promise<Backend> {
  const calls: BackendCall[] = []
  const server = createServer({ cert: pki.server.certPem + pki.intermediate.certPem, key: pki.server.keyPem }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      calls.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString('utf8') })
      const body = JSON.stringify({ path: req.url })
      res.writeHead(200, { 'content-type': 'application/json', 'x-backend': 'stub', connection: 'keep-alive, x-hop', 'x-hop': 'secret' }).end(body)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  return {
    url: `https://127.0.0.1:${port}`,
    calls,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

export function gatewayConfig (pki: GatewayPki, backend: Backend, extra: Record<string, string> = {}): GatewayConfig {
  return loadGatewayConfig({
    PIXGW_LISTEN_PORT: '0',
    PIXGW_OPS_LISTEN_PORT: '0',
    PIXGW_SERVER_CERT_FILE: pki.files.serverCert,
    PIXGW_SERVER_KEY_FILE: pki.files.serverKey,
    PIXGW_TRUSTSTORE: pki.files.truststore,
    PIXGW_CRLS: `${pki.files.rootCrl},${pki.files.intermediateCrl}`,
    PIXGW_BACKEND_URL: backend.url,
    PIXGW_BACKEND_CA_FILE: pki.files.serverCa,
    PIXGW_ROUTES: 'GET /open-banking/*,POST /open-banking/payments/v4/*',
    PIXGW_MAX_BODY_BYTES: '1024',
    PIXGW_RELOAD_INTERVAL_MS: '0',
    // The test's own scratch directory, never the repository's .local/ (parallel test files would share a spool).
    PIXGW_AUDIT_SPOOL_DIR: join(dirname(pki.files.truststore), 'audit-spool'),
    PIXGW_AUDIT_PARQUET_DIR: join(dirname(pki.files.truststore), 'audit-lake'),
    ...extra
  })
}

/** A logger whose lines a test can read. */
export function testLogger (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'debug' }, { write: (s: string) => { lines.push(JSON.parse(s) as Record<string, unknown>) } })
  return { logger, lines }
}

export interface ClientOptions {
  readonly client?: Issued
  readonly chain?: string
  readonly minVersion?: SecureVersion
  readonly maxVersion?: SecureVersion
  readonly ciphers?: string
  readonly method?: string
  readonly path?: string
  readonly headers?: Record<string, string | string[]>
  readonly rawHeaders?: string[]
  readonly body?: string
  readonly agent?: Agent
}

export type Attempt =
  /** `socket`: the connection it went over (a keep-alive Agent's, still open unless the answer closed it). */
  | { readonly ok: true, readonly status: number, readonly headers: IncomingHttpHeaders, readonly body: string, readonly reusedSocket: boolean, readonly socket: Socket }
  | { readonly ok: false, readonly code: string }

/** One request; resolves with the answer or the client-side error code (never rejects). */
export async function attempt (url: string, pki: GatewayPki, o: ClientOptions = {}): Promise<Attempt> {
  return await new Promise<Attempt>((resolve) => {
    const u = new URL(o.path ?? '/open-banking/accounts/v2/accounts', url)
    const req = request({
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      method: o.method ?? 'GET',
      ca: pki.root.certPem,
      servername: 'localhost',
      ...(o.client === undefined ? {} : { cert: o.chain ?? pki.chainOf(o.client), key: o.client.keyPem }),
      ...(o.minVersion === undefined ? {} : { minVersion: o.minVersion }),
      ...(o.maxVersion === undefined ? {} : { maxVersion: o.maxVersion }),
      ...(o.ciphers === undefined ? {} : { ciphers: o.ciphers }),
      agent: o.agent ?? false,
      // Node adds no Host to a raw header list, and an HTTP/1.1 server answers 400 without one.
      headers: o.rawHeaders === undefined ? (o.headers ?? {}) : ['Host', u.host, ...o.rawHeaders]
    } as RequestOptions, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const answer = { ok: true as const, status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), reusedSocket: req.reusedSocket }
        // Not enumerable: tests print answers with JSON.stringify, and a socket is circular.
        resolve(Object.defineProperty(answer, 'socket', { value: req.socket, enumerable: false }) as typeof answer & { socket: Socket })
      })
      res.on('error', (err: Error & { code?: string }) => resolve({ ok: false, code: err.code ?? err.message }))
    })
    req.on('error', (err: Error & { code?: string }) => resolve({ ok: false, code: err.code ?? err.message }))
    req.end(o.body)
  })
}

/** Resolves when the socket has closed (at once if it already has). */
export async function closed (socket: Socket): Promise<void> {
  if (socket.closed) return
  await once(socket, 'close')
}

/** The gateway settings that read the truststore and the CRLs from holdableS3's objects. */
export const HOLDABLE_S3_SOURCES = { PIXGW_TRUSTSTORE: 's3://pki-bucket/trust.pem', PIXGW_CRLS: 's3://pki-bucket/int.crl,s3://pki-bucket/root.crl' }

export interface HoldableS3 {
  /** Stands in for the SDK client (GatewayOptions.s3): GetObject, conditional on IfNoneMatch (304 as NotModified). */
  readonly s3: S3Client
  /** The keys of the GetObject calls, in the order they came. */
  readonly reads: string[]
  /** Puts a new version of an object (a new ETag). */
  put: (key: string, bytes: Buffer | string) => void
  /** Holds the next GetObject of root.crl: `reached` resolves when it comes, and it is answered after `release()`. */
  hold: () => { reached: Promise<void>, release: () => void }
}

/**
 * A small in-process S3 holding the test PKI's truststore (trust.pem) and CRLs (int.crl, root.crl), whose next
 * GetObject of root.crl can be held until the test releases it: a reload is caught between its reads by an event,
 * never by timing.
 */
export async function holdableS3 (pki: GatewayPki): Promise<HoldableS3> {
  const objects = new Map<string, { bytes: Buffer, etag: string }>()
  let version = 0
  const put = (key: string, bytes: Buffer | string): void => { objects.set(key, { bytes: Buffer.from(bytes), etag: `"v${++version}"` }) }
  put('trust.pem', await readFile(pki.files.truststore))
  put('int.crl', await readFile(pki.files.intermediateCrl))
  put('root.crl', await readFile(pki.files.rootCrl))
  const reads: string[] = []
  let held: { reached: () => void, release: Promise<void> } | null = null
  const s3 = {
    send: async (cmd: { input: { Key: string, IfNoneMatch?: string } }) => {
      const { Key, IfNoneMatch } = cmd.input
      reads.push(Key)
      // What the reader gets is what the object was when it asked, whenever its answer comes.
      const o = objects.get(Key) as { bytes: Buffer, etag: string }
      if (Key === 'root.crl' && held !== null) {
        const h = held
        held = null
        h.reached()
        await h.release
      }
      if (IfNoneMatch === o.etag) throw Object.assign(new Error('Not Modified'), { name: 'NotModified', $metadata: { httpStatusCode: 304 } })
      return { ContentLength: o.bytes.length, ETag: o.etag, Body: { transformToByteArray: async () => new Uint8Array(o.bytes) } }
    },
    destroy: () => {}
  } as unknown as S3Client
  const hold = (): { reached: Promise<void>, release: () => void } => {
    let release: () => void = () => {}
    const releaseP = new Promise<void>((resolve) => { release = resolve })
    const reached = new Promise<void>((resolve) => { held = { reached: resolve, release: releaseP } })
    return { reached, release }
  }
  return { s3, reads, put, hold }
}

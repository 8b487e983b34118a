/**
 * A participant's HTTP client for the simulator (tests, load tests, tools): mutual TLS with a participant
 * certificate through undici, `Host` without the port as BACEN requires, gzip answers decompressed.
 */
import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import { Agent, request } from 'undici'
import type { Dispatcher } from 'undici'

const gunzipAsync = promisify(gunzip)

export interface ParticipantClientOptions {
  /** The simulator's base URL, e.g. https://127.0.0.1:16522 */
  readonly url: string
  /** PEM of the CA the simulator's TLS certificate chains to. */
  readonly ca: string
  readonly certPem: string
  readonly keyPem: string
  /** TLS server name and Host header. Default dict-h.pi.rsfn.net.br (the certificate also names icom-h). */
  readonly servername?: string
  /** Connections per origin (undici Pool). Default unlimited. */
  readonly connections?: number
}

export interface SimpleResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  /** Decompressed body bytes. */
  readonly body: Buffer
  readonly text: string
}

export class ParticipantClient {
  readonly agent: Agent
  private readonly url: string
  private readonly host: string

  constructor (o: ParticipantClientOptions) {
    this.url = o.url
    this.host = o.servername ?? 'dict-h.pi.rsfn.net.br'
    this.agent = new Agent({
      connect: { ca: o.ca, cert: o.certPem, key: o.keyPem, servername: this.host, minVersion: 'TLSv1.2' },
      ...(o.connections === undefined ? {} : { connections: o.connections })
    })
  }

  /** Sends a request; `headers.host` defaults to the server name without the port. */
  async request (method: Dispatcher.HttpMethod, path: string, o: { headers?: Record<string, string>, body?: string | Buffer } = {}): Promise<SimpleResponse> {
    const res = await request(this.url + path, {
      dispatcher: this.agent,
      method,
      headers: { host: this.host, ...o.headers },
      ...(o.body === undefined ? {} : { body: o.body })
    })
    let body: Buffer = Buffer.from(await res.body.arrayBuffer())
    if (res.headers['content-encoding'] === 'gzip') body = await gunzipAsync(body)
    return { status: res.statusCode, headers: res.headers, body, text: body.toString('utf8') }
  }

  /** Closes the connections; safe to call more than once. */
  async close (): Promise<void> {
    if (this.agent.closed || this.agent.destroyed) return
    await this.agent.close()
  }
}

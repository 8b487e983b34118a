/**
 * What every SDK v3 client of pix-proxy shares: the options it is built from (`AwsClientOptions`) and the request
 * handler with explicit timeouts (`config`). Each client lives in its own module (clients.ts for those read at start-up
 * and reload, firehose-client.ts for the audit sink's), so that a thread loads only the SDK package it uses: the audit
 * ship thread holds the Firehose client and nothing else (bench/RESULTS.md, session 9).
 */
import type { FirehoseClientConfig } from '@aws-sdk/client-firehose'
import { Agent } from 'node:https'
import { Agent as HttpAgent } from 'node:http'

export interface AwsClientOptions {
  readonly region?: string
  /** `http://127.0.0.1:4566` for the local endpoint. */
  readonly endpoint?: string
  readonly credentials?: { readonly accessKeyId: string, readonly secretAccessKey: string, readonly sessionToken?: string }
  /** TCP (and TLS) connect timeout. */
  readonly connectTimeoutMs?: number
  /** Whole request and response. */
  readonly requestTimeoutMs?: number
  /** SDK attempts per call, including the first. */
  readonly maxAttempts?: number
  /** Keep-alive sockets per client. */
  readonly maxSockets?: number
}

type CommonConfig = Pick<FirehoseClientConfig, 'region' | 'endpoint' | 'credentials' | 'maxAttempts' | 'requestHandler'>

export function config (o: AwsClientOptions, defaults: { connectTimeoutMs: number, requestTimeoutMs: number, maxAttempts: number }): CommonConfig {
  const agentOptions = { keepAlive: true, maxSockets: o.maxSockets ?? 8 }
  return {
    ...(o.region === undefined ? {} : { region: o.region }),
    ...(o.endpoint === undefined ? {} : { endpoint: o.endpoint }),
    ...(o.credentials === undefined ? {} : { credentials: { ...o.credentials } }),
    maxAttempts: o.maxAttempts ?? defaults.maxAttempts,
    requestHandler: {
      connectionTimeout: o.connectTimeoutMs ?? defaults.connectTimeoutMs,
      requestTimeout: o.requestTimeoutMs ?? defaults.requestTimeoutMs,
      // Without this the SDK only logs a warning when requestTimeout passes and keeps waiting.
      throwOnRequestTimeout: true,
      httpsAgent: new Agent(agentOptions),
      httpAgent: new HttpAgent(agentOptions)
    }
  }
}

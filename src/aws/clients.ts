/**
 * SDK v3 clients for the AWS services pix-proxy calls (Firehose, SSM, Secrets Manager, KMS, S3), with timeouts and
 * retry counts chosen for how each is used (the SDK's defaults are no timeouts at all and three attempts).
 *
 * Region, credentials and endpoint follow the SDK's own resolution when not given (on ECS: AWS_REGION and the
 * task role; locally `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_FIREHOSE` point every client at the local endpoint
 * without a pix-proxy setting). Passing them explicitly is for tests and tools.
 */
import { FirehoseClient } from '@aws-sdk/client-firehose'
import type { FirehoseClientConfig } from '@aws-sdk/client-firehose'
import { S3Client } from '@aws-sdk/client-s3'
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { SSMClient } from '@aws-sdk/client-ssm'
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

/**
 * The client behind the Firehose audit sink. One attempt per call by default: the audit pipeline retries, and
 * retries only the records Firehose did not accept, with its own backoff and jitter and with the spool holding
 * the rows meanwhile. SDK retries underneath would resend whole batches (accepted records again: duplicates),
 * stretch one `write` to tens of seconds while the shipper waits, and hide an outage from the pipeline's metrics.
 * The timeouts bound how long a call can stall shipping when Firehose or the network hangs (10 s is far above a
 * healthy PutRecordBatch of 4 MiB, which takes well under a second inside the region).
 */
export function createFirehoseClient (o: AwsClientOptions = {}): FirehoseClient {
  return new FirehoseClient(config(o, { connectTimeoutMs: 3_000, requestTimeoutMs: 10_000, maxAttempts: 1 }))
}

/**
 * For configuration at start-up, where nothing retries above: the SDK's standard retries (3 attempts with
 * backoff) absorb the throttling that many tasks starting together can meet (GetParametersByPath has a low
 * per-account rate), and short timeouts make a wrong endpoint or a missing VPC endpoint fail start-up quickly.
 */
export function createSsmClient (o: AwsClientOptions = {}): SSMClient {
  return new SSMClient(config(o, { connectTimeoutMs: 3_000, requestTimeoutMs: 5_000, maxAttempts: 3 }))
}

/** Same reasoning as `createSsmClient`: read once at start-up (and on PIN rotation), nothing retries above. */
export function createSecretsManagerClient (o: AwsClientOptions = {}): SecretsManagerClient {
  return new SecretsManagerClient(config(o, { connectTimeoutMs: 3_000, requestTimeoutMs: 5_000, maxAttempts: 3 }))
}

/**
 * For the gateway's truststore and CRL objects, read at start-up and at every reload: nothing retries above, so the
 * SDK's standard retries; 30 s for a whole GetObject because a CA's CRL can run to megabytes. `forcePathStyle`
 * (bucket in the path, not the host name) is for local S3 stand-ins, whose buckets have no DNS names; AWS itself
 * is addressed virtual-hosted style.
 */
export function createS3Client (o: AwsClientOptions & { readonly forcePathStyle?: boolean } = {}): S3Client {
  return new S3Client({ ...config(o, { connectTimeoutMs: 3_000, requestTimeoutMs: 30_000, maxAttempts: 3 }), forcePathStyle: o.forcePathStyle ?? false })
}

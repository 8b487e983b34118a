import { FirehoseClient } from '@aws-sdk/client-firehose'
import { config } from './config.ts'
import type { AwsClientOptions } from './config.ts'

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

/**
 * The record of every message the simulator accepted for processing: the ground truth that tests and load
 * tests compare the proxy's audit trail and counters against. One JSON object per line in `logFile`, the same
 * objects in memory.
 *
 * "Accepted" means: DICT — the request passed transport, identity, request-signature and rate-limit checks and
 * reached the operation (its business outcome, 2xx or 4xx, is `status`); SPI — the message was answered 201
 * (`rejection` says when an admi.002 was queued instead of processing it). Injected faults, transport
 * rejections, RequestSignatureInvalid and 429s are not messages BACEN accepted and are not logged.
 *
 * Lines are written through one append stream and flushed on close; a crash can lose the lines of the last
 * few milliseconds, never reorder or split them.
 */
import { createWriteStream } from 'node:fs'
import type { WriteStream } from 'node:fs'
import type { VerifyCode } from '../../core/xmldsig/verify.ts'

export interface AcceptedMessage {
  /** ISO-8601 time the simulator accepted the message. */
  readonly ts: string
  readonly system: 'dict' | 'spi'
  /** The caller's ISPB (DICT: the authenticated participant; SPI: the ISPB in the path). */
  readonly ispb: string
  /** DICT operationId (createEntry, getEntry, createClaim, …). */
  readonly operation?: string
  /** SPI AppHdr/MsgDefIdr (e.g. pacs.008.spi.1.13). */
  readonly msgDefIdr?: string
  readonly bizMsgIdr?: string
  readonly endToEndIds?: readonly string[]
  /** SPI: the PI-ResourceId answered for this message. */
  readonly resourceId?: string
  readonly requestId?: string
  readonly key?: string
  readonly claimId?: string
  /** Request signature check: a verifyXml code, or UNSIGNED for reads (which BACEN does not sign-check). */
  readonly signature: VerifyCode | 'UNSIGNED'
  /** HTTP status answered. */
  readonly status: number
  /** SPI: why the message was rejected with an admi.002 (absent when it was processed). */
  readonly rejection?: string
}

export class MessageLog {
  /** Every accepted message, when kept in memory (empty otherwise). */
  readonly entries: AcceptedMessage[] = []
  private readonly stream: WriteStream | undefined
  private readonly memory: boolean
  private writeError: Error | undefined

  constructor (file?: string, opts: { memory?: boolean } = {}) {
    this.memory = opts.memory ?? true
    this.stream = file === undefined ? undefined : createWriteStream(file, { flags: 'a' })
    // An unwritable log file must not crash the simulator mid-test; the error surfaces at close().
    this.stream?.on('error', (err) => { this.writeError = err })
  }

  add (entry: AcceptedMessage): void {
    if (this.memory) this.entries.push(entry)
    this.stream?.write(JSON.stringify(entry) + '\n')
  }

  /** Flushes and closes the file. Rejects with the first write error, if any. */
  async close (): Promise<void> {
    const stream = this.stream
    if (stream !== undefined && !stream.closed) {
      await new Promise<void>((resolve) => { stream.end(resolve) })
    }
    if (this.writeError !== undefined) throw this.writeError
  }
}

/**
 * End-to-end fixture: the whole local stack (SoftHSM token, BACEN simulator, pix-proxy as in production) over real
 * sockets, one per test file (PKCS#11 module state is process-wide), plus what the e2e tests read as ground truth:
 * every HTTP request that reached the simulator (method, path, headers, overlap) and its accepted-message log.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { Agent } from 'undici'
import type { Dispatcher } from 'undici'
import { COUNTERPARTY_ISPB, PROXY_ISPB, startLocalStack } from '../../tools/demo/stack.ts'
import type { LocalStack, LocalStackOptions } from '../../tools/demo/stack.ts'
import type { AcceptedMessage, FaultConfig, SimulatorControl } from '../../tools/simulator/app.ts'
import type { SimpleResponse } from '../../tools/simulator/client.ts'
import { multipartBoundary, parseMultipart } from '../../src/http/multipart.ts'
import { childElements, parseXml, textContent } from '../../core/xmldsig/xml.ts'
import type { XmlElement } from '../../core/xmldsig/xml.ts'
import { TrustStore, verifyXml } from '../../core/xmldsig/index.ts'
import type { VerifyCode } from '../../core/xmldsig/index.ts'
export { waitFor } from './wait.ts'

export { COUNTERPARTY_ISPB, PROXY_ISPB }

// The libp11 engine needs these before the first TLS context is built (scripts/env.sh sets both).
process.env.OPENSSL_ENGINES ??= ['/usr/lib/x86_64-linux-gnu/engines-3', '/usr/lib/aarch64-linux-gnu/engines-3'].find((d) => existsSync(d))
process.env.PKCS11_MODULE_PATH ??= '/usr/lib/softhsm/libsofthsm2.so'

/** Headers of a DICT read as the proxy's participant (getEntry needs all three). */
export function readHeaders (ispb: string = PROXY_ISPB): Record<string, string> {
  const ts = new Date().toISOString().replace(/[-T:]/g, '').slice(0, 12)
  return { 'pi-requestingparticipant': ispb, 'pi-payerid': '52998224725', 'pi-endtoendid': `E${ispb}${ts}e2etest0001` }
}

export interface ProxyResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly body: Buffer
  readonly text: string
}

/** One HTTP request as the simulator's server saw it. */
export interface SeenRequest {
  readonly method: string
  readonly url: string
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  /** Sequence numbers of the start and end events (ordered across all requests). */
  readonly startSeq: number
  endSeq: number | undefined
}

/** A problem+json answer from the proxy. */
export interface ProxyProblem {
  readonly type: string
  readonly title: string
  readonly status: number
  readonly detail: string
  readonly code: string
  readonly instance: string
  readonly signatureCode?: string
  readonly upstreamStatus?: number
  readonly outcome?: 'not-sent' | 'unknown' | 'answered'
  readonly reason?: string
  readonly advice?: string
  readonly identifiers?: { bizMsgIdr?: string[], endToEndIds?: string[], dictRequestId?: string, dictKey?: string }
}

/** One SPI message read from a stream through the proxy. */
export interface StreamMessage {
  readonly resourceId: string | undefined
  readonly signatureValid: string | undefined
  readonly signatureCode: string | undefined
  readonly xml: string
  readonly msgDefIdr: string | undefined
}

export interface StreamPage {
  readonly path: string
  readonly status: number
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly messages: readonly StreamMessage[]
}

interface TestLike {
  teardown (fn: () => unknown): void
}

export type E2eOptions = Omit<LocalStackOptions, 'dir'>

/** The running stack and the views the tests assert on. */
export class E2e {
  readonly stack: LocalStack
  readonly dir: string
  /** Every request that reached the simulator's HTTP server, in arrival order. */
  readonly seen: SeenRequest[] = []
  readonly bcbTrust: TrustStore
  private readonly agent: Agent
  private seq = 0

  constructor (stack: LocalStack, dir: string) {
    this.stack = stack
    this.dir = dir
    this.agent = new Agent({ connections: 64 })
    this.bcbTrust = new TrustStore([stack.simulatorPki.bcbSigning.certificate])
    // A second 'request' listener beside Fastify's: it sees every request that got past TLS, before any route.
    stack.simulator.app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const entry: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers }, startSeq: ++this.seq, endSeq: undefined }
      this.seen.push(entry)
      res.once('close', () => { entry.endSeq = ++this.seq })
    })
  }

  get sim (): SimulatorControl {
    return this.stack.simulator.app.simulator
  }

  /** The simulator's accepted-message log (ground truth). */
  get log (): AcceptedMessage[] {
    return this.sim.log
  }

  setFaults (f: FaultConfig): void {
    this.sim.setFaults(f)
  }

  /** A request to the proxy, as a bank core system sends it. */
  async proxy (method: Dispatcher.HttpMethod, path: string, o: { headers?: Record<string, string>, body?: string | Buffer, signal?: AbortSignal } = {}): Promise<ProxyResponse> {
    // dispatcher.request sends the path as given: a WHATWG URL would resolve '..' segments before the proxy sees them.
    const res = await this.agent.request({
      origin: this.stack.proxyUrl,
      path,
      method,
      ...(o.headers === undefined ? {} : { headers: o.headers }),
      ...(o.body === undefined ? {} : { body: o.body }),
      ...(o.signal === undefined ? {} : { signal: o.signal })
    })
    const body = Buffer.from(await res.body.arrayBuffer())
    return { status: res.statusCode, headers: res.headers, body, text: body.toString('utf8') }
  }

  /** POST of an XML body to the proxy. */
  async proxyXml (path: string, xml: string, contentType = 'application/xml'): Promise<ProxyResponse> {
    return await this.proxy('POST', path, { headers: { 'content-type': contentType }, body: xml })
  }

  /** A DICT write by the counterparty, straight to the simulator, signed with its own key. */
  async counterpartyWrite (method: 'POST' | 'PUT', path: string, unsignedXml: string): Promise<SimpleResponse> {
    const signed = await this.stack.counterparty.identity.signing.xmlSigner.sign(unsignedXml, 'dict')
    return await this.stack.counterparty.client.request(method, path, { headers: { 'content-type': 'application/xml' }, body: signed })
  }

  /** A DICT read by the counterparty, straight to the simulator. */
  async counterpartyRead (path: string): Promise<SimpleResponse> {
    return await this.stack.counterparty.client.request('GET', path, { headers: readHeaders(COUNTERPARTY_ISPB) })
  }

  /** Requests that reached the simulator since `from` (an index into `seen`) on paths starting with `prefix`. */
  seenSince (from: number, prefix = '/'): SeenRequest[] {
    return this.seen.slice(from).filter((r) => r.url.startsWith(prefix))
  }

  /** The most requests on paths starting with `prefix` that the simulator was serving at the same time. */
  maxConcurrent (prefix: string, from = 0): number {
    const events: Array<[number, number]> = []
    for (const r of this.seenSince(from, prefix)) {
      events.push([r.startSeq, 1])
      events.push([r.endSeq ?? Number.MAX_SAFE_INTEGER, -1])
    }
    events.sort((a, b) => a[0] - b[0])
    let now = 0
    let max = 0
    for (const [, d] of events) {
      now += d
      max = Math.max(max, now)
    }
    return max
  }

  /** Verifies a body the proxy relayed against BCB's signing certificate, independently of the proxy's verdict. */
  bcbVerdict (xml: string, profile: 'dict' | 'spi'): VerifyCode {
    return verifyXml(xml, { profile, trustStore: this.bcbTrust }).code
  }

  /**
   * Reads the proxy participant's stream through the proxy, following PI-Pull-Next, until `until` holds for the
   * messages read so far (or `timeoutMs` passes), then DELETEs the next position, which acknowledges the last page.
   * The default bound is generous: it only decides when a test whose message never comes gives up.
   */
  async readStream (o: { multipart: boolean, until: (messages: readonly StreamMessage[]) => boolean, timeoutMs?: number }): Promise<{ messages: StreamMessage[], pages: StreamPage[], deleteStatus: number }> {
    const deadline = Date.now() + (o.timeoutMs ?? 60_000)
    const accept = o.multipart ? 'multipart/mixed' : 'application/xml'
    const messages: StreamMessage[] = []
    const pages: StreamPage[] = []
    let path = `/api/v1/out/${PROXY_ISPB}/stream/start`
    while (true) {
      const res = await this.proxy('GET', path, { headers: { accept } })
      const page = { path, status: res.status, headers: res.headers, messages: res.status === 200 ? streamMessages(res) : [] }
      pages.push(page)
      messages.push(...page.messages)
      const next = res.headers['pi-pull-next']
      if (typeof next !== 'string') throw new Error(`stream page ${path} answered ${res.status} without PI-Pull-Next: ${res.text.slice(0, 300)}`)
      path = next
      if (o.until(messages) || Date.now() > deadline) break
    }
    const del = await this.proxy('DELETE', path)
    return { messages, pages, deleteStatus: del.status }
  }

  async close (): Promise<void> {
    await this.agent.close()
    await this.stack.close()
  }
}

/** The messages of one 200 stream page: one XML body, or the parts of a multipart/mixed body. */
export function streamMessages (res: ProxyResponse): StreamMessage[] {
  const ct = header(res, 'content-type')
  const boundary = multipartBoundary(ct)
  const one = (headers: Readonly<Record<string, string | string[] | undefined>>, xml: string): StreamMessage => ({
    resourceId: str(headers['pi-resourceid']),
    signatureValid: str(headers['pix-proxy-signature-valid']),
    signatureCode: str(headers['pix-proxy-signature-code']),
    xml,
    msgDefIdr: fieldAt(xml, 'AppHdr', 'MsgDefIdr')
  })
  if (boundary === null) return [one(res.headers, res.text)]
  return parseMultipart(res.body, boundary).map((p) => one(p.headers, p.body.toString('utf8')))
}

function str (v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v
}

export function header (res: { headers: Readonly<Record<string, string | string[] | undefined>> }, name: string): string | undefined {
  return str(res.headers[name])
}

/**
 * The proxy flagged the answer as validly signed by BACEN, and an independent verification of the bytes the caller
 * received agrees (the proxy relays BACEN's signed body unchanged).
 */
export function assertVerified (t: Test, e2e: E2e, res: ProxyResponse, profile: 'dict' | 'spi', what = 'answer'): void {
  t.equal(header(res, 'pix-proxy-signature-valid'), 'true', `${what}: pix-proxy-signature-valid`)
  t.equal(header(res, 'pix-proxy-signature-code'), 'VALID', `${what}: pix-proxy-signature-code`)
  t.equal(e2e.bcbVerdict(res.text, profile), 'VALID', `${what}: the relayed body verifies against BCB's certificate`)
}

/** The problem+json document of a proxy answer; throws when the answer is not one. */
export function problemOf (res: ProxyResponse): ProxyProblem {
  const ct = header(res, 'content-type') ?? ''
  if (!ct.startsWith('application/problem+json')) throw new Error(`expected application/problem+json, got ${ct} (${res.status}): ${res.text.slice(0, 300)}`)
  return JSON.parse(res.text) as ProxyProblem
}

/** Text of the element at a path of local names below the root, or undefined. */
export function fieldAt (xml: string, ...path: string[]): string | undefined {
  let el: XmlElement | undefined = parseXml(xml).root
  for (const p of path) el = el === undefined ? undefined : childElements(el).find((c) => c.local === p)
  return el === undefined ? undefined : textContent(el)
}

/** Texts of every element with this local name anywhere in the document, in document order. */
export function allText (xml: string, local: string): string[] {
  const out: string[] = []
  const walk = (el: XmlElement): void => {
    if (el.local === local) out.push(textContent(el))
    for (const c of childElements(el)) walk(c)
  }
  walk(parseXml(xml).root)
  return out
}

/** Elements with this local name directly below `path` (e.g. the Claim items of a ListClaimsResponse). */
export function elementsAt (xml: string, path: readonly string[], local: string): XmlElement[] {
  let el: XmlElement | undefined = parseXml(xml).root
  for (const p of path) el = el === undefined ? undefined : childElements(el).find((c) => c.local === p)
  return el === undefined ? [] : childElements(el).filter((c) => c.local === local)
}

export function childText (el: XmlElement, local: string): string | undefined {
  const c = childElements(el).find((x) => x.local === local)
  return c === undefined ? undefined : textContent(c)
}

/** An unsigned DICT claim action (Acknowledge/Confirm/Cancel/CompleteClaimRequest). */
export function claimActionXml (root: string, claimId: string, participant: string, extra = ''): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root}>\n  <ClaimId>${claimId}</ClaimId>\n  <Participant>${participant}</Participant>\n${extra}</${root}>\n`
}

/** Metric samples `name{labels} value` from Prometheus text, matched on every label given. */
export function metricSamples (text: string, name: string, labels: Record<string, string> = {}): number[] {
  const out: number[] = []
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue
    const m = /^([^{ ]+)(?:\{([^}]*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = new Map<string, string>()
    for (const pair of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have.set(pair[1] as string, pair[2] as string)
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) out.push(Number(m[3]))
  }
  return out
}

/**
 * Starts the local stack in a fresh temporary directory and registers its teardown (proxy, counterparty client,
 * simulator, then the directory).
 */
export async function startE2e (t: TestLike, opts: E2eOptions = {}): Promise<E2e> {
  const dir = await mkdtemp(join(tmpdir(), 'pix-proxy-e2e-'))
  let stack: LocalStack
  try {
    stack = await startLocalStack({ longPollMs: 300, ...opts, dir })
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
  const e2e = new E2e(stack, dir)
  t.teardown(async () => {
    try {
      await e2e.close()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
  return e2e
}

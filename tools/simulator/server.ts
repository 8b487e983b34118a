/**
 * Listens: the simulator on 127.0.0.1, DICT and ICOM on one port (as BACEN's homologação does on 16522, with two
 * host names) or on two. Both ports serve the same application, so state, limits and the log are shared.
 */
import { createServer } from 'node:https'
import type { Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { buildSimulator } from './app.ts'
import type { SimulatorInstance, SimulatorOptions } from './app.ts'

export interface StartOptions extends SimulatorOptions {
  /** Default 127.0.0.1. */
  host?: string
  /** Default 0 (any free port). */
  dictPort?: number
  /** Default: the DICT port. 0 (any free port) or a port other than dictPort opens a second listener. */
  spiPort?: number
}

export interface RunningSimulator {
  readonly app: SimulatorInstance
  /** e.g. https://127.0.0.1:16522 — the API paths are /api/v2/ (DICT) and /api/v1/ (ICOM). */
  readonly dictUrl: string
  readonly spiUrl: string
  close (): Promise<void>
}

export async function startSimulator (opts: StartOptions): Promise<RunningSimulator> {
  const host = opts.host ?? '127.0.0.1'
  const app = await buildSimulator(opts)
  let second: Server | undefined
  try {
    await app.listen({ host, port: opts.dictPort ?? 0 })
    const dictPort = (app.server.address() as AddressInfo).port
    let spiPort = dictPort
    if (opts.spiPort !== undefined && (opts.spiPort === 0 || opts.spiPort !== opts.dictPort)) {
      const server = createServer({
        cert: opts.tls.certPem,
        key: opts.tls.keyPem,
        ca: opts.tls.clientCaPem,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
        keepAliveTimeout: app.initialConfig.keepAliveTimeout
      }, (req, res) => { app.routing(req, res) })
      second = server
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(opts.spiPort, host, () => {
          server.off('error', reject)
          resolve()
        })
      })
      spiPort = (server.address() as AddressInfo).port
    }
    const url = (port: number): string => `https://${host.includes(':') ? `[${host}]` : host}:${port}`
    return {
      app,
      dictUrl: url(dictPort),
      spiUrl: url(spiPort),
      async close () {
        if (second !== undefined) {
          const s = second
          const closed = new Promise<void>((resolve) => { s.close(() => { resolve() }) })
          s.closeIdleConnections()
          await app.close()
          s.closeAllConnections()
          await closed
        } else {
          await app.close()
        }
      }
    }
  } catch (err) {
    second?.close()
    await app.close()
    throw err
  }
}

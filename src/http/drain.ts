/**
 * Connection draining for the callers' HTTP/1.1 listener at shutdown.
 *
 * Node's server.closeIdleConnections(), which server.close() itself calls, destroys every connection whose current
 * response has been *ended*, even when that response's bytes are still queued in the socket: a large answer to a
 * slow reader is cut short, and a response pipelined behind it is never sent. This proxy once also ran it every
 * 100 ms during a drain (to close connections whose last request finished after close() began), which turned the
 * race into a regular event.
 *
 * drainConnections() replaces that method on the server. It counts each connection's open responses (a response is
 * open until its 'close', which comes after its last byte is handed to the kernel) and, once draining:
 * - a connection ends (flushing what it has queued, then closing) as soon as its last open response closes;
 * - a connection with no open response is given one sweep interval for a request whose headers are still arriving
 *   (so it is answered, 503 while closing, rather than reset), then ended.
 * The app also marks the last response on each connection `Connection: close` while draining (openResponses()), so
 * a client learns not to send more on it; one that sends on a keep-alive connection just as it ends sees it close,
 * as with any server that closes idle connections (RFC 9112 §9.3.1: retry on a new connection).
 */
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Server as TlsServer } from 'node:tls'

interface Connection {
  responses: number
  /** No response has been open on it since the previous sweep. */
  quiet: boolean
}

export interface ConnectionDrain {
  /** Starts draining (idempotent; server.close() and server.closeIdleConnections() call it). */
  start (): void
  /** Responses not yet closed on this connection (requests pipelined behind the current one included). */
  openResponses (socket: Socket): number
  /** For tests and logs: connections open, and responses not yet closed across them. */
  stats (): { connections: number, openResponses: number }
}

/** Runs `fn` every `ms` until the returned function is called. The default is an unref'd setInterval. */
export type Every = (fn: () => void, ms: number) => () => void
const realEvery: Every = (fn, ms) => {
  const timer = setInterval(fn, ms)
  timer.unref()
  return () => { clearInterval(timer) }
}

/** `every` drives the sweeps (tests pass a ticker they advance by hand; production keeps the default). */
export function drainConnections (server: HttpServer, sweepIntervalMs = 100, every: Every = realEvery): ConnectionDrain {
  const connections = new Map<Socket, Connection>()
  let sweep: (() => void) | null = null

  const end = (socket: Socket): void => {
    connections.delete(socket)
    socket.destroySoon()
  }
  const track = (socket: Socket): Connection => {
    let c = connections.get(socket)
    if (c === undefined) {
      c = { responses: 0, quiet: false }
      connections.set(socket, c)
      socket.once('close', () => { connections.delete(socket) })
    }
    return c
  }

  // A TLS server's 'connection' is the TCP socket; requests arrive on the TLS socket it wraps.
  server.on(server instanceof TlsServer ? 'secureConnection' : 'connection', (socket: Socket) => { track(socket) })
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket
    const c = track(socket)
    c.responses++
    c.quiet = false
    res.once('close', () => {
      c.responses--
      if (sweep !== null && c.responses === 0 && connections.get(socket) === c) end(socket)
    })
  })
  server.once('close', () => { sweep?.() })

  const sweepOnce = (): void => {
    const quiet: Array<[Socket, Connection]> = []
    for (const [socket, c] of connections) {
      if (c.responses > 0) continue
      if (c.quiet) quiet.push([socket, c])
      else c.quiet = true
    }
    if (quiet.length === 0) return
    // Timers run before the loop reads sockets: after a stall, a request may be waiting unread on a connection that
    // looks quiet. setImmediate runs after this turn's reads, which parse it (its 'request' clears `quiet`).
    setImmediate(() => {
      for (const [socket, c] of quiet) if (c.quiet && c.responses === 0 && connections.get(socket) === c) end(socket)
    })
  }
  const start = (): void => {
    if (sweep !== null) return
    sweep = every(sweepOnce, sweepIntervalMs)
    sweepOnce()
  }
  server.closeIdleConnections = start
  return {
    start,
    openResponses: (socket) => connections.get(socket)?.responses ?? 0,
    stats: () => {
      let openResponses = 0
      for (const c of connections.values()) openResponses += c.responses
      return { connections: connections.size, openResponses }
    }
  }
}

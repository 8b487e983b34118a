/**
 * Holding requests at an in-process HTTP(S) server (the e2e simulator, `e2e.stack.simulator.app.server`) until the
 * test lets them go: "BACEN is slow" becomes a state the test ends when it has seen what it wanted, instead of a
 * latency that a fast machine outruns or a loaded one falls behind.
 */
import type { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'

export interface RequestGate {
  /** Requests the gate has held in all (released or not). */
  held (): number
  /** Hands every held request to the server's handlers and lets later ones through. Idempotent. */
  release (): void
  /** release(), then puts the server's own 'request' listeners back. Idempotent. */
  restore (): void
}

type Listener = (req: IncomingMessage, res: ServerResponse) => void

/** Holds every request whose path starts with one of `prefixes`; the others go through at once. */
export function holdRequests (server: EventEmitter, prefixes: readonly string[]): RequestGate {
  const listeners = server.listeners('request') as Listener[]
  const dispatch = (req: IncomingMessage, res: ServerResponse): void => {
    for (const l of listeners) l.call(server, req, res)
  }
  const queue: Array<[IncomingMessage, ServerResponse]> = []
  let open = false
  let count = 0
  let restored = false
  const gate: Listener = (req, res) => {
    if (!open && prefixes.some((p) => (req.url ?? '').startsWith(p))) {
      count++
      queue.push([req, res])
    } else {
      dispatch(req, res)
    }
  }
  server.removeAllListeners('request')
  server.on('request', gate)
  return {
    held: () => count,
    release () {
      open = true
      for (const [req, res] of queue.splice(0)) dispatch(req, res)
    },
    restore () {
      this.release()
      if (restored) return
      restored = true
      server.removeListener('request', gate)
      for (const l of listeners) server.on('request', l)
    }
  }
}

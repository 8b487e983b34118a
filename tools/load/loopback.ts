/**
 * The load tool's safety catch: by default it only talks to this machine. A load test pointed by mistake at a
 * shared homologation environment (or at BACEN) burns rate limits other people depend on, so every address a
 * target name resolves to must be a loopback address unless the caller opts out explicitly (--allow-remote).
 * The check runs once before the run (a clear error) and again on every connection (a name that later resolves
 * elsewhere is refused at connect time).
 */
import { lookup as dnsLookup } from 'node:dns'
import { isIP } from 'node:net'
import type { LookupFunction } from 'node:net'
import { promisify } from 'node:util'
import { Errors, PixProxyError } from '../../core/errors.ts'

function usageError (message: string): PixProxyError {
  return new PixProxyError(Errors.USAGE, [message])
}

/** 127.0.0.0/8, ::1, and IPv4-mapped loopback (::ffff:127.x.y.z). */
export function isLoopbackAddress (address: string): boolean {
  const a = address.toLowerCase()
  if (isIP(a) === 4) return a.startsWith('127.')
  if (isIP(a) !== 6) return false
  if (a === '::1' || a === '0:0:0:0:0:0:0:1') return true
  const mapped = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)
  return mapped !== null && (mapped[1] as string).startsWith('127.')
}

export type ResolveAll = (hostname: string) => Promise<Array<{ address: string, family: number }>>

const lookupAll = promisify(dnsLookup)
const systemResolve: ResolveAll = async (hostname) => await lookupAll(hostname, { all: true })

/**
 * Resolves the URL's host and throws a usage error (PIXPROXY_ERR_USAGE) unless every address is loopback.
 * `resolve` is injectable for tests; IP literals are checked without resolving.
 */
export async function assertLoopbackUrl (url: string, opts: { resolve?: ResolveAll, what?: string } = {}): Promise<void> {
  const what = opts.what ?? 'target'
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw usageError(`the ${what} URL ${JSON.stringify(url)} is not a valid URL`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw usageError(`the ${what} URL must be http: or https:, got ${u.protocol}`)
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1')
  let addresses: string[]
  if (isIP(host) !== 0) {
    addresses = [host]
  } else {
    try {
      addresses = (await (opts.resolve ?? systemResolve)(host)).map((a) => a.address)
    } catch (err) {
      throw usageError(`cannot resolve the ${what} host ${host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  const remote = addresses.filter((a) => !isLoopbackAddress(a))
  if (addresses.length === 0 || remote.length > 0) {
    throw usageError(`the ${what} ${host} resolves to ${addresses.length === 0 ? 'nothing' : remote.join(', ')}, not a loopback address: load tests run only against this machine unless --allow-remote is given`)
  }
}

/**
 * A `lookup` for sockets that resolves like the system but fails with ENOTLOOPBACK when an address is not
 * loopback, so a connection can only be opened to this machine.
 */
export function loopbackOnlyLookup (resolve: ResolveAll = systemResolve): LookupFunction {
  return (hostname, options, callback) => {
    const cb = callback as (err: NodeJS.ErrnoException | null, address: string | Array<{ address: string, family: number }>, family?: number) => void
    resolve(hostname).then((all) => {
      const wanted = options.family === 4 || options.family === 6 ? all.filter((a) => a.family === options.family) : all
      const bad = wanted.find((a) => !isLoopbackAddress(a.address))
      if (wanted.length === 0 || bad !== undefined) {
        const err: NodeJS.ErrnoException = new Error(`${hostname} resolves to ${bad?.address ?? 'nothing'}, not a loopback address`)
        err.code = 'ENOTLOOPBACK'
        cb(err, '')
        return
      }
      if ((options as { all?: boolean }).all === true) cb(null, wanted)
      else cb(null, (wanted[0] as { address: string }).address, (wanted[0] as { family: number }).family)
    }, (err: NodeJS.ErrnoException) => { cb(err, '') })
  }
}

/**
 * The gateway's route allowlist: `METHOD /path` patterns, a trailing `*` matching any rest of the path. Anything else
 * is refused before a byte goes to the backend (405 when the path is allowed for another method, 404 otherwise).
 */

export interface RoutePattern {
  readonly method: string
  /** The path before the `*`, or the whole path when `exact`. */
  readonly prefix: string
  readonly exact: boolean
  /** As configured, for metrics and audit rows (a bounded set of labels). */
  readonly text: string
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/** Parses `"GET /open-banking/*,POST /open-banking/payments/v4/*"`. Throws Error with the offending entry. */
export function parseRoutes (text: string): RoutePattern[] {
  const out: RoutePattern[] = []
  for (const entry of text.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const m = /^([A-Z]+)\s+(\/[^\s?#*]*)(\*?)$/.exec(entry)
    if (m === null) throw new Error(`${JSON.stringify(entry)} is not "METHOD /path" or "METHOD /prefix/*"`)
    const [, method, path, star] = m as unknown as [string, string, string, string]
    if (!METHODS.has(method)) throw new Error(`${JSON.stringify(entry)}: unknown method ${method}`)
    if (path.split('/').some((seg) => seg === '.' || seg === '..')) throw new Error(`${JSON.stringify(entry)}: dot segments are not allowed`)
    out.push(Object.freeze({ method, prefix: path, exact: star === '', text: entry }))
  }
  if (out.length === 0) throw new Error('no route given: nothing would be forwarded')
  return out
}

export type RouteMatch =
  | { readonly kind: 'allowed', readonly route: RoutePattern }
  /** The path is allowed, but not for this method. */
  | { readonly kind: 'method' }
  | { readonly kind: 'none' }

/**
 * Matches a request target. Paths are matched as sent, and a path with dot segments, encoded slashes or dots, or
 * backslashes never matches: the backend could normalise it into a route the allowlist did not grant.
 */
export function matchRoute (routes: readonly RoutePattern[], method: string, target: string): RouteMatch {
  const path = target.split('?')[0] as string
  if (!path.startsWith('/') || /(^|\/)\.\.?(\/|$)|%2e|%2f|%5c|\\/i.test(path)) return { kind: 'none' }
  let pathMatched = false
  for (const r of routes) {
    const hit = r.exact ? path === r.prefix : path.startsWith(r.prefix)
    if (!hit) continue
    if (r.method === method) return { kind: 'allowed', route: r }
    pathMatched = true
  }
  return pathMatched ? { kind: 'method' } : { kind: 'none' }
}

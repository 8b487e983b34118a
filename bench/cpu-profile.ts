/**
 * Where a request's CPU goes, from a V8 CPU profile (`--cpu-prof`) of the proxy's event loop: the self time of the
 * samples inside a window (the measured load of one operation, bench/e2e.ts --pinned --cpu-prof writes the windows
 * into its JSON points), by component and by function, per request. Counts of samples do not depend on how busy the
 * machine is the way latencies do: a sample is taken only while the thread runs on a CPU or waits in the kernel.
 *
 *   node bench/cpu-profile.ts PROFILE.cpuprofile --from US --to US --requests N [--top 25] [--json]
 *   node bench/cpu-profile.ts PROFILE.cpuprofile --points E2E.json --contender proxy [--json]   (every point's window)
 *
 * Components: a package of node_modules (fastify, undici, pino, prom-client, …), a folder of src/ or core/ (src/audit,
 * core/xmldsig, …), a Node.js module (node:tls, node:net, node:streams, …), V8's own entries ((garbage collector),
 * (program): the VM and native code not attributed to a JavaScript function), and native functions called from
 * JavaScript with no source file (`native:<name>`).
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

interface CallFrame { readonly functionName: string, readonly url: string, readonly lineNumber: number }
interface ProfileNode { readonly id: number, readonly callFrame: CallFrame }
interface Profile { readonly nodes: readonly ProfileNode[], readonly startTime: number, readonly samples: readonly number[], readonly timeDeltas: readonly number[] }

/** The component a function belongs to, from its source URL. */
export function componentOf (f: CallFrame): string {
  const { url, functionName } = f
  if (url === '') return functionName.startsWith('(') ? functionName : `native:${functionName || '(anonymous)'}`
  const nm = url.lastIndexOf('/node_modules/')
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1] ?? ''}` : rest[0] ?? url
  }
  if (url.startsWith('node:')) {
    const m = url.slice(5).replace(/^internal\//, '').split('/')
    const first = m[0] ?? ''
    return `node:${first.replace(/\.js$/, '')}`
  }
  const tree = /\/(src|core|tools)\/([^/]+)(\/|\.ts|\.js)/.exec(url)
  if (tree !== null) return tree[3] === '/' ? `${tree[1]}/${tree[2]}` : `${tree[1]}/${tree[2]}${tree[3]}`
  return url
}

/**
 * The part of the proxy a component belongs to, for the decomposition table in bench/RESULTS.md. `hsm-wait` is the
 * PKCS#11 calls made on the event loop: samples there are mostly the thread off its CPU (waiting for SoftHSM's lock
 * or for the pool thread that signs on the same core), not work of its own.
 */
export function groupOf (component: string): string {
  if (/^(pkcs11js|graphene-pk11|src\/hsm)$/.test(component)) return 'hsm-wait'
  if (/^(fastify|@fastify\/|find-my-way|avvio|light-my-request|fast-json-stringify|node:_http_server|node:_http_incoming|node:_http_outgoing|node:_http_common|node:http)/.test(component)) return 'http server (Fastify, node:http)'
  if (/^(undici|wasm:|src\/upstream)/.test(component)) return 'upstream client (undici)'
  if (/^(native:writev|native:writeLatin1String|native:writeUtf8String|native:writeBuffer|node:net|node:stream_base_commons|node:streams|node:tls|node:_tls_wrap|native:readStop|native:readStart)/.test(component)) return 'sockets and TLS (writes, encryption)'
  if (/^(core\/xmldsig|node:crypto|core\/pki)/.test(component)) return 'XMLDSig (parse, c14n, digests, RSA verify)'
  if (/^(prom-client)/.test(component)) return 'metrics (prom-client)'
  if (/^(pino|@pinojs\/|sonic-boom|pino-std-serializers|fast-redact|safe-stable-stringify|quick-format-unescaped)/.test(component)) return 'logging (pino)'
  if (/^(src\/audit|src\/plugins\/audit|native:postMessage|node:worker)/.test(component)) return 'audit (event-loop side: rows posted to the audit thread)'
  if (/^(src\/|core\/)/.test(component)) return 'pipeline, routes, checks (src/, core/pix)'
  if (component === '(garbage collector)') return 'GC'
  return 'runtime (events, timers, microtasks, buffers, VM)'
}

export interface Share { readonly ms: number, readonly share: number, readonly msPerRequest: number }

export interface ProfileWindow {
  readonly windowMs: number
  readonly requests: number
  readonly samples: number
  readonly samplesPerRequest: number
  /** Self time of every sample but (idle), per request: the thread's work. */
  readonly busyMsPerRequest: number
  readonly byComponent: Record<string, Share>
  readonly byGroup: Record<string, Share>
  readonly topFunctions: Array<{ readonly fn: string, readonly component: string } & Share>
}

function groups (comp: ReadonlyMap<string, number>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [c, us] of comp) out.set(groupOf(c), (out.get(groupOf(c)) ?? 0) + us)
  return out
}

/** Self time (each sample weighted by the interval to the next) inside [fromUs, toUs], grouped. */
export function analyse (p: Profile, fromUs: number, toUs: number, requests: number, top = 25): ProfileWindow {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const comp = new Map<string, number>()
  const fns = new Map<string, { component: string, us: number }>()
  let t = p.startTime
  let samples = 0
  let busyUs = 0
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0
    if (t < fromUs || t > toUs) continue
    const node = byId.get(p.samples[i] as number)
    if (node === undefined) continue
    const w = Math.min(p.timeDeltas[i + 1] ?? 0, 10_000)
    samples++
    const c = componentOf(node.callFrame)
    if (c === '(idle)') continue
    busyUs += w
    comp.set(c, (comp.get(c) ?? 0) + w)
    const key = `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.replace(/^.*\/(node_modules|src|core)\//, '$1/')}:${node.callFrame.lineNumber + 1}`
    const f = fns.get(key) ?? { component: c, us: 0 }
    f.us += w
    fns.set(key, f)
  }
  const r3 = (x: number): number => Math.round(x * 1000) / 1000
  const share = (us: number): Share => ({ ms: r3(us / 1000), share: r3(us / Math.max(1, busyUs)), msPerRequest: r3(us / 1000 / Math.max(1, requests)) })
  return {
    windowMs: r3((toUs - fromUs) / 1000),
    requests,
    samples,
    samplesPerRequest: r3(samples / Math.max(1, requests)),
    busyMsPerRequest: r3(busyUs / 1000 / Math.max(1, requests)),
    byComponent: Object.fromEntries([...comp].sort((a, b) => b[1] - a[1]).map(([c, us]) => [c, share(us)])),
    byGroup: Object.fromEntries([...groups(comp)].sort((a, b) => b[1] - a[1]).map(([g, us]) => [g, share(us)])),
    topFunctions: [...fns].sort((a, b) => b[1].us - a[1].us).slice(0, top).map(([fn, f]) => ({ fn, component: f.component, ...share(f.us) }))
  }
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      requests: { type: 'string' },
      points: { type: 'string' },
      contender: { type: 'string', default: 'proxy' },
      top: { type: 'string', default: '25' },
      json: { type: 'boolean', default: false }
    }
  })
  const file = positionals[0]
  if (file === undefined) throw new Error('usage: node bench/cpu-profile.ts PROFILE.cpuprofile (--from US --to US --requests N | --points E2E.json)')
  const profile = JSON.parse(await readFile(file, 'utf8')) as Profile
  const windows: Array<{ label: string, from: number, to: number, requests: number }> = []
  if (values.points !== undefined) {
    const e2e = JSON.parse((await readFile(values.points, 'utf8')).trim().split('\n').at(-1) ?? '{}') as { points: Array<{ contender: string, op: string, rate: number, sent: number, profileWindowUs?: { from: number, to: number } }> }
    for (const pt of e2e.points) {
      if (pt.contender === values.contender && pt.profileWindowUs !== undefined) windows.push({ label: `${pt.op}@${pt.rate}`, ...pt.profileWindowUs, requests: pt.sent })
    }
  } else {
    windows.push({ label: 'window', from: Number(values.from), to: Number(values.to), requests: Number(values.requests) })
  }
  const out = Object.fromEntries(windows.map((w) => [w.label, analyse(profile, w.from, w.to, w.requests, Number(values.top))]))
  if (values.json) {
    process.stdout.write(JSON.stringify(out) + '\n')
  } else {
    for (const [label, a] of Object.entries(out)) {
      process.stdout.write(`\n== ${label}: ${a.requests} requests in ${a.windowMs} ms, ${a.samplesPerRequest} samples/request, busy ${a.busyMsPerRequest} ms/request\n`)
      for (const [g, s] of Object.entries(a.byGroup)) process.stdout.write(`  ${(s.share * 100).toFixed(1).padStart(5)} %  ${s.msPerRequest.toFixed(3)} ms/req  [${g}]\n`)
      for (const [c, s] of Object.entries(a.byComponent).slice(0, 30)) process.stdout.write(`  ${(s.share * 100).toFixed(1).padStart(5)} %  ${s.msPerRequest.toFixed(3)} ms/req  ${c}\n`)
      process.stdout.write('  -- functions\n')
      for (const f of a.topFunctions) process.stdout.write(`  ${(f.share * 100).toFixed(1).padStart(5)} %  ${f.msPerRequest.toFixed(3)} ms/req  ${f.fn}\n`)
    }
  }
}

/**
 * The HTML chart: series that coincide must stay visible. Two operations answered alike give identical series in
 * every chart; each must still be told apart by its dash pattern and its markers (on different seconds), and the
 * legend must show both.
 */
import t from 'tap'
import { VirtualClock } from '../../tools/load/clock.ts'
import { renderHtmlReport } from '../../tools/load/chart.ts'
import { runLoad } from '../../tools/load/run.ts'
import type { LoadReport } from '../../tools/load/run.ts'
import type { LoadRequest, LoadResponse, LoadTransport } from '../../tools/load/transport.ts'

const VALID = Object.freeze({ valid: true, code: 'VALID' })

/** Every write answered as it should be after exactly 5 ms of the virtual clock: both operations look the same. */
async function twinReport (seconds: number): Promise<LoadReport> {
  const clock = new VirtualClock()
  const target: LoadTransport = {
    kind: 'simulated',
    ispb: '99999004',
    async request (req: LoadRequest): Promise<LoadResponse> {
      await clock.sleep(5, req.signal)
      const spi = req.path.includes('/msgs')
      return { status: 201, headers: spi ? { 'pi-resourceid': 'R1' } : {}, body: Buffer.alloc(0), signature: VALID, parts: [] }
    },
    async close () {}
  }
  return await clock.run(runLoad({ target, clock, model: { kind: 'open', ratePerSec: 20 }, durationMs: seconds * 1000, mix: { 'create-entry': 1, 'spi-send': 1 } }))
}

/** The `<svg>` of the chart titled `title`. */
function svgOf (html: string, title: string): string {
  const at = html.slice(html.indexOf(`<figcaption>${title}</figcaption>`))
  return at.slice(at.indexOf('<svg'), at.indexOf('</svg>'))
}

function attr (el: string, name: string): string | undefined {
  return new RegExp(`\\s${name}="([^"]*)"`).exec(el)?.[1]
}

t.test('coinciding series: distinct dash patterns and markers on different seconds, both in the legend', async (t) => {
  const r = await twinReport(60)
  const a = r.ops['create-entry']
  const b = r.ops['spi-send']
  t.same(a?.series.map((s) => [s.ok, s.p50]), b?.series.map((s) => [s.ok, s.p50]), 'the two operations have identical series')
  const html = renderHtmlReport(r)
  for (const title of ['p99 latency per operation', 'p50 latency per operation', 'successes per second per operation']) {
    const svg = svgOf(html, title)
    const paths = [...svg.matchAll(/<path [^>]*>/g)].map((m) => m[0])
    t.equal(paths.length, 2, `${title}: one line per operation`)
    const [pa, pb] = paths as [string, string]
    t.equal(attr(pa, 'd'), attr(pb, 'd'), `${title}: the lines coincide`)
    t.not(attr(pa, 'stroke-dasharray') ?? 'solid', attr(pb, 'stroke-dasharray') ?? 'solid', `${title}: with different dash patterns`)
    t.ok(attr(pb, 'stroke-dasharray') !== undefined, `${title}: the one drawn on top is dashed, so the other shows through its gaps`)
    const groups = [...svg.matchAll(/<g class="markers" data-op="([^"]+)" data-marker="([^"]+)">(.*?)<\/g>/g)]
    t.same(groups.map((g) => g[1]), ['create-entry', 'spi-send'])
    t.not(groups[0]?.[2], groups[1]?.[2], `${title}: different marker shapes`)
    const xs = (g: RegExpMatchArray | undefined): string[] => [...(g?.[3] ?? '').matchAll(/(?:cx|x|points)="([0-9.]+)/g)].map((m) => m[1] as string)
    t.ok(xs(groups[0]).length >= 5 && xs(groups[0]).length <= 12, `${title}: a few markers per line (${xs(groups[0]).length})`)
    t.same(xs(groups[0]).filter((x) => xs(groups[1]).includes(x)), [], `${title}: on different seconds, so neither hides the other's`)
    const legend = [...svg.matchAll(/<g class="legend" data-op="([^"]+)" data-marker="([^"]+)"[^>]*>(.*?)<\/g>/g)]
    t.same(legend.map((g) => [g[1], g[2]]), groups.map((g) => [g[1], g[2]]), `${title}: the legend names each with its marker`)
    t.equal(attr(legend[1]?.[3] ?? '', 'stroke-dasharray'), attr(pb, 'stroke-dasharray'), `${title}: and its dash`)
  }
  // The failures chart: errors and drops both flat at zero.
  const failures = svgOf(html, 'failures per second (all operations)')
  const fp = [...failures.matchAll(/<path [^>]*>/g)].map((m) => m[0])
  t.equal(attr(fp[0] as string, 'd'), attr(fp[1] as string, 'd'), 'errors and drops coincide at zero')
  t.not(attr(fp[0] as string, 'stroke-dasharray') ?? 'solid', attr(fp[1] as string, 'stroke-dasharray') ?? 'solid', 'and are still told apart')
})

t.test('a short run: every second marked, shapes still distinct; still self-contained', async (t) => {
  const html = renderHtmlReport(await twinReport(2))
  const svg = svgOf(html, 'p99 latency per operation')
  const groups = [...svg.matchAll(/<g class="markers" data-op="([^"]+)" data-marker="([^"]+)">(.*?)<\/g>/g)]
  t.same(groups.map((g) => g[2]), ['circle', 'square'])
  t.match(groups[0]?.[3] ?? '', /<circle /)
  t.match(groups[1]?.[3] ?? '', /<rect /)
  t.notMatch(html, /<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/)
})

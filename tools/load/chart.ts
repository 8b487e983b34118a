/**
 * The report as one self-contained HTML file: inline SVG line charts (latency percentiles per operation over time,
 * throughput per operation, failures), a summary table and the raw JSON. No scripts, fonts or styles from
 * anywhere else, so it opens offline and can be attached to a ticket as is.
 */
import type { SecondStats } from './engine.ts'
import type { LoadReport, OpReport } from './run.ts'

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf']
/**
 * Series often coincide (operations with the same latency, two flat lines at zero): colour alone would leave only
 * the last one drawn visible. Each series also gets its own dash pattern (drawn solid first, so the dashed ones on
 * top let it show through their gaps) and its own hollow marker shape, the markers of each series at positions
 * staggered from the others'. The legend shows the same colour, dash and marker.
 */
const DASHES = ['', '7 4', '2 3', '10 3 2 3', '4 4', '1 5', '12 4 2 4 2 4', '6 2 1 2']
const MARKERS = ['circle', 'square', 'triangle', 'diamond', 'triangle-down', 'plus', 'cross', 'star'] as const
type Marker = typeof MARKERS[number]
/** At most this many markers per series (stride between them grows with the run). */
const MARKERS_PER_SERIES = 12
const W = 900
const H = 260
const M = { left: 60, right: 20, top: 20, bottom: 36 }

function esc (s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\'': '&#39;' })[c] as string)
}

/** 1, 2 or 5 times a power of ten, at least `v`: round axis maxima. */
function niceCeil (v: number): number {
  if (!(v > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}

function label (v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1).replace(/\.0$/, '') : String(Math.round(v * 100) / 100)
}

interface Line { readonly name: string, readonly color: string, readonly points: ReadonlyArray<number | null> }

/** A hollow marker centred on (x, y). */
function marker (shape: Marker, x: number, y: number, color: string): string {
  const r = 3.5
  const f = (v: number): string => v.toFixed(1)
  const poly = (pts: Array<[number, number]>): string => `<polygon points="${pts.map(([px, py]) => `${f(x + px)},${f(y + py)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="1.3"/>`
  switch (shape) {
    case 'circle': return `<circle cx="${f(x)}" cy="${f(y)}" r="${r}" fill="none" stroke="${color}" stroke-width="1.3"/>`
    case 'square': return `<rect x="${f(x - r)}" y="${f(y - r)}" width="${2 * r}" height="${2 * r}" fill="none" stroke="${color}" stroke-width="1.3"/>`
    case 'triangle': return poly([[0, -r - 0.5], [r, r - 0.5], [-r, r - 0.5]])
    case 'triangle-down': return poly([[0, r + 0.5], [r, -r + 0.5], [-r, -r + 0.5]])
    case 'diamond': return poly([[0, -r - 1], [r + 1, 0], [0, r + 1], [-r - 1, 0]])
    case 'plus': return `<polyline points="${f(x - r)},${f(y)} ${f(x + r)},${f(y)} ${f(x)},${f(y)} ${f(x)},${f(y - r)} ${f(x)},${f(y + r)}" fill="none" stroke="${color}" stroke-width="1.3"/>`
    case 'cross': return `<polyline points="${f(x - r)},${f(y - r)} ${f(x + r)},${f(y + r)} ${f(x)},${f(y)} ${f(x + r)},${f(y - r)} ${f(x - r)},${f(y + r)}" fill="none" stroke="${color}" stroke-width="1.3"/>`
    case 'star': return poly(Array.from({ length: 10 }, (_, k): [number, number] => {
      const a = -Math.PI / 2 + (k * Math.PI) / 5
      const rr = k % 2 === 0 ? r + 1 : (r + 1) / 2.2
      return [rr * Math.cos(a), rr * Math.sin(a)]
    }))
  }
}

/** One chart: x = seconds since the start, one path per line (gaps where a second had no sample). */
function lineChart (title: string, unit: string, seconds: number, lines: readonly Line[], kind: string): string {
  const max = niceCeil(Math.max(0, ...lines.flatMap((l) => l.points.filter((p): p is number => p !== null))))
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const x = (t: number): number => M.left + (seconds <= 1 ? 0 : (t / (seconds - 1)) * pw)
  const y = (v: number): number => M.top + ph - (v / max) * ph
  const grid: string[] = []
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5
    grid.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`)
    grid.push(`<text x="${M.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${label(v)}</text>`)
  }
  const step = Math.max(1, niceCeil(seconds / 10))
  for (let t = 0; t < seconds; t += step) {
    grid.push(`<text x="${x(t).toFixed(1)}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="11">${t}s</text>`)
  }
  const stride = Math.max(1, Math.ceil(seconds / MARKERS_PER_SERIES))
  const paths = lines.map((l, i) => {
    let d = ''
    let pen = false
    l.points.forEach((p, t) => {
      if (p === null) {
        pen = false
        return
      }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(p).toFixed(1)}`
      pen = true
    })
    // A series with one sample still gets a visible mark.
    if (!d.includes('L') && d !== '') d += 'h0.01'
    const dash = DASHES[i % DASHES.length] as string
    const shape = MARKERS[i % MARKERS.length] as Marker
    // Staggered: coinciding series put their markers on different seconds (when there are seconds enough).
    const phase = Math.floor((i * stride) / Math.max(1, lines.length)) % stride
    const marks = l.points.flatMap((p, t) => p === null || t % stride !== phase ? [] : [marker(shape, x(t), y(p), l.color)])
    return `<path class="${esc(kind)}" data-op="${esc(l.name)}" d="${d}" fill="none" stroke="${l.color}" stroke-width="1.6" stroke-linejoin="round" stroke-linecap="butt"${dash === '' ? '' : ` stroke-dasharray="${dash}"`}/>
<g class="markers" data-op="${esc(l.name)}" data-marker="${shape}">${marks.join('')}</g>`
  })
  // Below the plot, so it never hides a line: colour, dash and marker of each series.
  const legend = lines.map((l, i) => {
    const dash = DASHES[i % DASHES.length] as string
    const shape = MARKERS[i % MARKERS.length] as Marker
    return `<g class="legend" data-op="${esc(l.name)}" data-marker="${shape}" transform="translate(${M.left + (i % 4) * 190},${H + 2 + Math.floor(i / 4) * 16})"><line x1="0" x2="28" y1="5" y2="5" stroke="${l.color}" stroke-width="1.6"${dash === '' ? '' : ` stroke-dasharray="${dash}"`}/>${marker(shape, 14, 5, l.color)}<text x="34" y="9" font-size="11">${esc(l.name)}</text></g>`
  })
  const height = H + 6 + Math.ceil(lines.length / 4) * 16
  return `<figure><figcaption>${esc(title)}</figcaption>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" role="img" aria-label="${esc(title)}" font-family="sans-serif">
<text x="14" y="${M.top + ph / 2}" font-size="11" transform="rotate(-90 14 ${M.top + ph / 2})" text-anchor="middle">${esc(unit)}</text>
${grid.join('\n')}
<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}" stroke="#888"/>
<line x1="${M.left}" x2="${W - M.right}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="#888"/>
${paths.join('\n')}
${legend.join('\n')}
</svg></figure>`
}

function column (series: readonly SecondStats[], seconds: number, pick: (s: SecondStats) => number | null): Array<number | null> {
  const out: Array<number | null> = Array.from({ length: seconds }, () => null)
  for (const s of series) if (s.t < seconds) out[s.t] = pick(s)
  return out
}

function fmt (v: number | null): string {
  return v === null ? '–' : String(Math.round(v * 100) / 100)
}

function tableRow (name: string, o: OpReport): string {
  const cells = [name, o.count, o.ok, o.errors, o.dropped, o.signatureFailures, o.throughputPerSec, fmt(o.latencyMs.p50), fmt(o.latencyMs.p90), fmt(o.latencyMs.p99), fmt(o.latencyMs.max)]
  return `<tr>${cells.map((c, i) => i === 0 ? `<th>${esc(String(c))}</th>` : `<td>${esc(String(c))}</td>`).join('')}</tr>`
}

/** The HTML report: one `<path data-op=…>` per operation in each latency and throughput chart. */
export function renderHtmlReport (r: LoadReport): string {
  const ops = Object.entries(r.ops) as Array<[string, OpReport]>
  const seconds = Math.max(1, r.totals.series.length)
  const color = (i: number): string => COLORS[i % COLORS.length] as string
  const perOp = (pick: (s: SecondStats) => number | null): Line[] => ops.map(([name, o], i) => ({ name, color: color(i), points: column(o.series, seconds, pick) }))
  const model = r.model.kind === 'open' ? `open model at ${r.model.ratePerSec} requests/s` : `closed model, ${r.model.concurrency} workers`
  const charts = [
    lineChart('p99 latency per operation', 'ms', seconds, perOp((s) => s.p99), 'p99'),
    lineChart('p90 latency per operation', 'ms', seconds, perOp((s) => s.p90), 'p90'),
    lineChart('p50 latency per operation', 'ms', seconds, perOp((s) => s.p50), 'p50'),
    lineChart('max latency per operation', 'ms', seconds, perOp((s) => s.max), 'max'),
    lineChart('successes per second per operation', 'ok/s', seconds, perOp((s) => s.ok), 'throughput'),
    lineChart('failures per second (all operations)', 'per s', seconds, [
      { name: 'errors', color: '#d62728', points: column(r.totals.series, seconds, (s) => s.errors) },
      { name: 'dropped (overloaded)', color: '#7f7f7f', points: column(r.totals.series, seconds, (s) => s.dropped) }
    ], 'failures')
  ]
  const errorRows = ops.flatMap(([op, o]) => Object.entries(o.errorsByCode).map(([code, n]) => `<tr><th>${esc(op)}</th><td>${esc(code)}</td><td>${n}</td><td>${esc(o.errorDetails[code] ?? '')}</td></tr>`))
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pix-proxy load: ${esc(r.target)} ${esc(r.startedAt)}</title>
<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{text-align:left}figure{margin:16px 0}figcaption{font-weight:bold;margin-bottom:4px}pre{background:#f6f6f6;padding:8px;font-size:11px;overflow:auto;max-height:300px}</style>
</head><body>
<h1>pix-proxy load</h1>
<p>Target <b>${esc(r.target)}</b> as participant ${esc(r.ispb)}, ${esc(model)}, started ${esc(r.startedAt)}, ${(r.windowMs / 1000).toFixed(1)} s window (the rates are over it), then ${(r.drain.ms / 1000).toFixed(1)} s of drain in which ${r.drain.ended} requests ended.
Latency is measured from the ${r.latencyFrom === 'scheduled' ? 'scheduled send time (queueing included)' : 'actual send time'}.
Prepare phase (not measured): ${r.prepare.requests} requests in ${(r.prepare.durationMs / 1000).toFixed(1)} s.</p>
<table><tr><th>operation</th><th>count</th><th>ok</th><th>errors</th><th>dropped</th><th>signature failures</th><th>ok/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th></tr>
${ops.map(([name, o]) => tableRow(name, o)).join('\n')}
${tableRow('total', r.totals)}
</table>
${errorRows.length === 0 ? '<p>No errors.</p>' : `<table><tr><th>operation</th><th>code</th><th>count</th><th>first detail</th></tr>\n${errorRows.join('\n')}\n</table>`}
${charts.join('\n')}
<ul>${r.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>
<details><summary>JSON report</summary><pre>${esc(JSON.stringify(r, null, 2))}</pre></details>
</body></html>
`
}
